"""What IAM authorizes for each request the notebook sends, recorded and (optionally) enforced.

Every request the sandbox answers for the notebook's identity (access key
:data:`~.account.NOTEBOOK_KEY`, see :mod:`.account`) is turned into the IAM
actions AWS authorizes for it, each on the resource ARN AWS checks, as the
Service Authorization Reference lists them:

* ECR: https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonelasticcontainerregistry.html
  (``ecr:<Operation>`` on ``repository/<name>``; ``GetAuthorizationToken`` on
  ``*``; the registry's v2 API as the image actions, see :func:`registry_authorizations`);
* SageMaker: https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonsagemaker.html
  (``training-job/<name>``, lowercased as SageMaker's ARNs are; list operations
  on ``*``; ``CreateTrainingJob`` also needs ``iam:PassRole`` on its role, with
  ``iam:PassedToService`` = ``sagemaker.amazonaws.com``, and ``sagemaker:AddTags``
  when it carries tags);
* CloudWatch Logs: https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazoncloudwatchlogs.html
  (stream operations on ``log-group:<group>:log-stream:<stream>``, group
  operations on ``log-group:<group>:log-stream:``, the ARN AWS names in their
  AccessDenied answers, which is why policies write ``log-group:<group>:*``);
* S3: https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazons3.html
  (the REST request's method, path and sub-resource: ``HEAD`` of a bucket and
  ``ListObjectsV2`` are ``s3:ListBucket``, ``HEAD`` of an object is
  ``s3:GetObject``, ``DeleteObjects`` is ``s3:DeleteObject`` per key; an
  upload with SSE-KMS also needs ``kms:GenerateDataKey`` on the key, see
  https://docs.aws.amazon.com/AmazonS3/latest/userguide/UsingKMSEncryption.html);
* STS and IAM (query protocol, ``Action=``): ``sts:GetCallerIdentity`` needs
  no permission ("No permissions are required to perform this operation",
  STS API Reference).

Each authorization is appended as one JSON line to
``<sandbox home>/run/authorizations.jsonl`` (:func:`record_path`) by the
gateway and the registry proxy alike: ``action``, ``resource``, ``allowed``,
``enforced`` (whether a policy decided), ``reason``, ``request``, ``when``.
With a policy (:class:`~.policy.Policy`), what it does not allow is refused
in AWS's words: ``AccessDeniedException`` for the JSON APIs, ``AccessDenied``
(403) for S3 and the query APIs, ``DENIED`` (403) from the registry.

Example::

    >>> authorizer = Authorizer(record_path(home), Policy.load("AmazonSageMakerFullAccess"))
    >>> gateway = Gateway(moto_app, handlers, authorize=authorizer.gateway_check)
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote
from xml.etree import ElementTree
from xml.sax.saxutils import escape

from .account import SANDBOX_ACCOUNT, SANDBOX_REGION, SERVICE_KEY, notebook_principal
from .policy import Decision, Policy
from .protocol import read_body
from .s3_requests import bucket_and_key

__all__ = ["RECORD_NAME", "Authorization", "Authorizer", "Denial", "Mount", "api_authorizations",
           "is_push", "read_record", "record_path", "registry_authorizations", "registry_mount",
           "registry_refusal", "signing_service"]

RECORD_NAME = "authorizations.jsonl"
_REGION, _ACCOUNT = SANDBOX_REGION, SANDBOX_ACCOUNT
_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/")
_SIGNING_NAME = re.compile(r"Credential=[^/]+/\d{8}/[^/]+/([^/]+)/aws4_request")
# X-Amz-Target prefixes (and rpc-v2-cbor service names) -> IAM service prefixes.
_TARGET_SERVICES = {
    "AmazonEC2ContainerRegistry_V20150921": "ecr",
    "SageMaker": "sagemaker",
    "Logs_20140328": "logs",
    "GraniteServiceVersion20100801": "cloudwatch",
}
_SIGNING_SERVICES = {"monitoring": "cloudwatch"}  # signing name -> IAM prefix, where they differ
_LOG_STREAM_OPERATIONS = {"GetLogEvents", "PutLogEvents", "CreateLogStream", "DeleteLogStream"}


@dataclass(frozen=True)
class Authorization:
    """One IAM action on one resource, with the request context a condition may read.

    >>> Authorization("iam:PassRole", "arn:aws:iam::123456789012:role/SageMakerExecutionRole",
    ...               {"iam:PassedToService": "sagemaker.amazonaws.com"}).action
    'iam:PassRole'
    """

    action: str
    resource: str
    context: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class Denial:
    """An authorization the policy refuses, and why."""

    authorization: Authorization
    decision: Decision

    @property
    def message(self) -> str:
        """AWS's AccessDenied message for it."""
        return (f"User: {notebook_principal()} is not authorized to perform: "
                f"{self.authorization.action} on resource: {self.authorization.resource} "
                f"{self.decision.reason}")


