"""Parquet export of a catalog with a million renditions: the Arrow-native reader against the
row-wise one, on PostgreSQL and on SQLite (issue 19).

Two catalogs hold the same generated rows: a fresh PostgreSQL database
(``mediafarm_bench_<hex>``, migrated, filled with ``COPY`` through psycopg, dropped
afterwards) and a migrated SQLite file (filled with ``executemany``). One recipe,
``--rows / --presets`` original blobs and ready assets, ``--rows`` rendition blobs and
``--rows`` renditions (``--presets`` per asset). Foreign key triggers are off while
PostgreSQL loads (``session_replication_role = replica``; the rows are consistent by
construction). Media types are 90% image (WebP), 8% video (MP4), 2% audio; ``created_at``
walks forward over ``--days`` days in insertion order, as a catalog filled over time would.
``ANALYZE`` runs before anything is timed.

The ``renditions`` dataset is exported with
``catalog.export.export(catalog, folder, datasets=("renditions",), reader=...)`` (joined
with the source and output blobs, partitioned by day and media type, zstd), each run in its
own fresh Python process (``--child``), ``--rounds`` times, the databases and readers
interleaved within each round:

- *arrow*: ``catalog.export_arrow``: ADBC's PostgreSQL driver (``COPY ... (FORMAT BINARY)``
  decoded into Arrow in C); on SQLite the sqlite3 cursor, each column one Arrow array;
- *rows*: ``catalog.export_rows``: the row-wise reader through SQLAlchemy (a server-side
  cursor on PostgreSQL), the export's path before issue 19, measured in the same run.

Timed in the child, from just before the first query to the last file closed (imports
and the interpreter's start are not timed; the export is started 5 ms before a whole second,
so that its wait for the next whole second costs ~5 ms): rows/s = rows / that time; CPU s
is the child's own CPU time over it (all its threads; not the database server's). The
parent also times the whole command (interpreter start, imports, export, exit) and samples
the child's RSS with psutil every 50 ms: reported are the peak and the peak above the
child's RSS just before the timed part (its imports). Figures are medians over the rounds;
ratios are arrow / rows.

Then the incremental path: ``--increment`` new renditions are inserted (stamped now) and
*arrow* exports again into the same folder: only those rows are read and written.

Run from the repository root (needs PostgreSQL, as for the tests)::

    .venv/bin/python benchmarks/bench_export.py                   # 1,000,000 renditions
    .venv/bin/python benchmarks/bench_export.py --rows 100000 --rounds 1
    .venv/bin/python benchmarks/bench_export.py --databases sqlite --json
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import platform
import resource
import secrets
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
if str(REPO) not in sys.path:  # tests.services.postgres, when run as a script
    sys.path.insert(0, str(REPO))

MIB = 1024 * 1024
RECIPE, RECIPE_2 = "r" * 32, "s" * 32
COPY_CHUNK = 50_000
KINDS = [("image/webp", "webp")] * 45 + [("video/mp4", "mp4")] * 4 + [("audio/mp4", "m4a")]
SOURCE_TYPES = {"image/webp": "image/jpeg", "video/mp4": "video/mp4", "audio/mp4": "audio/mpeg"}
DATABASES = ("postgresql", "sqlite")
READERS = ("arrow", "rows")
BLOB_COLUMNS = ("sha256", "size", "media_type", "store", "media_metadata", "created_at")
RENDITION_COLUMNS = ("source_sha256", "recipe_id", "preset", "output_sha256", "format",
                     "media_type", "width", "height", "bytes", "quality", "preset_id",
                     "metric_name", "metric_value", "encoder", "tool_versions", "created_at")


# -- the catalog's rows, the same for both databases ---------------------------------------------


def _digest(kind: str, index: int) -> str:
    return hashlib.sha256(f"{kind}-{index}".encode()).hexdigest()


def catalog_rows(rows: int, presets: int, days: int, start: datetime) -> list[tuple]:
    """``(table, columns, rows)`` in load order; rows are lazy tuples of Python values."""
    assets = rows // presets
    span = timedelta(days=days).total_seconds()

    def stamp(asset: int) -> datetime:
        return start + timedelta(seconds=span * asset / max(assets, 1))

    def kind(asset: int) -> tuple[str, str]:
        return KINDS[asset % len(KINDS)]

    return [
        ("recipes", ("id", "name", "definition", "created_at"), [(RECIPE, "bench", "{}", start)]),
        ("blobs", BLOB_COLUMNS, (
            (_digest("src", a), 200_000 + a % 5_000_000, SOURCE_TYPES[kind(a)[0]], "originals",
             '{"width": 4000, "height": 3000}', stamp(a)) for a in range(assets))),
        ("blobs", BLOB_COLUMNS, (
            (_digest("out", r), 3_000 + (r * 7919) % 400_000, kind(r // presets)[0], "renditions",
             None, stamp(r // presets)) for r in range(assets * presets))),
        ("assets", ("id", "owner", "source_uri", "source_fingerprint", "recipe_id", "status",
                    "retryable", "sha256", "current_version", "attempt", "created_at",
                    "updated_at"), (
            (f"asset-{a:09d}", f"owner-{a % 100}", f"s3://uploads/{a:09d}.jpg", f"{a}:1", RECIPE,
             "ready", False, _digest("src", a), 1, 1, stamp(a), stamp(a)) for a in range(assets))),
        ("renditions", RENDITION_COLUMNS, (
            (_digest("src", r // presets), RECIPE, f"preset-{r % presets}", _digest("out", r),
             kind(r // presets)[1], kind(r // presets)[0], 160 * (1 + r % presets),
             120 * (1 + r % presets), 3_000 + (r * 7919) % 400_000, 60 + r % 40,
             f"pid-{r % presets}", "ssim", 0.9 + (r % 97) / 1000,
             '{"effort": 2, "smart_subsample": true}', '{"libvips": "8.16.0"}', stamp(r // presets))
            for r in range(assets * presets))),
    ]


def increment_rows(count: int, presets: int, now: datetime) -> list[tuple]:
    """``count`` new renditions of existing assets under a second recipe, stamped ``now``."""
    return [
        ("recipes", ("id", "name", "definition", "created_at"), [(RECIPE_2, "bench-2", "{}", now)]),
        ("renditions", RENDITION_COLUMNS, (
            (_digest("src", r // presets), RECIPE_2, f"preset-{r % presets}", _digest("out", r),
             "webp", "image/webp", 320, 240, 9000, 75, f"pid2-{r % presets}", None, None, None,
             '{"libvips": "8.16.0"}', now) for r in range(count))),
    ]


def _copy_text(value) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    return value.isoformat() if isinstance(value, datetime) else str(value)


def fill_postgresql(url: str, tables: list[tuple]) -> None:
    import psycopg

    with psycopg.connect(make_conninfo(url)) as conn:
        # The rows are consistent by construction: skip the per-row foreign key triggers.
        conn.execute("SET session_replication_role = replica")
        for table, columns, rows in tables:
            with conn.cursor() as cur, \
                    cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                buffer = io.StringIO()
                for count, row in enumerate(rows, 1):
                    buffer.write("\t".join(map(_copy_text, row)) + "\n")
                    if count % COPY_CHUNK == 0:
                        copy.write(buffer.getvalue())
                        buffer = io.StringIO()
                copy.write(buffer.getvalue())
        conn.commit()
        conn.autocommit = True
        conn.execute("ANALYZE")


def _sqlite_value(value):
    # As SQLAlchemy stores them: naive UTC text with microseconds, booleans as 0/1.
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")
    return int(value) if isinstance(value, bool) else value


def fill_sqlite(url: str, tables: list[tuple]) -> None:
    from sqlalchemy.engine import make_url

    with contextlib.closing(sqlite3.connect(make_url(url).database)) as conn:
        for table, columns, rows in tables:
            marks = ", ".join("?" * len(columns))
            conn.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})",
                             (tuple(map(_sqlite_value, row)) for row in rows))
        conn.commit()
        conn.execute("ANALYZE")


def fill(database: str, url: str, tables: list[tuple]) -> float:
    began = time.perf_counter()
    (fill_postgresql if database == "postgresql" else fill_sqlite)(url, tables)
    return round(time.perf_counter() - began, 1)


# -- one export, in a child process ----------------------------------------------------------------


def child(reader: str, url: str, out: str, batch_rows: int) -> dict:
    import psutil

    from catalog import Catalog
    from catalog.export import export

    catalog = Catalog(url)
    rss_before = psutil.Process().memory_info().rss
    # The export first waits for the next whole second; start just before one, so that
    # the wait (up to a second, whatever the size) does not blur the figures.
    time.sleep(max(0.0, 0.995 - time.time() % 1))
    start, cpu = time.perf_counter(), _cpu()
    report = export(catalog, out, datasets=("renditions",), batch_rows=batch_rows, reader=reader)
    wall, cpu = time.perf_counter() - start, _cpu() - cpu
    files = report["datasets"]["renditions"]["files"]
    return {"rows": report["datasets"]["renditions"]["rows"], "wall_s": wall, "cpu_s": cpu,
            "files": len(files),
            "bytes_written": sum((Path(out) / f).stat().st_size for f in files),
            "rss_before_mib": rss_before / MIB}


def _cpu() -> float:
    """This process's CPU seconds, all threads (the database server's are not in it)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


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


