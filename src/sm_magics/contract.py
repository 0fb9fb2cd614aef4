"""Run a training image locally under the SageMaker training container contract.

SageMaker starts a training image with the command ``train`` and a directory
mounted at ``/opt/ml``::

    /opt/ml/input/config/hyperparameters.json   string values, as the API passes them
    /opt/ml/input/config/inputdataconfig.json   one entry per channel
    /opt/ml/input/config/resourceconfig.json    this host, and every host of the job
    /opt/ml/input/data/<channel>/...            the channel's files (File mode)
    /opt/ml/model/                              the model, packed as model.tar.gz afterwards
    /opt/ml/output/data/                        other output, packed as output.tar.gz
    /opt/ml/output/failure                      the reason, when the program fails

A job on N instances runs the image on N hosts, ``algo-1`` … ``algo-N``, each
with a directory of its own: the same files, but ``current_host`` and the
channels' content may differ (a ``ShardedByS3Key`` channel gives each host its
share of the objects, :func:`download_channel`).

This module lays out that directory on the host, fills channels from S3,
runs the image on the local Docker engine (on the Docker network it is given,
with the ``SM_*`` variables of the SageMaker training toolkit, output streamed
line by line),
stops it on request or after a time limit, and packs the results. It serves
the job-run engine (:mod:`sm_magics.engine`): sandbox jobs and local runs alike.

Example::

    >>> import docker
    >>> layout = OptMl.create(Path("/tmp/job/opt_ml"), hyperparameters={"epochs": "3"},
    ...                       channels={"train": {}})
    >>> run = ContainerRun(docker.from_env(), "127.0.0.1:5000/fraud:abc", layout,
    ...                    on_line=print, job_name="fraud-1")
    >>> result = run.run(timeout=3600)
    >>> result.exit_code, result.failure
    (0, None)
"""

from __future__ import annotations

import codecs
import contextlib
import json
import os
import tarfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .s3uri import split_s3_uri

__all__ = [
    "CONTAINER_ROOT",
    "ContainerRun",
    "OptMl",
    "RunResult",
    "download_channel",
    "ensure_image",
    "pack_directory",
    "host_names",
    "toolkit_environment",
    "upload_changed",
]

CONTAINER_ROOT = "/opt/ml"
CURRENT_HOST = "algo-1"
LABEL = "sm-magics.training-run"
_FAILURE_LIMIT = 1024
_PULL_LOCKS: dict[str, threading.Lock] = {}
_PULL_LOCKS_GUARD = threading.Lock()


def host_names(count: int) -> list[str]:
    """The hosts of a job on ``count`` instances, in their order: ``algo-1`` … ``algo-N``.

    ``resourceconfig.json`` lists them sorted lexicographically, as SageMaker's
    "Distributed Training Configuration" documents (``algo-10`` before ``algo-2``);
    the number in the name is the host's rank.

    >>> host_names(3)
    ['algo-1', 'algo-2', 'algo-3']
    """
    return [f"algo-{number}" for number in range(1, count + 1)]


