"""The tutorial notebooks run top to bottom in the sandbox, as a newcomer would run them."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest

from sm_magics.__main__ import run_notebook

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
pytestmark = [pytest.mark.docker, pytest.mark.sandbox, pytest.mark.slow]


def execute(name: str, tmp_path: Path) -> nbformat.NotebookNode:
    """Run ``notebooks/<name>`` in a fresh kernel with a sandbox of its own."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "SM_MAGICS_"))}
    env["SM_MAGICS_SANDBOX_HOME"] = str(tmp_path / "sandbox-home")
    output = tmp_path / name
    assert run_notebook(NOTEBOOKS / name, output, timeout=900, env=env) == 0
    return nbformat.read(output, as_version=4)


def text_of(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        parts.append(out.get("text", ""))
        parts.append(out.get("data", {}).get("text/plain", ""))
    return "".join(parts)


def test_notebooks_are_committed_without_outputs():
    for path in NOTEBOOKS.glob("*.ipynb"):
        notebook = nbformat.read(path, as_version=4)
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, path.name


def test_quickstart_runs_top_to_bottom_in_the_sandbox(tmp_path):
    notebook = execute("quickstart.ipynb", tmp_path)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    outputs = {c.source.splitlines()[0]: text_of(c) for c in code}
    assert "api       running  http://127.0.0.1:" in outputs["%sm_sandbox start"]
    assert "sandbox (AWS_ENDPOINT_URL)" in outputs["%sm_config"]
    assert "hello from the sandbox" in outputs["import boto3"]
    assert "account: 123456789012" in outputs["import boto3"]
    assert "api       stopped" in outputs["%sm_sandbox stop"]
    assert not (tmp_path / "sandbox-home" / "state.json").exists()
