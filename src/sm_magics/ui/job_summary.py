"""HTML and text renderings of a training job's state (no widgets needed).

Used by the live job panel for its parts, and on their own where widgets
cannot show: in a terminal, in nbconvert output, in a notebook saved after
the job ended.

Example::

    >>> print(summary_text(snapshot))
    Training job fraud-20261124-101500-ab12: Completed
      Starting 4s > Downloading 1s > Training 31s > Uploading 1s > Completed
    ...
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from html import escape

from ..jobstate import JobSnapshot, MetricsTable, duration, status_is_terminal
from ..runtime import is_metric_line
from ..table import Table

__all__ = ["Line", "chart_svg", "header_html", "lines_svg", "log_lines", "phases_html",
           "phases_text", "result_html", "run_html", "summary_html", "summary_text"]

_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
            "#7f7f7f", "#bcbd22", "#17becf")
_STATUS_COLOURS = {"Completed": "#2e7d32", "Failed": "#c62828", "Stopped": "#ef6c00",
                   "Stopping": "#ef6c00", "InProgress": "#1565c0"}


def log_lines(tail: list[str], count: int, *, metric_lines: bool = False) -> list[str]:
    """The last ``count`` lines of ``tail``, leaving out the ``#metric`` lines charts show.

    A line may start with its host (``[algo-1-abcd] #metric ...``): the metric
    line format is searched for, not matched at the start.

    >>> log_lines(["epoch 1", "[algo-1] #metric loss=0.5 step=1", "epoch 2"], 5)
    ['epoch 1', 'epoch 2']
    >>> log_lines(["epoch 1", "#metric loss=0.5", "epoch 2"], 2, metric_lines=True)
    ['#metric loss=0.5', 'epoch 2']
    """
    shown = tail if metric_lines else [line for line in tail if not is_metric_line(line)]
    return shown[-count:]


def phases_text(snap: JobSnapshot) -> str:
    """The phase timeline as text.

    >>> phases_text(JobSnapshot("fraud-1", secondary="Starting"))
    'Starting'
    """
    return " > ".join(
        f"{name} {duration(seconds)}" + (" (now)" if current else "")
        for name, seconds, current in snap.phases()
    ) or snap.secondary


def phases_html(snap: JobSnapshot) -> str:
    """The phase timeline: one box per phase with the time spent in it (the end state has none)."""
    boxes = []
    for name, seconds, current in snap.phases():
        colour = _STATUS_COLOURS.get(name, "#546e7a")
        final = status_is_terminal(name)
        weight = "bold" if current or final else "normal"
        spent = "" if final else f" <small>{duration(seconds)}</small>"
        border = f"2px solid {colour}" if current else f"1px solid {colour}"
        boxes.append(
            f"<span class='sm-phase' data-phase='{escape(name)}' style='display:inline-block;"
            f"margin:2px;padding:2px 8px;border:{border};border-radius:4px;"
            f"font-weight:{weight};color:{colour}'>{escape(name)}{spent}</span>"
        )
    return "<div class='sm-phases'>" + "&#x2192;".join(boxes) + "</div>"


@dataclass(frozen=True)
class Line:
    """One line of a chart: its legend text, its ``(x, y)`` points, its polyline's ``data-*``.

    >>> Line("loss 0.5", [(0, 1.0), (1, 0.5)], {"metric": "loss"}).data
    {'metric': 'loss'}
    """

    label: str
    points: Sequence[tuple[float, float]]
    data: Mapping[str, str] = field(default_factory=dict)


def _bounds(points: Iterable[tuple[float, float]]) -> tuple[float, float, float, float]:
    """``(lowest x, highest x, lowest y, highest y)`` of ``points``."""
    xs, ys = zip(*points, strict=True)
    return min(xs), max(xs), min(ys), max(ys)


def lines_svg(lines: Sequence[Line], *, shared_scale: bool = False, title: str | None = None,
              width: int = 420, height: int = 140) -> str:
    """A small line chart as inline SVG (no plotting library), one polyline per line.

    Each line has its own scale (several metrics of one job) unless
    ``shared_scale`` (one metric of several jobs). When all lines share a scale,
    the axes show the y range and the first and last x. Without a title the
    legend is the first line of text; with one, the title is, and the legend
    follows below the chart, a line each. A line of one point is drawn as a dot.

    >>> svg = lines_svg([Line("C=0.5", [(0, 0.9), (1, 0.95)], {"job": "a"}),
    ...                  Line("C=2", [(0, 0.8), (1, 0.85)], {"job": "b"})],
    ...                 shared_scale=True, title="accuracy")
    >>> svg.count("<polyline"), "data-job='b'" in svg, ">C=2</text>" in svg
    (2, True, True)
    """
    pad = 28
    every = [p for line in lines for p in line.points]
    one_scale = bool(every) and (shared_scale or len(lines) == 1)
    drawn, legend = [], []
    for index, line in enumerate(lines):
        colour = _COLOURS[index % len(_COLOURS)]
        dash = " stroke-dasharray='4 2'" if index // len(_COLOURS) % 2 else ""
        if line.points:
            first, last, lo, hi = _bounds(every if one_scale else line.points)
            span_x, span_y = (last - first) or 1, (hi - lo) or 1
            xy = [(pad + (x - first) / span_x * (width - 2 * pad),
                   height - pad - (y - lo) / span_y * (height - 2 * pad)) for x, y in line.points]
            data = "".join(f" data-{key}='{escape(value)}'" for key, value in line.data.items())
            points = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
            drawn.append(f"<polyline{data} fill='none' stroke='{colour}'{dash} "
                         f"stroke-width='1.5' points='{points}'/>")
            if len(xy) == 1:
                drawn.append(f"<circle cx='{xy[0][0]:.1f}' cy='{xy[0][1]:.1f}' r='2.5' "
                             f"fill='{colour}'/>")
        if title is None:
            legend.append(f"<tspan fill='{colour}'>{escape(line.label)}</tspan> ")
        else:
            y = height + 14 * index + 4
            legend.append(f"<line x1='{pad}' y1='{y - 4}' x2='{pad + 14}' y2='{y - 4}' "
                          f"stroke='{colour}'{dash} stroke-width='2'/><text x='{pad + 18}' "
                          f"y='{y}' font-size='11'>{escape(line.label)}</text>")
    axis = (f"<line x1='{pad}' y1='{height - pad}' x2='{width - pad}' y2='{height - pad}' "
            "stroke='#999'/>")
    if one_scale:
        first, last, lo, hi = _bounds(every)
        small = "font-size='9' fill='#777'"
        axis += "".join(f"<text x='{pad - 3}' y='{y}' {small} text-anchor='end'>{v:.3g}</text>"
                        for y, v in ((pad + 3, hi), (height - pad, lo)))
        axis += "".join(f"<text x='{x}' y='{height - pad + 11}' {small} "
                        f"text-anchor='{anchor}'>{v:g}</text>"
                        for x, v, anchor in ((pad, first, "start"), (width - pad, last, "end")))
    if title is None:
        top = f"<text x='{pad}' y='14' font-size='11'>{''.join(legend)}</text>"
    else:
        top = (f"<text x='{pad}' y='14' font-size='11' font-weight='bold'>{escape(title)}"
               f"</text>{''.join(legend)}")
        height += 14 * len(lines) + 4
    return (f"<svg class='sm-chart' width='{width}' height='{height}' "
            f"xmlns='http://www.w3.org/2000/svg'>{axis}{''.join(drawn)}{top}</svg>")


def chart_svg(metrics: MetricsTable, width: int = 420, height: int = 140) -> str:
    """A small line chart of every logged metric of one job, each on its own scale, as SVG.

    >>> from sm_magics.jobstate import MetricPoint
    >>> svg = chart_svg(MetricsTable([MetricPoint("loss", 0.9, 0, 0.0),
    ...                               MetricPoint("loss", 0.5, 1, 0.0)]))
    >>> "data-metric='loss'" in svg, "loss 0.5</tspan>" in svg
    (True, True)
    """
    names = metrics.names()
    if not names:
        return "<div class='sm-chart sm-chart-empty'><small>no metrics logged yet</small></div>"
    lines = []
    for name in names:
        series = metrics.series(name)
        lines.append(Line(f"{name} {series[-1][1]:.4g}", series, {"metric": name}))
    return lines_svg(lines, width=width, height=height)


def links_html(snap: JobSnapshot) -> str:
    """Links to the job in the SageMaker console and its CloudWatch logs (none for local jobs).

    >>> links_html(JobSnapshot("fraud-1", local=True))
    ''
    """
    links = snap.console_links()
    if not links:
        return ""
    return (f" <a href='{escape(links['console'])}' target='_blank'>console</a> · "
            f"<a href='{escape(links['logs'])}' target='_blank'>logs</a>")


def header_html(snap: JobSnapshot) -> str:
    """The job's name, links, status and elapsed time on one line.

    >>> "sm-status" in header_html(JobSnapshot("fraud-1", status="Completed"))
    True
    """
    colour = _STATUS_COLOURS.get(snap.status, "#546e7a")
    billable = "" if snap.billable_seconds is None else (
        f" · billable {duration(snap.billable_seconds)}")
    phase = "" if snap.secondary == snap.status else f" · {escape(snap.secondary)}"
    return (f"<div class='sm-job-header'><b>{escape(snap.name)}</b>{links_html(snap)} "
            f"<span class='sm-status' style='color:{colour};font-weight:bold'>"
            f"{escape(snap.status)}</span>{phase} · "
            f"elapsed {duration(snap.elapsed)}{billable}</div>")


def result_html(snap: JobSnapshot) -> str:
    """The end of the story: model URI and final metrics, or the failure and last lines.

    >>> snap = JobSnapshot("fraud-1", status="Completed", model_data="s3://b/model.tar.gz",
    ...                    final_metrics={"loss": 0.25})
    >>> "<th style='text-align:left'>loss</th>" in result_html(snap)
    True
    """
    if snap.status == "Completed":
        metrics = snap.final_metrics or snap.metrics.last()
        table = Table.record({k: f"{v:.6g}" for k, v in metrics.items()}, code=(),
                             css_class="sm-final-metrics")._repr_html_() if metrics else ""
        return (f"<div class='sm-result'>Model: <code class='sm-model-uri'>"
                f"{escape(snap.model_data or '-')}</code>{table}</div>")
    if snap.done and snap.status != "Completed":
        tail = escape("\n".join(log_lines(snap.log_tail, 10)))
        return (f"<div class='sm-result'><b>{escape(snap.status)}</b>: "
                f"<span class='sm-failure'>{escape(snap.failure_reason or 'no reason given')}"
                f"</span><pre style='max-height:12em;overflow:auto'>{tail}</pre></div>")
    return ""


def summary_html(snap: JobSnapshot) -> str:
    """The whole job in one static HTML block: header, phases, chart and result.

    >>> summary_html(JobSnapshot("fraud-1", status="Completed")).startswith("<div class='sm-job'>")
    True
    """
    return (f"<div class='sm-job'>{header_html(snap)}{phases_html(snap)}"
            f"{chart_svg(snap.metrics)}{result_html(snap)}</div>")


def summary_text(snap: JobSnapshot) -> str:
    """The whole job as plain text; on failure its last log lines, without metric lines.

    >>> print(summary_text(JobSnapshot("fraud-1", status="Failed", failure_reason="exit 1",
    ...                                log_tail=["epoch 1", "#metric loss=0.5", "boom"])))
    Training job fraud-1: Failed (Starting)
      Starting
      elapsed 0s
      reason: exit 1
        epoch 1
        boom
    """
    lines = [f"Training job {snap.name}: {snap.status} ({snap.secondary})",
             f"  {phases_text(snap)}",
             f"  elapsed {duration(snap.elapsed)}"
             + ("" if snap.billable_seconds is None
                else f", billable {duration(snap.billable_seconds)}")]
    links = snap.console_links()
    if links:
        lines.append(f"  console: {links['console']}")
    if snap.status == "Completed":
        lines.append(f"  model: {snap.model_data}")
        metrics = snap.final_metrics or snap.metrics.last()
        if metrics:
            lines.append("  metrics: " + ", ".join(f"{k}={v:.6g}" for k, v in metrics.items()))
    elif snap.done and snap.status != "Completed":
        lines.append(f"  reason: {snap.failure_reason or 'no reason given'}")
        lines += [f"    {line}" for line in log_lines(snap.log_tail, 10)]
    return "\n".join(lines)


def run_html(run) -> str:
    """The HTML view of a :class:`~sm_magics.jobs.TrainingRun`: its job's summary.

    Registered with IPython's HTML formatter when the extension loads, so a
    cell ending in ``run`` shows the job and the run object needs no UI import.
    """
    return summary_html(run.watcher.snapshot)
