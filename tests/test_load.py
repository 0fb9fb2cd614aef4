"""Load: twenty training jobs started from one kernel, in a sandbox running five at a time.

Every job gets its own panel (the text panel ``%sm_train`` shows, plus a widget
panel displayed through a display function that shows nothing), each panel must
be updated as its job moves and end on ``Completed``, every ``model.tar.gz``
must hold what its own parameters say, and cells must still run while the jobs
are live. The time those cells take is printed (``pytest -s``), not asserted:
a threshold would make the test flaky on a busy machine.
"""

from __future__ import annotations

import json
import time

import boto3
import pytest

from sm_magics.sandbox import temporary_sandbox
from sm_magics.ui.job_panel import WidgetJobPanel

pytestmark = [pytest.mark.docker, pytest.mark.sandbox]

JOBS = 20
AT_ONCE = 5

LOAD_CELL = '''
import json
import time
index = 0  # @param
time.sleep(2)
log_metric("square", index * index)
(model_dir / "model.json").write_text(json.dumps({"index": index, "square": index * index}))
'''


class _Handle:
    """What ``display(..., display_id=True)`` returns; this display shows nothing."""

    def __init__(self) -> None:
        self.updates = 0

    def update(self, _obj) -> None:
        self.updates += 1


def _running_at_once(described: list[dict]) -> int:
    """The largest number of jobs that were past ``Starting`` at the same moment."""
    edges = []
    for d in described:
        begun = next(t["StartTime"] for t in d["SecondaryStatusTransitions"]
                     if t["Status"] == "Downloading").timestamp()
        edges += [(begun, 1), (d["TrainingEndTime"].timestamp(), -1)]
    running = peak = 0
    for _, step in sorted(edges, key=lambda edge: (edge[0], edge[1])):
        running += step
        peak = max(peak, running)
    return peak


def test_twenty_jobs_five_at_a_time_all_complete_with_their_own_artifacts_and_panels(
        ip, tmp_path, capsys):
    with temporary_sandbox(max_jobs=AT_ONCE):
        ip.run_cell_magic("sm_container", "load", LOAD_CELL)
        sagemaker = boto3.client("sagemaker")
        runs, panels, seen = [], {}, {}
        started = time.monotonic()
        for index in range(JOBS):
            run = ip.run_line_magic("sm_train", f"load --hp index={index}")
            handle = _Handle()
            panel = WidgetJobPanel(run.name, display=lambda _w, display_id, h=handle: h,
                                   on_stop=run.stop)
            seen[run.name] = []
            run.watcher.subscribe(panel.update)
            run.watcher.subscribe(lambda snap, name=run.name: seen[name].append(
                (snap.status, snap.secondary)))
            panels[run.name] = (panel, handle)
            runs.append(run)
        start_time = time.monotonic() - started

        cell_times = []
        in_progress_after_cell = []
        while not all(run.watcher.wait(0) for run in runs):
            began = time.perf_counter()
            ip.run_cell("x = sum(range(10**5))")
            cell_times.append(time.perf_counter() - began)
            assert ip.user_ns["x"] == sum(range(10**5))
            in_progress_after_cell.append(len(sagemaker.list_training_jobs(
                NameContains="load-", StatusEquals="InProgress",
                MaxResults=100)["TrainingJobSummaries"]))
            assert time.monotonic() - started < 240, "the jobs did not end in 4 minutes"
            time.sleep(0.5)
        total = time.monotonic() - started

        described = [run.describe() for run in runs]
        for index, run in enumerate(runs):
            assert run.status == "Completed", (run.name, run.snapshot.failure_reason)
            model = json.loads((run.download_model(tmp_path / run.name) / "model.json")
                               .read_text())
            assert model == {"index": index, "square": index * index}
            assert run.metrics.last() == {"square": float(index * index)}
            panel, handle = panels[run.name]
            assert len(seen[run.name]) > 1 and seen[run.name][-1] == ("Completed", "Completed")
            assert "Completed" in panel.header.value and run.model_data in panel.result.value
            assert handle.updates == 1  # the static summary shown once at the end
        peak = _running_at_once(described)
        out = capsys.readouterr().out

    for run in runs:
        assert f"Training job {run.name}: Completed" in out  # the text panel's summary
    assert in_progress_after_cell[0] > 0  # the first cell ran while jobs were live
    assert 1 < peak <= AT_ONCE
    with capsys.disabled():
        print(f"\n{JOBS} jobs, {AT_ONCE} at a time: started in {start_time:.1f} s, all ended "
              f"after {total:.1f} s; at most {peak} ran at once. {len(cell_times)} cells ran "
              f"meanwhile: first {cell_times[0] * 1000:.1f} ms (with {in_progress_after_cell[0]} "
              f"jobs in progress), slowest {max(cell_times) * 1000:.1f} ms, median "
              f"{sorted(cell_times)[len(cell_times) // 2] * 1000:.1f} ms.")
