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

Cross-repository blob mounts (``POST /v2/<name>/blobs/uploads/?mount=<digest>&from=<repo>``)
are decided as ECR decides them ("Blob mounting in Amazon ECR",
https://docs.aws.amazon.com/AmazonECR/latest/userguide/blob-mounting.html), since the
registry behind mounts whatever it has (:class:`Mounting`):

* while the registry's ``BLOB_MOUNTING`` account setting is not ``ENABLED`` (its default;
  ``PutAccountSetting`` of the sandbox's ECR API, :mod:`.ecr_api`, changes it), the POST
  goes on without ``mount`` and ``from``: the registry starts an ordinary upload and
  answers ``202 Accepted``, as a registry that does not mount does (OCI distribution
  spec, "Mounting a blob from another repository"), and nothing more is authorized;
* once it is enabled, the mount also needs ``ecr:GetDownloadUrlForLayer`` on the
  repository mounted from ("Users need ecr:GetDownloadUrlForLayer IAM permission on a
  repository to mount layers from the repository"), and it is carried out (``201
  Created``) only when ECR would: both repositories are ECR repositories of the sandbox's
  account, with the same encryption ("Repositories must use identical encryption type
  and keys"), and an image manifest of the source repository lists the blob (ECR mounts
  a layer only once a manifest pushed to the source references it, and answers 202 for
  a blob uploaded there that none references: aws/containers-roadmap#2860). Otherwise
  the POST goes on without the mount, and the registry answers 202.

This holds for mounts into the repositories of the sandbox's ECR; the registry also
stands in for other registries (the sandbox's base image, bases tests publish), and
into a repository ECR does not have, a mount is the registry's own (:meth:`Mounting.governs`).

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
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

from .account import SANDBOX_REGION, SERVICE_KEY
from .authorization import (
    Authorizer,
    Mount,
    is_push,
    record_path,
    registry_authorizations,
    registry_mount,
    registry_refusal,
)
from .ecr_api import AccountSettings, settings_path

__all__ = ["Mounting", "RegistryProxy", "main"]

HOST = "127.0.0.1"
_CHUNK = 64 * 1024
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
               "trailer", "transfer-encoding", "upgrade", "content-length",
               "expect"}  # the proxy answered a 100-continue itself
# Repository names and digests as the registry takes them (distribution's reference
# grammar); anything else is no mount the registry would carry out.
_NAME = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)"
                   r"[a-z0-9]+)*)*$")
_DIGEST = re.compile(r"^(sha256|sha384|sha512):([0-9a-f]{64,128})$")


def _without_mount(path: str) -> str:
    """``path`` with its ``mount`` and ``from`` parameters left out (an ordinary upload)."""
    bare, _, query = path.partition("?")
    kept = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True)
            if k not in ("mount", "from")]
    return f"{bare}?{urlencode(kept)}" if kept else bare


class _NotInEcr(LookupError):
    """The sandbox's ECR has no repository of that name."""


