"""The sandbox's SageMaker training jobs: the API answered here, the image really run.

``CreateTrainingJob``, ``DescribeTrainingJob``, ``StopTrainingJob`` and
``ListTrainingJobs`` (and ``AddTags``, ``ListTags``, ``DeleteTags`` for
training-job ARNs) reach :class:`TrainingJobExecutor` through the gateway
(:mod:`.gateway`), with the request and response shapes of the real API
(checked against botocore's service model). A job runs in a small pool of
threads inside the gateway process, so it outlives the notebook kernel:

1. ``Starting``: queued until a worker is free;
2. ``Downloading``: the channels are copied from the sandbox's S3 into a
   host directory laid out as ``/opt/ml`` (:mod:`sm_magics.contract`);
3. ``Training``: the image is pulled and run with the command ``train``; its
   output goes to CloudWatch Logs (``/aws/sagemaker/TrainingJobs``, stream
   ``<job>/algo-1-<epoch seconds>``) and the values matched by the job's
   ``MetricDefinitions`` to CloudWatch metrics and ``FinalMetricDataList``;
4. ``Uploading``: ``/opt/ml/model`` becomes ``model.tar.gz`` and
   ``/opt/ml/output/data`` (when it has files) ``output.tar.gz`` under
   ``<S3OutputPath>/<job>/output/``;
5. ``Completed``, ``Failed`` (``FailureReason`` from ``/opt/ml/output/failure``
   or the exit code) or ``Stopped``.

With a ``CheckpointConfig``, its ``S3Uri`` is copied into the checkpoint
directory (``LocalPath``, default ``/opt/ml/checkpoints``) before training and
the directory's files are copied back when the program ends, however it ends.

``StopTrainingJob`` sends SIGTERM and kills the program after a grace period;
the model written so far is still uploaded, as SageMaker does. A job that
exceeds ``MaxRuntimeInSeconds`` is stopped the same way and ends with
``TrainingJobStatus`` ``Stopped`` and ``SecondaryStatus`` ``MaxRuntimeExceeded``,
the pair the API documents for that case.

What a single machine cannot do is refused at ``CreateTrainingJob`` with a
``ValidationException`` that says so: more than one instance, ``Pipe`` input,
data sources other than S3 (``S3Prefix`` or ``ManifestFile``), algorithm
resources instead of a training image.

Job records are JSON files under ``<sandbox home>/training-jobs``, so
``DescribeTrainingJob`` and ``ListTrainingJobs`` keep answering after the
gateway restarts; a job that was still running then is marked ``Failed``.

Example (inside the gateway process)::

    >>> executor = TrainingJobExecutor("http://127.0.0.1:4599", Path("~/.sm_magics/sandbox"))
    >>> app = Gateway(moto_app, handlers=executor.wsgi_handlers(moto_app))
"""

from __future__ import annotations

import base64
import contextlib
import copy
import io
import json
import logging
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..contract import (
    ContainerRun,
    OptMl,
    download_channel,
    ensure_image,
    pack_directory,
    upload_directory,
)

__all__ = ["ApiError", "TrainingJobExecutor", "validate_request"]

OPERATIONS = ("CreateTrainingJob", "DescribeTrainingJob", "StopTrainingJob", "ListTrainingJobs",
              "AddTags", "ListTags", "DeleteTags")
