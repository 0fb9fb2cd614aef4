"""Images built without Docker: assembled through the registry's HTTP API.

An image is its base's layers, a few layers more and a config. A code edit
changes one small layer, so the registry builder never runs a container and
needs no Docker engine (most SageMaker Studio spaces have none):

1. **Base**: the base reference is resolved in its registry (Docker Hub and
   ECR Public anonymously, ECR with its token, the sandbox's registry), the
   ``linux/amd64`` manifest picked from an index, and its config read. Each
   base layer is made present in the target repository once: mounted when it
   is in the same registry, else streamed across (never whole in memory).
2. **Dependencies**: ``--pip``/``--requirements`` installed by pip on this
   machine for the image's Linux and Python (manylinux wheels only,
   :func:`sm_magics.layers.dependency_layer`), into ``/opt/sm-magics/deps``,
   which ``PYTHONPATH`` puts ahead of the base's site-packages. The base's
   Python version is read from the base (its config, or its files); the
   ``base_python`` setting gives it when the base does not say.
3. **Code**: ``train.py`` (the prelude and the cell), the ``--file`` files and
   the ``train`` launcher, as a reproducible layer.
4. **Upload** of what the repository lacks (HEAD first), then the config, and
5. **Tag**: a Docker Image Manifest V2 Schema 2, the manifest type SageMaker
   accepts (it answers "Unsupported manifest media type
   application/vnd.oci.image.manifest.v1+json" for OCI manifests:
   aws/amazon-sagemaker-feedback#180, moby/buildkit#5480).

Layers are reproducible (sorted entries, fixed times, owner root, no time in
the gzip header) and the config carries no build time, so the same cell,
files, requirements and base give the same image digest on any machine.

The image behaves under the training contract as the Docker builder's do:
SageMaker runs ``train``; the launcher at ``/opt/sm-magics/bin/train`` comes
first on ``PATH``, changes into ``/opt/program`` and ``exec``\\ s the base's
``python3`` on ``train.py``; the base's ENTRYPOINT and working directory are
kept. What needs commands run in the image (``--apt``, ``--run``,
``--dockerfile``) needs the Docker builder.

Example::

    >>> builder = RegistryBuilder(settings, listener)
    >>> image = builder.build(prepare(recipe), ecr, "sagemaker-fraud", build_dir)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import SANDBOX_BASE_VARIABLE
from .errors import RemoteFailure, usage_error
from .recipe import LAUNCHER_DIR, PROGRAM_DIR, BuildContext, Recipe

if TYPE_CHECKING:
    from .config import Settings
    from .ecr import Ecr
    from .registry import Descriptor, Manifest, Registry

__all__ = ["COMMAND_OPTIONS", "MANIFEST_TYPE", "STAGES", "RegistryBuilder", "base_reference",
           "needs_docker", "registry_tag"]

STAGES = ("Prepare", "Look up", "Base", "Dependencies", "Code", "Upload", "Tag")
MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
LAYER_TYPE = "application/vnd.docker.image.rootfs.diff.tar.gzip"
# Layer types whose bytes are a gzip tar, listed in a Docker manifest as LAYER_TYPE.
_GZIP_LAYERS = frozenset({LAYER_TYPE, "application/vnd.oci.image.layer.v1.tar+gzip"})
FORMAT = "registry-builder-1"  # part of the tag: a change of layout gives new tags
# The options that run commands in the image, each with what it does.
COMMAND_OPTIONS = (("--apt", "apt"), ("--run", "run"), ("--dockerfile", "dockerfile"))
LAUNCHER = (f"#!/bin/sh\ncd {PROGRAM_DIR} || exit 1\n"
            f'exec python3 {PROGRAM_DIR}/train.py "$@"\n')
_ENV = (("PYTHONUNBUFFERED", "1"), ("PYTHONDONTWRITEBYTECODE", "1"),
        ("PIP_DISABLE_PIP_VERSION_CHECK", "1"), ("PIP_NO_CACHE_DIR", "1"),
        ("PIP_ROOT_USER_ACTION", "ignore"))
# Bases up to this size (compressed) are read for their Python version when their
# config does not say it; larger ones (Deep Learning Containers) need the setting.
_LIST_LIMIT = 512 * 1024 * 1024


def needs_docker(recipe: Recipe) -> list[str]:
    """The options of ``recipe`` that run commands in the image (only Docker can)."""
    return [flag for flag, field_name in COMMAND_OPTIONS if getattr(recipe, field_name)]


def registry_tag(context: BuildContext) -> BuildContext:
    """``context`` with the content hash of its registry-built image (its own tags)."""
    digest = hashlib.sha256(f"{FORMAT}\0{context.sha256}".encode()).hexdigest()
    return dataclasses.replace(context, sha256=digest)


def base_reference(base: str) -> str:
    """The reference the base is read from: the sandbox's base is served by its registry.

    >>> os.environ[SANDBOX_BASE_VARIABLE] = "127.0.0.1:5000/sm-magics/sandbox-base:bookworm"
    >>> base_reference("sm-magics/sandbox-base:bookworm")
    '127.0.0.1:5000/sm-magics/sandbox-base:bookworm'
    """
    served = os.environ.get(SANDBOX_BASE_VARIABLE, "")
    if served and served.split("/", 1)[-1] == base:
        return served
    return base


def _ecr_host(host: str) -> tuple[str, str] | None:
    """``(account, region)`` of a private ECR registry host, else ``None``."""
    import re

    found = re.match(r"^(\d{12})\.dkr\.ecr(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$",
                     host)
    return (found.group(1), found.group(2)) if found else None


class RegistryBuilder:
    """Builds a prepared recipe into an image in its ECR repository, without Docker."""

    def __init__(self, settings: Settings, listener: Any,
                 cache_dir: Path | None = None) -> None:
        # ``listener`` is a :class:`~sm_magics.build.BuildListener` (that module calls this one)
        self.settings = settings
        self.listener = listener
        self.cache_dir = cache_dir or _cache_dir()

    # ------------------------------------------------------------ the build

    def build(self, context: BuildContext, recipe: Recipe, ecr: Ecr, name: str,
              build_dir: Path) -> tuple[str, str]:
        """Assemble and push ``context`` (prepared from ``recipe``, with its
        :func:`registry_tag`) as ``name:<tag>``; returns ``(uri, digest)``."""
        from .layers import File, write_layer
        from .recipe import parse_env
        from .registry import Registry, parse_reference

        requirements_file = context.files.get("requirements.txt")
        requirements = (requirements_file.data or b"").decode() if requirements_file else ""
        env = parse_env(recipe)
        self.listener.stage("Base", context.base or "")
        base = parse_reference(base_reference(context.base or ""))
        # The base is read, and checked, before the repository is created.
        source = Registry(base.host, self._credentials_for(base.host, ecr))
        manifest = source.manifest(base.repository, base.reference)
        config = source.config(base.repository, manifest.config)
        self._check_layers(manifest, context.base or "")
        repository = ecr.ensure(name, note=self.listener.note)
        target = Registry(repository.host, ecr.credential)
        if base.host == repository.host:
            source = target  # one registry: a mount where it allows one
        for layer in manifest.layers:
            self._copy(target, source, base.repository, name, layer)

        work = Path(tempfile.mkdtemp(prefix="layers-", dir=build_dir.parent))
        try:
            layers = []
            self.listener.stage("Dependencies", "none" if not requirements else
                                f"{len(requirements.splitlines())} requirement(s)")
            if requirements:
                python = self._base_python(config, target, name, manifest.layers)
                layers.append(self._dependencies(requirements, python, context, work))
            self.listener.stage("Code", f"{PROGRAM_DIR}/train.py")
            entries: dict[str, Any] = {
                f"{LAUNCHER_DIR}/train": File(LAUNCHER.encode(), 0o755)}
            for relative, entry in context.files.items():
                if relative in ("Dockerfile", "requirements.txt"):
                    continue
                content = entry.data if entry.data is not None else entry.source
                entries[f"{PROGRAM_DIR}/{relative}"] = File(content, entry.mode & 0o755)
            layers.append(write_layer(entries, work))

            self.listener.stage("Upload", f"{repository.uri}")
            for layer in layers:
                short = layer.digest.split(":")[1][:12]
                result = target.upload_blob(
                    name, layer.path, layer.digest, layer.size,
                    progress=lambda done, total, short=short: self.listener.layer(
                        short, "Pushing", done, total))
                self.listener.layer(short, "Pushed" if result == "uploaded"
                                    else "Layer already exists", layer.size, layer.size)
            image_config = _image_config(config, [layer.diff_id for layer in layers],
                                         context.name, env, bool(requirements))
            config_digest = "sha256:" + hashlib.sha256(image_config).hexdigest()
            config_file = work / "config.json"
            config_file.write_bytes(image_config)
            target.upload_blob(name, config_file, config_digest, len(image_config))
            document = _manifest(image_config, config_digest, manifest.layers, layers)
            (build_dir / "image-manifest.json").write_bytes(document)
            (build_dir / "image-config.json").write_bytes(image_config)
        finally:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
        self.listener.stage("Tag", repository.image_uri(context.tag))
        digest = target.put_manifest(name, context.tag, document, MANIFEST_TYPE)
        return repository.image_uri(context.tag), digest

    # ------------------------------------------------------------ parts

    def _credentials_for(self, host: str, ecr: Ecr) -> Callable[[bool], str | None]:
        """How to log in to the base's registry: ECR hosts with an ECR token for them."""
        if host == self.settings.registry:  # the registry images are pushed to (the sandbox's)
            return ecr.credential
        found = _ecr_host(host)
        if found is None:
            return lambda refresh: None  # Docker Hub, ECR Public, ...: anonymous, as pulls are
        account, region = found
        return lambda refresh: ecr.credential_for(account, region, refresh)

    @staticmethod
    def _check_layers(manifest: Manifest, base: str) -> None:
        odd = sorted({layer.media_type for layer in manifest.layers
                      if layer.media_type not in _GZIP_LAYERS})
        if odd:
            raise usage_error(
                f"The base image {base} has layers of type {', '.join(odd)}, which a Docker "
                "image manifest (what SageMaker accepts) cannot list. Choose a base published "
                "with gzip layers, or build with --builder docker.")

    def _copy(self, target: Registry, source: Registry, source_repository: str,
              name: str, layer: Descriptor) -> None:
        short = layer.digest.split(":")[1][:12]
        self.listener.layer(short, "Waiting", 0, layer.size)
        result = target.copy_blob(
            source, source_repository, name, layer,
            progress=lambda done, total: self.listener.layer(short, "Copying", done, total))
        status = {"present": "Layer already exists", "mounted": "Mounted from base",
                  "copied": "Copied"}[result]
        self.listener.layer(short, status, layer.size, layer.size)

    def _base_python(self, config: Mapping[str, Any], target: Registry, name: str,
                     base_layers: list[Descriptor]) -> str | None:
        """The base's Python version: the setting, its config, else its files when small."""
        from .layers import (
            layer_paths,
            python_version_from_config,
            python_version_from_paths,
            search_path,
        )

        found = self.settings.base_python or python_version_from_config(config)
        if found or sum(layer.size for layer in base_layers) > _LIST_LIMIT:
            return found
        # What the files say is kept by the base's layers: read once per base.
        key = hashlib.sha256(" ".join(layer.digest for layer in base_layers).encode())
        known = self.cache_dir / "base-python" / f"{key.hexdigest()}.json"
        try:
            return json.loads(known.read_text())["python"]
        except (OSError, ValueError, KeyError):
            pass
        self.listener.step("reading the base's files for its Python version")
        paths: list[str] = []
        links: dict[str, str] = {}
        for layer in base_layers:  # streamed from the copy in the target repository
            with target.open_blob(name, layer.digest) as blob:
                paths.extend(layer_paths(blob, links))
        found = python_version_from_paths(paths, search_path(config), links)
        if found:
            known.parent.mkdir(parents=True, exist_ok=True)
            partial = known.with_suffix(".partial")
            partial.write_text(json.dumps({"python": found}))
            partial.replace(known)
        return found

    def _dependencies(self, requirements: str, python: str | None,
                      context: BuildContext, work: Path):
        from .layers import NoWheel, PipFailed, dependency_layer

        if not python:
            raise usage_error(
                f"%%sm_container {context.name}: the base image {context.base} does not say "
                "which Python it runs, which the registry builder needs to pick wheels for "
                "--pip/--requirements. Give it: `%sm_config --base-python 3.11` (the "
                "version of the base's python3), or build with --builder docker.")
        self.listener.step(f"pip: wheels for Linux x86_64, CPython {python}")
        try:
            layer = dependency_layer(requirements, python, self.cache_dir / "dependencies",
                                     work)
        except NoWheel as exc:
            raise usage_error(f"%%sm_container {context.name}: {exc}") from None
        except PipFailed as exc:
            raise RemoteFailure(f"pip could not install the requirements of {context.name}",
                                reason=str(exc),
                                hint="Check the requirement names and versions, or build "
                                     "with --builder docker.") from None
        self.listener.step("dependencies: from the cache" if layer.cached
                           else "dependencies: installed")
        return layer


