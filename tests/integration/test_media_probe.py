"""Probing real media made by the ffmpeg CLI: what is described, what is refused and why."""

from __future__ import annotations

import ctypes
import os
import subprocess
from pathlib import Path

import av
import pytest

from pipelines.outcome import Rejected
from pipelines.upload.media_probe import OPEN_OPTIONS, MediaLimits, probe_media

VIDEO = ["-f", "lavfi", "-i", "testsrc=size=320x240:rate=25"]
TONE = ["-f", "lavfi", "-i", "sine=frequency=440"]


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    """One directory of test media, made once for the module."""
    root = tmp_path_factory.mktemp("media")
    ffmpeg(*VIDEO, *TONE, "-t", "2", "-c:v", "libx264", "-c:a", "aac", str(root / "clip.mp4"))
    # moov first, so that a cut file still has its index and fails only past the cut.
    ffmpeg(*VIDEO, *TONE, "-t", "5", "-c:v", "libx264", "-c:a", "aac", "-movflags", "+faststart",
           str(root / "long.mp4"))
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=160x120:rate=25", *TONE, "-t", "2", "-c:v", "libvpx-vp9",
           "-deadline", "realtime", "-cpu-used", "8", "-c:a", "libopus", str(root / "clip.webm"))
    ffmpeg(*TONE, "-t", "2", "-c:a", "libopus", str(root / "tone.opus"))
    ffmpeg(*TONE, "-t", "2", "-c:a", "libmp3lame", str(root / "tone.mp3"))
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=16x16:rate=25", "-t", "1", "-c:v", "libx264", str(root / "tiny.mp4"))
    ffmpeg(*VIDEO, "-t", "1", "-c:v", "libx264", "-f", "mpegts", str(root / "segment.ts"))
    ffmpeg(*VIDEO, "-frames:v", "1", str(root / "still.png"))
    return root


def rejection(data: bytes, limits: MediaLimits = MediaLimits()) -> Rejected:
    with pytest.raises(Rejected) as caught:
        probe_media(data, limits)
    return caught.value


def cut(path: Path, fraction: float) -> bytes:
    data = path.read_bytes()
    return data[:int(len(data) * fraction)]


def test_mp4_is_described_from_its_headers(media):
    info = probe_media((media / "clip.mp4").read_bytes())
    assert "mp4" in info.container.split(",") and info.media_kind == "video"
    assert info.duration_s == pytest.approx(2.0, abs=0.1)
    video, audio = info.streams
    assert (video.kind, video.codec, video.width, video.height, video.frame_rate) == ("video", "h264", 320, 240, 25.0)
    assert (audio.kind, audio.codec, audio.channels, audio.sample_rate) == ("audio", "aac", 1, 44100)


def test_webm_vp9_opus(media):
    info = probe_media((media / "clip.webm").read_bytes())
    assert "webm" in info.container and info.media_kind == "video"
    assert [(s.kind, s.codec) for s in info.streams] == [("video", "vp9"), ("audio", "opus")]
    assert (info.streams[0].width, info.streams[0].height) == (160, 120)


@pytest.mark.parametrize(("name", "container", "codec"), [("tone.opus", "ogg", "opus"), ("tone.mp3", "mp3", "mp3")])
def test_audio_only_files_are_audio(media, name, container, codec):
    info = probe_media((media / name).read_bytes())
    assert info.media_kind == "audio" and info.container == container
    assert [(s.kind, s.codec) for s in info.streams] == [("audio", codec)]
    assert info.duration_s == pytest.approx(2.0, abs=0.1)


def test_result_is_a_frozen_value(media):
    info = probe_media((media / "tone.mp3").read_bytes())
    with pytest.raises(AttributeError):
        info.duration_s = 1.0  # type: ignore[misc]


def test_mp4_cut_at_sixty_percent_is_rejected(media):
    stop = rejection(cut(media / "clip.mp4", 0.6))
    assert stop.reason in {"corrupt", "decoder_crashed"}


def test_mp4_cut_after_its_index_is_caught_by_reading_through(media):
    # The index survives and the first second decodes; only demuxing to the end shows the cut.
    stop = rejection(cut(media / "long.mp4", 0.6))
    assert stop.reason == "corrupt" and stop.message.startswith("the file ends at")
    assert stop.message.endswith("of 5.00 s")


