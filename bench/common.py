"""What the benchmarks share: the Docker CLI baseline, timing one call, sandbox clients."""

from __future__ import annotations

import subprocess
import time


def docker(*args: str) -> None:
    """Run the Docker CLI (the baseline the benchmarks compare against)."""
    subprocess.run(["docker", *args], check=True, capture_output=True)


def timed(action, *args):
    """(seconds, result) of ``action(*args)``."""
    start = time.perf_counter()
    result = action(*args)
    return time.perf_counter() - start, result


def sandbox_session(box):
    """A boto3 session with the sandbox ``box``'s credentials, and its endpoint URL."""
    import boto3

    env = box.environment()
    session = boto3.session.Session(
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region_name=env["AWS_REGION"])
    return session, env["AWS_ENDPOINT_URL"]
