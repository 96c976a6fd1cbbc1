"""Bulk backfills: what the bulk path itself costs per item, at a million items (issue 6).

The workload is deliberately cheap, *checksum verification of small objects*, so
that what is measured is the bulk path's own machinery (reading the Parquet
manifest, the catalog's ``queue`` upserts, Dask scheduling, the partitions'
batched catalog writes) and almost no media work:

- every manifest row names ``memory://bench/obj-NNNNNNN``; nothing is read from
  any store. ``read_object(uri)`` derives the object's 4 KiB from the URI
  (BLAKE2b-512 of the URI, repeated), ``expected_digest(uri)`` stands for the
  checksum its owner recorded (the SHA-256 of those clean bytes), and every
  1000th object (index ending in 999) comes back with one byte flipped, so that
  0.1% of the items fail verification;
- ``checksum_partition(items, recipe, settings)`` is the ``partition`` that
  ``Farm.backfill`` runs on each batch, shaped like ``cluster.bulk.run_partition``:
  ``Catalog.mark_processing_many`` for the batch, then per item read, SHA-256,
  compare, and through ``cluster.recorder.buffered`` one ``StageRecord``
  (stage ``verify``) plus the terminal status: for a match, the object's blob
  row and ``ready`` (which writes the asset's version), for a mismatch
  ``rejected`` / ``checksum_mismatch``; all of it in ONE ``Catalog.write_batch``
  call per partition. It returns ``{"ready": n, "rejected": m}``.

Part 1 (``--items``, default 1,000,000): writes the manifest with pyarrow (50,000
rows per row group), then times ``Farm(settings).backfill(manifest,
batch_size=--batch-size, partition=checksum_partition)`` on a fresh PostgreSQL
database. Reported: wall time and items/s; Dask tasks, counted by the scheduler
(a scheduler plugin counts the tasks that reached ``memory`` or ``erred``, per
key prefix, cross-checked with ``Scheduler.task_prefixes[...].state_counts``),
and the most tasks the scheduler held at once; peak RSS of the client, the
scheduler and each worker (a thread in the client samples every process's RSS
with psutil every 0.2 s; ``ru_maxrss`` from ``resource.getrusage`` in each
process as well); the rows in each catalog table afterwards and the tuples
PostgreSQL counted as inserted and updated (``pg_stat_user_tables``, read after
every pooled connection is closed so that the statistics are flushed).

By default the scheduler and the workers are separate processes (``dask
scheduler`` and ``dask worker --nworkers 2 --nthreads 1`` with nannies, on
loopback) and the farm joins them with ``Farm(settings, client=client)``, so the
client's and the scheduler's memory are measured apart. ``--local-cluster`` uses
``Farm(settings, n_workers=2)`` instead (the farm's own LocalCluster), whose
scheduler runs inside the client process: there the two RSS figures are one.

Part 2 (``--compare-items``, default 10,000; ``--rounds`` rounds, interleaved,
each on fresh databases): the per-item overhead of the bulk path against the
per-asset path on the same items and the same catalog rows.

- bulk: ``Farm.backfill`` with ``checksum_partition``, as in part 1;
- per-asset: what ``Farm.submit`` does, with the same cheap work cut into the
  seven stages of ``cluster.graph.plan_asset`` (keys and priority as
  ``submit_plan``): queue every asset with ``Catalog.queue``, then per asset
  seven chained ``client.submit`` calls on a ``cluster.tasks.Job``: ``scan``
  (mark processing, read the bytes), ``validate`` (size limit), ``hash``
  (SHA-256), ``resize`` (look up the expected digest), ``convert`` (compare),
  ``compress`` (stamp the end), ``record`` (write the same blob, ``verify``
  stage row and terminal status through ``cluster.recorder.current``, one
  transaction per call as the per-asset path writes); wait for the last
  futures with ``as_completed``.
- pure: the checksum loop alone (read, SHA-256, compare), in the client process.

``overhead_ms = (wall - pure) / items``, per path (wall from the first catalog
call until the last asset is recorded; cluster start-up and database creation
are not timed). The workers are two, so wall time already divides the work by
up to two: the figure is the cost per item as the caller sees it.

Targets (issue 6): bulk overhead < 1 ms per item; <= 5000 tasks for 1M items;
client memory < 1 GB. Nothing here asserts on timings; the script fails only
when an asset ends in the wrong state or a count does not add up.

Run from the repository root (needs PostgreSQL, as for the tests)::

    .venv/bin/python benchmarks/bench_bulk.py                     # 1M items, 3 x 10,000 compared
    .venv/bin/python benchmarks/bench_bulk.py --items 20000 --compare-items 2000 --rounds 1
    .venv/bin/python benchmarks/bench_bulk.py --json
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
if str(REPO) not in sys.path:  # tests.services.postgres, when run as a script
    sys.path.insert(0, str(REPO))

import psutil  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from distributed import Client, as_completed  # noqa: E402
from distributed.diagnostics.plugin import SchedulerPlugin  # noqa: E402
from distributed.utils import key_split  # noqa: E402

from catalog.repository import utcnow  # noqa: E402
from catalog.records import StageRecord
from cluster import recorder, runtime  # noqa: E402
from cluster.config import Settings, load_settings  # noqa: E402
from cluster.graph import INTERACTIVE_PRIORITY, STAGES, plan_asset  # noqa: E402
from cluster.manifest import read_manifest  # noqa: E402
from cluster.tasks import Job  # noqa: E402
from pipelines.recipe import DEFAULT_RECIPE, Recipe  # noqa: E402
from pipelines.vips import tool_versions  # noqa: E402

MIB = 1024 * 1024
PAYLOAD_BYTES = 4096
CORRUPT_EVERY = 1000
URI_PREFIX = "memory://bench/obj-"
MEDIA_TYPE = "application/octet-stream"
ROW_GROUP = 50_000
COUNTER_NAME = "bench-bulk-task-counter"
PARTITION_PREFIX = "checksum_partition"


# -- the cheap workload: checksum verification of small objects -------------------------------

def object_uri(index: int) -> str:
    return f"{URI_PREFIX}{index:07d}"


def _clean_bytes(uri: str) -> bytes:
    return hashlib.blake2b(uri.encode(), digest_size=64).digest() * (PAYLOAD_BYTES // 64)


def read_object(uri: str) -> bytes:
    """The object's bytes, derived from its URI; every 1000th object has one byte flipped."""
    data = _clean_bytes(uri)
    if int(uri.rsplit("-", 1)[1]) % CORRUPT_EVERY == CORRUPT_EVERY - 1:
        data = bytes([data[0] ^ 0xFF]) + data[1:]
    return data


