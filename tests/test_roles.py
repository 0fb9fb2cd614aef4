"""Finding the execution role with no setting: notebook instances, Studio, the caller's role.

Against the sandbox's IAM, STS and SageMaker (moto), with SageMaker's metadata file
written where a test can (the module reads /opt/ml/metadata/resource-metadata.json
on SageMaker itself).
"""

from __future__ import annotations

import json
import os

import boto3
import pytest

from sm_magics.aws import AwsContext
from sm_magics.config import resolve
from sm_magics.roles import discover_execution_role, role_of_assumed_role

pytestmark = [pytest.mark.sandbox]
TRUST = json.dumps({"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"},
    "Action": "sts:AssumeRole"}]})


@pytest.fixture
def aws(sandbox, monkeypatch):
    """The sandbox's AWS with no role setting: what a role must be found for."""
    monkeypatch.delenv("SM_MAGICS_ROLE", raising=False)
    return AwsContext(resolve(environ=dict(os.environ), sdk_defaults={}, platform={}))


def _role(name: str, path: str = "/") -> str:
    iam = boto3.client("iam")
    try:
        return iam.create_role(RoleName=name, Path=path, AssumeRolePolicyDocument=TRUST)[
            "Role"]["Arn"]
    except iam.exceptions.EntityAlreadyExistsException:
        return iam.get_role(RoleName=name)["Role"]["Arn"]


def test_a_notebook_instance_role_comes_from_describe_notebook_instance(aws, tmp_path):
    arn = _role("NotebookInstanceRole", "/service-role/")
    sagemaker = boto3.client("sagemaker")
    sagemaker.create_notebook_instance(NotebookInstanceName="nb-roles",
                                       InstanceType="ml.t3.medium", RoleArn=arn)
    metadata = tmp_path / "resource-metadata.json"
    metadata.write_text(json.dumps({  # a notebook instance's file names no role
        "ResourceArn": "arn:aws:sagemaker:us-east-1:123456789012:notebook-instance/nb-roles",
        "ResourceName": "nb-roles"}))
    assert discover_execution_role(aws, metadata) == (
        arn, "SageMaker notebook instance nb-roles (DescribeNotebookInstance)")


def test_a_studio_space_falls_back_to_the_domains_default_role(aws, tmp_path):
    arn = _role("StudioDefaultRole")
    domain = boto3.client("sagemaker").create_domain(
        DomainName="roles-domain", AuthMode="IAM", VpcId="vpc-12345678",
        SubnetIds=["subnet-12345678"],
        DefaultUserSettings={"ExecutionRole": arn})["DomainArn"].rsplit("/", 1)[-1]
    metadata = tmp_path / "resource-metadata.json"
    metadata.write_text(json.dumps({"DomainId": domain, "SpaceName": "team",
                                    "UserProfileName": "someone"}))
    found = discover_execution_role(aws, metadata)
    assert found is not None and found[0] == arn
    assert found[1] == f"SageMaker Studio domain {domain} (DescribeDomain DefaultUserSettings)"


def test_the_caller_s_assumed_role_becomes_its_role_arn_with_its_path(aws, sandbox):
    arn = _role("AmazonSageMaker-ExecutionRole-20261201", "/service-role/")
    creds = boto3.client("sts").assume_role(RoleArn=arn, RoleSessionName="SageMaker")[
        "Credentials"]
    session = boto3.session.Session(aws_access_key_id=creds["AccessKeyId"],
                                    aws_secret_access_key=creds["SecretAccessKey"],
                                    aws_session_token=creds["SessionToken"],
                                    region_name="us-east-1")

    class AssumedRole:  # an AwsContext of the assumed role's credentials
        settings = aws.settings

        def client(self, service):
            return session.client(service, endpoint_url=aws.settings.endpoint_url)

    caller = session.client("sts", endpoint_url=aws.settings.endpoint_url).get_caller_identity()
    assert ":assumed-role/AmazonSageMaker-ExecutionRole-20261201/" in caller["Arn"]
    assert role_of_assumed_role(AssumedRole(), caller["Arn"]) == arn  # the path is found
    assert discover_execution_role(AssumedRole(), metadata_path=None) == (
        arn, "the role this notebook runs as (sts:GetCallerIdentity)")


def test_a_user_that_is_no_role_finds_nothing(aws, tmp_path):
    assert discover_execution_role(aws, tmp_path / "absent.json") is None