def record_path(home: Path) -> Path:
    """Where the sandbox under ``home`` records authorizations while it runs."""
    return Path(home) / "run" / RECORD_NAME


def read_record(path: Path) -> list[dict[str, Any]]:
    """The authorizations recorded in ``path``, oldest first (none when it does not exist)."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        try:
            found.append(json.loads(line))
        except ValueError:  # a line being written while this reads
            continue
    return found


class Authorizer:
    """Decides and records the authorizations of the notebook's requests.

    Without a ``policy`` everything is allowed and still recorded (``enforced``
    false); with one, the first authorization it does not allow refuses the
    request (all of a request's authorizations are recorded).
    """

    def __init__(self, record: Path | None, policy: Policy | None = None) -> None:
        self.record = record
        self.policy = policy
        self._lock = threading.Lock()

    def check(self, needed: Iterable[Authorization], request: str) -> Denial | None:
        """Record ``needed`` for ``request``; the first one the policy refuses, if any."""
        refused = None
        lines = []
        for item in needed:
            decision = (self.policy.evaluate(item.action, item.resource, item.context)
                        if self.policy is not None else None)
            allowed = decision is None or decision.allowed
            entry: dict[str, Any] = {
                "action": item.action, "resource": item.resource, "allowed": allowed,
                "enforced": decision is not None, "request": request, "when": time.time()}
            if item.context:
                entry["context"] = dict(item.context)
            if decision is not None and not allowed:
                entry["reason"] = decision.reason
                refused = refused or Denial(item, decision)
            lines.append(json.dumps(entry, sort_keys=True) + "\n")
        self._write("".join(lines))
        return refused

    def _write(self, text: str) -> None:
        if not text or self.record is None:
            return
        with self._lock:
            try:  # one append per request: lines of the gateway and the proxy never mix
                fd = os.open(self.record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            except OSError:  # the sandbox is being stopped and its run folder removed
                return
            try:
                os.write(fd, text.encode())
            finally:
                os.close(fd)

    # ------------------------------------------------------------ the gateway (WSGI)

    def gateway_check(self, environ: dict[str, Any],
                      start_response: Callable) -> Iterable[bytes] | None:
        """The gateway's hook: ``None`` to let the request through, else the refusal sent."""
        key = access_key(environ)
        if key is None or key == SERVICE_KEY:
            return None
        body = read_body(environ) if _body_needed(environ) else b""
        needed, request = api_authorizations(environ, body)
        denial = self.check(needed, request)
        if denial is None:
            return None
        return _api_refusal(environ, denial, start_response)


def access_key(environ: Mapping[str, Any]) -> str | None:
    """The access key id a request is signed with (SigV4 header or presigned URL), if any."""
    match = _CREDENTIAL.search(_signature(environ))
    return match.group(1) if match else None


def signing_service(environ: Mapping[str, Any]) -> str:
    """The SigV4 signing name of a request (``s3``, ``sagemaker``, ``monitoring``...), or "".

    >>> signing_service({"QUERY_STRING": "X-Amz-Credential=k%2F20261201%2Fus-east-1%2Fs3%2F"
    ...                                  "aws4_request"})
    's3'
    """
    match = _SIGNING_NAME.search(_signature(environ))
    return match.group(1) if match else ""


def _signature(environ: Mapping[str, Any]) -> str:
    """The SigV4 credential scope's text: the Authorization header, or a presigned URL's query."""
    return environ.get("HTTP_AUTHORIZATION", "") or unquote(
        environ.get("QUERY_STRING", "")).replace("X-Amz-Credential=", "Credential=")


def _is_form(environ: Mapping[str, Any]) -> bool:
    return environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded")


def _body_needed(environ: Mapping[str, Any]) -> bool:
    """Whether the resources are in the body: JSON and query APIs, and S3's DeleteObjects."""
    if environ.get("HTTP_X_AMZ_TARGET") or _is_form(environ):
        return True
    return (signing_service(environ) == "s3" and environ.get("REQUEST_METHOD") == "POST"
            and "delete" in parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True))


