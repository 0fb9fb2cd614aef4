"""Training jobs in the sandbox, driven with plain boto3 as a SageMaker user would.

The training image (see ``test_contract.TRAIN``) is built from the sandbox
base, pushed to the sandbox registry, and run by the gateway's executor.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import time
import uuid

import pytest

from log_reading import stream_messages
from test_contract import build_image
from training_jobs import (
    POLL_LIMIT,
    job_clients,
    new_repository,
    only_in_the_registry,
    read_tarball,
    wait_for,
)

pytestmark = [pytest.mark.sandbox, pytest.mark.docker, pytest.mark.slow]

BUCKET = "executor-tests"


@pytest.fixture(scope="module")
def clients(sandbox):
    return job_clients(BUCKET)


@pytest.fixture(scope="module")
def image(sandbox):
    """The test image, pushed to the sandbox registry and removed from the engine."""
    import docker

    client = docker.from_env()
    uri = build_image(client, f"{new_repository('executor-test')}:test")
    with only_in_the_registry(client, uri):
        yield uri


def job_name(prefix: str = "job") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def create_job(clients, image, name=None, *, channels=(), metrics=(), max_runtime=3600,
               tags=None, **hyperparameters) -> str:
    name = name or job_name()
    inputs = [{
        "ChannelName": channel,
        "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri,
                                        "S3DataDistributionType": "FullyReplicated"}},
    } for channel, uri in channels]
    clients["sagemaker"].create_training_job(
        **({"InputDataConfig": inputs} if inputs else {}),
        **({"Tags": tags} if tags else {}),
        TrainingJobName=name,
        AlgorithmSpecification={
            "TrainingImage": image, "TrainingInputMode": "File",
            "MetricDefinitions": [{"Name": n, "Regex": r} for n, r in metrics],
        },
        RoleArn=os.environ["SM_MAGICS_ROLE"],
        HyperParameters={k: str(v) for k, v in hyperparameters.items()},
        OutputDataConfig={"S3OutputPath": f"s3://{BUCKET}/output"},
        ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1,
                        "VolumeSizeInGB": 10},
        StoppingCondition={"MaxRuntimeInSeconds": max_runtime},
    )
    return name


def log_messages(clients, name: str) -> list[str]:
    streams = clients["logs"].describe_log_streams(
        logGroupName="/aws/sagemaker/TrainingJobs", logStreamNamePrefix=f"{name}/")["logStreams"]
    assert len(streams) == 1
    assert streams[0]["logStreamName"].startswith(f"{name}/algo-1-")
    return stream_messages(clients["logs"], streams[0]["logStreamName"])


@pytest.fixture(scope="module")
def completed(clients, image):
    """A job that trained on a channel from S3 and completed."""
    clients["s3"].put_object(Bucket=BUCKET, Key="data/train/rows.csv", Body=b"1,2\n3,4\n")
    clients["s3"].put_object(Bucket=BUCKET, Key="data/train/more/extra.csv", Body=b"5,6\n")
    name = create_job(clients, image, channels=[("train", f"s3://{BUCKET}/data/train/")],
                      metrics=[("loss", r"loss=([0-9.]+)"), ("accuracy", r"accuracy=([0-9.]+)")],
                      mode="ok", lr=0.05, pause=0.5)
    return name, wait_for(clients, name)


def test_a_job_completes_with_its_model_and_output_in_s3(clients, completed):
    name, described = completed

    assert described["TrainingJobStatus"] == "Completed", described.get("FailureReason")
    assert described["SecondaryStatus"] == "Completed"
    model_uri = f"s3://{BUCKET}/output/{name}/output/model.tar.gz"
    assert described["ModelArtifacts"]["S3ModelArtifacts"] == model_uri
    model = json.loads(read_tarball(clients, model_uri)["model.json"])
    assert model["hp"] == {"mode": "ok", "lr": "0.05", "pause": "0.5"}
    assert model["files"] == {"train/rows.csv": "1,2\n3,4\n", "train/more/extra.csv": "5,6\n"}
    assert json.loads(model["env"]["SM_HPS"]) == {"mode": "ok", "lr": 0.05, "pause": 0.5}
    assert model["env"]["SM_CHANNEL_TRAIN"] == "/opt/ml/input/data/train"
    assert model["env"]["TRAINING_JOB_NAME"] == name
    output = read_tarball(clients, f"s3://{BUCKET}/output/{name}/output/output.tar.gz")
    assert output == {"report.txt": b"all good\n"}


def test_a_completed_job_has_its_output_as_log_events(clients, completed):
    name, _ = completed

    messages = log_messages(clients, name)

    assert "a line on stderr" in messages
    stdout = [m for m in messages if m != "a line on stderr"]  # the two streams interleave
    assert stdout == ["starting in mode ok", "epoch=0 loss=1.0000 accuracy=0.50",
                      "epoch=1 loss=0.5000 accuracy=0.60", "epoch=2 loss=0.3333 accuracy=0.70",
                      "done"]


def test_transitions_are_in_order_with_plausible_times(completed):
    _, described = completed
    transitions = described["SecondaryStatusTransitions"]

    assert [t["Status"] for t in transitions] == [
        "Starting", "Downloading", "Training", "Uploading", "Completed"]
    for earlier, later in zip(transitions, transitions[1:], strict=False):
        assert earlier["StartTime"] <= earlier["EndTime"] == later["StartTime"]
    assert transitions[-1]["StartTime"] <= transitions[-1]["EndTime"]
    assert all(t["StatusMessage"] for t in transitions)
    assert described["CreationTime"] == transitions[0]["StartTime"]
    assert described["CreationTime"] <= described["TrainingStartTime"]
    assert described["TrainingStartTime"] <= described["TrainingEndTime"]
    assert described["TrainingEndTime"] <= described["LastModifiedTime"]
    assert described["TrainingTimeInSeconds"] >= 1
    assert described["BillableTimeInSeconds"] == described["TrainingTimeInSeconds"]
    # the program paused 3 x 0.5 s while training
    training = transitions[2]
    assert (training["EndTime"] - training["StartTime"]).total_seconds() >= 1.5


def test_final_metrics_come_from_the_metric_definitions(clients, completed):
    name, described = completed

    final = {m["MetricName"]: m for m in described["FinalMetricDataList"]}

    assert set(final) == {"loss", "accuracy"}
    assert final["loss"]["Value"] == pytest.approx(0.3333)
    assert final["accuracy"]["Value"] == pytest.approx(0.70)
    assert described["TrainingStartTime"] <= final["loss"]["Timestamp"]
    statistics = clients["cloudwatch"].get_metric_statistics(
        Namespace="/aws/sagemaker/TrainingJobs", MetricName="loss",
        Dimensions=[{"Name": "Host", "Value": f"{name}/algo-1"}],
        StartTime=described["CreationTime"] - datetime.timedelta(minutes=1),
        EndTime=described["LastModifiedTime"] + datetime.timedelta(minutes=1),
        Period=60, Statistics=["Minimum", "Maximum", "SampleCount"])["Datapoints"]
    assert sum(point["SampleCount"] for point in statistics) == 3
    assert min(point["Minimum"] for point in statistics) == pytest.approx(0.3333)
    assert max(point["Maximum"] for point in statistics) == pytest.approx(1.0)


def test_a_job_whose_code_raises_fails_with_its_message(clients, image):
    name = create_job(clients, image, mode="raise")

    described = wait_for(clients, name)

    assert described["TrainingJobStatus"] == "Failed"
    assert described["SecondaryStatus"] == "Failed"
    assert described["FailureReason"] == (
        "AlgorithmError: ValueError: learning rate must be positive")
    assert "ModelArtifacts" not in described
    assert [t["Status"] for t in described["SecondaryStatusTransitions"]] == [
        "Starting", "Downloading", "Training", "Failed"]
    assert any("Traceback" in line for line in log_messages(clients, name))


def test_a_job_that_exits_without_a_failure_file_reports_the_exit_code(clients, image):
    name = create_job(clients, image, mode="exit")

    described = wait_for(clients, name)

    assert described["TrainingJobStatus"] == "Failed"
    # stdout and stderr reach the log in the order Docker delivers them
    assert described["FailureReason"] in (
        "AlgorithmError: The training program exited with code 3. Last log line: giving up",
        "AlgorithmError: The training program exited with code 3. Last log line: a line on "
        "stderr")


def test_stop_training_job_stops_a_sleeping_job(clients, image):
    name = create_job(clients, image, mode="sleep", seconds=3600)
    wait_for(clients, name, until=lambda d: d["SecondaryStatus"] == "Training"
             and "in progress" in d["SecondaryStatusTransitions"][-1]["StatusMessage"])
    wait_for_log(clients, name, "starting in mode sleep")

    clients["sagemaker"].stop_training_job(TrainingJobName=name)
    stopping = clients["sagemaker"].describe_training_job(TrainingJobName=name)
    described = wait_for(clients, name)

    assert stopping["TrainingJobStatus"] in ("Stopping", "Stopped")
    assert described["TrainingJobStatus"] == "Stopped"
    assert described["SecondaryStatus"] == "Stopped"
    assert [t["Status"] for t in described["SecondaryStatusTransitions"]] == [
        "Starting", "Downloading", "Training", "Stopping", "Stopped"]
    assert "FailureReason" not in described
    assert_no_job_containers(name)


def test_a_stopped_job_uploads_the_model_its_program_saved_on_sigterm(clients, image):
    name = create_job(clients, image, mode="graceful", seconds=3600)
    wait_for_log(clients, name, "starting in mode graceful")

    clients["sagemaker"].stop_training_job(TrainingJobName=name)
    described = wait_for(clients, name)

    assert described["TrainingJobStatus"] == "Stopped"
    model = json.loads(read_tarball(clients, described["ModelArtifacts"]["S3ModelArtifacts"])
                       ["model.json"])
    assert model["interrupted"] is True
    assert "got SIGTERM, saving the model" in log_messages(clients, name)


def test_max_runtime_stops_the_job_as_max_runtime_exceeded(clients, image):
    name = create_job(clients, image, mode="sleep", seconds=3600, max_runtime=3)

    described = wait_for(clients, name)

    assert described["TrainingJobStatus"] == "Stopped"
    assert described["SecondaryStatus"] == "MaxRuntimeExceeded"
    assert described["SecondaryStatusTransitions"][-1]["Status"] == "MaxRuntimeExceeded"
    assert described["TrainingTimeInSeconds"] >= 3
    assert_no_job_containers(name)


def test_two_jobs_at_once_both_complete(clients, image):
    first = create_job(clients, image, mode="ok", pause=1)
    second = create_job(clients, image, mode="ok", pause=1)

    results = [wait_for(clients, first), wait_for(clients, second)]

    assert [r["TrainingJobStatus"] for r in results] == ["Completed", "Completed"], [
        r.get("FailureReason") for r in results]
    training = [next(t for t in r["SecondaryStatusTransitions"] if t["Status"] == "Training")
                for r in results]
    # they trained at the same time: each started before the other ended
    assert training[0]["StartTime"] < training[1]["EndTime"], training
    assert training[1]["StartTime"] < training[0]["EndTime"], training
    for name in (first, second):
        assert "epoch=2 loss=0.3333 accuracy=0.70" in log_messages(clients, name)


def test_a_job_waiting_for_a_free_worker_stops_at_once(clients, image):
    sagemaker = clients["sagemaker"]
    busy = [create_job(clients, image, mode="sleep", seconds=3600) for _ in range(2)]
    for name in busy:
        wait_for_log(clients, name, "starting in mode sleep")
    waiting = create_job(clients, image, mode="ok")

    sagemaker.stop_training_job(TrainingJobName=waiting)
    described = sagemaker.describe_training_job(TrainingJobName=waiting)
    for name in busy:
        sagemaker.stop_training_job(TrainingJobName=name)

    assert described["TrainingJobStatus"] == "Stopped"
    assert [t["Status"] for t in described["SecondaryStatusTransitions"]] == [
        "Starting", "Stopping", "Stopped"]
    assert "TrainingStartTime" not in described
    assert [wait_for(clients, name)["TrainingJobStatus"] for name in busy] == [
        "Stopped", "Stopped"]
    assert wait_for(clients, waiting)["SecondaryStatus"] == "Stopped"


def test_checkpoints_are_restored_before_and_saved_after_the_job(clients, image):
    s3 = clients["s3"]
    prefix = f"checkpoints/{uuid.uuid4().hex[:8]}"
    s3.put_object(Bucket=BUCKET, Key=f"{prefix}/step-1.txt", Body=b"state")
    name = job_name()
    clients["sagemaker"].create_training_job(
        TrainingJobName=name,
        AlgorithmSpecification={"TrainingImage": image, "TrainingInputMode": "File"},
        RoleArn=os.environ["SM_MAGICS_ROLE"],
        HyperParameters={"mode": "checkpoint"},
        OutputDataConfig={"S3OutputPath": f"s3://{BUCKET}/output"},
        ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1},
        StoppingCondition={"MaxRuntimeInSeconds": 600},
        CheckpointConfig={"S3Uri": f"s3://{BUCKET}/{prefix}"},
    )

    described = wait_for(clients, name)

    assert described["TrainingJobStatus"] == "Completed", described.get("FailureReason")
    model = json.loads(read_tarball(clients, described["ModelArtifacts"]["S3ModelArtifacts"])
                       ["model.json"])
    assert model["checkpoints"] == ["step-1.txt"]
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]]
    assert sorted(keys) == [f"{prefix}/step-1.txt", f"{prefix}/step-2.txt"]


def test_a_missing_image_fails_the_job_with_a_reason(clients):
    missing = f"{os.environ['SM_MAGICS_REGISTRY']}/no-such-image:1"

    described = wait_for(clients, create_job(clients, missing))

    assert described["TrainingJobStatus"] == "Failed"
    assert described["FailureReason"].startswith(
        f"ClientError: Could not pull the training image {missing}")


def test_a_channel_in_a_missing_bucket_is_refused_at_create_as_sagemaker_does(clients, image):
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError) as refused:
        create_job(clients, image, channels=[("train", "s3://no-such-bucket/data/")])

    error = refused.value.response["Error"]
    assert error["Code"] == "ValidationException"
    assert error["Message"].startswith(
        'No S3 objects found under S3 URL "s3://no-such-bucket/data/"')


def test_api_errors_have_the_real_codes(clients, completed, image):
    from botocore.exceptions import ClientError

    sagemaker = clients["sagemaker"]
    name, _ = completed
    with pytest.raises(ClientError) as in_use:
        create_job(clients, image, name)
    assert in_use.value.response["Error"]["Code"] == "ResourceInUse"
    with pytest.raises(ClientError) as missing:
        sagemaker.describe_training_job(TrainingJobName="no-such-job")
    assert missing.value.response["Error"] == {
        "Code": "ValidationException", "Message": "Requested resource not found."}
    assert missing.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(ClientError) as finished:
        sagemaker.stop_training_job(TrainingJobName=name)
    assert finished.value.response["Error"]["Code"] == "ValidationException"


def test_requests_are_validated_against_the_service_model(sandbox):
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ClientError

    unchecked = boto3.client("sagemaker", config=Config(parameter_validation=False))
    with pytest.raises(ClientError) as bad:
        unchecked.create_training_job(
            TrainingJobName="bad_name",
            AlgorithmSpecification={"TrainingImage": "x", "TrainingInputMode": "File"},
            OutputDataConfig={"S3OutputPath": "s3://b/p"},
        )
    error = bad.value.response["Error"]
    assert error["Code"] == "ValidationException"
    # how many: the model's count of required members differs between botocore releases
    assert re.match(r"[2-9] validation errors detected: ", error["Message"])
    assert "Value 'bad_name' at 'trainingJobName' failed to satisfy constraint" in error["Message"]
    assert "Value null at 'roleArn' failed to satisfy constraint: Member must not be null" \
        in error["Message"]
    with pytest.raises(ClientError) as unknown_status:
        unchecked.list_training_jobs(StatusEquals="Sleeping")
    assert unknown_status.value.response["Error"]["Code"] == "ValidationException"


def test_list_training_jobs_filters_sorts_and_pages(clients, completed, image):
    sagemaker = clients["sagemaker"]
    prefix = f"listed-{uuid.uuid4().hex[:6]}"
    names = [create_job(clients, image, f"{prefix}-{i}", mode="ok") for i in range(3)]
    for name in names:
        wait_for(clients, name)

    newest_first = sagemaker.list_training_jobs(NameContains=prefix)["TrainingJobSummaries"]
    assert [s["TrainingJobName"] for s in newest_first] == names[::-1]
    assert {s["TrainingJobStatus"] for s in newest_first} == {"Completed"}
    by_name = sagemaker.list_training_jobs(NameContains=prefix.upper(), SortBy="Name",
                                           SortOrder="Ascending")["TrainingJobSummaries"]
    assert [s["TrainingJobName"] for s in by_name] == names
    page = sagemaker.list_training_jobs(NameContains=prefix, MaxResults=2, SortOrder="Ascending")
    assert [s["TrainingJobName"] for s in page["TrainingJobSummaries"]] == names[:2]
    rest = sagemaker.list_training_jobs(NameContains=prefix, MaxResults=2, SortOrder="Ascending",
                                        NextToken=page["NextToken"])
    assert [s["TrainingJobName"] for s in rest["TrainingJobSummaries"]] == names[2:]
    assert "NextToken" not in rest
    paged = [s["TrainingJobName"]
             for p in sagemaker.get_paginator("list_training_jobs").paginate(
                 NameContains=prefix, PaginationConfig={"PageSize": 1})
             for s in p["TrainingJobSummaries"]]
    assert paged == names[::-1]
    failed = sagemaker.list_training_jobs(StatusEquals="Failed", MaxResults=100)
    assert not {s["TrainingJobName"] for s in failed["TrainingJobSummaries"]} & set(names)
    an_hour_before = newest_first[-1]["CreationTime"] - datetime.timedelta(hours=1)
    after = sagemaker.list_training_jobs(NameContains=prefix, CreationTimeAfter=an_hour_before)
    assert len(after["TrainingJobSummaries"]) == 3
    before = sagemaker.list_training_jobs(NameContains=prefix, CreationTimeBefore=an_hour_before)
    assert before["TrainingJobSummaries"] == []


def test_training_jobs_have_tags_and_other_resources_keep_theirs(clients, image, sandbox):
    sagemaker = clients["sagemaker"]
    name = create_job(clients, image, mode="ok", tags=[{"Key": "params", "Value": "sha-1"}])
    arn = sagemaker.describe_training_job(TrainingJobName=name)["TrainingJobArn"]

    assert sagemaker.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "params", "Value": "sha-1"}]
    sagemaker.add_tags(ResourceArn=arn, Tags=[{"Key": "notebook", "Value": "fraud.ipynb"},
                                              {"Key": "params", "Value": "sha-2"}])
    assert sagemaker.list_tags(ResourceArn=arn)["Tags"] == [
        {"Key": "params", "Value": "sha-2"}, {"Key": "notebook", "Value": "fraud.ipynb"}]
    sagemaker.delete_tags(ResourceArn=arn, TagKeys=["params"])
    assert sagemaker.list_tags(ResourceArn=arn)["Tags"] == [
        {"Key": "notebook", "Value": "fraud.ipynb"}]
    wait_for(clients, name)

    model_arn = sagemaker.create_model(
        ModelName=f"model-{name}", ExecutionRoleArn=os.environ["SM_MAGICS_ROLE"],
        PrimaryContainer={"Image": image}, Tags=[{"Key": "owner", "Value": "moto"}])["ModelArn"]
    assert sagemaker.list_tags(ResourceArn=model_arn)["Tags"] == [
        {"Key": "owner", "Value": "moto"}]


def test_job_records_outlive_the_executor_and_a_running_job_is_marked_failed(sandbox, tmp_path):
    from sm_magics.sandbox.training_api import TrainingJobApi

    endpoint = os.environ["AWS_ENDPOINT_URL"]
    records = tmp_path / "training-jobs"
    records.mkdir()
    now = time.time()
    (records / "interrupted-1.json").write_text(json.dumps({
        "TrainingJobName": "interrupted-1",
        "TrainingJobArn": "arn:aws:sagemaker:us-east-1:123456789012:training-job/interrupted-1",
        "TrainingJobStatus": "InProgress", "SecondaryStatus": "Training",
        "CreationTime": now, "LastModifiedTime": now, "TrainingStartTime": now,
        "StoppingCondition": {"MaxRuntimeInSeconds": 60},
        "SecondaryStatusTransitions": [{"Status": "Training", "StartTime": now,
                                        "StatusMessage": "Training in progress."}],
    }))

    api = TrainingJobApi.for_endpoint(endpoint, tmp_path)
    try:
        described = api.handle("DescribeTrainingJob", {"TrainingJobName": "interrupted-1"})
        listed = api.handle("ListTrainingJobs", {})["TrainingJobSummaries"]
    finally:
        api.shutdown()

    assert described["TrainingJobStatus"] == "Failed"
    assert "stopped while the job was running" in described["FailureReason"]
    assert described["SecondaryStatusTransitions"][-1]["Status"] == "Failed"
    assert [s["TrainingJobName"] for s in listed] == ["interrupted-1"]
    reread = json.loads((records / "interrupted-1.json").read_text())
    assert reread["TrainingJobStatus"] == "Failed"


def wait_for_log(clients, name: str, text: str) -> None:
    """Wait until the job's program has printed ``text`` (it is running)."""
    deadline = time.monotonic() + POLL_LIMIT
    while True:
        try:
            if text in log_messages(clients, name):
                return
        except (AssertionError, clients["logs"].exceptions.ResourceNotFoundException):
            pass
        assert time.monotonic() < deadline, f"{name} never printed {text!r}"
        time.sleep(0.2)


