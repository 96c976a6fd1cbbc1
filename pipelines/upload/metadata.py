"""What the catalog keeps about an original image, read from its header: never published."""

from __future__ import annotations

from datetime import datetime

import pyvips
from pyvips import ffi, glib_lib, vips_lib


def image_metadata(header: pyvips.Image) -> dict:
    """Dimensions, orientation, camera, capture time and colour space, as JSON-ready values."""
    fields = field_names(header)

    def exif(name: str) -> str | None:
        if name not in fields:
            return None
        # libvips renders EXIF as "value (value, type, n components, n bytes)".
        value = _text(header, name).split(" (", 1)[0].strip()
        return value or None

    return {
        "width": header.width,
        "height": header.height,
        "orientation": header.get("orientation") if "orientation" in fields else 1,
        "camera_make": exif("exif-ifd0-Make"),
        "camera_model": exif("exif-ifd0-Model"),
        "captured_at": _exif_time(exif("exif-ifd2-DateTimeOriginal") or exif("exif-ifd0-DateTime")),
        "colour_space": header.interpretation,
        "icc_profile": "icc-profile-data" in fields,
        "has_alpha": bool(header.hasalpha()),
        "has_gps": any(f.startswith("exif-ifd3-") for f in fields),
        "bits_per_sample": header.get("bits-per-sample") if "bits-per-sample" in fields else None,
        "frames": header.get("n-pages") if "n-pages" in fields else 1,
    }


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


def _exif_time(text: str | None) -> str | None:
    if not text:
        return None
    try:
        return datetime.strptime(text[:19], "%Y:%m:%d %H:%M:%S").isoformat()
    except ValueError:
        return None  # cameras write junk here often enough; junk is not a capture time
