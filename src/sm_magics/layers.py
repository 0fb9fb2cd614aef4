"""Image layers made without Docker: your code and your pip packages as reproducible tarballs.

A container image is a stack of layers (tar archives of files) plus a small JSON
config. The Docker-free builder reuses the base image's layers as they are in
the registry and adds new ones made here:

* :func:`write_layer` turns files, directories and symlinks into one gzip
  layer. The same inputs always give the same bytes, so the same digest: an
  unchanged notebook cell uploads nothing new.
* :func:`python_version_from_config` and :func:`python_version_from_paths` tell
  which Python the base image runs (``"3.12"``), from its config or from the
  file names in its layers (:func:`layer_paths` lists those from a layer's
  stream).
* :func:`dependency_layer` installs your pip requirements for that Python and
  for Linux x86_64 -- even from a Mac, or from a notebook on another Python --
  into a layer at ``/opt/sm-magics/deps``, and keeps it in a cache: the same
  requirements never run pip twice.

Example::

    >>> from pathlib import Path
    >>> entries = {
    ...     "/opt/program/train.py": b"print('training')\\n",     # a file, mode 0644
    ...     "/opt/program/run.sh": (0o755, b"#!/bin/sh\\n..."),   # a file with its mode
    ...     "/opt/program/data.csv": Path("data.csv"),            # a file of this machine
    ...     "/opt/program/latest": Symlink("data.csv"),           # a symlink, kept as one
    ...     "/opt/ml/checkpoints": Directory(),                   # an empty directory
    ... }
    >>> entries.update(add_tree("src", "/opt/program/src"))       # a whole folder
    >>> layer = write_layer(entries, "build/")
    >>> layer.digest, layer.size
    ('sha256:9c1e...', 2841)
    >>> layer.descriptor()["mediaType"]
    'application/vnd.docker.image.rootfs.diff.tar.gzip'

    >>> python_version_from_config({"config": {"Env": ["PYTHON_VERSION=3.12.7"]}})
    '3.12'
    >>> deps = dependency_layer("pandas==2.2.2\\n", "3.12", cache_dir="~/.cache/sm-magics/layers",
    ...                         destination_dir="build/")
    >>> deps.cached          # True on the next call with the same requirements
    False

What is reproducible: entries are sorted by path (component by component, as
``tar --sort=name``), every parent directory comes before what is inside it,
every entry has mtime :data:`MTIME` (0, i.e. 1970-01-01), owner and group 0
with empty names, no device numbers, PAX format; files are mode 0755 when
executable and 0644 otherwise (or the mode you give), directories 0755,
symlinks 0777. The gzip stream has mtime 0, no file name and level
:data:`GZIP_LEVEL`. ``diff_id`` (the uncompressed tar's sha256) depends only on
the inputs; ``digest`` also depends on the zlib library that compresses, which
is the same for a given Python build.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import IO, Any

__all__ = [
    "DEFAULT_PATH",
    "DEPS_DIR",
    "GZIP_LEVEL",
    "LAYER_MEDIA_TYPE",
    "MANYLINUX_X86_64",
    "MTIME",
    "Directory",
    "File",
    "Layer",
    "NoWheel",
    "PipFailed",
    "Symlink",
    "add_tree",
    "dependency_layer",
    "layer_paths",
    "manylinux_platforms",
    "python_version_from_config",
    "python_version_from_paths",
    "search_path",
    "write_layer",
]

LAYER_MEDIA_TYPE = "application/vnd.docker.image.rootfs.diff.tar.gzip"
MTIME = 0  # every entry's modification time: 1970-01-01T00:00:00Z
GZIP_LEVEL = 6  # gzip's own default: a fair trade of size against time
DEPS_DIR = "/opt/sm-magics/deps"
# The search path of an image whose config sets no PATH (the Docker engine's default).
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Bumped whenever the dependency layer's bytes would change for the same inputs,
# so older cache entries are not reused.
_CACHE_FORMAT = 1
_CHUNK = 1 << 16


def manylinux_platforms(glibc: str = "2.28", arch: str = "x86_64") -> tuple[str, ...]:
    """The wheel platform tags a Linux with this glibc and CPU runs, newest first.

    pip expands only the legacy names (``manylinux2014`` to ``manylinux2010`` and
    ``manylinux1``), so each ``manylinux_2_N`` of PEP 600 is listed here.

    >>> manylinux_platforms("2.17")
    ('manylinux_2_17_x86_64', 'manylinux2014_x86_64', 'manylinux_2_12_x86_64', \
'manylinux2010_x86_64', 'manylinux_2_5_x86_64', 'manylinux1_x86_64')
    """
    major, _, minor = glibc.partition(".")
    if major != "2" or not minor.isdigit() or int(minor) < 17:
        raise ValueError(f"glibc {glibc!r}: give a version such as '2.28' (2.17 or later).")
    tags = [f"manylinux_2_{n}_{arch}" for n in range(int(minor), 16, -1)]
    tags.append(f"manylinux2014_{arch}")
    if arch in ("x86_64", "i686"):
        tags += [f"manylinux_2_12_{arch}", f"manylinux2010_{arch}",
                 f"manylinux_2_5_{arch}", f"manylinux1_{arch}"]
    return tuple(tags)


# Wheels that run on glibc 2.28 or later: Debian 10+, Ubuntu 18.10+ (the DLCs' 20.04
# and 22.04), Amazon Linux 2023, RHEL 8+. Not Amazon Linux 2 or CentOS 7 (glibc
# 2.26 / 2.17): for those pass ``platforms=manylinux_platforms("2.17")``.
MANYLINUX_X86_64 = manylinux_platforms("2.28", "x86_64")


# --- Layers ---------------------------------------------------------------------


@dataclass(frozen=True)
class Layer:
    """A layer tarball on disk and the identifiers a registry and an image config use.

    ``digest`` is the sha256 of the ``.tar.gz`` file (the blob's name in the
    registry, listed in the manifest), ``diff_id`` the sha256 of the tar inside
    it (listed in the image config's ``rootfs.diff_ids``), ``size`` the file's
    bytes. ``cached`` is True when :func:`dependency_layer` found it in its
    cache instead of running pip.
    """

    path: Path
    digest: str
    diff_id: str
    size: int
    media_type: str = LAYER_MEDIA_TYPE
    cached: bool = False

    def descriptor(self) -> dict[str, Any]:
        """The layer's entry of an image manifest's ``layers`` list."""
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class File:
    """A regular file: ``source`` is its content (bytes) or a file of this machine.

    ``mode`` None means 0644, or 0755 when the machine's file is executable.
    """

    source: bytes | os.PathLike[str]
    mode: int | None = None


@dataclass(frozen=True)
class Directory:
    """A directory (only needed for an empty one: parents are added by themselves)."""

    mode: int = 0o755


@dataclass(frozen=True)
class Symlink:
    """A symbolic link to ``target`` (relative to the link's folder, or absolute)."""

    target: str


Entry = File | Directory | Symlink
# What a mapping given to write_layer may hold for one path.
EntryLike = Entry | bytes | os.PathLike | tuple


def add_tree(
    host_dir: str | os.PathLike[str],
    image_dir: str,
    ignore: Callable[[str], bool] | None = None,
) -> dict[str, Entry]:
    """Entries that put the folder ``host_dir`` (and all under it) at ``image_dir``.

    Symlinks stay symlinks (never followed); files keep only their executable
    bit. ``ignore(relative_path)`` returning True leaves that file or folder out
    (``relative_path`` uses ``/``, e.g. ``"pkg/__pycache__"``). Sockets, pipes and
    devices raise ValueError.

    >>> add_tree("deps", "/opt/sm-magics/deps", ignore=lambda p: p.endswith("__pycache__"))
    {'/opt/sm-magics/deps': Directory(mode=493), '/opt/sm-magics/deps/six.py': File(...), ...}
    """
    root = Path(host_dir)
    if not root.is_dir():
        raise ValueError(f"{str(root)!r} is not a folder.")
    base = "/" + _image_path(image_dir)
    entries: dict[str, Entry] = {base: Directory()}
    for folder, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(folder)
        kept_dirs = []
        for name in sorted(dirnames) + sorted(filenames):
            full = here / name
            relative = full.relative_to(root).as_posix()
            if ignore is not None and ignore(relative):
                continue
            image_path = f"{base}/{relative}"
            if full.is_symlink():
                entries[image_path] = Symlink(os.readlink(full))
            elif full.is_dir():
                entries[image_path] = Directory()
                kept_dirs.append(name)
            elif full.is_file():
                entries[image_path] = File(full)
            else:
                raise ValueError(f"{str(full)!r} is not a file, folder or symlink.")
        dirnames[:] = kept_dirs  # do not walk into ignored folders or folder symlinks
    return entries


def write_layer(entries: Mapping[str, EntryLike], destination_dir: str | os.PathLike[str]) -> Layer:
    """Write ``entries`` as one reproducible gzip layer in ``destination_dir``.

    ``entries`` maps absolute image paths to :class:`File`, :class:`Directory`,
    :class:`Symlink`, or the shorthands ``bytes`` (a 0644 file), a
    :class:`~pathlib.Path` (a file of this machine) and ``(mode, bytes_or_path)``.
    Paths with ``..``, relative paths and the root raise ValueError, and so does
    a path below a file or symlink. Missing parent directories are added
    (0755).

    The tarball is streamed to ``<destination_dir>/<sha256>.tar.gz`` (written
    under a temporary name, then renamed, so the name always matches its
    content); files are read in chunks, never whole.
    """
    import gzip
    import tarfile
    import tempfile

    members = _members(entries)
    destination = Path(destination_dir)
    destination.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=destination, prefix=".layer-", suffix=".partial")
    try:
        with os.fdopen(handle, "wb") as raw:
            compressed = _HashingWriter(raw)
            with gzip.GzipFile(filename="", mode="wb", fileobj=compressed,
                               compresslevel=GZIP_LEVEL, mtime=0) as gz:
                uncompressed = _HashingWriter(gz)
                with tarfile.open(fileobj=uncompressed, mode="w|",
                                  format=tarfile.PAX_FORMAT) as tar:
                    for name in sorted(members, key=lambda p: p.split("/")):
                        _add_member(tar, name, members[name])
        digest = "sha256:" + compressed.sha256.hexdigest()
        final = destination / f"{compressed.sha256.hexdigest()}.tar.gz"
        os.replace(temporary, final)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return Layer(path=final, digest=digest, diff_id="sha256:" + uncompressed.sha256.hexdigest(),
                 size=compressed.size)


def compress_tar(tarball: str | os.PathLike[str], destination_dir: str | os.PathLike[str]) -> Layer:
    """An existing tar file as a gzip layer in ``destination_dir``, compressed as
    :func:`write_layer` compresses (no name or time in the header), read in chunks."""
    import gzip
    import tempfile

    destination = Path(destination_dir)
    destination.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=destination, prefix=".layer-", suffix=".partial")
    try:
        with os.fdopen(handle, "wb") as raw, open(tarball, "rb") as source:
            compressed = _HashingWriter(raw)
            uncompressed = hashlib.sha256()
            with gzip.GzipFile(filename="", mode="wb", fileobj=compressed,
                               compresslevel=GZIP_LEVEL, mtime=0) as gz:
                for chunk in iter(lambda: source.read(1 << 20), b""):
                    uncompressed.update(chunk)
                    gz.write(chunk)
        final = destination / f"{compressed.sha256.hexdigest()}.tar.gz"
        os.replace(temporary, final)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return Layer(path=final, digest="sha256:" + compressed.sha256.hexdigest(),
                 diff_id="sha256:" + uncompressed.hexdigest(), size=compressed.size)