LOG_GROUP = "/aws/sagemaker/TrainingJobs"
METRIC_NAMESPACE = "/aws/sagemaker/TrainingJobs"
HOME_LABEL = "sm-magics.sandbox-home"
DEFAULT_MAX_RUNTIME = 86400
DEFAULT_CHECKPOINT_PATH = "/opt/ml/checkpoints"
TERMINAL = ("Completed", "Failed", "Stopped")
_JSON = "application/x-amz-json-1.1"
_FLUSH_SECONDS = 1.0
_LOG_BATCH = 1000
_EVENT_LIMIT = 200_000  # characters; CloudWatch Logs takes events up to 256 KB
_log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error answered in the JSON protocol: ``{"__type": code, "message": ...}``, HTTP 400.

    >>> raise ApiError("ValidationException", "Requested resource not found.")
    """

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


# ------------------------------------------------------------------ validation


def _service_model():
    import botocore.session

    return botocore.session.get_session().get_service_model("sagemaker")


def _lower_camel(name: str) -> str:
    return name[:1].lower() + name[1:]


def _check(shape, value: Any, path: str, errors: list[str]) -> None:
    """Append AWS-style constraint messages for ``value`` against ``shape``."""
    kind = shape.type_name
    meta = shape.metadata

    def fail(constraint: str) -> None:
        shown = json.dumps(value) if not isinstance(value, str) else f"'{value}'"
        errors.append(f"Value {shown} at '{path}' failed to satisfy constraint: {constraint}")

    if kind == "structure":
        if not isinstance(value, dict):
            return fail("Member must be a structure")
        for name in shape.required_members:
            if value.get(name) is None:
                where = f"{path}.{_lower_camel(name)}" if path else _lower_camel(name)
                errors.append(f"Value null at '{where}' failed to satisfy constraint: "
                              "Member must not be null")
        for name, member in value.items():
            if name in shape.members and member is not None:
                where = f"{path}.{_lower_camel(name)}" if path else _lower_camel(name)
                _check(shape.members[name], member, where, errors)
    elif kind == "list":
        if not isinstance(value, list):
            return fail("Member must be a list")
        _check_length(len(value), meta, fail)
        for index, item in enumerate(value, 1):
            _check(shape.member, item, f"{path}.{index}.member", errors)
    elif kind == "map":
        if not isinstance(value, dict):
            return fail("Member must be a map")
        _check_length(len(value), meta, fail)
        for key, item in value.items():
            _check(shape.key, key, f"{path}.key", errors)
            _check(shape.value, item, f"{path}.{key}", errors)
    elif kind == "string":
        if not isinstance(value, str):
            return fail("Member must be a string")
        if "enum" in meta and value not in meta["enum"]:
            return fail(f"Member must satisfy enum value set: [{', '.join(meta['enum'])}]")
        _check_length(len(value), meta, fail)
        if "pattern" in meta:
            try:
                matched = re.fullmatch(meta["pattern"], value, re.S)
            except re.error:  # a Java-only construct; AWS checks it, this sandbox does not
                matched = True
            if not matched:
                fail(f"Member must satisfy regular expression pattern: {meta['pattern']}")
    elif kind in ("integer", "long"):
        if not isinstance(value, int) or isinstance(value, bool):
            return fail("Member must be an integer")
        if "min" in meta and value < meta["min"]:
            fail(f"Member must have value greater than or equal to {meta['min']}")
        if "max" in meta and value > meta["max"]:
            fail(f"Member must have value less than or equal to {meta['max']}")
    elif kind in ("float", "double"):
        if not isinstance(value, int | float) or isinstance(value, bool):
            fail("Member must be a number")
    elif kind == "boolean":
        if not isinstance(value, bool):
            fail("Member must be a boolean")
    elif kind == "timestamp" and (not isinstance(value, int | float | str)
                                  or isinstance(value, bool)):
        fail("Member must be a timestamp")


def _check_length(length: int, meta: dict, fail: Callable[[str], None]) -> None:
    if "min" in meta and length < meta["min"]:
        fail(f"Member must have length greater than or equal to {meta['min']}")
    if "max" in meta and length > meta["max"]:
        fail(f"Member must have length less than or equal to {meta['max']}")


def validate_request(operation: str, request: Any, model=None) -> None:
    """Raise a ``ValidationException`` :class:`ApiError` when ``request`` breaks the API's rules.

    >>> validate_request("DescribeTrainingJob", {"TrainingJobName": "bad_name"})
    Traceback (most recent call last):
    ApiError: 1 validation error detected: Value 'bad_name' at 'trainingJobName' ...
    """
    shape = (model or _service_model()).operation_model(operation).input_shape
    errors: list[str] = []
    _check(shape, request, "", errors)
    if errors:
        count = f"{len(errors)} validation error{'s' if len(errors) > 1 else ''} detected: "
        raise ApiError("ValidationException", count + "; ".join(errors))


# ------------------------------------------------------------------ one job


class _Job:
    """One training job: its record (the Describe response) and its live parts."""

    def __init__(self, record: dict) -> None:
        self.record = record
        self.lock = threading.RLock()
        self.run: ContainerRun | None = None
        self.stop_reason: str | None = None  # "request" or "shutdown"
        self.log_lines: list[tuple[int, str]] = []
        self.metric_points: list[tuple[str, float, float]] = []
        self.last_metrics: dict[str, tuple[float, float]] = {}
        self.last_line = ""
        self.active = False
        self.kept_lines: list[tuple[int, str]] = []  # the output, when no CloudWatch Logs

    @property
    def name(self) -> str:
        return self.record["TrainingJobName"]

    @property
    def status(self) -> str:
        return self.record["TrainingJobStatus"]


class _LogShipper:
    """Sends a job's output to CloudWatch Logs and its metrics to CloudWatch, once a second."""

    def __init__(self, executor: TrainingJobExecutor, job: _Job, stream: str) -> None:
        self.executor = executor
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
            except Exception:  # the next flush tries again with what came since
                _log.exception("Could not ship the output of training job %s", self.job.name)

    def close(self) -> None:
        self.done.set()
        if self.executor.closed:  # the endpoint is going away: what is unsent is dropped
            return
        self.thread.join()
        self.flush()

    def flush(self) -> None:
        job = self.job
        with job.lock:
            lines, job.log_lines = job.log_lines, []
            points, job.metric_points = job.metric_points, []
            final = [{"MetricName": name, "Value": value, "Timestamp": at}
                     for name, (value, at) in job.last_metrics.items()]
            changed = bool(points)
            if changed:
                job.record["FinalMetricDataList"] = final
        if changed:
            self.executor._save(job)
        if self.executor.logs is None:
            with job.lock:
                job.kept_lines.extend(lines)
            return
        events = [{"timestamp": at, "message": line[:_EVENT_LIMIT]} for at, line in lines if line]
        for start in range(0, len(events), _LOG_BATCH):
            self.executor.logs.put_log_events(
                logGroupName=LOG_GROUP, logStreamName=self.stream,
                logEvents=events[start:start + _LOG_BATCH])
        host = self.stream.rsplit("-", 1)[0]
        data = [{"MetricName": name, "Value": value, "Timestamp": at,
                 "Dimensions": [{"Name": "Host", "Value": host}]} for name, value, at in points]
        for start in range(0, len(data), 500):
            self.executor.cloudwatch.put_metric_data(Namespace=METRIC_NAMESPACE,
                                                     MetricData=data[start:start + 500])


