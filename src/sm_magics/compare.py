"""Training runs side by side: which parameters changed, and what it did to the metrics.

``%sm_compare`` returns a :class:`Comparison`: one row per job (status,
duration, billable time, image tag, the parameters that differ between the
jobs, the final value of each logged metric with the best one marked), the
parameters equal in all jobs folded into one note, and each metric's values
over its steps, one series per job, for a chart. Parameters are the ``params``
channel document each job was given (the whole JSON in S3, not the
HyperParameters, which keep only what fits SageMaker's limits); metrics are
every ``#metric`` line the job logged, read by the run's
:class:`~sm_magics.watcher.JobWatcher` (from CloudWatch Logs, or from the local
engine for ``--local`` runs). The same code reads jobs on AWS and in the sandbox.

A running job shows its latest values; :meth:`Comparison.subscribe` follows it
until it ends. The HTML view (table, notes, charts) is the UI's
(:mod:`sm_magics.ui.compare_view`), registered with IPython when the extension
loads: nothing here imports the UI.

Example::

    >>> comparison = Comparison.of([run_a, run_b])      # two TrainingRuns
    >>> comparison
    job                          status     duration  billable  image     C    accuracy
    ---------------------------  ---------  --------  --------  --------  ---  -------------
    digits-20261124-101500-ab12  Completed  41s       35s       3f2a9c1b  0.5  0.9533 (best)
    digits-20261124-101502-cd34  Completed  44s       37s       3f2a9c1b  2.0  0.9411
    same in all: max_iter=500
    best: the highest accuracy (guessed from the name: --minimize NAME says otherwise)
    >>> comparison.rows[0]["C"], comparison.best
    (0.5, {'accuracy': ['digits-20261124-101500-ab12']})
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .errors import usage_error
from .jobs import hyperparameter_values, recent_jobs
from .jobstate import JobSnapshot, duration, seconds
from .params import canonical_json, shown
from .table import Table

if TYPE_CHECKING:
    from .jobs import TrainingRun

__all__ = ["Comparison", "MetricGoal", "guess_goal", "image_tag", "newest_jobs"]

_MINIMIZE = frozenset({
    "loss", "error", "err", "rmse", "mse", "mae", "mape", "smape", "rmsle", "logloss", "nll",
    "perplexity", "ppl", "wer", "cer", "cost", "regret", "deviance"})
_MAXIMIZE = frozenset({
    "accuracy", "acc", "auc", "aucpr", "f1", "precision", "recall", "r2", "map", "ndcg", "iou",
    "dice", "bleu", "rouge", "score", "reward", "kappa", "mcc", "sensitivity", "specificity"})
_FIXED = ("job", "status", "duration", "billable", "image")
_LABEL = 60  # characters of a job's legend label


def guess_goal(name: str) -> str | None:
    """``"min"`` for a loss or an error, ``"max"`` for an accuracy or a score, else ``None``.

    The last word of the name that says decides (``val_loss``, ``validation:auc``,
    ``trainAccuracy``).

    >>> guess_goal("val_loss"), guess_goal("validation:auc"), guess_goal("trainAccuracy")
    ('min', 'max', 'max')
    >>> guess_goal("mean") is None
    True
    """
    words = re.split(r"[^a-z0-9]+", re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower())
    for word in reversed(words):
        if word in _MINIMIZE:
            return "min"
        if word in _MAXIMIZE:
            return "max"
    return None


@dataclass(frozen=True)
class MetricGoal:
    """Which value of a metric is best: ``"max"``, ``"min"`` or ``None`` (unknown).

    ``guessed`` when it comes from the metric's name (:func:`guess_goal`), not
    from ``--maximize`` / ``--minimize``.

    >>> MetricGoal("max", guessed=True).word
    'highest'
    """

    goal: str | None
    guessed: bool = False

    @property
    def word(self) -> str:
        return {"max": "highest", "min": "lowest"}.get(self.goal or "", "")


def _repository(uri: str) -> str:
    """The repository of an image reference, without registry host, tag or digest."""
    ref = uri.split("@", 1)[0]
    head, _, rest = ref.partition("/")
    if rest and ("." in head or ":" in head or head == "localhost"):
        ref = rest
    return ref.rsplit(":", 1)[0] if ":" in ref.rsplit("/", 1)[-1] else ref


def image_tag(uri: str) -> str:
    """The tag of an image reference (the start of its digest when it has none).

    >>> image_tag("123456789012.dkr.ecr.us-east-1.amazonaws.com/sagemaker-wine:3f2a9c1b")
    '3f2a9c1b'
    >>> image_tag("127.0.0.1:5000/wine@sha256:0123456789abcdef0123")
    'sha256:0123456789ab'
    """
    if "@" in uri:
        return uri.split("@", 1)[1][:19]
    last = uri.rsplit("/", 1)[-1]
    return last.rsplit(":", 1)[1] if ":" in last else "latest"


def newest_jobs(aws, name_contains: str, limit: int,
                local_runs: Iterable[TrainingRun] = ()) -> list[str]:
    """The ``limit`` newest jobs whose name contains ``name_contains``, newest first.

    Jobs SageMaker knows (one ``ListTrainingJobs`` call) and this session's
    ``--local`` runs, which it does not.

    >>> newest_jobs(aws, "wine", 2, session.local_runs(aws))     # doctest: +SKIP
    ['wine-20261124-101502-cd34', 'wine-20261124-101500-ab12']
    """
    found = [(seconds(s["CreationTime"]) or 0.0, s["TrainingJobName"])
             for s in recent_jobs(aws, limit, name_contains)]
    found += [(run.snapshot.created or 0.0, run.name) for run in local_runs
              if name_contains.lower() in run.name.lower()]
    return [name for _, name in sorted(found, reverse=True)[:limit]]


@dataclass
class _Job:
    """One compared job: its run (whose watcher keeps the state), parameters and image."""

    run: TrainingRun
    params: dict[str, Any]
    image: str

    @property
    def name(self) -> str:
        return self.run.name

    @property
    def snap(self) -> JobSnapshot:
        return self.run.watcher.snapshot

    def final(self) -> dict[str, float]:
        """The last value of each logged metric, in logged order, then FinalMetricDataList's.

        SageMaker's list adds the metrics of ``--metric`` definitions that match
        other lines than ``log_metric``'s.
        """
        final = self.snap.metrics.last()
        for name, value in self.snap.final_metrics.items():
            final.setdefault(name, value)
        return final


def _same(values: Sequence[Any]) -> bool:
    first = canonical_json({"v": values[0]})
    return all(canonical_json({"v": v}) == first for v in values[1:])


def _describe(run: TrainingRun, documents: dict[str, dict[str, Any]]) -> _Job:
    """Describe ``run``'s job and read its parameters (``documents``: those read, by URI)."""
    from botocore.exceptions import ClientError

    from .s3 import read_params

    described = run.describe()
    channel = next((c for c in described.get("InputDataConfig", [])
                    if c["ChannelName"] == "params"), None)
    if channel is None:  # a job started another way: its HyperParameters are all it has
        params = hyperparameter_values(described) or {}
    else:
        uri = channel["DataSource"]["S3DataSource"]["S3Uri"]
        try:
            if uri not in documents:  # content-addressed: one read per distinct document
                documents[uri] = read_params(run.aws, uri)
        except ClientError as exc:
            raise usage_error(
                f"%sm_compare: the parameters of {run.name} cannot be read from {uri} "
                f"({exc.response['Error'].get('Code', exc)}): they were deleted, or this "
                "identity may not read them.") from None
        params = documents[uri]
    image = described.get("AlgorithmSpecification", {}).get("TrainingImage", "")
    return _Job(run, params, image)


