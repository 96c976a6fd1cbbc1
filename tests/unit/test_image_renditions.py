"""Image renditions end to end on bytes: resize, convert to sRGB, compress.

Every image is made in memory with pyvips, run through the same three stages a
worker runs (``resize`` -> ``to_srgb`` -> ``compress``), and the encoded bytes
are decoded again to check what a viewer would actually get: orientation,
colour, alpha, exact dimensions, stripped metadata and the quality search.
"""

from __future__ import annotations

import pyvips
import pytest

from cluster.cli.samples import scene
from pipelines.optimize.compress import Encoded, compress, encode
from pipelines.optimize.metrics import ssim
from pipelines.recipe import Preset
from pipelines.transform.convert import to_srgb
from pipelines.transform.resize import resize
from pipelines.upload.validate import validate

W, H = 300, 200
RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


# --------------------------------------------------------------------------- helpers


def quadrants(colours, width: int = W, height: int = H) -> pyvips.Image:
    """An sRGB image in four flat quadrants: top-left, top-right, bottom-left, bottom-right."""
    xy = pyvips.Image.xyz(width, height)
    left, top = xy[0] < width // 2, xy[1] < height // 2
    base = pyvips.Image.black(width, height, bands=3)
    tl, tr, bl, br = (base + list(colour) for colour in colours)
    image = top.ifthenelse(left.ifthenelse(tl, tr), left.ifthenelse(bl, br))
    return image.cast("uchar").copy(interpretation="srgb")


def upright() -> pyvips.Image:
    """U: asymmetric under every flip and rotation, so any wrong orientation shows."""
    return quadrants((RED, GREEN, BLUE, WHITE))


