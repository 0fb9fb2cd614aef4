# ---- sm-magics runtime prelude -------------------------------------------------
# Gives the training code below what the SageMaker training contract provides:
#   params / param(name)   typed parameters (an int stays an int, a list a list)
#   channels               {"train": Path("/opt/ml/input/data/train"), ...}
#   model_dir, output_dir  where to save the model and other outputs
#   checkpoint_dir         /opt/ml/checkpoints: with --spot, its files are copied to S3
#                          while the job runs and are back there when the job restarts
#   log_metric(name, value, step=None)   prints "#metric name=value step=N"
#   stopping               a threading.Event, set when the job is stopped
#   on_stop(fn)            calls fn() when the job is stopped (also a decorator)
#   hosts, current_host    the job's hosts ["algo-1", "algo-2", ...] and this host's name
#   host_rank              0 on algo-1, N-1 on algo-N (by number: algo-10 comes after algo-9)
#   leader, is_leader      the host of rank 0 ("algo-1") and whether this host is it
#   leader_address         the leader's address, for the other hosts to connect to
#   port(offset=0, host=None)   the TCP port `host` (default: this host) listens on
#   connect(host=None, offset=0, timeout=120.0)   a socket connected to port(offset, host)
#                          on `host` (default: the leader), retried until it listens
# An uncaught exception is written to /opt/ml/output/failure (SageMaker shows it
# as the job's failure reason) and the process still exits non-zero.
# Stopping a job (%sm_stop, the Stop button, MaxRuntimeInSeconds) sends SIGTERM
# to the program, which SageMaker kills 120 s later if it is still running
# (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_StopTrainingJob.html).
# On SIGTERM, `stopping` is set, the on_stop functions run, then SystemExit(143)
# is raised in the main thread so `finally` blocks and atexit functions run and
# the program ends at once (a stopped job is not a failed one: no failure file).
# Code that would rather finish its step calls on_stop(interrupt=False) and
# watches `stopping` itself, e.g. `while not stopping.is_set(): train_one_epoch()`.
# A job with InstanceCount N runs this program on each of its N hosts. Listen on
# port(...) rather than on a fixed number: on SageMaker every host has its own
# network and port(k) is 29500 + k everywhere (29500 is PyTorch's default
# MASTER_PORT); in the sandbox and with --local all hosts share one machine and
# each host gets its own ports, SM_MAGICS_PORT_BASE + host_rank *
# SM_MAGICS_PORTS_PER_HOST + k. So keep k below SM_MAGICS_PORTS_PER_HOST. E.g.
#   server = socket.create_server(("", port()))         # on the leader
#   connection = connect()                              # on the other hosts
#   torch.distributed.init_process_group("gloo", rank=host_rank, world_size=len(hosts),
#       init_method=f"tcp://{leader_address}:{port(host=leader)}")   # one process per host
# Standard library only: this runs in any image with Python 3.
import errno as _errno
import json as _json
import math as _math
import os as _os
import signal as _signal
import socket as _socket
import sys as _sys
import threading as _threading
import time as _time
import traceback as _traceback
from pathlib import Path as _Path

_CONFIG_DIR = _Path(_os.environ.get("SM_INPUT_CONFIG_DIR", "/opt/ml/input/config"))
_DATA_DIR = _Path(_os.environ.get("SM_INPUT_DIR", "/opt/ml/input")) / "data"
_FAILURE_FILE = _Path(_os.environ.get("SM_OUTPUT_DIR", "/opt/ml/output")) / "failure"
_DEFAULT_PORT = 29500  # PyTorch's default MASTER_PORT


def _read_json(path, default):
    try:
        with open(path, encoding="utf-8") as file:
            return _json.load(file)
    except FileNotFoundError:
        return default


def _find_channels():
    names = list(_read_json(_CONFIG_DIR / "inputdataconfig.json", {}))
    names += [n for n in _json.loads(_os.environ.get("SM_CHANNELS", "[]")) if n not in names]
    return {
        name: _Path(_os.environ.get("SM_CHANNEL_" + name.upper(), str(_DATA_DIR / name)))
        for name in names
    }


def _typed(text):
    # SageMaker passes hyperparameters as strings; sm-magics writes them as JSON.
    try:
        return _json.loads(text)
    except ValueError:
        return text


