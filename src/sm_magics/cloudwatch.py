"""Reading a training job's log from CloudWatch Logs, each event once.

SageMaker writes one stream per instance, ``<job>/algo-N-<epoch seconds>``,
in the log group ``/aws/sagemaker/TrainingJobs``.

Example::

    >>> reader = LogReader(aws.client("logs"), "fraud-20261124-101500-ab12")
    >>> [line.message for line in reader.poll()]
    ['epoch 1', '#metric loss=0.5 step=1']
"""

from __future__ import annotations

from .jobstate import LOG_GROUP, LogLine

__all__ = ["LogReader"]

_FULL_PAGE = 1000


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
