"""A container registry's HTTP API (v2): read images, copy and upload their parts, tag them.

An image in a registry is three kinds of thing, all reachable over plain
HTTP without a Docker engine:

* **blobs**: the layers (``.tar.gz`` files) and the config (a small JSON
  file saying which OS and CPU the image is for, its environment, its
  command), each named by its digest, ``sha256:`` and the hash of its bytes;
* a **manifest**: a JSON document listing the config and the layers;
* a **tag** (``3.12-slim``): a name pointing at one manifest. A tag of a
  base image often points at an *index* instead (a list of manifests, one per
  platform); :meth:`Registry.manifest` picks the ``linux/amd64`` one, the
  platform SageMaker training runs.

So an image can be built by copying a base image's blobs into our repository,
uploading one more layer (the notebook's code) and a new config, and putting
a manifest that lists them, which is what this module offers. It speaks the
OCI distribution API (the Docker Registry HTTP API v2), which ECR, the
sandbox's registry, Docker Hub and ECR Public all speak:

* credentials: the ``Basic`` credential of ECR (its authorization token is
  base64 ``AWS:<password>`` already) and the sandbox, and the ``Bearer``
  token flow of Docker Hub and ECR Public, whose anonymous pulls need no
  account;
* loopback registries (``127.0.0.1:PORT``, ``localhost:PORT``) are spoken to
  over plain HTTP and never through a proxy, as the Docker engine does; every
  other host over HTTPS;
* every failure is a :class:`~sm_magics.errors.RemoteFailure` carrying the
  registry's own error code and message (``MANIFEST_UNKNOWN: manifest
  unknown``) and a hint of what to do.

Example::

    >>> base = parse_reference("python:3.12-slim")
    >>> base.host, base.repository, base.reference
    ('registry-1.docker.io', 'library/python', '3.12-slim')
    >>> hub = Registry(base.host)                      # anonymous, as `docker pull` is
    >>> image = hub.manifest(base.repository, base.reference)   # the linux/amd64 one
    >>> hub.config(base.repository, image.config)["config"]["Cmd"]
    ['python3']
    >>> ecr = Registry("123456789012.dkr.ecr.us-east-1.amazonaws.com",
    ...                credentials=lambda refresh: token)
    >>> for layer in image.layers:
    ...     ecr.copy_blob(hub, base.repository, "sagemaker-fraud", layer,
    ...                   progress=lambda done, total: print(f"{done}/{total} bytes"))
    >>> ecr.upload_blob("sagemaker-fraud", "code.tar.gz", digest, size)
    'uploaded'
    >>> ecr.put_manifest("sagemaker-fraud", "3f1c9a0b7d2e4c51", manifest_bytes,
    ...                  "application/vnd.oci.image.manifest.v1+json")
    'sha256:4b1e...'
    >>> ecr.manifest_digest("sagemaker-fraud", "3f1c9a0b7d2e4c51")
    'sha256:4b1e...'
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import ipaddress
import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from .errors import RemoteFailure, usage_error

__all__ = [
    "CHUNK_SIZE",
    "INDEX_TYPES",
    "MANIFEST_TYPES",
    "Descriptor",
    "Manifest",
    "Reference",
    "Registry",
    "parse_reference",
]

MANIFEST_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
)
#: The media types of an index (a manifest list): one manifest per platform.
INDEX_TYPES = (
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
)
#: Blobs larger than this are uploaded in chunks of this size (8 MiB), one ``PATCH`` each.
#: It is also the most a copy or an upload holds in memory at once.
CHUNK_SIZE = 8 * 1024 * 1024

_TIMEOUT = 30
_MAX_MANIFEST = 4 * 1024 * 1024  # the limit distribution and ECR put on a manifest
_MAX_CONFIG = 32 * 1024 * 1024
_MAX_ERROR_BODY = 64 * 1024
_SEND_PIECE = 256 * 1024  # progress is reported every this many bytes sent
_DOCKER_HUB = "registry-1.docker.io"
_USER_AGENT = "sm-magics"
_UNREACHABLE_HINT = "Check the network, or `%sm_sandbox status` when working offline."
_PULL_HINT = ("Check the credentials can pull from this repository (ecr:BatchGetImage) "
              "and run the cell again.")


# ----------------------------------------------------------------- references


@dataclass(frozen=True)
class Reference:
    """Where an image is: registry host, repository, and tag and/or digest.

    ``reference`` is what to ask the registry for: the digest when there is
    one (it names the exact bytes), else the tag.

    >>> image = parse_reference(
    ...     "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.3.0-cpu-py311")
    >>> image.host, image.repository, image.tag
    ('763104351884.dkr.ecr.us-east-1.amazonaws.com', 'pytorch-training', '2.3.0-cpu-py311')
    >>> str(image)
    '763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.3.0-cpu-py311'
    """

    host: str
    repository: str
    tag: str | None = "latest"
    digest: str | None = None

    @property
    def reference(self) -> str:
        """The digest if known, else the tag: the last part of ``/v2/<repository>/manifests/``."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        text = f"{self.host}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")
_HEX_LENGTHS = {"sha256": 64, "sha512": 128}


