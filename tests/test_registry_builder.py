"""Images built with no Docker engine: assembled through the sandbox registry's API.

The notebook's Docker endpoint points nowhere in these tests (``no_engine``):
whatever the registry builder does, it does over HTTP. The images it makes
run as sandbox training jobs (the sandbox's job runner has its own engine, as
SageMaker has its hosts) and with ``--local``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile

import boto3
import pytest
from IPython.core.error import UsageError

from sm_magics.layers import File, Symlink, write_layer
from sm_magics.registry import Registry, parse_reference
from sm_magics.registry_build import LAUNCHER, MANIFEST_TYPE

pytestmark = [pytest.mark.sandbox]

CELL = 'lr = 0.1  # @param\nprint("trained with lr", lr, flush=True)\n'


@pytest.fixture
def no_engine(monkeypatch, sandbox):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    from sm_magics import build

    monkeypatch.setattr(build, "_ENGINE", {})


def registry() -> Registry:
    return Registry(os.environ["SM_MAGICS_REGISTRY"])


def manifest_of(uri: str) -> dict:
    reference = parse_reference(uri)
    return json.loads(registry().manifest(reference.repository, reference.reference).raw)


def blob_counts(lines: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in lines:
        if "layer " in line and ": " in line:
            status = line.split(": ", 1)[1].split(" (")[0]
            counts[status] = counts.get(status, 0) + 1
    return counts


def test_a_cell_is_built_without_docker_and_trains_as_a_sandbox_job(ip, no_engine, capsys):
    image = ip.run_cell_magic("sm_container", "reg-plain", CELL)
    printed = capsys.readouterr().out
    assert "Builder: registry (no Docker engine answers)" in printed
    assert image.built and image.pushed
    manifest = manifest_of(image.uri)
    assert manifest["mediaType"] == MANIFEST_TYPE
    base = manifest_of(os.environ["SM_MAGICS_SANDBOX_BASE_URI"])
    # the base's layers, then the code layer
    assert [layer["digest"] for layer in manifest["layers"][:-1]] == [
        layer["digest"] for layer in base["layers"]]
    assert "Copied" in printed and "Mounted" not in printed  # ECR's blob mounting is off
    reference = parse_reference(image.uri)
    config = registry().config(reference.repository, manifest["config"])
    assert config["config"]["Cmd"] == ["train"]
    assert config["config"]["Env"][-1].startswith("PATH=/opt/sm-magics/bin:")
    assert config["created"] == "1970-01-01T00:00:00Z"
    with registry().open_blob(reference.repository, manifest["layers"][-1]["digest"]) as blob:
        data = blob.read()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as layer:
        files = {m.name: m for m in layer.getmembers() if m.isfile()}
        launcher = layer.extractfile(files["opt/sm-magics/bin/train"]).read()
    assert sorted(files) == ["opt/program/train.py", "opt/sm-magics/bin/train"]
    assert launcher == LAUNCHER.encode()
    assert files["opt/sm-magics/bin/train"].mode == 0o755

    run = ip.run_line_magic("sm_train", "reg-plain --hp lr=0.5 --wait")
    assert run.status == "Completed"
    assert "trained with lr 0.5" in run.logs()

    capsys.readouterr()
    again = ip.run_cell_magic("sm_container", "reg-plain", CELL)
    assert not again.built and again.digest == image.digest
    assert "Upload" not in capsys.readouterr().out  # one look-up, nothing sent


def test_with_blob_mounting_enabled_the_base_layers_are_mounted_from_its_ecr_repository(
        ip, no_engine, capsys):
    """Once ECR's BLOB_MOUNTING is ENABLED, a base in an ECR repository of the same registry
    (same encryption) has its layers mounted, not copied."""
    ecr = boto3.client("ecr")
    base = parse_reference(os.environ["SM_MAGICS_SANDBOX_BASE_URI"])
    ecr.create_repository(repositoryName=base.repository,
                          encryptionConfiguration={"encryptionType": "AES256"})
    try:
        ecr.put_account_setting(name="BLOB_MOUNTING", value="ENABLED")
        image = ip.run_cell_magic("sm_container", "reg-mounted", CELL)
        printed = capsys.readouterr().out
    finally:
        ecr.put_account_setting(name="BLOB_MOUNTING", value="DISABLED")
        ecr.delete_repository(repositoryName=base.repository, force=True)
    assert image.pushed
    assert "Mounted from base" in printed and "Copied" not in printed


def test_the_same_cell_gives_the_same_digest_from_two_fresh_folders(ip, no_engine, tmp_path):
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    digests = []
    for folder, repository in (("one", "sagemaker-reg-same-1"), ("two", "sagemaker-reg-same-2")):
        os.chdir(tmp_path / folder)
        (tmp_path / folder / "helper.py").write_text("VALUE = 42\n")
        os.chmod(tmp_path / folder / "helper.py", 0o600 if folder == "one" else 0o644)
        image = ip.run_cell_magic(
            "sm_container", f"reg-same --file helper.py --repository {repository}",
            "from helper import VALUE\nprint(VALUE)\n")
        assert image.built
        digests.append(image.digest)
    assert digests[0] == digests[1]


def test_requirements_are_installed_for_the_images_python_and_imported_first(
        ip, no_engine, capsys):
    image = ip.run_cell_magic(
        "sm_container", "reg-deps --pip six==1.16.0",
        'import six\nprint("six", six.__version__, "from", six.__file__, flush=True)\n')
    printed = capsys.readouterr().out
    assert "[4/7] Dependencies: 1 requirement(s)" in printed
    assert "pip: wheels for Linux x86_64, CPython 3.11" in printed
    manifest = manifest_of(image.uri)
    assert len(manifest["layers"]) == len(manifest_of(
        os.environ["SM_MAGICS_SANDBOX_BASE_URI"])["layers"]) + 2
    run = ip.run_line_magic("sm_train", "reg-deps --wait")
    assert run.status == "Completed"
    assert "six 1.16.0 from /opt/sm-magics/deps/six.py" in run.logs()

    # a code edit: the dependencies layer comes from the cache and is already there
    capsys.readouterr()
    ip.run_cell_magic("sm_container", "reg-deps --pip six==1.16.0",
                      'import six\nprint("edited", six.__version__, flush=True)\n')
    printed = capsys.readouterr().out
    assert "dependencies: from the cache" in printed
    assert blob_counts(printed.splitlines()) == {"Layer already exists": 2, "Pushed": 1}


def test_options_that_run_commands_need_docker_and_nothing_is_created(ip, no_engine):
    for line in ("reg-apt --builder registry --apt libgomp1", "reg-run --builder registry "
                 "--run 'echo hi'"):
        with pytest.raises(UsageError) as err:
            ip.run_cell_magic("sm_container", line, "print(1)\n")
        message = str(err.value)
        assert "needs a Docker engine" in message and "--builder docker" in message
        assert ("--apt" in message) or ("--run" in message)
    names = {r["repositoryName"] for r in boto3.client("ecr").describe_repositories()[
        "repositories"]}
    assert not {"sagemaker-reg-apt", "sagemaker-reg-run"} & names


def test_a_multi_platform_base_resolves_to_its_amd64_image(ip, no_engine, capsys):
    base = parse_reference(os.environ["SM_MAGICS_SANDBOX_BASE_URI"])
    hub = registry()
    amd64 = hub.manifest(base.repository, base.reference)
    # an arm64 image: its own config (and the same layer, which is never read)
    arm_config = json.dumps({"architecture": "arm64", "os": "linux",
                             "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    arm_digest = "sha256:" + hashlib.sha256(arm_config).hexdigest()
    hub.upload_blob("multi/base", io.BytesIO(arm_config), arm_digest, len(arm_config))
    for blob in (*amd64.layers, amd64.config):
        assert hub.mount_blob("multi/base", blob.digest, base.repository)
    arm_manifest = json.dumps({
        "schemaVersion": 2, "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "size": len(arm_config), "digest": arm_digest},
        "layers": [layer.as_json() for layer in amd64.layers]}).encode()
    arm = hub.put_manifest("multi/base", "arm64", arm_manifest, MANIFEST_TYPE)
    hub.put_manifest("multi/base", "amd64", amd64.raw, amd64.media_type)
    index = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
        "manifests": [
            {"mediaType": MANIFEST_TYPE, "size": len(arm_manifest), "digest": arm,
             "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}},
            {"mediaType": MANIFEST_TYPE, "size": len(amd64.raw), "digest": amd64.digest,
             "platform": {"architecture": "amd64", "os": "linux"}}]}).encode()
    hub.put_manifest("multi/base", "both", index,
                     "application/vnd.docker.distribution.manifest.list.v2+json")

    image = ip.run_cell_magic("sm_container", f"reg-multi --base {hub.host}/multi/base:both",
                              'print("multi", flush=True)\n')
    assert [layer["digest"] for layer in manifest_of(image.uri)["layers"][:-1]] == [
        layer.digest for layer in amd64.layers]
    run = ip.run_line_magic("sm_train", "reg-multi --wait")
    assert run.status == "Completed" and "multi" in run.logs()


def test_a_conda_base_with_its_own_train_and_entrypoint_runs_the_cell(ip, no_engine, tmp_path):
    """A base shaped like a Deep Learning Container: /opt/conda/bin first on PATH with the
    training toolkit's own ``train`` there, and an ENTRYPOINT script that runs ``train``."""
    base = parse_reference(os.environ["SM_MAGICS_SANDBOX_BASE_URI"])
    hub = registry()
    sandbox_base = hub.manifest(base.repository, base.reference)
    config = hub.config(base.repository, sandbox_base.config)
    extra = write_layer({
        "/opt/conda/bin/train": File(b"#!/bin/sh\necho 'toolkit train: no sagemaker_program'"
                                     b"\nexit 1\n", 0o755),
        "/opt/conda/bin/python3": Symlink("/usr/bin/python3.11"),  # found through the link
        "/usr/local/bin/start_with_right_hostname.sh": File(
            b'#!/bin/sh\ncd /\nif [ "$1" = "train" ]; then echo "entrypoint: training"; fi\n'
            b'exec "$@"\n', 0o755),
    }, tmp_path)
    for layer in sandbox_base.layers:
        hub.mount_blob("dlc-like/pytorch-training", layer.digest, base.repository)
    hub.upload_blob("dlc-like/pytorch-training", extra.path, extra.digest, extra.size)
    config["config"]["Env"] = ["PATH=/opt/conda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:"
                               "/usr/bin:/sbin:/bin", "LANG=C.UTF-8"]
    config["config"]["Entrypoint"] = ["/usr/local/bin/start_with_right_hostname.sh"]
    config["config"]["Cmd"] = ["/bin/bash"]
    config["rootfs"]["diff_ids"].append(extra.diff_id)
    config_bytes = json.dumps(config).encode()
    config_digest = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
    hub.upload_blob("dlc-like/pytorch-training", io.BytesIO(config_bytes), config_digest,
                    len(config_bytes))
    hub.put_manifest("dlc-like/pytorch-training", "2.3-cpu-py311", json.dumps({
        "schemaVersion": 2, "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "size": len(config_bytes), "digest": config_digest},
        "layers": [layer.as_json() for layer in sandbox_base.layers] + [extra.descriptor()],
    }).encode(), MANIFEST_TYPE)

    ip.run_cell_magic(
        "sm_container",
        f"reg-dlc --base {hub.host}/dlc-like/pytorch-training:2.3-cpu-py311 --pip six==1.16.0",
        'import os, six\nprint("cell ran in", os.getcwd(), "with six", six.__version__, '
        'flush=True)\n')
    run = ip.run_line_magic("sm_train", "reg-dlc --wait")
    assert run.status == "Completed", run.describe().get("FailureReason")
    logs = run.logs()
    assert "entrypoint: training" in logs
    assert "cell ran in /opt/program with six 1.16.0" in logs
    assert not any("toolkit train" in line for line in logs)


