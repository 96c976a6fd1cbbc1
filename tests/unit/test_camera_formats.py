"""What phones, cameras and recorders really make: accepted and rendered from the right picture.

Each file comes from the format's own library (tests/corpus/generate.py) and goes
through the stages a worker runs (validate -> resize -> to_srgb -> compress). The
rendition is compared with the producing library's own decode: the same size
and orientation, and the same colours (mean and spread per channel, and pixel by
pixel, which also shows a turned or mirrored picture).
"""

from __future__ import annotations

import io
import struct

import numpy as np
import PIL.Image
import pyvips
import pytest

from pipelines.optimize.compress import compress
from pipelines.outcome import Rejected
from pipelines.recipe import Preset
from pipelines.transform.convert import to_srgb
from pipelines.transform.resize import resize
from pipelines.upload import capabilities
from pipelines.upload.validate import Limits, sniff, validate
from tests.corpus import generate
from tests.corpus.pictures import assert_same_picture, decoded

PRESETS = (Preset("medium", 400), Preset("thumb", 120, 120, fit="cover"))


def render(data: bytes, presets=PRESETS, limits: Limits = Limits()) -> list:
    validated = validate(data, limits)
    rasters = resize(data, presets, limits=limits, decoder=validated.decoder)
    return [compress(to_srgb(r), p) for r, p in zip(rasters, presets)]


# name in the corpus: (upright size of the picture, frames)
CLASSES = {
    "iphone.heic": ((800, 600), 1),
    "iphone-upright.heic": ((600, 800), 1),
    "multi-image.heic": ((640, 480), 1),
    "grid.heic": ((1200, 900), 1),
    "android-ultrahdr.jpg": ((800, 600), 1),
    "stereo.mpo": ((800, 600), 1),
    "sequence.avif": ((480, 360), 4),
    "multi-image.avif": ((480, 360), 1),
}


@pytest.fixture(scope="module")
def files() -> dict[str, bytes]:
    return {c.name: c.make() for c in generate.CASES if c.name in CLASSES}


@pytest.mark.parametrize("name", CLASSES)
def test_validate_reads_the_picture_a_viewer_shows(files, name):
    (width, height), frames = CLASSES[name]
    validated = validate(files[name])
    assert (validated.kind, validated.width, validated.height, validated.frames) == \
        ("image", width, height, frames)


@pytest.mark.parametrize("name", CLASSES)
def test_each_class_renders_the_right_picture(files, name):
    (width, height), frames = CLASSES[name]
    medium, thumb = render(files[name])
    scale = min(1.0, 400 / width, 400 / height)  # contain, no height: a square box
    assert (medium.width, medium.height) == (round(width * scale), round(height * scale))
    assert (thumb.width, thumb.height) == (120, 120)
    assert_same_picture(decoded(medium.data), generate.CAMERA_REFERENCES[name](files[name]))


def test_an_ultrahdr_photo_is_its_sdr_base_with_the_gain_map_noted(files):
    validated = validate(files["android-ultrahdr.jpg"])
    assert validated.format == "jpeg" and validated.metadata["gain_map"] is True
    assert validate(files["stereo.mpo"]).metadata.get("gain_map") is not True


def test_multi_image_files_keep_their_picture_count_but_are_not_animations(files):
    for name in ("multi-image.heic", "multi-image.avif"):
        validated = validate(files[name])
        assert validated.frames == 1 and validated.metadata["images"] == 2, name


def test_an_avif_sequence_is_animated_like_gif_and_webp(files):
    preset = Preset("anim", 240)
    [raster] = resize(files["sequence.avif"], (preset,), decoder=validate(files["sequence.avif"]).decoder)
    assert (raster.width, raster.page_height, raster.frames) == (240, 180, 4)
    assert raster.delay == (120, 120, 120, 120)
    encoded = compress(to_srgb(raster), preset)
    again = pyvips.Image.new_from_buffer(encoded.data, "", n=-1)
    assert encoded.format == "webp" and again.get("n-pages") == 4
    # Each frame is its own picture, in order.
    with PIL.Image.open(io.BytesIO(files["sequence.avif"])) as source:
        for index in (0, 3):
            source.seek(index)
            frame = again.crop(0, index * 180, 240, 180)
            pixels = np.ndarray(buffer=frame.write_to_memory(), dtype=np.uint8,
                                shape=(180, 240, frame.bands))[..., :3]
            assert_same_picture(pixels, np.asarray(source.convert("RGB")))


def test_a_sequence_for_a_format_that_cannot_animate_gets_the_first_frame(files):
    preset = Preset("still", 240, format="jpeg")
    data = files["sequence.avif"]
    [encoded] = [compress(to_srgb(r), preset)
                 for r in resize(data, (preset,), decoder=validate(data).decoder)]
    assert encoded.format == "jpeg" and (encoded.width, encoded.height) == (240, 180)
    assert_same_picture(decoded(encoded.data), generate.CAMERA_REFERENCES["sequence.avif"](data))


