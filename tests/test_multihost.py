"""Training jobs on several instances, and spot jobs interrupted and resumed, in the sandbox.

Driven with plain boto3, as a SageMaker user would: a job with ``InstanceCount``
N runs N containers, the hosts ``algo-1`` … ``algo-N``, on the sandbox's Docker
engine. The image's program (``TRAIN`` below) writes what its host saw into the
model, so the tests read back, per host, the contract files, the channel files
and what came over the hosts' sockets.
"""

from __future__ import annotations

import json
import os
import re
import uuid

import pytest

from log_reading import stream_messages
from test_contract import build_image
from training_jobs import (
    job_clients,
    new_repository,
    only_in_the_registry,
    read_tarball,
    wait_for,
)

pytestmark = [pytest.mark.sandbox, pytest.mark.docker, pytest.mark.slow]

BUCKET = "multihost-tests"
LOG_GROUP = "/aws/sagemaker/TrainingJobs"

TRAIN = r'''#!/usr/bin/env python3
"""A program for several hosts; `mode` chooses what it does."""
import json, os, pathlib, signal, socket, sys, time

ROOT = pathlib.Path("/opt/ml")
hp = json.loads((ROOT / "input/config/hyperparameters.json").read_text())
resources = json.loads((ROOT / "input/config/resourceconfig.json").read_text())
host = resources["current_host"]
hosts = sorted(resources["hosts"], key=lambda name: int(name.split("-")[1]))
rank = hosts.index(host)
mode = hp.get("mode", "gather")
signal.signal(signal.SIGTERM, lambda *_: (print(f"{host} got SIGTERM", flush=True),
                                          sys.exit(143)))


def port():
    return int(os.environ["SM_MAGICS_PORT_BASE"])  # the first port of the leader (rank 0)


def gather():
    """The leader hears from every other host, by name, over TCP."""
    if len(hosts) == 1:
        return []
    if rank == 0:
        server = socket.create_server(("0.0.0.0", port()))
        heard = []
        while len(heard) < len(hosts) - 1:
            connection, _ = server.accept()
            with connection:
                heard.append(connection.makefile().readline().strip())
        return sorted(heard)
    deadline = time.time() + 60
    while True:
        try:
            with socket.create_connection(("algo-1", port()), timeout=5) as connection:
                connection.sendall(f"hello from {host}\n".encode())
            return []
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.1)


def seen():
    data = ROOT / "input/data"
    return {
        "resourceconfig": resources,
        "env": {k: v for k, v in os.environ.items() if k.startswith(("SM_", "TRAINING_"))},
        "files": sorted(str(p.relative_to(data)) for p in data.rglob("*") if p.is_file()),
        "hostname": socket.gethostname(),
    }


print(f"{host} starting in mode {mode}", flush=True)
model = ROOT / "model"
if mode == "gather":
    heard = gather()
    (model / f"{host}.json").write_text(json.dumps({**seen(), "heard": heard}))
    (model / "shared.txt").write_text(host)
    print(f"{host} done", flush=True)
elif mode == "fail":
    if host == hp["failing"]:
        time.sleep(0.5)
        print(f"{host} cannot go on", flush=True)
        sys.exit(3)
    time.sleep(300)
elif mode == "sleep":
    time.sleep(300)
elif mode == "steps":
    checkpoints = pathlib.Path("/opt/ml/checkpoints")
    found = sorted(p.name for p in checkpoints.glob(f"{host}-step-*"))
    print(f"{host} resumes after {len(found)} steps", flush=True)
    for step in range(len(found) + 1, int(hp["steps"]) + 1):
        (checkpoints / f"{host}-step-{step:03d}").write_text(str(step))
        time.sleep(float(hp["pause"]))
    (model / f"{host}.json").write_text(json.dumps({"resumed_after": len(found)}))
'''


@pytest.fixture(scope="module")
def clients(sandbox):
    return job_clients(BUCKET)


@pytest.fixture(scope="module")
def image(sandbox):
    """The test image, in a repository made first, as ECR needs, and gone from the engine."""
    import docker

    client = docker.from_env()
    uri = build_image(client, f"{new_repository('multihost')}:test", train=TRAIN)
    with only_in_the_registry(client, uri):
        yield uri


@pytest.fixture(scope="module")
def shards(clients):
    """Six objects under one prefix, and a replicated channel of one file."""
    prefix = f"data/{uuid.uuid4().hex[:8]}"
    keys = [f"{prefix}/part-{n}.csv" for n in range(6)]
    for key in keys:
        clients["s3"].put_object(Bucket=BUCKET, Key=key, Body=key.encode())
    clients["s3"].put_object(Bucket=BUCKET, Key=f"{prefix}-vocab/vocab.txt", Body=b"a b c")
    return prefix, sorted(k.rsplit("/", 1)[1] for k in keys)


def channel(name: str, uri: str, distribution: str = "FullyReplicated") -> dict:
    return {"ChannelName": name, "DataSource": {"S3DataSource": {
        "S3DataType": "S3Prefix", "S3Uri": uri, "S3DataDistributionType": distribution}}}