def parse_reference(text: str) -> Reference:
    """Split an image reference as ``docker pull`` does, with Docker's defaults filled in.

    * no registry host (``python:3.12-slim``) means Docker Hub, whose API is at
      ``registry-1.docker.io``; ``docker.io`` and ``index.docker.io`` mean it too;
    * a Docker Hub image of one name (``python``) is in ``library/``;
    * no tag and no digest means the tag ``latest``.

    The first part is a host when it has a ``.`` or a ``:`` or is ``localhost``.
    A mistake in the text is a ``UsageError`` saying what is wrong.

    >>> parse_reference("python:3.12-slim").repository
    'library/python'
    >>> parse_reference("127.0.0.1:5000/sm-magics/sandbox-base:bookworm").repository
    'sm-magics/sandbox-base'
    >>> parse_reference("python@sha256:" + "a" * 64).reference
    'sha256:aaaa...'
    """
    original = text
    text = text.strip()
    if not text:
        raise usage_error("The image reference is empty. Give one like python:3.12-slim.")
    name, digest = text, None
    if "@" in text:
        name, digest = text.split("@", 1)
        _check_digest(digest, f"The image reference {original!r}")
    tag = None
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = name[: len(name) - len(last)] + last.split(":", 1)[0], last.split(":", 1)[1]
        if not _TAG.fullmatch(tag):
            raise usage_error(
                f"The image reference {original!r} has the tag {tag!r}, which is not a tag: "
                "a tag is up to 128 letters, digits, '_', '.' and '-', not starting with "
                "'.' or '-'.")
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"
                 or first != first.lower()):
        host, path = first, rest
    else:
        host, path = "docker.io", name
    if host in ("docker.io", "index.docker.io", _DOCKER_HUB):
        host = _DOCKER_HUB
        if "/" not in path:
            path = f"library/{path}"
    if not path or not all(_COMPONENT.fullmatch(part) for part in path.split("/")):
        raise usage_error(
            f"The image reference {original!r} has the repository {path!r}, which is not a "
            "repository name: lowercase letters, digits and separators ('.', '_', '-') "
            "between '/'. Write it like python:3.12-slim or "
            "public.ecr.aws/docker/library/python:3.12-slim.")
    if tag is None and digest is None:
        tag = "latest"
    return Reference(host=host, repository=path, tag=tag, digest=digest)


def _check_digest(digest: str, where: str) -> str:
    algorithm, _, hexpart = digest.partition(":")
    expected = _HEX_LENGTHS.get(algorithm)
    if (not _DIGEST.fullmatch(digest) or expected is None or len(hexpart) != expected
            or not re.fullmatch(r"[0-9a-f]+", hexpart)):
        raise usage_error(
            f"{where} has the digest {digest!r}, which is not a digest: write it as sha256: "
            "and 64 lowercase hexadecimal digits.")
    return algorithm


# ------------------------------------------------------------ manifests


@dataclass(frozen=True)
class Descriptor:
    """One part of an image as a manifest lists it: media type, digest and size in bytes.

    ``platform`` (``"linux/amd64"``, ``"linux/arm64/v8"``) is set for the
    entries of an index. ``json`` is the descriptor as the manifest wrote it,
    annotations and all, for writing it into a new manifest unchanged.

    >>> layer = image.layers[0]
    >>> layer.media_type, layer.digest, layer.size
    ('application/vnd.docker.image.rootfs.diff.tar.gzip', 'sha256:9a1b...', 29124467)
    """

    media_type: str
    digest: str
    size: int
    platform: str | None = None
    json: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Descriptor:
        """The descriptor of a manifest's ``config``, ``layers`` or ``manifests`` entry."""
        if not isinstance(data, Mapping) or not isinstance(data.get("digest"), str):
            raise ValueError(f"not a descriptor: {data!r}")
        platform = data.get("platform")
        return cls(
            media_type=str(data.get("mediaType", "")),
            digest=data["digest"],
            size=int(data.get("size", 0)),
            platform=_platform_text(platform) if isinstance(platform, Mapping) else None,
            json=dict(data),
        )

    def as_json(self) -> dict[str, Any]:
        """The descriptor for a manifest: the original entry, or a new one."""
        if self.json:
            return dict(self.json)
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


def _platform_text(platform: Mapping[str, Any]) -> str:
    parts = [str(platform.get("os", "?")), str(platform.get("architecture", "?"))]
    if platform.get("variant"):
        parts.append(str(platform["variant"]))
    return "/".join(parts)


@dataclass(frozen=True)
class Manifest:
    """An image's manifest as the registry sent it.

    ``raw`` is the exact bytes (a copy of an image puts these same bytes, so
    its digest stays the same), ``digest`` their sha256, ``json`` the parsed
    document. ``config`` and ``layers`` describe the image's blobs; for an
    index, ``manifests`` lists one entry per platform instead. When the
    manifest was picked from an index, ``index_digest`` is the index's digest.

    >>> image = Registry("public.ecr.aws").manifest("docker/library/python", "3.12-slim")
    >>> image.platform, len(image.layers), image.config.digest
    ('linux/amd64', 4, 'sha256:...')
    """

    raw: bytes = field(repr=False)
    media_type: str
    digest: str
    json: Mapping[str, Any] = field(repr=False, compare=False)
    config: Descriptor | None = None
    layers: tuple[Descriptor, ...] = ()
    manifests: tuple[Descriptor, ...] = ()
    platform: str | None = None
    index_digest: str | None = None

    @property
    def is_index(self) -> bool:
        """True for an index (manifest list): it names other manifests, not blobs."""
        return self.media_type in INDEX_TYPES

    @classmethod
    def parse(cls, raw: bytes, media_type: str | None = None) -> Manifest:
        """The manifest of ``raw`` (its bytes), of ``media_type`` or the type it names itself."""
        document = json.loads(raw)
        if not isinstance(document, dict):
            raise ValueError("a manifest is a JSON object")
        media_type = (media_type or "").split(";")[0].strip()
        if media_type not in MANIFEST_TYPES:
            media_type = document.get("mediaType") or (
                "application/vnd.oci.image.index.v1+json" if "manifests" in document
                else "application/vnd.oci.image.manifest.v1+json")
        if media_type not in MANIFEST_TYPES:
            raise ValueError(f"the media type {media_type} is not an image manifest's")
        config = document.get("config")
        return cls(
            raw=bytes(raw),
            media_type=media_type,
            digest="sha256:" + hashlib.sha256(raw).hexdigest(),
            json=document,
            config=Descriptor.from_json(config) if isinstance(config, Mapping) else None,
            layers=tuple(Descriptor.from_json(d) for d in document.get("layers") or ()),
            manifests=tuple(Descriptor.from_json(d) for d in document.get("manifests") or ()),
        )


