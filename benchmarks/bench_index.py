"""Index-only throughput: ``mediafarm index`` over a library of small JPEGs (issue 19, item 4).

The target is 10,000 files a minute on a 2-core machine, with the virus scan in. Measured:

- ``index``: the whole command, ``python -m cluster.cli.main index FOLDER --json``, as a
  user runs it: interpreter start, imports, a LocalCluster of one single-threaded worker
  process per core, the folder's listing, the catalog's claims, bulk partitions (scan,
  validate, hash, store the original, record) and the job's summary. Each round gets a
  fresh PostgreSQL database and fresh stores, so every file is indexed, none skipped.
  ``job`` is the same run from the job's row (``created_at`` to ``updated_at``): the
  command less its start-up and its summary. ``one-file`` is the command over a folder
  of one such file: what the command costs whatever the library's size.
- ``loop-1``: a bare loop in one process over the same files: read, SHA-256, clamd INSTREAM
  with the ``clamd`` package (``ClamdNetworkSocket.instream``);
- ``loop-2``: that loop on two threads, one per core (the farm has two workers);
- ``sha256sum``: coreutils' ``sha256sum`` over the files (reading and hashing only).

Every measurement that scans gets a clamd started for it (tests/signatures only, as the
other benchmarks), since clamd remembers the hash of each clean file it scanned and
answers a repeat from that cache; a library new to the farm is new to its clamd too. The
files are in the page cache throughout. Rounds run interleaved (index, loop-1, loop-2,
sha256sum, then again); reported are medians. Nothing here asserts on timings; the script
fails only when an asset does not end ``ready``.

``--profile FILE`` adds one untimed ``index`` run under ``py-spy record --subprocesses`` (the
venv's py-spy, else the one on PATH)
(raw collapsed stacks into FILE) and prints where the worker processes spent their samples.

Run from the repository root (needs clamd and PostgreSQL, as for the tests)::

    .venv/bin/python benchmarks/bench_index.py                      # 2,000 files, 3 rounds
    .venv/bin/python benchmarks/bench_index.py --files 5000 --rounds 1 --profile /tmp/index.txt
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
if str(REPO) not in sys.path:  # tests.services.postgres, when run as a script
    sys.path.insert(0, str(REPO))

import clamd  # noqa: E402

from cluster.cli.local_clamd import LocalClamd, start_clamd  # noqa: E402
from cluster.cli.samples import scene  # noqa: E402
from tests.services.postgres import scratch_database, server_url  # noqa: E402

SIGNATURES = REPO / "tests" / "signatures"
TARGET_PER_MIN = 10_000
DISTINCT = 2000  # pictures made with libvips; more files are these with a trailer


def library(count: int, width: int, height: int) -> Path:
    """``count`` distinct JPEGs, made once and kept under the temporary folder.

    Past ``DISTINCT`` pictures (libvips makes a few a second here), a file is one of
    those with a number appended after its end-of-image marker: other bytes, another
    digest, the same header and size, and clamd still reads it all.
    """
    folder = Path(tempfile.gettempdir()) / "mediafarm-bench-index" / f"{count}-{width}x{height}"
    done = folder / ".complete"
    if done.exists():
        return folder
    base = library(DISTINCT, width, height) if count > DISTINCT else None
    folder.mkdir(parents=True, exist_ok=True)
    print(f"making {count} JPEGs of {width}x{height} in {folder}", file=sys.stderr, flush=True)
    for index in range(count):
        path = folder / f"img-{index:05}.jpg"
        if base is None:
            scene(width, height, index).jpegsave(str(path), Q=85)
        else:
            picture = (base / f"img-{index % DISTINCT:05}.jpg").read_bytes()
            path.write_bytes(picture if index < DISTINCT else picture + b"%d" % index)
    done.touch()
    return folder


def files_of(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix == ".jpg")


@contextlib.contextmanager
def fresh_clamd(workdir: Path) -> Iterator[LocalClamd]:
    """A clamd of its own, so that no file is answered from another run's cache."""
    server = start_clamd(SIGNATURES, workdir / f"clamd-{time.monotonic_ns()}")
    try:
        yield server
    finally:
        server.stop()


def _stamp(value: str) -> datetime:
    return datetime.fromisoformat(value)


def run_index(folder: Path, count: int, workdir: Path, base_url: str,
              profile: Path | None = None) -> dict:
    """The whole ``mediafarm index`` command; its wall time and its job's own time."""
    with fresh_clamd(workdir) as server, scratch_database(base_url) as catalog_url:
        data_dir = workdir / f"data-{time.monotonic_ns()}"
        env = {**os.environ, "MEDIAFARM_DATA_DIR": str(data_dir),
               "MEDIAFARM_CLAMD_URL": server.url, "MEDIAFARM_CATALOG_URL": catalog_url}
        env.pop("DASK_SCHEDULER_ADDRESS", None)
        env.pop("MEDIAFARM_CONFIG", None)
        command = [sys.executable, "-m", "cluster.cli.main", "index", str(folder), "--json"]
        if profile is not None:
            spy = Path(sys.executable).parent / "py-spy"
            command = [str(spy) if spy.exists() else "py-spy", "record", "--subprocesses",
                       "--format", "raw", "--rate", "100", "-o", str(profile), "--", *command]
        start = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=REPO)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"mediafarm index failed ({done.returncode}): {done.stderr}")
        # The job's document; under py-spy, its own lines follow.
        job = json.JSONDecoder().raw_decode(done.stdout[done.stdout.index("{"):])[0]
        if job["assets"] != {"ready": count}:
            raise RuntimeError(f"mediafarm index ended {job['assets']}, expected {count} ready")
        job_s = (_stamp(job["updated_at"]) - _stamp(job["created_at"])).total_seconds()
        return {"wall_s": wall, "job_s": job_s}


