"""%sm_train and friends, end to end in the sandbox: real images, real jobs, real S3."""

from __future__ import annotations

import io
import json
import os
import tarfile
import time

import boto3
import pytest
from IPython.core.error import UsageError

from sm_magics.errors import RemoteFailure
from sm_magics.jobs import TrainingRun
from sm_magics.ui.job_panel import TextJobPanel, WidgetJobPanel
from sm_magics.watcher import JobWatcher

pytestmark = [pytest.mark.docker, pytest.mark.sandbox]

TRAIN_CELL = '''
import json
scale = 2  # @param
for step in range(params["epochs"]):
    log_metric("loss", 1.0 / (step + 1), step=step)
print("seen:", json.dumps({k: type(v).__name__ for k, v in sorted(params.items())}))
(model_dir / "model.json").write_text(json.dumps({"weight": scale * params["lr"]}))
'''


@pytest.fixture
def trained(ip, sandbox):
    """A shell with a parameter set and a container cell run (built and pushed)."""
    ip.run_cell_magic("sm_params", "demo", "epochs = 3\nlr = 0.25\n")
    ip.run_cell_magic("sm_container", "train-demo", TRAIN_CELL)
    return ip


def model_json(uri: str) -> dict:
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    body = boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        return json.load(tar.extractfile("model.json"))


def jobs_named(prefix: str) -> list[str]:
    summaries = boto3.client("sagemaker").list_training_jobs(
        NameContains=prefix, MaxResults=100)["TrainingJobSummaries"]
    return [s["TrainingJobName"] for s in summaries]


def wait_until(check, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.5)
    return False


def test_a_job_started_from_a_cell_completes_with_model_metrics_and_typed_params(trained):
    run = trained.run_line_magic("sm_train", "train-demo --params demo --hp lr=0.5 --wait")

    assert run.status == "Completed"
    assert model_json(run.model_data) == {"weight": 1.0}
    assert [(p.name, p.step, p.value) for p in run.metrics] == [
        ("loss", 0, 1.0), ("loss", 1, 0.5), ("loss", 2, pytest.approx(1 / 3))]
    assert run.params == {"epochs": 3, "lr": 0.5, "scale": 2}
    assert 'seen: {"epochs": "int", "lr": "float", "scale": "int"}' in run.logs()
    described = run.describe()
    assert described["AlgorithmSpecification"]["MetricDefinitions"][0]["Name"] == "loss"
    assert described["FinalMetricDataList"][0]["Value"] == pytest.approx(1 / 3)
    assert [t["Status"] for t in described["SecondaryStatusTransitions"]] == [
        "Starting", "Downloading", "Training", "Uploading", "Completed"]
    params_uri = next(c for c in described["InputDataConfig"] if c["ChannelName"] == "params")[
        "DataSource"]["S3DataSource"]["S3Uri"]
    bucket, key = params_uri.removeprefix("s3://").split("/", 1)
    stored = json.loads(boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())
    assert stored == {"epochs": 3, "lr": 0.5, "scale": 2}


def test_a_failing_job_fails_the_cell_with_its_cause(ip, sandbox):
    ip.run_cell_magic("sm_container", "train-fails",
                      'raise ValueError("the data has no rows")\n')
    with pytest.raises(RemoteFailure) as err:
        ip.run_line_magic("sm_train", "train-fails --wait")
    rendered = "\n".join(err.value._render_traceback_())
    assert "failed" in err.value.what
    assert "ValueError: the data has no rows" in rendered
    assert "Traceback" not in rendered.splitlines()[0]


def test_sm_stop_stops_a_running_job(ip, sandbox, capsys):
    ip.run_cell_magic("sm_container", "train-sleeps",
                      'import time\nprint("sleeping", flush=True)\ntime.sleep(600)\n')
    run = ip.run_line_magic("sm_train", "train-sleeps")
    assert wait_until(lambda: run.describe()["SecondaryStatus"] == "Training")
    ip.run_line_magic("sm_stop", run.name)
    assert f"Stopping {run.name}" in capsys.readouterr().out
    assert run.watcher.wait(120)
    assert run.status == "Stopped"
    with pytest.raises(RemoteFailure, match="was stopped"):
        run.raise_for_status()


