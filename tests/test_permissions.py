"""The default execution role is enough: what the tool asks of IAM, recorded and held to a policy.

The sandbox records every authorization the notebook's requests need (IAM
actions on resource ARNs, at its AWS endpoint and at its registry) and, with a
policy, refuses what the policy does not allow as AWS does. The tutorials run
under AmazonSageMakerFullAccess, the managed policy most notebooks run as, and
the README's IAM policy is checked against what they needed.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

from sm_magics.errors import RemoteFailure
from sm_magics.sandbox import SANDBOX_ACCOUNT, temporary_sandbox
from sm_magics.sandbox.authorization import api_authorizations, registry_authorizations
from sm_magics.sandbox.policy import Policy, PolicyError, matches

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT = SANDBOX_ACCOUNT
PRINCIPAL = f"arn:aws:sts::{ACCOUNT}:assumed-role/SageMakerExecutionRole/sandbox"
REPOSITORY = f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/SageMakerExecutionRole"
TO_SAGEMAKER = {"iam:PassedToService": "sagemaker.amazonaws.com"}
# What the tool tries and does without when IAM denies it (AmazonSageMakerFullAccess
# denies all but SetRepositoryPolicy on sagemaker-* repositories): hardening of what
# it creates, and reading the bucket's encryption (uploads then use the bucket's
# default). Everything else a flow needs must be allowed.
OPTIONAL = {"ecr:TagResource", "ecr:SetRepositoryPolicy", "s3:PutBucketPublicAccessBlock",
            "s3:PutEncryptionConfiguration", "s3:GetEncryptionConfiguration"}


def policy(*statements: dict) -> Policy:
    return Policy({"Version": "2012-10-17", "Statement": list(statements)})


def allow(action, resource="*", **more) -> dict:
    return {"Effect": "Allow", "Action": action, "Resource": resource, **more}


# ---------------------------------------------------------------- the evaluator


def test_wildcards_match_any_run_or_one_character_and_actions_ignore_case():
    assert matches("arn:aws:ecr:*:*:repository/*sagemaker*", f"{REPOSITORY}team/sagemaker-x")
    assert matches("arn:aws:s3:::bucket-?", "arn:aws:s3:::bucket-1")
    assert not matches("arn:aws:s3:::bucket-?", "arn:aws:s3:::bucket-12")
    granted = policy(allow("ecr:Describe*", f"{REPOSITORY}sagemaker-*"))
    assert granted.evaluate("ECR:describeimages", f"{REPOSITORY}sagemaker-x").allowed
    assert not granted.evaluate("ecr:DescribeImages", f"{REPOSITORY}SageMaker-x").allowed


def test_nothing_is_allowed_unless_a_statement_allows_it():
    decision = policy(allow("s3:GetObject", "arn:aws:s3:::data/*")).evaluate(
        "s3:PutObject", "arn:aws:s3:::data/a.csv")
    assert not decision.allowed and not decision.explicit
    assert decision.reason == "because no identity-based policy allows the s3:PutObject action"


def test_not_resource_and_not_action_allow_everything_but_what_they_name():
    granted = policy({"Effect": "Allow", "Action": "sagemaker:*",
                      "NotResource": "arn:aws:sagemaker:*:*:domain/*"},
                     {"Effect": "Allow", "NotAction": "iam:*", "Resource": "arn:aws:logs:*"})
    job = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:training-job/fraud"
    assert granted.evaluate("sagemaker:CreateTrainingJob", job).allowed
    assert not granted.evaluate("sagemaker:DeleteDomain",
                                f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:domain/d-1").allowed
    assert granted.evaluate("logs:GetLogEvents", "arn:aws:logs:x").allowed
    assert not granted.evaluate("iam:PassRole", "arn:aws:logs:x").allowed


def test_an_explicit_deny_wins_over_any_allow():
    decision = policy(allow("s3:*"), {"Effect": "Deny", "Action": "s3:DeleteObject",
                                      "Resource": "arn:aws:s3:::keep/*", "Sid": "KeepIt"}
                      ).evaluate("s3:DeleteObject", "arn:aws:s3:::keep/a")
    assert not decision.allowed and decision.explicit and decision.statement == "KeepIt"
    assert decision.reason == "with an explicit deny in an identity-based policy"


def test_conditions_hold_on_the_keys_given_and_a_missing_key_fails_them():
    passing = policy(allow("iam:PassRole", "arn:aws:iam::*:role/*", Condition={
        "StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}))
    assert passing.evaluate("iam:PassRole", ROLE, TO_SAGEMAKER).allowed
    assert not passing.evaluate("iam:PassRole", ROLE, {"iam:PassedToService": "ec2.amazonaws.com"}
                                ).allowed
    assert not passing.evaluate("iam:PassRole", ROLE).allowed
    liked = policy(allow("iam:PassRole", "*", Condition={
        "StringLike": {"iam:PassedToService": ["sagemaker.*", "glue.*"]}}))
    assert liked.evaluate("iam:PassRole", ROLE, TO_SAGEMAKER).allowed
    negated = policy(allow("iam:PassRole", "*", Condition={
        "StringNotEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}))
    assert negated.evaluate("iam:PassRole", ROLE).allowed  # IAM: true when the key is missing


def test_a_condition_that_cannot_be_evaluated_never_lets_a_request_through():
    unknown = {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}
    assert not policy(allow("s3:*", Condition=unknown)).evaluate("s3:GetObject", "x").allowed
    denied = policy(allow("s3:*"), {"Effect": "Deny", "Action": "s3:*", "Resource": "*",
                                    "Condition": unknown}).evaluate("s3:GetObject", "x")
    assert not denied.allowed and denied.explicit
    variable = policy(allow("s3:*", "arn:aws:s3:::home/${aws:username}/*"))
    assert not variable.evaluate("s3:GetObject", "arn:aws:s3:::home/${aws:username}/a").allowed


def test_a_resource_policy_or_a_broken_document_is_refused_with_the_reason(tmp_path):
    with pytest.raises(PolicyError, match="Principal: that is a resource policy"):
        policy({"Effect": "Allow", "Principal": "*", "Action": "s3:*", "Resource": "*"})
    with pytest.raises(PolicyError, match="Effect must be Allow or Deny"):
        policy({"Effect": "allow", "Action": "s3:*", "Resource": "*"})
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(PolicyError, match="is not JSON"):
        Policy.load(tmp_path / "bad.json")


def test_the_shipped_managed_policy_allows_pushes_to_sagemaker_repositories_only():
    managed = Policy.load("AmazonSageMakerFullAccess")
    assert managed.evaluate("ecr:PutImage", f"{REPOSITORY}sagemaker-digits").allowed
    assert managed.evaluate("ecr:CreateRepository", f"{REPOSITORY}plain-name").allowed
    for action in ("ecr:InitiateLayerUpload", "ecr:PutImage", "ecr:SetRepositoryPolicy"):
        assert not managed.evaluate(action, f"{REPOSITORY}plain-name").allowed
    assert not managed.evaluate("ecr:TagResource", f"{REPOSITORY}sagemaker-digits").allowed
    assert managed.evaluate("iam:PassRole", ROLE, TO_SAGEMAKER).allowed
    assert not managed.evaluate("iam:PassRole", ROLE).allowed
    assert managed.evaluate("s3:PutObject", "arn:aws:s3:::sagemaker-us-east-1-1/a").allowed
    assert not managed.evaluate("s3:PutObject", "arn:aws:s3:::data/a").allowed


# ---------------------------------------------------------------- what each request needs


def signed(service: str, **environ) -> dict:
    auth = (f"AWS4-HMAC-SHA256 Credential=sandbox/20261201/us-east-1/{service}/aws4_request, "
            "SignedHeaders=host, Signature=0")
    return {"HTTP_AUTHORIZATION": auth, "REQUEST_METHOD": "POST", "PATH_INFO": "/",
            "QUERY_STRING": "", **environ}


def needed(environ: dict, body: dict | bytes | None = None) -> list[tuple]:
    raw = json.dumps(body).encode() if isinstance(body, dict) else body or b""
    return [(a.action, a.resource, dict(a.context)) for a in api_authorizations(environ, raw)[0]]


def test_json_api_requests_need_their_action_on_the_resource_they_name():
    ecr = "AmazonEC2ContainerRegistry_V20150921."
    assert needed(signed("ecr", HTTP_X_AMZ_TARGET=ecr + "GetAuthorizationToken"), {}) == [
        ("ecr:GetAuthorizationToken", "*", {})]
    assert needed(signed("ecr", HTTP_X_AMZ_TARGET=ecr + "CreateRepository"), {
        "repositoryName": "x", "tags": [{"Key": "a", "Value": "b"}]}) == [
        ("ecr:CreateRepository", REPOSITORY + "x", {}), ("ecr:TagResource", REPOSITORY + "x", {})]
    job = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:training-job/fraud-1"
    assert needed(signed("sagemaker", HTTP_X_AMZ_TARGET="SageMaker.CreateTrainingJob"), {
        "TrainingJobName": "Fraud-1", "RoleArn": ROLE, "Tags": [{"Key": "a", "Value": "b"}]}) == [
        ("sagemaker:CreateTrainingJob", job, {}), ("iam:PassRole", ROLE, TO_SAGEMAKER),
        ("sagemaker:AddTags", job, {})]
    assert needed(signed("sagemaker", HTTP_X_AMZ_TARGET="SageMaker.ListTrainingJobs"), {}) == [
        ("sagemaker:ListTrainingJobs", "*", {})]
    group = f"arn:aws:logs:us-east-1:{ACCOUNT}:log-group:/aws/sagemaker/TrainingJobs:log-stream:"
    assert needed(signed("logs", HTTP_X_AMZ_TARGET="Logs_20140328.GetLogEvents"), {
        "logGroupName": "/aws/sagemaker/TrainingJobs", "logStreamName": "j/algo-1"}) == [
        ("logs:GetLogEvents", group + "j/algo-1", {})]
    assert needed(signed("logs", HTTP_X_AMZ_TARGET="Logs_20140328.DescribeLogStreams"), {
        "logGroupName": "/aws/sagemaker/TrainingJobs", "logStreamNamePrefix": "j/"}) == [
        ("logs:DescribeLogStreams", group, {})]


def test_query_api_requests_need_their_action_and_get_caller_identity_needs_none():
    form = {"CONTENT_TYPE": "application/x-www-form-urlencoded"}
    assert needed(signed("sts", **form), b"Action=GetCallerIdentity&Version=2011-06-15") == []
    assert needed(signed("iam", **form), b"Action=GetRole&RoleName=SageMakerExecutionRole") == [
        ("iam:GetRole", ROLE, {})]


@pytest.mark.parametrize("method, path, query, action, resource", [
    ("PUT", "/b", "", "s3:CreateBucket", "arn:aws:s3:::b"),
    ("HEAD", "/b", "", "s3:ListBucket", "arn:aws:s3:::b"),
    ("GET", "/b", "list-type=2&prefix=p/", "s3:ListBucket", "arn:aws:s3:::b"),
    ("GET", "/b", "location", "s3:GetBucketLocation", "arn:aws:s3:::b"),
    ("GET", "/b", "encryption", "s3:GetEncryptionConfiguration", "arn:aws:s3:::b"),
    ("PUT", "/b", "publicAccessBlock", "s3:PutBucketPublicAccessBlock", "arn:aws:s3:::b"),
    ("PUT", "/b/p/k.json", "", "s3:PutObject", "arn:aws:s3:::b/p/k.json"),
    ("GET", "/b/p/k.json", "", "s3:GetObject", "arn:aws:s3:::b/p/k.json"),
    ("HEAD", "/b/p/k.json", "", "s3:GetObject", "arn:aws:s3:::b/p/k.json"),
    ("DELETE", "/b/p/k.json", "", "s3:DeleteObject", "arn:aws:s3:::b/p/k.json"),
    ("POST", "/b/big", "uploads", "s3:PutObject", "arn:aws:s3:::b/big"),
    ("DELETE", "/b/big", "uploadId=1", "s3:AbortMultipartUpload", "arn:aws:s3:::b/big"),
    ("GET", "/", "", "s3:ListAllMyBuckets", "*"),
])
def test_s3_requests_need_the_action_of_their_method_path_and_sub_resource(
        method, path, query, action, resource):
    environ = signed("s3", REQUEST_METHOD=method, PATH_INFO=path, QUERY_STRING=query)
    assert needed(environ) == [(action, resource, {})]


def test_delete_objects_needs_s3_delete_object_on_each_key():
    body = (b'<Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Object><Key>a/1</Key>'
            b"</Object><Object><Key>a/2</Key></Object><Quiet>true</Quiet></Delete>")
    environ = signed("s3", PATH_INFO="/b", QUERY_STRING="delete")
    assert needed(environ, body) == [("s3:DeleteObject", "arn:aws:s3:::b/a/1", {}),
                                     ("s3:DeleteObject", "arn:aws:s3:::b/a/2", {})]


def test_an_sse_kms_upload_needs_the_key_too():
    environ = signed("s3", REQUEST_METHOD="PUT", PATH_INFO="/b/k",
                     HTTP_X_AMZ_SERVER_SIDE_ENCRYPTION="aws:kms",
                     HTTP_X_AMZ_SERVER_SIDE_ENCRYPTION_AWS_KMS_KEY_ID="1234abcd")
    assert needed(environ)[1] == (
        "kms:GenerateDataKey", f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1234abcd", {})


@pytest.mark.parametrize("method, path, action", [
    ("HEAD", "/v2/sagemaker-x/blobs/sha256:ab", "ecr:BatchCheckLayerAvailability"),
    ("POST", "/v2/sagemaker-x/blobs/uploads/", "ecr:InitiateLayerUpload"),
    ("PATCH", "/v2/sagemaker-x/blobs/uploads/u-1?_state=s", "ecr:UploadLayerPart"),
    ("PUT", "/v2/sagemaker-x/blobs/uploads/u-1?digest=sha256%3Aab", "ecr:CompleteLayerUpload"),
    ("PUT", "/v2/sagemaker-x/manifests/3f1c", "ecr:PutImage"),
    ("GET", "/v2/sagemaker-x/manifests/3f1c", "ecr:BatchGetImage"),
    ("HEAD", "/v2/sagemaker-x/manifests/3f1c", "ecr:BatchGetImage"),
    ("GET", "/v2/sagemaker-x/blobs/sha256:ab", "ecr:GetDownloadUrlForLayer"),
])
def test_registry_requests_are_the_ecr_actions_of_a_push_or_a_pull(method, path, action):
    assert [(a.action, a.resource) for a in registry_authorizations(method, path)] == [
        (action, REPOSITORY + "sagemaker-x")]
    assert registry_authorizations("GET", "/v2/") == []


# ---------------------------------------------------------------- enforced in the sandbox


@pytest.fixture(scope="module")
def enforced():
    """A sandbox of this module's own, holding the notebook to AmazonSageMakerFullAccess."""
    with temporary_sandbox(policy="AmazonSageMakerFullAccess") as box:
        yield box


