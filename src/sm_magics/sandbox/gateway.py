"""The sandbox's single AWS endpoint: moto's server, with room for own handlers.

Requests are routed by their ``X-Amz-Target`` header (the JSON-protocol
action, for example ``SageMaker.CreateTrainingJob``): a target listed in
``handlers`` is answered by that WSGI application, everything else goes to
moto unchanged. Runs as its own process so that the sandbox outlives a
notebook kernel::

    python -m sm_magics.sandbox.gateway --port 4599 --home ~/.sm_magics/sandbox \\
        --ready-file ready.json

Fault injection, a facility for tests: ``POST /_sm_magics/faults`` with a JSON
rule makes the next ``count`` matching requests fail with that HTTP status and
error code, as a throttled or failing AWS service answers (``GET`` lists the
rules with how many requests each has failed so far, ``DELETE`` disarms them
all)::

    curl -X POST http://127.0.0.1:4599/_sm_magics/faults \\
         -d '{"service": "s3", "method": "PUT", "status": 503, "code": "SlowDown", "count": 3}'

A rule matches on ``service`` (the signing name of the request: ``s3``,
``sagemaker``, ``logs``...), and optionally ``method``, ``path`` (a substring
of the request path) and ``target`` (the ``X-Amz-Target`` of JSON APIs, e.g.
``SageMaker.CreateTrainingJob``). With ``"after": true`` the request is carried
out and only its answer is replaced by the error: an answer lost on the way.

Spot interruptions, on request: ``POST /_sandbox/spot-interruptions`` with
``{"TrainingJobName": NAME}`` interrupts a running managed-spot job as EC2
reclaiming its spot capacity would: its hosts get SIGTERM, the job shows
Interrupted, then restarts and finds its checkpoints. The answer is a JSON
object; a job that is unknown, not a spot job or not running is refused with
``{"__type": code, "message": ...}`` and an HTTP error status::

    curl -X POST http://127.0.0.1:4599/_sandbox/spot-interruptions \\
         -d '{"TrainingJobName": "fraud-20261124-101500-ab12"}'
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .account import EXECUTION_ROLE, SERVICE_KEY
from .authorization import signing_service
from .protocol import CONTENT_TYPE, ApiError, WSGIApp, json_handlers, read_body

if TYPE_CHECKING:
    from .ecr_api import RegistryImages
    from .iam_api import PolicySimulator
    from .training_api import TrainingJobApi

__all__ = ["FAULTS_PATH", "SPOT_INTERRUPTIONS_PATH", "Faults", "Gateway", "main"]

FAULTS_PATH = "/_sm_magics/faults"
SPOT_INTERRUPTIONS_PATH = "/_sandbox/spot-interruptions"
_service_of = signing_service  # the AWS service a request is for (``s3``, ``sagemaker``...)


def _respond(start_response: Callable, status: int, body: bytes, content_type: str,
             extra: Iterable[tuple[str, str]] = ()) -> list[bytes]:
    reasons = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
               405: "Method Not Allowed", 429: "Too Many Requests", 500: "Internal Server Error",
               503: "Service Unavailable"}
    start_response(f"{status} {reasons.get(status, 'Error')}",
                   [("Content-Type", content_type), ("Content-Length", str(len(body))), *extra])
    return [body]


class Faults:
    """Armed fault rules: the next ``count`` requests matching a rule fail (thread-safe).

    >>> faults = Faults()
    >>> faults.arm({"service": "s3", "method": "PUT", "status": 503, "code": "SlowDown",
    ...             "count": 3})
    """

    def __init__(self) -> None:
        self.rules: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def arm(self, rule: dict[str, Any]) -> dict[str, Any]:
        """Add ``rule`` (checked); returns it as stored, with ``failed`` = 0."""
        if not isinstance(rule, dict) or not isinstance(rule.get("service"), str):
            raise ValueError("a rule is a JSON object with at least a 'service'")
        status = rule.get("status", 503)
        count = rule.get("count", 1)
        if not isinstance(status, int) or not 400 <= status <= 599:
            raise ValueError("'status' is an HTTP error status, 400 to 599")
        if not isinstance(count, int) or count < 1:
            raise ValueError("'count' is a number of requests, 1 or more")
        stored = {"service": rule["service"], "method": rule.get("method"),
                  "path": rule.get("path"), "target": rule.get("target"),
                  "after": bool(rule.get("after", False)), "status": status,
                  "code": str(rule.get("code", "ServiceUnavailable")),
                  "message": str(rule.get("message", "Fault injected by the sm-magics sandbox")),
                  "count": count, "failed": 0}
        with self._lock:
            self.rules.append(stored)
        return dict(stored)

    def listing(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(rule) for rule in self.rules]

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()

    def take(self, environ: dict[str, Any]) -> dict[str, Any] | None:
        """The rule that makes this request fail (its count is used up by one), if any."""
        service = _service_of(environ)
        if not service:
            return None
        with self._lock:
            for rule in self.rules:
                if (rule["count"] > rule["failed"] and rule["service"] == service
                        and rule["method"] in (None, environ.get("REQUEST_METHOD"))
                        and (rule["path"] is None or rule["path"] in environ.get("PATH_INFO", ""))
                        and rule["target"] in (None, environ.get("HTTP_X_AMZ_TARGET"))):
                    rule["failed"] += 1
                    return dict(rule)
        return None

    def answer(self, environ: dict[str, Any], start_response: Callable) -> list[bytes]:
        """The admin path: ``POST`` arms a rule, ``GET`` lists them, ``DELETE`` clears them."""
        method = environ.get("REQUEST_METHOD")
        if method == "POST":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            try:
                result: Any = self.arm(json.loads(environ["wsgi.input"].read(length) or b"{}"))
            except ValueError as exc:
                body = json.dumps({"error": str(exc)}).encode()
                return _respond(start_response, 400, body, "application/json")
        elif method == "GET":
            result = self.listing()
        elif method == "DELETE":
            self.clear()
            result = []
        else:
            return _respond(start_response, 405, b"{}", "application/json")
        return _respond(start_response, 200, json.dumps(result).encode(), "application/json")


def _fault_response(rule: dict[str, Any], environ: dict[str, Any],
                    start_response: Callable) -> list[bytes]:
    """An error answer in the protocol of the request: JSON for X-Amz-Target, else XML."""
    request_id = str(uuid.uuid4())
    if environ.get("HTTP_X_AMZ_TARGET"):
        body = json.dumps({"__type": rule["code"], "message": rule["message"]}).encode()
        return _respond(start_response, rule["status"], body, CONTENT_TYPE,
                        [("x-amzn-RequestId", request_id), ("x-amzn-ErrorType", rule["code"])])
    from xml.sax.saxutils import escape

    body = (f"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{escape(rule['code'])}"
            f"</Code><Message>{escape(rule['message'])}</Message>"
            f"<RequestId>{request_id}</RequestId></Error>").encode()
    return _respond(start_response, rule["status"], body, "application/xml",
                    [("x-amz-request-id", request_id)])


class Gateway:
    """A WSGI application: own handlers by ``X-Amz-Target``, moto for the rest.

    Requests matching an armed rule of ``faults`` fail before reaching either.
    ``authorize(environ, start_response)``, when set, sees every other request
    first and answers the ones it refuses (:meth:`.authorization.Authorizer.gateway_check`).
    ``training``, when given, is the training-job API that spot interruptions
    are asked of (:data:`SPOT_INTERRUPTIONS_PATH`).
    """

    def __init__(self, fallback: WSGIApp, handlers: Mapping[str, WSGIApp] | None = None,
                 training: TrainingJobApi | None = None) -> None:
        self.fallback = fallback
        self.handlers = dict(handlers or {})
        self.training = training
        self.faults = Faults()
        self.authorize: Callable[[dict[str, Any], Callable], Iterable[bytes] | None] | None = None

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO")
        if path == FAULTS_PATH:
            return self.faults.answer(environ, start_response)
        if path == SPOT_INTERRUPTIONS_PATH:
            return self._interrupt_spot(environ, start_response)
        rule = self.faults.take(environ)
        if rule is not None and rule["after"]:
            answer = self._route(environ, lambda *_args, **_kw: None)
            try:
                for _ in answer:
                    pass  # carried out; the answer is dropped
            finally:
                close = getattr(answer, "close", None)
                if close is not None:
                    close()
            return _fault_response(rule, environ, start_response)
        if rule is not None:
            length = int(environ.get("CONTENT_LENGTH") or 0)
            if length:
                environ["wsgi.input"].read(length)  # the client sent it; drain before answering
            return _fault_response(rule, environ, start_response)
        return self._route(environ, start_response)

    def _interrupt_spot(self, environ: dict[str, Any], start_response: Callable) -> list[bytes]:
        """``POST {"TrainingJobName": NAME}``: the training API interrupts that spot job."""
        body = read_body(environ)
        try:
            if self.training is None:
                raise ApiError("ResourceNotFound", "This sandbox endpoint runs no training jobs.",
                               404)
            if environ.get("REQUEST_METHOD") != "POST":
                raise ApiError("MethodNotAllowed", 'Send POST with {"TrainingJobName": NAME}.',
                               405)
            try:
                request = json.loads(body or b"{}")
            except ValueError:
                request = None
            name = request.get("TrainingJobName") if isinstance(request, dict) else None
            if not isinstance(name, str) or not name:
                raise ApiError("ValidationException",
                               'The body must be a JSON object {"TrainingJobName": NAME}.')
            answer = self.training.interrupt_spot(name)
        except ApiError as exc:
            allow = [("Allow", "POST")] if exc.status == 405 else []
            return _respond(start_response, exc.status, json.dumps(
                {"__type": exc.code, "message": exc.message}).encode(), "application/json",
                allow)
        return _respond(start_response, 200, json.dumps(answer).encode(),
                        "application/json")

    def _route(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        if self.authorize is not None:
            refused = self.authorize(environ, start_response)
            if refused is not None:
                return refused
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        handler = self.handlers.get(target, self.fallback)
        return handler(environ, start_response)


def build_app(training: TrainingJobApi | None = None, images: RegistryImages | None = None,
              simulator: PolicySimulator | None = None, endpoint: str | None = None) -> Gateway:
    """moto's server application wrapped in a :class:`Gateway`.

    With ``training``, the training-job API is answered by it (jobs really run).
    ``GetLogEvents`` pages as AWS may page it (:mod:`.logs_api`).
    With ``images``, ECR's image operations are answered from the registry
    (:mod:`.ecr_api`); with ``simulator``, IAM's ``SimulatePrincipalPolicy``
    (:mod:`.iam_api`). What moto does not implement is an AWS error, never an HTML
    page (:mod:`.unimplemented`). Every request moto (or the IAM simulator) answers is
    checked against its service model first, in its own protocol
    (:class:`.validation.ValidatedRequests`), and
    with the sandbox's own ``endpoint``, new S3 buckets get AWS's defaults
    (:mod:`.s3_defaults`).
    """
    from moto.server import DomainDispatcherApplication, create_backend_app

    from .logs_api import logs_handlers
    from .unimplemented import AnswerUnimplemented
    from .validation import ValidatedRequests

    moto_app = AnswerUnimplemented(DomainDispatcherApplication(create_backend_app), _service_of)
    if endpoint is not None:
        from .s3_defaults import NewBucketDefaults

        moto_app = NewBucketDefaults(moto_app, endpoint)
    if simulator is not None:
        from .iam_api import QueryActions

        moto_app = QueryActions(moto_app, "iam", simulator.handlers(), service_of=_service_of)
    moto_app = ValidatedRequests(moto_app)
    handlers = logs_handlers(moto_app)
    if training is not None:
        from .training_api import OPERATIONS

        handlers.update(json_handlers("SageMaker", OPERATIONS, training.handle,
                                      fallback=moto_app))
    if images is not None:
        from .ecr_api import OPERATIONS as IMAGE_OPERATIONS
        from .ecr_api import TARGET_PREFIX

        handlers.update(json_handlers(TARGET_PREFIX, IMAGE_OPERATIONS, images.handle,
                                      fallback=moto_app))
    fallback = moto_app
    return Gateway(fallback, handlers, training=training)


SEED_ROLE = EXECUTION_ROLE


def seed(endpoint: str) -> str:
    """Create what a fresh AWS account has for SageMaker: the execution role. Returns its ARN.

    The role has the statements of AmazonSageMakerFullAccess (:mod:`.iam_api`).
    """
    import boto3

    from .iam_api import attach_default_policy

    iam = boto3.session.Session().client(
        "iam", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id=SERVICE_KEY, aws_secret_access_key=SERVICE_KEY,
    )
    trust = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"},
                       "Action": "sts:AssumeRole"}],
    }
    role = iam.create_role(RoleName=SEED_ROLE, AssumeRolePolicyDocument=json.dumps(trust),
                           Description="Execution role of sandbox training jobs")
    attach_default_policy(iam, SEED_ROLE)
    return role["Role"]["Arn"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ready-file", type=Path, required=True,
                        help="Written (JSON) once the endpoint answers and is seeded.")
    parser.add_argument("--home", type=Path, required=True,
                        help="The sandbox home, where training-job records are kept.")
    parser.add_argument("--max-jobs", type=int, default=2,
                        help="How many training jobs run at once.")
    parser.add_argument("--policy", help="An IAM policy file the notebook's requests are held "
                        "to (default: all allowed); every authorization is recorded either way.")
    args = parser.parse_args(argv)

    from moto.server import MotoRequestHandler
    from werkzeug.serving import make_server

    from .ecr_api import RegistryImages
    from .iam_api import PolicySimulator
    from .training_api import TrainingJobApi

    endpoint = f"http://127.0.0.1:{args.port}"
    training = TrainingJobApi.for_endpoint(endpoint, args.home, max_concurrent=args.max_jobs)
    app = build_app(training, images=RegistryImages.for_endpoint(endpoint, args.home),
                    simulator=PolicySimulator.for_endpoint(endpoint), endpoint=endpoint)
    from .authorization import Authorizer, record_path
    from .policy import Policy

    app.authorize = Authorizer(record_path(args.home),
                               Policy.load(args.policy) if args.policy else None).gateway_check
    server = make_server("127.0.0.1", args.port, app, threaded=True,
                         request_handler=MotoRequestHandler)

    def stop(*_: Any) -> None:
        training.shutdown()  # while the endpoint still answers the jobs' last requests
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