class _HashingWriter:
    """A write-only file that hashes and counts what passes through to ``target``."""

    def __init__(self, target: IO[bytes]) -> None:
        self.target = target
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        self.target.write(data)
        return len(data)

    def flush(self) -> None:
        self.target.flush()


def _image_path(path: str) -> str:
    """``/opt//program/./x`` -> ``opt/program/x``; ValueError for what a layer must not hold."""
    if not isinstance(path, str) or not path.startswith("/"):
        raise ValueError(f"{path!r}: give an absolute path in the image, e.g. '/opt/program/x'.")
    if "\0" in path:
        raise ValueError(f"{path!r}: a path cannot contain a NUL character.")
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise ValueError(f"{path!r}: '..' is not allowed in a layer's paths.")
    if not parts:
        raise ValueError(f"{path!r}: the image's root folder cannot be an entry.")
    return "/".join(parts)


def _entry(path: str, value: Any) -> Entry:
    if isinstance(value, (File, Directory, Symlink)):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return File(bytes(value))
    if isinstance(value, os.PathLike):
        return File(value)
    if (isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], int)
            and isinstance(value[1], (bytes, os.PathLike))):
        return File(value[1], value[0])
    raise ValueError(
        f"{path!r}: {type(value).__name__} is not a layer entry. Give bytes (content), "
        "a Path (a file of this machine), (mode, bytes_or_path), File, Directory or Symlink."
    )


