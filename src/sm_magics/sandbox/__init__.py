"""The sandbox: the whole sm-magics flow on one machine, with no AWS account.

See :mod:`sm_magics.sandbox.services` for what runs, and
``python -m sm_magics sandbox start|stop|status|env`` for the shell interface.
"""

from .services import (
    SANDBOX_ACCOUNT,
    SANDBOX_REGION,
    Sandbox,
    SandboxStatus,
    sandbox_home,
    temporary_sandbox,
)

__all__ = ["SANDBOX_ACCOUNT", "SANDBOX_REGION", "Sandbox", "SandboxStatus", "sandbox_home",
           "temporary_sandbox"]