def test_an_avif_sequence_is_counted_against_the_decode_budget(files):
    data = files["sequence.avif"]
    with pytest.raises(Rejected) as caught:
        resize(data, (Preset("big", 480),), limits=Limits(max_decode_bytes=2_000_000),
               decoder=validate(data).decoder)
    assert caught.value.reason == "over_limit" and "4 frames" in caught.value.message


# --- HEIC bombs: refused from the header, before a tile is decoded --------------------------------

def test_a_grid_that_claims_a_huge_picture_is_refused_at_validate():
    with pytest.raises(Rejected) as caught:
        validate(generate.heic_claiming(grid=(40000, 40000)))
    assert caught.value.reason == "over_limit"


def test_tiles_that_claim_gigapixels_are_refused_at_validate():
    with pytest.raises(Rejected) as caught:
        validate(generate.heic_claiming(tiles=(8192, 8192)))
    assert caught.value.reason == "over_limit" and "tiles" in caught.value.message


def test_a_grid_of_more_tiles_than_allowed_is_refused_at_validate(files):
    with pytest.raises(Rejected) as caught:
        validate(files["grid.heic"], Limits(max_tiles=16))
    assert caught.value.reason == "over_limit" and "20 tiles" in caught.value.message


def test_heic_limits_also_hold_in_the_decoding_child(files):
    # resize alone (no validate before it) still reads the header first.
    with pytest.raises(Rejected) as caught:
        resize(files["grid.heic"], PRESETS, limits=Limits(max_tiles=16), decoder="pillow-heif")
    assert caught.value.reason == "over_limit"


@pytest.mark.parametrize("damage", ["truncated", "zeroed"])
def test_a_heic_whose_picture_is_damaged_is_corrupt_not_a_crash(files, damage):
    data = bytearray(files["iphone.heic"])
    if damage == "truncated":
        del data[len(data) * 2 // 3:]
    else:  # the coded picture's first bytes zeroed: every header intact
        start = data.find(b"mdat") + 4
        data[start:start + 2000] = bytes(2000)
    assert validate(bytes(data)).decoder == "pillow-heif"  # the headers pass
    with pytest.raises(Rejected) as caught:
        render(bytes(data))
    assert caught.value.reason == "corrupt"


# --- formats recognised only to say why not ------------------------------------------------------

def _tiff(tags: dict[int, object]) -> bytes:
    buffer = io.BytesIO()
    PIL.Image.new("RGB", (16, 16)).save(buffer, "TIFF", tiffinfo=tags)
    return buffer.getvalue()


@pytest.mark.parametrize(("data", "name"), [
    (b"II*\x00\x10\x00\x00\x00CR\x02\x00" + bytes(200), "Canon CR2"),
    (struct.pack(">I", 24) + b"ftypcrx " + struct.pack(">I", 1) + b"crx isom" + bytes(200),
     "Canon CR3"),
    (_tiff({271: "NIKON CORPORATION", 272: "NIKON Z 6"}), "Nikon NEF"),
    (_tiff({271: "SONY", 272: "ILCE-7M3"}), "Sony ARW"),
    (_tiff({50706: b"\x01\x04\x00\x00", 271: "Canon"}), "DNG"),
    (b"IIRO\x08\x00\x00\x00" + bytes(200), "Olympus ORF"),
    (b"IIU\x00\x18\x00\x00\x00" + bytes(200), "Panasonic RW2"),
    (b"FUJIFILMCCD-RAW 0201" + bytes(200), "Fujifilm RAF"),
])
def test_camera_raw_is_refused_by_name(data, name):
    with pytest.raises(Rejected) as caught:
        validate(data)
    assert caught.value.reason == "unsupported_type"
    assert f"camera RAW ({name})" in caught.value.message


def test_a_plain_tiff_is_still_just_a_tiff():
    assert sniff(_tiff({271: "Scanner Co"})) == "tiff"


@pytest.mark.parametrize("data", [b"\xff\x0a\xfa\x7f" + bytes(100),
                                  b"\x00\x00\x00\x0cJXL \r\n\x87\n" + bytes(100)])
def test_jpeg_xl_is_named_and_refused_when_libvips_cannot_read_it(data):
    assert sniff(data) == "jxl"
    assert not capabilities.has_loader("jxlload_buffer")  # this libvips build: no libjxl
    with pytest.raises(Rejected) as caught:
        validate(data)
    assert caught.value.reason == "unsupported_type" and "JPEG XL" in caught.value.message


# --- what is advertised is what decodes ----------------------------------------------------------

def test_every_accepted_image_type_decodes_its_sample_here():
    types = capabilities.image_media_types()
    assert {"image/jpeg", "image/png", "image/webp", "image/gif", "image/avif", "image/heic",
            "image/heif"} <= types
    assert "image/jxl" not in types


def test_a_type_whose_decoder_is_missing_is_not_advertised(monkeypatch):
    monkeypatch.setattr(capabilities, "decoders", lambda: frozenset({"libvips:jpeg", "libvips:png"}))
    types = capabilities.image_media_types()
    assert types == {"image/jpeg", "image/png"}