def run(reader: str, url: str, out: Path, batch_rows: int) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", reader, "--url", url,
               "--out", str(out), "--batch-rows", str(batch_rows)]
    began = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    sampler = Sampler(process.pid)
    stdout, _ = process.communicate()
    command_s = time.perf_counter() - began
    peak = sampler.stop()
    if process.returncode != 0:
        raise RuntimeError(f"{reader} failed with exit status {process.returncode}")
    result = json.loads(stdout)
    result.update(peak_rss_mib=round(peak, 1),
                  peak_above_start_mib=round(peak - result["rss_before_mib"], 1),
                  rows_per_s=round(result["rows"] / result["wall_s"]),
                  wall_s=round(result["wall_s"], 2), cpu_s=round(result["cpu_s"], 2),
                  command_s=round(command_s, 2),
                  rss_before_mib=round(result["rss_before_mib"], 1))
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


@contextlib.contextmanager
def catalogs(databases: Iterable[str], folder: Path) -> Iterator[dict[str, str]]:
    """A migrated, empty catalog URL per database."""
    from catalog import upgrade
    from tests.services.postgres import server_url

    with contextlib.ExitStack() as stack:
        urls = {}
        if "postgresql" in databases:
            urls["postgresql"] = stack.enter_context(bench_database(
                stack.enter_context(server_url())))
        if "sqlite" in databases:
            urls["sqlite"] = f"sqlite:///{folder / 'catalog.sqlite'}"
        for url in urls.values():
            upgrade(url)
        yield urls


