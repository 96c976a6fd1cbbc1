"""Parquet exports of the catalog for data engineers: incremental, partitioned, streamed.

``export(catalog, url)`` writes four datasets under ``url`` (any fsspec URL the
stores accept: a local folder, ``s3://``, ``r2://`` with the same storage options)::

    <url>/assets/day=2026-11-21/media_type=image/part-<run>-0.parquet
    <url>/asset_versions/...
    <url>/renditions/...
    <url>/stage_runs/...

Rows are read from the catalog through a server-side cursor on PostgreSQL
(``stream_results`` + ``yield_per``), ``batch_rows`` at a time, turned into Arrow
record batches with the explicit schemas of ``SCHEMAS``, and written as they come by one
``pyarrow.parquet.ParquetWriter`` per partition file; rows come ordered by their change
timestamp, so a day's files are closed as soon as the next day starts and memory stays
flat whatever the catalog's size.
Files are zstd-compressed and partitioned hive-style by the UTC day of the row's
change timestamp and by media type (``image``, ``video``, ``audio``, ``unknown``).

Each export is incremental. A watermark per (destination, dataset) in the
``export_watermarks`` table holds the largest change timestamp exported so far; the next
export takes only rows whose change timestamp is strictly greater, into new files
named after the run (``part-<run>-<i>.parquet``). Files already written are never
rewritten or removed, so a dataset is an append-only change log: an asset whose status
changed appears once per exported state, and its latest row (greatest ``updated_at``) is
its current state. ``catalog.analytics.load`` reads a dataset that way.

An export first waits for the next whole second (SQLite's server-side timestamps have
whole seconds), then takes every row stamped before that second, less those younger than
``settle`` seconds. A row is stamped before its transaction commits: pass a ``settle``
longer than the longest catalog transaction (a bulk partition stamps stage runs as it goes
and commits at the end) when exporting while jobs run, or rows committed late could fall
behind the watermark and never be exported.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import unquote, urlparse

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from sqlalchemy import Text, case, cast, func, literal, select
from sqlalchemy.orm import aliased
from sqlalchemy.sql import ColumnElement, Select

from catalog.models import Asset, AssetVersion, Blob, ExportWatermark, Rendition, StageRun
from catalog.repository import Catalog, utcnow

DATASETS = ("assets", "asset_versions", "renditions", "stage_runs")
MEDIA_TYPES = ("image", "video", "audio", "unknown")
SCHEMA_VERSION = "1"

# -- schemas ------------------------------------------------------------------------------------

TIMESTAMP = pa.timestamp("us", tz="UTC")
JSON_TEXT = pa.string()
# Columns that hold JSON documents as text (DuckDB: json_extract; pyarrow: pyarrow.json).
JSON_COLUMNS = {"renditions": ("encoder", "tool_versions"), "stage_runs": ("details",)}


def _f(name: str, type_: pa.DataType, nullable: bool, doc: str, unit: str | None = None) -> pa.Field:
    metadata = {"description": doc}
    if unit:
        metadata["unit"] = unit
    return pa.field(name, type_, nullable=nullable, metadata=metadata)


def _ts(name: str, nullable: bool, doc: str) -> pa.Field:
    return _f(name, TIMESTAMP, nullable, doc, "microseconds since the epoch, UTC")


_DAY = _f("day", pa.date32(), False, "partition: the UTC calendar day of the change timestamp")


def _media_type(source: str) -> pa.Field:
    return _f("media_type", pa.string(), False,
              f"partition: image, video, audio or unknown, from {source}")


_FIELDS: dict[str, list[pa.Field]] = {
    "assets": [
        _f("asset_id", pa.string(), False, "the asset's id (stable for an owner and source)"),
        _f("owner", pa.string(), False, "who submitted it"),
        _f("source_uri", pa.string(), False, "where its bytes were read from"),
        _f("source_extension", pa.string(), True,
           "the source name's extension, lower case, without the dot; null when it has none"),
        _f("source_fingerprint", pa.string(), True, "size and mtime/ETag of the source last taken in"),
        _f("recipe_id", pa.string(), True, "the recipe of its last attempt"),
        _f("status", pa.string(), False, "queued, processing, ready, rejected or failed"),
        _f("reason", pa.string(), True, "machine-readable reason of a rejected or failed asset"),
        _f("message", pa.string(), True, "the reason for people"),
        _f("retryable", pa.bool_(), False, "whether a failure may succeed when retried"),
        _f("sha256", pa.string(), True, "SHA-256 of the original's bytes (null before hashing)"),
        _f("content_type", pa.string(), True, "the original's media type (blobs.media_type)"),
        _f("size_bytes", pa.int64(), True, "the original's size", "bytes"),
        _f("store", pa.string(), True, "the store that holds the original"),
        _f("current_version", pa.int32(), True, "the version its renditions belong to"),
        _f("attempt", pa.int32(), False, "how many times it was queued"),
        _f("job_id", pa.string(), True, "the last backfill or re-encode job that queued it"),
        _ts("deleted_at", True, "when it was deleted, if it was"),
        _ts("created_at", False, "when it was first queued"),
        _ts("updated_at", False, "the change timestamp: its last status change"),
    ],
    "asset_versions": [
        _f("asset_id", pa.string(), False, "the asset"),
        _f("version", pa.int32(), False, "1, 2, ...: one per (original bytes, recipe) pair"),
        _f("blob_sha256", pa.string(), False, "SHA-256 of the original's bytes"),
        _f("recipe_id", pa.string(), False, "the recipe"),
        _f("content_type", pa.string(), True, "the original's media type"),
        _f("size_bytes", pa.int64(), True, "the original's size", "bytes"),
        _f("store", pa.string(), True, "the store that holds the original"),
        _ts("created_at", False, "the change timestamp: when the version was made"),
    ],
    "renditions": [
        _f("source_sha256", pa.string(), False, "SHA-256 of the original it was made from"),
        _f("recipe_id", pa.string(), False, "the recipe"),
        _f("preset", pa.string(), False, "the rendition's name in the recipe (thumb, h264-720p...)"),
        _f("preset_id", pa.string(), True, "hash of the preset's definition and tool versions"),
        _f("output_sha256", pa.string(), False, "SHA-256 of the rendition's bytes"),
        _f("format", pa.string(), False, "webp, avif, jpeg, png, mp4, webm, ogg, hls..."),
        _f("content_type", pa.string(), True, "the rendition's media type"),
        _f("width", pa.int32(), True, "width; null for audio", "pixels"),
        _f("height", pa.int32(), True, "height; null for audio", "pixels"),
        _f("bytes", pa.int64(), False, "the rendition's size", "bytes"),
        _f("quality", pa.int32(), True, "encoder quality (images)"),
        _f("metric_name", pa.string(), True, "the quality metric reached, e.g. ssim"),
        _f("metric_value", pa.float64(), True, "its value"),
        _f("encoder", JSON_TEXT, True, "the encoder and its settings, as JSON text"),
        _f("tool_versions", JSON_TEXT, False, "libvips/libavcodec versions, as JSON text"),
        _f("store", pa.string(), True, "the store that holds the rendition's bytes"),
        _f("source_bytes", pa.int64(), True, "the original's size", "bytes"),
        _f("source_content_type", pa.string(), True, "the original's media type"),
        _ts("created_at", False, "the change timestamp: when the rendition was recorded"),
    ],
    "stage_runs": [
        _f("id", pa.int64(), False, "the row's id in the catalog"),
        _f("asset_id", pa.string(), False, "the asset"),
        _f("stage", pa.string(), False, "scan, validate, hash, resize, convert, compress or record"),
        _f("attempt", pa.int32(), False, "the asset's attempt this run belongs to"),
        _f("status", pa.string(), False, "ok, skipped, rejected or failed"),
        _ts("started_at", False, "when the stage started"),
        _ts("finished_at", False, "the change timestamp: when the stage ended"),
        _f("duration_ms", pa.float64(), False, "finished_at - started_at", "milliseconds"),
        _f("worker", pa.string(), True, "the Dask worker that ran it"),
        _f("reason", pa.string(), True, "reason code when the stage stopped the asset"),
        _f("error_class", pa.string(), True, "the exception's class when it stopped the asset"),
        _f("error_message", pa.string(), True, "the error for people"),
        _f("details", JSON_TEXT, True,
           "what the stage reported, as JSON text (scan: engine, signatures_version, clean, signature)"),
        _f("source_content_type", pa.string(), True, "the asset's original's media type"),
    ],
}

# The column whose value orders a dataset's changes; rows past the watermark are exported.
CHANGE_COLUMN = {"assets": "updated_at", "asset_versions": "created_at",
                 "renditions": "created_at", "stage_runs": "finished_at"}
# What identifies a row across exports: its latest exported state is the current one.
KEYS = {"assets": ("asset_id",), "asset_versions": ("asset_id", "version"),
        "renditions": ("source_sha256", "recipe_id", "preset"),
        "stage_runs": ("asset_id", "stage", "attempt")}
# Which media type the media_type partition is taken from.
MEDIA_TYPE_FROM = {"assets": "content_type", "asset_versions": "content_type",
                   "renditions": "content_type", "stage_runs": "source_content_type"}

_PARTITION_FIELDS = {
    name: (_DAY, _media_type(f"`{column}`")) for name, column in MEDIA_TYPE_FROM.items()}
PARTITION_SCHEMA = pa.schema([_DAY, _media_type("the media type")])
PARTITIONING = ds.partitioning(PARTITION_SCHEMA, flavor="hive")


def _schema(name: str) -> pa.Schema:
    return pa.schema([*_FIELDS[name], *_PARTITION_FIELDS[name]], metadata={
        "mediafarm.dataset": name, "mediafarm.schema_version": SCHEMA_VERSION,
        "mediafarm.change_column": CHANGE_COLUMN[name], "mediafarm.keys": ",".join(KEYS[name])})


# The whole schema of each dataset as read back (files hold all but the partition columns).
SCHEMAS: dict[str, pa.Schema] = {name: _schema(name) for name in DATASETS}

# -- queries ------------------------------------------------------------------------------------


def _kind(content_type: ColumnElement) -> ColumnElement:
    return case(*((content_type.like(f"{kind}/%"), literal(kind))
                  for kind in ("image", "video", "audio")), else_=literal("unknown"))


def _assets_query() -> Select:
    a = Asset.__table__.c
    blob = Blob.__table__.alias("original")
    return (select(a.id, a.owner, a.source_uri, a.source_fingerprint, a.recipe_id, a.status,
                   a.reason, a.message, a.retryable, a.sha256, blob.c.media_type, blob.c.size,
                   blob.c.store, a.current_version, a.attempt, a.job_id, a.deleted_at,
                   a.created_at, a.updated_at, _kind(blob.c.media_type))
            .select_from(Asset.__table__.outerjoin(blob, blob.c.sha256 == a.sha256)))


def _versions_query() -> Select:
    v = AssetVersion.__table__.c
    blob = Blob.__table__.alias("original")
    return (select(v.asset_id, v.version, v.blob_sha256, v.recipe_id, blob.c.media_type,
                   blob.c.size, blob.c.store, v.created_at, _kind(blob.c.media_type))
            .select_from(AssetVersion.__table__.outerjoin(blob, blob.c.sha256 == v.blob_sha256)))


def _renditions_query() -> Select:
    r = Rendition.__table__.c
    output = aliased(Blob.__table__, name="output")
    source = aliased(Blob.__table__, name="source")
    content_type = func.coalesce(r.media_type, output.c.media_type)
    return (select(r.source_sha256, r.recipe_id, r.preset, r.preset_id, r.output_sha256, r.format,
                   content_type, r.width, r.height, r.bytes, r.quality, r.metric_name,
                   r.metric_value, cast(r.encoder, Text), cast(r.tool_versions, Text),
                   output.c.store, source.c.size, source.c.media_type, r.created_at,
                   _kind(content_type))
            .select_from(Rendition.__table__
                         .outerjoin(output, output.c.sha256 == r.output_sha256)
                         .outerjoin(source, source.c.sha256 == r.source_sha256)))


def _stage_runs_query() -> Select:
    s = StageRun.__table__.c
    asset = Asset.__table__
    blob = Blob.__table__.alias("original")
    return (select(s.id, s.asset_id, s.stage, s.attempt, s.status, s.started_at, s.finished_at,
                   s.duration_ms, s.worker, s.reason, s.error_class, s.error_message,
                   cast(s.details, Text), blob.c.media_type, _kind(blob.c.media_type))
            .select_from(StageRun.__table__
                         .outerjoin(asset, asset.c.id == s.asset_id)
                         .outerjoin(blob, blob.c.sha256 == asset.c.sha256)))


@dataclass(frozen=True)
class _Spec:
    query: Callable[[], Select]
    change: ColumnElement
    derived: tuple[str, ...] = ()  # columns computed from the batch, not selected


_SPECS = {
    "assets": _Spec(_assets_query, Asset.__table__.c.updated_at, ("source_extension",)),
    "asset_versions": _Spec(_versions_query, AssetVersion.__table__.c.created_at),
    "renditions": _Spec(_renditions_query, Rendition.__table__.c.created_at),
    "stage_runs": _Spec(_stage_runs_query, StageRun.__table__.c.finished_at),
}

# -- destinations -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Destination:
    """Where an export goes: a pyarrow filesystem, the root path on it, and its watermark key."""

    key: str
    filesystem: pafs.FileSystem
    root: str

    @classmethod
    def open(cls, url: str, storage_options: dict | None = None) -> "Destination":
        """Any fsspec URL (``r2://`` too: the package registers it) or a local path."""
        parsed = urlparse(str(url))
        if parsed.scheme in ("", "file", "local"):
            local = unquote(parsed.path) if parsed.scheme == "file" else str(url)
            root = str(Path(local).expanduser().resolve())
            return cls(Path(root).as_uri(), pafs.LocalFileSystem(), root)
        filesystem, root = fsspec.core.url_to_fs(str(url), **(storage_options or {}))
        root = root.rstrip("/")
        handler = pafs.PyFileSystem(pafs.FSSpecHandler(filesystem))
        return cls(str(url).rstrip("/"), handler, root)

    def path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])

    def relative(self, path: str) -> str:
        return path[len(self.root.rstrip("/")) + 1:] if path.startswith(self.root) else path


