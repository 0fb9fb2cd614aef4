"""``%%sm_container`` against the real Docker engine, the sandbox registry and its ECR.

Every test checks what really happened: the registry's HTTP API, the images in
the Docker engine, ECR's repositories, and what the built image does when run
under SageMaker's directory layout.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from datetime import UTC

import pytest
from IPython.core.error import UsageError

from sm_magics.build import BuildListener, BuildService, ContainerImage
from sm_magics.config import DEFAULT_REPOSITORY_PREFIX, resolve
from sm_magics.ecr import Ecr, Token, repository_name
from sm_magics.errors import RemoteFailure
from sm_magics.recipe import Recipe

pytestmark = [pytest.mark.docker, pytest.mark.sandbox, pytest.mark.slow]

MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"

TRAINING_CODE = """\
import json
import os

lr = 0.05  # @param
epochs = 3  # @param
greeting = open("greeting.txt").read().strip()
result = {"lr": lr, "epochs": epochs, "greeting": greeting, "mode": os.environ["MODE"]}
(model_dir / "result.json").write_text(json.dumps(result))
log_metric("loss", 0.25, step=epochs)
print("trained with", result)
"""


def repository(name: str) -> str:
    """The ECR repository of container ``name`` by default: sagemaker-NAME."""
    return repository_name(name, DEFAULT_REPOSITORY_PREFIX)


def registry_digest(name: str, tag: str) -> str | None:
    """The digest the sandbox registry holds for container name's tag, asked over its HTTP API."""
    host = os.environ["SM_MAGICS_REGISTRY"]
    request = urllib.request.Request(f"http://{host}/v2/{repository(name)}/manifests/{tag}",
                                     method="HEAD",
                                     headers={"Accept": MANIFEST})
    try:
        with urllib.request.urlopen(request) as response:
            return response.headers["Docker-Content-Digest"]
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def registry_tags(name: str) -> list[str]:
    host = os.environ["SM_MAGICS_REGISTRY"]
    try:
        with urllib.request.urlopen(f"http://{host}/v2/{repository(name)}/tags/list") as response:
            return sorted(json.load(response)["tags"] or [])
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return []
        raise


def ecr_repositories() -> set[str]:
    import boto3

    pages = boto3.client("ecr").get_paginator("describe_repositories").paginate()
    return {repo["repositoryName"] for page in pages for repo in page["repositories"]}


def local_image_ids(name: str) -> set[str]:
    import docker

    host = os.environ["SM_MAGICS_REGISTRY"]
    images = docker.from_env().images.list(name=f"{host}/{name}")
    return {image.id for image in images}


@pytest.fixture(scope="module", autouse=True)
def remove_built_images(sandbox):
    """Remove the images these tests tag in the Docker engine, before and after them."""
    import docker

    client = docker.from_env()

    def remove() -> None:
        prefixes = (f"{os.environ['SM_MAGICS_REGISTRY']}/", "it-local:")
        for image in client.images.list():
            for tag in image.tags:
                if tag.startswith(prefixes):
                    client.images.remove(tag, noprune=False)

    remove()
    yield
    remove()


class Recorder(BuildListener):
    """Keeps what the build service reported: stages, Dockerfile steps, final layer states."""

    def __init__(self) -> None:
        self.stages: list[str] = []
        self.steps: list[str] = []
        self.layers: dict[str, str] = {}

    def stage(self, name: str, detail: str = "") -> None:
        self.stages.append(name)

    def step(self, text: str) -> None:
        self.steps.append(text)

    def layer(self, layer_id: str, status: str, current: int | None, total: int | None) -> None:
        self.layers[layer_id] = status

    def count(self, prefix: str) -> int:
        return sum(status.startswith(prefix) for status in self.layers.values())


def build(tmp_path, name: str, body: str, **options) -> tuple[ContainerImage, Recorder]:
    recorder = Recorder()
    service = BuildService(resolve(), listener=recorder, cwd=tmp_path)
    recipe = Recipe(name=name, body=body, base=os.environ["SM_MAGICS_BASE"], cwd=tmp_path,
                    **options)
    return service.build(recipe), recorder


# ---------------------------------------------------------------- building


