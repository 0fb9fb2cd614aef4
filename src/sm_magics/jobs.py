"""Training jobs: start one, follow it gently, and read what it did.

Everything here speaks the SageMaker and CloudWatch Logs APIs through boto3, so
the same code follows a job on AWS and in the sandbox. Nothing here imports
IPython or ipywidgets: panels subscribe to a :class:`JobWatcher` and receive
:class:`JobSnapshot` objects.

Example::

    >>> run = TrainingRun.attach(aws, "fraud-20261124-101500-ab12")
    >>> run.wait()            # raises RemoteFailure when the job failed or was stopped
    >>> run.model_data
    's3://sagemaker-us-east-1-123456789012/sm-magics/fraud/output/.../model.tar.gz'
"""

from __future__ import annotations

import ast
import contextlib
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from html import escape
from pathlib import Path
from typing import Any

from .errors import RemoteFailure, usage_error

__all__ = [
    "JobSnapshot",
    "JobsTable",
    "JobWatcher",
    "LogReader",
    "MetricPoint",
    "MetricsTable",
    "TrainingRun",
    "job_name",
    "logged_metric_names",
    "parse_duration",
]

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
TERMINAL = ("Completed", "Failed", "Stopped")
PHASES = ("Starting", "Downloading", "Training", "Uploading")
_JOB_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
_METRIC_LINE = re.compile(r"#metric (\S+?)=(\S+)(?: step=(-?\d+))?")
_FULL_PAGE = 1000
_LOGGING_PHASES = ("Training", "Uploading", "Completed", "Failed", "Stopped", "Stopping",
                   "MaxRuntimeExceeded", "Interrupted")
_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s?)?$")


# ---------------------------------------------------------------- names and values


def job_name(base: str, now: datetime | None = None) -> str:
    """A unique job name ``BASE-YYYYmmdd-HHMMSS-xxxx`` that the API accepts (<= 63 chars).

    >>> job_name("fraud_model", datetime(2026, 11, 24, 10, 15, 0))[:-4]
    'fraud-model-20261124-101500-'
    """
    now = now or datetime.now(timezone.utc)
    cleaned = re.sub(r"[^a-zA-Z0-9-]+", "-", base).strip("-") or "job"
    cleaned = re.sub(r"-{2,}", "-", cleaned)[:42].rstrip("-")
    return f"{cleaned}-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def check_job_name(name: str, where: str = "--job-name") -> str:
    """``name`` when the API accepts it as a training-job name, else a UsageError."""
    if _JOB_NAME.match(name):
        return name
    raise usage_error(
        f"{where}: '{name}' is not a valid training-job name: use 1 to 63 letters, digits "
        "and hyphens, starting and ending with a letter or digit."
    )


def parse_duration(text: str, flag: str) -> int:
    """Seconds in ``90m``, ``2h``, ``1h30m``, ``1d`` or a plain number of seconds.

    >>> parse_duration("1h30m", "--max-run")
    5400
    """
    match = _DURATION.match(text.strip())
    if not text.strip() or not match or not any(match.groups()):
        raise usage_error(
            f"{flag}: '{text}' is not a duration. Use seconds (3600) or units, e.g. 90m, 2h, "
            "1h30m, 1d."
        )
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    total = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    if total <= 0:
        raise usage_error(f"{flag}: the duration must be longer than 0 seconds.")
    return total


def duration(seconds: float | None) -> str:
    """``1h 02m``, ``3m 07s`` or ``12s``."""
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


def logged_metric_names(source: str) -> list[str]:
    """Names passed as a string literal to ``log_metric(...)`` in training code, in order.

    >>> logged_metric_names('log_metric("loss", 0.1)\\nlog_metric(name="acc", value=1)')
    ['loss', 'acc']
    """
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    names: list[str] = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id == "log_metric"):
            continue
        first = node.args[0] if node.args else next(
            (k.value for k in node.keywords if k.arg == "name"), None)
        if (isinstance(first, ast.Constant) and isinstance(first.value, str) and first.value
                and first.value not in names and " " not in first.value):
            names.append(first.value)
    return names


# ---------------------------------------------------------------- logs and metrics


@dataclass(frozen=True)
class MetricPoint:
    """One value logged with ``log_metric``."""

    name: str
    value: float
    step: int | None
    timestamp: float


def parse_metric_line(line: str, timestamp: float) -> MetricPoint | None:
    """The point a ``#metric name=value step=N`` line carries, if it is one."""
    match = _METRIC_LINE.search(line)
    if not match:
        return None
    try:
        value = float(match.group(2))
    except ValueError:
        return None
    step = int(match.group(3)) if match.group(3) is not None else None
    return MetricPoint(match.group(1), value, step, timestamp)


