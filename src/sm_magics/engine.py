"""The job-run engine: a training job run on this machine's Docker engine.

What SageMaker does with a training job once it has accepted it, for the
sandbox (:mod:`sm_magics.sandbox.training_api`, which answers the SageMaker API
on top of this engine) and for ``%sm_train --local`` (:mod:`sm_magics.local`,
which uses it directly). A job goes through the phases SageMaker reports as
its ``SecondaryStatus``:

1. ``Starting``: queued until one of ``max_concurrent`` workers is free;
2. ``Downloading``: the channels are copied from S3 into a host directory
   laid out as ``/opt/ml`` (:mod:`sm_magics.contract`), one per host;
3. ``Training``: the image is pulled and run with the command ``train``; its
   output goes to a :class:`LogSink` (CloudWatch Logs in the sandbox, memory
   for local runs), and the values matched by the job's ``MetricDefinitions``
   to ``FinalMetricDataList`` (and CloudWatch metrics in the sandbox);
4. ``Uploading``: ``/opt/ml/model`` becomes ``model.tar.gz`` and
   ``/opt/ml/output/data`` (when it has files) ``output.tar.gz`` under
   ``<S3OutputPath>/<job>/output/``;
5. ``Completed``, ``Failed`` (``FailureReason`` from ``/opt/ml/output/failure``
   or the exit code) or ``Stopped``.

**Several instances.** A job with ``InstanceCount`` N runs N containers at once,
the hosts ``algo-1`` … ``algo-N``, each with its own ``/opt/ml`` whose
``resourceconfig.json`` names it ``current_host`` among all ``hosts`` (and the
toolkit's ``SM_CURRENT_HOST``/``SM_HOSTS``). A ``ShardedByS3Key`` channel gives
each host its share of the objects, a ``FullyReplicated`` one all of them
(:func:`~sm_magics.contract.download_channel`). Each host writes its own log
stream ``<job>/algo-N-<epoch seconds>``, SageMaker's naming, and its metrics
carry the dimension ``Host=<job>/algo-N``. The job completes when every host's
program has ended well; when one fails, the others are stopped and the job
fails with that host named in ``FailureReason``; Stop stops them all. The
model is the files of every host's ``/opt/ml/model``, in host order, a later
host's file replacing an earlier one's of the same name: the rule of
SageMaker's training service as the SageMaker Python SDK's local mode restates
it ("it will override duplicate files if multiple containers have the same file
names", ``sagemaker.local.image._SageMakerContainer.retrieve_artifacts``);
``/opt/ml/output/data`` likewise. Billable time is the training time times N.

The hosts run on one machine. With host networking (the sandbox always, and
``--local`` jobs on several instances) every host name resolves to 127.0.0.1,
through ``/etc/hosts``, and the hosts share the ports: each job gets a block of
free ports, and host k its slice, announced as ``SM_MAGICS_PORT_BASE`` and
``SM_MAGICS_PORTS_PER_HOST`` (the prelude's ``port()`` reads them).

**Checkpoints and spot.** With a ``CheckpointConfig``, its ``S3Uri`` is copied
into every host's checkpoint directory (``LocalPath``, default
``/opt/ml/checkpoints``) before training ("the checkpoints from this S3 bucket
are restored to checkpoint_local_path in each instance", SageMaker developer
guide, "Resume training from a checkpoint"), and new or changed files there are
copied to ``S3Uri`` every few seconds while the job runs and once more when the
program ends, however it ends ("SageMaker AI saves checkpoints to Amazon S3 and
syncs your training job with the checkpoint S3 bucket", "Enable
checkpointing"). A managed spot job can be interrupted, as EC2 reclaiming the
capacity would (:meth:`EngineJob.request_interruption`): its hosts get SIGTERM, the job shows
``Interrupted``, then starts again (new log streams, checkpoints restored),
within ``MaxWaitTimeInSeconds`` (else it ends ``Stopped`` with
``MaxWaitTimeExceeded``). The time between an interruption and the restart is
not billed; ``MaxRuntimeInSeconds`` counts the time the hosts ran.

Stopping sends SIGTERM and kills the program after a grace period; the model
written so far is still uploaded, as SageMaker does. A job that exceeds
``MaxRuntimeInSeconds`` is stopped the same way and ends with
``TrainingJobStatus`` ``Stopped`` and ``SecondaryStatus`` ``MaxRuntimeExceeded``,
the pair the API documents for that case.

A job's state is kept as its ``DescribeTrainingJob`` record (the shape the
SageMaker API documents, and what :class:`~sm_magics.watcher.JobWatcher`
reads); ``on_change`` is called with the job after every change (the sandbox
saves the record then).

What one machine cannot run is refused by :func:`check_runnable` with a
sentence saying so: more than ``MAX_HOSTS`` instances, instance groups,
``Pipe`` input, data sources other than S3 (``S3Prefix`` or ``ManifestFile``),
algorithm resources instead of a training image.

Example::

    >>> engine = JobEngine(boto3.client("s3"), Path("/tmp/jobs"), sink=MemoryLogSink())
    >>> job = engine.submit(new_record(request, arn="arn:aws:sagemaker:...:training-job/fraud-1"))
    >>> engine.get("fraud-1").status
    'InProgress'
"""

from __future__ import annotations

import contextlib
import copy
import logging
import random
import re
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .contract import (
    ContainerRun,
    OptMl,
    RunResult,
    download_channel,
    ensure_image,
    host_names,
    pack_directory,
    upload_changed,
)
from .jobstate import status_is_terminal
from .s3uri import s3_uri, split_s3_uri

__all__ = [
    "HOME_LABEL",
    "MAX_HOSTS",
    "PORTS_PER_HOST",
    "EngineJob",
    "JobEngine",
    "LogSink",
    "MemoryLogSink",
    "NotRunnable",
    "check_runnable",
    "new_record",
]