def assert_no_job_containers(name: str) -> None:
    import docker

    from sm_magics.contract import LABEL

    assert docker.from_env().containers.list(all=True, filters={"label": f"{LABEL}={name}"}) == []


def test_stopping_the_sandbox_ends_its_jobs_and_a_restart_reports_them_failed(
        sandbox, image, tmp_path):
    import boto3
    import docker

    from sm_magics.engine import HOME_LABEL
    from sm_magics.sandbox import Sandbox

    box = Sandbox(tmp_path / "second-sandbox")
    box.start()
    try:
        env = box.environment()
        other = {service: boto3.client(service, endpoint_url=env["AWS_ENDPOINT_URL"])
                 for service in ("sagemaker", "s3", "logs")}
        other["s3"].create_bucket(Bucket=BUCKET)
        name = create_job(other, image, mode="sleep", seconds=3600)
        wait_for_log(other, name, "starting in mode sleep")

        box.stop()
        leftovers = docker.from_env().containers.list(
            all=True, filters={"label": f"{HOME_LABEL}={box.home}"})
        box.start()
        env = box.environment()
        described = boto3.client("sagemaker", endpoint_url=env["AWS_ENDPOINT_URL"]) \
            .describe_training_job(TrainingJobName=name)
    finally:
        box.stop()

    assert leftovers == []
    assert described["TrainingJobStatus"] == "Failed"
    assert described["FailureReason"] == (
        "InternalServerError: The sandbox stopped while the job was running.")
