"""What runs inside the training container: the prelude of every generated ``train.py``.

The prelude (``prelude.py`` beside this file) is plain standard-library Python
that is copied, as text, to the top of ``train.py``; it is never imported by
sm-magics itself (importing it would install its failure hook in the notebook).
It gives the training code ``params``, ``param(name)``, ``channels``,
``model_dir``, ``output_dir`` and ``log_metric(name, value, step=None)``.

Example::

    >>> source = prelude_source() + "\\nprint(params)\\n"     # the start of a train.py
    >>> metric_regex("loss")                                  # for MetricDefinitions
    '#metric loss=([-+]?[0-9]*\\\\.?[0-9]+(?:[eE][-+]?[0-9]+)?)'
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["METRIC_LINE_PREFIX", "metric_regex", "prelude_source"]

METRIC_LINE_PREFIX = "#metric "
_NUMBER = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"
_SPECIAL = re.compile(r"([.^$*+?()\[\]{}|\\])")


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
