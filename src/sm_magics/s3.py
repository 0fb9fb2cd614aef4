"""Parameters and input files in S3, uploaded once and only when their content changed.

Layout under the bucket (``<prefix>`` is the ``prefix`` setting)::

    <prefix>/<container>/params/<sha256>.json     one canonical JSON document per resolved set
    <prefix>/<container>/inputs/<channel>/...     a mirror of a local directory given to --input

A parameter document is written in one ``PutObject`` with its MD5 and SHA-256
checksums (S3 rejects a body that does not match) and only when its key does
not exist, so an object under ``params/`` is always complete. Directories are
synced by content: each object carries the SHA-256 of its bytes as metadata
(``x-amz-meta-sha256``) and a local manifest remembers, per file, the size,
mtime, SHA-256 and the ETag S3 gave the upload. An unchanged re-sync is then
one ``ListObjectsV2`` call and no download, however the mtimes moved.

Every request to the session's bucket names its owner (``ExpectedBucketOwner``:
a bucket of the same name in another account is refused), and every upload asks
for the bucket's own server-side encryption (:func:`upload_encryption`).

Example::

    >>> aws = AwsContext(resolve())
    >>> upload_params(aws, "fraud", {"lr": 0.05})
    's3://sagemaker-us-east-1-123456789012/sm-magics/fraud/params/5d1c....json'
    >>> sync_dir(aws, "data/", input_uri(aws, "fraud", "train"))
    SyncResult(uploaded 3 of 3 files (12.0 kB), 0 unchanged, 0 deleted, 5 requests)
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import RemoteFailure, usage_error
from .params import canonical_json
from .s3uri import split_s3_uri

__all__ = [
    "SyncResult",
    "check_s3_uri_exists",
    "ensure_bucket",
    "input_uri",
    "parse_s3_uri",
    "read_params",
    "sync_dir",
    "upload_encryption",
    "upload_params",
]

IGNORED_DIRS = frozenset({".git", "__pycache__", ".ipynb_checkpoints"})
_CONFLICT_ATTEMPTS = 4  # conditional writes of a parameter document before reading it back
SINGLE_PUT_LIMIT = 16 * 1024 * 1024
_CHUNK = 1024 * 1024
# Buckets checked in this process, with the encryption arguments of uploads to them.
_READY_BUCKETS: dict[tuple[str | None, str | None, str], dict[str, str]] = {}
_READY_LOCK = threading.Lock()


# ---------------------------------------------------------------- addresses


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` as ``(bucket, key)``; a ``UsageError`` when it is not one.

    >>> parse_s3_uri("s3://my-bucket/data/train/")
    ('my-bucket', 'data/train/')
    """
    try:
        return split_s3_uri(uri)
    except ValueError:
        raise usage_error(f"'{uri}' is not an S3 URI. Write s3://BUCKET/KEY, "
                          "e.g. s3://my-bucket/data/train/.") from None


def _key_prefix(aws, container: str) -> str:
    return f"{(aws.settings.prefix or '').strip('/')}/{container}".lstrip("/")


def input_uri(aws, container: str, channel: str) -> str:
    """Where ``--input CHANNEL=LOCAL_PATH`` of ``container`` is synced to (ends with ``/``).

    >>> input_uri(aws, "fraud", "train")
    's3://sagemaker-us-east-1-123456789012/sm-magics/fraud/inputs/train/'
    """
    return f"s3://{aws.bucket}/{_key_prefix(aws, container)}/inputs/{channel}/"


def _error_code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def _is_missing(exc: Exception) -> bool:
    return _error_code(exc) in ("404", "NoSuchKey", "NoSuchBucket", "NotFound")


def _is_denied(exc: Exception) -> bool:
    return _error_code(exc) in ("403", "AccessDenied")


# ---------------------------------------------------------------- bucket


class SkippedHardening(UserWarning):
    """An optional hardening call was denied by IAM and skipped; the message says which.

    Silence it with ``warnings.filterwarnings("ignore", category=SkippedHardening)``.
    """


