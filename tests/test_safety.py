"""Safe handling: owned buckets, encrypted uploads, account-only repositories, no shell.

The S3 tests count the requests the tool's own boto3 clients send (a
``before-call`` hook on each client, nothing replaced) while it really uploads
to the sandbox, then read the stored objects back. The ECR test reads the
created repository's settings and policy from the sandbox's ECR. The last test
reads the package's source with :mod:`ast`.
"""

from __future__ import annotations

import ast
import json
import secrets
from pathlib import Path

import boto3
import pytest

import sm_magics
from sm_magics import s3
from sm_magics.aws import AwsContext
from sm_magics.config import resolve
from sm_magics.ecr import Ecr

PACKAGE_DIR = Path(sm_magics.__file__).resolve().parent
# Operations that take no ExpectedBucketOwner (the bucket does not exist yet, or no bucket).
NO_OWNER_PARAMETER = {"CreateBucket", "ListBuckets"}
UPLOADS = {"PutObject", "CreateMultipartUpload"}


@pytest.fixture
def s3_requests(sandbox, monkeypatch):
    """Every S3 operation the tool's clients send, with its parameters, in order."""
    sent: list[tuple[str, dict]] = []
    original = AwsContext.client

    def record(model, params, **_):
        sent.append((model.name, dict(params)))

    def client(self, service, **kwargs):
        made = original(self, service, **kwargs)
        if service == "s3":
            made.meta.events.register("provide-client-params.s3", record)
        return made

    monkeypatch.setattr(AwsContext, "client", client)
    monkeypatch.setattr(s3, "_READY_BUCKETS", {})  # check the bucket again, as a new process
    return sent


def fresh_context(**flags) -> AwsContext:
    return AwsContext(resolve(flags={"prefix": f"safety-{secrets.token_hex(4)}", **flags}))


@pytest.mark.sandbox
def test_every_request_to_the_own_bucket_names_its_owner_and_every_upload_is_encrypted(
        s3_requests, tmp_path):
    aws = fresh_context()
    data = tmp_path / "data"
    data.mkdir()
    (data / "small.csv").write_text("a,b\n1,2\n")
    (data / "large.bin").write_bytes(b"\0" * (s3.SINGLE_PUT_LIMIT + 1))  # a multipart upload

    params_uri = s3.upload_params(aws, "safety", {"lr": 0.1})
    assert s3.read_params(aws, params_uri) == {"lr": 0.1}
    target = s3.input_uri(aws, "safety", "train")
    assert sorted(s3.sync_dir(aws, data, target, manifest_dir=tmp_path / "m").uploaded) == [
        "large.bin", "small.csv"]
    (data / "small.csv").unlink()
    assert s3.sync_dir(aws, data, target, manifest_dir=tmp_path / "m").deleted == ["small.csv"]

    own = [(op, p) for op, p in s3_requests if p.get("Bucket") == aws.bucket]
    operations = {op for op, _ in own}
    assert {"HeadBucket", "GetBucketEncryption", "HeadObject", "PutObject", "GetObject",
            "ListObjectsV2", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload",
            "DeleteObjects"} <= operations
    assert [op for op, p in own if op not in NO_OWNER_PARAMETER
            and p.get("ExpectedBucketOwner") != aws.account] == []
    uploads = [p for op, p in own if op in UPLOADS]
    assert len(uploads) == 3
    assert all(p.get("ServerSideEncryption") == "AES256" for p in uploads)

    client = boto3.client("s3")
    stored = [params_uri.removeprefix(f"s3://{aws.bucket}/"),
              target.removeprefix(f"s3://{aws.bucket}/") + "large.bin"]
    for key in stored:
        head = client.head_object(Bucket=aws.bucket, Key=key)
        assert head["ServerSideEncryption"] == "AES256", key


@pytest.mark.sandbox
def test_uploads_to_a_kms_encrypted_bucket_use_its_key(s3_requests, sandbox):
    client = boto3.client("s3")
    bucket = f"safety-kms-{secrets.token_hex(4)}"
    client.create_bucket(Bucket=bucket)
    key_arn = boto3.client("kms").create_key(Description="sm-magics safety")["KeyMetadata"]["Arn"]
    client.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={"Rules": [
        {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms",
                                                "KMSMasterKeyID": key_arn}}]})
    aws = fresh_context(bucket=bucket)

    uri = s3.upload_params(aws, "safety", {"depth": 3})

    [put] = [p for op, p in s3_requests if op == "PutObject"]
    assert (put["ServerSideEncryption"], put["SSEKMSKeyId"]) == ("aws:kms", key_arn)
    head = client.head_object(Bucket=bucket, Key=uri.removeprefix(f"s3://{bucket}/"))
    assert head["ServerSideEncryption"] == "aws:kms"


