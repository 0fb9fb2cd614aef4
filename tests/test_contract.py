"""The local runner of the SageMaker training contract, on the real Docker engine.

The image used here is built from the sandbox base with a ``train`` program
whose behaviour is chosen by the ``mode`` hyperparameter.
"""

from __future__ import annotations

import json
import tarfile
import threading
import time
import uuid
from pathlib import Path

import pytest

from images import build_from_files
from sm_magics.contract import (
    LABEL,
    ContainerRun,
    OptMl,
    download_channel,
    ensure_image,
    pack_directory,
    toolkit_environment,
    upload_changed,
)

pytestmark = pytest.mark.docker

BASE = "sm-magics/sandbox-base:bookworm"
IMAGE = "sm-magics-test/contract:1"
TEST_LABEL = "sm-magics.test-run"
RUN_ID = uuid.uuid4().hex

TRAIN = r'''#!/usr/bin/env python3
"""A training program whose behaviour is chosen by the `mode` hyperparameter."""
import json, os, pathlib, signal, sys, time

ROOT = pathlib.Path("/opt/ml")
hp = json.loads((ROOT / "input/config/hyperparameters.json").read_text())
mode = hp.get("mode", "ok")


def save(**extra):
    (ROOT / "model").mkdir(parents=True, exist_ok=True)
    files = {str(p.relative_to(ROOT / "input/data")): p.read_text()
             for p in sorted((ROOT / "input/data").rglob("*")) if p.is_file()}
    env = {k: v for k, v in os.environ.items() if k.startswith("SM_") or k == "TRAINING_JOB_NAME"}
    (ROOT / "model/model.json").write_text(json.dumps({"hp": hp, "files": files, "env": env,
                                                       **extra}))


def on_sigterm(*_):
    print("got SIGTERM, saving the model", flush=True)
    save(interrupted=True)
    sys.exit(0)


def on_sigterm_exit(*_):
    print("got SIGTERM, exiting", flush=True)
    sys.exit(143)


def main():
    if mode == "graceful":
        signal.signal(signal.SIGTERM, on_sigterm)
    if mode == "sleep":  # PID 1 ignores SIGTERM without a handler: real programs need one
        signal.signal(signal.SIGTERM, on_sigterm_exit)
    print(f"starting in mode {mode}")
    print("a line on stderr", file=sys.stderr)
    if mode == "raise":
        raise ValueError("learning rate must be positive")
    if mode == "exit":
        print("giving up")
        sys.exit(3)
    if mode == "checkpoint":
        checkpoints = pathlib.Path("/opt/ml/checkpoints")
        found = sorted(p.name for p in checkpoints.iterdir())
        (checkpoints / f"step-{len(found) + 1}.txt").write_text("state")
        return save(checkpoints=found)
    if mode in ("sleep", "graceful", "stubborn"):  # "stubborn": no handler, runs to the kill
        time.sleep(float(hp.get("seconds", 300)))
    for epoch in range(3):
        print(f"epoch={epoch} loss={1.0 / (epoch + 1):.4f} accuracy={0.5 + epoch / 10:.2f}")
        time.sleep(float(hp.get("pause", 0)))
    save()
    (ROOT / "output/data").mkdir(parents=True, exist_ok=True)
    (ROOT / "output/data/report.txt").write_text("all good\n")
    print("done")


try:
    main()
except Exception as exc:
    (ROOT / "output/failure").write_text(f"{type(exc).__name__}: {exc}")
    raise
'''


def build_image(client, tag: str, train: str = TRAIN) -> str:
    """Build ``tag`` from the sandbox base with ``train`` on PATH; return the tag."""
    dockerfile = (f"FROM {BASE}\nCOPY train /usr/local/bin/train\n"
                  "RUN chmod 755 /usr/local/bin/train\n").encode()
    return build_from_files(client, tag, {"Dockerfile": dockerfile, "train": train.encode()})


@pytest.fixture(scope="module")
def client():
    import docker

    return docker.from_env()


@pytest.fixture(scope="module")
def image(client):
    return build_image(client, IMAGE)


def layout_for(tmp_path: Path, **hyperparameters: str) -> OptMl:
    return OptMl.create(tmp_path / "opt_ml", hyperparameters,
                        {"train": {"ContentType": "text/csv"}})


def run_of(client, image: str, layout: OptMl, **options) -> ContainerRun:
    return ContainerRun(client, image, layout, labels={TEST_LABEL: RUN_ID}, network="host",
                        **options)


