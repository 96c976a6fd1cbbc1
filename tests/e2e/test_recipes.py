"""Recipes through the farm: re-runs make nothing, a changed preset re-renders only itself."""

from __future__ import annotations

from dataclasses import replace

import pytest
import pyvips
from sqlalchemy import select

from catalog.models import Blob, StageRun
from cluster.farm import Farm
from cluster.cli.samples import scene
from pipelines.recipe import DEFAULT_RECIPE, Preset, Recipe
from tests.conftest import make_settings

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture
def farm(tmp_path, sqlite_url, clamd, dask_client):
    with Farm(make_settings(tmp_path / "data", sqlite_url, clamd.url), client=dask_client) as farm:
        yield farm


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for index in range(2):
        image = scene(2000, 1500, index).copy()
        image.set_type(pyvips.GValue.gstr_type, "exif-ifd0-Make", "Mediafarm Optics")
        image.set_type(pyvips.GValue.gstr_type, "exif-ifd0-Model", f"Model {index}")
        image.set_type(pyvips.GValue.gstr_type, "exif-ifd2-DateTimeOriginal", "2026:01:02 03:04:05")
        image.jpegsave(str(folder / f"photo-{index}.jpg"), Q=88)
    return folder


def _compressed_presets(farm: Farm, asset_ids: set[str], attempt: int) -> list[str]:
    with farm.catalog.engine.connect() as conn:
        details = conn.execute(select(StageRun.details).where(
            StageRun.stage == "compress", StageRun.attempt == attempt,
            StageRun.asset_id.in_(asset_ids))).scalars()
        return sorted(name for d in details if d for name in d if name != "skipped")


def test_changing_one_preset_re_renders_only_that_preset(farm, photos):
    first = farm.ingest([str(photos)]).wait()
    objects = set(farm.stores["renditions"].digests())
    assert len(objects) == 8

    presets = tuple(replace(p, quality=92) if p.name == "large" else p
                    for p in DEFAULT_RECIPE.presets)
    second = farm.ingest([str(photos)], Recipe("default", presets)).wait()
    assert {r["status"] for r in second} == {"ready"}
    ids = {r["id"] for r in second}
    assert _compressed_presets(farm, ids, attempt=2) == ["large", "large"]
    new_objects = set(farm.stores["renditions"].digests()) - objects
    assert len(new_objects) == 2
    for before, after in zip(first, second):
        old = {r["preset"]: r["sha256"] for r in before["renditions"]}
        new = {r["preset"]: r["sha256"] for r in after["renditions"]}
        assert {p for p in old if old[p] != new[p]} == {"large"}
        assert after["version"] == 2  # same bytes, new recipe: a new version of the asset


def test_quality_search_and_auto_format_are_recorded(farm, photos):
    recipe = Recipe("search", (Preset("hero", 1200, target_ssim=0.97, quality=95),
                               Preset("card", 600, format="auto", candidates=("webp", "jpeg"))))
    [result] = farm.ingest([str(photos / "photo-0.jpg")], recipe).wait()
    renditions = {r["preset"]: r for r in result["renditions"]}
    assert renditions["hero"]["metric"]["ssim"] >= 0.97
    assert renditions["hero"]["quality"] <= 95
    assert renditions["card"]["format"] in ("webp", "jpeg")


def test_original_metadata_goes_to_the_catalog_not_the_renditions(farm, photos):
    [result] = farm.ingest([str(photos / "photo-1.jpg")]).wait()
    with farm.catalog.engine.connect() as conn:
        metadata = conn.execute(select(Blob.media_metadata).where(
            Blob.sha256 == result["sha256"])).scalar_one()
    assert metadata["camera_make"] == "Mediafarm Optics" and metadata["camera_model"] == "Model 1"
    assert metadata["captured_at"] == "2026-01-02T03:04:05"
    assert (metadata["width"], metadata["height"], metadata["colour_space"]) == (2000, 1500, "srgb")
    for rendition in result["renditions"]:
        assert b"Mediafarm Optics" not in farm.stores["renditions"].get(rendition["sha256"])


def test_reencode_reads_originals_from_an_s3_store_with_its_own_options(tmp_path, pg_url, clamd,
                                                                         dask_client, photos,
                                                                         s3_endpoint):
    from tests.conftest import s3_store

    stores = {name: s3_store(s3_endpoint, name) for name in ("originals", "renditions")}
    settings = make_settings(tmp_path / "s3data", pg_url, clamd.url, stores)
    with Farm(settings, client=dask_client) as farm:
        farm.ingest([str(photos)]).wait()
        for photo in photos.iterdir():
            photo.unlink()  # the sources are gone: only the stored originals remain
        presets = tuple(replace(p, quality=70) if p.name == "small" else p
                        for p in DEFAULT_RECIPE.presets)
        report = farm.reencode(Recipe("default", presets), batch_size=1)
        assert report["job"]["counts"] == {"ready": 2}
        assert report["plan"]["renditions"] == {"image": {"small": 2}}
