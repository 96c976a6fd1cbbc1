"""Two ``mediafarm ingest`` processes on one folder at once: each asset is processed once.

The run that queues an asset claims it in the catalog (a holder and a lease);
the other run skips it and waits for it to end, so both report every asset
terminal and no stage runs twice.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest
from sqlalchemy import select

from catalog import Catalog
from catalog.models import Asset, StageRun
from cluster.farm import Farm
from cluster.cli.samples import scene
from cluster.storage.sources import expand
from pipelines.recipe import DEFAULT_RECIPE
from pipelines.vips import tool_versions
from tests.conftest import make_settings
from tests.integration.test_claims import _lapse

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

IMAGES = 12


@pytest.fixture
def folder(tmp_path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for index in range(IMAGES):
        scene(1600, 1200, index).jpegsave(str(folder / f"photo-{index:02}.jpg"), Q=88)
    return folder


def test_two_ingests_of_one_folder_at_once_process_every_asset_once(tmp_path, folder, pg_url,
                                                                    clamd):
    env = {**os.environ, "MEDIAFARM_DATA_DIR": str(tmp_path / "data"),
           "MEDIAFARM_CATALOG_URL": pg_url, "MEDIAFARM_CLAMD_URL": clamd.url}
    command = [sys.executable, "-m", "cluster.cli.main", "ingest", str(folder), "--json"]
    runs = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=900) for run in runs]

    for run, (stdout, stderr) in zip(runs, outputs):
        assert run.returncode == 0, stderr
        document = json.loads(stdout)
        statuses = {Path(a["source"]).name: a["status"] for a in document["assets"]}
        assert len(statuses) == IMAGES
        # Only terminal states, whichever run did the work: here, every photo ready.
        assert set(statuses.values()) == {"ready"}, statuses
        assert document["totals"] == {"ready": IMAGES}

    catalog = Catalog(pg_url)
    with catalog.engine.connect() as conn:
        attempts = dict(conn.execute(select(Asset.source_uri, Asset.attempt)).all())
        stages: dict[str, list[tuple[str, int]]] = defaultdict(list)
        for asset_id, stage, attempt in conn.execute(
                select(StageRun.asset_id, StageRun.stage, StageRun.attempt)):
            stages[asset_id].append((stage, attempt))
    assert len(attempts) == IMAGES and set(attempts.values()) == {1}, attempts
    assert len(stages) == IMAGES
    for runs_of_one in stages.values():
        # One row per stage, all of attempt 1: no stage of any asset ran twice.
        assert sorted(runs_of_one) == sorted((s, 1) for s, _ in runs_of_one)
        assert len({s for s, _ in runs_of_one}) == len(runs_of_one) == 7


@pytest.fixture
def farm(tmp_path, sqlite_url, clamd, dask_client):
    with Farm(make_settings(tmp_path / "data", sqlite_url, clamd.url), client=dask_client) as farm:
        yield farm


def _held_by_another_run(farm: Farm, folder: Path, count: int = 2) -> list:
    """Claim assets of the folder for a run that is not ``farm``, as it would when it starts."""
    recipe = DEFAULT_RECIPE.with_tools(tool_versions())
    farm.catalog.ensure_recipe(recipe.id, recipe.name, recipe.canonical())
    requests = expand([str(folder)], "default")[:count]
    claim = farm.catalog.claim(requests, recipe.id, "other-run", 3600, lambda row, r: True)
    assert set(claim.attempts) == {r.asset_id for r in requests}
    return requests


def _stage_attempts(farm: Farm, asset_ids: list[str]) -> set[int]:
    with farm.catalog.engine.connect() as conn:
        return set(conn.execute(select(StageRun.attempt).where(StageRun.asset_id.in_(asset_ids)))
                   .scalars())


def test_assets_another_run_holds_are_awaited_not_started_again(farm, folder):
    requests = _held_by_another_run(farm, folder)
    ids = [r.asset_id for r in requests]
    batch = farm.submit(requests)
    assert set(batch.held) == set(ids) and not batch.futures
    for asset_id in ids:  # the other run ends them
        farm.catalog.record_stop(asset_id, 1, "rejected", "corrupt", "not an image", False)
    results = batch.wait()
    assert [(r["status"], r["reason"]) for r in results] == [("rejected", "corrupt")] * 2
    assert _stage_attempts(farm, ids) == set()  # nothing ran here


def test_a_crashed_runs_assets_are_taken_over_once_its_claims_lapse(farm, folder):
    requests = _held_by_another_run(farm, folder)
    ids = [r.asset_id for r in requests]
    batch = farm.submit(requests)
    assert set(batch.held) == set(ids)
    _lapse(farm.catalog, "other-run")  # it crashed: nobody renews its claims
    results = batch.wait()
    assert [r["status"] for r in results] == ["ready", "ready"]
    rows = farm.catalog.assets(ids)
    assert {(rows[a]["attempt"], rows[a]["claim_holder"]) for a in ids} == {(2, None)}
    assert _stage_attempts(farm, ids) == {2}


def test_a_backfill_skips_assets_another_run_holds_and_counts_how_they_ended(farm, folder):
    held = [r.asset_id for r in _held_by_another_run(farm, folder, count=3)]
    job: dict = {}
    backfill = threading.Thread(target=lambda: job.update(
        farm.backfill(str(folder), job_id="claims-job", batch_size=4)))
    backfill.start()
    # Once the backfill has queued the rest, the other run ends its three.
    deadline = time.monotonic() + 600
    while farm.catalog.job_status("claims-job") is None or sum(
            farm.catalog.job_status("claims-job")["assets"].values()) < IMAGES - len(held):
        assert time.monotonic() < deadline and backfill.is_alive()
        time.sleep(0.5)
    for asset_id in held:
        farm.catalog.record_stop(asset_id, 1, "rejected", "corrupt", "not an image", False)
    backfill.join(timeout=600)
    assert job["status"] == "finished"
    assert job["counts"] == {"ready": IMAGES - len(held), "rejected": len(held)}
    assert job["submitted"] == IMAGES - len(held)
    assert _stage_attempts(farm, held) == set()  # the held assets never ran here
    rows = farm.catalog.assets(expand([str(folder)], "default")[i].asset_id
                               for i in range(IMAGES))
    assert {r["attempt"] for r in rows.values()} == {1}
