"""Following one training job from a background thread, gently.

:class:`JobWatcher` asks where the job runs (:class:`SageMakerJobs` on AWS or
in the sandbox, :class:`sm_magics.local.LocalJobs` for ``--local``) for its
state and new log lines, keeps a :class:`~sm_magics.jobstate.JobSnapshot`, and
tells its listeners (the panels) whenever something changed. Nothing here
imports IPython or ipywidgets.

Example::

    >>> watcher = JobWatcher(aws, "fraud-20261124-101500-ab12")
    >>> watcher.subscribe(print)
    >>> watcher.start().wait()
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable

from .cloudwatch import LogReader
from .jobstate import JobSnapshot, clean_line, host_of_stream, metric_point, seconds

__all__ = ["JobWatcher", "SageMakerJobs"]

# Secondary statuses before the training container runs, when a job has written no log
# yet. Every other one may have written some (Training, Uploading, Restarting, Interrupted,
# MaxWaitTimeExceeded, the end states...), and SageMaker says that "valid values for
# SecondaryStatus are subject to change" (DescribeTrainingJob): an unknown one is read.
_BEFORE_THE_CONTAINER = ("Pending", "Starting", "LaunchingMLInstances", "PreparingTrainingStack",
                         "Downloading", "DownloadingTrainingImage")


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
        self._instances = 1
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

        Logs are read once the job's container has run (not while it starts or
        downloads), to their end once the job ended; each start of the container
        (a restart, a resumed spot job) means one new stream per instance.
        Returns True when something changed.
        """
        with self._lock:
            changed = False
            if describe or not self._described:
                self.requests += 1
                described = self.jobs.describe(self.name)
                self._described = True
                changed = self._apply(described)
                starts = sum(t["Status"] == "Training" for t in self.snapshot.transitions)
                self._instances = described.get("ResourceConfig", {}).get("InstanceCount", 1)
                self._logs.streams_expected = self._instances * max(1, starts)
            if self.snapshot.secondary in _BEFORE_THE_CONTAINER:
                return changed
            before = self._logs.requests
            lines = self._logs.poll(to_end=self.snapshot.done)
            self.requests += self._logs.requests - before
            if lines:
                changed = True
                snap = self.snapshot
                for line in lines:
                    point = metric_point(line.message, line.timestamp)
                    if point:
                        snap.metrics.append(point)
                    prefix = f"[{host_of_stream(line.stream)}] " if self._instances > 1 else ""
                    shown = [prefix + clean_line(m)
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
        snap.created = seconds(d.get("CreationTime"))
        snap.ended = seconds(d.get("TrainingEndTime")) if snap.done else None
        if snap.done and snap.ended is None:
            snap.ended = seconds(d.get("LastModifiedTime"))
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
            if self.snapshot.done:  # the round that saw the end read the log to its end
                return
            self._stop.wait(delay)
