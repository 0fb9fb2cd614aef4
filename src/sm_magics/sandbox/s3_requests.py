"""S3's REST requests checked as S3 checks them, before the sandbox's S3 answers them.

The sandbox's S3 (moto) takes requests that Amazon S3 refuses: a bucket
named ``My_Bucket``, a key of 2000 bytes, an eleventh tag on an object. Code
that works against the sandbox would then fail on AWS. This module reads an
S3 request as S3 does and refuses it with the error S3 answers, so the
refusal is seen in the sandbox first.

Reading a request has two steps:

1. :func:`s3_operation` finds which S3 operation a WSGI request is (``PUT
   /bucket/key`` with ``?partNumber=1&uploadId=…`` is ``UploadPart``) from
   botocore's model of S3, and rebuilds the operation's parameters as boto3
   names them (``{"Bucket": …, "Key": …, "PartNumber": 1, "UploadId": …}``):
   from the path, the query string, the headers and, for operations whose
   input is an XML document (``DeleteObjects``, ``PutObjectTagging``…), the
   body. An object's data (``PutObject``'s body) is never read: it can be
   gigabytes, and it is not checked.
2. :func:`check_s3_request` checks those parameters against the model (types,
   enums, required members) and against the documented limits of S3 that the
   model does not carry (bucket names, 1024-byte keys, 2 KB of metadata, 5 GiB
   in one PUT, part numbers 1 to 10000, 10 tags per object, 1000 keys per
   ``DeleteObjects``). It raises :class:`S3Refusal` with S3's error code and
   message; :func:`s3_error_answer` turns that into the XML answer S3 sends.

Example, as a WSGI wrapper in front of the S3 server::

    def checked(environ, start_response):
        try:
            check_s3_request(environ)
        except S3Refusal as refusal:
            return s3_error_answer(refusal, environ, start_response)
        return moto_app(environ, start_response)

and the operation of a request, and a request S3 refuses::

    >>> s3_operation({"REQUEST_METHOD": "GET", "PATH_INFO": "/my-bucket",
    ...               "QUERY_STRING": "list-type=2&max-keys=10"})
    ('ListObjectsV2', {'Bucket': 'my-bucket', 'MaxKeys': 10})
    >>> try:
    ...     check_s3_request({"REQUEST_METHOD": "PUT", "PATH_INFO": "/My_Bucket"})
    ... except S3Refusal as refusal:
    ...     print(refusal.status, refusal.code, refusal.message, refusal.details)
    400 InvalidBucketName The specified bucket is not valid. {'BucketName': 'My_Bucket'}
"""

from __future__ import annotations

import base64
import functools
import re
import secrets
import string
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

from .. import service_rules
from ..s3uri import MAX_KEY_BYTES, bucket_problem
from .protocol import read_body

__all__ = ["S3Refusal", "bucket_and_key", "check_s3_request", "s3_error_answer",
           "s3_operation"]

# The codes of the refusals below are from the list of S3's error codes ("Error
# responses", Amazon S3 API Reference,
# https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html); the limits from
# the pages cited where each is checked. Messages and extra elements are those of S3's
# own answers (KeyTooLongError carries Size and MaxSizeAllowed, for example).
_GIB = 1024**3
MAX_PUT_BYTES = 5 * _GIB  # one PutObject, and one part of a multipart upload
MAX_METADATA_BYTES = 2048
MAX_OBJECT_TAGS = 10
MAX_TAG_KEY = 128
MAX_TAG_VALUE = 256
MAX_PART_NUMBER = 10000
MAX_DELETE_KEYS = 1000
_MALFORMED_XML = ("The XML you provided was not well-formed or did not validate against our "
                  "published schema")
_PART_NUMBER = "Part number must be an integer between 1 and 10000, inclusive"

