"""CloudWatch Logs' ``GetLogEvents`` as AWS may answer it: short pages, and empty ones.

moto answers every event that the ``limit`` allows (10,000 by default). AWS
does not promise that: "A returned page might only be partially full, or even
empty. [...] Partially full or empty pages don't necessarily mean that
pagination is finished. As long as the nextBackwardToken or nextForwardToken
returned is NOT equal to the nextToken that you passed into the API call,
there might be more log events available." (CloudWatch Logs API Reference,
GetLogEvents). A reader that stops at a short page loses lines on AWS, so in
the sandbox it loses them too.

:func:`logs_handlers` answers ``Logs_20140328.GetLogEvents`` in front of moto:

* a page holds at most :data:`MAX_PAGE` events, fewer at most positions, and
  a page of a forward read never runs past a multiple of :data:`PAUSE_EVERY`
  events;
* a forward read at such a multiple (1,000, 2,000...) answers an empty page
  although events follow: its ``nextForwardToken`` differs from the token sent
  and leads on to those events (it is moto's token with ``|again`` added);
* the end of a stream is where moto puts it: the token sent comes back.

How a page is cut depends only on the stream and the position, so reading the
same stream twice gives the same pages. Everything else (errors, the events
themselves) is moto's.

Example::

    >>> handlers = logs_handlers(moto_app)
    >>> gateway = Gateway(moto_app, handlers)
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Iterable
from typing import Any

from .protocol import WSGIApp

__all__ = ["MAX_PAGE", "PAUSE_EVERY", "logs_handlers"]

TARGET = "Logs_20140328.GetLogEvents"
MAX_PAGE = 500
PAUSE_EVERY = 1000
_AGAIN = "|again"


def logs_handlers(moto_app: WSGIApp) -> dict[str, WSGIApp]:
    """``{"Logs_20140328.GetLogEvents": app}``: moto's answers, paged as AWS may page them."""

    def app(environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        request = json.loads(environ["wsgi.input"].read(length) or b"{}") if length else {}
        sent = request.get("nextToken") or ""
        base = sent.removesuffix(_AGAIN)
        position = f"{request.get('logGroupName')}/{request.get('logStreamName')}/{base}"
        page = 1 + hashlib.sha256(position.encode()).digest()[0] * MAX_PAGE // 256
        index = _next_index(base, bool(request.get("startFromHead")))
        pause = False
        if index is not None:
            page = min(page, PAUSE_EVERY - index % PAUSE_EVERY)
            pause = index > 0 and index % PAUSE_EVERY == 0 and sent == base
        asked = {k: v for k, v in request.items() if k != "nextToken"}
        asked["limit"] = min(request.get("limit") or 10_000, page)
        if base:
            asked["nextToken"] = base
        status, headers, body = _call(moto_app, environ, json.dumps(asked).encode())
        if status.startswith("200"):
            answer = json.loads(body)
            if pause and answer.get("events"):  # only before the end
                answer = {"events": [], "nextForwardToken": base + _AGAIN,
                          "nextBackwardToken": answer["nextBackwardToken"]}
            body = json.dumps(answer).encode()
        headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
        start_response(status, [*headers, ("Content-Length", str(len(body)))])
        return [body]

    return {TARGET: app}


def _next_index(base: str, from_head: bool) -> int | None:
    """Index of the event a forward read starts at (``None`` for a backward read).

    moto's forward token is ``f/<index of the last event read>``; no token with
    ``startFromHead`` starts at the first event.
    """
    if not base:
        return 0 if from_head else None
    if not base.startswith("f/"):
        return None
    try:
        return int(base[2:]) + 1
    except ValueError:
        return None


def _call(app: WSGIApp, environ: dict[str, Any], body: bytes) -> tuple[str, list, bytes]:
    """``app``'s answer (status, headers, body) to the request of ``environ`` with ``body``."""
    answered: dict[str, Any] = {}
    chunks: list[bytes] = []

    def start_response(status: str, headers: list, exc_info: Any = None) -> Callable:
        answered.update(status=status, headers=headers)
        return chunks.append

    inner = dict(environ, **{"wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body))})
    result = app(inner, start_response)
    try:
        chunks.extend(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return answered["status"], answered["headers"], b"".join(chunks)