@pytest.mark.sandbox
def test_a_created_repository_scans_on_push_is_encrypted_and_denies_other_accounts(sandbox):
    name = f"safety/repo-{secrets.token_hex(4)}"
    aws = AwsContext(resolve())

    Ecr(aws).ensure(name)

    ecr = boto3.client("ecr")
    [repository] = ecr.describe_repositories(repositoryNames=[name])["repositories"]
    assert repository["imageScanningConfiguration"] == {"scanOnPush": True}
    assert repository["encryptionConfiguration"]["encryptionType"] == "AES256"
    policy = json.loads(ecr.get_repository_policy(repositoryName=name)["policyText"])
    [statement] = policy["Statement"]
    assert (statement["Effect"], statement["Principal"], statement["Action"]) == (
        "Deny", "*", "ecr:*")
    assert statement["Condition"]["StringNotEquals"] == {"aws:PrincipalAccount": aws.account}


# ---------------------------------------------------------------- no shell

SUBPROCESS_FUNCTIONS = {"run", "call", "check_call", "check_output", "Popen"}
ALWAYS_SHELL = {("os", "system"), ("os", "popen"), ("subprocess", "getoutput"),
                ("subprocess", "getstatusoutput"), ("asyncio", "create_subprocess_shell")}


def _dotted(node: ast.expr) -> tuple[str, ...]:
    if isinstance(node, ast.Name):
        return (node.id,)
    if isinstance(node, ast.Attribute):
        return (*_dotted(node.value), node.attr)
    return ()


def _is_text(node: ast.expr) -> bool:
    """A string literal, an f-string, or text built with + / % / str.format."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.JoinedStr):
        return True
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mod)):
        return _is_text(node.left) or _is_text(node.right)
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == "format" and _is_text(node.func.value))


def shell_problems(source: str, filename: str) -> tuple[list[str], int]:
    """Calls that could hand text to a shell, and how many subprocess calls were checked.

    A subprocess command is text when it is a string literal, an f-string,
    concatenated or formatted text, or a variable assigned such text in the file.
    """
    problems, checked = [], 0
    subprocess_names = {"subprocess"}
    tree = ast.parse(source, filename)
    text_names = {target.id for node in ast.walk(tree) if isinstance(node, ast.Assign)
                  and _is_text(node.value) for target in node.targets
                  if isinstance(target, ast.Name)}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "subprocess":
            subprocess_names |= {f"from:{a.asname or a.name}" for a in node.names}
        if isinstance(node, ast.ImportFrom) and node.module == "os":
            problems += [f"{filename}:{node.lineno}: imports os.{a.name}" for a in node.names
                         if ("os", a.name) in ALWAYS_SHELL]
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        where = f"{filename}:{node.lineno}"
        name = _dotted(node.func)
        is_subprocess = (len(name) == 2 and name[0] in subprocess_names
                         and name[1] in SUBPROCESS_FUNCTIONS) or (
            len(name) == 1 and f"from:{name[0]}" in subprocess_names)
        for keyword in node.keywords:
            # shell=<anything but False> on a subprocess call; shell=True on any call
            value = keyword.value
            literal = value.value if isinstance(value, ast.Constant) else None
            risky = literal is True or (is_subprocess and literal is not False)
            if keyword.arg == "shell" and risky:
                problems.append(f"{where}: shell={ast.unparse(value)}")
        if name[-2:] in ALWAYS_SHELL:
            problems.append(f"{where}: {'.'.join(name)} runs a shell")
        if is_subprocess:
            checked += 1
            command = node.args[0] if node.args else next(
                (k.value for k in node.keywords if k.arg == "args"), None)
            if command is not None and (_is_text(command) or (
                    isinstance(command, ast.Name) and command.id in text_names)):
                problems.append(f"{where}: {'.'.join(name)} gets its command as one string")
    return problems, checked


def test_the_scan_finds_every_kind_of_shell_use():
    source = """
import os, subprocess
from subprocess import check_output as co
os.system("ls " + path)
subprocess.run(f"git {x}")
subprocess.Popen(["ls"], shell=True)
co("echo %s" % x)
subprocess.check_call("rm {}".format(p))
subprocess.getoutput(["x"])
subprocess.run(["ls", path])
subprocess.run(["ls"], shell=flag)
Magics(shell=ipython)
command = "ls " + path
subprocess.run(command)
"""
    problems, checked = shell_problems(source, "example.py")
    assert sorted(int(p.split(":")[1]) for p in problems) == [4, 5, 6, 7, 8, 9, 11, 14]
    assert checked == 7


def test_the_package_never_hands_text_to_a_shell():
    problems, checked = [], 0
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        found, count = shell_problems(path.read_text(), str(path.relative_to(PACKAGE_DIR)))
        problems += found
        checked += count
    assert problems == []
    assert checked >= 1  # the sandbox starts its services with argument lists
