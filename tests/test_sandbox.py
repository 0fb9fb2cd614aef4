"""The sandbox's services: really started, really answering, really stopped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import boto3
import pytest
from IPython.core.error import UsageError

from images import build_from_files
from sm_magics.sandbox import SANDBOX_ACCOUNT, Sandbox
from sm_magics.sandbox.base_image import BASE_IMAGE

pytestmark = [pytest.mark.docker, pytest.mark.sandbox]


def process_running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def port_answers(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def clients(env: dict[str, str]):
    kwargs = {
        "endpoint_url": env["AWS_ENDPOINT_URL"],
        "region_name": env["AWS_REGION"],
        "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
    }
    return {name: boto3.client(name, **kwargs) for name in ("s3", "ecr", "sts", "logs", "iam",
                                                             "sagemaker")}


def tiny_image(client, tag: str) -> None:
    """A one-file image built FROM scratch: enough to exercise a push."""
    build_from_files(client, tag, {"Dockerfile": b"FROM scratch\nCOPY hello.txt /hello.txt\n",
                                   "hello.txt": tag.encode()})


@pytest.fixture
def own_sandbox(tmp_path, monkeypatch):
    """A sandbox of this test's own, stopped afterwards whatever happens."""
    monkeypatch.setenv("SM_MAGICS_SANDBOX_HOME", str(tmp_path / "home"))
    box = Sandbox(tmp_path / "home")
    yield box
    box.stop()


def test_start_runs_services_that_answer_s3_ecr_sts_and_the_registry(own_sandbox):
    status = own_sandbox.start()
    assert status.running
    state = own_sandbox.state()
    assert process_running(state["api"]["pid"])
    assert process_running(state["registry"]["pid"])
    env = own_sandbox.environment()
    aws = clients(env)

    assert aws["sts"].get_caller_identity()["Account"] == SANDBOX_ACCOUNT
    aws["s3"].create_bucket(Bucket="sandbox-check")
    aws["s3"].put_object(Bucket="sandbox-check", Key="a.txt", Body=b"hello")
    assert aws["s3"].get_object(Bucket="sandbox-check", Key="a.txt")["Body"].read() == b"hello"
    repo = aws["ecr"].create_repository(repositoryName="check")["repository"]
    assert repo["repositoryUri"].endswith("/check")
    assert aws["ecr"].get_authorization_token()["authorizationData"][0]["authorizationToken"]
    role = aws["iam"].get_role(RoleName="SageMakerExecutionRole")["Role"]["Arn"]
    assert env["SM_MAGICS_ROLE"] == role
    assert aws["logs"].describe_log_groups()["logGroups"] == []

    registry = env["SM_MAGICS_REGISTRY"]
    with urllib.request.urlopen(f"http://{registry}/v2/") as response:
        assert response.status == 200


def test_images_push_to_the_sandbox_registry(own_sandbox):
    import docker

    own_sandbox.start()
    registry = own_sandbox.environment()["SM_MAGICS_REGISTRY"]
    client = docker.from_env()
    tag = f"{registry}/sandbox-check:v1"
    tiny_image(client, tag)
    try:
        for event in client.images.push(tag, stream=True, decode=True):
            assert "error" not in event, event
        with urllib.request.urlopen(f"http://{registry}/v2/sandbox-check/tags/list") as response:
            assert json.load(response)["tags"] == ["v1"]
    finally:
        client.images.remove(tag, force=True)


def test_stop_ends_every_process_start_started_and_leaves_nothing(own_sandbox):
    own_sandbox.start()
    state = own_sandbox.state()
    ports = [state["api"]["port"], state["registry"]["port"]]
    pids = [state["api"]["pid"], state["registry"]["pid"]]

    import docker

    tiny_image(docker.from_env(), f"127.0.0.1:{state['registry']['port']}/left-behind:v1")

    status = own_sandbox.stop()

    assert not status.running
    assert docker.from_env().images.list(
        name=f"127.0.0.1:{state['registry']['port']}/left-behind") == []
    assert not any(process_running(pid) for pid in pids)
    assert not any(port_answers(port) for port in ports)
    assert not own_sandbox.state_file.exists()
    assert not own_sandbox.run_dir.exists()
    assert [s.running for s in status.services if s.name == "docker"] == [True]


def test_start_finds_a_running_sandbox_instead_of_starting_another(own_sandbox):
    own_sandbox.start()
    first = own_sandbox.state()
    messages = []
    Sandbox(own_sandbox.home).start(log=messages.append)
    assert own_sandbox.state()["api"] == first["api"]
    assert messages == ["The sandbox is already running."]


