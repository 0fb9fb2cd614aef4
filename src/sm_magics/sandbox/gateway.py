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
import json
import signal
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .executor import TrainingJobExecutor

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


def build_app(executor: TrainingJobExecutor | None = None) -> Gateway:
    """moto's server application wrapped in a :class:`Gateway`.

    With ``executor``, the training-job API is answered by it (jobs really run).
    """
    from moto.server import DomainDispatcherApplication, create_backend_app

    moto_app = DomainDispatcherApplication(create_backend_app)
    return Gateway(moto_app, executor.wsgi_handlers(moto_app) if executor else None)


SEED_ROLE = "SageMakerExecutionRole"


def seed(endpoint: str) -> str:
    """Create what a fresh AWS account has for SageMaker: the execution role. Returns its ARN."""
    import boto3

    iam = boto3.session.Session().client(
        "iam", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id="sandbox", aws_secret_access_key="sandbox",
    )
    trust = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"},
                       "Action": "sts:AssumeRole"}],
    }
    role = iam.create_role(RoleName=SEED_ROLE, AssumeRolePolicyDocument=json.dumps(trust),
                           Description="Execution role of sandbox training jobs")
    return role["Role"]["Arn"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ready-file", type=Path, required=True,
                        help="Written (JSON) once the endpoint answers and is seeded.")
    parser.add_argument("--home", type=Path, default=None,
                        help="The sandbox home, where training-job records are kept.")
    parser.add_argument("--max-jobs", type=int, default=2,
                        help="How many training jobs run at once.")
    args = parser.parse_args(argv)

    from moto.server import MotoRequestHandler
    from werkzeug.serving import make_server

    from .executor import TrainingJobExecutor
    from .services import sandbox_home

    executor = TrainingJobExecutor(f"http://127.0.0.1:{args.port}", args.home or sandbox_home(),
                                   max_concurrent=args.max_jobs)
    server = make_server("127.0.0.1", args.port, build_app(executor), threaded=True,
                         request_handler=MotoRequestHandler)

    def stop(*_: Any) -> None:
        executor.shutdown()  # while the endpoint still answers the jobs' last requests
        server.shutdown()

    signal.signal(signal.SIGTERM, stop)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    role_arn = seed(f"http://127.0.0.1:{args.port}")
    partial = args.ready_file.with_suffix(".partial")
    partial.write_text(json.dumps({"role_arn": role_arn}))
    partial.replace(args.ready_file)
    while thread.is_alive():
        thread.join(timeout=1)


if __name__ == "__main__":
    main()
