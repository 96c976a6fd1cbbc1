"""A poison file (bytes that crash the decoder) is quarantined; its neighbours all end ready.

Dask marks every task on a dying worker as suspicious, so a file that kills its
worker also fails, with ``KilledWorker``, whatever shared that worker (a whole
bulk partition). We cannot count on a real libvips crash bug, so the test injects
one: a worker plugin, registered by the test only, makes libvips' full decode
(``thumbnail_buffer``) kill its own worker process with SIGSEGV when the bytes carry
a marker, as a decoder crash would. Everything else is the farm's own LocalCluster.
"""

from __future__ import annotations

import os
import resource
import signal
import time
from pathlib import Path

import pytest
from distributed.diagnostics.plugin import WorkerPlugin
from sqlalchemy import func, select

from catalog.models import Rendition
from cluster.farm import Farm
from cluster.quarantine import QUARANTINED
from cluster.cli.samples import scene
from cluster.http.service import ApiConfig, FarmService
from cluster.storage.sources import expand
from pipelines.recipe import Preset, Recipe
from pipelines.upload.hashing import sha256_hex
from tests.conftest import make_settings

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

RECIPE = Recipe("poison", (Preset("thumb", 96, 96, fit="cover"), Preset("small", 200)))
ASSETS = 40
MARKER = b"MEDIAFARM-CHAOS-POISON"
POISON = "p020-poison.jpg"  # sorts among the others: it shares a bulk partition


class CrashingDecoder(WorkerPlugin):
    """Kills the worker process, as a segfaulting decoder does, on bytes carrying MARKER."""

    name = "chaos-crashing-decoder"

    def __init__(self, kills: str) -> None:
        self.kills = kills  # one line per worker killed, for the test to count

    def setup(self, worker) -> None:
        import pyvips

        decode, kills = pyvips.Image.thumbnail_buffer, self.kills

        def crashing(data, *args, **kwargs):
            if MARKER in bytes(data):
                with open(kills, "a") as log:
                    log.write(f"{os.getpid()} {time.time()}\n")
                resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file
                os.kill(os.getpid(), signal.SIGSEGV)
            return decode(data, *args, **kwargs)

        pyvips.Image.thumbnail_buffer = crashing


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for index in range(ASSETS):
        scene(400, 300, index).jpegsave(str(folder / f"p{index:03}.jpg"), Q=85)
    # A valid JPEG with the marker in a comment segment: it scans clean and validates.
    jpeg = scene(400, 300, 99).jpegsave_buffer(Q=85)
    comment = b"\xff\xfe" + (len(MARKER) + 2).to_bytes(2, "big") + MARKER
    (folder / POISON).write_bytes(jpeg[:2] + comment + jpeg[2:])
    return folder


def _kills(path: Path) -> list[float]:
    return [float(line.split()[1]) for line in path.read_text().splitlines()] if path.exists() else []


def _poisoned_farm(tmp_path: Path, catalog_url: str, clamd_url: str) -> tuple[Farm, Path]:
    farm = Farm(make_settings(tmp_path, catalog_url, clamd_url), n_workers=2)
    kills = tmp_path / "kills.log"
    farm.client.register_plugin(CrashingDecoder(str(kills)))
    return farm, kills


def _deaths_per_kill(farm: Farm) -> int:
    """How many worker deaths Dask allows a task before KilledWorker, plus one."""
    return farm.client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.allowed_failures) + 1


def _assert_outcome(farm: Farm, results: list[dict], photos: Path, kills: list[float],
                    expected_kills: int) -> None:
    """The poison is quarantined with its bytes kept; the others are ready, made once each."""
    by_name = {Path(r["source"]).name: r for r in results}
    poison = by_name.pop(POISON)
    assert len(by_name) == ASSETS
    assert {r["status"] for r in by_name.values()} == {"ready"}, \
        {n: (r["status"], r["reason"]) for n, r in by_name.items() if r["status"] != "ready"}
    assert poison["status"] == "failed" and poison["reason"] == QUARANTINED
    assert poison["retryable"] is False and poison["renditions"] == []
    assert len(kills) == expected_kills
    assert f"took down {len(kills)} Dask workers" in poison["message"]
    data = (photos / POISON).read_bytes()
    assert MARKER in data  # the source is untouched...
    digest = sha256_hex(data)
    assert farm.stores["quarantine"].exists(digest)  # ...and a copy is kept for inspection
    assert farm.stores["quarantine"].get(digest) == data
    assert digest in poison["message"]
    with farm.catalog.engine.connect() as conn:
        rows = conn.execute(select(func.count()).select_from(Rendition)).scalar_one()
        outputs = set(conn.execute(select(Rendition.output_sha256)).scalars())
    assert rows == ASSETS * len(RECIPE.presets)  # one row per rendition
    assert set(farm.stores["renditions"].digests()) == outputs  # one object per digest


