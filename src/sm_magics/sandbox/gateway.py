"""The sandbox's single AWS endpoint: moto's server, with room for own handlers.

Requests are routed by their ``X-Amz-Target`` header (the JSON-protocol
action, for example ``SageMaker.CreateTrainingJob``): a target listed in
``handlers`` is answered by that WSGI application, everything else goes to
moto unchanged. Runs as its own process so that the sandbox outlives a
notebook kernel::

    python -m sm_magics.sandbox.gateway --port 4599
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

WSGIApp = Callable[[dict[str, Any], Callable], Iterable[bytes]]

__all__ = ["Gateway", "main"]


class Gateway:
    """A WSGI application: own handlers by ``X-Amz-Target``, moto for the rest."""

    def __init__(self, fallback: WSGIApp, handlers: Mapping[str, WSGIApp] | None = None) -> None:
        self.fallback = fallback
        self.handlers = dict(handlers or {})

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        handler = self.handlers.get(target, self.fallback)
        return handler(environ, start_response)


def build_app() -> Gateway:
    """moto's server application wrapped in a :class:`Gateway`."""
    from moto.server import DomainDispatcherApplication, create_backend_app

    moto_app = DomainDispatcherApplication(create_backend_app)
    return Gateway(moto_app)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)

    from moto.server import MotoRequestHandler
    from werkzeug.serving import run_simple

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    run_simple(
        "127.0.0.1",
        args.port,
        build_app(),
        threaded=True,
        request_handler=MotoRequestHandler,
    )


if __name__ == "__main__":
    main()