def expected_digest(uri: str) -> str:
    """The checksum recorded for the object (a stand-in for a manifest's checksum column)."""
    return hashlib.sha256(_clean_bytes(uri)).hexdigest()


def verify(uri: str) -> tuple[int, str, str]:
    """The pure work of one item: read, hash, look up the expected digest."""
    data = read_object(uri)
    return len(data), hashlib.sha256(data).hexdigest(), expected_digest(uri)


def _record(writes: recorder.Recorder, asset_id: str, attempt: int, recipe_id: str, size: int,
            digest: str, expected: str, started, finished, worker: str) -> str:
    """One item's catalog writes: its ``verify`` stage row and its terminal status."""
    if digest == expected:
        writes.blob(digest, size, MEDIA_TYPE, "originals", None)
        writes.stage(StageRecord(asset_id, "verify", attempt, "ok", started, finished, worker,
                                 details={"bytes": size}))
        writes.ready(asset_id, attempt, digest, recipe_id, [], "renditions")
        return "ready"
    writes.stage(StageRecord(asset_id, "verify", attempt, "rejected", started, finished, worker,
                             reason="checksum_mismatch",
                             details={"expected": expected, "actual": digest}))
    writes.stop(asset_id, attempt, "rejected", "checksum_mismatch",
                f"the object's SHA-256 is {digest}, expected {expected}", False, None)
    return "rejected"


def checksum_partition(items: list, recipe: Recipe, settings: Settings) -> dict[str, int]:
    """A bulk partition of checksum checks, written like ``cluster.bulk.run_partition``."""
    catalog = runtime.catalog(settings)
    catalog.mark_processing_many({i.asset_id: i.attempt for i in items})
    worker = runtime.worker_name()
    counts: Counter = Counter()
    with recorder.buffered(catalog) as writes:
        for item in items:
            started = utcnow()
            size, digest, expected = verify(item.source_uri)
            counts[_record(writes, item.asset_id, item.attempt, recipe.id, size, digest,
                           expected, started, utcnow(), worker)] += 1
        writes.flush()  # the partition's one Catalog.write_batch call
    return dict(counts)