def _skipped(message: str) -> None:
    import warnings

    warnings.warn(message, SkippedHardening, stacklevel=3)


def ensure_bucket(aws) -> str:
    """The bucket of ``aws``, checked to exist and be the account's own; returns its name.

    The SageMaker default bucket (``sagemaker-<region>-<account>``, used when no
    bucket is configured) is created when missing, with public access blocked
    and default encryption (SSE-S3): S3's own defaults for a new bucket, also
    set explicitly where the credentials may. A configured bucket that does not
    exist is a ``UsageError``: a typo should not create a bucket.

    >>> ensure_bucket(aws)
    'sagemaker-us-east-1-123456789012'
    """
    from botocore.exceptions import ClientError

    bucket = aws.bucket
    marker = (aws.settings.endpoint_url, aws.settings.region, bucket)
    with _READY_LOCK:
        if marker in _READY_BUCKETS:
            return bucket
    s3 = aws.client("s3")
    try:
        s3.head_bucket(Bucket=bucket, ExpectedBucketOwner=aws.account)
    except ClientError as exc:
        code = _error_code(exc)
        if code in ("403", "AccessDenied"):
            raise usage_error(
                f"The S3 bucket {bucket} exists but account {aws.account} cannot use it: it "
                "belongs to another account, or these credentials lack s3:ListBucket on it. "
                "Choose a bucket of your own with `%sm_config --bucket NAME`."
            ) from None
        if not _is_missing(exc):
            raise
        if aws.settings.bucket:
            raise usage_error(
                f"The S3 bucket {bucket} (from the bucket setting) does not exist. Create it "
                f"(`aws s3 mb s3://{bucket}`), or unset the setting (`%sm_config --unset "
                "bucket`) to use the SageMaker default bucket."
            ) from None
        _create_bucket(s3, bucket, aws.settings.region, aws.account)
    encryption = _default_encryption(s3, bucket, aws.account)
    with _READY_LOCK:
        _READY_BUCKETS[marker] = encryption
    return bucket


def upload_encryption(aws) -> dict[str, str]:
    """The server-side encryption arguments of every upload to the bucket of ``aws``.

    They follow the bucket's default encryption, so an upload never weakens it:
    SSE-KMS with the bucket's key when it uses KMS, else SSE-S3 (AES256). When
    the credentials may not read the bucket's encryption setting, nothing is
    sent and the bucket's default applies. Asked once per bucket and process.

    >>> upload_encryption(aws)
    {'ServerSideEncryption': 'AES256'}
    """
    bucket = ensure_bucket(aws)
    with _READY_LOCK:
        return dict(_READY_BUCKETS[(aws.settings.endpoint_url, aws.settings.region, bucket)])


def _default_encryption(s3, bucket: str, owner: str) -> dict[str, str]:
    from botocore.exceptions import ClientError

    try:
        rules = s3.get_bucket_encryption(Bucket=bucket, ExpectedBucketOwner=owner)[
            "ServerSideEncryptionConfiguration"]["Rules"]
    except ClientError as exc:
        code = _error_code(exc)
        if code in ("403", "AccessDenied"):
            _skipped(f"Skipped reading the default encryption of bucket {bucket}: "
                     "s3:GetEncryptionConfiguration is not allowed for these credentials, so "
                     "uploads leave encryption to the bucket's default.")
            return {}
        if code != "ServerSideEncryptionConfigurationNotFoundError":
            raise
        rules = []
    for rule in rules:
        default = rule.get("ApplyServerSideEncryptionByDefault") or {}
        if default.get("SSEAlgorithm", "").startswith("aws:kms"):
            args = {"ServerSideEncryption": default["SSEAlgorithm"]}
            if default.get("KMSMasterKeyID"):
                args["SSEKMSKeyId"] = default["KMSMasterKeyID"]
            return args
    return {"ServerSideEncryption": "AES256"}


