"""kill -9 the Dask scheduler mid-backfill: the run fails at once with a clear error, and
running it again on a new scheduler finishes it with nothing lost or duplicated.

The cluster is started by command, as in production: ``dask scheduler`` on a fixed
loopback port and two ``mediafarm worker`` processes. The catalog, not Dask, says
what is done, so the re-run redoes only what the first run did not finish.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from distributed import Client
from sqlalchemy import func, select

from catalog.models import Asset, Rendition
from cluster.bulk import ClusterLost
from cluster.farm import Farm
from cluster.cli.samples import scene
from pipelines.recipe import Preset, Recipe
from tests.conftest import make_settings

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

RECIPE = Recipe("restart", (Preset("thumb", 96, 96, fit="cover"), Preset("small", 200)))
ASSETS = 200
BATCH = 10
KILL_AFTER = ASSETS // 3


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    uris = []
    for index in range(ASSETS):
        path = folder / f"p{index:03}.jpg"
        scene(320, 240, index).jpegsave(str(path), Q=85)
        uris.append(path.as_uri())
    manifest = folder / "manifest.parquet"
    pq.write_table(pa.table({"source_uri": uris}), manifest, row_group_size=50)
    return manifest


class CommandCluster:
    """``dask scheduler`` and two ``mediafarm worker`` processes on one loopback port."""

    def __init__(self, logs: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.logs = logs
        self.scheduler: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []
        self.started = 0

    def start(self) -> Client:
        self.started += 1
        self.scheduler = self._spawn("scheduler", [
            "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port",
            str(self.port), "--dashboard-address", ":0"])
        self.workers = [self._spawn(name, ["-m", "cluster.cli.main", "worker", self.address,
                                           "--nworkers", "1", "--name", name])
                        for name in ("alpha", "beta")]
        client = Client(self.address, timeout=60)
        client.wait_for_workers(2, timeout=120)
        return client

    def kill_scheduler(self) -> None:
        os.kill(self.scheduler.pid, signal.SIGKILL)  # no goodbye to anyone

    def wait_for_workers_to_leave(self, timeout: float) -> float:
        """Workers close themselves once their scheduler is gone; returns how long that took."""
        started = time.monotonic()
        for worker in self.workers:
            worker.wait(timeout=max(1.0, timeout - (time.monotonic() - started)))
        return time.monotonic() - started

    def stop(self) -> None:
        processes = [p for p in [*self.workers, self.scheduler] if p is not None]
        for process in processes:
            if process.poll() is None:
                process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def _spawn(self, name: str, arguments: list[str]) -> subprocess.Popen:
        log = open(self.logs / f"{name}-{self.started}.log", "wb")  # noqa: SIM115 - kept by Popen
        return subprocess.Popen([sys.executable, *arguments], stdout=log, stderr=log,
                                env={**os.environ, "VIPS_CONCURRENCY": "1"})


def _renditions(farm: Farm) -> dict[tuple[str, str], str]:
    return {(Path(r["source"]).name, x["preset"]): x["sha256"]
            for r in farm.results(_asset_ids(farm)) for x in r["renditions"]}


def _asset_ids(farm: Farm) -> list[str]:
    with farm.catalog.engine.connect() as conn:
        return list(conn.execute(select(Asset.id).order_by(Asset.source_uri)).scalars())


def test_restarting_the_scheduler_mid_backfill_loses_and_doubles_nothing(tmp_path, sqlite_url,
                                                                         pg_url, clamd, manifest):
    cluster = CommandCluster(tmp_path)
    try:
        client = cluster.start()
        calm = Farm(make_settings(tmp_path / "calm", sqlite_url, clamd.url), client=client)
        started = time.monotonic()
        calm_job = calm.backfill(str(manifest), RECIPE, batch_size=BATCH)
        calm_s = time.monotonic() - started
        assert calm_job["assets"] == {"ready": ASSETS}

        # The stormy run: the scheduler dies a third of the way in.
        stormy = Farm(make_settings(tmp_path / "stormy", pg_url, clamd.url), client=client)
        first_job, outcome, killed_at = str(uuid.uuid4()), {}, []

        def kill_scheduler(done: int, total, counts) -> None:
            if done >= KILL_AFTER and not killed_at:
                killed_at.append(time.monotonic())
                cluster.kill_scheduler()

        def first_run() -> None:
            try:
                outcome["job"] = stormy.backfill(str(manifest), RECIPE, batch_size=BATCH,
                                                 job_id=first_job, progress=kill_scheduler)
            except BaseException as exc:  # noqa: BLE001 - the test looks at it
                outcome["error"] = exc
            outcome["ended"] = time.monotonic()

        started = time.monotonic()
        runner = threading.Thread(target=first_run, daemon=True)
        runner.start()
        runner.join(timeout=240)
        assert not runner.is_alive(), "the backfill hung after its scheduler died"
        assert killed_at, outcome
        error = outcome.get("error")
        assert isinstance(error, ClusterLost), outcome
        assert "running the same job again finishes them" in str(error)
        noticed_s = outcome["ended"] - killed_at[0]
        # not a speed claim: Dask's reconnect timeout is 30 s; a client that waited it out
        # would notice only then, so under 30 s means it failed at once (any load allows that)
        assert noticed_s < 30  # not a speed claim (see above)
        workers_left_s = cluster.wait_for_workers_to_leave(timeout=60)
        client.close(timeout=10)

        restarted = time.monotonic()
        client = cluster.start()  # same port, new workers
        back_s = time.monotonic() - restarted
        again = Farm(make_settings(tmp_path / "stormy", pg_url, clamd.url), client=client)
        second_job = again.backfill(str(manifest), RECIPE, batch_size=BATCH)
        stormy_s = time.monotonic() - started
        print(f"\nscheduler restart: calm {calm_s:.1f}s; first run failed {noticed_s:.2f}s after "
              f"the kill; workers left in {workers_left_s:.1f}s; new cluster up in {back_s:.1f}s; "
              f"whole stormy run {stormy_s:.1f}s ({stormy_s - calm_s:+.1f}s); re-run submitted "
              f"{second_job['submitted']}, skipped {second_job['skipped']}")

        results = again.results(_asset_ids(again))
        assert len(results) == ASSETS
        assert {r["status"] for r in results} == {"ready"}
        assert _renditions(again) == _renditions(calm)  # byte-identical to the undisturbed run
        with again.catalog.engine.connect() as conn:
            rows = conn.execute(select(func.count()).select_from(Rendition)).scalar_one()
            outputs = set(conn.execute(select(Rendition.output_sha256)).scalars())
        assert rows == ASSETS * len(RECIPE.presets)  # one row per rendition
        assert set(again.stores["renditions"].digests()) == outputs  # one object per digest

        # The jobs' counts from the catalog add up: the first finished what the second skipped.
        first = again.catalog.job_status(first_job)
        assert first["status"] == "failed" and first["submitted"] >= KILL_AFTER
        assert second_job["status"] == "finished"
        assert first["assets"] == {"ready": second_job["skipped"]}
        assert second_job["submitted"] + second_job["skipped"] == ASSETS
        assert second_job["counts"] == {"ready": second_job["submitted"]}
        assert second_job["assets"] == {"ready": second_job["submitted"]}
        assert 0 < second_job["submitted"] < ASSETS
    finally:
        cluster.stop()