def test_attach_in_a_new_session_shows_the_finished_job(trained, capsys):
    run = trained.run_line_magic("sm_train", "train-demo --params demo --wait")
    trained.run_line_magic("unload_ext", "sm_magics")
    trained.run_line_magic("load_ext", "sm_magics")
    capsys.readouterr()
    attached = trained.run_line_magic("sm_attach", f"{run.name} --wait")
    assert attached.status == "Completed"
    assert attached.model_data == run.model_data
    assert attached.params == {"epochs": 3, "lr": 0.25, "scale": 2}
    out = capsys.readouterr().out
    assert f"Training job {run.name}: Completed" in out
    assert f"model: {run.model_data}" in out


def test_sm_jobs_lists_recent_jobs_with_status_image_and_params_hash(trained):
    run = trained.run_line_magic("sm_train", "train-demo --params demo --wait")
    table = trained.run_line_magic("sm_jobs", "--name train-demo --limit 5")
    row = next(r for r in table if r["job"] == run.name)
    assert row["status"] == "Completed"
    assert row["image"] == run.image.uri.rsplit("/", 1)[-1]
    assert len(row["params"]) == 12
    assert run.name in repr(table)


def test_sm_logs_prints_the_tail_of_the_log(trained, capsys):
    run = trained.run_line_magic("sm_train", "train-demo --params demo --wait")
    capsys.readouterr()
    trained.run_line_magic("sm_logs", f"{run.name} --tail 1")
    assert capsys.readouterr().out.strip() == (
        'seen: {"epochs": "int", "lr": "float", "scale": "int"}')


def test_changing_a_parameter_shows_what_changed(trained, capsys):
    trained.run_line_magic("sm_train", "train-demo --params demo --wait")
    capsys.readouterr()
    trained.run_line_magic("sm_train", "train-demo --params demo --hp lr=0.75 --wait")
    out = capsys.readouterr().out
    diff_line = next(line for line in out.splitlines() if line.startswith("lr"))
    assert "0.25" in diff_line and "0.75" in diff_line


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("nothing-built", "%sm_train: there is no container 'nothing-built' in this session"),
        ("train-demo --params nope", "--params: no parameter set called nope"),
        ("train-demo --hp =3", "--hp =3: write KEY=VALUE"),
        ("train-demo --input data", "--input data: write CHANNEL=PATH or CHANNEL=s3://"),
        ("train-demo --input train=no/such/dir", "--input train=no/such/dir: there is no file"),
        ("train-demo --input params=.", "the channel name 'params' carries the parameters"),
        ("train-demo --max-run forever", "--max-run: 'forever' is not a duration"),
        ("train-demo --max-wait 2h", "--max-wait applies to spot training only: add --spot."),
        ("train-demo --spot --max-run 2h --max-wait 1h", "--max-wait (3600s) must be at least"),
        ("train-demo --keep-alive 7h", "--keep-alive: SageMaker takes"),
        ("train-demo --instance-type m5.large", "%sm_train --instance-type: 'm5.large'"),
        ("train-demo --instance-count 0", "--instance-count: give 1 or more instances."),
        ("train-demo --job-name bad_name",
         "--job-name: 'bad_name' is not a valid training-job name"),
        ("train-demo --metric 'acc=acc: [0-9.]+'", "--metric acc=acc: [0-9.]+: the regex"),
        ("train-demo --env 1X=2",
         "--env 1X=...: SageMaker environment variable names must match the pattern"),
        ("train-demo --env AWS_SECRET_ACCESS_KEY=abc",
         "--env AWS_SECRET_ACCESS_KEY=...: AWS credentials do not belong"),
        ("train-demo --output bucket/x", "--output: 'bucket/x' is not an S3 URI"),
        ("train-demo --bogus", "%sm_train: unrecognized arguments: --bogus"),
    ],
)
def test_bad_train_lines_are_usage_errors_and_create_nothing(trained, line, message):
    s3 = boto3.client("s3")
    objects_before = sum(b["Name"] is not None for b in s3.list_buckets()["Buckets"])
    jobs_before = jobs_named("train-demo")
    with pytest.raises(UsageError) as err:
        trained.run_line_magic("sm_train", line)
    assert type(err.value) is UsageError
    assert message in str(err.value)
    assert "\n" not in str(err.value)
    assert jobs_named("train-demo") == jobs_before
    assert sum(b["Name"] is not None for b in s3.list_buckets()["Buckets"]) == objects_before


