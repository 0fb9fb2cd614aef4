"""Benchmark: re-syncing 1,000 unchanged small files, by content hash vs by mtime and size.

``sm_magics.s3.sync_dir`` decides by content (SHA-256, remembered locally and
stored as object metadata). ``aws s3 sync`` decides by size and modification
time: a file whose mtime is newer than the object's LastModified is uploaded
again, which is what happens to every file after a ``git checkout`` or a fresh
clone. The baseline below does exactly that, with the same client and the
same number of upload threads, against the same sandbox S3 in the same run.

Run::

    .venv/bin/python bench/bench_sync.py [--files 1000] [--rounds 3]

It starts its own sandbox under a temporary ``SM_MAGICS_SANDBOX_HOME`` and
stops it at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

WORKERS = 8


class Requests:
    """Counts HTTP requests a boto3 client sends."""

    def __init__(self, client) -> None:
        self.count = 0
        self._lock = threading.Lock()
        client.meta.events.register("before-send.s3", self._seen)

    def _seen(self, **_) -> None:
        with self._lock:
            self.count += 1


def make_files(root: Path, count: int) -> list[Path]:
    paths = []
    for i in range(count):
        path = root / f"shard-{i % 10}" / f"row-{i:05d}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f'{{"id": {i}, "value": {i * 7 % 13}, "label": "item {i}"}}\n')
        paths.append(path)
    return paths


def touch(paths: list[Path]) -> None:
    """New mtimes (now), same content: what a git checkout leaves behind.

    Waits a little over a second afterwards, so objects uploaded from now on
    have a LastModified (whole seconds) not older than the new mtimes.
    """
    now = time.time()
    for path in paths:
        os.utime(path, (now, now))
    time.sleep(1.1)


def mtime_size_sync(client, root: Path, bucket: str, prefix: str) -> tuple[int, int]:
    """The ``aws s3 sync`` rule: upload when missing, of another size, or newer locally.

    Returns (files uploaded, requests sent).
    """
    requests = Requests(client)
    remote = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            remote[obj["Key"]] = obj
    todo = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        key = prefix + path.relative_to(root).as_posix()
        stat = path.stat()
        obj = remote.get(key)
        if (obj is None or obj["Size"] != stat.st_size
                or stat.st_mtime > obj["LastModified"].timestamp()):
            todo.append((path, key))

    def upload(item: tuple[Path, str]) -> None:
        path, key = item
        client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())

    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        list(pool.map(upload, todo))
    return len(todo), requests.count


def timed(action: Callable[[], tuple[int, int]]) -> tuple[float, int, int]:
    start = time.perf_counter()
    uploads, requests = action()
    return time.perf_counter() - start, uploads, requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from sm_magics.sandbox import temporary_sandbox

    with tempfile.TemporaryDirectory(prefix="sm-magics-bench-") as scratch, \
            temporary_sandbox():
        run(Path(scratch), args.files, args.rounds)


def run(scratch: Path, count: int, rounds: int) -> None:
    from sm_magics import s3
    from sm_magics.aws import AwsContext
    from sm_magics.config import resolve

    aws = AwsContext(resolve())
    bucket = s3.ensure_bucket(aws)
    client = aws.client("s3")
    ours_uri = s3.input_uri(aws, "bench", "content")
    base_prefix = s3.parse_s3_uri(s3.input_uri(aws, "bench", "mtime"))[1]
    data = scratch / "data"
    paths = make_files(data, count)
    manifests = scratch / "manifests"

    def ours() -> tuple[int, int]:
        result = s3.sync_dir(aws, data, ours_uri, manifest_dir=manifests, workers=WORKERS)
        return len(result.uploaded), result.requests

    def baseline() -> tuple[int, int]:
        return mtime_size_sync(client, data, bucket, base_prefix)

    rows = [("first upload", "content hash", *timed(ours)),
            ("first upload", "mtime+size", *timed(baseline))]
    samples: dict[tuple[str, str], list[tuple[float, int, int]]] = {}
    for _ in range(rounds):
        for method, action in (("content hash", ours), ("mtime+size", baseline)):
            samples.setdefault(("unchanged", method), []).append(timed(action))
        touch(paths)
        for method, action in (("content hash", ours), ("mtime+size", baseline)):
            samples.setdefault(("unchanged, mtimes touched", method), []).append(timed(action))
    for (scenario, method), runs in samples.items():
        rows.append((scenario, method, statistics.median(r[0] for r in runs),
                     max(r[1] for r in runs), max(r[2] for r in runs)))

    print(f"{count} small files, sandbox S3 at {aws.settings.endpoint_url}, {WORKERS} upload "
          f"threads each, median of {rounds} rounds")
    print(f"{'scenario':28}{'method':14}{'seconds':>9}{'uploads':>9}{'requests':>10}")
    for scenario, method, seconds, uploads, requests in rows:
        print(f"{scenario:28}{method:14}{seconds:9.3f}{uploads:9d}{requests:10d}")
    touched = {m: r for s, m, *r in [(r[0], r[1], r[2], r[4]) for r in rows]
               if s == "unchanged, mtimes touched"}
    (ours_s, ours_req), (base_s, base_req) = touched["content hash"], touched["mtime+size"]
    print(f"ratio for an unchanged re-sync after touching every file (mtime+size / content "
          f"hash): time {base_s / ours_s:.1f}x, requests {base_req / ours_req:.0f}x")


if __name__ == "__main__":
    main()