def refusal(exc: ClientError) -> tuple[int, str, str]:
    error = exc.response["Error"]
    return exc.response["ResponseMetadata"]["HTTPStatusCode"], error["Code"], error["Message"]


@pytest.mark.docker
@pytest.mark.sandbox
def test_what_the_policy_does_not_allow_is_refused_in_aws_words(enforced):
    ecr, s3 = boto3.client("ecr"), boto3.client("s3")
    ecr.create_repository(repositoryName="refused-words")
    with pytest.raises(ClientError) as err:
        ecr.set_repository_policy(repositoryName="refused-words", policyText="{}")
    assert refusal(err.value) == (
        400, "AccessDeniedException",
        f"User: {PRINCIPAL} is not authorized to perform: ecr:SetRepositoryPolicy on resource: "
        f"{REPOSITORY}refused-words because no identity-based policy allows the "
        "ecr:SetRepositoryPolicy action")
    with pytest.raises(ClientError) as err:
        s3.put_object(Bucket="not-for-notebooks", Key="a", Body=b"1")
    assert refusal(err.value) == (403, "AccessDenied", "Access Denied")

    registry = enforced.environment()["SM_MAGICS_REGISTRY"]
    request = urllib.request.Request(f"http://{registry}/v2/refused-words/blobs/uploads/",
                                     method="POST")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with pytest.raises(urllib.error.HTTPError) as answer:
        opener.open(request, timeout=10)
    assert answer.value.code == 403
    assert json.loads(answer.value.read())["errors"][0] == {
        "code": "DENIED",
        "message": f"User: {PRINCIPAL} is not authorized to perform: ecr:InitiateLayerUpload on "
                   f"resource: {REPOSITORY}refused-words because no identity-based policy "
                   "allows the ecr:InitiateLayerUpload action"}

    recorded = {(a["action"], a["resource"], a["allowed"]) for a in enforced.authorizations()}
    assert ("ecr:CreateRepository", REPOSITORY + "refused-words", True) in recorded
    assert ("ecr:SetRepositoryPolicy", REPOSITORY + "refused-words", False) in recorded
    assert ("ecr:InitiateLayerUpload", REPOSITORY + "refused-words", False) in recorded


