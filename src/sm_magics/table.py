"""A small table that reads well as text and as HTML: settings, parameters, jobs, services.

Every table of sm-magics renders through :class:`Table`, so text and HTML
always say the same thing. A table has columns; a record (:meth:`Table.record`)
is one row turned on its side, a field name heading each line.

Example::

    >>> Table(("name", "value"), [("lr", "0.05")])
    name  value
    ----  -----
    lr    0.05
    >>> Table.record({"image": "fraud:ab12", "state": "built and pushed"})
    image  fraud:ab12
    state  built and pushed
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from html import escape

__all__ = ["Table"]


class Table:
    """A small table that reads well as text and as HTML.

    ``code`` names the columns whose cells the HTML shows as code (default:
    all of them); ``css_class`` is added to the HTML table's class.

    >>> table = Table(("setting", "from"), [("region", "%sm_config")], code=("setting",))
    >>> table
    setting  from
    -------  ----------
    region   %sm_config
    >>> "<td><code>region</code></td><td>%sm_config</td>" in table._repr_html_()
    True
    """

    def __init__(self, headers: Sequence[str], rows: Iterable[Sequence[str]],
                 title: str | None = None, *, code: Iterable[str] | None = None,
                 css_class: str = "") -> None:
        self.headers = tuple(headers)
        self.rows = [tuple(row) for row in rows]
        self.title = title
        self.code = frozenset(self.headers if code is None else code)
        self.css_class = css_class
        self.is_record = False

    @classmethod
    def record(cls, fields: Mapping[str, str], title: str | None = None, *,
               code: Iterable[str] | None = None, css_class: str = "") -> Table:
        """One thing's fields, one line each: the field name heads its line.

        >>> Table.record({"image": "fraud:ab12", "digest": "sha256:4b1e"}, title="fraud")
        fraud
        image   fraud:ab12
        digest  sha256:4b1e
        """
        table = cls(tuple(fields), [tuple(fields.values())], title, code=code,
                    css_class=css_class)
        table.is_record = True
        return table

    def __repr__(self) -> str:
        if self.is_record:
            rows = list(zip(self.headers, self.rows[0], strict=True))
        else:
            rows = [self.headers, *self.rows]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))] if rows else []
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                 for r in rows]
        if not self.is_record:
            lines.insert(1, "  ".join("-" * w for w in widths))
        if self.title:
            lines.insert(0, self.title)
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        # a record's lines read left to right; JupyterLab right-aligns table cells
        align = " style='text-align:left'" if self.is_record else ""

        def cell(header: str, value: str) -> str:
            shown = f"<code>{escape(value)}</code>" if header in self.code else escape(value)
            return f"<td{align}>{shown}</td>"

        if self.is_record:
            head = ""
            body = "".join(f"<tr><th{align}>{escape(name)}</th>{cell(name, value)}</tr>"
                           for name, value in zip(self.headers, self.rows[0], strict=True))
        else:
            head = ("<thead><tr>" + "".join(f"<th>{escape(h)}</th>" for h in self.headers)
                    + "</tr></thead>")
            body = "".join(
                "<tr>" + "".join(cell(h, c) for h, c in zip(self.headers, row, strict=True))
                + "</tr>"
                for row in self.rows
            )
        caption = f"<caption>{escape(self.title)}</caption>" if self.title else ""
        classes = " ".join(filter(None, ("sm-magics-table", self.css_class)))
        return f"<table class='{classes}'>{caption}{head}<tbody>{body}</tbody></table>"