# ---------------------------------------------------------------- AWS API requests


def api_authorizations(environ: Mapping[str, Any],
                       body: bytes) -> tuple[list[Authorization], str]:
    """The authorizations an AWS API request needs, and a short name of the request.

    >>> api_authorizations({"HTTP_X_AMZ_TARGET": "AmazonEC2ContainerRegistry_V20150921."
    ...                     "GetAuthorizationToken"}, b"{}")[0]
    [Authorization(action='ecr:GetAuthorizationToken', resource='*', context={})]
    """
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    cbor = re.match(r"^/service/([^/]+)/operation/([^/]+)$", environ.get("PATH_INFO", ""))
    if target or cbor:
        prefix, operation = target.split(".", 1) if target else cbor.groups()
        service = _TARGET_SERVICES.get(prefix, signing_service(environ) or prefix.lower())
        try:
            request = json.loads(body or b"{}") if target else {}
        except ValueError:
            request = {}
        request = request if isinstance(request, dict) else {}
        derive = {"ecr": _ecr, "sagemaker": _sagemaker, "logs": _logs}.get(service)
        needed = (derive(operation, request) if derive
                  else [Authorization(f"{service}:{operation}", "*")])
        return needed, f"{service}:{operation}"
    signing = signing_service(environ)
    if signing == "s3":
        return _s3(environ, body), f"{environ.get('REQUEST_METHOD')} {_path(environ)}"
    form = parse_qs(body.decode("utf-8", "replace") if _is_form(environ)
                    else environ.get("QUERY_STRING", ""))
    if "Action" in form:
        operation = form["Action"][0]
        service = _SIGNING_SERVICES.get(signing, signing)
        return _query(service, operation, {k: v[0] for k, v in form.items()}), \
            f"{service}:{operation}"
    return [], f"{environ.get('REQUEST_METHOD')} {_path(environ)}"


def _ecr_repository(name: str, account: str | None = None) -> str:
    return f"arn:aws:ecr:{_REGION}:{account or _ACCOUNT}:repository/{name}"


def _ecr(operation: str, request: dict) -> list[Authorization]:
    action = f"ecr:{operation}"
    account = request.get("registryId")
    if operation == "GetAuthorizationToken":
        return [Authorization(action, "*")]
    if request.get("resourceArn"):  # TagResource, UntagResource, ListTagsForResource
        return [Authorization(action, request["resourceArn"])]
    if request.get("repositoryName"):
        repository = _ecr_repository(request["repositoryName"], account)
        needed = [Authorization(action, repository)]
        if operation == "CreateRepository" and request.get("tags"):
            # Tagging on create is authorized as ecr:TagResource as well.
            needed.append(Authorization("ecr:TagResource", repository))
        return needed
    names = request.get("repositoryNames") or []
    if names:
        return [Authorization(action, _ecr_repository(name, account)) for name in names]
    return [Authorization(action, "*")]


def _training_job(name: str) -> str:
    return f"arn:aws:sagemaker:{_REGION}:{_ACCOUNT}:training-job/{name.lower()}"


