"""Faults caused for real in a sandbox of the tests' own, and what the user sees.

Each fault is caused (a registry or endpoint process killed, S3 made to answer
errors through the sandbox's fault injection, Ctrl-C sent to the main thread,
the Docker engine out of reach) while a cell runs. Each test checks that the
cell fails with a readable message saying what to do, that nothing is left
half-written (no tag pointing at a partial image, no params object without
its content, no leftover build folder or container), and that running the
cell again succeeds.

Covered elsewhere, not repeated here: a job that fails and a job that is
stopped (tests/test_training.py: test_a_failing_job_fails_the_cell_with_its_cause,
test_sm_stop_stops_a_running_job, test_a_local_run_can_be_stopped), and Ctrl-C
during ``--wait`` (test_interrupting_a_wait_detaches_and_leaves_the_job_running).
"""

from __future__ import annotations

import _thread
import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
import uuid
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import boto3
import pytest
from IPython.core.error import UsageError

from sm_magics.engine import HOME_LABEL
from sm_magics.errors import RemoteFailure
from sm_magics.registry import MANIFEST_TYPES
from sm_magics.sandbox import Sandbox, temporary_sandbox

pytestmark = [pytest.mark.docker, pytest.mark.sandbox]

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(scope="module")
def box():
    """A sandbox of this module's own: its processes are killed on purpose."""
    with temporary_sandbox() as sandbox:
        yield sandbox


@pytest.fixture
def fresh_box():
    """A sandbox for one test, with an empty registry (the first push takes seconds)."""
    with temporary_sandbox() as sandbox:
        yield sandbox


def rendered(error: RemoteFailure) -> str:
    return "\n".join(error._render_traceback_())


def registry_get(host: str, path: str, method: str = "GET") -> tuple[int, dict, bytes]:
    request = urllib.request.Request(f"http://{host}/v2/{path}", method=method,
                                     headers={"Accept": ", ".join(MANIFEST_TYPES)})
    try:
        with _OPENER.open(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), b""


def tag_state(uri: str) -> str:
    """``absent``, ``whole`` (manifest, config and every layer are there) or ``partial``."""
    host, _, rest = uri.partition("/")
    repository, _, tag = rest.rpartition(":")
    status, _, body = registry_get(host, f"{repository}/manifests/{tag}")
    if status == 404:
        return "absent"
    assert status == 200, status
    manifest = json.loads(body)
    digests = [manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])]
    found = [registry_get(host, f"{repository}/blobs/{d}", "HEAD")[0] for d in digests]
    return "whole" if all(code == 200 for code in found) else "partial"


def uploads_started(sandbox: Sandbox, repository: str) -> bool:
    uploads = (sandbox.run_dir / "registry" / "docker" / "registry" / "v2" / "repositories"
               / repository / "_uploads")
    return uploads.is_dir() and any(uploads.iterdir())


@contextmanager
def in_background(condition, action, timeout: float = 120.0):
    """Run ``action`` from a thread as soon as ``condition()`` is true, within the block."""
    done = threading.Event()

    def watch():
        deadline = time.monotonic() + timeout
        while not done.is_set() and time.monotonic() < deadline:
            if condition():
                action()
                return
            time.sleep(0.02)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def leftover_staging(root: Path) -> list[Path]:
    builds = root / ".sm_magics" / "builds"
    return [p for p in builds.rglob(".*") if p.is_dir()] if builds.exists() else []


def kill(pid: int) -> None:
    os.killpg(pid, signal.SIGKILL)  # a crash: no chance to clean up


# ---------------------------------------------------------------- the registry


def test_a_push_to_a_stopped_registry_fails_readably_and_works_once_the_sandbox_is_started(
        ip, box, tmp_path):
    kill(box.state()["registry"]["pid"])
    body = 'print("registry fault")\n'
    with pytest.raises(RemoteFailure) as err:
        ip.run_cell_magic("sm_container", "fault-registry-down", body)
    text = rendered(err.value)
    assert "the registry cannot be reached" in err.value.what
    assert "connection refused" in text
    assert "run the cell again" in text
    assert "Traceback" not in text

    ip.run_line_magic("sm_sandbox", "start")  # starts the registry again, on its port
    registry = box.state()["registry"]
    uri = f"127.0.0.1:{registry['port']}/sagemaker-fault-registry-down:"
    status, _, body_json = registry_get(f"127.0.0.1:{registry['port']}",
                                        "sagemaker-fault-registry-down/tags/list")
    assert status == 404 or not json.loads(body_json).get("tags")  # no tag was left behind

    image = ip.run_cell_magic("sm_container", "fault-registry-down", body)
    assert image.built and image.uri.startswith(uri)
    assert tag_state(image.uri) == "whole"
    assert leftover_staging(tmp_path) == []