def _pick_platform(index: Manifest, platform: str) -> Descriptor | None:
    """The index's entry for ``platform`` (``os/architecture[/variant]``).

    The variant counts only when asked for (``linux/arm64/v8``), and never
    for amd64; an entry without a variant comes first.
    """
    wanted = platform.split("/")
    wanted_os, wanted_arch = wanted[0], wanted[1] if len(wanted) > 1 else ""
    wanted_variant = wanted[2] if len(wanted) > 2 and wanted_arch != "amd64" else None
    matches = []
    for entry in index.manifests:
        spec = entry.json.get("platform") or {}
        if spec.get("os") != wanted_os or spec.get("architecture") != wanted_arch:
            continue
        variant = spec.get("variant")
        if wanted_variant and variant and variant != wanted_variant:
            continue
        matches.append((bool(variant), entry))
    matches.sort(key=lambda pair: pair[0])  # an entry without a variant first
    return matches[0][1] if matches else None


def _offered(index: Manifest) -> list[str]:
    """The platforms an index offers, without the attestations (``unknown/unknown``)."""
    return sorted({e.platform for e in index.manifests
                   if e.platform and not e.platform.startswith("unknown/")})


# ------------------------------------------------------------------ HTTP


def _is_loopback(host: str) -> bool:
    name = urllib.parse.urlsplit(f"//{host}").hostname or ""
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class _KeepHead(urllib.request.HTTPRedirectHandler):
    """Follows redirects as urllib does, but a ``HEAD`` stays a ``HEAD``.

    (A registry may send a blob to a storage service's address; the
    ``Authorization`` header, added unredirected, is not sent there.)
    """

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and req.get_method() == "HEAD":
            new.method = "HEAD"
        return new


class _Sending:
    """A request body sent in pieces, reporting each; iterable again for a retry."""

    def __init__(self, body: memoryview, sent: Callable[[int], None] | None) -> None:
        self.body = body
        self.sent = sent

    def __iter__(self) -> Iterator[memoryview]:
        for start in range(0, len(self.body), _SEND_PIECE):
            piece = self.body[start:start + _SEND_PIECE]
            yield piece
            if self.sent:
                self.sent(start + len(piece))


class _Progress:
    """Calls ``progress(done, total)`` with ``done`` only ever growing."""

    def __init__(self, progress: Callable[[int, int], None] | None, total: int) -> None:
        self.progress = progress
        self.total = total
        self.done = 0

    def __call__(self, done: int) -> None:
        if self.progress and (done > self.done or done == self.total == 0):
            self.done = done
            self.progress(done, self.total)


_CHALLENGE_TOKEN = re.compile(
    r'\s*(?:(?P<key>[\w.-]+)\s*=\s*(?:"(?P<quoted>(?:[^"\\]|\\.)*)"|(?P<plain>[^\s,]*))'
    r"|(?P<scheme>[\w.-]+)|,)")


def _parse_challenges(values: list[str]) -> dict[str, dict[str, str]]:
    """``WWW-Authenticate`` values as ``{"bearer": {"realm": ..., "service": ...}, ...}``."""
    found: dict[str, dict[str, str]] = {}
    for value in values:
        current: dict[str, str] | None = None
        position = 0
        while position < len(value):
            match = _CHALLENGE_TOKEN.match(value, position)
            if not match or match.end() == position:
                break
            position = match.end()
            if match["scheme"]:
                current = found.setdefault(match["scheme"].lower(), {})
            elif match["key"] and current is not None:
                quoted = match["quoted"]
                current[match["key"].lower()] = (re.sub(r"\\(.)", r"\1", quoted)
                                                 if quoted is not None else match["plain"])
    return found


def _with_query(url: str, **params: str) -> str:
    """``url`` with ``params`` added to its query, keeping what is there (an upload's state)."""
    parts = urllib.parse.urlsplit(url)
    query = parts.query + ("&" if parts.query else "") + urllib.parse.urlencode(params)
    return urllib.parse.urlunsplit(parts._replace(query=query))