class MetricsTable(list):
    """Metric points of a job, in the order they were logged. Shows as a table.

    >>> run.metrics                       # doctest: +SKIP
    name   step  value
    loss   0     0.9
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

    def __repr__(self) -> str:
        if not self:
            return "(no metrics logged)"
        lines = [f"{'name':<20} {'step':>6}  value"]
        lines += [f"{p.name:<20} {'' if p.step is None else p.step:>6}  {p.value:.6g}"
                  for p in self]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{escape(p.name)}</td><td>{'' if p.step is None else p.step}</td>"
            f"<td>{p.value:.6g}</td></tr>" for p in self)
        return ("<table><thead><tr><th>name</th><th>step</th><th>value</th></tr></thead>"
                f"<tbody>{rows}</tbody></table>")


@dataclass(frozen=True)
class LogLine:
    stream: str
    timestamp: float
    message: str


class LogReader:
    """Reads a job's CloudWatch log streams incrementally (each event once)."""

    def __init__(self, logs_client, job: str, instance_count: int = 1) -> None:
        self.client = logs_client
        self.job = job
        self.instance_count = instance_count
        self.tokens: dict[str, str | None] = {}
        self.requests = 0

    def _discover_streams(self) -> None:
        from botocore.exceptions import ClientError

        try:
            self.requests += 1
            streams = self.client.describe_log_streams(
                logGroupName=LOG_GROUP, logStreamNamePrefix=f"{self.job}/")["logStreams"]
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ResourceNotFoundException":
                return
            raise
        for stream in streams:
            self.tokens.setdefault(stream["logStreamName"], None)

    def poll(self) -> list[LogLine]:
        """New log lines since the last call, across all instances' streams."""
        if len(self.tokens) < self.instance_count:
            self._discover_streams()
        lines: list[LogLine] = []
        for stream, token in list(self.tokens.items()):
            while True:
                kwargs = {"logGroupName": LOG_GROUP, "logStreamName": stream,
                          "startFromHead": True}
                if token:
                    kwargs["nextToken"] = token
                self.requests += 1
                page = self.client.get_log_events(**kwargs)
                events = page.get("events", [])
                lines += [LogLine(stream, e["timestamp"] / 1000, e["message"]) for e in events]
                new_token = page.get("nextForwardToken")
                token = new_token or token
                # a short page means the stream is read to its end (the rest comes next time)
                if len(events) < _FULL_PAGE or new_token == kwargs.get("nextToken"):
                    break
            self.tokens[stream] = token
        lines.sort(key=lambda line: line.timestamp)
        return lines


class SageMakerJobs:
    """Where jobs run: SageMaker's API (on AWS, or the sandbox behind the same API).

    :class:`sm_magics.local.LocalJobs` offers the same methods for jobs run on
    this machine's Docker engine.
    """

    local = False

    def __init__(self, aws) -> None:
        self.aws = aws
        self._client = aws.client("sagemaker")

    def describe(self, name: str) -> dict:
        return self._client.describe_training_job(TrainingJobName=name)

    def stop(self, name: str) -> None:
        self._client.stop_training_job(TrainingJobName=name)

    def log_reader(self, name: str, instance_count: int = 1) -> LogReader:
        return LogReader(self.aws.client("logs"), name, instance_count)


# ---------------------------------------------------------------- following a job