def _create_bucket(s3, bucket: str, region: str, owner: str) -> None:
    from botocore.exceptions import ClientError

    kwargs: dict[str, Any] = {"Bucket": bucket}
    if region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        s3.create_bucket(**kwargs)
    except ClientError as exc:
        if _error_code(exc) == "BucketAlreadyOwnedByYou":
            return
        if _error_code(exc) == "BucketAlreadyExists":
            raise usage_error(
                f"The S3 bucket name {bucket} is taken by another AWS account. Choose a bucket "
                "with `%sm_config --bucket NAME`."
            ) from None
        raise
    # S3 blocks public access (since April 2023) and encrypts with SSE-S3 (since January
    # 2023) on every new bucket by itself; saying so explicitly needs
    # s3:PutBucketPublicAccessBlock and s3:PutEncryptionConfiguration, which
    # AmazonSageMakerFullAccess does not grant: skipped when denied.
    for action, what, settle in (
        ("s3:PutBucketPublicAccessBlock", "blocking public access",
         lambda: s3.put_public_access_block(Bucket=bucket, ExpectedBucketOwner=owner,
                                            PublicAccessBlockConfiguration={
             "BlockPublicAcls": True, "IgnorePublicAcls": True,
             "BlockPublicPolicy": True, "RestrictPublicBuckets": True,
         })),
        ("s3:PutEncryptionConfiguration", "setting default encryption (SSE-S3)",
         lambda: s3.put_bucket_encryption(Bucket=bucket, ExpectedBucketOwner=owner,
                                          ServerSideEncryptionConfiguration={
             "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}],
         })),
    ):
        try:
            settle()
        except ClientError as exc:
            if not _is_denied(exc):
                raise
            _skipped(f"Skipped {what} on the new bucket {bucket}: {action} is not allowed for "
                     "these credentials (S3 does it by itself for every new bucket).")


# ---------------------------------------------------------------- parameters


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def upload_params(aws, container: str, doc: dict[str, Any]) -> str:
    """Write ``doc`` to ``<prefix>/<container>/params/<sha256>.json`` unless it is there.

    Returns the object's S3 URI. The body is the canonical JSON of ``doc``; it
    is written in one request guarded by its MD5 and SHA-256, and never
    overwrites an existing key (``If-None-Match: *``). When that write does not
    happen (another run wrote the key first, or S3 kept answering
    ``ConditionalRequestConflict``), the object is read back: it must be there
    with this content, else :class:`RemoteFailure`.

    >>> upload_params(aws, "fraud", {"lr": 0.05})
    's3://sagemaker-us-east-1-123456789012/sm-magics/fraud/params/5d1c....json'
    """
    from botocore.exceptions import ClientError

    bucket = ensure_bucket(aws)
    encryption = upload_encryption(aws)
    body = canonical_json(doc).encode("utf-8")
    digest = hashlib.sha256(body)
    key = f"{_key_prefix(aws, container)}/params/{digest.hexdigest()}.json"
    uri = f"s3://{bucket}/{key}"
    s3 = aws.client("s3")
    owner = aws.account
    try:
        s3.head_object(Bucket=bucket, Key=key, ExpectedBucketOwner=owner)
        return uri
    except ClientError as exc:
        # S3 answers 403, not 404, for a missing key to a caller without s3:ListBucket.
        # Taken as absent: the write below never replaces an object that is there.
        if not (_is_missing(exc) or _is_denied(exc)):
            raise
    for attempt in range(_CONFLICT_ATTEMPTS):
        try:
            s3.put_object(
                Bucket=bucket, Key=key, Body=body, ContentType="application/json",
                ContentMD5=_b64(hashlib.md5(body).digest()), ChecksumSHA256=_b64(digest.digest()),
                Metadata={"sha256": digest.hexdigest()}, IfNoneMatch="*",
                ExpectedBucketOwner=owner, **encryption,
            )
            return uri
        except ClientError as exc:
            code = _error_code(exc)
            if code in ("PreconditionFailed", "412"):
                break  # the key exists: another run wrote it first
            if code not in ("ConditionalRequestConflict", "409"):
                raise
            # A write to the same key raced this one: "On a 409 failure you should retry
            # the upload" (S3 API Reference, PutObject, If-None-Match).
            time.sleep(0.2 * 2 ** attempt)
    _check_stored(s3, bucket, key, owner, body, answered=code)
    return uri