def test_the_widget_panel_ends_with_status_model_uri_chart_and_summary(trained):
    run = trained.run_line_magic("sm_train", "train-demo --params demo --wait")
    shown = []

    class Handle:
        def update(self, obj):
            shown.append(obj._repr_mimebundle_())

    panel = WidgetJobPanel(run.name, display=lambda widget, display_id: Handle(),
                           on_stop=run.stop)
    watcher = JobWatcher(run.aws, run.name, interval=0.2)
    watcher.subscribe(panel.update)
    watcher.start()
    assert watcher.wait(60)

    assert "Completed" in panel.header.value
    assert run.model_data in panel.result.value
    assert "data-metric='loss'" in panel.chart.value
    assert panel.chart.value.count(",") >= 3
    for phase in ("Starting", "Downloading", "Training", "Uploading", "Completed"):
        assert f"data-phase='{phase}'" in panel.phases.value
    assert panel.stop_button.disabled
    assert shown and run.model_data in shown[-1]["text/html"]
    assert "application/vnd.jupyter.widget-view+json" in shown[-1]
    assert f"Training job {run.name}: Completed" in shown[-1]["text/plain"]


def test_the_text_panel_prints_phases_log_lines_and_the_summary(trained):
    run = trained.run_line_magic("sm_train", "train-demo --params demo --wait")
    lines = []
    watcher = JobWatcher(run.aws, run.name, interval=0.2)
    watcher.subscribe(TextJobPanel(write=lines.append).update)
    watcher.start()
    assert watcher.wait(60)
    assert lines[-1].startswith(f"Training job {run.name}: Completed")
    assert "  | #metric loss=1.0 step=0" in lines
    assert sum(line.startswith("  | ") for line in lines) == 4


def test_a_run_object_reads_well(trained):
    run = trained.run_line_magic("sm_train", "train-demo --params demo --wait")
    assert repr(run).startswith(f"TrainingRun('{run.name}', status='Completed', model_data=")
    # the HTML view is the UI's, registered with the shell's formatter when the extension loads
    formatted, _ = trained.display_formatter.format(run)
    html = formatted["text/html"]
    assert "sm-model-uri" in html and run.model_data in html
    assert TrainingRun.attach(run.aws, run.name).status == "Completed"


def test_local_inputs_are_synced_with_progress_and_seen_by_the_job(ip, sandbox, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / "small.csv").write_text("a,b\n1,2\n")
    (data / "big.bin").write_bytes(os.urandom(21 * 1000 * 1000))
    ip.run_cell_magic("sm_container", "train-inputs", (
        'for path in sorted(channels["train"].rglob("*")):\n'
        '    print("file:", path.name, path.stat().st_size)\n'))
    run = ip.run_line_magic("sm_train", f"train-inputs --input train={data} --wait")
    out = capsys.readouterr().out
    assert "uploading --input train: 21 of 21 MB (100%)" in out
    logs = run.logs()
    assert "file: big.bin 21000000" in logs and "file: small.csv 8" in logs
    channel = next(c for c in run.describe()["InputDataConfig"] if c["ChannelName"] == "train")
    assert channel["DataSource"]["S3DataSource"]["S3Uri"].endswith("/train-inputs/inputs/train/")


