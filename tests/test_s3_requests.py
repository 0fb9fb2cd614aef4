"""S3's REST requests are refused as Amazon S3 refuses them (``sandbox.s3_requests``).

Most tests drive moto's real S3 server, wrapped by the check, on 127.0.0.1
with a real boto3 client: what passes must reach moto and take effect, what S3
refuses must come back with S3's error code and never reach moto. Requests
botocore would not send (a claimed 6 GiB body, ``max-keys=abc``) are sent raw.
"""

from __future__ import annotations

import datetime
import http.client
import io
import threading
import uuid
from urllib.parse import unquote, urlencode, urlsplit

import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from sm_magics import config, service_rules
from sm_magics.s3uri import bucket_problem, key_problem
from sm_magics.sandbox.s3_requests import (
    S3Refusal,
    check_s3_request,
    s3_error_answer,
    s3_operation,
)

MIB = 1024 * 1024
GIB = 1024 * MIB
RUN = uuid.uuid4().hex[:8]  # moto's bucket names are one namespace per process


class _Spy:
    """A request body that notes every read of it."""

    def __init__(self, stream, reads: list[int]) -> None:
        self.stream, self.reads = stream, reads

    def read(self, *args):
        data = self.stream.read(*args)
        self.reads.append(len(data))
        return data

    def readline(self, *args):
        data = self.stream.readline(*args)
        self.reads.append(len(data))
        return data


class Endpoint:
    """moto's S3 server behind the check, and what reached it."""

    def __init__(self) -> None:
        self.reached: list[tuple[str, str, str]] = []  # (method, path, query) moto answered
        self.reads: dict[str, list[int]] = {}  # body reads, by path

    def app(self, moto_app):
        def checked(environ, start_response):
            path = environ.get("PATH_INFO", "")
            environ["wsgi.input"] = _Spy(environ["wsgi.input"], self.reads.setdefault(path, []))
            try:
                check_s3_request(environ)
            except S3Refusal as refusal:
                return s3_error_answer(refusal, environ, start_response)
            self.reached.append((environ["REQUEST_METHOD"], path,
                                 environ.get("QUERY_STRING", "")))
            return moto_app(environ, start_response)

        return checked

    def moto_saw(self, path: str, methods: tuple[str, ...] = ("PUT", "POST")) -> bool:
        """Whether a request to write ``path`` reached moto."""
        return any(seen == path and method in methods for method, seen, _ in self.reached)


