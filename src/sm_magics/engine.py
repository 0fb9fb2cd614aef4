"""The job-run engine: a training job run on this machine's Docker engine.

What SageMaker does with a training job once it has accepted it, for the
sandbox (:mod:`sm_magics.sandbox.training_api`, which answers the SageMaker API
on top of this engine) and for ``%sm_train --local`` (:mod:`sm_magics.local`,
which uses it directly). A job goes through the phases SageMaker reports as
its ``SecondaryStatus``:

1. ``Starting``: queued until one of ``max_concurrent`` workers is free;
2. ``Downloading``: the channels are copied from S3 into a host directory
   laid out as ``/opt/ml`` (:mod:`sm_magics.contract`);
3. ``Training``: the image is pulled and run with the command ``train``; its
   output goes to a :class:`LogSink` (CloudWatch Logs in the sandbox, memory
   for local runs), and the values matched by the job's ``MetricDefinitions``
   to ``FinalMetricDataList`` (and CloudWatch metrics in the sandbox);
4. ``Uploading``: ``/opt/ml/model`` becomes ``model.tar.gz`` and
   ``/opt/ml/output/data`` (when it has files) ``output.tar.gz`` under
   ``<S3OutputPath>/<job>/output/``;
5. ``Completed``, ``Failed`` (``FailureReason`` from ``/opt/ml/output/failure``
   or the exit code) or ``Stopped``.

With a ``CheckpointConfig``, its ``S3Uri`` is copied into the checkpoint
directory (``LocalPath``, default ``/opt/ml/checkpoints``) before training and
the directory's files are copied back when the program ends, however it ends.

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
sentence saying so: more than one instance, ``Pipe`` input, data sources other
than S3 (``S3Prefix`` or ``ManifestFile``), algorithm resources instead of a
training image.

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
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .contract import (
    ContainerRun,
    OptMl,
    download_channel,
    ensure_image,
    pack_directory,
    upload_directory,
)
from .jobstate import status_is_terminal
from .s3uri import s3_uri, split_s3_uri

__all__ = [
    "HOME_LABEL",
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
_FLUSH_SECONDS = 1.0
_UNSENT_LIMIT = 100_000  # lines (and metric values) kept while the sink fails
_log = logging.getLogger(__name__)


class NotRunnable(ValueError):
    """A job this engine cannot run on one machine; the message says why."""


def check_runnable(request: Mapping[str, Any]) -> None:
    """Raise :class:`NotRunnable` when a ``CreateTrainingJob`` request needs what one machine lacks.

    >>> check_runnable({"AlgorithmSpecification": {"TrainingImage": "img"},
    ...                 "ResourceConfig": {"InstanceCount": 2}})
    Traceback (most recent call last):
    NotRunnable: The sandbox runs a training job on one instance: ...
    """
    spec = request.get("AlgorithmSpecification") or {}
    if not spec.get("TrainingImage"):
        raise NotRunnable("The sandbox runs training images: set "
                          "AlgorithmSpecification.TrainingImage (algorithm resources and "
                          "serverless jobs are not available in the sandbox).")
    resources = request.get("ResourceConfig") or {}
    if resources.get("InstanceCount", 1) != 1 or resources.get("InstanceGroups"):
        raise NotRunnable("The sandbox runs a training job on one instance: set "
                          "ResourceConfig.InstanceCount to 1.")
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
        """A log stream ``<job>/algo-1-<epoch seconds>`` starts."""

    def write(self, job: str, stream: str, events: list[tuple[int, str]]) -> None:
        """Lines of output, each ``(epoch milliseconds, text)``, in order."""

    def metrics(self, job: str, host: str, points: list[tuple[str, float, float]]) -> None:
        """Metric values ``(name, value, epoch seconds)`` matched in the output."""


class MemoryLogSink(LogSink):
    """Keeps every job's output in memory (``%sm_train --local``: no CloudWatch Logs).

    >>> sink = MemoryLogSink()
    >>> sink.write("fraud-1", "fraud-1/algo-1-1700000000", [(1700000000000, "epoch 1")])
    >>> sink.events("fraud-1")
    [(1700000000000, 'epoch 1')]
    """

    def __init__(self) -> None:
        self._lines: dict[str, list[tuple[int, str]]] = {}
        self._lock = threading.Lock()

    def write(self, job: str, stream: str, events: list[tuple[int, str]]) -> None:
        with self._lock:
            self._lines.setdefault(job, []).extend(events)

    def events(self, job: str, start: int = 0) -> list[tuple[int, str]]:
        """Output lines of ``job`` from position ``start``."""
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
        self.run: ContainerRun | None = None
        self.stop_reason: str | None = None  # "request" or "shutdown"
        self.shutdown_reason = "The sandbox stopped"
        self.log_lines: list[tuple[int, str]] = []
        self.metric_points: list[tuple[str, float, float]] = []
        self.last_metrics: dict[str, tuple[float, float]] = {}
        self.last_line = ""
        self.active = False

    @property
    def name(self) -> str:
        return self.record["TrainingJobName"]

    @property
    def status(self) -> str:
        return self.record["TrainingJobStatus"]

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

    def finish(self, status: str, secondary: str, message: str,
               failure: str | None = None) -> None:
        """End the job in ``status`` with training and billable time set."""
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
                seconds = max(1, round(now - started))
                record["TrainingTimeInSeconds"] = seconds
                record["BillableTimeInSeconds"] = seconds
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

    @property
    def stop_requested(self) -> bool:
        with self.lock:
            return self.stop_reason is not None


class _LogShipper:
    """Sends a job's output and metrics to the engine's sink, once a second."""

    def __init__(self, engine: JobEngine, job: EngineJob, stream: str) -> None:
        self.engine = engine
        self.job = job
        self.stream = stream
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True,
                                       name=f"logs-{job.name}")
        self.thread.start()

    def _loop(self) -> None:
        while not self.done.wait(_FLUSH_SECONDS):
            try:
                self.flush()
            except Exception:  # the next flush sends it with what came since
                _log.exception("Could not ship the output of training job %s", self.job.name)

    def close(self) -> None:
        self.done.set()
        if self.engine.closed:  # the engine is going away: what is unsent is dropped
            return
        self.thread.join()
        for attempt in range(3):  # the job's end waits a little for its last lines
            try:
                return self.flush()
            except Exception:
                if attempt == 2:
                    _log.exception("Lost the last output of training job %s", self.job.name)
                else:
                    time.sleep(_FLUSH_SECONDS)

    def flush(self) -> None:
        """Send what came since the last flush; what could not be sent is kept for the next."""
        job = self.job
        with job.lock:
            lines, job.log_lines = job.log_lines, []
            points, job.metric_points = job.metric_points, []
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
                self.engine.sink.metrics(job.name, self.stream.rsplit("-", 1)[0], points)
        except Exception:
            with job.lock:  # in front of what came meanwhile, up to a bound
                job.log_lines[:0] = events[-_UNSENT_LIMIT:]
                job.metric_points[:0] = points[-_UNSENT_LIMIT:]
            raise


class _JobFailed(Exception):
    """A step of a job failed; the message is its ``FailureReason``."""


# ------------------------------------------------------------------ the engine


class JobEngine:
    """Runs training jobs on the local Docker engine, ``max_concurrent`` at a time.

    ``s3`` is the S3 client channels are read from and artifacts written to,
    ``work_dir`` where each job's ``/opt/ml`` is laid out, ``sink`` where the
    output goes. Containers carry the label ``HOME_LABEL=<labels_home>`` so
    that what an engine left behind (the process died) is found and removed
    by the next engine of the same home. ``stop_grace`` is the time between
    SIGTERM and SIGKILL. ``network`` is the Docker network of the containers
    (Docker's default when ``None``).
    """

    def __init__(self, s3, work_dir: Path, *, sink: LogSink | None = None,
                 labels_home: str | None = None, max_concurrent: int = 2,
                 stop_grace: float = 10.0, network: str | None = None) -> None:
        self.s3 = s3
        self.network = network
        self.work_dir = Path(work_dir)
        self.sink = sink or LogSink()
        self.labels_home = labels_home or str(self.work_dir)
        self.stop_grace = stop_grace
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
                job.record["TrainingStartTime"] = time.time()
            job.transition("Downloading", "Downloading input data")
            layout = self._download(job, work / "opt_ml")
            checkpoints = self._download_checkpoints(job, work / "checkpoints")
            if job.stop_requested:
                return self._end_stopped(job, timed_out=False)
            job.transition("Training", "Downloading the training image")
            result = self._train(job, layout, checkpoints)
            self._upload_checkpoints(job, checkpoints)
            if result.stopped or result.timed_out:
                return self._end_stopped(job, timed_out=result.timed_out, layout=layout)
            if not result.succeeded:
                raise _JobFailed(self._failure_reason(job, result.exit_code, result.failure))
            job.transition("Uploading", "Uploading generated training model")
            self._upload(job, layout)
            job.finish("Completed", "Completed", "Training job completed")
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

    def _end_stopped(self, job: EngineJob, timed_out: bool, layout: OptMl | None = None) -> None:
        with job.lock:
            shutdown = job.stop_reason == "shutdown"
            reason = job.shutdown_reason
        if shutdown:
            raise _JobFailed(f"InternalServerError: {reason} while the job was running.")
        if layout is not None:
            self._upload(job, layout)
        if timed_out:
            job.finish("Stopped", "MaxRuntimeExceeded",
                       "Training job stopped: it exceeded MaxRuntimeInSeconds")
        else:
            job.finish("Stopped", "Stopped", "Training job stopped")

    def _download(self, job: EngineJob, root: Path) -> OptMl:
        record = job.record
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
                              instance_type=record["ResourceConfig"]["InstanceType"])
        for channel in record["InputDataConfig"]:
            source = channel["DataSource"]["S3DataSource"]
            try:
                download_channel(self.s3, source["S3Uri"],
                                 layout.channel_dir(channel["ChannelName"]), source["S3DataType"])
            except Exception as exc:
                raise _JobFailed(
                    f"ClientError: Could not download channel {channel['ChannelName']!r} from "
                    f"{source['S3Uri']}: {exc}") from exc
        return layout

    def _download_checkpoints(self, job: EngineJob, directory: Path) -> Path:
        """Fill the checkpoint directory from ``CheckpointConfig.S3Uri``, as SageMaker does."""
        directory.mkdir(parents=True, exist_ok=True)
        uri = (job.record.get("CheckpointConfig") or {}).get("S3Uri")
        if uri:
            try:
                download_channel(self.s3, uri.rstrip("/") + "/", directory)
            except Exception as exc:
                raise _JobFailed(f"ClientError: Could not download the checkpoints from {uri}: "
                                 f"{exc}") from exc
        return directory

    def _upload_checkpoints(self, job: EngineJob, directory: Path) -> None:
        uri = (job.record.get("CheckpointConfig") or {}).get("S3Uri")
        if not uri or self.closed:
            return
        try:
            upload_directory(self.s3, directory, uri)
        except Exception as exc:
            raise _JobFailed(f"ClientError: Could not upload the checkpoints to {uri}: "
                             f"{exc}") from exc

    def _train(self, job: EngineJob, layout: OptMl, checkpoints: Path):
        from .docker_engine import docker_client

        record = job.record
        image = record["AlgorithmSpecification"]["TrainingImage"]
        # A client of the job's own: the SDK's clients are not safe to share between
        # threads (a requests.Session underneath; docker/docker-py#3229), and a job's
        # attached output stream holds its connection for the whole run.
        client = docker_client()
        try:
            return self._run_container(job, layout, checkpoints, client, image)
        finally:
            client.close()

    def _run_container(self, job: EngineJob, layout: OptMl, checkpoints: Path, client,
                       image: str):
        import docker.errors

        record = job.record
        try:
            ensure_image(client, image)
        except docker.errors.DockerException as exc:
            raise _JobFailed(f"ClientError: Could not pull the training image {image}: "
                             f"{_docker_message(exc)}") from exc
        stream = f"{job.name}/algo-1-{int(time.time())}"
        self.sink.open(job.name, stream)
        patterns = [(d["Name"], re.compile(d["Regex"]))
                    for d in record["AlgorithmSpecification"].get("MetricDefinitions") or []]
        run = ContainerRun(
            client, image, layout, environment=record.get("Environment"),
            on_line=lambda line: self._on_line(job, patterns, line), job_name=job.name,
            labels={HOME_LABEL: self.labels_home}, stop_grace=self.stop_grace,
            network=self.network,
            mounts={(record.get("CheckpointConfig") or {}).get(
                "LocalPath", DEFAULT_CHECKPOINT_PATH): checkpoints},
        )
        with job.lock:
            job.run = run
            stop_now = job.stop_reason is not None
        if stop_now:
            run.stop()
        job.say("Training image download completed. Training in progress.")
        elapsed = time.time() - record["TrainingStartTime"]
        timeout = max(0.0, record["StoppingCondition"]["MaxRuntimeInSeconds"] - elapsed)
        shipper = _LogShipper(self, job, stream)
        try:
            try:
                return run.run(timeout=timeout)
            except docker.errors.DockerException as exc:
                from .docker_engine import refusal

                refused = refusal(exc, f"the network '{self.network or 'default'}' of the "
                                       "training container")
                if refused:
                    raise _JobFailed(f"ClientError: {refused} Set the docker_network setting to "
                                     "one it allows (sagemaker in SageMaker Studio).") from exc
                raise _JobFailed(f"ClientError: Could not run the training image {image}: "
                                 f"{_docker_message(exc)}") from exc
        finally:
            shipper.close()

    @staticmethod
    def _on_line(job: EngineJob, patterns: list[tuple[str, re.Pattern]], line: str) -> None:
        now = time.time()
        with job.lock:
            job.log_lines.append((int(now * 1000), line))
            if line.strip():
                job.last_line = line.strip()
            for name, pattern in patterns:
                found = pattern.search(line)
                if not found:
                    continue
                try:
                    value = float(found.group(1) if pattern.groups else found.group(0))
                except (ValueError, TypeError):
                    continue
                job.last_metrics[name] = (value, now)
                job.metric_points.append((name, value, now))

    @staticmethod
    def _failure_reason(job: EngineJob, exit_code: int, failure: str | None) -> str:
        if failure:
            return f"AlgorithmError: {failure}"
        with job.lock:
            last = job.last_line
        detail = f" Last log line: {last}" if last else ""
        return (f"AlgorithmError: The training program exited with code {exit_code}."
                f"{detail}")

    def _upload(self, job: EngineJob, layout: OptMl) -> None:
        output = job.record["OutputDataConfig"]["S3OutputPath"]
        bucket, prefix = split_s3_uri(output)
        key = "/".join(filter(None, (prefix.strip("/"), job.name, "output")))
        pack_dir = layout.root.parent
        try:
            pack_directory(layout.model_dir, pack_dir / "model.tar.gz")
            self.s3.upload_file(str(pack_dir / "model.tar.gz"), bucket, f"{key}/model.tar.gz")
            if pack_directory(layout.output_data_dir, pack_dir / "output.tar.gz"):
                self.s3.upload_file(str(pack_dir / "output.tar.gz"), bucket,
                                    f"{key}/output.tar.gz")
        except Exception as exc:
            raise _JobFailed(f"ClientError: Could not upload the model to {output}: "
                             f"{exc}") from exc
        with job.lock:
            job.record["ModelArtifacts"] = {"S3ModelArtifacts": s3_uri(bucket,
                                                                       f"{key}/model.tar.gz")}
        job.on_change(job)


def _docker_message(exc: Exception) -> str:
    explanation = getattr(exc, "explanation", None)
    return str(explanation or exc).strip()