def our_containers(client) -> list:
    """Containers of this module's runs (other sessions may run jobs on the same engine)."""
    return client.containers.list(all=True, filters={"label": [LABEL, f"{TEST_LABEL}={RUN_ID}"]})


def test_layout_writes_the_contract_files(tmp_path):
    layout = OptMl.create(tmp_path / "opt_ml", {"lr": 0.1, "layers": "[1, 2]"},
                          {"train": {"ContentType": "text/csv"}, "params": {}},
                          instance_type="ml.m5.large")

    assert layout.channel_dir("train") == tmp_path / "opt_ml/input/data/train"
    config = tmp_path / "opt_ml/input/config"
    assert json.loads((config / "hyperparameters.json").read_text()) == {
        "lr": "0.1", "layers": "[1, 2]"}
    channels = json.loads((config / "inputdataconfig.json").read_text())
    assert channels["train"] == {"ContentType": "text/csv", "TrainingInputMode": "File",
                                 "S3DistributionType": "FullyReplicated",
                                 "RecordWrapperType": "None"}
    assert set(channels) == {"train", "params"}
    resources = json.loads((config / "resourceconfig.json").read_text())
    assert resources["current_host"] == "algo-1"
    assert resources["hosts"] == ["algo-1"]
    assert resources["current_instance_type"] == "ml.m5.large"
    for directory in ("input/data/train", "input/data/params", "model", "output/data"):
        assert (tmp_path / "opt_ml" / directory).is_dir()


def test_toolkit_environment_gives_typed_hyperparameters_and_channel_paths(tmp_path):
    layout = OptMl.create(tmp_path, {"lr": "0.1", "name": "fraud", "layers": "[1, 2]"},
                          {"train": {}, "params": {}})

    env = toolkit_environment(layout)

    assert json.loads(env["SM_HPS"]) == {"lr": 0.1, "name": "fraud", "layers": [1, 2]}
    assert env["SM_MODEL_DIR"] == "/opt/ml/model"
    assert env["SM_OUTPUT_DATA_DIR"] == "/opt/ml/output/data"
    assert env["SM_CHANNEL_TRAIN"] == "/opt/ml/input/data/train"
    assert env["SM_CHANNEL_PARAMS"] == "/opt/ml/input/data/params"
    assert json.loads(env["SM_CHANNELS"]) == ["params", "train"]
    assert env["SM_CURRENT_HOST"] == "algo-1"
    assert json.loads(env["SM_HOSTS"]) == ["algo-1"]
    assert env["SM_HP_LR"] == "0.1"


def test_a_run_streams_its_output_writes_the_model_and_leaves_no_container(
        client, image, tmp_path):
    layout = layout_for(tmp_path, mode="ok")
    (layout.channel_dir("train") / "rows.csv").write_text("1,2\n")
    lines: list[str] = []

    result = run_of(client, image, layout, on_line=lines.append, job_name="job-1",
                          environment={"EXTRA": "yes"}).run()

    assert result.succeeded and result.exit_code == 0 and result.failure is None
    assert "a line on stderr" in lines
    stdout = [line for line in lines if line != "a line on stderr"]  # the streams interleave
    assert stdout == ["starting in mode ok", "epoch=0 loss=1.0000 accuracy=0.50",
                      "epoch=1 loss=0.5000 accuracy=0.60", "epoch=2 loss=0.3333 accuracy=0.70",
                      "done"]
    model = json.loads((layout.model_dir / "model.json").read_text())
    assert model["files"] == {"train/rows.csv": "1,2\n"}
    assert model["env"]["TRAINING_JOB_NAME"] == "job-1"
    assert model["env"]["SM_CHANNEL_TRAIN"] == "/opt/ml/input/data/train"
    assert (layout.output_data_dir / "report.txt").read_text() == "all good\n"
    assert our_containers(client) == []


def test_a_failing_program_reports_its_exit_code_and_failure_file(client, image, tmp_path):
    layout = layout_for(tmp_path, mode="raise")
    lines: list[str] = []

    result = run_of(client, image, layout, on_line=lines.append).run()

    assert not result.succeeded
    assert result.exit_code == 1
    assert result.failure == "ValueError: learning rate must be positive"
    assert any("ValueError: learning rate must be positive" in line for line in lines)
    assert our_containers(client) == []


