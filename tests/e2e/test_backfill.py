"""Bulk backfills end to end: a killed client resumes, interactive work jumps the queue,
jobs are visible from the CLI, manifests of every kind, and batched catalog writes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import func, select

from catalog import Catalog
from catalog.models import Asset, AssetVersion, Job, Rendition, StageRun
from cluster.storage import sources
from cluster.farm import Farm
from cluster.graph import STAGES
from cluster.cli.samples import scene
from cluster.storage.stores import open_stores
from pipelines.recipe import Preset, Recipe
from pipelines.vips import tool_versions
from tests.conftest import make_settings

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

RECIPE = Recipe("small", (Preset("thumb", 64, 64, fit="cover"), Preset("small", 160)))
RECIPE_YAML = """\
name: small
presets:
  - {name: thumb, width: 64, height: 64, fit: cover}
  - {name: small, width: 160}
"""
PRESETS = len(RECIPE.presets)


# -- helpers ---------------------------------------------------------------------------------

def _images(folder: Path, count: int, start: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(start, start + count):
        path = folder / f"img-{index:03}.jpg"
        scene(320, 240, index).jpegsave(str(path), Q=80)
        paths.append(path)
    return paths


def _parquet(path: Path, columns: dict[str, list]) -> Path:
    pq.write_table(pa.table(columns), str(path))
    return path


def _uris(paths: list[Path]) -> list[str]:
    return [p.as_uri() for p in paths]


def _statuses(catalog: Catalog) -> Counter:
    with catalog.engine.connect() as conn:
        return Counter(dict(conn.execute(select(Asset.status, func.count())
                                         .group_by(Asset.status)).all()))


def _assets(catalog: Catalog) -> dict[str, dict]:
    with catalog.engine.connect() as conn:
        return {row.id: dict(row._mapping) for row in conn.execute(select(Asset.__table__))}


def _stage_runs(catalog: Catalog) -> list[dict]:
    with catalog.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(StageRun.__table__))]


def _wait_for(condition, timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def _workers_idle(client) -> bool:
    """Nothing processing on the scheduler and nothing executing on any worker thread
    (tasks of a vanished client finish on the worker after the scheduler forgot them)."""
    if any(client.processing().values()):
        return False
    executing = client.run(lambda dask_worker: dask_worker.state.executing_count)
    return not any(executing.values())


def _dead_clamd_url() -> str:
    """A loopback port nothing listens on: connections are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"tcp://127.0.0.1:{port}"


def _cli_env(tmp_path: Path, catalog_url: str, clamd_url: str) -> dict[str, str]:
    env = {**os.environ, "MEDIAFARM_DATA_DIR": str(tmp_path / "data"),
           "MEDIAFARM_CLAMD_URL": clamd_url, "MEDIAFARM_CATALOG_URL": catalog_url}
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    env.pop("MEDIAFARM_CONFIG", None)
    return env


