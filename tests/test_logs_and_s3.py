"""AWS as it is: CloudWatch Logs pages, S3's answers, console partitions.

CloudWatch Logs may answer ``GetLogEvents`` with short or empty pages before a
stream's end, and the sandbox does too (:mod:`sm_magics.sandbox.logs_api`):
the log tests run against it. S3 is the sandbox's, with faults injected where
S3 answers what moto does not (a 409 on a conditional write, a 403 on HEAD).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tarfile
import time
import tracemalloc
import uuid
from collections import Counter

import pytest

from sm_magics import config, params, s3
from sm_magics.aws import AwsContext
from sm_magics.cloudwatch import LogReader
from sm_magics.config import resolve
from sm_magics.errors import RemoteFailure
from sm_magics.jobs import TrainingRun
from sm_magics.jobstate import LOG_GROUP, JobSnapshot
from sm_magics.sandbox.logs_api import MAX_PAGE
from sm_magics.ui.job_panel import TextJobPanel
from sm_magics.ui.job_summary import phases_text
from sm_magics.watcher import JobWatcher, SageMakerJobs


@pytest.fixture
def aws(sandbox):
    return AwsContext(resolve())


@pytest.fixture
def faults(sandbox):
    """The sandbox, with every fault rule disarmed again after the test."""
    yield sandbox
    sandbox.clear_faults()


@pytest.fixture
def logs(aws):
    client = aws.client("logs")
    with contextlib.suppress(client.exceptions.ResourceAlreadyExistsException):
        client.create_log_group(logGroupName=LOG_GROUP)
    return client


def write_log(logs, stream: str, lines: list[str], start_ms: int) -> None:
    """Append ``lines`` to ``stream`` (created when new), one millisecond apart."""
    with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
        logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=stream)
    for first in range(0, len(lines), 1000):
        logs.put_log_events(logGroupName=LOG_GROUP, logStreamName=stream, logEvents=[
            {"timestamp": start_ms + first + i, "message": line}
            for i, line in enumerate(lines[first:first + 1000])])


def read_pages(logs, stream: str, token: str | None = None) -> list[tuple[list[str], str]]:
    """Every page of a forward read of ``stream`` from ``token``, until the token repeats."""
    pages = []
    while True:
        kwargs = {"logGroupName": LOG_GROUP, "logStreamName": stream, "startFromHead": True}
        if token:
            kwargs["nextToken"] = token
        page = logs.get_log_events(**kwargs)
        pages.append(([e["message"] for e in page["events"]], page["nextForwardToken"]))
        if page["nextForwardToken"] == token:
            return pages
        token = page["nextForwardToken"]


class ScriptedJobs(SageMakerJobs):
    """A job whose description the test sets; its log is the sandbox's CloudWatch Logs."""

    def __init__(self, aws) -> None:
        super().__init__(aws)
        self.state: dict = {}

    def describe(self, name: str) -> dict:
        return self.state

    def set(self, status: str, phases: list[str], **extra) -> None:
        start = time.time() - 60
        self.state = {
            "TrainingJobStatus": status, "SecondaryStatus": phases[-1],
            "SecondaryStatusTransitions": [{"Status": p, "StartTime": start + i}
                                           for i, p in enumerate(phases)],
            "CreationTime": start, "ResourceConfig": {"InstanceCount": 1}, **extra}


# ---------------------------------------------------------------- CloudWatch Logs


@pytest.mark.sandbox
def test_the_sandbox_pages_log_events_short_and_empty_before_the_end_as_aws_may(logs):
    stream = f"pages-{uuid.uuid4().hex[:8]}/algo-1-1000"
    lines = [f"line {i}" for i in range(3000)]
    write_log(logs, stream, lines, int(time.time() * 1000))

    pages = read_pages(logs, stream)

    assert [line for events, _ in pages for line in events] == lines
    sizes = [len(events) for events, _ in pages]
    assert max(sizes) <= MAX_PAGE and len(pages) > 3000 // MAX_PAGE
    assert 0 in sizes[:-1]  # an empty page with events after it
    assert sizes[-1] == 0  # the end: the token sent came back

    # tokens keep working: read again from the middle, and go on once the stream grew
    middle = len(pages) // 2
    again = read_pages(logs, stream, pages[middle - 1][1])
    assert [events for events, _ in again] == [events for events, _ in pages[middle:]]
    write_log(logs, stream, ["one more"], int(time.time() * 1000) + 10_000)
    assert [line for events, _ in read_pages(logs, stream, pages[-1][1])
            for line in events] == ["one more"]


