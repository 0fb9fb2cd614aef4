"""The box a panel lives in: a live widget while it runs, a static summary once saved.

A notebook saved after the cell ran keeps the widget's state, but a reader
without the widget manager (GitHub, nbconvert, a terminal) sees only the
output's HTML and text. Once the panel sets ``summary_html`` and
``summary_text`` and updates its display, those are what such readers see.

Example::

    >>> box = summary_box([header, log], css_class="sm-job-panel")
    >>> handle = display(box, display_id=True)
    >>> box.summary_html, box.summary_text = "<b>done</b>", "done"
    >>> handle.update(box)
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

__all__ = ["summary_box"]


@functools.cache
def _box_class() -> type:
    import ipywidgets as w

    class SummaryBox(w.VBox):
        summary_html = ""
        summary_text = ""

        def _repr_mimebundle_(self, **kwargs):
            bundle = super()._repr_mimebundle_(**kwargs)
            if self.summary_html:
                bundle["text/html"] = self.summary_html
                bundle["text/plain"] = self.summary_text
            return bundle

    return SummaryBox


def summary_box(children: Sequence, *, css_class: str):
    """A bordered VBox of ``children`` that renders as its summary once that is set.

    >>> box = summary_box([ipywidgets.HTML("building…")], css_class="sm-build-panel")
    >>> box.summary_html, box.summary_text = "<b>built</b>", "built"
    >>> box._repr_mimebundle_()["text/plain"]
    'built'
    """
    import ipywidgets as w

    box = _box_class()(list(children), layout=w.Layout(border="1px solid #ddd",
                                                       padding="4px 8px"))
    box.add_class(css_class)
    return box