def _members(entries: Mapping[str, EntryLike]) -> dict[str, Entry]:
    members: dict[str, Entry] = {}
    for path, value in entries.items():
        name = _image_path(path)
        if name in members:
            raise ValueError(f"{path!r} is given twice (as /{name}).")
        members[name] = _entry(path, value)
    for name in list(members):
        parts = name.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            existing = members.setdefault(parent, Directory())
            if not isinstance(existing, Directory):
                raise ValueError(f"/{name} would be inside /{parent}, which is not a folder.")
    return members


def _add_member(tar: Any, name: str, entry: Entry) -> None:
    import tarfile

    info = tarfile.TarInfo(name)
    info.mtime = MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if isinstance(entry, Directory):
        info.type = tarfile.DIRTYPE
        info.mode = entry.mode & 0o7777
        tar.addfile(info)
    elif isinstance(entry, Symlink):
        info.type = tarfile.SYMTYPE
        info.mode = 0o777
        info.linkname = entry.target
        tar.addfile(info)
    elif isinstance(entry.source, bytes):
        import io

        info.mode = (0o644 if entry.mode is None else entry.mode) & 0o7777
        info.size = len(entry.source)
        tar.addfile(info, io.BytesIO(entry.source))
    else:
        with open(entry.source, "rb") as source:
            status = os.fstat(source.fileno())
            if not stat.S_ISREG(status.st_mode):
                raise ValueError(f"{os.fspath(entry.source)!r} is not a regular file.")
            if entry.mode is not None:
                info.mode = entry.mode & 0o7777
            else:
                info.mode = 0o755 if status.st_mode & 0o111 else 0o644
            info.size = status.st_size
            tar.addfile(info, source)


# --- The base image's Python ----------------------------------------------------

# "3.12.7", "3.13.0rc2", "3.12", "python3.11", "py310", "cp312" -> (3, minor)
_VERSION = re.compile(r"(?:python|py|cp)?3(?:\.(\d{1,2})(?:\.\d+)?(?:[a-z]+\d*)?|(\d{1,2}))",
                      re.IGNORECASE)
# Env variables that name the image's Python, most telling first. The official
# python images set PYTHON_VERSION; some conda images CONDA_PYTHON_VERSION.
_VERSION_VARIABLES = ("PYTHON_VERSION", "PYTHON_SHORT_VERSION", "CONDA_PYTHON_VERSION",
                      "PY_VERSION", "PYTHON")
_VERSION_LABELS = ("python_version", "python.version", "python-version",
                   "org.python.version")


def _minor_version(value: str) -> str | None:
    """``"3.12.7"`` -> ``"3.12"``; None for "3", "2.7.18", "" and other non-answers."""
    match = _VERSION.fullmatch(value.strip())
    if match is None:
        return None
    minor = match.group(1)
    if minor is None:
        if not value.strip().lower().startswith(("py", "cp")):  # "310" alone is no answer
            return None
        minor = match.group(2)
    return f"3.{int(minor)}"