def test_a_registry_that_stops_during_a_push_is_retried_by_the_engine_once_it_is_back(
        ip, fresh_box):
    # Layer uploads are idempotent (content-addressed): the engine retries them with
    # a growing delay, so a registry back within that time loses nothing.
    registry = fresh_box.state()["registry"]
    revived = []

    def kill_and_restart():
        kill(registry["pid"])
        time.sleep(1)
        revived.append(Sandbox(fresh_box.home).start())

    with in_background(lambda: uploads_started(fresh_box, "sagemaker-fault-push-blip"),
                       kill_and_restart):
        image = ip.run_cell_magic("sm_container", "fault-push-blip", 'print("blip")\n')

    assert revived and fresh_box.state()["registry"]["pid"] != registry["pid"]
    assert fresh_box.state()["registry"]["port"] == registry["port"]
    assert image.built and image.digest
    assert tag_state(image.uri) == "whole"


# ---------------------------------------------------------------- Ctrl-C


def test_ctrl_c_during_a_push_leaves_no_partial_tag_and_the_rerun_pushes(ip, fresh_box):
    body = 'print("interrupted push")\n'
    with (in_background(lambda: uploads_started(fresh_box, "sagemaker-fault-push-ctrl-c"),
                        _thread.interrupt_main),
          pytest.raises(KeyboardInterrupt, match="fault-push-ctrl-c was interrupted. An "
                        "unfinished build or push leaves no tag behind; run the cell again")):
        ip.run_cell_magic("sm_container", "fault-push-ctrl-c", body)
    registry = f"127.0.0.1:{fresh_box.state()['registry']['port']}"
    tags = registry_get(registry, "sagemaker-fault-push-ctrl-c/tags/list")
    for tag in (json.loads(tags[2]).get("tags") or [] if tags[0] == 200 else []):
        assert tag_state(f"{registry}/sagemaker-fault-push-ctrl-c:{tag}") == "whole"

    image = ip.run_cell_magic("sm_container", "fault-push-ctrl-c", body)
    assert tag_state(image.uri) == "whole"
    assert image.digest


def test_ctrl_c_during_a_build_leaves_nothing_half_made_and_the_rerun_builds(ip, box, tmp_path):
    import docker

    engine = docker.from_env()
    line = f"fault-build-ctrl-c --run 'sleep 4; echo {uuid.uuid4()}'"  # never in the cache
    body = 'print("interrupted build")\n'

    def sleeping_step() -> bool:
        return any("sleep 4" in " ".join(c.attrs["Config"]["Cmd"] or [])
                   for c in engine.containers.list())

    with (in_background(sleeping_step, _thread.interrupt_main),
          pytest.raises(KeyboardInterrupt, match="run the cell again to finish it")):
        ip.run_cell_magic("sm_container", line, body)
    registry = f"127.0.0.1:{box.state()['registry']['port']}"
    # nothing tagged
    assert engine.images.list(name=f"{registry}/sagemaker-fault-build-ctrl-c") == []

    builds = tmp_path / ".sm_magics" / "builds" / "fault-build-ctrl-c"
    assert leftover_staging(tmp_path) == []
    for folder in builds.iterdir():  # a build folder is whole or absent
        assert {p.name for p in folder.iterdir()} >= {"Dockerfile", "train.py"}
    tags = registry_get(registry, "sagemaker-fault-build-ctrl-c/tags/list")
    assert tags[0] == 404 or not json.loads(tags[2]).get("tags")

    image = ip.run_cell_magic("sm_container", line, body)
    assert image.built and tag_state(image.uri) == "whole"
    deadline = time.monotonic() + 30
    while sleeping_step() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not [c for c in engine.containers.list(all=True)
                if "sleep 4" in " ".join(c.attrs["Config"]["Cmd"] or [])]


# ---------------------------------------------------------------- ECR and Docker


def test_an_expired_ecr_token_is_fetched_again_before_the_push(ip, box):
    from sm_magics import ecr as ecr_mod
    from sm_magics.aws import AwsContext
    from sm_magics.config import resolve

    ecr = ecr_mod.Ecr(AwsContext(resolve()))
    fetched = []
    ecr.client.meta.events.register("before-call.ecr.GetAuthorizationToken",
                                    lambda **_: fetched.append(time.time()))
    ip.run_cell_magic("sm_container", "fault-token", 'print("token 1")\n')
    ip.run_cell_magic("sm_container", "fault-token", 'print("token 2")\n')
    assert len(fetched) <= 1  # a token is reused while it is valid

    # Expiry cannot be caused for real: the sandbox's ECR hands out tokens dated
    # 2015, which are used for a minute. Age the cached token instead.
    key = ecr._key
    ecr_mod._TOKENS[key] = replace(ecr_mod._TOKENS[key], renew_at=time.time() - 1)
    before = len(fetched)
    image = ip.run_cell_magic("sm_container", "fault-token", 'print("token 3")\n')
    assert len(fetched) == before + 1
    assert ecr_mod._TOKENS[key].renew_at > time.time()
    assert tag_state(image.uri) == "whole"


