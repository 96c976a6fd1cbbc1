"""Decoded pixels in a picklable form, so that images can cross Dask task boundaries."""

from __future__ import annotations

from dataclasses import dataclass

import pyvips

from pipelines import vips  # noqa: F401  (hardens libvips before any load)


@dataclass(frozen=True)
class Raster:
    preset: str
    width: int
    height: int
    bands: int
    format: str            # libvips band format: uchar, ushort, float...
    interpretation: str    # libvips colour interpretation: srgb, cmyk, b-w...
    pixels: bytes
    icc: bytes | None = None

    @classmethod
    def from_image(cls, preset: str, image: pyvips.Image) -> "Raster":
        icc = image.get("icc-profile-data") if image.get_typeof("icc-profile-data") else None
        return cls(preset, image.width, image.height, image.bands, image.format,
                   image.interpretation, image.write_to_memory(), icc)

    def to_image(self) -> pyvips.Image:
        image = pyvips.Image.new_from_memory(self.pixels, self.width, self.height,
                                             self.bands, self.format)
        image = image.copy(interpretation=self.interpretation)
        if self.icc:
            image.set_type(pyvips.GValue.blob_type, "icc-profile-data", self.icc)
        return image
