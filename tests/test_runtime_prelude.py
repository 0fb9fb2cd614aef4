"""The runtime prelude, run as the top of a real train.py in a real container.

Each test lays out a SageMaker training directory (``/opt/ml/input/config``,
``/opt/ml/input/data/<channel>``, ``/opt/ml/model``, ``/opt/ml/output``), mounts
it into the offline base image and runs ``python3 train.py`` there, where
``train.py`` is the prelude followed by the test's code.
"""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path

import pytest

from sm_magics import params as sm_params
from sm_magics.docker_engine import docker_client
from sm_magics.runtime import metric_regex, prelude_source
from sm_magics.sandbox.base_image import BASE_IMAGE, ensure_base_image

pytestmark = pytest.mark.docker

REPORT = """
import json as _j
with open(model_dir / "seen.json", "w") as _f:
    _j.dump({k: [type(v).__name__, v] for k, v in params.items()}, _f)
"""


@pytest.fixture(scope="module")
def image() -> str:
    return ensure_base_image(docker_client()) or BASE_IMAGE


def layout(root: Path, hyperparameters: dict[str, str] | None = None,
           params_doc: dict | None = None, channels: dict[str, dict[str, str]] | None = None
           ) -> Path:
    """A /opt/ml tree as SageMaker lays it out before starting the container."""
    ml = root / "ml"
    config = ml / "input" / "config"
    config.mkdir(parents=True)
    (ml / "model").mkdir()
    (ml / "output" / "data").mkdir(parents=True)
    (ml / "code").mkdir()
    channels = dict(channels or {})
    if params_doc is not None:
        channels["params"] = {f"{sm_params.sha256(params_doc)}.json":
                              sm_params.canonical_json(params_doc)}
    for channel, files in channels.items():
        folder = ml / "input" / "data" / channel
        folder.mkdir(parents=True)
        for name, text in files.items():
            (folder / name).write_text(text)
    (config / "inputdataconfig.json").write_text(json.dumps({
        name: {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated",
               "RecordWrapperType": "None"} for name in channels}))
    (config / "resourceconfig.json").write_text(json.dumps(
        {"current_host": "algo-1", "hosts": ["algo-1"], "network_interface_name": "eth0"}))
    if hyperparameters is not None:
        (config / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    return ml


def run_train(image: str, ml: Path, code: str, environment: dict[str, str] | None = None
              ) -> tuple[int, str]:
    """Run prelude + ``code`` as /opt/ml/code/train.py; return (exit code, log)."""
    (ml / "code" / "train.py").write_text(prelude_source() + code)
    container = docker_client().containers.run(
        image, ["python3", "/opt/ml/code/train.py"], detach=True, network_mode="host",
        volumes={str(ml): {"bind": "/opt/ml", "mode": "rw"}}, environment=environment or {},
    )
    try:
        status = container.wait(timeout=120)
        return status["StatusCode"], container.logs().decode()
    finally:
        container.remove(force=True)


def seen(ml: Path) -> dict:
    return json.loads((ml / "model" / "seen.json").read_text())


def test_code_sees_typed_values_from_the_params_channel(image, tmp_path):
    doc = {"epochs": 5, "lr": 0.05, "layers": [64, 32], "amp": True, "seed": None,
           "optimizer": {"name": "adam", "betas": [0.9, 0.999]}, "version": "1.0",
           "vocabulary": "w" * 10_000}
    fit = sm_params.hyperparameters(doc)
    assert "vocabulary" in fit.left_out  # 10 kB: only the channel carries it
    ml = layout(tmp_path, hyperparameters=fit.values, params_doc=doc)

    code, log = run_train(image, ml, REPORT + "assert param('epochs') + 1 == 6\n")

    assert code == 0, log
    assert seen(ml) == {
        "epochs": ["int", 5], "lr": ["float", 0.05], "layers": ["list", [64, 32]],
        "amp": ["bool", True], "seed": ["NoneType", None],
        "optimizer": ["dict", {"name": "adam", "betas": [0.9, 0.999]}],
        "version": ["str", "1.0"], "vocabulary": ["str", "w" * 10_000],
    }
    assert not (ml / "output" / "failure").exists()


def test_hyperparameters_alone_are_parsed_as_json_and_sagemaker_names_are_dropped(
        image, tmp_path):
    ml = layout(tmp_path, hyperparameters={
        "epochs": "5", "layers": "[64, 32]", "optimizer": "adam", "grid": '{"a": [1]}',
        "_tuning_objective_metric": "loss", "sagemaker_program": "train.py"})

    code, log = run_train(image, ml, REPORT)

    assert code == 0, log
    assert seen(ml) == {"epochs": ["int", 5], "layers": ["list", [64, 32]],
                        "optimizer": ["str", "adam"], "grid": ["dict", {"a": [1]}]}


def test_a_tuning_job_hyperparameter_overrides_the_params_channel(image, tmp_path):
    doc = {"lr": 0.05, "layers": [64, 32]}
    ml = layout(tmp_path, hyperparameters={"lr": "0.2", "layers": "[64,32]"}, params_doc=doc)

    code, log = run_train(image, ml, REPORT)

    assert code == 0, log
    assert seen(ml) == {"lr": ["float", 0.2], "layers": ["list", [64, 32]]}


def test_channels_and_output_paths_follow_the_training_contract(image, tmp_path):
    ml = layout(tmp_path, hyperparameters={},
                channels={"train": {"rows.csv": "a,b\n1,2\n"}, "validation": {"v.csv": "x\n"}})
    code_ = """
import json as _j
report = {
    "channels": {k: str(v) for k, v in channels.items()},
    "rows": (channels["train"] / "rows.csv").read_text(),
    "model_dir": str(model_dir), "output_dir": str(output_dir),
    "path_types": sorted({type(p).__name__ for p in [model_dir, output_dir, *channels.values()]}),
}
(model_dir / "report.json").write_text(_j.dumps(report))
(output_dir / "extra.txt").write_text("kept")
"""
    code, log = run_train(image, ml, code_)

    assert code == 0, log
    report = json.loads((ml / "model" / "report.json").read_text())
    assert report == {
        "channels": {"train": "/opt/ml/input/data/train",
                     "validation": "/opt/ml/input/data/validation"},
        "rows": "a,b\n1,2\n", "model_dir": "/opt/ml/model", "output_dir": "/opt/ml/output/data",
        "path_types": ["PosixPath"],
    }
    assert (ml / "output" / "data" / "extra.txt").read_text() == "kept"


def test_training_toolkit_variables_are_honoured(image, tmp_path):
    ml = layout(tmp_path, channels={"train": {"a.txt": "from elsewhere"}})
    (ml / "input" / "config" / "inputdataconfig.json").unlink()
    environment = {
        "SM_HPS": json.dumps({"epochs": 3, "layers": [8]}),
        "SM_CHANNELS": json.dumps(["train"]),
        "SM_CHANNEL_TRAIN": "/opt/ml/input/data/train",
        "SM_MODEL_DIR": "/opt/ml/output/data",
        "SM_OUTPUT_DATA_DIR": "/opt/ml/code",
    }
    code_ = REPORT + """
(output_dir / "paths.txt").write_text(
    f"{model_dir} {output_dir} {(channels['train'] / 'a.txt').read_text()}")
"""
    code, log = run_train(image, ml, code_, environment=environment)

    assert code == 0, log
    assert json.loads((ml / "output" / "data" / "seen.json").read_text()) == {
        "epochs": ["int", 3], "layers": ["list", [8]]}
    assert (ml / "code" / "paths.txt").read_text() == (
        "/opt/ml/output/data /opt/ml/code from elsewhere")


def test_an_uncaught_exception_writes_the_failure_file_and_exits_non_zero(image, tmp_path):
    ml = layout(tmp_path, hyperparameters={})

    code, log = run_train(image, ml, "raise ValueError('column amount has 3 missing values')\n")

    assert code != 0
    assert (ml / "output" / "failure").read_text() == (
        "ValueError: column amount has 3 missing values")
    assert "Traceback (most recent call last)" in log


def test_a_missing_parameter_fails_naming_it_and_how_to_pass_it(image, tmp_path):
    ml = layout(tmp_path, hyperparameters={"epochs": "3"})

    code, _ = run_train(image, ml, 'lr = param("lr")  # @param\n')

    failure = (ml / "output" / "failure").read_text()
    assert code != 0
    assert failure.startswith("LookupError: The parameter 'lr' has no value in this job")
    assert "parameters passed: epochs" in failure
    assert "--hp lr=VALUE" in failure


def test_log_metric_prints_lines_that_the_metric_regex_matches(image, tmp_path):
    ml = layout(tmp_path, hyperparameters={})
    code_ = """
for step, loss in enumerate([0.5, 0.25, 1e-05]):
    log_metric("loss", loss, step=step)
log_metric("val:accuracy", 0.9)
log_metric("loss", float("nan"))
"""
    code, log = run_train(image, ml, code_)

    assert code == 0, log
    assert re.findall(metric_regex("loss"), log) == ["0.5", "0.25", "1e-05"]
    assert re.findall(metric_regex("val:accuracy"), log) == ["0.9"]
    assert "#metric loss=0.25 step=1" in log.splitlines()


def test_metric_regex_is_plain_enough_for_sagemaker():
    regex = metric_regex("train.loss")
    assert regex == r"#metric train\.loss=([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"
    assert re.compile(regex).groups == 1
    assert re.search(regex, "#metric train_loss=1.0") is None
    with pytest.raises(ValueError):
        metric_regex("train loss")


def test_prelude_uses_only_the_standard_library_and_keeps_its_namespace_tidy():
    tree = ast.parse(prelude_source())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom)}
    assert imported <= set(sys.stdlib_module_names)
    public = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            public.add(node.name)
        elif isinstance(node, ast.Assign):
            public |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            public |= {alias.asname or alias.name for alias in node.names}
    public = {name for name in public if not name.startswith("_")}
    assert public == {"params", "param", "channels", "model_dir", "output_dir", "log_metric",
                      "stopping", "on_stop"}