@pytest.mark.docker
@pytest.mark.sandbox
def test_a_hand_named_repository_without_sagemaker_is_created_but_the_push_is_denied(
        ip, enforced, capsys):
    body = 'print("pushed where the role may not push")\n'
    with pytest.raises(RemoteFailure) as err:
        ip.run_cell_magic("sm_container", "plain --repository plain-name", body)
    panel = capsys.readouterr().out
    assert ("Skipped the policy denying principals of other accounts on the new repository "
            "plain-name: ecr:SetRepositoryPolicy is not allowed for these credentials (the "
            "repository works without it).") in panel
    assert ("Skipped the tag created-by=sm-magics on the new repository plain-name: "
            "ecr:TagResource is not allowed") in panel
    found = boto3.client("ecr").describe_repositories(repositoryNames=["plain-name"])
    assert found["repositories"][0]["repositoryArn"] == REPOSITORY + "plain-name"

    text = "\n".join(err.value._render_traceback_())
    assert err.value.what.startswith("Push of ") and err.value.what.endswith(" was denied")
    assert (f"not authorized to perform: ecr:InitiateLayerUpload on resource: "
            f"{REPOSITORY}plain-name because no identity-based policy allows") in text
    assert (f"These credentials may not push to {REPOSITORY}plain-name. Grant "
            "ecr:BatchCheckLayerAvailability, ecr:InitiateLayerUpload, ecr:UploadLayerPart, "
            "ecr:CompleteLayerUpload, ecr:PutImage on it") in text
    assert "Traceback" not in text