def test_download_model_unpacks_the_artifact(trained, tmp_path):
    run = trained.run_line_magic("sm_train", "train-demo --params demo --wait")
    folder = run.download_model(tmp_path / "model")
    assert json.loads((folder / "model.json").read_text()) == {"weight": 0.5}


def test_download_model_refuses_an_archive_that_escapes_its_folder(trained, tmp_path):
    run = trained.run_line_magic("sm_train", "train-demo --params demo --wait")
    evil = io.BytesIO()
    with tarfile.open(fileobj=evil, mode="w:gz") as tar:
        data = b"owned"
        info = tarfile.TarInfo("../../escaped.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    bucket, key = run.model_data.removeprefix("s3://").split("/", 1)
    boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=evil.getvalue())
    with pytest.raises(RemoteFailure, match="unsafe"):
        run.download_model(tmp_path / "a" / "b" / "model")
    assert not (tmp_path / "a" / "escaped.txt").exists()
    assert not (tmp_path / "escaped.txt").exists()


def test_local_runs_use_the_same_image_contract_and_s3_without_sagemaker(ip, sandbox, capsys):
    ip.run_cell_magic("sm_container", "train-local --no-push", TRAIN_CELL)
    ip.run_cell_magic("sm_params", "local", "epochs = 2\nlr = 1.0\n")
    with pytest.raises(UsageError, match="built with --no-push"):
        ip.run_line_magic("sm_train", "train-local --params local")
    run = ip.run_line_magic("sm_train", "train-local --params local --local --wait")
    assert run.status == "Completed"
    assert model_json(run.model_data) == {"weight": 2.0}
    assert [(p.step, p.value) for p in run.metrics] == [(0, 1.0), (1, 0.5)]
    assert jobs_named("train-local") == []
    out = capsys.readouterr().out
    assert f"Training job {run.name}: Completed" in out
    assert "console:" not in out
    ip.run_line_magic("sm_logs", f"{run.name} --tail 1")
    assert capsys.readouterr().out.strip() == (
        'seen: {"epochs": "int", "lr": "float", "scale": "int"}')


def test_a_local_run_can_be_stopped(ip, sandbox, capsys):
    import docker

    ip.run_cell_magic("sm_container", "train-local-sleeps --no-push",
                      'import time\nprint("sleeping", flush=True)\ntime.sleep(600)\n')
    run = ip.run_line_magic("sm_train", "train-local-sleeps --local")
    assert wait_until(lambda: "sleeping" in run.logs())
    ip.run_line_magic("sm_stop", run.name)
    assert run.watcher.wait(120)
    assert run.status == "Stopped"
    leftovers = docker.from_env().containers.list(
        all=True, filters={"label": f"sm-magics.training-run={run.name}"})
    assert leftovers == []


def test_interrupting_a_wait_detaches_and_leaves_the_job_running(ip, sandbox, capsys):
    import _thread
    import threading

    ip.run_cell_magic("sm_container", "train-interrupted",
                      'import time\nprint("working", flush=True)\ntime.sleep(600)\n')
    sagemaker = boto3.client("sagemaker")

    def interrupt_once_training():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            names = jobs_named("train-interrupted")
            if names and sagemaker.describe_training_job(
                    TrainingJobName=names[0])["SecondaryStatus"] == "Training":
                _thread.interrupt_main()  # what Ctrl-C / the notebook's stop button sends
                return
            time.sleep(0.5)

    threading.Thread(target=interrupt_once_training, daemon=True).start()
    run = ip.run_line_magic("sm_train", "train-interrupted --wait")
    out = capsys.readouterr().out
    assert f"Stopped waiting. The job {run.name} goes on; `%sm_stop {run.name}` stops it" in out
    assert run.describe()["TrainingJobStatus"] == "InProgress"
    run.stop()
    assert run.watcher.wait(120)
    assert run.status == "Stopped"


