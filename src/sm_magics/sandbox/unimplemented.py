"""AWS-shaped errors for what moto cannot answer, instead of an HTML page.

moto raises ``NotImplementedError`` for an action it does not implement, and its server
(Flask in debug mode) lets the exception through: a client got an HTML traceback with
HTTP 500, which botocore cannot parse (and retries). :class:`AnswerUnimplemented` wraps
moto's application and answers, in the protocol of the request:

* ``NotImplementedError``: HTTP 501, code ``NotImplemented``, a message naming the action
  and saying the sandbox does not implement it (501 is not retried by botocore);
* any other exception: HTTP 500, code ``InternalFailure`` (retried, as AWS's own), the
  traceback going to the gateway's log.

The protocol is told by the request: JSON (``__type``, ``message``) for an
``X-Amz-Target`` or a JSON body, ``<Response><Errors><Error>`` for EC2,
``<ErrorResponse><Error>`` for the query protocol (an ``Action`` parameter), else the
REST-XML ``<Error>`` of S3.

Example::

    >>> app = AnswerUnimplemented(moto_app, service_of=signing_name)
    >>> # aws iam generate-service-last-accessed-details --arn ...
    >>> # An error occurred (NotImplemented) when calling the GenerateServiceLastAccessedDetails
    >>> # operation: The sm-magics sandbox does not implement iam:GenerateServiceLastAccessedDetails
"""

from __future__ import annotations

import io
import json
import sys
import traceback
import uuid
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

from .iam_api import query_error_body

__all__ = ["AnswerUnimplemented"]

_FORM = "application/x-www-form-urlencoded"


class AnswerUnimplemented:
    """Wraps a WSGI application (moto's): its exceptions become AWS errors (see the module)."""

    def __init__(self, app, service_of: Callable[[dict], str]) -> None:
        self.app = app
        self.service_of = service_of

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        params = self._query_params(environ)
        try:
            return self.app(environ, start_response)
        except NotImplementedError:
            what = self._action(environ, params)
            from moto import __version__ as moto_version

            return self._error(environ, params, start_response, 501, "NotImplemented",
                               f"The sm-magics sandbox does not implement {what} (moto "
                               f"{moto_version} has no answer for it).")
        except Exception as exc:
            print(f"The sandbox failed to answer {self._action(environ, params)}:",
                  file=sys.stderr)
            traceback.print_exc()
            return self._error(environ, params, start_response, 500, "InternalFailure",
                               f"The sm-magics sandbox failed to answer "
                               f"{self._action(environ, params)}: {type(exc).__name__}: {exc}")

    @staticmethod
    def _query_params(environ: dict[str, Any]) -> dict[str, str]:
        """The parameters of a query-protocol request (the body is kept for the app)."""
        query = environ.get("QUERY_STRING", "")
        if environ.get("CONTENT_TYPE", "").startswith(_FORM) and not environ.get(
                "HTTP_X_AMZ_TARGET"):
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(length) if length else b""
            environ["wsgi.input"] = io.BytesIO(body)
            query = body.decode("utf-8", "replace") or query
        return {k: v[0] for k, v in parse_qs(query, keep_blank_values=True).items()}

    def _action(self, environ: dict[str, Any], params: dict[str, str]) -> str:
        """``service:Action`` of the request, or its method and path (REST APIs)."""
        service = self.service_of(environ) or "AWS"
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if target:
            return f"{service}:{target.rpartition('.')[2]}"
        if params.get("Action"):
            return f"{service}:{params['Action']}"
        return f"{service} {environ.get('REQUEST_METHOD', '')} {environ.get('PATH_INFO', '/')}"

    def _error(self, environ: dict[str, Any], params: dict[str, str], start_response: Callable,
               status: int, code: str, message: str) -> list[bytes]:
        request_id = str(uuid.uuid4())
        content_type = environ.get("CONTENT_TYPE", "")
        headers = [("x-amzn-RequestId", request_id), ("x-amz-request-id", request_id)]
        if environ.get("HTTP_X_AMZ_TARGET") or "json" in content_type:
            body = json.dumps({"__type": code, "message": message}).encode()
            kind = content_type if content_type.startswith("application/x-amz-json") \
                else "application/json"
            headers += [("Content-Type", kind), ("x-amzn-ErrorType", code)]
        elif self.service_of(environ) == "ec2":
            body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
                    f"<Code>{escape(code)}</Code><Message>{escape(message)}</Message></Error>"
                    f"</Errors><RequestID>{request_id}</RequestID></Response>").encode()
            headers.append(("Content-Type", "text/xml"))
        elif params.get("Action"):
            body = query_error_body(code, message, request_id, sender=status < 500)
            headers.append(("Content-Type", "text/xml"))
        else:
            body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{escape(code)}</Code>'
                    f"<Message>{escape(message)}</Message><RequestId>{request_id}</RequestId>"
                    "</Error>").encode()
            headers.append(("Content-Type", "application/xml"))
        reason = "Not Implemented" if status == 501 else "Internal Server Error"
        start_response(f"{status} {reason}", [*headers, ("Content-Length", str(len(body)))])
        return [body]
