"""Where a million-row export's time goes (issue 19): the database, the reader, the writer.

Catalogs are made and filled as ``bench_export.py`` makes them (``--rows`` renditions on
PostgreSQL and SQLite). Then, in this process, for the ``renditions`` dataset:

- *database*: on PostgreSQL, ``EXPLAIN (ANALYZE)`` of the export's query under the export's
  settings (``catalog.export_arrow.POSTGRES_SETTINGS``) and under the server's defaults; on
  SQLite, ``SELECT count(*)`` over the query (its joins, no rows out) and the standard
  library's cursor fetching every row as Python tuples;
- *export, one thread*: the Arrow-native reader and the partition writer in turn, without
  reading ahead, each timed on its own (wall and this process's CPU); the reader's time to
  its first batch is the database's work before the first row (the sort).

Run from the repository root (needs PostgreSQL, as for the tests)::

    .venv/bin/python benchmarks/profile_export.py                 # 1,000,000 renditions
    .venv/bin/python benchmarks/profile_export.py --rows 100000 --databases sqlite
"""

from __future__ import annotations

import argparse
import json
import resource
import sqlite3
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_export  # noqa: E402  (the catalogs and their rows)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def database_profile(url: str, sql: str) -> dict:
    if url.startswith("sqlite"):
        from sqlalchemy.engine import make_url

        with sqlite3.connect(make_url(url).database) as conn:
            began = time.perf_counter()
            conn.execute(f"SELECT count(*) FROM ({sql})").fetchone()
            count_s = time.perf_counter() - began
            began = time.perf_counter()
            cursor = conn.execute(sql)
            while cursor.fetchmany(50_000):
                pass
            return {"count_s": round(count_s, 2),
                    "fetch_tuples_s": round(time.perf_counter() - began, 2)}
    import psycopg

    from catalog.export_arrow import POSTGRES_SETTINGS

    result = {}
    with psycopg.connect(bench_export.make_conninfo(url)) as conn:
        for label, settings in (("server_defaults", {}), ("export_settings", POSTGRES_SETTINGS)):
            for setting, value in settings.items():
                conn.execute(f"SET LOCAL {setting} = '{value}'")
            plan = conn.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}").fetchone()[0][0]
            result[f"{label}_ms"] = round(plan["Execution Time"])
            conn.rollback()
    return result


def export_profile(url: str, out: str) -> dict:
    from catalog import Catalog
    from catalog.export import Destination, _PartitionedWriter
    from catalog.export_arrow import arrow_batches

    catalog = Catalog(url)
    writer = _PartitionedWriter(Destination.open(out), "renditions", "profile", 50_000)
    read = {"wall": 0.0, "cpu": 0.0}
    write = {"wall": 0.0, "cpu": 0.0}
    first, rows = None, 0
    began = time.perf_counter()
    batches = iter(arrow_batches(catalog, "renditions", None, datetime.now(timezone.utc), 50_000))
    while True:
        wall, cpu = time.perf_counter(), _cpu()
        batch = next(batches, None)
        read["wall"] += time.perf_counter() - wall
        read["cpu"] += _cpu() - cpu
        if first is None:
            first = time.perf_counter() - began
        if batch is None:
            break
        rows += batch.num_rows
        wall, cpu = time.perf_counter(), _cpu()
        writer.write(batch)
        write["wall"] += time.perf_counter() - wall
        write["cpu"] += _cpu() - cpu
    wall, cpu = time.perf_counter(), _cpu()
    writer.close()
    write["wall"] += time.perf_counter() - wall
    write["cpu"] += _cpu() - cpu
    return {"rows": rows, "first_batch_s": round(first, 2),
            "read_after_first_s": round(read["wall"] - first, 2),
            "read_cpu_s": round(read["cpu"], 2), "write_s": round(write["wall"], 2),
            "write_cpu_s": round(write["cpu"], 2),
            "total_s": round(time.perf_counter() - began, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--databases", default=",".join(bench_export.DATABASES))
    args = parser.parse_args(argv)
    from sqlalchemy.dialects import postgresql, sqlite

    from catalog import Catalog
    from catalog.export_datasets import changes_query

    report = {}
    databases = [d for d in args.databases.split(",") if d]
    with tempfile.TemporaryDirectory(prefix="profile-export-") as tmp, \
            bench_export.catalogs(databases, Path(tmp)) as urls:
        start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=31)
        for database, url in urls.items():
            print(f"filling {database} with {args.rows:,} renditions", file=sys.stderr, flush=True)
            bench_export.fill(database, url, bench_export.catalog_rows(args.rows, 4, 30, start))
            query = changes_query(Catalog(url), "renditions", None, datetime.now(timezone.utc))
            dialect = (postgresql.dialect(paramstyle="numeric_dollar") if database == "postgresql"
                       else sqlite.dialect())
            sql = str(query.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
            report[database] = {"database": database_profile(url, sql),
                                "export_one_thread": export_profile(url, f"{tmp}/{database}")}
            print(database, json.dumps(report[database]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
