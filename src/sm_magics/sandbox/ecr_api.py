"""ECR's image operations in the sandbox, answered from the registry that holds the images.

moto's ECR never learns of pushes: images go to the sandbox registry, ECR's data plane
there (Debian's ``docker-registry``), so moto's ``DescribeImages`` stays empty after a
push. ``DescribeImages``, ``ListImages``, ``BatchGetImage`` and ``BatchDeleteImage``
(:data:`OPERATIONS`) are answered here instead, from the registry's own v2 API, with
the shapes of botocore's ECR model:

* a repository is moto's (``RepositoryNotFoundException`` with moto's, i.e. ECR's,
  message when moto has none); its images are the manifests its tags point to
  (``/v2/<repo>/tags/list``, then each tag's manifest, whose digest is the
  ``Docker-Content-Digest`` header);
* ``imageSizeInBytes`` is the sum of the manifest's layer sizes, the compressed sizes
  ECR reports too; ``imageManifestMediaType`` and ``artifactMediaType`` are the
  manifest's and its config's media types; ``imagePushedAt``, which the registry's API
  does not keep, is the time the repository received the manifest in the registry's
  storage (:meth:`RegistryImages._pushed_at`);
* ``BatchDeleteImage`` deletes manifests by digest (the registry runs with
  ``delete.enabled: true``), which removes every tag of the image, as ECR does for a
  digest. A tag of an image that has other tags is removed the way distribution 2.8
  allows (it refuses to delete a tag): the manifest is deleted and put back under the
  other tags, same bytes and digest;
* errors are ECR's: ``ImageNotFoundException`` in ECR's words, failures
  ``ImageNotFound``, ``MissingDigestAndTag``, ``ImageTagDoesNotMatchDigest``, and
  ``ServerException`` when the registry cannot be reached.

What the registry cannot tell: an image none of whose tags is left (ECR lists it
untagged; the registry's API lists tags only, so it is not listed), scan results
(``imageScanStatus`` is left out) and pull times (``lastRecordedPullTime``).

The registry's ``BLOB_MOUNTING`` account setting is kept here too (``PutAccountSetting``,
``GetAccountSetting``; moto has neither), in a small JSON file of the sandbox's run folder
(:class:`AccountSettings`) that the registry's front door (:mod:`.registry_proxy`), another
process, reads at each cross-repository mount. It is ``DISABLED`` until put ``ENABLED``: ECR
mounts a blob from another repository only once the registry's blob mounting is enabled
("Blob mounting in Amazon ECR",
https://docs.aws.amazon.com/AmazonECR/latest/userguide/blob-mounting.html). ECR's other
account settings (``BASIC_SCAN_TYPE_VERSION``, ``REGISTRY_POLICY_SCOPE``) go on to moto,
which answers that the sandbox does not implement them.

Example (inside the gateway process)::

    >>> images = RegistryImages(ecr_client, registry=lambda: "127.0.0.1:5000")
    >>> images.handle("DescribeImages", {"repositoryName": "sagemaker-fraud"})["imageDetails"][0]
    {'registryId': '123456789012', 'repositoryName': 'sagemaker-fraud', 'imageDigest': ...}
"""

from __future__ import annotations

import json
import os
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ..registry import MANIFEST_TYPES
from .protocol import ApiError, NotHandled, decode_page_token, encode_page_token
from .validation import validate_request

__all__ = ["BLOB_MOUNTING", "OPERATIONS", "SETTINGS_NAME", "TARGET_PREFIX", "AccountSettings",
           "RegistryImages", "settings_path"]

_BAD_TOKEN = ApiError("InvalidParameterException", "Invalid parameter at 'nextToken' failed "
                      "to satisfy constraint: 'The token is not valid'")

TARGET_PREFIX = "AmazonEC2ContainerRegistry_V20150921"
OPERATIONS = ("DescribeImages", "ListImages", "BatchGetImage", "BatchDeleteImage",
              "PutAccountSetting", "GetAccountSetting")
