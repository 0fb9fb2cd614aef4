"""The user's AWS credentials go nowhere: not into images, jobs, logs or notebooks.

Fake but realistic credentials are planted in the environment
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``), which
the tool then really uses against the sandbox, and in ``~/.aws/credentials``
under a temporary home. A container cell is built and pushed, a job is trained
in the sandbox and another with ``--local``, and a notebook doing the same is
executed. Every place a credential could leak
to is then read back and searched for the planted strings: the build context,
every layer and the config of the pushed image (through the registry's HTTP
API), the job's description (hyperparameters, environment), its CloudWatch log
events (where the training code prints its whole environment), the S3 objects
it used and wrote, the sandbox's own logs and records, and the saved notebook.

Parameters that look like secrets raise a :class:`SecretParameterWarning`
pointing to AWS Secrets Manager.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import secrets
import string
import tarfile
import urllib.request
import warnings
from pathlib import Path

import boto3
import nbformat
import pytest

from log_reading import stream_messages
from sm_magics import aws as aws_module
from sm_magics import ecr as ecr_module
from sm_magics.__main__ import run_notebook
from sm_magics.params import SecretParameterWarning, capture, parse_hp, secret_reason
from sm_magics.recipe import Recipe, prepare

MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def _random(alphabet: str, length: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


UPPER_DIGITS = string.ascii_uppercase + string.digits
BASE64 = string.ascii_letters + string.digits + "+/"
PLANTED = {
    "environment AWS_ACCESS_KEY_ID": "AKIA" + _random(UPPER_DIGITS, 16),
    "environment AWS_SECRET_ACCESS_KEY": _random(BASE64, 40),
    "environment AWS_SESSION_TOKEN": "IQoJb3JpZ2luX2VjE" + _random(BASE64, 340),
    "~/.aws/credentials default access key": "AKIA" + _random(UPPER_DIGITS, 16),
    "~/.aws/credentials default secret key": _random(BASE64, 40),
    "~/.aws/credentials profile access key": "ASIA" + _random(UPPER_DIGITS, 16),
    "~/.aws/credentials profile secret key": _random(BASE64, 40),
}
NEEDLES = [value.encode() for value in PLANTED.values()]

TRAINING_CODE = """\
import json
import os

print("environment:", json.dumps(dict(os.environ), sort_keys=True))
for path in ("/root/.aws/credentials", os.path.expanduser("~/.aws/credentials")):
    print(path, "exists" if os.path.exists(path) else "is absent")
(model_dir / "environment.json").write_text(json.dumps(dict(os.environ)))
log_metric("epochs", params["epochs"])
"""


def leaks(data: bytes) -> list[str]:
    """The names of the planted credentials found in ``data``."""
    return [name for name, needle in zip(PLANTED, NEEDLES, strict=True) if needle in data]


def tar_leaks(data: bytes, where: str) -> list[str]:
    """Planted credentials in the names and contents of the members of a (gzipped) tarball."""
    found = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
        for member in tar:
            found += [f"{where}: {member.name} name: {n}" for n in leaks(member.name.encode())]
            if member.isfile():
                content = tar.extractfile(member).read()
                found += [f"{where}: {member.name}: {n}" for n in leaks(content)]
                if content[:2] == b"\x1f\x8b":
                    found += [f"{where}: {member.name} (gunzipped): {n}"
                              for n in leaks(gzip.decompress(content))]
    return found


@pytest.fixture(scope="module")
def remove_built_images(sandbox):
    """Untag the images these tests build from the Docker engine afterwards."""
    import docker

    yield
    client = docker.from_env()
    prefix = f"{os.environ['SM_MAGICS_REGISTRY']}/sagemaker-secrets-"
    for image in client.images.list():
        for tag in image.tags:
            if tag.startswith(prefix):
                client.images.remove(tag)


@pytest.fixture
def planted(sandbox, remove_built_images, monkeypatch, tmp_path):
    """The planted credentials in the environment and in ~/.aws of a temporary home."""
    home = tmp_path / "home"
    (home / ".aws").mkdir(parents=True)
    values = list(PLANTED.values())
    (home / ".aws" / "credentials").write_text(
        f"[default]\naws_access_key_id = {values[3]}\naws_secret_access_key = {values[4]}\n\n"
        f"[planted]\naws_access_key_id = {values[5]}\naws_secret_access_key = {values[6]}\n")
    (home / ".aws" / "config").write_text("[default]\nregion = us-east-1\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", values[0])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", values[1])
    monkeypatch.setenv("AWS_SESSION_TOKEN", values[2])
    # The tool's cached sessions and ECR clients were made with the sandbox's
    # credentials: start afresh so it really signs with the planted ones.
    monkeypatch.setattr(aws_module, "_SESSIONS", {})
    monkeypatch.setattr(ecr_module, "_CLIENTS", {})
    monkeypatch.setattr(ecr_module, "_TOKENS", {})
    return home


def registry_get(path: str, accept: str | None = None) -> bytes:
    host = os.environ["SM_MAGICS_REGISTRY"]
    request = urllib.request.Request(f"http://{host}/v2/{path}",
                                     headers={"Accept": accept} if accept else {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request) as response:
        return response.read()


def image_leaks(name: str, tag: str) -> tuple[list[str], set[str]]:
    """Planted credentials in the pushed image's config and every layer; and the files read."""
    manifest = json.loads(registry_get(f"{name}/manifests/{tag}", MANIFEST))
    config = registry_get(f"{name}/blobs/{manifest['config']['digest']}")
    found = [f"image config: {n}" for n in leaks(config)]
    files: set[str] = set()
    for layer in manifest["layers"]:
        blob = registry_get(f"{name}/blobs/{layer['digest']}")
        found += tar_leaks(blob, layer["digest"])
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:*") as tar:
            files |= {name.removeprefix("./") for name in tar.getnames()}
    return found, files