class _JobFailed(Exception):
    """A step of a job failed; the message is its ``FailureReason``."""


class _NotATrainingJob(Exception):
    """The request names another kind of resource: moto answers it."""


# ------------------------------------------------------------------ the executor


class TrainingJobExecutor:
    """Runs the sandbox's training jobs and answers the training-job API.

    ``endpoint_url`` is the sandbox's own AWS endpoint (S3 and CloudWatch Logs
    are reached through it), ``home`` the sandbox home where job records are
    kept. Without an endpoint (``%sm_train --local``), ``s3`` is the caller's
    own S3 client and the output stays in memory (:meth:`log_events`) instead
    of going to CloudWatch. At most ``max_concurrent`` jobs run at once; the others wait in
    ``Starting``. ``stop_grace`` is the time between SIGTERM and SIGKILL.

    >>> executor = TrainingJobExecutor("http://127.0.0.1:4599", Path("/tmp/sandbox"))
    >>> executor.handle("DescribeTrainingJob", {"TrainingJobName": "fraud-1"})["TrainingJobStatus"]
    'Completed'
    """

    def __init__(
        self,
        endpoint_url: str | None,
        home: Path,
        *,
        s3=None,
        region: str = "us-east-1",
        account: str = "123456789012",
        max_concurrent: int = 2,
        stop_grace: float = 10.0,
    ) -> None:
        import boto3
        from botocore.config import Config

        self.endpoint_url = endpoint_url
        self.home = Path(home)
        self.region = region
        self.account = account
        self.stop_grace = stop_grace
        self.records_dir = self.home / "training-jobs"
        self.work_dir = self.home / "training-work"
        self.records_dir.mkdir(parents=True, exist_ok=True)
        self.model = _service_model()
        if endpoint_url is None:
            self.s3, self.logs, self.cloudwatch = s3, None, None
        else:
            session = boto3.session.Session(aws_access_key_id="sandbox",
                                            aws_secret_access_key="sandbox",
                                            region_name=region)
            config = Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=5)
            self.s3 = session.client("s3", endpoint_url=endpoint_url, config=config)
            self.logs = session.client("logs", endpoint_url=endpoint_url, config=config)
            self.cloudwatch = session.client("cloudwatch", endpoint_url=endpoint_url,
                                             config=config)
        self._docker = None
        self._lock = threading.Lock()
        self._jobs: dict[str, _Job] = {}
        self._pool = ThreadPoolExecutor(max_workers=max_concurrent,
                                        thread_name_prefix="training-job")
        self._closed = False
        self._recover()

    # -------------------------------------------------------------- records

    def _recover(self) -> None:
        """Load the records of earlier runs; jobs that were running then have failed."""
        for path in sorted(self.records_dir.glob("*.json")):
            try:
                job = _Job(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue
            self._jobs[job.name] = job
            if job.status not in TERMINAL:
                self._finish(job, "Failed", "Failed", "Training job failed",
                             failure="InternalServerError: The sandbox's AWS endpoint stopped "
                                     "while the job was running.")
        self._remove_leftover_containers()
        shutil.rmtree(self.work_dir, ignore_errors=True)

    def _remove_leftover_containers(self) -> None:
        import docker.errors

        try:
            leftovers = self.docker.containers.list(
                all=True, filters={"label": f"{HOME_LABEL}={self.home}"})
        except Exception:  # no engine answers: nothing of ours can be left on it
            return
        for container in leftovers:
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True)

    @property
    def docker(self):
        if self._docker is None:
            import docker

            self._docker = docker.from_env(timeout=300)
        return self._docker

    def _save(self, job: _Job) -> None:
        with job.lock:
            text = json.dumps(job.record, indent=1)
        path = self.records_dir / f"{job.name}.json"
        partial = path.with_name(f".{path.name}.{threading.get_ident()}.partial")
        partial.write_text(text)
        partial.replace(path)

    def _transition(self, job: _Job, status: str, message: str,
                    now: float | None = None) -> None:
        now = time.time() if now is None else now
        with job.lock:
            transitions = job.record["SecondaryStatusTransitions"]
            if transitions and "EndTime" not in transitions[-1]:
                transitions[-1]["EndTime"] = now
            transitions.append({"Status": status, "StartTime": now, "StatusMessage": message})
            job.record["SecondaryStatus"] = status
            job.record["LastModifiedTime"] = now
        self._save(job)

    def _set_message(self, job: _Job, message: str) -> None:
        with job.lock:
            job.record["SecondaryStatusTransitions"][-1]["StatusMessage"] = message
            job.record["LastModifiedTime"] = time.time()
        self._save(job)

    def _finish(self, job: _Job, status: str, secondary: str, message: str,
                failure: str | None = None) -> None:
        now = time.time()
        with job.lock:
            record = job.record
            self._transition(job, secondary, message, now)
            record["SecondaryStatusTransitions"][-1]["EndTime"] = now
            record["TrainingJobStatus"] = status
            if failure:
                record["FailureReason"] = failure[:1024]
            started = record.get("TrainingStartTime")
            if started is not None:
                record["TrainingEndTime"] = now
                seconds = max(1, round(now - started))
                record["TrainingTimeInSeconds"] = seconds
                record["BillableTimeInSeconds"] = seconds
        self._save(job)

    # -------------------------------------------------------------- the API

    def handle(self, operation: str, request: dict) -> dict:
        """Answer one API call; raises :class:`ApiError` as the API would."""
        validate_request(operation, request, self.model)
        return {
            "CreateTrainingJob": self.create_training_job,
            "DescribeTrainingJob": self.describe_training_job,
            "StopTrainingJob": self.stop_training_job,
            "ListTrainingJobs": self.list_training_jobs,
            "AddTags": self.add_tags,
            "ListTags": self.list_tags,
            "DeleteTags": self.delete_tags,
        }[operation](request)

    def create_training_job(self, request: dict) -> dict:
        """Record the job and queue it; answers with its ARN."""
        spec = request.get("AlgorithmSpecification") or {}
        if not spec.get("TrainingImage"):
            raise ApiError("ValidationException",
                           "The sandbox runs training images: set "
                           "AlgorithmSpecification.TrainingImage (algorithm resources and "
                           "serverless jobs are not available in the sandbox).")
        resources = {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 30,
                     **(request.get("ResourceConfig") or {})}
        if resources["InstanceCount"] != 1 or resources.get("InstanceGroups"):
            raise ApiError("ValidationException",
                           "The sandbox runs a training job on one instance: set "
                           "ResourceConfig.InstanceCount to 1.")
        channels = request.get("InputDataConfig") or []
        self._check_channels(channels, spec)
        for what, uri in (("OutputDataConfig.S3OutputPath",
                           request["OutputDataConfig"]["S3OutputPath"]),
                          ("CheckpointConfig.S3Uri",
                           (request.get("CheckpointConfig") or {}).get("S3Uri", "s3://"))):
            if not uri.startswith("s3://"):
                raise ApiError("ValidationException",
                               f"The sandbox reads and writes s3:// URIs: {what} is {uri!r}.")
        for definition in spec.get("MetricDefinitions") or []:
            try:
                re.compile(definition["Regex"])
            except re.error as exc:
                raise ApiError("ValidationException",
                               f"The regular expression of metric {definition['Name']!r} is "
                               f"not valid: {exc}.") from None
        name = request["TrainingJobName"]
        arn = f"arn:aws:sagemaker:{self.region}:{self.account}:training-job/{name.lower()}"
        now = time.time()
        record = {
            "TrainingJobName": name,
            "TrainingJobArn": arn,
            "TrainingJobStatus": "InProgress",
            "SecondaryStatus": "Starting",
            "HyperParameters": request.get("HyperParameters") or {},
            "AlgorithmSpecification": {"TrainingInputMode": "File", **spec},
            "RoleArn": request["RoleArn"],
            "InputDataConfig": channels,
            "OutputDataConfig": request["OutputDataConfig"],
            "ResourceConfig": resources,
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
        job = _Job(record)
        with self._lock:
            if self._closed:
                raise ApiError("ServiceUnavailable", "The sandbox is shutting down.", 503)
            if name in self._jobs:
                raise ApiError("ResourceInUse",
                               "Training job names must be unique within an AWS account and "
                               f"region, and a training job with this name already exists ({arn})")
            self._jobs[name] = job
            self._save(job)
            self._pool.submit(self._execute, job)
        return {"TrainingJobArn": arn}

    @staticmethod
    def _check_channels(channels: list[dict], spec: dict) -> None:
        names = [channel["ChannelName"] for channel in channels]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ApiError("ValidationException",
                           f"Channel names must be unique: {', '.join(duplicates)}.")
        for channel in channels:
            mode = channel.get("InputMode") or spec.get("TrainingInputMode") or "File"
            source = (channel.get("DataSource") or {}).get("S3DataSource")
            if mode == "Pipe":
                raise ApiError("ValidationException",
                               f"Channel {channel['ChannelName']!r}: the sandbox supports the "
                               "File and FastFile input modes, not Pipe.")
            if not source or source["S3DataType"] not in ("S3Prefix", "ManifestFile"):
                raise ApiError("ValidationException",
                               f"Channel {channel['ChannelName']!r}: the sandbox reads channels "
                               "from an S3DataSource of type S3Prefix or ManifestFile.")

    def _job(self, name: str) -> _Job:
        with self._lock:
            job = self._jobs.get(name)
        if job is None:
            raise ApiError("ValidationException", "Requested resource not found.")
        return job

    def describe_training_job(self, request: dict) -> dict:
        """The job's record, as ``DescribeTrainingJob`` answers it."""
        job = self._job(request["TrainingJobName"])
        with job.lock:
            record = copy.deepcopy(job.record)
        record.pop("Tags", None)
        return record

    def stop_training_job(self, request: dict) -> dict:
        """Move a running job to ``Stopping`` and signal its program."""
        job = self._job(request["TrainingJobName"])
        with job.lock:
            if job.status != "InProgress":
                raise ApiError("ValidationException",
                               f"The training job {job.name} is in status {job.status} and "
                               "cannot be stopped; only an InProgress job can.")
            job.stop_reason = "request"
            job.record["TrainingJobStatus"] = "Stopping"
            self._transition(job, "Stopping", "Stopping the training job")
            if not job.active:  # still waiting for a worker: nothing runs yet
                self._finish(job, "Stopped", "Stopped", "Training job stopped")
            run = job.run
        if run is not None:
            run.stop()
        return {}

    def list_training_jobs(self, request: dict) -> dict:
        """Job summaries, filtered, sorted and paged as ``ListTrainingJobs`` does."""
        with self._lock:
            jobs = list(self._jobs.values())
        rows = []
        for job in jobs:
            with job.lock:
                record = job.record
                row = {key: record[key] for key in (
                    "TrainingJobName", "TrainingJobArn", "CreationTime", "TrainingEndTime",
                    "LastModifiedTime", "TrainingJobStatus", "SecondaryStatus") if key in record}
            rows.append(row)
        rows = [row for row in rows if _matches(row, request)]
        key = {"Name": "TrainingJobName", "Status": "TrainingJobStatus"}.get(
            request.get("SortBy", "CreationTime"), "CreationTime")
        rows.sort(key=lambda row: (row[key], row["CreationTime"]),
                  reverse=request.get("SortOrder", "Descending") == "Descending")
        offset = _decode_token(request.get("NextToken"))
        limit = request.get("MaxResults", 10)
        answer: dict[str, Any] = {"TrainingJobSummaries": rows[offset:offset + limit]}
        if offset + limit < len(rows):
            answer["NextToken"] = _encode_token(offset + limit)
        return answer

    def _tagged(self, arn: str) -> _Job:
        if ":training-job/" not in arn:
            raise _NotATrainingJob(arn)
        with self._lock:
            job = next((j for j in self._jobs.values() if j.record["TrainingJobArn"] == arn), None)
        if job is None:
            raise ApiError("ValidationException", "Requested resource not found.")
        return job

    def add_tags(self, request: dict) -> dict:
        """Add or replace tags of a training job (``AddTags``)."""
        job = self._tagged(request["ResourceArn"])
        with job.lock:
            tags = {t["Key"]: t["Value"] for t in job.record.get("Tags", [])}
            tags.update({t["Key"]: t.get("Value", "") for t in request["Tags"]})
            if len(tags) > 50:
                raise ApiError("ValidationException", "A resource can have at most 50 tags.")
            job.record["Tags"] = [{"Key": k, "Value": v} for k, v in tags.items()]
        self._save(job)
        return {"Tags": request["Tags"]}

    def list_tags(self, request: dict) -> dict:
        """The tags of a training job (``ListTags``), paged."""
        job = self._tagged(request["ResourceArn"])
        with job.lock:
            tags = list(job.record.get("Tags", []))
        offset = _decode_token(request.get("NextToken"))
        limit = request.get("MaxResults", 50)
        answer: dict[str, Any] = {"Tags": tags[offset:offset + limit]}
        if offset + limit < len(tags):
            answer["NextToken"] = _encode_token(offset + limit)
        return answer

    def delete_tags(self, request: dict) -> dict:
        """Remove tags of a training job by key (``DeleteTags``)."""
        job = self._tagged(request["ResourceArn"])
        with job.lock:
            job.record["Tags"] = [t for t in job.record.get("Tags", [])
                                  if t["Key"] not in request["TagKeys"]]
        self._save(job)
        return {}

    # -------------------------------------------------------------- running a job

    def _stop_requested(self, job: _Job) -> bool:
        with job.lock:
            return job.stop_reason is not None

    def _execute(self, job: _Job) -> None:
        work = None
        with job.lock:
            if job.status in TERMINAL:  # stopped while it waited for a worker
                return
            job.active = True
        try:
            if self._stop_requested(job):  # the sandbox is shutting down
                return self._end_stopped(job, timed_out=False)
            self._set_message(job, "Preparing the instances for training")
            self.work_dir.mkdir(parents=True, exist_ok=True)
            work = Path(tempfile.mkdtemp(prefix=f"{job.name}-", dir=self.work_dir))
            with job.lock:
                job.record["TrainingStartTime"] = time.time()
            self._transition(job, "Downloading", "Downloading input data")
            layout = self._download(job, work / "opt_ml")
            checkpoints = self._download_checkpoints(job, work / "checkpoints")
            if self._stop_requested(job):
                return self._end_stopped(job, timed_out=False)
            self._transition(job, "Training", "Downloading the training image")
            result = self._train(job, layout, checkpoints)
            self._upload_checkpoints(job, checkpoints)
            if result.stopped or result.timed_out:
                return self._end_stopped(job, timed_out=result.timed_out, layout=layout)
            if not result.succeeded:
                raise _JobFailed(self._failure_reason(job, result.exit_code, result.failure))
            self._transition(job, "Uploading", "Uploading generated training model")
            self._upload(job, layout)
            self._finish(job, "Completed", "Completed", "Training job completed")
        except _JobFailed as exc:
            self._finish(job, "Failed", "Failed", "Training job failed", failure=str(exc))
        except Exception as exc:  # the job must end in a final state whatever broke
            self._finish(job, "Failed", "Failed", "Training job failed",
                         failure=f"InternalServerError: {type(exc).__name__}: {exc}")
        finally:
            with job.lock:
                job.run = None
            if work is not None:
                shutil.rmtree(work, ignore_errors=True)
            job.active = False

    def _end_stopped(self, job: _Job, timed_out: bool, layout: OptMl | None = None) -> None:
        with job.lock:
            shutdown = job.stop_reason == "shutdown"
        if shutdown:
            raise _JobFailed("InternalServerError: The sandbox stopped while the job was running.")
        if layout is not None:
            self._upload(job, layout)
        if timed_out:
            self._finish(job, "Stopped", "MaxRuntimeExceeded",
                         "Training job stopped: it exceeded MaxRuntimeInSeconds")
        else:
            self._finish(job, "Stopped", "Stopped", "Training job stopped")

    def _download(self, job: _Job, root: Path) -> OptMl:
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

    def _download_checkpoints(self, job: _Job, directory: Path) -> Path:
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

    def _upload_checkpoints(self, job: _Job, directory: Path) -> None:
        uri = (job.record.get("CheckpointConfig") or {}).get("S3Uri")
        if not uri or self.closed:
            return
        try:
            upload_directory(self.s3, directory, uri)
        except Exception as exc:
            raise _JobFailed(f"ClientError: Could not upload the checkpoints to {uri}: "
                             f"{exc}") from exc

    def _train(self, job: _Job, layout: OptMl, checkpoints: Path):
        import docker.errors

        record = job.record
        image = record["AlgorithmSpecification"]["TrainingImage"]
        try:
            ensure_image(self.docker, image)
        except docker.errors.DockerException as exc:
            raise _JobFailed(f"ClientError: Could not pull the training image {image}: "
                             f"{_docker_message(exc)}") from exc
        stream = f"{job.name}/algo-1-{int(time.time())}"
        if self.logs is not None:
            with contextlib.suppress(self.logs.exceptions.ResourceAlreadyExistsException):
                self.logs.create_log_group(logGroupName=LOG_GROUP)
            self.logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=stream)
        patterns = [(d["Name"], re.compile(d["Regex"]))
                    for d in record["AlgorithmSpecification"].get("MetricDefinitions") or []]
        run = ContainerRun(
            self.docker, image, layout, environment=record.get("Environment"),
            on_line=lambda line: self._on_line(job, patterns, line), job_name=job.name,
            labels={HOME_LABEL: str(self.home)}, stop_grace=self.stop_grace,
            mounts={(record.get("CheckpointConfig") or {}).get(
                "LocalPath", DEFAULT_CHECKPOINT_PATH): checkpoints},
        )
        with job.lock:
            job.run = run
            stop_now = job.stop_reason is not None
        if stop_now:
            run.stop()
        self._set_message(job, "Training image download completed. Training in progress.")
        elapsed = time.time() - record["TrainingStartTime"]
        timeout = max(0.0, record["StoppingCondition"]["MaxRuntimeInSeconds"] - elapsed)
        shipper = _LogShipper(self, job, stream)
        try:
            try:
                return run.run(timeout=timeout)
            except docker.errors.DockerException as exc:
                raise _JobFailed(f"ClientError: Could not run the training image {image}: "
                                 f"{_docker_message(exc)}") from exc
        finally:
            shipper.close()

    def _on_line(self, job: _Job, patterns: list[tuple[str, re.Pattern]], line: str) -> None:
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
    def _failure_reason(job: _Job, exit_code: int, failure: str | None) -> str:
        if failure:
            return f"AlgorithmError: {failure}"
        with job.lock:
            last = job.last_line
        detail = f" Last log line: {last}" if last else ""
        return (f"AlgorithmError: The training program exited with code {exit_code}."
                f"{detail}")

    def _upload(self, job: _Job, layout: OptMl) -> None:
        output = job.record["OutputDataConfig"]["S3OutputPath"].rstrip("/")
        bucket, _, prefix = output[len("s3://"):].partition("/")
        key = f"{prefix}/{job.name}/output" if prefix else f"{job.name}/output"
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
            job.record["ModelArtifacts"] = {"S3ModelArtifacts": f"s3://{bucket}/{key}/model.tar.gz"}
        self._save(job)

    def log_events(self, name: str, start: int = 0) -> list[tuple[int, str]]:
        """Output lines of job ``name`` from position ``start`` (no CloudWatch Logs: local runs).

        Each line is ``(epoch milliseconds, text)``.
        """
        job = self._job(name)
        with job.lock:
            return job.kept_lines[start:]

    # -------------------------------------------------------------- lifecycle

    @property
    def closed(self) -> bool:
        return self._closed

    def shutdown(self, timeout: float = 8.0) -> None:
        """End every job now (the sandbox is stopping): they end ``Failed``, nothing is left.

        Waits up to ``timeout`` seconds for running jobs to end.
        """
        with self._lock:
            self._closed = True
            jobs = [job for job in self._jobs.values() if job.status not in TERMINAL]
        for job in jobs:
            with job.lock:
                job.stop_reason = "shutdown"
                run = job.run
            if run is not None:
                run.kill()
        self._pool.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + timeout
        while any(job.active for job in jobs) and time.monotonic() < deadline:
            time.sleep(0.05)
        for job in jobs:
            if job.status not in TERMINAL and not job.active:
                self._finish(job, "Failed", "Failed", "Training job failed",
                             failure="InternalServerError: The sandbox stopped before the job "
                                     "could end.")
        self._remove_leftover_containers()
        if not any(job.active for job in jobs):
            shutil.rmtree(self.work_dir, ignore_errors=True)

    # -------------------------------------------------------------- WSGI

    def wsgi_handlers(self, fallback: Callable) -> dict[str, Callable]:
        """``{"SageMaker.<Operation>": wsgi_app}`` for the gateway.

        Tag requests for resources other than training jobs go to ``fallback``
        (moto's application) unchanged.
        """
        return {f"SageMaker.{operation}": self._wsgi(operation, fallback)
                for operation in OPERATIONS}

    def _wsgi(self, operation: str, fallback: Callable) -> Callable:
        def app(environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(length) if length else b""
            try:
                try:
                    request = json.loads(body or b"{}")
                except ValueError:
                    raise ApiError("SerializationException",
                                   "The request body is not valid JSON.") from None
                status, answer = "200 OK", self.handle(operation, request)
            except _NotATrainingJob:
                environ["wsgi.input"] = io.BytesIO(body)
                return fallback(environ, start_response)
            except ApiError as exc:
                status = f"{exc.status} {'Bad Request' if exc.status == 400 else 'Error'}"
                answer = {"__type": exc.code, "message": exc.message}
            payload = json.dumps(answer).encode()
            headers = [("Content-Type", _JSON), ("Content-Length", str(len(payload))),
                       ("x-amzn-RequestId", str(uuid.uuid4()))]
            if "__type" in answer:
                headers.append(("x-amzn-ErrorType", answer["__type"]))
            start_response(status, headers)
            return [payload]

        return app


def _matches(row: dict, request: dict) -> bool:
    if request.get("NameContains") and request["NameContains"].lower() not in \
            row["TrainingJobName"].lower():
        return False
    if request.get("StatusEquals") and row["TrainingJobStatus"] != request["StatusEquals"]:
        return False
    bounds = (("CreationTimeAfter", "CreationTime", 1), ("CreationTimeBefore", "CreationTime", -1),
              ("LastModifiedTimeAfter", "LastModifiedTime", 1),
              ("LastModifiedTimeBefore", "LastModifiedTime", -1))
    for option, field, sign in bounds:
        if option in request:
            limit = _epoch(request[option])
            if (row[field] - limit) * sign <= 0:
                return False
    return True


def _epoch(value: Any) -> float:
    if isinstance(value, int | float):
        return float(value)
    from datetime import datetime

    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise ApiError("ValidationException", f"{value!r} is not a timestamp.") from None


def _encode_token(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def _decode_token(token: str | None) -> int:
    if not token:
        return 0
    try:
        return int(json.loads(base64.urlsafe_b64decode(token.encode()))["offset"])
    except (ValueError, KeyError, TypeError):
        raise ApiError("ValidationException", "The NextToken is not valid.") from None


def _docker_message(exc: Exception) -> str:
    explanation = getattr(exc, "explanation", None)
    return str(explanation or exc).strip()