def test_a_cell_builds_pushes_and_runs_train_under_the_sagemaker_layout(sandbox, ip, tmp_path,
                                                                      capsys):
    (tmp_path / "greeting.txt").write_text("hello from a --file\n")
    image = ip.run_cell_magic(
        "sm_container", "it-runs -o image --file greeting.txt --env MODE=sandbox",
        TRAINING_CODE,
    )
    shown = capsys.readouterr().out
    for expected in ("[1/4] Prepare", "[3/4] Build", "Step 1/", "[4/4] Push", ": Pushed",
                     f"Done: {image.uri} (built and pushed)", f"digest {image.digest}"):
        assert expected in shown

    assert image is ip.user_ns["image"]
    assert image.built and image.pushed
    assert image.param_defaults == {"lr": 0.05, "epochs": 3}
    # the default repository is one AmazonSageMakerFullAccess may push to
    assert image.uri == f"{os.environ['SM_MAGICS_REGISTRY']}/sagemaker-it-runs:{image.tag}"
    assert registry_digest("it-runs", image.tag) == image.digest
    assert sorted(p.name for p in image.build_dir.iterdir()) == [
        "Dockerfile", "greeting.txt", "train.py"]
    assert image.build_dir == tmp_path / ".sm_magics" / "builds" / "it-runs" / image.tag

    import docker

    ml = tmp_path / "opt-ml"
    (ml / "input" / "config").mkdir(parents=True)
    (ml / "input" / "data" / "params").mkdir(parents=True)
    (ml / "model").mkdir()
    (ml / "input" / "config" / "inputdataconfig.json").write_text(json.dumps(
        {"params": {"ContentType": "application/json"}}))
    (ml / "input" / "data" / "params" / "params.json").write_text(
        json.dumps({"lr": 0.5, "epochs": 7}))
    logs = docker.from_env().containers.run(
        image.uri, "train", network_mode="host", remove=True,
        volumes={str(ml): {"bind": "/opt/ml", "mode": "rw"}},
    ).decode()

    assert json.loads((ml / "model" / "result.json").read_text()) == {
        "lr": 0.5, "epochs": 7, "greeting": "hello from a --file", "mode": "sandbox"}
    assert "#metric loss=0.25 step=7" in logs


def test_the_latest_image_of_each_name_is_remembered(sandbox, ip):
    first = ip.run_cell_magic("sm_container", "it-remembered", "print('one')\n")
    second = ip.run_cell_magic("sm_container", "it-remembered", "print('two')\n")
    magics = ip.magics_manager.registry["SageMakerMagics"]
    assert first.tag != second.tag
    assert magics.images["it-remembered"] is second


def test_an_unchanged_cell_builds_and_pushes_nothing(sandbox, tmp_path):
    first, _ = build(tmp_path, "it-unchanged", "print('same')\n")
    tags_before = registry_tags("it-unchanged")
    images_before = local_image_ids("it-unchanged")

    again, recorder = build(tmp_path, "it-unchanged", "print('same')\n")

    assert again.built is False
    assert (again.uri, again.digest) == (first.uri, first.digest)
    assert recorder.stages == ["Prepare", "Look up"]
    assert recorder.steps == [] and recorder.layers == {}
    assert registry_tags("it-unchanged") == tags_before
    assert local_image_ids("it-unchanged") == images_before


def test_editing_only_a_param_value_builds_nothing(sandbox, ip, capsys):
    first = ip.run_cell_magic("sm_container", "it-param", "lr = 0.05  # @param\nprint(lr)\n")
    capsys.readouterr()
    edited = ip.run_cell_magic("sm_container", "it-param", "lr = 0.9  # @param\nprint(lr)\n")
    shown = capsys.readouterr().out

    assert edited.built is False
    assert (edited.tag, edited.digest) == (first.tag, first.digest)
    assert edited.param_defaults == {"lr": 0.9}
    assert registry_tags("it-param") == [first.tag]
    assert "[2/4] Look up" in shown and "[3/4] Build" not in shown
    assert f"Done: {first.uri} (unchanged, already in the registry)" in shown


def test_editing_code_rebuilds_and_pushes_only_the_changed_layer(sandbox, tmp_path):
    (tmp_path / "vocab.txt").write_text("a\nb\n")
    options = {"files": ("vocab.txt",), "env": ("MODE=x",), "run": ("echo prepared > /ready",)}
    first, _ = build(tmp_path, "it-edit", "print('v1')\n", **options)

    edited, recorder = build(tmp_path, "it-edit", "print('v2')\n", **options)

    assert edited.built and edited.tag != first.tag
    assert recorder.count("Pushed") == 1
    unchanged = recorder.count("Layer already exists") + recorder.count("Mounted from")
    assert unchanged == len(recorder.layers) - 1 >= 3
    assert registry_digest("it-edit", edited.tag) == edited.digest
    assert registry_digest("it-edit", first.tag) == first.digest