def test_attach_from_a_new_kernel_shows_the_finished_job(trained, tmp_path):
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    from sm_magics.__main__ import run_notebook

    run = trained.run_line_magic("sm_train", "train-demo --params demo --wait")
    notebook = new_notebook(cells=[
        new_code_cell("%load_ext sm_magics"),
        new_code_cell(f"job = %sm_attach {run.name} --wait"),
        new_code_cell("print(job.status, job.model_data)"),
    ], metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                "language": "python"}})
    source, output = tmp_path / "attach.ipynb", tmp_path / "attach.out.ipynb"
    nbformat.write(notebook, source)
    assert run_notebook(source, output, timeout=300, workdir=tmp_path) == 0
    cells = nbformat.read(output, as_version=4).cells
    printed = "".join(o.get("text", "") for o in cells[2].outputs)
    assert printed.strip() == f"Completed {run.model_data}"
    panel = cells[1].outputs[0]["data"]
    assert f"Training job {run.name}: Completed" in panel["text/plain"]
    assert run.model_data in panel["text/html"]


# ---------------------------------------------------------------- plans checked before anything


IMAGE_URI = "123456789012.dkr.ecr.us-east-1.amazonaws.com/sagemaker-fraud:1a2b3c4d"
ROLE = "arn:aws:iam::123456789012:role/SageMakerExecution"
STUDIO = "SageMaker Studio (its Docker allows no other)"


class PlanningAws:
    """What ``training.plan`` reads of an AWS context: settings of the test's choosing.

    Every client asked for is recorded, so a test sees that planning sent nothing.
    """

    account = "123456789012"
    role = None

    def __init__(self, docker_network: str | None = None, source: str = "%sm_config") -> None:
        from sm_magics import config

        session = {"region": ("us-east-1", "%sm_config"), "role": (ROLE, "%sm_config"),
                   "bucket": ("team-bucket", "%sm_config")}
        platform = {}
        if source == STUDIO:
            platform["docker_network"] = (docker_network, source)
        elif docker_network is not None:
            session["docker_network"] = (docker_network, source)
        self.settings = config.resolve(session=session, environ={}, sdk_defaults={},
                                       platform=platform)
        self.clients: list[str] = []

    def client(self, service: str, **_):
        self.clients.append(service)
        raise AssertionError(f"planning asked for a {service} client")


def planned(aws, *inputs: str, **options):
    from sm_magics import training
    from sm_magics.params import ParameterSets

    return training.plan(aws, training.TrainOptions(IMAGE_URI, inputs=inputs, **options), {},
                         ParameterSets())