def _config_section(config: Mapping[str, Any]) -> Mapping[str, Any]:
    """The ``config`` object of an image config blob (or ``config`` itself if given that)."""
    inner = config.get("config")
    if isinstance(inner, Mapping):
        return inner
    return config


def _env(config: Mapping[str, Any]) -> dict[str, str]:
    found: dict[str, str] = {}
    for item in _config_section(config).get("Env") or ():
        if isinstance(item, str) and "=" in item:
            key, _, value = item.partition("=")
            found[key] = value
    return found


def search_path(config: Mapping[str, Any] | None) -> str:
    """The image's ``PATH`` from its config, or the Docker engine's default."""
    if config is None:
        return DEFAULT_PATH
    return _env(config).get("PATH") or DEFAULT_PATH


def python_version_from_config(config: Mapping[str, Any]) -> str | None:
    """The base image's Python as ``"3.12"``, when its config says so; else None.

    ``config`` is the image config blob as JSON (its ``config.Env`` and
    ``config.Labels`` are read). The official ``python:`` images set
    ``PYTHON_VERSION=3.12.7``; a few images set ``CONDA_PYTHON_VERSION`` or
    ``PYTHON=python3.11``, or a ``python_version`` label. A bare major version
    (``3``), Python 2 and unparsable values count as not said.

    The AWS Deep Learning Containers say nothing: their Dockerfiles keep the
    version in a build ``ARG``, which is not saved in the config. For those, use
    :func:`python_version_from_paths` on the base's layers. A variable can also
    be stale (an image built ``FROM python:3.12`` that then puts conda first on
    PATH keeps ``PYTHON_VERSION``); the layers show what PATH runs.

    >>> python_version_from_config({"config": {"Env": ["PYTHON_VERSION=3.12.7"]}})
    '3.12'
    >>> python_version_from_config({"config": {"Env": ["PATH=/opt/conda/bin:/usr/bin"]}}) is None
    True
    """
    env = _env(config)
    for key in _VERSION_VARIABLES:
        value = env.get(key)
        if value:
            version = _minor_version(value)
            if version:
                return version
    labels = _config_section(config).get("Labels") or {}
    if isinstance(labels, Mapping):
        lowered = {str(k).lower(): v for k, v in labels.items()}
        for key in _VERSION_LABELS:
            value = lowered.get(key)
            if isinstance(value, str):
                version = _minor_version(value)
                if version:
                    return version
    return None


_INTERPRETER = re.compile(r"python3\.(\d{1,2})")
# <prefix>/lib/python3.N/... : a Python installed under <prefix> (its bin/ holds python3)
_LIB_DIR = re.compile(r"(?:^|/)(lib(?:64)?)/python3\.(\d{1,2})(?:/|$)")
_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"


def _norm(path: str) -> str:
    path = path.strip()
    while path.startswith("./"):
        path = path[2:]
    return path.strip("/")


def _resolve(path: str, links: Mapping[str, str], hops: int = 16) -> str:
    """``path`` with every symlinked component followed through ``links`` (path -> target)."""
    parts = path.split("/")
    done: list[str] = []
    while parts:
        part = parts.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if done:
                done.pop()
            continue
        target = links.get("/".join([*done, part]))
        if target is not None and hops > 0:
            hops -= 1
            if target.startswith("/"):
                done = []
            parts = target.split("/") + parts
            continue
        done.append(part)
    return "/".join(done)


def python_version_from_paths(
    paths: Iterable[str],
    path: str | None = None,
    symlinks: Mapping[str, str] | None = None,
) -> str | None:
    """The Python that ``python3`` (else ``python``) on ``path`` runs, from layer file names.

    ``paths`` are the file names of the base image's layers, bottom layer
    first, as :func:`layer_paths` lists them (``usr/local/bin/python3.12``,
    ``opt/conda/lib/python3.10/os.py``, ...; a leading ``/`` or ``./`` and a
    trailing ``/`` do not matter). Whiteouts (``.wh.NAME``, ``.wh..wh..opq``) of
    later layers remove what earlier layers had. ``path`` is the image's PATH
    (:func:`search_path` of its config; Docker's default when None): the first
    folder on it holding ``python3`` wins, as in a shell, so with
    ``/opt/conda/bin`` first a conda Python beats the system's ``/usr/bin`` one.
    ``symlinks`` (link name -> target, as :func:`layer_paths` collects them)
    follows ``python3 -> python3.12`` links; without it, the one ``python3.N``
    beside ``python3``, or the one ``<prefix>/lib/python3.N`` of its
    ``<prefix>/bin``, tells. Only Python 3 counts. None when the names cannot
    tell (no Python found, or several equally likely).

    >>> python_version_from_paths(
    ...     ["usr/lib/python3.10/os.py", "opt/conda/bin/python3", "opt/conda/lib/python3.11/os.py"],
    ...     path="/opt/conda/bin:/usr/bin")
    '3.11'
    """
    links = {_norm(k): v for k, v in (symlinks or {}).items()}
    commands: set[str] = set()  # bin-like entries named python, python3, python3.N
    libs: dict[str, set[str]] = {}  # "<prefix>/lib/python3.N" -> its telling files seen
    for raw in paths:
        name = _norm(raw)
        if not name:
            continue
        folder, _, base = name.rpartition("/")
        if base.startswith(_WHITEOUT):
            gone = folder if base == _OPAQUE else "/".join(filter(None, [folder, base[4:]]))
            inside = (folder + "/" if folder else "") if base == _OPAQUE else None
            commands = {c for c in commands if not _within(c, gone, inside)}
            libs = {k: v for k, v in libs.items() if not _within(k, gone, inside)}
            continue
        if base in ("python", "python3") or _INTERPRETER.fullmatch(base):
            commands.add(name)
        match = _LIB_DIR.search(name)
        if match:
            anchor = name[: match.end(2)].lstrip("/")
            seen = libs.setdefault(anchor, set())
            if name == anchor + "/os.py":
                seen.add("os.py")
    folders = [_norm(p) for p in (path or DEFAULT_PATH).split(":") if _norm(p)]
    for command in ("python3", "python"):
        for folder in folders:
            found = _resolve(f"{folder}/{command}", links)
            if found not in commands and f"{folder}/{command}" not in commands:
                continue
            return _interpreter_version(found, commands, libs)
    # No python3 or python listed on PATH (e.g. only lib folders were given):
    # the Python installed under the first PATH folder's prefix.
    for folder in folders:
        version = _prefix_version(folder.rpartition("/")[0], libs)
        if version:
            return version
    return None


