"""What the benchmarks share: the Docker CLI baseline and timing one call."""

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