# ---------------------------------------------------------------- the tutorials' flow


def pattern(resource: str) -> str:
    """A recorded resource with this run's names made wildcards (job names, keys, streams)."""
    resource = re.sub(r"(training-job/)[^/]+$", r"\1*", resource)
    resource = re.sub(r"(:log-stream:).+$", r"\1*", resource)
    resource = re.sub(r"(repository/sagemaker-).+$", r"\1*", resource)
    return re.sub(r"^(arn:aws:s3:::[^/]+/).+$", r"\1*", resource)


TUTORIALS = ("quickstart.ipynb", "parameters-and-data.ipynb",
             "own-dockerfile-and-local-runs.ipynb", "distributed-training.ipynb")


@pytest.fixture(scope="module")
def default_flow(tutorial) -> list[dict]:
    """The authorizations the tutorials' requests needed, held to AmazonSageMakerFullAccess.

    The runs are the plain-profile ones test_notebooks checks (conftest's ``tutorial``).
    """
    records = []
    for name in TUTORIALS:
        records += tutorial(name, "plain").authorizations
    return records


@pytest.mark.docker
@pytest.mark.sandbox
@pytest.mark.slow
@pytest.mark.tutorial
def test_the_tutorials_need_nothing_outside_the_default_execution_role(default_flow):
    assert default_flow and all(a["enforced"] for a in default_flow)
    needed = sorted({(a["action"], pattern(a["resource"])) for a in default_flow
                     if a["action"] not in OPTIONAL})
    print("\nWhat the tutorials need (AmazonSageMakerFullAccess allows each):")
    for action, resource in needed:
        print(f"  {action:34} {resource}")
    refused = sorted({(a["action"], pattern(a["resource"])) for a in default_flow
                      if not a["allowed"]})
    print("Tried, and done without when denied:", refused)
    assert [a for a in default_flow if not a["allowed"] and a["action"] not in OPTIONAL] == []
    for action in ("ecr:PutImage", "sagemaker:CreateTrainingJob", "iam:PassRole",
                   "s3:PutObject", "logs:GetLogEvents"):
        assert any(a == action for a, _ in needed), action
    passed = [a for a in default_flow if a["action"] == "iam:PassRole"]
    assert all(a["context"] == {"iam:PassedToService": "sagemaker.amazonaws.com"}
               for a in passed)