_SETTING_OPERATIONS = ("PutAccountSetting", "GetAccountSetting")
_DEFAULT_PAGE = 100  # DescribeImages' and ListImages' maxResults when none is given
_TIMEOUT = 30
_INDEX_TYPES = ("application/vnd.docker.distribution.manifest.list.v2+json",
                "application/vnd.oci.image.index.v1+json")
_FRACTION = re.compile(r"(\.\d{6})\d+")


# ---------------------------------------------------------------- account settings

SETTINGS_NAME = "ecr-account-settings.json"
BLOB_MOUNTING = "BLOB_MOUNTING"
# The settings ECR names ("The name of the account setting, such as BASIC_SCAN_TYPE_VERSION,
# REGISTRY_POLICY_SCOPE, or BLOB_MOUNTING", API_PutAccountSetting); the sandbox keeps
# BLOB_MOUNTING, whose values are ENABLED and DISABLED ("Valid values for blob mounting:
# ENABLED or DISABLED"), DISABLED until put ENABLED.
_SETTING_NAMES = ("BASIC_SCAN_TYPE_VERSION", "REGISTRY_POLICY_SCOPE", BLOB_MOUNTING)
_KEPT = {BLOB_MOUNTING: (("ENABLED", "DISABLED"), "DISABLED")}


def settings_path(home: Path) -> Path:
    """Where the sandbox under ``home`` keeps ECR's account settings while it runs.

    In the run folder, which the sandbox removes when it stops, with moto's repositories
    and the registry's storage: a sandbox started again is a fresh account.
    """
    return Path(home) / "run" / SETTINGS_NAME


def _enum_error(member: str, allowed: tuple[str, ...]) -> ApiError:
    return ApiError("InvalidParameterException",
                    f"Invalid parameter at '{member}' failed to satisfy constraint: "
                    f"'Member must satisfy enum value set: [{', '.join(allowed)}]'")


class AccountSettings:
    """ECR's registry settings kept by the sandbox (``BLOB_MOUNTING``), in a JSON file.

    The file (``{"BLOB_MOUNTING": "ENABLED"}``) is replaced whole at each put, so a
    reader in another process (the registry proxy) sees the old settings or the new,
    never half of them; without a ``path`` the settings live in memory.

    >>> settings = AccountSettings(settings_path(home))
    >>> settings.handle("PutAccountSetting", {"name": "BLOB_MOUNTING", "value": "ENABLED"})
    {'name': 'BLOB_MOUNTING', 'value': 'ENABLED'}
    >>> settings.blob_mounting_enabled()
    True
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._memory: dict[str, str] = {}
        self._lock = threading.Lock()

    def _read(self) -> dict[str, str]:
        if self.path is None:
            return dict(self._memory)
        try:
            stored = json.loads(self.path.read_text())
        except (OSError, ValueError):  # none put yet, or the run folder is gone
            return {}
        return {k: v for k, v in stored.items() if isinstance(v, str)} \
            if isinstance(stored, dict) else {}

    def _write(self, settings: dict[str, str]) -> None:
        if self.path is None:
            self._memory = dict(settings)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(
            f".{self.path.name}.{os.getpid()}.{threading.get_ident()}.partial")
        partial.write_text(json.dumps(settings, sort_keys=True))
        partial.replace(self.path)

    def value(self, name: str) -> str:
        """The setting's value: the one put, else its default (``BLOB_MOUNTING``: DISABLED)."""
        return self._read().get(name, _KEPT[name][1])

    def blob_mounting_enabled(self) -> bool:
        """Whether the registry mounts blobs across repositories (``BLOB_MOUNTING`` ENABLED)."""
        return self.value(BLOB_MOUNTING) == "ENABLED"

    def handle(self, operation: str, request: dict) -> dict:
        """``PutAccountSetting`` or ``GetAccountSetting`` (the request checked by the model).

        A name ECR does not have is ECR's ``InvalidParameterException``; ECR's settings
        the sandbox does not keep raise :class:`~.protocol.NotHandled` (moto answers).
        """
        name = request["name"]
        if name not in _SETTING_NAMES:
            raise _enum_error("name", _SETTING_NAMES)
        if name not in _KEPT:
            raise NotHandled(name)
        if operation == "GetAccountSetting":
            return {"name": name, "value": self.value(name)}
        allowed = _KEPT[name][0]
        value = request["value"]
        if value not in allowed:
            raise _enum_error("value", allowed)
        with self._lock:
            settings = self._read()
            settings[name] = value
            self._write(settings)
        return {"name": name, "value": value}


