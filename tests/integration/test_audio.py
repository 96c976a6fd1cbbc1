"""Audio from real encoders: cover art, parameters that change mid-stream, lengths that timestamps misstate."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from pipelines.outcome import Rejected
from pipelines.recipe import VideoPreset
from pipelines.transform.ladder import ladder
from pipelines.transform.video import poster_frame_isolated, transcode
from pipelines.upload.media_probe import MediaLimits, probe_media
from pipelines.upload.validate import Limits
from tests.media_samples import COVERS, ffprobe, joined_broadcast, music_library

AAC = VideoPreset("h264", heights=(240,), speed="ultrafast")
OPUS = VideoPreset("vp9", codec="libvpx-vp9", audio_codec="libopus", container="webm")
WITH_COVERS = sorted(COVERS)


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    return music_library(tmp_path_factory.mktemp("audio-media"))


def info_of(path: Path, limits: MediaLimits = MediaLimits()):
    return probe_media(path.read_bytes(), limits)


def decoded_length(path: str | Path) -> tuple[float, set]:
    """Seconds of samples a player decodes, and the (rate, layout) pairs it meets."""
    seconds, kinds = 0.0, set()
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            seconds += frame.samples / frame.sample_rate
            kinds.add((frame.sample_rate, frame.layout.name))
    return seconds, kinds


# ---------------------------------------------------------------- covers

@pytest.mark.parametrize("name", WITH_COVERS)
def test_a_cover_is_a_picture_not_a_video(media, name):
    info = info_of(media / name)
    assert info.media_kind == "audio"
    kinds = [s.kind for s in info.streams]
    assert kinds == ["audio", "cover"]
    cover = info.streams[1]
    assert (cover.width, cover.height) == COVERS[name][1]
    assert info.duration_s == pytest.approx(3.0, abs=0.05)
    assert ladder(AAC, info) == []


@pytest.mark.parametrize("name", WITH_COVERS)
def test_audio_with_a_cover_gets_its_audio_rendition(media, tmp_path, name):
    info = info_of(media / name)
    for preset, codec in ((AAC, "aac"), (OPUS, "opus")):
        output = transcode(str(media / name), str(tmp_path), preset, None, info)
        assert (output.rung, output.audio_codec, output.video_codec) == ("audio", codec, None)
        with av.open(output.path) as written:
            assert len(written.streams.video) == 0  # the picture is not carried into the rendition
        assert output.duration_s == pytest.approx(float(ffprobe(media / name, "-show_entries", "format=duration")),
                                                  abs=0.05)


@pytest.mark.parametrize("name", WITH_COVERS)
def test_the_cover_is_the_poster(media, name):
    info = info_of(media / name)
    picture = Image.open(io.BytesIO(poster_frame_isolated(str(media / name), info, Limits())))
    assert picture.size == COVERS[name][1]
    reference = np.asarray(Image.open(media / COVERS[name][0]).convert("L"), dtype=float)
    assert np.abs(np.asarray(picture.convert("L"), dtype=float) - reference).mean() < 4  # the cover itself


def test_a_bomb_cover_is_refused_as_an_image_would_be_and_costs_no_audio(media, tmp_path):
    info = info_of(media / "bomb-cover.flac")  # the probe neither decodes the picture nor refuses the file
    assert info.media_kind == "audio"
    with pytest.raises(Rejected) as caught:
        poster_frame_isolated(str(media / "bomb-cover.flac"), info, Limits())
    assert caught.value.reason == "over_limit" and "12000x12000" in caught.value.message
    output = transcode(str(media / "bomb-cover.flac"), str(tmp_path), AAC, None, info)
    assert output.duration_s == pytest.approx(3.0, abs=0.05)


@pytest.mark.parametrize("name", ["corrupt-cover.flac", "corrupt-cover.mp3", "corrupt-cover.m4a"])
def test_a_corrupt_cover_is_refused_and_costs_no_audio(media, tmp_path, name):
    info = info_of(media / name)
    assert info.media_kind == "audio"
    with pytest.raises(Rejected) as caught:
        poster_frame_isolated(str(media / name), info, Limits())
    assert caught.value.reason == "corrupt" and "cover" in caught.value.message
    output = transcode(str(media / name), str(tmp_path), AAC, None, info)
    assert output.duration_s == pytest.approx(3.0, abs=0.05)


# ---------------------------------------------------------------- parameters that change mid-stream

@pytest.mark.parametrize(("name", "kinds", "seconds"), [
    ("rate-change.flac", {(44100, "mono"), (48000, "mono")}, 4.0),
    ("joined.mp3", {(44100, "mono"), (48000, "stereo")}, 4.0),
])
def test_audio_whose_rate_or_channels_change_mid_stream(media, tmp_path, name, kinds, seconds):
    source = media / name
    length, met = decoded_length(source)
    assert kinds <= met  # the change is in the file, as FFmpeg decodes it
    info = info_of(source)
    for preset in (AAC, OPUS):
        output = transcode(str(source), str(tmp_path), preset, None, info)
        written, layouts = decoded_length(output.path)
        assert len(layouts) == 1  # one rate and layout out, whatever came in
        assert written == pytest.approx(length, abs=0.06)
        assert output.duration_s == pytest.approx(seconds, abs=0.1)


def test_video_whose_audio_changes_mid_stream(media, tmp_path):
    source = joined_broadcast(tmp_path)
    length, met = decoded_length(source)
    assert {(44100, "mono"), (48000, "stereo")} <= met
    info = info_of(source)
    output = transcode(str(source), str(tmp_path), AAC, 240, info)
    with av.open(output.path) as written:
        frames = sum(1 for _ in written.decode(video=0))
    assert frames == 100  # 4 s at 25 fps: the video is all there
    written, layouts = decoded_length(output.path)
    assert len(layouts) == 1 and written == pytest.approx(length, abs=0.1)


# ---------------------------------------------------------------- lengths

def test_an_old_encoders_sample_numbered_flac_lasts_what_its_header_says(media, tmp_path):
    source = media / "sample-numbered.flac"
    assert float(ffprobe(source, "-show_entries", "format=duration")) == pytest.approx(25.7)
    with av.open(str(source)) as container:  # the timestamps claim hours
        last = max(p.pts * p.time_base for p in container.demux(audio=0) if p.pts is not None)
    assert last > 4 * 3600
    info = info_of(source)
    assert info.duration_s == pytest.approx(25.7, abs=0.01)
    info = info_of(source, MediaLimits(max_duration_s=60))  # real length 25.7 s: within a minute
    output = transcode(str(source), str(tmp_path), AAC, None, info)
    assert output.duration_s == pytest.approx(25.7, abs=0.05)
    assert decoded_length(output.path)[0] == pytest.approx(25.7, abs=0.05)


def test_over_limit_still_holds_when_the_real_length_is_over(media):
    with pytest.raises(Rejected) as caught:
        info_of(media / "sample-numbered.flac", MediaLimits(max_duration_s=20))
    assert caught.value.reason == "over_limit" and "25.7" in caught.value.message


def test_a_flac_cut_short_is_still_caught(media):
    data = (media / "sample-numbered.flac").read_bytes()
    with pytest.raises(Rejected) as caught:
        probe_media(data[:len(data) // 2])
    assert caught.value.reason == "corrupt"