# A request signed for another service (``Credential=<key>/<date>/<region>/<service>/...``).
_SCOPE = re.compile(r"Credential=[^/,\s]+/\d{8}/[^/,\s]+/([^/,\s]+)/aws4_request")
# Virtual-hosted style: ``bucket.s3.<region>.amazonaws.com``, ``bucket.localhost``.
_VIRTUAL_HOST = re.compile(r"(?P<bucket>.+?)\.(?:s3[.-].+|localhost)", re.IGNORECASE)
_INTEGER = re.compile(r"[+-]?\d+")
_INTEGER_RANGES = {"integer": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
# Invalid dates in these headers are ignored, as HTTP says (RFC 9110, section 13.1.3), and
# S3 keeps any Expires it is given (which is why GetObject also returns ExpiresString).
_LENIENT_DATES = ("if-modified-since", "if-unmodified-since", "x-amz-copy-source-if-modified-since",
                  "x-amz-copy-source-if-unmodified-since", "expires")


class S3Refusal(Exception):
    """A request S3 refuses: HTTP ``status``, S3's error ``code`` and ``message``.

    ``details`` are the further elements S3 puts in its ``<Error>`` answer, in
    order (``{"BucketName": "My_Bucket"}``, ``{"ArgumentName": "partNumber", ...}``).

    >>> refusal = S3Refusal("KeyTooLongError", "Your key is too long", details={"Size": 1025})
    >>> refusal.status, refusal.details
    (400, {'Size': '1025'})
    """

    status: int
    code: str
    message: str
    details: dict[str, str]

    def __init__(self, code: str, message: str, status: int = 400,
                 details: dict[str, object] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = {name: str(value) for name, value in (details or {}).items()}


class _Unconvertible(ValueError):
    """A text that is not a value of its member's type (``max-keys=abc``)."""


# ---------------------------------------------------------------- the operations of S3


@dataclass(frozen=True)
class _Route:
    """How the requests of one operation look: method, path, query markers, located members."""

    name: str
    method: str
    segments: tuple[str, ...]  # ("{Bucket}", "{Key+}"), or literal segments
    markers: tuple[tuple[str, str], ...]  # ("uploads", ""), ("list-type", "2")
    required: tuple[tuple[str, str], ...]  # (location, wire name) of required members
    optional: tuple[tuple[str, str], ...]
    deprecated: bool
    express: bool  # answered by the control endpoint of directory buckets


def _model():
    return service_rules.service_model("s3")


@functools.cache
def _routes() -> tuple[_Route, ...]:
    model = _model()
    routes = []
    for name in model.operation_names:
        operation = model.operation_model(name)
        path, _, query = operation.http["requestUri"].partition("?")
        segments = tuple(part for part in path.split("/") if part)
        # x-id=<Operation> (in the requestUri of some botocore versions) is not required:
        # other clients do not send it. When sent, it names the operation (see _route).
        markers = tuple(pair for pair in parse_qsl(query, keep_blank_values=True)
                        if pair[0] != "x-id")
        shape = operation.input_shape
        required, optional = [], []
        for member_name, member in (shape.members.items() if shape else ()):
            location = member.serialization.get("location")
            if location not in ("uri", "querystring", "header"):
                continue
            wire = member.serialization.get("name", member_name)
            where = (location, wire.lower() if location == "header" else wire)
            (required if member_name in shape.required_members else optional).append(where)
        express = any(param.name == "UseS3ExpressControlEndpoint" and param.value
                      for param in operation.static_context_parameters)
        routes.append(_Route(name, operation.http["method"], segments, markers, tuple(required),
                             tuple(optional), bool(operation.deprecated), express))
    return tuple(routes)


def _labels(segments: tuple[str, ...], bucket: str, key: str) -> dict[str, str] | None:
    """The path labels of a request of ``segments``, or ``None`` when its path is not of them."""
    if not segments:
        return {} if not bucket and not key else None
    first = segments[0]
    if not first.startswith("{"):  # a literal path: /WriteGetObjectResponse
        return {} if (bucket, key) == (first, "") and len(segments) == 1 else None
    if not bucket:
        return None
    labels = {first.strip("{}+"): bucket}
    if len(segments) == 1:
        return labels if not key else None
    if not key:
        return None
    labels[segments[1].strip("{}+")] = key
    return labels


# ---------------------------------------------------------------- reading the request


def _text(raw: str) -> str:
    """A WSGI string (bytes as latin-1) as the UTF-8 text it carries."""
    try:
        return raw.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return raw


def _environ_key(header: str) -> str:
    key = header.upper().replace("-", "_")
    return key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{key}"


def _header(environ: dict, name: str) -> str | None:
    value = environ.get(_environ_key(name))
    return None if value is None or (value == "" and name.lower() == "content-length") else value


def bucket_and_key(environ: dict, *, strict: bool = True) -> tuple[str, str]:
    """The bucket and key an S3 request names, path-style or virtual-hosted.

    WSGI gives the path as latin-1 text; S3 keys are UTF-8. A path that is not
    UTF-8 is S3's ``InvalidURI`` (:class:`S3Refusal`), or with ``strict=False``
    read with replacement characters (what the request names, for the record of
    its authorizations).

    >>> bucket_and_key({"PATH_INFO": "/my-bucket/data/train.csv", "HTTP_HOST": "127.0.0.1:4566"})
    ('my-bucket', 'data/train.csv')
    >>> bucket_and_key({"PATH_INFO": "/train.csv", "HTTP_HOST": "my-bucket.localhost:4566"})
    ('my-bucket', 'train.csv')
    """
    raw = environ.get("PATH_INFO", "").encode("latin-1", "replace")
    try:
        path = raw.decode("utf-8") if strict else raw.decode("utf-8", "replace")
    except UnicodeDecodeError:
        raise S3Refusal("InvalidURI", "Couldn't parse the specified URI.") from None
    path = path[1:] if path.startswith("/") else path
    host = environ.get("HTTP_HOST", "")
    host = host if host.startswith("[") else host.rsplit(":", 1)[0]
    virtual = _VIRTUAL_HOST.fullmatch(host)
    if virtual:
        return virtual.group("bucket"), path
    bucket, _, key = path.partition("/")
    return bucket, key


def _query(environ: dict) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    raw = _text(environ.get("QUERY_STRING", ""))
    for name, value in parse_qsl(raw, keep_blank_values=True):
        found.setdefault(name, []).append(value)
    return found


def _signed_for(environ: dict) -> str | None:
    """The service a request is signed for (``s3``...), or ``None`` when it is not signed."""
    scope = _SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
    if scope:
        return scope.group(1)
    credential = _query(environ).get("X-Amz-Credential")
    if credential:
        parts = credential[0].split("/")
        return parts[3] if len(parts) == 5 else None
    return None


def _present(environ: dict, query: dict, location: str, wire: str) -> bool:
    if location == "querystring":
        return wire in query
    if location == "header":
        return _header(environ, wire) is not None
    return True  # uri labels: the path's shape was matched already


def _route(environ: dict, method: str, bucket: str, key: str, query: dict) -> _Route | None:
    """The most specific operation the request fits (see the module's docstring)."""
    host = environ.get("HTTP_HOST", "").lower()
    express_host = host.startswith("s3express-control")
    fitting = []
    for route in _routes():
        if route.method != method or _labels(route.segments, bucket, key) is None:
            continue
        if any(name not in query or (value and value not in query[name])
               for name, value in route.markers):
            continue
        if not all(_present(environ, query, *where) for where in route.required):
            continue
        optional = sum(_present(environ, query, *where) for where in route.optional
                       if where[0] != "uri")
        score = (len(route.markers), len(route.required), not route.deprecated, optional,
                 route.express == express_host)
        fitting.append((score, route))
    if not fitting:
        return None
    named = query.get("x-id")  # botocore names the operation in x-id=<Operation>
    if named:
        chosen = [route for _, route in fitting if route.name == named[0]]
        if chosen:
            return chosen[0]
    return max(fitting, key=lambda pair: pair[0])[1]


def _timestamp(text: str) -> datetime:
    from email.utils import parsedate_to_datetime

    text = text.strip()
    for parse in (datetime.fromisoformat, parsedate_to_datetime,
                  lambda t: datetime.fromtimestamp(float(t), UTC)):
        try:
            value = parse(text)
        except (ValueError, TypeError, OverflowError, OSError):
            continue
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    raise _Unconvertible(text)


def _scalar(shape, text: str) -> Any:
    """``text`` as a value of the scalar ``shape``; raises :class:`_Unconvertible`."""
    kind = shape.type_name
    if kind in _INTEGER_RANGES:
        if not _INTEGER.fullmatch(text.strip()):
            raise _Unconvertible(text)
        value = int(text)
        low, high = _INTEGER_RANGES[kind]
        if not low <= value <= high:
            raise _Unconvertible(text)
        return value
    if kind == "boolean":
        if text.strip().lower() not in ("true", "false"):
            raise _Unconvertible(text)
        return text.strip().lower() == "true"
    if kind in ("float", "double"):
        try:
            return float(text)
        except ValueError:
            raise _Unconvertible(text) from None
    if kind == "timestamp":
        return _timestamp(text)
    if kind == "blob":
        try:
            return base64.b64decode(text, validate=True)
        except ValueError:
            raise _Unconvertible(text) from None
    return text


def _unconvertible(operation: str, wire: str, text: str, kind: str) -> S3Refusal:
    """S3's refusal of a query parameter or header that is not of its type."""
    details = {"ArgumentName": wire, "ArgumentValue": text}
    if wire == "partNumber" and operation in ("UploadPart", "UploadPartCopy"):
        return S3Refusal("InvalidArgument", _PART_NUMBER, details=details)
    if kind in _INTEGER_RANGES:
        # S3's words for ListObjects' max-keys=abc, used for every integer parameter.
        return S3Refusal("InvalidArgument",
                         f"Provided {wire} not an integer or within integer range", details=details)
    return S3Refusal("InvalidArgument", f"Invalid value for {wire}: {text!r} is not a {kind}",
                     details=details)


def _located(operation: str, shape, environ: dict, query: dict, labels: dict) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for name, member in shape.members.items():
        location = member.serialization.get("location")
        wire = member.serialization.get("name", name)
        if location == "uri":
            if labels.get(wire):
                params[name] = labels[wire]
        elif location == "querystring" and wire in query:
            values = query[wire]
            try:
                params[name] = ([_scalar(member.member, v) for v in values]
                                if member.type_name == "list" else _scalar(member, values[0]))
            except _Unconvertible as exc:
                raise _unconvertible(operation, wire, str(exc), member.type_name) from None
        elif location == "header":
            raw = _header(environ, wire)
            if raw is None:
                continue
            text = _text(raw)
            try:
                if member.type_name == "list":
                    params[name] = [_scalar(member.member, v.strip())
                                    for v in text.split(",") if v.strip()]
                else:
                    params[name] = _scalar(member, text)
            except _Unconvertible:
                if member.type_name == "timestamp" and wire.lower() in _LENIENT_DATES:
                    continue
                raise _unconvertible(operation, wire, text, member.type_name) from None
        elif location == "headers":  # a map of prefixed headers: x-amz-meta-*
            prefix = _environ_key(wire)
            # moto's request handler keeps the spelling of names with underscores here.
            spelled = environ.get("moto.preserved_header_names") or {}
            found = {(spelled[key][len(wire):] if key in spelled
                      else key[len(prefix):].replace("_", "-")).lower(): _text(value)
                     for key, value in environ.items()
                     if key.startswith(prefix) and len(key) > len(prefix)}
            if found:
                params[name] = found
    return params


# ---------------------------------------------------------------- XML bodies


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(node, name: str) -> list:
    return [child for child in node if _local(child.tag) == name]


def _xml_entries(shape, entries: list) -> dict:
    key_name = shape.key.serialization.get("name", "key")
    value_name = shape.value.serialization.get("name", "value")
    found = {}
    for entry in entries:
        keys, values = _children(entry, key_name), _children(entry, value_name)
        if keys and values:
            found[_xml_value(shape.key, keys[0])] = _xml_value(shape.value, values[0])
    return found


def _xml_value(shape, node) -> Any:
    """The value of the element ``node`` of ``shape``; raises :class:`_Unconvertible`.

    Structures are read by their members' element names, lists from their items
    (``<Object>`` repeated in place when the list is flattened), maps from
    ``<entry>`` elements, scalars by their type.
    """
    kind = shape.type_name
    if kind == "list":
        item = shape.member.serialization.get("name", "member")
        return [_xml_value(shape.member, child) for child in _children(node, item)]
    if kind == "map":
        return _xml_entries(shape, _children(node, "entry"))
    if kind != "structure":
        return _scalar(shape, node.text or "")
    found: dict[str, Any] = {}
    for name, member in shape.members.items():
        serialization = member.serialization
        if serialization.get("location"):
            continue  # sent in the path, the query or a header, not in the document
        wire = serialization.get("name", name)
        if serialization.get("xmlAttribute"):  # <Grantee xsi:type="CanonicalUser">
            local = wire.rsplit(":", 1)[-1]
            value = next((v for k, v in node.attrib.items() if _local(k) == local), None)
            if value is not None:
                found[name] = _scalar(member, value)
            continue
        matches = _children(node, wire)
        if serialization.get("flattened") and member.type_name == "list":
            if matches:
                found[name] = [_xml_value(member.member, child) for child in matches]
        elif serialization.get("flattened") and member.type_name == "map":
            if matches:
                found[name] = _xml_entries(member, matches)
        elif matches:
            found[name] = _xml_value(member, matches[0])
    return found


def _document(shape, root_name: str, body: bytes) -> dict[str, Any] | None:
    """The structure ``shape`` read from an XML ``body`` whose root is ``root_name``."""
    from xml.etree import ElementTree

    if not body.strip():
        return None
    if b"<!DOCTYPE" in body.upper() or b"<!ENTITY" in body.upper():
        raise S3Refusal("MalformedXML", _MALFORMED_XML)
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        raise S3Refusal("MalformedXML", _MALFORMED_XML) from None
    if _local(root.tag) != root_name:
        raise S3Refusal("MalformedXML", _MALFORMED_XML)
    try:
        return _xml_value(shape, root)
    except _Unconvertible:
        raise S3Refusal("MalformedXML", _MALFORMED_XML) from None


def _body_params(shape, environ: dict) -> dict[str, Any]:
    payload = shape.serialization.get("payload")
    if payload:
        member = shape.members[payload]
        if member.type_name == "structure":
            root = member.serialization.get("name", payload)
            value = _document(member, root, read_body(environ))
            return {} if value is None else {payload: value}
        if member.type_name == "string":  # PutBucketPolicy: a JSON document
            body = read_body(environ)
            return {payload: body.decode("utf-8", "replace")} if body else {}
        return {}  # an object's data: never read here
    in_body = [name for name, member in shape.members.items()
               if not member.serialization.get("location")]
    if not in_body:
        return {}
    value = _document(shape, shape.serialization.get("name", shape.name), read_body(environ))
    return value or {}


def s3_operation(environ: dict) -> tuple[str, dict] | None:
    """``(operation, params)`` of an S3 REST request, or ``None`` when it is not one.

    ``params`` are the operation's input as boto3 names them, with the types of
    the model (``MaxKeys`` an int, ``IfModifiedSince`` a datetime, ``Metadata`` a
    dict). An XML body is read and put back as ``io.BytesIO``; an object's data
    is never read. Raises :class:`S3Refusal` for a value that is not of its type.

    >>> s3_operation({"REQUEST_METHOD": "PUT", "PATH_INFO": "/b/data/train.csv",
    ...               "QUERY_STRING": "partNumber=2&uploadId=u1"})
    ('UploadPart', {'Bucket': 'b', 'Key': 'data/train.csv', 'PartNumber': 2, 'UploadId': 'u1'})
    """
    if environ.get("HTTP_X_AMZ_TARGET"):
        return None  # a JSON-protocol request
    signed_for = _signed_for(environ)
    if signed_for not in (None, "s3", "s3express"):  # s3express: directory buckets' sessions
        return None
    method = environ.get("REQUEST_METHOD", "GET").upper()
    bucket, key = bucket_and_key(environ)
    query = _query(environ)
    route = _route(environ, method, bucket, key, query)
    if route is None:
        return None
    shape = _model().operation_model(route.name).input_shape
    if shape is None:
        return route.name, {}
    labels = _labels(route.segments, bucket, key) or {}
    params = _located(route.name, shape, environ, query, labels)
    params.update(_body_params(shape, environ))
    return route.name, params


# ---------------------------------------------------------------- the checks


def _for_model(value: Any) -> Any:
    """``value`` as :func:`service_rules.check` takes it (datetimes as epoch seconds)."""
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, dict):
        return {k: _for_model(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_for_model(v) for v in value]
    return value


def _check_model(operation: str, params: dict) -> None:
    """Layer (a): the operation's model in botocore (types, enums, required members)."""
    model = _model()
    shape = model.operation_model(operation).input_shape
    if shape is None:
        return
    checked = _for_model(params)
    payload = shape.serialization.get("payload")
    if payload and shape.members[payload].type_name == "blob":
        checked.setdefault(payload, b"")  # an object's data, never read: not missing
    try:
        found = service_rules.check(model, operation, checked)
    except service_rules.PatternError as exc:  # a rule that cannot be checked fails the request
        raise S3Refusal("InternalError", f"The sandbox cannot check this request: {exc}",
                        500) from None
    if not found:
        return
    in_body = {name for name, member in shape.members.items()
               if not member.serialization.get("location")}
    for violation in found:
        # "Error responses" (above): an unknown storage class or Region has a code of its own.
        if violation.shape == "StorageClass" and violation.rule == "enum":
            raise S3Refusal("InvalidStorageClass", "The storage class you specified is not valid",
                            details={"StorageClassRequested": str(violation.value)})
        if violation.shape == "BucketLocationConstraint" and violation.rule == "enum":
            raise S3Refusal("InvalidLocationConstraint",
                            "The specified location-constraint is not valid",
                            details={"LocationConstraint": str(violation.value)})
    located = [v for v in found if v.members[0] not in in_body]
    if located:
        first = located[0]
        member = shape.members[first.members[0]]
        details = {"ArgumentName": member.serialization.get("name", first.members[0])}
        if isinstance(first.value, str | int | float) and len(first.members) == 1:
            details["ArgumentValue"] = str(first.value)
        raise S3Refusal("InvalidArgument", str(service_rules.RequestInvalid(located)),
                        details=details)
    if any(v.rule == "required" and v.members == (payload,) for v in found):
        # S3 answers 400 MissingRequestBodyError to an empty body where a document is needed.
        raise S3Refusal("MissingRequestBodyError", "Request Body is empty")
    # A document that breaks S3's schema (a Tag without its Value, a Delete without Object).
    raise S3Refusal("MalformedXML", _MALFORMED_XML)


def _tags_of(operation: str, params: dict) -> list[tuple[str, str]] | None:
    if operation == "PutObjectTagging":
        tags = (params.get("Tagging") or {}).get("TagSet") or []
        return [(tag.get("Key") or "", tag.get("Value") or "") for tag in tags
                if isinstance(tag, dict)]
    if operation in ("PutObject", "CreateMultipartUpload", "CopyObject") and "Tagging" in params:
        # x-amz-tagging: URL query parameters, "key1=value1&key2=value2".
        return parse_qsl(params["Tagging"], keep_blank_values=True)
    return None


def _check_limits(operation: str, params: dict, environ: dict) -> None:
    """Layer (b): S3's documented limits, which the model does not carry."""
    bucket = params.get("Bucket")
    if operation == "CreateBucket" and isinstance(bucket, str) and bucket_problem(bucket):
        # S3 User Guide, "General purpose bucket naming rules",
        # https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html
        # S3 answers 400 InvalidBucketName, naming the bucket in BucketName.
        raise S3Refusal("InvalidBucketName", "The specified bucket is not valid.",
                        details={"BucketName": bucket})

    key = params.get("Key")
    if isinstance(key, str):
        # S3 User Guide, "Naming Amazon S3 objects": at most 1024 bytes of UTF-8,
        # https://docs.aws.amazon.com/AmazonS3/latest/userguide/object-keys.html
        # S3 answers 400 KeyTooLongError with the key's Size and the MaxSizeAllowed.
        size = len(key.encode("utf-8", "surrogatepass"))
        if size > MAX_KEY_BYTES:
            raise S3Refusal("KeyTooLongError", "Your key is too long",
                            details={"Size": size, "MaxSizeAllowed": MAX_KEY_BYTES})

    if operation in ("PutObject", "UploadPart"):
        # S3 User Guide, "Uploading objects": one PUT uploads at most 5 GB,
        # https://docs.aws.amazon.com/AmazonS3/latest/userguide/upload-objects.html
        # and "Amazon S3 multipart upload limits": a part is at most 5 GiB,
        # https://docs.aws.amazon.com/AmazonS3/latest/userguide/qfacts.html
        # An aws-chunked upload gives the data's size in x-amz-decoded-content-length.
        # S3 answers 400 EntityTooLarge with the ProposedSize and the MaxSizeAllowed.
        decoded = _header(environ, "x-amz-decoded-content-length")
        size = int(decoded) if decoded and decoded.isdigit() else params.get("ContentLength")
        if isinstance(size, int) and size > MAX_PUT_BYTES:
            raise S3Refusal("EntityTooLarge",
                            "Your proposed upload exceeds the maximum allowed size",
                            details={"ProposedSize": size, "MaxSizeAllowed": MAX_PUT_BYTES})

    if operation in ("UploadPart", "UploadPartCopy"):
        # "Amazon S3 multipart upload limits": part numbers 1 to 10,000,
        # https://docs.aws.amazon.com/AmazonS3/latest/userguide/qfacts.html
        # S3 answers 400 InvalidArgument naming the partNumber argument and its value.
        number = params.get("PartNumber")
        if isinstance(number, int) and not 1 <= number <= MAX_PART_NUMBER:
            raise S3Refusal("InvalidArgument", _PART_NUMBER,
                            details={"ArgumentName": "partNumber", "ArgumentValue": number})

    if operation in ("PutObject", "CreateMultipartUpload", "CopyObject"):
        # S3 User Guide, "Working with object metadata": user-defined metadata is at most
        # 2 KB, "the sum of the number of bytes in the UTF-8 encoding of each key and value",
        # https://docs.aws.amazon.com/AmazonS3/latest/userguide/UsingMetadata.html
        # S3 answers 400 MetadataTooLarge with the Size and the MaxSizeAllowed.
        prefix = _environ_key("x-amz-meta-")
        size = sum(len(name) - len(prefix) + len(value.encode("latin-1", "replace"))
                   for name, value in environ.items() if name.startswith(prefix))
        if size > MAX_METADATA_BYTES:
            raise S3Refusal("MetadataTooLarge",
                            "Your metadata headers exceed the maximum allowed metadata size",
                            details={"Size": size, "MaxSizeAllowed": MAX_METADATA_BYTES})

    tags = _tags_of(operation, params)
    if tags is not None:
        # S3 User Guide, "Categorizing your objects using tags": up to 10 tags on an object,
        # keys of up to 128 and values of up to 256 Unicode characters,
        # https://docs.aws.amazon.com/AmazonS3/latest/userguide/object-tagging.html
        # S3 answers 400 InvalidTag for a long key or value, and 400 BadRequest (not
        # InvalidTag) for an eleventh tag, as its answers in boto/boto3 issue 1213 show.
        for tag_key, tag_value in tags:
            if len(tag_key) > MAX_TAG_KEY:
                raise S3Refusal("InvalidTag", "The TagKey you have provided is too long, max 128")
            if len(tag_value) > MAX_TAG_VALUE:
                raise S3Refusal("InvalidTag",
                                "The TagValue you have provided is too long, max 256")
        if len(tags) > MAX_OBJECT_TAGS:
            raise S3Refusal("BadRequest", "Object tags cannot be greater than 10")

    if operation == "DeleteObjects":
        # S3 API Reference, "DeleteObjects": up to 1,000 keys in one request,
        # https://docs.aws.amazon.com/AmazonS3/latest/API/API_DeleteObjects.html
        # S3 answers more with 400 MalformedXML, as a document breaking its schema.
        objects = (params.get("Delete") or {}).get("Objects") or []
        if len(objects) > MAX_DELETE_KEYS:
            raise S3Refusal("MalformedXML", _MALFORMED_XML)


def check_s3_request(environ: dict) -> None:
    """Raise :class:`S3Refusal` when Amazon S3 would refuse this WSGI request.

    Requests that are not S3 REST requests pass unchecked. An XML body is read
    and put back (``environ["wsgi.input"]``); an object's data is never read.

    >>> try:
    ...     check_s3_request({"REQUEST_METHOD": "GET", "PATH_INFO": "/b",
    ...                       "QUERY_STRING": "list-type=2&max-keys=abc"})
    ... except S3Refusal as refusal:
    ...     print(refusal.code, refusal.message)
    InvalidArgument Provided max-keys not an integer or within integer range
    """
    found = s3_operation(environ)
    if found is None:
        return
    operation, params = found
    _check_limits(operation, params, environ)
    _check_model(operation, params)


# ---------------------------------------------------------------- the answer


def _request_id() -> str:
    alphabet = string.ascii_uppercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(16))


def s3_error_answer(refusal: S3Refusal, environ: dict,
                    start_response: Callable) -> Iterable[bytes]:
    """The WSGI answer S3 gives for ``refusal``: its status, and ``<Error>`` in XML.

    A ``HEAD`` request gets the status and headers only, as from S3.
    """
    from http import HTTPStatus

    request_id = _request_id()
    host_id = base64.b64encode(secrets.token_bytes(57)).decode()
    details = "".join(f"<{name}>{escape(value)}</{name}>"
                      for name, value in refusal.details.items())
    body = ('<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{escape(refusal.code)}</Code>"
            f"<Message>{escape(refusal.message)}</Message>{details}"
            f"<RequestId>{request_id}</RequestId><HostId>{host_id}</HostId></Error>").encode()
    if environ.get("REQUEST_METHOD", "").upper() == "HEAD":
        body = b""
    try:
        reason = HTTPStatus(refusal.status).phrase
    except ValueError:
        reason = "Error"
    start_response(f"{refusal.status} {reason}",
                   [("Content-Type", "application/xml"), ("Content-Length", str(len(body))),
                    ("x-amz-request-id", request_id), ("x-amz-id-2", host_id)])
    return [body] if body else []
