"""What this process can decode, found once by decoding a tiny sample of each coding.

Wheels differ in what they carry: pyvips-binary has no HEVC decoder (patents) and
no JPEG XL; pillow-heif's wheels bring libheif with libde265; Pillow's bring libavif.
Asking a library which plugins it was built with is not the same as decoding, so
each sample (``pipelines.upload.samples``) is decoded for real. The answers route
uploads to a decoder (validate) and say which content types the HTTP API accepts.
"""

from __future__ import annotations

import functools
import io
import logging

import pyvips

from pipelines import vips  # noqa: F401  (hardened libvips before any load)
from pipelines.upload.samples import SAMPLES

# Decoders, as "<library>:<coding>".
LIBVIPS_HEVC, LIBVIPS_AV1 = "libvips:hevc", "libvips:av1"
PILLOW_HEIF_HEVC, PILLOW_AVIS = "pillow-heif:hevc", "pillow:avis"

# Each image content type and the decoders, any one of which reads it.
MEDIA_TYPES: dict[str, tuple[str, ...]] = {
    "image/jpeg": ("libvips:jpeg",),
    "image/png": ("libvips:png",),
    "image/webp": ("libvips:webp",),
    "image/gif": ("libvips:gif",),
    "image/avif": (LIBVIPS_AV1,),
    "image/heic": (LIBVIPS_HEVC, PILLOW_HEIF_HEVC),
    "image/heif": (LIBVIPS_HEVC, PILLOW_HEIF_HEVC),
}


def has_loader(name: str) -> bool:
    """Whether this libvips has the operation ``name`` (``jxlload_buffer``, ``uhdrload``...)."""
    return bool(pyvips.type_find("VipsOperation", name))


@functools.cache
def decoders() -> frozenset[str]:
    """Every decoder whose sample decodes here (once per process)."""
    found = {f"libvips:{coding}" for coding in ("jpeg", "png", "webp", "gif")
             if _libvips_decodes(SAMPLES[coding])}
    if _libvips_decodes(SAMPLES["av1"]):
        found.add(LIBVIPS_AV1)
    if _libvips_decodes(SAMPLES["hevc"]):
        found.add(LIBVIPS_HEVC)
    if _pillow_heif_decodes(SAMPLES["hevc"]):
        found.add(PILLOW_HEIF_HEVC)
    if _pillow_decodes_sequence(SAMPLES["avis"]):
        found.add(PILLOW_AVIS)
    return frozenset(found)


def image_media_types() -> frozenset[str]:
    """The image content types some decoder here reads."""
    have = decoders()
    return frozenset(t for t, options in MEDIA_TYPES.items() if have.intersection(options))


def _libvips_decodes(sample: bytes) -> bool:
    # A decoder this build lacks is an expected answer here, not a warning for the log.
    log = logging.getLogger("pyvips")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        image = pyvips.Image.new_from_buffer(sample, "", fail_on="warning")
        return image.avg() > 0
    except pyvips.Error:
        return False
    finally:
        log.setLevel(level)


def _pillow_heif_decodes(sample: bytes) -> bool:
    try:
        import pillow_heif

        picture = pillow_heif.open_heif(io.BytesIO(sample), convert_hdr_to_8bit=True)
        return picture.size == (8, 8) and any(picture.data)
    except Exception:  # noqa: BLE001 - not installed, no HEVC decoder, a wheel that does not load
        return False


def _pillow_decodes_sequence(sample: bytes) -> bool:
    try:
        import PIL.Image

        with PIL.Image.open(io.BytesIO(sample), formats=["AVIF"]) as picture:
            picture.seek(1)
            return picture.size == (8, 8) and picture.convert("RGB").getpixel((4, 4))[2] > 100
    except Exception:  # noqa: BLE001 - Pillow missing, or built without its AVIF plugin
        return False
