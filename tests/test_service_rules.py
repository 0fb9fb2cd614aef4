"""The service model's rules, checked alike by %sm_train before it sends and by the sandbox.

The first tests need nothing but botocore's model: Java patterns as AWS reads
them, lengths, ranges, enums, and a notebook path made into a tag value. The
rest run against the sandbox: it refuses what AWS refuses, notes every request
it validates, and a bad value of any ``%sm_train`` option is a UsageError
raised before anything is written to S3 or any job is created.
"""

from __future__ import annotations

import os

import boto3
import pytest
from IPython.core.error import UsageError

from sm_magics import service_rules
from sm_magics.build import ContainerImage
from sm_magics.training import notebook_tag

# SageMaker's TagValue pattern as this botocore release writes it (older ones anchor it)
TAG_PATTERN = service_rules.service_model("sagemaker").shape_for("TagValue").metadata["pattern"]
assert TAG_PATTERN.strip("^$") == r"([\p{L}\p{Z}\p{N}_.:/=+\-@]*)"
MODELS = ("sagemaker", "s3", "logs", "cloudwatch", "ecr", "sts", "iam")


def rules(shape: str, value) -> list[str]:
    return [v.rule for v in service_rules.check_value("sagemaker", shape, value)]


# ---------------------------------------------------------------- the model's rules


@pytest.mark.parametrize("service", MODELS)
def test_every_pattern_of_the_models_the_tool_calls_compiles(service):
    model = service_rules.service_model(service)
    patterns = {model.shape_for(name).metadata.get("pattern") for name in model.shape_names}
    patterns.discard(None)
    assert patterns
    for pattern in patterns:
        service_rules.compile_pattern(pattern)  # raises PatternError otherwise


def test_a_tag_value_with_parentheses_is_refused_in_aws_words():
    with pytest.raises(service_rules.RequestInvalid) as refused:
        service_rules.validate("sagemaker", "AddTags", {
            "ResourceArn": "arn:aws:sagemaker:us-east-1:123456789012:training-job/a",
            "Tags": [{"Key": "ok", "Value": "fine"}, {"Key": "nb", "Value": "Untitled (1)"}]})
    assert str(refused.value) == (
        "1 validation error detected: Value 'Untitled (1)' at 'tags.2.member.value' failed to "
        f"satisfy constraint: Member must satisfy regular expression pattern: {TAG_PATTERN}")
    assert refused.value.violations[0].members == ("Tags", 1, "Value")


@pytest.mark.parametrize("value", ["café", "日本語のノート", "Ünïcödé 2", "a_b.c:d/e=f+g-h@i", ""])
def test_letters_digits_and_spaces_of_every_script_are_tag_characters(value):
    assert rules("TagValue", value) == []


@pytest.mark.parametrize("value", ["a,b", "#3", "a&b", "'q'", "(x)", "a;b", "😀"])
def test_characters_outside_the_tag_pattern_are_refused(value):
    assert rules("TagValue", value) == ["pattern"]


def test_patterns_keep_their_java_meaning():
    # "." is anything but a line break; [\S\s] is anything
    assert rules("HyperParameterValue", "a\u2028b") == ["pattern"]
    assert rules("HyperParameterValue", "a\nb") == ["pattern"]
    assert rules("TrainingEnvironmentValue", "a\nb\u2028c") == []
    # \p{Alnum} (like \w and \d) is ASCII only
    arn = "arn:aws:lambda:us-east-1:123456789012:function:f"
    assert rules("TrainingRepositoryCredentialsProviderArn", arn) == []
    assert rules("TrainingRepositoryCredentialsProviderArn", arn.replace("aws", "awsé")) == [
        "pattern"]
    # \uD800\uDC00-\uDBFF\uDFFF is the supplementary planes, as one UTF-16 range
    assert rules("Database", "données 😀") == []
    assert rules("Database", "a\x01") == ["pattern"]


def test_a_pattern_that_cannot_be_read_raises_instead_of_passing():
    from botocore.model import ServiceModel

    model = ServiceModel({
        "metadata": {"protocol": "json", "apiVersion": "2020-01-01", "endpointPrefix": "x",
                     "serviceId": "X", "signatureVersion": "v4", "jsonVersion": "1.1"},
        "operations": {"Op": {"name": "Op", "http": {"method": "POST", "requestUri": "/"},
                              "input": {"shape": "In"}}},
        "shapes": {"In": {"type": "structure", "members": {"Name": {"shape": "Name"}}},
                   "Name": {"type": "string", "pattern": "[a-z&&[^b]]+"}},
    }, service_name="x")
    with pytest.raises(service_rules.PatternError):
        service_rules.check(model, "Op", {"Name": "abc"})
    for unreadable in ("(unclosed", "[abc", r"\Qa.b\E", r"[a-\w]"):
        with pytest.raises(service_rules.PatternError):
            service_rules.compile_pattern(unreadable)


