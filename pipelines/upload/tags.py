"""What a file says about itself in text: audio tags (Mutagen), container tags (FFmpeg), made safe.

Tags are the uploader's own text and may be anything: a title of a megabyte, binary junk,
NUL bytes, text in the wrong encoding. None of it may fail the asset. Every value is made
text, stripped of control characters (PostgreSQL refuses NUL in text and lone surrogates
in UTF-8) and bounded (``TEXT_LIMIT``, ``SHORT_LIMIT`` for the indexed fields); a number
that does not parse is dropped. Each change is said in the metadata's ``notes``.

Audio tags are read with Mutagen (maintained, pure Python, every tag format the farm
accepts), chosen by the demuxer FFmpeg picked, never by a file name: ID3 in MP3, MP4
atoms, Vorbis comments in FLAC and Ogg. Where Mutagen has no reader (WAV's RIFF INFO,
Matroska, MPEG-TS) or cannot read the tags, FFmpeg's container tags are used instead.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from datetime import datetime, timezone

TEXT_LIMIT = 1_000   # artist, album, title and other tags
SHORT_LIMIT = 200    # what the catalog indexes (camera, lens, genre): a B-tree entry stays small
MAX_NOTES = 20
MAX_EXTRA_TAGS = 32  # other tags kept in the JSON beside the typed fields
_KEY_LIMIT = 64
# C0 controls but tab and newline, DEL, C1 controls, and lone surrogates.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_ISO6709 = re.compile(r"^([+-]\d{1,2}(?:\.\d+)?)([+-]\d{1,3}(?:\.\d+)?)")
# Tag names, as Mutagen's easy interfaces and Vorbis comments (lower-cased) or FFmpeg give
# them, for each typed field.
_FIELDS = {
    "artist": ("artist",), "album": ("album",), "title": ("title",),
    "track": ("tracknumber", "track"), "year": ("date", "year", "originaldate"),
    "genre": ("genre",),
}
_LIMITS = {"genre": SHORT_LIMIT}
# Tags that only repeat what the probe knows, or say which program wrote the file.
_SKIPPED = frozenset({"encoder", "major_brand", "minor_version", "compatible_brands",
                      "handler_name", "vendor_id", "creation_time", "location", "location-eng"})


class Notes(list):
    """What was dropped or changed, one sentence each, at most ``MAX_NOTES``."""

    def add(self, text: str) -> None:
        if len(self) < MAX_NOTES:
            self.append(text)


def clean_text(value: object, field: str, notes: Notes, limit: int = TEXT_LIMIT) -> str | None:
    """``value`` as safe text of at most ``limit`` characters, or None when nothing is left."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = str(value)
    safe = _UNSAFE.sub("", text)
    if safe != text:
        notes.add(f"{field}: {len(text) - len(safe)} control or invalid characters removed")
    safe = safe.strip()
    if len(safe) > limit:
        notes.add(f"{field}: truncated to {limit} of {len(safe)} characters")
        safe = safe[:limit].rstrip()
    return safe or None


def leading_int(text: str | None, field: str, notes: Notes, low: int, high: int) -> int | None:
    """The number a tag starts with ("3/12" is 3, "2021-05-04" is 2021), within bounds."""
    if text is None:
        return None
    found = re.match(r"\s*(\d{1,9})", text)
    number = int(found.group(1)) if found else None
    if number is None or not low <= number <= high:
        notes.add(f"{field}: {text[:40]!r} is not a {field} number; dropped")
        return None
    return number


def audio_tags(source, demuxer: str, container_tags: Mapping[str, str],
               notes: Notes) -> dict:
    """The typed tag fields (artist, album, title, track, year, genre) and ``tags`` (the rest).

    ``source`` is a path or a seekable binary file; ``demuxer`` is FFmpeg's name for the
    format (``container.format.name``); ``container_tags`` are FFmpeg's tags, used where
    Mutagen reads none.
    """
    ffmpeg = {str(k).lower(): [v] for k, v in container_tags.items()}
    found = _mutagen_tags(source, demuxer, notes)
    if not found:
        return typed_tags(ffmpeg, notes)
    # A frame Mutagen could not parse, it skips; FFmpeg may have read it (and tells if not).
    for field, names in _FIELDS.items():
        if not any(found.get(n) for n in names):
            name = next((n for n in names if _first(ffmpeg.get(n)) not in (None, "")), None)
            if name is not None:
                found[name] = ffmpeg[name]
                notes.add(f"{field}: unreadable to Mutagen; FFmpeg's reading is kept")
    return typed_tags(found, notes)