HOME_LABEL = "sm-magics.sandbox-home"
DEFAULT_MAX_RUNTIME = 86400
DEFAULT_CHECKPOINT_PATH = "/opt/ml/checkpoints"
FAILURE_REASON_LIMIT = 1024  # characters, the API's maximum length of FailureReason
MAX_HOSTS = 8  # instances one machine runs for one job
PORTS_PER_HOST = 100  # each host's slice of its job's port block (host networking)
_PORT_RANGE = (20000, 32000)  # below Linux's ephemeral ports (32768-60999)
_FLUSH_SECONDS = 1.0
_CHECKPOINT_SECONDS = 2.0  # how often new checkpoint files are copied to S3
_UNSENT_LIMIT = 100_000  # lines (and metric values) kept while the sink fails
_LOOPBACK = "127.0.0.1"
_log = logging.getLogger(__name__)


class NotRunnable(ValueError):
    """A job this engine cannot run on one machine; the message says why."""


def check_runnable(request: Mapping[str, Any]) -> None:
    """Raise :class:`NotRunnable` when a ``CreateTrainingJob`` request needs what one machine lacks.

    Also refused, as SageMaker refuses them: a spot job without
    ``MaxWaitTimeInSeconds`` or with one shorter than ``MaxRuntimeInSeconds``,
    and ``MaxWaitTimeInSeconds`` on a job that is not a spot job (CreateTrainingJob,
    ``StoppingCondition``: "MaxWaitTimeInSeconds ... must be equal to or greater
    than MaxRuntimeInSeconds", set "only ... for managed spot training").

    >>> check_runnable({"AlgorithmSpecification": {"TrainingImage": "img"},
    ...                 "ResourceConfig": {"InstanceCount": 20}})
    Traceback (most recent call last):
    NotRunnable: The sandbox runs a training job on 1 to 8 instances: ...
    """
    spec = request.get("AlgorithmSpecification") or {}
    if not spec.get("TrainingImage"):
        raise NotRunnable("The sandbox runs training images: set "
                          "AlgorithmSpecification.TrainingImage (algorithm resources and "
                          "serverless jobs are not available in the sandbox).")
    resources = request.get("ResourceConfig") or {}
    if resources.get("InstanceGroups"):
        raise NotRunnable("The sandbox runs jobs of one instance group: set "
                          "ResourceConfig.InstanceCount and InstanceType instead of "
                          "InstanceGroups.")
    count = resources.get("InstanceCount", 1)
    if not 1 <= count <= MAX_HOSTS:
        raise NotRunnable(f"The sandbox runs a training job on 1 to {MAX_HOSTS} instances: set "
                          f"ResourceConfig.InstanceCount to one of those (it is {count}).")
    stopping = request.get("StoppingCondition") or {}
    max_wait = stopping.get("MaxWaitTimeInSeconds")
    max_run = stopping.get("MaxRuntimeInSeconds", DEFAULT_MAX_RUNTIME)
    if request.get("EnableManagedSpotTraining"):
        if max_wait is None:
            raise NotRunnable("Managed spot training needs StoppingCondition."
                              "MaxWaitTimeInSeconds: how long the job may wait for spot "
                              "capacity and run, in all.")
        if max_wait < max_run:
            raise NotRunnable(f"StoppingCondition.MaxWaitTimeInSeconds ({max_wait}) must be "
                              f"equal to or greater than MaxRuntimeInSeconds ({max_run}).")
    elif max_wait is not None:
        raise NotRunnable("StoppingCondition.MaxWaitTimeInSeconds applies to managed spot "
                          "training only: set EnableManagedSpotTraining, or leave it out.")
    channels = request.get("InputDataConfig") or []
    names = [channel["ChannelName"] for channel in channels]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise NotRunnable(f"Channel names must be unique: {', '.join(duplicates)}.")
    for channel in channels:
        mode = channel.get("InputMode") or spec.get("TrainingInputMode") or "File"
        source = (channel.get("DataSource") or {}).get("S3DataSource")
        if mode == "Pipe":
            raise NotRunnable(f"Channel {channel['ChannelName']!r}: the sandbox supports the "
                              "File and FastFile input modes, not Pipe.")
        if not source or source["S3DataType"] not in ("S3Prefix", "ManifestFile"):
            raise NotRunnable(f"Channel {channel['ChannelName']!r}: the sandbox reads channels "
                              "from an S3DataSource of type S3Prefix or ManifestFile.")
    for what, uri in (("OutputDataConfig.S3OutputPath",
                       (request.get("OutputDataConfig") or {}).get("S3OutputPath", "s3://")),
                      ("CheckpointConfig.S3Uri",
                       (request.get("CheckpointConfig") or {}).get("S3Uri", "s3://"))):
        if not uri.startswith("s3://"):
            raise NotRunnable(f"The sandbox reads and writes s3:// URIs: {what} is {uri!r}.")
    for definition in spec.get("MetricDefinitions") or []:
        try:
            re.compile(definition["Regex"])
        except re.error as exc:
            raise NotRunnable(f"The regular expression of metric {definition['Name']!r} is "
                              f"not valid: {exc}.") from None


