"""What runs when SageMaker starts a generated image, and how it ends when the job is stopped.

SageMaker starts a training image as ``docker run IMAGE train``: the image's own
ENTRYPOINT (if any) gets ``train`` as its argument, and ``train`` is looked up
on the image's PATH. ``StopTrainingJob`` sends SIGTERM to the container's PID 1
and kills it after a grace period.

The Deep Learning Container stand-in is built here from the offline base with
the three traits of the AWS PyTorch/TensorFlow training images that matter:
``/opt/conda/bin`` first on PATH; the training toolkit's own ``train`` there;
an ENTRYPOINT script that needs its working directory to be ``/`` and then
runs its arguments through PATH.
"""

from __future__ import annotations

import threading
import time
import uuid

import docker
import pytest

from images import build_from_files, build_recipe
from sm_magics.contract import ContainerRun, OptMl
from sm_magics.recipe import Recipe

pytestmark = [pytest.mark.docker, pytest.mark.slow]

BASE = "sm-magics/sandbox-base:bookworm"
DLC_LIKE = "sm-magics-test/dlc-like:1"

# sagemaker-training's console script: it runs the entry point named by the
# `sagemaker_program` hyperparameter, which a custom image's job does not have.
TOOLKIT_TRAIN = b"""#!/bin/sh
echo "sagemaker-training: No sagemaker_program hyperparameter: nothing to run" >&2
exit 1
"""

# Like start_with_right_hostname.sh: it edits a file of its working directory `/`
# (`sed -ie ... changehostname.c`), then runs the command it was given through PATH.
START_SH = b"""#!/bin/bash
if [ ! -f changehostname.c ]; then
    echo "sed: can't read changehostname.c: No such file or directory" >&2
    exit 2
fi
cd /tmp
exec "$@"
"""

DLC_DOCKERFILE = f"""FROM {BASE}
COPY train /opt/conda/bin/train
COPY start.sh /start.sh
COPY changehostname.c /changehostname.c
ENV PATH=/opt/conda/bin:$PATH
WORKDIR /
ENTRYPOINT ["/start.sh"]
CMD ["/bin/bash"]
""".encode()

CELL = """\
import os
print("the cell's code runs in", os.getcwd(), flush=True)
(model_dir / "model.txt").write_text("trained on a DLC-like base")
"""

FINISHES_ITS_STEP_CELL = """\
import time

on_stop(interrupt=False)
on_stop(lambda: print("on_stop: told to stop", flush=True))
print("training", flush=True)
steps = 0
while not stopping.is_set():
    time.sleep(0.2)
    steps += 1
(model_dir / "last-step.txt").write_text(str(steps))
print("ended by itself after", steps, "steps", flush=True)
"""

FAILING_STOP_FUNCTION_CELL = """\
import time

on_stop(lambda: 1 / 0)
on_stop(lambda: (model_dir / "saved.txt").write_text("still saved"))
print("training", flush=True)
time.sleep(600)
"""

STOPPABLE_CELL = """\
import time


@on_stop
def save_checkpoint():
    (model_dir / "checkpoint.txt").write_text("saved when stopped")
    print("on_stop: checkpoint saved", flush=True)


print("training", flush=True)
try:
    while True:
        time.sleep(0.2)
finally:
    print(f"finally: stopping={stopping.is_set()}", flush=True)
"""


@pytest.fixture(scope="module")
def dlc_base():
    """The Deep Learning Container stand-in, in the local engine (as the offline base is)."""
    return build_from_files(docker.from_env(), DLC_LIKE, {
        "Dockerfile": DLC_DOCKERFILE, "train": TOOLKIT_TRAIN, "start.sh": START_SH,
        "changehostname.c": b"/* PLACEHOLDER_HOSTNAME */\n"})


