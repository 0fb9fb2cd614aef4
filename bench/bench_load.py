"""How long `%load_ext sm_magics` takes, against importing the SageMaker SDK's trainer.

Each measurement runs in a fresh Python process, with an IPython shell already
created (as in a notebook kernel), and times only the statement itself. Both are
measured in the same run, alternating, so machine noise hits both alike.

    .venv/bin/python bench/bench_load.py [--runs 15]

Goal: ratio (load_ext / ModelTrainer import) <= 0.10.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

LOAD_EXT = """
import time
from IPython.core.interactiveshell import InteractiveShell
ip = InteractiveShell.instance()
start = time.perf_counter()
ip.run_line_magic("load_ext", "sm_magics")
print(time.perf_counter() - start)
"""

SDK_IMPORT = """
import time
from IPython.core.interactiveshell import InteractiveShell
ip = InteractiveShell.instance()
start = time.perf_counter()
from sagemaker.train import ModelTrainer
print(time.perf_counter() - start)
"""


def measure(code: str) -> float:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    measure(SDK_IMPORT)  # warm the file cache for both, once
    measure(LOAD_EXT)
    ours, sdk = [], []
    for _ in range(args.runs):
        ours.append(measure(LOAD_EXT))
        sdk.append(measure(SDK_IMPORT))
    ours_median, sdk_median = statistics.median(ours), statistics.median(sdk)
    print(f"%load_ext sm_magics           median {ours_median * 1000:8.1f} ms  ({args.runs} runs)")
    print(f"from sagemaker.train import   median {sdk_median * 1000:8.1f} ms  ({args.runs} runs)")
    print(f"ratio load_ext / SDK import   {ours_median / sdk_median:.3f}  (goal <= 0.10)")


if __name__ == "__main__":
    main()
