"""What runs inside the training container: the prelude of every generated ``train.py``.

The prelude (``prelude.py`` beside this file) is plain standard-library Python
that is copied, as text, to the top of ``train.py``; it is never imported by
sm-magics itself (importing it would install its failure hook in the notebook).
It gives the training code ``params``, ``param(name)``, ``channels``,
``model_dir``, ``output_dir``, ``checkpoint_dir``, ``log_metric(name, value, step=None)``, and for a
stopped job (SIGTERM) the ``stopping`` event and ``on_stop(fn)``.

For a job on several hosts (``algo-1`` .. ``algo-N``) it gives ``hosts``,
``current_host``, ``host_rank`` (0 on ``algo-1``, N-1 on ``algo-N``), ``leader``,
``is_leader``, ``leader_address``, ``port(offset=0, host=None)`` (the port a host
listens on: 29500 + offset on SageMaker, PyTorch's default ``MASTER_PORT``; a
slice of ``SM_MAGICS_PORT_BASE`` per host where all hosts share one machine, as
in the sandbox and with ``--local``) and ``connect(host=None, offset=0,
timeout=120.0)``, a socket connected to a host's port (by default the leader's),
retried while the host's name does not resolve or nothing listens there yet.

This package owns the metric line: the prelude prints ``#metric NAME=VALUE
[step=N]``, :func:`metric_regex` is what a job's ``MetricDefinitions`` match,
and :func:`parse_metric_line` is how the notebook reads such a line back.

Example::

    >>> source = prelude_source() + "\\nprint(params)\\n"     # the start of a train.py
    >>> metric_regex("loss")                                  # for MetricDefinitions
    '#metric loss=([-+]?[0-9]*\\\\.?[0-9]+(?:[eE][-+]?[0-9]+)?)'
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["METRIC_LINE_PREFIX", "is_metric_line", "metric_regex", "parse_metric_line",
           "prelude_source"]

METRIC_LINE_PREFIX = "#metric "
_NUMBER = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"
_SPECIAL = re.compile(r"([.^$*+?()\[\]{}|\\])")
_LINE = re.compile(re.escape(METRIC_LINE_PREFIX) + r"(\S+?)=(\S+)(?: step=(-?\d+))?")


def prelude_source() -> str:
    """The Python source of the runtime prelude, ending with a newline.

    >>> "def log_metric(" in prelude_source()
    True
    """
    return (Path(__file__).with_name("prelude.py")).read_text(encoding="utf-8")


def metric_regex(name: str) -> str:
    """The regex whose first group captures the value ``log_metric(name, value)`` printed.

    It uses only syntax that SageMaker's metric parser accepts (no named groups,
    no look-arounds) and matches every finite value ``repr(float)`` prints.

    >>> import re
    >>> re.search(metric_regex("val:loss"), "#metric val:loss=0.125 step=3").group(1)
    '0.125'
    """
    if not name or any(c.isspace() or c == "=" for c in name):
        raise ValueError(f"metric names cannot be empty or contain spaces or '=': {name!r}")
    return METRIC_LINE_PREFIX + _SPECIAL.sub(r"\\\1", name) + "=" + _NUMBER


def parse_metric_line(line: str) -> tuple[str, float, int | None] | None:
    """``(name, value, step)`` of a line printed by ``log_metric``, or ``None`` for other lines.

    >>> parse_metric_line("#metric loss=0.25 step=3"), parse_metric_line("epoch 3")
    (('loss', 0.25, 3), None)
    """
    match = _LINE.search(line)
    if not match:
        return None
    try:
        value = float(match.group(2))
    except ValueError:
        return None
    step = int(match.group(3)) if match.group(3) is not None else None
    return match.group(1), value, step


def is_metric_line(line: str) -> bool:
    """Whether ``line`` is one that ``log_metric`` printed (shown in charts, not log tails).

    >>> is_metric_line("#metric loss=0.25"), is_metric_line("loss is 0.25")
    (True, False)
    """
    return parse_metric_line(line) is not None