def new_record(request: Mapping[str, Any], arn: str, now: float | None = None) -> dict:
    """The ``DescribeTrainingJob`` record of a job just created from ``request``.

    Defaults are filled in as the API fills them (File input mode, one
    ``ml.m5.large`` instance, 30 GB, a day of runtime).

    >>> new_record({"TrainingJobName": "fraud-1", ...}, arn)["SecondaryStatus"]
    'Starting'
    """
    now = time.time() if now is None else now
    spec = request.get("AlgorithmSpecification") or {}
    record = {
        "TrainingJobName": request["TrainingJobName"],
        "TrainingJobArn": arn,
        "TrainingJobStatus": "InProgress",
        "SecondaryStatus": "Starting",
        "HyperParameters": request.get("HyperParameters") or {},
        "AlgorithmSpecification": {"TrainingInputMode": "File", **spec},
        "RoleArn": request["RoleArn"],
        "InputDataConfig": request.get("InputDataConfig") or [],
        "OutputDataConfig": request["OutputDataConfig"],
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1,
                           "VolumeSizeInGB": 30, **(request.get("ResourceConfig") or {})},
        "StoppingCondition": {"MaxRuntimeInSeconds": DEFAULT_MAX_RUNTIME,
                              **(request.get("StoppingCondition") or {})},
        "CreationTime": now,
        "LastModifiedTime": now,
        "SecondaryStatusTransitions": [{"Status": "Starting", "StartTime": now,
                                        "StatusMessage": "Launching requested ML instances"}],
        "EnableNetworkIsolation": bool(request.get("EnableNetworkIsolation")),
        "EnableInterContainerTrafficEncryption": bool(
            request.get("EnableInterContainerTrafficEncryption")),
        "EnableManagedSpotTraining": bool(request.get("EnableManagedSpotTraining")),
    }
    for optional in ("Environment", "VpcConfig", "CheckpointConfig", "RetryStrategy",
                     "ExperimentConfig", "Tags"):
        if request.get(optional):
            record[optional] = request[optional]
    return record


# ------------------------------------------------------------------ log sinks


class LogSink:
    """Where a job's output goes. The engine calls these from a shipping thread.

    >>> class Printer(LogSink):
    ...     def write(self, job, stream, events):
    ...         print(*(text for _, text in events), sep="\\n")
    """

    def open(self, job: str, stream: str) -> None:
        """A log stream ``<job>/algo-N-<epoch seconds>`` starts (one per host and start)."""

    def write(self, job: str, stream: str, events: list[tuple[int, str]]) -> None:
        """Lines of output of one stream, each ``(epoch milliseconds, text)``, in order."""

    def metrics(self, job: str, host: str, points: list[tuple[str, float, float]]) -> None:
        """Metric values ``(name, value, epoch seconds)`` of host ``host`` (``<job>/algo-N``)."""


class MemoryLogSink(LogSink):
    """Keeps every job's output in memory (``%sm_train --local``: no CloudWatch Logs).

    >>> sink = MemoryLogSink()
    >>> sink.write("fraud-1", "fraud-1/algo-1-1700000000", [(1700000000000, "epoch 1")])
    >>> sink.events("fraud-1")
    [('fraud-1/algo-1-1700000000', 1700000000000, 'epoch 1')]
    """

    def __init__(self) -> None:
        self._lines: dict[str, list[tuple[str, int, str]]] = {}
        self._lock = threading.Lock()

    def write(self, job: str, stream: str, events: list[tuple[int, str]]) -> None:
        with self._lock:
            self._lines.setdefault(job, []).extend((stream, at, line) for at, line in events)

    def events(self, job: str, start: int = 0) -> list[tuple[str, int, str]]:
        """Lines ``(stream, epoch milliseconds, text)`` of ``job`` from position ``start``."""
        with self._lock:
            return list(self._lines.get(job, [])[start:])


# ------------------------------------------------------------------ one job


