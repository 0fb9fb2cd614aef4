"""Overhead of the sandbox's training-job executor against a plain ``docker run``.

Starts its own sandbox under a temporary home, pushes a trivial training image
(``train`` prints a line and writes a one-byte model) to the sandbox registry,
then times, in the same run:

* baseline: ``containers.run(image, ["train"], network_mode="host", remove=True)``
  with the docker SDK, the image already on the engine;
* executor: ``CreateTrainingJob`` until ``DescribeTrainingJob`` says
  ``Completed`` (polled every 50 ms), which includes the registry pull check,
  the ``/opt/ml`` layout, the log shipping and the ``model.tar.gz`` upload.

Prints the medians, their ratio and where the executor's time goes (median
time per secondary status)::

    python bench/bench_executor.py --runs 10
"""

from __future__ import annotations

import argparse
import io
import statistics
import tarfile
import time
import uuid

from common import sandbox_session

TRAIN = "#!/bin/sh\nmkdir -p /opt/ml/model\necho trained\nprintf x > /opt/ml/model/model.bin\n"


def build_and_push(client, uri: str) -> None:
    dockerfile = (b"FROM sm-magics/sandbox-base:bookworm\nCOPY train /usr/local/bin/train\n")
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as archive:
        for name, data in (("Dockerfile", dockerfile), ("train", TRAIN.encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755
            archive.addfile(info, io.BytesIO(data))
    context.seek(0)
    client.images.build(fileobj=context, custom_context=True, tag=uri, network_mode="host",
                        rm=True)
    for line in client.images.push(uri, stream=True, decode=True):
        if "error" in line:
            raise RuntimeError(line["error"])


def docker_run(client, uri: str) -> float:
    started = time.perf_counter()
    client.containers.run(uri, ["train"], network_mode="host", remove=True)
    return time.perf_counter() - started


def executor_job(sagemaker, uri: str, role: str, instances: int = 1) -> tuple[float, dict]:
    """Seconds from CreateTrainingJob to Completed, and the job's description."""
    name = f"bench-{uuid.uuid4().hex[:12]}"
    started = time.perf_counter()
    sagemaker.create_training_job(
        TrainingJobName=name,
        AlgorithmSpecification={"TrainingImage": uri, "TrainingInputMode": "File"},
        RoleArn=role,
        OutputDataConfig={"S3OutputPath": "s3://bench/output"},
        ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": instances,
                        "VolumeSizeInGB": 1},
        StoppingCondition={"MaxRuntimeInSeconds": 600},
    )
    while True:
        described = sagemaker.describe_training_job(TrainingJobName=name)
        if described["TrainingJobStatus"] in ("Completed", "Failed", "Stopped"):
            break
        time.sleep(0.05)
    elapsed = time.perf_counter() - started
    if described["TrainingJobStatus"] != "Completed":
        raise RuntimeError(f"{name}: {described['TrainingJobStatus']} "
                           f"{described.get('FailureReason', '')}")
    return elapsed, described


def trivial_job_setup(box) -> tuple:
    """In the sandbox ``box``: the bucket ``bench``, the trivial image pushed into an ECR
    repository made first (as ECR needs), a SageMaker client and the execution role.

    Returns ``(sagemaker client, docker client, image URI, role ARN)``.
    """
    import docker

    env = box.environment()
    session, endpoint = sandbox_session(box)
    session.client("s3", endpoint_url=endpoint).create_bucket(Bucket="bench")
    repository = f"bench-trivial-{uuid.uuid4().hex[:8]}"
    session.client("ecr", endpoint_url=endpoint).create_repository(repositoryName=repository)
    client = docker.from_env()
    uri = f"{env['SM_MAGICS_REGISTRY']}/{repository}:trivial"
    build_and_push(client, uri)
    return (session.client("sagemaker", endpoint_url=endpoint), client, uri,
            env["SM_MAGICS_ROLE"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()

    from sm_magics.sandbox import temporary_sandbox

    with temporary_sandbox() as box:
        sagemaker, client, uri, role = trivial_job_setup(box)
        docker_run(client, uri)  # warm-up: page cache, engine
        executor_job(sagemaker, uri, role)
        baseline, executor, phases = [], [], {}
        for _ in range(args.runs):
            baseline.append(docker_run(client, uri))
            elapsed, described = executor_job(sagemaker, uri, role)
            executor.append(elapsed)
            for step in described["SecondaryStatusTransitions"]:
                spent = (step["EndTime"] - step["StartTime"]).total_seconds()
                phases.setdefault(step["Status"], []).append(spent)
        client.images.remove(uri)

    docker_median = statistics.median(baseline)
    executor_median = statistics.median(executor)
    print(f"runs: {args.runs} (medians)")
    print(f"docker run by hand (containers.run):         {docker_median * 1000:7.0f} ms")
    print(f"executor job (create -> Completed, polled):  {executor_median * 1000:7.0f} ms")
    print(f"ratio executor / docker run:                 {executor_median / docker_median:7.2f}")
    print(f"overhead per job:                            "
          f"{(executor_median - docker_median) * 1000:7.0f} ms")
    print("executor time per secondary status (median):")
    for status, spent in phases.items():
        print(f"  {status:<12} {statistics.median(spent) * 1000:7.0f} ms")


if __name__ == "__main__":
    main()
