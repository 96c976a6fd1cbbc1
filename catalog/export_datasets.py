"""The exported datasets: their Arrow schemas, the catalog queries that fill them, and how
a reader's columns become a dataset's record batch.

Each dataset's columns are documented in its schema (field metadata ``description`` and
``unit``), and its query selects them in the schema's order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from sqlalchemy import Text, case, cast, func, literal, select
from sqlalchemy.orm import aliased
from sqlalchemy.sql import ColumnElement, Select

from catalog.models import Asset, AssetVersion, Blob, NearDuplicateMember, Rendition, StageRun
from catalog.repository import Catalog

DATASETS = ("assets", "asset_versions", "renditions", "stage_runs", "near_duplicate_groups")
MEDIA_TYPES = ("image", "video", "audio", "unknown")
SCHEMA_VERSION = "1"

TIMESTAMP = pa.timestamp("us", tz="UTC")
JSON_TEXT = pa.string()
# Columns that hold JSON documents as text (DuckDB: json_extract; pyarrow: pyarrow.json).
JSON_COLUMNS = {"assets": ("media_metadata",), "renditions": ("encoder", "tool_versions"),
                "stage_runs": ("details",)}


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


# The original's typed metadata (blobs' columns, catalog.metadata_columns; docs/metadata.md).
_METADATA_FIELDS = [
    _f("width", pa.int32(), True, "the original's width (images, video)", "pixels"),
    _f("height", pa.int32(), True, "the original's height (images, video)", "pixels"),
    _f("duration_s", pa.float64(), True, "how long the video or audio lasts", "seconds"),
    _f("video_codec", pa.string(), True, "the first video stream's codec (FFmpeg's name)"),
    _f("audio_codec", pa.string(), True, "the first audio stream's codec (FFmpeg's name)"),
    _f("frame_rate", pa.float64(), True, "the video's average frame rate", "frames per second"),
    _ts("captured_at", True, "when it was taken: EXIF DateTimeOriginal (its offset applied, "
        "else read as UTC) or the video's creation time"),
    _f("camera_make", pa.string(), True, "the camera's maker (EXIF Make; a phone video's make)"),
    _f("camera_model", pa.string(), True, "the camera's model (EXIF Model)"),
    _f("lens", pa.string(), True, "the lens (EXIF LensModel)"),
    _f("gps_lat", pa.float64(), True, "latitude, only where the farm keeps places",
       "decimal degrees, north positive"),
    _f("gps_lon", pa.float64(), True, "longitude, only where the farm keeps places",
       "decimal degrees, east positive"),
    _f("artist", pa.string(), True, "the artist tag (at most 1,000 characters)"),
    _f("album", pa.string(), True, "the album tag (at most 1,000 characters)"),
    _f("title", pa.string(), True, "the title tag (at most 1,000 characters)"),
    _f("track", pa.int32(), True, "the track number"),
    _f("year", pa.int32(), True, "the year of the date tag"),
    _f("genre", pa.string(), True, "the genre tag (at most 200 characters)"),
    _f("bit_rate", pa.int64(), True, "the container's bit rate", "bits per second"),
    _f("sample_rate", pa.int32(), True, "the first audio stream's sample rate", "hertz"),
    _f("channels", pa.int32(), True, "the first audio stream's channels"),
    _f("media_metadata", JSON_TEXT, True,
       "everything validation read of the original, notes included, as JSON text"),
]
METADATA_COLUMNS = tuple(f.name for f in _METADATA_FIELDS if f.name != "media_metadata")

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
        *_METADATA_FIELDS,
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
    "near_duplicate_groups": [
        _f("owner", pa.string(), False, "the owner: groups never hold two owners' assets"),
        _f("asset_id", pa.string(), False, "the asset"),
        _f("group_id", pa.string(), True,
           "its group (the group's smallest asset id); null once it is in no group"),
        _f("sha256", pa.string(), False, "SHA-256 of the asset's original"),
        _f("phash", pa.int64(), False,
           "the original's (or a video poster's) 64-bit pHash, as a signed integer"),
        _f("threshold", pa.int32(), False, "the Hamming distance the search allowed", "bits"),
        _f("content_type", pa.string(), True, "the original's media type"),
        _ts("computed_at", False, "the change timestamp: the search that put it there"),
    ],
}

# The column whose value orders a dataset's changes; rows past the watermark are exported.
CHANGE_COLUMN = {"assets": "updated_at", "asset_versions": "created_at",
                 "renditions": "created_at", "stage_runs": "finished_at",
                 "near_duplicate_groups": "computed_at"}
# What identifies a row across exports: its latest exported state is the current one.
KEYS = {"assets": ("asset_id",), "asset_versions": ("asset_id", "version"),
        "renditions": ("source_sha256", "recipe_id", "preset"),
        "stage_runs": ("asset_id", "stage", "attempt"),
        "near_duplicate_groups": ("owner", "asset_id")}
# Which media type the media_type partition is taken from.
MEDIA_TYPE_FROM = {"assets": "content_type", "asset_versions": "content_type",
                   "renditions": "content_type", "stage_runs": "source_content_type",
                   "near_duplicate_groups": "content_type"}

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
                   blob.c.store, *(blob.c[name] for name in METADATA_COLUMNS),
                   cast(blob.c.media_metadata, Text), a.current_version, a.attempt, a.job_id,
                   a.deleted_at, a.created_at, a.updated_at, _kind(blob.c.media_type))
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


def _near_duplicates_query() -> Select:
    g = NearDuplicateMember.__table__.c
    blob = Blob.__table__.alias("original")
    return (select(g.owner, g.asset_id, g.group_id, g.sha256, g.phash, g.threshold,
                   blob.c.media_type, g.computed_at, _kind(blob.c.media_type))
            .select_from(NearDuplicateMember.__table__
                         .outerjoin(blob, blob.c.sha256 == g.sha256)))


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
    "near_duplicate_groups": _Spec(_near_duplicates_query,
                                   NearDuplicateMember.__table__.c.computed_at),
}

# -- what a reader selects, and the batch it makes of it -------------------------------------------


def changes_query(catalog: Catalog, name: str, previous: datetime | None,
                  cutoff: datetime) -> Select:
    """Dataset ``name``'s rows changed after ``previous`` up to ``cutoff``, oldest first.

    Its columns are ``selected_fields(name)``, in that order.
    """
    spec = _SPECS[name]
    query = spec.query().where(spec.change <= bind_moment(catalog, cutoff))
    if previous is not None:
        query = query.where(spec.change > bind_moment(catalog, previous))
    return query.order_by(spec.change)


def selected_fields(name: str) -> list[pa.Field]:
    """The schema's fields that ``changes_query`` selects, in its order (the rest is derived)."""
    return [f for f in SCHEMAS[name] if f.name not in _SPECS[name].derived and f.name != "day"]