def open_dataset(url: str, name: str, storage_options: dict | None = None) -> ds.Dataset:
    """An exported dataset, every run of it, with its full schema (partition columns included)."""
    if name not in SCHEMAS:
        raise ValueError(f"no dataset {name!r}; the export writes {', '.join(DATASETS)}")
    destination = Destination.open(url, storage_options)
    base = destination.path(name)
    # One listing, and an empty dataset (not an error) before the first export.
    selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
    options = ds.FileSystemFactoryOptions(partition_base_dir=base, partitioning=PARTITIONING,
                                          selector_ignore_prefixes=[".", "_"])
    factory = ds.FileSystemDatasetFactory(destination.filesystem, selector,
                                          ds.ParquetFileFormat(), options)
    return factory.finish(SCHEMAS[name])


# -- export -------------------------------------------------------------------------------------


def export(catalog: Catalog, url: str, storage_options: dict | None = None,
           batch_rows: int = 50_000, *, settle: float = 0.0,
           datasets: tuple[str, ...] = DATASETS) -> dict:
    """Export what changed since the last export to ``url``; returns what was written.

    ``{"destination", "run", "cutoff", "datasets": {name: {"rows", "files", "watermark",
    "previous_watermark"}}}``; ``files`` are paths relative to ``url``.
    """
    if batch_rows < 1:
        raise ValueError("batch_rows must be at least 1")
    unknown = set(datasets) - set(DATASETS)
    if unknown:
        raise ValueError(f"no dataset {sorted(unknown)}; the export writes {', '.join(DATASETS)}")
    destination = Destination.open(url, storage_options)
    if len(destination.key) > 500:
        raise ValueError("the destination URL is longer than 500 characters")
    started = utcnow()
    run = f"{started:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    # Wait for the next whole second: then every row stamped before the export began is in
    # (SQLite's server-side stamps are whole seconds), less what is younger than `settle`.
    boundary = started.replace(microsecond=0) + timedelta(seconds=1)
    time.sleep(max(0.0, (boundary - utcnow()).total_seconds()))
    cutoff = boundary - timedelta(seconds=settle, microseconds=1)
    report = {"destination": destination.key, "run": run, "cutoff": cutoff.isoformat(),
              "datasets": {}}
    for name in datasets:
        report["datasets"][name] = _export_dataset(catalog, destination, name, run, cutoff,
                                                   batch_rows)
    return report


