"""Finding the execution role of training jobs when no setting names one.

The last rungs of the ``role`` setting's ladder (see :mod:`sm_magics.config`),
asked only when a role is needed and nothing higher gives one, with calls that
AmazonSageMakerFullAccess allows (``sagemaker:Describe*`` of the notebook's own
resources, ``iam:ListRoles``, and ``sts:GetCallerIdentity``, which needs no
permission). No SageMaker SDK is needed, whichever major version is installed.

1. The metadata file of a SageMaker notebook instance or Studio app
   (``/opt/ml/metadata/resource-metadata.json``): its ``ExecutionRoleArn`` when
   it has one; else, on a notebook instance (``ResourceArn`` of type
   ``notebook-instance``), ``DescribeNotebookInstance``'s ``RoleArn``; in Studio
   (``DomainId``), the user profile's execution role (``DescribeUserProfile``),
   then the domain's default for spaces or users (``DescribeDomain``).
2. The identity running the notebook, when it is an assumed role
   (``arn:aws:sts::ACCOUNT:assumed-role/NAME/SESSION``, as on SageMaker and
   EC2): that role's ARN. The assumed-role ARN carries no path, so the path is
   looked up with ``iam:ListRoles``; when that is denied, roles named
   ``AmazonSageMaker-ExecutionRole-*`` get the ``/service-role/`` path the
   SageMaker console gives them.

Example::

    >>> discover_execution_role(aws)
    ('arn:aws:iam::111122223333:role/service-role/AmazonSageMaker-ExecutionRole-2026', \
'SageMaker notebook instance nb (DescribeNotebookInstance)')
"""

from __future__ import annotations

import json
import re
from pathlib import Path

__all__ = ["discover_execution_role", "role_of_assumed_role"]

METADATA = Path("/opt/ml/metadata/resource-metadata.json")
_ASSUMED = re.compile(r"^arn:(aws[a-z-]*):sts::(\d{12}):assumed-role/([^/]+)/.+$")
_CONSOLE_ROLE_PREFIX = "AmazonSageMaker-ExecutionRole"


def _metadata(path: Path) -> dict:
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _ask(call):
    """``call()``'s answer, or ``None`` when AWS refuses or lacks it (the next rung is tried)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return call()
    except (ClientError, BotoCoreError):
        return None


def _from_metadata(aws, metadata: dict) -> tuple[str, str] | None:
    if metadata.get("ExecutionRoleArn"):
        return metadata["ExecutionRoleArn"], "SageMaker Studio / notebook metadata"
    arn = str(metadata.get("ResourceArn", ""))
    sagemaker = aws.client("sagemaker")
    if ":notebook-instance/" in arn:
        name = metadata.get("ResourceName") or arn.rsplit("/", 1)[-1]
        found = _ask(lambda: sagemaker.describe_notebook_instance(NotebookInstanceName=name))
        if found and found.get("RoleArn"):
            return (found["RoleArn"],
                    f"SageMaker notebook instance {name} (DescribeNotebookInstance)")
        return None
    domain = metadata.get("DomainId")
    if not domain:
        return None
    profile = metadata.get("UserProfileName")
    if profile:
        found = _ask(lambda: sagemaker.describe_user_profile(DomainId=domain,
                                                             UserProfileName=profile))
        role = ((found or {}).get("UserSettings") or {}).get("ExecutionRole")
        if role:
            return role, f"SageMaker Studio user profile {profile} (DescribeUserProfile)"
    found = _ask(lambda: sagemaker.describe_domain(DomainId=domain)) or {}
    for settings in ("DefaultSpaceSettings", "DefaultUserSettings"):
        role = (found.get(settings) or {}).get("ExecutionRole")
        if role:
            return role, f"SageMaker Studio domain {domain} (DescribeDomain {settings})"
    return None


def role_of_assumed_role(aws, caller_arn: str) -> str | None:
    """The IAM role ARN behind an assumed-role session ARN, with the role's path.

    >>> role_of_assumed_role(aws, "arn:aws:sts::111122223333:assumed-role/Train/botocore-session")
    'arn:aws:iam::111122223333:role/Train'
    """
    match = _ASSUMED.match(caller_arn)
    if not match:
        return None
    partition, account, name = match.groups()
    path = None
    iam = aws.client("iam")
    pages = _ask(lambda: [page for page in iam.get_paginator("list_roles").paginate()])
    for page in pages or []:
        for role in page.get("Roles", []):
            if role.get("RoleName") == name:
                return role["Arn"]
    if pages is None and name.startswith(_CONSOLE_ROLE_PREFIX):
        path = "service-role/"  # the path the SageMaker console creates these roles with
    return f"arn:{partition}:iam::{account}:role/{path or ''}{name}"


def discover_execution_role(aws, metadata_path: Path | None = None) -> tuple[str, str] | None:
    """``(role ARN, where it was found)`` for this notebook, or ``None``; see the module.

    ``metadata_path`` is SageMaker's metadata file (default: where SageMaker puts it).
    """
    found = _from_metadata(aws, _metadata(metadata_path or METADATA))
    if found:
        return found
    identity = _ask(lambda: aws.client("sts").get_caller_identity())
    role = role_of_assumed_role(aws, (identity or {}).get("Arn", ""))
    if role:
        return role, "the role this notebook runs as (sts:GetCallerIdentity)"
    return None