def _catch_up(run: TrainingRun) -> None:
    """Bring the run's state and metrics up to date: all its log lines, read once."""
    snap = run.snapshot  # refreshed unless its watcher follows the job
    if snap.done and run.watcher.following:
        run.watcher.wait(10)  # its last round reads the lines written before the end


class Comparison:
    """Training jobs side by side: the parameters that differ, the metrics, the best marked.

    Made by ``%sm_compare`` (or :meth:`of`); reads as a table in a terminal, and
    with the extension loaded, as the table with a chart per metric in a notebook.

    >>> x = %sm_compare --name wine --limit 4          # doctest: +SKIP
    >>> x.differing, x.same, x.best                    # doctest: +SKIP
    (['max_depth'], {'n_estimators': 100}, {'accuracy': ['wine-20261124-101506-ef56']})
    >>> x.to_pandas().set_index("job")["accuracy"]     # doctest: +SKIP
    """

    def __init__(self, jobs: Sequence[_Job], *, maximize: Iterable[str] = (),
                 minimize: Iterable[str] = ()) -> None:
        self._jobs = list(jobs)
        self.maximize = frozenset(maximize)
        self.minimize = frozenset(minimize)

    @classmethod
    def of(cls, runs: Sequence[TrainingRun], *, maximize: Sequence[str] = (),
           minimize: Sequence[str] = ()) -> Comparison:
        """Compare ``runs`` (two or more jobs); a ``UsageError`` when they cannot be compared.

        Runs of jobs that belong to several containers must share a parameter.
        ``maximize`` / ``minimize`` name metrics whose best value is the highest /
        the lowest; other metrics are guessed from their names.

        >>> Comparison.of([run_a, run_b], minimize=["error_rate"])     # doctest: +SKIP
        """
        both = sorted(set(maximize) & set(minimize))
        if both:
            raise usage_error(f"%sm_compare: {', '.join(both)} cannot be both maximized and "
                              "minimized: give each metric to one of --maximize, --minimize.")
        unique = list({run.name: run for run in runs}.values())
        if len(unique) < 2:
            raise usage_error(
                "%sm_compare: give two or more training jobs to compare, e.g. `%sm_compare "
                "JOB JOB`, or `%sm_compare --name NAME` for the newest jobs whose name "
                "contains NAME. `%sm_jobs` lists recent jobs.")
        documents: dict[str, dict[str, Any]] = {}
        jobs = [_describe(run, documents) for run in unique]
        # the logs, 4 jobs at a time, each with its watcher's own clients (a boto3
        # session is not safe to make clients from in several threads)
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(_catch_up, unique))
        comparison = cls(jobs, maximize=maximize, minimize=minimize)
        comparison._check_comparable()
        return comparison

    def _check_comparable(self) -> None:
        repositories = sorted({_repository(job.image) for job in self._jobs})
        common = set.intersection(*(set(job.params) for job in self._jobs))
        if len(repositories) > 1 and not common:
            raise usage_error(
                f"%sm_compare: these jobs come from different containers "
                f"({', '.join(repositories)}) and share no parameter, so nothing says how "
                "they differ. Compare jobs of one container: `%sm_compare --name NAME` picks "
                "the newest jobs whose name contains NAME.")
        logged = self.metric_names
        unknown = [m for m in sorted(self.maximize | self.minimize) if m not in logged]
        if unknown and self.done:
            raise usage_error(
                f"%sm_compare: no compared job logged a metric named {', '.join(unknown)}; "
                f"they logged {', '.join(logged) or 'no metrics'}.")

    # -- what is compared

    @property
    def jobs(self) -> list[str]:
        """The names of the compared jobs, in the order given."""
        return [job.name for job in self._jobs]

    @property
    def params(self) -> dict[str, dict[str, Any]]:
        """Each job's parameters, by job name (the ``params`` channel document)."""
        return {job.name: job.params for job in self._jobs}

    @property
    def same(self) -> dict[str, Any]:
        """The parameters every job has, with the same value in all."""
        names = sorted(set.intersection(*(set(job.params) for job in self._jobs)))
        return {n: self._jobs[0].params[n] for n in names
                if _same([job.params[n] for job in self._jobs])}

    @property
    def differing(self) -> list[str]:
        """The names of the parameters that differ (or that some jobs do not have)."""
        every = set().union(*(job.params for job in self._jobs))
        return sorted(every - set(self.same))

    @property
    def metric_names(self) -> list[str]:
        """Every metric any job logged, in the order they were first seen."""
        return list(dict.fromkeys(name for job in self._jobs for name in job.final()))

    @property
    def goals(self) -> dict[str, MetricGoal]:
        """Which value of each metric is best, from the options or guessed from its name."""
        goals = {}
        for name in self.metric_names:
            if name in self.maximize:
                goals[name] = MetricGoal("max")
            elif name in self.minimize:
                goals[name] = MetricGoal("min")
            else:
                goals[name] = MetricGoal(guess_goal(name), guessed=True)
        return goals

    @property
    def final(self) -> dict[str, dict[str, float]]:
        """The latest value of each metric, by job name."""
        return {job.name: job.final() for job in self._jobs}

    @property
    def best(self) -> dict[str, list[str]]:
        """The job(s) with the best value of each metric whose direction is known.

        Only metrics that two jobs or more logged; ties are all best.
        """
        final, best = self.final, {}
        for name, goal in self.goals.items():
            values = {job: v[name] for job, v in final.items()
                      if name in v and not math.isnan(v[name])}
            if goal.goal is None or len(values) < 2:
                continue
            top = (max if goal.goal == "max" else min)(values.values())
            best[name] = [job for job, value in values.items() if value == top]
        return best

    @property
    def done(self) -> bool:
        """True when every compared job has ended."""
        return all(job.snap.done for job in self._jobs)

    @property
    def labels(self) -> dict[str, str]:
        """How a chart's legend names each job: by the parameters that differ.

        A job whose differing parameters say nothing apart is named by its job name.
        """
        differing = self.differing
        labels = {}
        for job in self._jobs:
            text = ", ".join(f"{n}={shown(job.params[n])}" for n in differing if n in job.params)
            labels[job.name] = text if len(text) <= _LABEL else text[:_LABEL - 1] + "…"
        texts = list(labels.values())
        return {name: label if label and texts.count(label) == 1 else
                (f"{label} ({name})" if label else name) for name, label in labels.items()}

    def series(self, metric: str) -> list[tuple[str, str, list[tuple[int, float]]]]:
        """``(job, label, [(step, value), ...])`` for each job, for a chart of ``metric``."""
        labels = self.labels
        return [(job.name, labels[job.name], job.snap.metrics.series(metric))
                for job in self._jobs]

    @property
    def charted_metrics(self) -> list[str]:
        """The metrics some job logged at more than one step: those get a chart."""
        return [name for name in self.metric_names
                if any(len(job.snap.metrics.series(name)) > 1 for job in self._jobs)]

    # -- following running jobs

    def refresh(self) -> Comparison:
        """Read what the running jobs did since (those no watcher follows already)."""
        for job in self._jobs:
            if not job.snap.done and not job.run.watcher.following:
                job.run.watcher.refresh()
        return self

    def subscribe(self, listener: Callable[[Comparison], None]) -> None:
        """Call ``listener(self)`` whenever a running job moves on, from background threads.

        Each running job's watcher follows it (started here when it was not);
        ``listener`` is called once more after the last job ended, its last lines read.

        >>> comparison.subscribe(lambda c: print(c.done))     # doctest: +SKIP
        """
        for job in self._jobs:
            watcher = job.run.watcher
            if watcher.snapshot.done:
                continue
            watcher.subscribe(lambda _snap: listener(self))
            if not watcher.following:
                watcher.start()

    # -- display

    def _param_columns(self) -> list[tuple[str, str]]:
        """(parameter, column) of the differing parameters; a name already taken gets a prefix."""
        taken = set(_FIXED) | set(self.metric_names)
        return [(n, f"param:{n}" if n in taken else n) for n in self.differing]

    @property
    def rows(self) -> list[dict[str, Any]]:
        """One plain dict per job: the table's content as values.

        ``duration`` and ``billable`` are seconds, ``image`` the full URI, a
        parameter a job does not have and a metric it did not log are ``None``.
        """
        columns, metrics = self._param_columns(), self.metric_names
        rows = []
        for job in self._jobs:
            snap, final = job.snap, job.final()
            row = {"job": job.name, "status": snap.status,
                   "duration": snap.elapsed if snap.created is not None else None,
                   "billable": snap.billable_seconds, "image": job.image}
            row.update({column: job.params.get(name) for name, column in columns})
            row.update({name: final.get(name) for name in metrics})
            rows.append(row)
        return rows

    def to_pandas(self):
        """:attr:`rows` as a pandas DataFrame (pandas must be installed)."""
        import pandas as pd

        return pd.DataFrame(self.rows)

    def table(self) -> Table:
        """The comparison as a :class:`~sm_magics.table.Table`: one row per job."""
        columns, metrics, best = self._param_columns(), self.metric_names, self.best
        one_container = len({_repository(job.image) for job in self._jobs}) == 1
        lines = []
        for job in self._jobs:
            snap, final = job.snap, job.final()
            tag = image_tag(job.image)
            cells = [job.name,
                     snap.status if snap.done else f"{snap.status} ({snap.secondary})",
                     duration(snap.elapsed if snap.created is not None else None),
                     duration(snap.billable_seconds),
                     tag if one_container else f"{_repository(job.image)}:{tag}"]
            cells += [shown(job.params[n]) if n in job.params else "-" for n, _ in columns]
            cells += ["-" if m not in final else f"{final[m]:.6g}"
                      + (" (best)" if job.name in best.get(m, ()) else "") for m in metrics]
            lines.append(cells)
        return Table((*_FIXED, *(c for _, c in columns), *metrics), lines,
                     code=("job", "image"), css_class="sm-comparison-table")

    @property
    def notes(self) -> list[str]:
        """The lines under the table: equal parameters, how best is chosen, running jobs."""
        notes = []
        same = self.same
        if same:
            notes.append("same in all: " + ", ".join(f"{k}={shown(v)}" for k, v in same.items()))
        elif not self.differing:
            notes.append("no parameters")
        by_goal: dict[MetricGoal, list[str]] = {}
        for name, goal in self.goals.items():
            by_goal.setdefault(goal, []).append(name)
        chosen = []
        for goal in (MetricGoal("max"), MetricGoal("min"), MetricGoal("max", True),
                     MetricGoal("min", True)):
            names = by_goal.get(goal)
            if not names:
                continue
            option, other = (("--maximize", "--minimize") if goal.goal == "max"
                             else ("--minimize", "--maximize"))
            why = (f"guessed from the name{'s' * (len(names) > 1)}: {other} NAME says "
                   "otherwise" if goal.guessed else option)
            chosen.append(f"the {goal.word} {', '.join(names)} ({why})")
        if chosen:
            notes.append("best: " + "; ".join(chosen))
        unknown = by_goal.get(MetricGoal(None, True))
        if unknown:
            notes.append(f"no best marked for {', '.join(unknown)}: --maximize NAME or "
                         "--minimize NAME says which value is best")
        running = [job.name for job in self._jobs if not job.snap.done]
        if running:
            notes.append(f"{len(running)} still running: the values are the latest logged, "
                         f"as of {datetime.now():%H:%M:%S}")
        return notes

    def __repr__(self) -> str:
        return "\n".join([repr(self.table()), *self.notes])