def test_a_dockerfile_cell_builds_as_written(sandbox, ip, tmp_path):
    (tmp_path / "train.sh").write_text("#!/bin/sh\necho trained by a shell script\n")
    (tmp_path / "train.sh").chmod(0o755)
    dockerfile = (f"FROM {os.environ['SM_MAGICS_BASE']}\n"
                  "COPY train.sh /usr/local/bin/train\nCMD [\"train\"]\n")
    image = ip.run_cell_magic("sm_container", "it-dockerfile --dockerfile --file train.sh",
                              dockerfile)

    import docker

    logs = docker.from_env().containers.run(image.uri, network_mode="host", remove=True)
    assert logs.decode().strip() == "trained by a shell script"
    assert registry_digest("it-dockerfile", image.tag) == image.digest


def test_no_push_builds_in_the_local_engine_only(sandbox, ip):
    import docker

    image = ip.run_cell_magic("sm_container", "it-local --no-push", "print('local')\n")
    again = ip.run_cell_magic("sm_container", "it-local --no-push", "print('local')\n")

    assert (image.built, image.pushed, again.built) == (True, False, False)
    assert image.uri == f"it-local:{image.tag}"
    assert docker.from_env().images.get(image.uri).id == image.digest == again.digest
    assert registry_tags("it-local") == []
    assert not {"it-local", repository("it-local")} & ecr_repositories()


# ---------------------------------------------------------------- failures


def test_a_failing_build_names_its_step_and_pushes_nothing(sandbox, ip):
    import docker

    with pytest.raises(RemoteFailure) as caught:
        ip.run_cell_magic("sm_container", 'it-fails --run "echo checking the data && exit 3"',
                          "print('never')\n")
    failure = caught.value
    assert "Build of it-fails failed at step" in failure.what
    assert "RUN echo checking the data && exit 3" in failure.what
    assert "checking the data" in failure.log_tail
    assert "returned a non-zero code: 3" in failure.reason
    assert any("Last log lines:" in line for line in failure._render_traceback_())
    assert registry_tags("it-fails") == []
    assert docker.from_env().images.list(
        name=f"{os.environ['SM_MAGICS_REGISTRY']}/{repository('it-fails')}") == []


@pytest.mark.parametrize(
    ("line", "body", "message"),
    [
        ("Bad_Name", "print(1)\n", "cannot be an ECR repository name"),
        ("it-syntax", "for x in range(3)\n    print(x)\n", "syntax error at line 1"),
        ("it-nofile --file missing.csv", "print(1)\n", "--file missing.csv does not exist"),
        ("it-noreqs --requirements nope.txt", "print(1)\n", "cannot be read"),
        ("it-env --env JUSTAKEY", "print(1)\n", "is not KEY=VALUE"),
        ("it-param-json", "lr = np.float32(0.1)  # @param\n", "is not a JSON value"),
        ("it-dockerfile-bad --dockerfile", "RUN echo no base\n", "must start with a FROM"),
        ("it-base --base Not_An_Image!", "print(1)\n", "is not a container image reference"),
        ("it-builder --builder codebuild", "print(1)\n", "is not available yet"),
        ("it-var -o 1image", "print(1)\n", "give a Python variable name"),
        ("it-secret --env AWS_SECRET_ACCESS_KEY=x", "print(1)\n", "would store AWS credentials"),
    ],
)
def test_invalid_cells_are_usage_errors_that_create_no_repository(sandbox, ip, line, body,
                                                                  message):
    before = ecr_repositories()
    with pytest.raises(UsageError) as caught:
        ip.run_cell_magic("sm_container", line, body)
    assert type(caught.value) is UsageError
    assert message in str(caught.value)
    assert ecr_repositories() == before


def test_repositories_are_created_with_scan_on_push_and_encryption(sandbox, ip):
    import boto3

    ip.run_cell_magic("sm_container", "it-settings", "print('repo')\n")
    repo = boto3.client("ecr").describe_repositories(repositoryNames=[repository("it-settings")])
    settings = repo["repositories"][0]
    assert settings["imageScanningConfiguration"] == {"scanOnPush": True}
    assert settings["encryptionConfiguration"]["encryptionType"] == "AES256"