def finish(name: str, columns: dict[str, pa.Array]) -> pa.RecordBatch:
    """The dataset's record batch from its selected columns (typed as the schema says)."""
    for column in JSON_COLUMNS.get(name, ()):
        columns[column] = _json_null(columns[column])
    if name == "assets":
        columns["source_extension"] = _extension(columns["source_uri"])
    columns["day"] = pc.cast(columns[CHANGE_COLUMN[name]], pa.date32())
    schema = SCHEMAS[name]
    return pa.RecordBatch.from_arrays([columns.pop(f.name) for f in schema], schema=schema)


def _json_null(values: pa.Array) -> pa.Array:
    # SQLAlchemy stores Python None in a JSON column as the JSON text null: export it as null.
    return pc.if_else(pc.equal(values, "null"), pa.scalar(None, pa.string()), values)


def _extension(uris: pa.Array) -> pa.Array:
    name = pc.replace_substring_regex(pc.utf8_lower(uris), r"[?#].*$", "")
    found = pc.extract_regex(name, r"\.(?P<ext>[a-z0-9]{1,10})$")
    return pc.if_else(found.is_valid(), found.field("ext"), pa.scalar(None, pa.string()))


def bind_moment(catalog: Catalog, moment: datetime) -> datetime:
    """``moment`` as the catalog compares it: aware UTC, or naive UTC text on SQLite."""
    moment = moment.astimezone(timezone.utc)
    return moment.replace(tzinfo=None) if catalog.engine.dialect.name == "sqlite" else moment
