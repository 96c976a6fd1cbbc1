"""Parquet exports of the catalog: on SQLite and PostgreSQL, to a folder and to S3, incremental.

The catalog is filled through the repository (two past days written directly, so that the
day partitions are known), exported, read back file by file and compared with the catalog;
then changed, exported again, and checked to have only gained new files holding exactly
the changes. A farm run on real images checks the same on what the stages really write.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import insert, select

from catalog import Catalog, analytics
from catalog.export import (CHANGE_COLUMN, DATASETS, JSON_COLUMNS, KEYS, SCHEMAS, destination_key,
                            export, open_dataset, watermark)
from catalog import near_duplicates
from catalog.export_datasets import METADATA_COLUMNS
from catalog.models import (Asset, AssetVersion, Blob, ExportWatermark, NearDuplicateMember,
                            PerceptualHash, Recipe, Rendition, StageRun)
from catalog.near_duplicates import DEFAULT_THRESHOLD, hash_row
from catalog.repository import utcnow
from catalog.records import AssetRequest, RenditionRecord, StageRecord
from tests.conftest import make_settings, s3_store

DOCS = Path(__file__).resolve().parents[2] / "docs" / "analytics.md"
ENGINE, SIGS = "ClamAV 1.4.6", "27000"
PARTITION = re.compile(r"/day=(\d{4}-\d{2}-\d{2})/media_type=(image|video|audio|unknown)/"
                       r"part-(?P<run>[0-9TZ]+-[0-9a-f]{8})-\d+\.parquet$")


def _digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


# -- a catalog with known contents ---------------------------------------------------------------

TODAY = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
DAY1 = TODAY - timedelta(days=3) + timedelta(hours=10, microseconds=123_456)
DAY2 = TODAY - timedelta(days=2) + timedelta(hours=23, minutes=59)
JPEG, MP4, MP3 = _digest("photo.jpg"), _digest("clip.mp4"), _digest("song.mp3")
OUT = {name: _digest(name) for name in ("thumb", "small", "h264-360p", "poster-thumb", "aac")}
PHASH = -(2 ** 63) + 0x0F0F  # signed, as stored


def _scan(asset: str, at: datetime, status: str = "ok", signature: str | None = None,
          verdict: bool = True, attempt: int = 1) -> dict:
    details = None
    if verdict:
        details = {"engine": ENGINE, "signatures_version": SIGS, "clean": signature is None,
                   "signature": signature}
        if signature:
            del details["clean"]
    return {"asset_id": asset, "stage": "scan", "attempt": attempt, "status": status,
            "started_at": at - timedelta(milliseconds=40), "finished_at": at, "duration_ms": 40.0,
            "worker": "tcp://127.0.0.1:1", "reason": None if status == "ok" else "x",
            "error_class": None, "error_message": None, "details": details}


def populate(catalog: Catalog) -> None:
    """Two days of history: three ready assets (image, video, audio), one infected, one failed."""
    rows = {
        Recipe: [{"id": "r1", "name": "web", "definition": {"presets": ["thumb"]}, "created_at": DAY1}],
        Blob: [
            {"sha256": JPEG, "size": 50_000, "media_type": "image/jpeg", "store": "originals",
             "media_metadata": {"width": 2400}, "created_at": DAY1},
            {"sha256": MP4, "size": 900_000, "media_type": "video/mp4", "store": "originals",
             "created_at": DAY2},
            {"sha256": MP3, "size": 40_000, "media_type": "audio/mpeg", "store": "originals",
             "created_at": DAY2},
            *({"sha256": OUT[n], "size": size, "media_type": mt, "store": "renditions",
               "created_at": DAY1} for n, size, mt in [
                  ("thumb", 3_000, "image/webp"), ("small", 9_000, "image/webp"),
                  ("h264-360p", 200_000, "video/mp4"), ("poster-thumb", 2_500, "image/webp"),
                  ("aac", 15_000, "audio/mp4")]),
        ],
        Asset: [
            {"id": "a-photo", "owner": "alice", "source_uri": "file:///in/Photo.JPG",
             "source_fingerprint": "50000:1", "recipe_id": "r1", "status": "ready",
             "retryable": False, "sha256": JPEG, "current_version": 1, "attempt": 1,
             "created_at": DAY1, "updated_at": DAY1},
            {"id": "a-clip", "owner": "alice", "source_uri": "s3://in/clip.mp4", "recipe_id": "r1",
             "status": "ready", "retryable": False, "sha256": MP4, "current_version": 1,
             "attempt": 1, "created_at": DAY2, "updated_at": DAY2},
            {"id": "a-song", "owner": "bob", "source_uri": "file:///in/song.mp3", "recipe_id": "r1",
             "status": "ready", "retryable": False, "sha256": MP3, "current_version": 1,
             "attempt": 1, "created_at": DAY2, "updated_at": DAY2},
            {"id": "a-virus", "owner": "bob", "source_uri": "file:///in/invoice.pdf.exe",
             "recipe_id": "r1", "status": "rejected", "reason": "infected",
             "message": "the scanner found Eicar", "retryable": False, "attempt": 1,
             "created_at": DAY1, "updated_at": DAY1},
            {"id": "a-flaky", "owner": "bob", "source_uri": "file:///in/flaky", "recipe_id": "r1",
             "status": "failed", "reason": "scanner_unavailable", "message": "clamd down",
             "retryable": True, "attempt": 1, "created_at": DAY2, "updated_at": DAY2},
        ],
        AssetVersion: [
            {"asset_id": "a-photo", "version": 1, "blob_sha256": JPEG, "recipe_id": "r1",
             "created_at": DAY1},
            {"asset_id": "a-clip", "version": 1, "blob_sha256": MP4, "recipe_id": "r1",
             "created_at": DAY2},
            {"asset_id": "a-song", "version": 1, "blob_sha256": MP3, "recipe_id": "r1",
             "created_at": DAY2},
        ],
        Rendition: [
            {"source_sha256": src, "recipe_id": "r1", "preset": preset, "output_sha256": OUT[preset],
             "format": fmt, "media_type": mt, "width": w, "height": h, "bytes": size,
             "quality": q, "preset_id": f"p-{preset}", "metric_name": metric,
             "metric_value": 0.97 if metric else None, "encoder": encoder,
             "tool_versions": {"libvips": "8.16"}, "created_at": at}
            for src, preset, fmt, mt, w, h, size, q, metric, encoder, at in [
                (JPEG, "thumb", "webp", "image/webp", 150, 150, 3_000, 80, None, None, DAY1),
                (JPEG, "small", "webp", "image/webp", 400, 267, 9_000, 71, "ssim",
                 {"effort": 2}, DAY1),
                (MP4, "h264-360p", "mp4", "video/mp4", 640, 360, 200_000, None, None,
                 {"codec": "libx264", "crf": 23}, DAY2),
                (MP4, "poster-thumb", "webp", "image/webp", 150, 150, 2_500, 80, None, None, DAY2),
                (MP3, "aac", "m4a", "audio/mp4", None, None, 15_000, None, None,
                 {"codec": "aac"}, DAY2),
            ]],
        StageRun: [
            _scan("a-photo", DAY1), _scan("a-virus", DAY1, "rejected", "Eicar-Test-Signature"),
            _scan("a-clip", DAY2), _scan("a-song", DAY2),
            _scan("a-flaky", DAY2, "failed", verdict=False),
            {**_scan("a-photo", DAY1 + timedelta(seconds=1)), "stage": "resize",
             "duration_ms": 250.0, "started_at": DAY1 + timedelta(milliseconds=750),
             "details": {"thumb": [150, 150]}},
        ],
        # The photo and the clip's poster look alike: alice's one group.
        PerceptualHash: [
            {"sha256": JPEG, "phash": PHASH, "algorithm": "imagehash-phash-64", "created_at": DAY1},
            {"sha256": MP4, "phash": PHASH ^ 0b11, "keyframes": [PHASH, 0],
             "algorithm": "imagehash-phash-64", "created_at": DAY2},
        ],
        NearDuplicateMember: [
            {"owner": "alice", "asset_id": asset, "group_id": "a-clip", "sha256": sha256,
             "phash": phash, "threshold": DEFAULT_THRESHOLD, "computed_at": DAY2}
            for asset, sha256, phash in [("a-photo", JPEG, PHASH), ("a-clip", MP4, PHASH ^ 0b11)]],
    }
    with catalog.engine.begin() as conn:
        for model in (Recipe, Blob, Asset, AssetVersion, Rendition, StageRun, PerceptualHash,
                      NearDuplicateMember):
            columns = {c for row in rows[model] for c in row}
            conn.execute(insert(model.__table__),
                         [{c: row.get(c) for c in columns} for row in rows[model]])


def change(catalog: Catalog) -> None:
    """Through the repository, now: a new image asset made ready, and a status change."""
    new_jpeg, new_thumb = _digest("new.jpg"), _digest("new-thumb")
    catalog.queue([AssetRequest("a-new", "alice", "file:///in/new.jpeg", "1:2")], "r1", {})
    now = utcnow()
    catalog.record_stage(StageRecord("a-new", "scan", 1, "ok", now - timedelta(milliseconds=30),
                                     now, "w1", details={"engine": ENGINE, "signatures_version": "27001",
                                                         "clean": True, "signature": None}))
    catalog.put_blob(new_jpeg, 70_000, "image/jpeg", "originals", {"width": 1200})
    catalog.record_ready("a-new", 1, new_jpeg, "r1", [
        RenditionRecord("thumb", new_thumb, "webp", 150, 150, 4_000, 80, "image/webp", "p-thumb",
                        {"libvips": "8.16"})], "renditions")
    # It looks like alice's photo: the search puts it in her group, whose other rows stand.
    catalog.write_batch([], [], [], [], [hash_row(new_jpeg, PHASH + 2 ** 64 ^ 0b1100)])
    assert near_duplicates.find(catalog, "alice")["grouped"] == 3
    # The failed asset is retried and this time rejected as unsupported.
    previous = catalog.assets(["a-flaky"])
    attempt = catalog.queue([AssetRequest("a-flaky", "bob", "file:///in/flaky", None)], "r1",
                            previous)["a-flaky"]
    catalog.record_stage(StageRecord("a-flaky", "scan", attempt, "ok", utcnow(), utcnow(), "w2",
                                     details={"engine": ENGINE, "signatures_version": "27001",
                                              "clean": True, "signature": None}))
    catalog.record_stop("a-flaky", attempt, "rejected", "unsupported_type", "not a media file",
                        False)


# -- what the catalog holds, in the export's shape -----------------------------------------------


def catalog_rows(catalog: Catalog, dataset: str) -> dict[tuple, dict]:
    """The dataset's rows built from the catalog tables, independently of the export's queries."""
    with catalog.engine.connect() as conn:
        blobs = {r.sha256: r for r in conn.execute(select(Blob.__table__))}
        assets = {r.id: r for r in conn.execute(select(Asset.__table__))}
        table = {"assets": Asset, "asset_versions": AssetVersion, "renditions": Rendition,
                 "stage_runs": StageRun,
                 "near_duplicate_groups": NearDuplicateMember}[dataset].__table__
        rows = [dict(r._mapping) for r in conn.execute(select(table))]
    out = {}
    for row in rows:
        if dataset == "assets":
            blob = blobs.get(row["sha256"])
            row["asset_id"] = row.pop("id")
            ext = re.search(r"\.([a-z0-9]{1,10})$", row["source_uri"].lower())
            row.update(source_extension=ext and ext[1], content_type=blob and blob.media_type,
                       size_bytes=blob and blob.size, store=blob and blob.store,
                       media_metadata=blob and blob.media_metadata,
                       **{c: blob and getattr(blob, c) for c in METADATA_COLUMNS})
        elif dataset == "asset_versions":
            blob = blobs.get(row["blob_sha256"])
            row.update(content_type=blob.media_type, size_bytes=blob.size, store=blob.store)
        elif dataset == "renditions":
            output, source = blobs.get(row["output_sha256"]), blobs.get(row["source_sha256"])
            row["content_type"] = row.pop("media_type") or (output and output.media_type)
            row.update(store=output and output.store, source_bytes=source and source.size,
                       source_content_type=source and source.media_type)
        elif dataset == "near_duplicate_groups":
            blob = blobs.get(row["sha256"])
            row["content_type"] = blob and blob.media_type
        else:
            blob = blobs.get(assets[row["asset_id"]].sha256)
            row["source_content_type"] = blob and blob.media_type
        media = row["source_content_type" if dataset == "stage_runs" else "content_type"] or ""
        kind = media.split("/")[0]
        row["media_type"] = kind if kind in ("image", "video", "audio") else "unknown"
        for column, value in row.items():
            if isinstance(value, datetime):
                row[column] = value.replace(tzinfo=timezone.utc) if value.tzinfo is None \
                    else value.astimezone(timezone.utc)
        row["day"] = row[CHANGE_COLUMN[dataset]].date()
        out[tuple(row[k] for k in KEYS[dataset])] = {f.name: row[f.name] for f in SCHEMAS[dataset]}
    return out


def exported_rows(table: pa.Table, dataset: str) -> dict[tuple, dict]:
    rows = {}
    for row in table.to_pylist():
        for column in JSON_COLUMNS.get(dataset, ()):
            row[column] = json.loads(row[column]) if row[column] is not None else None
        for column, value in row.items():
            if isinstance(value, datetime):
                row[column] = value.astimezone(timezone.utc)
        key = tuple(row[k] for k in KEYS[dataset])
        assert key not in rows, f"{dataset}: {key} twice in one export"
        rows[key] = row
    return rows


# -- destinations -------------------------------------------------------------------------------


class Target:
    def __init__(self, url: str, options: dict | None) -> None:
        self.url, self.options = url, options
        protocol = url.split("://")[0] if "://" in url else "file"
        self.fs = fsspec.filesystem(protocol, **(options or {}))
        self.root = url.split("://", 1)[1] if protocol != "file" else url

    def files(self) -> dict[str, bytes]:
        """Every file under the destination: path relative to it → bytes."""
        if not self.fs.exists(self.root):
            return {}
        self.fs.invalidate_cache()
        return {p[len(self.root.rstrip("/")) + 1:]: self.fs.cat_file(p)
                for p in self.fs.find(self.root)}


@pytest.fixture(params=["local", "s3", "r2"])
def target(request, tmp_path) -> Target:
    if request.param == "local":
        return Target(str(tmp_path / "export"), None)
    config = s3_store(request.getfixturevalue("s3_endpoint"), "exports/mediafarm")
    if request.param == "r2":
        # r2:// through plain fsspec (the package's entry point), an endpoint in place of
        # the account's: the catalog's exporter knows nothing of the farm's stores.
        options = dict(config.options)
        endpoint = options.pop("client_kwargs")["endpoint_url"]
        return Target("r2" + config.url[len("s3"):], {**options, "endpoint_url": endpoint})
    return Target(config.url, config.options)


def read_files(files: dict[str, bytes], dataset: str) -> pa.Table:
    """Read a dataset's files one by one, partition values taken from their paths."""
    tables = []
    for path, data in sorted(files.items()):
        if not path.startswith(f"{dataset}/"):
            continue
        found = PARTITION.search("/" + path)
        assert found, f"{path} is not in a day=/media_type= partition"
        table = pq.read_table(io.BytesIO(data))
        table = table.append_column("day", pa.array([datetime.strptime(found[1], "%Y-%m-%d").date()]
                                                    * table.num_rows, pa.date32()))
        table = table.append_column("media_type", pa.array([found[2]] * table.num_rows))
        tables.append(table.select(SCHEMAS[dataset].names))
    if not tables:
        return SCHEMAS[dataset].empty_table()
    return pa.concat_tables(tables)