# ---------------------------------------------------------------- login


def test_a_login_token_is_reused_until_it_must_be_renewed(sandbox):
    from sm_magics.aws import AwsContext

    ecr = Ecr(AwsContext(resolve()))
    token = ecr.token(refresh=True)
    assert ecr.token() is token
    assert token.username == "AWS" and token.password
    renewed = ecr.token(refresh=True)
    assert renewed is not token and renewed.credential == token.credential


def test_a_token_that_arrives_already_expired_is_used_briefly_then_fetched_again():
    from datetime import datetime

    now = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    stale = Token.from_response({"authorizationToken": "QVdTOnB3",
                                 "expiresAt": datetime(2015, 1, 1, tzinfo=UTC)}, now)
    fresh = Token.from_response({"authorizationToken": "QVdTOnB3",
                                 "expiresAt": datetime(2026, 1, 1, 12, tzinfo=UTC)}, now)
    assert now < stale.renew_at <= now + 120
    assert fresh.renew_at == now + 12 * 3600 - 300
    assert (stale.username, stale.password) == ("AWS", "pw")


# ---------------------------------------------------------------- display


def test_the_widget_panel_highlights_the_stage_and_shows_the_tail_layers_and_result(tmp_path):
    from sm_magics.ui import WidgetBuildPanel

    panel = WidgetBuildPanel("fraud")
    panel.stage("Prepare")
    panel.stage("Look up")
    panel.stage("Build", "127.0.0.1:5000/fraud:ab12")
    panel.step("Step 5/6 : COPY train.py /opt/program/train.py")
    for number in range(30):
        panel.log(f"build line {number}")
    panel.stage("Push")
    panel.layer("aaa111", "Pushing", 512, 2048)
    panel.layer("bbb222", "Layer already exists", None, None)
    assert "✓ Build" in panel.stages.value and "▶ Push" in panel.stages.value
    assert "build line 29" in panel.log_tail.value and "build line 10" not in panel.log_tail.value

    image = ContainerImage("fraud", "127.0.0.1:5000/fraud:ab12", "ab12", "sha256:" + "0" * 64,
                           tmp_path, True, {"lr": 0.05})
    panel.finished(image)
    assert "<progress value='512' max='2048'>" in panel.layers.value
    assert "Layer already exists" in panel.layers.value
    assert "✓ Push" in panel.stages.value
    assert image.uri in panel.result.value and image.digest in panel.result.value


def test_in_a_notebook_the_panel_is_a_widget_whose_saved_state_ends_with_the_image(
        sandbox, tmp_path):
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell("%load_ext sm_magics"),
        nbformat.v4.new_code_cell("%%sm_container it-notebook -o image\nprint('from a kernel')\n"),
        nbformat.v4.new_code_cell("print(image.uri, image.digest)"),
    ]
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()

    build_cell = notebook.cells[1]
    kinds = [out["output_type"] for out in build_cell.outputs]
    assert kinds == ["display_data", "execute_result"]
    assert "application/vnd.jupyter.widget-view+json" in build_cell.outputs[0]["data"]
    uri, digest = notebook.cells[2].outputs[0]["text"].split()
    state = notebook.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    values = [m["state"].get("value", "") for m in state.values()]
    assert any(uri in v and digest in v for v in values)
    assert any("✓ Push" in v for v in values)
    assert registry_digest("it-notebook", uri.rsplit(":", 1)[1]) == digest


def test_a_failed_build_marks_its_stage_in_the_widget_panel():
    from sm_magics.ui import WidgetBuildPanel

    panel = WidgetBuildPanel("fraud")
    panel.stage("Build")
    panel.failed(RemoteFailure("Build of fraud failed at step 3/6: RUN false"))
    assert "✗ Build" in panel.stages.value
    assert "failed at step 3/6" in panel.result.value


def test_a_container_image_reads_well_as_text_and_html(tmp_path):
    image = ContainerImage("fraud", "127.0.0.1:5000/fraud:ab12", "ab12", "sha256:" + "1" * 64,
                           tmp_path, False, {"lr": 0.05})
    assert repr(image) == ("ContainerImage fraud  127.0.0.1:5000/fraud:ab12 "
                           "(unchanged, already in the registry)")
    html = image._repr_html_()
    assert "127.0.0.1:5000/fraud:ab12" in html and "sha256:" + "1" * 64 in html
    assert "lr=0.05" in html
