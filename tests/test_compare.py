"""%sm_compare on real sandbox jobs: differing parameters, final metrics, best marked, charts."""

from __future__ import annotations

import contextlib
import re
import time
from types import SimpleNamespace

import boto3
import pytest
from IPython.core.error import UsageError

import conftest
from sm_magics.compare import Comparison, guess_goal, image_tag
from sm_magics.ui.compare_view import ComparisonPanel

pytestmark = [pytest.mark.docker, pytest.mark.sandbox]

SWEEP_CELL = '''
lr = 0.1  # @param
epochs = 3  # @param
words = []  # @param
for step in range(epochs):
    log_metric("loss", lr / (step + 1), step=step)
    log_metric("val_accuracy", 1 - lr / (step + 2), step=step)
log_metric("throughput", 100 * lr)
'''

LIVE_CELL = '''
import time
pause = 0  # @param
for step in range(3):
    log_metric("loss", 1.0 / (step + 1), step=step)
time.sleep(pause)
log_metric("loss", 0.125, step=3)
'''


@pytest.fixture(scope="module")
def sweep(sandbox, tmp_path_factory):
    """Jobs trained once for this module, in a session of their own.

    ``cmp-sweep``: one job with a parameter too big for HyperParameters, then three
    with lr 0.1, 0.2 and 0.4 (newest last). ``cmp-other`` shares the parameter lr
    with it, ``cmp-bare`` has no parameter at all.
    """
    shell = conftest.TestingShell.instance()
    with contextlib.chdir(tmp_path_factory.mktemp("sweep")):
        shell.run_line_magic("load_ext", "sm_magics")
        try:
            shell.run_cell_magic("sm_container", "cmp-sweep", SWEEP_CELL)
            shell.run_cell_magic("sm_params", "big", "words = [f'word{i}' for i in range(60)]\n")
            # started one after the other (so newest last), run while the next cells build
            runs = [shell.run_line_magic("sm_train", "cmp-sweep --params big")]
            runs += [shell.run_line_magic("sm_train", f"cmp-sweep --hp lr={lr}")
                     for lr in (0.1, 0.2, 0.4)]
            shell.run_cell_magic("sm_container", "cmp-other",
                                 'lr = 0.5  # @param\nlog_metric("loss", lr)\n')
            runs.append(shell.run_line_magic("sm_train", "cmp-other"))
            shell.run_cell_magic("sm_container", "cmp-bare", 'log_metric("loss", 0.5)\n')
            runs.append(shell.run_line_magic("sm_train", "cmp-bare"))
            for run in runs:
                run.wait(poll=0.5)
            big, *lrs, other, bare = (run.name for run in runs)
        finally:
            shell.run_line_magic("unload_ext", "sm_magics")
            shell.user_ns.clear()
            shell.init_user_ns()
    return SimpleNamespace(big=big, lrs=lrs, other=other, bare=bare)


def cells_of(comparison: Comparison) -> dict[str, list[str]]:
    """The cells of the table's text by job name (columns are two spaces apart or more)."""
    lines = repr(comparison).splitlines()[2:2 + len(comparison.jobs)]
    return {cells[0]: cells for cells in (re.split(r"\s{2,}", line) for line in lines)}


def notes_of(comparison: Comparison) -> str:
    """The lines under the table."""
    return "\n".join(repr(comparison).splitlines()[2 + len(comparison.jobs):])


def test_a_comparison_shows_differing_params_folded_equal_ones_final_metrics_and_best(ip, sweep):
    first, second, third = sweep.lrs
    comparison = ip.run_line_magic("sm_compare", f"{first} {second} {third}")

    assert comparison.jobs == [first, second, third]
    assert comparison.differing == ["lr"]
    assert comparison.same == {"epochs": 3, "words": []}
    header = repr(comparison).splitlines()[0].split()
    assert header == ["job", "status", "duration", "billable", "image", "lr", "loss",
                      "val_accuracy", "throughput"]
    rows, notes = cells_of(comparison), notes_of(comparison)
    tag = image_tag(comparison.rows[0]["image"])
    assert rows[first][:2] == [first, "Completed"]
    assert re.fullmatch(r"\d+s", rows[first][2]) and re.fullmatch(r"\d+s", rows[first][3])
    assert rows[first][4:] == [tag, "0.1", "0.0333333 (best)", "0.975 (best)", "10"]
    assert rows[second][4:] == [tag, "0.2", "0.0666667", "0.95", "20"]
    assert rows[third][4:] == [tag, "0.4", "0.133333", "0.9", "40"]
    assert "same in all: epochs=3, words=[]" in notes
    assert ("best: the highest val_accuracy (guessed from the name: --minimize NAME says "
            "otherwise); the lowest loss (guessed from the name: --maximize NAME says "
            "otherwise)") in notes
    assert ("no best marked for throughput: --maximize NAME or --minimize NAME says which "
            "value is best") in notes
    assert comparison.best == {"loss": [first], "val_accuracy": [first]}
    assert "still running" not in notes

    row = comparison.rows[2]
    assert {k: row[k] for k in ("job", "status", "lr", "throughput")} == {
        "job": third, "status": "Completed", "lr": 0.4, "throughput": 40.0}
    assert row["loss"] == pytest.approx(0.4 / 3)
    assert row["duration"] > 0 and row["billable"] >= 1
    assert row["image"].endswith(f":{tag}")


