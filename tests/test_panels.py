"""The notebook panels and tables, shown with a stand-in for IPython's ``display``.

No kernel and no Docker: the panels receive the events a build or a job
watcher would send, and the tests read the widgets' state, the messages they
would send to the frontend, and what a saved notebook would keep.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import ipywidgets
import pytest

from sm_magics.build import ContainerImage
from sm_magics.errors import RemoteFailure
from sm_magics.jobstate import JobSnapshot, MetricPoint, MetricsTable
from sm_magics.table import Table
from sm_magics.ui import build_panel
from sm_magics.ui.job_panel import _TAIL_LINES, TextJobPanel, WidgetJobPanel
from sm_magics.ui.job_summary import result_html, summary_html, summary_text
from sm_magics.ui.progress import upload_progress

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
IMAGE = ContainerImage("fraud", "127.0.0.1:5000/fraud:ab12", "ab12", "sha256:" + "0" * 64,
                       Path("/tmp/builds/fraud/ab12"), True, {"lr": 0.05})


class FakeDisplay:
    """IPython's ``display(obj, display_id=True)``: records what was shown and updated."""

    def __init__(self) -> None:
        self.shown: list = []
        self.updates: list = []

    def __call__(self, obj, display_id=False):
        self.shown.append(obj)
        return self if display_id else None

    def update(self, obj) -> None:
        self.updates.append(obj)


@pytest.fixture
def sent(monkeypatch):
    """The state messages widgets send to the frontend, as (widget, keys) pairs."""
    messages: list[tuple[ipywidgets.Widget, tuple[str, ...]]] = []

    def record(widget, msg, buffers=None):
        messages.append((widget, tuple(msg["state"])))

    monkeypatch.setattr(ipywidgets.Widget, "_send", record)
    return messages


def metrics(*points: tuple[str, float, int]) -> MetricsTable:
    return MetricsTable(MetricPoint(name, value, step, 0.0) for name, value, step in points)


def training(log_tail: list[str], **fields) -> JobSnapshot:
    return JobSnapshot("fraud-1", status=fields.pop("status", "InProgress"),
                       secondary=fields.pop("secondary", "Training"), log_tail=log_tail,
                       log_count=len(log_tail), **fields)


LOGS = ["epoch 1", "#metric loss=0.9 step=1", "[algo-1-abcd] #metric loss=0.5 step=2",
        "epoch 2"]


# ---------------------------------------------------------------- job panel


def test_the_job_log_tail_leaves_out_the_metric_lines_the_chart_draws():
    panel = WidgetJobPanel("fraud-1", display=FakeDisplay())
    panel.update(training(LOGS, metrics=metrics(("loss", 0.9, 1), ("loss", 0.5, 2))))
    assert "epoch 1\nepoch 2</pre>" in panel.log.value
    assert "#metric" not in panel.log.value
    assert "data-metric='loss'" in panel.chart.value


def test_the_raw_lines_toggle_shows_the_metric_lines_again():
    panel = WidgetJobPanel("fraud-1", display=FakeDisplay())
    panel.update(training(LOGS))
    panel.raw_lines.value = True
    assert "[algo-1-abcd] #metric loss=0.5 step=2" in panel.log.value
    assert "#metric loss=0.9 step=1" in panel.log.value
    panel.raw_lines.value = False
    assert "#metric" not in panel.log.value


def test_the_raw_lines_toggle_still_works_after_the_job_ended():
    panel = WidgetJobPanel("fraud-1", display=FakeDisplay())
    panel.update(training(LOGS, status="Completed", secondary="Completed"))
    panel.raw_lines.value = True
    assert "#metric loss=0.9 step=1" in panel.log.value


def test_the_job_log_tail_is_filled_with_lines_from_before_the_metric_lines():
    tail = [f"line {i}" if i % 2 else f"#metric loss={i} step={i}" for i in range(200)]
    panel = WidgetJobPanel("fraud-1", display=FakeDisplay())
    panel.update(training(tail))
    shown = panel.log.value.split(">", 1)[1].removesuffix("</pre>").splitlines()
    assert shown == [f"line {i}" for i in range(200 - 2 * _TAIL_LINES + 1, 200, 2)]
    assert len(shown) == _TAIL_LINES


