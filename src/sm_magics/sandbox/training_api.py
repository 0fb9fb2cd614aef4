"""The sandbox's SageMaker training-job API, on top of the job-run engine.

``CreateTrainingJob``, ``DescribeTrainingJob``, ``StopTrainingJob`` and
``ListTrainingJobs`` (and ``AddTags``, ``ListTags``, ``DeleteTags`` for
training-job ARNs) reach :class:`TrainingJobApi` through the gateway
(:mod:`.gateway`, :mod:`.protocol`). Each request is checked against the
service model (:mod:`.validation`) and answered with the shapes and errors of
the real API; an accepted job is run by :class:`~sm_magics.engine.JobEngine`
in the gateway process, so it outlives the notebook kernel. A job on N
instances runs N containers, the hosts ``algo-1`` … ``algo-N``. Their output
goes to CloudWatch Logs (``/aws/sagemaker/TrainingJobs``, one stream per host
and start, ``<job>/algo-N-<epoch seconds>``) and their metrics to CloudWatch
(namespace ``/aws/sagemaker/TrainingJobs``, dimension ``Host=<job>/algo-N``), as
SageMaker writes them.

:meth:`TrainingJobApi.interrupt_spot` is the sandbox's own: it interrupts a
running managed spot job, as EC2 reclaiming the capacity would, so that a
notebook or a test can show a job resuming from its checkpoints
(``%sm_sandbox interrupt JOB``).

What one machine cannot run is refused at ``CreateTrainingJob`` with a
``ValidationException`` that says so (:func:`~sm_magics.engine.check_runnable`),
and so is an ``S3Prefix`` channel with no object under it, as SageMaker refuses it
("No S3 objects found under S3 URL ...").

Job records are JSON files under ``<sandbox home>/training-jobs``, so
``DescribeTrainingJob`` and ``ListTrainingJobs`` keep answering after the
gateway restarts; a job that was still running then is marked ``Failed``.

Example (inside the gateway process)::

    >>> api = TrainingJobApi.for_endpoint("http://127.0.0.1:4599", Path("~/.sm_magics/sandbox"))
    >>> api.handle("DescribeTrainingJob", {"TrainingJobName": "fraud-1"})["TrainingJobStatus"]
    'Completed'
"""

from __future__ import annotations

import contextlib
import json
import shutil
import threading
from pathlib import Path
from typing import Any

from ..engine import EngineJob, JobEngine, LogSink, NotRunnable, check_runnable, new_record
from ..jobstate import LOG_GROUP, status_is_terminal
from ..s3uri import split_s3_uri
from .account import SERVICE_KEY
from .protocol import ApiError, NotHandled, decode_page_token, encode_page_token
from .validation import service_model, validate_request

__all__ = ["OPERATIONS", "CloudWatchLogSink", "TrainingJobApi"]

_BAD_TOKEN = ApiError("ValidationException", "The NextToken is not valid.")

OPERATIONS = ("CreateTrainingJob", "DescribeTrainingJob", "StopTrainingJob", "ListTrainingJobs",
              "AddTags", "ListTags", "DeleteTags")
METRIC_NAMESPACE = "/aws/sagemaker/TrainingJobs"
_LOG_BATCH = 1000  # events per PutLogEvents, the API's maximum is 10,000
_METRIC_BATCH = 500  # values per PutMetricData, the API's maximum is 1,000
_EVENT_LIMIT = 200_000  # characters; CloudWatch Logs takes events up to 256 KB


class CloudWatchLogSink(LogSink):
    """Ships a job's output to CloudWatch Logs and its metrics to CloudWatch."""

    def __init__(self, logs, cloudwatch) -> None:
        self.logs = logs
        self.cloudwatch = cloudwatch

    def open(self, job: str, stream: str) -> None:
        with contextlib.suppress(self.logs.exceptions.ResourceAlreadyExistsException):
            self.logs.create_log_group(logGroupName=LOG_GROUP)
        self.logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=stream)

    def write(self, job: str, stream: str, events: list[tuple[int, str]]) -> None:
        shaped = [{"timestamp": at, "message": line[:_EVENT_LIMIT]} for at, line in events]
        for start in range(0, len(shaped), _LOG_BATCH):
            self.logs.put_log_events(logGroupName=LOG_GROUP, logStreamName=stream,
                                     logEvents=shaped[start:start + _LOG_BATCH])

    def metrics(self, job: str, host: str, points: list[tuple[str, float, float]]) -> None:
        data = [{"MetricName": name, "Value": value, "Timestamp": at,
                 "Dimensions": [{"Name": "Host", "Value": host}]} for name, value, at in points]
        for start in range(0, len(data), _METRIC_BATCH):
            self.cloudwatch.put_metric_data(Namespace=METRIC_NAMESPACE,
                                            MetricData=data[start:start + _METRIC_BATCH])


