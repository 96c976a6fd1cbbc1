"""Video and audio through the farm: ladders, posters, previews, HLS, chunked encodes."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import av
import pytest
from sqlalchemy import select

from catalog.models import StageRun
from cluster.farm import Farm
from pipelines.recipe import Preset, Recipe, VideoPreset
from tests.conftest import make_settings

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

RECIPE = Recipe("video", (Preset("thumb", 150, 150, fit="cover"),),
                video=(VideoPreset("h264", heights=(180, 360), speed="ultrafast", hls=True,
                                   preview_seconds=1.0),
                       VideoPreset("vp9", codec="libvpx-vp9", heights=(180,), speed="8",
                                   audio_codec="libopus", container="webm")))


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", *args], check=True)


@pytest.fixture
def media(tmp_path) -> Path:
    folder = tmp_path / "media"
    folder.mkdir()
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25", "-f", "lavfi",
            "-i", "sine=frequency=440:sample_rate=48000", "-t", "3", "-c:v", "libx264",
            "-pix_fmt", "yuv420p", "-g", "25", "-c:a", "aac", str(folder / "clip.mp4"))
    _ffmpeg("-f", "lavfi", "-i", "sine=frequency=330:sample_rate=44100", "-t", "2",
            "-c:a", "libmp3lame", str(folder / "voice.mp3"))
    return folder


def _decode(data: bytes, tmp_path: Path, name: str) -> dict:
    path = tmp_path / name
    path.write_bytes(data)
    with av.open(str(path)) as container:
        video = next(iter(container.streams.video), None)
        audio = next(iter(container.streams.audio), None)
        frames = sum(1 for _ in container.decode(video=0)) if video else 0
        return {"video": video.codec_context.name if video else None,
                "audio": audio.codec_context.name if audio else None,
                "size": (video.codec_context.width, video.codec_context.height) if video else None,
                "frames": frames, "duration": container.duration / 1e6}


def test_video_and_audio_renditions_decode_as_asked(tmp_path, sqlite_url, clamd, dask_client,
                                                    media):
    settings = make_settings(tmp_path / "data", sqlite_url, clamd.url)
    with Farm(settings, client=dask_client) as farm:
        results = {Path(r["source"]).name: r for r in farm.ingest([str(media)], RECIPE).wait()}
        clip, voice = results["clip.mp4"], results["voice.mp3"]
        assert (clip["status"], voice["status"]) == ("ready", "ready"), (clip["message"], voice["message"])
        renditions = {r["preset"]: r for r in clip["renditions"]}
        assert sorted(renditions) == ["h264-180p", "h264-360p", "h264-hls", "h264-preview",
                                      "poster-thumb", "vp9-180p"]
        store = farm.stores["renditions"]
        for name, size, video, audio in (("h264-180p", (320, 180), "h264", "aac"),
                                         ("h264-360p", (640, 360), "h264", "aac"),
                                         ("vp9-180p", (320, 180), "vp9", "opus")):
            decoded = _decode(store.get(renditions[name]["sha256"]), tmp_path, name)
            assert (decoded["video"], decoded["audio"], decoded["size"]) == (video, audio, size)
            assert decoded["frames"] == 75 and abs(decoded["duration"] - 3.0) <= 0.1
        preview = _decode(store.get(renditions["h264-preview"]["sha256"]), tmp_path, "preview")
        assert preview["audio"] is None and abs(preview["duration"] - 1.0) <= 0.1
        assert (renditions["poster-thumb"]["width"], renditions["poster-thumb"]["height"]) == (150, 150)

        hls = renditions["h264-hls"]
        assert hls["url"].endswith("/master.m3u8") and "/hls/" in hls["url"]
        prefix = hls["url"][len(store.url) + 1:].rsplit("/", 1)[0]
        master = store.get_at(f"{prefix}/master.m3u8").decode()
        for playlist in [line for line in master.splitlines() if line.endswith(".m3u8")]:
            media_playlist = store.get_at(f"{prefix}/{playlist}").decode()
            folder = playlist.rsplit("/", 1)[0]
            for line in media_playlist.splitlines():
                uri = line.split('URI="')[1].rstrip('"') if line.startswith("#EXT-X-MAP") else (
                    None if line.startswith("#") or not line else line)
                if uri:
                    assert store.get_at(f"{prefix}/{folder}/{uri}")  # every segment exists

        audio = {r["preset"]: r for r in voice["renditions"]}
        assert sorted(audio) == ["h264-audio", "vp9-audio"]  # one per preset that keeps audio
        for name, codec, media_type in (("h264-audio", "aac", "audio/mp4"),
                                        ("vp9-audio", "opus", "audio/ogg")):
            assert audio[name]["width"] is None and audio[name]["media_type"] == media_type
            decoded = _decode(store.get(audio[name]["sha256"]), tmp_path, name)
            assert (decoded["video"], decoded["audio"]) == (None, codec)
            assert abs(decoded["duration"] - 2.0) <= 0.1

        objects = sorted(store.fs.find(store.root))
        again = farm.ingest([str(media)], RECIPE, force=True).wait()
        assert {r["status"] for r in again} == {"ready"}
        assert sorted(store.fs.find(store.root)) == objects  # nothing re-encoded or re-stored


def test_a_long_video_is_encoded_in_chunks_on_several_workers(tmp_path, sqlite_url, clamd,
                                                              dask_client, media):
    settings = dataclasses.replace(make_settings(tmp_path / "data", sqlite_url, clamd.url),
                                   split_after_s=2.0, chunk_s=1.0)
    recipe = Recipe("chunked", RECIPE.presets, video=(VideoPreset("h264", heights=(180,),
                                                                  speed="ultrafast"),))
    with Farm(settings, client=dask_client) as farm:
        [result] = farm.ingest([str(media / "clip.mp4")], recipe).wait()
        assert result["status"] == "ready", result
        rendition = next(r for r in result["renditions"] if r["preset"] == "h264-180p")
        decoded = _decode(farm.stores["renditions"].get(rendition["sha256"]), tmp_path, "joined")
        assert decoded["frames"] == 75 and decoded["audio"] == "aac"
        assert len(farm.stores["buffer"].digests()) == 3  # three one-second chunks were encoded
        with farm.catalog.engine.connect() as conn:
            resize = conn.execute(select(StageRun.status).where(
                StageRun.asset_id == result["id"], StageRun.stage == "resize")).scalar_one()
        assert resize == "ok"
