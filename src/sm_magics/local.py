"""Training jobs on this machine's Docker engine: ``%sm_train --local``.

The same image, the same SageMaker training contract (``/opt/ml``, ``train``,
channels, ``model.tar.gz``), inputs and outputs in the same S3 places, the same
panel: only the compute is local. Jobs are run by the job-run engine
(:class:`~sm_magics.engine.JobEngine`) inside the notebook's own process, with
the notebook's own S3 client; their output stays in memory. They live as long
as the kernel. No SageMaker API is involved, emulated or real.

Example::

    >>> jobs = LocalJobs(aws)
    >>> jobs.create(request)             # the CreateTrainingJob request built for SageMaker
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

__all__ = ["LocalJobs", "LocalLogReader"]


class LocalLogReader:
    """Reads a local job's output incrementally, like :class:`~sm_magics.cloudwatch.LogReader`.

    Lines carry their stream, ``<job>/algo-N-<epoch seconds>``, as in CloudWatch Logs.
    """

    requests = 0  # no API is asked

    def __init__(self, sink, name: str) -> None:
        self.sink = sink
        self.name = name
        self.position = 0
        self.tokens: dict[str, None] = {}  # the streams seen, as LogReader keeps them

    def poll(self, *, to_end: bool = False) -> list[LogLine]:
        """New lines since the last call; every read is complete (memory holds them all)."""
        events = self.sink.events(self.name, self.position)
        self.position += len(events)
        for stream, _, _ in events:
            self.tokens.setdefault(stream, None)
        return [LogLine(stream, at / 1000, line) for stream, at, line in events]


class LocalJobs:
    """The jobs of ``%sm_train --local`` in this session (two run at once).

    Offers what :class:`~sm_magics.watcher.SageMakerJobs` offers, so the
    watcher, the panel and :class:`~sm_magics.jobs.TrainingRun` treat both alike.
    """

    local = True

    def __init__(self, aws, max_concurrent: int = 2) -> None:
        from .docker_engine import docker_client
        from .engine import JobEngine, MemoryLogSink

        docker_client()  # a UsageError with the fix when no engine answers
        self.aws = aws
        self.home = Path(tempfile.mkdtemp(prefix="sm-magics-local-"))
        self.sink = MemoryLogSink()
        self.engine = JobEngine(aws.client("s3"), self.home / "work", sink=self.sink,
                                max_concurrent=max_concurrent,
                                network=aws.settings.docker_network)
        atexit.register(self.close)

    def create(self, request: dict) -> None:
        """Run the job that ``request`` (a ``CreateTrainingJob`` request) describes."""
        from .engine import NotRunnable, check_runnable, new_record

        name = request["TrainingJobName"]
        try:
            check_runnable(request)
            arn = (f"arn:aws:sagemaker:{self.aws.settings.region}:{self.aws.account}:"
                   f"training-job/{name.lower()}")
            self.engine.submit(new_record(request, arn))
        except (NotRunnable, KeyError, RuntimeError) as exc:
            reason = {KeyError: f"a local job named {name} exists already",
                      RuntimeError: "the local job engine is shutting down"}.get(
                type(exc), str(exc))
            raise RemoteFailure(f"The local job {name} cannot run here", reason=reason) from None

    def _job(self, name: str):
        job = self.engine.get(name)
        if job is None:
            raise RemoteFailure(f"There is no local job named {name} in this session")
        return job

    def describe(self, name: str) -> dict:
        """The job's state in the shape of SageMaker's ``DescribeTrainingJob`` answer."""
        return self._job(name).description()

    def stop(self, name: str) -> None:
        """Stop the job (SIGTERM, then SIGKILL after the grace period); nothing if it ended."""
        self._job(name).request_stop()

    def log_reader(self, name: str, instance_count: int = 1) -> LocalLogReader:
        return LocalLogReader(self.sink, name)

    def close(self) -> None:
        """End every local job (they end Failed) and remove their working files."""
        self.engine.shutdown(reason="The notebook's kernel ended")
        shutil.rmtree(self.home, ignore_errors=True)
