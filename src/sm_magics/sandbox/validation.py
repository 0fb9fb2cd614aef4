"""The sandbox refuses what AWS refuses: every request it answers is checked by the service model.

The check is :mod:`sm_magics.service_rules` (the one owner of the model's
rules, also used by ``%sm_train`` before it sends anything); here a broken
rule becomes the ``ValidationException`` AWS answers, in AWS's words
("Value '…' at 'trainingJobName' failed to satisfy constraint: …").

Each validated request is noted in one line, ``service rules: <service> <Operation>
accepted`` (or ``refused: <message>``): on the gateway's standard error, which
is the sandbox's ``run/api.log``, or appended to the file named by
``SM_MAGICS_VALIDATION_LOG`` when that is set (a file that outlives the
sandbox, e.g. to count what a test run validated: ``grep -c '^service rules:'``).

Example::

    >>> validate_request("DescribeTrainingJob", {"TrainingJobName": "bad_name"})
    Traceback (most recent call last):
    ApiError: 1 validation error detected: Value 'bad_name' at 'trainingJobName' ...
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any

from .. import service_rules
from .protocol import ApiError, read_body

__all__ = ["LOG_VARIABLE", "ValidatedRequests", "service_model", "validate_request"]

LOG_VARIABLE = "SM_MAGICS_VALIDATION_LOG"
_NOTED = 300  # characters of a refusal's message kept in its line


def service_model():
    """botocore's model of the SageMaker API."""
    return service_rules.service_model("sagemaker")


def _note(line: str) -> None:
    path = os.environ.get(LOG_VARIABLE)
    if path:
        with open(path, "a", encoding="utf-8") as log:
            log.write(line + "\n")
    else:
        print(line, file=sys.stderr, flush=True)


def validate_request(operation: str, request: Any, model=None) -> None:
    """Raise a ``ValidationException`` :class:`ApiError` when ``request`` breaks the API's rules.

    ``model`` is the service model (SageMaker's by default).

    >>> validate_request("DescribeTrainingJob", {"TrainingJobName": "bad_name"})
    Traceback (most recent call last):
    ApiError: 1 validation error detected: Value 'bad_name' at 'trainingJobName' ...
    """
    model = model or service_model()
    called = f"service rules: {model.service_name} {operation}"
    try:
        service_rules.validate(model, operation, request)
    except service_rules.RequestInvalid as exc:
        _note(f"{called} refused: {' '.join(str(exc).split())[:_NOTED]}")
        raise ApiError("ValidationException", str(exc)) from None
    except service_rules.PatternError as exc:  # a rule that cannot be checked fails the request
        _note(f"{called} not checked: {exc}")
        raise ApiError("InternalFailure", f"The sandbox cannot check this request: {exc}",
                       500) from None
    _note(f"{called} accepted")


# Services whose requests name their operation in X-Amz-Target ("<targetPrefix>.<Operation>",
# JSON) or in the path "/service/<targetPrefix>/operation/<Operation>" (rpc-v2-cbor).
TARGET_SERVICES = ("sagemaker", "ecr", "logs", "cloudwatch", "kms")
# Services that may be called in the query protocol (Action=... form fields), by signing name.
QUERY_SERVICES = {"iam": "iam", "sts": "sts", "monitoring": "cloudwatch"}
_CBOR_PATH = re.compile(r"^/service/([^/]+)/operation/([^/]+)$")
# The error code each query-protocol service answers for a broken rule. IAM and STS answer
# the common ValidationError (https://docs.aws.amazon.com/IAM/latest/APIReference/
# CommonErrors.html, https://docs.aws.amazon.com/STS/latest/APIReference/CommonErrors.html);
# CloudWatch answers InvalidParameterValue ("The value of an input parameter is bad or
# out-of-range", https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/
# API_PutMetricData.html#API_PutMetricData_Errors).
_QUERY_CODES = {"iam": "ValidationError", "sts": "ValidationError",
                "cloudwatch": "InvalidParameterValue"}
_QUERY_NAMESPACES = {"iam": "https://iam.amazonaws.com/doc/2010-05-08/",
                     "sts": "https://sts.amazonaws.com/doc/2011-06-15/",
                     "cloudwatch": "http://monitoring.amazonaws.com/doc/2010-08-01/"}