def tags_of(repository: str) -> list[str]:
    import urllib.error
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    url = f"http://{os.environ['SM_MAGICS_REGISTRY']}/v2/{repository}/tags/list"
    try:
        with opener.open(url, timeout=10) as response:
            return json.loads(response.read()).get("tags") or []
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return []
        raise


def test_an_upload_stopped_midway_leaves_no_tag_and_the_next_run_resumes(
        ip, no_engine, tmp_path):
    from sm_magics.build import BuildListener, BuildService
    from sm_magics.config import resolve
    from sm_magics.recipe import Recipe

    (tmp_path / "weights.bin").write_bytes(os.urandom(20 * 1024 * 1024))
    recipe = Recipe(name="reg-resume", body='print("resumed", flush=True)\n',
                    base=os.environ["SM_MAGICS_BASE"], files=("weights.bin",), cwd=tmp_path)

    class Interrupting(BuildListener):
        """The user interrupts the kernel once 8 MiB of the code layer are sent."""

        def __init__(self) -> None:
            self.statuses: list[str] = []

        def layer(self, layer_id, status, current, total):
            self.statuses.append(status)
            if status == "Pushing" and total and total > 10 << 20 and current >= 8 << 20:
                raise KeyboardInterrupt

    first = Interrupting()
    with pytest.raises(KeyboardInterrupt):
        BuildService(resolve(), first, cwd=tmp_path).build(recipe)
    assert "Copied" in first.statuses  # ECR's blob mounting is off
    assert tags_of("sagemaker-reg-resume") == []

    class Recording(BuildListener):
        def __init__(self) -> None:
            self.statuses: list[str] = []

        def layer(self, layer_id, status, current, total):
            if status not in ("Pushing", "Copying", "Waiting"):
                self.statuses.append(status)

    second = Recording()
    image = BuildService(resolve(), second, cwd=tmp_path).build(recipe)
    assert image.built and tags_of("sagemaker-reg-resume") == [image.tag]
    # the base layer was there from the first run; the code layer is sent whole again
    assert second.statuses == ["Layer already exists", "Pushed"]
    run = ip.run_line_magic("sm_train", f"{image.uri} --wait")
    assert run.status == "Completed" and "resumed" in run.logs()


@pytest.mark.docker
def test_a_registry_built_image_runs_with_local_on_this_machines_engine(ip, sandbox, monkeypatch):
    engine = os.environ.get("DOCKER_HOST")
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    image = ip.run_cell_magic("sm_container", "reg-local", 'print("local run", flush=True)\n')
    assert image.pushed
    if engine is None:
        monkeypatch.delenv("DOCKER_HOST")
    else:
        monkeypatch.setenv("DOCKER_HOST", engine)
    run = ip.run_line_magic("sm_train", "reg-local --local --wait")
    assert run.status == "Completed"
    assert "local run" in run.logs()
