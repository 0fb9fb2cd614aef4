"""Layers made without Docker: reproducible tarballs, the base's Python, pip dependency layers.

Every layer is read back as a registry and a container runtime would: its gzip
header bytes, its tar headers with ``tarfile``, its sha256 sums computed here.
The dependency tests run pip for real against the package index (a few small
packages: six, markupsafe, pycodestyle; docopt for a project without wheels),
for Linux x86_64 and Python 3.12 from whatever Python runs the tests. Run alone::

    .venv/bin/python -m pytest -q tests/test_layers.py -p no:cacheprovider
"""

from __future__ import annotations

import base64
import csv
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import tracemalloc
from pathlib import Path

import pytest

from sm_magics import layers
from sm_magics.layers import (
    LAYER_MEDIA_TYPE,
    Directory,
    File,
    NoWheel,
    PipFailed,
    Symlink,
    add_tree,
    dependency_layer,
    layer_paths,
    manylinux_platforms,
    python_version_from_config,
    python_version_from_paths,
    search_path,
    write_layer,
)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def members(layer) -> list[tarfile.TarInfo]:
    with tarfile.open(layer.path, "r:gz") as tar:
        return tar.getmembers()


def make_host_tree(root: Path, mtime: int, file_mode: int, exec_mode: int) -> Path:
    """The same content each time, with different times and permissions (as another machine)."""
    (root / "pkg" / "sub").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_bytes(b"VALUE = 1\n")
    (root / "pkg" / "sub" / "data.txt").write_bytes(b"x" * 1000)
    (root / "run.sh").write_bytes(b"#!/bin/sh\necho hi\n")
    (root / "latest").symlink_to("pkg/sub/data.txt")
    (root / "pkg" / "__init__.py").chmod(file_mode)
    (root / "pkg" / "sub" / "data.txt").chmod(file_mode)
    (root / "run.sh").chmod(exec_mode)
    for path in [*root.rglob("*"), root]:
        os.utime(path, (mtime, mtime), follow_symlinks=False)
    return root


def sample_entries(host: Path) -> dict:
    entries = {
        "/opt/program/train.py": b"print('training')\n",
        "/opt/program/tool.sh": (0o750, b"#!/bin/sh\n"),
        "/opt/program/config.json": host / "pkg" / "sub" / "data.txt",
        "/opt/program/current": Symlink("train.py"),
        "/opt/ml/checkpoints": Directory(),
        "/opt/program/explicit": File(b"kept", mode=0o600),
    }
    entries.update(add_tree(host, "/opt/sm-magics/tree"))
    return entries


# --- Reproducible layers ----------------------------------------------------------


def test_the_same_entries_give_the_same_layer_in_two_fresh_folders(tmp_path):
    first_host = make_host_tree(tmp_path / "a", mtime=1_700_000_000, file_mode=0o664,
                                exec_mode=0o775)
    second_host = make_host_tree(tmp_path / "b", mtime=1_200_000_000, file_mode=0o600,
                                 exec_mode=0o700)

    first = write_layer(sample_entries(first_host), tmp_path / "out1")
    second = write_layer(sample_entries(second_host), tmp_path / "out2")

    assert (first.digest, first.diff_id, first.size) == (second.digest, second.diff_id,
                                                         second.size)
    assert first.path.read_bytes() == second.path.read_bytes()
    assert first.path.name == first.digest.removeprefix("sha256:") + ".tar.gz"
    assert first.media_type == "application/vnd.docker.image.rootfs.diff.tar.gzip"
    assert first.descriptor() == {"mediaType": LAYER_MEDIA_TYPE, "digest": first.digest,
                                  "size": first.size}
    assert [p.name for p in (tmp_path / "out1").iterdir()] == [first.path.name]  # no leftovers


def test_digest_is_the_files_sha256_and_diff_id_the_tars(tmp_path):
    layer = write_layer({"/a/b.txt": b"hello\n"}, tmp_path)
    blob = layer.path.read_bytes()
    assert layer.digest == sha256(blob)
    assert layer.size == len(blob) == layer.path.stat().st_size
    assert layer.diff_id == sha256(gzip.decompress(blob))


