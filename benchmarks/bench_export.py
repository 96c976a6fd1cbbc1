"""Parquet export of a catalog with a million renditions (issue 8), against plain pandas.

A fresh PostgreSQL database (``mediafarm_bench_<hex>``, migrated, dropped afterwards) is
filled with ``COPY`` through psycopg: one recipe, ``--rows / --presets`` original blobs and
ready assets, ``--rows`` rendition blobs and ``--rows`` renditions (``--presets`` per asset).
Foreign key triggers are off while it loads (``session_replication_role = replica``; the
rows are consistent by construction). Media types are 90% image (WebP), 8% video (MP4), 2% audio; ``created_at`` walks forward
over ``--days`` days in insertion order, as a catalog filled over time would. ``ANALYZE``
runs before anything is timed.

Two ways to write the ``renditions`` table to Parquet (zstd both), each in its own fresh
Python process (``--child``), ``--rounds`` times interleaved:

- *ours*: ``catalog.export.export(catalog, folder, datasets=("renditions",))``: a
  server-side cursor, ``--batch-rows`` rows at a time, ordered by ``created_at``, joined with
  the source and output blobs, explicit Arrow schema, ``pyarrow.dataset.write_dataset``
  into day / media type partitions;
- *pandas*: ``pandas.read_sql("SELECT * FROM renditions", engine)`` then
  ``DataFrame.to_parquet(path, compression="zstd")`` (one file, no joins, no partitions).

Timed in the child, from just before the first query to the last file closed (imports
and the interpreter's start are not timed; *ours* is started 5 ms before a whole second,
so that its wait for the next whole second costs ~5 ms): rows/s = rows / that time. Memory: the parent
samples the child's RSS with psutil every 50 ms; reported are the peak and the peak
above the child's RSS just before the timed part (its imports). Ratios are ours / pandas
(rows/s: higher is better for ours; memory: lower is better for ours).

Then the incremental path: ``--increment`` new renditions are inserted (stamped now) and
*ours* exports again into the same folder: only those rows are read and written.

Run from the repository root (needs PostgreSQL, as for the tests)::

    .venv/bin/python benchmarks/bench_export.py                   # 1,000,000 renditions
    .venv/bin/python benchmarks/bench_export.py --rows 100000 --rounds 1
    .venv/bin/python benchmarks/bench_export.py --json
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import platform
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
if str(REPO) not in sys.path:  # tests.services.postgres, when run as a script
    sys.path.insert(0, str(REPO))

MIB = 1024 * 1024
RECIPE = "r" * 32
COPY_CHUNK = 50_000
KINDS = [("image/webp", "webp")] * 45 + [("video/mp4", "mp4")] * 4 + [("audio/mp4", "m4a")]


# -- the catalog -------------------------------------------------------------------------------


def _digest(kind: str, index: int) -> str:
    return hashlib.sha256(f"{kind}-{index}".encode()).hexdigest()


def _copy(conn, table: str, columns: str, lines: Iterator[str]) -> None:
    with conn.cursor() as cur, cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
        buffer = io.StringIO()
        count = 0
        for line in lines:
            buffer.write(line)
            count += 1
            if count % COPY_CHUNK == 0:
                copy.write(buffer.getvalue())
                buffer = io.StringIO()
        copy.write(buffer.getvalue())


def fill(url: str, rows: int, presets: int, days: int, start: datetime) -> dict:
    """COPY the catalog's rows; returns counts and the time it took."""
    import psycopg

    from catalog.db import normalise_url
    from sqlalchemy.engine import make_url

    began = time.perf_counter()
    assets = rows // presets
    span = timedelta(days=days).total_seconds()
    conninfo = make_url(normalise_url(url)).set(drivername="postgresql").render_as_string(False)

    def stamp(asset: int) -> str:
        return (start + timedelta(seconds=span * asset / max(assets, 1))).isoformat()

    def kind(asset: int) -> tuple[str, str]:
        return KINDS[asset % len(KINDS)]

    with psycopg.connect(conninfo) as conn:
        # The rows are consistent by construction: skip the per-row foreign key triggers.
        conn.execute("SET session_replication_role = replica")
        conn.execute("INSERT INTO recipes (id, name, definition, created_at) "
                     "VALUES (%s, 'bench', '{}', %s)", (RECIPE, start))
        source_types = {"image/webp": "image/jpeg", "video/mp4": "video/mp4",
                        "audio/mp4": "audio/mpeg"}
        _copy(conn, "blobs", "sha256, size, media_type, store, media_metadata, created_at", (
            f"{_digest('src', a)}\t{200_000 + a % 5_000_000}\t{source_types[kind(a)[0]]}\t"
            f"originals\t{{\"width\": 4000, \"height\": 3000}}\t{stamp(a)}\n"
            for a in range(assets)))
        _copy(conn, "blobs", "sha256, size, media_type, store, media_metadata, created_at", (
            f"{_digest('out', r)}\t{3_000 + (r * 7919) % 400_000}\t{kind(r // presets)[0]}\t"
            f"renditions\t\\N\t{stamp(r // presets)}\n" for r in range(assets * presets)))
        _copy(conn, "assets", "id, owner, source_uri, source_fingerprint, recipe_id, status, "
              "retryable, sha256, current_version, attempt, created_at, updated_at", (
                  f"asset-{a:09d}\towner-{a % 100}\ts3://uploads/{a:09d}.jpg\t{a}:1\t{RECIPE}\t"
                  f"ready\tf\t{_digest('src', a)}\t1\t1\t{stamp(a)}\t{stamp(a)}\n"
                  for a in range(assets)))
        _copy(conn, "renditions", "source_sha256, recipe_id, preset, output_sha256, format, "
              "media_type, width, height, bytes, quality, preset_id, metric_name, metric_value, "
              "encoder, tool_versions, created_at", (
                  f"{_digest('src', r // presets)}\t{RECIPE}\tpreset-{r % presets}\t"
                  f"{_digest('out', r)}\t{kind(r // presets)[1]}\t{kind(r // presets)[0]}\t"
                  f"{160 * (1 + r % presets)}\t{120 * (1 + r % presets)}\t"
                  f"{3_000 + (r * 7919) % 400_000}\t{60 + r % 40}\tpid-{r % presets}\tssim\t"
                  f"{0.9 + (r % 97) / 1000}\t{{\"effort\": 2, \"smart_subsample\": true}}\t"
                  f"{{\"libvips\": \"8.16.0\"}}\t{stamp(r // presets)}\n"
                  for r in range(assets * presets)))
        conn.commit()
        conn.autocommit = True
        conn.execute("ANALYZE")
        size = conn.execute("SELECT pg_total_relation_size('renditions')").fetchone()[0]
    return {"assets": assets, "renditions": assets * presets, "blobs": assets * (presets + 1),
            "renditions_table_mib": round(size / MIB, 1),
            "fill_s": round(time.perf_counter() - began, 1)}