def file_schemas(files: dict[str, bytes]) -> dict[str, pa.Schema]:
    return {path: pq.read_schema(io.BytesIO(data)) for path, data in files.items()}


# -- tests --------------------------------------------------------------------------------------


def test_export_round_trip_then_only_changes_in_new_files(catalog_url, target):
    catalog = Catalog(catalog_url)
    populate(catalog)

    first = export(catalog, target.url, target.options, batch_rows=2)
    files_1 = target.files()
    assert {d: first["datasets"][d]["rows"] for d in DATASETS} == {
        "assets": 5, "asset_versions": 3, "renditions": 5, "stage_runs": 6,
        "near_duplicate_groups": 2}
    assert sorted(files_1) == sorted(f for d in DATASETS for f in first["datasets"][d]["files"])
    for dataset in DATASETS:
        exported = exported_rows(read_files(files_1, dataset), dataset)
        assert exported == catalog_rows(catalog, dataset), dataset
    # Partitions by the change timestamp's UTC day and by media type.
    partitions = {tuple(PARTITION.search("/" + p).groups()[:2]) for p in files_1
                  if p.startswith("renditions/")}
    assert partitions == {(f"{DAY1:%Y-%m-%d}", "image"), (f"{DAY2:%Y-%m-%d}", "image"),
                          (f"{DAY2:%Y-%m-%d}", "video"), (f"{DAY2:%Y-%m-%d}", "audio")}
    assert {PARTITION.search("/" + p)[2] for p in files_1 if p.startswith("assets/")} == {
        "image", "video", "audio", "unknown"}
    # zstd, and the documented schemas in every file (partition columns live in the paths).
    for path, schema in file_schemas(files_1).items():
        dataset = path.split("/")[0]
        expected = pa.schema([f for f in SCHEMAS[dataset] if f.name not in ("day", "media_type")],
                             metadata=SCHEMAS[dataset].metadata)
        assert schema.equals(expected, check_metadata=True), path
        metadata = pq.ParquetFile(io.BytesIO(files_1[path])).metadata
        assert metadata.row_group(0).column(0).compression == "ZSTD"
    # The watermark is the largest change timestamp exported, per dataset.
    key = destination_key(target.url, target.options)
    assert watermark(catalog, key, "renditions") == DAY2
    assert watermark(catalog, key, "assets") == DAY2
    assert watermark(catalog, key, "stage_runs") == DAY2

    change(catalog)
    second = export(catalog, target.url, target.options)
    files_2 = target.files()
    # Old files: same names, same bytes. New files: this run's only.
    assert {p: files_2[p] for p in files_1} == files_1
    new = {p: data for p, data in files_2.items() if p not in files_1}
    assert new and {PARTITION.search("/" + p)["run"] for p in new} == {second["run"]}
    assert first["run"] != second["run"]
    changes = {"assets": {("a-new",), ("a-flaky",)}, "asset_versions": {("a-new", 1)},
               "renditions": {(_digest("new.jpg"), "r1", "thumb")},
               "stage_runs": {("a-new", "scan", 1), ("a-flaky", "scan", 2)},
               "near_duplicate_groups": {("alice", "a-new")}}
    for dataset in DATASETS:
        in_new = exported_rows(read_files(new, dataset), dataset)
        assert set(in_new) == changes[dataset], dataset
        current = catalog_rows(catalog, dataset)
        assert in_new == {k: current[k] for k in changes[dataset]}, dataset
        assert second["datasets"][dataset]["rows"] == len(changes[dataset])
        # The whole dataset is the union of both exports: every state exported, once each.
        everything = open_dataset(target.url, dataset, target.options).to_table()
        assert everything.num_rows == first["datasets"][dataset]["rows"] + len(changes[dataset])
        assert everything.schema.equals(SCHEMAS[dataset], check_metadata=True)
        # Its latest rows are the catalog as it is now.
        assert exported_rows(analytics.load(target.url, dataset, target.options), dataset) == current
    assert read_files(files_2, "assets").filter(
        pa.compute.equal(read_files(files_2, "assets")["asset_id"], "a-flaky")
    )["status"].to_pylist() == ["failed", "rejected"]
    for dataset in DATASETS:
        schemas = {file_schemas({p: d})[p].to_string(show_field_metadata=True)
                   for p, d in files_2.items() if p.startswith(f"{dataset}/")}
        assert len(schemas) == 1, f"{dataset}: file schemas differ between runs"

    # Nothing changed: nothing written, watermarks kept.
    third = export(catalog, target.url, target.options)
    assert all(third["datasets"][d]["rows"] == 0 and not third["datasets"][d]["files"]
               for d in DATASETS)
    assert target.files() == files_2
    with catalog.engine.connect() as conn:
        kept = conn.execute(select(ExportWatermark.dataset)
                            .where(ExportWatermark.destination == key)).scalars().all()
    assert sorted(kept) == sorted(DATASETS)