class EngineJob:
    """One training job: its record (the Describe response) and its live parts.

    Every change of the record goes through the methods here, under ``lock``,
    and ends with ``on_change(self)``.
    """

    def __init__(self, record: dict, on_change: Callable[[EngineJob], None]) -> None:
        self.record = record
        self.on_change = on_change
        self.lock = threading.RLock()
        self.run: _Hosts | None = None
        self.stop_reason: str | None = None  # "request" or "shutdown"
        self.shutdown_reason = "The sandbox stopped"
        self.interrupting = False  # a spot interruption was asked for and is under way
        self.log_lines: dict[str, list[tuple[int, str]]] = {}  # by host
        self.metric_points: dict[str, list[tuple[str, float, float]]] = {}  # by host
        self.last_metrics: dict[str, tuple[float, float]] = {}
        self.last_lines: dict[str, str] = {}  # by host
        self.billed_before = 0.0  # seconds the hosts ran before the current start
        self.run_started: float | None = None  # when the current start began
        self.time_limit = "MaxRuntimeInSeconds"  # the limit that ends the current start
        self.active = False

    @property
    def name(self) -> str:
        return self.record["TrainingJobName"]

    @property
    def status(self) -> str:
        return self.record["TrainingJobStatus"]

    @property
    def hosts(self) -> list[str]:
        """``algo-1`` … ``algo-N``, one per instance."""
        return host_names((self.record.get("ResourceConfig") or {}).get("InstanceCount", 1))

    def description(self) -> dict:
        """A copy of the record, as ``DescribeTrainingJob`` answers it (no tags)."""
        with self.lock:
            record = copy.deepcopy(self.record)
        record.pop("Tags", None)
        return record

    def transition(self, status: str, message: str, now: float | None = None) -> None:
        """Enter the secondary status ``status``, closing the current one."""
        now = time.time() if now is None else now
        with self.lock:
            transitions = self.record["SecondaryStatusTransitions"]
            if transitions and "EndTime" not in transitions[-1]:
                transitions[-1]["EndTime"] = now
            transitions.append({"Status": status, "StartTime": now, "StatusMessage": message})
            self.record["SecondaryStatus"] = status
            self.record["LastModifiedTime"] = now
        self.on_change(self)

    def say(self, message: str) -> None:
        """Change the message of the current secondary status."""
        with self.lock:
            self.record["SecondaryStatusTransitions"][-1]["StatusMessage"] = message
            self.record["LastModifiedTime"] = time.time()
        self.on_change(self)

    def ran_for(self, now: float | None = None) -> float:
        """Seconds the hosts have run so far, over every start of the job."""
        now = time.time() if now is None else now
        with self.lock:
            current = now - self.run_started if self.run_started is not None else 0.0
            return self.billed_before + current

    def pause_billing(self) -> None:
        """The hosts are gone (a spot interruption): stop counting billable time."""
        with self.lock:
            self.billed_before = self.ran_for()
            self.run_started = None

    def finish(self, status: str, secondary: str, message: str,
               failure: str | None = None) -> None:
        """End the job in ``status`` with training and billable time set.

        ``TrainingTimeInSeconds`` is the time from the start of training to now;
        ``BillableTimeInSeconds`` is the time the hosts ran (no time between a
        spot interruption and the restart) times the number of instances, as
        SageMaker bills each instance.
        """
        now = time.time()
        with self.lock:
            record = self.record
            self.transition(secondary, message, now)
            record["SecondaryStatusTransitions"][-1]["EndTime"] = now
            record["TrainingJobStatus"] = status
            if failure:
                record["FailureReason"] = failure[:FAILURE_REASON_LIMIT]
            started = record.get("TrainingStartTime")
            if started is not None:
                record["TrainingEndTime"] = now
                record["TrainingTimeInSeconds"] = max(1, round(now - started))
                # a record of an earlier engine has no start of its own: its whole training
                ran = (self.ran_for(now) if self.run_started is not None or self.billed_before
                       else now - started)
                record["BillableTimeInSeconds"] = max(1, round(ran)) * len(self.hosts)
            self.run_started = None
        self.on_change(self)

    def request_stop(self) -> bool:
        """Move a running job to ``Stopping`` and signal its program; False when it ended."""
        with self.lock:
            if self.status != "InProgress":
                return False
            self.stop_reason = "request"
            self.record["TrainingJobStatus"] = "Stopping"
            self.transition("Stopping", "Stopping the training job")
            if not self.active:  # still waiting for a worker: nothing runs yet
                self.finish("Stopped", "Stopped", "Training job stopped")
            run = self.run
        if run is not None:
            run.stop()
        return True

    def request_interruption(self) -> str | None:
        """Interrupt a training spot job as EC2 reclaiming its capacity would.

        Returns ``None`` when the interruption is under way, else why it cannot be.
        """
        with self.lock:
            if not self.record.get("EnableManagedSpotTraining"):
                return (f"The training job {self.name} is not a managed spot training job: "
                        "only those are interrupted.")
            if self.status != "InProgress" or self.record["SecondaryStatus"] != "Training":
                return (f"The training job {self.name} is {self.status} "
                        f"({self.record['SecondaryStatus']}): a spot job is interrupted while "
                        "it is Training.")
            if self.interrupting:
                return f"The training job {self.name} is being interrupted already."
            self.interrupting = True
            run = self.run
        if run is not None:
            run.stop()
        return None

    @property
    def stop_requested(self) -> bool:
        with self.lock:
            return self.stop_reason is not None


class _Rounds:
    """Calls ``round()`` every ``seconds`` on a thread of its own until ``finish()``.

    A round that fails is logged (``what`` says what it does); the next one does
    its work with what came since.
    """

    def __init__(self, name: str, seconds: float, what: str) -> None:
        self.seconds = seconds
        self.what = what
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True, name=name)
        self.thread.start()

    def round(self) -> Any:
        raise NotImplementedError

    def _loop(self) -> None:
        while not self.done.wait(self.seconds):
            try:
                self.round()
            except Exception:
                _log.exception("Could not %s", self.what)

    def finish(self) -> None:
        """Stop the rounds and wait for the one under way."""
        self.done.set()
        self.thread.join()


class _LogShipper(_Rounds):
    """Sends one host's output and metrics to the engine's sink, once a second."""

    def __init__(self, engine: JobEngine, job: EngineJob, host: str, stream: str) -> None:
        self.engine = engine
        self.job = job
        self.host = host
        self.stream = stream
        super().__init__(f"logs-{job.name}-{host}", _FLUSH_SECONDS,
                         f"ship the output of training job {job.name}")

    def close(self) -> None:
        if self.engine.closed:  # the engine is going away: what is unsent is dropped
            self.done.set()
            return
        self.finish()
        for attempt in range(3):  # the job's end waits a little for its last lines
            try:
                return self.round()
            except Exception:
                if attempt == 2:
                    _log.exception("Lost the last output of training job %s", self.job.name)
                else:
                    time.sleep(_FLUSH_SECONDS)

    def round(self) -> None:
        """Send what came since the last round; what could not be sent is kept for the next."""
        job, host = self.job, self.host
        with job.lock:
            lines, job.log_lines[host] = job.log_lines.get(host, []), []
            points, job.metric_points[host] = job.metric_points.get(host, []), []
            if points:
                job.record["FinalMetricDataList"] = [
                    {"MetricName": name, "Value": value, "Timestamp": at}
                    for name, (value, at) in job.last_metrics.items()]
        if points:
            job.on_change(job)
        events = [(at, line) for at, line in lines if line]
        try:
            if events:
                self.engine.sink.write(job.name, self.stream, events)
                events = []
            if points:
                # SageMaker's metric dimension Host is "<job>/algo-N"
                self.engine.sink.metrics(job.name, f"{job.name}/{host}", points)
        except Exception:
            with job.lock:  # in front of what came meanwhile, up to a bound
                job.log_lines[host][:0] = events[-_UNSENT_LIMIT:]
                job.metric_points[host][:0] = points[-_UNSENT_LIMIT:]
            raise