def create(clients, image, instances: int, *, channels=(), spot=False, checkpoints=None,
           max_runtime=600, **hyperparameters) -> str:
    name = f"hosts{instances}-{uuid.uuid4().hex[:10]}"
    stopping = {"MaxRuntimeInSeconds": max_runtime}
    extra = {}
    if spot:
        stopping["MaxWaitTimeInSeconds"] = max_runtime
        extra["EnableManagedSpotTraining"] = True
    if checkpoints:
        extra["CheckpointConfig"] = {"S3Uri": checkpoints}
    clients["sagemaker"].create_training_job(
        TrainingJobName=name,
        AlgorithmSpecification={"TrainingImage": image, "TrainingInputMode": "File"},
        RoleArn=os.environ["SM_MAGICS_ROLE"],
        HyperParameters={k: str(v) for k, v in hyperparameters.items()},
        **({"InputDataConfig": list(channels)} if channels else {}),
        OutputDataConfig={"S3OutputPath": f"s3://{BUCKET}/output"},
        ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": instances,
                        "VolumeSizeInGB": 1},
        StoppingCondition=stopping, **extra)
    return name


def model_files(clients, described) -> dict[str, bytes]:
    return read_tarball(clients, described["ModelArtifacts"]["S3ModelArtifacts"])


def streams_of(clients, name: str) -> dict[str, list[str]]:
    """Each log stream of the job, by name, with its messages."""
    found = clients["logs"].describe_log_streams(logGroupName=LOG_GROUP,
                                                 logStreamNamePrefix=f"{name}/")["logStreams"]
    return {s["logStreamName"]: stream_messages(clients["logs"], s["logStreamName"])
            for s in found}


@pytest.fixture(scope="module")
def gathered(clients, image, shards):
    """Jobs on 1, 2 and 4 hosts, sharded and replicated channels, all completed."""
    prefix, _ = shards
    names = {n: create(clients, image, n, mode="gather", channels=[
        channel("train", f"s3://{BUCKET}/{prefix}/", "ShardedByS3Key"),
        channel("vocab", f"s3://{BUCKET}/{prefix}-vocab/")]) for n in (1, 2, 4)}
    return {n: (name, wait_for(clients, name)) for n, name in names.items()}


@pytest.mark.parametrize("instances", [1, 2, 4])
def test_each_host_gets_its_contract_files_and_its_share_of_a_sharded_channel(
        clients, gathered, shards, instances):
    name, described = gathered[instances]
    _, parts = shards
    assert described["TrainingJobStatus"] == "Completed", described.get("FailureReason")
    files = model_files(clients, described)
    hosts = [f"algo-{n}" for n in range(1, instances + 1)]
    assert sorted(files) == sorted([f"{host}.json" for host in hosts] + ["shared.txt"])
    for rank, host in enumerate(hosts):
        seen = json.loads(files[f"{host}.json"])
        config = seen["resourceconfig"]
        assert config["current_host"] == host
        assert config["hosts"] == sorted(hosts)  # lexicographic, as SageMaker documents
        assert config["instance_groups"][0]["hosts"] == sorted(hosts)
        assert seen["env"]["SM_CURRENT_HOST"] == host
        assert json.loads(seen["env"]["SM_HOSTS"]) == sorted(hosts)
        assert seen["env"]["TRAINING_JOB_NAME"] == name
        assert seen["hostname"] == host
        assert json.loads(seen["env"]["SM_INPUT_DATA_CONFIG"])["train"][
            "S3DistributionType"] == "ShardedByS3Key"
        assert seen["files"] == sorted([f"train/{p}" for p in parts[rank::instances]]
                                       + ["vocab/vocab.txt"])
    leader = json.loads(files["algo-1.json"])
    assert leader["heard"] == sorted(f"hello from {host}" for host in hosts[1:])
    # the same name in several hosts' model directories: the last host's file is kept
    assert files["shared.txt"] == hosts[-1].encode()


@pytest.mark.parametrize("instances", [1, 2, 4])
def test_each_host_writes_its_own_log_stream_and_the_job_bills_every_instance(
        clients, gathered, instances):
    name, described = gathered[instances]
    streams = streams_of(clients, name)
    hosts = {re.fullmatch(rf"{re.escape(name)}/(algo-\d+)-\d+", s).group(1): m
             for s, m in streams.items()}
    assert sorted(hosts) == sorted(f"algo-{n}" for n in range(1, instances + 1))
    for host, messages in hosts.items():
        assert f"{host} starting in mode gather" in messages
        assert f"{host} done" in messages
        assert all(m.startswith(host) for m in messages), messages
    assert described["BillableTimeInSeconds"] == instances * described["TrainingTimeInSeconds"]
    phases = [t["Status"] for t in described["SecondaryStatusTransitions"]]
    assert phases == ["Starting", "Downloading", "Training", "Uploading", "Completed"]