def test_analytics_views_on_an_export(catalog_url, tmp_path):
    # On S3 the round trip above reads the same views through catalog.analytics.load.
    target = Target(str(tmp_path / "export"), None)
    catalog = Catalog(catalog_url)
    populate(catalog)
    export(catalog, target.url, target.options)
    change(catalog)
    export(catalog, target.url, target.options)
    url, options = target.url, target.options

    storage = analytics.storage_by_store(url, options).to_pylist()
    assert storage == [
        {"store": "originals", "media_type": "audio", "content_type": "audio/mpeg",
         "objects": 1, "bytes": 40_000},
        {"store": "originals", "media_type": "image", "content_type": "image/jpeg",
         "objects": 2, "bytes": 120_000},
        {"store": "originals", "media_type": "video", "content_type": "video/mp4",
         "objects": 1, "bytes": 900_000},
        {"store": "renditions", "media_type": "audio", "content_type": "audio/mp4",
         "objects": 1, "bytes": 15_000},
        {"store": "renditions", "media_type": "image", "content_type": "image/webp",
         "objects": 4, "bytes": 3_000 + 9_000 + 2_500 + 4_000},
        {"store": "renditions", "media_type": "video", "content_type": "video/mp4",
         "objects": 1, "bytes": 200_000},
    ]
    saved = {(r["format"], r["preset"]): r for r in analytics.bytes_saved(url, options).to_pylist()}
    assert saved[("webp", "thumb")] == {
        "format": "webp", "preset": "thumb", "renditions": 2, "original_bytes": 120_000,
        "rendition_bytes": 7_000, "saved_bytes": 113_000, "ratio": 7_000 / 120_000}
    assert saved[("mp4", "h264-360p")]["saved_bytes"] == 700_000
    assert len(saved) == 5

    stages = {r["stage"]: r for r in analytics.stage_throughput(url, options).to_pylist()}
    assert stages["scan"]["runs"] == 7 and stages["scan"]["failed"] == 2  # a-virus, a-flaky's first try
    assert stages["resize"] == {"stage": "resize", "runs": 1, "failed": 0, "p50_ms": 250.0,
                                "p90_ms": 250.0, "mean_ms": 250.0, "items_per_s": 4.0,
                                "items_per_worker_s": 4.0}

    failures = analytics.failure_classes(url, options).to_pylist()
    assert failures == [
        {"media_type": "unknown", "source_extension": "exe", "status": "rejected",
         "reason": "infected", "assets": 1, "share": 0.5},
        {"media_type": "unknown", "source_extension": None, "status": "rejected",
         "reason": "unsupported_type", "assets": 1, "share": 0.5},
    ]
    # jpg and jpeg images, the mp4, the mp3, and the two rejected.
    assert len(analytics.failure_classes(url, options, include_ready=True)) == 6

    scans = analytics.scan_results(url, options).to_pylist()
    assert scans == [
        {"engine": ENGINE, "signatures_version": SIGS, "status": "ok", "clean": True,
         "signature": None, "scans": 3},
        {"engine": ENGINE, "signatures_version": SIGS, "status": "rejected", "clean": False,
         "signature": "Eicar-Test-Signature", "scans": 1},
        {"engine": ENGINE, "signatures_version": "27001", "status": "ok", "clean": True,
         "signature": None, "scans": 2},
        {"engine": None, "signatures_version": None, "status": "failed", "clean": False,
         "signature": None, "scans": 1},
    ]


