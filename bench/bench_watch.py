"""Watching a training job: API requests per minute and CPU, against the SageMaker SDK.

Starts a sandbox of its own, builds a small image whose job runs for ``--seconds``
(default 120) printing a log line every second and a metric every five, starts
the job, and follows it at the same time from two fresh processes:

* ours: ``JobWatcher`` feeding the ipywidgets job panel (log tail, phases, chart);
* the SDK: ``sagemaker.core.resources.TrainingJob.get(name).wait(logs=True)``.

Each process counts the HTTP requests its botocore sessions send, and its own
CPU time (all threads). Both watch the same job in the same run.

    .venv/bin/python bench/bench_watch.py [--seconds 120]

Goal: fewer requests than the SDK, and < 2% of one core.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

COUNTING = """
import json, sys, time
import botocore.handlers
counts = {"requests": 0}
def count(**kwargs):
    counts["requests"] += 1
botocore.handlers.BUILTIN_HANDLERS.append(("before-send", count))
name = sys.argv[1]
wall, cpu = time.perf_counter(), time.process_time()
"""

OURS = COUNTING + """
from sm_magics.aws import AwsContext
from sm_magics.config import resolve
from sm_magics.watcher import JobWatcher
from sm_magics.ui.job_panel import WidgetJobPanel
aws = AwsContext(resolve())
watcher = JobWatcher(aws, name)
panel = WidgetJobPanel(name)
watcher.subscribe(panel.update)
watcher.start()
watcher.wait()
status = watcher.snapshot.status
print(json.dumps({"requests": counts["requests"], "wall": time.perf_counter() - wall,
                  "cpu": time.process_time() - cpu, "status": status}))
"""

SDK = COUNTING + """
import logging
logging.disable(logging.CRITICAL)
from sagemaker.core.resources import TrainingJob
job = TrainingJob.get(name)
job.wait(logs=True)
print(json.dumps({"requests": counts["requests"], "wall": time.perf_counter() - wall,
                  "cpu": time.process_time() - cpu, "status": job.training_job_status}))
"""

CELL = """
import sys, time
for second in range({seconds}):
    print(f"second {{second}}: working", flush=True)
    if second % 5 == 0:
        log_metric("loss", 1.0 / (second + 1), step=second)
    time.sleep(1)
(model_dir / "done.txt").write_text("ok")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=120)
    args = parser.parse_args()

    from IPython.core.interactiveshell import InteractiveShell

    from sm_magics.sandbox import temporary_sandbox

    with temporary_sandbox() as box:
        ip = InteractiveShell.instance()
        ip.run_line_magic("load_ext", "sm_magics")
        os.chdir(box.home)
        ip.run_cell_magic("sm_container", "bench-watch", CELL.format(seconds=args.seconds))
        run = ip.run_line_magic("sm_train", "bench-watch")
        run.watcher.close()
        env = dict(os.environ)
        procs = {label: subprocess.Popen([sys.executable, "-c", code, run.name], env=env,
                                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                         text=True)
                 for label, code in (("sm-magics panel", OURS), ("SageMaker SDK wait", SDK))}
        results = {label: json.loads(p.communicate()[0].strip().splitlines()[-1])
                   for label, p in procs.items()}

    print(f"job of {args.seconds} s, watched from start to end by both at once")
    print(f"{'watcher':<20} {'requests':>8} {'per min':>8} {'CPU s':>7} {'CPU %':>6}  status")
    for label, r in results.items():
        minutes = r["wall"] / 60
        print(f"{label:<20} {r['requests']:>8} {r['requests'] / minutes:>8.1f} "
              f"{r['cpu']:>7.2f} {100 * r['cpu'] / r['wall']:>6.2f}  {r['status']}")
    ours, sdk = results["sm-magics panel"], results["SageMaker SDK wait"]
    print(f"ratio requests ours/SDK: {ours['requests'] / sdk['requests']:.2f} (goal < 1); "
          f"our CPU: {100 * ours['cpu'] / ours['wall']:.2f}% of one core (goal < 2%)")


if __name__ == "__main__":
    main()
