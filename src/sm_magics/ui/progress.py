"""A progress bar for uploads: a widget in a notebook, a few lines of text elsewhere.

Shown only once an upload is large enough to be worth watching.

Example::

    >>> bar = upload_progress("train", widgets=True, display=display)
    >>> sync_dir(aws, "data/train", uri, progress=bar)
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable

__all__ = ["upload_progress"]

LARGE = 20 * 1000 * 1000  # bytes: below this an upload is over before a bar helps


class _Progress:
    def __init__(self, label: str, widgets: bool, display: Callable | None) -> None:
        self.label = label
        self.widgets = widgets
        self.display = display
        self.bar = None
        self.text = None
        self.last_tenth = -1
        self.lock = threading.Lock()

    def __call__(self, done: int, total: int) -> None:
        if total < LARGE:
            return
        with self.lock:
            if self.widgets:
                self._widget(done, total)
            else:
                tenth = done * 10 // total
                if tenth != self.last_tenth:
                    self.last_tenth = tenth
                    print(f"uploading {self.label}: {done / 1e6:.0f} of {total / 1e6:.0f} MB "
                          f"({tenth * 10}%)", file=sys.stdout, flush=True)

    def _widget(self, done: int, total: int) -> None:
        import ipywidgets as w

        if self.bar is None:
            self.bar = w.FloatProgress(min=0, max=total, description=f"{self.label}",
                                       layout=w.Layout(width="60%"))
            self.text = w.Label()
            if self.display:
                self.display(w.HBox([self.bar, self.text]))
        with self.bar.hold_sync():  # the bar's value and style in one message
            self.bar.value = done
            if done >= total:
                self.bar.bar_style = "success"
        self.text.value = f"{done / 1e6:.0f} / {total / 1e6:.0f} MB"


def upload_progress(label: str, *, widgets: bool,
                    display: Callable | None = None) -> Callable[[int, int], None]:
    """A ``progress(bytes_done, bytes_total)`` callback that shows large uploads.

    >>> progress = upload_progress("--input train", widgets=False)
    >>> progress(25_000_000, 50_000_000)
    uploading --input train: 25 of 50 MB (50%)
    """
    return _Progress(label, widgets, display)