# -- the same work as the per-asset path's seven chained tasks --------------------------------

def chain_scan(job: Job) -> bytes:
    recorder.current(runtime.catalog(job.settings)).processing(job.asset_id, job.attempt)
    return read_object(job.source_uri)


def chain_validate(job: Job, data: bytes) -> bytes:
    if len(data) > job.settings.limits.max_bytes:
        raise ValueError("over the size limit")
    return data


def chain_hash(job: Job, data: bytes) -> tuple:
    started = utcnow()
    return len(data), hashlib.sha256(data).hexdigest(), started


def chain_resize(job: Job, carry: tuple) -> tuple:
    return (*carry, expected_digest(job.source_uri))


def chain_convert(job: Job, carry: tuple) -> tuple:
    return (*carry, carry[1] == carry[3])


def chain_compress(job: Job, carry: tuple) -> tuple:
    return (*carry, utcnow())


def chain_record(job: Job, carry: tuple) -> dict:
    size, digest, started, expected, _, finished = carry
    writes = recorder.current(runtime.catalog(job.settings))  # write-through, as per asset
    status = _record(writes, job.asset_id, job.attempt, job.recipe.id, size, digest, expected,
                     started, finished, runtime.worker_name())
    return {"asset_id": job.asset_id, "status": status}


CHAIN = dict(zip(STAGES, (chain_scan, chain_validate, chain_hash, chain_resize, chain_convert,
                          chain_compress, chain_record)))


def submit_chain(client: Client, job: Job, batch: str):
    """Like ``cluster.graph.submit_plan``: seven tasks, each consuming the one before."""
    futures: dict = {}
    plan = plan_asset(job.asset_id, job.attempt, batch)
    for call in plan:
        args = (job,) if call.after is None else (job, futures[call.after])
        futures[call.key] = client.submit(CHAIN[call.stage], *args, key=call.key,
                                          priority=INTERACTIVE_PRIORITY, pure=False)
    return futures[plan[-1].key]


# -- counting tasks and memory ----------------------------------------------------------------

class TaskCounter(SchedulerPlugin):
    """Counts, per key prefix, the tasks that finished; and the most tasks held at once."""

    name = COUNTER_NAME

    def __init__(self) -> None:
        self.finished: Counter = Counter()
        self.peak_held = 0
        self.prefix_base = 0
        self.scheduler = None

    async def start(self, scheduler) -> None:
        self.scheduler = scheduler

    def transition(self, key, start, finish, *args, **kwargs) -> None:
        if finish in ("memory", "erred"):
            self.finished[key_split(key)] += 1
        if self.scheduler is not None:
            held = len(self.scheduler.tasks)
            if held > self.peak_held:
                self.peak_held = held


def _counter_has(dask_scheduler=None) -> bool:
    return COUNTER_NAME in dask_scheduler.plugins


def _counter_reset(dask_scheduler=None) -> None:
    plugin = dask_scheduler.plugins[COUNTER_NAME]
    plugin.finished.clear()
    plugin.peak_held = len(dask_scheduler.tasks)
    plugin.prefix_base = _prefix_memory(dask_scheduler)


def _prefix_memory(dask_scheduler) -> int:
    """How many partition tasks ever reached memory, by the scheduler's own per-prefix count."""
    prefix = dask_scheduler.task_prefixes.get(PARTITION_PREFIX)
    return prefix.state_counts["memory"] if prefix is not None else 0


def _counter_read(dask_scheduler=None) -> dict:
    plugin = dask_scheduler.plugins[COUNTER_NAME]
    return {"finished": dict(plugin.finished), "peak_held": plugin.peak_held,
            "partition_prefix_memory": _prefix_memory(dask_scheduler) - plugin.prefix_base}


def _maxrss_mib(dask_scheduler=None) -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _dispose_catalog(url: str) -> None:
    """Close a worker's pooled catalog connections (PostgreSQL then flushes its statistics)."""
    from catalog.db import connect

    connect(url).dispose()


def counter_start(client: Client) -> None:
    if not client.run_on_scheduler(_counter_has):
        client.register_plugin(TaskCounter())
    client.run_on_scheduler(_counter_reset)