def test_a_failed_export_leaves_no_files_and_no_watermark(sqlite_url, tmp_path, monkeypatch):
    import catalog.export as export_module

    catalog = Catalog(sqlite_url)
    populate(catalog)
    destination = tmp_path / "export"
    original = export_module._PartitionedWriter.write
    calls = []

    def failing(self, batch):
        calls.append(batch.num_rows)
        if len(calls) == 3:
            raise OSError("disk full")
        return original(self, batch)

    monkeypatch.setattr(export_module._PartitionedWriter, "write", failing)
    with pytest.raises(OSError, match="disk full"):
        export(catalog, str(destination), batch_rows=1)
    assert not [p for p in destination.rglob("*") if p.is_file()]
    assert watermark(catalog, destination_key(str(destination)), "assets") is None
    monkeypatch.setattr(export_module._PartitionedWriter, "write", original)
    report = export(catalog, str(destination), batch_rows=1)
    assert report["datasets"]["assets"]["rows"] == 5
    assert open_dataset(str(destination), "assets").count_rows() == 5


def _sql_blocks() -> list[str]:
    return re.findall(r"```sql\n(.*?)```", DOCS.read_text(), flags=re.S)


def _normalise(rows: list[dict]) -> list[tuple]:
    def value(v):
        return round(v, 9) if isinstance(v, float) else v
    return sorted((tuple(value(v) for v in row.values()) for row in rows), key=repr)


