"""The one reading of ``s3://bucket/key`` URIs, for every module that needs it.

Also S3's own rules for the two parts: :func:`bucket_problem` and
:func:`key_problem` name the rule a bucket name or an object key breaks.

Example::

    >>> split_s3_uri("s3://my-bucket/data/train/")
    ('my-bucket', 'data/train/')
    >>> s3_uri("my-bucket", "sm-magics/fraud/output")
    's3://my-bucket/sm-magics/fraud/output'
    >>> bucket_problem("My_Bucket")
    'a bucket name has only lowercase letters, digits, periods and hyphens'
"""

from __future__ import annotations

import re

__all__ = ["bucket_problem", "key_problem", "s3_uri", "split_s3_uri"]

SCHEME = "s3://"

# S3 User Guide, "General purpose bucket naming rules"
# (https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html).
_BUCKET_CHARACTERS = re.compile(r"[a-z0-9.-]*")
_IP_ADDRESS = re.compile(r"\d+\.\d+\.\d+\.\d+")
# "sthree-" also covers "sthree-configurator", which the page names too.
_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")
# S3 User Guide, "Naming Amazon S3 objects"
# (https://docs.aws.amazon.com/AmazonS3/latest/userguide/object-keys.html).
MAX_KEY_BYTES = 1024


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


def bucket_problem(name: str) -> str | None:
    """The S3 naming rule ``name`` breaks, as a short phrase; ``None`` for a valid name.

    These are the rules of general purpose buckets: 3 to 63 lowercase letters,
    digits, periods and hyphens, a letter or digit at each end, no two periods
    side by side, not an IP address, and none of the prefixes and suffixes S3
    keeps for itself.

    >>> bucket_problem("my.-bucket") is None
    True
    >>> bucket_problem("a..b")
    'a bucket name cannot contain two adjacent periods'
    >>> bucket_problem("192.168.5.4")
    'a bucket name cannot be formatted as an IP address'
    >>> bucket_problem("amzn-s3-demo-bucket")
    "the prefix 'amzn-s3-demo-' is reserved by Amazon S3"
    """
    if not 3 <= len(name) <= 63:
        return "a bucket name has 3 to 63 characters"
    if not _BUCKET_CHARACTERS.fullmatch(name):
        return "a bucket name has only lowercase letters, digits, periods and hyphens"
    if not (name[0].isalnum() and name[-1].isalnum()):
        return "a bucket name begins and ends with a letter or digit"
    if ".." in name:
        return "a bucket name cannot contain two adjacent periods"
    if _IP_ADDRESS.fullmatch(name):
        return "a bucket name cannot be formatted as an IP address"
    for prefix in _RESERVED_PREFIXES:
        if name.startswith(prefix):
            return f"the prefix '{prefix}' is reserved by Amazon S3"
    for suffix in _RESERVED_SUFFIXES:
        if name.endswith(suffix):
            return f"the suffix '{suffix}' is reserved by Amazon S3"
    return None


def key_problem(key: str) -> str | None:
    """Why ``key`` cannot be an S3 object key (longer than 1024 bytes of UTF-8), or ``None``.

    The limit counts bytes, not characters: "é" takes two.

    >>> key_problem("é" * 512) is None
    True
    >>> key_problem("é" * 513)
    'an object key has at most 1024 bytes of UTF-8 (this one has 1026)'
    """
    size = len(key.encode("utf-8", "surrogatepass"))
    if size > MAX_KEY_BYTES:
        return f"an object key has at most {MAX_KEY_BYTES} bytes of UTF-8 (this one has {size})"
    return None