@pytest.fixture(scope="module")
def endpoint():
    from moto.moto_server.werkzeug_app import MotoRequestHandler
    from moto.server import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    class Quiet(MotoRequestHandler):
        def log_request(self, *args, **kwargs) -> None:
            pass

    found = Endpoint()
    server = make_server("127.0.0.1", 0, found.app(DomainDispatcherApplication(
        create_backend_app)), threaded=True, request_handler=Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    found.port = server.server_port
    found.url = f"http://127.0.0.1:{server.server_port}"
    yield found
    server.shutdown()
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def s3(endpoint):
    return boto3.client("s3", endpoint_url=endpoint.url, aws_access_key_id="x",
                        aws_secret_access_key="x", region_name="us-east-1")


@pytest.fixture(scope="module")
def bucket(s3):
    name = f"s3-requests-{RUN}"
    s3.create_bucket(Bucket=name)
    return name


def refused(call, code: str) -> dict:
    """The ``Error`` of ``call()``, which must fail with S3's ``code``."""
    with pytest.raises(ClientError) as caught:
        call()
    error = caught.value.response["Error"]
    assert error["Code"] == code, error
    return error


def raw(endpoint, method: str, path: str, headers: dict | None = None, body: bytes = b""):
    """``(status, headers, body)`` of an unsigned request sent as given."""
    conn = http.client.HTTPConnection("127.0.0.1", endpoint.port, timeout=10)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        headers = {"Content-Length": str(len(body)), **(headers or {})}
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        if body:
            conn.send(body)
        answer = conn.getresponse()
        return answer.status, dict(answer.getheaders()), answer.read()
    finally:
        conn.close()


# ---------------------------------------------------------------- what the tool sends passes


def test_the_calls_of_the_tool_pass_and_take_effect(s3, bucket, endpoint):
    s3.put_object(Bucket=bucket, Key="params/run-1.json", Body=b"{}", IfNoneMatch="*",
                  Metadata={"notebook": "fraud.ipynb"})
    s3.put_object(Bucket=bucket, Key="params/run-2.json", Body=b"{}")
    head = s3.head_object(Bucket=bucket, Key="params/run-1.json")
    assert head["Metadata"] == {"notebook": "fraud.ipynb"}
    assert head["ContentLength"] == 2
    page = s3.list_objects_v2(Bucket=bucket, Prefix="params/", MaxKeys=1)
    assert page["KeyCount"] == 1 and page["IsTruncated"]
    assert page["Contents"][0]["Key"] == "params/run-1.json"
    assert s3.get_bucket_location(Bucket=bucket).get("LocationConstraint") is None
    assert s3.get_object(Bucket=bucket, Key="params/run-1.json")["Body"].read() == b"{}"
    deleted = s3.delete_objects(Bucket=bucket, Delete={
        "Objects": [{"Key": "params/run-1.json"}, {"Key": "params/run-2.json"}]})
    assert sorted(d["Key"] for d in deleted["Deleted"]) == ["params/run-1.json",
                                                           "params/run-2.json"]
    assert s3.list_objects_v2(Bucket=bucket, Prefix="params/")["KeyCount"] == 0
    assert ("PUT", f"/{bucket}/params/run-1.json", "") in endpoint.reached


def test_a_multipart_upload_passes_part_by_part(s3, bucket, endpoint):
    data = bytes(range(256)) * (11 * MIB // 256)  # three parts of at most 5 MiB
    s3.upload_fileobj(io.BytesIO(data), bucket, "model/model.tar.gz",
                      Config=TransferConfig(multipart_threshold=5 * MIB,
                                            multipart_chunksize=5 * MIB, use_threads=False))
    parts = [q for m, p, q in endpoint.reached
             if m == "PUT" and p == f"/{bucket}/model/model.tar.gz" and "partNumber=" in q]
    assert len(parts) == 3
    assert any(m == "POST" and q == "uploads" for m, p, q in endpoint.reached
               if p == f"/{bucket}/model/model.tar.gz")
    assert s3.get_object(Bucket=bucket, Key="model/model.tar.gz")["Body"].read() == data


def test_the_bucket_setup_of_the_tool_passes(s3, tmp_path):
    name = f"setup-{RUN}"
    s3.create_bucket(Bucket=name)
    s3.head_bucket(Bucket=name, ExpectedBucketOwner="123456789012")
    s3.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration={
        "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True,
        "RestrictPublicBuckets": True})
    s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={"Rules": [
        {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"},
         "BucketKeyEnabled": False}]})
    rules = s3.get_bucket_encryption(Bucket=name, ExpectedBucketOwner="123456789012")[
        "ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    (tmp_path / "train.csv").write_text("a,b\n1,2\n")
    s3.upload_file(str(tmp_path / "train.csv"), name, "data/train.csv",
                   ExtraArgs={"ServerSideEncryption": "AES256"})
    keys = [item["Key"] for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=name, Prefix="data/") for item in page.get("Contents", [])]
    assert keys == ["data/train.csv"]
    s3.download_file(name, "data/train.csv", str(tmp_path / "back.csv"))
    assert (tmp_path / "back.csv").read_text() == "a,b\n1,2\n"


# ---------------------------------------------------------------- bucket names


@pytest.mark.parametrize("name", ["Bad_Name", "amzn-s3-demo-x", "a..b", "192.168.1.1",
                                  "xn--abc", "sthree-configurator-x", "ab", "data--table-s3",
                                  "b.mrap", "a-s3alias", "-abc"])
def test_a_bucket_name_s3_refuses_is_refused_and_not_created(s3, endpoint, name):
    error = refused(lambda: s3.create_bucket(Bucket=name), "InvalidBucketName")
    assert error["Message"] == "The specified bucket is not valid."
    assert error["BucketName"] == name
    assert name not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert not endpoint.moto_saw(f"/{name}")


def test_a_directory_bucket_suffix_is_refused_for_a_general_purpose_bucket(endpoint):
    # botocore sends names ending in --x-s3 to S3 Express: this CreateBucket is sent raw.
    status, _, body = raw(endpoint, "PUT", "/logs--x-s3")
    assert status == 400
    assert b"<Code>InvalidBucketName</Code>" in body
    assert b"<BucketName>logs--x-s3</BucketName>" in body


