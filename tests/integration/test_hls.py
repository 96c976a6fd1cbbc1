"""HLS packaging of a real two-rung ladder made by the ffmpeg CLI: playlists, files, decoding."""

from __future__ import annotations

import json
import os
import re
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import pytest

from pipelines.optimize.hls import HlsPackage, codecs_string, hls_rendition, package_hls

FPS = 25
SECONDS = 5
RUNGS = {"640x360": "360p", "320x180": "180p"}
TONE = ["-f", "lavfi", "-i", "sine=frequency=440"]
# A fixed one-second GOP and no scene cuts, as the ladder is encoded.
GOP = ["-g", str(FPS), "-keyint_min", str(FPS), "-sc_threshold", "0"]
FILE_ONLY = {"protocol_whitelist": "file"}
URI_ATTRIBUTE = re.compile(r'URI="([^"]*)"')


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


@pytest.fixture(scope="module")
def ladder(tmp_path_factory) -> dict[str, Path]:
    """Two H.264 + AAC rungs, 5 s, keyframes every second, moov first."""
    root = tmp_path_factory.mktemp("ladder")
    rungs = {}
    for size in RUNGS:
        rungs[size] = root / f"{size}.mp4"
        ffmpeg("-f", "lavfi", "-i", f"testsrc=size={size}:rate={FPS}", *TONE, "-t", str(SECONDS),
               "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", *GOP,
               "-c:a", "aac", "-movflags", "+faststart", str(rungs[size]))
    return rungs


@pytest.fixture(scope="module")
def package(ladder, tmp_path_factory) -> HlsPackage:
    out = tmp_path_factory.mktemp("hls") / "package"
    return package_hls([hls_rendition(str(path)) for path in ladder.values()], str(out),
                       segment_seconds=2.0)


def read(folder: str, name: str) -> str:
    return (Path(folder) / name).read_text()


def references(text: str) -> list[str]:
    """Every URI a playlist names: URI lines and URI="..." attributes (EXT-X-MAP)."""
    uris = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("#"):
            uris += URI_ATTRIBUTE.findall(line)
        elif line:
            uris.append(line)
    return uris


def extinf(text: str) -> list[float]:
    return [float(line[len("#EXTINF:"):].split(",")[0])
            for line in text.splitlines() if line.startswith("#EXTINF:")]


def stream_infs(master: str) -> list[tuple[dict[str, str], str]]:
    lines = master.splitlines()
    found = []
    for i, line in enumerate(lines):
        if line.startswith("#EXT-X-STREAM-INF:"):
            pairs = re.findall(r'([A-Z-]+)=("[^"]*"|[^,]*)', line.split(":", 1)[1])
            found.append(({k: v.strip('"') for k, v in pairs}, lines[i + 1]))
    return found


def video_frames(path: str) -> int:
    """Decode every video frame; demuxes every packet of every stream on the way."""
    with av.open(path, options=FILE_ONLY) as container:
        count = 0
        for packet in container.demux():
            for frame in packet.decode():
                count += isinstance(frame, av.VideoFrame)
        return count


def video_duration(path: str) -> Fraction:
    with av.open(path, options=FILE_ONLY) as container:
        video = container.streams.video[0]
        return Fraction(video.frames) / video.average_rate


def ffprobe_video(path: Path) -> dict:
    result = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_streams",
                             "-of", "json", str(path)], check=True, capture_output=True, text=True)
    return json.loads(result.stdout)["streams"][0]


def test_master_lists_both_rungs_by_bandwidth(package):
    master = read(package.folder, package.master)
    assert master.startswith("#EXTM3U\n")
    rungs = stream_infs(master)
    assert [uri for _, uri in rungs] == list(package.playlists)
    assert [attrs["RESOLUTION"] for attrs, _ in rungs] == ["320x180", "640x360"]
    bandwidths = [int(attrs["BANDWIDTH"]) for attrs, _ in rungs]
    assert bandwidths == sorted(bandwidths) and bandwidths[0] > 0
    for attrs, uri in rungs:
        assert re.fullmatch(r"avc1\.[0-9a-f]{6},mp4a\.40\.2", attrs["CODECS"])
        assert 0 < int(attrs["AVERAGE-BANDWIDTH"]) <= int(attrs["BANDWIDTH"])
        assert float(attrs["FRAME-RATE"]) == FPS
        assert uri == f"{RUNGS[attrs['RESOLUTION']]}/index.m3u8"


def test_bandwidth_covers_every_segment_and_the_rendition(package, ladder):
    """BANDWIDTH is a peak: at least the rendition's rate and each full segment's own rate."""
    for attrs, uri in stream_infs(read(package.folder, package.master)):
        size = next(s for s in RUNGS if RUNGS[s] == uri.split("/")[0])
        mp4 = ladder[size]
        assert int(attrs["BANDWIDTH"]) >= mp4.stat().st_size * 8 / SECONDS
        playlist = read(package.folder, uri)
        segments = [u for u in references(playlist) if u.endswith(".m4s")]
        for name, seconds in zip(segments, extinf(playlist)):
            if seconds >= 1.0:  # RFC 8216 measures windows of 0.5..1.5 target durations
                segment = (Path(package.folder) / uri).parent / name
                rate = segment.stat().st_size * 8 / seconds
                assert int(attrs["BANDWIDTH"]) >= rate