def _seconds(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.timestamp()
    return float(value)


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
            start = _seconds(t.get("StartTime")) or now
            end = _seconds(t.get("EndTime"))
            current = end is None and not self.done
            rows.append((t["Status"], max(0.0, (end or (self.ended if self.done else now)
                                                or now) - start), current))
        return rows

    def console_links(self) -> dict[str, str]:
        """Links to the SageMaker console and CloudWatch for a job on AWS."""
        if self.local or not self.region:
            return {}
        r = self.region
        return {
            "console": f"https://{r}.console.aws.amazon.com/sagemaker/home?region={r}"
                       f"#/jobs/{self.name}",
            "logs": f"https://{r}.console.aws.amazon.com/cloudwatch/home?region={r}"
                    f"#logStream:group={LOG_GROUP};prefix={self.name}/;streamFilter=typeLogStreamPrefix",
        }


def _clean_line(message: str) -> str:
    """The visible text of a log line: what a terminal shows after carriage returns."""
    return message.rstrip("\n").split("\r")[-1] if "\r" in message else message.rstrip("\n")


class JobWatcher:
    """Follows one job from a background thread and tells its listeners what changed.

    Polling is gentle: every ``interval`` seconds while something changes, backing
    off (up to ``max_interval``) while nothing does, and backing off further when
    the API throttles. Log events are read incrementally.
    """

    def __init__(self, aws, name: str, *, interval: float = 3.0, max_interval: float = 10.0,
                 tail: int = 200, jobs=None) -> None:
        self.aws = aws
        self.name = name
        self.jobs = jobs or SageMakerJobs(aws)
        self.interval = interval
        self.max_interval = max_interval
        self.tail = tail
        # console links only make sense for AWS itself, not for another endpoint
        self.snapshot = JobSnapshot(name, region=aws.settings.region,
                                    local=self.jobs.local or bool(aws.settings.endpoint_url))
        self.listeners: list[Callable[[JobSnapshot], None]] = []
        self.requests = 0
        self.error: BaseException | None = None
        self._logs = self.jobs.log_reader(name)
        self._stop = threading.Event()
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._described = False

    def subscribe(self, listener: Callable[[JobSnapshot], None]) -> None:
        self.listeners.append(listener)
        listener(self.snapshot)

    def start(self) -> JobWatcher:
        self._thread = threading.Thread(target=self._run, name=f"sm-magics {self.name}",
                                        daemon=True)
        self._thread.start()
        return self

    @property
    def following(self) -> bool:
        """True while the background thread follows the job."""
        return self._thread is not None and self._thread.is_alive()

    def close(self) -> None:
        """Stop following (the job itself goes on)."""
        self._stop.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job ended; True when it did within ``timeout``."""
        return self._done.wait(timeout)

    def refresh(self, describe: bool = True) -> bool:
        """One round: describe the job (when asked) and read new log lines.

        Logs are read only once the job has reached a phase that writes them.
        Returns True when something changed.
        """
        with self._lock:
            changed = False
            if describe or not self._described:
                self.requests += 1
                described = self.jobs.describe(self.name)
                self._described = True
                changed = self._apply(described)
                self._logs.instance_count = described.get("ResourceConfig", {}).get(
                    "InstanceCount", 1)
            if self.snapshot.secondary not in _LOGGING_PHASES:
                return changed
            before = self._logs.requests
            lines = self._logs.poll()
            self.requests += self._logs.requests - before
            if lines:
                changed = True
                snap = self.snapshot
                for line in lines:
                    point = parse_metric_line(line.message, line.timestamp)
                    if point:
                        snap.metrics.append(point)
                    prefix = f"[{line.stream.split('/')[-1]}] " if len(self._logs.tokens) > 1 \
                        else ""
                    shown = [prefix + _clean_line(m)
                             for m in line.message.split("\n") if m.strip()]
                    snap.log_tail.extend(shown)
                    snap.log_count += len(shown)
                del snap.log_tail[:-self.tail]
            return changed

    def _apply(self, d: dict) -> bool:
        snap = self.snapshot
        before = (snap.status, snap.secondary, len(snap.transitions), snap.billable_seconds)
        snap.status = d["TrainingJobStatus"]
        snap.secondary = d.get("SecondaryStatus", snap.secondary)
        snap.transitions = d.get("SecondaryStatusTransitions", [])
        snap.created = _seconds(d.get("CreationTime"))
        snap.ended = _seconds(d.get("TrainingEndTime")) if snap.done else None
        if snap.done and snap.ended is None:
            snap.ended = _seconds(d.get("LastModifiedTime"))
        snap.billable_seconds = d.get("BillableTimeInSeconds")
        snap.failure_reason = d.get("FailureReason")
        snap.model_data = d.get("ModelArtifacts", {}).get("S3ModelArtifacts")
        snap.final_metrics = {m["MetricName"]: m["Value"]
                              for m in d.get("FinalMetricDataList", [])}
        return before != (snap.status, snap.secondary, len(snap.transitions),
                          snap.billable_seconds)

    def _notify(self) -> None:
        for listener in list(self.listeners):
            with contextlib.suppress(Exception):  # a broken display must not stop the watcher
                listener(self.snapshot)

    def _run(self) -> None:
        try:
            self._follow()
        except Exception as exc:  # the endpoint went away, or answered what cannot be read
            self.error = exc
        finally:
            self._notify()
            self._done.set()

    def _follow(self) -> None:
        from botocore.exceptions import ClientError

        delay = self.interval
        quiet = True
        rounds = 0
        while not self._stop.is_set():
            # While log lines flow, read them every round but describe the job only
            # every third round; when the log is quiet, describe every round.
            try:
                changed = self.refresh(describe=quiet or rounds % 3 == 0)
                rounds += 1
            except ClientError as exc:
                if exc.response["Error"]["Code"] not in ("ThrottlingException", "Throttling"):
                    raise
                delay = min(delay * 2, 60.0)
                self._stop.wait(delay)
                continue
            quiet = not changed
            if changed:
                self._notify()
                delay = self.interval
            else:
                delay = min(delay * 1.5, self.max_interval)
            if self.snapshot.done:
                self.refresh(describe=False)  # the last lines written before the end
                return
            self._stop.wait(delay)


# ---------------------------------------------------------------- the run object


class TrainingRun:
    """A SageMaker training job started (or attached to) from a notebook.

    >>> run = %sm_train fraud --params fraud --wait          # doctest: +SKIP
    >>> run.status, run.model_data, run.metrics.last()        # doctest: +SKIP
    """

    def __init__(self, aws, name: str, *, params: dict | None = None, image: Any = None,
                 jobs=None) -> None:
        self.aws = aws
        self.name = name
        self.params = params
        self.image = image
        self.jobs = jobs or SageMakerJobs(aws)
        self.watcher = JobWatcher(aws, name, jobs=self.jobs)

    @classmethod
    def attach(cls, aws, name: str) -> TrainingRun:
        """A run object for an existing job (after a kernel restart, for example)."""
        from botocore.exceptions import ClientError

        try:
            described = aws.client("sagemaker").describe_training_job(TrainingJobName=name)
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("ValidationException", "ResourceNotFound"):
                raise usage_error(
                    f"There is no training job named '{name}' in {aws.settings.region}. "
                    "`%sm_jobs` lists recent jobs."
                ) from None
            raise
        params = None
        hps = described.get("HyperParameters") or {}
        if hps:
            import json

            params = {}
            for key, value in hps.items():
                try:
                    params[key] = json.loads(value)
                except ValueError:
                    params[key] = value
        return cls(aws, name, params=params,
                   image=described["AlgorithmSpecification"].get("TrainingImage"))

    # -- state

    def describe(self) -> dict:
        """The job's ``DescribeTrainingJob`` answer, fetched now."""
        return self.jobs.describe(self.name)

    @property
    def snapshot(self) -> JobSnapshot:
        if not self.watcher.snapshot.done and not self.watcher.following:
            self.watcher.refresh()
        return self.watcher.snapshot

    @property
    def status(self) -> str:
        """``InProgress``, ``Completed``, ``Failed``, ``Stopping`` or ``Stopped``."""
        return self.snapshot.status

    @property
    def model_data(self) -> str | None:
        """S3 URI of ``model.tar.gz`` once the job completed."""
        return self.snapshot.model_data

    @property
    def metrics(self) -> MetricsTable:
        """Every value the training code logged with ``log_metric``, with its step."""
        return self.snapshot.metrics

    def logs(self) -> list[str]:
        """All log lines of the job so far (every instance), read from CloudWatch Logs."""
        reader = self.jobs.log_reader(
            self.name, self.describe().get("ResourceConfig", {}).get("InstanceCount", 1))
        return [line.message for line in reader.poll()]

    def download_model(self, directory: str | Path = "model") -> Path:
        """Download ``model.tar.gz`` and unpack it into ``directory``; returns that folder.

        Members that would land outside ``directory`` (absolute paths, ``..``,
        links pointing out, devices) are refused, so a model archive cannot
        write anywhere else on this machine.

        >>> model = joblib.load(run.download_model() / "model.joblib")   # doctest: +SKIP
        """
        import io
        import tarfile

        uri = self.model_data
        if not uri:
            raise usage_error(f"The job {self.name} has no model artifact (status "
                              f"{self.status}); only a completed job has one.")
        bucket, key = uri.removeprefix("s3://").split("/", 1)
        body = self.aws.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
        target = Path(directory).resolve()
        target.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(body)) as tar:
            members = tar.getmembers()
            for member in members:
                where = (target / member.name).resolve()
                if not (where == target or target in where.parents) or not (
                        member.isfile() or member.isdir() or (
                            member.issym() and target in (where.parent / member.linkname)
                            .resolve().parents)):
                    raise RemoteFailure(f"The model archive of {self.name} is unsafe",
                                        reason=f"member {member.name!r} would be written "
                                               f"outside {target} or is not a regular file")
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(target, members=members, **safe)
        return target

    # -- actions

    def wait(self, poll: float = 5.0) -> TrainingRun:
        """Block until the job ends; raise :class:`RemoteFailure` unless it completed.

        Interrupting the wait (Ctrl-C, the stop button of the notebook) only
        stops waiting: the job goes on, and ``run.stop()`` stops it.
        """
        watcher = self.watcher
        if not watcher.following:
            while not watcher.snapshot.done:
                watcher.refresh()
                if not watcher.snapshot.done:
                    time.sleep(poll)
        else:
            while not watcher.wait(0.5):
                pass
            if watcher.error is not None and not watcher.snapshot.done:
                raise RemoteFailure(f"Lost track of training job {self.name}",
                                    reason=str(watcher.error),
                                    hint="The job itself may still be running. Once the "
                                         "endpoint answers again (`%sm_sandbox status` when "
                                         f"offline), `%sm_attach {self.name}` follows it again.")
        self.raise_for_status()
        return self

    def raise_for_status(self) -> None:
        """Raise :class:`RemoteFailure` when the job failed or was stopped."""
        snap = self.watcher.snapshot
        if snap.status == "Failed":
            raise RemoteFailure(f"Training job {self.name} failed",
                                reason=snap.failure_reason or "no reason given",
                                log_tail=snap.log_tail[-10:],
                                hint=f"All logs: `%sm_logs {self.name}`.")
        if snap.status == "Stopped":
            raise RemoteFailure(f"Training job {self.name} was stopped",
                                reason=snap.failure_reason, log_tail=snap.log_tail[-5:])

    def stop(self) -> None:
        """Ask SageMaker to stop the job (it ends as Stopped)."""
        from botocore.exceptions import ClientError

        try:
            self.jobs.stop(self.name)
        except ClientError as exc:
            if "already" not in str(exc).lower() and "status" not in str(exc).lower():
                raise

    # -- display

    def __repr__(self) -> str:
        snap = self.watcher.snapshot
        parts = [f"TrainingRun({self.name!r}, status={snap.status!r}"]
        if snap.model_data:
            parts.append(f", model_data={snap.model_data!r}")
        if snap.failure_reason:
            parts.append(f", failure_reason={snap.failure_reason!r}")
        return "".join(parts) + ")"

    def _repr_html_(self) -> str:
        from .ui.job_summary import summary_html

        return summary_html(self.watcher.snapshot)