def test_the_tar_is_sorted_parents_first_with_fixed_owners_times_and_modes(tmp_path):
    host = make_host_tree(tmp_path / "host", mtime=1_700_000_000, file_mode=0o664,
                          exec_mode=0o775)
    layer = write_layer(sample_entries(host), tmp_path / "out")
    found = members(layer)
    names = [m.name for m in found]

    assert names == sorted(names, key=lambda n: n.split("/"))
    for index, name in enumerate(names):  # every parent folder is an entry, and comes first
        parts = name.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            assert parent in names[:index], (parent, name)
    assert names[:2] == ["opt", "opt/ml"]
    assert all(not n.startswith(("/", "./")) for n in names)
    for member in found:
        assert (member.mtime, member.uid, member.gid) == (0, 0, 0)
        assert (member.uname, member.gname) == ("", "")
        assert (member.devmajor, member.devminor) == (0, 0)
    by_name = {m.name: m for m in found}

    def mode(name):
        return by_name[name].mode

    assert by_name["opt/program"].isdir() and mode("opt/program") == 0o755
    assert by_name["opt/ml/checkpoints"].isdir() and mode("opt/ml/checkpoints") == 0o755
    assert mode("opt/program/train.py") == 0o644
    assert mode("opt/program/tool.sh") == 0o750  # a mode given is kept
    assert mode("opt/program/explicit") == 0o600
    assert mode("opt/program/config.json") == 0o644  # host 0664: not executable
    assert mode("opt/sm-magics/tree/run.sh") == 0o755  # host 0775: executable
    assert mode("opt/sm-magics/tree/pkg/__init__.py") == 0o644
    assert by_name["opt/program/current"].issym()
    assert by_name["opt/program/current"].linkname == "train.py"
    assert by_name["opt/sm-magics/tree/latest"].issym()
    assert by_name["opt/sm-magics/tree/latest"].linkname == "pkg/sub/data.txt"
    with tarfile.open(layer.path, "r:gz") as tar:
        assert tar.extractfile("opt/program/config.json").read() == b"x" * 1000
        assert tar.extractfile("opt/program/train.py").read() == b"print('training')\n"


def test_tar_headers_hold_zero_times_and_the_posix_magic(tmp_path):
    layer = write_layer({"/opt/program/train.py": b"print(1)\n"}, tmp_path)
    tar = gzip.decompress(layer.path.read_bytes())
    assert len(tar) % 10240 == 0  # whole tar records
    first = tar[:512]
    assert first[:4] == b"opt/"
    assert first[136:148] == b"00000000000\0"  # mtime
    assert first[108:116] == first[116:124] == b"0000000\0"  # uid, gid
    assert first[257:265] == b"ustar\x0000"  # POSIX (ustar/PAX), not GNU
    assert first[265:297].strip(b"\0") == b"" and first[297:329].strip(b"\0") == b""  # names


def test_gzip_header_has_no_time_and_no_file_name(tmp_path):
    layer = write_layer({"/x": b"data"}, tmp_path)
    header = layer.path.read_bytes()[:10]
    assert header[:3] == b"\x1f\x8b\x08"  # gzip, deflate
    assert header[3] == 0  # FLG: no FNAME, no FCOMMENT, no FEXTRA
    assert header[4:8] == b"\0\0\0\0"  # MTIME
    assert header[9] == 255  # OS: unknown, whichever machine wrote it


def test_long_and_non_ascii_names_are_kept_through_pax_headers(tmp_path):
    deep = "/opt/" + "/".join(["a-folder-with-a-long-name"] * 6) + "/données.txt"
    layer = write_layer({deep: b"1", "/opt/link": Symlink("/" + "t" * 150)}, tmp_path)
    by_name = {m.name: m for m in members(layer)}
    assert deep[1:] in by_name
    assert by_name["opt/link"].linkname == "/" + "t" * 150


