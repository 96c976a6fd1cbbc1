"""Chunked encoding of real media: split on keyframes, encode apart, join, and decode the whole."""

from __future__ import annotations

import subprocess
from pathlib import Path

import av
import pytest

from pipelines.outcome import Failed
from pipelines.recipe import VideoPreset
from pipelines.transform.chunks import encode_chunk, join_chunks, keyframe_times, plan_chunks, should_split
from pipelines.upload.media_probe import probe_media

FPS = 25
PRESET = VideoPreset("h264", heights=(240,), speed="ultrafast", gop_seconds=1.0)


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """6 s at 25 fps with a keyframe every second exactly, and a tone."""
    path = tmp_path_factory.mktemp("chunk-media") / "clip.mp4"
    ffmpeg("-f", "lavfi", "-t", "6", "-i", f"testsrc2=size=320x240:rate={FPS}",
           "-f", "lavfi", "-t", "6", "-i", "sine=frequency=440:sample_rate=48000",
           "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-g", "25", "-keyint_min", "25",
           "-sc_threshold", "0", "-c:a", "aac", str(path))
    return path


def video_pts(path: Path) -> list[float]:
    with av.open(str(path)) as container:
        return [float(frame.pts * frame.time_base) for frame in container.decode(video=0)]


def test_should_split():
    assert not should_split(60) and should_split(600) and should_split(30, threshold_s=20)


def test_plan_chunks_spans_start_on_keyframes_and_cover_everything():
    keyframes = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert plan_chunks(keyframes, 6.0, 2.0) == [(0.0, 2.0), (2.0, 4.0), (4.0, 6.0)]
    # Sparse keyframes: the nearest to each target; a short tail joins the span before it.
    assert plan_chunks([0.0, 2.5, 5.5, 6.1], 7.0, 3.0) == [(0.0, 2.5), (2.5, 5.5), (5.5, 7.0)]
    assert plan_chunks([0.0, 1.0, 2.0, 3.0, 4.0], 4.5, 2.0) == [(0.0, 2.0), (2.0, 4.5)]
    assert plan_chunks([0.0], 10.0, 2.0) == [(0.0, 10.0)]
    assert plan_chunks([0.0, 1.0], 0.0, 2.0) == []


def test_keyframe_times(clip):
    assert keyframe_times(str(clip)) == pytest.approx([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])


def test_chunks_join_to_the_whole_video(clip, tmp_path):
    info = probe_media(clip.read_bytes())
    spans = plan_chunks(keyframe_times(str(clip)), info.duration_s, 2.0)
    assert [start for start, _ in spans] == [0.0, 2.0, 4.0]
    assert spans[-1][1] == info.duration_s == pytest.approx(6.0, abs=0.05)
    paths = [encode_chunk(str(clip), str(tmp_path / f"chunk-{i}.mp4"), start, end, PRESET, 240, info)
             for i, (start, end) in enumerate(spans)]
    chunk_frames = [len(video_pts(Path(path))) for path in paths]
    assert chunk_frames == [50, 50, 50]
    for path, (start, _) in zip(paths, spans):  # each chunk opens on a keyframe of its own
        with av.open(path) as container:
            first = next(p for p in container.demux(video=0) if p.size)
            assert first.is_keyframe and float(first.pts * first.time_base) == pytest.approx(start)

    output = join_chunks(paths, str(clip), str(tmp_path / "joined.mp4"), PRESET, info)
    assert (output.video_codec, output.audio_codec, output.width, output.height) == ("h264", "aac", 320, 240)
    assert output.settings["frames"] == 150 and output.settings["chunks"] == 3

    source = video_pts(clip)
    joined = video_pts(Path(output.path))
    assert len(joined) == sum(chunk_frames) == len(source) == 6 * FPS
    steps = [b - a for a, b in zip(joined, joined[1:])]
    assert all(step > 0 for step in steps) and max(steps) <= 1 / FPS + 1e-6
    assert joined == pytest.approx(source, abs=1e-6)
    with av.open(output.path) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert float(video.duration * video.time_base) == pytest.approx(6.0, abs=1 / FPS)
        audio_end = max(float(f.pts * f.time_base) + f.samples / f.sample_rate for f in container.decode(audio))
        assert audio_end == pytest.approx(6.0, abs=1 / FPS)
    assert output.duration_s == pytest.approx(6.0, abs=1 / FPS)
    data = Path(output.path).read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")
    # The CLI decodes the whole file without a word of complaint.
    check = subprocess.run(["ffmpeg", "-v", "error", "-i", output.path, "-f", "null", "-"],
                           capture_output=True, text=True)
    assert check.returncode == 0 and check.stderr == ""


def test_a_missing_chunk_is_refused(clip, tmp_path):
    info = probe_media(clip.read_bytes())
    spans = [(0.0, 2.0), (4.0, 6.0)]  # the middle left out
    paths = [encode_chunk(str(clip), str(tmp_path / f"chunk-{i}.mp4"), start, end, PRESET, 240, info)
             for i, (start, end) in enumerate(spans)]
    with pytest.raises(Failed) as caught:
        join_chunks(paths, str(clip), str(tmp_path / "joined.mp4"), PRESET, info)
    assert caught.value.reason == "chunk_mismatch" and "starts at 4.000s" in caught.value.message
    assert not (tmp_path / "joined.mp4").exists()


def test_variable_frame_rate_with_b_frames_joins_exactly(tmp_path):
    """Frame spacing doubles at a chunk boundary: the new chunk's first dts land behind the old one's."""
    source = tmp_path / "vfr.mp4"
    ffmpeg("-f", "lavfi", "-t", "2", "-i", f"testsrc2=size=320x240:rate={FPS}",
           "-vf", "setpts='if(lt(N,20),N*0.04,0.8+(N-20)*0.08)/TB'", "-fps_mode", "vfr",
           "-c:v", "libx264", "-preset", "ultrafast", "-g", "10", str(source))
    info = probe_media(source.read_bytes())
    preset = VideoPreset("bframes", heights=(240,), speed="veryfast", audio_codec=None)
    spans = plan_chunks(keyframe_times(str(source)), info.duration_s, 0.8)
    assert [start for start, _ in spans] == pytest.approx([0.0, 0.8, 1.6, 2.4])
    paths = [encode_chunk(str(source), str(tmp_path / f"chunk-{i}.mp4"), start, end, preset, 240, info)
             for i, (start, end) in enumerate(spans)]
    output = join_chunks(paths, str(source), str(tmp_path / "joined.mp4"), preset, info)
    assert video_pts(Path(output.path)) == pytest.approx(video_pts(source), abs=1e-6)
    assert output.audio_codec is None
    check = subprocess.run(["ffmpeg", "-v", "error", "-i", output.path, "-f", "null", "-"],
                           capture_output=True, text=True)
    assert check.returncode == 0 and check.stderr == ""