def _error_text(body: bytes) -> tuple[str | None, list[str]]:
    """The registry's error codes and their one-line text, from its JSON error body.

    ``{"errors": [{"code": "BLOB_UNKNOWN", "message": "blob unknown to registry"}]}``
    gives ``("BLOB_UNKNOWN", ["BLOB_UNKNOWN: blob unknown to registry"])``.
    """
    try:
        document = json.loads(body)
    except ValueError:
        text = body.decode("utf-8", "replace").strip().splitlines()
        return None, [text[0][:300]] if text else []
    errors = document.get("errors") if isinstance(document, dict) else None
    if not isinstance(errors, list):
        # a token service's own shape: {"details": "incorrect username or password"}
        if isinstance(document, dict):
            message = document.get("details") or document.get("message") or document.get("error")
            if isinstance(message, str):
                return None, [message]
        return None, []
    lines, first = [], None
    for error in errors:
        if not isinstance(error, dict):
            continue
        code = str(error.get("code") or "")
        first = first or code or None
        message = str(error.get("message") or "")
        detail = error.get("detail")
        if not message and detail:
            message = json.dumps(detail)[:300]
        lines.append(f"{code}: {message}" if code and message else code or message)
    return first, lines


_HINTS = {
    "BLOB_UNKNOWN": "The registry does not have that blob: copy or upload it first.",
    "BLOB_UPLOAD_UNKNOWN": "The upload session expired or was cancelled; run the cell again.",
    "BLOB_UPLOAD_INVALID": "The registry refused the upload; run the cell again.",
    "DIGEST_INVALID": "The bytes sent do not have the digest given; run the cell again.",
    "SIZE_INVALID": "The bytes sent are not of the size given; run the cell again.",
    "MANIFEST_BLOB_UNKNOWN": "Copy or upload the image's config and layers before its "
                             "manifest.",
    "MANIFEST_INVALID": "The registry does not accept this manifest (check its media type "
                        "and that its descriptors match the blobs).",
    "MANIFEST_UNKNOWN": "Check the tag or digest exists in this repository.",
    "NAME_INVALID": "Check the repository name: lowercase letters, digits, '.', '_', '-' "
                    "and '/'.",
    "NAME_UNKNOWN": "Check the repository name; in ECR the repository must be created first.",
    "TAG_INVALID": "Check the tag: up to 128 letters, digits, '_', '.' and '-'.",
    "DENIED": "The credentials may not do this: check the IAM policy allows it (ecr:"
              "BatchGetImage to pull; ecr:InitiateLayerUpload, ecr:UploadLayerPart, "
              "ecr:CompleteLayerUpload and ecr:PutImage to push).",
    "UNAUTHORIZED": "The registry refused the credentials: check they are current (an ECR "
                    "token lasts 12 hours), and that the repository exists; Docker Hub "
                    "answers so for a private repository too.",
    "TOOMANYREQUESTS": "The registry is limiting requests (Docker Hub limits anonymous "
                       "pulls): wait a while, or take the image from public.ecr.aws.",
    "UNSUPPORTED": "The registry does not support this operation.",
}


def _hint(status: int, code: str | None, default: str | None) -> str | None:
    if code in _HINTS:
        return _HINTS[code]
    if status == 401:
        return _HINTS["UNAUTHORIZED"]
    if status == 403:
        return _HINTS["DENIED"]
    if status == 429:
        return _HINTS["TOOMANYREQUESTS"]
    if status >= 500:
        return "The registry had a problem of its own; run the cell again in a moment."
    return default


# ------------------------------------------------------------------ the client


