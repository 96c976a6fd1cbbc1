"""What the catalog keeps about an original image, read from its header: never published."""

from __future__ import annotations

from datetime import datetime
from fractions import Fraction

import pyvips
from pyvips import ffi, glib_lib, vips_lib

from pipelines.upload.tags import SHORT_LIMIT, Notes, clean_text

# Where a place is kept: never in a rendition (compress strips all metadata), and in the
# catalog only where the farm's policy says so (``without_gps``).
GPS_FIELDS = ("gps_lat", "gps_lon")


def image_metadata(header: pyvips.Image) -> dict:
    """Dimensions, orientation, camera, lens, capture time, place and colour space, as
    JSON-ready values; ``notes`` says what odd EXIF text was dropped or cut."""
    fields = field_names(header)
    notes = Notes()

    def exif(name: str) -> str | None:
        if name not in fields:
            return None
        # libvips renders EXIF as "value (value, type, n components, n bytes)".
        value = _text(header, name).split(" (", 1)[0].strip()
        return value or None

    def text(field: str, name: str) -> str | None:
        return clean_text(exif(name), field, notes, SHORT_LIMIT)

    original = exif("exif-ifd2-DateTimeOriginal")
    metadata = {
        "width": header.width,
        "height": header.height,
        "orientation": header.get("orientation") if "orientation" in fields else 1,
        "camera_make": text("camera_make", "exif-ifd0-Make"),
        "camera_model": text("camera_model", "exif-ifd0-Model"),
        "lens": text("lens", "exif-ifd2-LensModel"),
        "captured_at": _exif_time(original or exif("exif-ifd0-DateTime"),
                                  exif("exif-ifd2-OffsetTimeOriginal") if original else None),
        "colour_space": header.interpretation,
        "icc_profile": "icc-profile-data" in fields,
        "has_alpha": bool(header.hasalpha()),
        "has_gps": any(f.startswith("exif-ifd3-") for f in fields),
        "bits_per_sample": header.get("bits-per-sample") if "bits-per-sample" in fields else None,
        "frames": header.get("n-pages") if "n-pages" in fields else 1,
    }
    lat = _degrees(exif("exif-ifd3-GPSLatitude"), exif("exif-ifd3-GPSLatitudeRef"), "NS", 90)
    lon = _degrees(exif("exif-ifd3-GPSLongitude"), exif("exif-ifd3-GPSLongitudeRef"), "EW", 180)
    if lat is not None and lon is not None:
        metadata["gps_lat"], metadata["gps_lon"] = lat, lon
    elif exif("exif-ifd3-GPSLatitude") or exif("exif-ifd3-GPSLongitude"):
        notes.add("gps: the latitude or longitude cannot be read; the place is dropped")
    if notes:
        metadata["notes"] = list(notes)
    return metadata


def without_gps(metadata: dict) -> dict:
    """``metadata`` without the place (``has_gps`` stays: that a file carried one is no secret)."""
    return {k: v for k, v in metadata.items() if k not in GPS_FIELDS}


def _degrees(value: str | None, ref: str | None, signs: str, bound: int) -> float | None:
    """EXIF's degrees, minutes and seconds ("51/1 30/1 646/25") as signed decimal degrees."""
    if not value:
        return None
    try:
        parts = [Fraction(part) for part in value.split()[:3]]
    except (ValueError, ZeroDivisionError):
        return None
    degrees = sum(part / 60 ** i for i, part in enumerate(parts))
    if not parts or not 0 <= degrees <= bound:
        return None
    sign = -1 if (ref or "").strip().upper()[:1] == signs[1] else 1
    return round(sign * float(degrees), 7)


def field_names(header: pyvips.Image) -> set[str]:
    """Every metadata field's name, whatever its bytes.

    pyvips' ``get_fields`` decodes names as UTF-8 and raises on the first that is
    not; libvips names PNG text fields after their keyword, which the PNG spec
    makes Latin-1 (``png-comment-0-Größe``). Such names are read as Latin-1 here:
    pyvips cannot fetch a field by that name, and none is one Mediafarm reads.
    """
    array = vips_lib.vips_image_get_fields(header.pointer)
    names, i = set(), 0
    while array[i] != ffi.NULL:
        names.add(_decode(ffi.string(array[i])))
        glib_lib.g_free(array[i])
        i += 1
    glib_lib.g_free(array)
    return names


def _text(header: pyvips.Image, name: str) -> str:
    try:
        return str(header.get(name))
    except UnicodeDecodeError as exc:
        # Text libvips handed on unchecked (recent versions make it valid UTF-8 first).
        return _decode(exc.object)


def _decode(raw: bytes) -> str:
    """UTF-8 when it is; else Latin-1, which every byte string is (PNG's tEXt encoding)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _exif_time(text: str | None, offset: str | None = None) -> str | None:
    """EXIF's local time as ISO text, with its offset when the file gives one (EXIF 2.31)."""
    if not text:
        return None
    try:
        moment = datetime.strptime(text[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None  # cameras write junk here often enough; junk is not a capture time
    if offset:
        try:
            return datetime.fromisoformat(f"{moment.isoformat()}{offset.strip()}").isoformat()
        except ValueError:
            pass  # an offset that is not one: the local time alone
    return moment.isoformat()