def _export_dataset(catalog: Catalog, destination: Destination, name: str, run: str,
                    cutoff: datetime, batch_rows: int) -> dict:
    previous = watermark(catalog, destination.key, name)
    result = {"rows": 0, "files": [], "watermark": _iso(previous),
              "previous_watermark": _iso(previous)}
    writer = _PartitionedWriter(destination, name, run, row_group_rows=batch_rows)
    rows, latest = 0, None
    try:
        for batch in _batches(catalog, name, previous, cutoff, batch_rows):
            writer.write(batch)
            rows += batch.num_rows
            batch_latest = pc.max(batch.column(CHANGE_COLUMN[name])).as_py()
            latest = batch_latest if latest is None else max(latest, batch_latest)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    if rows:
        set_watermark(catalog, destination.key, name, latest)
        result.update(rows=rows, watermark=_iso(latest),
                      files=sorted(destination.relative(p) for p in writer.paths))
    return result


class _PartitionedWriter:
    """One ``pyarrow.parquet.ParquetWriter`` per (day, media type) partition file of one run.

    Rows come ordered by their change timestamp, hence by day: when a batch starts on a
    later day, the earlier days' files are complete and are closed. Rows wait in memory
    until a partition has ``row_group_rows`` of them (one row group), or until all the
    partitions together hold twice that, so memory stays within about two batches.
    """

    def __init__(self, destination: Destination, dataset: str, run: str,
                 row_group_rows: int) -> None:
        self.destination, self.dataset, self.run = destination, dataset, run
        self.schema = SCHEMAS[dataset]
        self.file_schema = pa.schema([f for f in self.schema if f.name not in ("day", "media_type")],
                                     metadata=self.schema.metadata)
        self.row_group_rows = row_group_rows
        self.open: dict[tuple, dict] = {}
        self.paths: list[str] = []
        self.pending_rows = 0

    def write(self, batch: pa.RecordBatch) -> None:
        days = batch.column("day")
        first_day = pc.min(days).as_py()
        for key in [k for k in self.open if k[0] < first_day]:
            self._close(key)
        partitions = pa.Table.from_batches([batch]).group_by(["day", "media_type"]).aggregate([])
        for day, media_type in zip(partitions["day"].to_pylist(),
                                   partitions["media_type"].to_pylist()):
            part = batch.filter(pc.and_(pc.equal(days, pa.scalar(day, pa.date32())),
                                        pc.equal(batch.column("media_type"), media_type)))
            state = self.open.get((day, media_type)) or self._open(day, media_type)
            state["pending"].append(pa.RecordBatch.from_arrays(
                [part.column(f.name) for f in self.file_schema], schema=self.file_schema))
            state["rows"] += part.num_rows
            self.pending_rows += part.num_rows
            if state["rows"] >= self.row_group_rows:
                self._flush(state)
        if self.pending_rows >= 2 * self.row_group_rows:
            for state in self.open.values():
                self._flush(state)

    def _open(self, day, media_type: str) -> dict:
        folder = self.destination.path(self.dataset, f"day={day.isoformat()}",
                                       f"media_type={media_type}")
        number = sum(1 for p in self.paths if p.startswith(folder + "/"))
        path = f"{folder}/part-{self.run}-{number}.parquet"
        if isinstance(self.destination.filesystem, pafs.LocalFileSystem):
            self.destination.filesystem.create_dir(folder, recursive=True)
        self.paths.append(path)
        writer = pq.ParquetWriter(path, self.file_schema, filesystem=self.destination.filesystem,
                                  compression="zstd")
        state = {"writer": writer, "pending": [], "rows": 0}
        self.open[(day, media_type)] = state
        return state

    def _flush(self, state: dict) -> None:
        if state["rows"]:
            state["writer"].write_table(pa.Table.from_batches(state["pending"]),
                                        row_group_size=state["rows"])
            self.pending_rows -= state["rows"]
            state["pending"], state["rows"] = [], 0

    def _close(self, key: tuple) -> None:
        state = self.open.pop(key)
        self._flush(state)
        state["writer"].close()

    def close(self) -> None:
        for key in list(self.open):
            self._close(key)

    def abort(self) -> None:
        """Close what is open and delete this run's files (best effort)."""
        for state in self.open.values():
            with contextlib.suppress(Exception):
                state["writer"].close()
        self.open = {}
        for path in self.paths:
            with contextlib.suppress(OSError):
                self.destination.filesystem.delete_file(path)