@pytest.mark.parametrize("path", [
    "/opt/../etc/passwd", "/opt/program/..", "opt/relative", "/", "//", "/a\0b",
])
def test_paths_that_a_layer_must_not_hold_are_refused(tmp_path, path):
    with pytest.raises(ValueError):
        write_layer({path: b"x"}, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_path_below_a_file_or_twice_the_same_path_is_refused(tmp_path):
    with pytest.raises(ValueError, match="not a folder"):
        write_layer({"/opt/a": b"file", "/opt/a/b": b"inside"}, tmp_path)
    with pytest.raises(ValueError, match="not a folder"):
        write_layer({"/opt/a": Symlink("x"), "/opt/a/b": b"inside"}, tmp_path)
    with pytest.raises(ValueError, match="twice"):
        write_layer({"/opt/a": b"1", "/opt//a": b"2"}, tmp_path)
    with pytest.raises(ValueError, match="not a layer entry"):
        write_layer({"/opt/a": "train.py"}, tmp_path)  # a str: content or path? Refused


def test_a_large_file_is_streamed_not_held_in_memory(tmp_path):
    big = tmp_path / "big.bin"
    block = bytes(range(256)) * 4096  # 1 MiB
    with big.open("wb") as out:
        for _ in range(50):
            out.write(block)
    tracemalloc.start()
    try:
        layer = write_layer({"/opt/data/big.bin": big}, tmp_path / "out")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024, f"peak {peak} bytes while layering 50 MiB"
    inner = hashlib.sha256()
    with gzip.open(layer.path, "rb") as tar_stream:
        while chunk := tar_stream.read(1 << 20):
            inner.update(chunk)
    assert layer.diff_id == "sha256:" + inner.hexdigest()
    info = {m.name: m for m in members(layer)}["opt/data/big.bin"]
    assert info.size == 50 * 1024 * 1024


def test_add_tree_keeps_symlinks_skips_ignored_and_never_follows_folder_links(tmp_path):
    host = make_host_tree(tmp_path / "host", mtime=0, file_mode=0o644, exec_mode=0o755)
    (host / "pkg" / "__pycache__").mkdir()
    (host / "pkg" / "__pycache__" / "x.pyc").write_bytes(b"compiled")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"not for the image")
    (host / "elsewhere").symlink_to(outside)

    entries = add_tree(host, "/opt/t/", ignore=lambda p: p.endswith("__pycache__"))

    assert entries["/opt/t"] == Directory()
    assert entries["/opt/t/elsewhere"] == Symlink(str(outside))
    assert entries["/opt/t/latest"] == Symlink("pkg/sub/data.txt")
    assert entries["/opt/t/pkg/sub/data.txt"] == File(host / "pkg" / "sub" / "data.txt")
    assert not any("__pycache__" in p or "secret" in p for p in entries)


# --- The base's Python ------------------------------------------------------------