def test_lengths_counts_ranges_and_enums_come_from_the_model():
    found = service_rules.check("sagemaker", "CreateTrainingJob", {
        "TrainingJobName": "ok", "RoleArn": "arn:aws:iam::123456789012:role/R",
        "AlgorithmSpecification": {"TrainingImage": "i", "TrainingInputMode": "File"},
        "OutputDataConfig": {"S3OutputPath": "s3://b/o"},
        "ResourceConfig": {"InstanceType": "ml.m5.larg", "InstanceCount": 1,
                           "VolumeSizeInGB": 1},
        "StoppingCondition": {"MaxRuntimeInSeconds": 0},
        "Environment": {"KEY": "x" * 513, **{f"V{i}": "" for i in range(100)}},
        "Tags": [{"Key": f"k{i}", "Value": ""} for i in range(51)],
    })
    assert [(v.path, v.constraint) for v in found] == [
        ("resourceConfig.instanceType", found[0].constraint),
        ("stoppingCondition.maxRuntimeInSeconds",
         "Member must have value greater than or equal to 1"),
        ("environment", "Member must have length less than or equal to 100"),
        ("environment.KEY", "Member must have length less than or equal to 512"),
        ("tags", "Member must have length less than or equal to 50"),
    ]
    assert found[0].constraint.startswith("Member must satisfy enum value set: [ml.")


@pytest.mark.parametrize(("path", "tag"), [
    ("Untitled (1).ipynb", "Untitled _1_.ipynb"),
    ("analyse #3 & co.ipynb", "analyse _3 _ co.ipynb"),
    ("Études/résumé.ipynb", "Études/résumé.ipynb"),
    ("Etudes/re\u0301sume\u0301.ipynb", "Etudes/résumé.ipynb"),  # accents as separate marks
    ("/home/jovyan/日本語 (copy).ipynb", "/home/jovyan/日本語 _copy_.ipynb"),
])
def test_the_notebook_path_is_made_into_a_tag_value(path, tag):
    assert notebook_tag(path) == tag
    assert rules("TagValue", tag) == []


def test_a_long_notebook_path_keeps_its_end():
    path = "/".join(["folder"] * 60) + "/my notebook (2).ipynb"
    tag = notebook_tag(path)
    assert len(tag) == 256
    assert tag.endswith("/my notebook _2_.ipynb")
    assert rules("TagValue", tag) == []


# ---------------------------------------------------------------- the sandbox


def unchecked_sagemaker():
    """A client that sends what it is given: botocore's own checks are off."""
    from botocore.config import Config

    return boto3.client("sagemaker", config=Config(parameter_validation=False))


@pytest.mark.sandbox
def test_the_sandbox_refuses_a_tag_value_aws_refuses(sandbox):
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError) as refused:
        boto3.client("sagemaker").create_training_job(
            TrainingJobName="tagged-badly", RoleArn=os.environ["SM_MAGICS_ROLE"],
            AlgorithmSpecification={"TrainingImage": "img", "TrainingInputMode": "File"},
            OutputDataConfig={"S3OutputPath": "s3://b/o"},
            ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1,
                            "VolumeSizeInGB": 1},
            StoppingCondition={"MaxRuntimeInSeconds": 60},
            Tags=[{"Key": "sm-magics:notebook", "Value": "Untitled (1).ipynb"}])
    error = refused.value.response["Error"]
    assert error["Code"] == "ValidationException"
    assert error["Message"] == (
        "1 validation error detected: Value 'Untitled (1).ipynb' at 'tags.1.member.value' "
        "failed to satisfy constraint: Member must satisfy regular expression pattern: "
        f"{TAG_PATTERN}")
    with pytest.raises(ClientError) as too_long:
        unchecked_sagemaker().describe_training_job(TrainingJobName="x" * 64)
    assert "Member must have length less than or equal to 63" in too_long.value.response[
        "Error"]["Message"]


@pytest.mark.sandbox
def test_the_sandbox_notes_every_request_it_validates(sandbox):
    from botocore.exceptions import ClientError

    from sm_magics.sandbox.validation import LOG_VARIABLE

    log = os.environ.get(LOG_VARIABLE) or sandbox.run_dir / "api.log"

    def noted() -> list[str]:  # other tests' watchers may describe jobs meanwhile
        with open(log, encoding="utf-8", errors="replace") as text:
            return [line for line in text
                    if line.startswith("service rules: sagemaker ListTrainingJobs ")]

    before = len(noted())
    sagemaker = unchecked_sagemaker()
    sagemaker.list_training_jobs(MaxResults=1)
    with pytest.raises(ClientError):
        sagemaker.list_training_jobs(StatusEquals="Sleeping")
    lines = noted()[before:]
    assert lines[0] == "service rules: sagemaker ListTrainingJobs accepted\n"
    assert lines[1].startswith(
        "service rules: sagemaker ListTrainingJobs refused: 1 validation error detected: "
        "Value 'Sleeping' at 'statusEquals'")
    assert len(lines) == 2


