"""Catalog writes: the bulk path's batched ``write_batch`` against per-row writes (issue 6).

Rows per second into PostgreSQL for the same rows written two ways. Before each
timed run a fresh database ``mediafarm_bench_<hex>`` is created and migrated, and
``--rows`` assets are created with ``Catalog.queue`` (untimed), as
``Farm.backfill`` does. The rows are those of ``benchmarks/bench_bulk.py``'s
checksum workload, built in advance (untimed) with its functions: per asset one
``StageRecord`` (stage ``verify``) and its terminal status; 999 in 1000 assets
end ``ready`` (a blob row for the object, then ``Catalog``'s ready write: the
asset's version row and its status), one in 1000 ends ``rejected`` (its status).

Two comparisons, each timed on its own fresh database:

- *partition writes* (everything above):
  - batched: one ``Catalog.write_batch(blobs, stages, readies, stops)`` per
    ``--batch`` (500) assets, as ``cluster.recorder.buffered`` flushes at the
    end of a bulk partition;
  - per-row: the same calls through ``cluster.recorder.Recorder``, the per-asset
    path's write-through recorder: ``put_blob``, ``record_stage``,
    ``record_ready`` / ``record_stop``, one transaction (and commit) each.
- *stage rows only* (the ``--rows`` ``StageRecord``\\ s):
  - batched: ``Catalog.write_batch([], stages, [], [])`` per ``--batch`` rows;
  - plain insert loop: psycopg, one ``INSERT INTO stage_runs ...`` and one
    ``COMMIT`` per row, on one connection.

Rows written: stage rows + blob rows + version rows + asset status updates for
partition writes (four per ready asset, two per rejected one), stage rows for
the other. After every run the tables are checked (each asset's status, row
counts). Rounds (``--rounds``) run the four interleaved; figures are medians of
rows/s, and the ratios batched/per-row medians of the per-round ratios. Nothing
asserts on timings. The server is PostgreSQL with its defaults here
(``synchronous_commit=on``, ``fsync=on``), so each commit waits for its WAL flush.

Run from the repository root (needs PostgreSQL, as for the tests)::

    .venv/bin/python benchmarks/bench_catalog_writes.py                  # 20,000 rows, 3 rounds
    .venv/bin/python benchmarks/bench_catalog_writes.py --rows 2000 --rounds 1 --json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
for path in (str(BENCH_DIR), str(REPO)):
    if path not in sys.path:
        sys.path.insert(0, path)

import psycopg  # noqa: E402
from psycopg.types.json import Jsonb  # noqa: E402

import bench_bulk  # noqa: E402
from bench_bulk import _admin_conninfo, _record, bench_database, object_uri, verify  # noqa: E402
from catalog import Catalog, upgrade  # noqa: E402
from catalog.repository import utcnow  # noqa: E402
from catalog.records import AssetRequest, StageRecord
from cluster import recorder  # noqa: E402
from cluster.storage import sources  # noqa: E402
from pipelines.recipe import DEFAULT_RECIPE  # noqa: E402
from pipelines.vips import tool_versions  # noqa: E402

WORKER = "bench:0"
MODES = ("partition-batched", "partition-per-row", "stages-batched", "stages-insert-loop")


class _Collect(recorder.Recorder):
    """Collects the StageRecords ``_record`` makes (to build the stage-only workload)."""

    def __init__(self) -> None:
        self.stages: list[StageRecord] = []

    def stage(self, record: StageRecord) -> None:
        self.stages.append(record)

    def blob(self, *args) -> None:
        pass

    def ready(self, *args) -> None:
        pass

    def stop(self, *args) -> None:
        pass


def workload(rows: int) -> tuple[list[AssetRequest], list[tuple]]:
    """The assets to queue, and per asset what ``bench_bulk._record`` needs (untimed)."""
    requests, results = [], []
    start = utcnow()
    for i in range(rows):
        uri = object_uri(i)
        requests.append(AssetRequest(sources.asset_id("default", uri), "default", uri, None))
        size, digest, expected = verify(uri)
        results.append((size, digest, expected, start, start + timedelta(microseconds=40)))
    return requests, results


def prepare(url: str, requests: list[AssetRequest]) -> tuple[Catalog, str, dict[str, int]]:
    upgrade(url)
    catalog = Catalog(url)
    recipe = DEFAULT_RECIPE.with_tools(tool_versions())
    catalog.ensure_recipe(recipe.id, recipe.name, recipe.canonical())
    attempts = catalog.queue(requests, recipe.id, {})
    return catalog, recipe.id, attempts


def run_mode(mode: str, base: str, requests: list[AssetRequest], results: list[tuple],
             batch: int) -> dict:
    """One timed run of ``mode`` on a fresh database; returns rows, seconds and rows/s."""
    with bench_database(base) as url:
        catalog, recipe_id, attempts = prepare(url, requests)
        calls = [(r.asset_id, attempts[r.asset_id], recipe_id, *res)
                 for r, res in zip(requests, results)]
        if mode.startswith("stages"):
            collect = _Collect()
            for call in calls:
                _record(collect, *call, WORKER)
            stages = collect.stages
        statuses: Counter = Counter()
        start = time.perf_counter()
        if mode == "partition-batched":
            for first in range(0, len(calls), batch):
                with recorder.buffered(catalog) as writes:
                    for call in calls[first:first + batch]:
                        statuses[_record(writes, *call, WORKER)] += 1
                    writes.flush()  # one Catalog.write_batch
        elif mode == "partition-per-row":
            writes = recorder.Recorder(catalog)
            for call in calls:
                statuses[_record(writes, *call, WORKER)] += 1
        elif mode == "stages-batched":
            for first in range(0, len(stages), batch):
                catalog.write_batch([], stages[first:first + batch], [], [])
        elif mode == "stages-insert-loop":
            insert_loop(url, base, stages)
        seconds = time.perf_counter() - start
        counts = catalog.row_counts()
        found = Counter(a["status"] for a in catalog.assets(r.asset_id for r in requests).values())
        catalog.engine.dispose()
    if counts["stage_runs"] != len(requests):
        raise RuntimeError(f"{mode}: {counts['stage_runs']} stage rows, expected {len(requests)}")
    if mode.startswith("partition"):
        ready, rejected = statuses["ready"], statuses["rejected"]
        if dict(found) != {k: v for k, v in statuses.items() if v} or ready + rejected != len(requests) \
                or counts["blobs"] != ready or counts["asset_versions"] != ready:
            raise RuntimeError(f"{mode}: assets {dict(found)}, rows {counts}")
        rows = len(requests) + 3 * ready + rejected  # stage rows, blobs, versions, status updates
    else:
        rows = len(requests)
    return {"rows": rows, "seconds": seconds, "rows_per_s": rows / seconds}


def insert_loop(url: str, base: str, stages: list[StageRecord]) -> None:
    """A plain per-row loop: one INSERT and one COMMIT per stage row, with psycopg."""
    from sqlalchemy.engine import make_url

    query = ("INSERT INTO stage_runs (asset_id, stage, attempt, status, started_at, finished_at,"
             " duration_ms, worker, reason, error_class, error_message, details)"
             " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)")
    with psycopg.connect(_admin_conninfo(base, make_url(url).database)) as conn:
        for r in stages:
            conn.execute(query, (r.asset_id, r.stage, r.attempt, r.status, r.started_at,
                                 r.finished_at, (r.finished_at - r.started_at).total_seconds() * 1000,
                                 r.worker, r.reason, r.error_class, r.error_message,
                                 Jsonb(r.details) if r.details is not None else None))
            conn.commit()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000, help="stage rows / assets (default 20,000)")
    parser.add_argument("--batch", type=int, default=500,
                        help="assets per write_batch call, as a bulk partition (default 500)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args(argv)
    if args.rows < 1 or args.batch < 1 or args.rounds < 1:
        parser.error("--rows, --batch and --rounds must be at least 1")

    from tests.services.postgres import server_url

    requests, results = workload(args.rows)
    runs: dict[str, list[dict]] = {mode: [] for mode in MODES}
    with server_url() as base:
        with psycopg.connect(_admin_conninfo(base)) as conn:
            server = conn.execute("SHOW server_version").fetchone()[0]
            settings = dict(conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN"
                " ('synchronous_commit', 'fsync')").fetchall())
        for n in range(1, args.rounds + 1):
            for mode in MODES:
                print(f"round {n}/{args.rounds}: {mode}", file=sys.stderr, flush=True)
                runs[mode].append(run_mode(mode, base, requests, results, args.batch))

    def summary(mode: str) -> dict:
        return {"rows": runs[mode][0]["rows"],
                "seconds": round(statistics.median(r["seconds"] for r in runs[mode]), 3),
                "rows_per_s": round(statistics.median(r["rows_per_s"] for r in runs[mode]), 1),
                "rows_per_s_rounds": [round(r["rows_per_s"], 1) for r in runs[mode]]}

    def ratio(fast: str, slow: str) -> float:
        return round(statistics.median(f["rows_per_s"] / s["rows_per_s"]
                                       for f, s in zip(runs[fast], runs[slow])), 2)

    report = {"info": {"cores": os.cpu_count(), "postgresql": server, **settings,
                       "python": platform.python_version(), "platform": platform.platform(),
                       "assets": args.rows, "batch": args.batch, "rounds": args.rounds,
                       "rejected_every": bench_bulk.CORRUPT_EVERY},
              "modes": {mode: summary(mode) for mode in MODES},
              "ratios": {"partition batched / per-row": ratio("partition-batched", "partition-per-row"),
                         "stages batched / insert loop": ratio("stages-batched", "stages-insert-loop")}}
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
        return 0
    info = report["info"]
    print(f"PostgreSQL {info['postgresql']} (synchronous_commit={info.get('synchronous_commit')}, "
          f"fsync={info.get('fsync')}); {info['assets']:,} assets, batch {info['batch']}, "
          f"median of {info['rounds']} rounds")
    print(f"{'mode':<22}{'rows':>9}{'seconds':>10}{'rows/s':>10}")
    for mode, row in report["modes"].items():
        print(f"{mode:<22}{row['rows']:>9,}{row['seconds']:>10.2f}{row['rows_per_s']:>10,.0f}")
    for name, value in report["ratios"].items():
        print(f"{name}: {value}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
