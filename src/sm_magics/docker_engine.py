"""The local Docker engine: connect, or say exactly how to get one.

Example::

    >>> client = docker_client()
    >>> client.version()["Version"]
    '20.10.24+dfsg1'
"""

from __future__ import annotations

import os
import shutil

from .errors import usage_error

__all__ = ["docker_client", "engine_problem"]

START_HINT = (
    "Start one: on Linux run `sudo dockerd --bridge=none --iptables=false &` (install it with "
    "`sudo apt-get install docker.io` when `dockerd` is missing) or `sudo systemctl start docker`; "
    "on a laptop start Docker Desktop. Set DOCKER_HOST when the engine listens elsewhere."
)


def engine_problem() -> str | None:
    """``None`` when a Docker engine answers, else a sentence saying what is wrong."""
    try:
        _connect().ping()
    except Exception as exc:  # docker raises DockerException, requests errors, OSError
        where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        detail = str(exc).split("\n")[0][:200]
        missing = "" if shutil.which("dockerd") or shutil.which("docker") else (
            " No Docker is installed on this machine."
        )
        return f"No Docker engine answers at {where} ({detail}).{missing}"
    return None


def _connect():
    try:
        import docker
    except ImportError:
        raise usage_error(
            "The docker Python package is missing. Install it with `pip install docker`."
        ) from None
    return docker.from_env(timeout=300)


def docker_client():
    """A docker SDK client for a running engine, or a ``UsageError`` with the fix."""
    problem = engine_problem()
    if problem:
        raise usage_error(f"{problem} {START_HINT}")
    return _connect()
