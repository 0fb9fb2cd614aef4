"""Cross-repository blob mounts in the sandbox registry, as ECR answers them.

ECR mounts a blob from another repository of the registry only once the registry's
``BLOB_MOUNTING`` account setting is ``ENABLED`` ("Blob mounting in Amazon ECR",
https://docs.aws.amazon.com/AmazonECR/latest/userguide/blob-mounting.html); until then a
mount request starts an ordinary upload (``202 Accepted``). Enabled, a mount needs
``ecr:GetDownloadUrlForLayer`` on the repository mounted from, repositories with the same
encryption, and a manifest of that repository listing the blob. These tests read and put
the setting with boto3 and mount with the project's registry client, logged in with the
sandbox's ECR token; the setting is put back to ``DISABLED`` after each (the session's
sandbox is shared).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import urllib.parse
import urllib.request
import uuid

import boto3
import pytest
from botocore.exceptions import ClientError

from sm_magics.aws import AwsContext
from sm_magics.config import resolve
from sm_magics.ecr import Ecr
from sm_magics.errors import RemoteFailure
from sm_magics.registry import Registry
from sm_magics.sandbox import SANDBOX_ACCOUNT, temporary_sandbox
from sm_magics.sandbox.authorization import registry_authorizations

REPOSITORY = f"arn:aws:ecr:us-east-1:{SANDBOX_ACCOUNT}:repository/"
MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"


def ecr_registry() -> Registry:
    """The sandbox registry as the notebook reaches it: through ECR's front door, logged in."""
    host = os.environ["SM_MAGICS_REGISTRY"]
    return Registry(host, Ecr(AwsContext(resolve()), host).credential)


def blob(text: str) -> tuple[bytes, str]:
    data = f"{text} {uuid.uuid4()}".encode()
    return data, "sha256:" + hashlib.sha256(data).hexdigest()


def names(*parts: str) -> list[str]:
    run = uuid.uuid4().hex[:8]
    return [f"mount-{part}-{run}" for part in parts]


def push_image(registry: Registry, repository: str) -> str:
    """An image (a config and one layer) in ``repository``; the layer's digest."""
    layer, layer_digest = blob("layer")
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [layer_digest]}}).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    registry.upload_blob(repository, io.BytesIO(layer), layer_digest, len(layer))
    registry.upload_blob(repository, io.BytesIO(config), config_digest, len(config))
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "size": len(config), "digest": config_digest},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "size": len(layer), "digest": layer_digest}]}).encode()
    registry.put_manifest(repository, "v1", manifest, MANIFEST_TYPE)
    return layer_digest