@pytest.mark.parametrize("name", [f"my.-bucket-{RUN}", f"my-.bucket-{RUN}"])
def test_a_period_beside_a_hyphen_is_a_valid_bucket_name(s3, name):
    s3.create_bucket(Bucket=name)
    assert name in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    s3.delete_bucket(Bucket=name)


# ---------------------------------------------------------------- keys, metadata, size


def test_a_key_of_more_than_1024_bytes_is_refused(s3, bucket, endpoint):
    key = "k" * 1025
    error = refused(lambda: s3.put_object(Bucket=bucket, Key=key, Body=b"x"), "KeyTooLongError")
    assert error["Message"] == "Your key is too long"
    assert (error["Size"], error["MaxSizeAllowed"]) == ("1025", "1024")
    assert not endpoint.moto_saw(f"/{bucket}/{key}")


def test_key_length_counts_utf8_bytes_not_characters(s3, bucket):
    at_limit = "é" * 512  # 512 characters, 1024 bytes
    s3.put_object(Bucket=bucket, Key=at_limit, Body=b"fits")
    assert s3.get_object(Bucket=bucket, Key=at_limit)["Body"].read() == b"fits"
    over = "é" * 513  # 513 characters, 1026 bytes
    error = refused(lambda: s3.put_object(Bucket=bucket, Key=over, Body=b"x"), "KeyTooLongError")
    assert error["Size"] == "1026"
    refused(lambda: s3.head_object(Bucket=bucket, Key=over), "400")  # HEAD: no body to read


def test_metadata_over_2_kb_is_refused_and_nothing_is_written(s3, bucket, endpoint):
    s3.put_object(Bucket=bucket, Key="meta/fits", Body=b"x", Metadata={"k": "v" * 2047})
    assert s3.head_object(Bucket=bucket, Key="meta/fits")["Metadata"] == {"k": "v" * 2047}
    error = refused(lambda: s3.put_object(Bucket=bucket, Key="meta/over", Body=b"x",
                                          Metadata={"k": "v" * 2048}), "MetadataTooLarge")
    assert (error["Size"], error["MaxSizeAllowed"]) == ("2049", "2048")
    refused(lambda: s3.head_object(Bucket=bucket, Key="meta/over"), "404")
    refused(lambda: s3.create_multipart_upload(Bucket=bucket, Key="meta/over",
                                               Metadata={"a": "b" * 1500, "c": "d" * 600}),
            "MetadataTooLarge")
    assert not endpoint.moto_saw(f"/{bucket}/meta/over")


def test_a_put_claiming_more_than_5_gib_is_refused_before_its_body_is_read(endpoint, bucket,
                                                                          s3):
    path = f"/{bucket}/huge.bin"
    status, headers, body = raw(endpoint, "PUT", path, {"Content-Length": str(6 * GIB)})
    assert status == 400
    assert b"<Code>EntityTooLarge</Code>" in body
    assert b"<ProposedSize>6442450944</ProposedSize><MaxSizeAllowed>5368709120</MaxSizeAllowed>" \
        in body
    assert headers["Content-Type"] == "application/xml" and headers["x-amz-request-id"]
    assert endpoint.reads[path] == []  # not a byte of the body was read
    assert not endpoint.moto_saw(path)
    refused(lambda: s3.head_object(Bucket=bucket, Key="huge.bin"), "404")


def test_an_aws_chunked_put_is_sized_by_its_decoded_length(endpoint, bucket):
    path = f"/{bucket}/chunked.bin"
    status, _, body = raw(endpoint, "PUT", path, {
        "Content-Length": "100", "Content-Encoding": "aws-chunked",
        "x-amz-decoded-content-length": str(5 * GIB + 1)})
    assert status == 400 and b"<Code>EntityTooLarge</Code>" in body
    assert endpoint.reads[path] == []


# ---------------------------------------------------------------- tags