def run_loop(files: list[Path], workdir: Path, threads: int) -> float:
    """Read, SHA-256 and clamd INSTREAM each file with the ``clamd`` package; seconds."""
    with fresh_clamd(workdir) as server:
        host, port = server.url.removeprefix("tcp://").rsplit(":", 1)

        def one(path: Path) -> None:
            data = path.read_bytes()
            hashlib.sha256(data).hexdigest()
            # A client per call: one holds its socket in an attribute, so threads cannot share it.
            client = clamd.ClamdNetworkSocket(host, int(port))
            if client.instream(io.BytesIO(data)) != {"stream": ("OK", None)}:
                raise RuntimeError(f"clamd did not answer clean for {path}")

        start = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, files))
        return time.perf_counter() - start


def run_sha256sum(files: list[Path]) -> float:
    start = time.perf_counter()
    subprocess.run(["sha256sum", *map(str, files)], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def profile_summary(path: Path, top: int = 20) -> dict:
    """Where the samples of py-spy's raw output went: by the innermost frame, and by the
    farm's own functions on the stack (each counted once per sample)."""
    leaf: Counter = Counter()
    ours: Counter = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        if not any("distributed/worker.py" in f or "cluster/bulk.py" in f for f in frames):
            continue  # the client, the scheduler and idle threads: not the workers' work
        total += n
        leaf[frames[-1]] += n
        for frame in set(frames):
            if any(f"({room}/" in frame for room in ("cluster", "pipelines", "catalog")):
                ours[frame] += n
    return {"worker_samples": total, "leaf": leaf.most_common(top), "ours": ours.most_common(top)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000, help="JPEGs in the library (2000)")
    parser.add_argument("--size", default="640x480", help="their size (640x480)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, interleaved (3)")
    parser.add_argument("--profile", type=Path, help="also profile one run into this file")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args(argv)
    width, height = map(int, args.size.split("x"))
    folder = library(args.files, width, height)
    files = files_of(folder)
    single = library(1, width, height)
    runs: dict[str, list[float]] = {"index": [], "job": [], "one-file": [], "loop-1": [],
                                    "loop-2": [], "sha256sum": []}
    report: dict = {"info": {"cores": os.cpu_count(), "files": len(files),
                             "bytes": sum(p.stat().st_size for p in files), "size": args.size,
                             "rounds": args.rounds, "python": platform.python_version()}}
    with server_url() as base, tempfile.TemporaryDirectory(prefix="bench-index-") as tmp:
        workdir = Path(tmp)
        for round_ in range(1, args.rounds + 1):
            print(f"round {round_}/{args.rounds}", file=sys.stderr, flush=True)
            timed = run_index(folder, len(files), workdir, base)
            runs["index"].append(timed["wall_s"])
            runs["job"].append(timed["job_s"])
            runs["one-file"].append(run_index(single, 1, workdir, base)["wall_s"])
            runs["loop-1"].append(run_loop(files, workdir, 1))
            runs["loop-2"].append(run_loop(files, workdir, 2))
            runs["sha256sum"].append(run_sha256sum(files))
        if args.profile:
            print("profiling one more index run", file=sys.stderr, flush=True)
            run_index(folder, len(files), workdir, base, args.profile)
            report["profile"] = profile_summary(args.profile)
    report["runs_s"] = {name: [round(s, 3) for s in values] for name, values in runs.items()}
    medians = {name: statistics.median(values) for name, values in runs.items()}
    report["median"] = {name: {"s": round(s, 3), "files_per_min": round(len(files) / s * 60)}
                        for name, s in medians.items()}
    report["index_over"] = {name: round(medians[name] / medians["index"], 3)
                            for name in ("loop-1", "loop-2", "sha256sum")}
    # The rate past the command's fixed cost: what a library large enough to hide it gets.
    report["past_start_up_files_per_min"] = round(
        (len(files) - 1) / (medians["index"] - medians["one-file"]) * 60)
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
    else:
        print_report(report)
    return 0


def print_report(report: dict) -> None:
    info = report["info"]
    print(f"{info['files']} JPEGs of {info['size']} ({info['bytes'] / info['files'] / 1024:.0f} KiB "
          f"on average), {info['cores']} cores, median of {info['rounds']} rounds")
    print(f"{'run':<11}{'seconds':>9}{'files/min':>11}   rounds (s)")
    for name, row in report["median"].items():
        rounds = ", ".join(f"{s:.2f}" for s in report["runs_s"][name])
        print(f"{name:<11}{row['s']:>9.2f}{row['files_per_min']:>11,}   {rounds}")
    index = report["median"]["index"]["files_per_min"]
    print(f"index: {index / TARGET_PER_MIN:.2f}x the target of {TARGET_PER_MIN:,} files/min; "
          + ", ".join(f"{ratio:.2f}x the speed of {name}"
                      for name, ratio in report["index_over"].items()))
    print(f"index past its start-up (index less one-file): "
          f"{report['past_start_up_files_per_min']:,} files/min")
    if profile := report.get("profile"):
        print(f"\nprofile: {profile['worker_samples']} samples in the workers' tasks")
        print("innermost frames:")
        for frame, n in profile["leaf"]:
            print(f"  {n / profile['worker_samples']:6.1%}  {frame}")
        print("Mediafarm functions on the stack:")
        for frame, n in profile["ours"]:
            print(f"  {n / profile['worker_samples']:6.1%}  {frame}")


if __name__ == "__main__":
    sys.exit(main())