def _batches(catalog: Catalog, name: str, previous: datetime | None, cutoff: datetime,
             batch_rows: int) -> Iterator[pa.RecordBatch]:
    spec = _SPECS[name]
    schema = SCHEMAS[name]
    query = spec.query().where(spec.change <= _bind(catalog, cutoff))
    if previous is not None:
        query = query.where(spec.change > _bind(catalog, previous))
    query = query.order_by(spec.change)
    selected = [f for f in schema if f.name not in spec.derived and f.name != "day"]
    change = CHANGE_COLUMN[name]
    with catalog.engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=batch_rows).execute(query)
        for rows in result.partitions(batch_rows):
            columns = {f.name: pa.array(values, type=f.type)
                       for values, f in zip(zip(*rows), selected)}
            del rows  # the Python rows go before the next batch is fetched, not after
            for column in JSON_COLUMNS.get(name, ()):
                columns[column] = _json_null(columns[column])
            if name == "assets":
                columns["source_extension"] = _extension(columns["source_uri"])
            columns["day"] = pc.cast(columns[change], pa.date32())
            batch = pa.RecordBatch.from_arrays([columns.pop(f.name) for f in schema],
                                               schema=schema)
            yield batch
            del batch


def _json_null(values: pa.Array) -> pa.Array:
    # SQLAlchemy stores Python None in a JSON column as the JSON text null: export it as null.
    return pc.if_else(pc.equal(values, "null"), pa.scalar(None, pa.string()), values)