def wait_until(check, timeout=120.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False


def transition_time(described: dict, status: str) -> float:
    return next(t["StartTime"] for t in described["SecondaryStatusTransitions"]
                if t["Status"] == status)


def seconds(value) -> float:
    return value.timestamp() if hasattr(value, "timestamp") else float(value)


def stopped_once_training(image: str, root, stop_grace: float = 30):
    """Run ``image`` under the training contract and stop it when it prints ``training``.

    Returns the result, the output lines, the layout and the seconds from the stop to the end.
    """
    layout = OptMl.create(root / "opt_ml")
    lines: list[str] = []
    stopped_at: list[float] = []

    def on_line(line: str) -> None:
        lines.append(line)
        if line == "training" and not stopped_at:
            stopped_at.append(time.monotonic())
            run.stop()

    run = ContainerRun(docker.from_env(), image, layout, on_line=on_line, network="host",
                       stop_grace=stop_grace, labels={"sm-magics.test-run": uuid.uuid4().hex})
    watchdog = threading.Timer(120, run.kill)  # a run that never prints `training` ends too
    watchdog.start()
    try:
        result = run.run()
    finally:
        watchdog.cancel()
    assert stopped_at, lines
    return result, lines, layout, time.monotonic() - stopped_at[0]


@pytest.fixture
def cell_image(tmp_path):
    """Build a cell on the offline base, as ``%%sm_container`` would; returns the image tag."""
    client = docker.from_env()
    tags = []

    def build(body: str) -> str:
        tags.append(build_recipe(client, Recipe(name="entry", body=body, base=BASE, cwd=tmp_path),
                                 f"sm-magics-test/entry:{uuid.uuid4().hex[:12]}"))
        return tags[-1]

    yield build
    for tag in tags:
        client.images.remove(tag)


def test_on_stop_functions_and_finally_blocks_run_and_the_program_exits_143(cell_image,
                                                                          tmp_path):
    result, lines, layout, took = stopped_once_training(cell_image(STOPPABLE_CELL), tmp_path)

    assert result.stopped and result.exit_code == 143
    assert took < 8
    assert lines.index("on_stop: checkpoint saved") < lines.index("finally: stopping=True")
    assert "sm-magics: SIGTERM received, the job is stopping" in lines
    assert (layout.model_dir / "checkpoint.txt").read_text() == "saved when stopped"
    assert result.failure is None  # a stopped program is not a failed one


def test_with_interrupt_false_the_code_sees_stopping_and_ends_by_itself(cell_image, tmp_path):
    result, lines, layout, took = stopped_once_training(cell_image(FINISHES_ITS_STEP_CELL),
                                                        tmp_path)

    assert result.stopped and result.exit_code == 0
    assert took < 8
    assert "on_stop: told to stop" in lines
    assert lines[-1].startswith("ended by itself after")
    assert int((layout.model_dir / "last-step.txt").read_text()) >= 1
    assert result.failure is None


def test_a_failing_on_stop_function_does_not_keep_the_others_from_running(cell_image,
                                                                         tmp_path):
    result, lines, layout, took = stopped_once_training(cell_image(FAILING_STOP_FUNCTION_CELL),
                                                        tmp_path)

    assert result.stopped and result.exit_code == 143
    assert took < 8
    assert "ZeroDivisionError: division by zero" in lines
    assert (layout.model_dir / "saved.txt").read_text() == "still saved"
    assert result.failure is None


@pytest.mark.sandbox
@pytest.mark.parametrize("where", ["sandbox", "local"])
def test_the_cells_train_runs_on_a_deep_learning_container_base(ip, sandbox, dlc_base, where,
                                                                 tmp_path):
    image = ip.run_cell_magic("sm_container", f"entry-dlc --base {dlc_base}", CELL)
    config = docker.from_env().images.get(image.uri).attrs["Config"]
    assert config["Entrypoint"] == ["/start.sh"]  # the base's set-up still runs
    assert config["WorkingDir"] == "/"            # where that set-up expects to be

    run = ip.run_line_magic("sm_train", "entry-dlc --wait" + (" --local" if where == "local"
                                                               else ""))

    assert run.status == "Completed"
    assert "the cell's code runs in /opt/program" in run.logs()
    model = run.download_model(tmp_path / "model")
    assert (model / "model.txt").read_text() == "trained on a DLC-like base"


@pytest.mark.sandbox
@pytest.mark.parametrize("where, builder", [("sandbox", "docker"), ("local", "docker"),
                                            ("sandbox", "registry")])
def test_a_stopped_job_runs_its_stop_code_and_ends_well_before_the_kill(ip, sandbox, where,
                                                                       builder, tmp_path):
    # both builders' images: the registry builder's launcher execs the base's python3 too
    ip.run_cell_magic("sm_container", f"entry-stop --builder {builder}", STOPPABLE_CELL)
    run = ip.run_line_magic("sm_train", "entry-stop" + (" --local" if where == "local" else ""))
    assert wait_until(lambda: "training" in run.logs())

    ip.run_line_magic("sm_stop", run.name)
    assert run.watcher.wait(120)

    assert run.status == "Stopped"
    described = run.describe()
    assert "FailureReason" not in described  # a stopped job is not a failed one
    stop_took = (seconds(transition_time(described, "Stopped"))
                 - seconds(transition_time(described, "Stopping")))
    assert stop_took < 8, f"{stop_took:.1f} s from the stop to Stopped: the kill ended it"
    logs = run.logs()
    assert "on_stop: checkpoint saved" in logs
    assert "finally: stopping=True" in logs
    model = run.download_model(tmp_path / "model")
    assert (model / "checkpoint.txt").read_text() == "saved when stopped"