def _sagemaker(operation: str, request: dict) -> list[Authorization]:
    action = f"sagemaker:{operation}"
    if request.get("ResourceArn"):  # AddTags, ListTags, DeleteTags
        return [Authorization(action, request["ResourceArn"])]
    if not request.get("TrainingJobName"):
        return [Authorization(action, "*")]  # ListTrainingJobs and the other list operations
    job = _training_job(request["TrainingJobName"])
    needed = [Authorization(action, job)]
    if operation == "CreateTrainingJob":
        if request.get("RoleArn"):
            needed.append(Authorization("iam:PassRole", request["RoleArn"],
                                        {"iam:PassedToService": "sagemaker.amazonaws.com"}))
        if request.get("Tags"):
            needed.append(Authorization("sagemaker:AddTags", job))
    return needed


def _logs(operation: str, request: dict) -> list[Authorization]:
    action = f"logs:{operation}"
    group = request.get("logGroupName") or request.get("logGroupIdentifier") or ""
    if group.startswith("arn:"):
        group = group.split(":log-group:", 1)[-1].removesuffix(":*")
    if not group:
        return [Authorization(action, "*")]
    base = f"arn:aws:logs:{_REGION}:{_ACCOUNT}:log-group:{group}:log-stream:"
    stream = request.get("logStreamName") if operation in _LOG_STREAM_OPERATIONS else None
    return [Authorization(action, base + (stream or ""))]


def _query(service: str, operation: str, form: dict[str, str]) -> list[Authorization]:
    if service == "sts" and operation == "GetCallerIdentity":
        return []
    if form.get("RoleArn"):
        return [Authorization(f"{service}:{operation}", form["RoleArn"])]
    if service == "iam" and form.get("RoleName"):
        return [Authorization(f"iam:{operation}",
                              f"arn:aws:iam::{_ACCOUNT}:role/{form['RoleName']}")]
    return [Authorization(f"{service}:{operation}", "*")]


# ---------------------------------------------------------------- S3's REST API

_BUCKET_READS = {
    "location": "GetBucketLocation", "encryption": "GetEncryptionConfiguration",
    "publicAccessBlock": "GetBucketPublicAccessBlock", "policy": "GetBucketPolicy",
    "policyStatus": "GetBucketPolicyStatus", "acl": "GetBucketAcl", "cors": "GetBucketCORS",
    "tagging": "GetBucketTagging", "versioning": "GetBucketVersioning",
    "lifecycle": "GetLifecycleConfiguration", "uploads": "ListBucketMultipartUploads",
    "versions": "ListBucketVersions", "ownershipControls": "GetBucketOwnershipControls",
    "object-lock": "GetBucketObjectLockConfiguration", "notification": "GetBucketNotification",
    "website": "GetBucketWebsite", "logging": "GetBucketLogging",
    "replication": "GetReplicationConfiguration", "accelerate": "GetAccelerateConfiguration",
    "requestPayment": "GetBucketRequestPayment",
}
_BUCKET_WRITES = {
    "encryption": "PutEncryptionConfiguration", "publicAccessBlock": "PutBucketPublicAccessBlock",
    "policy": "PutBucketPolicy", "acl": "PutBucketAcl", "cors": "PutBucketCORS",
    "tagging": "PutBucketTagging", "versioning": "PutBucketVersioning",
    "lifecycle": "PutLifecycleConfiguration", "ownershipControls": "PutBucketOwnershipControls",
    "object-lock": "PutBucketObjectLockConfiguration", "notification": "PutBucketNotification",
    "website": "PutBucketWebsite", "logging": "PutBucketLogging",
    "replication": "PutReplicationConfiguration", "accelerate": "PutAccelerateConfiguration",
    "requestPayment": "PutBucketRequestPayment",
}
# Deleting a bucket's configuration is authorized as writing it.
_BUCKET_DELETES = {**{k: v for k, v in _BUCKET_WRITES.items()
                      if k in ("encryption", "publicAccessBlock", "cors", "tagging", "lifecycle",
                               "ownershipControls", "replication")},
                   "policy": "DeleteBucketPolicy", "website": "DeleteBucketWebsite"}
_OBJECT_READS = {"acl": "GetObjectAcl", "tagging": "GetObjectTagging",
                 "uploadId": "ListMultipartUploadParts", "attributes": "GetObjectAttributes",
                 "retention": "GetObjectRetention", "legal-hold": "GetObjectLegalHold"}
