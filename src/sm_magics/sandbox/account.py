"""The sandbox's AWS account: where it is, its execution role, and who calls it.

Two identities reach the sandbox. The notebook calls with the access key
:data:`NOTEBOOK_KEY` (what ``Sandbox.environment()`` hands out), standing for
the execution role a notebook runs as in SageMaker Studio; the sandbox's own
clients (the job engine reading and writing S3 and CloudWatch, the seeding of
the account) call with :data:`SERVICE_KEY`, standing for SageMaker acting with
the job's execution role. Only the notebook's requests are authorized against
a policy (:mod:`.authorization`).

    >>> notebook_principal()
    'arn:aws:sts::123456789012:assumed-role/SageMakerExecutionRole/sandbox'
"""

from __future__ import annotations

__all__ = ["EXECUTION_ROLE", "NOTEBOOK_KEY", "SANDBOX_ACCOUNT", "SANDBOX_REGION", "SERVICE_KEY",
           "notebook_principal"]

SANDBOX_REGION = "us-east-1"
SANDBOX_ACCOUNT = "123456789012"
EXECUTION_ROLE = "SageMakerExecutionRole"
NOTEBOOK_KEY = "sandbox"
SERVICE_KEY = "sandbox-service"


def notebook_principal() -> str:
    """The ARN AWS names the notebook's identity by in an AccessDenied message."""
    return f"arn:aws:sts::{SANDBOX_ACCOUNT}:assumed-role/{EXECUTION_ROLE}/{NOTEBOOK_KEY}"