@dataclass(frozen=True)
class OptMl:
    """A host directory laid out as ``/opt/ml`` for one training run.

    >>> layout = OptMl.create(Path("/tmp/opt_ml"), {"lr": "0.1"}, {"train": {}})
    >>> layout.channel_dir("train")
    PosixPath('/tmp/opt_ml/input/data/train')
    """

    root: Path
    hyperparameters: dict[str, str]
    input_data_config: dict[str, dict[str, str]]
    resource_config: dict[str, Any]

    @classmethod
    def create(
        cls,
        root: Path,
        hyperparameters: Mapping[str, str] | None = None,
        channels: Mapping[str, Mapping[str, str]] | None = None,
        instance_type: str = "local",
        current_host: str = CURRENT_HOST,
        hosts: list[str] | None = None,
    ) -> OptMl:
        """Make the directories and write the three configuration files.

        ``channels`` maps a channel name to its ``inputdataconfig.json`` entry
        (``ContentType``, ``TrainingInputMode``...); missing keys get the
        values SageMaker writes for a File-mode, fully replicated channel.
        ``current_host`` is the host this directory is for, ``hosts`` every
        host of the job (default: ``current_host`` alone); ``resourceconfig.json``
        lists them sorted lexicographically, in one instance group, as SageMaker
        writes it ("Distributed Training Configuration", SageMaker developer guide).
        """
        every_host = sorted(hosts or [current_host])
        input_data_config = {
            name: {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated",
                   "RecordWrapperType": "None", **dict(entry)}
            for name, entry in (channels or {}).items()
        }
        resource_config = {
            "current_host": current_host,
            "current_instance_type": instance_type,
            "current_group_name": "homogeneousCluster",
            "hosts": every_host,
            "instance_groups": [{"instance_group_name": "homogeneousCluster",
                                 "instance_type": instance_type, "hosts": every_host}],
            "network_interface_name": "eth0",
        }
        layout = cls(Path(root), {k: str(v) for k, v in (hyperparameters or {}).items()},
                     input_data_config, resource_config)
        for directory in (layout.config_dir, layout.model_dir, layout.output_data_dir,
                          *(layout.channel_dir(name) for name in input_data_config)):
            directory.mkdir(parents=True, exist_ok=True)
        for name, content in (("hyperparameters.json", layout.hyperparameters),
                              ("inputdataconfig.json", input_data_config),
                              ("resourceconfig.json", resource_config)):
            (layout.config_dir / name).write_text(json.dumps(content, indent=2))
        return layout

    @property
    def config_dir(self) -> Path:
        return self.root / "input" / "config"

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def output_dir(self) -> Path:
        return self.root / "output"

    @property
    def output_data_dir(self) -> Path:
        return self.root / "output" / "data"

    @property
    def failure_file(self) -> Path:
        return self.root / "output" / "failure"

    def channel_dir(self, name: str) -> Path:
        """Where channel ``name``'s files go on the host."""
        return self.root / "input" / "data" / name

    def failure(self) -> str | None:
        """The text the program wrote to ``/opt/ml/output/failure``, if any."""
        try:
            text = self.failure_file.read_text(errors="replace").strip()
        except OSError:
            return None
        return text[:_FAILURE_LIMIT] or None


def toolkit_environment(layout: OptMl, num_cpus: int | None = None) -> dict[str, str]:
    """The ``SM_*`` variables that the SageMaker training toolkit sets inside a job.

    >>> toolkit_environment(OptMl.create(Path("/tmp/o"), {"lr": "0.1"}, {"train": {}}))["SM_HPS"]
    '{"lr": 0.1}'
    """
    def decoded(value: str) -> Any:
        try:
            return json.loads(value)
        except ValueError:
            return value

    hps = {name: decoded(value) for name, value in layout.hyperparameters.items()}
    channels = sorted(layout.input_data_config)
    env = {
        "SM_MODEL_DIR": f"{CONTAINER_ROOT}/model",
        "SM_INPUT_DIR": f"{CONTAINER_ROOT}/input",
        "SM_INPUT_CONFIG_DIR": f"{CONTAINER_ROOT}/input/config",
        "SM_OUTPUT_DIR": f"{CONTAINER_ROOT}/output",
        "SM_OUTPUT_DATA_DIR": f"{CONTAINER_ROOT}/output/data",
        "SM_CHANNELS": json.dumps(channels),
        "SM_HPS": json.dumps(hps),
        "SM_CURRENT_HOST": layout.resource_config["current_host"],
        "SM_HOSTS": json.dumps(layout.resource_config["hosts"]),
        "SM_CURRENT_INSTANCE_TYPE": layout.resource_config["current_instance_type"],
        "SM_NETWORK_INTERFACE_NAME": layout.resource_config["network_interface_name"],
        "SM_INPUT_DATA_CONFIG": json.dumps(layout.input_data_config),
        "SM_RESOURCE_CONFIG": json.dumps(layout.resource_config),
        "SM_NUM_CPUS": str(num_cpus or os.cpu_count() or 1),
        "SM_NUM_GPUS": "0",
    }
    env.update({f"SM_CHANNEL_{name.upper()}": f"{CONTAINER_ROOT}/input/data/{name}"
                for name in channels})
    env.update({f"SM_HP_{name.upper()}": value for name, value in layout.hyperparameters.items()})
    return env