def files_leaks(root: Path) -> list[str]:
    return [f"{path}: {n}" for path in sorted(root.rglob("*")) if path.is_file()
            for n in leaks(path.read_bytes())]


def job_log_text(job: str) -> str:
    logs = boto3.client("logs")
    streams = logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs",
                                        logStreamNamePrefix=job)["logStreams"]
    lines = []
    for stream in streams:
        lines += stream_messages(logs, stream["logStreamName"])
    return "\n".join(lines)


def s3_leaks(described: dict) -> tuple[list[str], int]:
    """Planted credentials in the job's params object and model artifact; objects read."""
    s3 = boto3.client("s3")
    uris = [c["DataSource"]["S3DataSource"]["S3Uri"] for c in described["InputDataConfig"]]
    uris.append(described["ModelArtifacts"]["S3ModelArtifacts"])
    found = []
    for uri in uris:
        bucket, key = uri.removeprefix("s3://").split("/", 1)
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        found += [f"{uri}: {n}" for n in leaks(body)]
        if key.endswith(".tar.gz"):
            found += tar_leaks(body, uri)
    return found, len(uris)


@pytest.mark.docker
@pytest.mark.sandbox
@pytest.mark.slow
def test_planted_credentials_reach_no_image_job_log_or_artifact(ip, sandbox, planted, tmp_path):
    ip.run_cell_magic("sm_params", "leak", "epochs = 2\n")
    image = ip.run_cell_magic(
        "sm_container", "secrets-scan -o image --env MODE=scan "
        "--run 'env > /opt/program/build-environment.txt'", TRAINING_CODE)
    run = ip.run_line_magic("sm_train", "secrets-scan --params leak --hp note=hello --wait")
    local = ip.run_line_magic("sm_train", "secrets-scan --params leak --local --wait")
    assert image.built and run.status == "Completed" and local.status == "Completed"
    [session] = aws_module._SESSIONS.values()
    assert session.get_credentials().access_key == PLANTED["environment AWS_ACCESS_KEY_ID"]

    context_leaks = files_leaks(tmp_path / ".sm_magics")
    layer_leaks, image_files = image_leaks(image.uri.split("/", 1)[1].rsplit(":", 1)[0],
                                           image.tag)
    described = boto3.client("sagemaker").describe_training_job(TrainingJobName=run.name)
    log = job_log_text(run.name)
    artifact_leaks, objects = s3_leaks(described)

    assert (image.build_dir / "Dockerfile").is_file()
    assert {"opt/program/build-environment.txt", "opt/program/train.py", "usr/bin/python3"
            } <= image_files
    assert "environment:" in log and "/root/.aws/credentials is absent" in log
    assert context_leaks == []
    assert layer_leaks == []
    assert leaks(json.dumps(described, default=str).encode()) == []
    assert leaks(log.encode()) == []
    local_log = "\n".join(local.logs())
    assert "environment:" in local_log and leaks(local_log.encode()) == []
    assert leaks(json.dumps(local.describe(), default=str).encode()) == []
    assert artifact_leaks == [] and objects == 2
    assert leaks(json.dumps(dict(ip.user_ns["image"].__dict__), default=str).encode()) == []
    assert files_leaks(sandbox.home) == []  # the endpoint's own log and job records


NOTEBOOK_CELLS = [
    "%load_ext sm_magics",
    "%sm_config",
    "import os\nprint('planted:', len(os.environ['AWS_SECRET_ACCESS_KEY']), 'characters')",
    "%%sm_params nb\nepochs = 1",
    "%%sm_container secrets-notebook\n" + TRAINING_CODE,
    "job = %sm_train secrets-notebook --params nb --wait\njob",
    "print('\\n'.join(job.logs()))",
]