_OBJECT_WRITES = {"acl": "PutObjectAcl", "tagging": "PutObjectTagging",
                  "retention": "PutObjectRetention", "legal-hold": "PutObjectLegalHold"}


def _path(environ: Mapping[str, Any]) -> str:
    # WSGI gives the decoded path as latin-1 text; S3 keys are UTF-8.
    return environ.get("PATH_INFO", "").encode("latin-1").decode("utf-8", "replace")


def _bucket_and_key(environ: Mapping[str, Any]) -> tuple[str, str]:
    return bucket_and_key(dict(environ), strict=False)


def _first(sub: Mapping[str, Any], table: Mapping[str, str], default: str) -> str:
    return next((table[name] for name in sub if name in table), default)


def _kms_key(key_id: str | None) -> str:
    if key_id and key_id.startswith("arn:"):
        return key_id
    if key_id and key_id.startswith("alias/"):
        return f"arn:aws:kms:{_REGION}:{_ACCOUNT}:{key_id}"
    if key_id:
        return f"arn:aws:kms:{_REGION}:{_ACCOUNT}:key/{key_id}"
    return f"arn:aws:kms:{_REGION}:{_ACCOUNT}:alias/aws/s3"  # the AWS managed key of S3


def _s3(environ: Mapping[str, Any], body: bytes) -> list[Authorization]:
    method = environ.get("REQUEST_METHOD", "GET")
    sub = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    bucket, key = _bucket_and_key(environ)
    if not bucket:
        return [Authorization("s3:ListAllMyBuckets", "*")]
    bucket_arn = f"arn:aws:s3:::{bucket}"
    if not key:
        if method == "POST" and "delete" in sub:
            return [Authorization("s3:DeleteObject", f"{bucket_arn}/{k}")
                    for k in _deleted_keys(body)]
        action = {"GET": _first(sub, _BUCKET_READS, "ListBucket"), "HEAD": "ListBucket",
                  "PUT": _first(sub, _BUCKET_WRITES, "CreateBucket"),
                  "DELETE": _first(sub, _BUCKET_DELETES, "DeleteBucket")}.get(method)
        return [Authorization(f"s3:{action}", bucket_arn)] if action else []
    object_arn = f"{bucket_arn}/{key}"
    versioned = "versionId" in sub
    if method in ("GET", "HEAD"):
        plain = "GetObjectVersion" if versioned else "GetObject"
        action = _first(sub, _OBJECT_READS, plain) if method == "GET" else plain
        return [Authorization(f"s3:{action}", object_arn)]
    if method == "DELETE":
        action = ("AbortMultipartUpload" if "uploadId" in sub else
                  "DeleteObjectTagging" if "tagging" in sub else
                  "DeleteObjectVersion" if versioned else "DeleteObject")
        return [Authorization(f"s3:{action}", object_arn)]
    if method == "POST" and not ({"uploads", "uploadId"} & set(sub)):
        action = "RestoreObject" if "restore" in sub else "GetObject"  # restore, select
        return [Authorization(f"s3:{action}", object_arn)]
    if method == "PUT" and any(name in sub for name in _OBJECT_WRITES):
        return [Authorization(f"s3:{_first(sub, _OBJECT_WRITES, '')}", object_arn)]
    # PutObject, UploadPart, CopyObject, CreateMultipartUpload, CompleteMultipartUpload
    needed = [Authorization("s3:PutObject", object_arn)]
    source = environ.get("HTTP_X_AMZ_COPY_SOURCE")
    if source:
        source = unquote(source).lstrip("/").split("?versionId=")[0]
        needed.append(Authorization("s3:GetObject", f"arn:aws:s3:::{source}"))
    if environ.get("HTTP_X_AMZ_TAGGING"):
        needed.append(Authorization("s3:PutObjectTagging", object_arn))
    if environ.get("HTTP_X_AMZ_ACL") or any(k.startswith("HTTP_X_AMZ_GRANT_") for k in environ):
        needed.append(Authorization("s3:PutObjectAcl", object_arn))
    if environ.get("HTTP_X_AMZ_SERVER_SIDE_ENCRYPTION", "").startswith("aws:kms"):
        kms_key = _kms_key(environ.get("HTTP_X_AMZ_SERVER_SIDE_ENCRYPTION_AWS_KMS_KEY_ID"))
        needed.append(Authorization("kms:GenerateDataKey", kms_key))
        if "uploads" in sub:  # a multipart upload reads the data key back for each part
            needed.append(Authorization("kms:Decrypt", kms_key))
    return needed


