"""Convert to 8-bit sRGB: the colour space every public rendition is published in."""

from __future__ import annotations

from pipelines.raster import Raster


def needs_conversion(icc: bool, interpretation: str, sample_format: str) -> bool:
    """Whether ``to_srgb`` makes new pixels, so that its input and output are both held."""
    return icc or interpretation not in ("srgb", "b-w") or sample_format != "uchar"


def to_srgb(raster: Raster) -> Raster:
    if not needs_conversion(bool(raster.icc), raster.interpretation, raster.format):
        return raster  # already 8-bit sRGB (or grey): a copy would only double the memory
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
