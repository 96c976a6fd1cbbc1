"""The quality searches (``target_ssim``, ``target_bytes``) never go below a floor.

SSIM barely moves as blocking spreads over smooth gradients, so an unbounded
search for the README's own ``hero`` preset ran to quality 1 on a soft photograph.
"""

from __future__ import annotations

import pytest

from cluster.cli.samples import scene
from pipelines.recipe import DEFAULT_MIN_QUALITY, Preset, Recipe, recipe_from_dict
from tests.unit.test_image_renditions import render

HERO = {"name": "hero", "width": 1600, "format": "webp", "quality": 90, "target_ssim": 0.97}


@pytest.fixture(scope="module")
def soft_photo() -> bytes:
    """The sample scene out of focus (a sky, a blurred background): smooth gradients."""
    image = scene(2400, 1600, 0).gaussblur(4).cast("uchar").copy(interpretation="srgb")
    return image.jpegsave_buffer(Q=88)


@pytest.fixture(scope="module")
def photo() -> bytes:
    return scene(800, 600, 1).jpegsave_buffer(Q=88)


def test_the_floor_is_jpeg_recompress_default():
    assert DEFAULT_MIN_QUALITY == 40


def test_the_readme_hero_preset_stays_at_or_above_the_floor(soft_photo):
    preset = recipe_from_dict({"presets": [HERO]}).presets[0]
    encoded, _ = render(soft_photo, preset)
    assert encoded.quality >= DEFAULT_MIN_QUALITY
    assert encoded.metric[0] == "ssim" and encoded.metric[1] >= 0.97
    assert encoded.settings["target_met"] is True


@pytest.mark.parametrize("fmt", ["webp", "jpeg", "avif"])
def test_every_ssim_search_respects_the_floor(soft_photo, fmt):
    encoded, _ = render(soft_photo, Preset("hero", 1600, format=fmt, quality=90,
                                           target_ssim=0.9))
    assert encoded.quality >= DEFAULT_MIN_QUALITY


def test_min_quality_raises_the_floor(soft_photo):
    encoded, _ = render(soft_photo, Preset("hero", 1600, quality=90, target_ssim=0.97,
                                           min_quality=70))
    assert encoded.quality >= 70


def test_a_byte_target_below_the_floor_keeps_the_floor_and_records_the_miss(photo):
    preset = Preset("email", 800, format="jpeg", quality=80, target_bytes=5_000)
    encoded, _ = render(photo, preset)
    assert encoded.quality == DEFAULT_MIN_QUALITY
    assert len(encoded.data) > 5_000
    assert encoded.settings["target_met"] is False
    assert "5000" in encoded.settings["note"] and "floor" in encoded.settings["note"]


def test_a_met_byte_target_says_so(photo):
    encoded, _ = render(photo, Preset("email", 800, format="jpeg", quality=90,
                                      target_bytes=100_000))
    assert len(encoded.data) <= 100_000 and encoded.quality >= DEFAULT_MIN_QUALITY
    assert encoded.settings["target_met"] is True and "note" not in encoded.settings


def test_a_low_quality_without_a_target_is_still_allowed():
    assert Preset("tiny", 100, quality=20).quality == 20  # the floor bounds searches only


@pytest.mark.parametrize("kwargs", [
    {"min_quality": 0}, {"min_quality": 101}, {"quality": 60, "min_quality": 61},
])
def test_invalid_floors_are_refused(kwargs):
    with pytest.raises(ValueError, match="min_quality"):
        Preset("p", 100, target_ssim=0.95, **kwargs)


def test_the_floor_is_part_of_a_searching_presets_id():
    def ids(min_quality: int | None) -> tuple[str, str]:
        recipe = Recipe("r", (Preset("hero", 1600, quality=90, target_ssim=0.97,
                                     min_quality=min_quality),)).with_tools({"libvips": "8"})
        return recipe.id, recipe.preset_id(recipe.presets[0])

    assert len({ids(None), ids(50), ids(60)}) == 3
    assert ids(None) == ids(DEFAULT_MIN_QUALITY)  # the default is the floor in force


def test_presets_without_a_search_keep_their_ids():
    # The floor cannot change their bytes, so it is not hashed: their renditions stay.
    plain = Preset("small", 400)
    assert Recipe("r", (plain,)).canonical()["presets"][0].keys() == {
        "name", "width", "height", "fit", "crop", "format", "quality", "candidates",
        "target_ssim", "target_bytes", "background"}
    assert Preset("small", 400, min_quality=50).canonical() == plain.canonical()