def test_object_tags_beyond_s3s_limits_are_refused(s3, bucket, endpoint):
    ten = urlencode({f"k{i}": "v" for i in range(10)})
    s3.put_object(Bucket=bucket, Key="tags/ten", Body=b"x", Tagging=ten)
    assert len(s3.get_object_tagging(Bucket=bucket, Key="tags/ten")["TagSet"]) == 10
    eleven = urlencode({f"k{i}": "v" for i in range(11)})
    error = refused(lambda: s3.put_object(Bucket=bucket, Key="tags/no", Body=b"x",
                                          Tagging=eleven), "BadRequest")
    assert error["Message"] == "Object tags cannot be greater than 10"
    error = refused(lambda: s3.put_object(Bucket=bucket, Key="tags/no", Body=b"x",
                                          Tagging=urlencode({"k" * 129: "v"})), "InvalidTag")
    assert error["Message"] == "The TagKey you have provided is too long, max 128"
    error = refused(lambda: s3.put_object(Bucket=bucket, Key="tags/no", Body=b"x",
                                          Tagging=urlencode({"k": "é" * 257})), "InvalidTag")
    assert error["Message"] == "The TagValue you have provided is too long, max 256"
    s3.put_object(Bucket=bucket, Key="tags/long", Body=b"x",
                  Tagging=urlencode({"k" * 128: "é" * 256}))  # characters, not bytes
    refused(lambda: s3.head_object(Bucket=bucket, Key="tags/no"), "404")
    assert not endpoint.moto_saw(f"/{bucket}/tags/no")


def test_put_object_tagging_is_held_to_the_same_limits(s3, bucket):
    s3.put_object(Bucket=bucket, Key="tags/set", Body=b"x", Tagging="a=1")
    eleven = [{"Key": f"k{i}", "Value": "v"} for i in range(11)]
    refused(lambda: s3.put_object_tagging(Bucket=bucket, Key="tags/set",
                                          Tagging={"TagSet": eleven}), "BadRequest")
    refused(lambda: s3.put_object_tagging(Bucket=bucket, Key="tags/set", Tagging={
        "TagSet": [{"Key": "k", "Value": "v" * 257}]}), "InvalidTag")
    assert s3.get_object_tagging(Bucket=bucket, Key="tags/set")["TagSet"] == [
        {"Key": "a", "Value": "1"}]
    s3.put_object_tagging(Bucket=bucket, Key="tags/set", Tagging={"TagSet": eleven[:10]})
    assert len(s3.get_object_tagging(Bucket=bucket, Key="tags/set")["TagSet"]) == 10


# ---------------------------------------------------------------- parts, deletes


def test_part_numbers_outside_1_to_10000_are_refused(s3, bucket):
    upload = s3.create_multipart_upload(Bucket=bucket, Key="parts/x")["UploadId"]
    for number in (10001, 0):
        error = refused(lambda n=number: s3.upload_part(
            Bucket=bucket, Key="parts/x", UploadId=upload, PartNumber=n, Body=b"x"),
            "InvalidArgument")
        assert error["Message"] == "Part number must be an integer between 1 and 10000, inclusive"
        assert (error["ArgumentName"], error["ArgumentValue"]) == ("partNumber", str(number))
    s3.upload_part(Bucket=bucket, Key="parts/x", UploadId=upload, PartNumber=10000, Body=b"x")
    listed = s3.list_parts(Bucket=bucket, Key="parts/x", UploadId=upload)
    assert [p["PartNumber"] for p in listed.get("Parts", [])] == [10000]
    s3.abort_multipart_upload(Bucket=bucket, Key="parts/x", UploadId=upload)


def test_deleting_more_than_1000_keys_at_once_is_refused(s3, bucket, endpoint):
    s3.put_object(Bucket=bucket, Key="keep/me", Body=b"x")
    keys = [{"Key": "keep/me"}] + [{"Key": f"none/{i}"} for i in range(1000)]
    error = refused(lambda: s3.delete_objects(Bucket=bucket, Delete={"Objects": keys}),
                    "MalformedXML")
    assert error["Message"] == ("The XML you provided was not well-formed or did not validate "
                                "against our published schema")
    assert s3.head_object(Bucket=bucket, Key="keep/me")["ContentLength"] == 1
    deleted = s3.delete_objects(Bucket=bucket, Delete={"Objects": keys[:1000], "Quiet": True})
    assert not deleted.get("Errors")
    refused(lambda: s3.head_object(Bucket=bucket, Key="keep/me"), "404")