def _mediafarm(args: list[str], env: dict[str, str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cluster.cli.main", *args], env=env,
                          capture_output=True, text=True, timeout=240, **kwargs)


# -- 1. kill the client mid-backfill, re-run: every asset processed exactly once -------------

def test_killed_backfill_resumes_and_processes_every_asset_exactly_once(
        tmp_path, pg_url, clamd, dask_client):
    total = 120
    paths = _images(tmp_path / "images", total)
    manifest = _parquet(tmp_path / "manifest.parquet", {"source_uri": _uris(paths)})
    recipe_file = tmp_path / "small.yml"
    recipe_file.write_text(RECIPE_YAML)
    env = _cli_env(tmp_path, pg_url, clamd.url)
    job_id = "resume-" + uuid.uuid4().hex[:12]
    command = [sys.executable, "-m", "cluster.cli.main", "backfill", str(manifest),
               "--scheduler", dask_client.scheduler.address, "--recipe", str(recipe_file),
               "--batch-size", "10", "--max-in-flight", "2", "--job-id", job_id, "--json"]
    catalog = Catalog(pg_url)

    with open(tmp_path / "first.stderr", "w") as stderr:
        first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=stderr)
        try:
            _wait_for(lambda: _statuses(catalog)["ready"] >= 20 or first.poll() is not None,
                      timeout=120, what="20 assets ready in the first run")
            ready_at_kill = _statuses(catalog)["ready"]
            assert first.poll() is None, (
                f"the first run ended (rc {first.returncode}) before it could be killed: "
                + (tmp_path / "first.stderr").read_text())
            first.kill()  # SIGKILL: no clean-up, no job update
            first.wait(timeout=30)
        finally:
            if first.poll() is None:
                first.kill()
                first.wait()
    assert first.returncode == -9
    assert 20 <= ready_at_kill < total
    unfinished = _statuses(catalog)
    assert unfinished["ready"] < total
    assert catalog.job_status(job_id)["status"] == "running"  # the killed run never finished it

    second = _mediafarm(command[3:], env)
    assert second.returncode == 0, second.stderr
    job = json.loads(second.stdout)
    # Stray partitions of the killed client may still be finishing: let them, then look.
    _wait_for(lambda: _workers_idle(dask_client), timeout=60, what="the workers to go idle",
              interval=0.25)

    assert job["id"] == job_id and job["status"] == "finished"
    assert job["skipped"] >= ready_at_kill > 0  # what was ready was not submitted again
    assert job["submitted"] + job["skipped"] == total
    assert job["submitted"] < total
    assert job["counts"] == {"ready": job["submitted"]}
    assert job["assets"] == {"ready": total}

    assets = _assets(catalog)
    assert len(assets) == total
    assert {a["source_uri"] for a in assets.values()} == set(_uris(paths))
    assert {a["status"] for a in assets.values()} == {"ready"}
    recipe_id = RECIPE.with_tools(tool_versions()).id
    assert {a["recipe_id"] for a in assets.values()} == {recipe_id}

    with catalog.engine.connect() as conn:
        renditions = conn.execute(select(Rendition.source_sha256, Rendition.recipe_id,
                                         Rendition.preset, Rendition.output_sha256)).all()
        versions = conn.execute(select(AssetVersion.asset_id, func.count())
                                .group_by(AssetVersion.asset_id)).all()
    sources_ = {a["sha256"] for a in assets.values()}
    assert len(sources_) == total  # every image is distinct bytes
    assert len(renditions) == total * PRESETS
    assert len({(r.source_sha256, r.preset) for r in renditions}) == total * PRESETS
    assert {r.source_sha256 for r in renditions} == sources_
    assert {r.recipe_id for r in renditions} == {recipe_id}
    assert dict(versions) == {asset_id: 1 for asset_id in assets}
    assert all(a["current_version"] == 1 for a in assets.values())

    stores = open_stores(make_settings(tmp_path / "data", pg_url, clamd.url))
    outputs = {r.output_sha256 for r in renditions}
    stored = stores["renditions"].digests()
    assert len(stored) == len(set(stored))
    assert set(stored) == outputs  # one object per digest: none missing, none extra
    assert set(stores["originals"].digests()) == sources_

    # Each asset's final attempt ran all seven stages once; an asset whose killed partition
    # finished on its worker after the kill has its renditions reused, not made again.
    runs = defaultdict(list)
    for run in _stage_runs(catalog):
        runs[(run["asset_id"], run["attempt"])].append(run)
    for asset_id, asset in assets.items():
        final = {r["stage"]: r["status"] for r in runs[(asset_id, asset["attempt"])]}
        assert sorted(final) == sorted(STAGES), asset_id
        assert set(final.values()) <= {"ok", "skipped"}, (asset_id, final)
        assert [final[s] for s in ("scan", "validate", "hash", "record")] == ["ok"] * 4


# -- 2. interactive work overtakes a queued backfill -----------------------------------------

