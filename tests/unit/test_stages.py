"""The pure image stages on pictures made in memory: resize, to_srgb, compress, hashing."""

from __future__ import annotations

import hashlib
import io

import pyvips
import pytest

from pipelines.optimize.compress import compress
from pipelines.outcome import Rejected
from pipelines.raster import Raster
from pipelines.recipe import DEFAULT_RECIPE, Preset
from pipelines.transform.convert import to_srgb
from pipelines.transform.resize import resize
from pipelines.upload.hashing import sha256_hex
from pipelines.upload.validate import sniff

PRESETS = {p.name: p for p in DEFAULT_RECIPE.presets}


def image(width: int, height: int) -> pyvips.Image:
    return (pyvips.Image.black(width, height) + [200, 100, 50]).cast("uchar").copy(interpretation="srgb")


def jpeg(width: int, height: int) -> bytes:
    return image(width, height).jpegsave_buffer()


def sizes(data: bytes, *names: str) -> dict[str, tuple[int, int]]:
    return {r.preset: (r.width, r.height) for r in resize(data, tuple(PRESETS[n] for n in names))}


def test_contain_fits_landscape_inside_the_box():
    assert sizes(jpeg(2400, 1600), "large", "small") == {"large": (1600, 1067), "small": (400, 267)}


def test_contain_fits_portrait_inside_the_box():
    assert sizes(jpeg(1600, 2400), "large") == {"large": (1067, 1600)}


def test_cover_fills_the_box_exactly():
    assert sizes(jpeg(2400, 1600), "thumb") == {"thumb": (150, 150)}


def test_resize_never_upscales():
    assert sizes(jpeg(300, 200), "large") == {"large": (300, 200)}


def test_truncated_jpeg_is_rejected_as_corrupt():
    data = jpeg(800, 600)
    with pytest.raises(Rejected) as caught:
        resize(data[: len(data) // 2], (PRESETS["small"],))
    assert caught.value.reason == "corrupt"


def test_to_srgb_turns_cmyk_into_8_bit_srgb():
    cmyk = Raster.from_image("small", image(40, 30).colourspace("cmyk"))
    assert (cmyk.interpretation, cmyk.bands) == ("cmyk", 4)
    out = to_srgb(cmyk)
    assert (out.interpretation, out.format, out.bands) == ("srgb", "uchar", 3)
    assert (out.width, out.height) == (40, 30)


def test_to_srgb_turns_16_bit_rgb_into_8_bit_srgb():
    deep = Raster.from_image("small", image(40, 30).colourspace("rgb16"))
    assert (deep.interpretation, deep.format) == ("rgb16", "ushort")
    out = to_srgb(deep)
    assert (out.interpretation, out.format, out.bands) == ("srgb", "uchar", 3)
    assert out.to_image().getpoint(5, 5) == [200, 100, 50]


def test_compress_writes_webp_of_the_raster_size_without_exif():
    source = jpeg(640, 480)
    assert "exif-data" in pyvips.Image.new_from_buffer(source, "").get_fields()
    raster = resize(source, (PRESETS["small"],))[0]
    encoded = compress(raster, PRESETS["small"])
    assert sniff(encoded.data) == "webp"
    assert encoded.media_type == "image/webp"
    decoded = pyvips.Image.new_from_buffer(encoded.data, "")
    assert (decoded.width, decoded.height) == (raster.width, raster.height) == (400, 300)
    assert "exif-data" not in decoded.get_fields()


def test_compress_drops_the_icc_profile():
    raster = Raster.from_image("small", image(40, 30).colourspace("cmyk"))
    srgb = to_srgb(raster)
    assert srgb.icc  # the transform tags its output with a profile
    decoded = pyvips.Image.new_from_buffer(compress(srgb, PRESETS["small"]).data, "")
    assert "icc-profile-data" not in decoded.get_fields()


def test_sha256_hex_of_bytes_matches_hashlib():
    data = b"mediafarm" * 1000
    assert sha256_hex(data) == hashlib.sha256(data).hexdigest()


def test_sha256_hex_streams_a_file_in_chunks(tmp_path):
    data = bytes(range(256)) * (5 * 4096 + 3)  # a little over 5 MiB
    path = tmp_path / "blob"
    path.write_bytes(data)
    with path.open("rb") as handle:
        assert sha256_hex(handle) == hashlib.sha256(data).hexdigest()
    assert sha256_hex(io.BytesIO(data)) == hashlib.sha256(data).hexdigest()


def test_rasters_survive_pickling_as_dask_does_between_workers():
    import pickle

    from pipelines.raster import Raster

    image = pyvips.Image.black(40, 30, bands=3).copy(interpretation="srgb").icc_transform("p3")
    raster = Raster.from_image("p", image)
    copy = pickle.loads(pickle.dumps(raster))
    assert copy == raster and isinstance(copy.pixels, bytes) and isinstance(copy.icc, bytes)
    assert copy.to_image().avg() == image.avg()