class ValidatedRequests:
    """A WSGI wrapper that checks every AWS API request against its service model.

    It reads each request in its own protocol: JSON (SageMaker, ECR, CloudWatch Logs,
    KMS), rpc-v2-cbor (CloudWatch with current botocore), query (IAM, STS; CloudWatch
    with older botocore, :mod:`.wire`) and S3's REST with S3's own documented limits
    (:mod:`.s3_requests`). A request that breaks a rule gets the error that service
    answers, in its protocol, before the wrapped application (moto) sees it; a request
    that cannot be read as its protocol goes on to the service's own parser.

    >>> app = ValidatedRequests(moto_app)
    """

    def __init__(self, app) -> None:
        self.app = app
        self._targets: dict[str, Any] | None = None

    def _by_target(self, prefix: str):
        if self._targets is None:
            found = {}
            for name in TARGET_SERVICES:  # CloudWatch has no target before botocore 1.37
                model = service_rules.service_model(name)
                if model.metadata.get("targetPrefix"):
                    found[model.metadata["targetPrefix"]] = model
            self._targets = found
        return self._targets.get(prefix)

    def __call__(self, environ: dict[str, Any], start_response):
        from .authorization import signing_service

        target = environ.get("HTTP_X_AMZ_TARGET", "")
        cbor = _CBOR_PATH.match(environ.get("PATH_INFO", "")) if not target else None
        if target or cbor:
            prefix, operation = target.rpartition(".")[::2] if target else cbor.groups()
            model = self._by_target(prefix)
            if model is None or operation not in model.operation_names:
                return self.app(environ, start_response)
            return self._rpc(model, operation, bool(cbor), environ, start_response)
        signing = signing_service(environ)
        if signing == "s3":
            return self._s3(environ, start_response)
        if signing in QUERY_SERVICES:
            return self._query(QUERY_SERVICES[signing], environ, start_response)
        return self.app(environ, start_response)

    def _rpc(self, model, operation: str, cbor: bool, environ, start_response):
        import json

        from .wire import WireError, cbor_decode

        body = read_body(environ)
        try:
            request = cbor_decode(body) if cbor and body else (
                {} if cbor else json.loads(body or b"{}"))
        except (ValueError, WireError):
            return self.app(environ, start_response)  # the service's own parser answers it
        try:
            validate_request(operation, request, model)
        except ApiError as exc:
            return _rpc_answer(model, exc, cbor, start_response)
        return self.app(environ, start_response)

    def _query(self, service: str, environ, start_response):
        from urllib.parse import parse_qs

        from .wire import query_params

        form_body = environ.get("CONTENT_TYPE", "").startswith(
            "application/x-www-form-urlencoded")
        text = (read_body(environ).decode("utf-8", "replace") if form_body
                else environ.get("QUERY_STRING", ""))
        form = parse_qs(text, keep_blank_values=True)
        operation = (form.get("Action") or [""])[-1]
        model = service_rules.service_model(service)
        if operation not in model.operation_names:
            return self.app(environ, start_response)
        params = query_params(model.operation_model(operation).input_shape, form)
        try:
            validate_request(operation, params, model)
        except ApiError as exc:
            return _query_answer(service, exc, start_response)
        return self.app(environ, start_response)

    def _s3(self, environ, start_response):
        from .s3_requests import S3Refusal, check_s3_request, s3_error_answer, s3_operation

        called = "service rules: s3"
        try:
            found = s3_operation(environ)
            if found is None:
                return self.app(environ, start_response)
            called = f"service rules: s3 {found[0]}"
            check_s3_request(environ)
        except S3Refusal as refusal:
            text = " ".join(f"{refusal.code}: {refusal.message}".split())
            _note(f"{called} refused: {text[:_NOTED]}")
            return s3_error_answer(refusal, environ, start_response)
        _note(f"{called} accepted")
        return self.app(environ, start_response)


def _code(service: str, exc: ApiError) -> str:
    """The error code ``service`` answers for ``exc`` (a broken rule, or a rule not checked)."""
    return _QUERY_CODES.get(service, exc.code) if exc.code == "ValidationException" else exc.code


def _query_answer(service: str, exc: ApiError, start_response) -> list[bytes]:
    """A query-protocol error, as IAM, STS and CloudWatch write it (XML)."""
    import uuid
    from xml.sax.saxutils import escape

    request_id = str(uuid.uuid4())
    kind = "Sender" if exc.status < 500 else "Receiver"
    body = (f'<ErrorResponse xmlns="{_QUERY_NAMESPACES[service]}"><Error><Type>{kind}</Type>'
            f"<Code>{_code(service, exc)}</Code><Message>{escape(exc.message)}</Message>"
            f"</Error><RequestId>{request_id}</RequestId></ErrorResponse>").encode()
    start_response(f"{exc.status} {'Bad Request' if exc.status < 500 else 'Internal Error'}",
                   [("Content-Type", "text/xml"), ("Content-Length", str(len(body))),
                    ("x-amzn-RequestId", request_id)])
    return [body]


def _rpc_answer(model, exc: ApiError, cbor: bool, start_response) -> list[bytes]:
    """A JSON or rpc-v2-cbor error (https://smithy.io/2.0/additional-specs/protocols/
    smithy-rpc-v2.html): a map with ``__type`` and ``message``. A service compatible with
    its older query protocol (``awsQueryCompatible``, CloudWatch) names its query error
    code in ``x-amzn-query-error``, which botocore reads as the code."""
    import json
    import uuid

    from .wire import cbor_encode

    code = _code(model.service_name, exc)
    compatible = model.metadata.get("awsQueryCompatible") is not None
    shape_name = f"{code}Exception" if compatible and not code.endswith("Exception") else code
    document = {"__type": shape_name, "message": exc.message}
    body = cbor_encode(document) if cbor else json.dumps(document).encode()
    headers = [("Content-Type", "application/cbor" if cbor else "application/x-amz-json-1.1"),
               ("Content-Length", str(len(body))), ("x-amzn-RequestId", str(uuid.uuid4()))]
    if cbor:
        headers.append(("smithy-protocol", "rpc-v2-cbor"))
    else:
        headers.append(("x-amzn-ErrorType", shape_name))
    if compatible:
        kind = "Sender" if exc.status < 500 else "Receiver"
        headers.append(("x-amzn-query-error", f"{code};{kind}"))
    start_response(f"{exc.status} {'Bad Request' if exc.status < 500 else 'Internal Error'}",
                   headers)
    return [body]
