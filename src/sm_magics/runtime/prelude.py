# ---- sm-magics runtime prelude -------------------------------------------------
# Gives the training code below what the SageMaker training contract provides:
#   params / param(name)   typed parameters (an int stays an int, a list a list)
#   channels               {"train": Path("/opt/ml/input/data/train"), ...}
#   model_dir, output_dir  where to save the model and other outputs
#   log_metric(name, value, step=None)   prints "#metric name=value step=N"
#   stopping               a threading.Event, set when the job is stopped
#   on_stop(fn)            calls fn() when the job is stopped (also a decorator)
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
# Standard library only: this runs in any image with Python 3.
import json as _json
import math as _math
import os as _os
import signal as _signal
import sys as _sys
import threading as _threading
import traceback as _traceback
from pathlib import Path as _Path

_CONFIG_DIR = _Path(_os.environ.get("SM_INPUT_CONFIG_DIR", "/opt/ml/input/config"))
_DATA_DIR = _Path(_os.environ.get("SM_INPUT_DIR", "/opt/ml/input")) / "data"
_FAILURE_FILE = _Path(_os.environ.get("SM_OUTPUT_DIR", "/opt/ml/output")) / "failure"


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


_sys.excepthook = _write_failure
if _threading.current_thread() is _threading.main_thread():  # only it may set handlers
    _signal.signal(_signal.SIGTERM, _on_sigterm)
channels = _find_channels()
params = _load_params()
model_dir = _Path(_os.environ.get("SM_MODEL_DIR", "/opt/ml/model"))
output_dir = _Path(_os.environ.get("SM_OUTPUT_DATA_DIR", "/opt/ml/output/data"))
# ---- end of the sm-magics runtime prelude; the cell's code follows --------------
