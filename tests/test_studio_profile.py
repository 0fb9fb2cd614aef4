"""The sandbox's SageMaker Studio profile: what a Studio space with Docker on gives a notebook.

Studio's Docker serves API 1.41 only and allows only the network ``sagemaker``
(see :mod:`sm_magics.sandbox.studio_docker` for the sources). In this profile the
session looks like a Studio space, its ``DOCKER_HOST`` is that endpoint, and the
magics must build, push and run ``--local`` through it unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path

import docker
import pytest
from IPython.core.error import UsageError

from sm_magics.errors import RemoteFailure
from sm_magics.sandbox import temporary_sandbox

pytestmark = [pytest.mark.docker, pytest.mark.sandbox]


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    """A sandbox in the studio profile, its environment applied for this module's tests."""
    with temporary_sandbox(Path(tmp_path_factory.mktemp("studio-home")),
                           profile="studio") as box:
        yield box


def test_the_studio_profile_looks_like_a_studio_space_with_studios_docker(ip, studio):
    env = studio.environment()
    assert os.environ["SAGEMAKER_SPACE_NAME"] == env["SAGEMAKER_SPACE_NAME"] == "sandbox-space"
    assert os.environ["DOCKER_HOST"].endswith("/studio-docker.sock")
    with pytest.raises(docker.errors.DockerException) as err:
        docker.from_env()  # what the SageMaker SDK's local mode does, and fails with, in Studio
    assert "Error while fetching server API version" in str(err.value)
    settings = ip.run_line_magic("sm_config", "")
    assert (settings["docker_network"].value, settings["docker_network"].source) == (
        "sagemaker", "SageMaker Studio (its Docker allows no other)")
    rows = {row[0]: row for row in studio.status().rows()}
    assert rows["studio-docker"][1] == "running"


def test_a_container_cell_builds_pushes_and_trains_through_studios_docker(ip, studio):
    image = ip.run_cell_magic("sm_container", "studio-build", 'print("trained in studio")\n')
    assert image.built and image.digest.startswith("sha256:")
    run = ip.run_line_magic("sm_train", "studio-build --wait")
    assert run.status == "Completed"
    assert "trained in studio" in run.logs()


def test_a_local_run_works_with_studios_docker(ip, studio):
    ip.run_cell_magic("sm_container", "studio-local",
                      'print("local in studio")\n(model_dir / "m.txt").write_text("ok")\n')
    run = ip.run_line_magic("sm_train", "studio-local --local --wait")
    assert run.status == "Completed"
    assert "local in studio" in run.logs()
    assert run.model_data.endswith("/model.tar.gz")


def test_several_instances_run_as_a_job_but_not_as_a_local_run_in_studio(ip, studio):
    import boto3

    ip.run_cell_magic("sm_container", "studio-hosts",
                      'print(f"{current_host} of {len(hosts)}")\n')
    sagemaker = boto3.client("sagemaker")
    before = sagemaker.list_training_jobs(NameContains="studio-hosts")["TrainingJobSummaries"]
    with pytest.raises(UsageError, match="SageMaker Studio's local mode does not run "
                                         "multi-container jobs"):
        ip.run_line_magic("sm_train", "studio-hosts --local --instance-count 2")
    run = ip.run_line_magic("sm_train", "studio-hosts --instance-count 2 --wait")
    assert run.status == "Completed"
    assert sorted(run.logs()) == ["[algo-1] algo-1 of 2", "[algo-2] algo-2 of 2"]
    after = sagemaker.list_training_jobs(NameContains="studio-hosts")["TrainingJobSummaries"]
    assert [j["TrainingJobName"] for j in after] == [run.name] and before == []


def test_forcing_host_networking_in_studio_is_refused_in_studios_words(ip, studio):
    ip.run_line_magic("sm_config", "--docker-network host")
    with pytest.raises(RemoteFailure) as err:
        ip.run_cell_magic("sm_container", "studio-host", 'print("never built")\n')
    assert "refused by the Docker engine" in err.value.what
    assert "[ImageBuild] 'sagemaker' is the only user allowed network input" in err.value.reason
    assert "--docker-network sagemaker" in err.value.hint

    ip.run_line_magic("sm_config", "--unset docker_network")
    ip.run_cell_magic("sm_container", "studio-host", 'print("built with sagemaker")\n')
    ip.run_line_magic("sm_config", "--docker-network host")
    with pytest.raises(RemoteFailure) as failed:
        ip.run_line_magic("sm_train", "studio-host --local --wait")
    reason = failed.value.reason
    assert "[ContainerCreate] SageMaker Studio Docker Usage only allows 'sagemaker'" in reason
    assert "docker_network" in reason


# ---------------------------------------------------------------- Studio with Docker off


@pytest.fixture(scope="module")
def docker_off(tmp_path_factory):
    """A sandbox as a Studio space with Docker off, its environment applied."""
    with temporary_sandbox(Path(tmp_path_factory.mktemp("docker-off-home")),
                           profile="studio-docker-off") as box:
        yield box


def test_in_a_studio_space_with_docker_off_images_come_from_the_registry_builder(
        ip, docker_off, capsys):
    from sm_magics import build

    build._ENGINE.clear()
    assert os.environ["SAGEMAKER_SPACE_NAME"] == "sandbox-space"
    with pytest.raises(docker.errors.DockerException):
        docker.from_env()  # no Docker engine in the space
    image = ip.run_cell_magic("sm_container", "docker-off", 'print("no docker here")\n')
    assert "Builder: registry (no Docker engine answers)" in capsys.readouterr().out
    assert image.built and image.pushed
    run = ip.run_line_magic("sm_train", "docker-off --wait")
    assert run.status == "Completed" and "no docker here" in run.logs()

    from IPython.core.error import UsageError

    with pytest.raises(UsageError) as local:
        ip.run_line_magic("sm_train", "docker-off --local --wait")
    message = str(local.value)
    assert "SageMaker Studio space sandbox-space" in message
    assert '"DockerSettings": {"EnableDockerAccess": "ENABLED"}' in message
    with pytest.raises(UsageError) as apt:
        ip.run_cell_magic("sm_container", "docker-off-apt --apt libgomp1", "print(1)\n")
    assert str(apt.value).startswith(
        "%%sm_container docker-off-apt: --apt runs commands in the image, which needs a Docker "
        "engine. No Docker engine answers at unix://")
    assert '"DockerSettings": {"EnableDockerAccess": "ENABLED"}' in str(apt.value)
    rows = {row[0]: row for row in docker_off.status().rows()}
    assert rows["docker"][1] == "running"  # the sandbox's own jobs have their engine