def _cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME", "~/.cache")
    return Path(root).expanduser() / "sm-magics" / "registry-builder"


def _env_value(env: list[str], name: str) -> str | None:
    for item in env:
        key, _, value = item.partition("=")
        if key == name:
            return value
    return None


def _image_config(base: Mapping[str, Any], diff_ids: list[str], name: str,
                  env_pairs: list[tuple[str, str]], dependencies: bool) -> bytes:
    """The image config: the base's, with the layers, environment and command added.

    No time of the build goes in (``created`` is the epoch), so it is reproducible.
    """
    from .layers import DEFAULT_PATH, DEPS_DIR

    config = json.loads(json.dumps(base))  # a copy
    for legacy in ("container", "container_config", "docker_version", "parent", "id"):
        config.pop(legacy, None)
    settings = dict(config.get("config") or {})
    env = list(settings.get("Env") or [])
    path = _env_value(env, "PATH") or DEFAULT_PATH
    values = dict(_ENV)
    values["PATH"] = f"{LAUNCHER_DIR}:{path}"
    if dependencies:
        existing = _env_value(env, "PYTHONPATH")
        values["PYTHONPATH"] = DEPS_DIR + (f":{existing}" if existing else "")
    values.update(env_pairs)
    env = [item for item in env if item.partition("=")[0] not in values]
    env += [f"{key}={value}" for key, value in values.items()]
    settings["Env"] = env
    settings["Cmd"] = ["train"]
    config["config"] = settings
    config["architecture"], config["os"] = "amd64", "linux"
    config["created"] = "1970-01-01T00:00:00Z"
    rootfs = dict(config.get("rootfs") or {"type": "layers", "diff_ids": []})
    rootfs["diff_ids"] = list(rootfs.get("diff_ids") or []) + diff_ids
    config["rootfs"] = rootfs
    history = list(config.get("history") or [])
    if dependencies:
        history.append({"created": config["created"],
                        "created_by": f"sm-magics: pip install --target {DEPS_DIR}"})
    history.append({"created": config["created"],
                    "created_by": f"sm-magics: the code of {name} in {PROGRAM_DIR}"})
    config["history"] = history
    return json.dumps(config, sort_keys=True, separators=(",", ":")).encode()


def _manifest(config: bytes, config_digest: str, base_layers, layers) -> bytes:
    document = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "size": len(config), "digest": config_digest},
        "layers": [{"mediaType": LAYER_TYPE, "size": layer.size, "digest": layer.digest}
                   for layer in base_layers]
        + [{"mediaType": LAYER_TYPE, "size": layer.size, "digest": layer.digest}
           for layer in layers],
    }
    return json.dumps(document, indent=3).encode()
