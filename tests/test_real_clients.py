"""The sandbox as real clients see it: the AWS CLI, plain boto3 and the SageMaker SDK v3.

Every request goes to the sandbox on 127.0.0.1 (the ``sandbox`` fixture points
``AWS_ENDPOINT_URL`` there). The SDK test also refuses, inside this process, any
connection or name lookup that is not for 127.0.0.1, and checks the SDK sent no
telemetry (it is opted out with ``SAGEMAKER_USER_CONFIG_OVERRIDE``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from images import MANIFEST, registry_head, repository_of

pytestmark = [pytest.mark.sandbox, pytest.mark.docker, pytest.mark.slow]

ACCOUNT = "123456789012"
BUCKET = f"sagemaker-us-east-1-{ACCOUNT}"
AWS_CLI = Path(sys.executable).with_name("aws")


def aws(*args: str) -> subprocess.CompletedProcess:
    """Run the AWS CLI of this environment against the sandbox, JSON output."""
    if not AWS_CLI.exists():
        pytest.skip("the AWS CLI is not installed here: pip install 'sm-magics[test]'")
    env = {**os.environ, "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
           "AWS_EC2_METADATA_DISABLED": "true", "AWS_PAGER": ""}
    return subprocess.run([str(AWS_CLI), *args, "--output", "json"], capture_output=True,
                          text=True, env=env, timeout=120)


def aws_json(*args: str) -> dict:
    done = aws(*args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout or "{}")






@pytest.fixture(scope="module")
def bucket(sandbox):
    import boto3

    s3 = boto3.client("s3")
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=BUCKET)
    return BUCKET


@pytest.fixture
def pushed(sandbox, ip):
    """A fresh image pushed by a %%sm_container cell."""
    marker = uuid.uuid4().hex[:8]
    return ip.run_cell_magic("sm_container", "rc-push",
                             f"print('trained {marker}')\n(model_dir / 'm.txt').write_text('ok')\n")


# ---------------------------------------------------------------- ECR


def test_the_aws_cli_describes_the_image_a_container_cell_pushed(pushed):
    repository = repository_of(pushed)

    details = aws_json("ecr", "describe-images", "--repository-name", repository)["imageDetails"]
    mine = [d for d in details if d["imageDigest"] == pushed.digest]
    by_tag = aws_json("ecr", "describe-images", "--repository-name", repository,
                      "--image-ids", f"imageTag={pushed.tag}")["imageDetails"]
    listed = aws_json("ecr", "list-images", "--repository-name", repository)["imageIds"]
    got = aws_json("ecr", "batch-get-image", "--repository-name", repository,
                   "--image-ids", f"imageTag={pushed.tag}")

    assert len(mine) == 1
    detail = mine[0]
    assert detail["imageTags"] == [pushed.tag]
    assert detail["registryId"] == ACCOUNT and detail["repositoryName"] == repository
    assert detail["imageManifestMediaType"] == MANIFEST
    assert detail["artifactMediaType"] == "application/vnd.docker.container.image.v1+json"
    assert detail["imageSizeInBytes"] > 1_000_000  # the base layer, compressed
    assert detail["imagePushedAt"]
    assert by_tag == [detail]
    assert {"imageDigest": pushed.digest, "imageTag": pushed.tag} in listed
    assert got["failures"] == []
    manifest = got["images"][0]["imageManifest"]
    assert "sha256:" + hashlib.sha256(manifest.encode()).hexdigest() == pushed.digest
    assert got["images"][0]["imageId"] == {"imageDigest": pushed.digest, "imageTag": pushed.tag}


def test_ecr_answers_missing_repositories_and_images_with_its_own_errors(pushed):
    import boto3

    ecr = boto3.client("ecr")
    repository = repository_of(pushed)

    with pytest.raises(ecr.exceptions.RepositoryNotFoundException) as no_repository:
        ecr.describe_images(repositoryName="rc-no-such-repository")
    with pytest.raises(ecr.exceptions.ImageNotFoundException) as no_image:
        ecr.describe_images(repositoryName=repository, imageIds=[{"imageTag": "no-such-tag"}])
    failures = ecr.batch_get_image(repositoryName=repository,
                                   imageIds=[{"imageTag": "no-such-tag"}])["failures"]

    assert no_repository.value.response["Error"]["Message"] == (
        f"The repository with name 'rc-no-such-repository' does not exist in the registry with "
        f"id '{ACCOUNT}'")
    assert no_image.value.response["Error"]["Message"] == (
        "The image with imageId {imageDigest:'null', imageTag:'no-such-tag'} does not exist "
        f"within the repository with name '{repository}' in the registry with id '{ACCOUNT}'")
    assert failures == [{"imageId": {"imageTag": "no-such-tag"}, "failureCode": "ImageNotFound",
                         "failureReason": "Requested image not found"}]


def test_batch_delete_image_deletes_in_the_registry_and_untags_an_image_with_more_tags(pushed):
    import docker

    repository = repository_of(pushed)
    client = docker.from_env()
    extra = f"{pushed.uri.rsplit(':', 1)[0]}:also-{pushed.tag}"
    client.images.get(pushed.uri).tag(extra)
    for line in client.images.push(extra, stream=True, decode=True):
        assert "error" not in line, line
    client.images.remove(extra)

    untagged = aws_json("ecr", "batch-delete-image", "--repository-name", repository,
                        "--image-ids", f"imageTag=also-{pushed.tag}")
    still = aws_json("ecr", "describe-images", "--repository-name", repository,
                     "--image-ids", f"imageDigest={pushed.digest}")["imageDetails"]
    status_after_untag = registry_head(repository, pushed.tag)
    deleted = aws_json("ecr", "batch-delete-image", "--repository-name", repository,
                       "--image-ids", f"imageDigest={pushed.digest}")
    again = aws_json("ecr", "batch-delete-image", "--repository-name", repository,
                     "--image-ids", f"imageDigest={pushed.digest}")

    assert untagged == {"imageIds": [{"imageDigest": pushed.digest,
                                      "imageTag": f"also-{pushed.tag}"}], "failures": []}
    assert still[0]["imageTags"] == [pushed.tag]
    assert status_after_untag == 200
    assert deleted == {"imageIds": [{"imageDigest": pushed.digest, "imageTag": pushed.tag}],
                       "failures": []}
    assert registry_head(repository, pushed.digest) == 404
    assert registry_head(repository, pushed.tag) == 404
    assert again["failures"][0]["failureCode"] == "ImageNotFound"
    listed = aws_json("ecr", "describe-images", "--repository-name", repository)["imageDetails"]
    assert pushed.digest not in [d["imageDigest"] for d in listed]


# ---------------------------------------------------------------- SageMaker and IAM


def test_the_aws_cli_describes_a_sandbox_training_job(pushed, ip, bucket):
    run = ip.run_line_magic("sm_train", "rc-push --wait")

    described = aws_json("sagemaker", "describe-training-job", "--training-job-name", run.name)

    assert described["TrainingJobName"] == run.name
    assert described["TrainingJobStatus"] == "Completed"
    assert described["AlgorithmSpecification"]["TrainingImage"] == pushed.uri
    assert described["ModelArtifacts"]["S3ModelArtifacts"] == run.model_data
    assert described["RoleArn"] == os.environ["SM_MAGICS_ROLE"]


@pytest.mark.parametrize(("command", "operation", "action"), [
    (("iam", "generate-service-last-accessed-details", "--arn",
      f"arn:aws:iam::{ACCOUNT}:role/SageMakerExecutionRole"),
     "GenerateServiceLastAccessedDetails", "iam:GenerateServiceLastAccessedDetails"),
    (("sagemaker", "describe-training-plan", "--training-plan-name", "plan"),
     "DescribeTrainingPlan", "sagemaker:DescribeTrainingPlan"),
])
def test_an_unimplemented_action_is_a_readable_aws_error(sandbox, command, operation, action):
    done = aws(*command)

    assert done.returncode in (254, 255), done
    assert f"An error occurred (NotImplemented) when calling the {operation} operation: " \
           f"The sm-magics sandbox does not implement {action}" in done.stderr
    assert "<html" not in done.stderr.lower() and "traceback" not in done.stderr.lower()


def test_simulate_principal_policy_evaluates_the_execution_roles_policy(sandbox):
    role = os.environ["SM_MAGICS_ROLE"]

    def decisions(*actions: str, resource: str | None = None, context: str | None = None):
        args = ["iam", "simulate-principal-policy", "--policy-source-arn", role,
                "--action-names", *actions]
        if resource:
            args += ["--resource-arns", resource]
        if context:
            args += ["--context-entries", context]
        results = aws_json(*args)["EvaluationResults"]
        return {r["EvalActionName"]: r["EvalDecision"] for r in results}

    ecr_repo = f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/"
    assert decisions("ecr:DescribeImages", "ecr:BatchDeleteImage", "ecr:ListImages",
                     resource=ecr_repo + "sagemaker-fraud") == {
        "ecr:DescribeImages": "allowed", "ecr:BatchDeleteImage": "allowed",
        "ecr:ListImages": "implicitDeny"}
    assert decisions("ecr:BatchDeleteImage", resource=ecr_repo + "fraud") == {
        "ecr:BatchDeleteImage": "implicitDeny"}
    assert decisions("s3:PutObject", resource=f"arn:aws:s3:::{BUCKET}/sm-magics/x") == {
        "s3:PutObject": "allowed"}
    assert decisions("s3:PutObject", resource="arn:aws:s3:::other-bucket/x") == {
        "s3:PutObject": "implicitDeny"}
    assert decisions("iam:PassRole", resource=role) == {"iam:PassRole": "implicitDeny"}
    assert decisions("iam:PassRole", resource=role, context=(
        "ContextKeyName=iam:PassedToService,ContextKeyValues=sagemaker.amazonaws.com,"
        "ContextKeyType=string")) == {"iam:PassRole": "allowed"}


def test_simulate_principal_policy_refuses_an_unknown_role_as_iam_does(sandbox):
    done = aws("iam", "simulate-principal-policy", "--policy-source-arn",
               f"arn:aws:iam::{ACCOUNT}:role/NoSuchRole", "--action-names", "s3:GetObject")

    assert done.returncode in (254, 255)
    assert "(NoSuchEntity) when calling the SimulatePrincipalPolicy operation: The role with " \
           "name NoSuchRole cannot be found." in done.stderr


def test_the_roles_statements_are_those_of_amazon_sagemaker_full_access_v29():
    from moto.iam.aws_managed_policies import aws_managed_policies_data

    from sm_magics.sandbox.iam_api import DEFAULT_POLICY_FILE

    archived = json.loads(aws_managed_policies_data)["AmazonSageMakerFullAccess"]
    v29 = {s["Sid"]: s for s in archived["Document"]["Statement"]}
    ours = json.loads(DEFAULT_POLICY_FILE.read_text())["Statement"]

    assert archived["DefaultVersionId"] == "v29"
    for statement in ours:
        original = v29[statement["Sid"]]
        assert {k: v for k, v in statement.items() if k != "Action"} == {
            k: v for k, v in original.items() if k != "Action"}
        assert set(statement["Action"]) <= set(original["Action"])


def test_an_empty_s3_prefix_channel_is_refused_as_aws_refuses_it(sandbox, bucket, pushed):
    import boto3
    from botocore.exceptions import ClientError

    s3 = boto3.client("s3")
    s3.put_object(Bucket=bucket, Key="rc-data/full/rows.csv", Body=b"1,2\n")
    request = {
        "AlgorithmSpecification": {"TrainingImage": pushed.uri, "TrainingInputMode": "File"},
        "RoleArn": os.environ["SM_MAGICS_ROLE"],
        "OutputDataConfig": {"S3OutputPath": f"s3://{bucket}/rc-output"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1,
                           "VolumeSizeInGB": 10},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
    }

    def channel(name: str, uri: str) -> dict:
        return {"ChannelName": name, "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": uri, "S3DataDistributionType": "FullyReplicated"}}}

    empty = f"s3://{bucket}/rc-data/empty/"
    name = f"rc-empty-{uuid.uuid4().hex[:8]}"
    with pytest.raises(ClientError) as refused:
        boto3.client("sagemaker").create_training_job(
            TrainingJobName=name, **request,
            InputDataConfig=[channel("train", f"s3://{bucket}/rc-data/full/"),
                             channel("test", empty)])

    assert refused.value.response["Error"] == {
        "Code": "ValidationException",
        "Message": f'No S3 objects found under S3 URL "{empty}" given in input data source. '
                   "Please ensure that the bucket exists in the selected region (us-east-1), "
                   "that objects exist under that S3 prefix, and that the role "
                   f'"{os.environ["SM_MAGICS_ROLE"]}" has "s3:ListBucket" permissions on '
                   f'bucket "{bucket}".'}
    names = [s["TrainingJobName"] for s in boto3.client("sagemaker").list_training_jobs(
        NameContains=name)["TrainingJobSummaries"]]
    assert names == []


# ---------------------------------------------------------------- the SageMaker SDK v3


@contextlib.contextmanager
def loopback_only():
    """Refuse, in this process, every connection and name lookup that is not for 127.0.0.1."""
    connect, getaddrinfo = socket.socket.connect, socket.getaddrinfo
    attempts: list[str] = []

    def is_loopback(host) -> bool:
        return str(host) in ("localhost", "::1") or str(host).startswith("127.")

    def guarded_connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not is_loopback(address[0]):
            attempts.append(f"connect {address}")
            raise OSError(f"the test refuses a connection to {address}")
        return connect(self, address)

    def guarded_getaddrinfo(host, *args, **kwargs):
        if not is_loopback(host):
            attempts.append(f"lookup {host}")
            raise socket.gaierror(f"the test refuses to look up {host}")
        return getaddrinfo(host, *args, **kwargs)

    socket.socket.connect, socket.getaddrinfo = guarded_connect, guarded_getaddrinfo
    try:
        yield attempts
    finally:
        socket.socket.connect, socket.getaddrinfo = connect, getaddrinfo


@pytest.fixture
def sdk(monkeypatch, tmp_path):
    """The SageMaker SDK v3 with telemetry opted out; yields the telemetry calls it tried."""
    config = tmp_path / "sagemaker-config.yaml"
    config.write_text("SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n"
                      "      TelemetryOptOut: true\n")
    monkeypatch.setenv("SAGEMAKER_USER_CONFIG_OVERRIDE", str(config))
    monkeypatch.setenv("SAGEMAKER_ADMIN_CONFIG_OVERRIDE", str(config))
    monkeypatch.delenv("SAGEMAKER_VALIDATE_ROLE", raising=False)
    pytest.importorskip("sagemaker.train", reason="pip install 'sm-magics[sdk]'")
    from sagemaker.core.telemetry import telemetry_logging

    sent: list[tuple] = []
    monkeypatch.setattr(telemetry_logging, "_send_telemetry_request",
                        lambda *args, **kwargs: sent.append(args))
    return sent


def role_check_verdicts(monkeypatch) -> list:
    """Record the verdicts of the SDK's own role check (its call goes through unchanged)."""
    from sagemaker.core.helper import iam_role_resolver

    verdicts: list = []
    evaluate = iam_role_resolver._evaluate_permissions

    def recording(*args, **kwargs):
        verdicts.append(evaluate(*args, **kwargs))
        return verdicts[-1]

    monkeypatch.setattr(iam_role_resolver, "_evaluate_permissions", recording)
    return verdicts