# ---------------------------------------------------------------- the model's rules


def test_values_the_model_does_not_allow_are_refused(s3, bucket, endpoint):
    error = refused(lambda: s3.put_object(Bucket=bucket, Key="model/x", Body=b"x",
                                          StorageClass="FAST"), "InvalidStorageClass")
    assert error["StorageClassRequested"] == "FAST"
    error = refused(lambda: s3.put_object(Bucket=bucket, Key="model/x", Body=b"x",
                                          ACL="everyone"), "InvalidArgument")
    assert error["Message"].startswith("1 validation error detected: Value 'everyone' at ")
    assert "Member must satisfy enum value set" in error["Message"]
    assert error["ArgumentName"] == "x-amz-acl"
    assert not endpoint.moto_saw(f"/{bucket}/model/x")


def test_an_unknown_region_is_an_invalid_location_constraint(s3):
    name = f"nowhere-{RUN}"
    error = refused(lambda: s3.create_bucket(Bucket=name, CreateBucketConfiguration={
        "LocationConstraint": "mars-north-1"}), "InvalidLocationConstraint")
    assert error["Message"] == "The specified location-constraint is not valid"
    assert name not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def test_a_value_of_the_wrong_type_is_refused_not_a_crash(endpoint, bucket):
    status, _, body = raw(endpoint, "GET", f"/{bucket}?list-type=2&max-keys=abc")
    assert status == 400
    assert (b"<Code>InvalidArgument</Code><Message>Provided max-keys not an integer or within "
            b"integer range</Message><ArgumentName>max-keys</ArgumentName>"
            b"<ArgumentValue>abc</ArgumentValue>") in body
    status, _, body = raw(endpoint, "PUT", f"/{bucket}/k?partNumber=two&uploadId=u")
    assert status == 400 and b"Part number must be an integer" in body


def test_xml_bodies_are_read_as_s3_reads_them(endpoint, bucket):
    path = f"/{bucket}?tagging"
    status, _, body = raw(endpoint, "PUT", path)
    assert status == 400 and b"<Code>MissingRequestBodyError</Code>" in body
    status, _, body = raw(endpoint, "PUT", path, body=b"<Tagging><TagSet>")
    assert status == 400 and b"<Code>MalformedXML</Code>" in body
    no_value = b"<Tagging><TagSet><Tag><Key>team</Key></Tag></TagSet></Tagging>"
    status, _, body = raw(endpoint, "PUT", path, body=no_value)
    assert status == 400 and b"<Code>MalformedXML</Code>" in body


def test_a_refused_head_request_has_no_body(endpoint, bucket):
    status, headers, body = raw(endpoint, "HEAD", f"/{bucket}/{'k' * 1025}")
    assert (status, body) == (400, b"")
    assert headers["x-amz-request-id"] and headers["Content-Type"] == "application/xml"


# ---------------------------------------------------------------- finding the operation