def _within(name: str, gone: str, inside: str | None) -> bool:
    if inside is not None:  # an opaque folder: what is inside it goes, not the folder
        return name.startswith(inside)
    return name == gone or name.startswith(gone + "/")


def _interpreter_version(found: str, commands: set[str], libs: dict[str, set[str]]) -> str | None:
    folder, _, base = found.rpartition("/")
    match = _INTERPRETER.fullmatch(base)
    if match:
        return f"3.{int(match.group(1))}"
    beside = {
        m.group(1)
        for c in commands
        if c.rpartition("/")[0] == folder and (m := _INTERPRETER.fullmatch(c.rpartition("/")[2]))
    }
    prefix = folder.rpartition("/")[0]
    installed = _prefix_versions(prefix, libs)
    if len(beside) == 1:
        return f"3.{int(beside.pop())}"
    candidates = beside & installed if beside and installed else (beside or installed)
    if len(candidates) == 1:
        return f"3.{int(candidates.pop())}"
    return None


def _prefix_versions(prefix: str, libs: dict[str, set[str]]) -> set[str]:
    """Minor versions with a ``<prefix>/lib/python3.N``; only those with a stdlib if any has one."""
    found: dict[str, bool] = {}
    for anchor, seen in libs.items():
        match = _LIB_DIR.search(anchor)
        if match is None or anchor[: match.start(1)].rstrip("/") != prefix:
            continue
        found[match.group(2)] = found.get(match.group(2), False) or "os.py" in seen
    with_stdlib = {v for v, has in found.items() if has}
    return with_stdlib or set(found)


def _prefix_version(prefix: str, libs: dict[str, set[str]]) -> str | None:
    versions = _prefix_versions(prefix, libs)
    return f"3.{int(versions.pop())}" if len(versions) == 1 else None


def layer_paths(fileobj: IO[bytes], symlinks: dict[str, str] | None = None) -> Iterator[str]:
    """The names in a layer's tar stream (gzip or plain), one by one, never extracting.

    ``fileobj`` is read forward only, so a registry blob's HTTP response can be
    given as it downloads. Names come as in the tar without ``./`` or ``/``
    around them (``usr/local/bin/python3``). Pass a dict as ``symlinks`` to
    collect, in the same pass, each link's target (hard links as ``/`` + their
    target) for :func:`python_version_from_paths`. zstd layers raise
    ``tarfile.ReadError``.

    >>> links = {}
    >>> with open(layer.path, "rb") as blob:
    ...     names = list(layer_paths(blob, links))
    """
    import tarfile

    with tarfile.open(fileobj=fileobj, mode="r|*") as tar:
        while True:
            member = tar.next()
            if member is None:
                return
            tar.members.clear()  # stream mode would otherwise keep every member
            name = _norm(member.name)
            if not name:
                continue
            if symlinks is not None:
                if member.issym():
                    symlinks[name] = member.linkname
                elif member.islnk():
                    symlinks[name] = "/" + _norm(member.linkname)
            yield name


# --- The dependencies layer -----------------------------------------------------


class NoWheel(Exception):
    """pip found no binary wheel of ``requirement`` for the image's Linux and Python.

    The Docker-free builder installs wheels only (it cannot compile); a Docker
    engine (the Docker builder) can build such a package from source.
    """

    def __init__(self, requirement: str, python_version: str, platform: str,
                 listed: bool = True) -> None:
        self.requirement = requirement
        self.python_version = python_version
        self.platform = platform
        needed = "" if listed else " (needed by your requirements)"
        super().__init__(
            f"{requirement!r}{needed} has no binary wheel for {platform} / Python "
            f"{python_version} on the package index: it publishes only source code "
            "for it, or no release matches the requirement (pip cannot tell these "
            "apart). The Docker-free build installs wheels only; a Docker engine (the "
            "Docker builder) can build it from source. Otherwise pick a version that "
            "has a manylinux wheel."
        )


class PipFailed(Exception):
    """pip failed for another reason than a missing wheel; ``output`` ends with its last lines."""

    def __init__(self, what: str, output: list[str], returncode: int | None = None) -> None:
        self.returncode = returncode
        self.output = output
        tail = "\n".join(f"  {line}" for line in output)
        super().__init__(f"{what}\npip said:\n{tail}" if output else what)


