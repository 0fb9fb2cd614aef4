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
import socket
import sys
import time
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
           params_doc: dict | None = None, channels: dict[str, dict[str, str]] | None = None,
           resources: dict | None = None) -> Path:
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
        resources or {"current_host": "algo-1", "hosts": ["algo-1"],
                      "network_interface_name": "eth0"}))
    if hyperparameters is not None:
        (config / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    return ml


def start_train(image: str, ml: Path, code: str, environment: dict[str, str] | None = None,
                extra_hosts: dict[str, str] | None = None):
    """Start prelude + ``code`` as /opt/ml/code/train.py; return the running container."""
    (ml / "code" / "train.py").write_text(prelude_source() + code)
    return docker_client().containers.run(
        image, ["python3", "/opt/ml/code/train.py"], detach=True, network_mode="host",
        volumes={str(ml): {"bind": "/opt/ml", "mode": "rw"}}, environment=environment or {},
        extra_hosts=extra_hosts or {},
    )


def finish(container) -> tuple[int, str]:
    """Wait for a container from ``start_train``, remove it; return (exit code, log)."""
    try:
        status = container.wait(timeout=120)
        return status["StatusCode"], container.logs().decode()
    finally:
        container.remove(force=True)


def run_train(image: str, ml: Path, code: str, environment: dict[str, str] | None = None,
              extra_hosts: dict[str, str] | None = None) -> tuple[int, str]:
    """Run prelude + ``code`` as /opt/ml/code/train.py; return (exit code, log)."""
    return finish(start_train(image, ml, code, environment, extra_hosts))


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
    assert public == {"params", "param", "channels", "model_dir", "output_dir", "checkpoint_dir",
                      "log_metric",
                      "stopping", "on_stop", "hosts", "current_host", "host_rank", "leader",
                      "is_leader", "leader_address", "port", "connect"}


# ---- several hosts ----------------------------------------------------------------

CLUSTER_REPORT = """
import json as _j
def _outcome(call):
    try:
        return call()
    except Exception as error:
        return [type(error).__name__, str(error)]
_checks = {name: _outcome(call) for name, call in CHECKS.items()}
(model_dir / "cluster.json").write_text(_j.dumps({
    "hosts": hosts, "current_host": current_host, "host_rank": host_rank, "leader": leader,
    "is_leader": is_leader, "leader_address": leader_address, "checks": _checks}))
"""


def cluster_report(checks: dict[str, str]) -> str:
    """Code that records the prelude's host names and the value (or error) of each check."""
    calls = ", ".join(f"{name!r}: lambda: {expression}" for name, expression in checks.items())
    return f"CHECKS = {{{calls}}}\n" + CLUSTER_REPORT


def cluster(ml: Path) -> dict:
    return json.loads((ml / "model" / "cluster.json").read_text())


def resource_config(count: int, current_host: str) -> dict:
    """resourceconfig.json of a homogeneous cluster, hosts sorted as SageMaker sorts them."""
    names = sorted(f"algo-{n}" for n in range(1, count + 1))  # algo-1, algo-10, algo-11, ...
    return {"current_host": current_host, "current_instance_type": "ml.m5.xlarge",
            "current_group_name": "homogeneousCluster", "hosts": names,
            "instance_groups": [{"instance_group_name": "homogeneousCluster",
                                 "instance_type": "ml.m5.xlarge", "hosts": names}],
            "network_interface_name": "eth0"}


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive TCP ports that nothing on 127.0.0.1 listens on."""
    while True:
        held = [socket.socket()]
        try:
            held[0].bind(("127.0.0.1", 0))
            first = held[0].getsockname()[1]
            for number in range(first + 1, first + count):
                held.append(socket.socket())
                held[-1].bind(("127.0.0.1", number))
            return first
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()


def wait_for(path: Path, seconds: float = 60.0) -> str:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} was not written"
        time.sleep(0.05)
    return path.read_text()


# Every host name resolves to this machine, as in the sandbox.
LOCAL_HOSTS = {f"algo-{n}": "127.0.0.1" for n in range(1, 13)}


def test_a_single_host_job_without_resource_config(image, tmp_path):
    ml = layout(tmp_path, hyperparameters={})
    (ml / "input" / "config" / "resourceconfig.json").unlink()

    code, log = run_train(image, ml, cluster_report({
        "port()": "port()", "port(2)": "port(2)", "port(host='algo-1')": "port(host='algo-1')",
        "highest": "port(65535 - 29500)", "too high": "port(65535 - 29500 + 1)",
        "negative": "port(-1)", "not a whole number": "port(0.5)",
        "unknown host": "port(host='algo-2')",
    }))

    assert code == 0, log
    assert cluster(ml) == {
        "hosts": ["algo-1"], "current_host": "algo-1", "host_rank": 0, "leader": "algo-1",
        "is_leader": True, "leader_address": "algo-1",
        "checks": {
            "port()": 29500, "port(2)": 29502, "port(host='algo-1')": 29500, "highest": 65535,
            "too high": ["ValueError", "The port offset 36036 is outside 0..36035: "
                         "29500 + offset must be a TCP port (at most 65535)."],
            "negative": ["ValueError", "The port offset -1 is outside 0..36035: "
                         "29500 + offset must be a TCP port (at most 65535)."],
            "not a whole number": ["TypeError", "A port offset is a whole number, not 0.5."],
            "unknown host": ["LookupError",
                             "'algo-2' is not a host of this job; its hosts are algo-1."],
        },
    }


def test_the_training_toolkit_variables_name_the_hosts_without_resource_config(
        image, tmp_path):
    ml = layout(tmp_path, hyperparameters={})
    (ml / "input" / "config" / "resourceconfig.json").unlink()
    environment = {"SM_HOSTS": json.dumps(["algo-2", "algo-1"]), "SM_CURRENT_HOST": "algo-2"}

    code, log = run_train(image, ml, cluster_report({"port()": "port()"}), environment)

    assert code == 0, log
    assert cluster(ml) == {
        "hosts": ["algo-2", "algo-1"], "current_host": "algo-2", "host_rank": 1,
        "leader": "algo-1", "is_leader": False, "leader_address": "algo-1",
        "checks": {"port()": 29500}}


TWELVE_HOSTS = sorted(f"algo-{n}" for n in range(1, 13))
HOST_CHECKS = {
    "port()": "port()", "port(1, 'algo-1')": "port(1, 'algo-1')",
    "port(3, 'algo-12')": "port(3, 'algo-12')",
    "distances": "{h: port(0, h) - port(0, leader) for h in hosts}",
    "offset 4": "port(4)", "negative": "port(-1, 'algo-2')",
    "unknown host": "port(host='algo-13')",
}


def test_hosts_are_ranked_by_number_and_share_the_default_ports_on_sagemaker(image, tmp_path):
    assert TWELVE_HOSTS[:3] == ["algo-1", "algo-10", "algo-11"]
    ml = layout(tmp_path, hyperparameters={}, resources=resource_config(12, "algo-10"))
    # resourceconfig.json wins over the training toolkit's variables.
    environment = {"SM_HOSTS": json.dumps(["algo-1"]), "SM_CURRENT_HOST": "algo-1"}

    code, log = run_train(image, ml, cluster_report(HOST_CHECKS), environment)

    assert code == 0, log
    report = cluster(ml)
    assert {k: v for k, v in report.items() if k != "checks"} == {
        "hosts": TWELVE_HOSTS, "current_host": "algo-10", "host_rank": 9, "leader": "algo-1",
        "is_leader": False, "leader_address": "algo-1"}
    assert report["checks"] == {
        "port()": 29500, "port(1, 'algo-1')": 29501, "port(3, 'algo-12')": 29503,
        "distances": {h: 0 for h in TWELVE_HOSTS},  # every host uses the same ports
        "offset 4": 29504,
        "negative": ["ValueError", "The port offset -1 is outside 0..36035: "
                     "29500 + offset must be a TCP port (at most 65535)."],
        "unknown host": ["LookupError", "'algo-13' is not a host of this job; its hosts are "
                         + ", ".join(TWELVE_HOSTS) + "."],
    }


def test_hosts_sharing_one_machine_get_a_slice_of_the_port_block_each(image, tmp_path):
    ml = layout(tmp_path, hyperparameters={}, resources=resource_config(12, "algo-10"))
    environment = {"SM_MAGICS_PORT_BASE": "41000", "SM_MAGICS_PORTS_PER_HOST": "4"}

    code, log = run_train(image, ml, cluster_report(HOST_CHECKS), environment)

    assert code == 0, log
    assert cluster(ml)["checks"] == {
        "port()": 41000 + 9 * 4, "port(1, 'algo-1')": 41001, "port(3, 'algo-12')": 41047,
        "distances": {f"algo-{n}": (n - 1) * 4 for n in range(1, 13)},  # slices in rank order
        "offset 4": ["ValueError", "The port offset 4 is outside 0..3: each host of this job "
                     "has 4 ports (SM_MAGICS_PORTS_PER_HOST=4)."],
        "negative": ["ValueError", "The port offset -1 is outside 0..3: each host of this job "
                     "has 4 ports (SM_MAGICS_PORTS_PER_HOST=4)."],
        "unknown host": ["LookupError", "'algo-13' is not a host of this job; its hosts are "
                         + ", ".join(TWELVE_HOSTS) + "."],
    }


def test_a_port_block_without_its_size_fails_when_a_port_is_asked_for(image, tmp_path):
    ml = layout(tmp_path, hyperparameters={}, resources=resource_config(2, "algo-1"))

    code, log = run_train(image, ml, cluster_report({"port()": "port()"}),
                          {"SM_MAGICS_PORT_BASE": "41000"})

    assert code == 0, log
    assert cluster(ml)["checks"]["port()"] == [
        "RuntimeError", "SM_MAGICS_PORT_BASE=41000 and SM_MAGICS_PORTS_PER_HOST=None do not "
        "give 2 hosts their ports: set both to positive whole numbers with SM_MAGICS_PORT_BASE"
        " + hosts * SM_MAGICS_PORTS_PER_HOST - 1 <= 65535, or neither."]


def test_connect_retries_until_the_leader_listens(image, tmp_path):
    listening = free_ports(1)
    ml = layout(tmp_path, hyperparameters={}, resources=resource_config(2, "algo-2"))
    # 3 ports per host: the leader's port(2) is the free port.
    environment = {"SM_MAGICS_PORT_BASE": str(listening - 2), "SM_MAGICS_PORTS_PER_HOST": "3"}
    worker = """
import json
import time as _t
(model_dir / "connecting").write_text(str(port(2, leader)))
_started = _t.monotonic()
with connect(offset=2, timeout=30) as _connection:
    _seconds = _t.monotonic() - _started
    _connection.sendall(current_host.encode())
    _reply = _connection.recv(100).decode()
(model_dir / "connected.json").write_text(json.dumps({"seconds": _seconds, "reply": _reply}))
"""
    container = start_train(image, ml, worker, environment, LOCAL_HOSTS)
    try:
        assert wait_for(ml / "model" / "connecting") == str(listening)
        time.sleep(0.5)  # connect() is being refused meanwhile
        with socket.create_server(("127.0.0.1", listening)) as server:
            server.settimeout(60)
            peer, _ = server.accept()
            with peer:
                greeting = peer.recv(100)
                peer.sendall(b"welcome, " + greeting)
    finally:
        code, log = finish(container)

    assert code == 0, log
    assert greeting == b"algo-2"
    connected = json.loads((ml / "model" / "connected.json").read_text())
    assert connected["reply"] == "welcome, algo-2"
    assert connected["seconds"] >= 0.4


def test_connect_waits_for_the_host_name_to_resolve(image, tmp_path):
    listening = free_ports(1)
    ml = layout(tmp_path, hyperparameters={}, resources=resource_config(2, "algo-1"))
    environment = {"SM_MAGICS_PORT_BASE": str(listening - 2), "SM_MAGICS_PORTS_PER_HOST": "2"}
    leader_code = """
import json
import socket as _s
import threading as _th
import time as _t
with open("/etc/nsswitch.conf", "w") as _f:  # names come from /etc/hosts only
    _f.write("hosts: files\\n")
try:
    _s.getaddrinfo("algo-2", None)
    _resolved_before = True
except _s.gaierror:
    _resolved_before = False

def _algo_2_comes_up():
    _t.sleep(0.5)
    with open("/etc/hosts", "a") as _f:
        _f.write("127.0.0.1 algo-2\\n")
    _t.sleep(0.3)
    with _s.create_server(("127.0.0.1", port(host="algo-2"))) as _server:
        _peer, _ = _server.accept()
        with _peer:
            _peer.sendall(b"algo-2 is up")

_th.Thread(target=_algo_2_comes_up, daemon=True).start()
_started = _t.monotonic()
with connect("algo-2", timeout=30) as _connection:
    _seconds = _t.monotonic() - _started
    _port = _connection.getpeername()[1]
    _message = _connection.recv(100).decode()
(model_dir / "connected.json").write_text(json.dumps(
    {"resolved_before": _resolved_before, "port": _port, "seconds": _seconds,
     "message": _message}))
"""
    code, log = run_train(image, ml, leader_code, environment, {"algo-1": "127.0.0.1"})

    assert code == 0, log
    connected = json.loads((ml / "model" / "connected.json").read_text())
    assert connected["resolved_before"] is False
    assert connected["message"] == "algo-2 is up"
    assert connected["port"] == listening
    assert connected["seconds"] >= 0.7


def test_connect_gives_up_after_its_timeout(image, tmp_path):
    unused = free_ports(1)
    ml = layout(tmp_path, hyperparameters={}, resources=resource_config(2, "algo-2"))
    environment = {"SM_MAGICS_PORT_BASE": str(unused), "SM_MAGICS_PORTS_PER_HOST": "1"}
    worker = """
import json
import time as _t
_started = _t.monotonic()
try:
    connect(timeout=0.5)
    _error = None
except TimeoutError as error:
    _error = [str(error), type(error.__cause__).__name__]
(model_dir / "gave_up.json").write_text(json.dumps(
    {"seconds": _t.monotonic() - _started, "error": _error}))
"""
    code, log = run_train(image, ml, worker, environment, LOCAL_HOSTS)

    assert code == 0, log
    gave_up = json.loads((ml / "model" / "gave_up.json").read_text())
    assert gave_up["error"] == [
        f"Could not connect to algo-1 port {unused} within 0.5 s ([Errno 111] Connection "
        "refused); the code on algo-1 should listen on port(0).", "ConnectionRefusedError"]
    assert 0.5 <= gave_up["seconds"] < 2.0


def test_two_hosts_on_one_machine_listen_on_their_own_ports_and_talk(image, tmp_path):
    first = free_ports(2)
    environment = {"SM_MAGICS_PORT_BASE": str(first), "SM_MAGICS_PORTS_PER_HOST": "1"}
    train = """
import json
import socket as _s
_server = _s.create_server(("127.0.0.1", port()))  # every host listens on its port()
if is_leader:
    _server.settimeout(60)
    _peer, _ = _server.accept()
    with _peer:
        _result = _peer.recv(100).decode()
        _peer.sendall(f"{current_host} greets {_result}".encode())
else:
    with connect(timeout=60) as _connection:
        _connection.sendall(current_host.encode())
        _result = _connection.recv(100).decode()
(model_dir / "result.json").write_text(json.dumps([port(), _result]))
"""
    machines = {name: layout(tmp_path / name, hyperparameters={},
                             resources=resource_config(2, name))
                for name in ["algo-1", "algo-2"]}
    # The worker starts first: it keeps trying until the leader listens.
    containers = [start_train(image, machines[name], train, environment, LOCAL_HOSTS)
                  for name in ["algo-2", "algo-1"]]
    outcomes = [finish(container) for container in containers]

    assert [code for code, _ in outcomes] == [0, 0], outcomes
    results = {name: json.loads((ml / "model" / "result.json").read_text())
               for name, ml in machines.items()}
    assert results == {"algo-1": [first, "algo-2"],
                       "algo-2": [first + 1, "algo-1 greets algo-2"]}