def test_interactive_ingest_finishes_while_a_large_backfill_is_running(
        tmp_path, pg_url, clamd, dask_client):
    total, batch = 150, 3
    paths = _images(tmp_path / "bulk", total)
    manifest = _parquet(tmp_path / "bulk.parquet", {"source_uri": _uris(paths)})
    # Several uploads, not one: Dask sends a task group as small as one upload straight to a
    # worker whatever its priority; a larger one waits in the scheduler's queue with the
    # partitions, where only its priority can put it first.
    uploads = _images(tmp_path / "upload", 6, start=500)
    outcome: dict = {}

    with Farm(make_settings(tmp_path / "data", pg_url, clamd.url), client=dask_client) as farm:
        def backfill() -> None:
            try:
                # Every partition is submitted at once: all but two wait in the queue.
                outcome["job"] = farm.backfill(str(manifest), RECIPE, batch_size=batch,
                                               max_in_flight=total // batch)
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                outcome["error"] = exc
            finally:
                outcome["finished"] = time.monotonic()

        thread = threading.Thread(target=backfill, daemon=True)
        thread.start()
        try:
            _wait_for(lambda: _statuses(farm.catalog)["ready"] >= batch or not thread.is_alive(),
                      timeout=120, what="the first partition to finish")
            assert thread.is_alive(), f"the backfill ended before the ingest began: {outcome}"
            ready_before = _statuses(farm.catalog)["ready"]
            started = time.monotonic()
            results = farm.ingest([str(p) for p in uploads], RECIPE).wait()
            returned = time.monotonic()
            interactive = {r["source"] for r in results}
            backfill_ready_then = sum(
                1 for a in _assets(farm.catalog).values()
                if a["status"] == "ready" and a["source_uri"] not in interactive)
            backfill_alive_then = thread.is_alive()
        finally:
            thread.join(timeout=240)
        assert not thread.is_alive(), "the backfill did not finish"

    assert "error" not in outcome, outcome.get("error")
    assert [r["status"] for r in results] == ["ready"] * len(uploads), results
    for result in results:
        assert sorted(r["preset"] for r in result["renditions"]) == ["small", "thumb"]
    assert backfill_alive_then and returned < outcome["finished"]
    # Queued partitions did not go first: while the uploads ran, only a few partitions ended
    # (those already on a worker, each stage waiting for the one running there at most).
    assert backfill_ready_then - ready_before <= total // 2, (
        f"the ingest waited {returned - started:.1f}s while {backfill_ready_then - ready_before} "
        f"of {total} backfill assets were done")
    job = outcome["job"]
    assert job["status"] == "finished" and job["counts"] == {"ready": total}


# -- 3. mediafarm status --job ---------------------------------------------------------------

def test_status_command_reports_a_job_from_the_catalog(tmp_path, pg_url, clamd, dask_client):
    paths = _images(tmp_path / "images", 6)
    manifest = _parquet(tmp_path / "m.parquet", {"source_uri": _uris(paths)})
    job_id = "status-" + uuid.uuid4().hex[:8]
    with Farm(make_settings(tmp_path / "data", pg_url, clamd.url), client=dask_client) as farm:
        job = farm.backfill(str(manifest), RECIPE, batch_size=3, job_id=job_id)
    assert job["status"] == "finished"
    env = _cli_env(tmp_path, pg_url, clamd.url)

    text = _mediafarm(["status", "--job", job_id], env)
    assert text.returncode == 0, text.stderr
    assert job_id in text.stdout
    assert "finished" in text.stdout
    assert "submitted 6" in text.stdout and "skipped 0" in text.stdout
    assert "ready=6" in text.stdout

    as_json = _mediafarm(["status", "--job", job_id, "--json"], env)
    assert as_json.returncode == 0, as_json.stderr
    document = json.loads(as_json.stdout)
    assert document["id"] == job_id and document["kind"] == "backfill"
    assert document["status"] == "finished"
    assert (document["submitted"], document["skipped"]) == (6, 0)
    assert document["counts"] == {"ready": 6}
    assert document["assets"] == {"ready": 6}
    assert document["manifest"] == str(manifest)

    unknown = _mediafarm(["status", "--job", "no-such-job"], env)
    assert unknown.returncode == 2
    assert "no job no-such-job" in unknown.stderr
    assert unknown.stdout == ""


# -- 4. manifests ----------------------------------------------------------------------------