# ---------------------------------------------------------------- image operations


@dataclass
class _Manifest:
    digest: str
    media_type: str
    body: bytes


@dataclass
class _Image:
    manifest: _Manifest
    tags: list[str]

    @property
    def digest(self) -> str:
        return self.manifest.digest


class _Registry:
    """The few calls of the registry's v2 API that ECR's image operations need."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.base = f"http://{host}/v2"
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def _call(self, method: str, path: str, *, accept: str | None = None,
              body: bytes | None = None, content_type: str | None = None):
        request = urllib.request.Request(f"{self.base}/{path}", data=body, method=method)
        if accept:
            request.add_header("Accept", accept)
        if content_type:
            request.add_header("Content-Type", content_type)
        try:
            response = self.opener.open(request, timeout=_TIMEOUT)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            detail = exc.read().decode("utf-8", "replace")[:300]
            raise ApiError("ServerException", f"The sandbox registry {self.host} answered HTTP "
                           f"{exc.code} to {method} /v2/{path}: {detail}", 500) from None
        except OSError as exc:
            raise ApiError("ServerException", f"The sandbox registry {self.host} cannot be "
                           f"reached: {getattr(exc, 'reason', exc)}", 500) from None
        with response:
            return response.headers, response.read()

    def tags(self, repository: str) -> list[str]:
        """Every tag of ``repository`` (none when the registry never saw the repository)."""
        tags: list[str] = []
        path: str | None = f"{repository}/tags/list?n=1000"
        while path:
            answer = self._call("GET", path)
            if answer is None:
                return tags
            headers, body = answer
            tags += json.loads(body).get("tags") or []
            link = re.search(r"<(?:[^>]*/v2/)?([^>]+)>", headers.get("Link") or "")
            path = link.group(1) if link else None
        return tags

    def manifest(self, repository: str, reference: str,
                 accept: tuple[str, ...] = MANIFEST_TYPES) -> _Manifest | None:
        answer = self._call("GET", f"{repository}/manifests/{reference}", accept=", ".join(accept))
        if answer is None:
            return None
        headers, body = answer
        media_type = headers.get("Content-Type") or json.loads(body).get("mediaType", "")
        return _Manifest(headers.get("Docker-Content-Digest") or reference, media_type, body)

    def blob(self, repository: str, digest: str) -> bytes | None:
        answer = self._call("GET", f"{repository}/blobs/{digest}")
        return None if answer is None else answer[1]

    def delete(self, repository: str, digest: str) -> None:
        self._call("DELETE", f"{repository}/manifests/{digest}")

    def put(self, repository: str, tag: str, manifest: _Manifest) -> None:
        self._call("PUT", f"{repository}/manifests/{tag}", body=manifest.body,
                   content_type=manifest.media_type)


def _image_id_text(image_id: dict) -> str:
    """An image id in the words of ECR's messages: ``{imageDigest:'null', imageTag:'v1'}``."""
    return (f"{{imageDigest:'{image_id.get('imageDigest') or 'null'}', "
            f"imageTag:'{image_id.get('imageTag') or 'null'}'}}")


def _epoch(created: str | None) -> float | None:
    if not created:
        return None
    try:
        return datetime.fromisoformat(_FRACTION.sub(r"\1", created.replace("Z", "+00:00"))
                                      ).timestamp()
    except ValueError:
        return None


