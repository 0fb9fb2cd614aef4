"""The build panel of ``%%sm_container``: stages, build log tail, push progress, result.

Two renderings of the same :class:`~sm_magics.build.BuildListener` events:

* :class:`WidgetBuildPanel` (ipywidgets) for a notebook frontend: the stages
  with the current one highlighted, the current Dockerfile step, the last log
  lines, a progress bar per pushed layer, and the image URI and digest at the
  end. Updates are batched (``hold_sync``) and rate-limited.
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

__all__ = ["TextBuildPanel", "WidgetBuildPanel", "build_panel"]

_FINAL_LAYER_STATES = ("Pushed", "Layer already exists", "Mounted from")
_TAIL = 12
_MIN_INTERVAL = 0.25


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

    def stage(self, name: str, detail: str = "") -> None:
        number = STAGES.index(name) + 1
        self.write(f"[{number}/{len(STAGES)}] {name}" + (f": {detail}" if detail else ""))

    def step(self, text: str) -> None:
        self.write(f"  {text}")

    def log(self, line: str) -> None:
        self.write(f"    {line}")

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

    >>> panel = WidgetBuildPanel("fraud")
    >>> display(panel.widget)
    """

    def __init__(self, name: str) -> None:
        import ipywidgets as widgets

        self.name = name
        self._current: str | None = None
        self._done: set[str] = set()
        self._failed = False
        self._step = ""
        self._tail: deque[str] = deque(maxlen=_TAIL)
        self._layers: dict[str, tuple[str, int | None, int | None]] = {}
        self._last_flush = 0.0
        self.header = widgets.HTML(f"<b>%%sm_container {escape(name)}</b>")
        self.stages = widgets.HTML()
        self.current_step = widgets.HTML()
        self.log_tail = widgets.HTML()
        self.layers = widgets.HTML()
        self.result = widgets.HTML()
        self.widget = widgets.VBox(
            [self.header, self.stages, self.current_step, self.log_tail, self.layers,
             self.result],
            layout=widgets.Layout(border="1px solid #ddd", padding="4px 8px"),
        )
        self.widget.add_class("sm-build-panel")
        self._flush(force=True)

    # ------------------------------------------------------------ rendering

    def _stages_html(self) -> str:
        parts = []
        for name in STAGES:
            if name == self._current and self._failed:
                parts.append(f"<span style='color:#c62828;font-weight:bold'>✗ {name}</span>")
            elif name == self._current:
                parts.append(
                    "<span style='background:#e3f2fd;color:#0d47a1;font-weight:bold;"
                    f"padding:0 4px'>▶ {name}</span>"
                )
            elif name in self._done:
                parts.append(f"<span style='color:#2e7d32'>✓ {name}</span>")
            else:
                parts.append(f"<span style='color:#999'>○ {name}</span>")
        return " &nbsp;→&nbsp; ".join(parts)

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
        with self.widget.hold_sync():
            self.stages.value = self._stages_html()
            self.current_step.value = (
                f"<code>{escape(self._step)}</code>" if self._step else ""
            )
            # the tail is short (_TAIL lines): shown whole, newest line last, long lines wrapped
            self.log_tail.value = (
                "<pre style='font-size:85%;white-space:pre-wrap;overflow-wrap:anywhere;"
                "margin:2px 0'>"
                + escape("\n".join(self._tail)) + "</pre>"
            ) if self._tail else ""
            self.layers.value = self._layers_html()

    # ------------------------------------------------------------ events

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

    def layer(self, layer_id: str, status: str, current: int | None, total: int | None) -> None:
        previous = self._layers.get(layer_id, ("", None, None))
        self._layers[layer_id] = (status, current, total or previous[2])
        self._flush(force=_is_final(status))

    def finished(self, image: ContainerImage) -> None:
        if self._current:
            self._done.add(self._current)
        self._current = None
        self._step = ""
        self._flush(force=True)
        digest = f"<br>digest <code>{escape(image.digest)}</code>" if image.digest else ""
        self.result.value = (
            f"<b style='color:#2e7d32'>✓</b> <code>{escape(image.uri)}</code> "
            f"({escape(image.state)}){digest}"
        )

    def failed(self, error: BaseException) -> None:
        self._failed = True
        self._flush(force=True)
        headline = (str(error).splitlines() or [type(error).__name__])[0]
        self.result.value = f"<b style='color:#c62828'>✗</b> {escape(headline)}"


def build_panel(name: str, *, widgets: bool,
                display: Callable[[object], object] | None = None) -> BuildListener:
    """The panel for building ``name``: widgets (shown with ``display``) or text.

    >>> listener = build_panel("fraud", widgets=shell_has_kernel, display=display)
    """
    if widgets:
        panel = WidgetBuildPanel(name)
        if display is not None:
            display(panel.widget)
        return panel
    return TextBuildPanel(name)