def test_parquet_manifest_asset_id_and_owner_columns_are_used(tmp_path, pg_url, clamd,
                                                               dask_client):
    paths = _images(tmp_path / "images", 6)
    uris = _uris(paths)
    ids = [str(uuid.uuid4()) for _ in range(4)]
    owners = ["alice", "bob", "alice", "bob"]
    explicit = _parquet(tmp_path / "explicit.parquet",
                        {"source_uri": uris[:4], "asset_id": ids, "owner": owners})
    plain = _parquet(tmp_path / "plain.parquet", {"source_uri": uris[4:]})
    with Farm(make_settings(tmp_path / "data", pg_url, clamd.url), client=dask_client) as farm:
        first = farm.backfill(str(explicit), RECIPE, batch_size=3)
        second = farm.backfill(str(plain), RECIPE, batch_size=3, owner="carol")
        assets = _assets(farm.catalog)

    assert first["counts"] == {"ready": 4} and first["submitted"] == 4
    assert second["counts"] == {"ready": 2} and second["submitted"] == 2
    expected = {asset_id: (owner, uri) for asset_id, owner, uri in zip(ids, owners, uris)}
    expected.update({sources.asset_id("carol", uri): ("carol", uri) for uri in uris[4:]})
    assert {a["id"]: (a["owner"], a["source_uri"]) for a in assets.values()} == expected
    assert {a["status"] for a in assets.values()} == {"ready"}
    assert {a["job_id"] for a in assets.values() if a["id"] in ids} == {first["id"]}


def test_catalog_manifest_reruns_only_failed_assets(tmp_path, pg_url, clamd, dask_client):
    paths = _images(tmp_path / "images", 8)
    uris = _uris(paths)
    good = _parquet(tmp_path / "good.parquet", {"source_uri": uris[:4]})
    outage = _parquet(tmp_path / "outage.parquet", {"source_uri": uris[4:]})
    ok_ids = {sources.asset_id("default", u) for u in uris[:4]}
    failed_ids = {sources.asset_id("default", u) for u in uris[4:]}
    data_dir = tmp_path / "data"

    with Farm(make_settings(data_dir, pg_url, clamd.url), client=dask_client) as farm:
        assert farm.backfill(str(good), RECIPE, batch_size=2)["counts"] == {"ready": 4}
    with Farm(make_settings(data_dir, pg_url, _dead_clamd_url()), client=dask_client) as farm:
        down = farm.backfill(str(outage), RECIPE, batch_size=2)
        assets = _assets(farm.catalog)
    assert down["counts"] == {"failed": 4}
    for asset_id in failed_ids:
        asset = assets[asset_id]
        assert (asset["status"], asset["reason"], asset["retryable"]) == (
            "failed", "scanner_unavailable", True)
        assert asset["attempt"] == 1

    with Farm(make_settings(data_dir, pg_url, clamd.url), client=dask_client) as farm:
        retry = farm.backfill("catalog:status=failed", RECIPE, batch_size=3)
        everything = farm.backfill("catalog:owner=default", RECIPE, batch_size=3)
        assets = _assets(farm.catalog)
        runs = _stage_runs(farm.catalog)

    assert retry["status"] == "finished"
    assert (retry["submitted"], retry["skipped"]) == (4, 0)
    assert retry["counts"] == {"ready": 4} and retry["assets"] == {"ready": 4}
    assert (everything["submitted"], everything["skipped"]) == (0, 8)
    assert {a["status"] for a in assets.values()} == {"ready"}
    assert {a["id"]: a["attempt"] for a in assets.values()} == {
        **{i: 1 for i in ok_ids}, **{i: 2 for i in failed_ids}}
    # The ready ones were never resubmitted: only their first attempt ever ran.
    assert {r["attempt"] for r in runs if r["asset_id"] in ok_ids} == {1}
    scans = {(r["asset_id"], r["attempt"]): (r["status"], r["reason"])
             for r in runs if r["stage"] == "scan" and r["asset_id"] in failed_ids}
    assert scans == {**{(i, 1): ("failed", "scanner_unavailable") for i in failed_ids},
                     **{(i, 2): ("ok", None) for i in failed_ids}}