def test_maximize_and_minimize_choose_the_best_and_say_so(ip, sweep):
    first, second, third = sweep.lrs
    comparison = ip.run_line_magic(
        "sm_compare", f"{first} {second} {third} --maximize throughput loss")
    assert comparison.best == {"loss": [third], "val_accuracy": [first], "throughput": [third]}
    assert cells_of(comparison)[third][6:] == ["0.133333 (best)", "0.9", "40 (best)"]
    notes = notes_of(comparison)
    assert ("best: the highest loss, throughput (--maximize); the highest val_accuracy "
            "(guessed from the name: --minimize NAME says otherwise)") in notes
    assert "no best marked" not in notes


def test_the_chart_has_a_line_per_job_per_metric_and_a_legend_of_what_differs(ip, sweep):
    comparison = ip.run_line_magic("sm_compare", " ".join(sweep.lrs))
    html = ip.display_formatter.format(comparison)[0]["text/html"]

    assert "<table class='sm-magics-table sm-comparison-table'>" in html
    assert "same in all: epochs=3, words=[]" in html
    charts = re.findall(r"<svg class='sm-chart'.*?</svg>", html)
    assert len(charts) == 2  # loss and val_accuracy; throughput was logged at one step only
    assert ">loss (lowest is best)</text>" in charts[0]
    assert ">val_accuracy (highest is best)</text>" in charts[1]
    lines = re.findall(r"<polyline data-metric='(\w+)' data-job='([\w-]+)'[^>]*points='([^']*)'",
                       html)
    assert sorted((metric, job) for metric, job, _ in lines) == sorted(
        (metric, job) for metric in ("loss", "val_accuracy") for job in sweep.lrs)
    assert all(len(points.split()) == 3 for _, _, points in lines)
    for chart in charts:
        assert re.findall(r">(lr=[0-9.]+)</text>", chart) == ["lr=0.1", "lr=0.2", "lr=0.4"]


def test_name_and_limit_pick_the_newest_jobs_of_a_container(ip, sweep):
    comparison = ip.run_line_magic("sm_compare", "--name cmp-sweep --limit 3")
    assert comparison.jobs == list(reversed(sweep.lrs))
    assert ip.run_line_magic("sm_compare", "--name cmp-sweep").jobs == [
        *reversed(sweep.lrs), sweep.big]


def test_parameters_come_from_the_params_channel_not_the_truncated_hyperparameters(ip, sweep):
    hyperparameters = boto3.client("sagemaker").describe_training_job(
        TrainingJobName=sweep.big)["HyperParameters"]
    assert "words" not in hyperparameters  # 60 words do not fit SageMaker's 256 characters
    comparison = ip.run_line_magic("sm_compare", f"{sweep.big} {sweep.lrs[0]}")
    assert comparison.differing == ["words"]
    assert comparison.params[sweep.big]["words"] == [f"word{i}" for i in range(60)]
    assert comparison.same == {"epochs": 3, "lr": 0.1}
    assert comparison.labels[sweep.lrs[0]] == "words=[]"


def test_local_runs_of_the_session_are_compared_by_name_and_by_name_filter(ip, sweep):
    ip.run_cell_magic("sm_container", "cmp-sweep", SWEEP_CELL)
    local = ip.run_line_magic("sm_train", "cmp-sweep --hp lr=0.8 --local --wait")
    assert local.name not in [s["TrainingJobName"] for s in boto3.client(
        "sagemaker").list_training_jobs(NameContains="cmp-sweep")["TrainingJobSummaries"]]

    by_name = ip.run_line_magic("sm_compare", f"{local.name} {sweep.lrs[0]}")
    assert by_name.params[local.name] == {"epochs": 3, "lr": 0.8, "words": []}
    assert cells_of(by_name)[local.name][5:] == ["0.8", "0.266667", "0.8", "80"]
    by_filter = ip.run_line_magic("sm_compare", "--name cmp-sweep --limit 2")
    assert by_filter.jobs == [local.name, sweep.lrs[-1]]


def test_jobs_of_two_containers_that_share_a_parameter_read_as_one_table(ip, sweep):
    comparison = ip.run_line_magic("sm_compare", f"{sweep.other} {sweep.lrs[0]}")
    rows = cells_of(comparison)
    assert re.fullmatch(r"(sagemaker-)?cmp-other:[0-9a-f]+", rows[sweep.other][4])
    assert re.fullmatch(r"(sagemaker-)?cmp-sweep:[0-9a-f]+", rows[sweep.lrs[0]][4])
    assert comparison.differing == ["epochs", "lr", "words"]
    assert rows[sweep.other][5:] == ["-", "0.5", "-", "0.5", "-", "-"]
    assert rows[sweep.lrs[0]][5:] == ["3", "0.1", "[]", "0.0333333 (best)", "0.975", "10"]


