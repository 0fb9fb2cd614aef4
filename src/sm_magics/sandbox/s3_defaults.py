"""New S3 buckets in the sandbox get what new buckets get on AWS.

Since January 2023, S3 encrypts every new object with SSE-S3 unless told
otherwise, and a bucket's default encryption is SSE-S3 from its creation
("Amazon S3 now automatically encrypts all new objects", AWS What's New,
2023-01-05; S3 User Guide, "Setting default server-side encryption behavior").
Since April 2023, new buckets have S3 Block Public Access turned on (AWS News
Blog, "Heads-Up: Amazon S3 Security Changes Are Coming in April of 2023").
moto creates buckets with neither, so the tool's code would be tried against a
bucket laxer than any new AWS bucket. :class:`NewBucketDefaults` wraps the
gateway's S3 handling: after a successful ``CreateBucket`` it gives the new
bucket the default encryption and the public access block AWS gives it, and
an object written with no encryption header is stored as SSE-S3.

Example::

    >>> app = NewBucketDefaults(moto_app, endpoint="http://127.0.0.1:4599")
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from .account import SANDBOX_REGION, SERVICE_KEY

__all__ = ["NewBucketDefaults"]

WSGIApp = Callable[[dict[str, Any], Callable], Iterable[bytes]]
_BUCKET_PATH = re.compile(r"^/([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])/?$")
_S3_SIGNED = re.compile(r"Credential=[^/]+/\d{8}/[^/]+/s3/aws4_request")
BLOCK_ALL = {"BlockPublicAcls": True, "IgnorePublicAcls": True,
             "BlockPublicPolicy": True, "RestrictPublicBuckets": True}
SSE_S3 = {"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"},
                     "BucketKeyEnabled": False}]}


class NewBucketDefaults:
    """A WSGI wrapper giving new buckets AWS's defaults (see the module's docstring)."""

    def __init__(self, app: WSGIApp, endpoint: str) -> None:
        self.app = app
        self.endpoint = endpoint
        self._client = None

    @property
    def client(self):
        """An S3 client of the sandbox itself, as S3's own defaults are applied by S3."""
        if self._client is None:
            import boto3

            self._client = boto3.session.Session(
                aws_access_key_id=SERVICE_KEY, aws_secret_access_key="sandbox",
                region_name=SANDBOX_REGION).client("s3", endpoint_url=self.endpoint)
        return self._client

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        signed = environ.get("HTTP_AUTHORIZATION", "")
        if not _S3_SIGNED.search(signed):
            return self.app(environ, start_response)
        method, path = environ.get("REQUEST_METHOD"), environ.get("PATH_INFO", "")
        query = environ.get("QUERY_STRING", "")
        writes_object = "/" in path.strip("/") and (
            (method == "PUT" and not query and "HTTP_X_AMZ_COPY_SOURCE" not in environ)
            or (method == "POST" and query.startswith("uploads")))  # CreateMultipartUpload
        if writes_object and "HTTP_X_AMZ_SERVER_SIDE_ENCRYPTION" not in environ:
            # No encryption asked: S3 applies the bucket's default encryption.
            environ.update(self._default_encryption(path.strip("/").split("/", 1)[0]))
            return self.app(environ, start_response)
        bucket = _BUCKET_PATH.match(path)
        if method != "PUT" or bucket is None or environ.get("QUERY_STRING"):
            return self.app(environ, start_response)
        status: list[str] = []

        def recording(code: str, headers, exc_info=None):
            status.append(code)
            return start_response(code, headers, exc_info) if exc_info else \
                start_response(code, headers)

        answer = self.app(environ, recording)
        if status and status[0].startswith("200"):
            name = bucket.group(1)
            self.client.put_public_access_block(Bucket=name,
                                                PublicAccessBlockConfiguration=BLOCK_ALL)
            self.client.put_bucket_encryption(Bucket=name,
                                              ServerSideEncryptionConfiguration=SSE_S3)
        return answer

    def _default_encryption(self, bucket: str) -> dict[str, str]:
        """The request headers that stand for ``bucket``'s default encryption."""
        from botocore.exceptions import ClientError

        try:
            rules = self.client.get_bucket_encryption(Bucket=bucket)[
                "ServerSideEncryptionConfiguration"]["Rules"]
        except ClientError:  # no such bucket (moto answers that), or no configuration
            rules = SSE_S3["Rules"]
        default = (rules[0] if rules else {}).get("ApplyServerSideEncryptionByDefault", {})
        headers = {"HTTP_X_AMZ_SERVER_SIDE_ENCRYPTION": default.get("SSEAlgorithm", "AES256")}
        if default.get("KMSMasterKeyID"):
            headers["HTTP_X_AMZ_SERVER_SIDE_ENCRYPTION_AWS_KMS_KEY_ID"] = default["KMSMasterKeyID"]
        return headers