@dataclass(frozen=True)
class _Target:
    python: str  # "3.12" or "3.12.7"
    platforms: tuple[str, ...]

    @property
    def minor(self) -> str:
        return ".".join(self.python.split(".")[:2])

    @property
    def arch(self) -> str:
        """``x86_64`` for ``manylinux_2_28_x86_64``, ``manylinux2014_x86_64``..."""
        arches = set()
        for tag in self.platforms:
            match = re.fullmatch(r"(?:many|musl)linux(?:1|2010|2014|_\d+_\d+)_(\w+)", tag)
            arches.add(match.group(1) if match else tag)
        return "/".join(sorted(arches))

    @property
    def label(self) -> str:
        return f"Linux {self.arch}"

    def markers(self) -> dict[str, str]:
        """The environment markers of the image's Python (PEP 508), not this machine's."""
        full = self.python if self.python.count(".") == 2 else self.python + ".0"
        return {
            "implementation_name": "cpython",
            "implementation_version": full,
            "os_name": "posix",
            "platform_machine": self.arch,
            "platform_python_implementation": "CPython",
            "platform_release": "",
            "platform_system": "Linux",
            "platform_version": "",
            "python_full_version": full,
            "python_version": self.minor,
            "sys_platform": "linux",
        }


# Runs pip as `python -m pip` does, after pointing pip's marker evaluation at the
# image's Python: pip evaluates markers such as `python_version >= "3.12"` or
# `sys_platform == "linux"` against the interpreter it runs on, even with
# --python-version and --platform. The check below stops the install if this
# pip's marker code has moved, rather than install for the wrong environment.
_PIP_BOOTSTRAP = """\
import json, os, runpy, sys
if sys.path and sys.path[0] in ("", os.getcwd()):
    sys.path.pop(0)  # as `python -m pip` does: never import a pip/ of the working folder
target = json.loads(sys.argv.pop(1))
from pip._vendor.packaging import markers
host = markers.default_environment
def default_environment():
    env = dict(host())
    env.update(target)
    return env
markers.default_environment = default_environment
probe = 'python_version == "%s" and sys_platform == "linux"' % target["python_version"]
if not markers.Marker(probe).evaluate():
    sys.exit("sm-magics: cannot set the marker environment of this pip")
sys.argv[0] = "pip"
runpy.run_module("pip", run_name="__main__", alter_sys=True)
"""
# Index settings that change what pip installs: part of the cache key (hashed only).
_INDEX_VARIABLES = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX",
                    "PIP_CONSTRAINT", "PIP_PRE")
# Settings that would send pip's install elsewhere than --target, or refuse it.
_CONFLICTING_VARIABLES = ("PIP_TARGET", "PIP_PREFIX", "PIP_ROOT", "PIP_USER",
                          "PIP_REQUIRE_VIRTUALENV", "PIP_EDITABLE")
_NO_MATCH = re.compile(r"No matching distribution found for (.+?)\s*$")
_REFUSED_OPTIONS = ("-r", "--requirement", "-c", "--constraint", "-e", "--editable")


def _requirement_lines(text: str) -> list[str]:
    """The requirements as pip reads them: continuations joined, comments and blanks gone."""
    lines: list[str] = []
    for line in text.replace("\\\r\n", " ").replace("\\\n", " ").splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        if not line:
            continue
        token = line.split()[0]
        if token.split("=", 1)[0] in _REFUSED_OPTIONS or re.fullmatch(r"-[rce]\S+", token):
            raise ValueError(
                f"{line!r}: the requirements must be self-contained (names, versions, "
                "markers, URLs, index options); -r, -c and -e refer to other files, "
                "whose changes the layer cache would not see. Paste their lines instead."
            )
        lines.append(" ".join(line.split()))
    return lines


def _project_name(line: str) -> str | None:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", line)
    return _canonical(match.group(1)) if match and not line.startswith("-") else None


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _python_version(version: str) -> str:
    if not re.fullmatch(r"3\.\d{1,2}(\.\d{1,3})?", version or ""):
        raise ValueError(f"Python version {version!r}: give it as '3.12' (or '3.12.7').")
    return version


