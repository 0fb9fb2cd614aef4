"""The sandbox's offline base image: Debian with Python 3 and pip, built once.

Public registries may be out of reach where the sandbox runs, so the default
``--base`` of sandbox builds is made locally from Debian packages with
``debootstrap`` and imported into the Docker engine. It carries this machine's
CA bundle, so ``pip install`` inside builds works behind a TLS-inspecting proxy.
The root filesystem is cached as a tarball, so a later re-import takes seconds.

Example::

    >>> ensure_base_image(docker_client(), log=print)
    'sm-magics/sandbox-base:bookworm'
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BASE_IMAGE", "BaseImageUnavailable", "RegistryForm", "ensure_base_image",
           "registry_form"]

SUITE = "bookworm"
BASE_IMAGE = f"sm-magics/sandbox-base:{SUITE}"
PACKAGES = ("python3", "python3-pip", "python3-venv", "ca-certificates")
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


class BaseImageUnavailable(Exception):
    """The base image is missing and cannot be built here (the message says why)."""


def cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME", "~/.cache")
    return Path(root).expanduser() / "sm-magics"


def _debian_mirror() -> list[str]:
    """This machine's own Debian mirror when it has one (else debootstrap's default)."""
    for path in [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*")]:
        try:
            text = path.read_text()
        except OSError:
            continue
        for block in re.split(r"\n\s*\n", text):
            uri = re.search(r"^URIs:\s*(\S+)", block, re.M)
            suites = re.search(r"^Suites:\s*(.+)$", block, re.M)
            if uri and suites and SUITE in suites.group(1).split():
                return [uri.group(1)]
            line = re.search(rf"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+{SUITE}\s", block, re.M)
            if line:
                return [line.group(1)]
    return []


def _build_rootfs_tarball(tarball: Path, log: Callable[[str], None]) -> None:
    if shutil.which("debootstrap") is None:
        raise BaseImageUnavailable(
            "debootstrap is not installed (install it with `sudo apt-get install debootstrap`)"
        )
    if os.geteuid() != 0:
        raise BaseImageUnavailable("building it with debootstrap needs root")
    tarball.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sm-magics-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        log(f"Building the sandbox base image from Debian {SUITE} packages (once, about a minute)")
        command = [
            "debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE,
            str(rootfs), *_debian_mirror(),
        ]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-5:])
            raise BaseImageUnavailable(f"debootstrap failed:\n{tail}")
        if HOST_CA_BUNDLE.is_file():
            shutil.copyfile(HOST_CA_BUNDLE, rootfs / "etc/ssl/certs/ca-certificates.crt")
            local_ca = rootfs / "usr/local/share/ca-certificates/sm-magics-host.crt"
            local_ca.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(HOST_CA_BUNDLE, local_ca)
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (rootfs / leftover).glob("*"):
                if entry.is_file():
                    entry.unlink()
        partial = Path(tmp) / "rootfs.tar"
        subprocess.run(["tar", "-C", str(rootfs), "-cf", str(partial), "."], check=True)
        shutil.move(partial, tarball.with_suffix(".partial"))
        tarball.with_suffix(".partial").replace(tarball)


def ensure_base_image(client, log: Callable[[str], None] = lambda _: None) -> str:
    """Return the base image reference, building and importing it when missing.

    Raises :class:`BaseImageUnavailable` when it is missing and cannot be built.
    """
    import docker.errors

    try:
        client.images.get(BASE_IMAGE)
        return BASE_IMAGE
    except docker.errors.ImageNotFound:
        pass
    tarball = cache_dir() / f"sandbox-base-{SUITE}.tar"
    tarball.parent.mkdir(parents=True, exist_ok=True)
    with open(tarball.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time, the others wait for it
        try:
            client.images.get(BASE_IMAGE)
            return BASE_IMAGE
        except docker.errors.ImageNotFound:
            pass
        if not tarball.is_file():
            _build_rootfs_tarball(tarball, log)
        _import(client, tarball, log)
    return BASE_IMAGE


def _import(client, tarball: Path, log: Callable[[str], None]) -> None:
    log(f"Importing {BASE_IMAGE} into the Docker engine")
    repository, tag = BASE_IMAGE.split(":")
    client.api.import_image_from_file(
        str(tarball),
        repository=repository,
        tag=tag,
        changes=[
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "ENV LANG=C.UTF-8",
            "ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
            "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt",
            'CMD ["python3"]',
        ],
    )
    client.images.get(BASE_IMAGE)


# The base's settings, as the engine's image has them (``_import``) and as its image
# config in the registry carries them.
BASE_ENV = (
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG=C.UTF-8",
    "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
    "PIP_CERT=/etc/ssl/certs/ca-certificates.crt",
)
BASE_CMD = ("python3",)
LAYER_TYPE = "application/vnd.docker.image.rootfs.diff.tar.gzip"
CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"


@dataclass(frozen=True)
class RegistryForm:
    """The base image as a registry holds it: one gzip layer, its config and manifest."""

    layer: Path
    layer_digest: str
    layer_size: int
    config: bytes
    manifest: bytes

    @property
    def config_digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.config).hexdigest()


def registry_form(log: Callable[[str], None] = lambda _: None) -> RegistryForm:
    """The base image for a registry, made once from the cached root filesystem.

    No Docker engine is involved: the layer is the root filesystem's tarball
    compressed (reproducibly: no name or time in the gzip header), the config
    sets what the engine's image sets. Raises :class:`BaseImageUnavailable`
    when the root filesystem cannot be built here.
    """
    from ..layers import compress_tar

    tarball = cache_dir() / f"sandbox-base-{SUITE}.tar"
    meta = tarball.with_suffix(".layer.json")
    tarball.parent.mkdir(parents=True, exist_ok=True)
    with open(tarball.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not tarball.is_file():
            _build_rootfs_tarball(tarball, log)
        try:
            known = json.loads(meta.read_text())
            compressed = Path(known["path"])
            if not compressed.is_file() or compressed.stat().st_size != known["size"]:
                raise ValueError("stale")
        except (OSError, ValueError, KeyError):
            log(f"Compressing {BASE_IMAGE} for the sandbox registry (once)")
            layer = compress_tar(tarball, tarball.parent / "sandbox-base-layer")
            known = {"path": str(layer.path), "digest": layer.digest, "size": layer.size,
                     "diff_id": layer.diff_id}
            meta.write_text(json.dumps(known))
            compressed = layer.path
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": list(BASE_ENV), "Cmd": list(BASE_CMD)},
        "rootfs": {"type": "layers", "diff_ids": [known["diff_id"]]},
        "history": [{"created_by": f"debootstrap --variant=minbase {SUITE} (sm-magics)"}],
    }, sort_keys=True, separators=(",", ":")).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "size": len(config),
                   "digest": "sha256:" + hashlib.sha256(config).hexdigest()},
        "layers": [{"mediaType": LAYER_TYPE, "size": known["size"], "digest": known["digest"]}],
    }, indent=3).encode()
    return RegistryForm(compressed, known["digest"], known["size"], config, manifest)