class RegistryImages:
    """Answers ECR's image operations from the registry at ``registry()`` (``host:port``).

    ``ecr`` is a boto3 ECR client of the sandbox's own endpoint (moto keeps the
    repositories); ``registry`` is asked at every request, so a registry started again
    elsewhere is found.
    """

    def __init__(self, ecr, registry: Callable[[], str | None], *, storage: Path | None = None,
                 account: str = "123456789012", settings: AccountSettings | None = None) -> None:
        import botocore.session

        self.ecr = ecr
        self.registry = registry
        self.storage = storage
        self.account = account
        self.settings = settings if settings is not None else AccountSettings()
        self.model = botocore.session.get_session().get_service_model("ecr")
        # A manifest's digest fixes its size and config: what was read once is kept.
        self._details: dict[tuple[str, str], dict[str, Any]] = {}

    @classmethod
    def for_endpoint(cls, endpoint_url: str, home: Path, *,
                     region: str = "us-east-1") -> RegistryImages:
        """The image operations of the sandbox at ``endpoint_url`` whose home is ``home``.

        The registry is the one the sandbox's state file (``home/state.json``, written by
        :class:`~.services.Sandbox`) names, read at each request: the gateway starts before
        the registry, and a registry that stopped is started again on its port. These are
        the sandbox's own requests, so they go to the registry itself (``internal_port``),
        not through the front door that records the notebook's (:mod:`.registry_proxy`).
        The account settings are kept in ``home/run`` (:func:`settings_path`), where the
        front door reads them.
        """
        import boto3

        from .account import SERVICE_KEY

        ecr = boto3.session.Session(aws_access_key_id=SERVICE_KEY,
                                    aws_secret_access_key=SERVICE_KEY,
                                    region_name=region).client("ecr", endpoint_url=endpoint_url)
        state_file = Path(home) / "state.json"
        storage = Path(home) / "run" / "registry"  # where Sandbox keeps the registry's files

        def registry() -> str | None:
            try:
                registry = json.loads(state_file.read_text()).get("registry", {})
            except (OSError, ValueError):
                return None
            port = registry.get("internal_port") or registry.get("port")
            return f"127.0.0.1:{port}" if port else None

        return cls(ecr, registry, storage=storage,
                   settings=AccountSettings(settings_path(home)))

    def handle(self, operation: str, request: dict) -> dict:
        """Answer one ECR call; raises :class:`~.protocol.ApiError` as ECR would."""
        validate_request(operation, request, self.model)
        if operation in _SETTING_OPERATIONS:
            return self.settings.handle(operation, request)
        name = self._repository(request)
        host = self.registry()
        if not host:
            raise ApiError("ServerException", "The sandbox registry is not running; "
                           "`%sm_sandbox start` starts it again.", 500)
        v2 = _Registry(host)
        return {
            "DescribeImages": self.describe_images,
            "ListImages": self.list_images,
            "BatchGetImage": self.batch_get_image,
            "BatchDeleteImage": self.batch_delete_image,
        }[operation](v2, name, request)

    # -------------------------------------------------------------- helpers

    def _repository(self, request: dict) -> str:
        """The repository's name, once moto confirms it exists (else ECR's error)."""
        from botocore.exceptions import ClientError

        name = request["repositoryName"]
        try:
            self.ecr.describe_repositories(repositoryNames=[name],
                                           registryId=request.get("registryId", self.account))
        except ClientError as exc:
            error = exc.response["Error"]
            raise ApiError(error.get("Code", "ServerException"), error.get("Message", ""),
                           exc.response["ResponseMetadata"]["HTTPStatusCode"]) from None
        return name

    @staticmethod
    def _images(v2: _Registry, name: str) -> dict[str, _Image]:
        """The repository's tagged images by digest, each with all its tags."""
        images: dict[str, _Image] = {}
        for tag in v2.tags(name):
            manifest = v2.manifest(name, tag)
            if manifest is None:  # deleted since the tag list was read
                continue
            images.setdefault(manifest.digest, _Image(manifest, [])).tags.append(tag)
        return images

    def _find(self, v2: _Registry, name: str, images: dict[str, _Image],
              image_id: dict) -> tuple[_Image | None, str | None]:
        """The image of ``image_id`` and, when there is none, ECR's failure code."""
        digest, tag = image_id.get("imageDigest"), image_id.get("imageTag")
        if not digest and not tag:
            return None, "MissingDigestAndTag"
        if tag:
            image = next((i for i in images.values() if tag in i.tags), None)
            if image is not None and digest and image.digest != digest:
                return None, "ImageTagDoesNotMatchDigest"
            return image, None if image is not None else "ImageNotFound"
        image = images.get(digest)
        if image is None:
            manifest = v2.manifest(name, digest)
            image = _Image(manifest, []) if manifest is not None else None
        return image, None if image is not None else "ImageNotFound"

    def _detail(self, v2: _Registry, name: str, image: _Image) -> dict[str, Any]:
        manifest = image.manifest
        key = (name, manifest.digest)
        if key not in self._details:
            detail: dict[str, Any] = {"imageManifestMediaType": manifest.media_type}
            content = json.loads(manifest.body)
            if manifest.media_type not in _INDEX_TYPES:
                detail["imageSizeInBytes"] = sum(layer.get("size", 0)
                                                 for layer in content.get("layers", []))
                config = content.get("config") or {}
                if config.get("mediaType"):
                    detail["artifactMediaType"] = config["mediaType"]
                blob = v2.blob(name, config["digest"]) if config.get("digest") else None
                built = _epoch(json.loads(blob).get("created")) if blob else None
                if built is not None:
                    detail["imagePushedAt"] = built
            self._details[key] = detail
        answer = {"registryId": self.account, "repositoryName": name,
                  "imageDigest": manifest.digest}
        if image.tags:
            answer["imageTags"] = sorted(image.tags)
        answer.update(self._details[key])
        pushed = self._pushed_at(name, manifest.digest)
        if pushed is not None:
            answer["imagePushedAt"] = pushed
        return answer

    def _pushed_at(self, name: str, digest: str) -> float | None:
        """When the repository ``name`` received the manifest ``digest``, if the storage says.

        The registry's API keeps no push time. Its storage does: distribution writes
        ``repositories/<name>/_manifests/revisions/<algorithm>/<hex>/link`` when a
        repository receives a manifest, so the link's modification time is the push
        time. Without the storage, the image config's ``created`` stands in (see
        :meth:`_detail`): when the image was built, which is seconds before
        ``%%sm_container`` pushes it, but earlier when Docker's build cache returned an
        older image.
        """
        if self.storage is None:
            return None
        algorithm, _, hexdigest = digest.partition(":")
        link = (self.storage / "docker" / "registry" / "v2" / "repositories" / name
                / "_manifests" / "revisions" / algorithm / hexdigest / "link")
        try:
            return link.stat().st_mtime
        except OSError:
            return None

    @staticmethod
    def _page(items: list, request: dict) -> tuple[list, dict]:
        offset = decode_page_token(request.get("nextToken"), _BAD_TOKEN)
        limit = request.get("maxResults", _DEFAULT_PAGE)
        more = ({"nextToken": encode_page_token(offset + limit)}
                if offset + limit < len(items) else {})
        return items[offset:offset + limit], more

    def _not_found(self, name: str, image_id: dict) -> ApiError:
        return ApiError("ImageNotFoundException",
                        f"The image with imageId {_image_id_text(image_id)} does not exist "
                        f"within the repository with name '{name}' in the registry with id "
                        f"'{self.account}'")

    # -------------------------------------------------------------- operations

    def describe_images(self, v2: _Registry, name: str, request: dict) -> dict:
        """``DescribeImages``: details of the images asked for, or of all (paged)."""
        images = self._images(v2, name)
        if request.get("imageIds"):
            if "nextToken" in request or "maxResults" in request:
                raise ApiError("InvalidParameterException", "Invalid parameter: nextToken and "
                               "maxResults cannot be used with imageIds.")
            chosen: list[_Image] = []
            for image_id in request["imageIds"]:
                image, failure = self._find(v2, name, images, image_id)
                if image is None:
                    if failure == "MissingDigestAndTag":
                        raise ApiError("InvalidParameterException", "Invalid parameter at "
                                       "'imageIds': an imageId needs an imageDigest or an "
                                       "imageTag.")
                    raise self._not_found(name, image_id)
                if all(image.digest != c.digest for c in chosen):
                    chosen.append(image)
            return {"imageDetails": [self._detail(v2, name, i) for i in chosen]}
        status = (request.get("filter") or {}).get("tagStatus", "ANY")
        details = [] if status == "UNTAGGED" else [
            self._detail(v2, name, image) for image in images.values()]
        details.sort(key=lambda d: (d.get("imagePushedAt", 0), d["imageDigest"]))
        page, more = self._page(details, request)
        return {"imageDetails": page, **more}

    def list_images(self, v2: _Registry, name: str, request: dict) -> dict:
        """``ListImages``: one id per tag (paged)."""
        status = (request.get("filter") or {}).get("tagStatus", "ANY")
        ids = [] if status == "UNTAGGED" else sorted(
            ({"imageDigest": image.digest, "imageTag": tag}
             for image in self._images(v2, name).values() for tag in image.tags),
            key=lambda i: (i["imageTag"], i["imageDigest"]))
        page, more = self._page(ids, request)
        return {"imageIds": page, **more}

    def batch_get_image(self, v2: _Registry, name: str, request: dict) -> dict:
        """``BatchGetImage``: the manifests asked for, as stored, and failures for the rest."""
        accept = tuple(request.get("acceptedMediaTypes") or MANIFEST_TYPES)
        found, failures = [], []
        for image_id in request["imageIds"]:
            digest, tag = image_id.get("imageDigest"), image_id.get("imageTag")
            manifest = v2.manifest(name, digest or tag, accept) if (digest or tag) else None
            failure = ("MissingDigestAndTag" if not (digest or tag) else
                       "ImageNotFound" if manifest is None else None)
            if manifest is not None and tag and digest:
                by_tag = v2.manifest(name, tag, accept)
                failure = None if by_tag and by_tag.digest == digest else \
                    "ImageTagDoesNotMatchDigest"
            if failure:
                failures.append(_failure(image_id, failure))
                continue
            found.append({"registryId": self.account, "repositoryName": name,
                          "imageId": {"imageDigest": manifest.digest,
                                      **({"imageTag": tag} if tag else {})},
                          "imageManifest": manifest.body.decode(),
                          "imageManifestMediaType": manifest.media_type})
        return {"images": found, "failures": failures}

    def batch_delete_image(self, v2: _Registry, name: str, request: dict) -> dict:
        """``BatchDeleteImage``: by digest the image goes with its tags; by tag, the tag."""
        images = self._images(v2, name)
        deleted, failures = [], []
        for image_id in request["imageIds"]:
            image, failure = self._find(v2, name, images, image_id)
            if image is None:
                failures.append(_failure(image_id, failure))
                continue
            tag = image_id.get("imageTag")
            removed = [tag] if tag and not image_id.get("imageDigest") else list(image.tags)
            kept = [t for t in image.tags if t not in removed]
            v2.delete(name, image.digest)
            for other in kept:
                v2.put(name, other, image.manifest)
            image.tags = kept
            if not kept:
                images.pop(image.digest, None)
            deleted += [{"imageDigest": image.digest, "imageTag": t} for t in removed] or [
                {"imageDigest": image.digest}]
        return {"imageIds": deleted, "failures": failures}


_FAILURE_REASONS = {
    "ImageNotFound": "Requested image not found",
    "MissingDigestAndTag": "Invalid request parameters: both tag and digest cannot be null",
    "ImageTagDoesNotMatchDigest": "Invalid request parameters: image tag digest mismatch",
}


def _failure(image_id: dict, code: str) -> dict:
    return {"imageId": dict(image_id), "failureCode": code, "failureReason": _FAILURE_REASONS[code]}
