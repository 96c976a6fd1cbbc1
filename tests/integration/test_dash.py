"""DASH beside HLS: the package's MPD names the very fMP4 segments its HLS playlists name,
and what it names decodes (init + media segments concatenated, through PyAV)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import av
import pytest

from pipelines.optimize.dash import MPD_NAMESPACE
from tests.integration.test_hls import FILE_ONLY, FPS, SECONDS, extinf, ladder, package, read  # noqa: F401  (fixtures)

NS = {"mpd": MPD_NAMESPACE}


def _named(representation: ET.Element) -> tuple[str, list[str], list[int]]:
    """Init and media file names a Representation's SegmentTemplate expands to, and durations."""
    template = representation.find("mpd:SegmentTemplate", NS)
    number = int(template.get("startNumber", "1"))
    names, durations = [], []
    for s in template.find("mpd:SegmentTimeline", NS).findall("mpd:S", NS):
        for _ in range(int(s.get("r", "0")) + 1):
            names.append(re.sub(r"\$Number%0(\d)d\$", lambda m: f"{number:0{m[1]}d}",
                                template.get("media")))
            durations.append(int(s.get("d")))
            number += 1
    return template.get("initialization"), names, durations


def test_the_mpd_is_static_and_lists_every_rung(package):
    root = ET.fromstring(read(package.folder, package.mpd))
    assert root.tag == f"{{{MPD_NAMESPACE}}}MPD" and root.get("type") == "static"
    assert root.get("mediaPresentationDuration") == f"PT{SECONDS:.3f}S"
    [adaptation] = root.findall("mpd:Period/mpd:AdaptationSet", NS)
    assert adaptation.get("mimeType") == "video/mp4"
    representations = adaptation.findall("mpd:Representation", NS)
    assert sorted(int(r.get("height")) for r in representations) == [180, 360]
    for r in representations:
        assert re.fullmatch(r"avc1\.[0-9a-f]{6},mp4a\.40\.2", r.get("codecs"))
        assert int(r.get("bandwidth")) > 0 and r.get("frameRate") == str(FPS)


def test_the_mpd_names_the_hls_segments_with_the_hls_durations(package):
    root = ET.fromstring(read(package.folder, package.mpd))
    for representation in root.iter(f"{{{MPD_NAMESPACE}}}Representation"):
        rung = representation.get("id")
        init, media, durations = _named(representation)
        playlist = f"{rung}/index.m3u8"
        assert playlist in package.playlists
        assert [init, *media] == [s for s in package.segments if s.startswith(f"{rung}/")]
        assert durations == [round(d * 1000) for d in extinf(read(package.folder, playlist))]


def test_the_segments_the_mpd_names_decode_every_frame(package, tmp_path):
    folder = Path(package.folder)
    root = ET.fromstring(read(package.folder, package.mpd))
    for representation in root.iter(f"{{{MPD_NAMESPACE}}}Representation"):
        init, media, _ = _named(representation)
        joined = tmp_path / f"{representation.get('id')}.mp4"
        joined.write_bytes(b"".join((folder / name).read_bytes() for name in (init, *media)))
        with av.open(str(joined), options=FILE_ONLY) as container:
            frames = sum(1 for _ in container.decode(video=0))
            height = container.streams.video[0].codec_context.height
        assert frames == FPS * SECONDS
        assert height == int(representation.get("height"))


def test_an_mpd_needs_a_rung():
    from pipelines.optimize.dash import mpd
    with pytest.raises(ValueError):
        mpd([], "seg-$Number%05d$.m4s")
