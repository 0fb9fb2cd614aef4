"""The one reading of ``s3://bucket/key`` URIs, for every module that needs it.

Example::

    >>> split_s3_uri("s3://my-bucket/data/train/")
    ('my-bucket', 'data/train/')
    >>> s3_uri("my-bucket", "sm-magics/fraud/output")
    's3://my-bucket/sm-magics/fraud/output'
"""

from __future__ import annotations

__all__ = ["s3_uri", "split_s3_uri"]

SCHEME = "s3://"


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``(bucket, key)`` of ``s3://bucket/key``; the key may be empty or end with ``/``.

    Raises ``ValueError`` when ``uri`` is not an S3 URI with a bucket.

    >>> split_s3_uri("s3://bucket")
    ('bucket', '')
    """
    if not isinstance(uri, str) or not uri.startswith(SCHEME):
        raise ValueError(f"{uri!r} is not an s3:// URI")
    bucket, _, key = uri[len(SCHEME):].partition("/")
    if not bucket:
        raise ValueError(f"{uri!r} names no bucket")
    return bucket, key


def s3_uri(bucket: str, key: str = "") -> str:
    """The URI of ``key`` in ``bucket`` (no doubled slashes between the two).

    >>> s3_uri("bucket", "/a/b")
    's3://bucket/a/b'
    """
    key = key.lstrip("/")
    return f"{SCHEME}{bucket}/{key}" if key else f"{SCHEME}{bucket}"
