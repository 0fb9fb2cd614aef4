"""SageMaker Studio's restricted Docker engine, imitated in front of a real one.

A Studio space with Docker access talks to a Docker endpoint that is not a plain
``dockerd``: it keeps a few rules that a laptop's engine does not. This proxy
listens on its own socket, enforces those rules, and passes everything else to
the real engine behind it, byte for byte, so code and tests that work through it
see what Studio users see:

* **Engine API 1.41 only, and only on versioned paths.** Studio serves Docker
  20.10, Engine API 1.41. An unversioned path such as ``GET /version`` is answered
  with HTTP 301 and no JSON body (aws/amazon-sagemaker-feedback#161), so docker-py's
  version negotiation (``docker.from_env()``, version ``"auto"``) fails with
  "Error while fetching server API version: Expecting value: line 1 column 1
  (char 0)", while ``docker.from_env(version="1.41")`` works
  (aws/sagemaker-python-sdk#5147). A path for a newer version gets dockerd 20.10's
  own answer, HTTP 400 "client version 1.43 is too new. Maximum supported API
  version is 1.41".
* **Only the network ``sagemaker``**, for builds and for containers
  (aws/sagemaker-python-sdk#5147 quotes both refusals). ``POST /build`` with a
  ``networkmode`` other than ``sagemaker`` gets HTTP 403 "Forbidden. Reason:
  [ImageBuild] 'sagemaker' is the only user allowed network input"; an absent
  ``networkmode`` is Docker's ``default`` and is refused the same way.
  ``POST /containers/create`` whose ``HostConfig.NetworkMode`` (absent: ``default``)
  or ``NetworkingConfig.EndpointsConfig`` names another network gets HTTP 403
  "Forbidden. Reason: [ContainerCreate] SageMaker Studio Docker Usage only allows
  'sagemaker' as network input".

The engine behind has no ``sagemaker`` network, so an admitted ``sagemaker`` is
rewritten to ``network_as`` (``host`` on the sandbox's machines, whose engines run
with ``--bridge=none``) in the build's ``networkmode`` and in the container's
``HostConfig.NetworkMode`` and ``EndpointsConfig``.

How a connection is carried: the proxy reads one request head (and the body of a
container create, which it may rewrite, fixing ``Content-Length``), forwards it
to the engine with ``Connection: close`` (an upgrade request such as docker-py's
``attach`` keeps its ``Connection: Upgrade``), relays the engine's answer head
with ``Connection: close`` (a ``101`` is relayed as is), and from then on pipes
raw bytes both ways: streamed build contexts, chunked progress streams, push and
pull streams and hijacked attach streams all pass unchanged. Each connection
carries exactly one request.

Where the rules leave a choice, the proxy checks the network rules before the
version rule (a request on ``/v1.44/`` with another network gets the 403: #5147
reports that pinning ``version="1.44"`` got past negotiation and then met the
ContainerCreate refusal). Every unversioned path, ``/_ping`` included, gets the
301; the docker CLI, whose negotiation pings ``/_ping``, then falls back to API
1.24 and refuses ``--network``, so use it with ``DOCKER_API_VERSION=1.41``
(checked with docker CLI 28.2 through this proxy). In Studio itself the endpoint
is ``unix:///docker/proxy.sock`` (aws-samples/amazon-sagemaker-with-nvidia-bionemo#2).

Example::

    >>> import docker
    >>> with StudioDockerProxy("/tmp/studio") as proxy:
    ...     client = docker.DockerClient(base_url=proxy.url, version="1.41")
    ...     client.containers.run("sm-magics/sandbox-base:bookworm", "true",
    ...                           network_mode="sagemaker", remove=True)
    b''

As its own process (stops on SIGTERM or Ctrl-C)::

    python -m sm_magics.sandbox.studio_docker --socket /tmp/studio/docker.sock \\
        [--engine unix:///var/run/docker.sock] [--network-as host] [--tcp-port 0]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import selectors
import signal
import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, unquote_plus, urlsplit

__all__ = ["BUILD_FORBIDDEN", "CREATE_FORBIDDEN", "STUDIO_API_VERSION", "STUDIO_NETWORK",
           "StudioDockerProxy", "build_query_for_engine", "container_config_for_engine", "main"]

STUDIO_NETWORK = "sagemaker"
STUDIO_API_VERSION = "1.41"
DEFAULT_ENGINE = "unix:///var/run/docker.sock"
BUILD_FORBIDDEN = ("Forbidden. Reason: [ImageBuild] 'sagemaker' is the only user allowed "
                   "network input")
CREATE_FORBIDDEN = ("Forbidden. Reason: [ContainerCreate] SageMaker Studio Docker Usage only "
                    "allows 'sagemaker' as network input")

_VERSIONED_PATH = re.compile(r"^/v([0-9.]+)(/.*)$")
_MAX_HEAD = 1 << 20  # Go's net/http default limit for a request head (DefaultMaxHeaderBytes)
_CHUNK = 1 << 16
_LOOPBACK = {"127.0.0.1", "localhost"}


class _BadMessage(Exception):
    """A request or answer that is not well-formed HTTP/1.1."""


class _Head:
    """An HTTP/1.1 message head: the start line and the header fields in their order."""

    def __init__(self, start: str, fields: list[tuple[str, str]]) -> None:
        self.start = start
        self.fields = fields

    def get(self, name: str) -> str | None:
        return next((v for k, v in self.fields if k.lower() == name.lower()), None)

    def remove(self, name: str) -> None:
        self.fields = [(k, v) for k, v in self.fields if k.lower() != name.lower()]

    def set(self, name: str, value: str) -> None:
        self.remove(name)
        self.fields.append((name, value))

    def encode(self) -> bytes:
        lines = [self.start, *(f"{k}: {v}" for k, v in self.fields), "", ""]
        return "\r\n".join(lines).encode("latin-1")


def _read_head(reader: io.BufferedReader) -> _Head | None:
    """The next message head from ``reader``; ``None`` when the peer closed before sending one."""
    lines: list[str] = []
    size = 0
    while True:
        line = reader.readline(_MAX_HEAD + 1)
        size += len(line)
        if not line:
            if lines:
                raise _BadMessage("connection closed inside a message head")
            return None
        if size > _MAX_HEAD:
            raise _BadMessage("message head too large")
        text = line.decode("latin-1").rstrip("\r\n")
        if not text:
            break
        lines.append(text)
    fields = []
    for text in lines[1:]:
        name, colon, value = text.partition(":")
        if not colon or not name.strip():
            raise _BadMessage(f"malformed header line {text[:80]!r}")
        fields.append((name.strip(), value.strip()))
    return _Head(lines[0], fields)


def _body(reader: io.BufferedReader, head: _Head) -> Iterator[bytes]:
    """The request body, decoded from ``Content-Length`` or chunked framing."""
    if "chunked" in (head.get("Transfer-Encoding") or "").lower():
        while True:
            size_line = reader.readline(1024).split(b";")[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise _BadMessage("malformed chunk size") from None
            if size == 0:
                while reader.readline(_MAX_HEAD).strip():  # trailer fields
                    pass
                return
            data = reader.read(size)
            if len(data) < size:
                raise _BadMessage("connection closed inside a chunk")
            reader.readline(1024)
            yield data
    remaining = int(head.get("Content-Length") or 0)
    while remaining > 0:
        data = reader.read(min(remaining, _CHUNK))
        if not data:
            raise _BadMessage("connection closed inside the body")
        remaining -= len(data)
        yield data


class _Request:
    """A request being admitted: its head, and its body read at most once."""

    def __init__(self, head: _Head, reader: io.BufferedReader) -> None:
        self.head, self._reader, self._body_read = head, reader, False

    def read_body(self) -> bytes:
        self._body_read = True
        return b"".join(_body(self._reader, self.head))

    def drop_body(self) -> None:
        """Read and drop the body unless it was read, or the client waits for 100 Continue."""
        if not self._body_read and (self.head.get("Expect") or "").lower() != "100-continue":
            self._body_read = True
            for _ in _body(self._reader, self.head):
                pass


def _api_version_too_new(version: str) -> bool:
    try:
        parts = tuple(int(part) for part in version.split("."))
    except ValueError:
        return False  # not a version dockerd understands: let the engine answer it
    return parts > tuple(int(part) for part in STUDIO_API_VERSION.split("."))


def build_query_for_engine(query: str, network_as: str) -> str | None:
    """The ``POST /build`` query with ``networkmode=sagemaker`` mapped, or ``None`` if refused.

    Only the ``networkmode`` pairs change; every other pair is kept byte for byte.

    >>> build_query_for_engine("t=x%3A1&networkmode=sagemaker", "host")
    't=x%3A1&networkmode=host'
    >>> build_query_for_engine("t=x%3A1", "host") is None  # absent: Docker's "default"
    True
    """
    pieces = query.split("&") if query else []
    admitted = False
    for index, piece in enumerate(pieces):
        key, _, value = piece.partition("=")
        if unquote_plus(key) != "networkmode":
            continue
        if unquote_plus(value) != STUDIO_NETWORK:
            return None
        pieces[index] = f"networkmode={quote(network_as, safe='')}"
        admitted = True
    return "&".join(pieces) if admitted else None


def container_config_for_engine(config: dict, network_as: str) -> dict | None:
    """A ``POST /containers/create`` body with ``sagemaker`` mapped, or ``None`` if refused.

    >>> container_config_for_engine({"HostConfig": {"NetworkMode": "sagemaker"}}, "host")
    {'HostConfig': {'NetworkMode': 'host'}}
    >>> container_config_for_engine({"Image": "x"}, "host") is None  # absent: "default"
    True
    """
    host_config = config.get("HostConfig") or {}
    if (host_config.get("NetworkMode") or "default") != STUDIO_NETWORK:
        return None
    networking = config.get("NetworkingConfig") or {}
    endpoints = networking.get("EndpointsConfig") or {}
    if any(name != STUDIO_NETWORK for name in endpoints):
        return None
    mapped = {**config, "HostConfig": {**host_config, "NetworkMode": network_as}}
    if endpoints:
        mapped["NetworkingConfig"] = {**networking,
                                      "EndpointsConfig": {network_as: endpoints[STUDIO_NETWORK]}}
    return mapped


class _Refusal(Exception):
    """An answer the proxy gives itself instead of forwarding the request."""

    def __init__(self, status: int, reason: str, message: str | None = None,
                 fields: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message or reason)
        self.status, self.reason, self.message, self.fields = status, reason, message, fields

    def encode(self) -> bytes:
        body = b""
        fields = [*self.fields]
        if self.message is not None:
            # dockerd's error body: {"message":"..."} and a newline
            body = (json.dumps({"message": self.message}, separators=(",", ":")) + "\n").encode()
            fields.append(("Content-Type", "application/json"))
        fields += [("Content-Length", str(len(body))), ("Connection", "close")]
        return _Head(f"HTTP/1.1 {self.status} {self.reason}", fields).encode() + body


class StudioDockerProxy:
    """A Docker endpoint with SageMaker Studio's rules, in front of a real engine.

    Listens on the unix socket ``directory/socket_name`` (created ``0600``: it is
    as powerful as the engine's own socket) and, when ``tcp_port`` is given, also
    on ``127.0.0.1:tcp_port`` (``0``: any free port, see :attr:`tcp_url`). Serving
    starts at construction; :meth:`close` (or leaving the ``with`` block) stops
    it, cuts the connections still open and removes the socket file. ``engine`` is
    the real engine (``unix:///PATH``, or ``tcp://127.0.0.1:PORT``); ``network_as``
    is the network that ``sagemaker`` becomes for it.

    >>> proxy = StudioDockerProxy("/tmp/studio", tcp_port=0)
    >>> proxy.url, proxy.tcp_url
    ('unix:///tmp/studio/docker.sock', 'tcp://127.0.0.1:40213')
    >>> proxy.close()
    """

    def __init__(self, directory: str | os.PathLike, *, socket_name: str = "docker.sock",
                 engine: str = DEFAULT_ENGINE, network_as: str = "host",
                 tcp_port: int | None = None) -> None:
        self.engine = engine
        self.network_as = network_as
        self._engine_address = _engine_address(engine)
        self.socket_path = Path(directory).absolute() / socket_name
        if len(os.fsencode(self.socket_path)) > 107:
            raise ValueError(f"{self.socket_path} is too long for a unix socket (107 bytes at "
                             "most): give the proxy a shorter directory")
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._closed = False
        self._live: set[socket.socket] = set()
        self._handlers: set[threading.Thread] = set()
        self._listeners = [self._listen_unix()]
        self.tcp_url: str | None = None
        if tcp_port is not None:
            listener = socket.create_server(("127.0.0.1", tcp_port))
            self._listeners.append(listener)
            self.tcp_url = f"tcp://127.0.0.1:{listener.getsockname()[1]}"
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._acceptor = threading.Thread(target=self._accept, name="studio-docker-accept",
                                          daemon=True)
        self._acceptor.start()

    @property
    def url(self) -> str:
        """The unix socket as a Docker base URL: ``unix:///…/docker.sock``."""
        return f"unix://{self.socket_path}"

    def __enter__(self) -> StudioDockerProxy:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "serving"
        return (f"<StudioDockerProxy {state} {self.url} -> {self.engine} "
                f"({STUDIO_NETWORK!r} as {self.network_as!r})>")

    def close(self) -> None:
        """Stop listening, cut open connections, wait for their threads, remove the socket."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            live, handlers = list(self._live), list(self._handlers)
        self._wake_writer.send(b"x")
        self._acceptor.join()
        for sock in live:
            _shutdown(sock, socket.SHUT_RDWR)
        for thread in handlers:
            thread.join(timeout=10)
        for sock in (*self._listeners, self._wake_reader, self._wake_writer):
            sock.close()
        self.socket_path.unlink(missing_ok=True)

    def _listen_unix(self) -> socket.socket:
        path = self.socket_path
        if path.is_socket():
            probe = socket.socket(socket.AF_UNIX)
            try:
                probe.connect(str(path))
            except OSError:
                path.unlink()  # left behind by a proxy that is gone
            else:
                raise FileExistsError(f"something already serves {path}")
            finally:
                probe.close()
        elif path.exists():
            raise FileExistsError(f"{path} exists and is not a socket")
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(str(path))
        os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
        listener.listen(64)
        return listener

    def _accept(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._wake_reader, selectors.EVENT_READ)
            for listener in self._listeners:
                listener.setblocking(False)
                selector.register(listener, selectors.EVENT_READ)
            while True:
                for key, _ in selector.select():
                    if key.fileobj is self._wake_reader:
                        return
                    try:
                        client, _ = key.fileobj.accept()
                    except (BlockingIOError, InterruptedError):
                        continue
                    client.setblocking(True)
                    self._start_handler(client)

    def _start_handler(self, client: socket.socket) -> None:
        thread = threading.Thread(target=self._handle, args=(client,), daemon=True,
                                  name="studio-docker-connection")
        with self._lock:
            if self._closed:
                client.close()
                return
            self._live.add(client)
            self._handlers.add(thread)
        thread.start()

    def _track(self, sock: socket.socket) -> bool:
        with self._lock:
            if not self._closed:
                self._live.add(sock)
            return not self._closed

    def _handle(self, client: socket.socket) -> None:
        engine: socket.socket | None = None
        reader = client.makefile("rb")
        try:
            head = _read_head(reader)
            if head is None:
                return
            request = _Request(head, reader)
            try:
                forward = self._admit(request)
                engine = self._connect_engine()
            except _Refusal as refusal:
                request.drop_body()  # so the client, maybe still sending it, reads the answer
                client.sendall(refusal.encode())
                return
            engine.sendall(forward)
            self._relay(client, reader, engine)
        except _BadMessage as exc:
            with contextlib.suppress(OSError):
                client.sendall(_Refusal(400, "Bad Request", str(exc)).encode())
        except OSError:
            pass  # a peer went away: nothing more to relay
        finally:
            reader.close()
            for sock in (client, engine):
                if sock is not None:
                    _shutdown(sock, socket.SHUT_RDWR)
                    sock.close()
            with self._lock:
                self._live.difference_update({client, engine})
                self._handlers.discard(threading.current_thread())

    def _admit(self, request: _Request) -> bytes:
        """The bytes to send the engine for ``request``: its head, and its body when read.

        Raises :class:`_Refusal` with Studio's answer when a rule refuses the request.
        """
        head = request.head
        try:
            method, target, http_version = head.start.split(" ")
        except ValueError:
            raise _BadMessage(f"malformed request line {head.start[:80]!r}") from None
        parts = urlsplit(target)
        matched = _VERSIONED_PATH.match(parts.path)
        if not matched:
            # Studio answers an unversioned path with a bare 301 (feedback#161)
            raise _Refusal(301, "Moved Permanently")
        api_version, route = matched.groups()
        route = "/" + "/".join(piece for piece in route.split("/") if piece)
        query = parts.query
        body: bytes | None = None
        if method == "POST" and route == "/build":
            query = build_query_for_engine(parts.query, self.network_as)
            if query is None:
                raise _Refusal(403, "Forbidden", BUILD_FORBIDDEN)
        elif method == "POST" and route == "/containers/create":
            body = self._container_body_for_engine(request.read_body())
        if _api_version_too_new(api_version):
            raise _Refusal(400, "Bad Request",
                           f"client version {api_version} is too new. Maximum supported "
                           f"API version is {STUDIO_API_VERSION}",
                           (("Api-Version", STUDIO_API_VERSION),))
        head.start = f"{method} {parts.path}{'?' + query if query else ''} {http_version}"
        if head.get("Upgrade") is None:
            head.set("Connection", "close")
            head.remove("Keep-Alive")
        if body is None:
            return head.encode()
        head.remove("Transfer-Encoding")
        head.remove("Expect")
        head.set("Content-Length", str(len(body)))
        return head.encode() + body

    def _container_body_for_engine(self, body: bytes) -> bytes:
        try:
            config = json.loads(body)
        except ValueError:
            return body  # the engine answers malformed JSON itself
        if not isinstance(config, dict):
            return body
        mapped = container_config_for_engine(config, self.network_as)
        if mapped is None:
            raise _Refusal(403, "Forbidden", CREATE_FORBIDDEN)
        return json.dumps(mapped).encode()

    def _connect_engine(self) -> socket.socket:
        family = socket.AF_UNIX if isinstance(self._engine_address, str) else socket.AF_INET
        engine = socket.socket(family)
        if not self._track(engine):
            engine.close()
            raise OSError("the proxy is closing")
        try:
            engine.connect(self._engine_address)
        except OSError as exc:
            engine.close()
            with self._lock:
                self._live.discard(engine)
            raise _Refusal(502, "Bad Gateway", f"The Docker engine behind the Studio stand-in "
                           f"does not answer at {self.engine}: {exc}") from None
        return engine

    def _relay(self, client: socket.socket, client_reader: io.BufferedReader,
               engine: socket.socket) -> None:
        """Pipe the rest of the request up and the whole answer down, until the engine is done."""

        def upstream() -> None:
            try:
                while chunk := client_reader.read1(_CHUNK):
                    engine.sendall(chunk)
            except OSError:
                _shutdown(engine, socket.SHUT_RDWR)  # the client is gone: so is the request
            else:
                _shutdown(engine, socket.SHUT_WR)  # pass the client's half-close on

        pump = threading.Thread(target=upstream, daemon=True, name="studio-docker-upstream")
        pump.start()
        engine_reader = engine.makefile("rb")
        try:
            answered = False
            while (head := _read_head(engine_reader)) is not None:
                status = head.start.split(" ", 2)[1] if " " in head.start else ""
                if status.startswith("1") and status != "101":
                    client.sendall(head.encode())  # 100 Continue: the final answer follows
                    continue
                if status != "101":
                    head.set("Connection", "close")
                client.sendall(head.encode())
                answered = True
                break
            if not answered:
                client.sendall(_Refusal(502, "Bad Gateway", "The Docker engine closed the "
                                        "connection without answering").encode())
                return
            while chunk := engine_reader.read1(_CHUNK):
                client.sendall(chunk)
        finally:
            engine_reader.close()
            _shutdown(client, socket.SHUT_RDWR)
            _shutdown(engine, socket.SHUT_RDWR)
            pump.join()


def _engine_address(engine: str) -> str | tuple[str, int]:
    """Where to connect for ``engine``: a unix socket path, or a loopback ``(host, port)``."""
    parts = urlsplit(engine)
    if parts.scheme == "unix":
        return parts.path
    if parts.scheme in ("tcp", "http") and parts.hostname in _LOOPBACK and parts.port:
        return ("127.0.0.1" if parts.hostname == "localhost" else parts.hostname, parts.port)
    raise ValueError(f"engine must be unix:///PATH or tcp://127.0.0.1:PORT, not {engine!r}")


def _shutdown(sock: socket.socket, how: int) -> None:
    with contextlib.suppress(OSError):  # already shut, or never connected
        sock.shutdown(how)


def main(argv: list[str] | None = None) -> None:
    """Serve a Studio-like Docker endpoint until SIGTERM or Ctrl-C."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", type=Path, required=True,
                        help="The unix socket to serve (its directory is created).")
    parser.add_argument("--engine", default=DEFAULT_ENGINE,
                        help=f"The real engine behind (default {DEFAULT_ENGINE}).")
    parser.add_argument("--network-as", default="host",
                        help="What the network 'sagemaker' becomes for that engine (default host).")
    parser.add_argument("--tcp-port", type=int, default=None,
                        help="Also listen on 127.0.0.1:PORT (0: any free port).")
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with StudioDockerProxy(args.socket.parent, socket_name=args.socket.name, engine=args.engine,
                           network_as=args.network_as, tcp_port=args.tcp_port) as proxy:
        where = proxy.url + (f" and {proxy.tcp_url}" if proxy.tcp_url else "")
        print(f"Studio Docker stand-in at {where} -> {proxy.engine} "
              f"(network {STUDIO_NETWORK!r} runs as {proxy.network_as!r})", flush=True)
        while not stop.wait(1):
            pass


if __name__ == "__main__":
    main()
