"""Recipes: a content-hashed id, strict validation, and files in YAML or JSON."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pipelines.recipe import (DEFAULT_RECIPE, INDEX_RECIPE, Preset, Recipe, VideoPreset, load_recipe,
                              recipe_from_dict)

SMALL = Preset("small", 400)
THUMB = Preset("thumb", 150, 150, fit="cover")


def test_recipe_id_is_the_same_in_another_process():
    code = "from pipelines.recipe import DEFAULT_RECIPE; print(DEFAULT_RECIPE.id)"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert other.stdout.strip() == DEFAULT_RECIPE.id
    assert len(DEFAULT_RECIPE.id) == 32


def test_recipe_id_ignores_preset_order():
    assert Recipe("r", (SMALL, THUMB)).id == Recipe("r", (THUMB, SMALL)).id


def test_recipe_id_changes_when_a_preset_changes():
    assert Recipe("r", (SMALL,)).id != Recipe("r", (Preset("small", 400, quality=81),)).id
    assert Recipe("r", (SMALL,)).id != Recipe("r", (Preset("small", 401),)).id


def test_recipe_id_changes_when_a_tool_version_changes():
    base = Recipe("r", (SMALL,))
    old = base.with_tools({"libvips": "8.16.0"})
    new = base.with_tools({"libvips": "8.17.0"})
    assert len({base.id, old.id, new.id}) == 3
    assert old.with_tools({"libvips": "8.16.0"}).id == old.id


@pytest.mark.parametrize("kwargs", [
    {"fit": "stretch"},
    {"fit": "cover"},            # cover without a height
    {"quality": 0},
    {"quality": 101},
    {"width": 0},
    {"format": "gif"},
    {"fit": "fill"},
    {"crop": "top-left"},
    {"format": "auto", "candidates": ("webp", "bmp")},
    {"target_ssim": 1.5},
    {"target_bytes": 0},
    {"background": (0, 0, 300)},
])
def test_invalid_presets_are_refused(kwargs):
    fields = {"name": "p", "width": 100} | kwargs
    with pytest.raises(ValueError):
        Preset(**fields)


def test_changing_one_preset_keeps_the_other_presets_ids():
    before = Recipe("r", (SMALL, Preset("large", 1600))).with_tools({"libvips": "8.18"})
    after = Recipe("r", (SMALL, Preset("large", 1600, quality=90))).with_tools({"libvips": "8.18"})
    assert before.id != after.id
    assert before.preset_id(SMALL) == after.preset_id(SMALL)
    assert before.preset_id(before.presets[1]) != after.preset_id(after.presets[1])
    newer_tools = after.with_tools({"libvips": "8.19"})
    assert newer_tools.preset_id(SMALL) != after.preset_id(SMALL)


def test_auto_format_tries_every_candidate():
    assert Preset("p", 100, format="auto", candidates=("avif", "jpeg")).formats == ("avif", "jpeg")
    assert Preset("p", 100, format="png").formats == ("png",)


def test_a_recipe_may_not_repeat_a_preset_name():
    with pytest.raises(ValueError, match="repeats"):
        Recipe("r", (SMALL, Preset("small", 800)))


def test_recipe_from_dict_refuses_unknown_keys():
    with pytest.raises(ValueError, match="unknown keys"):
        recipe_from_dict({"presets": [{"name": "small", "width": 400, "sharpen": True}]})


def test_load_recipe_reads_yaml(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("name: web\npresets:\n  - {name: thumb, width: 150, height: 150, fit: cover}\n"
                    "  - name: small\n    width: 400\n    quality: 70\n")
    recipe = load_recipe(path)
    assert recipe.name == "web"
    assert recipe.presets == (THUMB, Preset("small", 400, quality=70))


def test_load_recipe_reads_json(tmp_path):
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps({"name": "web", "presets": [{"name": "small", "width": 400}]}))
    assert load_recipe(path) == Recipe("web", (SMALL,))


def test_default_recipe_presets():
    shapes = {p.name: (p.width, p.height, p.fit, p.format) for p in DEFAULT_RECIPE.presets}
    assert shapes == {
        "thumb": (150, 150, "cover", "webp"),
        "small": (400, None, "contain", "webp"),
        "medium": (800, None, "contain", "webp"),
        "large": (1600, None, "contain", "webp"),
    }


def test_a_recipe_with_no_presets_indexes_only(tmp_path):
    path = tmp_path / "index.yml"
    path.write_text("name: catalogue\npresets: []\n")
    recipe = load_recipe(path)
    assert recipe.index_only and INDEX_RECIPE.index_only
    assert not DEFAULT_RECIPE.index_only
    assert recipe.id != INDEX_RECIPE.id  # the name is part of what the id hashes


def test_video_presets_without_image_presets_are_refused():
    # A video's poster and an audio file's cover are cut with the image presets.
    with pytest.raises(ValueError, match="no image presets"):
        Recipe("r", (), video=(VideoPreset("h264"),))
