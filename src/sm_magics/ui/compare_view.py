"""The HTML view of a :class:`~sm_magics.compare.Comparison`, and its live panel.

:func:`comparison_html` is registered with IPython's HTML formatter when the
extension loads: a cell ending in a comparison shows its table, its notes and
a chart per metric (one line per job, in the job panel's chart style, the
legend naming each job by the parameters that differ). While compared jobs
run, :class:`ComparisonPanel` shows the same HTML in a widget that the jobs'
watchers update from their threads; once all ended, the display also carries
the final HTML and text, for a saved notebook.

Example::

    >>> panel = ComparisonPanel(comparison, display=display)
    >>> comparison.subscribe(panel.update)
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from html import escape
from typing import TYPE_CHECKING

from .job_summary import Line, lines_svg
from .summary_box import summary_box

if TYPE_CHECKING:
    from ..compare import Comparison

__all__ = ["ComparisonPanel", "comparison_charts", "comparison_html"]


def comparison_charts(comparison: Comparison) -> str:
    """One SVG chart per metric logged at more than one step: a line per job, shared scale.

    The chart's title says which value is best; each polyline carries
    ``data-metric`` and ``data-job``.
    """
    charts = []
    goals = comparison.goals
    for metric in comparison.charted_metrics:
        lines = [Line(label, points, {"metric": metric, "job": job})
                 for job, label, points in comparison.series(metric)]
        word = goals[metric].word
        title = f"{metric} ({word} is best)" if word else metric
        charts.append(f"<div style='display:inline-block;margin:4px 12px 4px 0'>"
                      f"{lines_svg(lines, shared_scale=True, title=title)}</div>")
    return f"<div class='sm-compare-charts'>{''.join(charts)}</div>" if charts else ""


def comparison_html(comparison: Comparison) -> str:
    """The whole comparison as HTML: the table, its notes, then the charts.

    >>> "<svg class='sm-chart'" in comparison_html(comparison)     # doctest: +SKIP
    True
    """
    notes = "".join(f"<div>{escape(note)}</div>" for note in comparison.notes)
    return (f"<div class='sm-comparison'>{comparison.table()._repr_html_()}"
            f"<div class='sm-compare-notes' style='margin:4px 0'><small>{notes}</small></div>"
            f"{comparison_charts(comparison)}</div>")


class ComparisonPanel:
    """A widget showing a comparison while its jobs run, updated from the watchers' threads.

    ``display`` shows the widget and returns a handle with ``update`` (IPython's
    ``display(..., display_id=True)``). Once every job ended, the display is
    updated with the final HTML and text, so a saved notebook shows them
    without the widget manager; a later call (the last lines of a job that
    just ended) updates it again only when something changed.

    >>> panel = ComparisonPanel(comparison, display=display)
    >>> comparison.subscribe(panel.update)
    """

    def __init__(self, comparison: Comparison, display: Callable) -> None:
        import ipywidgets as w

        self.view = w.HTML(comparison_html(comparison))
        self.widget = summary_box([self.view], css_class="sm-compare-panel")
        self._handle = display(self.widget, display_id=True)
        self._lock = threading.Lock()

    def update(self, comparison: Comparison) -> None:
        """Show the comparison as it is now (called by the jobs' watchers)."""
        with self._lock:
            html = comparison_html(comparison)
            self.view.value = html
            if comparison.done and html != self.widget.summary_html:
                self.widget.summary_html = html
                self.widget.summary_text = repr(comparison)
                self._handle.update(self.widget)