def _check_stored(s3, bucket: str, key: str, owner: str, body: bytes, answered: str) -> None:
    """Raise :class:`RemoteFailure` unless the object at ``key`` holds ``body``.

    ``answered`` is the error code S3 gave the write that did not happen.
    """
    from botocore.exceptions import ClientError

    try:
        stored = s3.get_object(Bucket=bucket, Key=key, ExpectedBucketOwner=owner)["Body"].read()
    except ClientError as exc:
        if not _is_missing(exc):
            raise
        stored = None
    if stored != body:
        raise RemoteFailure(
            f"S3 did not store the parameters at s3://{bucket}/{key}",
            reason=f"S3 answered {answered} to the write, and the object is "
                   + ("missing" if stored is None else "there with other content"),
            hint="No job was started. Run the cell again.")


def read_params(aws, uri: str) -> dict[str, Any]:
    """The parameter document stored at ``uri`` (e.g. the one a previous job used).

    >>> read_params(aws, "s3://bucket/sm-magics/fraud/params/5d1c....json")
    {'lr': 0.05}
    """
    bucket, key = parse_s3_uri(uri)
    answer = aws.client("s3").get_object(Bucket=bucket, Key=key, ExpectedBucketOwner=aws.account)
    body = answer["Body"].read()
    return json.loads(body)


def check_s3_uri_exists(aws, uri: str) -> None:
    """Raise a ``UsageError`` unless an object exists at ``uri`` or under it as a prefix.

    SageMaker reads an ``S3Prefix`` channel as every object whose key starts
    with the URI's key, so that is what is checked (one ``ListObjectsV2`` call).
    The bucket may belong to another account (shared data sets), so its owner
    is not checked.

    >>> check_s3_uri_exists(aws, "s3://my-bucket/data/train/")
    """
    from botocore.exceptions import ClientError

    bucket, key = parse_s3_uri(uri)
    try:
        found = aws.client("s3").list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
    except ClientError as exc:
        code = _error_code(exc)
        if code == "NoSuchBucket":
            raise usage_error(
                f"{uri}: the bucket {bucket} does not exist. Check the URI."
            ) from None
        if code in ("403", "AccessDenied"):
            raise usage_error(
                f"{uri}: these credentials may not list the bucket {bucket} (AccessDenied). "
                "The training job's role may still read it; check the URI and the bucket policy."
            ) from None
        raise
    if not found.get("KeyCount"):
        raise usage_error(
            f"{uri}: there is no object at or under this S3 URI. Check the URI, or give a "
            "local path to --input to upload the files."
        )


# ---------------------------------------------------------------- directory sync


@dataclass
class SyncResult:
    """What :func:`sync_dir` did: files uploaded, skipped as unchanged, deleted remotely."""

    uri: str
    uploaded: list[str] = field(default_factory=list)
    skipped: int = 0
    deleted: list[str] = field(default_factory=list)
    requests: int = 0
    bytes_uploaded: int = 0

    def __repr__(self) -> str:
        total = len(self.uploaded) + self.skipped
        return (f"SyncResult(uploaded {len(self.uploaded)} of {total} files "
                f"({self.bytes_uploaded / 1000:.1f} kB), {self.skipped} unchanged, "
                f"{len(self.deleted)} deleted, {self.requests} requests)")


def default_manifest_dir() -> Path:
    """Where sync manifests are kept: ``$XDG_CACHE_HOME/sm-magics/sync`` (``~/.cache``)."""
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "sm-magics" / "sync"


def _local_files(root: Path) -> dict[str, Path]:
    if root.is_file():
        return {root.name: root}
    found: dict[str, Path] = {}
    visited: set[str] = set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        visited.add(os.path.realpath(folder))
        # Symbolic links are followed, but a link back to a visited folder is not.
        dirs[:] = sorted(d for d in dirs if d not in IGNORED_DIRS
                         and os.path.realpath(os.path.join(folder, d)) not in visited)
        for name in files:
            path = Path(folder, name)
            if path.is_file():
                found[path.relative_to(root).as_posix()] = path
    return found


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _remote_objects(s3, bucket: str, prefix: str, owner: str) -> Iterator[dict]:
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix, ExpectedBucketOwner=owner)
    for page in pages:
        yield from page.get("Contents", [])