class _CheckpointSync(_Rounds):
    """Copies new and changed checkpoint files of every host to ``S3Uri`` while a job runs."""

    def __init__(self, engine: JobEngine, job: EngineJob, directories: Mapping[str, Path],
                 uri: str) -> None:
        self.engine = engine
        self.directories = dict(directories)
        self.uri = uri
        self.sent: dict[str, tuple[int, int]] = {}
        super().__init__(f"checkpoints-{job.name}", _CHECKPOINT_SECONDS,
                         f"copy the checkpoints of training job {job.name}")

    def round(self) -> int:
        return sum(upload_changed(self.engine.s3, directory, self.uri, self.sent)
                   for directory in self.directories.values())

    def close(self) -> None:
        """Stop the rounds and copy what is left (the program has ended)."""
        self.finish()
        if self.engine.closed:
            return
        try:
            self.round()
        except Exception as exc:
            raise _JobFailed(f"ClientError: Could not upload the checkpoints to {self.uri}: "
                             f"{exc}") from exc


@dataclass
class _HostsResult:
    """How the hosts of one start of a job ended."""

    results: dict[str, RunResult] = field(default_factory=dict)
    failed: str | None = None  # the first host whose program failed

    @property
    def succeeded(self) -> bool:
        return self.failed is None and all(r.succeeded for r in self.results.values())

    @property
    def timed_out(self) -> bool:
        return any(r.timed_out for r in self.results.values())

    @property
    def stopped(self) -> bool:
        return self.failed is None and any(r.stopped for r in self.results.values())