@pytest.mark.docker
@pytest.mark.sandbox
def test_a_job_printing_3000_lines_has_all_of_them_in_logs_and_its_tail_in_sm_logs(
        ip, sandbox, capsys):
    ip.run_cell_magic("sm_container", "logs-long",
                      'for i in range(3000):\n    print(f"line {i:04d}")\n')
    run = ip.run_line_magic("sm_train", "logs-long --wait")

    expected = [f"line {i:04d}" for i in range(3000)]
    assert [line for line in run.logs() if line.startswith("line ")] == expected
    assert run.watcher.snapshot.log_tail[-5:] == expected[-5:]  # the panel's tail, too
    capsys.readouterr()
    ip.run_line_magic("sm_logs", f"{run.name} --tail 5")
    assert capsys.readouterr().out.splitlines() == expected[-5:]


@pytest.mark.sandbox
def test_a_restarted_job_is_followed_through_restarting_and_its_new_stream_is_read(aws, logs):
    name = f"logs-restart-{uuid.uuid4().hex[:8]}"
    jobs = ScriptedJobs(aws)
    watcher = JobWatcher(aws, name, jobs=jobs, tail=1000)
    shown: list[str] = []
    panel = TextJobPanel(write=shown.append)
    first, second = f"{name}/algo-1-1000", f"{name}/algo-1-2000"
    t0 = int(time.time() * 1000)
    attempt_1 = [f"attempt 1 line {i}" for i in range(350)]
    attempt_2 = [f"attempt 2 line {i}" for i in range(250)]

    def refresh_until(count: int) -> None:
        for _ in range(20):  # an incremental poll may meet an empty page: poll again
            watcher.refresh()
            panel.update(watcher.snapshot)
            if watcher.snapshot.log_count >= count:
                return

    write_log(logs, first, attempt_1[:300], t0)
    jobs.set("InProgress", ["Starting", "Downloading", "Training"])
    refresh_until(300)
    write_log(logs, first, attempt_1[300:], t0 + 300)  # written as the container failed
    jobs.set("InProgress", ["Starting", "Downloading", "Training", "Restarting"])
    refresh_until(350)
    assert watcher.snapshot.log_count == 350  # read while Restarting

    jobs.set("InProgress", ["Starting", "Downloading", "Training", "Restarting", "Starting"])
    refresh_until(350)
    write_log(logs, second, attempt_2[:200], t0 + 10_000)
    jobs.set("InProgress", ["Starting", "Downloading", "Training", "Restarting", "Starting",
                            "Downloading", "Training"])
    refresh_until(550)
    assert watcher.snapshot.log_count == 550  # the stream of the second container start

    write_log(logs, second, attempt_2[200:], t0 + 10_200)
    jobs.set("Stopped", ["Starting", "Downloading", "Training", "Restarting", "Starting",
                         "Downloading", "Training", "MaxWaitTimeExceeded"])
    watcher.refresh()
    panel.update(watcher.snapshot)

    snap = watcher.snapshot
    assert [line.split("] ", 1)[-1] for line in snap.log_tail] == attempt_1 + attempt_2
    assert f"[{name}] InProgress / Restarting" in shown
    assert f"[{name}] Stopped / MaxWaitTimeExceeded" in shown
    assert "Restarting" in phases_text(snap) and "MaxWaitTimeExceeded" in phases_text(snap)
    assert TrainingRun(aws, name, jobs=jobs).logs() == attempt_1 + attempt_2


@pytest.mark.sandbox
def test_polling_a_quiet_log_costs_one_request_per_stream(aws, logs):
    name = f"logs-quiet-{uuid.uuid4().hex[:8]}"
    for host in (1, 2):
        write_log(logs, f"{name}/algo-{host}-1000", [f"host {host}"], int(time.time() * 1000))
    reader = LogReader(logs, name, instance_count=2)
    assert sorted(line.message for line in reader.poll(to_end=True)) == ["host 1", "host 2"]

    before = reader.requests
    assert reader.poll() == []
    assert reader.requests - before == 2


# ---------------------------------------------------------------- S3




