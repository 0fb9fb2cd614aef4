"""boto3 sessions and clients built from the resolved settings.

One code path for AWS and the sandbox: the sandbox only changes the endpoint
URL (``AWS_ENDPOINT_URL``, which boto3 honours by itself) and the registry host.

Example::

    >>> from sm_magics.config import resolve
    >>> aws = AwsContext(resolve())
    >>> aws.client("s3").list_buckets()["Buckets"]
"""

from __future__ import annotations

import threading
from functools import cached_property
from typing import Any

from .config import Settings
from .errors import usage_error

__all__ = ["AwsContext"]

_SESSIONS: dict[tuple, Any] = {}
_LOCK = threading.Lock()


def _session(profile: str | None, region: str | None):
    import boto3

    key = (profile, region)
    with _LOCK:
        if key not in _SESSIONS:
            _SESSIONS[key] = boto3.session.Session(profile_name=profile, region_name=region)
        return _SESSIONS[key]


class AwsContext:
    """AWS clients for one set of settings, plus the account id and default bucket.

    Raises a ``UsageError`` with the fix when no region or no credentials are
    configured, before any request is sent.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        if not settings.region:
            raise usage_error(
                "No AWS region is configured. Set one with `%sm_config --region us-east-1`, "
                "the AWS_REGION variable or `aws configure`, or run `%sm_sandbox start` to "
                "work offline."
            )
        self.session = _session(settings.profile, settings.region)
        if self.session.get_credentials() is None:
            raise usage_error(
                "No AWS credentials were found. Run `aws configure` (or `aws sso login`), "
                "set AWS_PROFILE or `%sm_config --profile NAME`, or run `%sm_sandbox start` "
                "to try everything offline without an AWS account."
            )

    def client(self, service: str, **kwargs: Any):
        """A boto3 client for ``service`` with the configured region and endpoint."""
        from botocore.config import Config

        if self.settings.endpoint_url and "endpoint_url" not in kwargs:
            kwargs["endpoint_url"] = self.settings.endpoint_url
        kwargs.setdefault(
            "config", Config(retries={"max_attempts": 8, "mode": "adaptive"},
                             user_agent_extra="sm-magics")
        )
        return self.session.client(service, region_name=self.settings.region, **kwargs)

    @cached_property
    def account(self) -> str:
        """The AWS account id of the credentials (one STS call, then cached)."""
        return self.client("sts").get_caller_identity()["Account"]

    @cached_property
    def bucket(self) -> str:
        """The configured bucket, or the SageMaker default ``sagemaker-<region>-<account>``."""
        return self.settings.bucket or self.settings.with_bucket(self.account).bucket

    @cached_property
    def role(self) -> tuple[str, str] | None:
        """``(execution role ARN, where it came from)``: the ``role`` setting, else found.

        When no setting gives a role, it is looked for once per context as
        :mod:`sm_magics.roles` describes (notebook-instance or Studio metadata and
        its Describe calls, then the role this notebook runs as).
        """
        if self.settings.role:
            return self.settings.role, self.settings["role"].source
        from .roles import discover_execution_role

        return discover_execution_role(self)