def test_sharded_and_replicated_inputs_are_each_channels_s3_distribution(tmp_path):
    from sm_magics import training

    local = tmp_path / "eval"
    local.mkdir()
    (local / "eval.csv").write_text("a,b\n1,2\n")
    aws = PlanningAws()
    job = planned(aws, "train:sharded=s3://data-bucket/shards/", "vocab=s3://data-bucket/vocab/",
                  f"eval:replicated={local}", instance_count=4)

    assert job.distributions == {"train": "ShardedByS3Key", "vocab": "FullyReplicated",
                                 "eval": "FullyReplicated"}
    assert job.s3_inputs == {"train": "s3://data-bucket/shards/",
                             "vocab": "s3://data-bucket/vocab/"}
    assert job.local_inputs == {"eval": local}
    request = training.create_request(job, "s3://team-bucket/p/params/abc.json", {
        **job.s3_inputs, "eval": "s3://team-bucket/p/inputs/eval/"}, "s3://team-bucket/out")

    def channel(name, uri, distribution, **extra):
        return {"ChannelName": name, "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": uri, "S3DataDistributionType": distribution}},
            "InputMode": "File", **extra}

    assert request["InputDataConfig"] == [
        channel("params", "s3://team-bucket/p/params/abc.json", "FullyReplicated",
                ContentType="application/json"),
        channel("eval", "s3://team-bucket/p/inputs/eval/", "FullyReplicated"),
        channel("train", "s3://data-bucket/shards/", "ShardedByS3Key"),
        channel("vocab", "s3://data-bucket/vocab/", "FullyReplicated"),
    ]
    assert request["ResourceConfig"]["InstanceCount"] == 4
    assert aws.clients == []


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (["train:shard=s3://data-bucket/x/"],
         "--input train:shard=s3://data-bucket/x/: 'shard' is not a way to distribute a channel. "
         "Did you mean `--input train:sharded=s3://data-bucket/x/`? Write train:sharded=... to "
         "give each instance about 1/N of the channel's S3 objects, or train:replicated=... (the "
         "default) to give every instance all of them."),
        (["train:FullyReplicated=data"],
         "--input train:FullyReplicated=data: 'FullyReplicated' is not a way to distribute a "
         "channel. Did you mean `--input train:replicated=data`? Write train:sharded=... to give "
         "each instance about 1/N of the channel's S3 objects, or train:replicated=... (the "
         "default) to give every instance all of them."),
        (["train:=s3://data-bucket/x/"],
         "--input train:=s3://data-bucket/x/: nothing after ':' is not a way to distribute a "
         "channel. Write train:sharded=... to give each instance about 1/N of the channel's S3 "
         "objects, or train:replicated=... (the default) to give every instance all of them."),
        (["train=s3://data-bucket/a/", "train:sharded=s3://data-bucket/b/"],
         "--input: the channel 'train' is given twice."),
        ([":sharded=s3://data-bucket/x/"],
         "--input :sharded=s3://data-bucket/x/: write CHANNEL=PATH or CHANNEL=s3://bucket/prefix, "
         "e.g. `--input train=data/train` (or `--input train:sharded=...` to give each instance a "
         "share of the files)."),
        (["params:sharded=s3://data-bucket/x/"],
         "--input params:sharded=s3://data-bucket/x/: the channel name 'params' carries the "
         "parameters; choose another name."),
        (["my/train:sharded=s3://data-bucket/x/"],
         "--input my/train:sharded=s3://data-bucket/x/: SageMaker channel names may hold"),
    ],
)
def test_bad_input_distributions_are_usage_errors_before_anything_is_sent(inputs, message):
    aws = PlanningAws()
    with pytest.raises(UsageError) as err:
        planned(aws, *inputs, instance_count=2)
    assert type(err.value) is UsageError
    assert str(err.value).startswith(message)
    assert aws.clients == []


LOCAL_HOSTS = (
    "--local --instance-count 2: the hosts of a local multi-host job run on the host's network, "
    "where they find each other as algo-1 to algo-2, but the docker_network setting is '{}' "
    "(from {}); SageMaker Studio's local mode does not run multi-container jobs. Run the job in "
    "the sandbox (`%sm_sandbox start`, then %sm_train without --local) or on SageMaker without "
    "--local, or set `%sm_config --docker-network host` where your Docker engine allows the "
    "host's network (SageMaker Studio's does not).")


@pytest.mark.parametrize(("network", "source"), [("sagemaker", STUDIO),
                                                 ("bridge", "%sm_config")])
def test_a_local_multi_host_job_off_the_hosts_network_is_refused(network, source):
    aws = PlanningAws(network, source)
    with pytest.raises(UsageError) as err:
        planned(aws, local=True, instance_count=2)
    assert type(err.value) is UsageError
    assert str(err.value) == LOCAL_HOSTS.format(network, source)
    assert aws.clients == []


@pytest.mark.parametrize(("network", "local", "count"), [
    (None, True, 3), ("host", True, 3), ("sagemaker", True, 1), ("sagemaker", False, 3)])
def test_local_multi_host_jobs_plan_on_the_hosts_network_and_jobs_elsewhere_plan_anywhere(
        network, local, count):
    aws = PlanningAws(network)
    job = planned(aws, "train:sharded=s3://data-bucket/x/", local=local, instance_count=count)
    assert job.instance_count == count
    assert job.distributions == {"train": "ShardedByS3Key"}
    assert aws.clients == []
