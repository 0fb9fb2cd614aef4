"""The live panel of a training job, and its plain-text twin.

Both subscribe to a :class:`~sm_magics.watcher.JobWatcher`, which calls them from
its background thread with a fresh :class:`~sm_magics.jobstate.JobSnapshot`
whenever something changed. The panel never calls AWS: the Stop button calls
the ``on_stop`` function it was given.

Example::

    >>> panel = job_panel(run.name, widgets=True, display=display, on_stop=run.stop)
    >>> watcher.subscribe(panel.update)
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from html import escape

from ..jobstate import JobSnapshot
from .job_summary import (
    chart_svg,
    header_html,
    log_lines,
    phases_html,
    result_html,
    summary_html,
    summary_text,
)
from .summary_box import summary_box

__all__ = ["TextJobPanel", "WidgetJobPanel", "job_panel"]

_TAIL_LINES = 25


class TextJobPanel:
    """The job's progress as lines of text: phase changes, every log line, then a summary.

    >>> panel = TextJobPanel()
    >>> panel.update(JobSnapshot("fraud-1", log_tail=["epoch 1"], log_count=1))
    [fraud-1] InProgress / Starting
      | epoch 1
    """

    def __init__(self, write: Callable[[str], None] | None = None, logs: bool = True) -> None:
        self.write = write or (lambda line: print(line, file=sys.stdout, flush=True))
        self.logs = logs
        self._phase: str | None = None
        self._lines_shown = 0
        self._finished = False
        self._lock = threading.Lock()

    def update(self, snap: JobSnapshot) -> None:
        with self._lock:
            if self._finished:
                return
            phase = f"{snap.status} / {snap.secondary}"
            if phase != self._phase:
                self._phase = phase
                self.write(f"[{snap.name}] {phase}")
            if self.logs and snap.log_count > self._lines_shown:
                new = snap.log_tail[-min(snap.log_count - self._lines_shown, len(snap.log_tail)):]
                for line in new:
                    self.write(f"  | {line}")
                self._lines_shown = snap.log_count
            if snap.done:
                self._finished = True
                self.write(summary_text(snap))


class WidgetJobPanel:
    """The ipywidgets panel: header with links, phase timeline, log tail, chart, Stop button.

    ``display`` shows the panel and returns a handle with ``update`` (IPython's
    ``display(..., display_id=True)``); at the end the display is updated once
    more so that a saved notebook carries a static summary next to the widget.
    The log tail leaves out the ``#metric`` lines the chart draws; the "raw
    lines" toggle shows them again.

    >>> panel = WidgetJobPanel("fraud-1", display=display, on_stop=run.stop)
    >>> watcher.subscribe(panel.update)
    """

    def __init__(self, name: str, display: Callable | None = None,
                 on_stop: Callable[[], None] | None = None) -> None:
        import ipywidgets as w

        self.name = name
        self.on_stop = on_stop
        self.header = w.HTML(f"<b>{escape(name)}</b> starting…")
        self.phases = w.HTML()
        self.raw_lines = w.ToggleButton(description="raw lines", icon="list",
                                        tooltip="also show the #metric lines the chart draws",
                                        layout=w.Layout(width="auto"))
        self.raw_lines.observe(self._raw_lines_toggled, names="value")
        self.log = w.HTML(layout=w.Layout(max_height="18em", overflow="auto"))
        self.chart = w.HTML()
        self.result = w.HTML()
        self.stop_button = w.Button(description="Stop job", icon="stop", button_style="danger",
                                    layout=w.Layout(width="auto"))
        self.stop_button.on_click(self._stop_clicked)
        self.status = w.Label("")
        self.controls = w.HBox([self.stop_button, self.status])
        self.widget = summary_box([
            self.header, self.phases, self.controls, self.raw_lines, self.log, self.chart,
            self.result,
        ], css_class="sm-job-panel")
        self._handle = display(self.widget, display_id=True) if display else None
        self._lock = threading.Lock()
        self._finished = False
        self._log_tail: list[str] = []

    def _stop_clicked(self, _button) -> None:
        self.stop_button.disabled = True
        self.status.value = "Stopping…"
        if self.on_stop is None:
            return
        try:
            self.on_stop()
        except Exception as exc:  # shown in the panel; the job state says the rest
            self.status.value = f"Stop failed: {exc}"
            self.stop_button.disabled = False

    def _raw_lines_toggled(self, _change) -> None:
        with self._lock:
            self._show_log()

    def _show_log(self) -> None:
        lines = log_lines(self._log_tail, _TAIL_LINES, metric_lines=self.raw_lines.value)
        tail = escape("\n".join(lines))
        self.log.value = f"<pre class='sm-log' style='margin:0;font-size:11px'>{tail}</pre>"

    def update(self, snap: JobSnapshot) -> None:
        """Show ``snap``; once it is done, also put the static summary into the display.

        Each part is its own widget with one trait to change, so an update sends
        one message per part whose value changed (traitlets skips equal values).

        >>> panel.update(watcher.snapshot)
        """
        with self._lock:
            if self._finished:
                return
            self._log_tail = list(snap.log_tail)
            self.header.value = header_html(snap)
            self.phases.value = phases_html(snap)
            self._show_log()
            self.chart.value = chart_svg(snap.metrics)
            self.result.value = result_html(snap)
            if snap.done:
                self._finished = True
                self.stop_button.disabled = True
                self.controls.layout.display = "none"
                self.status.value = ""
                self.widget.summary_html = summary_html(snap)
                self.widget.summary_text = summary_text(snap)
                if self._handle is not None:
                    self._handle.update(self.widget)


def job_panel(name: str, *, widgets: bool, display: Callable | None = None,
              on_stop: Callable[[], None] | None = None) -> TextJobPanel | WidgetJobPanel:
    """The panel for job ``name``: widgets (shown with ``display``) or text.

    >>> panel = job_panel(run.name, widgets=True, display=display, on_stop=run.stop)
    >>> run.watcher.subscribe(panel.update)
    """
    if widgets:
        return WidgetJobPanel(name, display=display, on_stop=on_stop)
    return TextJobPanel()