def test_a_failing_host_fails_the_job_by_name_and_the_others_are_stopped(clients, image):
    name = create(clients, image, 3, mode="fail", failing="algo-2")

    described = wait_for(clients, name)

    assert described["TrainingJobStatus"] == "Failed"
    assert described["FailureReason"] == ("AlgorithmError: The training program on algo-2 "
                                          "exited with code 3. Last log line: algo-2 cannot go on")
    messages = {s.rsplit("/", 1)[1].rsplit("-", 1)[0]: m
                for s, m in streams_of(clients, name).items()}
    assert "algo-1 got SIGTERM" in messages["algo-1"]
    assert "algo-3 got SIGTERM" in messages["algo-3"]
    assert described["TrainingTimeInSeconds"] < 60  # not the 300 s the others would sleep


def test_stop_stops_every_host(clients, image):
    name = create(clients, image, 2, mode="sleep")
    wait_for(clients, name, until=lambda d: d["SecondaryStatus"] == "Training" and len(
        streams_of(clients, name)) == 2 and all(streams_of(clients, name).values()))

    clients["sagemaker"].stop_training_job(TrainingJobName=name)
    described = wait_for(clients, name)

    assert (described["TrainingJobStatus"], described["SecondaryStatus"]) == ("Stopped",
                                                                              "Stopped")
    for messages in streams_of(clients, name).values():
        assert any(m.endswith("got SIGTERM") for m in messages), messages


def test_an_interrupted_spot_job_restarts_and_resumes_from_its_synced_checkpoints(
        clients, image, sandbox):
    uri = f"s3://{BUCKET}/checkpoints/{uuid.uuid4().hex[:8]}"
    name = create(clients, image, 2, spot=True, checkpoints=uri, mode="steps", steps=40,
                  pause=0.25)
    prefix = uri.split("/", 3)[3]

    def synced(_described) -> bool:  # checkpoints reach S3 while the job runs
        listed = clients["s3"].list_objects_v2(Bucket=BUCKET, Prefix=prefix)
        keys = {o["Key"].rsplit("/", 1)[1] for o in listed.get("Contents", [])}
        return {"algo-1-step-003", "algo-2-step-003"} <= keys

    wait_for(clients, name, until=synced)
    assert wait_for(clients, name, until=lambda d: True)["TrainingJobStatus"] == "InProgress"
    answer = sandbox.interrupt_spot(name)
    assert answer["TrainingJobName"] == name
    described = wait_for(clients, name)

    assert described["TrainingJobStatus"] == "Completed", described.get("FailureReason")
    phases = [t["Status"] for t in described["SecondaryStatusTransitions"]]
    assert phases == ["Starting", "Downloading", "Training", "Interrupted", "Starting",
                      "Downloading", "Training", "Uploading", "Completed"]
    for host in ("algo-1", "algo-2"):
        resumed = json.loads(model_files(clients, described)[f"{host}.json"])["resumed_after"]
        assert 3 <= resumed < 40
    streams = streams_of(clients, name)
    assert len(streams) == 4  # one per host and start
    assert sum(any("resumes after 0 steps" in m for m in ms) for ms in streams.values()) == 2
    interrupted = next(t for t in described["SecondaryStatusTransitions"]
                       if t["Status"] == "Interrupted")
    gap = interrupted["EndTime"] - interrupted["StartTime"]
    billed_once = described["BillableTimeInSeconds"] / 2
    assert billed_once <= described["TrainingTimeInSeconds"] - gap.total_seconds() + 1


def test_only_a_running_spot_job_can_be_interrupted(sandbox, gathered):
    from IPython.core.error import UsageError

    name, _ = gathered[1]
    with pytest.raises(UsageError, match="not a managed spot training job"):
        sandbox.interrupt_spot(name)


def test_a_local_run_on_several_hosts_keeps_the_contract_shards_and_host_names(
        ip, clients, image, shards):
    instances = 4  # the tutorial runs --local on 2
    prefix, parts = shards
    run = ip.run_line_magic(
        "sm_train", f"{image} --local --instance-count {instances} "
                    f"--input train:sharded=s3://{BUCKET}/{prefix}/ --wait")

    assert run.status == "Completed"
    files = read_tarball(clients, run.model_data)
    hosts = [f"algo-{n}" for n in range(1, instances + 1)]
    for rank, host in enumerate(hosts):
        seen = json.loads(files[f"{host}.json"])
        assert seen["resourceconfig"]["current_host"] == host
        assert seen["resourceconfig"]["hosts"] == sorted(hosts)
        assert [f for f in seen["files"] if f.startswith("train/")] == [
            f"train/{p}" for p in parts[rank::instances]]
    assert json.loads(files["algo-1.json"])["heard"] == sorted(
        f"hello from {host}" for host in hosts[1:])
    lines = run.logs()
    for host in hosts:
        assert f"[{host}] {host} starting in mode gather" in lines
    assert all(re.match(r"\[(algo-\d)\] \1 ", line) for line in lines), lines
    assert run.describe()["BillableTimeInSeconds"] == instances * run.describe()[
        "TrainingTimeInSeconds"]
