"""kill -9 a worker in the middle of a batch: nothing lost, nothing doubled, same bytes."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest
from distributed import Client, LocalCluster
from sqlalchemy import func, select

from catalog.models import Rendition
from cluster.farm import Farm
from cluster.cli.samples import scene
from pipelines.recipe import Preset, Recipe
from tests.conftest import make_settings

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

RECIPE = Recipe("chaos", (Preset("thumb", 96, 96, fit="cover"), Preset("small", 200)))
ASSETS = 200


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for index in range(ASSETS):
        scene(400, 300, index).jpegsave(str(folder / f"p{index:03}.jpg"), Q=85)
    return folder


def _renditions(results: list[dict]) -> dict[tuple[str, str], str]:
    return {(Path(r["source"]).name, x["preset"]): x["sha256"]
            for r in results for x in r["renditions"]}


def _run(tmp_path: Path, name: str, catalog_url: str, clamd_url: str, photos: Path,
         kill_after: int | None) -> tuple[list[dict], Farm]:
    settings = make_settings(tmp_path / name, catalog_url, clamd_url)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        farm = Farm(settings, client=client)
        killed = threading.Event()

        def kill_one_worker(done: int, total: int, counts) -> None:
            if kill_after is not None and done >= kill_after and not killed.is_set():
                killed.set()
                pid = next(iter(client.run(os.getpid).values()))
                os.kill(pid, signal.SIGKILL)  # no goodbye: the nanny starts a new one

        results = farm.ingest([str(photos)], RECIPE).wait(progress=kill_one_worker)
        assert kill_after is None or killed.is_set()
        return results, farm


def test_killing_a_worker_mid_batch_loses_and_doubles_nothing(tmp_path, sqlite_url, pg_url,
                                                              clamd, photos):
    calm, _ = _run(tmp_path, "calm", sqlite_url, clamd.url, photos, kill_after=None)
    stormy, farm = _run(tmp_path, "stormy", pg_url, clamd.url, photos, kill_after=ASSETS // 4)

    assert {r["status"] for r in stormy} == {"ready"}
    assert len(stormy) == ASSETS
    assert _renditions(stormy) == _renditions(calm)  # byte-identical renditions
    with farm.catalog.engine.connect() as conn:
        rows = conn.execute(select(func.count()).select_from(Rendition)).scalar_one()
        outputs = set(conn.execute(select(Rendition.output_sha256)).scalars())
    assert rows == ASSETS * len(RECIPE.presets)  # one row per rendition
    assert set(farm.stores["renditions"].digests()) == outputs  # one object per digest
