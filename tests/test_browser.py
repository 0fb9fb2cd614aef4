"""The tutorials in a real browser: JupyterLab, headless Chromium, the panels as people see them.

JupyterLab serves copies of ``notebooks/quickstart.ipynb`` and
``notebooks/parameters-and-data.ipynb`` on 127.0.0.1; Debian's Chromium, driven by Playwright,
opens each, runs every cell from the Run menu (each notebook starts and stops its own sandbox),
and the tests read what the page shows. Screenshots of the build panel, the job panel, the
comparison of the sweep's runs and the whole page are saved in ``test-artifacts/``.

Needs ``/usr/bin/chromium`` (Debian's ``chromium`` package; ``scripts/setup.sh`` installs it) and
the ``playwright`` Python package; Playwright's own browser download is not used.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip("Debian's chromium is not installed (scripts/setup.sh installs it)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-proxy-server"]
RUN_TIMEOUT = 600  # seconds for the whole notebook; the first image build pip-installs scikit-learn
LAB_SETTINGS = {
    # every cell stays in the page, so off-screen panels can be read and photographed
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    # no news or update checks: the page talks to 127.0.0.1 only
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false", "checkForUpdates": False},
}

pytestmark = [pytest.mark.docker, pytest.mark.sandbox, pytest.mark.slow, pytest.mark.browser]


@dataclass
class Lab:
    """A running JupyterLab server and the folders it works in."""

    url: str
    token: str
    root: Path
    sandbox_home: Path
    log: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str):
    """The JSON at ``url`` (never through an HTTP proxy), or ``None`` when it does not answer."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2) as response:
            return json.load(response)
    except (OSError, ValueError):
        return None


def _lab_environment(base: Path) -> dict[str, str]:
    """The server's (and so the kernel's) environment: no AWS or sm-magics settings of ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SM_MAGICS_"))}
    env.update({
        "SM_MAGICS_SANDBOX_HOME": str(base / "sandbox-home"),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        "JUPYTER_CONFIG_DIR": str(base / "jupyter-config"),
        "JUPYTER_DATA_DIR": str(base / "jupyter-data"),
        "JUPYTER_RUNTIME_DIR": str(base / "jupyter-runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(base / "lab-settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(base / "lab-workspaces"),
    })
    for name, settings in LAB_SETTINGS.items():
        path = base / "lab-settings" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings))
    return env


def _stop_process_group(process: subprocess.Popen, timeout: float = 20) -> None:
    if process.poll() is None:
        process.terminate()  # the server's own shutdown: it shuts its kernels down first
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # whatever the server left in its group
    process.wait()


def _stop_sandbox(home: Path) -> None:
    """Stop the notebook's sandbox when the notebook did not get to its last cell."""
    import docker

    from sm_magics.engine import HOME_LABEL
    from sm_magics.sandbox import Sandbox

    Sandbox(home).stop()
    engine = docker.from_env()
    for container in engine.containers.list(all=True, filters={"label": f"{HOME_LABEL}={home}"}):
        container.remove(force=True)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab on a free 127.0.0.1 port, serving a folder with the quickstart in it."""
    base = tmp_path_factory.mktemp("browser")
    root = base / "notebooks"
    root.mkdir()
    for name in ("quickstart.ipynb", "parameters-and-data.ipynb"):
        shutil.copy(REPO / "notebooks" / name, root)
    port, token = _free_port(), secrets.token_hex(16)
    log = base / "jupyterlab.log"
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.open_browser=False",
         "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
         "--LabApp.extension_manager=readonly",
         *(["--allow-root"] if os.geteuid() == 0 else [])],
        env=_lab_environment(base), cwd=root, stdin=subprocess.DEVNULL,
        stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while _get(f"{url}/api/status?token={token}") is None:
            assert server.poll() is None, f"JupyterLab exited:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"JupyterLab did not answer:\n{log.read_text()}"
            time.sleep(0.25)
        yield Lab(url, token, root, base / "sandbox-home", log)
    finally:
        _stop_process_group(server)
        _stop_sandbox(base / "sandbox-home")


def _outputs_text(page) -> str:
    return "\n".join(page.locator(".jp-OutputArea-output").all_inner_texts())


def _wait_for_kernel(page, lab: Lab, notebook: str) -> None:
    """Wait until the notebook's kernel is started, connected to the page, and idle.

    Cells run before that are lost (JupyterLab asks which kernel to start instead).
    """
    deadline = time.monotonic() + 120
    while True:
        sessions = _get(f"{lab.url}/api/sessions?token={lab.token}") or []
        kernels = [s["kernel"] for s in sessions if s["path"] == notebook]
        if any(k["execution_state"] == "idle" and k["connections"] for k in kernels):
            return
        assert time.monotonic() < deadline, f"no kernel came up:\n{lab.log.read_text()}"
        page.wait_for_timeout(250)


def _run_all_and_wait(page, lab: Lab) -> None:
    """Run every cell from the Run menu and wait until the last cell has run.

    A cell that fails stops Run All: the cells after it go back from queued (``[*]``) to
    not run (``[ ]``), which ends the wait early with what the page shows.
    """
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    deadline = time.monotonic() + RUN_TIMEOUT
    while True:
        prompts = [p.strip() for p in page.locator(".jp-CodeCell .jp-InputPrompt")
                   .all_inner_texts()]
        ran = [p for p in prompts if re.fullmatch(r"\[\d+\]:", p)]
        if prompts[-1] in ran:
            return
        assert not (ran and "[*]:" not in prompts), (
            f"Run All stopped after {len(ran)} of {len(prompts)} cells; the page shows:\n"
            f"{_outputs_text(page)[-3000:]}")
        dialogs = page.locator(".jp-Dialog").all_inner_texts()
        assert not dialogs, "JupyterLab asks something:\n" + "\n".join(dialogs)
        assert time.monotonic() < deadline, (
            f"the notebook did not finish in {RUN_TIMEOUT}s; the page shows:\n"
            f"{_outputs_text(page)[-3000:]}\n\nserver log:\n{lab.log.read_text()[-3000:]}")
        page.wait_for_timeout(1000)


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium, headless, driven by Playwright."""
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                              headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


