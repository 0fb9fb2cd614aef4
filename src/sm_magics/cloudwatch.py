"""Reading a training job's log from CloudWatch Logs, each event once.

SageMaker writes one stream per instance and container start,
``<job>/algo-N-<epoch seconds>``, in the log group ``/aws/sagemaker/TrainingJobs``:
a job that restarts, or a spot job that resumes, writes new streams.

``GetLogEvents`` may answer a page that is short, or even empty, while more
events follow; a stream read forwards is at its end only when
``nextForwardToken`` comes back equal to the token sent ("Partially full or
empty pages don't necessarily mean that pagination is finished", CloudWatch
Logs API Reference, GetLogEvents).

Example::

    >>> reader = LogReader(aws.client("logs"), "fraud-20261124-101500-ab12")
    >>> [line.message for line in reader.poll(to_end=True)]
    ['epoch 1', '#metric loss=0.5 step=1']
"""

from __future__ import annotations

from .jobstate import LOG_GROUP, LogLine

__all__ = ["LogReader"]

# A live poll reads on after a page this full; after a smaller one the job is
# writing slowly, and whatever else is there comes at the next poll.
_BUSY_PAGE = 100


class LogReader:
    """Reads a job's CloudWatch log streams incrementally (each event once).

    ``streams_expected`` is how many streams the job has written at least
    (instances times container starts): streams are looked for again while
    fewer are known, and at every complete read.

    >>> reader = LogReader(aws.client("logs"), "fraud-20261124-101500-ab12", instance_count=2)
    >>> reader.poll()                 # new lines since the last call, cheaply
    [LogLine(stream='fraud-.../algo-1-1764...', timestamp=1764..., message='epoch 1'), ...]
    """

    def __init__(self, logs_client, job: str, instance_count: int = 1) -> None:
        self.client = logs_client
        self.job = job
        self.streams_expected = instance_count
        self.tokens: dict[str, str | None] = {}
        self.requests = 0

    def _discover_streams(self) -> None:
        from botocore.exceptions import ClientError

        kwargs = {"logGroupName": LOG_GROUP, "logStreamNamePrefix": f"{self.job}/"}
        while True:
            try:
                self.requests += 1
                page = self.client.describe_log_streams(**kwargs)
            except ClientError as exc:
                if exc.response["Error"]["Code"] == "ResourceNotFoundException":
                    return
                raise
            for stream in page["logStreams"]:
                self.tokens.setdefault(stream["logStreamName"], None)
            if not page.get("nextToken"):
                return
            kwargs["nextToken"] = page["nextToken"]

    def poll(self, *, to_end: bool = False) -> list[LogLine]:
        """New log lines since the last call, across all streams, in time order.

        With ``to_end`` (a job that ended, or a read of the whole log) every
        stream is read until its token repeats, past short and empty pages.
        Without it (a running job) a stream is read while its pages come back
        busy; what is left comes at the next call, so polling stays cheap.
        """
        if to_end or len(self.tokens) < self.streams_expected:
            self._discover_streams()
        lines: list[LogLine] = []
        for stream in list(self.tokens):
            lines += self._read(stream, to_end)
        lines.sort(key=lambda line: line.timestamp)
        return lines

    def _read(self, stream: str, to_end: bool) -> list[LogLine]:
        lines: list[LogLine] = []
        token = self.tokens[stream]
        while True:
            kwargs = {"logGroupName": LOG_GROUP, "logStreamName": stream, "startFromHead": True}
            if token:
                kwargs["nextToken"] = token
            self.requests += 1
            page = self.client.get_log_events(**kwargs)
            events = page.get("events", [])
            lines += [LogLine(stream, e["timestamp"] / 1000, e["message"]) for e in events]
            sent, token = token, page.get("nextForwardToken") or token
            if token == sent or (not to_end and len(events) < _BUSY_PAGE):
                break
        self.tokens[stream] = token
        return lines
