"""Training runs from a notebook: the object ``%sm_train`` returns, and recent jobs.

:class:`TrainingRun` is one job (started here, or attached to): its status,
logs, metrics and model, ``wait()`` and ``stop()``. Its live state comes from
a :class:`~sm_magics.watcher.JobWatcher`; its HTML view is registered with
IPython's formatters when the extension loads (:mod:`sm_magics.ui.job_summary`),
so nothing here imports the UI. :class:`JobsTable` lists recent jobs. The
same code follows a job on AWS, in the sandbox and with ``--local``.

Example::

    >>> run = TrainingRun.attach(aws, "fraud-20261124-101500-ab12")
    >>> run.wait()            # raises RemoteFailure when the job failed or was stopped
    >>> run.model_data
    's3://sagemaker-us-east-1-123456789012/sm-magics/fraud/output/.../model.tar.gz'
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from .errors import RemoteFailure, usage_error
from .jobstate import (
    JobSnapshot,
    MetricsTable,
    duration,
    host_of_stream,
    seconds,
    status_is_terminal,
)
from .s3uri import split_s3_uri
from .table import Table
from .watcher import JobWatcher, SageMakerJobs

__all__ = ["JobsTable", "TrainingRun", "hyperparameter_values", "recent_jobs"]

_CHUNK = 1024 * 1024  # bytes of a model archive held in memory at once while downloading


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
        return cls(aws, name, params=hyperparameter_values(described),
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
        """All log lines of the job so far (every instance and restart), in time order.

        A job on several instances has each line start with its host, ``[algo-2] ...``.

        Every stream is read to its end, however CloudWatch Logs pages it.

        >>> run.logs()[-1]                                          # doctest: +SKIP
        'epoch 10: loss 0.031'
        """
        instances = self.describe().get("ResourceConfig", {}).get("InstanceCount", 1)
        reader = self.jobs.log_reader(self.name, instances)
        return [f"[{host_of_stream(line.stream)}] {line.message}" if instances > 1
                else line.message for line in reader.poll(to_end=True)]

    def download_model(self, directory: str | Path = "model") -> Path:
        """Download ``model.tar.gz`` and unpack it into ``directory``; returns that folder.

        Members that would land outside ``directory`` (absolute paths, ``..``,
        links pointing out, devices) are refused, so a model archive cannot
        write anywhere else on this machine. The archive is streamed to a
        temporary file and unpacked from there: a model of any size takes
        little memory.

        >>> model = joblib.load(run.download_model() / "model.joblib")   # doctest: +SKIP
        """
        import shutil
        import tarfile
        import tempfile

        uri = self.model_data
        if not uri:
            raise usage_error(f"The job {self.name} has no model artifact (status "
                              f"{self.status}); only a completed job has one.")
        bucket, key = split_s3_uri(uri)
        body = self.aws.client("s3").get_object(Bucket=bucket, Key=key)["Body"]
        target = Path(directory).resolve()
        target.mkdir(parents=True, exist_ok=True)
        with body, tempfile.TemporaryFile(dir=target) as archive:
            shutil.copyfileobj(body, archive, _CHUNK)
            archive.seek(0)
            with tarfile.open(fileobj=archive) as tar:
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


def hyperparameter_values(described: dict) -> dict[str, Any] | None:
    """A job's ``HyperParameters`` read back as values (JSON where they are), or ``None``.

    They hold what fits SageMaker's limits only; the ``params`` channel holds all.

    >>> hyperparameter_values({"HyperParameters": {"lr": "0.1", "kernel": "rbf"}})
    {'lr': 0.1, 'kernel': 'rbf'}
    """
    import json

    hps = described.get("HyperParameters") or {}
    if not hps:
        return None
    values = {}
    for key, value in hps.items():
        try:
            values[key] = json.loads(value)
        except ValueError:
            values[key] = value
    return values


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
        created = seconds(d.get("CreationTime"))
        end = seconds(d.get("TrainingEndTime")) or (
            seconds(d.get("LastModifiedTime")) if status_is_terminal(d["TrainingJobStatus"])
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

    def table(self) -> Table:
        return Table(self.columns, ([r[c] for c in self.columns] for r in self))

    def __repr__(self) -> str:
        return repr(self.table()) if self else "(no training jobs)"

    def _repr_html_(self) -> str:
        return self.table()._repr_html_()
