"""What the tests that drive sandbox training jobs with plain boto3 share."""

from __future__ import annotations

import contextlib
import io
import tarfile
import time

POLL_LIMIT = 300  # seconds; generous, the jobs take a few seconds
ENDED = ("Completed", "Failed", "Stopped")


def job_clients(bucket: str) -> dict:
    """boto3 clients of the sandbox the environment points at, with ``bucket`` created."""
    import boto3

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=bucket)
    return {"sagemaker": boto3.client("sagemaker"), "s3": s3, "logs": boto3.client("logs"),
            "cloudwatch": boto3.client("cloudwatch")}


def wait_for(clients, name: str, until=lambda d: d["TrainingJobStatus"] in ENDED) -> dict:
    """The job's description once ``until`` holds for it (by default: once it ended)."""
    deadline = time.monotonic() + POLL_LIMIT
    while True:
        described = clients["sagemaker"].describe_training_job(TrainingJobName=name)
        if until(described):
            return described
        assert time.monotonic() < deadline, f"{name} stayed {described['SecondaryStatus']}"
        time.sleep(0.2)


def read_tarball(clients, uri: str) -> dict[str, bytes]:
    """The files of the gzipped tarball at ``uri``, by name."""
    bucket, _, key = uri[len("s3://"):].partition("/")
    body = clients["s3"].get_object(Bucket=bucket, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as archive:
        return {m.name: archive.extractfile(m).read() for m in archive.getmembers() if m.isfile()}


def new_repository(prefix: str) -> str:
    """An ECR repository made in the sandbox (ECR takes pushes only into one); its image URI."""
    import os
    import uuid

    import boto3

    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    boto3.client("ecr").create_repository(repositoryName=name)
    return f"{os.environ['SM_MAGICS_REGISTRY']}/{name}"


@contextlib.contextmanager
def only_in_the_registry(client, uri: str):
    """Push ``uri`` and remove it from the engine for the block, so jobs must pull it."""
    import docker

    for line in client.images.push(uri, stream=True, decode=True):
        assert "error" not in line, line
    client.images.remove(uri)
    try:
        yield uri
    finally:
        with contextlib.suppress(docker.errors.ImageNotFound):
            client.images.remove(uri)
