"""``mediafarm index``: scan, validate, hash, store and record a library, rendering nothing.

Real clamd, real PostgreSQL or SQLite, real files from real encoders (libvips, pillow-heif,
the ffmpeg CLI); bulk partitions on the shared Dask cluster.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from catalog import Catalog
from catalog.models import Asset, Blob, PerceptualHash, Rendition, StageRun
from cluster.cli.samples import EICAR, scene
from cluster.farm import Farm
from cluster.graph import RENDER_STAGES
from pipelines.recipe import INDEX_RECIPE, Preset, Recipe
from pipelines.vips import tool_versions
from tests.conftest import make_settings
from tests.corpus.generate import heic
from tests.media_samples import ffmpeg, tone

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

IMAGES = ("photo.jpg", "diagram.png", "iphone.heic")
MEDIA = ("clip.mp4", "tone.flac")
BAD = {"notes.jpg": "unsupported_type", "invoice.pdf.exe": "infected"}


@pytest.fixture
def library(tmp_path) -> Path:
    folder = tmp_path / "library"
    folder.mkdir()
    scene(640, 480, 1).jpegsave(str(folder / "photo.jpg"), Q=85)
    scene(320, 240, 2).pngsave(str(folder / "diagram.png"))
    (folder / "iphone.heic").write_bytes(heic(400, 300))
    ffmpeg("-f", "lavfi", "-t", "1", "-i", "testsrc2=size=320x240:rate=25", "-c:v", "libx264",
           "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(folder / "clip.mp4"))
    tone(folder / "tone.flac", 1.0)
    (folder / "notes.jpg").write_text("a text file with an image's name\n")
    (folder / "invoice.pdf.exe").write_bytes(EICAR)
    return folder


def _mediafarm(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cluster.cli.main", *args], env=env,
                          capture_output=True, text=True, timeout=300)


def _rows(catalog: Catalog, table) -> list[dict]:
    with catalog.engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(select(table.__table__))]


def _objects(data_dir: Path) -> list[Path]:
    return sorted(p for p in (data_dir / "stores").rglob("*") if p.is_file())


def test_index_records_every_file_with_no_renditions_and_a_rerun_does_nothing(
        tmp_path, library, pg_url, clamd, dask_client):
    data_dir = tmp_path / "data"
    env = {**os.environ, "MEDIAFARM_DATA_DIR": str(data_dir), "MEDIAFARM_CLAMD_URL": clamd.url,
           "MEDIAFARM_CATALOG_URL": pg_url}
    env.pop("MEDIAFARM_CONFIG", None)
    command = ["index", str(library), "--scheduler", dask_client.scheduler.address, "--json"]
    first = _mediafarm(command, env)
    assert first.returncode == 0, first.stderr
    job = json.loads(first.stdout)
    assert (job["kind"], job["status"]) == ("index", "finished")
    assert job["assets"] == {"ready": len(IMAGES + MEDIA), "rejected": len(BAD)}
    assert "index:" in first.stderr  # the progress line

    catalog = Catalog(pg_url)
    assets = {Path(a["source_uri"]).name: a for a in _rows(catalog, Asset)}
    assert {name: (a["status"], a["reason"]) for name, a in assets.items()} == {
        **{name: ("ready", None) for name in IMAGES + MEDIA},
        **{name: ("rejected", reason) for name, reason in BAD.items()}}
    assert all(assets[name]["message"] for name in BAD)
    index_id = INDEX_RECIPE.with_tools(tool_versions()).id
    assert {a["recipe_id"] for a in assets.values()} == {index_id}
    assert _rows(catalog, Rendition) == []
    assert all(not r["renditions"] for r in catalog.results(a["id"] for a in assets.values()))

    # The render stages never ran; every asset has its scan, and the ready ones all four.
    runs = _rows(catalog, StageRun)
    assert not {r["stage"] for r in runs} & set(RENDER_STAGES)
    by_asset = {a["id"]: {r["stage"] for r in runs if r["asset_id"] == a["id"]}
                for a in assets.values()}
    for name in IMAGES + MEDIA:
        assert by_asset[assets[name]["id"]] == {"scan", "validate", "hash", "record"}, name

    # Each ready file's blob holds what validation read, and its original is stored by digest.
    blobs = {b["sha256"]: b for b in _rows(catalog, Blob)}
    for name in IMAGES + MEDIA:
        digest = assets[name]["sha256"]
        assert blobs[digest]["size"] == (library / name).stat().st_size, name
        stored = data_dir / "stores" / "originals" / "sha256" / digest[:2] / digest[2:4] / digest
        assert stored.read_bytes() == (library / name).read_bytes(), name
    metadata = {name: blobs[assets[name]["sha256"]]["media_metadata"] for name in IMAGES + MEDIA}
    assert (metadata["photo.jpg"]["width"], metadata["photo.jpg"]["height"]) == (640, 480)
    assert (metadata["diagram.png"]["width"], metadata["diagram.png"]["height"]) == (320, 240)
    assert (metadata["iphone.heic"]["width"], metadata["iphone.heic"]["height"]) == (400, 300)
    assert blobs[assets["clip.mp4"]["sha256"]]["media_type"] == "video/mp4"
    assert metadata["clip.mp4"]["duration_s"] == pytest.approx(1.0, abs=0.1)
    assert metadata["tone.flac"]["duration_s"] == pytest.approx(1.0, abs=0.1)

    # Each picture's perceptual hash, from a small decode: an indexed library has its
    # near-duplicates found as a rendered one does.
    hashed = {h["sha256"] for h in _rows(catalog, PerceptualHash)}
    assert {assets[name]["sha256"] for name in IMAGES} <= hashed

    # Again: nothing is redone, no row and no object is added but the new job's.
    rows, objects = catalog.row_counts(), _objects(data_dir)
    second = _mediafarm(command, env)
    assert second.returncode == 0, second.stderr
    again = json.loads(second.stdout)
    assert (again["submitted"], again["skipped"]) == (0, len(IMAGES + MEDIA + tuple(BAD)))
    assert catalog.row_counts() == {**rows, "jobs": rows["jobs"] + 1}
    assert _objects(data_dir) == objects


def test_index_leaves_rendered_assets_alone_and_redoes_changed_files(
        tmp_path, sqlite_url, clamd, dask_client):
    folder = tmp_path / "photos"
    folder.mkdir()
    for index in range(3):
        scene(320, 240, index).jpegsave(str(folder / f"img-{index}.jpg"), Q=80)
    settings = make_settings(tmp_path / "data", sqlite_url, clamd.url)
    rendering = Recipe("small", (Preset("small", 160),))
    with Farm(settings, client=dask_client) as farm:
        rendered = farm.ingest([str(folder / "img-0.jpg")], rendering).wait()
        assert [(r["status"], len(r["renditions"])) for r in rendered] == [("ready", 1)]

        first = farm.index([str(folder)], batch_size=2)
        # Already finished under a rendering recipe: scanned, hashed and recorded then.
        assert (first["submitted"], first["skipped"], first["counts"]) == (2, 1, {"ready": 2})
        assert [len(r["renditions"]) for r in farm.results([rendered[0]["id"]])] == [1]

        scene(320, 240, 9).jpegsave(str(folder / "img-1.jpg"), Q=80)  # new bytes, same name
        again = farm.index([str(folder)])
        assert (again["submitted"], again["skipped"], again["counts"]) == (1, 2, {"ready": 1})

        # The per-asset path takes an index-only recipe too: four stages, no renditions.
        scene(320, 240, 3).jpegsave(str(folder / "img-3.jpg"), Q=80)
        single = farm.ingest([str(folder / "img-3.jpg")], Recipe("catalogue", ())).wait()
        assert [(r["status"], r["renditions"]) for r in single] == [("ready", [])]
        stages = {r["stage"] for r in _rows(farm.catalog, StageRun)
                  if r["asset_id"] == single[0]["id"]}
        assert stages == {"scan", "validate", "hash", "record"}


def test_an_indexed_library_has_its_near_duplicates_and_a_cut_body_is_still_indexed(
        tmp_path, sqlite_url, clamd, dask_client):
    folder = tmp_path / "photos"
    folder.mkdir()
    picture = scene(1600, 1200, 2)
    picture.jpegsave(str(folder / "trip.jpg"), Q=90)
    picture.resize(0.5).jpegsave(str(folder / "trip-small.jpg"), Q=70)  # a copy, resized
    scene(1200, 900, 5).jpegsave(str(folder / "other.jpg"), Q=85)
    whole = scene(1200, 800, 3).jpegsave_buffer(Q=88)
    (folder / "cut.jpg").write_bytes(whole[: len(whole) // 3])  # a sound header, half a body
    settings = make_settings(tmp_path / "data", sqlite_url, clamd.url)
    with Farm(settings, client=dask_client) as farm:
        job = farm.index([str(folder)])
        assert job["counts"] == {"ready": 4}
        [group] = farm.near_duplicates()
        assert sorted(Path(a["source_uri"]).name for a in group["assets"]) == [
            "trip-small.jpg", "trip.jpg"]
        cut = next(a for a in _rows(farm.catalog, Asset) if a["source_uri"].endswith("cut.jpg"))
        [hashing] = [r for r in _rows(farm.catalog, StageRun)
                     if r["asset_id"] == cut["id"] and r["stage"] == "hash"]
        assert hashing["details"]["phash"].startswith("none: ")  # indexed all the same
