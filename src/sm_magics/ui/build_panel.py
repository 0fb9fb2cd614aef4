"""The build panel of ``%%sm_container``: stages, build log tail, push progress, result.

Two renderings of the same :class:`~sm_magics.build.BuildListener` events:

* :class:`WidgetBuildPanel` (ipywidgets) for a notebook frontend: the stages
  with the current one highlighted, the current Dockerfile step, the last log
  lines, a progress bar per pushed layer, and the image URI and digest at the
  end. Log lines are rate-limited; each part is one HTML widget, so an
  update sends one message per part that changed. A saved notebook shows a
  static summary of the build.
* :class:`TextBuildPanel` for terminals, logs and frontends without widgets:
  the same information as lines of text.

The panels only show what the build service reports; they call neither AWS
nor Docker.

Example::

    >>> panel = build_panel("fraud", widgets=False)
    >>> BuildService(settings, listener=panel).build(recipe)
    [1/4] Prepare: checking the cell and writing the build context
    ...
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable
from html import escape

from ..build import STAGES, BuildListener, ContainerImage
from ..table import Table
from .summary_box import summary_box

__all__ = ["TextBuildPanel", "WidgetBuildPanel", "build_panel"]

_FINAL_LAYER_STATES = ("Pushed", "Layer already exists", "Mounted from", "Copied")
_TAIL = 12
_MIN_INTERVAL = 0.25
_MARK_STYLES = {
    "✓": "color:#2e7d32",
    "▶": "background:#e3f2fd;color:#0d47a1;font-weight:bold;padding:0 4px",
    "✗": "color:#c62828;font-weight:bold",
    "○": "color:#999",
}


def _size(count: int | None) -> str:
    if not count:
        return ""
    value = float(count)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return ""


def _is_final(status: str) -> bool:
    return status.startswith(_FINAL_LAYER_STATES)


class TextBuildPanel(BuildListener):
    """The build's progress as lines of text, written with ``write`` (default: stdout).

    >>> panel = TextBuildPanel("fraud")
    >>> panel.stage("Build", "127.0.0.1:5000/fraud:ab12")
    [3/4] Build: 127.0.0.1:5000/fraud:ab12
    """

    def __init__(self, name: str, write: Callable[[str], None] | None = None) -> None:
        self.name = name
        self.write = write or (lambda line: print(line, file=sys.stdout, flush=True))
        self._sizes: dict[str, int] = {}
        self._reported: set[str] = set()
        self._stages: tuple[str, ...] = STAGES

    def plan(self, stages: tuple[str, ...], builder: str, reason: str) -> None:
        self._stages = tuple(stages)
        self.write(f"Builder: {builder} ({reason})")

    def stage(self, name: str, detail: str = "") -> None:
        number = self._stages.index(name) + 1
        self.write(f"[{number}/{len(self._stages)}] {name}" + (f": {detail}" if detail else ""))

    def step(self, text: str) -> None:
        self.write(f"  {text}")

    def log(self, line: str) -> None:
        self.write(f"    {line}")

    def note(self, text: str) -> None:
        self.write(f"  note: {text}")

    def layer(self, layer_id: str, status: str, current: int | None, total: int | None) -> None:
        if total:
            self._sizes[layer_id] = total
        if _is_final(status) and layer_id not in self._reported:
            self._reported.add(layer_id)
            size = _size(self._sizes.get(layer_id))
            self.write(f"  layer {layer_id}: {status}" + (f" ({size})" if size else ""))

    def finished(self, image: ContainerImage) -> None:
        self.write(f"Done: {image.uri} ({image.state})")
        if image.digest:
            self.write(f"  digest {image.digest}")


class WidgetBuildPanel(BuildListener):
    """The build's progress in ipywidgets; ``widget`` is the box to display.

    With ``display`` (IPython's), the panel shows itself and, once the build
    finished or failed, updates its display so that a saved notebook carries a
    static summary (:meth:`summary_text`, :meth:`summary_html`) next to the widget.

    >>> panel = WidgetBuildPanel("fraud", display=display)
    >>> BuildService(settings, listener=panel).build(recipe)
    >>> print(panel.summary_text())
    %%sm_container fraud
    ✓ Prepare → ✓ Look up → ✓ Build → ✓ Push
    ...
    """

    def __init__(self, name: str, display: Callable[..., object] | None = None) -> None:
        import ipywidgets as widgets

        self.name = name
        self._current: str | None = None
        self._done: set[str] = set()
        self._failed = False
        self._step = ""
        self._tail: deque[str] = deque(maxlen=_TAIL)
        self._layers: dict[str, tuple[str, int | None, int | None]] = {}
        self._image: ContainerImage | None = None
        self._error = ""
        self._notes: list[str] = []
        self._stages: tuple[str, ...] = STAGES
        self._builder = ""
        self._last_flush = 0.0
        self.header = widgets.HTML(f"<b>%%sm_container {escape(name)}</b>")
        self.stages = widgets.HTML()
        self.current_step = widgets.HTML()
        self.log_tail = widgets.HTML()
        self.layers = widgets.HTML()
        self.notes = widgets.HTML()
        self.result = widgets.HTML()
        self.widget = summary_box(
            [self.header, self.stages, self.current_step, self.log_tail, self.layers,
             self.notes, self.result],
            css_class="sm-build-panel",
        )
        self._flush(force=True)
        self._handle = display(self.widget, display_id=True) if display else None

    # ------------------------------------------------------------ rendering

    def _marks(self) -> list[tuple[str, str]]:
        """(mark, stage) for each stage: ✓ done, ▶ running, ✗ failed, ○ not run."""
        def mark(name: str) -> str:
            if name == self._current:
                return "✗" if self._failed else "▶"
            return "✓" if name in self._done else "○"

        return [(mark(name), name) for name in self._stages]

    def _stages_html(self) -> str:
        return " &nbsp;→&nbsp; ".join(
            f"<span style='{_MARK_STYLES[mark]}'>{mark} {name}</span>"
            for mark, name in self._marks()
        )

    def _layers_html(self) -> str:
        if not self._layers:
            return ""
        rows = []
        for layer_id, (status, current, total) in self._layers.items():
            if _is_final(status):
                bar = "<progress value='1' max='1'></progress>"
            elif current is not None and total:
                bar = f"<progress value='{current}' max='{total}'></progress>"
            else:
                bar = "<progress></progress>" if status == "Pushing" else ""
            rows.append(
                f"<tr><td><code>{escape(layer_id)}</code></td><td>{bar}</td>"
                f"<td>{escape(status)}</td><td>{_size(total)}</td></tr>"
            )
        return "<table style='font-size:90%'>" + "".join(rows) + "</table>"

    def _flush(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_flush < _MIN_INTERVAL:
            return
        self._last_flush = now
        # One message per part whose HTML changed: traitlets sends nothing for an
        # unchanged value, and each part has this one trait to update.
        self.stages.value = self._stages_html()
        self.current_step.value = f"<code>{escape(self._step)}</code>" if self._step else ""
        # the tail is short (_TAIL lines): shown whole, newest line last, long lines wrapped
        self.log_tail.value = (
            "<pre style='font-size:85%;white-space:pre-wrap;overflow-wrap:anywhere;"
            "margin:2px 0'>"
            + escape("\n".join(self._tail)) + "</pre>"
        ) if self._tail else ""
        self.layers.value = self._layers_html()
        self.notes.value = self._notes_html()

    def _notes_html(self) -> str:
        return "".join(f"<div class='sm-build-note'><small>ⓘ {escape(text)}</small></div>"
                       for text in self._notes)

    # ------------------------------------------------------------ summary

    def _summary_table(self) -> Table:
        if self._image is None:
            fields = {"error": self._error}
        else:
            fields = {"image": self._image.uri, "state": self._image.state}
            if self._builder:
                fields["builder"] = self._builder
            if self._image.digest:
                fields["digest"] = self._image.digest
            layers = self._layer_counts()
            if layers:
                fields["layers"] = layers
        return Table.record(fields, code=("image", "digest"), css_class="sm-build-result")

    def _layer_counts(self) -> str:
        """``3 pushed, 2 already in the registry`` (mounted layers were there already)."""
        final = [status for status, _, _ in self._layers.values() if _is_final(status)]
        pushed = sum(status.startswith("Pushed") for status in final)
        copied = sum(status.startswith("Copied") for status in final)  # the registry builder
        there = len(final) - pushed - copied
        counts = [f"{pushed} pushed" if pushed else "",
                  f"{copied} copied from the base" if copied else "",
                  f"{there} already in the registry" if there else ""]
        return ", ".join(filter(None, counts))

    def summary_text(self) -> str:
        """The finished (or failed) build as text: stages, then the image or the error.

        >>> print(panel.summary_text())
        %%sm_container fraud
        ✓ Prepare → ✓ Look up → ✗ Build → ○ Push
        error  Build of fraud failed at step 3/6: RUN false
        """
        stages = " → ".join(f"{mark} {name}" for mark, name in self._marks())
        notes = "".join(f"\nnote: {text}" for text in self._notes)
        return f"%%sm_container {self.name}\n{stages}\n{self._summary_table()!r}{notes}"

    def summary_html(self) -> str:
        """The finished (or failed) build as static HTML, the same parts as :meth:`summary_text`.

        >>> "✓ Push" in panel.summary_html()
        True
        """
        return (f"<div class='sm-build-summary'><b>%%sm_container {escape(self.name)}</b>"
                f"<div>{self._stages_html()}</div>{self._summary_table()._repr_html_()}"
                f"{self._notes_html()}</div>")

    def _show_summary(self) -> None:
        self.widget.summary_html = self.summary_html()
        self.widget.summary_text = self.summary_text()
        if self._handle is not None:
            self._handle.update(self.widget)

    # ------------------------------------------------------------ events

    def plan(self, stages: tuple[str, ...], builder: str, reason: str) -> None:
        self._stages = tuple(stages)
        self._builder = f"{builder} ({reason})"
        self.header.value = (f"<b>%%sm_container {escape(self.name)}</b> "
                             f"<small>builder: {escape(self._builder)}</small>")
        self._flush(force=True)

    def stage(self, name: str, detail: str = "") -> None:
        if self._current:
            self._done.add(self._current)
        self._current = name
        self._step = detail
        self._flush(force=True)

    def step(self, text: str) -> None:
        self._step = text
        self._flush(force=True)

    def log(self, line: str) -> None:
        self._tail.append(line)
        self._flush()

    def note(self, text: str) -> None:
        """Kept below the layers for the whole build, and in the saved summary."""
        self._notes.append(text)
        self._flush(force=True)

    def layer(self, layer_id: str, status: str, current: int | None, total: int | None) -> None:
        previous = self._layers.get(layer_id, ("", None, None))
        self._layers[layer_id] = (status, current, total or previous[2])
        self._flush(force=_is_final(status))

    def finished(self, image: ContainerImage) -> None:
        if self._current:
            self._done.add(self._current)
        self._current = None
        self._step = ""
        self._image = image
        self._flush(force=True)
        digest = f"<br>digest <code>{escape(image.digest)}</code>" if image.digest else ""
        self.result.value = (
            f"<b style='color:#2e7d32'>✓</b> <code>{escape(image.uri)}</code> "
            f"({escape(image.state)}){digest}"
        )
        self._show_summary()

    def failed(self, error: BaseException) -> None:
        self._failed = True
        self._error = (str(error).splitlines() or [type(error).__name__])[0]
        self._flush(force=True)
        self.result.value = f"<b style='color:#c62828'>✗</b> {escape(self._error)}"
        self._show_summary()


def build_panel(name: str, *, widgets: bool,
                display: Callable[..., object] | None = None) -> BuildListener:
    """The panel for building ``name``: widgets (shown with ``display``) or text.

    ``display`` is IPython's: the widget panel calls ``display(box, display_id=True)``
    and updates that display with its summary when the build ends.

    >>> listener = build_panel("fraud", widgets=shell_has_kernel, display=display)
    """
    if widgets:
        return WidgetBuildPanel(name, display=display)
    return TextBuildPanel(name)