def readme_policy() -> tuple[Policy, set[str], str]:
    """The README's IAM policy (with the sandbox's account), its actions, and its section."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Running against real AWS", 1)[1].split("\n## ", 1)[0]
    document = json.loads(re.search(r"```json\n(.*?)```", section, re.S).group(1).replace(
        "111122223333", ACCOUNT))
    actions = {action for statement in document["Statement"]
               for action in ([statement["Action"]] if isinstance(statement["Action"], str)
                              else statement["Action"])}
    return Policy(document, name="README"), actions, section


@pytest.mark.docker
@pytest.mark.sandbox
@pytest.mark.slow
@pytest.mark.tutorial
def test_the_readme_policy_allows_everything_the_tutorials_needed(default_flow):
    readme, actions, section = readme_policy()
    needed = {(a["action"], a["resource"], json.dumps(a.get("context", {})))
              for a in default_flow if a["action"] not in OPTIONAL}
    missing = sorted({action for action, _, _ in needed
                      if not any(matches(given, action, ignore_case=True) for given in actions)})
    assert missing == [], f"the README's IAM policy lacks {missing}"
    refused = sorted((action, resource) for action, resource, context in needed
                     if not readme.evaluate(action, resource, json.loads(context)).allowed)
    assert refused == [], f"the README's IAM policy does not allow {refused}"
    for action in OPTIONAL:
        assert action in section, f"the README does not say what {action} is for"