def stored(aws, uri: str) -> bytes:
    bucket, key = s3.parse_s3_uri(uri)
    return aws.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()


@pytest.mark.sandbox
def test_a_conflicting_parameter_write_is_retried_and_the_document_stored(aws, faults, calls):
    container = f"conflict-{uuid.uuid4().hex[:8]}"
    faults.inject_fault("s3", method="PUT", path=f"/{container}/params/", status=409,
                        code="ConditionalRequestConflict", count=1)

    uri = s3.upload_params(aws, container, {"lr": 0.05})

    assert [f["failed"] for f in faults.faults()] == [1]
    assert calls["PutObject"] == 2
    assert stored(aws, uri) == params.canonical_json({"lr": 0.05}).encode()


@pytest.mark.sandbox
def test_a_parameter_write_that_keeps_conflicting_fails_and_says_the_object_is_missing(
        aws, faults):
    container = f"conflict-{uuid.uuid4().hex[:8]}"
    faults.inject_fault("s3", method="PUT", path=f"/{container}/params/", status=409,
                        code="ConditionalRequestConflict", count=100)

    with pytest.raises(RemoteFailure) as err:
        s3.upload_params(aws, container, {"lr": 0.05})

    assert err.value.what.startswith("S3 did not store the parameters at s3://")
    assert err.value.reason == ("S3 answered ConditionalRequestConflict to the write, and the "
                                "object is missing")


@pytest.mark.sandbox
def test_a_denied_head_of_the_parameters_counts_as_absent_and_never_overwrites(
        aws, faults, calls):
    container = f"denied-{uuid.uuid4().hex[:8]}"
    faults.inject_fault("s3", method="HEAD", path=f"/{container}/params/", status=403,
                        code="AccessDenied", count=2)

    uri = s3.upload_params(aws, container, {"lr": 0.05})
    assert calls["HeadObject"] == calls["PutObject"] == 1
    calls.clear()
    assert s3.upload_params(aws, container, {"lr": 0.05}) == uri  # HEAD denied again

    assert [f["failed"] for f in faults.faults()] == [2]
    # the write is refused (412: the key exists), so the object is read back, not replaced
    assert calls == Counter({"HeadObject": 1, "PutObject": 1, "GetObject": 1})
    assert stored(aws, uri) == params.canonical_json({"lr": 0.05}).encode()


@pytest.mark.sandbox
def test_keys_s3_refuses_to_delete_are_named_once_the_rest_is_synced(aws, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("keep.csv", "old-1.csv", "old-2.csv", "old-3.csv"):
        (data / name).write_text(name)
    channel = s3.input_uri(aws, f"delete-{uuid.uuid4().hex[:8]}", "train")
    s3.sync_dir(aws, data, channel, manifest_dir=tmp_path / "manifests")
    for name in ("old-1.csv", "old-2.csv", "old-3.csv"):
        (data / name).unlink()
    (data / "new.csv").write_text("new")
    bucket, prefix = s3.parse_s3_uri(channel)
    refused = prefix + "old-2.csv"

    # moto deletes whatever it is asked to (S3 refuses keys e.g. when a bucket policy
    # denies s3:DeleteObject on them), so the refusal is made here, as S3 reports it:
    # the key stays, and the answer lists it under Errors.
    def hold_back(params, **_):
        params["Delete"]["Objects"].remove({"Key": refused})

    def report(parsed, **_):
        parsed.setdefault("Errors", []).append(
            {"Key": refused, "Code": "AccessDenied", "Message": "Access Denied"})

    events = aws.session.events
    events.register("before-parameter-build.s3.DeleteObjects", hold_back)
    events.register("after-call.s3.DeleteObjects", report)
    try:
        with pytest.raises(RemoteFailure) as err:
            s3.sync_dir(aws, data, channel, manifest_dir=tmp_path / "manifests")
    finally:
        events.unregister("before-parameter-build.s3.DeleteObjects", hold_back)
        events.unregister("after-call.s3.DeleteObjects", report)

    assert err.value.what == (f"S3 did not delete 1 of 3 objects under s3://{bucket}/{prefix} "
                              f"that {data} no longer has")
    assert err.value.reason == f"{refused}: AccessDenied (Access Denied)"
    listed = aws.client("s3").list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]
    assert sorted(o["Key"][len(prefix):] for o in listed) == ["keep.csv", "new.csv", "old-2.csv"]
    again = s3.sync_dir(aws, data, channel, manifest_dir=tmp_path / "manifests")
    assert (again.deleted, again.uploaded, again.skipped) == (["old-2.csv"], [], 2)


