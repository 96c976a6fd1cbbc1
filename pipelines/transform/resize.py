"""Resize: decode once with shrink-on-load, then cut every preset from that one intermediate.

libvips decodes the original straight to the smallest size that still serves
the largest preset (JPEG shrink-on-load makes that far cheaper than a full
decode), EXIF orientation applied; the intermediate is held in memory and each
preset is resized from it, so the file is decoded once whatever the preset count.
On a GPU worker a JPEG's intermediate can come from the GPU instead
(``pipelines.transform.gpu``); the presets are cut from it the same way.
"""

from __future__ import annotations

import math

import pyvips

from pipelines.outcome import Rejected
from pipelines.raster import Raster
from pipelines.recipe import Preset
from pipelines.transform import gpu
from pipelines.vips import error_text

_ROTATED = (5, 6, 7, 8)  # EXIF orientations that swap width and height
DEVICES = ("cpu", "gpu")


def resize(data: bytes, presets: tuple[Preset, ...], device: str = "cpu") -> list[Raster]:
    """One raster per preset, upright, never upscaled.

    ``contain`` fits inside the preset's box; ``cover`` fills the box exactly,
    cropping by ``crop`` (centre, attention, entropy...); ``fill`` stretches to
    the box exactly. ``device="gpu"`` makes the intermediate of a single-frame
    JPEG on the GPU when this process can (``pipelines.transform.gpu``); every
    other image, and any the GPU refuses, takes the CPU path. Each raster's
    ``path`` says which one made it.
    """
    if device not in DEVICES:
        raise ValueError(f"device {device!r} is not one of {DEVICES}")
    try:
        width, height, frames = _header(data)
        if frames > 1:
            return [Raster.from_image(p.name, _animated(data, p, width, height)) for p in presets]
        scale = min(1.0, max(_scale(p, width, height) for p in presets))
        intermediate, path = _intermediate(data, width, height, scale, device)
        return [Raster.from_image(p.name, _fit(intermediate, p, width, height), path=path)
                for p in presets]
    except pyvips.Error as exc:
        raise Rejected("corrupt", f"the image cannot be decoded: {error_text(exc)}") from exc


def _intermediate(data: bytes, width: int, height: int, scale: float,
                  device: str) -> tuple[pyvips.Image, str]:
    """The one decode every preset is cut from, and the path that made it."""
    size = math.ceil(width * scale), math.ceil(height * scale)
    if device == "gpu" and gpu.gpu_decoder_available() is None:
        try:
            return gpu.gpu_intermediate(data, width, height, *size), gpu.GPU_PATH
        except gpu.GpuDecodeError:
            pass  # not a JPEG the GPU takes (CMYK, grey, truncated...): libvips decides
    return pyvips.Image.thumbnail_buffer(
        data, size[0], height=size[1], size="down",
        option_string="fail_on=truncated").copy_memory(), "cpu"


def _header(data: bytes) -> tuple[int, int, int]:
    """Upright width and height, and the frame count."""
    header = pyvips.Image.new_from_buffer(data, "", access="sequential")
    orientation = header.get("orientation") if header.get_typeof("orientation") else 1
    frames = header.get("n-pages") if header.get_typeof("n-pages") else 1
    if orientation in _ROTATED:
        return header.height, header.width, frames
    return header.width, header.height, frames


def _animated(data: bytes, preset: Preset, width: int, height: int) -> pyvips.Image:
    """Every frame resized alike; validate has bounded frames x pixels already.

    ``thumbnail`` keeps page-height and delays for contain and fill, but its crop
    keeps only the first frame, so cover resizes the strip and crops each frame.
    """
    box_width, box_height = preset.box()
    scale = min(1.0, _scale(preset, width, height))
    load = "n=-1,fail_on=truncated"
    if preset.fit != "cover":
        return pyvips.Image.thumbnail_buffer(
            data, box_width, height=box_height, option_string=load,
            size="force" if preset.fit == "fill" else "down").copy_memory()
    strip = pyvips.Image.thumbnail_buffer(data, math.ceil(width * scale),
                                          height=math.ceil(height * scale), option_string=load)
    page = strip.get("page-height")
    crop_width, crop_height = min(box_width, strip.width), min(box_height, page)
    left, top = (strip.width - crop_width) // 2, (page - crop_height) // 2
    frames = [strip.crop(left, index * page + top, crop_width, crop_height)
              for index in range(strip.height // page)]
    cropped = pyvips.Image.arrayjoin(frames, across=1).copy_memory()
    cropped.set_type(pyvips.GValue.gint_type, "page-height", crop_height)
    for name in ("delay", "loop"):
        if strip.get_typeof(name):
            cropped.set_type(strip.get_typeof(name), name, strip.get(name))
    return cropped


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
