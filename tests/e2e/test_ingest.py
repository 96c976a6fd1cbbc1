"""One asset end to end on Dask, with the catalog in PostgreSQL and the stores on S3."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import pyvips
from sqlalchemy import select

from catalog.models import StageRun
from cluster.farm import Farm
from cluster.cli.samples import write_samples
from pipelines.upload.validate import sniff
from tests.conftest import make_settings, s3_store

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

EXPECTED = {"photo-1.jpg": ("ready", None), "photo-2.jpg": ("ready", None),
            "logo.png": ("ready", None), "invoice.pdf.exe": ("rejected", "infected"),
            "truncated.jpg": ("rejected", "corrupt")}


@pytest.fixture
def farm_on_s3(tmp_path, pg_url, clamd, s3_endpoint, dask_client):
    stores = {name: s3_store(s3_endpoint, name) for name in ("originals", "renditions", "quarantine")}
    settings = make_settings(tmp_path / "data", pg_url, clamd.url, stores)
    with Farm(settings, client=dask_client) as farm:
        yield farm


@pytest.fixture
def samples(tmp_path) -> Path:
    folder = tmp_path / "samples"
    write_samples(folder, photos=2)
    return folder


def _by_name(results: list[dict]) -> dict[str, dict]:
    return {Path(r["source"]).name: r for r in results}


def _objects(farm: Farm) -> dict[str, list[str]]:
    return {name: store.digests() for name, store in farm.stores.items()}


def test_every_asset_ends_with_the_status_it_deserves(farm_on_s3, samples):
    results = _by_name(farm_on_s3.ingest([str(samples)]).wait())
    assert {name: (r["status"], r["reason"]) for name, r in results.items()} == EXPECTED
    for name in ("photo-1.jpg", "photo-2.jpg", "logo.png"):
        renditions = {r["preset"]: r for r in results[name]["renditions"]}
        assert sorted(renditions) == ["large", "medium", "small", "thumb"]
        assert (renditions["thumb"]["width"], renditions["thumb"]["height"]) == (150, 150)
        for rendition in renditions.values():
            data = farm_on_s3.stores["renditions"].get(rendition["sha256"])
            assert sniff(data) == "webp" and len(data) == rendition["bytes"]
            image = pyvips.Image.new_from_buffer(data, "")
            assert (image.width, image.height) == (rendition["width"], rendition["height"])
            assert rendition["url"].startswith("s3://")
    large = {r["preset"]: r for r in results["photo-1.jpg"]["renditions"]}["large"]
    assert (large["width"], large["height"]) == (1600, 1067)


def test_infected_file_is_quarantined_and_never_published(farm_on_s3, samples):
    results = _by_name(farm_on_s3.ingest([str(samples)]).wait())
    infected = results["invoice.pdf.exe"]
    assert "Eicar-Test-Signature" in infected["message"]
    objects = _objects(farm_on_s3)
    assert len(objects["quarantine"]) == 1
    assert objects["quarantine"][0] not in objects["originals"] + objects["renditions"]
    assert infected["sha256"] is None and infected["renditions"] == []


def test_every_stage_is_recorded_and_every_scan_names_its_engine(farm_on_s3, samples):
    results = farm_on_s3.ingest([str(samples)]).wait()
    with farm_on_s3.catalog.engine.connect() as conn:
        runs = conn.execute(select(StageRun.asset_id, StageRun.stage, StageRun.status,
                                   StageRun.details, StageRun.worker)).all()
    scans = [r for r in runs if r.stage == "scan"]
    assert len(scans) == len(results)
    assert all(r.details["engine"].startswith("ClamAV") for r in scans)
    assert all(r.worker.startswith("tcp://127.0.0.1:") for r in runs)
    ready = {r["id"] for r in results if r["status"] == "ready"}
    for asset_id in ready:
        stages = [r.stage for r in runs if r.asset_id == asset_id and r.status == "ok"]
        assert stages == ["scan", "validate", "hash", "resize", "convert", "compress", "record"]


def test_running_again_creates_no_rows_and_no_objects(farm_on_s3, samples):
    first = farm_on_s3.ingest([str(samples)]).wait()
    rows, objects = farm_on_s3.catalog.row_counts(), _objects(farm_on_s3)
    second = farm_on_s3.ingest([str(samples)]).wait()
    assert farm_on_s3.catalog.row_counts() == rows
    assert _objects(farm_on_s3) == objects
    assert second == first


def test_same_bytes_under_another_name_reuse_the_renditions(farm_on_s3, samples, tmp_path):
    farm_on_s3.ingest([str(samples / "photo-1.jpg")]).wait()
    objects = _objects(farm_on_s3)
    copy = tmp_path / "copy-of-photo.jpg"
    shutil.copy(samples / "photo-1.jpg", copy)
    [result] = farm_on_s3.ingest([str(copy)], owner="someone-else").wait()
    assert result["status"] == "ready" and len(result["renditions"]) == 4
    assert _objects(farm_on_s3) == objects
    with farm_on_s3.catalog.engine.connect() as conn:
        resize = conn.execute(select(StageRun.status).where(
            StageRun.asset_id == result["id"], StageRun.stage == "resize")).scalar_one()
    assert resize == "skipped"


def test_changed_source_makes_a_new_version(farm_on_s3, samples):
    photo = samples / "photo-1.jpg"
    [first] = farm_on_s3.ingest([str(photo)]).wait()
    photo.write_bytes((samples / "photo-2.jpg").read_bytes())
    [second] = farm_on_s3.ingest([str(photo)]).wait()
    assert (first["version"], second["version"]) == (1, 2)
    assert first["sha256"] != second["sha256"] and second["status"] == "ready"


def test_without_a_scanner_nothing_gets_through(tmp_path, sqlite_url, samples, dask_client):
    settings = make_settings(tmp_path / "data", sqlite_url, "tcp://127.0.0.1:9")
    with Farm(settings, client=dask_client) as farm:
        results = farm.ingest([str(samples)]).wait()
        assert {(r["status"], r["reason"], r["retryable"]) for r in results} == {
            ("failed", "scanner_unavailable", True)}
        assert all(objects == [] for objects in _objects(farm).values())