def add_renditions(url: str, count: int, presets: int) -> None:
    """``count`` new renditions of existing assets under a second recipe, stamped now."""
    import psycopg

    from catalog.db import normalise_url
    from sqlalchemy.engine import make_url

    conninfo = make_url(normalise_url(url)).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(conninfo) as conn:
        conn.execute("INSERT INTO recipes (id, name, definition) VALUES (%s, 'bench-2', '{}')",
                     ("s" * 32,))
        _copy(conn, "renditions", "source_sha256, recipe_id, preset, output_sha256, format, "
              "media_type, width, height, bytes, quality, preset_id, encoder, tool_versions", (
                  f"{_digest('src', r // presets)}\t{'s' * 32}\tpreset-{r % presets}\t"
                  f"{_digest('out', r)}\twebp\timage/webp\t320\t240\t9000\t75\tpid2-{r % presets}"
                  f"\t\\N\t{{\"libvips\": \"8.16.0\"}}\n" for r in range(count)))


# -- the two ways, each in a child process --------------------------------------------------------


def child(method: str, url: str, out: str, batch_rows: int) -> dict:
    import psutil

    from catalog import Catalog
    from catalog.export import export

    if method == "ours":
        catalog = Catalog(url)
        rss_before = psutil.Process().memory_info().rss
        # The export first waits for the next whole second; start just before one, so that
        # the wait (up to a second, whatever the size) does not blur the figures.
        time.sleep(max(0.0, 0.995 - time.time() % 1))
        start = time.perf_counter()
        report = export(catalog, out, datasets=("renditions",), batch_rows=batch_rows)
        wall = time.perf_counter() - start
        rows = report["datasets"]["renditions"]["rows"]
        files = report["datasets"]["renditions"]["files"]
        written = sum((Path(out) / f).stat().st_size for f in files)
        files = len(files)
    else:
        import pandas as pd
        import pyarrow  # noqa: F401  (to_parquet's engine, imported before timing as ours is)
        from sqlalchemy import create_engine

        from catalog.db import normalise_url

        engine = create_engine(normalise_url(url))
        rss_before = psutil.Process().memory_info().rss
        start = time.perf_counter()
        frame = pd.read_sql("SELECT * FROM renditions", engine)
        Path(out).mkdir(parents=True, exist_ok=True)
        frame.to_parquet(Path(out) / "renditions.parquet", compression="zstd")
        wall = time.perf_counter() - start
        rows, files = len(frame), 1
        written = (Path(out) / "renditions.parquet").stat().st_size
    return {"rows": rows, "wall_s": wall, "files": files, "bytes_written": written,
            "rss_before_mib": rss_before / MIB}