def test_the_sagemaker_sdk_trains_an_image_a_container_cell_pushed(sdk, pushed, bucket,
                                                                 monkeypatch):
    import boto3

    verdicts = role_check_verdicts(monkeypatch)
    with loopback_only() as refused:
        from sagemaker.train import ModelTrainer
        from sagemaker.train.configs import Compute, OutputDataConfig

        trainer = ModelTrainer(
            training_image=pushed.uri, role=os.environ["SM_MAGICS_ROLE"],
            base_job_name="rc-sdk",
            compute=Compute(instance_type="ml.m5.large", instance_count=1),
            output_data_config=OutputDataConfig(s3_output_path=f"s3://{bucket}/rc-sdk"),
        )
        trainer.train(wait=True, logs=True)
        job = trainer._latest_training_job

    described = boto3.client("sagemaker").describe_training_job(
        TrainingJobName=job.training_job_name)
    assert refused == [] and sdk == []
    assert verdicts == [(True, [])]  # every action of its role check came back "allowed"
    assert described["TrainingJobStatus"] == "Completed", described.get("FailureReason")
    assert described["AlgorithmSpecification"]["TrainingImage"] == pushed.uri
    model = described["ModelArtifacts"]["S3ModelArtifacts"]
    assert model == f"s3://{bucket}/rc-sdk/{job.training_job_name}/output/model.tar.gz"
    key = model.removeprefix(f"s3://{bucket}/")
    assert boto3.client("s3").head_object(Bucket=bucket, Key=key)["ContentLength"] > 0


def test_the_sagemaker_sdk_refuses_a_role_without_permissions(sdk, pushed, bucket):
    import boto3

    iam = boto3.client("iam")
    name = f"rc-bare-{uuid.uuid4().hex[:6]}"
    trust = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"},
        "Action": "sts:AssumeRole"}]}
    bare = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))
    started = time.time()
    with loopback_only() as refused:
        from sagemaker.core.helper.iam_role_resolver import RoleValidationError
        from sagemaker.train import ModelTrainer

        with pytest.raises(RoleValidationError) as caught:
            ModelTrainer(training_image=pushed.uri, role=bare["Role"]["Arn"],
                         base_job_name="rc-bare")

    assert refused == [] and sdk == []
    assert "Missing permissions: " in str(caught.value)
    assert "ecr:GetAuthorizationToken" in str(caught.value)
    jobs = boto3.client("sagemaker").list_training_jobs(NameContains="rc-bare")
    assert [j for j in jobs["TrainingJobSummaries"]
            if j["CreationTime"].timestamp() >= started] == []
