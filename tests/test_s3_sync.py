"""Parameters and input directories in the sandbox's S3: what is uploaded, and when not.

Requests are counted with a botocore ``before-call`` hook on the real boto3
session, so the counts are the S3 operations that really reached the endpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections import Counter
from pathlib import Path

import pytest
from IPython.core.error import UsageError

from sm_magics import params, s3
from sm_magics.aws import AwsContext
from sm_magics.config import resolve

pytestmark = pytest.mark.sandbox


@pytest.fixture
def aws(sandbox):
    return AwsContext(resolve())




@pytest.fixture
def channel(aws) -> str:
    return s3.input_uri(aws, f"sync-{uuid.uuid4().hex[:8]}", "train")


@pytest.fixture
def manifests(tmp_path) -> Path:
    return tmp_path / "manifests"


def make_files(root: Path, count: int) -> dict[str, bytes]:
    files = {}
    for i in range(count):
        rel = f"part-{i:02d}.csv" if i % 3 else f"nested/deeper/part-{i:02d}.csv"
        files[rel] = f"id,value\n{i},{i * i}\n".encode()
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(files[rel])
    return files


def remote_files(aws, uri: str) -> dict[str, bytes]:
    bucket, prefix = s3.parse_s3_uri(uri)
    client = aws.client("s3")
    found = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            body = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            found[obj["Key"][len(prefix):]] = body
    return found


def test_first_sync_uploads_every_file_and_an_unchanged_resync_uploads_none(
        aws, calls, channel, manifests, tmp_path):
    files = make_files(tmp_path / "data", 12)

    first = s3.sync_dir(aws, tmp_path / "data", channel, manifest_dir=manifests)
    assert calls["PutObject"] == 12
    assert sorted(first.uploaded) == sorted(files)
    assert remote_files(aws, channel) == files

    calls.clear()
    again = s3.sync_dir(aws, tmp_path / "data", channel, manifest_dir=manifests)

    assert calls == Counter({"ListObjectsV2": 1})
    assert (again.uploaded, again.skipped, again.deleted, again.requests) == ([], 12, [], 1)


def test_changing_one_file_uploads_only_that_file(aws, calls, channel, manifests, tmp_path):
    files = make_files(tmp_path / "data", 12)
    s3.sync_dir(aws, tmp_path / "data", channel, manifest_dir=manifests)
    (tmp_path / "data" / "part-04.csv").write_bytes(b"id,value\n4,changed\n")
    files["part-04.csv"] = b"id,value\n4,changed\n"
    calls.clear()

    result = s3.sync_dir(aws, tmp_path / "data", channel, manifest_dir=manifests)

    assert calls["PutObject"] == 1
    assert result.uploaded == ["part-04.csv"] and result.skipped == 11
    assert remote_files(aws, channel) == files


def test_new_mtimes_on_unchanged_files_upload_nothing(aws, calls, channel, manifests, tmp_path):
    make_files(tmp_path / "data", 6)
    s3.sync_dir(aws, tmp_path / "data", channel, manifest_dir=manifests)
    for path in (tmp_path / "data").rglob("*.csv"):
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**10))
    calls.clear()

    result = s3.sync_dir(aws, tmp_path / "data", channel, manifest_dir=manifests)

    assert calls == Counter({"ListObjectsV2": 1})
    assert result.skipped == 6


def test_without_the_local_manifest_a_resync_reads_metadata_and_downloads_nothing(
        aws, calls, channel, manifests, tmp_path):
    make_files(tmp_path / "data", 5)
    s3.sync_dir(aws, tmp_path / "data", channel, manifest_dir=manifests)
    calls.clear()

    result = s3.sync_dir(aws, tmp_path / "data", channel, manifest_dir=tmp_path / "other")

    assert calls == Counter({"ListObjectsV2": 1, "HeadObject": 5})
    assert result.skipped == 5 and not result.uploaded


def test_every_object_carries_the_sha256_of_its_content(aws, channel, manifests, tmp_path):
    files = make_files(tmp_path / "data", 3)
    s3.sync_dir(aws, tmp_path / "data", channel, manifest_dir=manifests)
    bucket, prefix = s3.parse_s3_uri(channel)

    for rel, body in files.items():
        head = aws.client("s3").head_object(Bucket=bucket, Key=prefix + rel)
        assert head["Metadata"] == {"sha256": hashlib.sha256(body).hexdigest()}


def test_a_file_removed_locally_is_removed_from_the_channel(
        aws, calls, channel, manifests, tmp_path):
    files = make_files(tmp_path / "data", 4)
    s3.sync_dir(aws, tmp_path / "data", channel, manifest_dir=manifests)
    (tmp_path / "data" / "part-01.csv").unlink()
    del files["part-01.csv"]
    calls.clear()

    result = s3.sync_dir(aws, tmp_path / "data", channel, manifest_dir=manifests)

    assert result.deleted == ["part-01.csv"]
    assert calls == Counter({"ListObjectsV2": 1, "DeleteObjects": 1})
    assert remote_files(aws, channel) == files


def test_notebook_checkpoints_and_caches_are_not_uploaded(aws, channel, manifests, tmp_path):
    data = tmp_path / "data"
    for rel in ("train.csv", ".ipynb_checkpoints/x.ipynb", "__pycache__/m.pyc", ".git/HEAD"):
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        (data / rel).write_text(rel)

    s3.sync_dir(aws, data, channel, manifest_dir=manifests)

    assert remote_files(aws, channel) == {"train.csv": b"train.csv"}


def test_linked_folders_are_followed_but_a_link_loop_is_not(aws, channel, manifests, tmp_path):
    data, shared = tmp_path / "data", tmp_path / "shared"
    (data / "own").mkdir(parents=True)
    shared.mkdir()
    (data / "own" / "a.txt").write_text("a")
    (shared / "b.txt").write_text("b")
    (data / "linked").symlink_to(shared, target_is_directory=True)
    (data / "own" / "back").symlink_to(data, target_is_directory=True)

    s3.sync_dir(aws, data, channel, manifest_dir=manifests)

    assert remote_files(aws, channel) == {"own/a.txt": b"a", "linked/b.txt": b"b"}


def test_a_large_file_goes_up_in_parts_with_progress_reported(
        aws, calls, channel, manifests, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    big = os.urandom(s3.SINGLE_PUT_LIMIT + 1024)
    (data / "big.bin").write_bytes(big)
    (data / "small.txt").write_text("small")
    progress: list[tuple[int, int]] = []

    result = s3.sync_dir(aws, data, channel, progress=lambda done, total: progress.append(
        (done, total)), manifest_dir=manifests)

    total = len(big) + len("small")
    assert progress[-1] == (total, total)
    assert len(progress) > 2
    assert calls["CreateMultipartUpload"] == 1 and calls["UploadPart"] >= 2
    assert result.bytes_uploaded == total
    assert remote_files(aws, channel)["big.bin"] == big
    calls.clear()
    assert s3.sync_dir(aws, data, channel, manifest_dir=manifests).skipped == 2
    assert calls == Counter({"ListObjectsV2": 1})


def test_a_single_local_file_is_synced_under_its_name(aws, channel, manifests, tmp_path):
    (tmp_path / "config.yaml").write_text("depth: 3\n")

    result = s3.sync_dir(aws, tmp_path / "config.yaml", channel, manifest_dir=manifests)

    assert result.uploaded == ["config.yaml"]
    assert remote_files(aws, channel) == {"config.yaml": b"depth: 3\n"}


def test_a_missing_local_path_is_a_usage_error(aws, channel, tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        s3.sync_dir(aws, tmp_path / "nope", channel, manifest_dir=tmp_path)


# ---------------------------------------------------------------- parameters


def test_a_params_document_is_uploaded_once_under_its_content_hash(aws, calls):
    container = f"params-{uuid.uuid4().hex[:8]}"
    doc = params.resolve({"lr": 0.05}, [{"layers": [64, 32], "note": "x" * 10_000}])

    uri = s3.upload_params(aws, container, doc)
    assert calls["PutObject"] == 1
    calls.clear()
    again = s3.upload_params(aws, container, dict(reversed(list(doc.items()))))

    assert again == uri
    assert calls == Counter({"HeadObject": 1})
    sha = params.sha256(doc)
    assert uri == f"s3://{aws.bucket}/sm-magics/{container}/params/{sha}.json"
    bucket, key = s3.parse_s3_uri(uri)
    body = aws.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    assert body == params.canonical_json(doc).encode()
    assert hashlib.sha256(body).hexdigest() == sha
    assert s3.read_params(aws, uri) == doc


def test_a_params_object_is_encrypted_and_typed_as_json(aws):
    uri = s3.upload_params(aws, f"params-{uuid.uuid4().hex[:8]}", {"lr": 0.05})
    bucket, key = s3.parse_s3_uri(uri)

    head = aws.client("s3").head_object(Bucket=bucket, Key=key)

    assert head["ServerSideEncryption"] == "AES256"
    assert head["ContentType"] == "application/json"
    assert json.loads(aws.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()) == {
        "lr": 0.05}


# ---------------------------------------------------------------- buckets and URIs


def test_the_default_bucket_is_created_private_and_encrypted(sandbox):
    aws = AwsContext(resolve(flags={"region": "eu-north-1"}))

    assert s3.ensure_bucket(aws) == "sagemaker-eu-north-1-123456789012"

    client = aws.client("s3")
    assert client.get_bucket_location(Bucket=aws.bucket)["LocationConstraint"] == "eu-north-1"
    block = client.get_public_access_block(Bucket=aws.bucket)["PublicAccessBlockConfiguration"]
    assert all(block.values())
    rules = client.get_bucket_encryption(Bucket=aws.bucket)["ServerSideEncryptionConfiguration"]
    assert rules["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"


def test_a_configured_bucket_that_does_not_exist_is_a_usage_error_and_not_created(sandbox):
    aws = AwsContext(resolve(flags={"bucket": "no-such-bucket-for-sm-magics"}))

    with pytest.raises(UsageError, match="no-such-bucket-for-sm-magics .* does not exist"):
        s3.ensure_bucket(aws)
    names = [b["Name"] for b in aws.client("s3").list_buckets()["Buckets"]]
    assert "no-such-bucket-for-sm-magics" not in names


def test_s3_uris_are_checked_before_they_are_passed_through(aws, channel, manifests, tmp_path):
    make_files(tmp_path / "data", 2)
    s3.sync_dir(aws, tmp_path / "data", channel, manifest_dir=manifests)

    s3.check_s3_uri_exists(aws, channel)
    s3.check_s3_uri_exists(aws, channel + "part-01.csv")
    with pytest.raises(UsageError, match="no object at or under"):
        s3.check_s3_uri_exists(aws, channel + "missing/")
    with pytest.raises(UsageError, match="the bucket no-such-bucket-x does not exist"):
        s3.check_s3_uri_exists(aws, "s3://no-such-bucket-x/data/")
    with pytest.raises(UsageError, match="is not an S3 URI"):
        s3.check_s3_uri_exists(aws, "https://example.com/data")