def test_every_reference_exists_and_every_file_is_referenced(package):
    folder = Path(package.folder)
    referenced = {package.master, package.mpd}  # the MPD: tests/integration/test_dash.py
    for playlist in (package.master, *package.playlists):
        base = Path(playlist).parent
        for uri in references(read(package.folder, playlist)):
            name = (base / uri).as_posix()
            assert (folder / name).is_file(), f"{playlist} names missing {uri}"
            referenced.add(name)
    on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert on_disk == referenced
    assert on_disk == {package.master, package.mpd, *package.playlists, *package.segments}
    for playlist in package.playlists:  # fMP4: an init section per rung
        assert any(line.startswith('#EXT-X-MAP:URI="init.mp4"')
                   for line in read(package.folder, playlist).splitlines())


def test_playlists_name_only_relative_paths(package):
    for playlist in (package.master, *package.playlists):
        text = read(package.folder, playlist)
        assert package.folder not in text
        for uri in references(text):
            assert not uri.startswith("/") and "\\" not in uri and "://" not in uri
            assert ".." not in uri.split("/")


def test_segment_durations_sum_to_the_rendition_duration(package, ladder):
    durations = {}
    for playlist in package.playlists:
        rung = playlist.split("/")[0]
        size = next(s for s in RUNGS if RUNGS[s] == rung)
        durations[rung] = extinf(read(package.folder, playlist))
        assert sum(durations[rung]) == pytest.approx(float(video_duration(str(ladder[size]))),
                                                     abs=1 / FPS)
        assert durations[rung][:-1] == [2.0] * (len(durations[rung]) - 1)
    assert durations["180p"] == durations["360p"]  # same GOP, same cuts: the rungs switch cleanly


def test_every_segment_starts_on_a_keyframe(package, tmp_path):
    folder = Path(package.folder)
    for playlist in package.playlists:
        rung = folder / Path(playlist).parent
        init = (rung / "init.mp4").read_bytes()
        for segment in sorted(rung.glob("seg-*.m4s")):
            alone = tmp_path / f"{rung.name}-{segment.stem}.mp4"
            alone.write_bytes(init + segment.read_bytes())
            with av.open(str(alone), options=FILE_ONLY) as container:
                first = next(p for p in container.demux(video=0) if p.size)
                assert first.is_keyframe, f"{playlist}: {segment.name} starts mid-GOP"


def test_each_media_playlist_decodes_every_frame(package, ladder):
    for playlist in package.playlists:
        rung = playlist.split("/")[0]
        size = next(s for s in RUNGS if RUNGS[s] == rung)
        path = os.path.join(package.folder, playlist)
        assert video_frames(path) == video_frames(str(ladder[size])) == FPS * SECONDS
        # And Debian's FFmpeg 5.1, a second reader, finds nothing to complain about.
        result = subprocess.run(["ffmpeg", "-v", "error", "-i", path, "-f", "null", "-"],
                                capture_output=True, text=True)
        assert result.returncode == 0 and result.stderr == ""


def test_master_playlist_plays_through_the_hls_demuxer(package):
    with av.open(os.path.join(package.folder, package.master), options=FILE_ONLY) as container:
        assert container.format.name == "hls"
        heights = sorted(s.codec_context.height for s in container.streams.video)
        assert heights == [180, 360]


def test_codecs_string_reads_profile_and_level(ladder):
    for path in ladder.values():
        probe = ffprobe_video(path)
        assert probe["profile"] == "High"
        codecs = codecs_string(str(path))
        assert re.fullmatch(rf"avc1\.64[0-9a-f]{{2}}{probe['level']:02x},mp4a\.40\.2", codecs), codecs


def test_hls_rendition_describes_the_rung(ladder):
    path = ladder["640x360"]
    rung = hls_rendition(str(path))
    assert (rung.width, rung.height, rung.frame_rate) == (640, 360, FPS)
    average = path.stat().st_size * 8 / SECONDS
    assert average * 1.15 < rung.bandwidth < average * 1.25
    assert rung.codecs == codecs_string(str(path))


def test_av1_and_opus_package_and_decode(tmp_path):
    """AV1 needs the stream copied with its demuxer's codec: PyAV has no "libdav1d" encoder."""
    source = tmp_path / "av1.mp4"
    ffmpeg("-f", "lavfi", "-i", f"testsrc=size=320x180:rate={FPS}", *TONE, "-t", "2",
           "-c:v", "libsvtav1", "-preset", "12", "-pix_fmt", "yuv420p", *GOP,
           "-c:a", "libopus", str(source))
    rung = hls_rendition(str(source))
    assert rung.codecs == "av01.0.00M.08,opus"  # main profile, level 2.0, main tier, 8-bit
    package = package_hls([rung], str(tmp_path / "hls"), segment_seconds=1.0)
    assert video_frames(os.path.join(package.folder, package.playlists[0])) == 2 * FPS
    assert 'CODECS="av01.0.00M.08,opus"' in read(package.folder, package.master)


def test_a_percent_in_the_path_is_not_a_segment_number(ladder, tmp_path):
    """The muxer expands %d anywhere in the segment path, so the package is built elsewhere."""
    out = tmp_path / "100%d" / "hls"
    package = package_hls([hls_rendition(str(ladder["320x180"]))], str(out))
    assert Path(package.folder) == out
    names = {p.name for p in (out / "180p").iterdir()}
    assert names == {"index.m3u8", "init.mp4", "seg-00001.m4s", "seg-00002.m4s"}
    assert video_frames(str(out / "180p" / "index.m3u8")) == FPS * SECONDS


def test_a_folder_with_files_is_refused(ladder, tmp_path):
    (tmp_path / "old.m3u8").write_text("#EXTM3U\n")
    with pytest.raises(FileExistsError):
        package_hls([hls_rendition(str(ladder["320x180"]))], str(tmp_path))
    assert [p.name for p in tmp_path.iterdir()] == ["old.m3u8"]  # nothing left behind