def test_a_running_job_shows_its_latest_values_and_the_panel_follows_it_to_the_end(ip, sandbox):
    ip.run_cell_magic("sm_container", "cmp-live", LIVE_CELL)
    done = ip.run_line_magic("sm_train", "cmp-live --wait")
    running = ip.run_line_magic("sm_train", "cmp-live --hp pause=12")
    deadline = time.monotonic() + 120
    while len(running.metrics) < 3:
        assert time.monotonic() < deadline, "the running job logged nothing"
        time.sleep(0.2)

    comparison = ip.run_line_magic("sm_compare", f"{done.name} {running.name}")
    rows = cells_of(comparison)
    assert rows[running.name][1] == "InProgress (Training)"
    assert rows[running.name][-1] == "0.333333"  # its latest value
    assert rows[done.name][-1] == "0.125 (best)"
    assert "1 still running: the values are the latest logged, as of " in notes_of(comparison)

    shown = []

    class Handle:
        def update(self, widget):
            shown.append(widget._repr_mimebundle_())

    panel = ComparisonPanel(comparison, display=lambda widget, display_id: Handle())
    comparison.subscribe(panel.update)
    assert running.watcher.wait(120)
    assert comparison.done
    assert panel.view.value.count(">Completed<") == 2
    assert shown and "application/vnd.jupyter.widget-view+json" in shown[-1]
    final = shown[-1]["text/plain"]
    assert "still running" not in final
    assert cells_of(comparison)[running.name][-1] == "0.125 (best)"
    assert final == repr(comparison)
    assert "<polyline data-metric='loss'" in shown[-1]["text/html"]


@pytest.mark.parametrize(("line", "message"), [
    ("", "give two or more training jobs to compare"),
    ("{lr0}", "give two or more training jobs to compare"),
    ("{lr0} {lr0}", "give two or more training jobs to compare"),
    ("{lr0} cmp-nope-20260101-000000-abcd",
     "There is no training job named 'cmp-nope-20260101-000000-abcd'"),
    ("{lr0} bad_name", "'bad_name' is not a valid training-job name"),
    ("{lr0} {bare}", "these jobs come from different containers"),
    ("--name cmp-sweep --limit 1", "%sm_compare --limit: give a number from 2 to 20."),
    ("--name cmp-sweep --limit 21", "%sm_compare --limit: give a number from 2 to 20."),
    ("--name cmp-sweep --limit many", "%sm_compare: option --limit: invalid int value"),
    ("{lr0} {lr1} --limit 2", "%sm_compare --limit: it counts the jobs --name picks"),
    ("{lr0} {lr1} --name cmp-sweep", "give job names or --name NAME, not both"),
    ("--name cmp_sweep", "%sm_compare --name: 'cmp_sweep' cannot be part of a training-job"),
    ("--name cmp-nothing-matches", "two or more jobs are needed, and none has a name"),
    ("--name cmp-other", "two or more jobs are needed, and only "),
    ("{lr0} {lr1} --maximize loss --minimize loss", "loss cannot be both maximized and"),
    ("{lr0} {lr1} --maximize f1", "no compared job logged a metric named f1; they logged "
                                  "loss, val_accuracy, throughput"),
])
def test_bad_compare_lines_are_one_paragraph_usage_errors(ip, sweep, line, message):
    line = line.format(lr0=sweep.lrs[0], lr1=sweep.lrs[1], bare=sweep.bare)
    with pytest.raises(UsageError) as err:
        ip.run_line_magic("sm_compare", line)
    assert type(err.value) is UsageError
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_the_comparison_becomes_a_dataframe(ip, sweep):
    pytest.importorskip("pandas")
    frame = ip.run_line_magic("sm_compare", " ".join(sweep.lrs)).to_pandas()
    assert list(frame["lr"]) == [0.1, 0.2, 0.4]
    assert list(frame.columns[:5]) == ["job", "status", "duration", "billable", "image"]
    assert frame["loss"].idxmin() == 0


@pytest.mark.parametrize(("name", "goal"), [
    ("loss", "min"), ("val_loss", "min"), ("validation:rmse", "min"), ("trainError", "min"),
    ("mean_absolute_error", "min"), ("accuracy", "max"), ("validation:auc", "max"),
    ("macro-f1", "max"), ("r2", "max"), ("test_precision", "max"), ("mean", None),
    ("epoch_seconds", None),
])
def test_which_way_is_better_is_guessed_from_the_metric_name(name, goal):
    assert guess_goal(name) == goal