def test_no_docker_engine_for_the_docker_builder_is_a_usage_error_and_creates_nothing(
        ip, box, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(UsageError) as err:
        ip.run_cell_magic("sm_container", "fault-no-engine --builder docker",
                          'print("no engine")\n')
    assert type(err.value) is UsageError
    message = str(err.value)
    assert message.startswith("No Docker engine answers at unix:///nonexistent/docker.sock")
    assert "Set DOCKER_HOST" in message and "\n" not in message
    names = [r["repositoryName"] for r in
             boto3.client("ecr").describe_repositories()["repositories"]]
    assert not {"fault-no-engine", "sagemaker-fault-no-engine"} & set(names)

    monkeypatch.delenv("DOCKER_HOST")
    image = ip.run_cell_magic("sm_container", "fault-no-engine", 'print("no engine")\n')
    assert image.built and tag_state(image.uri) == "whole"


# ---------------------------------------------------------------- S3 errors


@pytest.fixture
def trainable(ip, box):
    ip.run_cell_magic("sm_container", "fault-s3", (
        'import json\nfor name in sorted(channels):\n    print("channel", name)\n'
        '(model_dir / "params.json").write_text(json.dumps(params))\n'))
    yield ip
    box.clear_faults()


def params_object(run) -> bytes:
    channel = next(c for c in run.describe()["InputDataConfig"] if c["ChannelName"] == "params")
    bucket, key = channel["DataSource"]["S3DataSource"]["S3Uri"].removeprefix("s3://").split(
        "/", 1)
    return boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()


def params_keys() -> list[str]:
    s3 = boto3.client("s3")
    keys = []
    for bucket in s3.list_buckets()["Buckets"]:
        listed = s3.list_objects_v2(Bucket=bucket["Name"], Prefix="sm-magics/fault-s3/params/")
        keys += [o["Key"] for o in listed.get("Contents", [])]
    return keys


def test_throttled_parameter_uploads_are_retried_and_the_job_starts(trainable, box):
    box.inject_fault("s3", method="PUT", path="/params/", status=503, code="SlowDown", count=3)
    run = trainable.run_line_magic("sm_train", "fault-s3 --hp attempt=1 --wait")
    assert [f["failed"] for f in box.faults()] == [3]
    assert run.status == "Completed"
    assert json.loads(params_object(run)) == {"attempt": 1}


def test_throttled_input_sync_is_retried_and_every_file_arrives(trainable, box, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(4):
        (data / f"part-{i}.csv").write_text(f"row,{i}\n")
    box.inject_fault("s3", method="PUT", path="/inputs/train/", status=503, code="SlowDown",
                     count=4)
    run = trainable.run_line_magic("sm_train", f"fault-s3 --input train={data} --hp attempt=2")
    assert [f["failed"] for f in box.faults()] == [4]
    channel = next(c for c in run.describe()["InputDataConfig"] if c["ChannelName"] == "train")
    bucket, prefix = channel["DataSource"]["S3DataSource"]["S3Uri"].removeprefix(
        "s3://").split("/", 1)
    s3 = boto3.client("s3")
    stored = {o["Key"][len(prefix):]: s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
              for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]}
    assert stored == {f"part-{i}.csv": f"row,{i}\n".encode() for i in range(4)}
    run.wait()
    assert "channel train" in run.logs()


def test_s3_refusing_writes_fails_the_cell_and_leaves_no_params_object(trainable, box):
    jobs_before = boto3.client("sagemaker").list_training_jobs(
        NameContains="fault-s3", MaxResults=100)["TrainingJobSummaries"]
    keys_before = params_keys()
    box.inject_fault("s3", method="PUT", path="/params/", status=403, code="AccessDenied",
                     count=100, message="Access Denied")
    with pytest.raises(RemoteFailure) as err:
        trainable.run_line_magic("sm_train", "fault-s3 --hp attempt=3")
    text = rendered(err.value)
    assert "S3 did not take the parameters and inputs of training job fault-s3-" in text
    assert "Cause: AccessDenied: Access Denied" in text
    assert "No job was started. Run the cell again" in text
    assert params_keys() == keys_before
    assert boto3.client("sagemaker").list_training_jobs(
        NameContains="fault-s3", MaxResults=100)["TrainingJobSummaries"] == jobs_before

    box.clear_faults()
    run = trainable.run_line_magic("sm_train", "fault-s3 --hp attempt=3 --wait")
    assert json.loads(params_object(run)) == {"attempt": 3}


# ---------------------------------------------------------------- the endpoint


def test_a_killed_endpoint_fails_the_followed_cell_and_a_restart_works_again(
        ip, fresh_box, capsys):
    import docker

    ip.run_cell_magic("sm_container", "fault-endpoint",
                      'import time\nprint("working", flush=True)\ntime.sleep(600)\n')
    sagemaker = boto3.client("sagemaker")
    api_pid = fresh_box.state()["api"]["pid"]

    def training() -> bool:
        jobs = sagemaker.list_training_jobs(NameContains="fault-endpoint")["TrainingJobSummaries"]
        return bool(jobs) and sagemaker.describe_training_job(
            TrainingJobName=jobs[0]["TrainingJobName"])["SecondaryStatus"] == "Training"

    with in_background(training, lambda: kill(api_pid)), pytest.raises(RemoteFailure) as err:
        ip.run_line_magic("sm_train", "fault-endpoint --wait")
    text = rendered(err.value)
    assert text.startswith("RemoteFailure: Lost track of training job fault-endpoint-")
    assert "Could not connect to the endpoint URL" in text
    assert "%sm_attach fault-endpoint-" in text
    name = err.value.what.rsplit(" ", 1)[-1]

    ip.run_line_magic("sm_sandbox", "start")  # afresh: the endpoint's state was in memory
    capsys.readouterr()
    with pytest.raises(RemoteFailure) as err:
        ip.run_line_magic("sm_attach", f"{name} --wait")
    assert "The sandbox's AWS endpoint stopped while the job was running" in rendered(err.value)
    assert docker.from_env().containers.list(
        all=True, filters={"label": f"{HOME_LABEL}={fresh_box.home}"}) == []

    ip.run_cell_magic("sm_container", "fault-endpoint", 'print("quick", flush=True)\n')
    run = ip.run_line_magic("sm_train", "fault-endpoint --wait")
    assert run.status == "Completed" and "quick" in run.logs()


def test_the_fault_injection_path_refuses_a_rule_it_cannot_apply_and_lists_armed_rules(box):
    endpoint = f"http://127.0.0.1:{box.state()['api']['port']}/_sm_magics/faults"
    request = urllib.request.Request(endpoint, method="POST",
                                     data=json.dumps({"service": "s3", "status": 200}).encode())
    with pytest.raises(urllib.error.HTTPError) as err:
        _OPENER.open(request, timeout=10)
    assert err.value.code == 400
    assert "'status' is an HTTP error status" in json.loads(err.value.read())["error"]
    box.inject_fault("logs", status=500, code="InternalFailure", count=2)
    assert [(f["service"], f["count"], f["failed"]) for f in box.faults()] == [("logs", 2, 0)]
    box.clear_faults()
    assert box.faults() == []


def test_a_lost_answer_to_create_training_job_is_retried_without_failing_or_a_second_job(
        trainable, box):
    # The job is created, then its answer is replaced by an error: botocore retries,
    # finds the name taken, and the retry must recognise the job as its own.
    box.inject_fault("sagemaker", target="SageMaker.CreateTrainingJob", after=True, status=500,
                     code="InternalFailure", count=1)
    run = trainable.run_line_magic("sm_train", "fault-s3 --hp attempt=4 --wait")
    assert [f["failed"] for f in box.faults()] == [1]
    assert run.status == "Completed"
    names = [s["TrainingJobName"] for s in boto3.client("sagemaker").list_training_jobs(
        NameContains="fault-s3", MaxResults=100)["TrainingJobSummaries"]]
    assert names.count(run.name) == 1
    assert json.loads(params_object(run)) == {"attempt": 4}


def test_a_jobs_output_survives_cloudwatch_logs_refusing_it_for_a_while(ip, box):
    # CloudWatch Logs answers ServiceUnavailable to the next 12 PutLogEvents: botocore's
    # 5 attempts are used up more than once, and the lines must wait for the next send.
    ip.run_cell_magic("sm_container", "fault-logs", (
        'import time\nfor step in range(6):\n    print("step", step, flush=True)\n'
        '    time.sleep(0.5)\n'))
    box.inject_fault("logs", target="Logs_20140328.PutLogEvents", status=500,
                     code="ServiceUnavailableException", count=12)
    try:
        run = ip.run_line_magic("sm_train", "fault-logs --wait")
        failed = [f["failed"] for f in box.faults()]
    finally:
        box.clear_faults()
    assert failed == [12]
    assert run.status == "Completed"
    assert [line for line in run.logs() if line.startswith("step")] == [
        f"step {n}" for n in range(6)]
