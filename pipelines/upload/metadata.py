"""What the catalog keeps about an original image, read from its header: never published."""

from __future__ import annotations

from datetime import datetime

import pyvips


def image_metadata(header: pyvips.Image) -> dict:
    """Dimensions, orientation, camera, capture time and colour space, as JSON-ready values."""
    fields = set(header.get_fields())

    def exif(name: str) -> str | None:
        if name not in fields:
            return None
        # libvips renders EXIF as "value (value, type, n components, n bytes)".
        value = str(header.get(name)).split(" (", 1)[0].strip()
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


def _exif_time(text: str | None) -> str | None:
    if not text:
        return None
    try:
        return datetime.strptime(text[:19], "%Y:%m:%d %H:%M:%S").isoformat()
    except ValueError:
        return None  # cameras write junk here often enough; junk is not a capture time