def _open_and_run(browser, lab: Lab, notebook: str):
    """A page with ``notebook`` open, after Run All Cells has finished."""
    failure = ARTIFACTS / f"browser-failure-{notebook.removesuffix('.ipynb')}.png"
    failure.unlink(missing_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(60_000)
    page.goto(f"{lab.url}/lab/tree/{notebook}?token={lab.token}")
    page.locator(".jp-CodeCell").last.wait_for()
    _wait_for_kernel(page, lab, notebook)
    try:
        _run_all_and_wait(page, lab)
    except Exception:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=failure, full_page=True)
        raise
    return page


@pytest.fixture(scope="module")
def page(browser, lab):
    """The quickstart, after Run All Cells has finished."""
    page = _open_and_run(browser, lab, "quickstart.ipynb")
    yield page
    page.close()


@pytest.fixture(scope="module")
def sweep_page(browser, lab, page):
    """The parameters-and-data tutorial (after the quickstart), after Run All Cells."""
    sweep = _open_and_run(browser, lab, "parameters-and-data.ipynb")
    yield sweep
    sweep.close()


def test_run_all_in_the_browser_trains_and_the_job_panel_says_completed(page):
    panel = page.locator(".sm-job-panel")
    assert panel.locator(".sm-status").inner_text() == "Completed"
    phases = panel.locator(".sm-phases .sm-phase")
    shown = phases.evaluate_all("boxes => boxes.map(b => b.dataset.phase)")
    assert shown[0] == "Starting" and shown[-1] == "Completed" and "Training" in shown
    assert panel.locator(".sm-phases").inner_text().count("→") == len(shown) - 1


def test_the_job_panel_shows_the_model_uri_and_a_chart_of_the_logged_metric(page):
    panel = page.locator(".sm-job-panel")
    assert re.fullmatch(r"s3://\S+/model\.tar\.gz", panel.locator(".sm-model-uri").inner_text())
    line = panel.locator("svg.sm-chart polyline[data-metric='test_accuracy']")
    assert line.count() == 1
    assert len(line.get_attribute("points").split()) == 4  # one point per step of the curve
    assert line.bounding_box()["width"] > 100  # drawn, not collapsed
    assert "test_accuracy" in panel.locator("svg.sm-chart").text_content()


def test_the_build_panel_ends_with_the_pushed_image(page):
    panel = page.locator(".sm-build-panel")
    assert panel.count() == 1
    final = panel.locator(".widget-html").last.inner_text()
    assert re.search(r"✓ 127\.0\.0\.1:\d+/sagemaker-digits:[0-9a-f]+ \(built and pushed\)",
                     final), final
    assert re.search(r"digest sha256:[0-9a-f]{64}", final), final


def test_both_panels_render_as_live_widgets(page):
    for panel in (".sm-build-panel", ".sm-job-panel"):
        views = page.locator(f".jp-OutputArea-output .jupyter-widgets{panel}")
        assert views.count() == 1, panel
        assert views.locator(".widget-html").count() >= 5, panel  # its parts, rendered
    shown = _outputs_text(page)
    assert "Loading widget" not in shown and "Error displaying widget" not in shown


def test_the_notebook_stops_its_own_sandbox(page, lab):
    assert re.search(r"api\s+stopped", _outputs_text(page))
    assert not (lab.sandbox_home / "state.json").exists()


def test_screenshots_of_the_panels_and_the_page_are_saved(page):
    ARTIFACTS.mkdir(exist_ok=True)
    shots = {
        "browser-build-panel.png": page.locator(".sm-build-panel"),
        "browser-job-panel.png": page.locator(".sm-job-panel"),
    }
    for name, element in shots.items():
        element.scroll_into_view_if_needed()
        element.screenshot(path=ARTIFACTS / name)
    page.locator(".sm-job-panel").scroll_into_view_if_needed()
    page.screenshot(path=ARTIFACTS / "browser-page.png", full_page=True)
    for name in [*shots, "browser-page.png"]:
        _assert_png(ARTIFACTS / name)


def _assert_png(path: Path) -> None:
    png = path.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000, path.name
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert width > 300 and height > 100, (path.name, width, height)


def test_the_sweep_s_comparison_shows_each_run_and_a_chart_and_is_photographed(sweep_page):
    comparison = sweep_page.locator(".sm-comparison").last
    comparison.scroll_into_view_if_needed()
    table = comparison.locator("table").first.inner_text()
    assert table.count("Completed") == 4 and "(best)" in table
    lines = comparison.locator("svg.sm-chart polyline")
    assert lines.count() >= 4  # one line per run of the sweep
    assert lines.first.bounding_box()["width"] > 50
    ARTIFACTS.mkdir(exist_ok=True)
    comparison.screenshot(path=ARTIFACTS / "browser-comparison.png")
    _assert_png(ARTIFACTS / "browser-comparison.png")
