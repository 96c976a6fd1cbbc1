"""clamd stops in the middle of a batch: nothing unscanned gets through, and a re-run finishes."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from catalog.models import StageRun
from cluster.farm import Farm
from cluster.cli.local_clamd import start_clamd
from cluster.cli.samples import scene
from tests.conftest import SIGNATURES, make_settings

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _scanned_ok(farm: Farm) -> set[tuple[str, int]]:
    with farm.catalog.engine.connect() as conn:
        return set(conn.execute(select(StageRun.asset_id, StageRun.attempt).where(
            StageRun.stage == "scan", StageRun.status == "ok")).all())


def test_scanner_outage_mid_batch_fails_closed_then_resumes(tmp_path, pg_url, dask_client):
    folder = tmp_path / "batch"
    folder.mkdir()
    for index in range(16):
        scene(1200, 900, index).jpegsave(str(folder / f"img-{index:02}.jpg"), Q=85)
    clamd = start_clamd(SIGNATURES, tmp_path / "clamd")
    try:
        with Farm(make_settings(tmp_path / "data", pg_url, clamd.url), client=dask_client) as farm:
            def stop_clamd_after_three(done: int, total: int, counts) -> None:
                if done == 3:
                    clamd.stop()

            first = farm.ingest([str(folder)]).wait(progress=stop_clamd_after_three)
            statuses = {(r["status"], r["reason"]) for r in first}
            assert ("failed", "scanner_unavailable") in statuses
            # A scan caught by the stop as clamd shuts down may get an error answer while
            # clamd still answers PING: a scanner error, retryable like the outage.
            assert statuses <= {("ready", None), ("failed", "scanner_unavailable"),
                                ("failed", "scanner_error")}
            scanned = _scanned_ok(farm)
            for result in first:
                if result["status"] == "ready":  # ready only with a clean scan of this attempt
                    assert (result["id"], 1) in scanned
                else:
                    assert result["retryable"] and result["renditions"] == []

            clamd.start_again()
            second = farm.ingest([str(folder)]).wait()
            assert {r["status"] for r in second} == {"ready"}
            redone = {r["id"] for r in first if r["status"] != "ready"}
            assert {a for a, attempt in _scanned_ok(farm) if attempt == 2} == redone
    finally:
        clamd.stop()
