"""An original's metadata as the typed columns of its ``blobs`` row, where people filter.

The stages hand on one JSON document per original (``Blob.media_metadata``: what validation
read, see docs/metadata.md); this picks out the fields people filter and sort by, typed,
so that a query need not parse JSON. The document keeps everything, these fields included.
The columns live on ``blobs``, keyed by the content's SHA-256: they describe the bytes,
which every asset with those bytes shares, and are read once per content, not per upload.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone

# Each column, named as the metadata's key, and its Python type. Text is already bounded by
# the stages (pipelines.upload.tags); the widths below only guard the columns.
COLUMNS: dict[str, type] = {
    "width": int, "height": int, "duration_s": float, "video_codec": str, "audio_codec": str,
    "frame_rate": float, "captured_at": datetime, "camera_make": str, "camera_model": str,
    "lens": str, "gps_lat": float, "gps_lon": float, "artist": str, "album": str, "title": str,
    "track": int, "year": int, "genre": str, "bit_rate": int, "sample_rate": int, "channels": int,
}
KINDS = ("image", "video", "audio")
# Every column these fill: the kind (from the media type), then the metadata's.
FILLED = ("kind", *COLUMNS)
# The widths of the text columns (catalog.models.Blob and migration 0009).
WIDTHS = {"video_codec": 40, "audio_codec": 40, "camera_make": 200, "camera_model": 200,
          "lens": 200, "genre": 200, "artist": 1000, "album": 1000, "title": 1000}
# Integer columns are 32-bit but for the bit rate: a value past its column's range is dropped.
_INT_BITS = {"bit_rate": 63}


def metadata_columns(metadata: dict | None, media_type: str | None) -> dict:
    """The typed columns for an original with ``metadata`` and ``media_type``: every column
    of ``FILLED``, None where the metadata has no usable value."""
    metadata = metadata or {}
    kind = (media_type or "").split("/", 1)[0]
    values: dict = {"kind": kind if kind in KINDS and metadata else None}
    for column, type_ in COLUMNS.items():
        values[column] = _typed(metadata.get(column), type_, WIDTHS.get(column),
                                _INT_BITS.get(column, 31))
    return values


def with_columns(row: dict) -> dict:
    """A ``blobs`` row (sha256, size, media_type, store, media_metadata) with its typed columns."""
    return {**row, **metadata_columns(row.get("media_metadata"), row.get("media_type"))}


def _typed(value: object, type_: type, width: int | None, bits: int) -> object:
    if value is None or isinstance(value, (dict, list)):
        return None
    if type_ is str:
        return str(value)[:width] or None
    if type_ is datetime:
        return _moment(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or (isinstance(value, float) and not math.isfinite(value)):
        return None
    if type_ is int:
        number = int(value)
        return number if -(2 ** bits) <= number < 2 ** bits else None
    try:
        return float(value)
    except OverflowError:  # an integer past any float
        return None


def _moment(value: object) -> datetime | None:
    """ISO text as an aware UTC datetime; a time without an offset (EXIF's local clock) is
    taken as UTC, since the file does not say where it was."""
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    # Stored as UTC: SQLite keeps a datetime's wall clock and drops its offset.
    return moment.astimezone(timezone.utc)
