"""Images libvips cannot decode here, decoded by the Pillow family in the sandbox, finished by libvips.

HEIC (HEVC-coded HEIF: every iPhone photo) goes through pillow-heif, whose wheels
carry libheif with libde265; the pyvips-binary wheel leaves HEVC out (patents).
AVIF image sequences go through Pillow's AVIF plugin (libavif): libvips' HEIF
loader reads image items only and opens no file whose major brand is ``avis``,
and pillow-heif's wheels carry no AV1 decoder. Both are native code on hostile
bytes, so both run in a throwaway child (``run_isolated``), as video is, and
read the header first: the limits hold before a pixel is decoded.

The child decodes the primary picture (HEIF: depth, gain-map and thumbnail items
are not read) or every frame, one at a time, turns it upright (libheif applies
``irot``/``imir`` itself, so an EXIF orientation beside them is ignored; Pillow
hands libavif's as EXIF, which is applied here), shrinks it with libvips to the
intermediate ``resize`` would make, and returns those pixels with the colour
profile; resize cuts the presets from them as from libvips' own intermediate.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pyvips

from pipelines.outcome import Rejected
from pipelines.raster import SAMPLE_BYTES
from pipelines.recipe import Preset
from pipelines.upload.sandbox import run_isolated
from pipelines.upload.validate import PILLOW_HEIF, Limits, check_picture
from pipelines.vips import error_text

TIMEOUT_S = 120.0
CPU_SECONDS = 240  # decoder threads count several CPU seconds a wall second
# What the child's address space holds before it decodes: the interpreter, libvips, libheif,
# libavif, their threads' stacks and malloc arenas. The decode itself is within the budget.
BASE_MEMORY_BYTES = 1536 * 1024 ** 2
_BANDS = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}
_ROTATED = (5, 6, 7, 8)


@dataclass(frozen=True)
class Header:
    """What the decoding library reads before decoding, upright."""

    width: int
    height: int
    frames: int = 1      # an AVIF sequence's pictures
    images: int = 1      # a HEIF file's top-level images; the primary one is the picture
    tiles: int = 1       # the primary image's grid tiles, each decoded whole
    tile_pixels: int = 0
    bands: int = 3
    icc: bool = False

    def metadata(self) -> dict:
        return {"width": self.width, "height": self.height, "frames": self.frames,
                "images": self.images, "tiles": self.tiles, "icc_profile": self.icc,
                "has_alpha": self.bands in (2, 4)}


@dataclass(frozen=True)
class Decoded:
    """The intermediate: every frame shrunk to ``width`` x ``height`` (a strip when several)."""

    source_width: int   # the picture's upright size, which presets are sized from
    source_height: int
    width: int
    height: int
    frames: int
    bands: int
    pixels: bytearray
    icc: bytes | None = None
    delay: tuple[int, ...] | None = None

    def image(self) -> pyvips.Image:
        image = pyvips.Image.new_from_memory(self.pixels, self.width, self.height * self.frames,
                                             self.bands, "uchar")
        image = image.copy(interpretation="srgb" if self.bands >= 3 else "b-w")
        if self.icc:
            image.set_type(pyvips.GValue.blob_type, "icc-profile-data", self.icc)
        if self.frames > 1:
            image.set_type(pyvips.GValue.gint_type, "page-height", self.height)
            image.set_type(pyvips.GValue.array_int_type, "delay", list(self.delay or ()))
            image.set_type(pyvips.GValue.gint_type, "loop", 0)
        return image


def probe(data: bytes, decoder: str, limits: Limits) -> Header:
    """The header, read in the sandbox; Rejected ``over_limit`` past ``limits``."""
    return run_isolated(_probe, data, decoder, limits, timeout=TIMEOUT_S,
                        memory_bytes=BASE_MEMORY_BYTES, cpu_seconds=CPU_SECONDS)


def decode(data: bytes, decoder: str, presets: tuple[Preset, ...], limits: Limits) -> Decoded:
    """The intermediate ``resize`` cuts ``presets`` from, decoded in the sandbox.

    The header's limits and the decode budget (``limits.max_decode_bytes``) are
    checked in the child before decoding; the pixels returned are within that budget.
    """
    return run_isolated(_decode, data, decoder, presets, limits, timeout=TIMEOUT_S,
                        memory_bytes=BASE_MEMORY_BYTES + limits.max_decode_bytes,
                        cpu_seconds=CPU_SECONDS, max_result_bytes=limits.max_decode_bytes + 2 ** 20)


# ---------------------------------------------------------------- in the child

def _probe(data: bytes, decoder: str, limits: Limits) -> Header:
    return _read(data, decoder, limits)[1]


def _decode(data: bytes, decoder: str, presets: tuple[Preset, ...], limits: Limits) -> Decoded:
    from pipelines.transform.resize import intermediate_size

    source, header = _read(data, decoder, limits)
    width, height = intermediate_size(header.width, header.height, header.frames, header.bands,
                                      header.icc, presets, limits)
    frame_bytes = width * height * header.bands * SAMPLE_BYTES["uchar"]
    pixels = bytearray(frame_bytes * header.frames)
    view = memoryview(pixels)
    delays = []
    try:
        for index, (frame, delay) in enumerate(_frames(source, decoder, header)):
            small = frame.thumbnail_image(width, height=height, size="force")
            small.write(pyvips.Image.new_from_memory(
                view[index * frame_bytes:(index + 1) * frame_bytes], width, height,
                header.bands, "uchar"))
            delays.append(delay)
    except (OSError, ValueError, RuntimeError, pyvips.Error) as exc:
        message = error_text(exc) if isinstance(exc, pyvips.Error) else str(exc).strip()
        raise Rejected("corrupt", f"the image cannot be decoded ({decoder}): {message}") from None
    return Decoded(header.width, header.height, width, height, header.frames, header.bands,
                   pixels, _icc(source, decoder), tuple(delays) if header.frames > 1 else None)


def _read(data: bytes, decoder: str, limits: Limits):
    """The file opened by its library, header only, and its ``Header`` within ``limits``."""
    try:
        source, header = _open_heif(data) if decoder == PILLOW_HEIF else _open_avif(data)
    except (OSError, ValueError, RuntimeError, SyntaxError) as exc:
        raise Rejected("corrupt", f"the header cannot be read ({decoder}): {str(exc).strip()}") from None
    check_picture(header.width, header.height, header.frames, limits)
    if header.images > limits.max_frames:
        raise Rejected("over_limit", f"{header.images} images in one file; the limit is "
                       f"{limits.max_frames}")
    # Each tile is decoded whole, then cut to the grid: count the tiles and what they hold.
    canvas = header.tiles * header.tile_pixels
    if header.tiles > limits.max_tiles or canvas > limits.max_pixels:
        raise Rejected("over_limit", f"a grid of {header.tiles} tiles ({canvas} pixels decoded) "
                       f"exceeds the limits ({limits.max_tiles} tiles, {limits.max_pixels} pixels)")
    return source, header


def _open_heif(data: bytes):
    import pillow_heif

    # Auxiliary items are never read: not their headers, not their pixels.
    pillow_heif.options.THUMBNAILS = pillow_heif.options.DEPTH_IMAGES = False
    pillow_heif.options.AUX_IMAGES = False
    container = pillow_heif.open_heif(io.BytesIO(data), convert_hdr_to_8bit=True)
    primary = container[container.primary_index]
    tiling = primary.info.get("tiling") or {}
    width, height = primary.size  # after irot/imir: libheif applies them
    header = Header(width, height, 1, len(container),
                    tiling.get("num_columns", 1) * tiling.get("num_rows", 1),
                    tiling.get("tile_width", 0) * tiling.get("tile_height", 0),
                    _BANDS.get(primary.mode, 3), bool(primary.info.get("icc_profile")))
    return primary, header


def _open_avif(data: bytes):
    import PIL.Image

    PIL.Image.MAX_IMAGE_PIXELS = None  # the farm's limits are checked on the header instead
    picture = PIL.Image.open(io.BytesIO(data), formats=["AVIF"])
    width, height = picture.size
    if _orientation(picture) in _ROTATED:
        width, height = height, width
    header = Header(width, height, picture.n_frames, 1, 1, 0, 4 if "A" in picture.mode else 3,
                    bool(picture.info.get("icc_profile")))
    return picture, header


def _frames(source, decoder: str, header: Header):
    """Each frame as an upright libvips image, and its delay in ms, one at a time."""
    if decoder == PILLOW_HEIF:
        yield _heif_pixels(source, header), 0
        return
    for index in range(header.frames):
        source.seek(index)
        frame = source.convert("RGBA" if header.bands == 4 else "RGB")
        image = pyvips.Image.new_from_memory(frame.tobytes(), frame.width, frame.height,
                                             header.bands, "uchar")
        image = image.copy(interpretation="srgb")
        image.set_type(pyvips.GValue.gint_type, "orientation", _orientation(source))
        yield image.autorot(), source.info.get("duration", 100)


def _heif_pixels(primary, header: Header) -> pyvips.Image:
    if primary.mode not in _BANDS:  # anything else (16-bit modes) through Pillow, as 8-bit RGB
        picture = primary.to_pillow().convert("RGBA" if header.bands == 4 else "RGB")
        rows = np.asarray(picture)
    else:
        width, height = primary.size
        # libheif pads rows; the view drops the padding and numpy copies only when there is some.
        rows = np.frombuffer(primary.data, np.uint8).reshape(height, primary.stride)
        rows = np.ascontiguousarray(rows[:, :width * header.bands])
    image = pyvips.Image.new_from_memory(rows.data, primary.size[0], primary.size[1],
                                         header.bands, "uchar")
    return image.copy(interpretation="srgb" if header.bands >= 3 else "b-w")


def _icc(source, decoder: str) -> bytes | None:
    profile = source.info.get("icc_profile")
    return bytes(profile) if profile else None


def _orientation(picture) -> int:
    # libavif's irot/imir, which Pillow's plugin writes into the EXIF orientation it reports.
    return picture.getexif().get(0x0112, 1)
