"""Shared fixtures: an IPython shell with the extension loaded, and the sandbox.

``ip`` is a real ``InteractiveShell`` whose ``run_cell`` re-raises, so tests
read like notebook cells::

    def test_something(ip):
        ip.run_line_magic("sm_config", "--region eu-west-1")

``sandbox`` starts the real sandbox services once per test session under a
temporary home (a real moto endpoint, a real registry, the real Docker engine)
and points ``os.environ`` at them, as ``%sm_sandbox start`` does.

``tutorial(name, profile)`` runs a tutorial notebook once per session.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


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


@dataclass
class TutorialRun:
    """One run of a tutorial notebook: the executed notebook and what its requests needed."""

    notebook: Any  # nbformat.NotebookNode
    home: Path  # the sandbox home it used (the notebook stops its sandbox at the end)
    authorizations: list[dict]  # IAM authorizations of its requests (enforced ones when held)


@pytest.fixture(scope="session")
def tutorial(tmp_path_factory):
    """``tutorial(name, profile)`` runs ``notebooks/<name>`` once per session in a fresh kernel.

    Each run has a sandbox of its own (the notebook's ``%sm_sandbox start``), in the
    sandbox profile ``profile``. In the plain profile the notebook is held to
    AmazonSageMakerFullAccess, the role most notebooks run as, so one run shows both
    that the tutorial works and that the default role allows all of it (tests of
    ``test_notebooks`` and ``test_permissions`` share it).
    """
    import nbformat

    from sm_magics.__main__ import run_notebook
    from sm_magics.sandbox import Sandbox

    runs: dict[tuple[str, str], TutorialRun] = {}

    def run(name: str, profile: str = "plain") -> TutorialRun:
        if (name, profile) in runs:
            return runs[name, profile]
        where = tmp_path_factory.mktemp(f"{name.split('.')[0]}-{profile}")
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("AWS_", "SM_MAGICS_", "SAGEMAKER_")) and k != "DOCKER_HOST"}
        home = where / "sandbox-home"
        env.update(SM_MAGICS_SANDBOX_HOME=str(home), SM_MAGICS_SANDBOX_PROFILE=profile)
        if profile == "plain":
            env["SM_MAGICS_SANDBOX_POLICY"] = "AmazonSageMakerFullAccess"
        workdir = where / "work"
        workdir.mkdir()
        output = where / name
        assert run_notebook(NOTEBOOKS / name, output, timeout=900, env=env,
                            workdir=workdir) == 0
        runs[name, profile] = TutorialRun(nbformat.read(output, as_version=4), home,
                                          Sandbox(home).authorizations())
        return runs[name, profile]

    return run