def test_folder_and_glob_manifests(tmp_path, sqlite_url, clamd, dask_client):
    folder = tmp_path / "images"
    paths = _images(folder, 5)
    (folder / ".hidden.jpg").write_bytes(paths[0].read_bytes())  # skipped, like ingest
    expected = {sources.asset_id("default", p.as_uri()) for p in paths}
    with Farm(make_settings(tmp_path / "data", sqlite_url, clamd.url), client=dask_client) as farm:
        job = farm.backfill(str(folder), RECIPE, batch_size=2)
        again = farm.backfill(str(folder / "img-*.jpg"), RECIPE, batch_size=2)
        assets = _assets(farm.catalog)
    assert job["status"] == "finished"
    assert (job["submitted"], job["skipped"], job["counts"]) == (5, 0, {"ready": 5})
    assert set(assets) == expected
    assert {a["status"] for a in assets.values()} == {"ready"}
    # The glob names the same files: the same assets, all done already.
    assert (again["submitted"], again["skipped"]) == (0, 5)
    assert set(_assets(Catalog(sqlite_url))) == expected


def test_glob_manifest_skips_hidden_files_like_a_folder(tmp_path, sqlite_url, clamd, dask_client):
    folder = tmp_path / "images"
    paths = _images(folder, 2)
    (folder / ".hidden.jpg").write_bytes(paths[0].read_bytes())  # e.g. an editor's or OS's copy
    expected = {sources.asset_id("default", p.as_uri()) for p in paths}
    with Farm(make_settings(tmp_path / "data", sqlite_url, clamd.url), client=dask_client) as farm:
        job = farm.backfill(str(folder / "*.jpg"), RECIPE, batch_size=2)
        assets = _assets(farm.catalog)
    # A shell's * skips dot-files, and a folder manifest skips them: a glob should too.
    assert set(assets) == expected, sorted(a["source_uri"] for a in assets.values())
    assert (job["submitted"], job["counts"]) == (2, {"ready": 2})


def test_parquet_without_source_uri_is_a_clear_error(tmp_path, sqlite_url, clamd, dask_client):
    manifest = _parquet(tmp_path / "wrong.parquet", {"path": ["file:///nowhere/a.jpg"]})
    with Farm(make_settings(tmp_path / "data", sqlite_url, clamd.url), client=dask_client) as farm:
        with pytest.raises(ValueError, match="source_uri") as error:
            farm.backfill(str(manifest), RECIPE, batch_size=2)
        assert str(manifest) in str(error.value)
        assert _assets(farm.catalog) == {}


# -- 5. fused stages, batched writes ---------------------------------------------------------

def test_bulk_partitions_run_every_stage_and_write_in_one_transaction_each(
        tmp_path, pg_url, clamd, dask_client):
    paths = _images(tmp_path / "images", 30)
    manifest = _parquet(tmp_path / "m.parquet", {"source_uri": _uris(paths)})
    with Farm(make_settings(tmp_path / "data", pg_url, clamd.url), client=dask_client) as farm:
        job = farm.backfill(str(manifest), RECIPE, batch_size=10)
        runs = _stage_runs(farm.catalog)
        assets = _assets(farm.catalog)
        with farm.catalog.engine.connect() as conn:
            row = conn.execute(select(Job.__table__).where(Job.id == job["id"])).one()
            written = conn.execute(select(Rendition.created_at, func.count())
                                   .group_by(Rendition.created_at)).all()

    assert len(assets) == 30 and {a["status"] for a in assets.values()} == {"ready"}
    by_asset = defaultdict(list)
    for run in runs:
        by_asset[run["asset_id"]].append(run)
    assert set(by_asset) == set(assets)
    for asset_id, asset_runs in by_asset.items():
        assert len(asset_runs) == 7, asset_id
        assert sorted(r["stage"] for r in asset_runs) == sorted(STAGES)
        assert {(r["status"], r["attempt"]) for r in asset_runs} == {("ok", 1)}
    assert (row.status, row.counts, row.submitted, row.skipped) == ("finished", {"ready": 30}, 30, 0)
    # PostgreSQL's now() is the transaction's start: each partition's renditions were
    # written in one transaction, so three partitions give three timestamps of 20 rows.
    assert sorted(n for _, n in written) == [10 * PRESETS] * 3