@pytest.mark.parametrize(("config", "expected"), [
    # python:3.12 (docker-library): ENV PYTHON_VERSION
    ({"config": {"Env": ["PATH=/usr/local/bin:/usr/bin", "LANG=C.UTF-8",
                         "GPG_KEY=7169605F62C751356D054A26A821E680E5FA6305",
                         "PYTHON_VERSION=3.12.7"]}}, "3.12"),
    ({"config": {"Env": ["PYTHON_VERSION=3.13.0rc2"]}}, "3.13"),
    # the config object itself instead of the whole blob
    ({"Env": ["PYTHON_VERSION=3.10.14"]}, "3.10"),
    # AWS DLC (PyTorch 2.x, and conda-based 1.x): the version is a build ARG, not saved
    ({"config": {"Env": ["PATH=/usr/local/bin:/home/.openmpi/bin:/usr/bin",
                         "PYTHONDONTWRITEBYTECODE=1", "DLC_CONTAINER_TYPE=training",
                         "SAGEMAKER_TRAINING_MODULE=sagemaker_pytorch_container.training:main"],
                 "Labels": {"maintainer": "Amazon AI", "dlc_major_version": "1"}}}, None),
    ({"config": {"Env": ["PATH=/opt/conda/bin:/usr/local/bin:/usr/bin"]}}, None),
    # conda images that say it
    ({"config": {"Env": ["CONDA_DIR=/opt/conda", "CONDA_PYTHON_VERSION=3.9"]}}, "3.9"),
    ({"config": {"Env": ["CONDA_PYTHON_VERSION=py38"]}}, "3.8"),
    ({"config": {"Env": ["CONDA_PYTHON_VERSION=3"]}}, None),  # Miniconda3: no minor
    ({"config": {"Env": ["PYTHON=python3.11"]}}, "3.11"),
    ({"config": {"Env": ["PYTHON=python3"]}}, None),
    ({"config": {"Env": ["PYTHON_VERSION=2.7.12-r0"]}}, None),  # an apk version, Python 2
    ({"config": {"Env": ["PYTHON_VERSION=310"]}}, None),
    ({"config": {"Labels": {"python_version": "3.11"}}}, "3.11"),
    ({"config": {"Env": None, "Labels": None}}, None),
    ({}, None),
])
def test_python_version_from_config(config, expected):
    assert python_version_from_config(config) == expected


def test_search_path_is_the_configs_or_dockers_default():
    assert search_path({"config": {"Env": ["PATH=/opt/conda/bin:/usr/bin"]}}) == \
        "/opt/conda/bin:/usr/bin"
    assert search_path({"config": {}}) == layers.DEFAULT_PATH
    assert search_path(None).split(":")[:2] == ["/usr/local/sbin", "/usr/local/bin"]


OFFICIAL_PYTHON_312 = [  # python:3.12 on Debian bookworm, which has its own python3.11
    "usr/bin/python3", "usr/bin/python3.11", "usr/lib/python3.11/os.py",
    "usr/lib/python3/dist-packages/", "usr/local/bin/python3", "usr/local/bin/python3.12",
    "usr/local/bin/python", "usr/local/lib/python3.12/os.py",
    "usr/local/lib/python3.12/site-packages/pip/__init__.py",
]
CONDA_DLC = [  # Ubuntu 20.04 with its python3.8, Mambaforge Python 3.9 at /opt/conda
    "usr/bin/python3", "usr/bin/python3.8", "usr/lib/python3.8/os.py",
    "opt/conda/bin/python", "opt/conda/bin/python3", "opt/conda/bin/python3.9",
    "opt/conda/lib/python3.9/os.py", "opt/conda/lib/python3.9/site-packages/torch/",
    "opt/conda/pkgs/python-3.9.19-h1/lib/python3.9/os.py",
]