def test_documented_duckdb_sql_runs_and_agrees_with_the_pyarrow_views(sqlite_url, tmp_path,
                                                                      monkeypatch):
    catalog = Catalog(sqlite_url)
    populate(catalog)
    export(catalog, str(tmp_path / "exports"))
    change(catalog)
    export(catalog, str(tmp_path / "exports"))
    monkeypatch.chdir(tmp_path)  # the documented SQL reads exports/ relative to where it runs

    setup, *queries = _sql_blocks()
    assert "CREATE VIEW assets" in setup and len(queries) == 6
    # The SQL reads where the documented command writes.
    assert "mediafarm export --to exports/" in DOCS.read_text() and "'exports/" in setup
    views = [analytics.storage_by_store, analytics.bytes_saved, analytics.stage_throughput,
             analytics.failure_classes, analytics.scan_results, None]
    with duckdb.connect() as db:
        db.execute(setup)
        for query, view in zip(queries, views):
            result = db.execute(query)
            names = [d[0] for d in result.description]
            rows = [dict(zip(names, row)) for row in result.fetchall()]
            assert rows, query
            if view is None:
                assert sum(r["renditions"] for r in rows) == 4  # image renditions, every state
                continue
            expected = view(str(tmp_path / "exports")).to_pylist()
            assert names == list(expected[0]), query
            assert _normalise(rows) == _normalise(expected), query
        # The views keep the latest state: one row per asset.
        assert db.execute("SELECT count(*), count(DISTINCT asset_id) FROM assets").fetchone() == (6, 6)