def test_an_identical_job_update_sends_nothing_and_a_new_line_sends_one_message(sent):
    panel = WidgetJobPanel("fraud-1", display=FakeDisplay())
    panel.update(training(["epoch 1"]))
    first = Counter(widget for widget, _ in sent)
    assert set(first.values()) == {1}
    sent.clear()
    panel.update(training(["epoch 1"]))
    assert sent == []
    panel.update(training(["epoch 1", "epoch 2"]))
    assert sent == [(panel.log, ("value",))]


def test_a_finished_job_panel_puts_its_summary_into_the_saved_notebook():
    display = FakeDisplay()
    panel = WidgetJobPanel("fraud-1", display=display)
    panel.update(training(LOGS))
    assert display.updates == []
    assert "text/html" not in panel.widget._repr_mimebundle_()
    done = training(LOGS, status="Completed", secondary="Completed",
                    model_data="s3://bucket/fraud-1/output/model.tar.gz",
                    metrics=metrics(("loss", 0.5, 2)))
    panel.update(done)
    assert display.shown == [panel.widget] and display.updates == [panel.widget]
    bundle = panel.widget._repr_mimebundle_()
    assert WIDGET_VIEW in bundle
    assert bundle["text/plain"] == summary_text(done)
    assert bundle["text/html"] == summary_html(done)
    assert "model: s3://bucket/fraud-1/output/model.tar.gz" in bundle["text/plain"]
    assert panel.controls.layout.display == "none"


def test_a_failed_jobs_summary_shows_its_last_lines_without_metric_lines():
    failed = training(LOGS + ["Traceback: boom"], status="Failed", secondary="Failed",
                      failure_reason="AlgorithmError: exit 1")
    text = summary_text(failed)
    assert text.splitlines()[-3:] == ["    epoch 1", "    epoch 2", "    Traceback: boom"]
    html = result_html(failed)
    assert "epoch 1\nepoch 2\nTraceback: boom</pre>" in html and "#metric" not in html


def test_the_text_job_panel_still_prints_every_line():
    lines: list[str] = []
    TextJobPanel(write=lines.append).update(training(LOGS))
    assert [line.removeprefix("  | ") for line in lines[1:]] == LOGS


def test_final_metrics_are_a_record_table():
    done = training([], status="Completed", secondary="Completed", model_data="s3://b/m",
                    final_metrics={"loss": 0.25, "accuracy": 0.975})
    html = result_html(done)
    assert "<table class='sm-magics-table sm-final-metrics'>" in html
    assert ("<tr><th style='text-align:left'>accuracy</th>"
            "<td style='text-align:left'>0.975</td></tr>") in html


# ---------------------------------------------------------------- build panel


def built(panel, image: ContainerImage = IMAGE) -> None:
    for stage in ("Prepare", "Look up", "Build", "Push"):
        panel.stage(stage)
    panel.log("Step 1/2 : FROM python")
    panel.layer("aaa111", "Pushed", None, 2048)
    panel.layer("bbb222", "Layer already exists", None, None)
    panel.layer("ccc333", "Mounted from library/python", None, None)
    panel.finished(image)


def test_a_finished_build_panel_saves_as_a_summary_of_the_image():
    display = FakeDisplay()
    panel = build_panel("fraud", widgets=True, display=display)
    assert display.shown == [panel.widget]
    assert "text/html" not in panel.widget._repr_mimebundle_()
    built(panel)
    assert display.updates == [panel.widget]
    bundle = panel.widget._repr_mimebundle_()
    assert WIDGET_VIEW in bundle
    assert bundle["text/plain"] == "\n".join([
        "%%sm_container fraud",
        "✓ Prepare → ✓ Look up → ✓ Build → ✓ Push",
        "image   127.0.0.1:5000/fraud:ab12",
        "state   built and pushed",
        "digest  sha256:" + "0" * 64,
        "layers  1 pushed, 2 already in the registry",
    ])
    html = bundle["text/html"]
    assert "<b>%%sm_container fraud</b>" in html
    assert "<span style='color:#2e7d32'>✓ Push</span>" in html
    assert "<td style='text-align:left'><code>127.0.0.1:5000/fraud:ab12</code></td>" in html
    assert "built and pushed" in html and "sha256:" + "0" * 64 in html
    assert "1 pushed, 2 already in the registry" in html