def environ(method: str, path: str, query: str = "", headers: dict | None = None,
            body: bytes = b"") -> dict:
    """A WSGI environ as a server makes it (the path decoded, as latin-1 text)."""
    found = {"REQUEST_METHOD": method, "PATH_INFO": unquote(path).encode().decode("latin-1"),
             "QUERY_STRING": query, "HTTP_HOST": "127.0.0.1:4599",
             "CONTENT_LENGTH": str(len(body)) if body else "", "wsgi.input": io.BytesIO(body)}
    for name, value in (headers or {}).items():
        key = name.upper().replace("-", "_")
        found[key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{key}"] = value
    return found


COPY = {"x-amz-copy-source": "/src/key"}


@pytest.mark.parametrize(("method", "path", "query", "headers", "operation"), [
    ("GET", "/", "", {}, "ListBuckets"),
    ("PUT", "/b", "", {}, "CreateBucket"),
    ("HEAD", "/b", "", {}, "HeadBucket"),
    ("DELETE", "/b", "", {}, "DeleteBucket"),
    ("GET", "/b", "", {}, "ListObjects"),
    ("GET", "/b/", "", {}, "ListObjects"),
    ("GET", "/b", "list-type=2&prefix=a%2F", {}, "ListObjectsV2"),
    ("GET", "/b", "location", {}, "GetBucketLocation"),
    ("GET", "/b", "uploads", {}, "ListMultipartUploads"),
    ("GET", "/b", "versions", {}, "ListObjectVersions"),
    ("PUT", "/b", "encryption", {}, "PutBucketEncryption"),
    ("GET", "/b", "analytics", {}, "ListBucketAnalyticsConfigurations"),
    ("GET", "/b", "analytics&id=a", {}, "GetBucketAnalyticsConfiguration"),
    ("GET", "/b", "lifecycle", {}, "GetBucketLifecycleConfiguration"),
    ("POST", "/b", "delete", {}, "DeleteObjects"),
    ("PUT", "/b/k", "", {}, "PutObject"),
    ("PUT", "/b/k", "", COPY, "CopyObject"),
    ("PUT", "/b/k", "partNumber=1&uploadId=u", {}, "UploadPart"),
    ("PUT", "/b/k", "partNumber=1&uploadId=u", COPY, "UploadPartCopy"),
    ("PUT", "/b/k", "partNumber=1", {}, "PutObject"),
    ("PUT", "/b/k", "tagging", {}, "PutObjectTagging"),
    ("PUT", "/b/k", "tagging", COPY, "PutObjectTagging"),
    ("GET", "/b/a/b/c.csv", "", {}, "GetObject"),
    ("GET", "/b/k", "uploadId=u", {}, "ListParts"),
    ("GET", "/b/k", "tagging", {}, "GetObjectTagging"),
    ("GET", "/b/k", "partNumber=2", {}, "GetObject"),
    ("HEAD", "/b/k", "", {}, "HeadObject"),
    ("DELETE", "/b/k", "", {}, "DeleteObject"),
    ("DELETE", "/b/k", "uploadId=u", {}, "AbortMultipartUpload"),
    ("POST", "/b/k", "uploads", {}, "CreateMultipartUpload"),
    ("POST", "/b/k", "uploadId=u", {}, "CompleteMultipartUpload"),
    ("PUT", "/b/k", "x-id=PutObject", {}, "PutObject"),
    ("GET", "/b", "x-id=ListObjects", {}, "ListObjects"),
])
def test_a_request_is_read_as_its_operation(method, path, query, headers, operation):
    found = s3_operation(environ(method, path, query, headers))
    assert found is not None and found[0] == operation


@pytest.mark.parametrize(("host", "path", "operation", "bucket", "key"), [
    ("my-bucket.s3.us-east-1.amazonaws.com", "/data/x.csv", "GetObject", "my-bucket",
     "data/x.csv"),
    ("my.dotted.bucket.s3.amazonaws.com", "/", "ListObjects", "my.dotted.bucket", None),
    ("my-bucket.localhost:4599", "/k", "GetObject", "my-bucket", "k"),
    ("s3.us-east-1.amazonaws.com", "/b/k", "GetObject", "b", "k"),
    ("localhost:4599", "/", "ListBuckets", None, None),
])
def test_a_virtual_hosted_request_names_its_bucket_in_the_host(host, path, operation, bucket,
                                                              key):
    found = s3_operation({**environ("GET", path), "HTTP_HOST": host})
    assert found[0] == operation
    assert found[1].get("Bucket") == bucket and found[1].get("Key") == key


@pytest.mark.parametrize("request_environ", [
    environ("POST", "/", headers={"X-Amz-Target": "SageMaker.ListTrainingJobs"}),
    environ("GET", "/", headers={"Authorization": "AWS4-HMAC-SHA256 Credential=AKIA/20260101/"
                                                  "us-east-1/sagemaker/aws4_request, x"}),
    environ("OPTIONS", "/b/k"),
    environ("POST", "/b"),  # a browser form upload: not an operation of the model
])
def test_what_is_not_an_s3_rest_request_is_not_read(request_environ):
    assert s3_operation(request_environ) is None
    check_s3_request(request_environ)  # and passes unchecked


# botocore's model has operations that send the same request as another one.
_SAME_REQUEST = {"GetBucketLifecycle": "GetBucketLifecycleConfiguration",
                 "PutBucketLifecycle": "PutBucketLifecycleConfiguration",
                 "GetBucketNotification": "GetBucketNotificationConfiguration",
                 "PutBucketNotification": "PutBucketNotificationConfiguration",
                 "ListDirectoryBuckets": "ListBuckets"}


def _sample(shape):
    """A value of ``shape`` with its required members, valid for the model."""
    kind = shape.type_name
    if kind == "structure":
        return {name: _sample(shape.members[name]) for name in shape.required_members}
    if kind == "list":
        return [_sample(shape.member)]
    if kind == "map":
        return {"k": _sample(shape.value)}
    if kind == "string":
        enum = shape.metadata.get("enum")
        if enum:
            return enum[0]
        return "src-bucket/src-key" if shape.name in ("CopySource", "RenameSource") else "v-1"
    return {"integer": 1, "long": 1, "boolean": True, "blob": b"x", "float": 1.0,
            "double": 1.0, "timestamp": datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)}[kind]


