"""The sandbox registry's front door: records (and may refuse) each request as ECR authorizes it.

ECR's data plane authorizes every request of the registry API as an IAM action
on the repository (:func:`~.authorization.registry_authorizations`); Debian's
``docker-registry`` authorizes nothing. This proxy stands in front of it on the
port the sandbox reports as its registry, streams requests and answers through
unchanged, and records each authorization of the notebook's requests in the
sandbox's record (:mod:`.authorization`). With ``--policy`` it answers what
the policy does not allow as ECR does: HTTP 403 and
``{"errors": [{"code": "DENIED", "message": "User: ... is not authorized to
perform: ecr:InitiateLayerUpload on resource: ..."}]}``.

Given a command after ``--``, the proxy starts it (the registry itself,
listening on ``--upstream-port``) as its child in its own process group and
ends when it ends, so the pair starts, stops and dies as one service::

    python -m sm_magics.sandbox.registry_proxy --port 5000 --upstream-port 5001 \\
        --home ~/.sm_magics/sandbox -- docker-registry serve registry.yml

Only 127.0.0.1 is listened on and connected to.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from .authorization import (
    Authorizer,
    is_push,
    record_path,
    registry_authorizations,
    registry_refusal,
)

__all__ = ["RegistryProxy", "main"]

HOST = "127.0.0.1"
_CHUNK = 64 * 1024
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
               "trailer", "transfer-encoding", "upgrade", "content-length",
               "expect"}  # the proxy answered a 100-continue itself


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: RegistryProxy

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
        """Quiet: the registry behind logs the requests."""

    def _any(self) -> None:
        method = self.command
        needed = registry_authorizations(method, self.path)
        credential = self.headers.get("Authorization", "")
        notebook = credential.startswith("Basic ") or is_push(needed)
        if notebook:
            denial = self.server.authorizer.check(
                needed, f"registry {method} {self.path.split('?', 1)[0]}")
            if denial is not None:
                self._refuse(registry_refusal(denial))
                return
        self._forward(method)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _any

    def _refuse(self, body: bytes) -> None:
        length = self.headers.get("Content-Length")
        if length is not None and self.headers.get("Transfer-Encoding") is None:
            self._drain(int(length))
        else:
            self.close_connection = True  # an unread body of unknown length
        self.send_response_only(403, "Forbidden")
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Docker-Distribution-API-Version", "registry/2.0")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _drain(self, length: int) -> None:
        while length > 0:
            chunk = self.rfile.read(min(_CHUNK, length))
            if not chunk:
                return
            length -= len(chunk)

    def _request_body(self):
        """The request body as pieces (the chunked encoding undone), and whether it is chunked."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._chunks(), True
        return self._pieces(int(self.headers.get("Content-Length") or 0)), False

    def _pieces(self, length: int):
        """The next ``length`` bytes of the request, in pieces of at most ``_CHUNK``."""
        left = length
        while left > 0:
            piece = self.rfile.read(min(_CHUNK, left))
            if not piece:
                return
            left -= len(piece)
            yield piece

    def _chunks(self):
        while True:
            size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return
            yield from self._pieces(size)
            self.rfile.readline()  # the CRLF after the chunk

    def _forward(self, method: str) -> None:
        upstream = http.client.HTTPConnection(HOST, self.server.upstream_port, timeout=600)
        try:
            try:
                self._send_upstream(upstream, method)
                answer = upstream.getresponse()
            except OSError as exc:
                self.close_connection = True
                body = f'{{"errors":[{{"code":"UNAVAILABLE","message":"{exc}"}}]}}'.encode()
                self.send_response_only(502, "Bad Gateway")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)
                return
            self._send_answer(method, answer)
        finally:
            upstream.close()

    def _send_upstream(self, upstream: http.client.HTTPConnection, method: str) -> None:
        body, chunked = self._request_body()
        upstream.putrequest(method, self.path, skip_host=True, skip_accept_encoding=True)
        for name, value in self.headers.items():
            if name.lower() not in _HOP_BY_HOP:
                upstream.putheader(name, value)  # Host too: the registry's Location URLs use it
        if chunked:
            upstream.putheader("Transfer-Encoding", "chunked")
        elif self.headers.get("Content-Length") is not None:
            upstream.putheader("Content-Length", self.headers["Content-Length"])
        upstream.endheaders()
        for piece in body:
            upstream.send(b"%X\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
        if chunked:
            upstream.send(b"0\r\n\r\n")

    def _send_answer(self, method: str, answer: http.client.HTTPResponse) -> None:
        self.send_response_only(answer.status, answer.reason)
        for name, value in answer.getheaders():
            if name.lower() not in _HOP_BY_HOP:
                self.send_header(name, value)
        length = answer.getheader("Content-Length")
        bodiless = method == "HEAD" or answer.status in (204, 304) or answer.status < 200
        if length is not None:
            self.send_header("Content-Length", length)
        elif not bodiless:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if bodiless:
            return
        while True:
            piece = answer.read(_CHUNK) if length is not None else answer.read1(_CHUNK)
            if not piece:
                break
            self.wfile.write(piece if length is not None else b"%X\r\n%s\r\n" % (len(piece),
                                                                                   piece))
        if length is None:
            self.wfile.write(b"0\r\n\r\n")


class RegistryProxy(ThreadingHTTPServer):
    """The proxy's server: ``127.0.0.1:port`` in front of ``127.0.0.1:upstream_port``."""

    daemon_threads = True

    def __init__(self, port: int, upstream_port: int, authorizer: Authorizer) -> None:
        super().__init__((HOST, port), _Handler)
        self.upstream_port = upstream_port
        self.authorizer = authorizer


def _upstream_answers(port: int) -> bool:
    connection = http.client.HTTPConnection(HOST, port, timeout=2)
    try:
        connection.request("GET", "/v2/")
        return connection.getresponse().status < 500
    except OSError:
        return False
    finally:
        connection.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="Where the proxy listens.")
    parser.add_argument("--upstream-port", type=int, required=True,
                        help="Where the registry listens.")
    parser.add_argument("--home", type=Path, required=True,
                        help="The sandbox home: the record is run/authorizations.jsonl in it.")
    parser.add_argument("--policy", help="A policy file to enforce (none: record only).")
    parser.add_argument("command", nargs=argparse.REMAINDER,
                        help="After --: the registry to start and watch.")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command

    from .policy import Policy

    authorizer = Authorizer(record_path(args.home),
                            Policy.load(args.policy) if args.policy else None)
    child = subprocess.Popen(command, stdin=subprocess.DEVNULL) if command else None

    def end(code: int) -> None:
        if child is not None and child.poll() is None:
            child.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=5)
        os._exit(code)

    signal.signal(signal.SIGTERM, lambda *_: end(0))
    deadline = time.monotonic() + 30
    while not _upstream_answers(args.upstream_port):
        if (child is not None and child.poll() is not None) or time.monotonic() > deadline:
            print(f"registry proxy: the registry on {HOST}:{args.upstream_port} did not start",
                  file=sys.stderr)
            end(1)
        time.sleep(0.05)
    server = RegistryProxy(args.port, args.upstream_port, authorizer)
    if child is not None:
        def watch() -> None:
            child.wait()
            print(f"registry proxy: the registry ended ({child.returncode})", file=sys.stderr)
            os._exit(1)  # the registry is gone, so is the service

        threading.Thread(target=watch, daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
