"""Command line: ``python -m sm_magics sandbox start|stop|status|env``.

Example::

    $ python -m sm_magics sandbox start
    $ eval "$(python -m sm_magics sandbox env)"   # point this shell's aws/boto3 at it
    $ python -m sm_magics sandbox stop
"""

from __future__ import annotations

import argparse
import shlex
import sys

from IPython.core.error import UsageError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sm_magics", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    sandbox = commands.add_parser("sandbox", help="The offline sandbox's services.")
    sandbox.add_argument("action", choices=["start", "stop", "status", "env"])
    args = parser.parse_args(argv)

    from .sandbox import Sandbox

    box = Sandbox()
    try:
        if args.action == "start":
            print(repr(box.start(log=lambda line: print(line, file=sys.stderr))))
            print('\nPoint a shell at it with: eval "$(python -m sm_magics sandbox env)"')
        elif args.action == "stop":
            print(repr(box.stop()))
        elif args.action == "status":
            status = box.status()
            print(repr(status))
            return 0 if status.running else 3
        else:
            for key, value in box.environment().items():
                print(f"export {key}={shlex.quote(value)}")
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