def test_an_unchanged_image_summary_shows_the_stages_it_skipped():
    panel = build_panel("fraud", widgets=True, display=FakeDisplay())
    panel.stage("Prepare")
    panel.stage("Look up")
    unchanged = ContainerImage("fraud", IMAGE.uri, "ab12", IMAGE.digest, IMAGE.build_dir, False)
    panel.finished(unchanged)
    text = panel.widget._repr_mimebundle_()["text/plain"]
    assert text.splitlines()[1] == "✓ Prepare → ✓ Look up → ○ Build → ○ Push"
    assert "state   unchanged, already in the registry" in text
    assert "layers" not in text


def test_a_failed_build_panel_saves_the_failed_stage_and_the_error():
    display = FakeDisplay()
    panel = build_panel("fraud", widgets=True, display=display)
    panel.stage("Prepare")
    panel.stage("Look up")
    panel.stage("Build")
    panel.failed(RemoteFailure("Build of fraud failed at step 3/6: RUN false\nmore detail"))
    assert display.updates == [panel.widget]
    bundle = panel.widget._repr_mimebundle_()
    assert bundle["text/plain"].splitlines() == [
        "%%sm_container fraud",
        "✓ Prepare → ✓ Look up → ✗ Build → ○ Push",
        "error  Build of fraud failed at step 3/6: RUN false",
    ]
    assert "<span style='color:#c62828;font-weight:bold'>✗ Build</span>" in bundle["text/html"]
    assert "failed at step 3/6" in panel.result.value


def test_the_live_build_panel_still_ends_with_the_image_and_digest():
    panel = build_panel("fraud", widgets=True, display=FakeDisplay())
    built(panel)
    assert panel.widget.children[-1] is panel.result
    assert IMAGE.uri in panel.result.value and f"digest <code>{IMAGE.digest}" in panel.result.value
    assert "✓ Push" in panel.stages.value
    assert "sm-build-panel" in panel.widget._dom_classes


def test_a_build_event_sends_one_message_per_part_that_changed(sent):
    panel = build_panel("fraud", widgets=True, display=FakeDisplay())
    sent.clear()
    panel.stage("Prepare", "writing the build context")
    assert Counter(widget for widget, _ in sent) == {panel.stages: 1, panel.current_step: 1}
    sent.clear()
    panel.step("writing the build context")
    assert sent == []


def test_without_widgets_the_build_panel_prints_lines():
    lines: list[str] = []
    panel = build_panel("fraud", widgets=False)
    panel.write = lines.append
    panel.stage("Build", IMAGE.uri)
    panel.finished(IMAGE)
    assert lines == ["[3/4] Build: 127.0.0.1:5000/fraud:ab12",
                     "Done: 127.0.0.1:5000/fraud:ab12 (built and pushed)",
                     "  digest sha256:" + "0" * 64]


# ---------------------------------------------------------------- upload progress


def test_the_upload_bar_sends_its_value_and_finished_style_in_one_message(sent):
    display = FakeDisplay()
    progress = upload_progress("--input train", widgets=True, display=display)
    progress(50_000_000, 50_000_000)
    bar, label = display.shown[0].children
    assert bar.bar_style == "success" and label.value == "50 / 50 MB"
    # one message carries both (the order of the keys within it is the widget's own)
    assert sorted([keys for widget, keys in sent if widget is bar][-1]) == ["bar_style", "value"]


# ---------------------------------------------------------------- tables


def test_a_table_shows_only_its_code_columns_as_code():
    table = Table(("setting", "value", "from"), [("region", "eu-west-1", "%sm_config")],
                  code=("setting", "value"), css_class="sm-magics-config")
    assert repr(table).splitlines()[2].split() == ["region", "eu-west-1", "%sm_config"]
    html = table._repr_html_()
    assert html.startswith("<table class='sm-magics-table sm-magics-config'><thead>")
    assert "<td><code>region</code></td><td><code>eu-west-1</code></td><td>%sm_config</td>" in html


