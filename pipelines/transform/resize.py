"""Resize: decode once with shrink-on-load, then cut every preset from that one intermediate.

libvips decodes the original straight to the smallest size that still serves
the largest preset (JPEG shrink-on-load makes that far cheaper than a full
decode), EXIF orientation applied; the intermediate is held in memory and each
preset is resized from it, so the file is decoded once whatever the preset count.
"""

from __future__ import annotations

import math

import pyvips

from pipelines.outcome import Rejected
from pipelines.raster import Raster
from pipelines.recipe import Preset
from pipelines.vips import first_line

_ROTATED = (5, 6, 7, 8)  # EXIF orientations that swap width and height


def resize(data: bytes, presets: tuple[Preset, ...]) -> list[Raster]:
    """One raster per preset, upright, never upscaled.

    ``contain`` fits inside the preset's box; ``cover`` fills the box exactly,
    cropping by ``crop`` (centre, attention, entropy...); ``fill`` stretches to
    the box exactly.
    """
    try:
        width, height = _upright_size(data)
        scale = min(1.0, max(_scale(p, width, height) for p in presets))
        intermediate = pyvips.Image.thumbnail_buffer(
            data, math.ceil(width * scale), height=math.ceil(height * scale), size="down",
            option_string="fail_on=truncated").copy_memory()
        return [Raster.from_image(p.name, _fit(intermediate, p)) for p in presets]
    except pyvips.Error as exc:
        raise Rejected("corrupt", f"the image cannot be decoded: {first_line(exc)}") from exc


def _upright_size(data: bytes) -> tuple[int, int]:
    header = pyvips.Image.new_from_buffer(data, "", access="sequential")
    orientation = header.get("orientation") if header.get_typeof("orientation") else 1
    if orientation in _ROTATED:
        return header.height, header.width
    return header.width, header.height


def _scale(preset: Preset, width: int, height: int) -> float:
    """The scale the intermediate needs so that this preset never has to upscale."""
    box_width, box_height = preset.box()
    if preset.fit == "contain":
        return min(box_width / width, box_height / height)
    return max(box_width / width, box_height / height)


def _fit(image: pyvips.Image, preset: Preset) -> pyvips.Image:
    box_width, box_height = preset.box()
    if preset.fit == "contain":
        return image.thumbnail_image(box_width, height=box_height, size="down")
    if preset.fit == "cover":
        return image.thumbnail_image(box_width, height=box_height, crop=preset.crop, size="down")
    return image.thumbnail_image(box_width, height=box_height, size="force")
