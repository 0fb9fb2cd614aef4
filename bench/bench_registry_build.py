"""The registry builder against `docker build` + `docker push` of the same change.

Starts its own sandbox, then measures in one run, alternating the two so that
machine noise hits both alike (median and minimum of each):

(a) a code-only edit of a container cell: the registry builder (no Docker
    engine involved) against `docker build` + `docker push` by hand of the
    Docker builder's context with the same kind of edit. Goal: at least 5x
    faster, with the bytes uploaded close to the code layer, config and
    manifest.
(b) a dependency edit with a warm wheel cache (two requirement sets, both
    built once before): registry builder against docker build + push.
(c) the first build of a container into a new repository (base copy included)
    against docker build + push into a new repository (base layers pushed).
(d) the same cell built in two fresh folders: the same digest.

    .venv/bin/python bench/bench_registry_build.py [--runs 5]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import tempfile
from pathlib import Path

from common import docker, timed

CODE = """\
lr = 0.05  # @param
print("edit", EDIT, lr)
"""
REQUIREMENTS = ("six==1.16.0", "six==1.17.0")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    from sm_magics.sandbox import temporary_sandbox

    with temporary_sandbox(log=print):
        run(args)


class Bytes:
    """A build listener that adds up what the registry builder uploaded."""

    def __init__(self) -> None:
        from sm_magics.build import BuildListener

        outer = self

        class Listener(BuildListener):
            def layer(self, layer_id, status, current, total):
                if status == "Pushed" and total:
                    outer.sent += total

        self.sent = 0
        self.listener = Listener()


def run(args: argparse.Namespace) -> None:
    from sm_magics.build import BuildService
    from sm_magics.config import resolve
    from sm_magics.recipe import Recipe, prepare

    work = Path(tempfile.mkdtemp(prefix="sm-magics-bench-registry-"))
    registry = os.environ["SM_MAGICS_REGISTRY"]
    base = os.environ["SM_MAGICS_BASE"]
    engine = os.environ.get("DOCKER_HOST")
    counter = {"n": 0}

    def recipe(edit: int, pip: tuple[str, ...] = (), name: str = "bench-reg") -> Recipe:
        return Recipe(name=name, body=CODE.replace("EDIT", str(edit)), base=base, pip=pip,
                      cwd=work)

    def ours(edit: int, pip: tuple[str, ...] = (), name: str = "bench-reg", cwd: Path = work,
             repository: str | None = None):
        counted = Bytes()
        os.environ["DOCKER_HOST"] = "unix:///nonexistent/docker.sock"  # no engine involved
        try:
            settings = resolve(flags={"builder": "registry"})
            with contextlib.redirect_stdout(io.StringIO()):
                image = BuildService(settings, counted.listener, cwd=cwd).build(
                    Recipe(name=name, body=CODE.replace("EDIT", str(edit)), base=base,
                           pip=pip, cwd=cwd), repository=repository)
        finally:
            if engine is None:
                os.environ.pop("DOCKER_HOST", None)
            else:
                os.environ["DOCKER_HOST"] = engine
        return image, counted.sent

    def by_hand(edit: int, pip: tuple[str, ...] = (), repository: str = "bench-hand") -> None:
        context = prepare(recipe(edit, pip))
        directory = str(context.write(work))
        counter["n"] += 1
        ref = f"{registry}/{repository}:hand-{counter['n']}"
        docker("build", "--network", "host", "-t", ref, directory)
        docker("push", ref)

    # warm both: the base in the repositories, both wheel sets in the cache, docker's cache
    for pip in ((), (REQUIREMENTS[0],), (REQUIREMENTS[1],)):
        ours(0, pip)
        by_hand(0, pip)

    code_ours, code_hand, sent, deps_ours, deps_hand, first_ours, first_hand = ([] for _ in
                                                                                 range(7))
    edit = 0
    for run_number in range(args.runs):
        edit += 1
        seconds, (image, uploaded) = timed(ours, edit)
        assert image.built
        code_ours.append(seconds)
        sent.append(uploaded)
        edit += 1
        code_hand.append(timed(by_hand, edit)[0])

        edit += 1
        pip = (REQUIREMENTS[run_number % 2],)
        deps_ours.append(timed(ours, edit, pip)[0])
        edit += 1
        deps_hand.append(timed(by_hand, edit, pip)[0])

        first_ours.append(timed(ours, edit, (), f"bench-first-{run_number}")[0])
        first_hand.append(timed(by_hand, edit, (), f"bench-first-hand-{run_number}")[0])

    one, two = work / "one", work / "two"
    one.mkdir()
    two.mkdir()
    digest_one = ours(99, (), "bench-same", one, "sagemaker-bench-same-a")[0].digest
    digest_two = ours(99, (), "bench-same", two, "sagemaker-bench-same-b")[0].digest

    def ms(values: list[float]) -> tuple[float, float]:
        return statistics.median(values) * 1000, min(values) * 1000

    print(f"runs: {args.runs}, alternating; median (min) per run")
    for label, a, b in (("(a) code-only edit", code_ours, code_hand),
                        ("(b) dependency edit, warm wheel cache", deps_ours, deps_hand),
                        ("(c) first build, new repository", first_ours, first_hand)):
        (o, o_min), (h, h_min) = ms(a), ms(b)
        print(f"{label}: registry builder {o:.0f} ({o_min:.0f}) ms, docker build+push "
              f"{h:.0f} ({h_min:.0f}) ms -> {h / o:.1f}x faster")
    print(f"    (a) bytes uploaded per code edit (layers pushed): median "
          f"{statistics.median(sent):.0f} B (goal: about the code layer; the config and "
          "manifest add about 2 kB)")
    print(f"(d) same cell, two fresh folders: {digest_one} and {digest_two} -> "
          f"{'the same digest' if digest_one == digest_two else 'DIFFERENT digests'}")

    import docker as docker_sdk

    client = docker_sdk.from_env()
    for image in client.images.list():
        for tag in image.tags:
            if tag.startswith(f"{registry}/bench-"):
                client.images.remove(tag)


if __name__ == "__main__":
    main()