def test_start_replaces_a_sandbox_whose_processes_died(own_sandbox):
    own_sandbox.start()
    dead = own_sandbox.state()
    os.killpg(dead["api"]["pid"], 9)
    assert not own_sandbox.is_running()
    own_sandbox.start()
    state = own_sandbox.state()
    assert state["api"]["pid"] != dead["api"]["pid"]
    assert not process_running(dead["registry"]["pid"])
    assert own_sandbox.is_running()


def test_status_says_what_runs_where(own_sandbox):
    before = own_sandbox.status()
    assert not before.running
    assert "not running" in repr(before)
    own_sandbox.start()
    status = own_sandbox.status()
    rows = {row[0]: row for row in status.rows()}
    state = own_sandbox.state()
    assert rows["api"][1:3] == ("running", f"http://127.0.0.1:{state['api']['port']}")
    assert rows["registry"][1:3] == ("running", f"127.0.0.1:{state['registry']['port']}")
    assert rows["base"][1:3] == ("present", BASE_IMAGE)
    html = status._repr_html_()
    assert "<th>service</th><th>state</th>" in html
    assert f"<td>api</td><td>running</td><td>http://127.0.0.1:{state['api']['port']}</td>" in html


def test_no_docker_engine_is_a_usage_error_and_starts_nothing(own_sandbox, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(UsageError) as err:
        own_sandbox.start()
    assert type(err.value) is UsageError
    message = str(err.value)
    assert message.startswith(
        "The sandbox needs a Docker engine. No Docker engine answers at "
        "unix:///nonexistent/docker.sock")
    # a hint for this kind of machine (Linux), not the test machines' dockerd flags
    assert "sudo systemctl start docker" in message and "--bridge=none" not in message
    assert own_sandbox.state() is None


def test_the_sandbox_base_image_has_python_pip_and_the_host_ca_bundle(own_sandbox):
    import docker

    own_sandbox.start()
    assert own_sandbox.environment()["SM_MAGICS_BASE"] == BASE_IMAGE
    out = docker.from_env().containers.run(
        BASE_IMAGE, ["sh", "-c", "python3 --version && python3 -m pip --version && "
                     "sha256sum /etc/ssl/certs/ca-certificates.crt"],
        remove=True, network_mode="host",
    ).decode()
    assert out.startswith("Python 3.11")
    import hashlib

    host_hash = hashlib.sha256(Path("/etc/ssl/certs/ca-certificates.crt").read_bytes()).hexdigest()
    assert host_hash in out


# ---------------------------------------------------------------- %sm_sandbox and the CLI


def test_sm_sandbox_points_plain_boto3_at_the_sandbox_and_stop_restores(
        ip, tmp_path, monkeypatch):
    monkeypatch.setenv("SM_MAGICS_SANDBOX_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AWS_PROFILE", "someone")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    try:
        status = ip.run_line_magic("sm_sandbox", "start")
        assert status.running
        assert "AWS_PROFILE" not in os.environ
        ip.run_cell("import boto3\nboto3.client('s3').create_bucket(Bucket='from-a-cell')")
        buckets = [b["Name"] for b in boto3.client("s3").list_buckets()["Buckets"]]
        assert buckets == ["from-a-cell"]
        settings = ip.run_line_magic("sm_config", "")
        assert settings["endpoint_url"].source == "sandbox (AWS_ENDPOINT_URL)"
        assert settings["bucket"].value == f"sagemaker-us-east-1-{SANDBOX_ACCOUNT}"
    finally:
        status = ip.run_line_magic("sm_sandbox", "stop")
    assert not status.running
    assert os.environ["AWS_PROFILE"] == "someone"
    assert os.environ["AWS_REGION"] == "eu-west-1"
    assert "AWS_ENDPOINT_URL" not in os.environ


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("", "%sm_sandbox: the following arguments are required: action. "
             "See `%sm_sandbox?` for the options."),
        ("restart", "%sm_sandbox: option action: invalid choice: 'restart' (choose from "
                    "'start', 'stop', 'status', 'interrupt'). See `%sm_sandbox?` for the options."),
        ("start --port 1", "%sm_sandbox: unrecognized arguments: --port 1. "
                           "See `%sm_sandbox?` for the options."),
        ("interrupt", "%sm_sandbox interrupt: name the running spot job to interrupt, e.g. "
                      "`%sm_sandbox interrupt fraud-20261124-101500-ab12` (`%sm_jobs` lists the "
                      "jobs)."),
        ("status fraud-1", "%sm_sandbox status: takes no job name (fraud-1); only "
                           "`%sm_sandbox interrupt JOB` does."),
    ],
)
def test_bad_sm_sandbox_lines_give_the_exact_usage_error(ip, line, message):
    with pytest.raises(UsageError) as err:
        ip.run_line_magic("sm_sandbox", line)
    assert type(err.value) is UsageError
    assert str(err.value) == message


