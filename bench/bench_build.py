"""`%%sm_container` against `docker build` + `docker push` by hand, on the same build context.

Starts its own sandbox (under a temporary SM_MAGICS_SANDBOX_HOME), builds a
training image once, then measures in the same run, alternating ours and the
baseline so machine noise hits both alike:

(a) re-running an unchanged cell, against `docker build` + `docker push` of
    the same context by hand with a warm cache (everything cached, every layer
    already in the registry). Goal: ours at least 10x faster.
(b) a code-only edit end to end (cell -> context -> build -> push), against
    `docker build` + `docker push` by hand of a context with another code-only
    edit. Goal: ours at most 1.2x the baseline.

    .venv/bin/python bench/bench_build.py [--runs 11]
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
import json
import time

lr = 0.05  # @param
epochs = 3  # @param
config = json.loads(open("config.json").read())
for epoch in range(epochs):
    log_metric("loss", 1.0 / (epoch + 1 + lr), step=epoch)
(model_dir / "model.json").write_text(json.dumps({"lr": lr, **config}))
print("edit", EDIT)
"""
LINE = "bench-build --file config.json --env MODE=bench --run 'python3 -c \"print(1)\"'"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=11)
    args = parser.parse_args()

    from sm_magics.sandbox import temporary_sandbox

    with temporary_sandbox(log=print):
        run(args)


def run(args: argparse.Namespace) -> None:
    from IPython.core.interactiveshell import InteractiveShell

    from sm_magics.recipe import Recipe, prepare

    work = Path(tempfile.mkdtemp(prefix="sm-magics-bench-work-"))
    os.chdir(work)
    (work / "config.json").write_text('{"depth": 3}\n')
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "sm_magics")
    registry = os.environ["SM_MAGICS_REGISTRY"]
    try:
        def ours(edit: int):
            with contextlib.redirect_stdout(io.StringIO()):
                return shell.run_cell_magic("sm_container", LINE,
                                            CODE.replace("EDIT", str(edit)))

        first = ours(0)
        print(f"first build: {first.uri} ({first.state})")
        build_dir = str(first.build_dir)
        hand_ref = f"{registry}/bench-build:by-hand"
        docker("build", "--network", "host", "-t", hand_ref, build_dir)
        docker("push", hand_ref)

        def by_hand(context_dir: str, ref: str) -> None:
            docker("build", "--network", "host", "-t", ref, context_dir)
            docker("push", ref)

        unchanged_ours, unchanged_hand, edit_ours, edit_hand = [], [], [], []
        edit = 0
        for _ in range(args.runs):
            seconds, image = timed(ours, 0)
            assert not image.built
            unchanged_ours.append(seconds)
            unchanged_hand.append(timed(by_hand, build_dir, hand_ref)[0])

            edit += 1
            seconds, image = timed(ours, edit)
            assert image.built
            edit_ours.append(seconds)
            edit += 1
            context = prepare(Recipe(
                name="bench-build", body=CODE.replace("EDIT", str(edit)),
                base=os.environ["SM_MAGICS_BASE"], files=("config.json",), env=("MODE=bench",),
                run=('python3 -c "print(1)"',), cwd=work,
            ))
            context_dir = str(context.write(work))
            edit_hand.append(timed(by_hand, context_dir, f"{registry}/bench-build:hand-{edit}")[0])

        def ms(values: list[float]) -> tuple[float, float]:
            return statistics.median(values) * 1000, min(values) * 1000

        (a_ours, a_ours_min), (a_hand, a_hand_min) = ms(unchanged_ours), ms(unchanged_hand)
        (b_ours, b_ours_min), (b_hand, b_hand_min) = ms(edit_ours), ms(edit_hand)
        print(f"runs: {args.runs}, alternating; median (min) per run")
        print(f"(a) unchanged re-run: ours {a_ours:.1f} ({a_ours_min:.1f}) ms, docker build+push "
              f"by hand {a_hand:.1f} ({a_hand_min:.1f}) ms -> ours is {a_hand / a_ours:.1f}x "
              f"faster (goal >= 10x)")
        print(f"(b) code-only edit:   ours {b_ours:.1f} ({b_ours_min:.1f}) ms, docker build+push "
              f"by hand {b_hand:.1f} ({b_hand_min:.1f}) ms -> ratio ours/hand "
              f"{b_ours / b_hand:.2f}, of the minimums {b_ours_min / b_hand_min:.2f} "
              f"(goal <= 1.2)")
    finally:
        shell.run_line_magic("unload_ext", "sm_magics")
        import docker as docker_sdk

        client = docker_sdk.from_env()
        for image in client.images.list(name=f"{registry}/bench-build"):
            for tag in image.tags:
                client.images.remove(tag)


if __name__ == "__main__":
    main()