class TrainingJobApi:
    """Answers the training-job operations of the SageMaker API; ``engine`` runs the jobs.

    ``home`` is the sandbox home: job records live in ``home/training-jobs``.
    """

    def __init__(self, engine: JobEngine, home: Path, *, region: str = "us-east-1",
                 account: str = "123456789012") -> None:
        self.engine = engine
        self.home = Path(home)
        self.region = region
        self.account = account
        self.records_dir = self.home / "training-jobs"
        self.records_dir.mkdir(parents=True, exist_ok=True)
        self.model = service_model()
        self._create_lock = threading.Lock()
        self._recover()

    @classmethod
    def for_endpoint(cls, endpoint_url: str, home: Path, *, max_concurrent: int = 2,
                     region: str = "us-east-1", account: str = "123456789012",
                     stop_grace: float = 10.0) -> TrainingJobApi:
        """The API of the sandbox at ``endpoint_url``: S3 and CloudWatch are reached there."""
        import boto3
        from botocore.config import Config

        # SageMaker acting with the job's role, not the notebook (see .account)
        session = boto3.session.Session(aws_access_key_id=SERVICE_KEY,
                                        aws_secret_access_key=SERVICE_KEY, region_name=region)
        config = Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=5)

        def client(service: str):
            return session.client(service, endpoint_url=endpoint_url, config=config)

        # The sandbox's jobs stand for SageMaker's own hosts: they run with the host's
        # network, the only one the machines the sandbox runs on allow
        # (shared/notes/offline-sandbox.md), in the Studio profile too.
        engine = JobEngine(client("s3"), Path(home) / "training-work",
                           sink=CloudWatchLogSink(client("logs"), client("cloudwatch")),
                           labels_home=str(home), max_concurrent=max_concurrent,
                           stop_grace=stop_grace, network="host")
        return cls(engine, home, region=region, account=account)

    def shutdown(self) -> None:
        """End every running job (the sandbox is stopping)."""
        self.engine.shutdown(reason="The sandbox stopped")

    # -------------------------------------------------------------- records

    def _recover(self) -> None:
        """Load the records of earlier runs; jobs that were running then have failed."""
        for path in sorted(self.records_dir.glob("*.json")):
            try:
                job = EngineJob(json.loads(path.read_text()), self._save)
            except (OSError, ValueError):
                continue
            self.engine.adopt(job)
            if not status_is_terminal(job.status):
                job.finish("Failed", "Failed", "Training job failed",
                           failure="InternalServerError: The sandbox's AWS endpoint stopped "
                                   "while the job was running.")
        self.engine.remove_leftover_containers()
        shutil.rmtree(self.engine.work_dir, ignore_errors=True)

    def _save(self, job: EngineJob) -> None:
        with job.lock:
            text = json.dumps(job.record, indent=1)
        path = self.records_dir / f"{job.name}.json"
        partial = path.with_name(f".{path.name}.{threading.get_ident()}.partial")
        partial.write_text(text)
        partial.replace(path)

    # -------------------------------------------------------------- the API

    def handle(self, operation: str, request: dict) -> dict:
        """Answer one API call; raises :class:`~.protocol.ApiError` as the API would."""
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
        try:
            check_runnable(request)
        except NotRunnable as exc:
            raise ApiError("ValidationException", str(exc)) from None
        self._check_s3_prefixes(request)
        name = request["TrainingJobName"]
        arn = f"arn:aws:sagemaker:{self.region}:{self.account}:training-job/{name.lower()}"
        with self._create_lock:
            try:
                self.engine.submit(new_record(request, arn), on_change=self._save)
            except RuntimeError:
                raise ApiError("ServiceUnavailable", "The sandbox is shutting down.",
                               503) from None
            except KeyError:
                raise ApiError("ResourceInUse",
                               "Training job names must be unique within an AWS account and "
                               f"region, and a training job with this name already exists ({arn})"
                               ) from None
        return {"TrainingJobArn": arn}

    def _check_s3_prefixes(self, request: dict) -> None:
        """Refuse an ``S3Prefix`` channel with no object under it, in SageMaker's words.

        One object is listed per channel; a bucket that does not exist is refused the
        same way, as SageMaker refuses it.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        for channel in request.get("InputDataConfig") or []:
            source = (channel.get("DataSource") or {}).get("S3DataSource") or {}
            if source.get("S3DataType") != "S3Prefix":
                continue
            uri = source["S3Uri"]
            bucket, prefix = split_s3_uri(uri)
            try:
                listed = self.engine.s3.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
                found = listed.get("KeyCount", 0) > 0
            except ClientError:  # no such bucket, or access denied: SageMaker says the same
                found = False
            except BotoCoreError as exc:
                raise ApiError("InternalFailure", f"The sandbox could not list {uri}: {exc}",
                               500) from None
            if not found:
                raise ApiError(
                    "ValidationException",
                    f'No S3 objects found under S3 URL "{uri}" given in input data source. '
                    f"Please ensure that the bucket exists in the selected region "
                    f"({self.region}), that objects exist under that S3 prefix, and that the "
                    f'role "{request.get("RoleArn")}" has "s3:ListBucket" permissions on '
                    f'bucket "{bucket}".')

    def _job(self, name: str) -> EngineJob:
        job = self.engine.get(name)
        if job is None:
            raise ApiError("ValidationException", "Requested resource not found.")
        return job

    def interrupt_spot(self, name: str) -> dict:
        """Interrupt the running managed spot job ``name`` (the sandbox's own operation).

        Its hosts get SIGTERM, it shows ``Interrupted``, then it starts again and
        finds its checkpoints. Answers ``{"TrainingJobName": name, "SecondaryStatus": ...}``;
        an unknown job, one that is not a spot job, or one that is not training is
        refused with a ``ValidationException``.
        """
        job = self._job(name)
        refused = job.request_interruption()
        if refused:
            raise ApiError("ValidationException", refused)
        return {"TrainingJobName": job.name, "SecondaryStatus": job.record["SecondaryStatus"]}

    def describe_training_job(self, request: dict) -> dict:
        """The job's record, as ``DescribeTrainingJob`` answers it."""
        return self._job(request["TrainingJobName"]).description()

    def stop_training_job(self, request: dict) -> dict:
        """Move a running job to ``Stopping`` and signal its program."""
        job = self._job(request["TrainingJobName"])
        if not job.request_stop():
            raise ApiError("ValidationException",
                           f"The training job {job.name} is in status {job.status} and "
                           "cannot be stopped; only an InProgress job can.")
        return {}

    def list_training_jobs(self, request: dict) -> dict:
        """Job summaries, filtered, sorted and paged as ``ListTrainingJobs`` does."""
        rows = []
        for job in self.engine.jobs():
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
        return _page(rows, request, "TrainingJobSummaries", 10)

    def _tagged(self, arn: str) -> EngineJob:
        if ":training-job/" not in arn:
            raise NotHandled(arn)
        job = next((j for j in self.engine.jobs() if j.record["TrainingJobArn"] == arn), None)
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
        return _page(tags, request, "Tags", 50)

    def delete_tags(self, request: dict) -> dict:
        """Remove tags of a training job by key (``DeleteTags``)."""
        job = self._tagged(request["ResourceArn"])
        with job.lock:
            job.record["Tags"] = [t for t in job.record.get("Tags", [])
                                  if t["Key"] not in request["TagKeys"]]
        self._save(job)
        return {}


def _page(items: list, request: dict, member: str, default_size: int) -> dict[str, Any]:
    """The page of ``items`` that ``NextToken``/``MaxResults`` ask for, as ``{member: [...]}``."""
    offset = decode_page_token(request.get("NextToken"), _BAD_TOKEN)
    limit = request.get("MaxResults", default_size)
    answer: dict[str, Any] = {member: items[offset:offset + limit]}
    if offset + limit < len(items):
        answer["NextToken"] = encode_page_token(offset + limit)
    return answer


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
