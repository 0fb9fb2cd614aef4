"""The two kinds of error a magic raises.

* :func:`usage_error` builds the exact ``IPython.core.error.UsageError`` for a
  mistake the user can fix (bad flag, bad value, missing Docker engine...).
  IPython prints only the message of that exact class, so it must never be
  subclassed.
* :class:`RemoteFailure` is raised when remote work fails (a build, a job).
  Its ``_render_traceback_`` shows a few readable lines instead of a wall of
  frames, while the cell still fails and "Run All" stops.

Example::

    >>> raise usage_error("--region 'mars-1' is not an AWS region name. Use e.g. us-east-1.")
    >>> raise RemoteFailure("Training job fraud-20260101-120000-ab12 failed",
    ...                     reason="ValueError: bad input", log_tail=["Traceback ..."])
"""

from __future__ import annotations

from collections.abc import Iterable

from IPython.core.error import UsageError

__all__ = ["RemoteFailure", "UsageError", "usage_error"]


def usage_error(message: str) -> UsageError:
    """Return the exact ``UsageError`` for ``message``, folded into one paragraph.

    >>> raise usage_error("Unknown container 'fraud'. Run a %%sm_container fraud cell first.")
    """
    paragraph = " ".join(message.split())
    return UsageError(paragraph)


class RemoteFailure(Exception):
    """Remote work (a build, a push, a training job) did not succeed.

    ``what`` is the headline, ``reason`` the cause reported by the remote side,
    ``log_tail`` the last lines of its log and ``hint`` what to do next.

    >>> raise RemoteFailure("Build of fraud failed at step 3/6: RUN pip install ...",
    ...                     reason="No matching distribution found for sklearn==0.1",
    ...                     log_tail=["ERROR: ..."],
    ...                     hint="Fix the --pip spec and run the cell again.")
    """

    def __init__(
        self,
        what: str,
        *,
        reason: str | None = None,
        log_tail: Iterable[str] = (),
        hint: str | None = None,
    ) -> None:
        self.what = what
        self.reason = reason
        self.log_tail = [line.rstrip("\n") for line in log_tail]
        self.hint = hint
        super().__init__(what if reason is None else f"{what}: {reason}")

    def render_lines(self) -> list[str]:
        """The short rendering: headline, cause, last log lines, hint."""
        lines = [f"{type(self).__name__}: {self.what}"]
        if self.reason:
            first, *rest = self.reason.rstrip().splitlines() or [""]
            lines.append(f"  Cause: {first}")
            lines += [f"         {line}" for line in rest]
        if self.log_tail:
            lines.append("  Last log lines:")
            lines += [f"    {line}" for line in self.log_tail]
        if self.hint:
            lines.append(f"  {self.hint}")
        return lines

    def _render_traceback_(self) -> list[str]:
        return self.render_lines()