class Registry:
    """The v2 API of one registry host.

    ``credentials(refresh)`` returns the ``Basic`` credential, base64
    ``user:password`` (or ``None`` for an open registry, or for anonymous
    pulls from Docker Hub and ECR Public); it is called again with
    ``refresh=True`` once when the registry answers 401, so an expired token
    is replaced.

    A registry that asks for a ``Bearer`` token gets one from its token
    service, with the ``Basic`` credential when there is one and anonymously
    otherwise; each token is kept for the repositories and actions it was
    issued for, and fetched again when the registry stops taking it.

    Every request times out after ``timeout`` seconds without an answer;
    blobs larger than ``chunk_size`` bytes are uploaded in chunks of that
    size, which is also the most a copy holds in memory.

    >>> Registry("127.0.0.1:5000").manifest_digest("fraud", "no-such-tag") is None
    True
    """

    def __init__(
        self,
        host: str,
        credentials: Callable[[bool], str | None] = lambda refresh: None,
        *,
        timeout: float = _TIMEOUT,
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be positive")
        if host in ("docker.io", "index.docker.io"):
            host = _DOCKER_HUB  # where Docker Hub's API is
        self.host = host
        self.credentials = credentials
        self.timeout = timeout
        self.chunk_size = chunk_size
        self.loopback = _is_loopback(host)
        self.base_url = f"{'http' if self.loopback else 'https'}://{host}/v2"
        self._openers: dict[bool, urllib.request.OpenerDirector] = {}
        self._bearer: dict[str, str] | None = None  # the token service, once the registry named it
        self._tokens: dict[tuple[str, ...], tuple[str, float]] = {}

    def __repr__(self) -> str:
        return f"Registry({self.host!r})"

    # ---------------------------------------------------------------- reading

    def manifest_digest(self, repository: str, tag: str) -> str | None:
        """The digest of ``repository:tag``, or ``None`` when the registry does not have it.

        One ``HEAD`` request: the digest of whatever the tag points at (an
        index, for a multi-platform image). Raises :class:`RemoteFailure` when
        the registry cannot be reached or refuses the credentials.
        """
        with self._request("HEAD", f"{repository}/manifests/{tag}", _pull(repository),
                           subject=f"{repository}:{tag}", hint=_PULL_HINT,
                           headers={"Accept": ", ".join(MANIFEST_TYPES)},
                           missing_ok=True) as response:
            if response is None:
                return None
            return response.headers.get("Docker-Content-Digest") or ""

    def manifest(self, repository: str, reference: str,
                 platform: str | None = "linux/amd64") -> Manifest:
        """The manifest of ``repository:reference`` (a tag or a digest), for ``platform``.

        When the reference names an index (one manifest per platform), the
        entry for ``platform`` is fetched; ``platform=None`` returns the index
        itself. A :class:`RemoteFailure` names the platforms offered when
        ``platform`` is not one of them, or when the registry does not have
        the reference.

        >>> image = registry.manifest("library/python", "3.12-slim")
        >>> image.platform, image.index_digest
        ('linux/amd64', 'sha256:...')
        """
        found = self._get_manifest(repository, reference)
        if not found.is_index or platform is None:
            return found
        entry = _pick_platform(found, platform)
        if entry is None:
            offered = _offered(found)
            raise RemoteFailure(
                f"{self.host}/{repository}:{reference} has no {platform} image",
                reason="its index offers " + (", ".join(offered) or "no platform at all"),
                hint=f"SageMaker training runs {platform} images: choose a base image (or a "
                     f"tag of it) published for {platform}.",
            )
        chosen = self._get_manifest(repository, entry.digest)
        if chosen.is_index:
            raise RemoteFailure(
                f"{self.host}/{repository}:{reference} has an index inside its index "
                f"for {platform}", hint="Choose the image by the digest of its manifest.")
        return dataclasses.replace(chosen, platform=entry.platform, index_digest=found.digest)

    def _get_manifest(self, repository: str, reference: str) -> Manifest:
        subject = f"{repository}{'@' if ':' in reference else ':'}{reference}"
        with self._request("GET", f"{repository}/manifests/{reference}", _pull(repository),
                           subject=subject, hint=_PULL_HINT,
                           headers={"Accept": ", ".join(MANIFEST_TYPES)}) as response:
            raw = self._read(response, _MAX_MANIFEST + 1, subject)
            content_type = response.headers.get("Content-Type")
        if len(raw) > _MAX_MANIFEST:
            raise RemoteFailure(f"The manifest of {self.host}/{subject} is larger than 4 MiB",
                                hint="This is not an image's manifest; check the reference.")
        if (content_type or "").startswith("application/vnd.docker.distribution.manifest.v1"):
            raise RemoteFailure(
                f"{self.host}/{subject} has an image manifest of the old schema 1",
                hint="Choose a newer tag of the image: schema 1 images cannot be built on.")
        try:
            manifest = Manifest.parse(raw, content_type)
        except (ValueError, TypeError) as exc:
            raise RemoteFailure(f"{self.host}/{subject} sent no image manifest",
                                reason=str(exc), hint="Check the reference.") from None
        if reference.startswith("sha") and ":" in reference and manifest.digest != reference:
            raise RemoteFailure(
                f"The manifest {self.host}/{subject} sent has the digest {manifest.digest}",
                hint="The registry sent other bytes than asked for; run the cell again.")
        return manifest

    def config(self, repository: str, descriptor: Descriptor | Mapping[str, Any]) -> dict:
        """The image config that ``descriptor`` (a manifest's ``config``) names, as a dict.

        Its bytes are checked against the digest.

        >>> registry.config("library/python", image.config)["config"]["Env"]
        ['PATH=/usr/local/bin:...', 'LANG=C.UTF-8', ...]
        """
        digest, size = _digest_and_size(descriptor)
        subject = f"the config {digest} of {repository}"
        with self.open_blob(repository, digest) as response:
            raw = self._read(response, _MAX_CONFIG + 1, subject)
        if len(raw) > _MAX_CONFIG:
            raise RemoteFailure(f"The registry {self.host} sent more than 32 MiB for {subject}",
                                hint="This is not an image config; check the manifest.")
        if _digest_of(raw, digest) != digest:
            raise RemoteFailure(f"The registry {self.host} sent other bytes for {subject}",
                                reason=f"they have the digest {_digest_of(raw, digest)}",
                                hint="Run the cell again.")
        try:
            document = json.loads(raw)
        except ValueError as exc:
            raise RemoteFailure(f"{subject} is not JSON", reason=str(exc)) from None
        if not isinstance(document, dict):
            raise RemoteFailure(f"{subject} is not a JSON object")
        return document

    def open_blob(self, repository: str, digest: str) -> BinaryIO:
        """The blob's bytes as a file to read from (use it in a ``with`` block).

        >>> with registry.open_blob("fraud", layer.digest) as stream:
        ...     first = stream.read(1024)
        """
        return self._request("GET", f"{repository}/blobs/{digest}", _pull(repository),
                             subject=f"the blob {digest} of {repository}", hint=_PULL_HINT)

    def has_blob(self, repository: str, digest: str) -> bool:
        """Whether ``repository`` has the blob ``digest`` (one ``HEAD`` request)."""
        with self._request("HEAD", f"{repository}/blobs/{digest}", _pull(repository),
                           subject=f"the blob {digest} of {repository}", hint=_PULL_HINT,
                           missing_ok=True) as response:
            return response is not None

    # ---------------------------------------------------------------- writing

    def mount_blob(self, repository: str, digest: str, from_repository: str) -> bool:
        """Link the blob ``digest`` of ``from_repository`` into ``repository``, sending no bytes.

        Both repositories must be in this registry. True when it is mounted;
        False when the registry would not (it does not have the blob there, or
        the credentials may not read that repository): then the upload it
        opened instead is cancelled, and the blob is to be copied.
        """
        path = (f"{repository}/blobs/uploads/?"
                + urllib.parse.urlencode({"mount": digest, "from": from_repository}))
        scopes = (*_push(repository), *_pull(from_repository))
        with self._request("POST", path, scopes, body=b"",
                           subject=f"the mount of {digest} from {from_repository} into "
                                   f"{repository}") as response:
            if response.status == 201:
                return True
            location = self._location(response)
        if location:
            self._cancel(location, repository)
        return False

    def upload_blob(self, repository: str, source: str | os.PathLike | BinaryIO,
                    digest: str, size: int,
                    progress: Callable[[int, int], None] | None = None) -> str:
        """Upload a blob from a file (a path, or a file open for reading in binary mode).

        ``digest`` and ``size`` are the blob's (``sha256:`` and the hash of its
        bytes). Nothing is sent when the repository has the blob already:
        ``"present"`` is returned, else ``"uploaded"``. Blobs larger than the
        chunk size go in chunks; the bytes are checked against the digest as
        they are read. ``progress(done_bytes, total_bytes)`` is called as bytes
        are sent.

        >>> registry.upload_blob("fraud", "code.tar.gz", "sha256:4b1e...", 20480)
        'uploaded'
        """
        report = _Progress(progress, size)
        if self.has_blob(repository, digest):
            report(size)
            return "present"
        if isinstance(source, (str, os.PathLike)):
            with open(source, "rb") as stream:
                self._push(repository, stream, digest, size, report, f"the file {source}")
        else:
            self._push(repository, source, digest, size, report, "the file")
        return "uploaded"

    def copy_blob(self, source: Registry, source_repository: str, target_repository: str,
                  descriptor: Descriptor | Mapping[str, Any],
                  progress: Callable[[int, int], None] | None = None) -> str:
        """Copy one blob from ``source`` (another registry, or this one) into this registry.

        Skipped when ``target_repository`` has it already (``"present"``);
        mounted when both repositories are in the same registry and it allows
        (``"mounted"``); else streamed from one registry to the other, a
        chunk at a time, checked against its digest (``"copied"``).
        ``progress(done_bytes, total_bytes)`` is called as bytes are sent.

        >>> ecr.copy_blob(hub, "library/python", "sagemaker-fraud", image.layers[0])
        'copied'
        """
        digest, size = _digest_and_size(descriptor)
        report = _Progress(progress, size)
        if self.has_blob(target_repository, digest):
            report(size)
            return "present"
        if source.host == self.host and self.mount_blob(target_repository, digest,
                                                        source_repository):
            report(size)
            return "mounted"
        origin = f"{source.host}/{source_repository}"
        with source.open_blob(source_repository, digest) as stream:
            self._push(target_repository, _Reading(stream, source.host, digest), digest, size,
                       report, origin)
        return "copied"

    def put_manifest(self, repository: str, tag: str, manifest: bytes, media_type: str) -> str:
        """Put ``manifest`` (its exact bytes) in ``repository`` under ``tag``; its digest.

        The blobs it lists must be in the repository already. The digest the
        registry answers is checked against the bytes' own.

        >>> registry.put_manifest("fraud", "3f1c9a0b7d2e4c51", raw,
        ...                       "application/vnd.oci.image.manifest.v1+json")
        'sha256:4b1e...'
        """
        raw = bytes(manifest)
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        subject = f"the manifest {repository}:{tag}"
        with self._request("PUT", f"{repository}/manifests/{tag}", _push(repository),
                           body=raw, subject=subject,
                           headers={"Content-Type": media_type}) as response:
            answered = response.headers.get("Docker-Content-Digest")
        if answered and answered != digest:
            raise RemoteFailure(
                f"The registry {self.host} stored {subject} as {answered}, not {digest}",
                hint="The registry changed the manifest's bytes; check its media type.")
        return digest

    # ------------------------------------------------------------ uploading

    def _push(self, repository: str, stream: Any, digest: str, size: int,
              report: _Progress, origin: str) -> None:
        """Upload ``size`` bytes read from ``stream``: one ``PUT``, or chunks of ``PATCH``."""
        algorithm = digest.split(":", 1)[0]
        try:
            hasher = hashlib.new(algorithm)
        except ValueError:
            raise RemoteFailure(f"The digest {digest} is of an unknown kind",
                                hint="Digests are sha256: and 64 hexadecimal digits.") from None
        subject = f"the upload of {digest} to {repository}"
        with self._request("POST", f"{repository}/blobs/uploads/", _push(repository),
                           body=b"", subject=subject) as response:
            location = self._location(response)
        if not location:
            raise RemoteFailure(f"The registry {self.host} opened no upload for {subject}",
                                reason="its answer has no Location header")
        buffer = memoryview(bytearray(max(1, min(self.chunk_size, size))))
        done = 0
        try:
            if size <= self.chunk_size:  # one PUT, bytes and digest together
                got = _fill(stream, buffer[:size])
                hasher.update(buffer[:got])
                _check_read(got, size, hasher, digest, origin)
                self._put_blob(location, repository, digest, buffer[:size],
                               lambda sent: report(sent), subject)
                report(size)
                return
            while done < size:
                got = _fill(stream, buffer[:min(self.chunk_size, size - done)])
                if not got:
                    break
                hasher.update(buffer[:got])
                start = done
                with self._request(
                        "PATCH", location, _push(repository), body=buffer[:got],
                        subject=subject, sent=lambda sent, start=start: report(start + sent),
                        headers={"Content-Type": "application/octet-stream",
                                 "Content-Range": f"{start}-{start + got - 1}"}) as response:
                    location = self._location(response) or location
                done += got
            _check_read(done, size, hasher, digest, origin)
            self._put_blob(location, repository, digest, memoryview(b""), None, subject)
            report(size)
        except BaseException:
            self._cancel(location, repository)
            raise

    def _put_blob(self, location: str, repository: str, digest: str, body: memoryview,
                  sent: Callable[[int], None] | None, subject: str) -> None:
        with self._request("PUT", _with_query(location, digest=digest), _push(repository),
                           body=body, subject=subject, sent=sent,
                           headers={"Content-Type": "application/octet-stream"}) as response:
            answered = response.headers.get("Docker-Content-Digest")
        if answered and answered != digest:
            raise RemoteFailure(f"The registry {self.host} stored {answered} for {subject}",
                                hint="Run the cell again.")

    def _cancel(self, location: str, repository: str) -> None:
        """Cancel an upload session (best effort: an unfinished one expires anyway)."""
        try:
            with self._request("DELETE", location, _push(repository), subject="",
                               missing_ok=True):
                pass
        except RemoteFailure:
            pass

    def _location(self, response: Any) -> str | None:
        """The absolute address of the response's ``Location`` (it may be relative)."""
        location = response.headers.get("Location")
        return urllib.parse.urljoin(response.geturl(), location) if location else None

    # ------------------------------------------------------------ requests

    def _opener(self, url: str) -> urllib.request.OpenerDirector:
        loopback = _is_loopback(urllib.parse.urlsplit(url).netloc)
        if loopback not in self._openers:
            # A loopback registry is never reached through an HTTP proxy.
            handlers: list[Any] = [_KeepHead()]
            if loopback:
                handlers.append(urllib.request.ProxyHandler({}))
            self._openers[loopback] = urllib.request.build_opener(*handlers)
        return self._openers[loopback]

    def _request(self, method: str, path: str, scopes: tuple[str, ...], *, subject: str,
                 body: bytes | memoryview | None = None, headers: Mapping[str, str] | None = None,
                 sent: Callable[[int], None] | None = None, hint: str | None = None,
                 missing_ok: bool = False) -> Any:
        """Send one request, answering the registry's authentication challenges.

        ``path`` is below ``/v2/`` or an absolute address (an upload's
        ``Location``). Returns the open response (a 2xx), or ``None`` for a
        404 when ``missing_ok``; every other answer is a :class:`RemoteFailure`.
        """
        url = path if "://" in path else f"{self.base_url}/{path}"
        ours = urllib.parse.urlsplit(url).netloc == self.host
        refreshed = False  # the credentials (or the token) were fetched again already
        basic_refresh = False
        while True:
            request = urllib.request.Request(url, method=method, headers={
                "User-Agent": _USER_AGENT, **(headers or {})})
            if body is not None:
                view = memoryview(body)
                request.data = _Sending(view, sent) if view.nbytes else b""
                request.add_header("Content-Length", str(view.nbytes))
                if not request.has_header("Content-type"):
                    request.add_header("Content-Type", "application/octet-stream")
            authorization = self._authorization(scopes, basic_refresh) if ours else None
            if authorization:
                request.add_unredirected_header("Authorization", authorization)
            try:
                return self._opener(url).open(request, timeout=self.timeout)
            except urllib.error.HTTPError as exc:
                if exc.code == 404 and missing_ok:
                    exc.close()
                    return _Nothing()
                if exc.code == 401 and ours and not refreshed:
                    # The token flow, https://distribution.github.io/distribution/spec/auth/token/:
                    # a Bearer challenge names the token service (realm, service) and the
                    # scope wanted; a token for it is fetched (see _fetch_token) and the
                    # request sent again. A 401 to a token already held means it expired:
                    # it is fetched again once, with the credentials refreshed.
                    challenges = _parse_challenges(exc.headers.get_all("WWW-Authenticate") or [])
                    exc.close()
                    bearer = challenges.get("bearer")
                    if bearer and bearer.get("realm"):
                        used_token = bool(authorization and authorization.startswith("Bearer"))
                        self._bearer = {"realm": bearer["realm"],
                                        "service": bearer.get("service", "")}
                        wanted = tuple(sorted({*scopes, *bearer.get("scope", "").split()}))
                        refreshed = used_token
                        self._tokens.pop(tuple(sorted(scopes)), None)
                        self._tokens[tuple(sorted(scopes))] = self._fetch_token(
                            wanted, refresh=used_token)
                    else:
                        refreshed = basic_refresh = True
                    continue
                raise self._failure(exc, method, subject, hint) from None
            except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
                raise self._unreachable(exc) from None

    def _authorization(self, scopes: tuple[str, ...], refresh: bool) -> str | None:
        """The ``Authorization`` header for a request needing ``scopes``, if any is known."""
        if self._bearer is not None:
            key = tuple(sorted(scopes))
            token, valid_until = self._tokens.get(key, ("", 0.0))
            if not token or time.monotonic() >= valid_until:
                token, valid_until = self._tokens[key] = self._fetch_token(key, refresh=False)
            return f"Bearer {token}"
        credential = self.credentials(refresh)
        return f"Basic {credential}" if credential else None

    def _fetch_token(self, scopes: tuple[str, ...], refresh: bool) -> tuple[str, float]:
        """A token for ``scopes`` from the registry's token service, and until when it is good.

        The flow of https://distribution.github.io/distribution/spec/auth/token/:
        the registry answered 401 with ``WWW-Authenticate: Bearer realm="...",
        service="...",scope="..."``; ``GET realm?service=...&scope=...`` (with
        the ``Basic`` credential when there is one, anonymously otherwise)
        answers ``{"token": ...}`` (or ``"access_token"``), good for
        ``expires_in`` seconds (60 when not said).
        """
        assert self._bearer is not None
        realm = self._bearer["realm"]
        params = [("service", self._bearer["service"])] if self._bearer["service"] else []
        params += [("scope", scope) for scope in scopes]
        url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(params)
        realm_parts = urllib.parse.urlsplit(realm)
        # A credential goes over HTTPS only (or to this machine).
        may_send = realm_parts.scheme == "https" or _is_loopback(realm_parts.netloc)
        subject = f"a token for {' '.join(scopes)}"
        for attempt in (refresh, True):
            credential = self.credentials(attempt) if may_send else None
            request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT,
                                                           "Accept": "application/json"})
            if credential:
                request.add_unredirected_header("Authorization", f"Basic {credential}")
            try:
                with self._opener(url).open(request, timeout=self.timeout) as response:
                    answer = self._read(response, _MAX_ERROR_BODY, subject)
                break
            except urllib.error.HTTPError as exc:
                if exc.code in (401, 403) and credential and not attempt:
                    exc.close()
                    continue
                raise self._failure(exc, "GET", subject, None,
                                    who=f"The token service {realm_parts.netloc} of "
                                        f"{self.host}") from None
            except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
                raise self._unreachable(exc, realm_parts.netloc) from None
        try:
            document = json.loads(answer)
            token = document.get("token") or document.get("access_token")
            expires_in = float(document.get("expires_in") or 60)
        except (ValueError, AttributeError, TypeError):
            token, expires_in = None, 0.0
        if not isinstance(token, str) or not token:
            raise RemoteFailure(f"The token service {realm_parts.netloc} of {self.host} sent "
                                f"no token for {subject}",
                                hint="Run the cell again; if it persists, the registry's "
                                     "token service is not working.")
        return token, time.monotonic() + max(expires_in - 5, 1)

    def _read(self, response: Any, limit: int, subject: str) -> bytes:
        try:
            return response.read(limit)
        except (OSError, ValueError, http.client.HTTPException) as exc:
            raise RemoteFailure(f"The registry {self.host} stopped answering {subject}",
                                reason=str(exc) or type(exc).__name__,
                                hint="Run the cell again.") from None

    def _failure(self, exc: urllib.error.HTTPError, method: str, subject: str,
                 hint: str | None, who: str | None = None) -> RemoteFailure:
        body = b""
        if method != "HEAD":
            try:
                body = exc.read(_MAX_ERROR_BODY)
            except (OSError, ValueError, http.client.HTTPException):
                body = b""
        exc.close()
        code, lines = _error_text(body)
        reason = "; ".join(lines) or f"{exc.code} {exc.reason}"
        who = who or f"The registry {self.host}"
        return RemoteFailure(f"{who} answered HTTP {exc.code} for {subject}",
                             reason=reason, hint=_hint(exc.code, code, hint))

    def _unreachable(self, exc: BaseException, host: str | None = None) -> RemoteFailure:
        reason = getattr(exc, "reason", None) or exc
        return RemoteFailure(f"The registry {host or self.host} cannot be reached",
                             reason=str(reason) or type(exc).__name__, hint=_UNREACHABLE_HINT)