def test_a_record_reads_as_field_lines_and_as_a_table_with_row_headers():
    record = Table.record({"image": "fraud:ab12", "state": "<built>"}, title="fraud",
                          code=("image",))
    assert repr(record) == "fraud\nimage  fraud:ab12\nstate  <built>"
    html = record._repr_html_()
    assert "<caption>fraud</caption>" in html and "<thead>" not in html
    assert ("<tr><th style='text-align:left'>state</th>"
            "<td style='text-align:left'>&lt;built&gt;</td></tr>") in html
    assert "<td style='text-align:left'><code>fraud:ab12</code></td>" in html


def test_a_container_image_renders_through_a_record_table():
    html = IMAGE._repr_html_()
    assert html.startswith("<table class='sm-magics-table sm-magics-image'>"
                           "<caption>ContainerImage fraud</caption>")
    assert "<td style='text-align:left'>built and pushed</td>" in html
    assert "<td style='text-align:left'><code>lr=0.05</code></td>" in html


def test_a_build_note_stays_in_the_panel_and_in_the_saved_summary():
    display = FakeDisplay()
    panel = build_panel("fraud", widgets=True, display=display)
    panel.stage("Prepare")
    panel.note("Skipped the tag created-by=sm-magics on the new repository fraud: "
               "ecr:TagResource is not allowed for these credentials.")
    for line in range(40):  # more build output than the log tail keeps
        panel.log(f"step output {line}")
    panel.finished(IMAGE)
    assert "ecr:TagResource is not allowed" in panel.notes.value
    assert "step output 0" not in panel.log_tail.value
    assert "note: Skipped the tag created-by=sm-magics" in panel.summary_text()
    assert "ecr:TagResource is not allowed" in panel.summary_html()


def test_the_text_build_panel_prints_a_note_once_as_a_note(capsys):
    panel = build_panel("fraud", widgets=False)
    panel.note("Skipped the policy on the new repository fraud.")
    assert capsys.readouterr().out == "  note: Skipped the policy on the new repository fraud.\n"


def test_a_registry_build_panel_shows_its_own_stages_and_which_builder_ran_and_why():
    from sm_magics.registry_build import STAGES as REGISTRY_STAGES

    panel = build_panel("fraud", widgets=True, display=FakeDisplay())
    panel.plan(REGISTRY_STAGES, "registry", "no Docker engine answers")
    for stage in REGISTRY_STAGES:
        panel.stage(stage)
    panel.layer("aaa111", "Copying", 1024, 4096)
    panel.step("copying the base")  # a step is shown at once, with the layers as they are
    assert "<progress value='1024' max='4096'></progress>" in panel.layers.value
    panel.layer("aaa111", "Copied", 4096, 4096)
    panel.layer("bbb222", "Pushed", 3000, 3000)
    panel.finished(IMAGE)
    assert "builder: registry (no Docker engine answers)" in panel.header.value
    assert panel.widget._repr_mimebundle_()["text/plain"].splitlines() == [
        "%%sm_container fraud",
        "✓ Prepare → ✓ Look up → ✓ Base → ✓ Dependencies → ✓ Code → ✓ Upload → ✓ Tag",
        "image    127.0.0.1:5000/fraud:ab12",
        "state    built and pushed",
        "builder  registry (no Docker engine answers)",
        "digest   sha256:" + "0" * 64,
        "layers   1 pushed, 1 copied from the base",
    ]


def test_the_text_build_panel_numbers_the_registry_builders_stages(capsys):
    from sm_magics.registry_build import STAGES as REGISTRY_STAGES

    panel = build_panel("fraud", widgets=False)
    panel.plan(REGISTRY_STAGES, "registry", "chosen with the builder setting")
    panel.stage("Upload", "127.0.0.1:5000/fraud")
    assert capsys.readouterr().out.splitlines() == [
        "Builder: registry (chosen with the builder setting)",
        "[6/7] Upload: 127.0.0.1:5000/fraud",
    ]
