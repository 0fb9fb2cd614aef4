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
import sys
from typing import Any

from .. import service_rules
from .protocol import ApiError

__all__ = ["LOG_VARIABLE", "service_model", "validate_request"]

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


# Services answered in AWS's JSON protocol by the sandbox, whose requests name their
# operation in X-Amz-Target ("<targetPrefix>.<Operation>", the model's metadata).
JSON_SERVICES = ("sagemaker", "ecr", "logs", "cloudwatch", "kms")


class ValidatedJsonRequests:
    """A WSGI wrapper that checks every JSON-protocol request against its service model.

    Requests of :data:`JSON_SERVICES` that break a rule get AWS's
    ``ValidationException`` before the wrapped application (moto) sees them; others
    pass unchanged. (S3's REST and the query protocols of IAM and STS are not checked
    here: their requests are not JSON documents of the model's shapes.)

    >>> app = ValidatedJsonRequests(moto_app)
    """

    def __init__(self, app) -> None:
        self.app = app
        self._targets: dict[str, Any] | None = None

    def _model_for(self, target: str):
        if self._targets is None:
            found = {}
            for name in JSON_SERVICES:
                model = service_rules.service_model(name)
                prefix = model.metadata.get("targetPrefix")
                if prefix and model.metadata.get("protocol") == "json":
                    found[prefix] = model
            self._targets = found
        prefix, _, operation = target.rpartition(".")
        model = self._targets.get(prefix)
        if model is None or operation not in model.operation_names:
            return None, operation
        return model, operation

    def __call__(self, environ: dict[str, Any], start_response):
        import io
        import json

        from .protocol import error_answer

        model, operation = self._model_for(environ.get("HTTP_X_AMZ_TARGET", ""))
        if model is None:
            return self.app(environ, start_response)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            return self.app(environ, start_response)  # the service's own parser answers it
        try:
            validate_request(operation, request, model)
        except ApiError as exc:
            return error_answer(exc, start_response)
        return self.app(environ, start_response)