def summarise(results: list[dict]) -> dict:
    summary = {key: statistics.median(r[key] for r in results) for key in (
        "rows_per_s", "wall_s", "cpu_s", "command_s", "peak_rss_mib", "peak_above_start_mib",
        "rss_before_mib", "bytes_written")}
    summary.update(rows=results[0]["rows"], files=results[0]["files"])
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="renditions (default 1,000,000)")
    parser.add_argument("--presets", type=int, default=4, help="renditions per asset (default 4)")
    parser.add_argument("--days", type=int, default=30, help="days the rows span (default 30)")
    parser.add_argument("--batch-rows", type=int, default=50_000, help="export batch (default 50,000)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--databases", default=",".join(DATABASES),
                        help="comma-separated: postgresql, sqlite (default both)")
    parser.add_argument("--increment", type=int, default=10_000,
                        help="new renditions for the incremental export (default 10,000; 0 skips)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--child", choices=READERS, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        json.dump(child(args.child, args.url, args.out, args.batch_rows), sys.stdout)
        return 0
    databases = [d for d in args.databases.split(",") if d]
    if set(databases) - set(DATABASES):
        parser.error(f"--databases: choose from {', '.join(DATABASES)}")

    import adbc_driver_postgresql
    import psycopg
    import pyarrow
    import sqlalchemy

    report: dict = {"info": {
        "cores": os.cpu_count(), "python": platform.python_version(),
        "pyarrow": pyarrow.__version__, "adbc_driver_postgresql": adbc_driver_postgresql.__version__,
        "psycopg": psycopg.__version__, "sqlalchemy": sqlalchemy.__version__,
        "sqlite": sqlite3.sqlite_version, "platform": platform.platform(),
        "batch_rows": args.batch_rows, "rows": args.rows, "rounds": args.rounds,
        # The machine may be shared: say how busy it was (1-minute load, before and after).
        "load_before": os.getloadavg()[0]},
        "fill_s": {}, "summary": {}, "runs": {}, "incremental": {}}
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp, \
            catalogs(databases, Path(tmp)) as urls:
        if "postgresql" in urls:
            with psycopg.connect(make_conninfo(urls["postgresql"])) as conn:
                report["info"]["postgresql"] = conn.execute("SHOW server_version").fetchone()[0]
        start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=args.days + 1)
        for database, url in urls.items():
            print(f"filling {database} with {args.rows:,} renditions", file=sys.stderr, flush=True)
            report["fill_s"][database] = fill(database, url, catalog_rows(
                args.rows, args.presets, args.days, start))
        runs = {d: {r: [] for r in READERS} for d in urls}
        for n in range(1, args.rounds + 1):
            for database, url in urls.items():
                for reader in READERS:
                    print(f"round {n}/{args.rounds}: {database} {reader}", file=sys.stderr,
                          flush=True)
                    runs[database][reader].append(
                        run(reader, url, Path(tmp) / f"{database}-{reader}-{n}", args.batch_rows))
        for database in urls:
            summary = {reader: summarise(runs[database][reader]) for reader in READERS}
            for key in ("rows_per_s", "cpu_s", "command_s", "peak_rss_mib", "peak_above_start_mib"):
                summary[f"ratio_{key}"] = round(summary["arrow"][key] / summary["rows"][key], 2)
            report["summary"][database] = summary
        report["runs"] = runs
        if args.increment:
            for database, url in urls.items():
                fill(database, url, increment_rows(args.increment, args.presets,
                                                   datetime.now(timezone.utc)))
                print(f"{database}: incremental export of {args.increment:,} new rows",
                      file=sys.stderr, flush=True)
                result = run("arrow", url, Path(tmp) / f"{database}-arrow-1", args.batch_rows)
                if result["rows"] != args.increment:
                    raise RuntimeError(f"the incremental export wrote {result['rows']} rows, "
                                       f"not {args.increment}")
                report["incremental"][database] = result
    report["info"]["load_after"] = os.getloadavg()[0]
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
    info = report["info"]
    print(f"{info['cores']} cores; PostgreSQL {info.get('postgresql', '-')}; SQLite "
          f"{info['sqlite']}; Python {info['python']}; pyarrow {info['pyarrow']}; "
          f"adbc-driver-postgresql {info['adbc_driver_postgresql']}")
    print(f"1-minute load average {info['load_before']:.1f} before, {info['load_after']:.1f} after")
    print(f"{info['rows']:,} renditions; filled in " + ", ".join(
        f"{d} {s} s" for d, s in report["fill_s"].items()))
    print(f"\n{'':<20}{'rows':>11}{'wall s':>9}{'rows/s':>10}{'CPU s':>8}{'command s':>11}"
          f"{'peak RSS MiB':>14}{'above start':>13}{'files':>7}{'MiB written':>13}")
    for database, summary in report["summary"].items():
        for reader in READERS:
            row = summary[reader]
            print(f"{database + ' ' + reader:<20}{row['rows']:>11,}{row['wall_s']:>9.2f}"
                  f"{row['rows_per_s']:>10,.0f}{row['cpu_s']:>8.2f}{row['command_s']:>11.2f}"
                  f"{row['peak_rss_mib']:>14.0f}"
                  f"{row['peak_above_start_mib']:>13.0f}{row['files']:>7}"
                  f"{row['bytes_written'] / MIB:>13.1f}")
        print(f"{database} arrow / rows: rows/s {summary['ratio_rows_per_s']}x, CPU "
              f"{summary['ratio_cpu_s']}x, command "
              f"{summary['ratio_command_s']}x, peak RSS {summary['ratio_peak_rss_mib']}x, peak "
              f"above start {summary['ratio_peak_above_start_mib']}x (medians of {info['rounds']})")
    for database, result in report["incremental"].items():
        print(f"{database} incremental: {result['rows']:,} new rows in {result['wall_s']} s, "
              f"{result['files']} new file(s), {result['bytes_written'] / MIB:.2f} MiB, "
              f"peak RSS {result['peak_rss_mib']:.0f} MiB")


if __name__ == "__main__":
    sys.exit(main())
