"""The registry client (:mod:`sm_magics.registry`) against real registries on this machine.

Each registry is Debian's ``docker-registry`` (distribution v2) on 127.0.0.1,
with its own temporary storage. Where a test needs to see or shape the
traffic, a small reverse proxy (a WSGI app in a thread) stands in front of
one: it counts the requests, and in its ``bearer`` mode it is the token
protocol itself, answering 401 with the ``Bearer`` challenge and issuing
tokens from its ``/token`` realm, as Docker Hub and ECR Public do; in its
``basic`` mode it asks for a ``Basic`` credential, as ECR does.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import http.client
import io
import json
import os
import re
import secrets
import shutil
import socket
import socketserver
import subprocess
import sys
import threading
import time
import tracemalloc
import urllib.parse
import urllib.request
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest

from sm_magics.errors import RemoteFailure, UsageError
from sm_magics.registry import Descriptor, Reference, Registry, parse_reference

pytestmark = pytest.mark.skipif(shutil.which("docker-registry") is None,
                                reason="needs Debian's docker-registry program")

MiB = 1024 * 1024
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG = "application/vnd.oci.image.config.v1+json"


# ----------------------------------------------------------------- registries


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, process: subprocess.Popen, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the registry exited with {process.returncode}")
        try:
            with opener.open(url, timeout=2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer")


class RegistryProcess:
    """One ``docker-registry serve`` on 127.0.0.1, storing under ``root``."""

    def __init__(self, root: Path, *, relative_urls: bool = False) -> None:
        self.port = free_port()
        storage = root / "storage"
        storage.mkdir(parents=True)
        config = root / "registry.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: error\n"
            f"storage:\n  filesystem:\n    rootdirectory: {storage}\n"
            "  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{self.port}\n"
            + ("  relativeurls: true\n" if relative_urls else "")
        )
        self.log = open(root / "registry.log", "wb")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            [shutil.which("docker-registry"), "serve", str(config)],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_for(f"http://{self.host}/v2/", self.process)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    """A registry whose upload ``Location`` headers are relative (``/v2/...``)."""
    registry = RegistryProcess(tmp_path_factory.mktemp("registry-a"), relative_urls=True)
    yield registry
    registry.stop()


@pytest.fixture(scope="module")
def second(tmp_path_factory):
    """Another registry (absolute ``Location`` headers), for copies across hosts."""
    registry = RegistryProcess(tmp_path_factory.mktemp("registry-b"))
    yield registry
    registry.stop()


# ------------------------------------------------------------------- the proxy


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 (the base's name)
        pass


_HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
               "trailers", "transfer-encoding", "upgrade"}
_SCOPED = re.compile(r"^/v2/(.+?)/(manifests|blobs|tags)/")


class Front:
    """A reverse proxy in front of a registry: counts requests, and checks credentials.

    ``auth=None`` forwards everything; ``"basic"`` wants ``Basic`` for one of
    ``users``; ``"bearer"`` wants a token from ``/token`` granting the
    request's repository and action (the challenge names them), which the
    realm issues anonymously, or only for ``users`` when there are some.
    """

    def __init__(self, upstream: RegistryProcess, *, auth: str | None = None,
                 users: dict[str, str] | None = None, token_key: str = "token") -> None:
        self.upstream = upstream.port
        self.auth = auth
        self.users = users or {}
        self.token_key = token_key
        self.requests: list[tuple[str, str, int]] = []  # method, path and query, status
        self.realm_requests: list[list[str]] = []  # the scopes of each token request
        self.locations: list[str] = []
        self.tokens: dict[str, set[tuple[str, str]]] = {}
        self.lock = threading.Lock()
        self.server = make_server("127.0.0.1", 0, self, server_class=_Server,
                                  handler_class=_QuietHandler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server.server_port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def revoke(self) -> None:
        """Every token issued so far stops working (as an expired one does)."""
        with self.lock:
            self.tokens.clear()

    def count(self, method: str, contains: str = "") -> int:
        return sum(1 for m, path, _ in self.requests if m == method and contains in path)

    # -- WSGI

    def __call__(self, environ, start_response):
        method = environ["REQUEST_METHOD"]
        path = urllib.parse.quote(environ.get("PATH_INFO", ""))
        query = environ.get("QUERY_STRING", "")
        target = path + (f"?{query}" if query else "")
        if path == "/token":
            return self._token(environ, start_response, query)
        refusal = self._refusal(environ, method, path, query)
        if refusal:
            self._drain(environ)
            status, headers, body = refusal
            self._record(method, target, int(status.split()[0]))
            start_response(status, headers)
            return [body]
        return self._forward(environ, start_response, method, target)

    def _record(self, method: str, target: str, status: int) -> None:
        with self.lock:
            self.requests.append((method, target, status))

    @staticmethod
    def _drain(environ) -> None:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        while length > 0:
            got = environ["wsgi.input"].read(min(length, 64 * 1024))
            if not got:
                break
            length -= len(got)

    def _refusal(self, environ, method, path, query):
        header = environ.get("HTTP_AUTHORIZATION", "")
        if self.auth == "basic":
            scheme, _, value = header.partition(" ")
            try:
                user, _, password = base64.b64decode(value).decode().partition(":")
            except ValueError:
                user, password = "", None
            if scheme == "Basic" and self.users.get(user) == password:
                return None
            return ("401 Unauthorized",
                    [("WWW-Authenticate", 'Basic realm="test-registry"'),
                     ("Content-Type", "application/json")],
                    json.dumps({"errors": [{"code": "UNAUTHORIZED",
                                            "message": "authentication required"}]}).encode())
        if self.auth == "bearer":
            needed: set[tuple[str, str]] = set()
            match = _SCOPED.match(urllib.parse.unquote(path))
            if match:
                needed.add((match[1], "pull" if method in ("GET", "HEAD") else "push"))
                source = urllib.parse.parse_qs(query).get("from")
                if source:
                    needed.add((source[0], "pull"))
            scheme, _, token = header.partition(" ")
            with self.lock:
                granted = self.tokens.get(token) if scheme == "Bearer" else None
            if granted is not None and needed <= granted:
                return None
            scope = " ".join(f"repository:{name}:{'pull,push' if action == 'push' else 'pull'}"
                             for name, action in sorted(needed))
            challenge = (f'Bearer realm="http://{self.host}/token",service="test-registry"'
                         + (f',scope="{scope}"' if scope else ""))
            if granted is not None:
                challenge += ',error="insufficient_scope"'
            return ("401 Unauthorized",
                    [("WWW-Authenticate", challenge), ("Content-Type", "application/json")],
                    json.dumps({"errors": [{"code": "UNAUTHORIZED",
                                            "message": "authentication required"}]}).encode())
        return None

    def _token(self, environ, start_response, query):
        params = urllib.parse.parse_qs(query)
        scopes = [s for value in params.get("scope", []) for s in value.split()]
        with self.lock:
            self.realm_requests.append(scopes)
        if self.users:
            scheme, _, value = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
            try:
                user, _, password = base64.b64decode(value).decode().partition(":")
            except ValueError:
                user, password = "", None
            if scheme != "Basic" or self.users.get(user) != password:
                start_response("401 Unauthorized", [("Content-Type", "application/json")])
                return [json.dumps({"details": "incorrect username or password"}).encode()]
        granted = set()
        for scope in scopes:
            kind, name, actions = scope.split(":")
            assert kind == "repository"
            granted |= {(name, action) for action in actions.split(",")}
        token = secrets.token_hex(16)
        with self.lock:
            self.tokens[token] = granted
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps({self.token_key: token, "expires_in": 300}).encode()]

    def _forward(self, environ, start_response, method, target):
        connection = http.client.HTTPConnection("127.0.0.1", self.upstream, timeout=30)
        connection.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        connection.putheader("Host", environ["HTTP_HOST"])
        for key, value in environ.items():
            if key.startswith("HTTP_") and key not in ("HTTP_HOST", "HTTP_AUTHORIZATION",
                                                       "HTTP_CONNECTION"):
                connection.putheader(key[5:].replace("_", "-").title(), value)
        if environ.get("CONTENT_TYPE"):
            connection.putheader("Content-Type", environ["CONTENT_TYPE"])
        length = int(environ.get("CONTENT_LENGTH") or 0)
        if length or method in ("POST", "PUT", "PATCH"):
            connection.putheader("Content-Length", str(length))
        connection.endheaders()
        while length > 0:
            piece = environ["wsgi.input"].read(min(length, 64 * 1024))
            if not piece:
                break
            connection.send(piece)
            length -= len(piece)
        response = connection.getresponse()
        self._record(method, target, response.status)
        headers = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP]
        if response.getheader("Location"):
            with self.lock:
                self.locations.append(response.getheader("Location"))
        start_response(f"{response.status} {response.reason}", headers)

        def body():
            try:
                while piece := response.read(64 * 1024):
                    yield piece
            finally:
                connection.close()

        return body()


@pytest.fixture
def fronts():
    made: list[Front] = []

    def make(upstream, **kwargs) -> Front:
        made.append(Front(upstream, **kwargs))
        return made[-1]

    yield make
    for front in made:
        front.close()


# -------------------------------------------------------------------- helpers


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def random_file(path: Path, size: int) -> tuple[str, int]:
    """``size`` random bytes in ``path``; their digest and size."""
    hasher = hashlib.sha256()
    with open(path, "wb") as out:
        left = size
        while left:
            piece = os.urandom(min(left, MiB))
            hasher.update(piece)
            out.write(piece)
            left -= len(piece)
    return f"sha256:{hasher.hexdigest()}", size


def blob_digest(registry: Registry, repository: str, digest: str) -> str:
    hasher = hashlib.sha256()
    with registry.open_blob(repository, digest) as stream:
        while piece := stream.read(MiB):
            hasher.update(piece)
    return f"sha256:{hasher.hexdigest()}"


def push_bytes(registry: Registry, repository: str, data: bytes) -> dict:
    digest = digest_of(data)
    registry.upload_blob(repository, io.BytesIO(data), digest, len(data))
    return {"digest": digest, "size": len(data)}


def push_image(registry: Registry, repository: str, architecture: str, *,
               tag: str | None = None, variant: str | None = None,
               media_type: str = OCI_MANIFEST) -> tuple[bytes, dict]:
    """A small image for ``linux/<architecture>``: its manifest bytes and index entry."""
    layer_bytes = gzip.compress(f"layer for {architecture} {secrets.token_hex(4)}".encode())
    layer = {"mediaType": LAYER if media_type == OCI_MANIFEST
             else "application/vnd.docker.image.rootfs.diff.tar.gzip",
             **push_bytes(registry, repository, layer_bytes)}
    config = json.dumps({"architecture": architecture, "os": "linux",
                         "config": {"Env": [f"ARCH={architecture}"]},
                         "rootfs": {"type": "layers", "diff_ids": [digest_of(b"tar")]}},
                        sort_keys=True).encode()
    config_descriptor = {"mediaType": CONFIG if media_type == OCI_MANIFEST
                         else "application/vnd.docker.container.image.v1+json",
                         **push_bytes(registry, repository, config)}
    manifest = json.dumps({"schemaVersion": 2, "mediaType": media_type,
                           "config": config_descriptor, "layers": [layer]},
                          indent=3).encode()  # not compact: the exact bytes must be kept
    digest = registry.put_manifest(repository, tag or digest_of(manifest), manifest, media_type)
    platform = {"architecture": architecture, "os": "linux"}
    if variant:
        platform["variant"] = variant
    return manifest, {"mediaType": media_type, "digest": digest, "size": len(manifest),
                      "platform": platform}


# ----------------------------------------------------------------- references


@pytest.mark.parametrize(("text", "expected"), [
    ("python:3.12-slim", ("registry-1.docker.io", "library/python", "3.12-slim", None)),
    ("python", ("registry-1.docker.io", "library/python", "latest", None)),
    ("docker.io/library/python:3.12-slim",
     ("registry-1.docker.io", "library/python", "3.12-slim", None)),
    ("docker.io/python:3.12-slim", ("registry-1.docker.io", "library/python", "3.12-slim", None)),
    ("index.docker.io/jupyter/base-notebook",
     ("registry-1.docker.io", "jupyter/base-notebook", "latest", None)),
    ("public.ecr.aws/docker/library/python:3.12-slim",
     ("public.ecr.aws", "docker/library/python", "3.12-slim", None)),
    ("763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.3.0-cpu-py311",
     ("763104351884.dkr.ecr.us-east-1.amazonaws.com", "pytorch-training", "2.3.0-cpu-py311",
      None)),
    ("127.0.0.1:5000/sm-magics/sandbox-base:bookworm",
     ("127.0.0.1:5000", "sm-magics/sandbox-base", "bookworm", None)),
    ("localhost/fraud", ("localhost", "fraud", "latest", None)),
    ("localhost:5000/fraud", ("localhost:5000", "fraud", "latest", None)),
    ("python@sha256:" + "a" * 64,
     ("registry-1.docker.io", "library/python", None, "sha256:" + "a" * 64)),
    ("ghcr.io/org/image:v1@sha256:" + "b" * 64,
     ("ghcr.io", "org/image", "v1", "sha256:" + "b" * 64)),
    ("jupyter/base-notebook:2024-01-01",
     ("registry-1.docker.io", "jupyter/base-notebook", "2024-01-01", None)),
])
def test_parse_reference_follows_dockers_rules(text, expected):
    reference = parse_reference(text)
    assert (reference.host, reference.repository, reference.tag, reference.digest) == expected
    assert reference.reference == (expected[3] or expected[2])
    assert parse_reference(str(reference)) == reference


@pytest.mark.parametrize(("text", "says"), [
    ("", "empty"),
    ("Python:3.12", "not a repository name"),
    ("python:bad tag", "not a tag"),
    ("python@sha256:abc", "not a digest"),
    ("python@md5:" + "a" * 32, "not a digest"),
    ("public.ecr.aws/docker//python", "not a repository name"),
])
def test_a_bad_reference_is_a_usage_error_saying_what_is_wrong(text, says):
    with pytest.raises(UsageError, match=says):
        parse_reference(text)


# -------------------------------------------------------------------- blobs


def test_a_large_blob_goes_up_in_chunks_reads_back_and_is_never_uploaded_twice(
        first, fronts, tmp_path):
    front = fronts(first)  # counts the requests; its registry answers relative Locations
    registry = Registry(front.host)
    path = tmp_path / "layer.bin"
    digest, size = random_file(path, 20 * MiB)
    seen: list[tuple[int, int]] = []

    assert registry.upload_blob("chunks/big", path, digest, size,
                                progress=lambda done, total: seen.append((done, total))) \
        == "uploaded"

    assert front.count("PATCH") == 3  # 8 + 8 + 4 MiB
    ranges_ok = [s for m, _, s in front.requests if m == "PATCH"] == [202, 202, 202]
    assert ranges_ok
    assert front.count("PUT", f"digest={urllib.parse.quote(digest)}") == 1
    assert any(location.startswith("/v2/") for location in front.locations)  # relative
    assert seen[-1] == (size, size)
    assert [done for done, _ in seen] == sorted({done for done, _ in seen})  # only grows
    assert len(seen) > 10  # reported as bytes move, not once per chunk
    assert registry.has_blob("chunks/big", digest)
    assert blob_digest(registry, "chunks/big", digest) == digest

    before = len(front.requests)
    seen.clear()
    assert registry.upload_blob("chunks/big", path, digest, size,
                                progress=lambda done, total: seen.append((done, total))) \
        == "present"
    assert [m for m, _, _ in front.requests[before:]] == ["HEAD"]
    assert seen == [(size, size)]


def test_a_small_blob_from_a_file_object_goes_up_in_one_put(first, fronts):
    front = fronts(first)
    registry = Registry(front.host)
    data = os.urandom(100_000)

    assert registry.upload_blob("chunks/small", io.BytesIO(data), digest_of(data),
                                len(data)) == "uploaded"

    assert [m for m, _, _ in front.requests] == ["HEAD", "POST", "PUT"]
    assert blob_digest(registry, "chunks/small", digest_of(data)) == digest_of(data)
    assert not registry.has_blob("chunks/small", digest_of(b"never uploaded"))


def test_bytes_that_do_not_match_their_digest_are_refused_and_the_upload_cancelled(
        first, fronts, tmp_path):
    front = fronts(first)
    registry = Registry(front.host, chunk_size=1 * MiB)
    path = tmp_path / "layer.bin"
    _, size = random_file(path, 3 * MiB)
    wrong = digest_of(b"something else")

    with pytest.raises(RemoteFailure, match="have the digest") as failure:
        registry.upload_blob("chunks/wrong", path, wrong, size)

    assert str(path) in failure.value.what
    assert front.requests[-1][0] == "DELETE"  # the upload session, cancelled
    assert not registry.has_blob("chunks/wrong", wrong)

    with pytest.raises(RemoteFailure, match="3145728 bytes for the blob"):
        registry.upload_blob("chunks/wrong", path, wrong, size + 10)


def test_a_blob_mounts_from_another_repository_and_a_refused_mount_cancels_its_upload(
        first, fronts):
    front = fronts(first)
    registry = Registry(front.host)
    layer = push_bytes(registry, "mount/src", os.urandom(50_000))

    assert registry.mount_blob("mount/dst", layer["digest"], "mount/src") is True
    assert front.requests[-1][:1] == ("POST",) and front.requests[-1][2] == 201
    assert registry.has_blob("mount/dst", layer["digest"])

    missing = digest_of(b"not in mount/src")
    assert registry.mount_blob("mount/other", missing, "mount/src") is False
    (post, delete) = front.requests[-2:]
    assert post[0] == "POST" and post[2] == 202
    assert delete[0] == "DELETE" and delete[2] == 204  # the session it opened, cancelled
    assert not registry.has_blob("mount/other", missing)

    # copy_blob within one registry mounts rather than sending the bytes again
    before = len(front.requests)
    assert registry.copy_blob(registry, "mount/src", "mount/copy", layer) == "mounted"
    assert front.count("PATCH") == 0 and front.count("GET", "/blobs/") == 0
    assert [m for m, _, _ in front.requests[before:]] == ["HEAD", "POST"]


def test_a_copy_across_registries_streams_with_bounded_memory(first, second, tmp_path):
    source = Registry(first.host)
    target = Registry(second.host, chunk_size=4 * MiB)
    path = tmp_path / "layer.bin"
    digest, size = random_file(path, 24 * MiB)
    source.upload_blob("copy/src", path, digest, size)
    layer = Descriptor(media_type=LAYER, digest=digest, size=size)
    seen: list[tuple[int, int]] = []

    tracemalloc.start()
    try:
        outcome = target.copy_blob(source, "copy/src", "copy/dst", layer,
                                   progress=lambda done, total: seen.append((done, total)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert outcome == "copied"
    # one 4 MiB chunk at a time (and a little besides), not the 24 MiB blob
    assert peak < 6 * MiB, f"the copy held {peak / MiB:.1f} MiB of a {size / MiB:.0f} MiB blob"
    assert seen[-1] == (size, size)
    assert [done for done, _ in seen] == sorted({done for done, _ in seen})
    assert blob_digest(target, "copy/dst", digest) == digest
    assert target.copy_blob(source, "copy/src", "copy/dst", layer.as_json()) == "present"


def test_a_copy_from_a_registry_of_anonymous_tokens(first, second, fronts):
    hub = fronts(first, auth="bearer")  # as Docker Hub's anonymous pulls
    source = Registry(hub.host)
    data = os.urandom(300_000)
    layer = push_bytes(Registry(first.host), "library/base", data)

    assert Registry(second.host).copy_blob(source, "library/base", "mine/app", layer) \
        == "copied"

    assert hub.realm_requests == [["repository:library/base:pull"]]
    assert blob_digest(Registry(second.host), "mine/app", layer["digest"]) == layer["digest"]


# ------------------------------------------------------------------ manifests


def test_an_index_resolves_to_its_amd64_manifest(second):
    registry = Registry(second.host)
    arm, arm_entry = push_image(registry, "multi/app", "arm64", variant="v8")
    amd, amd_entry = push_image(registry, "multi/app", "amd64")
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                        "manifests": [arm_entry, amd_entry]}).encode()
    index_digest = registry.put_manifest("multi/app", "3.12", index, OCI_INDEX)

    image = registry.manifest("multi/app", "3.12")

    assert image.raw == amd and image.digest == digest_of(amd) == amd_entry["digest"]
    assert image.media_type == OCI_MANIFEST and not image.is_index
    assert image.platform == "linux/amd64" and image.index_digest == index_digest
    assert image.config.media_type == CONFIG and len(image.layers) == 1
    config = registry.config("multi/app", image.config)
    assert config["architecture"] == "amd64" and config["config"]["Env"] == ["ARCH=amd64"]
    assert blob_digest(registry, "multi/app", image.layers[0].digest) == image.layers[0].digest

    assert registry.manifest("multi/app", "3.12", platform="linux/arm64").raw == arm
    assert registry.manifest("multi/app", "3.12", platform="linux/arm64/v8").raw == arm
    whole = registry.manifest("multi/app", "3.12", platform=None)
    assert whole.is_index and [m.platform for m in whole.manifests] == [
        "linux/arm64/v8", "linux/amd64"]
    by_digest = parse_reference(f"{second.host}/multi/app@{index_digest}")
    assert registry.manifest(by_digest.repository, by_digest.reference).raw == amd
    assert registry.manifest_digest("multi/app", "3.12") == index_digest


def test_a_docker_manifest_list_without_amd64_names_the_platforms_it_has(second):
    registry = Registry(second.host)
    _, arm_entry = push_image(registry, "multi/armonly", "arm64", variant="v8",
                              media_type=DOCKER_MANIFEST)
    _, attestation = push_image(registry, "multi/armonly", "unknown",
                                media_type=DOCKER_MANIFEST)
    attestation["platform"] = {"architecture": "unknown", "os": "unknown"}
    listing = json.dumps({"schemaVersion": 2, "mediaType": DOCKER_LIST,
                          "manifests": [arm_entry, attestation]}).encode()
    registry.put_manifest("multi/armonly", "latest", listing, DOCKER_LIST)

    with pytest.raises(RemoteFailure) as failure:
        registry.manifest("multi/armonly", "latest")

    assert "has no linux/amd64 image" in failure.value.what
    assert failure.value.reason == "its index offers linux/arm64/v8"
    assert "linux/arm64" in str(failure.value) and "unknown" not in str(failure.value)
    assert "SageMaker training runs linux/amd64" in failure.value.hint
    assert registry.manifest("multi/armonly", "latest", platform="linux/arm64") \
        .media_type == DOCKER_MANIFEST


def test_put_manifest_returns_the_digest_manifest_digest_then_finds(second):
    registry = Registry(second.host)
    raw, entry = push_image(registry, "tags/app", "amd64", tag="3f1c9a0b7d2e4c51")

    assert entry["digest"] == digest_of(raw)
    assert registry.manifest_digest("tags/app", "3f1c9a0b7d2e4c51") == entry["digest"]
    assert registry.manifest_digest("tags/app", "no-such-tag") is None
    assert registry.put_manifest("tags/app", "again", raw, OCI_MANIFEST) == entry["digest"]
    assert registry.manifest("tags/app", "again").raw == raw


# ------------------------------------------------------------ authentication


def test_anonymous_bearer_tokens_are_fetched_once_per_scope_and_kept(first, fronts):
    hub = fronts(first, auth="bearer")
    calls: list[bool] = []

    def no_credentials(refresh: bool) -> None:
        calls.append(refresh)
        return None

    registry = Registry(hub.host, no_credentials)
    raw, entry = push_image(registry, "tokens/app", "amd64", tag="v1")
    assert registry.manifest("tokens/app", "v1").raw == raw
    assert registry.manifest_digest("tokens/app", "v1") == entry["digest"]
    for _ in range(3):
        registry.has_blob("tokens/app", entry["digest"])

    assert sorted(map(tuple, hub.realm_requests)) == [
        ("repository:tokens/app:pull",), ("repository:tokens/app:pull,push",)]
    # every request but the very first carried a token: one 401 in all
    assert [s for _, _, s in hub.requests].count(401) == 1
    assert hub.requests[0][2] == 401


def test_a_token_that_stops_working_is_fetched_again_once(first, fronts):
    hub = fronts(first, auth="bearer")
    registry = Registry(hub.host)
    layer = push_bytes(registry, "tokens/refresh", b"some bytes")
    realm_before = len(hub.realm_requests)

    hub.revoke()
    assert registry.has_blob("tokens/refresh", layer["digest"])

    assert len(hub.realm_requests) == realm_before + 1
    assert [s for _, _, s in hub.requests[-2:]] == [401, 200]
    assert registry.has_blob("tokens/refresh", layer["digest"])
    assert len(hub.realm_requests) == realm_before + 1


def test_a_token_service_asking_for_credentials_gets_the_refreshed_ones(first, fronts):
    hub = fronts(first, auth="bearer", users={"AWS": "new-password"},
                 token_key="access_token")
    calls: list[bool] = []

    def credentials(refresh: bool) -> str:
        calls.append(refresh)
        password = "new-password" if refresh else "expired-password"
        return base64.b64encode(f"AWS:{password}".encode()).decode()

    registry = Registry(hub.host, credentials)
    layer = push_bytes(registry, "tokens/private", b"private bytes")

    assert registry.has_blob("tokens/private", layer["digest"])
    assert True in calls
    assert blob_digest(registry, "tokens/private", layer["digest"]) == layer["digest"]

    bad = Registry(hub.host, lambda refresh: base64.b64encode(b"AWS:wrong").decode())
    with pytest.raises(RemoteFailure) as failure:
        bad.has_blob("tokens/private", layer["digest"])
    assert "token service" in failure.value.what and "HTTP 401" in failure.value.what
    assert failure.value.reason == "incorrect username or password"
    assert "credentials" in failure.value.hint


def test_a_mount_in_a_token_registry_asks_for_both_repositories(first, fronts):
    hub = fronts(first, auth="bearer")
    registry = Registry(hub.host)
    layer = push_bytes(registry, "tokens/one", os.urandom(1000))

    assert registry.mount_blob("tokens/two", layer["digest"], "tokens/one")

    assert sorted(hub.realm_requests[-1]) == ["repository:tokens/one:pull",
                                              "repository:tokens/two:pull,push"]


def test_a_basic_registry_gets_the_credential_again_after_a_401(first, fronts):
    ecr = fronts(first, auth="basic", users={"AWS": "fresh"})
    calls: list[bool] = []

    def credential(refresh: bool) -> str:
        calls.append(refresh)
        return base64.b64encode(f"AWS:{'fresh' if refresh else 'stale'}".encode()).decode()

    registry = Registry(ecr.host, credential)
    assert registry.manifest_digest("basic/app", "none") is None
    assert calls == [False, True]
    assert [s for _, _, s in ecr.requests] == [401, 404]

    refused = Registry(ecr.host, lambda refresh: None)
    with pytest.raises(RemoteFailure) as failure:
        refused.manifest_digest("basic/app", "none")
    assert failure.value.what == f"The registry {ecr.host} answered HTTP 401 for basic/app:none"
    assert "credentials" in failure.value.hint


# -------------------------------------------------------------------- errors


def test_registry_error_bodies_become_readable_failures(second):
    registry = Registry(second.host)
    push_bytes(registry, "errors/app", b"so the repository exists")

    with pytest.raises(RemoteFailure) as unknown:
        registry.manifest("errors/app", "no-such-tag")
    assert unknown.value.what == (f"The registry {second.host} answered HTTP 404 for "
                                  "errors/app:no-such-tag")
    assert unknown.value.reason.startswith("MANIFEST_UNKNOWN: manifest unknown")
    assert "Check the tag or digest" in unknown.value.hint
    lines = unknown.value.render_lines()
    assert lines[1].startswith("  Cause: MANIFEST_UNKNOWN") and len(lines) == 3

    missing = {"mediaType": LAYER, "digest": digest_of(b"never uploaded"), "size": 14}
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {**missing, "mediaType": CONFIG},
                           "layers": [missing]}).encode()
    with pytest.raises(RemoteFailure) as blobless:
        registry.put_manifest("errors/app", "v1", manifest, OCI_MANIFEST)
    assert "HTTP 400" in blobless.value.what
    assert "MANIFEST_BLOB_UNKNOWN" in blobless.value.reason
    assert "before its manifest" in blobless.value.hint

    with pytest.raises(RemoteFailure) as no_blob:
        registry.config("errors/app", missing)
    assert "BLOB_UNKNOWN" in no_blob.value.reason


def test_a_registry_that_does_not_answer_is_a_failure_naming_it():
    host = f"127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(RemoteFailure) as failure:
        Registry(host, timeout=5).has_blob("any", digest_of(b""))
    assert failure.value.what == f"The registry {host} cannot be reached"
    assert "refused" in failure.value.reason.lower()
    assert "%sm_sandbox status" in failure.value.hint


def test_importing_the_module_stays_light():
    code = ("import sys, sm_magics.registry; "
            "print(sorted(m for m in ('boto3', 'botocore', 'docker', 'requests', 'oras')"
            " if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_a_reference_round_trips_to_a_registry(second):
    reference = parse_reference(f"{second.host}/refs/app:v1")
    assert reference == Reference(second.host, "refs/app", "v1", None)
    registry = Registry(reference.host)
    assert registry.base_url == f"http://{second.host}/v2"
    assert Registry("docker.io").host == "registry-1.docker.io"
    assert Registry("public.ecr.aws").base_url == "https://public.ecr.aws/v2"
    assert registry.manifest_digest(reference.repository, reference.reference) is None


class _Redirecting:
    """A registry that keeps its blobs elsewhere, as ECR (S3) and Docker Hub (a CDN) do.

    Its blob requests are answered ``307`` to a storage server on another
    port, which records what it was sent.
    """

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.seen: list[tuple[str, str | None]] = []  # method and Authorization, at storage
        self.storage = make_server("127.0.0.1", 0, self.store, server_class=_Server,
                                   handler_class=_QuietHandler)
        self.registry = make_server("127.0.0.1", 0, self.front, server_class=_Server,
                                    handler_class=_QuietHandler)
        for server in (self.storage, self.registry):
            threading.Thread(target=server.serve_forever, daemon=True).start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.registry.server_port}"

    def front(self, environ, start_response):
        location = f"http://127.0.0.1:{self.storage.server_port}/bucket/blob?signature=abc"
        start_response("307 Temporary Redirect", [("Location", location)])
        return [b""]

    def store(self, environ, start_response):
        self.seen.append((environ["REQUEST_METHOD"], environ.get("HTTP_AUTHORIZATION")))
        start_response("200 OK", [("Content-Length", str(len(self.data))),
                                  ("Content-Type", "application/octet-stream")])
        return [] if environ["REQUEST_METHOD"] == "HEAD" else [self.data]

    def close(self) -> None:
        for server in (self.storage, self.registry):
            server.shutdown()
            server.server_close()


def test_a_blob_kept_in_other_storage_is_followed_there_without_the_credential():
    data = b'{"architecture": "amd64", "os": "linux"}'
    redirecting = _Redirecting(data)
    try:
        registry = Registry(redirecting.host, lambda refresh: base64.b64encode(b"AWS:pw").decode())
        assert registry.has_blob("app", digest_of(data))
        assert registry.config("app", {"digest": digest_of(data), "size": len(data)}) == {
            "architecture": "amd64", "os": "linux"}
        assert redirecting.seen == [("HEAD", None), ("GET", None)]  # HEAD stays HEAD
    finally:
        redirecting.close()