@pytest.mark.sandbox
def test_downloading_a_100_mb_model_streams_it_through_a_file_with_little_memory(aws, tmp_path):
    weights = tmp_path / "weights.bin"
    digest = hashlib.sha256()
    with open(weights, "wb") as out:
        for _ in range(100):
            chunk = os.urandom(1024 * 1024)
            digest.update(chunk)
            out.write(chunk)
    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        tar.add(weights, arcname="weights.bin")
    weights.unlink()
    bucket = s3.ensure_bucket(aws)
    key = f"sm-magics/big-model-{uuid.uuid4().hex[:8]}/output/model.tar.gz"
    client = aws.client("s3")
    client.upload_file(str(archive), bucket, key)
    jobs = ScriptedJobs(aws)
    jobs.set("Completed", ["Starting", "Downloading", "Training", "Uploading", "Completed"],
             ModelArtifacts={"S3ModelArtifacts": f"s3://{bucket}/{key}"})
    run = TrainingRun(aws, f"big-model-{uuid.uuid4().hex[:8]}", jobs=jobs)
    assert run.model_data == f"s3://{bucket}/{key}"

    tracemalloc.start()
    try:
        folder = run.download_model(tmp_path / "model")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        client.delete_object(Bucket=bucket, Key=key)

    assert peak < 20 * 1024 * 1024
    unpacked = hashlib.sha256()
    with open(folder / "weights.bin", "rb") as file:
        for chunk in iter(lambda: file.read(1024 * 1024), b""):
            unpacked.update(chunk)
    assert unpacked.hexdigest() == digest.hexdigest()
    assert sorted(p.name for p in folder.iterdir()) == ["weights.bin"]


@pytest.mark.sandbox
def test_a_prefix_from_the_sdk_config_or_the_environment_makes_keys_without_empty_segments(
        sandbox, tmp_path):
    user = tmp_path / "sagemaker.yaml"
    user.write_text(json.dumps({"SageMaker": {"PythonSDK": {"Modules": {"Session": {
        "DefaultS3ObjectKeyPrefix": "/team//x/"}}}}}))
    sdk = config.load_sdk_defaults({"SAGEMAKER_USER_CONFIG_OVERRIDE": str(user),
                                    "SAGEMAKER_ADMIN_CONFIG_OVERRIDE": str(tmp_path / "none")})
    aws = AwsContext(resolve(sdk_defaults=sdk))
    container = f"prefix-{uuid.uuid4().hex[:8]}"

    uri = s3.upload_params(aws, container, {"lr": 0.05})

    assert aws.settings["prefix"].value == "team/x"
    assert uri.startswith(f"s3://{aws.bucket}/team/x/{container}/params/")
    assert s3.input_uri(aws, container, "train") == (
        f"s3://{aws.bucket}/team/x/{container}/inputs/train/")
    from_env = resolve(environ={**os.environ, "SM_MAGICS_PREFIX": " /team//y/ "},
                       sdk_defaults=sdk)
    assert from_env["prefix"] == config.Value("team/y", "environment (SM_MAGICS_PREFIX)")


# ---------------------------------------------------------------- console links


@pytest.mark.parametrize(("region", "host"), [
    ("eu-west-1", "eu-west-1.console.aws.amazon.com"),
    ("cn-north-1", "console.amazonaws.cn"),
    ("cn-northwest-1", "console.amazonaws.cn"),
    ("us-gov-west-1", "console.amazonaws-us-gov.com"),
    ("us-gov-east-1", "console.amazonaws-us-gov.com"),
])
def test_console_links_point_at_the_console_of_the_region_s_partition(region, host):
    links = JobSnapshot("fraud-1", region=region).console_links()
    assert links["console"] == f"https://{host}/sagemaker/home?region={region}#/jobs/fraud-1"
    assert links["logs"].startswith(f"https://{host}/cloudwatch/home?region={region}#logStream:")


def test_no_console_links_where_there_is_no_public_console():
    assert JobSnapshot("fraud-1", region="us-iso-east-1").console_links() == {}
    assert JobSnapshot("fraud-1", region="eu-west-1", local=True).console_links() == {}