class Mounting:
    """Decides cross-repository blob mounts as ECR does (see the module's docstring).

    ``home`` is the sandbox home: the account settings are in its run folder
    (:func:`.ecr_api.settings_path`), the registry's storage in ``run/registry``,
    and the AWS endpoint, whose ECR keeps the repositories, is named by its
    ``state.json``.
    """

    def __init__(self, home: Path) -> None:
        self.home = Path(home)
        self.settings = AccountSettings(settings_path(self.home))
        self.storage = self.home / "run" / "registry" / "docker" / "registry" / "v2"
        self._listed: dict[str, frozenset[str]] = {}  # a manifest's digest -> the blobs it lists
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def enabled(self) -> bool:
        """Whether the registry's ``BLOB_MOUNTING`` setting is ``ENABLED``."""
        return self.settings.blob_mounting_enabled()

    def governs(self, mount: Mount) -> bool:
        """Whether ECR's rules decide ``mount``: its target is a repository of the sandbox's ECR.

        A repository the registry has and ECR does not is none of ECR's: the sandbox
        registry also stands in for other registries (the sandbox's base image is served
        by it as Docker Hub serves ``python:3.12-slim``, and tests publish such bases),
        and a mount into one is the registry's own. When ECR cannot be asked, its rules
        hold (no mount).
        """
        try:
            self._encryption(mount.target)
        except _NotInEcr:
            return False
        except LookupError:
            return True
        return True

    def refusal(self, mount: Mount) -> str | None:
        """Why ECR would not carry out ``mount`` (an ordinary upload instead), or ``None``."""
        if not (_NAME.match(mount.target) and _NAME.match(mount.source)):
            return "a repository name the registry does not take"
        if not _DIGEST.match(mount.digest):
            return "a digest the registry does not take"
        try:
            target, source = (self._encryption(mount.target), self._encryption(mount.source))
        except LookupError as exc:
            return str(exc)
        if target != source:
            return (f"the repositories' encryption differs: {source[0]} for {mount.source}, "
                    f"{target[0]} for {mount.target}")
        if not self._listed_by_a_manifest(mount.source, mount.digest):
            return f"no image manifest of {mount.source} lists the blob"
        return None

    # ------------------------------------------------------------ ECR's repositories

    def _ecr(self):
        """A client of the sandbox's ECR, as the sandbox itself (whose calls are not recorded)."""
        state = json.loads((self.home / "state.json").read_text())
        endpoint = f"http://127.0.0.1:{state['api']['port']}"
        with self._lock:
            if endpoint not in self._clients:
                import boto3

                self._clients[endpoint] = boto3.session.Session(
                    aws_access_key_id=SERVICE_KEY, aws_secret_access_key=SERVICE_KEY,
                    region_name=SANDBOX_REGION).client("ecr", endpoint_url=endpoint)
            return self._clients[endpoint]

    def _encryption(self, name: str) -> tuple[str, str | None]:
        """The encryption type and key of the ECR repository ``name`` (LookupError: none)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            found = self._ecr().describe_repositories(repositoryNames=[name])["repositories"]
        except ClientError as exc:
            if exc.response["Error"].get("Code") == "RepositoryNotFoundException":
                raise _NotInEcr(f"{name} is no ECR repository") from None
            raise LookupError(f"the sandbox's ECR did not describe {name}: {exc}") from None
        except (BotoCoreError, OSError, ValueError, KeyError) as exc:
            raise LookupError(f"the sandbox's ECR cannot be reached: {exc}") from None
        config = (found[0] if found else {}).get("encryptionConfiguration") or {}
        return config.get("encryptionType", "AES256"), config.get("kmsKey")

    # ------------------------------------------------------------ the registry's storage

    def _listed_by_a_manifest(self, repository: str, digest: str) -> bool:
        """Whether a manifest the repository received lists ``digest`` (config or layer).

        Distribution links each manifest a repository receives at
        ``repositories/<name>/_manifests/revisions/<algorithm>/<hex>/link`` (removed
        when the manifest is deleted) and keeps its bytes as a blob.
        """
        revisions = self.storage / "repositories" / repository / "_manifests" / "revisions"
        for link in revisions.glob("*/*/link"):
            try:
                manifest = link.read_text().strip()
            except OSError:
                continue
            if digest in self._blobs_of(manifest):
                return True
        return False

    def _blobs_of(self, manifest: str) -> frozenset[str]:
        if manifest in self._listed:
            return self._listed[manifest]
        found = _DIGEST.match(manifest)
        if not found:
            return frozenset()
        algorithm, hexdigest = found.groups()
        data = self.storage / "blobs" / algorithm / hexdigest[:2] / hexdigest / "data"
        try:
            document = json.loads(data.read_bytes())
        except (OSError, ValueError):
            return frozenset()
        if not isinstance(document, dict):
            return frozenset()
        listed = [document.get("config") or {}, *(document.get("layers") or [])]
        blobs = {item.get("digest") for item in listed if isinstance(item, dict)}
        blobs |= {item.get("blobSum") for item in document.get("fsLayers") or []
                  if isinstance(item, dict)}  # schema 1
        self._listed[manifest] = frozenset(b for b in blobs if isinstance(b, str))
        return self._listed[manifest]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: RegistryProxy

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
        """Quiet: the registry behind logs the requests."""

    def _any(self) -> None:
        method = self.command
        path = self.path
        mount = registry_mount(method, path)
        if mount is not None and not self.server.mounting.governs(mount):
            mount = None  # into a repository ECR does not have: the registry's own mount
        if mount is not None and not self.server.mounting.enabled():
            # ECR's blob mounting is off: the mount's parameters are not looked at.
            path, mount = _without_mount(path), None
        needed = registry_authorizations(method, path)
        credential = self.headers.get("Authorization", "")
        notebook = credential.startswith("Basic ") or is_push(needed)
        if notebook:
            denial = self.server.authorizer.check(
                needed, f"registry {method} {path.split('?', 1)[0]}")
            if denial is not None:
                self._refuse(registry_refusal(denial))
                return
        if mount is not None:
            reason = self.server.mounting.refusal(mount)
            if reason is not None:
                print(f"registry proxy: {mount.digest} is not mounted from {mount.source} "
                      f"into {mount.target} ({reason}); an upload starts instead",
                      file=sys.stderr, flush=True)
                path = _without_mount(path)
        self._forward(method, path)

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

    def _forward(self, method: str, path: str) -> None:
        upstream = http.client.HTTPConnection(HOST, self.server.upstream_port, timeout=600)
        try:
            try:
                self._send_upstream(upstream, method, path)
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

    def _send_upstream(self, upstream: http.client.HTTPConnection, method: str,
                       path: str) -> None:
        body, chunked = self._request_body()
        upstream.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
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
    """The proxy's server: ``127.0.0.1:port`` in front of ``127.0.0.1:upstream_port``.

    ``mounting`` decides cross-repository mounts (:class:`Mounting`).
    """

    daemon_threads = True

    def __init__(self, port: int, upstream_port: int, authorizer: Authorizer,
                 mounting: Mounting) -> None:
        super().__init__((HOST, port), _Handler)
        self.upstream_port = upstream_port
        self.authorizer = authorizer
        self.mounting = mounting


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
                        help="The sandbox home: the record is run/authorizations.jsonl in it, "
                             "ECR's account settings run/ecr-account-settings.json.")
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
    server = RegistryProxy(args.port, args.upstream_port, authorizer, Mounting(args.home))
    if child is not None:
        def watch() -> None:
            child.wait()
            print(f"registry proxy: the registry ended ({child.returncode})", file=sys.stderr)
            os._exit(1)  # the registry is gone, so is the service

        threading.Thread(target=watch, daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
