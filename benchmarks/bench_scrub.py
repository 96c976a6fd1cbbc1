"""Scrub throughput: ``mediafarm scrub`` over a store of originals, against bare hashing.

A library of small JPEGs (``bench_index.library``) is indexed once, untimed, into fresh
local stores and a fresh PostgreSQL catalog; then, rounds interleaved:

- ``scrub``: the whole command, ``python -m cluster.cli.main scrub --json``, as cron runs
  it: interpreter start, imports, a LocalCluster of one single-threaded worker process
  per core, the catalog's walk of the blobs, every original read back and SHA-256 hashed
  on the workers against its key, the orphan listing of the store's folders, the upload
  clean-up and staging sweeps, the run's records;
- ``one-object``: the same command with ``--limit 1``: what a scrub costs whatever the
  store's size;
- ``sha256sum``: coreutils over the same stored files (reading and hashing only: no
  catalog, no comparison, no listing).

Every scrub must check every object and find nothing wrong; nothing here asserts on
timings. The files are in the page cache throughout. Reported are medians.

Run from the repository root (needs clamd and PostgreSQL, as for the tests)::

    .venv/bin/python benchmarks/bench_scrub.py                    # 2,000 files, 3 rounds
    .venv/bin/python benchmarks/bench_scrub.py --files 10000 --size 1600x1200 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_index import REPO, files_of, fresh_clamd, library, run_sha256sum

from tests.services.postgres import scratch_database, server_url


def farm_command(args: list[str], env: dict[str, str]) -> dict:
    """Run ``mediafarm ARGS --json``; its JSON document and wall time."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "cluster.cli.main", *args, "--json"],
                          env=env, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"mediafarm {args[0]} failed ({done.returncode}): {done.stderr}")
    return {"wall_s": wall,
            "report": json.JSONDecoder().raw_decode(done.stdout[done.stdout.index("{"):])[0]}


def run_scrub(env: dict[str, str], expected: int, limit: int | None = None) -> float:
    """The whole ``mediafarm scrub``; fails unless every object it took was whole."""
    args = ["scrub", "--stores", "originals"] + (["--limit", str(limit)] if limit else [])
    timed = farm_command(args, env)
    counts = timed["report"]["counts"]
    if counts.get("checked") != (limit or expected) or timed["report"]["findings"]:
        raise RuntimeError(f"scrub counted {counts} with findings "
                           f"{timed['report']['findings'][:3]}; expected {limit or expected} whole")
    return timed["wall_s"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000, help="JPEGs in the library (2000)")
    parser.add_argument("--size", default="640x480", help="their size (640x480)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, interleaved (3)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args(argv)
    width, height = map(int, args.size.split("x"))
    files = files_of(library(args.files, width, height))
    runs: dict[str, list[float]] = {"scrub": [], "one-object": [], "sha256sum": []}
    with server_url() as base, scratch_database(base) as catalog_url, \
            tempfile.TemporaryDirectory(prefix="bench-scrub-") as tmp:
        workdir = Path(tmp)
        with fresh_clamd(workdir) as clamd:
            env = {**os.environ, "MEDIAFARM_DATA_DIR": str(workdir / "data"),
                   "MEDIAFARM_CLAMD_URL": clamd.url, "MEDIAFARM_CATALOG_URL": catalog_url}
            env.pop("DASK_SCHEDULER_ADDRESS", None)
            env.pop("MEDIAFARM_CONFIG", None)
            print(f"indexing {len(files)} files (untimed)", file=sys.stderr, flush=True)
            indexed = farm_command(["index", str(files[0].parent)], env)["report"]["assets"]
            if indexed != {"ready": len(files)}:
                raise RuntimeError(f"mediafarm index ended {indexed}")
            stored = sorted(p for p in (workdir / "data").rglob("*")
                            if p.is_file() and "sha256" in p.parts and "staging" not in p.parts
                            and "originals" in p.parts)
            if len(stored) != len(files):
                raise RuntimeError(f"{len(stored)} originals stored for {len(files)} files")
            size = sum(p.stat().st_size for p in stored)
            for round_ in range(1, args.rounds + 1):
                print(f"round {round_}/{args.rounds}", file=sys.stderr, flush=True)
                runs["scrub"].append(run_scrub(env, len(files)))
                runs["one-object"].append(run_scrub(env, len(files), limit=1))
                runs["sha256sum"].append(run_sha256sum(stored))
    medians = {name: statistics.median(values) for name, values in runs.items()}
    report = {
        "info": {"cores": os.cpu_count(), "objects": len(stored), "bytes": size,
                 "size": args.size, "rounds": args.rounds, "python": platform.python_version()},
        "runs_s": {name: [round(s, 3) for s in values] for name, values in runs.items()},
        "median": {name: {"s": round(s, 3), "objects_per_s": round(len(stored) / s, 1),
                          "mib_per_s": round(size / 2**20 / s, 1)}
                   for name, s in medians.items()},
        "scrub_over_sha256sum": round(medians["sha256sum"] / medians["scrub"], 3),
        # The rate past the command's fixed cost: what a store large enough to hide it gets.
        "past_start_up_objects_per_s": round(
            (len(stored) - 1) / (medians["scrub"] - medians["one-object"]), 1)
        if medians["scrub"] > medians["one-object"] else None,  # too few objects to tell
    }
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
    else:
        print_report(report)
    return 0


def print_report(report: dict) -> None:
    info = report["info"]
    print(f"{info['objects']} originals of {info['size']} JPEGs "
          f"({info['bytes'] / 2**20:.0f} MiB), {info['cores']} cores, "
          f"median of {info['rounds']} rounds")
    print(f"{'run':<12}{'seconds':>9}{'objects/s':>11}{'MiB/s':>8}   rounds (s)")
    for name, row in report["median"].items():
        rounds = ", ".join(f"{s:.2f}" for s in report["runs_s"][name])
        print(f"{name:<12}{row['s']:>9.2f}{row['objects_per_s']:>11,.1f}"
              f"{row['mib_per_s']:>8.1f}   {rounds}")
    past = report["past_start_up_objects_per_s"]
    print(f"scrub: {report['scrub_over_sha256sum']:.3f}x the speed of sha256sum; past its "
          "start-up (scrub less one-object): "
          + (f"{past:,.1f} objects/s" if past else "too few objects to tell"))


if __name__ == "__main__":
    sys.exit(main())
