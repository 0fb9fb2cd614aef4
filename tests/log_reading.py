"""Reading a CloudWatch Logs stream whole, as AWS asks readers to.

A page of GetLogEvents may be short or empty while events follow; the read
ends only when the forward token comes back unchanged (CloudWatch Logs API
Reference, GetLogEvents). The sandbox pages that way too (``sandbox.logs_api``).
"""

from __future__ import annotations

LOG_GROUP = "/aws/sagemaker/TrainingJobs"


def stream_messages(logs, stream: str, group: str = LOG_GROUP) -> list[str]:
    """Every message of ``stream``, oldest first."""
    messages: list[str] = []
    token = None
    while True:
        kwargs = {"logGroupName": group, "logStreamName": stream, "startFromHead": True}
        if token:
            kwargs["nextToken"] = token
        page = logs.get_log_events(**kwargs)
        messages += [event["message"] for event in page["events"]]
        if page["nextForwardToken"] == token:
            return messages
        token = page["nextForwardToken"]