def _has_registry_host(reference: str) -> bool:
    first, _, rest = reference.partition("/")
    return bool(rest) and ("." in first or ":" in first or first == "localhost")


def ensure_image(client, reference: str) -> None:
    """Make ``reference`` available to the engine, pulling it as SageMaker does.

    A reference with a registry host (``127.0.0.1:5000/fraud:abc``, an ECR URI)
    is pulled every time, so a moved tag runs its new content; when the pull
    fails, an image of that name already on the engine is used. A bare name is
    pulled only when missing. Raises ``docker.errors.ImageNotFound`` or
    ``docker.errors.APIError`` when the image cannot be had.

    >>> ensure_image(docker.from_env(), "127.0.0.1:5000/fraud:abc")
    """
    with _PULL_LOCKS_GUARD:
        lock = _PULL_LOCKS.setdefault(reference, threading.Lock())
    with lock:  # jobs of one image pull it once, one after the other
        _ensure_image(client, reference)


def _ensure_image(client, reference: str) -> None:
    import docker.errors
    from docker.utils import parse_repository_tag

    repository, tag = parse_repository_tag(reference)
    if not _has_registry_host(reference):
        try:
            client.images.get(reference)
            return
        except docker.errors.ImageNotFound:
            pass
    try:
        client.images.pull(repository, tag=tag or "latest")
    except docker.errors.APIError:
        client.images.get(reference)  # raises ImageNotFound when there is no local copy


def download_channel(s3, uri: str, target: Path, data_type: str = "S3Prefix",
                     shard: tuple[int, int] | None = None) -> int:
    """Copy a channel's S3 data into ``target``; return the number of files.

    ``S3Prefix``: the object named by ``uri`` when one exists, else every
    object under that prefix, at its path relative to the prefix.
    ``ManifestFile``: the manifest's first element is ``{"prefix": "s3://..."}``,
    the others are keys relative to it.

    ``shard=(index, count)`` copies only host ``index``'s share (0-based) of a
    ``ShardedByS3Key`` channel on ``count`` hosts. SageMaker documents that each
    of n instances gets "approximately 1/n of the number of S3 objects"
    (S3DataSource, ``S3DataDistributionType``, API reference), not which ones:
    here the objects are dealt out in key order (S3's listing order, or the
    manifest's), the first to host 0, the second to host 1 and so on, so every
    object goes to exactly one host and a host may get none when there are
    fewer objects than hosts.

    >>> download_channel(boto3.client("s3"), "s3://bucket/data/train/", Path("/tmp/train"))
    3
    >>> download_channel(s3, "s3://bucket/data/train/", Path("/tmp/algo-2"), shard=(1, 2))
    1
    """
    index, count = shard or (0, 1)

    def mine(position: int) -> bool:
        return position % count == index

    bucket, key = split_s3_uri(uri)
    if data_type == "ManifestFile":
        manifest = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        prefix_bucket, prefix = split_s3_uri(manifest[0]["prefix"])
        entries = [relative for position, relative in enumerate(manifest[1:]) if mine(position)]
        for relative in entries:
            _download(s3, prefix_bucket, prefix + relative, target / relative)
        return len(entries)
    if key and not key.endswith("/"):
        try:
            s3.head_object(Bucket=bucket, Key=key)
        except s3.exceptions.ClientError:
            pass
        else:
            if not mine(0):
                return 0
            _download(s3, bucket, key, target / key.rsplit("/", 1)[-1])
            return 1
    count_copied = 0
    position = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
        for item in page.get("Contents", []):
            if item["Key"].endswith("/"):
                continue
            position += 1
            if not mine(position - 1):
                continue
            relative = item["Key"][len(key):].lstrip("/")
            _download(s3, bucket, item["Key"], target / relative)
            count_copied += 1
    return count_copied


def _download(s3, bucket: str, key: str, destination: Path) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    s3.download_file(bucket, key, str(destination))