class _Manifest:
    """The local record of one (endpoint, bucket, prefix, local directory) sync."""

    def __init__(self, folder: Path, identity: str) -> None:
        name = hashlib.sha256(identity.encode("utf-8")).hexdigest()[:32]
        self.path = folder / f"{name}.json"
        try:
            self.files: dict[str, dict] = json.loads(self.path.read_text())["files"]
        except (OSError, ValueError, KeyError, TypeError):
            self.files = {}

    def save(self, identity: str, files: dict[str, dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(f".{os.getpid()}.partial")
        partial.write_text(json.dumps({"sync": identity, "files": files}, sort_keys=True))
        partial.replace(self.path)


def sync_dir(
    aws,
    local_path: str | os.PathLike,
    s3_uri: str,
    progress: Callable[[int, int], None] | None = None,
    *,
    manifest_dir: Path | None = None,
    workers: int = 8,
) -> SyncResult:
    """Make ``s3_uri`` (a prefix ending in ``/``) hold exactly the files of ``local_path``.

    A file is uploaded only when no object with its SHA-256 is at its key;
    objects under the prefix with no local file are deleted, so the channel
    is what the directory is; keys that S3 refuses to delete are named in a
    :class:`RemoteFailure` once everything else is done. Uploads run on ``workers`` threads;
    ``progress(bytes_done, bytes_total)`` is called as bytes go out. Files in
    ``.git``, ``__pycache__`` and ``.ipynb_checkpoints`` are left out. The
    default bucket is created first when the URI is in it (:func:`ensure_bucket`).

    >>> sync_dir(aws, "data/", input_uri(aws, "fraud", "train")).uploaded
    ['a.csv', 'b.csv']
    """
    root = Path(local_path).expanduser()
    if not root.exists():
        raise usage_error(f"--input: the local path {root} does not exist.")
    bucket, prefix = parse_s3_uri(s3_uri)
    prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
    encryption = upload_encryption(aws) if bucket == aws.bucket else {}
    owner = aws.account
    s3 = aws.client("s3")
    counter = _RequestCounter()
    s3.meta.events.register("before-send.s3", counter)

    identity = f"{aws.settings.endpoint_url or 'aws'} s3://{bucket}/{prefix} {root.resolve()}"
    manifest = _Manifest(manifest_dir or default_manifest_dir(), identity)
    local = _local_files(root)
    state: dict[str, dict] = {}
    for rel, path in local.items():
        stat = path.stat()
        known = manifest.files.get(rel, {})
        unchanged = known.get("size") == stat.st_size and known.get("mtime_ns") == stat.st_mtime_ns
        state[rel] = {
            "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
            "sha256": known["sha256"] if unchanged and "sha256" in known else _file_sha256(path),
            "etag": known.get("etag"), "uploaded_sha256": known.get("uploaded_sha256"),
        }

    remote = {obj["Key"]: obj for obj in _remote_objects(s3, bucket, prefix, owner)}
    result = SyncResult(uri=f"s3://{bucket}/{prefix}")
    to_upload = []
    for rel, entry in sorted(state.items()):
        obj = remote.get(prefix + rel)
        if obj is None:
            to_upload.append(rel)
            continue
        if obj["ETag"] == entry["etag"]:
            remote_sha256 = entry["uploaded_sha256"]  # the object this machine uploaded
        elif obj["Size"] == entry["size"]:
            remote_sha256 = _remote_sha256(s3, bucket, prefix + rel, owner)
        else:
            remote_sha256 = None
        if remote_sha256 == entry["sha256"]:
            entry["etag"], entry["uploaded_sha256"] = obj["ETag"], remote_sha256
            result.skipped += 1
        else:
            to_upload.append(rel)

    stale = sorted(key for key in remote if key[len(prefix):] not in state)
    refused: list[dict] = []
    try:
        _upload_all(s3, bucket, prefix, owner, local, state, to_upload, result, progress, workers,
                    encryption)
        for start in range(0, len(stale), 1000):
            batch = stale[start:start + 1000]
            answer = s3.delete_objects(Bucket=bucket, ExpectedBucketOwner=owner, Delete={
                "Objects": [{"Key": key} for key in batch], "Quiet": True})
            errors = answer.get("Errors", [])  # per key, in an answer that is a success
            refused += errors
            kept = {error["Key"] for error in errors}
            result.deleted += [key[len(prefix):] for key in batch if key not in kept]
    finally:
        manifest.save(identity, {rel: e for rel, e in state.items() if e["uploaded_sha256"]})
    result.requests = counter.count
    if refused:
        raise RemoteFailure(
            f"S3 did not delete {len(refused)} of {len(stale)} objects under "
            f"s3://{bucket}/{prefix} that {root} no longer has",
            reason="; ".join(f"{e['Key']}: {e.get('Code')} ({e.get('Message')})"
                             for e in refused),
            hint="Every other file is synced. A job would still read these objects: delete "
                 "them, or run the cell again.")
    return result


def _remote_sha256(s3, bucket: str, key: str, owner: str) -> str | None:
    head = s3.head_object(Bucket=bucket, Key=key, ExpectedBucketOwner=owner)
    return head.get("Metadata", {}).get("sha256")


class _RequestCounter:
    """Counts the HTTP requests a client sends (a botocore ``before-send`` handler)."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def __call__(self, **_: Any) -> None:
        with self._lock:
            self.count += 1


def _upload_all(s3, bucket, prefix, owner, local, state, names, result, progress, workers,
                encryption):
    total = sum(state[rel]["size"] for rel in names)
    lock = threading.Lock()
    sent = [0]

    def advance(amount: int) -> None:
        with lock:
            sent[0] += amount
            done = sent[0]
        if progress is not None:
            progress(done, total)

    def upload(rel: str) -> None:
        entry, key = state[rel], prefix + rel
        metadata = {"sha256": entry["sha256"]}
        if entry["size"] <= SINGLE_PUT_LIMIT:
            body = local[rel].read_bytes()
            if hashlib.sha256(body).hexdigest() != entry["sha256"]:
                raise RemoteFailure(f"{local[rel]} changed while it was being uploaded",
                                    hint="Run the sync again once the file is written.")
            answer = s3.put_object(
                Bucket=bucket, Key=key, Body=body, Metadata=metadata,
                ContentMD5=_b64(hashlib.md5(body).digest()),
                ChecksumSHA256=_b64(bytes.fromhex(entry["sha256"])), ExpectedBucketOwner=owner,
                **encryption)
            etag = answer["ETag"]
            advance(len(body))
        else:
            s3.upload_file(str(local[rel]), bucket, key, Callback=advance, ExtraArgs={
                "Metadata": metadata, "ChecksumAlgorithm": "SHA256",
                "ExpectedBucketOwner": owner, **encryption})
            etag = s3.head_object(Bucket=bucket, Key=key, ExpectedBucketOwner=owner)["ETag"]
        with lock:
            entry["etag"], entry["uploaded_sha256"] = etag, entry["sha256"]
            result.uploaded.append(rel)
            result.bytes_uploaded += entry["size"]

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        failures = []
        for rel, future in [(rel, pool.submit(upload, rel)) for rel in names]:
            try:
                future.result()
            except Exception as exc:  # botocore, OS and RemoteFailure errors alike
                failures.append((rel, exc))
    result.uploaded.sort()
    if failures:
        rel, exc = failures[0]
        raise RemoteFailure(
            f"Upload of {len(failures)} of {len(names)} files to s3://{bucket}/{prefix} failed",
            reason=f"{rel}: {exc}",
            hint="Files already uploaded are kept; run the same command again to finish.",
        )