def _deleted_keys(body: bytes) -> list[str]:
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        return []
    return [element.text or "" for element in root.iter()
            if element.tag.rsplit("}", 1)[-1] == "Key"]


# ---------------------------------------------------------------- refusals


def _api_refusal(environ: Mapping[str, Any], denial: Denial,
                 start_response: Callable) -> list[bytes]:
    request_id = str(uuid.uuid4())
    message = denial.message
    if environ.get("HTTP_X_AMZ_TARGET"):
        body = json.dumps({"__type": "AccessDeniedException", "message": message}).encode()
        extra = [("x-amzn-RequestId", request_id), ("x-amzn-ErrorType", "AccessDeniedException")]
        if environ["HTTP_X_AMZ_TARGET"].startswith("GraniteServiceVersion20100801."):
            extra.append(("x-amzn-query-error", "AccessDenied;Sender"))  # query-compatible
        return _send(start_response, "400 Bad Request", body, "application/x-amz-json-1.1",
                     extra)
    if environ.get("PATH_INFO", "").startswith("/service/"):  # smithy-rpc-v2-cbor
        from .wire import cbor_encode

        body = cbor_encode({"__type": "AccessDeniedException", "message": message})
        return _send(start_response, "400 Bad Request", body, "application/cbor",
                     [("smithy-protocol", "rpc-v2-cbor"), ("x-amzn-RequestId", request_id),
                      ("x-amzn-query-error", "AccessDenied;Sender")])
    if signing_service(environ) == "s3":
        body = (b"" if environ.get("REQUEST_METHOD") == "HEAD" else (
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code>"
            f"<Message>Access Denied</Message><RequestId>{request_id}</RequestId>"
            f"<HostId>{uuid.uuid4().hex}</HostId></Error>").encode())
        return _send(start_response, "403 Forbidden", body, "application/xml",
                     [("x-amz-request-id", request_id)])
    body = ("<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code>"
            f"<Message>{escape(message)}</Message></Error><RequestId>{request_id}</RequestId>"
            "</ErrorResponse>").encode()
    return _send(start_response, "403 Forbidden", body, "text/xml",
                 [("x-amzn-RequestId", request_id)])


def _send(start_response: Callable, status: str, body: bytes, content_type: str,
          extra: list[tuple[str, str]]) -> list[bytes]:
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body))),
                            *extra])
    return [body]


# ---------------------------------------------------------------- the registry's v2 API

_REGISTRY_PATH = re.compile(
    r"^/v2/(?P<name>.+?)/(?:(?P<uploads>blobs/uploads)(?:/(?P<upload>[^/]*))?"
    r"|blobs/(?P<blob>[^/]+)|manifests/(?P<reference>[^/]+)|(?P<tags>tags/list))/?$")
# What ECR authorizes for each request of the registry API, as IAM names it
# ("Amazon ECR Docker registry API permissions": pushing needs
# BatchCheckLayerAvailability, InitiateLayerUpload, UploadLayerPart,
# CompleteLayerUpload and PutImage; pulling BatchGetImage and GetDownloadUrlForLayer).
_REGISTRY_ACTIONS = {
    ("uploads", "POST"): "InitiateLayerUpload", ("upload", "PATCH"): "UploadLayerPart",
    ("upload", "PUT"): "CompleteLayerUpload", ("upload", "GET"): "UploadLayerPart",
    ("upload", "DELETE"): "UploadLayerPart",
    ("blob", "HEAD"): "BatchCheckLayerAvailability", ("blob", "GET"): "GetDownloadUrlForLayer",
    ("reference", "GET"): "BatchGetImage", ("reference", "HEAD"): "BatchGetImage",
    ("reference", "PUT"): "PutImage", ("reference", "DELETE"): "BatchDeleteImage",
    ("tags", "GET"): "ListImages",
}
_PUSH_ACTIONS = frozenset({"ecr:InitiateLayerUpload", "ecr:UploadLayerPart",
                           "ecr:CompleteLayerUpload", "ecr:BatchCheckLayerAvailability",
                           "ecr:PutImage"})