def upload_changed(s3, directory: Path, uri: str, sent: dict[str, tuple[int, int]]) -> int:
    """Copy the files under ``directory`` that are new or changed since ``sent`` to ``uri``.

    ``sent`` maps a file's path to the ``(size, mtime_ns)`` it had when it was
    last copied, and is updated; a file that disappears meanwhile is skipped.
    This is how checkpoints reach S3 while a job runs. Returns the number of
    files copied.

    >>> sent = {}
    >>> upload_changed(s3, Path("/tmp/checkpoints"), "s3://bucket/ckpt", sent)
    2
    >>> upload_changed(s3, Path("/tmp/checkpoints"), "s3://bucket/ckpt", sent)
    0
    """
    bucket, prefix = split_s3_uri(uri.rstrip("/") + "/")
    copied = 0
    for path in sorted(directory.rglob("*")):
        try:
            if not path.is_file():
                continue
            status = path.stat()
        except OSError:  # removed while the directory was read
            continue
        signature = (status.st_size, status.st_mtime_ns)
        if sent.get(str(path)) == signature:
            continue
        try:
            s3.upload_file(str(path), bucket, prefix + path.relative_to(directory).as_posix())
        except FileNotFoundError:
            continue
        sent[str(path)] = signature
        copied += 1
    return copied


def pack_directory(directory: Path, tarball: Path) -> int:
    """Write ``directory``'s content as a gzipped tar at ``tarball``.

    Returns the number of entries at the top of the directory (0: an empty
    archive was written).

    >>> pack_directory(layout.model_dir, Path("/tmp/model.tar.gz"))
    1
    """
    entries = sorted(directory.iterdir()) if directory.is_dir() else []
    with tarfile.open(tarball, "w:gz") as archive:
        for entry in entries:
            archive.add(entry, arcname=entry.name)
    return len(entries)


@dataclass
class RunResult:
    """How a container run ended.

    ``stopped`` is true when :meth:`ContainerRun.stop` ended it, ``timed_out``
    when the time limit did; ``failure`` is the content of the failure file.

    >>> RunResult(exit_code=1, failure="ValueError: bad input").succeeded
    False
    """

    exit_code: int
    failure: str | None = None
    stopped: bool = False
    timed_out: bool = False
    started: bool = True

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0 and not self.stopped and not self.timed_out


@dataclass
class _Lines:
    """Turns byte chunks of one stream into complete lines."""

    emit: Callable[[str], None]
    decoder: Any = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace"))
    pending: str = ""

    def feed(self, chunk: bytes) -> None:
        text = self.pending + self.decoder.decode(chunk)
        *lines, self.pending = text.split("\n")
        for line in lines:
            self.emit(line.rstrip("\r"))

    def close(self) -> None:
        text = self.pending + self.decoder.decode(b"", final=True)
        self.pending = ""
        if text:
            self.emit(text.rstrip("\r"))