def _serialized(operation: str, params: dict) -> dict:
    """The WSGI environ of the request botocore sends for ``operation`` with ``params``."""
    import botocore.serialize

    model = service_rules.service_model("s3")
    request = botocore.serialize.create_serializer("rest-xml", include_validation=False) \
        .serialize_to_request(params, model.operation_model(operation))
    url = urlsplit(request["url_path"])
    query = "&".join(part for part in (url.query, urlencode(request["query_string"])) if part)
    body = request["body"] or b""
    return environ(request["method"], url.path, query, request["headers"],
                   body.encode() if isinstance(body, str) else body)


def test_every_operation_of_the_model_is_read_back_from_its_request():
    model = service_rules.service_model("s3")
    for operation in model.operation_names:
        shape = model.operation_model(operation).input_shape
        params = _sample(shape) if shape else {}
        if "Bucket" in params:
            params["Bucket"] = "my-bucket"
        name, read = s3_operation(_serialized(operation, params))
        assert name == _SAME_REQUEST.get(operation, operation), operation
        check_s3_request(_serialized(operation, params))  # a valid request passes
        if name == operation:
            assert set(read) >= set(params) - {"Body", "AnnotationPayload"}, operation


def test_parameters_have_the_types_of_the_model_and_data_is_never_read():
    class Unreadable(io.RawIOBase):
        def read(self, *args):
            raise AssertionError("an object's data was read")

    request = environ("PUT", "/b/data/part-0.csv", headers={
        "Content-Length": "5", "x-amz-meta-Notebook": "fraud.ipynb", "x-amz-meta-run": "3",
        "Expires": "Wed, 21 Oct 2026 07:28:00 GMT", "If-None-Match": "*",
        "x-amz-object-lock-retain-until-date": "2026-10-21T07:28:00Z",
        "x-amz-server-side-encryption-bucket-key-enabled": "true", "x-amz-tagging": "a=1&b=2"})
    request["wsgi.input"] = Unreadable()
    name, params = s3_operation(request)
    assert name == "PutObject"
    assert params["ContentLength"] == 5 and params["BucketKeyEnabled"] is True
    assert params["Metadata"] == {"notebook": "fraud.ipynb", "run": "3"}
    assert params["Expires"] == datetime.datetime(2026, 10, 21, 7, 28, tzinfo=datetime.UTC)
    assert params["ObjectLockRetainUntilDate"] == params["Expires"]
    assert "Body" not in params
    check_s3_request(request)

    listing = s3_operation(environ("GET", "/b", "list-type=2&max-keys=7&fetch-owner=false",
                                   {"If-Modified-Since": "not a date",
                                    "x-amz-optional-object-attributes": "RestoreStatus"}))
    assert listing == ("ListObjectsV2", {"Bucket": "b", "MaxKeys": 7, "FetchOwner": False,
                                         "OptionalObjectAttributes": ["RestoreStatus"]})
    conditional = s3_operation(environ("GET", "/b/k", headers={"If-Modified-Since": "never"}))
    assert conditional == ("GetObject", {"Bucket": "b", "Key": "k"})  # HTTP ignores bad dates