@pytest.mark.docker
@pytest.mark.sandbox
@pytest.mark.slow
def test_a_notebook_run_with_planted_credentials_saves_none_of_them(planted, tmp_path):
    notebook = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(source) for source in NOTEBOOK_CELLS])
    folder = tmp_path / "notebook"
    folder.mkdir()
    nbformat.write(notebook, folder / "secrets.ipynb")
    output = tmp_path / "executed.ipynb"

    assert run_notebook(folder / "secrets.ipynb", output, timeout=600,
                        env=dict(os.environ)) == 0

    saved = output.read_bytes()
    assert b"planted: 40 characters" in saved
    assert b"environment:" in saved and b"Completed" in saved
    assert leaks(saved) == []
    assert files_leaks(folder / ".sm_magics") == []


# ---------------------------------------------------------------- the warning


SECRETS = {
    "db_password": "hunter2",
    "apiKey": "0123",
    "client_secret": "abc",
    "access_key": "AKIA" + "Q" * 16,
    "key_id": "AKIA" + _random(UPPER_DIGITS, 16),
    "keys": ["ok", {"nested": "ASIA" + _random(UPPER_DIGITS, 16)}],
    "aws_secret": _random(BASE64, 40),
    "hf_token": "hf_" + _random(string.ascii_letters, 34),
    "github": "ghp_" + _random(string.ascii_letters + string.digits, 36),
    "key": "-----BEGIN RSA PRIVATE KEY-----\nMIIB...",
    "blob": _random(string.ascii_letters + string.digits, 48),
}
ORDINARY = {
    "lr": 0.05, "max_tokens": 512, "token_limit": 2048, "pad_token": "<pad>",
    "eos_token": "<|endoftext|>", "tokenizer": "bert-base-uncased",
    "model_id": "meta-llama/Llama-3.1-8B-Instruct",
    "embedder": "sentence-transformers/all-MiniLM-L6-v2",
    "data": "s3://my-bucket-2024/datasets/Train/v3/part-0001.csv",
    "path": "data/Train2024/Features_v2.parquet",
    "commit": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "run_id": "3b241101-e2bb-4255-8caa-b8d3b1c6a4f2",
    "estimator": "GradientBoostingClassifierWithEarlyStopping2",
    "password_length": 12, "secret_santa": None, "features": ["amount", "hour"],
}


@pytest.mark.parametrize("name", sorted(SECRETS))
def test_a_parameter_that_looks_like_a_secret_is_named_in_a_warning(name):
    assert secret_reason(name, SECRETS[name])


@pytest.mark.parametrize("name", sorted(ORDINARY))
def test_ordinary_parameters_do_not_look_like_secrets(name):
    assert secret_reason(name, ORDINARY[name]) is None


def test_a_params_cell_warns_about_a_secret_and_points_to_secrets_manager(ip):
    with pytest.warns(SecretParameterWarning) as caught:
        ip.run_cell_magic("sm_params", "db", 'db_password = "hunter2"\nbatch_size = 32\n')
    [warning] = caught
    message = str(warning.message)
    assert message.startswith("%%sm_params db: the parameter db_password looks like a secret")
    assert "AWS Secrets Manager" in message and "get_secret_value" in message
    assert "hunter2" not in message and "\n" not in message
    assert ip.user_ns["db_password"] == "hunter2"


def test_an_hp_value_like_an_access_key_warns_without_repeating_it():
    key = "AKIA" + _random(UPPER_DIGITS, 16)
    with pytest.warns(SecretParameterWarning, match="--hp aws_key: the parameter aws_key") as w:
        assert parse_hp(f"aws_key={key}") == ("aws_key", key)
    assert "an AWS access key ID" in str(w[0].message) and key not in str(w[0].message)


def test_an_inline_param_default_that_looks_like_a_secret_warns():
    body = f'api_token = "{_random(BASE64, 40)}"  # @param\nprint(api_token)\n'
    with pytest.warns(SecretParameterWarning, match="api_token"):
        prepare(Recipe(name="warned", body=body, base="python:3.12-slim"))


def test_ordinary_parameters_raise_no_warning(tmp_path):
    source = "".join(f"{name} = {value!r}\n" for name, value in ORDINARY.items())
    with warnings.catch_warnings():
        warnings.simplefilter("error", SecretParameterWarning)
        assert capture("plain", source, {}, run=None).values == ORDINARY
        parse_hp("max_tokens=512")
        prepare(Recipe(name="plain", body="lr = 0.1  # @param\n", base="python:3.12-slim"))
