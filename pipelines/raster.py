"""Decoded pixels in a picklable form, so that images can cross Dask task boundaries."""

from __future__ import annotations

from dataclasses import dataclass

import pyvips

from pipelines import vips  # noqa: F401  (hardens libvips before any load)

SAMPLE_BYTES = {"uchar": 1, "char": 1, "ushort": 2, "short": 2, "uint": 4, "int": 4,
                "float": 4, "complex": 8, "double": 8, "dpcomplex": 16}


def written(*frames: pyvips.Image) -> bytearray:
    """Frames of one size computed one after another into one new Python buffer.

    ``write_to_memory`` gives a libvips buffer that ``bytes()`` must copy, twice the
    pixels at the peak, and a pipeline joining every frame holds buffers for each;
    here libvips' threads write each frame in place, so the strip is all that is held.
    """
    first = frames[0]
    size = first.width * first.height * first.bands * SAMPLE_BYTES[first.format]
    pixels = bytearray(size * len(frames))
    view = memoryview(pixels)
    for index, frame in enumerate(frames):
        frame.write(pyvips.Image.new_from_memory(view[index * size:(index + 1) * size],
                                                 frame.width, frame.height, frame.bands,
                                                 frame.format))
    return pixels


@dataclass(frozen=True)
class Raster:
    preset: str
    width: int
    height: int
    bands: int
    format: str            # libvips band format: uchar, ushort, float...
    interpretation: str    # libvips colour interpretation: srgb, cmyk, b-w...
    pixels: bytes | bytearray  # bytearray for animations (see ``written``)
    icc: bytes | None = None
    # Animations are a vertical strip of frames, page_height tall each.
    page_height: int | None = None
    delay: tuple[int, ...] | None = None
    loop: int | None = None
    # Where the pixels were decoded and shrunk: "cpu", or pipelines.transform.gpu.GPU_PATH.
    path: str = "cpu"

    @property
    def frames(self) -> int:
        return self.height // self.page_height if self.page_height else 1

    @classmethod
    def from_image(cls, preset: str, image: pyvips.Image, path: str = "cpu",
                   pixels: bytearray | None = None) -> "Raster":
        """``pixels``: the image's own pixels, already in a Python buffer, to keep as they are."""
        def field(name: str):
            return image.get(name) if image.get_typeof(name) else None

        page_height = field("page-height")
        animated = page_height and page_height < image.height
        delay = field("delay")
        icc = field("icc-profile-data")
        if pixels is None:
            # Python buffers, not libvips' cffi buffer: rasters are pickled when Dask moves them.
            pixels = written(image) if animated else bytes(image.write_to_memory())
        return cls(preset, image.width, image.height, image.bands, image.format,
                   image.interpretation, pixels,
                   bytes(icc) if icc is not None else None,
                   page_height if animated else None,
                   tuple(delay) if animated and delay else None,
                   field("loop") if animated else None, path)

    def to_image(self) -> pyvips.Image:
        image = pyvips.Image.new_from_memory(self.pixels, self.width, self.height,
                                             self.bands, self.format)
        image = image.copy(interpretation=self.interpretation)
        if self.icc:
            image.set_type(pyvips.GValue.blob_type, "icc-profile-data", self.icc)
        if self.page_height:
            image.set_type(pyvips.GValue.gint_type, "page-height", self.page_height)
            if self.delay:
                image.set_type(pyvips.GValue.array_int_type, "delay", list(self.delay))
            image.set_type(pyvips.GValue.gint_type, "loop", self.loop or 0)
        return image