def _extension(uris: pa.Array) -> pa.Array:
    name = pc.replace_substring_regex(pc.utf8_lower(uris), r"[?#].*$", "")
    found = pc.extract_regex(name, r"\.(?P<ext>[a-z0-9]{1,10})$")
    return pc.if_else(found.is_valid(), found.field("ext"), pa.scalar(None, pa.string()))


# -- watermarks ---------------------------------------------------------------------------------


def _bind(catalog: Catalog, moment: datetime) -> datetime:
    moment = moment.astimezone(timezone.utc)
    # SQLite keeps naive UTC text; compare like with like.
    return moment.replace(tzinfo=None) if catalog.engine.dialect.name == "sqlite" else moment


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def destination_key(url: str, storage_options: dict | None = None) -> str:
    """The key under which ``export_watermarks`` remembers an export destination."""
    return Destination.open(url, storage_options).key


def watermark(catalog: Catalog, destination: str, dataset: str) -> datetime | None:
    table = ExportWatermark.__table__
    with catalog.engine.connect() as conn:
        value = conn.execute(select(table.c.watermark).where(
            table.c.destination == destination, table.c.dataset == dataset)).scalar()
    return _utc(value)


def set_watermark(catalog: Catalog, destination: str, dataset: str, value: datetime) -> None:
    with catalog.engine.begin() as conn:
        catalog._upsert(conn, ExportWatermark.__table__, [{
            "destination": destination, "dataset": dataset,
            "watermark": _bind(catalog, value), "updated_at": _bind(catalog, utcnow())}],
            ["destination", "dataset"], ["watermark", "updated_at"])