@pytest.mark.parametrize(("paths", "path", "links", "expected"), [
    (OFFICIAL_PYTHON_312, "/usr/local/bin:/usr/local/sbin:/usr/bin", None, "3.12"),
    (OFFICIAL_PYTHON_312, "/usr/bin:/usr/local/bin", None, "3.11"),
    (OFFICIAL_PYTHON_312, None, None, "3.12"),  # Docker's default PATH: /usr/local/bin first
    (CONDA_DLC, "/opt/conda/bin:/usr/local/sbin:/usr/local/bin:/usr/bin", None, "3.9"),
    (CONDA_DLC, "/usr/bin:/opt/conda/bin", None, "3.8"),
    # DLC PyTorch 2.8: altinstall to /usr/local, `ln -s /usr/local/bin/python3.12 .../python3`
    (["usr/bin/python3", "usr/bin/python3.10", "usr/local/bin/python3",
      "usr/local/bin/python3.12", "usr/local/bin/python3.11"],
     "/usr/local/bin:/usr/bin", {"usr/local/bin/python3": "/usr/local/bin/python3.12"}, "3.12"),
    # two versions beside python3 and no link information: cannot tell
    (["usr/local/bin/python3", "usr/local/bin/python3.12", "usr/local/bin/python3.11"],
     "/usr/local/bin", None, None),
    # ... unless only one of them has a standard library under the prefix
    (["usr/local/bin/python3", "usr/local/bin/python3.12", "usr/local/bin/python3.11",
      "usr/local/lib/python3.12/os.py", "usr/local/lib/python3.11/site-packages/x.py"],
     "/usr/local/bin", None, "3.12"),
    # only lib folders listed: the first PATH folder whose prefix has a Python
    (["usr/lib/python3.11/", "usr/local/lib/python3.12/site-packages/",
      "opt/conda/lib/python3.10/"], "/opt/conda/bin:/usr/local/bin:/usr/bin", None, "3.10"),
    (["usr/lib/python3.11/", "usr/local/lib/python3.12/site-packages/"],
     "/usr/local/bin:/usr/bin", None, "3.12"),
    # names as tar members may have them
    (["./usr/local/bin/python3.12", "/usr/local/bin/python3"], "/usr/local/bin", None, "3.12"),
    # Debian 12's merged /usr: /bin is a symlink to usr/bin
    (["bin", "usr/bin/python3", "usr/bin/python3.11"], "/bin",
     {"bin": "usr/bin", "usr/bin/python3": "python3.11"}, "3.11"),
    # a later layer deletes the conda install (whiteout), or empties /opt/conda (opaque)
    ([*CONDA_DLC, "opt/.wh.conda"], "/opt/conda/bin:/usr/bin", None, "3.8"),
    ([*CONDA_DLC, "opt/conda/.wh..wh..opq"], "/opt/conda/bin:/usr/bin", None, "3.8"),
    (["usr/bin/python", "usr/bin/python2.7", "usr/lib/python2.7/os.py"], "/usr/bin", None,
     None),
    ([], "/usr/bin", None, None),
])
def test_python_version_from_paths(paths, path, links, expected):
    assert python_version_from_paths(paths, path=path, symlinks=links) == expected


def test_layer_paths_streams_names_and_links_from_a_forward_only_blob(tmp_path):
    layer = write_layer({
        "/usr/local/bin/python3.12": (0o755, b"\x7fELF"),
        "/usr/local/bin/python3": Symlink("python3.12"),
        "/usr/local/lib/python3.12/os.py": b"",
    }, tmp_path)

    class ForwardOnly(io.RawIOBase):  # what an HTTP response offers: read, nothing else
        def __init__(self, data):
            self._data = io.BytesIO(data)

        def readable(self):
            return True

        def readinto(self, buffer):
            chunk = self._data.read(min(len(buffer), 777))
            buffer[: len(chunk)] = chunk
            return len(chunk)

        def seekable(self):
            return False

    links: dict[str, str] = {}
    names = list(layer_paths(ForwardOnly(layer.path.read_bytes()), links))
    assert names == ["usr", "usr/local", "usr/local/bin", "usr/local/bin/python3",
                     "usr/local/bin/python3.12", "usr/local/lib", "usr/local/lib/python3.12",
                     "usr/local/lib/python3.12/os.py"]
    assert links == {"usr/local/bin/python3": "python3.12"}
    assert python_version_from_paths(names, search_path(None), links) == "3.12"

    plain = io.BytesIO()  # an uncompressed layer works too, and ./ prefixes go
    with tarfile.open(fileobj=plain, mode="w") as tar:
        tar.addfile(tarfile.TarInfo("./opt/conda/bin/python3.10"), io.BytesIO())
    assert list(layer_paths(io.BytesIO(plain.getvalue()))) == ["opt/conda/bin/python3.10"]


def test_manylinux_platforms_list_every_glibc_down_to_2_17():
    tags = manylinux_platforms("2.28")
    assert tags[0] == "manylinux_2_28_x86_64"
    assert [t for t in tags if t.startswith("manylinux_2_")][:12] == [
        f"manylinux_2_{n}_x86_64" for n in range(28, 16, -1)]
    assert "manylinux2014_x86_64" in tags and "manylinux1_x86_64" in tags
    assert manylinux_platforms("2.17", "aarch64") == ("manylinux_2_17_aarch64",
                                                     "manylinux2014_aarch64")
    with pytest.raises(ValueError):
        manylinux_platforms("2.5")


