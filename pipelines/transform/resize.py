"""Resize with shrink-on-load: libvips decodes only as many pixels as each preset needs."""

from __future__ import annotations

import pyvips

from pipelines.outcome import Rejected
from pipelines.raster import Raster
from pipelines.recipe import Preset
from pipelines.vips import first_line

def resize(data: bytes, presets: tuple[Preset, ...]) -> list[Raster]:
    """One raster per preset, upright (EXIF orientation applied), never upscaled.

    ``contain`` fits inside width x height (a square when height is unset);
    ``cover`` fills width x height exactly, cropping around the centre.
    """
    return [_resize_one(data, preset) for preset in presets]


def _resize_one(data: bytes, preset: Preset) -> Raster:
    options = {"height": preset.height or preset.width, "size": "down",
               "option_string": "fail_on=truncated"}
    if preset.fit == "cover":
        options["crop"] = "centre"
    try:
        image = pyvips.Image.thumbnail_buffer(data, preset.width, **options)
        return Raster.from_image(preset.name, image)
    except pyvips.Error as exc:
        raise Rejected("corrupt", f"the image cannot be decoded: {first_line(exc)}") from exc
