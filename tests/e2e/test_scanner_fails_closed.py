"""A clamd set up like Debian's package passes what it did not scan: the farm must refuse it.

With ``MaxFileSize 25M`` and ``AlertExceedsMax no`` (Debian's packaged clamd.conf), a
JPEG with a ZIP appended whose member hides the EICAR test file past 25 MB came back
``stream: OK`` and became ``ready`` (issue 14). Per asset, in bulk, in the worker
plugin's report and in ``/readyz``, such a clamd must now be named as misconfigured,
with the settings to change; the project's own clamd still rejects the file.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from cluster.farm import Farm
from cluster.cli.local_clamd import start_clamd
from cluster.cli.samples import scene
from cluster.worker_plugin import worker_reports
from tests.clamd_setups import DEBIAN_CLAMD, attack_jpeg
from tests.conftest import SIGNATURES, make_settings
from tests.services.api_server import start_api_server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def stock_clamd(tmp_path_factory):
    daemon = start_clamd(SIGNATURES, tmp_path_factory.mktemp("debian-clamd"),
                         stream_max_length="25M", overrides=DEBIAN_CLAMD)
    yield daemon
    daemon.stop()


@pytest.fixture
def uploads(tmp_path) -> Path:
    folder = tmp_path / "uploads"
    folder.mkdir()
    (folder / "attack.jpg").write_bytes(attack_jpeg())
    scene(800, 600, 3).jpegsave(str(folder / "photo.jpg"), Q=85)
    return folder


def _settings(root: Path, clamd_url: str):
    return make_settings(root / "data", f"sqlite:///{root / 'catalog.sqlite'}", clamd_url)


def _names_the_settings(text: str) -> bool:
    return "AlertExceedsMax yes" in text and "MaxFileSize" in text and "MaxScanSize" in text


def _by_name(results: list[dict]) -> dict[str, dict]:
    return {Path(r["source"]).name: r for r in results}


def test_a_stock_clamd_lets_nothing_through_per_asset_or_in_bulk(tmp_path, stock_clamd,
                                                                   dask_client, uploads):
    with Farm(_settings(tmp_path, stock_clamd.url), client=dask_client) as farm:
        interactive = _by_name(farm.ingest([str(uploads)]).wait())
        ids = [r["id"] for r in interactive.values()]
        # Failed assets are not done, so the backfill runs both again through run_partition.
        job = farm.backfill(str(uploads), batch_size=2)
        bulk = _by_name(farm.results(ids))
        stored = farm.stores["originals"].digests()
    for results in (interactive, bulk):
        assert sorted(results) == ["attack.jpg", "photo.jpg"]
        for result in results.values():
            assert (result["status"], result["reason"]) == ("failed", "scanner_misconfigured")
            assert result["retryable"] and result["renditions"] == []
            assert _names_the_settings(result["message"]), result["message"]
    assert job["counts"] == {"failed": 2}
    assert stored == []  # not a byte of either file went past the scan


def test_worker_report_and_readyz_name_the_clamd_settings(tmp_path, stock_clamd, dask_client):
    settings = _settings(tmp_path, stock_clamd.url)
    with Farm(settings, client=dask_client) as farm:
        reports = worker_reports(farm.client)
    assert len(reports) == 2
    for report in reports.values():
        assert report["clamd"].startswith("misconfigured: "), report["clamd"]
        assert _names_the_settings(report["clamd"])
    server = start_api_server(settings, tmp_path / "serve", scheduler=dask_client.scheduler.address)
    try:
        ready = httpx.get(f"{server.url}/readyz", timeout=60, trust_env=False)
    finally:
        server.stop()
    assert ready.status_code == 503
    checks = ready.json()["checks"]
    assert checks["catalog"] == "ok" and checks["scheduler"] == "ok"
    assert checks["clamd"].startswith("misconfigured: ") and _names_the_settings(checks["clamd"])


def test_the_projects_clamd_rejects_the_attack_and_passes_a_photo(tmp_path, clamd, dask_client,
                                                                  uploads):
    with Farm(_settings(tmp_path, clamd.url), client=dask_client) as farm:
        results = _by_name(farm.ingest([str(uploads)]).wait())
        reports = worker_reports(farm.client)
    attack = results["attack.jpg"]
    assert attack["status"] == "rejected", attack
    assert attack["reason"] in ("infected", "scan_limit_exceeded")
    assert results["photo.jpg"]["status"] == "ready"
    assert all(r["clamd"].startswith("ok: ") for r in reports.values())