def typed_tags(found: Mapping[str, list], notes: Notes) -> dict:
    """From tag lists by lower-case name: the typed fields and up to ``MAX_EXTRA_TAGS`` others."""
    first = {name: _first(values) for name, values in found.items()}
    result: dict = {}
    used = set()
    for field, names in _FIELDS.items():
        name = next((n for n in names if first.get(n) not in (None, "")), None)
        if name is None:
            continue
        used.add(name)
        text = clean_text(first[name], field, notes, _LIMITS.get(field, TEXT_LIMIT))
        if field == "track":
            text = leading_int(text, field, notes, 0, 99_999)
        elif field == "year":
            text = leading_int(text, field, notes, 1, 9_999)
        if text is not None:
            result[field] = text
    extra = {}
    for name, value in first.items():
        if name in used or name in _SKIPPED or value in (None, ""):
            continue
        if len(extra) == MAX_EXTRA_TAGS:
            notes.add(f"tags: only the first {MAX_EXTRA_TAGS} other tags are kept")
            break
        key = clean_text(name, "tag name", notes, _KEY_LIMIT)
        text = clean_text(value, f"tag {key}", notes)
        if key and text:
            extra[key] = text
    if extra:
        result["tags"] = extra
    return result


def _first(values) -> object:
    if isinstance(values, (list, tuple)):
        return values[0] if values else None
    return values


def _mutagen_tags(source, demuxer: str, notes: Notes) -> dict[str, list]:
    """Tags by lower-case name through Mutagen; {} where it has no reader or reads none."""
    reader = _reader(demuxer)
    if reader is None:
        return {}
    opened = open(source, "rb") if isinstance(source, str) else source
    try:
        audio = reader(opened)
        tags = getattr(audio, "tags", None) or {}
        return {str(k).lower(): list(v) if isinstance(v, (list, tuple)) else [v]
                for k, v in tags.items()}
    except Exception as exc:  # noqa: BLE001 - any tag, however broken, must not stop the file
        notes.add(f"tags: Mutagen could not read them ({type(exc).__name__}: "
                  f"{clean_text(exc, 'error', Notes(), 160)}); FFmpeg's reading is used")
        return {}
    finally:
        if opened is not source:
            opened.close()


def _reader(demuxer: str):
    """The Mutagen reader for FFmpeg's demuxer name, or None (read FFmpeg's tags instead)."""
    import mutagen
    from mutagen.easymp4 import EasyMP4
    from mutagen.flac import FLAC
    from mutagen.mp3 import EasyMP3
    from mutagen.oggflac import OggFLAC
    from mutagen.oggopus import OggOpus
    from mutagen.oggspeex import OggSpeex
    from mutagen.oggvorbis import OggVorbis

    name = demuxer.split(",")[0]
    if name == "ogg":  # which Ogg codec: Mutagen scores the first page's magic, no name needed
        return lambda file: mutagen.File(file, options=[OggVorbis, OggOpus, OggFLAC, OggSpeex])
    return {"mp3": EasyMP3, "flac": FLAC, "mov": EasyMP4}.get(name)


def buffered(reader: io.RawIOBase) -> io.BufferedReader:
    """A raw reader (e.g. a served source's) buffered, as Mutagen reads in small pieces."""
    return io.BufferedReader(reader, buffer_size=64 * 1024)


# -- what a video's container says about where and when ------------------------------------------


def container_fields(tags: Mapping[str, str], notes: Notes) -> dict:
    """Capture time, camera and place from a container's tags (MP4/QuickTime as phones write)."""
    result: dict = {}
    created = _first_of(tags, "com.apple.quicktime.creationdate", "creation_time", "date")
    when = iso_time(created)
    if when:
        result["captured_at"] = when
    for field, names in (("camera_make", ("com.apple.quicktime.make", "make")),
                         ("camera_model", ("com.apple.quicktime.model", "model"))):
        text = clean_text(_first_of(tags, *names), field, notes, SHORT_LIMIT)
        if text:
            result[field] = text
    place = _first_of(tags, "com.apple.quicktime.location.iso6709", "location")
    if place:
        point = iso6709(place)
        result["has_gps"] = True
        if point:
            result["gps_lat"], result["gps_lon"] = point
        else:
            notes.add(f"location: {place[:40]!r} is not an ISO 6709 point; dropped")
    return result


def _first_of(tags: Mapping[str, str], *names: str) -> str | None:
    lowered = {str(k).lower(): v for k, v in tags.items()}
    return next((lowered[n] for n in names if lowered.get(n)), None)


def iso6709(text: str) -> tuple[float, float] | None:
    """(latitude, longitude) of an ISO 6709 decimal-degree point ("+51.5074-000.1278/")."""
    found = _ISO6709.match(text.strip())
    if not found:
        return None
    lat, lon = float(found.group(1)), float(found.group(2))
    return (lat, lon) if abs(lat) <= 90 and abs(lon) <= 180 else None


def iso_time(text: str | None) -> str | None:
    """An ISO 8601 time as ISO text (UTC when it says so); None for anything else."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc)
    return moment.replace(microsecond=0).isoformat()
