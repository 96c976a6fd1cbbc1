"""The Arrow-native reader gives exactly the rows the row-wise reader reads through SQLAlchemy.

On SQLite and PostgreSQL, for a catalog of awkward values: SQL NULLs and JSON nulls, empty
strings, unicode and escapes, nested JSON, timestamps in other time zones and before 1970,
the largest integers the columns hold.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest
from sqlalchemy import insert, null, update

from catalog import Catalog
from catalog.export import DATASETS, KEYS, SCHEMAS, export, open_dataset
from catalog.export_arrow import arrow_batches
from catalog.export_rows import row_batches
from catalog.models import Asset, AssetVersion, Blob, NearDuplicateMember, Recipe, Rendition, StageRun

INT64_MAX, INT32_MAX = 2**63 - 1, 2**31 - 1
IST, PST = timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))
NOW = datetime.now(timezone.utc)
# Whole seconds in other zones, microseconds, and before the epoch.
T1 = (NOW - timedelta(days=2)).astimezone(IST).replace(microsecond=999_999)
T2 = (NOW - timedelta(days=1, hours=3)).astimezone(PST).replace(microsecond=1)
T3 = NOW - timedelta(minutes=5)
TINY = 2.2250738585072014e-308  # the smallest normal float64
APOLLO = datetime(1969, 7, 20, 20, 17, 40, tzinfo=timezone.utc)
UNICODE = "Zoë 🎞 写真\ttab\nnewline \\ back\"quote'"
JSON = {"name": "café ☕ 写真", "quote": "a\"b\\c", "nested": {"list": [1, 2.5, None, True]},
        "big": INT64_MAX, "empty": {}}


# The typed metadata columns at their extremes (catalog.metadata_columns).
TYPED = {"kind": "image", "width": INT32_MAX, "height": 0, "duration_s": TINY,
         "video_codec": "", "audio_codec": UNICODE[:40], "frame_rate": 1e308,
         "captured_at": APOLLO, "camera_make": UNICODE, "camera_model": "Ünï 写真",
         "lens": None, "gps_lat": -90.0, "gps_lon": 179.9999999, "artist": UNICODE * 10,
         "album": "", "title": "\\u0000 not a NUL", "track": 0, "year": INT32_MAX,
         "genre": UNICODE, "bit_rate": INT64_MAX, "sample_rate": INT32_MAX, "channels": -1}


def _digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


ORIGINAL, OUTPUT, BARE = _digest("original"), _digest("output"), _digest("bare")


def populate(catalog: Catalog) -> None:
    rows = {
        Recipe: [{"id": "r1", "name": UNICODE, "definition": JSON, "created_at": T1}],
        Blob: [
            {"sha256": ORIGINAL, "size": INT64_MAX, "media_type": "image/jpeg", "store": "originals",
             "media_metadata": JSON, "created_at": APOLLO, **TYPED},
            {"sha256": OUTPUT, "size": 0, "media_type": "image/webp", "store": "", "created_at": T1},
            # A blob whose media type says nothing: the rows that use it fall in "unknown".
            {"sha256": BARE, "size": 1, "media_type": "application/x-ünknown", "store": UNICODE,
             "created_at": T2},
        ],
        Asset: [
            {"id": "a-full", "owner": UNICODE, "source_uri": "file:///in/Ünïcødé 写真.JPEG?x=1#y",
             "source_fingerprint": "", "recipe_id": "r1", "status": "ready", "reason": None,
             "message": UNICODE, "retryable": True, "sha256": ORIGINAL,
             "current_version": INT32_MAX, "attempt": INT32_MAX, "job_id": "j" * 36,
             "deleted_at": APOLLO, "created_at": APOLLO, "updated_at": T1},
            # Everything that may be NULL is.
            {"id": "a-bare", "owner": "", "source_uri": "", "status": "failed", "retryable": False,
             "attempt": 0, "created_at": T2, "updated_at": T2},
            {"id": "a-odd", "owner": "o", "source_uri": "s3://b/no-extension", "status": "queued",
             "retryable": False, "sha256": BARE, "attempt": 1, "created_at": T3, "updated_at": T3},
        ],
        AssetVersion: [
            {"asset_id": "a-full", "version": INT32_MAX, "blob_sha256": ORIGINAL, "recipe_id": "r1",
             "created_at": T1},
            {"asset_id": "a-odd", "version": 1, "blob_sha256": BARE, "recipe_id": "r1",
             "created_at": T3},
        ],
        Rendition: [
            {"source_sha256": ORIGINAL, "recipe_id": "r1", "preset": UNICODE,
             "output_sha256": OUTPUT, "format": "webp", "media_type": None, "width": INT32_MAX,
             "height": 0, "bytes": INT64_MAX, "quality": -1, "preset_id": UNICODE,
             "metric_name": "ssim", "metric_value": 1e308, "encoder": JSON,
             "tool_versions": {"libvips": "8.16", "ünï": [None]}, "created_at": T1},
            # SQL NULL and JSON null in the JSON columns; no blobs behind either digest's store.
            {"source_sha256": BARE, "recipe_id": "r1", "preset": "a", "output_sha256": BARE,
             "format": "", "media_type": "audio/ogg", "bytes": 0, "metric_value": TINY,
             "tool_versions": {}, "created_at": T2},
            {"source_sha256": BARE, "recipe_id": "r1", "preset": "b", "output_sha256": OUTPUT,
             "format": "png", "bytes": 1, "encoder": None, "tool_versions": [], "created_at": T3},
        ],
        StageRun: [
            {"asset_id": "a-full", "stage": "scan", "attempt": INT32_MAX, "status": "ok",
             "started_at": APOLLO, "finished_at": T1, "duration_ms": 1.5e15, "worker": UNICODE,
             "reason": None, "error_class": None, "error_message": None, "details": JSON},
            {"asset_id": "a-bare", "stage": "hash", "attempt": 1, "status": "failed",
             "started_at": T2 - timedelta(microseconds=1), "finished_at": T2, "duration_ms": 0.0,
             "reason": "x", "error_class": "OSError", "error_message": UNICODE},
            {"asset_id": "a-odd", "stage": "record", "attempt": 1, "status": "ok",
             "started_at": T3, "finished_at": T3, "duration_ms": -0.0, "details": None},
        ],
        NearDuplicateMember: [
            {"owner": UNICODE, "asset_id": "a-full", "group_id": "a-full", "sha256": ORIGINAL,
             "phash": -2**63, "threshold": 0, "computed_at": T1},
            {"owner": UNICODE, "asset_id": "a-odd", "group_id": None, "sha256": BARE,
             "phash": INT64_MAX, "threshold": 63, "computed_at": T3},
        ],
    }
    with catalog.engine.begin() as conn:
        for model in (Recipe, Blob, Asset, AssetVersion, Rendition, StageRun, NearDuplicateMember):
            columns = {c for row in rows[model] for c in row}
            conn.execute(insert(model.__table__),
                         [{c: row.get(c) for c in columns} for row in rows[model]])
        # SQL NULL, where the rows above hold JSON null (SQLAlchemy's None in a JSON column).
        conn.execute(update(Rendition).where(Rendition.preset == "a").values(encoder=null()))
        conn.execute(update(StageRun).where(StageRun.stage == "hash").values(details=null()))


def stored(moment: datetime, catalog: Catalog) -> datetime:
    """``moment`` as the catalog gives it back: SQLite keeps the wall time, not the offset.

    SQLAlchemy writes an aware datetime to SQLite without its offset (the repository only
    writes UTC); both readers then read that wall time as UTC.
    """
    if catalog.engine.dialect.name == "sqlite":
        return moment.replace(tzinfo=timezone.utc)
    return moment


def read(batches, dataset: str, batch_rows: int) -> pa.Table:
    batches = list(batches)
    assert all(0 < b.num_rows <= batch_rows for b in batches), dataset
    table = pa.Table.from_batches(batches, SCHEMAS[dataset])
    # Rows with the same change timestamp come in either order: compare them by key.
    return table.sort_by([(key, "ascending") for key in KEYS[dataset]])


@pytest.mark.parametrize("batch_rows", [1, 2, 50_000])
def test_arrow_reader_reads_what_sqlalchemy_reads(catalog_url, batch_rows):
    catalog = Catalog(catalog_url)
    populate(catalog)
    cutoff = datetime.now(timezone.utc)
    tables = {}
    for dataset in DATASETS:
        arrow = read(arrow_batches(catalog, dataset, None, cutoff, batch_rows), dataset, batch_rows)
        rows = read(row_batches(catalog, dataset, None, cutoff, batch_rows), dataset, batch_rows)
        assert arrow.schema.equals(SCHEMAS[dataset], check_metadata=True)
        assert arrow.num_rows == {"assets": 3, "asset_versions": 2, "renditions": 3,
                                  "stage_runs": 3, "near_duplicate_groups": 2}[dataset]
        assert arrow.to_pylist() == rows.to_pylist(), dataset
        assert arrow.equals(rows, check_metadata=True), dataset
        tables[dataset] = {tuple(r[k] for k in KEYS[dataset]): r for r in arrow.to_pylist()}
        # After the first row's change timestamp: the rest, on both readers.
        previous = stored(T1, catalog)
        later = read(arrow_batches(catalog, dataset, previous, cutoff, batch_rows), dataset,
                     batch_rows)
        assert later.equals(read(row_batches(catalog, dataset, previous, cutoff, batch_rows),
                                 dataset, batch_rows))
        assert later.num_rows == arrow.num_rows - 1, dataset

    # Not both wrong the same way: the awkward values are there as written.
    full = tables["assets"][("a-full",)]
    assert full["owner"] == full["message"] == UNICODE and full["source_fingerprint"] == ""
    assert full["deleted_at"] == full["created_at"] == APOLLO
    assert full["updated_at"] == stored(T1, catalog)
    assert full["size_bytes"] == INT64_MAX and full["current_version"] == INT32_MAX
    assert full["retryable"] is True and full["source_extension"] == "jpeg"
    assert {c: full[c] for c in TYPED if c != "kind"} == {c: v for c, v in TYPED.items()
                                                         if c != "kind"}
    assert json.loads(full["media_metadata"]) == JSON
    bare = tables["assets"][("a-bare",)]
    assert bare["sha256"] is bare["content_type"] is bare["deleted_at"] is bare["recipe_id"] is None
    assert bare["media_type"] == "unknown" and bare["source_uri"] == "" and bare["retryable"] is False
    rendition = tables["renditions"][(ORIGINAL, "r1", UNICODE)]
    assert rendition["bytes"] == INT64_MAX and rendition["width"] == INT32_MAX
    assert rendition["metric_value"] == 1e308 and rendition["content_type"] == "image/webp"
    assert "\\u00e9" in rendition["encoder"] or "é" in rendition["encoder"]
    assert tables["renditions"][(BARE, "r1", "a")]["encoder"] is None  # SQL NULL
    assert tables["renditions"][(BARE, "r1", "b")]["encoder"] is None  # JSON null
    assert tables["renditions"][(BARE, "r1", "a")]["metric_value"] == TINY
    run = tables["stage_runs"][("a-full", "scan", INT32_MAX)]
    assert run["started_at"] == APOLLO and run["duration_ms"] == 1.5e15
    assert tables["stage_runs"][("a-bare", "hash", 1)]["details"] is None
    assert tables["stage_runs"][("a-odd", "record", 1)]["details"] is None


def test_both_readers_export_the_same_datasets(catalog_url, tmp_path):
    catalog = Catalog(catalog_url)
    populate(catalog)
    reports = {reader: export(catalog, str(tmp_path / reader), reader=reader)
               for reader in ("arrow", "rows")}
    assert ({d: r["rows"] for d, r in reports["arrow"]["datasets"].items()}
            == {d: r["rows"] for d, r in reports["rows"]["datasets"].items()})
    for dataset in DATASETS:
        assert ([f.split("/part-")[0] for f in reports["arrow"]["datasets"][dataset]["files"]]
                == [f.split("/part-")[0] for f in reports["rows"]["datasets"][dataset]["files"]])
        tables = [open_dataset(str(tmp_path / reader), dataset).to_table()
                  .sort_by([(key, "ascending") for key in KEYS[dataset]])
                  for reader in ("arrow", "rows")]
        assert tables[0].equals(tables[1], check_metadata=True), dataset


def test_an_unknown_reader_is_refused(sqlite_url, tmp_path):
    with pytest.raises(ValueError, match="no reader 'pandas'"):
        export(Catalog(sqlite_url), str(tmp_path), reader="pandas")



def test_an_in_memory_sqlite_catalog_is_read_in_the_callers_thread(tmp_path):
    # One database per thread there (and per process: the engine is cached, so only this
    # test may fill it): a reader in another thread would find it empty.
    from catalog import upgrade

    upgrade("sqlite://")
    catalog = Catalog("sqlite://")
    populate(catalog)
    for reader in ("arrow", "rows"):
        report = export(catalog, str(tmp_path / reader), reader=reader)
        assert report["datasets"]["renditions"]["rows"] == 3, reader