def quadrant_centres(image: pyvips.Image) -> list[list[float]]:
    w, h = image.width, image.height
    points = [(w // 4, h // 4), (3 * w // 4, h // 4), (w // 4, 3 * h // 4), (3 * w // 4, 3 * h // 4)]
    return [image(x, y)[:3] for x, y in points]


def assert_colours(image: pyvips.Image, expected, tolerance: float) -> None:
    for got, want in zip(quadrant_centres(image), expected, strict=True):
        assert all(abs(g - w) <= tolerance for g, w in zip(got, want)), (got, want)


def render(data: bytes, preset: Preset) -> tuple[Encoded, pyvips.Image]:
    """The per-asset pipeline on bytes, for one preset; the rendition and its decoded pixels."""
    rasters = resize(data, (preset,))
    rasters = [to_srgb(r) for r in rasters]
    encoded = [compress(r, p) for r, p in zip(rasters, (preset,))]
    return encoded[0], pyvips.Image.new_from_buffer(encoded[0].data, "")


def reference(data: bytes, preset: Preset) -> pyvips.Image:
    """What the encoder is given for a preset: the resized sRGB raster."""
    return to_srgb(resize(data, (preset,))[0]).to_image()


def assert_8bit_srgb(image: pyvips.Image) -> None:
    assert image.format == "uchar"
    assert image.interpretation == "srgb"
    assert image.bands in (3, 4)


# --------------------------------------------------------------------------- 1. orientation

# The stored pixels S for each EXIF orientation, such that a viewer applying the
# orientation shows U (EXIF 2.3, tag 0x0112).
STORED = {
    1: lambda u: u,
    2: lambda u: u.fliphor(),
    3: lambda u: u.rot180(),
    4: lambda u: u.flipver(),
    5: lambda u: u.rot90().fliphor(),    # transpose
    6: lambda u: u.rot270(),             # the viewer turns it 90 degrees clockwise
    7: lambda u: u.rot90().flipver(),    # transverse
    8: lambda u: u.rot90(),              # the viewer turns it 90 degrees counter-clockwise
}


def stored_with_orientation(orientation: int) -> pyvips.Image:
    image = STORED[orientation](upright()).copy()
    image.set_type(pyvips.GValue.gint_type, "orientation", orientation)
    return image


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_table_is_what_libvips_autorot_undoes(orientation):
    shown = stored_with_orientation(orientation).autorot()
    assert (shown.width, shown.height) == (W, H)
    assert (shown - upright()).abs().max() == 0


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_gives_an_upright_rendition(orientation):
    data = stored_with_orientation(orientation).jpegsave_buffer(Q=95)
    source = pyvips.Image.new_from_buffer(data, "")
    assert source.get("orientation") == orientation  # the tag really is in the file
    assert (source.width, source.height) == ((W, H) if orientation <= 4 else (H, W))

    encoded, image = render(data, Preset("upright", 150, format="png"))

    assert (encoded.width, encoded.height) == (150, 100)
    assert (image.width, image.height) == (150, 100)
    assert_colours(image, (RED, GREEN, BLUE, WHITE), tolerance=40)


# --------------------------------------------------------------------------- 2. colour

# Colours a CMYK press can print, so that the round trip through CMYK keeps them.
PRINTABLE = ((200, 80, 60), (90, 160, 80), (60, 90, 170), (235, 235, 235))


@pytest.mark.parametrize("embedded_profile", [True, False], ids=["with-profile", "no-profile"])
def test_cmyk_jpeg_renders_as_8bit_srgb(embedded_profile):
    cmyk = quadrants(PRINTABLE).colourspace("cmyk").copy()
    if not embedded_profile:
        assert cmyk.remove("icc-profile-data")
    data = cmyk.jpegsave_buffer(Q=95)
    source = pyvips.Image.new_from_buffer(data, "")
    assert (source.interpretation, source.bands) == ("cmyk", 4)
    assert bool(source.get_typeof("icc-profile-data")) == embedded_profile

    for fmt in ("png", "jpeg"):
        encoded, image = render(data, Preset("cmyk", 150, format=fmt))
        assert (image.width, image.height, image.bands) == (150, 100, 3)
        assert_8bit_srgb(image)
        assert_colours(image, PRINTABLE, tolerance=20)
        assert (image - quadrants(PRINTABLE, 150, 100)).abs().avg() < 8


@pytest.mark.parametrize("container", ["png", "jpeg"])
def test_wide_gamut_profile_is_converted_to_srgb(container):
    u = upright()
    p3 = u.icc_transform("p3")  # same colours, carried as Display P3 numbers
    assert p3.get_typeof("icc-profile-data")
    # P3 numbers differ from sRGB numbers: reading them as sRGB would be visibly wrong.
    assert (p3 - u).abs().avg() > 20
    data = p3.pngsave_buffer() if container == "png" else p3.jpegsave_buffer(Q=95)
    assert pyvips.Image.new_from_buffer(data, "").get_typeof("icc-profile-data")

    ignored = p3.copy()
    assert ignored.remove("icc-profile-data")
    ignored_data = ignored.pngsave_buffer() if container == "png" else ignored.jpegsave_buffer(Q=95)

    preset = Preset("wide", 150, format="png")
    _, image = render(data, preset)
    _, naive = render(ignored_data, preset)
    truth = u.resize(0.5)

    assert (image.width, image.height) == (150, 100)
    assert_8bit_srgb(image)
    assert image.get_typeof("icc-profile-data") == 0
    assert (image - truth).abs().avg() < 3
    assert_colours(image, (RED, GREEN, BLUE, WHITE), tolerance=12)
    # Without the profile the same numbers land far from the truth: the conversion happened.
    assert (naive - truth).abs().avg() > 15


# --------------------------------------------------------------------------- 3. alpha

BACKGROUND = (10, 200, 30)
OPAQUE = (30, 60, 220)


def half_transparent() -> bytes:
    """Left half fully transparent (over red that must never show), right half opaque blue."""
    colour = quadrants((RED, OPAQUE, RED, OPAQUE))
    alpha = (pyvips.Image.xyz(W, H)[0] < W // 2).ifthenelse(0, 255).cast("uchar")
    return colour.bandjoin(alpha).copy(interpretation="srgb").pngsave_buffer()


@pytest.mark.parametrize("fmt", ["webp", "avif", "png"])
def test_alpha_formats_keep_the_transparent_region(fmt):
    encoded, image = render(half_transparent(), Preset("alpha", W, format=fmt, background=BACKGROUND))
    assert (image.width, image.height) == (W, H)
    assert image.bands == 4
    assert image.hasalpha()
    for x, y in ((W // 4, H // 4), (W // 4, 3 * H // 4), (10, 10)):
        assert image(x, y)[3] <= 5, (x, y, image(x, y))
    for x, y in ((3 * W // 4, H // 4), (3 * W // 4, 3 * H // 4)):
        pixel = image(x, y)
        assert pixel[3] >= 250
        assert all(abs(p - c) <= 12 for p, c in zip(pixel[:3], OPAQUE)), pixel


def test_jpeg_flattens_transparency_onto_the_preset_background():
    encoded, image = render(half_transparent(), Preset("alpha", W, format="jpeg", background=BACKGROUND))
    assert encoded.format == "jpeg"
    assert (image.width, image.height, image.bands) == (W, H, 3)
    assert_colours(image, (BACKGROUND, OPAQUE, BACKGROUND, OPAQUE), tolerance=12)


# --------------------------------------------------------------------------- 4. dimensions


def scene_jpeg(width: int, height: int) -> bytes:
    return scene(width, height, 1).jpegsave_buffer(Q=85)


def sizes(data: bytes, *presets: Preset) -> list[tuple[int, int]]:
    return [(r.width, r.height) for r in resize(data, presets)]


@pytest.mark.parametrize(("source", "preset", "expected"), [
    ((2400, 1600), Preset("contain", 800), (800, 533)),
    ((1600, 2400), Preset("contain", 800), (533, 800)),
    ((2400, 1600), Preset("contain", 800, 200), (300, 200)),
    ((2400, 1600), Preset("cover", 150, 150, fit="cover"), (150, 150)),
    ((2400, 1600), Preset("cover", 150, 150, fit="cover", crop="attention"), (150, 150)),
    ((2400, 1600), Preset("cover", 150, 150, fit="cover", crop="entropy"), (150, 150)),
    ((2400, 1600), Preset("cover", 400, 100, fit="cover"), (400, 100)),
    ((2400, 1600), Preset("fill", 300, 100, fit="fill"), (300, 100)),
    ((300, 200), Preset("contain", 1600), (300, 200)),
], ids=["contain-landscape", "contain-portrait", "contain-box", "cover-centre",
        "cover-attention", "cover-entropy", "cover-wide", "fill", "never-upscaled"])
def test_each_fit_mode_gives_exact_dimensions(source, preset, expected):
    data = scene_jpeg(*source)
    assert sizes(data, preset) == [expected]
    encoded, image = render(data, preset)
    assert (encoded.width, encoded.height) == expected
    assert (image.width, image.height) == expected


@pytest.mark.parametrize("source", [(2400, 1600), (1001, 667), (997, 1999)])
def test_cover_and_fill_fill_their_box_exactly_on_odd_sources(source):
    data = scene_jpeg(*source)
    for width, height in ((150, 150), (401, 223), (256, 512), (99, 77)):
        for fit in ("cover", "fill"):
            assert sizes(data, Preset("box", width, height, fit=fit)) == [(width, height)], fit


def test_several_presets_in_one_call_each_get_their_own_size():
    data = scene_jpeg(2400, 1600)
    presets = (
        Preset("thumb", 150, 150, fit="cover"),
        Preset("small", 400),
        Preset("medium", 800),
        Preset("large", 1600),
        Preset("banner", 300, 100, fit="fill"),
        Preset("strip", 1000, 120, fit="cover", crop="attention"),
    )
    rasters = resize(data, presets)
    assert [r.preset for r in rasters] == [p.name for p in presets]
    got = [(r.width, r.height) for r in rasters]
    assert got == [(150, 150), (400, 267), (800, 533), (1600, 1067), (300, 100), (1000, 120)]
    # A preset's rendition must not depend on its neighbours in the recipe: renditions
    # are reused by preset id, so the cascade must give what the preset gets alone.
    alone = [sizes(data, p)[0] for p in presets]
    assert got == alone


# --------------------------------------------------------------------------- 5. metadata

SECRETS = (b"AcmeCam", b"Model X100", b"Jane Secret", b"XmpSecretPerson")
XMP = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
       b'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
       b'xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:creator>XmpSecretPerson</dc:creator>'
       b"</rdf:Description></rdf:RDF></x:xmpmeta>")


def camera_jpeg(gps: bool = True, orientation: int = 1, profile: bool = False) -> bytes:
    image = scene(320, 240, 4)
    if profile:
        image = image.icc_transform("p3")
    image = image.copy()
    text = pyvips.GValue.gstr_type
    image.set_type(text, "exif-ifd0-Make", "AcmeCam")
    image.set_type(text, "exif-ifd0-Model", "Model X100")
    image.set_type(text, "exif-ifd0-Artist", "Jane Secret")
    image.set_type(text, "exif-ifd2-DateTimeOriginal", "2021:06:01 12:34:56")
    if gps:
        image.set_type(text, "exif-ifd3-GPSLatitudeRef", "N")
        image.set_type(text, "exif-ifd3-GPSLatitude", "51/1 30/1 0/1")
        image.set_type(text, "exif-ifd3-GPSLongitudeRef", "W")
        image.set_type(text, "exif-ifd3-GPSLongitude", "0/1 7/1 0/1")
    image.set_type(pyvips.GValue.gint_type, "orientation", orientation)
    image.set_type(pyvips.GValue.blob_type, "xmp-data", XMP)
    return image.jpegsave_buffer(Q=90)


def test_camera_jpeg_really_carries_the_metadata():
    data = camera_jpeg(profile=True)
    source = pyvips.Image.new_from_buffer(data, "")
    fields = set(source.get_fields())
    assert {"exif-data", "xmp-data", "icc-profile-data", "exif-ifd0-Make", "exif-ifd0-Artist",
            "exif-ifd3-GPSLatitude", "exif-ifd3-GPSLatitudeRef"} <= fields
    assert str(source.get("exif-ifd3-GPSLatitudeRef")).startswith("N")
    assert all(secret in data for secret in SECRETS)


@pytest.mark.parametrize("fmt", ["webp", "avif", "jpeg", "png"])
def test_no_exif_gps_xmp_or_icc_survives(fmt):
    encoded, image = render(camera_jpeg(profile=True), Preset("clean", 200, format=fmt))
    assert encoded.format == fmt
    fields = set(image.get_fields())
    for name in ("exif-data", "xmp-data", "iptc-data", "icc-profile-data"):
        assert name not in fields, name
    assert not [f for f in fields if f.startswith("exif-")]
    for secret in SECRETS:
        assert secret not in encoded.data, secret


# --------------------------------------------------------------------------- 6. quality search


@pytest.fixture(scope="module")
def photo() -> bytes:
    """Photo-like 800x600, as a camera or the sample set would deliver it: a JPEG."""
    return scene(800, 600, 1).jpegsave_buffer(Q=88)


@pytest.mark.parametrize("fmt", ["webp", "jpeg", "avif"])
def test_ssim_target_is_met_and_saves_bytes(photo, fmt):
    preset = Preset("ssim", 800, format=fmt, quality=90, target_ssim=0.95)
    encoded, decoded = render(photo, preset)
    resized = reference(photo, preset)

    name, value = encoded.metric
    assert name == "ssim"
    assert value >= 0.95
    assert encoded.quality <= 90
    independent = ssim(resized, decoded)
    assert independent >= 0.95
    assert abs(independent - value) < 1e-3
    # Worth searching: smaller than the ceiling quality would have been.
    assert len(encoded.data) < len(encode(resized, fmt, 90))


@pytest.mark.parametrize("fmt", ["webp", "jpeg", "avif"])
def test_byte_target_is_met(photo, fmt):
    # Reachable above the quality floor (tests/unit/test_quality_floor.py has one that is not).
    preset = Preset("bytes", 800, format=fmt, quality=90, target_bytes=100_000)
    encoded, decoded = render(photo, preset)
    assert (decoded.width, decoded.height) == (800, 600)
    assert len(encoded.data) <= 100_000, (encoded.quality, len(encoded.data))


def test_unreachable_ssim_target_returns_the_ceiling_encoding(photo):
    preset = Preset("best", 800, format="webp", quality=90, target_ssim=0.9999)
    encoded, decoded = render(photo, preset)
    assert encoded.quality == 90
    assert encoded.data == encode(reference(photo, preset), "webp", 90)
    assert encoded.metric[0] == "ssim" and encoded.metric[1] < 0.9999


@pytest.mark.parametrize("fmt", ["webp", "avif"])
def test_background_does_not_change_an_alpha_rendition_under_an_ssim_target(fmt):
    # The background only applies where a format has no alpha; a WebP/AVIF rendition
    # keeps its transparency, so its quality search must not depend on the background.
    alpha = (pyvips.Image.xyz(W, H)[0] < W // 2).ifthenelse(0, 255).cast("uchar")
    data = scene(W, H, 2).bandjoin(alpha).copy(interpretation="srgb").pngsave_buffer()
    white, _ = render(data, Preset("a", W, format=fmt, quality=90, target_ssim=0.95))
    green, decoded = render(data, Preset("a", W, format=fmt, quality=90, target_ssim=0.95,
                                         background=BACKGROUND))
    assert decoded.bands == 4
    assert (green.quality, len(green.data)) == (white.quality, len(white.data))
    assert green.metric[1] >= 0.95 and white.metric[1] >= 0.95


# --------------------------------------------------------------------------- 7. format auto


@pytest.mark.parametrize(("source", "candidates"), [
    ("photo", ("webp", "avif", "jpeg")),
    ("flat", ("webp", "avif", "jpeg", "png")),
])
def test_format_auto_picks_the_smallest_candidate(photo, source, candidates):
    data = photo if source == "photo" else upright().pngsave_buffer()
    preset = Preset("auto", 400, format="auto", quality=75, candidates=candidates)
    encoded, decoded = render(data, preset)
    resized = reference(data, preset)
    sizes_by_format = {fmt: len(encode(resized, fmt, 75)) for fmt in candidates}
    smallest = min(sizes_by_format, key=sizes_by_format.get)
    assert encoded.format == smallest
    assert len(encoded.data) == sizes_by_format[smallest] == min(sizes_by_format.values())
    assert encoded.data == encode(resized, smallest, 75)
    assert (decoded.width, decoded.height) == (resized.width, resized.height)


# --------------------------------------------------------------------------- 8. other inputs


def sixteen_bit_png() -> bytes:
    image = (upright().cast("ushort") * 257).cast("ushort").copy(interpretation="rgb16")
    return image.pngsave_buffer()


def palette_png() -> bytes:
    return upright().pngsave_buffer(palette=True)


def avif_input() -> bytes:
    return upright().heifsave_buffer(compression="av1", Q=90)


def animated_gif() -> bytes:
    # Two frames: U, then U upside down; only the first may show in a still rendition.
    frames = upright().join(upright().rot180(), "vertical").copy()
    frames.set_type(pyvips.GValue.gint_type, "page-height", H)
    frames.set_type(pyvips.GValue.array_int_type, "delay", [100, 100])
    frames.set_type(pyvips.GValue.gint_type, "loop", 0)
    return frames.gifsave_buffer()


INPUTS = {"png16": sixteen_bit_png, "palette": palette_png, "avif": avif_input, "gif": animated_gif}


def test_other_inputs_are_what_they_claim():
    png16 = pyvips.Image.new_from_buffer(sixteen_bit_png(), "")
    assert (png16.format, png16.get("bits-per-sample")) == ("ushort", 16)
    palette = pyvips.Image.new_from_buffer(palette_png(), "")
    assert palette.get("palette")
    assert pyvips.Image.new_from_buffer(avif_input(), "").get("vips-loader").startswith("heifload")
    gif = pyvips.Image.new_from_buffer(animated_gif(), "")
    assert (gif.width, gif.height, gif.get("n-pages")) == (W, H, 2)


@pytest.mark.parametrize("fmt", ["webp", "jpeg", "png"])
@pytest.mark.parametrize("kind", list(INPUTS))
def test_other_inputs_render_as_8bit_srgb(kind, fmt):
    encoded, image = render(INPUTS[kind](), Preset("other", 150, format=fmt))
    assert encoded.format == fmt
    assert (image.width, image.height) == (150, 100)
    assert_8bit_srgb(image)
    assert_colours(image, (RED, GREEN, BLUE, WHITE), tolerance=40)


# --------------------------------------------------------------------------- 9. source metadata


def test_validate_reports_the_camera_metadata():
    metadata = validate(camera_jpeg(gps=True, orientation=6)).metadata
    assert metadata["width"] == 320
    assert metadata["height"] == 240
    assert metadata["orientation"] == 6
    assert metadata["camera_make"] == "AcmeCam"
    assert metadata["camera_model"] == "Model X100"
    assert metadata["captured_at"] == "2021-06-01T12:34:56"
    assert metadata["colour_space"] == "srgb"
    assert metadata["has_gps"] is True


def test_validate_reports_no_gps_when_there_is_none():
    metadata = validate(camera_jpeg(gps=False)).metadata
    assert metadata["has_gps"] is False
    assert metadata["orientation"] == 1
    assert metadata["camera_make"] == "AcmeCam"
    plain = validate(scene(64, 48, 0).jpegsave_buffer()).metadata
    assert (plain["camera_make"], plain["camera_model"], plain["captured_at"]) == (None, None, None)
    assert plain["has_gps"] is False


# --- animations ----------------------------------------------------------------------------------


def _animated_gif(frames: int = 5) -> bytes:
    strip = pyvips.Image.arrayjoin([scene(200, 150, i) for i in range(frames)], across=1)
    return strip.gifsave_buffer(page_height=150)


@pytest.mark.parametrize(("preset", "size"), [
    (Preset("contain", 100), (100, 75)),
    (Preset("cover", 50, 50, fit="cover"), (50, 50)),
    (Preset("fill", 60, 40, fit="fill"), (60, 40)),
    (Preset("auto", 100, format="auto"), (100, 75)),
])
def test_animated_webp_rendition_keeps_every_frame(preset, size):
    [raster] = resize(_animated_gif(), (preset,))
    encoded = compress(to_srgb(raster), preset)
    decoded = pyvips.Image.new_from_buffer(encoded.data, "", n=-1)
    assert encoded.format == "webp"  # auto keeps the motion even though a still is smaller
    assert (encoded.width, encoded.height) == size
    assert decoded.get("n-pages") == 5 and decoded.get("page-height") == size[1]


def test_formats_that_cannot_animate_get_the_first_frame():
    preset = Preset("still", 100, format="jpeg")
    [raster] = resize(_animated_gif(), (preset,))
    encoded = compress(to_srgb(raster), preset)
    decoded = pyvips.Image.new_from_buffer(encoded.data, "")
    assert (decoded.width, decoded.height) == (100, 75) == (encoded.width, encoded.height)