class ContainerRun:
    """One run of a training image over an :class:`OptMl` directory.

    :meth:`run` blocks until the program ends and returns a :class:`RunResult`;
    :meth:`stop` may be called from any thread (SIGTERM, then SIGKILL after
    ``stop_grace`` seconds, as SageMaker does with its own, longer, grace).
    As on SageMaker there is no init process: the SIGTERM goes to the image's
    ENTRYPOINT or ``train`` as PID 1, and a PID 1 without a SIGTERM handler
    ignores it (Linux's rule), so such a program runs until the kill.
    The container is removed afterwards whatever happens. It runs on the Docker
    network ``network`` (Docker's default when ``None``), with the toolkit's ``SM_*``
    variables and ``PYTHONUNBUFFERED=1``
    (so printed lines arrive as they are printed); ``environment`` (the job's own
    variables) wins over them.
    ``mounts`` adds host directories by their path inside the container (for
    example ``{"/opt/ml/checkpoints": Path("/tmp/job/checkpoints")}``).
    ``hostname`` is the container's host name (``algo-2`` for a job's second
    host) and ``extra_hosts`` adds names to its ``/etc/hosts``
    (``{"algo-1": "127.0.0.1"}``).

    >>> run = ContainerRun(client, "127.0.0.1:5000/fraud:abc", layout, on_line=print)
    >>> threading.Timer(60, run.stop).start()
    >>> run.run().stopped
    True
    """

    def __init__(
        self,
        client,
        image: str,
        layout: OptMl,
        *,
        environment: Mapping[str, str] | None = None,
        on_line: Callable[[str], None] = lambda _: None,
        job_name: str | None = None,
        labels: Mapping[str, str] | None = None,
        mounts: Mapping[str, Path] | None = None,
        stop_grace: float = 10.0,
        network: str | None = None,
        hostname: str | None = None,
        extra_hosts: Mapping[str, str] | None = None,
    ) -> None:
        self.client = client
        self.network = network
        self.hostname = hostname
        self.extra_hosts = dict(extra_hosts or {})
        self.mounts = {CONTAINER_ROOT: layout.root, **(mounts or {})}
        self.image = image
        self.layout = layout
        self.on_line = on_line
        self.stop_grace = stop_grace
        self.environment = {**toolkit_environment(layout), "PYTHONUNBUFFERED": "1"}
        if job_name:
            self.environment["TRAINING_JOB_NAME"] = job_name
        self.environment.update(environment or {})
        self.labels = {LABEL: job_name or "", **(labels or {})}
        self._lock = threading.Lock()
        self._container = None
        self._stop_requested = False
        self._timed_out = False

    def stop(self, timed_out: bool = False) -> None:
        """Ask the program to end (SIGTERM), killing it after the grace period.

        Returns at once; the container ends in the background.
        """
        with self._lock:
            if self._stop_requested:
                return
            self._stop_requested = True
            self._timed_out = timed_out
            container = self._container
        if container is not None:
            self._signal_soon(container)

    def kill(self) -> None:
        """End the program now (SIGKILL), with no grace period."""
        import docker.errors

        with self._lock:
            self.stop_grace = 0
            self._stop_requested = True
            container = self._container
        if container is not None:
            with contextlib.suppress(docker.errors.APIError):  # it already ended
                container.kill()

    def _signal_soon(self, container) -> None:
        threading.Thread(target=self._signal, args=(container,), daemon=True).start()

    def _signal(self, container) -> None:
        import docker.errors

        with contextlib.suppress(docker.errors.APIError):  # it ended and is being removed
            container.stop(timeout=max(0, round(self.stop_grace)))

    def run(self, timeout: float | None = None) -> RunResult:
        """Start the container, stream its output, wait for its end, remove it.

        ``timeout`` (seconds) stops the program as :meth:`stop` does and marks
        the result ``timed_out``.
        """
        import docker.errors

        container = self.client.containers.create(
            self.image,
            command=["train"],
            environment=self.environment,
            **({"network_mode": self.network} if self.network else {}),
            **({"hostname": self.hostname} if self.hostname else {}),
            **({"extra_hosts": self.extra_hosts} if self.extra_hosts else {}),
            labels=self.labels,
            volumes={str(Path(host).resolve()): {"bind": inside, "mode": "rw"}
                     for inside, host in self.mounts.items()},
        )
        timer = None
        try:
            with self._lock:
                if self._stop_requested:
                    return RunResult(exit_code=137, stopped=not self._timed_out,
                                     timed_out=self._timed_out, started=False)
            stream = self.client.api.attach(container.id, stdout=True, stderr=True,
                                            stream=True, logs=True, demux=True)
            container.start()
            with self._lock:
                self._container = container
                stop_now = self._stop_requested
            if stop_now:
                self._signal_soon(container)
            if timeout is not None:
                timer = threading.Timer(timeout, self.stop, kwargs={"timed_out": True})
                timer.daemon = True
                timer.start()
            self._pump(stream)
            exit_code = container.wait()["StatusCode"]
        finally:
            if timer is not None:
                timer.cancel()
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
        with self._lock:
            stopped, timed_out = self._stop_requested, self._timed_out
        return RunResult(exit_code=exit_code, failure=self.layout.failure(),
                         stopped=stopped and not timed_out, timed_out=timed_out)

    def _pump(self, stream) -> None:
        out, err = _Lines(self.on_line), _Lines(self.on_line)
        for stdout, stderr in stream:
            if stdout:
                out.feed(stdout)
            if stderr:
                err.feed(stderr)
        out.close()
        err.close()
