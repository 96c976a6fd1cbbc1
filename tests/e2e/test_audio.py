"""Music libraries and phone videos through the farm: covers, odd FLACs, HEVC in MOV."""

from __future__ import annotations

import shutil
from pathlib import Path

import av
import pytest
from sqlalchemy import select

from catalog.models import StageRun
from cluster.farm import Farm
from pipelines.recipe import Preset, Recipe, VideoPreset
from tests.conftest import make_settings
from tests.media_samples import ffprobe, music_library, phone_video

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

RECIPE = Recipe("music", (Preset("wide", 300, 300),),
                video=(VideoPreset("h264", heights=(180, 360), speed="ultrafast"),))


MUSIC = ("cover.flac", "cover.mp3", "cover.m4a", "cover.opus", "bomb-cover.flac", "corrupt-cover.mp3",
         "rate-change.flac", "joined.mp3", "sample-numbered.flac")


@pytest.fixture
def media(tmp_path) -> Path:
    folder, parts = tmp_path / "media", tmp_path / "parts"
    folder.mkdir()
    parts.mkdir()
    music_library(parts)
    for name in MUSIC:
        shutil.copy(parts / name, folder / name)
    shutil.copy(phone_video(parts), folder / "iphone.mov")
    return folder


def _open(store, rendition: dict, tmp_path: Path, name: str):
    path = tmp_path / name
    path.write_bytes(store.get(rendition["sha256"]))
    return av.open(str(path))


def test_music_and_phone_video_end_ready(tmp_path, sqlite_url, clamd, dask_client, media):
    settings = make_settings(tmp_path / "data", sqlite_url, clamd.url)
    with Farm(settings, client=dask_client) as farm:
        results = {Path(r["source"]).name: r for r in farm.ingest([str(media)], RECIPE).wait()}
        assert {name: (r["status"], r["reason"], r["message"]) for name, r in results.items()} == \
            {name: ("ready", None, None) for name in results}
        store = farm.stores["renditions"]
        renditions = {name: {r["preset"]: r for r in result["renditions"]} for name, result in results.items()}

        # The cover is the poster, at its own aspect; the audio is the audio rendition.
        for name, poster in (("cover.flac", (300, 200)), ("cover.mp3", (300, 200)),
                             ("cover.m4a", (300, 225)), ("cover.opus", (300, 200))):
            assert sorted(renditions[name]) == ["h264-audio", "poster-wide"], name
            got = renditions[name]["poster-wide"]
            assert (got["width"], got["height"]) == poster, name
            with _open(store, renditions[name]["h264-audio"], tmp_path, f"{name}.m4a") as audio:
                assert (len(audio.streams.video), audio.streams.audio[0].codec_context.name) == (0, "aac")
                assert audio.duration / 1e6 == pytest.approx(
                    float(ffprobe(media / name, "-show_entries", "format=duration")), abs=0.05)

        # A hostile cover costs the poster, recorded with its reason, and nothing else.
        with farm.catalog.engine.connect() as conn:
            for name, reason in (("bomb-cover.flac", "over_limit"), ("corrupt-cover.mp3", "corrupt")):
                assert sorted(renditions[name]) == ["h264-audio"], name
                status, details = conn.execute(select(StageRun.status, StageRun.details).where(
                    StageRun.asset_id == results[name]["id"], StageRun.stage == "convert")).one()
                assert status == "skipped" and details["reason"] == reason, (name, details)
                assert details["skipped"].startswith("the cover cannot be the poster")

        for name, seconds in (("rate-change.flac", 4.0), ("joined.mp3", 4.05),
                              ("sample-numbered.flac", 25.7)):
            assert sorted(renditions[name]) == ["h264-audio"], name
            with _open(store, renditions[name]["h264-audio"], tmp_path, f"{name}.m4a") as audio:
                assert audio.duration / 1e6 == pytest.approx(seconds, abs=0.1), name

        phone = renditions["iphone.mov"]
        assert sorted(phone) == ["h264-180p", "h264-360p", "poster-wide"]
        for name, size in (("h264-180p", (180, 320)), ("h264-360p", (360, 640))):
            with _open(store, phone[name], tmp_path, f"{name}.mp4") as video:
                frame = next(video.decode(video=0))
                assert (frame.width, frame.height) == size and frame.rotation == 0
                assert video.duration / 1e6 == pytest.approx(2.0, abs=0.1)
                assert video.streams.audio[0].codec_context.name == "aac"
        assert (phone["poster-wide"]["width"], phone["poster-wide"]["height"]) == (169, 300)
