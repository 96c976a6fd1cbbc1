"""Convert to 8-bit sRGB: the colour space every public rendition is published in."""

from __future__ import annotations

from pipelines.raster import Raster


def to_srgb(raster: Raster) -> Raster:
    image = raster.to_image()
    if raster.icc:
        # The embedded profile knows the source's colours better than its interpretation tag.
        image = image.icc_transform("srgb", embedded=True, intent="perceptual")
    elif image.interpretation not in ("srgb", "b-w"):
        image = image.colourspace("srgb")
    if image.format != "uchar":
        # 16-bit and float sources: libvips rescales to 8 bits in the target space.
        image = image.colourspace("b-w" if image.bands in (1, 2) else "srgb").cast("uchar")
    return Raster.from_image(raster.preset, image, path=raster.path)
