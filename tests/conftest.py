"""Shared fixtures: an IPython shell with the extension loaded, and the sandbox.

``ip`` is a real ``InteractiveShell`` whose ``run_cell`` re-raises, so tests
read like notebook cells::

    def test_something(ip):
        ip.run_line_magic("sm_config", "--region eu-west-1")

``sandbox`` starts the real sandbox services once per test session under a
temporary home (a real moto endpoint, a real registry, the real Docker engine)
and points ``os.environ`` at them, as ``%sm_sandbox start`` does.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from IPython.core.interactiveshell import InteractiveShell


class TestingShell(InteractiveShell):
    """An ``InteractiveShell`` whose cells raise their exceptions instead of printing them."""

    def run_cell(self, raw_cell, *args, **kwargs):
        result = super().run_cell(raw_cell, *args, **kwargs)
        result.raise_error()
        return result


@pytest.fixture
def ip(tmp_path, monkeypatch):
    """A shell with ``sm_magics`` loaded in a scratch working directory."""
    monkeypatch.chdir(tmp_path)
    shell = TestingShell.instance()
    shell.run_line_magic("load_ext", "sm_magics")
    yield shell
    shell.run_line_magic("unload_ext", "sm_magics")
    shell.config.pop("SageMakerMagics", None)
    shell.user_ns.clear()
    shell.init_user_ns()


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory):
    """The running sandbox (started once per session, stopped at the end)."""
    from sm_magics.sandbox import temporary_sandbox

    with temporary_sandbox(Path(tmp_path_factory.mktemp("sandbox-home"))) as box:
        yield box


@pytest.fixture
def calls(aws):
    """S3 operations sent through the ``aws`` fixture's session during the test, by name."""
    from collections import Counter

    seen: Counter[str] = Counter()

    def count(model, **_):
        seen[model.name] += 1

    aws.session.events.register("before-call.s3", count)
    yield seen
    aws.session.events.unregister("before-call.s3", count)