def test_the_command_line_starts_reports_and_stops(tmp_path):
    env = {**os.environ, "SM_MAGICS_SANDBOX_HOME": str(tmp_path / "home")}
    run = [sys.executable, "-m", "sm_magics", "sandbox"]
    try:
        started = subprocess.run([*run, "start"], env=env, capture_output=True, text=True)
        assert started.returncode == 0, started.stderr
        assert "api       running" in started.stdout
        status = subprocess.run([*run, "status"], env=env, capture_output=True, text=True)
        assert status.returncode == 0
        exports = subprocess.run([*run, "env"], env=env, capture_output=True, text=True).stdout
        assert "export AWS_ENDPOINT_URL=http://127.0.0.1:" in exports
        pid = json.loads((tmp_path / "home" / "state.json").read_text())["api"]["pid"]
        assert process_running(pid)
    finally:
        stopped = subprocess.run([*run, "stop"], env=env, capture_output=True, text=True)
    assert stopped.returncode == 0
    assert not process_running(pid)
    status = subprocess.run([*run, "status"], env=env, capture_output=True, text=True)
    assert status.returncode == 3
    assert "api       stopped" in status.stdout


def test_new_buckets_block_public_access_and_encrypt_by_default_as_on_aws(sandbox):
    # S3 does both for every new bucket since 2023; moto alone does neither
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="sandbox-new-bucket-defaults")
    block = s3.get_public_access_block(Bucket="sandbox-new-bucket-defaults")[
        "PublicAccessBlockConfiguration"]
    assert all(block.values()) and len(block) == 4
    rules = s3.get_bucket_encryption(Bucket="sandbox-new-bucket-defaults")[
        "ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    s3.put_object(Bucket="sandbox-new-bucket-defaults", Key="plain", Body=b"no header")
    head = s3.head_object(Bucket="sandbox-new-bucket-defaults", Key="plain")
    assert head["ServerSideEncryption"] == "AES256"


def test_json_requests_that_break_the_service_model_are_refused_as_aws_does(sandbox):
    from botocore.exceptions import ClientError

    logs = boto3.client("logs")
    with pytest.raises(ClientError) as refused:  # botocore checks no pattern; the service does
        logs.create_log_group(logGroupName="bad name with spaces")
    assert refused.value.response["Error"]["Code"] == "ValidationException"
    assert "logGroupName" in refused.value.response["Error"]["Message"]


# ---------------------------------------------------------------- spot interruptions


def test_interrupting_a_job_the_sandbox_does_not_have_is_a_usage_error(sandbox):
    with pytest.raises(UsageError) as err:
        sandbox.interrupt_spot("no-such-job-20261124-101500-ab12")
    assert type(err.value) is UsageError
    assert str(err.value) == (
        "The sandbox did not interrupt the training job no-such-job-20261124-101500-ab12: "
        "Requested resource not found. Only a running job of this sandbox started with --spot "
        "can be interrupted (`%sm_jobs` lists the jobs).")


def test_the_spot_interruption_route_takes_only_post(sandbox):
    from sm_magics.sandbox.gateway import SPOT_INTERRUPTIONS_PATH

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    url = f"http://127.0.0.1:{sandbox.state()['api']['port']}{SPOT_INTERRUPTIONS_PATH}"
    with pytest.raises(urllib.error.HTTPError) as err:
        opener.open(url, timeout=10)
    assert err.value.code == 405
    assert err.value.headers["Allow"] == "POST"
    assert json.loads(err.value.read())["__type"] == "MethodNotAllowed"


def test_an_endpoint_without_training_jobs_answers_spot_interruptions_404():
    from werkzeug.test import Client

    from sm_magics.sandbox.gateway import SPOT_INTERRUPTIONS_PATH, build_app

    answer = Client(build_app()).post(SPOT_INTERRUPTIONS_PATH,
                                      json={"TrainingJobName": "fraud-1"})
    assert answer.status_code == 404
    assert answer.get_json() == {"__type": "ResourceNotFound",
                                 "message": "This sandbox endpoint runs no training jobs."}