# --- The dependencies layer (pip, for real) -------------------------------------

REQUIREMENTS = "six==1.17.0\nmarkupsafe==3.0.2\npycodestyle==2.12.1\n"


def deps_files(layer) -> dict[str, tarfile.TarInfo]:
    return {m.name: m for m in members(layer)}


def forbid_subprocesses(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"a subprocess was started: {args[0] if args else kwargs}")

    monkeypatch.setattr(subprocess, "run", refuse)
    monkeypatch.setattr(subprocess, "Popen", refuse)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """REQUIREMENTS installed for Python 3.12 into a fresh cache (pip runs once here)."""
    cache = tmp_path_factory.mktemp("deps-cache")
    layer = dependency_layer(REQUIREMENTS, "3.12", cache, tmp_path_factory.mktemp("dest"))
    return cache, layer


@pytest.mark.slow
def test_dependencies_are_installed_for_linux_x86_64_python_312(built):
    cache, layer = built
    assert not layer.cached
    files = deps_files(layer)
    base = "opt/sm-magics/deps"
    assert f"{base}/six.py" in files
    speedups = [n for n in files if n.startswith(f"{base}/markupsafe/_speedups.")]
    assert f"{base}/markupsafe/_speedups.cpython-312-x86_64-linux-gnu.so" in speedups
    assert files[f"{base}/markupsafe/_speedups.cpython-312-x86_64-linux-gnu.so"].mode == 0o755
    assert not any("__pycache__" in n or n.endswith((".pyc", "direct_url.json")) for n in files)
    assert all(m.mtime == 0 and m.uid == 0 for m in files.values())
    assert layer.path.parent != cache  # linked into destination_dir, named by digest
    assert layer.path.name == layer.digest.removeprefix("sha256:") + ".tar.gz"
    assert layer.path.read_bytes() == next(cache.glob("*.tar.gz")).read_bytes()


@pytest.mark.slow
def test_scripts_run_the_images_python_and_records_match_the_files(built):
    _, layer = built
    with tarfile.open(layer.path, "r:gz") as tar:
        script = tar.extractfile("opt/sm-magics/deps/bin/pycodestyle").read()
        assert script.startswith(b"#!/usr/bin/env python3\n")
        assert os.fsencode(sys.executable) not in script
        checked = 0
        for record_name in [n for n in tar.getnames() if n.endswith(".dist-info/RECORD")]:
            folder = "opt/sm-magics/deps"
            rows = csv.reader(io.StringIO(tar.extractfile(record_name).read().decode()))
            for path, hash_, size in (r for r in rows if r and r[1]):
                name = os.path.normpath(f"{folder}/{path}")
                if path.startswith("../../bin/"):
                    name = f"{folder}/bin/{path.rsplit('/', 1)[1]}"
                data = tar.extractfile(name).read()
                digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
                assert (hash_, int(size)) == ("sha256=" + digest.decode(), len(data)), name
                checked += 1
        assert checked > 10


@pytest.mark.slow
def test_the_same_requirements_are_a_cache_hit_without_running_pip(built, monkeypatch, tmp_path):
    cache, first = built
    forbid_subprocesses(monkeypatch)
    reworded = "# training deps\nsix==1.17.0   \n\nmarkupsafe==3.0.2  # fast escaping\n" \
               "pycodestyle==2.12.1\n"
    again = dependency_layer(reworded, "3.12", cache, tmp_path / "dest")
    assert again.cached
    assert (again.digest, again.diff_id, again.size) == (first.digest, first.diff_id,
                                                         first.size)
    assert again.path.read_bytes() == first.path.read_bytes()
    meta = json.loads(next(cache.glob("*.json")).read_text())
    assert meta["digest"] == first.digest
    assert meta["installed"] == ["markupsafe==3.0.2", "pycodestyle==2.12.1", "six==1.17.0"]
    # another Python version is another layer: it would need pip
    with pytest.raises(AssertionError, match="subprocess"):
        dependency_layer(REQUIREMENTS, "3.11", cache)