def test_an_xml_body_is_read_and_put_back_for_the_server_behind():
    body = (b'<Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Object><Key>a b</Key>'
            b"</Object><Object><Key>c</Key><VersionId>v1</VersionId></Object>"
            b"<Quiet>true</Quiet></Delete>")
    request = environ("POST", "/b", "delete", body=body)
    assert s3_operation(request) == ("DeleteObjects", {"Bucket": "b", "Delete": {
        "Objects": [{"Key": "a b"}, {"Key": "c", "VersionId": "v1"}], "Quiet": True}})
    assert request["wsgi.input"].read() == body
    acl = (b'<AccessControlPolicy><AccessControlList><Grant><Grantee xmlns:xsi="http://www.w3'
           b'.org/2001/XMLSchema-instance" xsi:type="CanonicalUser"><ID>abc</ID></Grantee>'
           b"<Permission>READ</Permission></Grant></AccessControlList></AccessControlPolicy>")
    _, params = s3_operation(environ("PUT", "/b", "acl", body=acl))
    assert params["AccessControlPolicy"]["Grants"] == [
        {"Grantee": {"Type": "CanonicalUser", "ID": "abc"}, "Permission": "READ"}]


def test_a_key_with_invalid_utf8_is_an_invalid_uri():
    request = environ("GET", "/b/x")
    request["PATH_INFO"] = "/b/\xff"
    with pytest.raises(S3Refusal) as caught:
        check_s3_request(request)
    assert caught.value.code == "InvalidURI"


def test_the_error_answer_is_s3s_xml_escaped():
    started = []
    refusal = S3Refusal("InvalidBucketName", "The specified bucket is not valid.",
                        details={"BucketName": "a<b&c"})
    body = b"".join(s3_error_answer(refusal, {"REQUEST_METHOD": "PUT"},
                                    lambda status, headers: started.append((status, headers))))
    status, headers = started[0]
    assert status == "400 Bad Request"
    assert dict(headers)["Content-Type"] == "application/xml"
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>'
                           b"InvalidBucketName</Code><Message>The specified bucket is not "
                           b"valid.</Message><BucketName>a&lt;b&amp;c</BucketName><RequestId>")
    request_id = dict(headers)["x-amz-request-id"]
    assert f"<RequestId>{request_id}</RequestId><HostId>".encode() in body
    assert body.endswith(b"</HostId></Error>")


# ---------------------------------------------------------------- the naming rules


@pytest.mark.parametrize(("name", "problem"), [
    ("my-bucket", None), ("a.b.c", None), ("my.-bucket", None), ("my-.bucket", None),
    ("sagemaker-us-east-1-123456789012", None), ("a" * 63, None), ("xn-ok", None),
    ("ab", "a bucket name has 3 to 63 characters"),
    ("a" * 64, "a bucket name has 3 to 63 characters"),
    ("My-Bucket", "a bucket name has only lowercase letters, digits, periods and hyphens"),
    ("my_bucket", "a bucket name has only lowercase letters, digits, periods and hyphens"),
    ("-abc", "a bucket name begins and ends with a letter or digit"),
    ("abc.", "a bucket name begins and ends with a letter or digit"),
    ("a..b", "a bucket name cannot contain two adjacent periods"),
    ("192.168.5.4", "a bucket name cannot be formatted as an IP address"),
    ("xn--abc", "the prefix 'xn--' is reserved by Amazon S3"),
    ("sthree-configurator", "the prefix 'sthree-' is reserved by Amazon S3"),
    ("amzn-s3-demo-bucket", "the prefix 'amzn-s3-demo-' is reserved by Amazon S3"),
    ("my-s3alias", "the suffix '-s3alias' is reserved by Amazon S3"),
    ("my--ol-s3", "the suffix '--ol-s3' is reserved by Amazon S3"),
    ("my.mrap", "the suffix '.mrap' is reserved by Amazon S3"),
    ("my--x-s3", "the suffix '--x-s3' is reserved by Amazon S3"),
    ("my--table-s3", "the suffix '--table-s3' is reserved by Amazon S3"),
])
def test_bucket_problem_names_the_rule_broken(name, problem):
    assert bucket_problem(name) == problem


def test_the_bucket_setting_is_checked_by_the_same_rules():
    assert config._check_bucket("my.-bucket") is None
    assert config._check_bucket("amzn-s3-demo-x") == (
        "'amzn-s3-demo-x' is not a valid S3 bucket name: "
        "the prefix 'amzn-s3-demo-' is reserved by Amazon S3.")


def test_key_problem_counts_bytes():
    assert key_problem("k" * 1024) is None
    assert key_problem("日" * 342) == (  # 3 bytes each
        "an object key has at most 1024 bytes of UTF-8 (this one has 1026)")
