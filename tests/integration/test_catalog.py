"""The catalog on SQLite and PostgreSQL: migrations and idempotent upserts."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from catalog import Catalog, upgrade
from catalog.models import Asset, StageRun
from catalog.repository import utcnow
from catalog.records import AssetRequest, RenditionRecord, StageRecord

A, B = "a" * 64, "b" * 64


def _ready(catalog: Catalog, asset_id: str, attempt: int, source: str = A) -> None:
    catalog.put_blob(source, 100, "image/jpeg", "originals")
    catalog.record_ready(asset_id, attempt, source, "r1", [
        RenditionRecord("thumb", "c" * 64, "webp", 150, 150, 10, 80, "image/webp", "p1",
                        {"libvips": "x"})],
        "renditions")


def _queue(catalog: Catalog, asset_id: str = "asset-1") -> int:
    request = AssetRequest(asset_id, "owner", f"file:///{asset_id}.jpg", "1:1")
    return catalog.queue([request], "r1", catalog.assets([asset_id]))[asset_id]


def test_upgrade_twice_is_a_no_op(catalog_url):
    upgrade(catalog_url)
    assert Catalog(catalog_url).row_counts()["assets"] == 0


def test_recording_the_same_result_twice_adds_no_rows(catalog_url):
    catalog = Catalog(catalog_url)
    catalog.ensure_recipe("r1", "default", {"presets": []})
    attempt = _queue(catalog)
    _ready(catalog, "asset-1", attempt)
    before = catalog.row_counts()
    catalog.ensure_recipe("r1", "default", {"presets": []})
    _ready(catalog, "asset-1", attempt)
    assert catalog.row_counts() == before
    assert before["renditions"] == 1 and before["asset_versions"] == 1 and before["blobs"] == 2
    summary = catalog.results(["asset-1"])[0]
    assert summary["status"] == "ready" and summary["version"] == 1
    assert summary["renditions"][0]["sha256"] == "c" * 64


def test_new_original_bytes_make_a_new_version(catalog_url):
    catalog = Catalog(catalog_url)
    catalog.ensure_recipe("r1", "default", {})
    _ready(catalog, "asset-1", _queue(catalog), source=A)
    _ready(catalog, "asset-1", _queue(catalog), source=B)
    assert catalog.results(["asset-1"])[0]["version"] == 2


def test_stage_run_is_upserted_per_attempt(catalog_url):
    catalog = Catalog(catalog_url)
    catalog.ensure_recipe("r1", "default", {})
    attempt = _queue(catalog)
    start = utcnow()
    for status in ("failed", "ok"):  # a Dask retry of the same attempt overwrites, not appends
        catalog.record_stage(StageRecord("asset-1", "scan", attempt, status, start,
                                         start + timedelta(milliseconds=5), "w1"))
    with catalog.engine.connect() as conn:
        rows = conn.execute(select(StageRun.status, StageRun.duration_ms)).all()
    assert [r.status for r in rows] == ["ok"] and rows[0].duration_ms >= 5


def test_a_late_task_of_an_older_attempt_cannot_overwrite_the_newer(catalog_url):
    catalog = Catalog(catalog_url)
    catalog.ensure_recipe("r1", "default", {})
    first = _queue(catalog)
    second = _queue(catalog)
    assert second == first + 1
    catalog.record_stop("asset-1", first, "failed", "internal_error", "old news", True)
    with catalog.engine.connect() as conn:
        status = conn.execute(select(Asset.status).where(Asset.id == "asset-1")).scalar_one()
    assert status == "queued"


def test_a_finished_asset_is_never_marked_processing_again(catalog_url):
    # Dask re-runs a finished asset's first stage when a worker holding its results dies.
    catalog = Catalog(catalog_url)
    catalog.ensure_recipe("r1", "default", {})
    attempts = {asset: _queue(catalog, asset) for asset in ("asset-1", "asset-2", "asset-3")}
    catalog.mark_processing_many(attempts)  # several rows: an executemany
    assert {a["status"] for a in catalog.assets(attempts).values()} == {"processing"}
    _ready(catalog, "asset-1", attempts["asset-1"])
    catalog.mark_processing("asset-1", attempts["asset-1"])
    catalog.mark_processing_many(attempts)
    statuses = {a: row["status"] for a, row in catalog.assets(attempts).items()}
    assert statuses == {"asset-1": "ready", "asset-2": "processing", "asset-3": "processing"}