@pytest.mark.slow
def test_two_caches_build_byte_identical_layers(built, tmp_path):
    _, first = built
    second = dependency_layer(REQUIREMENTS, "3.12", tmp_path / "other-cache")
    assert not second.cached
    assert second.path.parent == tmp_path / "other-cache"  # no destination_dir: the cache's
    assert (second.digest, second.diff_id) == (first.digest, first.diff_id)


@pytest.mark.slow
def test_markers_are_evaluated_for_the_images_python_not_this_one(tmp_path):
    text = 'six==1.17.0; python_version >= "3.12"\n' \
           'markupsafe==3.0.2; python_version < "3.12" or sys_platform != "linux"\n'
    layer = dependency_layer(text, "3.12", tmp_path)
    installed = {n.split("/")[3] for n in deps_files(layer) if n.count("/") == 3}
    assert installed == {"six.py", "six-1.17.0.dist-info"}


@pytest.mark.slow
def test_a_package_without_wheels_raises_no_wheel(tmp_path):
    # docopt 0.6.2 is published as a source archive only
    with pytest.raises(NoWheel) as raised:
        dependency_layer("six==1.17.0\ndocopt==0.6.2\n", "3.12", tmp_path)
    error = raised.value
    assert (error.requirement, error.python_version, error.platform) == \
        ("docopt==0.6.2", "3.12", "Linux x86_64")
    message = str(error)
    assert "'docopt==0.6.2' has no binary wheel for Linux x86_64 / Python 3.12" in message
    assert "Docker engine" in message and "from source" in message
    assert not list(tmp_path.iterdir())  # no cache entry, no leftovers


@pytest.mark.slow
def test_a_name_the_index_does_not_know_is_reported_alike(tmp_path):
    # pip's answer is the same as for docopt ("from versions: none"), so NoWheel's
    # message says that either can be the cause.
    with pytest.raises(NoWheel, match="no release matches"):
        dependency_layer("sm-magics-test-no-such-project-4f2a\n", "3.12", tmp_path)


def test_other_pip_failures_show_pips_last_lines(tmp_path):
    with pytest.raises(PipFailed) as raised:
        dependency_layer("six >= = 1\n", "3.12", tmp_path)
    assert "Linux x86_64 / Python 3.12" in str(raised.value)
    assert any("Invalid requirement" in line for line in raised.value.output)
    assert raised.value.returncode not in (0, None)


def test_an_interrupted_build_leaves_no_cache_entry(tmp_path, monkeypatch):
    def interrupted(site):
        raise KeyboardInterrupt

    monkeypatch.setattr(layers, "_normalise_install", interrupted)
    with pytest.raises(KeyboardInterrupt):
        dependency_layer("", "3.12", tmp_path)  # no requirements: pip does not run
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    empty = dependency_layer("", "3.12", tmp_path)
    assert [m.name for m in members(empty)] == ["opt", "opt/sm-magics", "opt/sm-magics/deps"]
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".gz", ".json"]


@pytest.mark.parametrize("text", ["-r other.txt\n", "--requirement=other.txt\n",
                                  "-e ./mypkg\n", "-cconstraints.txt\n"])
def test_requirements_that_name_other_files_are_refused(tmp_path, text):
    with pytest.raises(ValueError, match="self-contained"):
        dependency_layer(text, "3.12", tmp_path)


@pytest.mark.parametrize("version", ["3", "3.x", "2.7", "312", ""])
def test_a_python_version_must_be_major_dot_minor(tmp_path, version):
    with pytest.raises(ValueError, match="3.12"):
        dependency_layer("six\n", version, tmp_path)
