"""Resize: decode once with shrink-on-load, then cut every preset from that one intermediate.

libvips decodes the original straight to the smallest size that still serves
the largest preset (JPEG shrink-on-load makes that far cheaper than a full
decode), EXIF orientation applied; the intermediate is held in memory and each
preset is resized from it, so the file is decoded once whatever the preset count.
On a GPU worker a JPEG's intermediate can come from the GPU instead
(``pipelines.transform.gpu``); the presets are cut from it the same way.

Animations (GIF, WebP, AVIF sequences) are read once into a strip of shrunk
frames and cut frame by frame, straight into the rasters' buffers. A few KB of GIF
can describe gigabytes of frames, so what every frame would be kept at is counted
from the header first, against ``Limits.max_decode_bytes``.

HEIF files are collections: the primary image is the picture. Images libvips
cannot decode here (HEIC, AVIF sequences) come decoded and shrunk from the
sandbox (``pipelines.transform.pillow_decode``) and are cut the same way.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import pyvips

from pipelines.outcome import Rejected
from pipelines.raster import SAMPLE_BYTES, Raster, written
from pipelines.recipe import Preset
from pipelines.transform import gpu, pillow_decode
from pipelines.transform.convert import needs_conversion
from pipelines.transform.perceptual import phash_image
from pipelines.upload.validate import LIBVIPS, Limits, check_decode_bytes, image_decoder, read_header
from pipelines.vips import error_text

_ROTATED = (5, 6, 7, 8)  # EXIF orientations that swap width and height
DEVICES = ("cpu", "gpu")
# Working memory, in frames of the largest rendition, held once whatever the frame count:
# libwebp's animation encoder (its canvases and candidate frames), libvips' thread buffers
# and the allocator's slack: 100 frames of 1000x1000 measured up to about 13
# (tests/unit/test_image_bombs.py).
_WORKING_FRAMES = 32


def resize(data: bytes, presets: tuple[Preset, ...], device: str = "cpu",
           limits: Limits = Limits(), decoder: str | None = None) -> list[Raster]:
    """One raster per preset, upright, never upscaled.

    ``contain`` fits inside the preset's box; ``cover`` fills the box exactly,
    cropping by ``crop`` (centre, attention, entropy...); ``fill`` stretches to
    the box exactly. ``device="gpu"`` makes the intermediate of a single-frame
    JPEG on the GPU when this process can (``pipelines.transform.gpu``); every
    other image, and any the GPU refuses, takes the CPU path. Each raster's
    ``path`` says which one made it. What the decode would hold is counted from
    the header first: past ``limits.max_decode_bytes`` it is Rejected ``over_limit``.
    ``decoder`` is ``Validated.decoder`` (found from the bytes when None).
    """
    return _resize(data, presets, device, limits, decoder, hashed=False)[0]


def resize_hashed(data: bytes, presets: tuple[Preset, ...], device: str = "cpu",
                  limits: Limits = Limits(),
                  decoder: str | None = None) -> tuple[list[Raster], int]:
    """``resize``'s rasters and the picture's 64-bit pHash (``pipelines.transform.perceptual``),
    taken from the same intermediate (an animation's first frame): no second decode."""
    return _resize(data, presets, device, limits, decoder, hashed=True)


def _resize(data: bytes, presets: tuple[Preset, ...], device: str, limits: Limits,
            decoder: str | None, hashed: bool) -> tuple[list[Raster], int | None]:
    if device not in DEVICES:
        raise ValueError(f"device {device!r} is not one of {DEVICES}")
    try:
        decoder = decoder or image_decoder(data)
        if decoder != LIBVIPS:
            return _cut_decoded(pillow_decode.decode(data, decoder, presets, limits), presets,
                                hashed)
        header = _header(data)
        width, height = header.width, header.height
        scale, size, outputs = _plan(header, presets)
        _check_budget(header, size, outputs, limits)
        if header.frames > 1:
            return _animated(data, presets, width, height, size, hashed)
        intermediate, path = _intermediate(data, width, height, scale, device, header.page)
        return ([Raster.from_image(p.name, _fit(intermediate, p, width, height), path=path)
                 for p in presets], phash_image(intermediate) if hashed else None)
    except pyvips.Error as exc:
        raise Rejected("corrupt", f"the image cannot be decoded: {error_text(exc)}") from exc


def decode_bytes(data: bytes, presets: tuple[Preset, ...]) -> int:
    """What ``resize`` counts against the budget for these bytes and presets (header only)."""
    header = _header(data)
    _, size, outputs = _plan(header, presets)
    return _check_budget(header, size, outputs, Limits(max_decode_bytes=sys.maxsize))


def intermediate_size(width: int, height: int, frames: int, bands: int, icc: bool,
                      presets: tuple[Preset, ...], limits: Limits) -> tuple[int, int]:
    """The intermediate's size for an upright 8-bit picture decoded elsewhere (the sandbox),
    its decode counted against the budget as ``resize`` counts its own."""
    header = _Header(width, height, frames, bands, "uchar",
                     needs_conversion(icc, "srgb", "uchar"), holds_every_frame=False)
    _, size, outputs = _plan(header, presets)
    _check_budget(header, size, outputs, limits)
    return size


def _cut_decoded(decoded: pillow_decode.Decoded, presets: tuple[Preset, ...],
                 hashed: bool) -> tuple[list[Raster], int | None]:
    width, height = decoded.source_width, decoded.source_height
    image = decoded.image()
    phash = phash_image(image) if hashed else None
    if decoded.frames > 1:
        return _cut_strip(decoded.pixels, image, presets, width, height), phash
    return [Raster.from_image(p.name, _fit(image, p, width, height)) for p in presets], phash


def _plan(header: _Header,
          presets: tuple[Preset, ...]) -> tuple[float, tuple[int, int], list[tuple[int, int]]]:
    """The intermediate's scale and size, and each preset's raster size, per frame."""
    width, height = header.width, header.height
    scale = min(1.0, max(_scale(p, width, height) for p in presets))
    size = math.ceil(width * scale), math.ceil(height * scale)
    return scale, size, [output_size(p, width, height) for p in presets]


def _intermediate(data: bytes, width: int, height: int, scale: float,
                  device: str, page: int | None = None) -> tuple[pyvips.Image, str]:
    """The one decode every preset is cut from, and the path that made it."""
    size = math.ceil(width * scale), math.ceil(height * scale)
    if page is not None:  # a HEIF file's primary image
        return pyvips.Image.thumbnail_buffer(
            data, size[0], height=size[1], size="down",
            option_string=f"fail_on=truncated,page={page}").copy_memory(), "cpu"
    if device == "gpu" and gpu.gpu_decoder_available() is None:
        try:
            return gpu.gpu_intermediate(data, width, height, *size), gpu.GPU_PATH
        except gpu.GpuDecodeError:
            pass  # not a JPEG the GPU takes (CMYK, grey, truncated...): libvips decides
    return pyvips.Image.thumbnail_buffer(
        data, size[0], height=size[1], size="down",
        option_string="fail_on=truncated").copy_memory(), "cpu"


@dataclass(frozen=True)
class _Header:
    width: int    # upright
    height: int
    frames: int
    bands: int
    format: str
    converts: bool           # to_srgb will make new pixels: the rasters are held twice
    holds_every_frame: bool  # the loader keeps the whole animation while it is read
    page: int | None = None  # HEIF: the primary image, the one picture of the collection


def _header(data: bytes) -> _Header:
    """What the file says it is, without decoding pixels."""
    header, loader = read_header(data, "image")

    def field(name: str, default):
        return header.get(name) if header.get_typeof(name) else default

    width, height = header.width, header.height
    if field("orientation", 1) in _ROTATED:
        width, height = height, width
    converts = needs_conversion(bool(header.get_typeof("icc-profile-data")),
                                header.interpretation, header.format)
    # Measured with libvips 8.18: gifload keeps one frame; webpload keeps every frame
    # at full size until the strip is read. Loaders not measured are counted as webpload.
    frames = field("n-pages", 1)
    page = None
    if loader.startswith("heifload"):  # top-level images are a collection, not frames
        frames, page = 1, field("heif-primary", 0)
    holds = frames > 1 and not loader.startswith("gifload")
    return _Header(width, height, frames, header.bands, header.format, converts, holds, page)


def _check_budget(header: _Header, size: tuple[int, int], outputs: list[tuple[int, int]],
                  limits: Limits) -> int:
    """Count what every frame is kept at, at the worse of reading and cutting, before decoding.

    Reading holds the shrunk intermediate (and, for some loaders, every frame at
    full size); cutting holds the intermediate and each preset's raster, twice
    when ``to_srgb`` must convert. An animation's preset the size of its
    intermediate shares it. Held once: the source frame being decoded (and the
    previous one, which an animation's next frame is drawn over), and working
    memory in frames of the largest rendition.
    """
    reading = [size] + ([(header.width, header.height)] if header.holds_every_frame else [])
    cutting = list(outputs) * (2 if header.converts else 1)
    if header.frames == 1 or size not in outputs:
        cutting.append(size)
    kept = max(reading, cutting, key=lambda sizes: sum(w * h for w, h in sizes))
    largest = max(outputs, key=lambda sizes: sizes[0] * sizes[1])
    once = [(header.width, header.height)] * min(header.frames, 2) + [largest] * _WORKING_FRAMES
    return check_decode_bytes(header.frames, header.width, header.height,
                              header.bands * SAMPLE_BYTES[header.format], kept, once, limits)


def output_size(preset: Preset, width: int, height: int) -> tuple[int, int]:
    """A preset's raster size for an upright ``width`` x ``height`` source (per frame)."""
    box_width, box_height = preset.box()
    scale = min(1.0, _scale(preset, width, height))
    if preset.fit == "contain":
        return max(1, round(width * scale)), max(1, round(height * scale))
    if preset.fit == "cover":
        return (min(box_width, math.ceil(width * scale)),
                min(box_height, math.ceil(height * scale)))
    return box_width, box_height


def _animated(data: bytes, presets: tuple[Preset, ...], width: int, height: int,
              size: tuple[int, int], hashed: bool) -> tuple[list[Raster], int | None]:
    """Read every frame once, shrunk as it streams, then cut each preset from that strip.

    The strip and each preset are written frame by frame straight into Python
    buffers, so what is held is what ``_check_budget`` counted, never a full-size
    decode per preset. The preset the strip already matches shares it.
    """
    strip = pyvips.Image.thumbnail_buffer(data, size[0], height=size[1], size="force",
                                          option_string="n=-1,fail_on=truncated")
    page = strip.get("page-height") if strip.get_typeof("page-height") else strip.height
    frame_width, count = strip.width, strip.height // page
    like = _like(strip)
    pixels = written(strip)
    del strip  # the loader's own frames go with it, before the presets are cut
    whole = _wrap(pixels, frame_width, page, count, like)
    return (_cut_strip(pixels, whole, presets, width, height),
            phash_image(whole) if hashed else None)


def _cut_strip(pixels: bytearray, whole: pyvips.Image, presets: tuple[Preset, ...], width: int,
               height: int) -> list[Raster]:
    """Each preset cut frame by frame from a strip of shrunk frames over ``pixels``."""
    page = whole.get("page-height")
    frame_width, count = whole.width, whole.height // page
    like = _like(whole)
    frames = [whole.crop(0, index * page, frame_width, page) for index in range(count)]
    rasters = []
    for preset in presets:
        cut_width, cut_height = output_size(preset, width, height)
        if (cut_width, cut_height) != (frame_width, page):
            cut = written(*(_fit_frame(f, preset, width, height) for f in frames))
        else:
            cut = pixels
        rendition = _wrap(cut, cut_width, cut_height, count, like)
        rasters.append(Raster.from_image(preset.name, rendition, pixels=cut))
    return rasters


def _like(strip: pyvips.Image) -> dict:
    """What a strip's renditions keep of it: its pixel layout and frame metadata."""
    return {"bands": strip.bands, "format": strip.format, "interpretation": strip.interpretation,
            "fields": {name: (strip.get_typeof(name), strip.get(name))
                       for name in ("delay", "loop", "icc-profile-data") if strip.get_typeof(name)}}


def _fit_frame(frame: pyvips.Image, preset: Preset, width: int, height: int) -> pyvips.Image:
    """One frame of one preset; cover crops the centre, so the frames stay aligned."""
    if preset.fit != "cover":
        return _fit(frame, preset, width, height)
    scale = min(1.0, _scale(preset, width, height))
    scaled = frame.thumbnail_image(math.ceil(width * scale), height=math.ceil(height * scale),
                                   size="force")
    crop_width, crop_height = output_size(preset, width, height)
    return scaled.crop((scaled.width - crop_width) // 2, (scaled.height - crop_height) // 2,
                       crop_width, crop_height)


def _wrap(pixels: bytearray, width: int, page: int, count: int, like: dict) -> pyvips.Image:
    """An animation strip over pixels already in memory, with the source's frame metadata."""
    image = pyvips.Image.new_from_memory(pixels, width, page * count, like["bands"],
                                         like["format"])
    image = image.copy(interpretation=like["interpretation"])
    image.set_type(pyvips.GValue.gint_type, "page-height", page)
    for name, (gtype, value) in like["fields"].items():
        image.set_type(gtype, name, value)
    return image


def _scale(preset: Preset, width: int, height: int) -> float:
    """The scale the intermediate needs so that this preset never has to upscale."""
    box_width, box_height = preset.box()
    if preset.fit == "contain":
        return min(box_width / width, box_height / height)
    return max(box_width / width, box_height / height)


def _fit(image: pyvips.Image, preset: Preset, width: int, height: int) -> pyvips.Image:
    """Cut one preset from the intermediate, sized from the original so no neighbour changes it."""
    box_width, box_height = preset.box()
    if preset.fit == "contain":
        scale = min(1.0, _scale(preset, width, height))
        return image.thumbnail_image(max(1, round(width * scale)),
                                     height=max(1, round(height * scale)), size="force")
    if preset.fit == "cover":
        return image.thumbnail_image(box_width, height=box_height, crop=preset.crop, size="down")
    return image.thumbnail_image(box_width, height=box_height, size="force")
