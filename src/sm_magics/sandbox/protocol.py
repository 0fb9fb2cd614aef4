"""AWS's JSON protocol over WSGI: a request body in, an answer or an AWS-shaped error out.

SageMaker speaks ``application/x-amz-json-1.1``: the operation is named by the
``X-Amz-Target`` header (``SageMaker.CreateTrainingJob``), the request and the
answer are JSON objects, and an error is HTTP 4xx/5xx with
``{"__type": code, "message": ...}`` and the ``x-amzn-ErrorType`` header
(botocore reads the code from either; see botocore's ``parsers.py``,
``BaseJSONParser._do_error_parse``).

Example::

    >>> handlers = json_handlers("SageMaker", api.OPERATIONS, api.handle, fallback=moto_app)
    >>> gateway = Gateway(moto_app, handlers=handlers)
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["ApiError", "NotHandled", "decode_page_token", "encode_page_token", "error_answer",
           "json_handlers"]

CONTENT_TYPE = "application/x-amz-json-1.1"
WSGIApp = Callable[[dict[str, Any], Callable], Iterable[bytes]]


class ApiError(Exception):
    """An error answered in the JSON protocol: ``{"__type": code, "message": ...}``, HTTP 400.

    >>> raise ApiError("ValidationException", "Requested resource not found.")
    """

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


class NotHandled(Exception):
    """The request is for a resource the handler does not own: the fallback answers it."""


def json_handlers(service: str, operations: Iterable[str],
                  handle: Callable[[str, dict], dict], fallback: WSGIApp) -> dict[str, WSGIApp]:
    """``{"<service>.<Operation>": wsgi_app}`` answering each operation with ``handle``.

    ``handle(operation, request)`` returns the answer or raises :class:`ApiError`;
    :class:`NotHandled` passes the request on to ``fallback`` unchanged.
    """
    return {f"{service}.{operation}": _app(operation, handle, fallback)
            for operation in operations}


def _app(operation: str, handle: Callable[[str, dict], dict], fallback: WSGIApp) -> WSGIApp:
    def app(environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        try:
            try:
                request = json.loads(body or b"{}")
            except ValueError:
                raise ApiError("SerializationException",
                               "The request body is not valid JSON.") from None
            answer = handle(operation, request)
        except NotHandled:
            environ["wsgi.input"] = io.BytesIO(body)
            return fallback(environ, start_response)
        except ApiError as exc:
            return error_answer(exc, start_response)
        return _answer("200 OK", answer, start_response)

    return app


def error_answer(exc: ApiError, start_response: Callable) -> list[bytes]:
    """``exc`` as the JSON protocol answers an error (``__type``, ``x-amzn-ErrorType``)."""
    status = f"{exc.status} {'Bad Request' if exc.status == 400 else 'Error'}"
    return _answer(status, {"__type": exc.code, "message": exc.message}, start_response)


def _answer(status: str, answer: dict, start_response: Callable) -> list[bytes]:
    payload = json.dumps(answer).encode()
    headers = [("Content-Type", CONTENT_TYPE), ("Content-Length", str(len(payload))),
               ("x-amzn-RequestId", str(uuid.uuid4()))]
    if "__type" in answer:
        headers.append(("x-amzn-ErrorType", answer["__type"]))
    start_response(status, headers)
    return [payload]


def encode_page_token(offset: int) -> str:
    """The ``NextToken`` of a listing that goes on at ``offset``.

    >>> decode_page_token(encode_page_token(20), ApiError("x", "y"))
    20
    """
    import base64

    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def decode_page_token(token: str | None, invalid: ApiError) -> int:
    """The offset a ``NextToken`` stands for (0 when none); ``invalid`` is raised for a bad one."""
    import base64

    if not token:
        return 0
    try:
        return int(json.loads(base64.urlsafe_b64decode(token.encode()))["offset"])
    except (ValueError, KeyError, TypeError):
        raise invalid from None


def read_body(environ: dict[str, Any]) -> bytes:
    """The request's body, read once and put back for the application behind.

    ``CONTENT_LENGTH`` bytes, or everything when the server marks the input as
    terminated (a chunked upload); nothing otherwise.
    """
    stream = environ.get("wsgi.input")
    if stream is None:
        return b""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > 0:
        body = stream.read(length)
    elif environ.get("wsgi.input_terminated"):
        body = stream.read()
    else:
        body = b""
    environ["wsgi.input"] = io.BytesIO(body)
    return body