class RssSampler:
    """Samples the resident memory of named processes every ``interval`` seconds."""

    def __init__(self, pids: dict[str, int], interval: float = 0.2) -> None:
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.peak = {name: 0 for name in pids}
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            for name, proc in self.procs.items():
                with contextlib.suppress(psutil.Error):
                    self.peak[name] = max(self.peak[name], proc.memory_info().rss)
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def peak_mib(self) -> dict[str, float]:
        return {name: round(value / MIB, 1) for name, value in self.peak.items()}


# -- PostgreSQL, manifests, clusters ----------------------------------------------------------

def _admin_conninfo(base_url: str, database: str | None = None) -> str:
    from psycopg.conninfo import make_conninfo
    from sqlalchemy.engine import make_url

    url = make_url(base_url)
    return make_conninfo(host=url.host or "", port=url.port or 5432, user=url.username or "",
                         password=url.password or "", dbname=database or url.database or "postgres")


@contextlib.contextmanager
def bench_database(base_url: str) -> Iterator[str]:
    """A fresh database ``mediafarm_bench_<hex>`` (not yet migrated); dropped afterwards."""
    import psycopg
    from psycopg import sql
    from sqlalchemy.engine import make_url

    name = f"mediafarm_bench_{secrets.token_hex(6)}"
    admin = _admin_conninfo(base_url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_url(base_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                         " WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


def pg_tuples(base_url: str, url: str) -> dict[str, dict[str, int]]:
    """Tuples inserted and updated per table in the database at ``url``, from pg_stat."""
    import psycopg
    from sqlalchemy.engine import make_url

    with psycopg.connect(_admin_conninfo(base_url, make_url(url).database)) as conn:
        rows = conn.execute("SELECT relname, n_tup_ins, n_tup_upd FROM pg_stat_user_tables"
                            " ORDER BY relname").fetchall()
    return {name: {"inserted": ins, "updated": upd} for name, ins, upd in rows if ins or upd}


def write_manifest(path: Path, items: int) -> None:
    """A Parquet manifest of ``items`` source URIs, ROW_GROUP rows per row group."""
    schema = pa.schema([("source_uri", pa.string())])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, items, ROW_GROUP):
            uris = [object_uri(i) for i in range(start, min(items, start + ROW_GROUP))]
            writer.write_table(pa.table({"source_uri": uris}, schema=schema),
                               row_group_size=ROW_GROUP)


def expected_counts(items: int) -> dict[str, int]:
    rejected = sum(1 for i in range(items) if i % CORRUPT_EVERY == CORRUPT_EVERY - 1)
    return {k: v for k, v in {"ready": items - rejected, "rejected": rejected}.items() if v}


def pure_seconds(items: int) -> float:
    start = time.perf_counter()
    for i in range(items):
        size, digest, expected = verify(object_uri(i))
        _ = digest == expected
    return time.perf_counter() - start


@contextlib.contextmanager
def separate_cluster(workdir: Path, n_workers: int) -> Iterator[tuple[Client, int]]:
    """``dask scheduler`` and ``dask worker`` as subprocesses on loopback; yields (client, scheduler pid)."""
    dask = shutil.which("dask", path=str(Path(sys.executable).parent)) or "dask"
    path = os.pathsep.join(filter(None, [str(BENCH_DIR), str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "VIPS_CONCURRENCY": "1"}
    scheduler_file = workdir / "scheduler.json"
    log = open(workdir / "dask.log", "w")
    procs = [subprocess.Popen([dask, "scheduler", "--scheduler-file", str(scheduler_file),
                               "--host", "127.0.0.1", "--port", "0", "--no-dashboard"],
                              env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)]
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists():
            if time.monotonic() > deadline or procs[0].poll() is not None:
                raise RuntimeError(f"dask scheduler did not start; see {workdir / 'dask.log'}")
            time.sleep(0.1)
        procs.append(subprocess.Popen(
            [dask, "worker", "--scheduler-file", str(scheduler_file), "--nworkers", str(n_workers),
             "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1"],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO))
        with Client(scheduler_file=str(scheduler_file)) as client:
            client.wait_for_workers(n_workers, timeout=120)
            yield client, procs[0].pid
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


class Session:
    """Where measurements run: a separate cluster shared by all, or one LocalCluster each."""

    def __init__(self, base_url: str, workdir: Path, n_workers: int, local: bool) -> None:
        self.base_url, self.workdir, self.n_workers, self.local = base_url, workdir, n_workers, local
        self.client: Client | None = None
        self.scheduler_pid: int | None = None

    @contextlib.contextmanager
    def farm(self, stats: dict | None = None) -> Iterator[tuple]:
        """A fresh migrated database and a Farm on it; yields (farm, url, pids).

        With ``stats``, PostgreSQL's tuple counts for the database go into it once every
        pool is closed (backends flush their statistics when they exit).
        """
        from cluster.farm import Farm

        with bench_database(self.base_url) as url:
            settings = load_settings({"MEDIAFARM_CATALOG_URL": url,
                                      "MEDIAFARM_DATA_DIR": str(self.workdir / "data")})
            if self.local:
                os.environ["PYTHONPATH"] = os.pathsep.join(
                    filter(None, [str(BENCH_DIR), str(REPO), os.environ.get("PYTHONPATH")]))
                farm = Farm(settings, n_workers=self.n_workers)
            else:
                farm = Farm(settings, client=self.client)
            try:
                client = farm.client
                client.wait_for_workers(self.n_workers, timeout=120)
                counter_start(client)
                workers = client.run(os.getpid)
                pids = {"client": os.getpid(),
                        **{f"worker{n}": pid for n, pid in enumerate(workers.values(), 1)}}
                if not self.local:
                    pids["scheduler"] = self.scheduler_pid
                yield farm, url, pids
            finally:
                with contextlib.suppress(Exception):
                    farm.client.run(_dispose_catalog, url)
                farm.catalog.engine.dispose()
                farm.close()
            if stats is not None:
                time.sleep(1.0)
                stats.update(pg_tuples(self.base_url, url))


# -- the measurements -------------------------------------------------------------------------

def _progress(label: str):
    shown = [0.0]

    def report(done: int, total: int | None, counts: Counter) -> None:
        if total and done / total >= shown[0] + 0.1:
            shown[0] = done / total
            print(f"  {label}: {done}/{total} ({dict(counts)})", file=sys.stderr, flush=True)
    return report


def _wrong(counts: dict, items: int) -> bool:
    return {k: v for k, v in counts.items() if v} != expected_counts(items)


def run_bulk(session: Session, manifest: Path, items: int, batch_size: int,
             max_in_flight: int | None, detail: bool) -> dict:
    tuples: dict = {}
    with session.farm(tuples if detail else None) as (farm, url, pids):
        client = farm.client
        threads = sum(client.nthreads().values())
        rss_before = psutil.Process().memory_info().rss / MIB
        with RssSampler(pids) as sampler:
            start = time.perf_counter()
            status = farm.backfill(str(manifest), batch_size=batch_size,
                                   max_in_flight=max_in_flight, partition=checksum_partition,
                                   progress=_progress("bulk") if detail else None)
            wall = time.perf_counter() - start
        counted = client.run_on_scheduler(_counter_read)
        result = {"items": items, "batch_size": batch_size,
                  "max_in_flight": max_in_flight or 2 * max(1, threads),
                  "wall_s": round(wall, 3), "items_per_s": round(items / wall, 1),
                  "tasks": sum(counted["finished"].values()),
                  "tasks_by_prefix": counted["finished"],
                  "partition_tasks_scheduler_prefix": counted["partition_prefix_memory"],
                  "expected_partitions": -(-items // batch_size),
                  "scheduler_peak_tasks_held": counted["peak_held"],
                  "assets": status["assets"], "job_counts": status["counts"]}
        if _wrong(status["assets"], items):
            raise RuntimeError(f"bulk run ended {status['assets']}, expected {expected_counts(items)}")
        if detail:
            result["rss_peak_sampled_mib"] = sampler.peak_mib()
            result["client_rss_before_mib"] = round(rss_before, 1)
            result["client_ru_maxrss_mib"] = round(_maxrss_mib(), 1)
            result["workers_ru_maxrss_mib"] = [round(v, 1) for v in client.run(_maxrss_mib).values()]
            scheduler_rss = client.run_on_scheduler(_maxrss_mib)
            result["scheduler_ru_maxrss_mib"] = round(scheduler_rss, 1)
            result["scheduler_in_client_process"] = session.local
            result["catalog_rows"] = {k: v for k, v in farm.catalog.row_counts().items() if v}
    if detail:
        result["pg_tuples"] = tuples
        result["pg_tuples_written"] = sum(t["inserted"] + t["updated"] for t in tuples.values())
    return result


def run_per_asset(session: Session, manifest: Path, items: int) -> dict:
    with session.farm() as (farm, url, pids):
        client, catalog = farm.client, farm.catalog
        recipe = DEFAULT_RECIPE.with_tools(tool_versions())
        catalog.ensure_recipe(recipe.id, recipe.name, recipe.canonical())
        start = time.perf_counter()
        requests = [r for batch in read_manifest(str(manifest), catalog, 10_000)
                    for r in batch]
        previous = catalog.assets(r.asset_id for r in requests)
        attempts = catalog.queue(requests, recipe.id, previous)
        batch = uuid.uuid4().hex[:8]
        last = [submit_chain(client, Job(r.asset_id, attempts[r.asset_id], r.source_uri, recipe,
                                         farm.settings), batch) for r in requests]
        counts: Counter = Counter()
        for future in as_completed(last):
            counts[future.result()["status"]] += 1
        wall = time.perf_counter() - start
        counted = client.run_on_scheduler(_counter_read)
        found = Counter(a["status"] for a in catalog.assets(r.asset_id for r in requests).values())
        if _wrong(dict(found), items) or _wrong(dict(counts), items):
            raise RuntimeError(f"per-asset run ended {dict(found)}, expected {expected_counts(items)}")
        del last
    return {"items": items, "wall_s": round(wall, 3), "items_per_s": round(items / wall, 1),
            "tasks": sum(counted["finished"].values()), "scheduler_peak_tasks_held": counted["peak_held"],
            "assets": dict(found)}


def compare(session: Session, manifest: Path, items: int, batch_size: int,
            max_in_flight: int | None, rounds: int) -> dict:
    runs: dict[str, list] = {"bulk": [], "per_asset": [], "pure_s": []}
    for n in range(1, rounds + 1):
        print(f"compare round {n}/{rounds}: bulk", file=sys.stderr, flush=True)
        runs["bulk"].append(run_bulk(session, manifest, items, batch_size, max_in_flight, False))
        print(f"compare round {n}/{rounds}: per-asset", file=sys.stderr, flush=True)
        runs["per_asset"].append(run_per_asset(session, manifest, items))
        runs["pure_s"].append(pure_seconds(items))
    pure = statistics.median(runs["pure_s"])
    summary = {"items": items, "rounds": rounds, "pure_s": round(pure, 4),
               "pure_us_per_item": round(pure / items * 1e6, 2)}
    for path in ("bulk", "per_asset"):
        walls = [r["wall_s"] for r in runs[path]]
        overheads = [(w - p) / items * 1000 for w, p in zip(walls, runs["pure_s"])]
        summary[path] = {"wall_s": round(statistics.median(walls), 3),
                         "items_per_s": round(items / statistics.median(walls), 1),
                         "overhead_ms_per_item": round(statistics.median(overheads), 3),
                         "overhead_ms_per_item_rounds": [round(o, 3) for o in overheads],
                         "tasks": runs[path][0]["tasks"]}
    summary["per_asset_over_bulk_overhead"] = round(
        summary["per_asset"]["overhead_ms_per_item"] / summary["bulk"]["overhead_ms_per_item"], 1)
    summary["rounds_detail"] = runs
    return summary


# -- output -----------------------------------------------------------------------------------

def print_report(report: dict) -> None:
    info = report["info"]
    print(f"{info['cores']} cores; {info['workers']} workers x 1 thread; "
          f"{'LocalCluster (scheduler in the client process)' if info['local_cluster'] else 'separate dask scheduler and workers'}; "
          f"PostgreSQL {info['postgresql']}")
    bulk = report.get("bulk")
    if bulk:
        rss = bulk["rss_peak_sampled_mib"]
        print(f"\nbulk backfill of {bulk['items']:,} items, batch {bulk['batch_size']}, "
              f"max in flight {bulk['max_in_flight']}:")
        print(f"  wall {bulk['wall_s']:.1f} s, {bulk['items_per_s']:,.0f} items/s; "
              f"pure checksum loop {bulk['pure_s']:.1f} s; overhead {bulk['overhead_ms_per_item']:.3f} ms/item")
        print(f"  Dask tasks {bulk['tasks']:,} ({bulk['tasks_by_prefix']}); scheduler held at most "
              f"{bulk['scheduler_peak_tasks_held']}")
        print(f"  peak RSS MiB (sampled): {rss}; ru_maxrss client {bulk['client_ru_maxrss_mib']}, "
              f"scheduler {bulk['scheduler_ru_maxrss_mib']}, workers {bulk['workers_ru_maxrss_mib']}")
        print(f"  catalog rows: {bulk['catalog_rows']}")
        print(f"  PostgreSQL tuples written: {bulk['pg_tuples_written']:,} {bulk['pg_tuples']}")
        print(f"  assets: {bulk['assets']}")
    cmp_ = report.get("compare")
    if cmp_:
        print(f"\nper-item overhead on {cmp_['items']:,} items, median of {cmp_['rounds']} rounds "
              f"(pure checksum loop {cmp_['pure_us_per_item']} us/item):")
        print(f"{'path':<12}{'tasks':>9}{'wall s':>10}{'items/s':>10}{'overhead ms/item':>18}")
        for path in ("bulk", "per_asset"):
            row = cmp_[path]
            print(f"{path:<12}{row['tasks']:>9,}{row['wall_s']:>10.2f}{row['items_per_s']:>10,.0f}"
                  f"{row['overhead_ms_per_item']:>18.3f}")
        print(f"per-asset / bulk overhead: {cmp_['per_asset_over_bulk_overhead']}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000,
                        help="items in the big backfill (default 1,000,000; 0 skips it)")
    parser.add_argument("--compare-items", type=int, default=10_000,
                        help="items for the bulk vs per-asset comparison (default 10,000; 0 skips it)")
    parser.add_argument("--rounds", type=int, default=3, help="comparison rounds (default 3)")
    parser.add_argument("--batch-size", type=int, default=500, help="items per partition (default 500)")
    parser.add_argument("--max-in-flight", type=int, default=None,
                        help="partitions submitted at once (default: the farm's, 2 per worker thread)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--local-cluster", action="store_true",
                        help="use Farm(settings, n_workers=...)'s LocalCluster (scheduler in this process)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args(argv)
    if args.items < 0 or args.compare_items < 0 or args.rounds < 1 or args.batch_size < 1:
        parser.error("--items and --compare-items must be >= 0, --rounds and --batch-size >= 1")

    # Workers import this module by name, so functions travel by reference, as the farm's do.
    import bench_bulk
    from tests.services.postgres import server_url

    report: dict = {}
    with server_url() as base, tempfile.TemporaryDirectory(prefix="bench-bulk-") as tmp:
        workdir = Path(tmp)
        session = Session(base, workdir, args.workers, args.local_cluster)
        import psycopg
        with psycopg.connect(_admin_conninfo(base)) as conn:
            postgresql = conn.execute("SHOW server_version").fetchone()[0]
        report["info"] = {"cores": os.cpu_count(), "workers": args.workers,
                          "threads_per_worker": 1, "local_cluster": args.local_cluster,
                          "postgresql": postgresql, "python": platform.python_version(),
                          "platform": platform.platform(),
                          "payload_bytes": PAYLOAD_BYTES, "rejected_every": CORRUPT_EVERY}
        with contextlib.ExitStack() as stack:
            if not args.local_cluster:
                session.client, session.scheduler_pid = stack.enter_context(
                    separate_cluster(workdir, args.workers))
            if args.items:
                manifest = workdir / "manifest.parquet"
                start = time.perf_counter()
                write_manifest(manifest, args.items)
                report["manifest"] = {"rows": args.items, "row_group": ROW_GROUP,
                                      "bytes": manifest.stat().st_size,
                                      "write_s": round(time.perf_counter() - start, 2)}
                print(f"bulk backfill of {args.items} items", file=sys.stderr, flush=True)
                bulk = bench_bulk.run_bulk(session, manifest, args.items, args.batch_size,
                                           args.max_in_flight, detail=True)
                bulk["pure_s"] = round(pure_seconds(args.items), 3)
                bulk["overhead_ms_per_item"] = round(
                    (bulk["wall_s"] - bulk["pure_s"]) / args.items * 1000, 4)
                report["bulk"] = bulk
            if args.compare_items:
                manifest = workdir / "compare.parquet"
                write_manifest(manifest, args.compare_items)
                report["compare"] = bench_bulk.compare(session, manifest, args.compare_items,
                                                       args.batch_size, args.max_in_flight,
                                                       args.rounds)
    if args.json:
        json.dump(report, sys.stdout, indent=2, default=str)
        print()
    else:
        print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