@dataclass(frozen=True)
class Mount:
    """A cross-repository blob mount: ``digest`` of ``source`` linked into ``target``."""

    target: str
    digest: str
    source: str


def registry_mount(method: str, path: str) -> Mount | None:
    """The cross-repository mount a request of the registry's v2 API asks for, if any.

    That is ``POST /v2/<target>/blobs/uploads/?mount=<digest>&from=<source>``, with
    both parameters: a registry attempts a mount only when the POST carries them
    ("Amazon ECR attempts mounting only when these parameters are present in the
    client's POST request", "Blob mounting in Amazon ECR",
    https://docs.aws.amazon.com/AmazonECR/latest/userguide/blob-mounting.html);
    without both, the POST starts an ordinary upload.

    >>> registry_mount("POST", "/v2/sagemaker-b/blobs/uploads/?mount=sha256%3Aab&from=base")
    Mount(target='sagemaker-b', digest='sha256:ab', source='base')
    """
    bare, _, query = path.partition("?")
    if method != "POST" or not query:
        return None
    match = _REGISTRY_PATH.match(unquote(bare))
    if not match or match.group("uploads") is None or match.group("upload"):
        return None
    params = parse_qs(query)
    digest, source = (params.get("mount") or [""])[0], (params.get("from") or [""])[0]
    return Mount(match.group("name"), digest, source) if digest and source else None


def registry_authorizations(method: str, path: str) -> list[Authorization]:
    """The ECR actions one request of the registry's v2 API needs (none for ``/v2/``).

    ``path`` is the request's, query included. A mount (:func:`registry_mount`)
    needs what starting an upload needs and ``ecr:GetDownloadUrlForLayer`` on the
    repository the blob is mounted from ("Users need ecr:GetDownloadUrlForLayer IAM
    permission on a repository to mount layers from the repository", "Blob mounting
    in Amazon ECR"). While ECR's blob mounting is disabled the registry proxy leaves
    a mount's parameters out, so that only the upload is authorized (:mod:`.registry_proxy`).

    >>> [a.action for a in registry_authorizations("PUT", "/v2/sagemaker-digits/manifests/3f")]
    ['ecr:PutImage']
    """
    mount = registry_mount(method, path)
    path = unquote(path.split("?", 1)[0])
    if path == "/v2/_catalog":
        return [Authorization("ecr:DescribeRepositories", "*")]
    match = _REGISTRY_PATH.match(path)
    if not match:
        return []
    kind = next(k for k in ("upload", "uploads", "blob", "reference", "tags")
                if match.group(k) is not None)
    if kind == "upload" and not match.group("upload"):
        kind = "uploads"
    action = _REGISTRY_ACTIONS.get((kind, method))
    if not action:
        return []
    needed = [Authorization(f"ecr:{action}", _ecr_repository(match.group("name")))]
    if mount is not None:
        needed.append(Authorization("ecr:GetDownloadUrlForLayer", _ecr_repository(mount.source)))
    return needed


def is_push(needed: Iterable[Authorization]) -> bool:
    """Whether these are the authorizations of a push, not of a pull or a delete.

    In the sandbox only the notebook pushes: a push is the notebook's even when
    it comes without the ECR login, which Docker sends only to a registry that
    asks for one. Other requests without the login are the sandbox's own: the
    job engine pulling as SageMaker does with the job's execution role, and the
    gateway reading or deleting images for ECR's API (whose requests are
    authorized where the notebook sends them, at the gateway).
    """
    return any(item.action in _PUSH_ACTIONS for item in needed)


def registry_refusal(denial: Denial) -> bytes:
    """The registry's 403 body: ``{"errors": [{"code": "DENIED", "message": ...}]}``."""
    return json.dumps({"errors": [{"code": "DENIED", "message": denial.message}]}).encode()