def stopped_at_its_first_line(client, image: str, layout: OptMl, **options):
    """Run, stopping the program when it prints its first line.

    Returns the result, the lines, and the seconds from the stop to the end of the run.
    """
    lines: list[str] = []
    stopped_at: list[float] = []

    def on_line(line: str) -> None:
        lines.append(line)
        if not stopped_at:
            stopped_at.append(time.monotonic())
            run.stop()

    run = run_of(client, image, layout, on_line=on_line, **options)
    result = run.run()
    return result, lines, time.monotonic() - stopped_at[0]


def test_stop_ends_a_program_that_handles_sigterm_at_once(client, image, tmp_path):
    layout = layout_for(tmp_path, mode="sleep", seconds="600")

    result, lines, took = stopped_at_its_first_line(client, image, layout, stop_grace=30)

    assert result.stopped and not result.timed_out and not result.succeeded
    assert result.exit_code == 143
    assert "got SIGTERM, exiting" in lines
    assert took < 15  # well before the 30 s grace
    assert our_containers(client) == []


def test_a_program_that_ignores_sigterm_is_killed_after_the_grace_period(
        client, image, tmp_path):
    layout = layout_for(tmp_path, mode="stubborn", seconds="600")

    result, _, took = stopped_at_its_first_line(client, image, layout, stop_grace=2)

    # no init process passes the SIGTERM on, and PID 1 without a handler ignores it
    assert result.stopped and result.exit_code == 137  # SIGKILL
    assert took >= 2
    assert our_containers(client) == []


def test_a_program_that_handles_sigterm_saves_its_model_when_stopped(client, image, tmp_path):
    layout = layout_for(tmp_path, mode="graceful", seconds="600")
    lines: list[str] = []
    started = threading.Event()

    def on_line(line: str) -> None:
        lines.append(line)
        if "starting" in line:
            started.set()

    run = run_of(client, image, layout, on_line=on_line, stop_grace=30)
    threading.Thread(target=lambda: started.wait(120) and run.stop(), daemon=True).start()

    result = run.run()

    assert result.stopped
    assert "got SIGTERM, saving the model" in lines
    assert json.loads((layout.model_dir / "model.json").read_text())["interrupted"] is True


def test_the_time_limit_stops_the_program_and_marks_the_result(client, image, tmp_path):
    layout = layout_for(tmp_path, mode="sleep", seconds="600")

    result = run_of(client, image, layout, stop_grace=1).run(timeout=1)

    assert result.timed_out and not result.stopped and not result.succeeded
    assert our_containers(client) == []


def test_kill_before_the_start_runs_nothing(client, image, tmp_path):
    run = run_of(client, image, layout_for(tmp_path, mode="ok"))
    run.kill()

    result = run.run()

    assert result.stopped and not result.started
    assert not (tmp_path / "opt_ml/model/model.json").exists()
    assert our_containers(client) == []


def test_ensure_image_falls_back_to_a_local_copy_when_the_registry_is_unreachable(client, image):
    unreachable = "127.0.0.1:9/sm-magics-test/contract:local"
    client.images.get(image).tag(unreachable)
    try:
        ensure_image(client, unreachable)  # the pull fails, the local copy is used
        assert client.images.get(unreachable).id == client.images.get(image).id
    finally:
        client.images.remove(unreachable)


def test_ensure_image_fails_for_an_image_that_exists_nowhere(client):
    import docker.errors

    with pytest.raises(docker.errors.DockerException):
        ensure_image(client, "127.0.0.1:9/sm-magics-test/missing:1")


def test_pack_directory_writes_the_directory_content(tmp_path):
    source = tmp_path / "model"
    (source / "sub").mkdir(parents=True)
    (source / "weights.bin").write_bytes(b"\x00\x01")
    (source / "sub/config.json").write_text("{}")

    count = pack_directory(source, tmp_path / "model.tar.gz")

    assert count == 2
    with tarfile.open(tmp_path / "model.tar.gz") as archive:
        assert sorted(archive.getnames()) == ["sub", "sub/config.json", "weights.bin"]
    assert pack_directory(tmp_path / "empty", tmp_path / "empty.tar.gz") == 0
    with tarfile.open(tmp_path / "empty.tar.gz") as archive:
        assert archive.getnames() == []


