"""Encode a raster for publication; metadata (EXIF, XMP, GPS, ICC) never leaves the farm."""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.raster import Raster
from pipelines.recipe import Preset


@dataclass(frozen=True)
class Encoded:
    preset: str
    format: str
    width: int
    height: int
    quality: int
    data: bytes

    @property
    def media_type(self) -> str:
        return f"image/{self.format}"


def compress(raster: Raster, preset: Preset) -> Encoded:
    image = raster.to_image()
    # Rasters are sRGB by now, so the profile adds bytes and nothing else.
    data = image.webpsave_buffer(Q=preset.quality, effort=2, keep="none")
    return Encoded(preset.name, preset.format, image.width, image.height, preset.quality, data)