def dependency_layer(
    requirements: str,
    python_version: str,
    cache_dir: str | os.PathLike[str],
    destination_dir: str | os.PathLike[str] | None = None,
    target: str = DEPS_DIR,
    platforms: Iterable[str] = MANYLINUX_X86_64,
    timeout: float | None = None,
) -> Layer:
    """The layer of ``requirements`` installed by pip for the image's Linux and Python.

    ``requirements`` is the text of a requirements file (names, versions,
    markers, URLs, index options; not ``-r``/``-c``/``-e``). pip runs in a
    subprocess of this Python (``python -m pip install --target``) with
    ``--platform`` for each of ``platforms`` (by default manylinux x86_64 for
    glibc 2.28 or later: see :func:`manylinux_platforms`), ``--implementation cp
    --python-version X.Y --abi cpXY --only-binary=:all: --no-compile``, and with
    markers such as ``python_version`` and ``sys_platform`` evaluated for the
    image, not for this machine. So it works from any machine and any local
    Python, and installs only wheels: nothing is compiled.

    The layer holds the installed packages at ``target`` (``/opt/sm-magics/deps``).
    **What it expects of the image:** the image's ``python3`` is CPython
    ``python_version`` on Linux with glibc recent enough for ``platforms``, and
    the image config's ``PYTHONPATH`` includes ``target`` (the image builder
    sets that); the ``bin/`` scripts pip adds there start with
    ``#!/usr/bin/env python3``.

    The result is cached in ``cache_dir`` under a key made of the requirements
    (comments and spacing aside), the Python version, the platforms, ``target``,
    pip's index settings from the environment and the layer format: when
    nothing of that changed, pip does not run again and the returned layer has
    ``cached=True``. Unpinned requirements (``pandas``) stay at the version
    first installed until the text changes. A cache entry is a
    ``<key>.tar.gz`` and its ``<key>.json`` (written last, both by rename), so
    an interrupted build leaves no entry. With ``destination_dir``, the layer's
    file is also linked (or copied) there as ``<sha256>.tar.gz``.

    Raises :class:`NoWheel` when a requirement (or one it needs) has no wheel
    for the image, :class:`PipFailed` for other pip failures, ValueError for
    bad arguments.
    """
    lines = _requirement_lines(requirements)
    wanted = _Target(_python_version(python_version), tuple(platforms))
    if not wanted.platforms:
        raise ValueError("platforms: give at least one wheel platform tag.")
    target_path = "/" + _image_path(target)
    key_material = {
        "format": _CACHE_FORMAT,
        "requirements": lines,
        "python": wanted.python,
        "implementation": "cp",
        "platforms": list(wanted.platforms),
        "target": target_path,
        "index": {k: os.environ[k] for k in _INDEX_VARIABLES if k in os.environ},
    }
    key = hashlib.sha256(json.dumps(key_material, sort_keys=True).encode()).hexdigest()
    cache = Path(cache_dir).expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    layer = _cached_layer(cache, key)
    if layer is None:
        layer = _build_dependency_layer(cache, key, lines, wanted, target_path, timeout)
    return _place(layer, destination_dir)


def _cached_layer(cache: Path, key: str) -> Layer | None:
    try:
        meta = json.loads((cache / f"{key}.json").read_text())
        path = cache / f"{key}.tar.gz"
        if meta.get("format") != _CACHE_FORMAT or meta.get("key") != key:
            return None
        if path.stat().st_size != meta["size"]:
            return None
        return Layer(path=path, digest=meta["digest"], diff_id=meta["diff_id"],
                     size=meta["size"], media_type=meta["media_type"], cached=True)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _build_dependency_layer(cache: Path, key: str, lines: list[str], wanted: _Target,
                            target: str, timeout: float | None) -> Layer:
    import shutil
    import tempfile

    work = Path(tempfile.mkdtemp(dir=cache, prefix=".building-"))
    try:
        site = work / "site"
        (work / "requirements.txt").write_text("".join(line + "\n" for line in lines))
        if lines:
            _run_pip(work / "requirements.txt", site, lines, wanted, timeout)
        site.mkdir(exist_ok=True)  # no requirements: a layer of the empty target folder
        _normalise_install(site)
        built = write_layer(add_tree(site, target), work / "layer")
        final = cache / f"{key}.tar.gz"
        os.replace(built.path, final)
        layer = replace(built, path=final)
        installed = sorted(_installed(info.name) for info in site.glob("*.dist-info"))
        meta = {"format": _CACHE_FORMAT, "key": key, **_layer_fields(layer),
                "python_version": wanted.python, "platforms": list(wanted.platforms),
                "target": target, "requirements": lines, "installed": installed}
        partial = work / "meta.json"
        partial.write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
        os.replace(partial, cache / f"{key}.json")
        return layer
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _installed(dist_info: str) -> str:
    """``MarkupSafe-3.0.2.dist-info`` -> ``markupsafe==3.0.2`` (names hold no ``-`` there)."""
    name, _, version = dist_info[: -len(".dist-info")].partition("-")
    return f"{_canonical(name)}=={version}"


def _layer_fields(layer: Layer) -> dict[str, Any]:
    fields = asdict(layer)
    fields.pop("path")
    fields.pop("cached")
    return fields


def _pip_command(requirements_file: Path, site: Path, wanted: _Target) -> list[str]:
    platform_args = [arg for tag in wanted.platforms for arg in ("--platform", tag)]
    nodot = wanted.minor.replace(".", "")
    return [
        sys.executable, "-c", _PIP_BOOTSTRAP, json.dumps(wanted.markers()),
        "install", "--target", str(site), *platform_args,
        "--implementation", "cp", "--python-version", wanted.minor, "--abi", f"cp{nodot}",
        "--only-binary=:all:", "--no-compile",
        "--no-input", "--disable-pip-version-check", "--no-warn-script-location",
        "--progress-bar", "off",
        "-r", str(requirements_file),
    ]


def _run_pip(requirements_file: Path, site: Path, lines: list[str], wanted: _Target,
             timeout: float | None) -> None:
    import subprocess

    env = {k: v for k, v in os.environ.items() if k not in _CONFLICTING_VARIABLES}
    command = _pip_command(requirements_file, site, wanted)
    try:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, errors="replace", env=env, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired as error:
        output = error.output if isinstance(error.output, str) else ""
        raise PipFailed(f"pip did not finish within {timeout:g} s.",
                        _tail(output)) from None
    if done.returncode == 0:
        return
    output = done.stdout or ""
    if "No module named pip" in output:
        raise PipFailed(f"pip is not installed in {sys.executable}; install it with "
                        f"`{sys.executable} -m ensurepip`.", _tail(output), done.returncode)
    for line in output.splitlines():
        match = _NO_MATCH.search(line)
        if match:
            requirement = match.group(1)
            listed = {_project_name(given) for given in lines}
            raise NoWheel(requirement, wanted.minor, wanted.label,
                          listed=_project_name(requirement) in listed)
    raise PipFailed(f"pip could not install the requirements for {wanted.label} / Python "
                    f"{wanted.minor} (exit code {done.returncode}).", _tail(output),
                    done.returncode)


