"""What is known about a training job at one moment: the state panels and runs read.

A leaf module: it imports nothing of sm-magics but the metric-line format of
:mod:`sm_magics.runtime`, so the UI (:mod:`sm_magics.ui`), the watcher and the
job engines can all read it without importing each other.

Example::

    >>> snap = JobSnapshot("fraud-20261124-101500-ab12", status="Completed")
    >>> snap.done, status_is_terminal("Stopping")
    (True, False)
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .runtime import parse_metric_line
from .table import Table

__all__ = [
    "LOG_GROUP",
    "PHASES",
    "TERMINAL",
    "JobSnapshot",
    "LogLine",
    "MetricPoint",
    "MetricsTable",
    "console_host",
    "duration",
    "host_of_stream",
    "metric_point",
    "seconds",
    "status_is_terminal",
]

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
TERMINAL = ("Completed", "Failed", "Stopped")
PHASES = ("Starting", "Downloading", "Training", "Uploading")
# The console of each AWS partition. China's is console.amazonaws.cn ("Getting Started
# with Amazon Web Services in China", Amazon Web Services Console), GovCloud's
# console.amazonaws-us-gov.com (AWS GovCloud (US) User Guide, "Configuring Your
# Account"); the isolated partitions have no public console.
_CONSOLE_HOSTS = {"aws": "{region}.console.aws.amazon.com", "aws-cn": "console.amazonaws.cn",
                  "aws-us-gov": "console.amazonaws-us-gov.com"}


def status_is_terminal(status: str) -> bool:
    """Whether a ``TrainingJobStatus`` is final (``Completed``, ``Failed``, ``Stopped``)."""
    return status in TERMINAL


@functools.cache
def console_host(region: str) -> str | None:
    """The host of the AWS console for ``region``, or ``None`` where there is no public one.

    The region's partition comes from botocore's endpoint data.

    >>> console_host("eu-west-1"), console_host("cn-north-1"), console_host("us-gov-east-1")
    ('eu-west-1.console.aws.amazon.com', 'console.amazonaws.cn', 'console.amazonaws-us-gov.com')
    """
    import botocore.session
    from botocore.exceptions import UnknownRegionError

    try:
        partition = botocore.session.get_session().get_partition_for_region(region)
    except UnknownRegionError:
        return None
    host = _CONSOLE_HOSTS.get(partition)
    return host.format(region=region) if host else None


def duration(seconds: float | None) -> str:
    """``1h 02m``, ``3m 07s`` or ``12s``.

    >>> duration(3725), duration(187), duration(12)
    ('1h 02m', '3m 07s', '12s')
    """
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def seconds(value: Any) -> float | None:
    """Epoch seconds of an API timestamp (``datetime`` from boto3, or a number)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.timestamp()
    return float(value)


@dataclass(frozen=True)
class LogLine:
    """One log event of one instance's stream."""

    stream: str
    timestamp: float
    message: str


@dataclass(frozen=True)
class MetricPoint:
    """One value logged with ``log_metric``."""

    name: str
    value: float
    step: int | None
    timestamp: float


def metric_point(line: str, timestamp: float) -> MetricPoint | None:
    """The point a ``#metric name=value step=N`` log line carries, if it is one.

    >>> metric_point("#metric loss=0.5 step=2", 0.0)
    MetricPoint(name='loss', value=0.5, step=2, timestamp=0.0)
    """
    parsed = parse_metric_line(line)
    return None if parsed is None else MetricPoint(*parsed, timestamp)


class MetricsTable(list):
    """Metric points of a job, in the order they were logged. Shows as a table.

    >>> MetricsTable([MetricPoint("loss", 0.9, 0, 0.0)])
    name  step  value
    ----  ----  -----
    loss  0     0.9
    """

    def names(self) -> list[str]:
        return list(dict.fromkeys(p.name for p in self))

    def series(self, name: str) -> list[tuple[int, float]]:
        """(step, value) pairs of one metric; steps default to the point's position."""
        points = [p for p in self if p.name == name]
        return [(p.step if p.step is not None else i, p.value) for i, p in enumerate(points)]

    def last(self) -> dict[str, float]:
        return {p.name: p.value for p in self}

    def to_pandas(self):
        """The points as a pandas DataFrame (pandas must be installed)."""
        import pandas as pd

        return pd.DataFrame([p.__dict__ for p in self])

    def table(self) -> Table:
        return Table(("name", "step", "value"), (
            (p.name, "" if p.step is None else str(p.step), f"{p.value:.6g}") for p in self))

    def __repr__(self) -> str:
        return repr(self.table()) if self else "(no metrics logged)"

    def _repr_html_(self) -> str:
        return self.table()._repr_html_()


def host_of_stream(stream: str) -> str:
    """The host that wrote a log stream ``<job>/algo-N-<epoch seconds>``.

    >>> host_of_stream("fraud-20261124-101500-ab12/algo-2-1764000000")
    'algo-2'
    """
    name = stream.rsplit("/", 1)[-1]
    host, _, started = name.rpartition("-")
    return host if host and started.isdigit() else name


def clean_line(message: str) -> str:
    """The visible text of a log line: what a terminal shows after carriage returns."""
    return message.rstrip("\n").split("\r")[-1] if "\r" in message else message.rstrip("\n")


@dataclass
class JobSnapshot:
    """What is known about a job at one moment: the state a panel shows."""

    name: str
    status: str = "InProgress"
    secondary: str = "Starting"
    transitions: list[dict] = field(default_factory=list)
    created: float | None = None
    ended: float | None = None
    billable_seconds: int | None = None
    failure_reason: str | None = None
    model_data: str | None = None
    final_metrics: dict[str, float] = field(default_factory=dict)
    log_tail: list[str] = field(default_factory=list)
    log_count: int = 0  # lines seen in all; log_tail keeps only the last ones
    metrics: MetricsTable = field(default_factory=MetricsTable)
    region: str | None = None
    local: bool = False

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    @property
    def elapsed(self) -> float:
        if self.created is None:
            return 0.0
        return (self.ended or time.time()) - self.created

    def phases(self) -> list[tuple[str, float, bool]]:
        """(phase, seconds spent, is current) for each secondary-status transition."""
        now = time.time()
        rows = []
        for t in self.transitions:
            start = seconds(t.get("StartTime")) or now
            end = seconds(t.get("EndTime"))
            current = end is None and not self.done
            rows.append((t["Status"], max(0.0, (end or (self.ended if self.done else now)
                                                or now) - start), current))
        return rows

    def console_links(self) -> dict[str, str]:
        """Links to the SageMaker console and CloudWatch for a job on AWS (in its partition).

        >>> JobSnapshot("fraud-1", region="cn-north-1").console_links()["console"]
        'https://console.amazonaws.cn/sagemaker/home?region=cn-north-1#/jobs/fraud-1'
        """
        host = None if self.local or not self.region else console_host(self.region)
        if host is None:
            return {}
        r = self.region
        return {
            "console": f"https://{host}/sagemaker/home?region={r}#/jobs/{self.name}",
            "logs": f"https://{host}/cloudwatch/home?region={r}"
                    f"#logStream:group={LOG_GROUP};prefix={self.name}/;streamFilter=typeLogStreamPrefix",
        }