def hls_playlist(*segments: str) -> bytes:
    entries = "".join(f"#EXTINF:1.0,\n{segment}\n" for segment in segments)
    return f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:0\n{entries}#EXT-X-ENDLIST\n".encode()


def test_hls_playlists_and_concat_scripts_never_open_what_they_name(media, tmp_path):
    canary = tmp_path / "canary.ts"
    canary.write_bytes((media / "segment.ts").read_bytes())
    playlist = hls_playlist(str(canary))
    naive = tmp_path / "upload.m3u8"
    naive.write_bytes(playlist)
    with OpenWatch(canary) as watch:
        # Control: opened naively under an .m3u8 name, these bytes do make FFmpeg open the canary.
        av.open(str(naive)).close()
        assert watch.opened(), "the control playlist must open the canary, or the silence below proves nothing"
        # Even where FFmpeg picks the hls demuxer, the whitelist refuses it before it reads the playlist.
        with pytest.raises(av.error.ArgumentError):
            av.open(str(naive), container_options=OPEN_OPTIONS)
        # What an upload named .m3u8, or the same playlist renamed .avi, turns into: the bytes alone.
        assert rejection(playlist).reason == "unsupported_type"
        assert rejection(hls_playlist(str(canary), "file:///etc/passwd")).reason == "unsupported_type"
        stop = rejection(f"ffconcat version 1.0\nfile '{canary}'\nfile '/etc/passwd'\n".encode())
        assert (stop.reason, stop.message) == ("unsupported_type", "concat files are not accepted")
        assert not watch.opened(), "a rejected playlist made the decoder open the file it names"


SDP = b"v=0\no=- 0 0 IN IP4 127.0.0.1\ns=feed\nc=IN IP4 127.0.0.1\nt=0 0\nm=video 5004 RTP/AVP 96\n"


@pytest.mark.parametrize(("name", "demuxer"), [("still.png", "png_pipe"), ("session.sdp", "sdp")])
def test_demuxers_off_the_list_are_named_and_refused(media, name, demuxer):
    # An SDP file would have FFmpeg listen for RTP on the network; a PNG is not video.
    data = SDP if name == "session.sdp" else (media / name).read_bytes()
    stop = rejection(data)
    assert (stop.reason, stop.message) == ("unsupported_type", f"{demuxer} files are not accepted")


def test_dimensions_over_the_limit(media):
    stop = rejection((media / "tiny.mp4").read_bytes(), MediaLimits(max_width=8))
    assert stop.reason == "over_limit" and "16x16" in stop.message
    assert rejection((media / "tiny.mp4").read_bytes(), MediaLimits(max_pixels=255)).reason == "over_limit"


def test_duration_over_the_limit(media):
    stop = rejection((media / "clip.mp4").read_bytes(), MediaLimits(max_duration_s=1))
    assert (stop.reason, stop.message) == ("over_limit", "the file lasts 2.0 s; the limit is 1 s")


def test_stream_count_and_bit_rate_over_the_limit(media):
    data = (media / "clip.mp4").read_bytes()
    assert "2 streams" in rejection(data, MediaLimits(max_streams=1)).message
    assert "bit rate" in rejection(data, MediaLimits(max_bit_rate=10_000)).message


def test_random_bytes_are_rejected():
    stop = rejection(os.urandom(30))
    assert stop.reason in {"unsupported_type", "corrupt"}


def test_empty_file_is_rejected_without_a_child():
    assert rejection(b"").reason == "empty"


def test_a_bad_file_between_good_ones_leaves_them_alone(media):
    good = (media / "tone.mp3").read_bytes()
    results = []
    for data in (good, cut(media / "long.mp4", 0.3), good):
        try:
            results.append(probe_media(data).media_kind)
        except Rejected as stop:
            results.append(stop.reason)
    assert results == ["audio", "corrupt", "audio"]


class OpenWatch:
    """inotify on one file: did any process open it while we watched?"""

    IN_OPEN = 0x20

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> "OpenWatch":
        libc = ctypes.CDLL(None, use_errno=True)
        self.fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0 or libc.inotify_add_watch(self.fd, os.fsencode(self.path), self.IN_OPEN) < 0:
            raise OSError(ctypes.get_errno(), "inotify is not available")
        return self

    def opened(self) -> bool:
        """Whether an open happened since the last call."""
        try:
            return bool(os.read(self.fd, 4096))
        except BlockingIOError:
            return False

    def __exit__(self, *exc) -> None:
        os.close(self.fd)
