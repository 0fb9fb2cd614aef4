"""The tutorial notebooks run top to bottom in the sandbox, as a newcomer would run them."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
pytestmark = [pytest.mark.docker, pytest.mark.sandbox, pytest.mark.slow, pytest.mark.tutorial]


@pytest.fixture
def execute(tutorial):
    """``execute(name, profile="plain")``: the notebook, run top to bottom in a fresh kernel.

    Each run has a sandbox of its own; with ``profile="studio"`` the notebook's
    ``%sm_sandbox start`` makes the kernel look like a SageMaker Studio space whose
    Docker has Studio's rules. The plain profile's run is held to
    AmazonSageMakerFullAccess, and shared with test_permissions (conftest's ``tutorial``).
    """
    def run(name: str, profile: str = "plain") -> nbformat.NotebookNode:
        done = tutorial(name, profile)
        assert not (done.home / "state.json").exists()  # the notebook stopped its sandbox
        return done.notebook

    return run


def text_of(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        parts.append(out.get("text", ""))
        parts.append(out.get("data", {}).get("text/plain", ""))
    return "".join(parts)


def test_notebooks_are_committed_without_outputs():
    for path in NOTEBOOKS.glob("*.ipynb"):
        notebook = nbformat.read(path, as_version=4)
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, path.name


def widget_values(notebook) -> list[str]:
    """The string values of every widget in the notebook's saved widget state."""
    state = notebook.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    return [m["state"]["value"] for m in state.values()
            if isinstance(m["state"].get("value"), str)]


@pytest.mark.parametrize("profile", ["plain", "studio", "studio-docker-off"])
def test_quickstart_trains_a_model_and_brings_it_back(execute, profile):
    notebook = execute("quickstart.ipynb", profile)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    outputs = {c.source.splitlines()[0]: text_of(c) for c in code}
    assert re.search(r"api +running +http://127\.0\.0\.1:", outputs["%sm_sandbox start"])
    assert "sandbox (AWS_ENDPOINT_URL)" in outputs["%sm_config"]
    assert "built and pushed" in outputs[next(k for k in outputs if k.startswith("%%sm_container"))]

    summary = outputs["job = %sm_train digits --params digits --wait"]
    assert ": Completed (Completed)" in summary
    model_uri = re.search(r"model: (s3://\S+/model\.tar\.gz)", summary).group(1)
    accuracy = float(re.search(r"held-out accuracy of the trained model: ([0-9.]+)",
                               outputs["import joblib"]).group(1))
    assert accuracy > 0.9
    steps = re.findall(r"test_accuracy\s+(\d)\s+([0-9.]+)", outputs["job.metrics"])
    assert [s for s, _ in steps] == ["0", "1", "2", "3"]

    values = widget_values(notebook)
    header = next(v for v in values if "sm-job-header" in v)
    assert "Completed" in header
    assert any(model_uri in v and "sm-model-uri" in v for v in values)
    chart = next(v for v in values if "class='sm-chart'" in v)
    assert chart.count("data-metric='test_accuracy'") == 1
    assert len(re.search(r"points='([^']*)'", chart).group(1).split()) == 4
    assert re.search(r"api +stopped", outputs["%sm_sandbox stop"])
    if profile == "studio":
        assert "studio-docker  running  unix://" in outputs["%sm_sandbox start"]
        assert "SageMaker Studio (its Docker allows no other)" in outputs["%sm_config"]
    built = outputs[next(k for k in outputs if k.startswith("%%sm_container"))]
    if profile == "studio-docker-off":  # no Docker in the space: the registry builder
        assert re.search(r"builder +registry \(no Docker engine answers\)", built), built
    else:
        assert re.search(r"builder +docker \(a Docker engine answers\)", built), built


def test_parameters_and_data_sweeps_from_one_image(execute):
    # Plain profile only: in a Studio space its builds go through Studio's Docker as the
    # quickstart's do, and its jobs, S3 and comparisons do not touch Docker.
    notebook = execute("parameters-and-data.ipynb")
    code = [c for c in notebook.cells if c.cell_type == "code"]
    outputs = [(c.source.splitlines()[0], text_of(c)) for c in code]
    sweep = next(out for first, out in outputs if first == "runs = {}")
    assert sweep.count(": Completed (Completed)") == 4
    accuracies = next(out for first, out in outputs if first.startswith("for run in runs"))
    scores = dict(re.findall(r"(\d): ([0-9.]+)", accuracies))
    assert set(scores) == {"1", "2", "4", "8"} and all(0.8 < float(s) <= 1 for s in scores.values())
    rebuilt = next(out for first, out in outputs if first.startswith("print('rebuilt"))
    assert "rebuilt: False" in rebuilt
    jobs = next(out for first, out in outputs if first == "%sm_jobs --name wine")
    images = set(re.findall(r"wine:[0-9a-f]+", jobs))
    assert jobs.count("Completed") == 4 and len(images) == 1
    hashes = re.findall(r"wine:[0-9a-f]+\s+([0-9a-f]{12})", jobs)
    assert len(set(hashes)) == 4

    compared = next(c for c in code if c.source.startswith("%sm_compare"))
    lines = text_of(compared).splitlines()
    assert lines[0].split() == ["job", "status", "duration", "billable", "image", "max_depth",
                                "fold_accuracy", "accuracy"]
    rows = [re.split(r"\s{2,}", line) for line in lines[2:6]]
    assert sorted(row[5] for row in rows) == ["1", "2", "4", "8"]
    assert {row[1] for row in rows} == {"Completed"} and len({row[4] for row in rows}) == 1
    for row in rows:  # the final accuracy each job logged, as the sweep's cell printed it
        assert round(float(row[7].removesuffix(" (best)")), 3) == float(scores[row[5]])
    assert sum(row[7].endswith(" (best)") for row in rows) >= 1
    assert "same in all: n_estimators=100" in lines
    assert "best: the highest fold_accuracy, accuracy (guessed from the names" in lines[7]
    html = compared.outputs[0]["data"]["text/html"]
    assert html.count("<polyline data-metric='fold_accuracy'") == 4
    assert sorted(re.findall(r">(max_depth=\d)</text>", html)) == [
        "max_depth=1", "max_depth=2", "max_depth=4", "max_depth=8"]


def test_own_dockerfile_runs_locally_and_as_a_job(execute):
    # Plain profile only: a cell's image build (a hand-written Dockerfile goes through the
    # same build call) and a --local run through Studio's Docker are test_studio_profile's.
    notebook = execute("own-dockerfile-and-local-runs.ipynb")
    code = [c for c in notebook.cells if c.cell_type == "code"]
    outputs = [(c.source.splitlines()[0], text_of(c)) for c in code]
    built = next(out for first, out in outputs if first.startswith("%%sm_container summary"))
    assert "(built and pushed)" in built
    local = next(out for first, out in outputs if first.startswith("local_run = %sm_train"))
    assert ": Completed (Completed)" in local and "metrics: mean=50.5" in local
    summaries = [out for first, out in outputs if first.startswith(("import json", "json.loads"))]
    assert "'label': 'local'" in summaries[0] and "'mean': 50.5" in summaries[0]
    assert "'label': 'sagemaker'" in summaries[1] and "'count': 100" in summaries[1]
    final = next(out for first, out in outputs if first.startswith("job.describe()"))
    assert "'MetricName': 'mean'" in final and "'Value': 50.5" in final


def test_distributed_training_shards_data_over_two_hosts_and_a_spot_job_resumes(execute):
    notebook = execute("distributed-training.ipynb")
    code = [c for c in notebook.cells if c.cell_type == "code"]
    outputs = {c.source.splitlines()[0]: text_of(c) for c in code}
    sandbox_job = outputs["job = %sm_train linefit --instance-count 2 --input train:sharded=shards "
                          "--wait"]
    assert ": Completed (Completed)" in sandbox_job and "metrics: slope=2.99" in sandbox_job
    logs = outputs["%sm_logs {job.name}"]
    assert "[algo-1] algo-1: 4 files, 1000 rows" in logs
    assert "[algo-2] algo-2: 4 files, 1000 rows" in logs
    assert "[algo-1] algo-1: got 1000 rows from algo-2" in logs
    # the panel's log tail names the host of each line too
    assert any("[algo-2] algo-2: 4 files, 1000 rows" in value for value in widget_values(notebook))
    fit = outputs["import json"]
    assert "'rows': 2000" in fit and "'hosts': ['algo-1', 'algo-2']" in fit
    billable, training = ast.literal_eval(outputs["described = job.describe()"])
    assert billable == 2 * training
    local = outputs["local_fit = json.loads((local_job.download_model(\"model-local\") / "
                    "\"line.json\").read_text())"]
    assert local.startswith("(True,") and "'rows': 2000" in local
    assert "as EC2 reclaiming its spot capacity would" in outputs["import time"]
    phases = outputs["spot_job.wait()"]
    assert phases.replace("\n", "").replace(" ", "") == str(
        ["Starting", "Downloading", "Training", "Interrupted", "Starting", "Downloading",
         "Training", "Uploading", "Completed"]).replace(" ", "")
    resumed = {host: int(n) for host, n in re.findall(
        r"'(algo-\d)\.json': \{'resumed_after': (\d+)\}", outputs["folder = spot_job."
                                                                   "download_model(\"model-spot\")"])}
    assert sorted(resumed) == ["algo-1", "algo-2"]
    assert all(3 <= n < 20 for n in resumed.values()), resumed