class _Nothing:
    """The ``None`` answer of a ``with`` request: a 404 that the caller expected."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


class _Reading:
    """A blob being read from a registry: its read failures become :class:`RemoteFailure`."""

    def __init__(self, stream: Any, host: str, digest: str) -> None:
        self.stream = stream
        self.host = host
        self.digest = digest

    def readinto(self, view: memoryview) -> int:
        try:
            return self.stream.readinto(view)
        except (OSError, ValueError, http.client.HTTPException) as exc:
            raise RemoteFailure(f"The registry {self.host} stopped sending the blob "
                                f"{self.digest}", reason=str(exc) or type(exc).__name__,
                                hint="Run the cell again.") from None


def _pull(repository: str) -> tuple[str, ...]:
    return (f"repository:{repository}:pull",)


def _push(repository: str) -> tuple[str, ...]:
    return (f"repository:{repository}:pull,push",)


def _digest_and_size(descriptor: Descriptor | Mapping[str, Any]) -> tuple[str, int]:
    if isinstance(descriptor, Descriptor):
        return descriptor.digest, descriptor.size
    return str(descriptor["digest"]), int(descriptor["size"])


def _digest_of(data: bytes, like: str) -> str:
    algorithm = like.split(":", 1)[0]
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def _fill(stream: Any, view: memoryview) -> int:
    """Read into ``view`` until it is full or the stream ends; how many bytes came."""
    filled = 0
    readinto = getattr(stream, "readinto", None)
    while filled < len(view):
        if readinto is not None:
            got = readinto(view[filled:])
        else:
            data = stream.read(len(view) - filled)
            got = len(data) if data else 0
            view[filled:filled + got] = data or b""
        if not got:
            break
        filled += got
    return filled


def _check_read(got: int, size: int, hasher: Any, digest: str, origin: str) -> None:
    if got != size:
        raise RemoteFailure(f"{origin} has {got} bytes for the blob {digest}, not {size}",
                            hint="Check the size given with the digest.")
    found = f"{hasher.name}:{hasher.hexdigest()}"
    if found != digest:
        raise RemoteFailure(f"The bytes of {origin} have the digest {found}, not {digest}",
                            hint="Check the digest given, or run the cell again if the file "
                                 "was changing.")
