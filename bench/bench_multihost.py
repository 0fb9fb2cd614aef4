"""Jobs on several instances in the sandbox, against the same job on one.

Starts its own sandbox under a temporary home, pushes the trivial training image
of ``bench_executor`` (``train`` prints a line and writes a one-byte model), and
times ``CreateTrainingJob`` until ``Completed`` for the same job on 1, 2 and 4
instances, interleaved round by round so that the machine's noise falls on all
alike. Prints the medians and their ratios to the one-instance job::

    python bench/bench_multihost.py --runs 5
"""

from __future__ import annotations

import argparse
import statistics

from bench_executor import executor_job, trivial_job_setup

COUNTS = (1, 2, 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    from sm_magics.sandbox import temporary_sandbox

    with temporary_sandbox() as box:
        sagemaker, client, uri, role = trivial_job_setup(box)
        executor_job(sagemaker, uri, role)  # warm-up: pull, page cache
        seconds: dict[int, list[float]] = {count: [] for count in COUNTS}
        billed: dict[int, list[int]] = {count: [] for count in COUNTS}
        for _ in range(args.runs):
            for count in COUNTS:
                elapsed, described = executor_job(sagemaker, uri, role, count)
                seconds[count].append(elapsed)
                billed[count].append(described["BillableTimeInSeconds"])
        client.images.remove(uri)

    one = statistics.median(seconds[1])
    print(f"runs: {args.runs} per instance count (medians, create -> Completed, polled)")
    for count in COUNTS:
        median = statistics.median(seconds[count])
        print(f"{count} instance{'s' if count > 1 else ' '}: {median * 1000:7.0f} ms   "
              f"ratio to 1 instance: {median / one:5.2f}   "
              f"billable seconds: {statistics.median(billed[count]):.0f}")


if __name__ == "__main__":
    main()