def recent_jobs(aws, limit: int = 20, name_contains: str | None = None) -> Iterable[dict]:
    """Summaries of the most recent training jobs, newest first."""
    kwargs: dict[str, Any] = {"SortBy": "CreationTime", "SortOrder": "Descending",
                              "MaxResults": min(limit, 100)}
    if name_contains:
        kwargs["NameContains"] = name_contains
    return aws.client("sagemaker").list_training_jobs(**kwargs)["TrainingJobSummaries"][:limit]


class JobsTable(list):
    """Recent training jobs: name, status, duration, image, params hash. Shows as a table."""

    columns = ("job", "status", "created", "duration", "image", "params")

    @classmethod
    def fetch(cls, aws, limit: int = 20, name_contains: str | None = None) -> JobsTable:
        """The ``limit`` newest jobs (one List call, then one Describe per job, 4 at a time)."""
        from concurrent.futures import ThreadPoolExecutor

        summaries = list(recent_jobs(aws, limit, name_contains))
        client = aws.client("sagemaker")

        def describe(summary: dict) -> dict:
            return client.describe_training_job(TrainingJobName=summary["TrainingJobName"])

        with ThreadPoolExecutor(max_workers=4) as pool:
            described = list(pool.map(describe, summaries))
        return cls(cls.row(d) for d in described)

    @staticmethod
    def row(d: dict) -> dict[str, str]:
        created = _seconds(d.get("CreationTime"))
        end = _seconds(d.get("TrainingEndTime")) or (
            _seconds(d.get("LastModifiedTime")) if d["TrainingJobStatus"] in TERMINAL
            else time.time())
        params_hash = ""
        for channel in d.get("InputDataConfig", []):
            if channel["ChannelName"] == "params":
                uri = channel["DataSource"]["S3DataSource"]["S3Uri"]
                params_hash = uri.rsplit("/", 1)[-1].removesuffix(".json")[:12]
        return {
            "job": d["TrainingJobName"],
            "status": d["TrainingJobStatus"],
            "created": datetime.fromtimestamp(created).strftime("%Y-%m-%d %H:%M:%S")
            if created else "",
            "duration": duration((end - created) if created and end else None),
            "image": d.get("AlgorithmSpecification", {}).get("TrainingImage", "").rsplit(
                "/", 1)[-1],
            "params": params_hash,
        }

    def __repr__(self) -> str:
        if not self:
            return "(no training jobs)"
        from .table import Table

        return repr(Table(self.columns, ([r[c] for c in self.columns] for r in self)))

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{c}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td>{escape(r[c])}</td>" for c in self.columns)
                       + "</tr>" for r in self)
        return f"<table class='sm-jobs'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