def _tail(output: str, count: int = 15) -> list[str]:
    return [line for line in output.splitlines() if line.strip()][-count:]


# `#!/host/python` and distlib's form for long or spaced paths:
#   #!/bin/sh
#   '''exec' "/host/python" "$0" "$@"
#   ' '''
_SHEBANG = re.compile(rb"\A#!(?P<exe>/\S*python[\w.]*)(?P<args>[ \t][^\r\n]*)?\r?\n")
_SH_SHEBANG = re.compile(
    rb"\A#!/bin/sh\r?\n'''exec' (?P<exe>\"[^\"]*\"|\S+) \"\$0\" \"\$@\"\r?\n' '''\r?\n")
_IMAGE_SHEBANG = b"#!/usr/bin/env python3\n"


def _host_interpreters() -> set[str]:
    names = {sys.executable, os.path.normcase(sys.executable), os.path.realpath(sys.executable)}
    return {name for name in names if name}


def _normalise_install(site: Path) -> None:
    """Make pip's ``--target`` tree the same wherever and whenever pip ran.

    * ``__pycache__`` folders go (``--no-compile`` avoids most; some wheels ship them);
    * ``*.dist-info/direct_url.json`` goes (it can name a path of this machine);
    * ``bin/`` scripts that start with this machine's interpreter get
      ``#!/usr/bin/env python3``;
    * each ``*.dist-info/RECORD`` drops the rows of removed files and gets the new
      hash and size of rewritten scripts.
    """
    import base64
    import csv
    import io
    import shutil

    removed: set[str] = set()
    for cache in sorted(site.rglob("__pycache__"), reverse=True):
        if cache.is_dir() and not cache.is_symlink():
            shutil.rmtree(cache)
            removed.add(cache.relative_to(site).as_posix())
    for url in site.glob("*.dist-info/direct_url.json"):
        url.unlink()
        removed.add(url.relative_to(site).as_posix())

    rewritten: dict[str, tuple[str, int]] = {}  # script name -> (RECORD hash, size)
    hosts = {os.fsencode(name) for name in _host_interpreters()}
    bin_dir = site / "bin"
    if bin_dir.is_dir():
        for script in sorted(bin_dir.iterdir()):
            if script.is_symlink() or not script.is_file():
                continue
            data = script.read_bytes()
            new = _rewrite_shebang(data, hosts)
            if new is None:
                continue
            script.write_bytes(new)
            digest = base64.urlsafe_b64encode(hashlib.sha256(new).digest()).rstrip(b"=")
            rewritten[script.name] = ("sha256=" + digest.decode(), len(new))

    for record in site.glob("*.dist-info/RECORD"):
        raw = record.read_bytes()
        newline = "\r\n" if b"\r\n" in raw else "\n"
        rows = list(csv.reader(io.StringIO(raw.decode("utf-8"), newline="")))
        kept = []
        for row in rows:
            if not row:
                continue
            name = os.path.normpath(row[0]).replace(os.sep, "/")
            if any(name == gone or name.startswith(gone + "/") for gone in removed):
                continue
            parts = name.split("/")
            if len(parts) >= 2 and parts[-2] == "bin" and parts[-1] in rewritten:
                hash_, size = rewritten[parts[-1]]
                row = [row[0], hash_, str(size)]
            kept.append(row)
        out = io.StringIO(newline="")
        csv.writer(out, lineterminator=newline).writerows(kept)
        if out.getvalue().encode("utf-8") != raw:
            record.write_bytes(out.getvalue().encode("utf-8"))


def _rewrite_shebang(data: bytes, hosts: set[bytes]) -> bytes | None:
    match = _SHEBANG.match(data)
    if match and match.group("exe") in hosts:
        return _IMAGE_SHEBANG + data[match.end():]
    match = _SH_SHEBANG.match(data)
    if match and match.group("exe").strip(b'"') in hosts:
        return _IMAGE_SHEBANG + data[match.end():]
    return None


def _place(layer: Layer, destination_dir: str | os.PathLike[str] | None) -> Layer:
    """The same layer with its file also in ``destination_dir`` (hard link, else copy)."""
    import shutil
    import tempfile

    if destination_dir is None:
        return layer
    destination = Path(destination_dir)
    destination.mkdir(parents=True, exist_ok=True)
    final = destination / f"{layer.digest.split(':', 1)[1]}.tar.gz"
    if final.exists() and final.stat().st_size == layer.size:
        return replace(layer, path=final)
    handle, temporary = tempfile.mkstemp(dir=destination, prefix=".layer-", suffix=".partial")
    os.close(handle)
    try:
        os.unlink(temporary)
        try:
            os.link(layer.path, temporary)
        except OSError:
            shutil.copyfile(layer.path, temporary)
        os.replace(temporary, final)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return replace(layer, path=final)
