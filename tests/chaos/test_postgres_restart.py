"""PostgreSQL restarts in the middle of a batch: no lost results once it is back.

The catalog is on the suite's own throwaway server, which the test stops from a
progress callback once some assets are done and starts again a few seconds later
(the session's shared server is never touched). The catalog's writes wait the
outage out and retry whole transactions; every asset must end ``ready`` with
nothing missing and nothing doubled.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select

from catalog import upgrade
from catalog.models import Asset, AssetVersion, Rendition, StageRun
from catalog.retry import RetryStats
from cluster import runtime
from cluster.farm import Farm
from cluster.graph import STAGES
from cluster.cli.samples import scene
from pipelines.recipe import Preset, Recipe
from tests.conftest import make_settings
from tests.services.postgres import PostgresServer, scratch_database

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

RECIPE = Recipe("pg-restart", (Preset("thumb", 64, 64, fit="cover"), Preset("small", 160)))
ASSETS = 100
DOWNTIME_S = 3.0


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for index in range(ASSETS):
        image = scene(320, 240, index)
        if index % 4:
            image.jpegsave(str(folder / f"p{index:03}.jpg"), Q=80)
        else:
            image.pngsave(str(folder / f"p{index:03}.png"))
    return folder


class Outage:
    """Stops the server once ``after`` assets are done, and starts it ``DOWNTIME_S`` later.

    The stop is synchronous, so whatever the farm does next meets a server that is down.
    ``fast`` ends sessions cleanly; ``immediate`` is a crash, with recovery on start.
    """

    def __init__(self, server: PostgresServer, after: int, mode: str) -> None:
        self.server, self.after, self.mode = server, after, mode
        self.downtime_s: float | None = None
        self._thread: threading.Thread | None = None

    def __call__(self, done: int, _total, _counts) -> None:
        if done >= self.after and self._thread is None:
            began = time.monotonic()
            self.server.stop(self.mode)
            self._thread = threading.Thread(target=self._start_again, args=(began,))
            self._thread.start()

    def _start_again(self, began: float) -> None:
        time.sleep(DOWNTIME_S)
        self.server.start()
        self.downtime_s = time.monotonic() - began

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()


def _total(stats: list[RetryStats]) -> RetryStats:
    return RetryStats(retries=sum(s.retries for s in stats),
                      recovered=sum(s.recovered for s in stats),
                      gave_up=sum(s.gave_up for s in stats),
                      waited_s=sum(s.waited_s for s in stats),
                      longest_s=max(s.longest_s for s in stats))


def _retry_stats(farm: Farm) -> RetryStats:
    """The retries of the client's catalog and of every worker's, added up."""
    settings = farm.settings
    workers = farm.client.run(lambda: runtime.catalog(settings).retry.stats)
    return _total([farm.catalog.retry.stats, *workers.values()])


def _ingest(farm: Farm, photos: Path, outage: Outage | None) -> list[dict]:
    try:
        return farm.ingest([str(photos)], RECIPE).wait(progress=outage)
    finally:
        if outage:
            outage.join()


def _backfill(farm: Farm, photos: Path, outage: Outage | None) -> list[dict]:
    try:
        job = farm.backfill(str(photos), RECIPE, batch_size=10, progress=outage)
    finally:
        if outage:
            outage.join()
    assert job["status"] == "finished" and job["assets"] == {"ready": ASSETS}
    with farm.catalog.engine.connect() as conn:
        ids = list(conn.execute(select(Asset.id)).scalars())
    return farm.results(ids)


def _run(tmp_path: Path, name: str, url: str, dask_client, clamd, photos: Path, how,
         outage: Outage | None) -> tuple[list[dict], Farm, float]:
    farm = Farm(make_settings(tmp_path / name, url, clamd.url), client=dask_client)
    began = time.monotonic()
    results = how(farm, photos, outage)
    return results, farm, time.monotonic() - began


def _renditions(results: list[dict]) -> dict[tuple[str, str], str]:
    return {(Path(r["source"]).name, x["preset"]): x["sha256"]
            for r in results for x in r["renditions"]}


def _assert_nothing_lost_or_doubled(farm: Farm, results: list[dict]) -> None:
    presets = len(RECIPE.presets)
    assert len(results) == ASSETS
    assert Counter(r["status"] for r in results) == {"ready": ASSETS}
    assert all(len(r["renditions"]) == presets and r["version"] == 1 for r in results)
    with farm.catalog.engine.connect() as conn:
        per_asset = conn.execute(
            select(Asset.id, func.count(Rendition.preset))
            .join(Rendition, (Rendition.source_sha256 == Asset.sha256)
                  & (Rendition.recipe_id == Asset.recipe_id))
            .group_by(Asset.id)).all()
        renditions = conn.execute(select(func.count()).select_from(Rendition)).scalar_one()
        outputs = set(conn.execute(select(Rendition.output_sha256)).scalars())
        stages = conn.execute(select(StageRun.asset_id, StageRun.stage, StageRun.attempt,
                                     StageRun.status)).all()
        versions = conn.execute(select(AssetVersion.version)).scalars().all()
        assets = conn.execute(select(Asset.attempt, Asset.current_version)).all()
    assert len(per_asset) == ASSETS and {n for _, n in per_asset} == {presets}
    assert renditions == ASSETS * presets  # exactly one row per (asset, preset)
    # One stage row per asset and stage, all of the first attempt: nothing re-queued or doubled.
    assert len(stages) == ASSETS * len(STAGES)
    assert len({(a, s) for a, s, _, _ in stages}) == ASSETS * len(STAGES)
    assert {attempt for _, _, attempt, _ in stages} == {1}
    assert {status for *_, status in stages} <= {"ok", "skipped"}
    assert sorted(versions) == [1] * ASSETS
    assert set(assets) == {(1, 1)}
    assert set(farm.stores["renditions"].digests()) == outputs  # every object, none extra


@pytest.mark.parametrize(("how", "mode"), [(_ingest, "fast"), (_backfill, "immediate")],
                         ids=["ingest-fast-stop", "backfill-crash"])
def test_a_postgres_restart_mid_batch_loses_and_doubles_nothing(
        how, mode, tmp_path, restartable_pg, restartable_pg_url, dask_client, clamd, photos, request):
    with scratch_database(restartable_pg.url) as calm_url:  # same server, no restart
        upgrade(calm_url)
        calm, _, calm_s = _run(tmp_path, "calm", calm_url, dask_client, clamd, photos, how, None)
    outage = Outage(restartable_pg, after=ASSETS // 4, mode=mode)
    stormy, farm, stormy_s = _run(tmp_path, "stormy", restartable_pg_url, dask_client, clamd,
                                  photos, how, outage)

    assert outage.downtime_s is not None and outage.downtime_s >= DOWNTIME_S  # it did go down
    stats = _retry_stats(farm)
    assert stats.retries > 0 and stats.recovered > 0  # the batch met the outage...
    assert stats.gave_up == 0  # ...and waited it out
    _assert_nothing_lost_or_doubled(farm, stormy)
    assert _renditions(stormy) == _renditions(calm)  # byte-identical renditions
    print(f"\n{request.node.name}: {ASSETS} assets, server down {outage.downtime_s:.2f} s; "
          f"calm {calm_s:.1f} s, with restart {stormy_s:.1f} s; {stats.retries} retries, "
          f"{stats.recovered} calls recovered, longest wait {stats.longest_s:.2f} s, "
          f"total wait {stats.waited_s:.1f} s")
