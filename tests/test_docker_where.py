"""Docker where the users are: the network setting, amd64 images, and honest engine errors.

Runs against the real engine, the sandbox and, for SageMaker Studio, the sandbox's
imitation of Studio's Docker endpoint (:mod:`sm_magics.sandbox.studio_docker`).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import tarfile
import threading

import boto3
import pytest
from IPython.core.error import UsageError

from sm_magics import config
from sm_magics.docker_engine import docker_client, engine_problem
from sm_magics.errors import RemoteFailure

ARM_BASE = "sm-magics-test/arm64-only:v1"


def repositories_named(container: str) -> set[str]:
    """The ECR repositories in the sandbox for ``container``, by either name it could have."""
    names = {r["repositoryName"] for r in boto3.client("ecr").describe_repositories()[
        "repositories"]}
    return names & {container, f"sagemaker-{container}"}


def test_the_docker_network_is_sagemaker_in_a_studio_space_and_says_why():
    studio = config.resolve(environ={"SAGEMAKER_SPACE_NAME": "my-space",
                                     "SAGEMAKER_APP_TYPE": "JupyterLab"}, sdk_defaults={})
    assert studio["docker_network"] == config.Value(
        "sagemaker", "SageMaker Studio (its Docker allows no other)")
    laptop = config.resolve(environ={}, sdk_defaults={}, platform={})
    assert laptop["docker_network"].value is None  # Docker's own default
    chosen = config.resolve(environ={"SAGEMAKER_SPACE_NAME": "my-space",
                                     "SM_MAGICS_DOCKER_NETWORK": "bridge"}, sdk_defaults={})
    assert chosen["docker_network"] == config.Value(
        "bridge", "environment (SM_MAGICS_DOCKER_NETWORK)")


def test_a_notebook_instance_is_not_taken_for_studio(tmp_path):
    metadata = tmp_path / "resource-metadata.json"
    metadata.write_text(json.dumps({
        "ResourceArn": "arn:aws:sagemaker:eu-west-1:111122223333:notebook-instance/nb",
        "ResourceName": "nb"}))
    found = config.load_platform_metadata(metadata, environ={})
    assert found["region"][0] == "eu-west-1" and "docker_network" not in found
    metadata.write_text(json.dumps({
        "ResourceArn": "arn:aws:sagemaker:eu-west-1:111122223333:app/d-abc/user/JupyterLab/default",
        "DomainId": "d-abc", "SpaceName": "team-space"}))
    assert config.load_platform_metadata(metadata, environ={})["docker_network"][0] == "sagemaker"


def test_a_bad_docker_network_is_a_usage_error(ip):
    with pytest.raises(UsageError) as err:
        ip.run_line_magic("sm_config", "--docker-network 'no such'")
    assert type(err.value) is UsageError
    assert "is not a Docker network name" in str(err.value)


@pytest.mark.docker
@pytest.mark.sandbox
def test_the_sandbox_builds_and_runs_with_host_networking_and_says_so(ip, sandbox):
    settings = ip.run_line_magic("sm_config", "")
    assert settings["docker_network"] == config.Value(
        "host", "sandbox (SM_MAGICS_DOCKER_NETWORK)")


def _image_archive(tag: str, architecture: str) -> bytes:
    """A `docker load` archive of a one-file image whose config names ``architecture``."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        data = b"an image for another machine\n"
        info = tarfile.TarInfo("hello.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    layer_bytes = layer.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()
    image_config = json.dumps({"architecture": architecture, "os": "linux", "config": {},
                               "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()
    config_name = hashlib.sha256(image_config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [tag],
                            "Layers": ["layer.tar"]}]).encode()
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        for name, data in (("layer.tar", layer_bytes), (config_name, image_config),
                           ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return archive.getvalue()


@pytest.mark.docker
@pytest.mark.sandbox
def test_a_base_that_is_not_amd64_is_a_usage_error_before_anything_is_created(ip, sandbox):
    client = docker_client()
    client.images.load(_image_archive(ARM_BASE, "arm64"))
    try:
        with pytest.raises(UsageError) as err:
            ip.run_cell_magic("sm_container", f"arm-base --base {ARM_BASE}", 'print("hi")\n')
    finally:
        client.images.remove(ARM_BASE, force=True)
    assert type(err.value) is UsageError
    assert f"the base image {ARM_BASE} on this machine is linux/arm64" in str(err.value)
    assert "docker pull --platform linux/amd64" in str(err.value)
    assert not repositories_named("arm-base")


@pytest.mark.docker
@pytest.mark.sandbox
def test_images_are_linux_amd64(ip, sandbox):
    image = ip.run_cell_magic("sm_container", "amd64-check", 'print("amd64")\n')
    attrs = docker_client().images.get(image.uri).attrs
    assert (attrs["Os"], attrs["Architecture"]) == ("linux", "amd64")


def _answering_server(answer: bytes):
    """A TCP server on 127.0.0.1 that answers every request with ``answer``; (port, stop)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    done = threading.Event()

    def serve():
        while not done.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    conn.recv(65536)
                    conn.sendall(answer)
                except OSError:
                    pass
        server.close()

    threading.Thread(target=serve, daemon=True).start()
    return server.getsockname()[1], done.set


def test_nothing_listening_is_said_with_a_hint_for_this_machine(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/none.sock")
    for name in ("SAGEMAKER_SPACE_NAME", "SAGEMAKER_APP_TYPE"):
        monkeypatch.delenv(name, raising=False)
    problem = engine_problem()
    assert problem.startswith(f"No Docker engine answers at unix://{tmp_path}/none.sock")
    with pytest.raises(UsageError) as err:
        docker_client()
    assert "sudo systemctl start docker" in str(err.value)


def test_something_that_answers_but_refuses_is_quoted_not_called_absent(monkeypatch):
    port, stop = _answering_server(
        b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\n"
        b"Content-Length: 24\r\nConnection: close\r\n\r\nthe engine is restarting")
    try:
        monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{port}")
        problem = engine_problem()
    finally:
        stop()
    assert problem.startswith(f"Something answers at tcp://127.0.0.1:{port} but refuses "
                              "the Docker API")
    assert "No Docker engine" not in problem


def test_in_studio_without_docker_the_hint_is_for_an_administrator(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/none.sock")
    monkeypatch.setenv("SAGEMAKER_SPACE_NAME", "team-space")
    with pytest.raises(UsageError) as err:
        docker_client()
    message = str(err.value)
    assert "SageMaker Studio space team-space" in message
    assert '"DockerSettings": {"EnableDockerAccess": "ENABLED"}' in message
    assert "Docker CLI" in message and "systemctl" not in message


@pytest.mark.docker
@pytest.mark.sandbox
def test_a_base_whose_registry_offers_no_amd64_variant_is_a_usage_error(ip, sandbox):
    client = docker_client()
    remote = f"{os.environ['SM_MAGICS_REGISTRY']}/arm64-only:v1"
    client.images.load(_image_archive(remote, "arm64"))
    for event in client.api.push(remote, stream=True, decode=True):
        assert "error" not in event, event
    client.images.remove(remote, force=True)  # only the registry has it now
    with pytest.raises(UsageError) as err:
        ip.run_cell_magic("sm_container", f"arm-remote --base {remote}", 'print("hi")\n')
    assert type(err.value) is UsageError
    assert (f"the base image {remote} has no linux/amd64 variant (its registry offers "
            "linux/arm64)") in str(err.value)
    assert not repositories_named("arm-remote")


@pytest.mark.docker
@pytest.mark.sandbox
def test_a_build_that_cannot_run_amd64_programs_says_how_to_turn_on_emulation(ip, sandbox):
    # the two lines Docker prints when a RUN step's program is for another CPU
    failing = ("echo 'standard_init_linux.go:228: exec user process caused: exec format "
               "error' >&2; exit 1")
    with pytest.raises(RemoteFailure) as err:
        ip.run_cell_magic("sm_container", f'no-emulation --run "{failing}"', 'print("hi")\n')
    assert "Use Rosetta for x86_64/amd64 emulation" in err.value.hint
    assert "qemu-user-static" in err.value.hint
