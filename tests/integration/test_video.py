"""Video renditions from real media made by the ffmpeg CLI, each output decoded and checked."""

from __future__ import annotations

import dataclasses
import io
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from pipelines.outcome import Failed, Rejected
from pipelines.recipe import VideoPreset
from pipelines.transform.encode_loop import VideoOutput
from pipelines.transform.encoder_setup import open_video_stream
from pipelines.transform.ladder import ladder
from pipelines.transform.video import poster_frame, preview_clip, transcode, transcode_isolated
from pipelines.upload.media_probe import MediaInfo, StreamInfo, probe_media
from tests.media_samples import phone_video

FPS = 25
H264 = VideoPreset("h264", heights=(240, 360, 720), speed="ultrafast")


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def pattern(size: str, seconds: float) -> list[str]:
    return ["-f", "lavfi", "-t", str(seconds), "-i", f"testsrc2=size={size}:rate={FPS}"]


TONE = ["-f", "lavfi", "-t", "3", "-i", "sine=frequency=440:sample_rate=44100"]
X264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("video-media")
    ffmpeg(*pattern("640x360", 3), *TONE, *X264, "-c:a", "aac", "-shortest", str(root / "clip.mp4"))
    ffmpeg(*pattern("320x240", 2), *X264, str(root / "silent.mp4"))
    # Debian's ffmpeg 5.1 turns the legacy rotate tag into a display matrix on a stream copy.
    for angle in (90, 180, 270):
        ffmpeg("-i", str(root / "clip.mp4"), "-c", "copy", "-metadata:s:v:0", f"rotate={angle}",
               str(root / f"rotated-{angle}.mp4"))
    # 20 frames 40 ms apart, then 30 frames 80 ms apart: 3.2 s of variable frame rate.
    ffmpeg(*pattern("320x240", 2), "-vf", "setpts='if(lt(N,20),N*0.04,0.8+(N-20)*0.08)/TB'", "-fps_mode", "vfr",
           *X264, str(root / "vfr.mp4"))
    ffmpeg(*pattern("320x240", 1), "-vf", "scale=321:241", "-c:v", "libx264", "-preset", "ultrafast",
           "-pix_fmt", "yuv444p", str(root / "odd.mp4"))
    ffmpeg(*TONE, "-c:a", "libopus", str(root / "tone.ogg"))
    ffmpeg(*TONE, "-c:a", "libmp3lame", str(root / "tone.mp3"))
    # A black first second, then picture; one keyframe only, so the poster search must decode forward.
    ffmpeg("-f", "lavfi", "-i", f"color=black:size=320x240:rate={FPS}:duration=1",
           *pattern("320x240", 2), "-filter_complex", "[0:v][1:v]concat=n=2:v=1:a=0,format=yuv420p",
           "-c:v", "libx264", "-preset", "ultrafast", "-g", "250", "-sc_threshold", "0", str(root / "lead.mp4"))
    phone_video(root)
    # moov first, so that a file cut in half still opens and runs out of data part-way.
    ffmpeg(*pattern("320x240", 4), *X264, "-movflags", "+faststart", str(root / "long.mp4"))
    data = (root / "long.mp4").read_bytes()
    (root / "cut.mp4").write_bytes(data[:len(data) // 2])
    return root


def info_of(path: Path) -> MediaInfo:
    return probe_media(path.read_bytes())


@dataclasses.dataclass
class Decoded:
    container: str
    video_codec: str | None
    width: int | None
    height: int | None
    frames: int
    video_duration: float
    pts: list[float]
    audio_codec: str | None
    audio_rate: int | None
    audio_duration: float


def decode(path: str | Path) -> Decoded:
    """Decode every frame of every stream: what a player would get."""
    with av.open(str(path)) as container:
        video = container.streams.video[0] if container.streams.video else None
        audio = container.streams.audio[0] if container.streams.audio else None
        pts, size, last_audio_end = [], (None, None), 0.0
        for frame in container.decode(*(s for s in (video, audio) if s is not None)):
            if isinstance(frame, av.VideoFrame):
                pts.append(float(frame.pts * frame.time_base))
                size = (frame.width, frame.height)
            else:
                end = float(frame.pts * frame.time_base) + frame.samples / frame.sample_rate
                last_audio_end = max(last_audio_end, end)
        frame_time = 1 / float(video.average_rate) if video is not None and video.average_rate else 0.0
        return Decoded(container.format.name, video.codec_context.name if video else None, *size, len(pts),
                       (pts[-1] - pts[0] + frame_time) if pts else 0.0, pts,
                       audio.codec_context.name if audio else None, audio.sample_rate if audio else None,
                       last_audio_end)


def test_ladder_never_upscales(media):
    info = info_of(media / "clip.mp4")
    assert ladder(H264, info) == [240, 360]
    assert ladder(VideoPreset("big", heights=(720, 1080)), info) == [360]  # below the lowest rung: the source's
    assert ladder(H264, info_of(media / "tone.mp3")) == []
    odd = MediaInfo("mov,mp4,m4a,3gp,3g2,mj2", 1.0, None, (StreamInfo("video", "h264", 321, 241, 25.0),))
    assert ladder(VideoPreset("big", heights=(720,)), odd) == [240]
    portrait = MediaInfo("mov,mp4,m4a,3gp,3g2,mj2", 1.0, None, (StreamInfo("video", "h264", 360, 640, 25.0),))
    assert ladder(H264, portrait) == [240, 360]  # a rung is the short side


def test_h264_mp4_with_audio_and_faststart(media, tmp_path):
    info = info_of(media / "clip.mp4")
    outputs = [transcode(str(media / "clip.mp4"), str(tmp_path), H264, height, info) for height in ladder(H264, info)]
    for output, (width, height) in zip(outputs, [(426, 240), (640, 360)]):
        assert isinstance(output, VideoOutput)
        assert (output.rung, output.container, output.media_type) == (f"{height}p", "mp4", "video/mp4")
        assert (output.video_codec, output.audio_codec, output.encoder) == ("h264", "aac", "libx264")
        assert output.settings["crf"] == 23 and output.settings["gop"] == 50
        got = decode(output.path)
        assert (got.video_codec, got.width, got.height) == ("h264", width, height)
        assert (output.width, output.height) == (width, height)
        assert got.frames == 3 * FPS
        assert got.video_duration == pytest.approx(3.0, abs=1 / FPS)
        assert output.duration_s == pytest.approx(3.0, abs=1 / FPS)
        assert got.audio_codec == "aac" and got.audio_duration == pytest.approx(3.0, abs=1 / FPS)
        data = Path(output.path).read_bytes()
        assert output.bytes == len(data)
        assert data.find(b"moov") < data.find(b"mdat")  # faststart: the index comes first
        # x264 writes its settings into the stream: frame threads, as the ffmpeg CLI uses, not
        # the sliced threads PyAV's default thread type would give (slower on few cores).
        assert b"sliced_threads=0" in data


def test_keyframes_follow_the_gop_not_the_source(media, tmp_path):
    info = info_of(media / "clip.mp4")
    preset = VideoPreset("gop", heights=(240,), speed="ultrafast", gop_seconds=1.0, hls=True)
    output = transcode(str(media / "clip.mp4"), str(tmp_path), preset, 240, info)
    with av.open(output.path) as container:
        stream = container.streams.video[0]
        keys = [float(p.pts * p.time_base) for p in container.demux(stream) if p.size and p.is_keyframe]
    assert sorted(keys) == pytest.approx([0.0, 1.0, 2.0])


def test_webm_vp9_opus(media, tmp_path):
    info = info_of(media / "clip.mp4")
    preset = VideoPreset("vp9", codec="libvpx-vp9", heights=(240,), crf=40, speed="8",
                         audio_codec="libopus", container="webm")
    output = transcode(str(media / "clip.mp4"), str(tmp_path), preset, 240, info)
    assert (output.container, output.media_type, output.video_codec, output.audio_codec, output.encoder) == \
        ("webm", "video/webm", "vp9", "opus", "libvpx-vp9")
    assert output.path.endswith(".webm")
    got = decode(output.path)
    assert (got.video_codec, got.width, got.height, got.frames) == ("vp9", 426, 240, 3 * FPS)
    assert got.audio_codec == "opus" and got.audio_rate == 48000  # Opus resampled to its only rate
    assert got.video_duration == pytest.approx(3.0, abs=1 / FPS)


def test_av1_svt(media, tmp_path):
    info = info_of(media / "silent.mp4")
    preset = VideoPreset("av1", codec="libsvtav1", heights=(240,), crf=45, speed="12")
    output = transcode(str(media / "silent.mp4"), str(tmp_path), preset, 240, info)
    assert (output.video_codec, output.encoder, output.audio_codec) == ("av1", "libsvtav1", None)
    got = decode(output.path)
    assert (got.width, got.height, got.frames, got.audio_codec) == (320, 240, 2 * FPS, None)
    assert got.video_duration == pytest.approx(2.0, abs=1 / FPS)


def first_frames(source: Path, output: str, size: tuple[int, int], folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Grey first frames: the source's as the ffmpeg CLI shows it (autorotated, scaled to size), and ours."""
    width, height = size
    reference, ours = folder / "reference.gray", folder / "ours.gray"
    ffmpeg("-i", str(source), "-frames:v", "1", "-vf", f"scale={width}:{height}", "-f", "rawvideo",
           "-pix_fmt", "gray", str(reference))
    ffmpeg("-i", output, "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "gray", str(ours))
    return tuple(np.fromfile(path, np.uint8).reshape(height, width).astype(float) for path in (reference, ours))


@pytest.mark.parametrize(("angle", "size"), [(90, (360, 640)), (180, (640, 360)), (270, (360, 640))])
def test_rotation_gives_upright_output(media, tmp_path, angle, size):
    source = media / f"rotated-{angle}.mp4"
    info = info_of(source)
    assert (info.streams[0].width, info.streams[0].height) == (640, 360)  # stored landscape
    output = transcode(str(source), str(tmp_path), H264, 360, info)
    got = decode(output.path)
    assert (got.width, got.height) == size == (output.width, output.height)
    assert output.settings["turn"]  # the display matrix was read and acted on
    # The same picture the ffmpeg CLI shows (it autorotates), not a mirror or upside down.
    expected, actual = first_frames(source, output.path, size, tmp_path)
    assert np.abs(expected - actual).mean() < 3
    assert np.abs(expected - actual[::-1, ::-1]).mean() > 20  # and the check can tell
    with av.open(output.path) as container:  # upright pixels carry no display matrix any more
        assert next(container.decode(video=0)).rotation == 0


def test_hevc_in_mov_from_a_phone(media, tmp_path):
    source = media / "iphone.mov"
    info = info_of(source)
    assert [(s.kind, s.codec) for s in info.streams] == [("video", "hevc"), ("audio", "aac"), ("data", "unknown")]
    assert ladder(H264, info) == [240, 360]
    for height, size in ((240, (240, 426)), (360, (360, 640))):
        output = transcode(str(source), str(tmp_path), H264, height, info)
        got = decode(output.path)
        assert (got.video_codec, got.width, got.height, got.frames) == ("h264", *size, 2 * FPS)
        assert (output.width, output.height) == size and output.settings["decoder"] == "hevc"
        assert got.audio_codec == "aac" and got.video_duration == pytest.approx(2.0, abs=1 / FPS)
        # Upright as the ffmpeg CLI shows it (it autorotates), 10-bit brought to 8.
        expected, actual = first_frames(source, output.path, size, tmp_path)
        assert np.abs(expected - actual).mean() < 3
    image = Image.open(io.BytesIO(poster_frame(str(source), info)))
    assert image.size == (360, 640)


def test_variable_frame_rate_keeps_its_timing(media, tmp_path):
    info = info_of(media / "vfr.mp4")
    source = decode(media / "vfr.mp4")
    output = transcode(str(media / "vfr.mp4"), str(tmp_path), H264, 240, info)
    got = decode(output.path)
    assert got.frames == source.frames == 50
    assert got.pts == pytest.approx(source.pts, abs=1e-3)  # every frame where it was
    assert got.pts[-1] == pytest.approx(0.8 + 29 * 0.08, abs=1e-3)
    assert output.duration_s == pytest.approx(info.duration_s, abs=1e-3)  # the last frame keeps its length


def test_odd_dimensions(media, tmp_path):
    info = info_of(media / "odd.mp4")
    assert ladder(H264, info) == [240]
    output = transcode(str(media / "odd.mp4"), str(tmp_path), H264, 240, info)
    got = decode(output.path)
    assert (got.width, got.height, got.frames) == (320, 240, FPS)
    assert output.settings["pix_fmt"] == "yuv420p"


@pytest.mark.parametrize(("name", "preset", "container", "media_type", "codec", "suffix"), [
    ("tone.ogg", H264, "mp4", "audio/mp4", "aac", ".m4a"),
    ("tone.mp3", VideoPreset("web", codec="libvpx-vp9", audio_codec="libopus", container="webm"),
     "ogg", "audio/ogg", "opus", ".ogg"),
])
def test_audio_only_source_gets_an_audio_rendition(media, tmp_path, name, preset, container, media_type, codec,
                                                   suffix):
    info = info_of(media / name)
    assert ladder(preset, info) == []
    output = transcode(str(media / name), str(tmp_path), preset, None, info)
    assert (output.rung, output.container, output.media_type, output.audio_codec, output.video_codec) == \
        ("audio", container, media_type, codec, None)
    assert output.path.endswith(suffix) and output.width is None
    got = decode(output.path)
    assert got.video_codec is None and got.audio_codec == codec
    assert got.audio_duration == pytest.approx(3.0, abs=0.05)
    assert output.duration_s == pytest.approx(3.0, abs=0.05)


def test_video_without_audio_has_no_audio_stream(media, tmp_path):
    info = info_of(media / "silent.mp4")
    output = transcode(str(media / "silent.mp4"), str(tmp_path), H264, 240, info)
    assert output.audio_codec is None
    with av.open(output.path) as container:
        assert len(container.streams.audio) == 0 and len(container.streams.video) == 1


def test_poster_frame_skips_a_black_lead_in(media):
    png = poster_frame(str(media / "lead.mp4"), info_of(media / "lead.mp4"))
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(png))
    assert image.size == (320, 240)
    luma = np.asarray(image.convert("L"), dtype=float)
    assert luma.mean() > 40 and luma.std() > 12


def test_poster_frame_is_upright(media):
    source = media / "rotated-90.mp4"
    image = Image.open(io.BytesIO(poster_frame(str(source), info_of(source))))
    assert image.size == (360, 640)


def test_preview_clip(media, tmp_path):
    info = info_of(media / "clip.mp4")
    output = preview_clip(str(media / "clip.mp4"), str(tmp_path), H264, info, 2.0)
    assert (output.rung, output.width, output.height, output.audio_codec) == ("preview", 426, 240, None)
    got = decode(output.path)
    assert got.frames == 2 * FPS and got.audio_codec is None
    assert got.pts[0] == 0.0
    assert got.video_duration == pytest.approx(2.0, abs=1 / FPS)


def test_missing_encoder_is_a_failure_never_a_substitute(media, tmp_path):
    preset = VideoPreset("ghost", heights=(240,))
    object.__setattr__(preset, "codec", "libx264_nonexistent")  # past the recipe's own validation
    with av.open(str(tmp_path / "x.mp4"), "w") as output, pytest.raises(Failed) as caught:
        open_video_stream(output, preset, 320, 240, Fraction(1, FPS), FPS)
    assert caught.value.reason == "encoder_unavailable" and not caught.value.retryable
    with pytest.raises(Failed) as caught:
        transcode(str(media / "silent.mp4"), str(tmp_path), preset, 240, info_of(media / "silent.mp4"))
    assert caught.value.reason == "encoder_unavailable"
    assert not (tmp_path / "ghost-240p.mp4").exists()


def test_truncated_file_is_rejected_in_the_sandbox(media, tmp_path):
    # The probe would refuse this file; here the stage meets it anyway (its info from the intact file).
    info = info_of(media / "long.mp4")
    with pytest.raises(Rejected) as caught:
        transcode_isolated(str(media / "cut.mp4"), str(tmp_path), H264, 240, info)
    assert caught.value.reason == "corrupt"
    assert "decode failed at " in caught.value.message and "s:" in caught.value.message
    at = float(caught.value.message.split("decode failed at ")[1].split("s")[0])
    assert 0.5 < at < 3.5
    assert list(tmp_path.iterdir()) == []  # no half rendition left behind
    # The caller survives and goes on working.
    output = transcode_isolated(str(media / "silent.mp4"), str(tmp_path), H264, 240, info_of(media / "silent.mp4"))
    assert decode(output.path).frames == 2 * FPS