@pytest.mark.sandbox
def test_the_sandbox_refuses_iam_and_sts_requests_aws_refuses_in_the_query_protocol(sandbox):
    from botocore.exceptions import ClientError

    iam = boto3.client("iam")
    # a role that does not exist is NoSuchEntity; a name no role can have is refused first
    with pytest.raises(ClientError) as missing:
        iam.get_role(RoleName="no-such-role")
    assert missing.value.response["Error"]["Code"] == "NoSuchEntity"
    with pytest.raises(ClientError) as refused:
        iam.get_role(RoleName="my role (copy)")
    error = refused.value.response["Error"]
    assert error["Code"] == "ValidationError"
    assert error["Message"] == (
        "1 validation error detected: Value 'my role (copy)' at 'roleName' failed to satisfy "
        "constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]+")
    with pytest.raises(ClientError) as nested:  # a value inside a list of structures
        iam.tag_role(RoleName="no-such-role", Tags=[{"Key": "team", "Value": "x" * 257}])
    assert nested.value.response["Error"]["Code"] == "ValidationError"
    assert "at 'tags.1.member.value'" in nested.value.response["Error"]["Message"]
    assert "length less than or equal to 256" in nested.value.response["Error"]["Message"]

    with pytest.raises(ClientError) as sts_refused:
        boto3.client("sts").assume_role(RoleArn=os.environ["SM_MAGICS_ROLE"],
                                        RoleSessionName="a session name")
    assert sts_refused.value.response["Error"]["Code"] == "ValidationError"
    assert "at 'roleSessionName'" in sts_refused.value.response["Error"]["Message"]
    assert iam.get_role(RoleName=os.environ["SM_MAGICS_ROLE"].rsplit("/", 1)[1])["Role"]


@pytest.mark.sandbox
def test_the_sandbox_refuses_a_cloudwatch_request_aws_refuses_in_its_own_protocol(sandbox):
    import datetime

    from botocore.exceptions import ClientError

    cloudwatch = boto3.client("cloudwatch")
    at = datetime.datetime.now(datetime.UTC)
    cloudwatch.put_metric_data(Namespace="sm-magics-tests", MetricData=[
        {"MetricName": "loss", "Value": 0.5, "Timestamp": at}])
    with pytest.raises(ClientError) as refused:
        cloudwatch.put_metric_data(Namespace=":reserved", MetricData=[
            {"MetricName": "loss", "Value": 0.25, "Timestamp": at}])
    error = refused.value.response["Error"]
    assert error["Code"] == "InvalidParameterValue"
    assert "Value ':reserved' at 'namespace' failed to satisfy constraint" in error["Message"]
    assert [m["Namespace"] for m in cloudwatch.list_metrics(MetricName="loss")["Metrics"]
            if m["Namespace"] in (":reserved", "sm-magics-tests")] == ["sm-magics-tests"]


# ---------------------------------------------------------------- %sm_train before any write


def written() -> dict:
    """Every object under ``sm-magics/`` in the sandbox's buckets, and every training job."""
    s3 = boto3.client("s3")
    objects = {}
    for bucket in (b["Name"] for b in s3.list_buckets()["Buckets"]):
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="sm-magics/")
        objects[bucket] = sorted((o["Key"], o["ETag"])
                                 for page in pages for o in page.get("Contents", []))
    jobs = sorted(j["TrainingJobName"] for page in boto3.client("sagemaker").get_paginator(
        "list_training_jobs").paginate() for j in page["TrainingJobSummaries"])
    return {"objects": objects, "jobs": jobs}


@pytest.fixture
def image(ip, sandbox, tmp_path):
    """A container of the session (its image is never run here), and a folder of data."""
    build_dir = tmp_path / "build"
    build_dir.mkdir()
    (build_dir / "train.py").write_text('log_metric("loss", 0.5)\n')
    magics = ip.magics_manager.registry["SageMakerMagics"]
    magics.images["rules"] = ContainerImage(
        "rules", f"{os.environ['SM_MAGICS_REGISTRY']}/rules:0123456789abcdef", "0123456789abcdef",
        None, build_dir, built=False, param_defaults={"lr": 0.1})
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "rows.csv").write_text("a,b\n1,2\n")
    (tmp_path / "empty").mkdir()
    return magics


