"""Training jobs on this machine's Docker engine: ``%sm_train --local``.

The same image, the same SageMaker training contract (``/opt/ml``, ``train``,
channels, ``model.tar.gz``), inputs and outputs in the same S3 places, the same
panel: only the compute is local. Jobs are run by the sandbox's job engine
(:class:`~sm_magics.sandbox.executor.TrainingJobExecutor`) inside the notebook's
own process, with the notebook's own S3 client, and live as long as the kernel.

Example::

    >>> jobs = LocalJobs(aws)
    >>> jobs.create(request)             # a CreateTrainingJob request
    >>> jobs.describe("fraud-20261124-101500-ab12")["TrainingJobStatus"]
    'InProgress'
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

from .errors import RemoteFailure
from .jobstate import LogLine

__all__ = ["LocalJobs"]


class LocalLogReader:
    """Reads a local job's output incrementally, like :class:`~sm_magics.cloudwatch.LogReader`."""

    requests = 0  # no API is asked

    def __init__(self, executor, name: str) -> None:
        self.executor = executor
        self.name = name
        self.position = 0
        self.tokens = {f"{name}/algo-1": None}

    def poll(self) -> list[LogLine]:
        events = self.executor.log_events(self.name, self.position)
        self.position += len(events)
        stream = next(iter(self.tokens))
        return [LogLine(stream, at / 1000, line) for at, line in events]


class LocalJobs:
    """The jobs of ``%sm_train --local`` in this session (two run at once)."""

    local = True

    def __init__(self, aws, max_concurrent: int = 2) -> None:
        from .docker_engine import docker_client
        from .sandbox.executor import TrainingJobExecutor

        docker_client()  # a UsageError with the fix when no engine answers
        self.aws = aws
        self.home = Path(tempfile.mkdtemp(prefix="sm-magics-local-"))
        self.executor = TrainingJobExecutor(
            None, self.home, s3=aws.client("s3"), region=aws.settings.region,
            account=aws.account, max_concurrent=max_concurrent)
        atexit.register(self.close)

    def _call(self, operation: str, request: dict) -> dict:
        from .sandbox.executor import ApiError

        try:
            return self.executor.handle(operation, request)
        except ApiError as exc:
            raise RemoteFailure(f"The local job engine refused {operation}",
                                reason=f"{exc.code}: {exc.message}") from None

    def create(self, request: dict) -> None:
        self._call("CreateTrainingJob", request)

    def describe(self, name: str) -> dict:
        return self._call("DescribeTrainingJob", {"TrainingJobName": name})

    def stop(self, name: str) -> None:
        self._call("StopTrainingJob", {"TrainingJobName": name})

    def log_reader(self, name: str, instance_count: int = 1) -> LocalLogReader:
        return LocalLogReader(self.executor, name)

    def close(self) -> None:
        """End every local job (they end Failed) and remove their working files."""
        self.executor.shutdown()
        shutil.rmtree(self.home, ignore_errors=True)
