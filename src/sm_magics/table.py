"""A small table that reads well as text and as HTML: settings, parameters, jobs, services.

Example::

    >>> Table(("name", "value"), [("lr", "0.05")])
    name  value
    ----  -----
    lr    0.05
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ["Table"]


class Table:
    """A small table that reads well as text and as HTML.

    >>> Table(("name", "value"), [("lr", "0.05")])
    name  value
    ----  -----
    lr    0.05
    """

    def __init__(self, headers: Sequence[str], rows: Iterable[Sequence[str]],
                 title: str | None = None) -> None:
        self.headers = tuple(headers)
        self.rows = [tuple(row) for row in rows]
        self.title = title

    def __repr__(self) -> str:
        rows = [self.headers, *self.rows]
        widths = [max(len(r[i]) for r in rows) for i in range(len(self.headers))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                 for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        if self.title:
            lines.insert(0, self.title)
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        from html import escape

        head = "".join(f"<th>{escape(h)}</th>" for h in self.headers)
        body = "".join(
            "<tr>" + "".join(f"<td><code>{escape(c)}</code></td>" for c in row) + "</tr>"
            for row in self.rows
        )
        caption = f"<caption>{escape(self.title)}</caption>" if self.title else ""
        return (f"<table class='sm-magics-table'>{caption}<thead><tr>{head}</tr></thead>"
                f"<tbody>{body}</tbody></table>")