def test_poison_file_is_quarantined_and_its_neighbours_keep_their_retries(tmp_path, pg_url,
                                                                          clamd, photos):
    farm, kill_log = _poisoned_farm(tmp_path, pg_url, clamd.url)
    with farm:
        started = time.time()
        results = farm.ingest([str(photos)], RECIPE).wait()
        ended = time.time()
        kills = _kills(kill_log)
        # The first try fails with KilledWorker, and so does the retry alone.
        _assert_outcome(farm, results, photos, kills, 2 * _deaths_per_kill(farm))
        print(f"\nper-asset: {len(kills)} workers killed, {ended - started:.1f}s for "
              f"{ASSETS + 1} assets, {ended - kills[0]:.1f}s from the first kill to the end")

        again = farm.ingest([str(photos)], RECIPE)  # quarantined stays out unless forced
        assert again.futures == {}
        assert {r["reason"] for r in again.wait()} == {None, QUARANTINED}
        assert len(_kills(kill_log)) == len(kills)


def test_poison_file_costs_its_bulk_partition_nothing(tmp_path, pg_url, clamd, photos):
    farm, kill_log = _poisoned_farm(tmp_path, pg_url, clamd.url)
    with farm:
        started = time.time()
        job = farm.backfill(str(photos), RECIPE, batch_size=10)
        ended = time.time()
        kills = _kills(kill_log)
        results = farm.results([r.asset_id for r in expand([str(photos)])])
        # Its partition, then its own single-asset partition, then its retry alone.
        _assert_outcome(farm, results, photos, kills, 3 * _deaths_per_kill(farm))
        assert job["status"] == "finished" and job["submitted"] == ASSETS + 1
        assert job["counts"] == {"ready": ASSETS, "failed": 1}
        assert job["assets"] == {"ready": ASSETS, "failed": 1}
        print(f"\nbulk: {len(kills)} workers killed, {ended - started:.1f}s for "
              f"{ASSETS + 1} assets, {ended - kills[0]:.1f}s from the first kill to the end")

        rerun = farm.backfill(str(photos), RECIPE, batch_size=10)
        assert rerun["submitted"] == 0 and rerun["skipped"] == ASSETS + 1
        assert len(_kills(kill_log)) == len(kills)



def test_poison_upload_is_quarantined_through_the_http_service(tmp_path, pg_url, clamd, photos):
    farm, kill_log = _poisoned_farm(tmp_path, pg_url, clamd.url)
    service = FarmService(farm, ApiConfig(max_upload_bytes=10_000_000), RECIPE)
    try:
        started = time.time()
        requests = expand([str(photos)])
        for pending in [service.enqueue(r) for r in requests]:
            pending.result(timeout=60)  # on the scheduler: the HTTP request would return here
        ids = [r.asset_id for r in requests]
        deadline = time.monotonic() + 240
        while any(a["status"] in ("queued", "processing")
                  for a in farm.catalog.assets(ids).values()):
            assert time.monotonic() < deadline, "assets never ended"
            time.sleep(0.5)
        ended = time.time()
        kills = _kills(kill_log)
        _assert_outcome(farm, farm.results(ids), photos, kills, 2 * _deaths_per_kill(farm))
        print(f"\nhttp: {len(kills)} workers killed, {ended - started:.1f}s for "
              f"{ASSETS + 1} assets, {ended - kills[0]:.1f}s from the first kill to the end")
    finally:
        service.close()