def many(flag: str, count: int, item: str) -> str:
    return " ".join(f"{flag} {item.format(i=i)}" for i in range(count))


BAD_LINES = [
    ("--tag team=a,b", "--tag team=a,b: SageMaker tag values may hold letters, digits, spaces "
                       "and _ . : / = + - @ only (not ',')."),
    ("--tag 'k(1)=v'", "--tag k(1)=v: SageMaker tag keys may hold letters, digits, spaces and "
                       "_ . : / = + - @ only (not '(', ')')."),
    (f"--tag k={'v' * 257}", "SageMaker takes tag values of at most 256 characters (257 given)."),
    (many("--tag", 50, "k{i}=v"), "--tag: SageMaker takes at most 50 tags (52 given, the "
                                  "sm-magics:... tags included)."),
    (f"--env KEY={'x' * 513}", "--env KEY=...: SageMaker takes environment values of at most "
                               "512 characters (513 given)."),
    (many("--env", 101, "V{i}=1"), "--env: SageMaker takes at most 100 environment variables "
                                   "(101 given)."),
    ("--env 1X=2", "--env 1X=...: SageMaker environment variable names must match the pattern "
                   "[a-zA-Z_][a-zA-Z0-9_]*."),
    ("--hp 'note=a\u2028b'", "SageMaker hyperparameter values may hold any character but a "
                             "line break only (not 'U+2028')."),
    (f"--metric 'auc=auc: ([0-9.]+){'x' * 490}'",
     "SageMaker takes metric regexes of at most 500 characters (504 given)."),
    (many("--metric", 41, "'m{i}=m: ([0-9]+)'"),
     "--metric: SageMaker takes at most 40 metric definitions (42 given)."),
    ("--input 'bad!name=data'", "--input bad!name=data: SageMaker channel names may hold A-Z "
                                "a-z 0-9 . - _ only (not '!')."),
    (f"--input {'c' * 65}=data", "SageMaker takes channel names of at most 64 characters"),
    (many("--input", 20, "c{i}=data"), "--input: SageMaker takes at most 20 input channels "
                                       "(21 given, the params channel included)."),
    ("--input train=s3://", "--input train=s3://: the S3 URI names no bucket."),
    ("--input 'train=s3://a bucket/x'", "'a bucket' is not an S3 bucket name."),
    ("--input train=s3://no-such-bucket-anywhere/data",
     "the bucket no-such-bucket-anywhere does not exist"),
    ("--input train=empty", "--input train=empty: there are no files in 'empty' to upload"),
    (f"--output s3://bucket/{'o' * 1100}",
     "--output: SageMaker takes S3 URIs of at most 1024 characters"),
    ("--instance-type ml.m5.larg", "--instance-type: 'ml.m5.larg' is not one of SageMaker's "
                                   "instance types; did you mean ml.m5.large?"),
    ("--job-name bad_name", "--job-name: 'bad_name' is not a valid training-job name"),
]


@pytest.mark.sandbox
@pytest.mark.parametrize(("options", "message"), BAD_LINES, ids=[b[0][:30] for b in BAD_LINES])
def test_a_bad_option_is_a_usage_error_before_anything_is_written(ip, image, options, message):
    before = written()
    with pytest.raises(UsageError) as refused:
        ip.run_line_magic("sm_train", f"rules {options}")
    assert type(refused.value) is UsageError
    assert message in str(refused.value)
    assert "\n" not in str(refused.value)
    assert written() == before


@pytest.mark.sandbox
def test_a_metric_name_from_the_code_is_checked_too(ip, image):
    # "a=b" cannot be carried by the metric line: it is left out, not an error
    (image.images["rules"].build_dir / "train.py").write_text(
        f'log_metric("a=b", 1)\nlog_metric("{"m" * 256}", 1)\n')
    before = written()
    with pytest.raises(UsageError) as refused:
        ip.run_line_magic("sm_train", "rules")
    assert str(refused.value) == (
        f'log_metric("{"m" * 256}", ...) in the container cell: SageMaker takes metric names of '
        "at most 255 characters (256 given).")
    assert written() == before


@pytest.mark.sandbox
def test_a_notebook_named_untitled_1_tags_its_job(ip, image):
    ip.user_ns["__session__"] = "/home/jovyan/Untitled (1).ipynb"
    run = ip.run_line_magic("sm_train", "rules --tag 'team=fraud detection'")
    tags = boto3.client("sagemaker").list_tags(
        ResourceArn=run.describe()["TrainingJobArn"])["Tags"]
    assert {"Key": "sm-magics:notebook", "Value": "/home/jovyan/Untitled _1_.ipynb"} in tags
    assert {"Key": "team", "Value": "fraud detection"} in tags