class Sampler:
    """The peak RSS of one process, sampled every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        import psutil

        self.process, self.interval, self.peak = psutil.Process(pid), interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            with contextlib.suppress(psutil.Error):
                self.peak = max(self.peak, self.process.memory_info().rss)
            self._stop.wait(self.interval)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak / MIB


def run(method: str, url: str, out: Path, batch_rows: int) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", method, "--url", url,
               "--out", str(out), "--batch-rows", str(batch_rows)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    sampler = Sampler(process.pid)
    stdout, _ = process.communicate()
    peak = sampler.stop()
    if process.returncode != 0:
        raise RuntimeError(f"{method} failed with exit status {process.returncode}")
    result = json.loads(stdout)
    result.update(peak_rss_mib=round(peak, 1),
                  peak_above_start_mib=round(peak - result["rss_before_mib"], 1),
                  rows_per_s=round(result["rows"] / result["wall_s"]),
                  wall_s=round(result["wall_s"], 2), rss_before_mib=round(result["rss_before_mib"], 1))
    return result


# -- main ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def bench_database(base_url: str) -> Iterator[str]:
    import psycopg
    from psycopg import sql
    from sqlalchemy.engine import make_url

    name = f"mediafarm_bench_{secrets.token_hex(6)}"
    admin = make_url(base_url).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_url(base_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                         " WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="renditions (default 1,000,000)")
    parser.add_argument("--presets", type=int, default=4, help="renditions per asset (default 4)")
    parser.add_argument("--days", type=int, default=30, help="days the rows span (default 30)")
    parser.add_argument("--batch-rows", type=int, default=50_000, help="export batch (default 50,000)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (default 2)")
    parser.add_argument("--increment", type=int, default=10_000,
                        help="new renditions for the incremental export (default 10,000; 0 skips)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--child", choices=["ours", "pandas"], help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        json.dump(child(args.child, args.url, args.out, args.batch_rows), sys.stdout)
        return 0

    import duckdb
    import pandas
    import psycopg
    import pyarrow

    from catalog import upgrade
    from tests.services.postgres import server_url

    report: dict = {"info": {"cores": os.cpu_count(), "python": platform.python_version(),
                             "pyarrow": pyarrow.__version__, "pandas": pandas.__version__,
                             "psycopg": psycopg.__version__, "duckdb": duckdb.__version__,
                             "platform": platform.platform(), "batch_rows": args.batch_rows}}
    with server_url() as base, bench_database(base) as url, \
            tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        upgrade(url)
        with psycopg.connect(make_conninfo(url)) as conn:
            report["info"]["postgresql"] = conn.execute("SHOW server_version").fetchone()[0]
        print(f"filling {args.rows:,} renditions", file=sys.stderr, flush=True)
        start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=args.days + 1)
        report["catalog"] = fill(url, args.rows, args.presets, args.days, start)
        runs: dict[str, list] = {"ours": [], "pandas": []}
        for n in range(1, args.rounds + 1):
            for method in ("ours", "pandas"):
                print(f"round {n}/{args.rounds}: {method}", file=sys.stderr, flush=True)
                runs[method].append(run(method, url, Path(tmp) / f"{method}-{n}", args.batch_rows))
        summary = {}
        for method, results in runs.items():
            summary[method] = {key: statistics.median(r[key] for r in results) for key in (
                "rows_per_s", "wall_s", "peak_rss_mib", "peak_above_start_mib", "rss_before_mib",
                "bytes_written")}
            summary[method]["rows"] = results[0]["rows"]
            summary[method]["files"] = results[0]["files"]
        summary["ratio_rows_per_s"] = round(summary["ours"]["rows_per_s"]
                                            / summary["pandas"]["rows_per_s"], 2)
        summary["ratio_peak_rss"] = round(summary["ours"]["peak_rss_mib"]
                                          / summary["pandas"]["peak_rss_mib"], 3)
        summary["ratio_peak_above_start"] = round(summary["ours"]["peak_above_start_mib"]
                                                  / summary["pandas"]["peak_above_start_mib"], 3)
        report["summary"], report["runs"] = summary, runs
        if args.increment:
            add_renditions(url, args.increment, args.presets)
            print(f"incremental export of {args.increment:,} new rows", file=sys.stderr, flush=True)
            report["incremental"] = run("ours", url, Path(tmp) / "ours-1", args.batch_rows)
            if report["incremental"]["rows"] != args.increment:
                raise RuntimeError(f"the incremental export wrote {report['incremental']['rows']} "
                                   f"rows, not {args.increment}")
    if args.json:
        json.dump(report, sys.stdout, indent=2, default=str)
        print()
    else:
        print_report(report)
    return 0


def make_conninfo(url: str) -> str:
    from sqlalchemy.engine import make_url

    from catalog.db import normalise_url

    return make_url(normalise_url(url)).set(drivername="postgresql").render_as_string(False)


def print_report(report: dict) -> None:
    info, catalog, summary = report["info"], report["catalog"], report["summary"]
    print(f"{info['cores']} cores; PostgreSQL {info['postgresql']}; Python {info['python']}; "
          f"pyarrow {info['pyarrow']}; pandas {info['pandas']}")
    print(f"catalog: {catalog['renditions']:,} renditions of {catalog['assets']:,} assets, "
          f"{catalog['blobs']:,} blobs (renditions table {catalog['renditions_table_mib']} MiB, "
          f"filled by COPY in {catalog['fill_s']} s)")
    print(f"\n{'':<8}{'rows':>11}{'wall s':>9}{'rows/s':>10}{'peak RSS MiB':>14}"
          f"{'above start':>13}{'files':>7}{'MiB written':>13}")
    for method in ("ours", "pandas"):
        row = summary[method]
        print(f"{method:<8}{row['rows']:>11,}{row['wall_s']:>9.1f}{row['rows_per_s']:>10,.0f}"
              f"{row['peak_rss_mib']:>14.0f}{row['peak_above_start_mib']:>13.0f}{row['files']:>7}"
              f"{row['bytes_written'] / MIB:>13.1f}")
    print(f"ours / pandas: rows/s {summary['ratio_rows_per_s']}x, peak RSS "
          f"{summary['ratio_peak_rss']}x, peak above start {summary['ratio_peak_above_start']}x "
          f"(medians of {len(report['runs']['ours'])} rounds)")
    incremental = report.get("incremental")
    if incremental:
        print(f"incremental: {incremental['rows']:,} new rows in {incremental['wall_s']} s, "
              f"{incremental['files']} new file(s), {incremental['bytes_written'] / MIB:.2f} MiB, "
              f"peak RSS {incremental['peak_rss_mib']:.0f} MiB")


if __name__ == "__main__":
    sys.exit(main())