def _load_params():
    # The `params` channel holds the whole parameter document; hyperparameters
    # (the ones that fit the API limits, or values a tuning job chose) override it.
    found = {}
    params_dir = channels.get("params")
    if params_dir is not None and params_dir.is_dir():
        documents = sorted(params_dir.glob("*.json"))
        if len(documents) > 1:
            names = ", ".join(d.name for d in documents)
            raise RuntimeError(
                f"The params channel holds {len(documents)} JSON files ({names}); "
                "expected one parameter document."
            )
        if documents:
            found.update(_read_json(documents[0], {}))
    hyperparameters = _read_json(_CONFIG_DIR / "hyperparameters.json", None)
    if hyperparameters is None:
        hyperparameters = _json.loads(_os.environ.get("SM_HPS", "{}"))
    else:
        hyperparameters = {k: _typed(v) for k, v in hyperparameters.items()}
    # Names starting with "_" or "sagemaker_" are SageMaker's own
    # (e.g. "_tuning_objective_metric"), not the training code's.
    found.update(
        (k, v) for k, v in hyperparameters.items() if not k.startswith(("_", "sagemaker_"))
    )
    return found


def param(name):
    """The value of the parameter `name`, e.g. lr = param("lr")."""
    try:
        return params[name]
    except KeyError:
        known = ", ".join(sorted(params)) or "none"
        raise LookupError(
            f"The parameter {name!r} has no value in this job (parameters passed: {known}). "
            f"Declare it with `{name} = ...  # @param`, in a %%sm_params set given to --params, "
            f"or pass it with `%sm_train ... --hp {name}=VALUE`; outside sm-magics, put it in "
            "/opt/ml/input/config/hyperparameters.json or a JSON file in the params channel."
        ) from None


def log_metric(name, value, step=None):
    """Print `#metric name=value [step=N]`, the line the job's metric definitions match."""
    name = str(name)
    if not name or any(c.isspace() or c == "=" for c in name):
        raise ValueError(f"metric names cannot be empty or contain spaces or '=': {name!r}")
    line = f"#metric {name}={float(value)!r}"
    if step is not None:
        line += f" step={int(step)}"
    if not _math.isfinite(float(value)):
        line += "  (not recorded by SageMaker: not a finite number)"
    print(line, flush=True)


def _write_failure(kind, error, traceback):
    try:
        _FAILURE_FILE.parent.mkdir(parents=True, exist_ok=True)
        # SageMaker shows at most 1024 characters of the failure reason.
        _FAILURE_FILE.write_text(f"{kind.__name__}: {error}"[:1024], encoding="utf-8")
    except OSError:
        pass
    _sys.__excepthook__(kind, error, traceback)


stopping = _threading.Event()
_stop_functions = []
_stop_interrupts = True


def on_stop(fn=None, *, interrupt=True):
    """Call fn() when the job is stopped, e.g. on_stop(lambda: model.save(model_dir / "last")).

    on_stop(interrupt=False): the code is not interrupted; it should watch `stopping`
    and end by itself before SageMaker's kill.
    """
    global _stop_interrupts
    if not interrupt:
        _stop_interrupts = False
    if fn is not None:
        _stop_functions.append(fn)
    return fn


def _on_sigterm(signum, frame):
    if stopping.is_set():  # a second SIGTERM while stopping
        return
    stopping.set()
    print("sm-magics: SIGTERM received, the job is stopping", file=_sys.stderr, flush=True)
    for fn in _stop_functions:
        try:
            fn()
        except Exception:
            _traceback.print_exc()
    if _stop_interrupts:
        raise SystemExit(128 + signum)


def _find_hosts(resources, current):
    # resourceconfig.json lists the hosts sorted as strings (algo-1, algo-10, algo-2, ...).
    names = resources.get("hosts") or _json.loads(_os.environ.get("SM_HOSTS", "[]"))
    names = list(dict.fromkeys(names or ["algo-1"]))
    if current not in names:
        names.append(current)
    return names


def _host_order(name):
    # "algo-N" by N, then the other names as listed (sorted() keeps ties in order).
    number = name[5:] if name.startswith("algo-") else ""
    if number.isascii() and number.isdigit():
        return 0, int(number)
    return 1, 0


def _port_block():
    # (first port, ports per host) when the hosts share one machine, else None.
    base = _os.environ.get("SM_MAGICS_PORT_BASE") or None
    size = _os.environ.get("SM_MAGICS_PORTS_PER_HOST") or None
    if base is None and size is None:
        return None
    try:
        first, count = int(base), int(size)
    except (TypeError, ValueError):
        first = count = 0
    if first < 1 or count < 1 or first + len(hosts) * count - 1 > 65535:
        raise RuntimeError(
            f"SM_MAGICS_PORT_BASE={base} and SM_MAGICS_PORTS_PER_HOST={size} do not give "
            f"{len(hosts)} hosts their ports: set both to positive whole numbers with "
            "SM_MAGICS_PORT_BASE + hosts * SM_MAGICS_PORTS_PER_HOST - 1 <= 65535, or neither."
        )
    return first, count