def mount_answer(registry: Registry, target: str, digest: str, source: str) -> tuple[int, str]:
    """The registry's status and ``Location`` for a mount POST (the upload it opens is left)."""
    query = urllib.parse.urlencode({"mount": digest, "from": source})
    request = urllib.request.Request(
        f"http://{registry.host}/v2/{target}/blobs/uploads/?{query}", data=b"", method="POST",
        headers={"Authorization": f"Basic {registry.credentials(False)}"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=30) as response:
        return response.status, response.headers.get("Location", "")


def mount_records(box, target: str) -> set[tuple[str, str, bool]]:
    """What the mount POSTs into ``target`` were authorized for: (action, resource, allowed)."""
    request = f"registry POST /v2/{target}/blobs/uploads/"
    return {(a["action"], a["resource"], a["allowed"]) for a in box.authorizations()
            if a["request"] == request}


@pytest.fixture
def mounting(sandbox):
    """The session's sandbox, its ``BLOB_MOUNTING`` setting put back to DISABLED afterwards."""
    yield sandbox
    boto3.client("ecr").put_account_setting(name="BLOB_MOUNTING", value="DISABLED")


# ---------------------------------------------------------------- no sandbox needed


def test_a_mount_request_needs_get_download_url_for_layer_on_the_source_too():
    path = "/v2/sagemaker-b/blobs/uploads/?mount=sha256%3Aab&from=team%2Fbase"
    assert [(a.action, a.resource) for a in registry_authorizations("POST", path)] == [
        ("ecr:InitiateLayerUpload", REPOSITORY + "sagemaker-b"),
        ("ecr:GetDownloadUrlForLayer", REPOSITORY + "team/base")]
    # without both parameters it is an ordinary upload
    assert [a.action for a in registry_authorizations(
        "POST", "/v2/sagemaker-b/blobs/uploads/?mount=sha256%3Aab")] == ["ecr:InitiateLayerUpload"]


# ---------------------------------------------------------------- in the sandbox


@pytest.mark.sandbox
def test_the_setting_is_disabled_until_enabled_and_bad_names_or_values_are_refused(mounting):
    ecr = boto3.client("ecr")
    answer = ecr.get_account_setting(name="BLOB_MOUNTING")
    assert (answer["name"], answer["value"]) == ("BLOB_MOUNTING", "DISABLED")
    put = ecr.put_account_setting(name="BLOB_MOUNTING", value="ENABLED")
    assert (put["name"], put["value"]) == ("BLOB_MOUNTING", "ENABLED")
    assert ecr.get_account_setting(name="BLOB_MOUNTING")["value"] == "ENABLED"

    with pytest.raises(ClientError) as err:
        ecr.put_account_setting(name="BLOB_MOUNTING", value="ON")
    assert err.value.response["Error"]["Code"] == "InvalidParameterException"
    assert err.value.response["Error"]["Message"] == (
        "Invalid parameter at 'value' failed to satisfy constraint: "
        "'Member must satisfy enum value set: [ENABLED, DISABLED]'")
    for call in (lambda: ecr.put_account_setting(name="NOPE", value="ENABLED"),
                 lambda: ecr.get_account_setting(name="NOPE")):
        with pytest.raises(ClientError) as err:
            call()
        assert err.value.response["Error"]["Code"] == "InvalidParameterException"
        assert "'name'" in err.value.response["Error"]["Message"]
    assert ecr.get_account_setting(name="BLOB_MOUNTING")["value"] == "ENABLED"  # unchanged


@pytest.mark.sandbox
def test_a_mount_is_an_ordinary_upload_until_blob_mounting_is_enabled(mounting):
    ecr, registry = boto3.client("ecr"), ecr_registry()
    source, target, elsewhere = names("source", "target", "elsewhere")
    for name in (source, target):
        ecr.create_repository(repositoryName=name)
    layer = push_image(registry, source)

    # disabled (the default): the registry opens an upload session, as ECR does
    status, location = mount_answer(registry, target, layer, source)
    assert status == 202 and f"/v2/{target}/blobs/uploads/" in location
    assert registry.mount_blob(target, layer, source) is False
    assert not registry.has_blob(target, layer)
    assert mount_records(mounting, target) == {
        ("ecr:InitiateLayerUpload", REPOSITORY + target, True)}  # the source is not looked at
    # into a repository ECR does not have (the registry standing in for another registry,
    # as for the sandbox's base image), a mount is the registry's own
    assert registry.mount_blob(elsewhere, layer, source) is True

    ecr.put_account_setting(name="BLOB_MOUNTING", value="ENABLED")
    assert registry.mount_blob(target, layer, source) is True
    assert registry.has_blob(target, layer)
    with registry.open_blob(target, layer) as stream:
        assert hashlib.sha256(stream.read()).hexdigest() == layer.split(":")[1]
    assert ("ecr:GetDownloadUrlForLayer", REPOSITORY + source, True) in mount_records(
        mounting, target)


@pytest.mark.sandbox
def test_enabled_a_blob_is_mounted_only_from_an_ecr_repository_whose_image_lists_it(mounting):
    ecr, registry = boto3.client("ecr"), ecr_registry()
    source, target, keyed, outside = names("source", "target", "keyed", "outside")
    ecr.create_repository(repositoryName=source)
    ecr.create_repository(repositoryName=target)
    ecr.create_repository(repositoryName=keyed, encryptionConfiguration={"encryptionType": "KMS"})
    ecr.put_account_setting(name="BLOB_MOUNTING", value="ENABLED")

    # uploaded to the source, but no manifest there lists it: ECR does not mount it
    # (it answers 202, aws/containers-roadmap#2860)
    loose, loose_digest = blob("loose")
    registry.upload_blob(source, io.BytesIO(loose), loose_digest, len(loose))
    assert registry.mount_blob(target, loose_digest, source) is False

    # a repository with other encryption (KMS, the target AES-256)
    keyed_layer = push_image(registry, keyed)
    assert registry.mount_blob(target, keyed_layer, keyed) is False

    # a repository the registry has but ECR does not (put there behind ECR's back)
    internal = Registry(f"127.0.0.1:{mounting.state()['registry']['internal_port']}")
    outside_layer = push_image(internal, outside)
    assert registry.mount_blob(target, outside_layer, outside) is False

    for digest in (loose_digest, keyed_layer, outside_layer):
        assert not registry.has_blob(target, digest)
    listed = push_image(registry, source)
    assert registry.mount_blob(target, listed, source) is True


@pytest.mark.sandbox
@pytest.mark.docker
@pytest.mark.slow
def test_a_policy_denying_get_download_url_for_layer_on_the_source_refuses_the_mount(
        sandbox, tmp_path):
    source, target = names("denied-source", "target")
    document = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "ecr:*", "Resource": "*"},
        {"Effect": "Deny", "Action": "ecr:GetDownloadUrlForLayer",
         "Resource": REPOSITORY + source}]}
    (tmp_path / "policy.json").write_text(json.dumps(document))
    with temporary_sandbox(policy=str(tmp_path / "policy.json")) as box:
        ecr, registry = boto3.client("ecr"), ecr_registry()
        for name in (source, target):
            ecr.create_repository(repositoryName=name)
        layer = push_image(registry, source)
        # disabled, the source is not looked at: an ordinary upload, allowed
        assert registry.mount_blob(target, layer, source) is False
        ecr.put_account_setting(name="BLOB_MOUNTING", value="ENABLED")
        with pytest.raises(RemoteFailure) as err:
            registry.mount_blob(target, layer, source)
        text = "\n".join(err.value._render_traceback_())
        assert "answered HTTP 403" in text
        assert (f"is not authorized to perform: ecr:GetDownloadUrlForLayer on resource: "
                f"{REPOSITORY}{source} with an explicit deny") in text
        assert not registry.has_blob(target, layer)
        assert ("ecr:GetDownloadUrlForLayer", REPOSITORY + source, False) in mount_records(
            box, target)