@pytest.mark.sandbox
def test_download_channel_follows_the_s3_prefix_and_manifest_rules(sandbox, tmp_path):
    import boto3

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="contract-channels")
    for key in ("data/train/a.csv", "data/train/deep/b.csv", "data/trainer/c.csv",
                "data/other/d.csv"):
        s3.put_object(Bucket="contract-channels", Key=key, Body=key.encode())
    s3.put_object(Bucket="contract-channels", Key="manifests/m.json", Body=json.dumps(
        [{"prefix": "s3://contract-channels/data/"}, "train/a.csv", "other/d.csv"]).encode())

    def files(root: Path) -> dict[str, str]:
        return {str(p.relative_to(root)): p.read_text() for p in root.rglob("*") if p.is_file()}

    assert download_channel(s3, "s3://contract-channels/data/train/", tmp_path / "p") == 2
    assert files(tmp_path / "p") == {"a.csv": "data/train/a.csv",
                                     "deep/b.csv": "data/train/deep/b.csv"}
    assert download_channel(s3, "s3://contract-channels/data/train", tmp_path / "q") == 3
    assert set(files(tmp_path / "q")) == {"a.csv", "deep/b.csv", "er/c.csv"}
    assert download_channel(s3, "s3://contract-channels/data/other/d.csv", tmp_path / "o") == 1
    assert files(tmp_path / "o") == {"d.csv": "data/other/d.csv"}
    assert download_channel(s3, "s3://contract-channels/manifests/m.json", tmp_path / "m",
                            "ManifestFile") == 2
    assert files(tmp_path / "m") == {"train/a.csv": "data/train/a.csv",
                                     "other/d.csv": "data/other/d.csv"}


def test_a_sharded_channel_gives_each_object_to_exactly_one_host_in_key_order(sandbox, tmp_path):
    import boto3

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="contract-shards")
    keys = [f"parts/p{n:02d}.csv" for n in range(7)]
    for key in keys:
        s3.put_object(Bucket="contract-shards", Key=key, Body=key.encode())
    s3.put_object(Bucket="contract-shards", Key="one/only.csv", Body=b"x")
    s3.put_object(Bucket="contract-shards", Key="m.json", Body=json.dumps(
        [{"prefix": "s3://contract-shards/parts/"}, *(k.split("/")[1] for k in keys)]).encode())

    def share(uri: str, host: int, hosts: int, kind: str = "S3Prefix") -> list[str]:
        target = tmp_path / f"{uri.replace('/', '_')}-{host}-{hosts}"
        count = download_channel(s3, uri, target, kind, shard=(host, hosts))
        found = sorted(p.name for p in target.rglob("*") if p.is_file())
        assert count == len(found)
        return found

    names = [k.split("/")[1] for k in keys]
    for hosts in (1, 2, 3, 4):
        shares = [share("s3://contract-shards/parts/", host, hosts) for host in range(hosts)]
        assert shares == [names[host::hosts] for host in range(hosts)]
        manifest = [share("s3://contract-shards/m.json", host, hosts, "ManifestFile")
                    for host in range(hosts)]
        assert manifest == shares
    # one object, two hosts: the first host has it, the second has nothing
    assert [share("s3://contract-shards/one/only.csv", h, 2) for h in (0, 1)] == [["only.csv"], []]


def test_checkpoints_are_copied_when_they_are_new_or_changed(sandbox, tmp_path):
    import boto3

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="contract-checkpoints")
    directory = tmp_path / "checkpoints"
    (directory / "deep").mkdir(parents=True)
    (directory / "step-1.pt").write_text("one")
    (directory / "deep" / "state.json").write_text("{}")
    sent: dict = {}
    uri = "s3://contract-checkpoints/job/checkpoints"

    def stored() -> dict[str, bytes]:
        listed = s3.list_objects_v2(Bucket="contract-checkpoints", Prefix="job/")
        return {o["Key"]: s3.get_object(Bucket="contract-checkpoints", Key=o["Key"])["Body"]
                .read() for o in listed.get("Contents", [])}

    assert upload_changed(s3, directory, uri, sent) == 2
    assert upload_changed(s3, directory, uri, sent) == 0  # nothing changed: nothing sent
    (directory / "step-1.pt").write_text("one, longer")
    (directory / "step-2.pt").write_text("two")
    assert upload_changed(s3, directory, uri, sent) == 2
    assert stored() == {"job/checkpoints/step-1.pt": b"one, longer",
                        "job/checkpoints/step-2.pt": b"two",
                        "job/checkpoints/deep/state.json": b"{}"}