def port(offset=0, host=None):
    """The TCP port that `host` (default: this host) listens on for its port number `offset`.

    On SageMaker: 29500 + offset on every host (29500 is PyTorch's default MASTER_PORT).
    In the sandbox and with --local, where all hosts share one machine:
    SM_MAGICS_PORT_BASE + rank of host * SM_MAGICS_PORTS_PER_HOST + offset, where
    offset is below SM_MAGICS_PORTS_PER_HOST.
    E.g. socket.create_server(("", port())) on the leader, connect() on the others.
    """
    if host is None:
        host = current_host
    if host not in _ranks:
        raise LookupError(f"{host!r} is not a host of this job; its hosts are {', '.join(hosts)}.")
    if isinstance(offset, bool) or not isinstance(offset, int):
        raise TypeError(f"A port offset is a whole number, not {offset!r}.")
    block = _port_block()
    if block is None:
        if not 0 <= offset <= 65535 - _DEFAULT_PORT:
            raise ValueError(
                f"The port offset {offset} is outside 0..{65535 - _DEFAULT_PORT}: "
                f"{_DEFAULT_PORT} + offset must be a TCP port (at most 65535)."
            )
        return _DEFAULT_PORT + offset
    first, count = block
    if not 0 <= offset < count:
        raise ValueError(
            f"The port offset {offset} is outside 0..{count - 1}: each host of this job "
            f"has {count} ports (SM_MAGICS_PORTS_PER_HOST={count})."
        )
    return first + _ranks[host] * count + offset


def _worth_retrying(error):
    # The name does not resolve yet, or the host is not (yet) reachable or listening.
    return isinstance(error, (_socket.gaierror, ConnectionError, _socket.timeout)) or (
        error.errno in (_errno.EHOSTUNREACH, _errno.ENETUNREACH)
    )


def connect(host=None, offset=0, timeout=120.0):
    """A socket.socket connected to port(offset, host) on `host` (default: the leader).

    Until `timeout` seconds have passed, it tries again every 0.2 s while the host's
    name does not resolve or nothing listens there yet; then it raises TimeoutError.
    E.g. with connect() as connection: connection.sendall(b"ready")
    """
    if host is None:
        host = leader
    number = port(offset, host)
    deadline = _time.monotonic() + timeout
    while True:
        remaining = deadline - _time.monotonic()
        try:
            connection = _socket.create_connection((host, number), timeout=max(remaining, 0.2))
        except OSError as error:
            if not _worth_retrying(error):
                raise
            last_error = error
        else:
            connection.settimeout(None)
            return connection
        remaining = deadline - _time.monotonic()
        if remaining <= 0:
            raise TimeoutError(
                f"Could not connect to {host} port {number} within {timeout:g} s "
                f"({last_error}); the code on {host} should listen on port({offset})."
            ) from last_error
        _time.sleep(min(0.2, remaining))


_sys.excepthook = _write_failure
if _threading.current_thread() is _threading.main_thread():  # only it may set handlers
    _signal.signal(_signal.SIGTERM, _on_sigterm)
channels = _find_channels()
params = _load_params()
model_dir = _Path(_os.environ.get("SM_MODEL_DIR", "/opt/ml/model"))
output_dir = _Path(_os.environ.get("SM_OUTPUT_DATA_DIR", "/opt/ml/output/data"))
# CheckpointConfig.LocalPath's default; %sm_train --spot leaves it so.
checkpoint_dir = _Path("/opt/ml/checkpoints")
_resources = _read_json(_CONFIG_DIR / "resourceconfig.json", {})
current_host = _resources.get("current_host") or _os.environ.get("SM_CURRENT_HOST") or "algo-1"
hosts = _find_hosts(_resources, current_host)
_ranked_hosts = sorted(hosts, key=_host_order)
_ranks = {name: rank for rank, name in enumerate(_ranked_hosts)}
host_rank = _ranks[current_host]
leader = _ranked_hosts[0]
is_leader = current_host == leader
leader_address = leader  # SageMaker's hosts reach each other by name
# ---- end of the sm-magics runtime prelude; the cell's code follows --------------