class _Hosts:
    """The containers of one start of a job, one per host, run and stopped together.

    :meth:`run` starts every host's program and waits for them all; the first
    one that fails (not stopped) has the others stopped.
    """

    def __init__(self, runs: Mapping[str, ContainerRun]) -> None:
        self.runs = dict(runs)
        self._lock = threading.Lock()
        self._ending = False

    def stop(self, timed_out: bool = False) -> None:
        with self._lock:
            self._ending = True
        for run in self.runs.values():
            run.stop(timed_out=timed_out)

    def kill(self) -> None:
        with self._lock:
            self._ending = True
        for run in self.runs.values():
            run.kill()

    def run(self, timeout: float | None) -> _HostsResult:
        outcome = _HostsResult()
        errors: list[BaseException] = []

        def one(host: str, run: ContainerRun) -> None:
            try:
                result = run.run(timeout=timeout)
            except BaseException as exc:  # noqa: BLE001 - carried to the caller below
                errors.append(exc)
                self.stop()
                return
            with self._lock:
                outcome.results[host] = result
                failed = not result.succeeded and not result.stopped and not result.timed_out
                first = failed and outcome.failed is None and not self._ending
                if first:
                    outcome.failed = host
                    self._ending = True
            if first:
                for other, run_of_other in self.runs.items():
                    if other != host:
                        run_of_other.stop()

        threads = [threading.Thread(target=one, args=item, daemon=True, name=f"host-{item[0]}")
                   for item in self.runs.items()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        return outcome


class _JobFailed(Exception):
    """A step of a job failed; the message is its ``FailureReason``."""


class _PortBlocks:
    """Blocks of free TCP ports on 127.0.0.1, one per job that runs with host networking."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._taken: set[int] = set()

    def reserve(self, size: int) -> int:
        """The first port of ``size`` consecutive ports no one listens on, kept until released."""
        low, high = _PORT_RANGE
        starts = list(range(low, high - size, PORTS_PER_HOST))
        offset = random.randrange(len(starts))  # other processes reserve blocks too
        with self._lock:
            for base in starts[offset:] + starts[:offset]:
                block = set(range(base, base + size))
                if block & self._taken or not all(_port_is_free(port) for port in block):
                    continue
                self._taken |= block
                return base
        raise _JobFailed("InternalServerError: There are no free ports on this machine for the "
                         "job's hosts.")

    def release(self, base: int, size: int) -> None:
        with self._lock:
            self._taken -= set(range(base, base + size))


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((_LOOPBACK, port))
        except OSError:
            return False
    return True


_PORTS = _PortBlocks()


# ------------------------------------------------------------------ the engine


class JobEngine:
    """Runs training jobs on the local Docker engine, ``max_concurrent`` at a time.

    ``s3`` is the S3 client channels are read from and artifacts written to,
    ``work_dir`` where each job's ``/opt/ml`` is laid out, ``sink`` where the
    output goes. Containers carry the label ``HOME_LABEL=<labels_home>`` so
    that what an engine left behind (the process died) is found and removed
    by the next engine of the same home. ``stop_grace`` is the time between
    SIGTERM and SIGKILL. ``network`` is the Docker network of the containers
    (Docker's default when ``None``; a job on several instances runs with the
    host's network then, so that its hosts reach each other by name).
    ``spot_restart_delay`` is how long an interrupted spot job waits for new
    capacity before it starts again.
    """

    def __init__(self, s3, work_dir: Path, *, sink: LogSink | None = None,
                 labels_home: str | None = None, max_concurrent: int = 2,
                 stop_grace: float = 10.0, network: str | None = None,
                 spot_restart_delay: float = 2.0) -> None:
        self.s3 = s3
        self.network = network
        self.work_dir = Path(work_dir)
        self.sink = sink or LogSink()
        self.labels_home = labels_home or str(self.work_dir)
        self.stop_grace = stop_grace
        self.spot_restart_delay = spot_restart_delay
        self._docker = None
        self._lock = threading.Lock()
        self._jobs: dict[str, EngineJob] = {}
        self._pool = ThreadPoolExecutor(max_workers=max_concurrent,
                                        thread_name_prefix="training-job")
        self._closed = False

    @property
    def docker(self):
        """The engine's client (API version negotiated as :mod:`sm_magics.docker_engine` does)."""
        if self._docker is None:
            from .docker_engine import docker_client

            self._docker = docker_client()
        return self._docker

    @property
    def closed(self) -> bool:
        return self._closed

    # -------------------------------------------------------------- jobs

    def adopt(self, job: EngineJob) -> None:
        """Know ``job`` without running it (a record of an earlier engine)."""
        with self._lock:
            self._jobs[job.name] = job

    def submit(self, record: dict, on_change: Callable[[EngineJob], None] = lambda _: None,
               ) -> EngineJob:
        """Queue the job of ``record`` (see :func:`new_record`); returns it.

        Raises ``KeyError`` when a job of that name exists and ``RuntimeError``
        when the engine is shutting down.
        """
        job = EngineJob(record, on_change)
        with self._lock:
            if self._closed:
                raise RuntimeError("The job engine is shutting down.")
            if job.name in self._jobs:
                raise KeyError(job.name)
            self._jobs[job.name] = job
            job.on_change(job)
            self._pool.submit(self._execute, job)
        return job

    def get(self, name: str) -> EngineJob | None:
        """The job called ``name``, or ``None``."""
        with self._lock:
            return self._jobs.get(name)

    def jobs(self) -> list[EngineJob]:
        """Every job this engine knows, in the order they came."""
        with self._lock:
            return list(self._jobs.values())

    # -------------------------------------------------------------- lifecycle

    def remove_leftover_containers(self) -> None:
        """Remove containers an earlier engine of this home left on the Docker engine."""
        import docker.errors

        try:
            leftovers = self.docker.containers.list(
                all=True, filters={"label": f"{HOME_LABEL}={self.labels_home}"})
        except Exception:  # no engine answers: nothing of ours can be left on it
            return
        for container in leftovers:
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True)

    def shutdown(self, timeout: float = 8.0, reason: str = "The sandbox stopped") -> None:
        """End every job now: they end ``Failed`` (``reason`` says why), nothing is left.

        Waits up to ``timeout`` seconds for running jobs to end.
        """
        with self._lock:
            self._closed = True
            jobs = [job for job in self._jobs.values() if not status_is_terminal(job.status)]
        for job in jobs:
            with job.lock:
                job.stop_reason = "shutdown"
                job.shutdown_reason = reason
                run = job.run
            if run is not None:
                run.kill()
        self._pool.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + timeout
        while any(job.active for job in jobs) and time.monotonic() < deadline:
            time.sleep(0.05)
        for job in jobs:
            if not status_is_terminal(job.status) and not job.active:
                job.finish("Failed", "Failed", "Training job failed",
                           failure=f"InternalServerError: {reason} before the job could end.")
        self.remove_leftover_containers()
        if not any(job.active for job in jobs):
            shutil.rmtree(self.work_dir, ignore_errors=True)

    # -------------------------------------------------------------- running a job

    def _execute(self, job: EngineJob) -> None:
        work = None
        with job.lock:
            if status_is_terminal(job.status):  # stopped while it waited for a worker
                return
            job.active = True
        try:
            if job.stop_requested:  # the engine is shutting down
                return self._end_stopped(job, timed_out=False)
            job.say("Preparing the instances for training")
            self.work_dir.mkdir(parents=True, exist_ok=True)
            work = Path(tempfile.mkdtemp(prefix=f"{job.name}-", dir=self.work_dir))
            with job.lock:
                job.record["TrainingStartTime"] = job.run_started = time.time()
            start = 1
            while self._start(job, work / f"start-{start}"):  # interrupted: start again
                start += 1
                if not self._restart_after_interruption(job):
                    return
        except _JobFailed as exc:
            job.finish("Failed", "Failed", "Training job failed", failure=str(exc))
        except Exception as exc:  # the job must end in a final state whatever broke
            job.finish("Failed", "Failed", "Training job failed",
                       failure=f"InternalServerError: {type(exc).__name__}: {exc}")
        finally:
            with job.lock:
                job.run = None
            if work is not None:
                shutil.rmtree(work, ignore_errors=True)
            job.active = False

    def _start(self, job: EngineJob, work: Path) -> bool:
        """One start of the job on all its hosts; True when a spot interruption ended it."""
        hosts = job.hosts
        job.transition("Downloading", "Downloading input data")
        # What every host gets whole is read from S3 once and copied to the other hosts.
        first = self._download(job, work / hosts[0] / "opt_ml", hosts[0])
        layouts = {hosts[0]: first, **{host: self._download(job, work / host / "opt_ml", host,
                                                            like=first) for host in hosts[1:]}}
        checkpoints = {hosts[0]: self._download_checkpoints(job, work / hosts[0] / "checkpoints")}
        for host in hosts[1:]:
            checkpoints[host] = work / host / "checkpoints"
            shutil.copytree(checkpoints[hosts[0]], checkpoints[host], symlinks=True)
        if job.stop_requested:
            self._end_stopped(job, timed_out=False)
            return False
        job.transition("Training", "Downloading the training image")
        uri = (job.record.get("CheckpointConfig") or {}).get("S3Uri")
        sync = _CheckpointSync(self, job, checkpoints, uri) if uri else None
        try:
            result = self._train(job, layouts, checkpoints)
        finally:
            if sync is not None:
                sync.close()
        with job.lock:
            interrupted = job.interrupting and job.stop_reason is None
            job.interrupting = False
        if interrupted:
            shutil.rmtree(work, ignore_errors=True)
            return True
        if result.timed_out:
            self._end_stopped(job, timed_out=True, layouts=layouts)
            return False
        if result.stopped:
            self._end_stopped(job, timed_out=False, layouts=layouts)
            return False
        if not result.succeeded:
            host = result.failed or hosts[0]
            outcome = result.results[host]
            raise _JobFailed(self._failure_reason(job, host, outcome.exit_code, outcome.failure))
        job.transition("Uploading", "Uploading generated training model")
        self._upload(job, layouts)
        job.finish("Completed", "Completed", "Training job completed")
        return False

    def _restart_after_interruption(self, job: EngineJob) -> bool:
        """Show the interruption, wait for capacity, and say whether the job starts again."""
        job.pause_billing()
        job.transition("Interrupted", "Training job interrupted: the spot capacity was "
                                      "reclaimed. It restarts when capacity is available.")
        deadline = time.monotonic() + self.spot_restart_delay
        while time.monotonic() < deadline and not job.stop_requested:
            time.sleep(0.05)
        if job.stop_requested:
            self._end_stopped(job, timed_out=False)
            return False
        if self._wait_left(job) <= 0:
            job.finish("Stopped", "MaxWaitTimeExceeded",
                       "Training job stopped: it exceeded MaxWaitTimeInSeconds")
            return False
        job.transition("Starting", "Restarting the training job on new spot capacity")
        with job.lock:
            job.run_started = time.time()
        return True

    @staticmethod
    def _wait_left(job: EngineJob) -> float:
        limit = job.record["StoppingCondition"].get("MaxWaitTimeInSeconds")
        if limit is None:
            return float("inf")
        return limit - (time.time() - job.record["CreationTime"])

    def _end_stopped(self, job: EngineJob, timed_out: bool,
                     layouts: Mapping[str, OptMl] | None = None) -> None:
        with job.lock:
            shutdown = job.stop_reason == "shutdown"
            reason = job.shutdown_reason
        if shutdown:
            raise _JobFailed(f"InternalServerError: {reason} while the job was running.")
        if layouts is not None:
            self._upload(job, layouts)
        if timed_out and job.time_limit == "MaxWaitTimeInSeconds":
            job.finish("Stopped", "MaxWaitTimeExceeded",
                       "Training job stopped: it exceeded MaxWaitTimeInSeconds")
        elif timed_out:
            job.finish("Stopped", "MaxRuntimeExceeded",
                       "Training job stopped: it exceeded MaxRuntimeInSeconds")
        else:
            job.finish("Stopped", "Stopped", "Training job stopped")

    def _download(self, job: EngineJob, root: Path, host: str, like: OptMl | None = None,
                  ) -> OptMl:
        """Lay out ``host``'s ``/opt/ml`` and fill its channels.

        With ``like`` (another host's layout, filled), the channels every host gets
        whole are copied from it, and only the sharded ones are read from S3.
        """
        record = job.record
        hosts = job.hosts
        default_mode = record["AlgorithmSpecification"].get("TrainingInputMode", "File")
        channels = {}
        for channel in record["InputDataConfig"]:
            entry = {"TrainingInputMode": channel.get("InputMode") or default_mode,
                     "S3DistributionType": channel["DataSource"]["S3DataSource"].get(
                         "S3DataDistributionType", "FullyReplicated"),
                     "RecordWrapperType": channel.get("RecordWrapperType", "None")}
            if channel.get("ContentType"):
                entry["ContentType"] = channel["ContentType"]
            channels[channel["ChannelName"]] = entry
        layout = OptMl.create(root, record["HyperParameters"], channels,
                              instance_type=record["ResourceConfig"]["InstanceType"],
                              current_host=host, hosts=hosts)
        for channel in record["InputDataConfig"]:
            source = channel["DataSource"]["S3DataSource"]
            sharded = source.get("S3DataDistributionType") == "ShardedByS3Key"
            target = layout.channel_dir(channel["ChannelName"])
            if like is not None and not sharded:
                shutil.copytree(like.channel_dir(channel["ChannelName"]), target, symlinks=True,
                                dirs_exist_ok=True)
                continue
            try:
                download_channel(self.s3, source["S3Uri"], target, source["S3DataType"],
                                 shard=(hosts.index(host), len(hosts)) if sharded else None)
            except Exception as exc:
                raise _JobFailed(
                    f"ClientError: Could not download channel {channel['ChannelName']!r} from "
                    f"{source['S3Uri']}: {exc}") from exc
        return layout

    def _download_checkpoints(self, job: EngineJob, directory: Path) -> Path:
        """Fill a host's checkpoint directory from ``CheckpointConfig.S3Uri``, as SageMaker does."""
        directory.mkdir(parents=True, exist_ok=True)
        uri = (job.record.get("CheckpointConfig") or {}).get("S3Uri")
        if uri:
            try:
                download_channel(self.s3, uri.rstrip("/") + "/", directory)
            except Exception as exc:
                raise _JobFailed(f"ClientError: Could not download the checkpoints from {uri}: "
                                 f"{exc}") from exc
        return directory

    def _train(self, job: EngineJob, layouts: Mapping[str, OptMl],
               checkpoints: Mapping[str, Path]) -> _HostsResult:
        import docker.errors

        from .docker_engine import docker_client

        record = job.record
        image = record["AlgorithmSpecification"]["TrainingImage"]
        hosts = list(layouts)
        network = self.network
        if len(hosts) > 1 and network is None:
            network = "host"  # the hosts find each other on the loopback
        if len(hosts) > 1 and network != "host":
            raise _JobFailed(f"ClientError: A job on {len(hosts)} instances runs with the "
                             f"host's network on one machine, not the network {network!r}.")
        # Clients of the job's own, one per host: the SDK's clients are not safe to share
        # between threads (a requests.Session underneath; docker/docker-py#3229), and each
        # attached output stream holds its connection for the whole run.
        clients = {host: docker_client() for host in hosts}
        ports = _PORTS.reserve(len(hosts) * PORTS_PER_HOST) if network == "host" else None
        shippers: list[_LogShipper] = []
        try:
            try:
                ensure_image(clients[hosts[0]], image)
            except docker.errors.DockerException as exc:
                raise _JobFailed(f"ClientError: Could not pull the training image {image}: "
                                 f"{_docker_message(exc)}") from exc
            group = self._hosts(job, layouts, checkpoints, clients, image, network, ports)
            with job.lock:
                job.run = group
                stop_now = job.stop_reason is not None or job.interrupting
            if stop_now:
                group.stop()
            job.say("Training image download completed. Training in progress.")
            run_left = record["StoppingCondition"]["MaxRuntimeInSeconds"] - job.ran_for()
            wait_left = self._wait_left(job)
            with job.lock:
                job.time_limit = ("MaxWaitTimeInSeconds" if wait_left < run_left
                                  else "MaxRuntimeInSeconds")
            timeout = max(0.0, min(run_left, wait_left))
            opened = int(time.time())
            for host in hosts:
                stream = f"{job.name}/{host}-{opened}"
                self.sink.open(job.name, stream)
                shippers.append(_LogShipper(self, job, host, stream))
            try:
                return group.run(timeout=timeout)
            except docker.errors.DockerException as exc:
                from .docker_engine import refusal

                refused = refusal(exc, f"the network '{network or 'default'}' of the "
                                       "training container")
                if refused:
                    raise _JobFailed(f"ClientError: {refused} Set the docker_network setting to "
                                     "one it allows (sagemaker in SageMaker Studio).") from exc
                raise _JobFailed(f"ClientError: Could not run the training image {image}: "
                                 f"{_docker_message(exc)}") from exc
        finally:
            with job.lock:
                job.run = None
            for shipper in shippers:
                shipper.close()
            if ports is not None:
                _PORTS.release(ports, len(hosts) * PORTS_PER_HOST)
            for client in clients.values():
                client.close()

    def _hosts(self, job: EngineJob, layouts: Mapping[str, OptMl],
               checkpoints: Mapping[str, Path], clients: Mapping[str, Any], image: str,
               network: str | None, ports: int | None) -> _Hosts:
        record = job.record
        hosts = list(layouts)
        patterns = [(d["Name"], re.compile(d["Regex"]))
                    for d in record["AlgorithmSpecification"].get("MetricDefinitions") or []]
        local_path = (record.get("CheckpointConfig") or {}).get("LocalPath",
                                                                DEFAULT_CHECKPOINT_PATH)
        shared = {}
        if ports is not None:
            shared = {"SM_MAGICS_PORT_BASE": str(ports),
                      "SM_MAGICS_PORTS_PER_HOST": str(PORTS_PER_HOST)}
        runs = {}
        for host in hosts:
            runs[host] = ContainerRun(
                clients[host], image, layouts[host],
                environment={**shared, **(record.get("Environment") or {})},
                on_line=lambda line, host=host: self._on_line(job, patterns, host, line),
                job_name=job.name, labels={HOME_LABEL: self.labels_home},
                stop_grace=self.stop_grace, network=network,
                mounts={local_path: checkpoints[host]},
                hostname=host if network == "host" else None,
                extra_hosts={name: _LOOPBACK for name in hosts} if network == "host" else None,
            )
        return _Hosts(runs)

    @staticmethod
    def _on_line(job: EngineJob, patterns: list[tuple[str, re.Pattern]], host: str,
                 line: str) -> None:
        now = time.time()
        with job.lock:
            job.log_lines.setdefault(host, []).append((int(now * 1000), line))
            if line.strip():
                job.last_lines[host] = line.strip()
            for name, pattern in patterns:
                found = pattern.search(line)
                if not found:
                    continue
                try:
                    value = float(found.group(1) if pattern.groups else found.group(0))
                except (ValueError, TypeError):
                    continue
                job.last_metrics[name] = (value, now)
                job.metric_points.setdefault(host, []).append((name, value, now))

    @staticmethod
    def _failure_reason(job: EngineJob, host: str, exit_code: int, failure: str | None) -> str:
        several = len(job.hosts) > 1
        if failure:
            return f"AlgorithmError: {host}: {failure}" if several else \
                f"AlgorithmError: {failure}"
        with job.lock:
            last = job.last_lines.get(host, "")
        detail = f" Last log line: {last}" if last else ""
        where = f" on {host}" if several else ""
        return (f"AlgorithmError: The training program{where} exited with code {exit_code}."
                f"{detail}")

    def _upload(self, job: EngineJob, layouts: Mapping[str, OptMl]) -> None:
        output = job.record["OutputDataConfig"]["S3OutputPath"]
        bucket, prefix = split_s3_uri(output)
        key = "/".join(filter(None, (prefix.strip("/"), job.name, "output")))
        first = next(iter(layouts.values()))
        pack_dir = first.root.parent.parent
        try:
            model = _merged(pack_dir / "model", [layout.model_dir for layout in layouts.values()])
            pack_directory(model, pack_dir / "model.tar.gz")
            self.s3.upload_file(str(pack_dir / "model.tar.gz"), bucket, f"{key}/model.tar.gz")
            data = _merged(pack_dir / "output-data",
                           [layout.output_data_dir for layout in layouts.values()])
            if pack_directory(data, pack_dir / "output.tar.gz"):
                self.s3.upload_file(str(pack_dir / "output.tar.gz"), bucket,
                                    f"{key}/output.tar.gz")
        except Exception as exc:
            raise _JobFailed(f"ClientError: Could not upload the model to {output}: "
                             f"{exc}") from exc
        with job.lock:
            job.record["ModelArtifacts"] = {"S3ModelArtifacts": s3_uri(bucket,
                                                                       f"{key}/model.tar.gz")}
        job.on_change(job)


def _merged(target: Path, directories: list[Path]) -> Path:
    """One directory with the files of ``directories``, a later one's file winning a name.

    A single directory is used as it is.
    """
    if len(directories) == 1:
        return directories[0]
    target.mkdir(parents=True, exist_ok=True)
    for directory in directories:
        if directory.is_dir():
            shutil.copytree(directory, target, symlinks=True, dirs_exist_ok=True)
    return target


def _docker_message(exc: Exception) -> str:
    explanation = getattr(exc, "explanation", None)
    return str(explanation or exc).strip()