def test_documented_schema_tables_match_the_code():
    text = DOCS.read_text()
    names = {"string": pa.string(), "bool": pa.bool_(), "int32": pa.int32(), "int64": pa.int64(),
             "float64": pa.float64(), "date32": pa.date32(),
             "timestamp[us, UTC]": pa.timestamp("us", tz="UTC")}
    for dataset, schema in SCHEMAS.items():
        section = text.split(f"### `{dataset}`", 1)[1].split("###", 1)[0]
        documented = re.findall(r"^\| `(\w+)` \| ([^|]+?)(?: \(JSON\))? \| ([^|]*) \| (yes|no) \|",
                                section, flags=re.M)
        assert [d[0] for d in documented] == schema.names, dataset
        for (column, type_, unit, nullable), field in zip(documented, schema):
            assert names[type_] == field.type, (dataset, column)
            assert (nullable == "yes") == field.nullable, (dataset, column)
            documented_unit = (field.metadata or {}).get(b"unit", b"").decode()
            assert bool(unit.strip()) == bool(documented_unit), (dataset, column)


def test_export_command(sqlite_url, tmp_path, monkeypatch, capsys):
    from cluster.cli.main import main

    populate(Catalog(sqlite_url))
    monkeypatch.setenv("MEDIAFARM_CATALOG_URL", sqlite_url)
    monkeypatch.setenv("MEDIAFARM_DATA_DIR", str(tmp_path / "data"))
    assert main(["export", "--to", str(tmp_path / "out"), "--batch-rows", "3"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["datasets"]["renditions"]["rows"] == 5
    assert all((tmp_path / "out" / f).is_file() for f in report["datasets"]["assets"]["files"])
    assert main(["export", "--to", str(tmp_path / "out")]) == 0
    assert json.loads(capsys.readouterr().out)["datasets"]["assets"]["rows"] == 0


@pytest.mark.slow
def test_export_of_a_real_farm_run(catalog_url, tmp_path, clamd, dask_client):
    from cluster.farm import Farm
    from cluster.cli.samples import EICAR, scene
    from pipelines.recipe import Preset, Recipe

    folder = tmp_path / "in"
    folder.mkdir()
    for index in range(2):
        scene(480, 320, index).jpegsave(str(folder / f"img-{index}.jpg"), Q=85)
    (folder / "invoice.pdf.exe").write_bytes(EICAR)
    recipe = Recipe("tiny", (Preset("thumb", 64, 64, fit="cover"), Preset("small", 160)))
    destination = str(tmp_path / "export")
    settings = make_settings(tmp_path / "data", catalog_url, clamd.url)
    with Farm(settings, client=dask_client) as farm:
        first_batch = farm.ingest([str(folder)], recipe).wait()
        assert sorted(r["status"] for r in first_batch) == ["ready", "ready", "rejected"]
        first = farm.export(destination)
        scene(480, 320, 7).jpegsave(str(folder / "img-7.jpg"), Q=85)
        farm.ingest([str(folder / "img-7.jpg")], recipe).wait()
        second = farm.export(destination)

    catalog = farm.catalog
    assert second["datasets"]["assets"]["rows"] == 1
    assert second["datasets"]["renditions"]["rows"] == 2
    assert second["datasets"]["stage_runs"]["rows"] == 7  # every stage of the new asset
    for dataset in DATASETS:
        everything = exported_rows(analytics.load(destination, dataset), dataset)
        assert everything == catalog_rows(catalog, dataset), dataset
        assert not set(first["datasets"][dataset]["files"]) & set(second["datasets"][dataset]["files"])
    scans = analytics.scan_results(destination).to_pylist()
    assert {(s["clean"], s["signature"]) for s in scans} == {
        (True, None), (False, "Eicar-Test-Signature.UNOFFICIAL")}
    assert all(s["engine"].startswith("ClamAV") and s["signatures_version"] for s in scans)
    assert sum(s["scans"] for s in scans) == 4
    stages = {r["stage"] for r in analytics.stage_throughput(destination).to_pylist()}
    assert stages == {"scan", "validate", "hash", "resize", "convert", "compress", "record"}
    saved = analytics.bytes_saved(destination).to_pylist()
    assert {(r["format"], r["preset"], r["renditions"]) for r in saved} == {
        ("webp", "thumb", 3), ("webp", "small", 3)}
    assert all(0 < r["ratio"] < 1 for r in saved)
    failures = analytics.failure_classes(destination).to_pylist()
    assert [(f["source_extension"], f["reason"]) for f in failures] == [("exe", "infected")]
