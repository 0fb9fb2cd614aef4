"""Command line: the sandbox's services, its base image, and running a notebook.

Example::

    $ python -m sm_magics sandbox start
    $ eval "$(python -m sm_magics sandbox env)"   # point this shell's aws/boto3 at it
    $ python -m sm_magics sandbox stop
    $ python -m sm_magics sandbox base-image      # build the offline base image now
    $ python -m sm_magics sandbox interrupt fraud-20261124-101500-ab12   # reclaim its spot hosts
    $ python -m sm_magics run-notebook notebooks/quickstart.ipynb --output out.ipynb
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

from IPython.core.error import UsageError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sm_magics",
                                     description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    sandbox = commands.add_parser("sandbox", help="The offline sandbox's services.")
    sandbox.add_argument("action", choices=["start", "stop", "status", "env", "base-image",
                                            "interrupt"])
    sandbox.add_argument("job", nargs="?", metavar="JOB",
                         help="With interrupt: the running managed-spot training job to "
                              "interrupt as EC2 reclaiming its spot capacity would: its hosts "
                              "get SIGTERM, the job shows Interrupted, then restarts and finds "
                              "its checkpoints.")
    sandbox.add_argument("--profile", choices=["plain", "studio"], default=None,
                         help="With start: studio meets SageMaker Studio's Docker rules.")
    sandbox.add_argument("--policy", metavar="FILE", default=None,
                         help="With start: refuse what this IAM policy (a JSON file, or "
                              "AmazonSageMakerFullAccess) does not allow, as AWS does.")
    notebook = commands.add_parser(
        "run-notebook", help="Execute a notebook top to bottom, keeping outputs and widget state.")
    notebook.add_argument("path", type=Path)
    notebook.add_argument("--output", type=Path, required=True)
    notebook.add_argument("--timeout", type=int, default=1800, help="Seconds per cell.")
    args = parser.parse_args(argv)

    if args.command == "run-notebook":
        return run_notebook(args.path, args.output, args.timeout)
    if (args.action == "interrupt") != bool(args.job):
        sandbox.error("name the job to interrupt: sandbox interrupt JOB"
                      if args.action == "interrupt" else
                      f"only interrupt takes a job name ({args.job})")

    from .errors import RemoteFailure
    from .sandbox import Sandbox

    box = Sandbox(profile=args.profile, policy=args.policy)
    try:
        if args.action == "start":
            print(repr(box.start(log=lambda line: print(line, file=sys.stderr))))
            print('\nPoint a shell at it with: eval "$(python -m sm_magics sandbox env)"')
        elif args.action == "stop":
            print(repr(box.stop()))
        elif args.action == "base-image":
            import docker

            from .docker_engine import docker_client
            from .sandbox.base_image import BaseImageUnavailable, ensure_base_image

            try:
                print(ensure_base_image(docker_client(), log=lambda m: print(m, file=sys.stderr)))
            except (BaseImageUnavailable, docker.errors.DockerException) as exc:
                print(f"error: the sandbox base image cannot be built: {exc}", file=sys.stderr)
                return 1
        elif args.action == "status":
            status = box.status()
            print(repr(status))
            return 0 if status.running else 3
        elif args.action == "interrupt":
            print(json.dumps(box.interrupt_spot(args.job), indent=1))
        else:
            for key, value in box.environment().items():
                print(f"export {key}={shlex.quote(value)}")
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RemoteFailure as exc:
        print("\n".join(exc.render_lines()), file=sys.stderr)
        return 1
    return 0


def run_notebook(path: Path, output: Path, timeout: int = 1800,
                 env: dict[str, str] | None = None, workdir: Path | None = None) -> int:
    """Execute ``path`` and save it, with outputs and widget state, to ``output``.

    The kernel runs in ``workdir`` (default: the notebook's own folder).

    Returns 0 when every cell ran, 1 when a cell failed (the notebook is saved either way).
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook, timeout=timeout, kernel_name="python3", store_widget_state=True,
        resources={"metadata": {"path": str(workdir or path.resolve().parent)}},
    )
    status = 0
    try:
        # the kernel learns the notebook's path, which jobs carry as a tag
        client.execute(env={**(os.environ if env is None else env),
                            "JPY_SESSION_NAME": str(path.resolve())})
    except CellExecutionError as exc:
        print(f"error: a cell of {path} failed:\n{exc}", file=sys.stderr)
        status = 1
    output.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, output)
    print(f"Executed notebook written to {output}")
    return status


if __name__ == "__main__":
    sys.exit(main())
