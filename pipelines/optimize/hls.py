"""Package a transcoded ladder as HLS and DASH: fMP4 segments, a media playlist per rung, a
master playlist, and an MPD over the same segments (``pipelines/optimize/dash.py``).

Packaging remuxes (no re-encode): each rung's MP4 goes through FFmpeg's ``hls``
muxer with stream copy, which cuts segments on video keyframes at cumulative
multiples of ``segment_seconds``. The ladder is encoded with a fixed GOP, so
the cuts, and hence the segments, line up across rungs. Audio stays muxed in
every rung (no separate audio rendition group): the simplest layout that any
player accepts. Segments are fMP4 (``init.mp4`` + ``.m4s``), not MPEG-TS,
because fMP4 also carries the ladder's AV1 and Opus.

The package is a folder that can be uploaded as is under one key prefix::

    master.m3u8  manifest.mpd
    360p/index.m3u8  360p/init.mp4  360p/seg-00001.m4s ...
    720p/index.m3u8  ...

Every playlist names what it references by a bare relative name, never an
absolute path or ``..``.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass

import av

from pipelines.optimize.dash import DashRung, mpd

MASTER = "master.m3u8"
MPD = "manifest.mpd"
MEDIA_PLAYLIST = "index.m3u8"
INIT = "init.mp4"
SEGMENT_TEMPLATE = "seg-%05d.m4s"

# Our own renditions, but still opened as files only: nothing may reach past them.
_OPEN_OPTIONS = {"protocol_whitelist": "file"}
# Peak bit rate per RFC 8216 4.3.4.2: the highest rate over any run of
# consecutive segments lasting 0.5 to 1.5 target durations.
_PEAK_WINDOW = (0.5, 1.5)
# A rendition's bandwidth estimated from its average rate: headroom for the peaks.
_PEAK_OVER_AVERAGE = 1.2


@dataclass(frozen=True)
class HlsRendition:
    """One rung of the ladder, already an MP4, and what the master playlist says of it."""

    path: str
    width: int | None
    height: int | None
    bandwidth: int  # bits per second; a floor for BANDWIDTH, which is also measured
    codecs: str  # RFC 6381, e.g. "avc1.64001f,mp4a.40.2"
    frame_rate: float | None = None

    def __post_init__(self) -> None:
        if self.bandwidth <= 0:
            raise ValueError(f"rendition {self.path!r}: bandwidth must be positive")
        if not self.codecs:
            raise ValueError(f"rendition {self.path!r}: codecs is empty")
        if (self.width is None) != (self.height is None):
            raise ValueError(f"rendition {self.path!r}: set both width and height, or neither")


@dataclass(frozen=True)
class HlsPackage:
    """An HLS folder on local disk; every name is relative to ``folder``."""

    folder: str
    master: str
    playlists: tuple[str, ...]  # one media playlist per rung, in master order
    segments: tuple[str, ...]  # every init and media segment, in playlist order
    mpd: str = MPD  # the DASH manifest over the same segments


@dataclass(frozen=True)
class _Rung:
    name: str
    rendition: HlsRendition
    version: int
    files: tuple[str, ...]  # init first, then media segments, relative to the rung folder
    peak: int
    average: int
    durations: tuple[float, ...]  # of the media segments, seconds


def package_hls(renditions: list[HlsRendition], out_dir: str,
                segment_seconds: float = 4.0) -> HlsPackage:
    """Remux every rung into fMP4 segments under ``out_dir`` and write the master playlist.

    ``out_dir`` must be missing or empty. The package is built beside it and
    renamed into place, so ``out_dir`` is never seen half-written.
    """
    if not renditions:
        raise ValueError("HLS packaging needs at least one rendition")
    if not segment_seconds > 0:
        raise ValueError("segment_seconds must be positive")
    out_dir = os.path.abspath(out_dir)
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        raise FileExistsError(f"{out_dir} is not empty")
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    staging = _staging_dir(parent, os.path.basename(out_dir))
    try:
        rungs = []
        for name, rendition in zip(_rung_names(renditions), renditions):
            os.mkdir(os.path.join(staging, name))
            rungs.append(_package_rung(rendition, staging, name, segment_seconds))
        rungs.sort(key=lambda r: (r.peak, r.name))
        with open(os.path.join(staging, MASTER), "w", encoding="utf-8") as master:
            master.write(_master_playlist(rungs))
        with open(os.path.join(staging, MPD), "w", encoding="utf-8") as manifest:
            manifest.write(_mpd(rungs))
        if os.path.isdir(out_dir):
            os.rmdir(out_dir)  # empty, checked above; rename will not replace a folder
        shutil.move(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return HlsPackage(
        folder=out_dir,
        master=MASTER,
        playlists=tuple(f"{r.name}/{MEDIA_PLAYLIST}" for r in rungs),
        segments=tuple(f"{r.name}/{f}" for r in rungs for f in r.files),
    )


def hls_rendition(path: str) -> HlsRendition:
    """Describe an MP4 rung for the master playlist: size, frame rate, bandwidth, codecs."""
    with av.open(path, options=_OPEN_OPTIONS) as container:
        video = container.streams.video[0] if container.streams.video else None
        rate = container.bit_rate
        if not rate:
            duration = container.duration / av.time_base if container.duration else 0.0
            if duration <= 0:
                raise ValueError(f"{path}: no duration to derive a bit rate from")
            rate = os.path.getsize(path) * 8 / duration
        frame_rate = float(video.average_rate) if video is not None and video.average_rate else None
        return HlsRendition(
            path=path,
            width=video.codec_context.width if video is not None else None,
            height=video.codec_context.height if video is not None else None,
            bandwidth=math.ceil(rate * _PEAK_OVER_AVERAGE),
            codecs=_codecs(container, path),
            frame_rate=frame_rate,
        )


def codecs_string(path: str) -> str:
    """RFC 6381 CODECS of a file's first video and audio streams, e.g. ``avc1.64001f,mp4a.40.2``."""
    with av.open(path, options=_OPEN_OPTIONS) as container:
        return _codecs(container, path)


def _codecs(container: av.container.InputContainer, path: str) -> str:
    streams = container.streams.video[:1] + container.streams.audio[:1]
    if not streams:
        raise ValueError(f"{path}: no video or audio stream")
    return ",".join(_codec_id(s, path) for s in streams)


def _codec_id(stream: av.stream.Stream, path: str) -> str:
    codec = stream.codec_context.codec.canonical_name  # "av1" whichever decoder PyAV picked
    extradata = stream.codec_context.extradata or b""
    if codec == "h264":
        return _avc1(extradata, path)
    if codec == "av1":
        return _av01(extradata, path)
    if codec == "aac":
        return _mp4a(extradata, stream.codec_context.profile)
    if codec == "opus":
        # The sample entry is "Opus", but browsers' MediaSource (and so hls.js)
        # accept only the lower-case form.
        return "opus"
    raise ValueError(f"{path}: no HLS CODECS value for {codec}")


def _avc1(extradata: bytes, path: str) -> str:
    if len(extradata) >= 4 and extradata[0] == 1:  # avcC: version, profile, constraints, level
        profile, constraints, level = extradata[1:4]
    else:  # Annex B: the SPS's first three bytes after its NAL header
        sps = _annexb_sps(extradata)
        if sps is None:
            raise ValueError(f"{path}: H.264 stream without an SPS in its extradata")
        profile, constraints, level = sps
    return f"avc1.{profile:02x}{constraints:02x}{level:02x}"


def _annexb_sps(data: bytes) -> tuple[int, int, int] | None:
    start = data.find(b"\x00\x00\x01")
    while start != -1:
        header = start + 3
        if header + 3 < len(data) and data[header] & 0x1F == 7:
            return data[header + 1], data[header + 2], data[header + 3]
        start = data.find(b"\x00\x00\x01", header)
    return None


def _av01(extradata: bytes, path: str) -> str:
    if len(extradata) < 3 or extradata[0] != 0x81:  # av1C marker and version 1
        raise ValueError(f"{path}: AV1 stream without an av1C record")
    profile, level = extradata[1] >> 5, extradata[1] & 0x1F
    tier = "H" if extradata[2] & 0x80 else "M"
    high_bitdepth, twelve_bit = extradata[2] & 0x40, extradata[2] & 0x20
    depth = 12 if high_bitdepth and twelve_bit else 10 if high_bitdepth else 8
    return f"av01.{profile}.{level:02d}{tier}.{depth:02d}"


def _mp4a(extradata: bytes, profile: str | None) -> str:
    if len(extradata) >= 2:  # AudioSpecificConfig: 5-bit object type, 31 escapes to 6 more
        object_type = extradata[0] >> 3
        if object_type == 31:
            object_type = 32 + (((extradata[0] & 0x07) << 3) | (extradata[1] >> 5))
        return f"mp4a.40.{object_type}"
    return {"HE-AAC": "mp4a.40.5", "HE-AACv2": "mp4a.40.29"}.get(profile or "", "mp4a.40.2")


def _staging_dir(parent: str, name: str) -> str:
    # The hls muxer expands %d in the segment path and offers no escape, so the
    # package is built where the path has no '%', beside out_dir when it can be.
    for base in (parent, tempfile.gettempdir()):
        if "%" not in base:
            hidden = f".{name.replace('%', '_')}.partial-{uuid.uuid4().hex[:12]}"
            staging = os.path.join(base, hidden)
            os.mkdir(staging)  # not mkdtemp: its 0700 would stay on the published folder
            return staging
    raise ValueError(f"cannot build HLS under {parent!r}: '%' in the path")


def _rung_names(renditions: list[HlsRendition]) -> list[str]:
    names: list[str] = []
    for rendition in renditions:
        base = f"{rendition.height}p" if rendition.height else "audio"
        name, n = base, 1
        while name in names:
            n += 1
            name = f"{base}-{n}"
        names.append(name)
    return names


def _package_rung(rendition: HlsRendition, root: str, name: str,
                  segment_seconds: float) -> _Rung:
    folder = os.path.join(root, name)
    _remux(rendition.path, folder, segment_seconds)
    version, target, init, segments = _read_media_playlist(os.path.join(folder, MEDIA_PLAYLIST))
    sizes = [os.path.getsize(os.path.join(folder, uri)) for uri, _ in segments]
    durations = [duration for _, duration in segments]
    peak, average = _bit_rates(sizes, durations, target)
    return _Rung(
        name=name,
        rendition=rendition,
        version=version,
        files=((init,) if init else ()) + tuple(uri for uri, _ in segments),
        peak=max(peak, rendition.bandwidth),
        average=average,
        durations=tuple(durations),
    )


def _remux(source: str, folder: str, segment_seconds: float) -> None:
    options = {
        "hls_time": f"{segment_seconds:g}",
        "hls_segment_type": "fmp4",
        "hls_playlist_type": "vod",
        "hls_list_size": "0",  # every segment, not a live window
        "hls_flags": "independent_segments",  # true: every segment starts on a keyframe
        "hls_fmp4_init_filename": INIT,
        "hls_segment_filename": os.path.join(folder, SEGMENT_TEMPLATE),
        "start_number": "1",
    }
    with av.open(source, options=_OPEN_OPTIONS) as inp:
        streams = inp.streams.video[:1] + inp.streams.audio[:1]
        if not streams:
            raise ValueError(f"{source}: no video or audio stream to package")
        with av.open(os.path.join(folder, MEDIA_PLAYLIST), "w", format="hls",
                     options=options) as out:
            # opaque=True reuses the demuxer's codec: the default looks up an
            # encoder by the decoder's name, and there is no "libdav1d" encoder.
            copies = {s.index: out.add_stream_from_template(s, opaque=True) for s in streams}
            for packet in inp.demux(streams):
                if packet.dts is None:  # the demuxer's empty end-of-stream packets
                    continue
                packet.stream = copies[packet.stream.index]
                out.mux(packet)


def _read_media_playlist(path: str) -> tuple[int, int, str | None, list[tuple[str, float]]]:
    """Version, target duration, init segment and (segment, duration) list of a media playlist."""
    version, target, init, segments, duration = 1, 0, None, [], None
    with open(path, encoding="utf-8") as playlist:
        for line in (raw.strip() for raw in playlist):
            if line.startswith("#EXT-X-VERSION:"):
                version = int(line.split(":", 1)[1])
            elif line.startswith("#EXT-X-TARGETDURATION:"):
                target = int(line.split(":", 1)[1])
            elif line.startswith("#EXT-X-MAP:"):
                init = _bare(line.split('URI="', 1)[1].split('"', 1)[0], path)
            elif line.startswith("#EXTINF:"):
                duration = float(line[len("#EXTINF:"):].split(",", 1)[0])
            elif line and not line.startswith("#"):
                if duration is None:
                    raise ValueError(f"{path}: segment {line!r} without #EXTINF")
                segments.append((_bare(line, path), duration))
                duration = None
    if not segments:
        raise ValueError(f"{path}: the muxer wrote no segments")
    return version, target, init, segments


def _bare(uri: str, path: str) -> str:
    # The folder is uploaded under one key prefix: only names inside it resolve.
    if not uri or "/" in uri or "\\" in uri or ":" in uri or uri in (".", ".."):
        raise ValueError(f"{path}: playlist names {uri!r}, not a file beside it")
    return uri


def _bit_rates(sizes: list[int], durations: list[float], target: float) -> tuple[int, int]:
    """Peak (RFC 8216 windows of consecutive segments) and average bit rates, in bits per second."""
    total = sum(durations)
    average = math.ceil(sum(sizes) * 8 / total) if total > 0 else 0
    target = target or max(durations)
    low, high = _PEAK_WINDOW[0] * target, _PEAK_WINDOW[1] * target
    peak = 0
    for first in range(len(sizes)):
        size, duration = 0, 0.0
        for last in range(first, len(sizes)):
            size += sizes[last]
            duration += durations[last]
            if duration > high:
                break
            if duration >= low and duration > 0:
                peak = max(peak, math.ceil(size * 8 / duration))
    return max(peak, average), average


def _master_playlist(rungs: list[_Rung]) -> str:
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{max(r.version for r in rungs)}",
             "#EXT-X-INDEPENDENT-SEGMENTS"]
    for rung in rungs:
        r = rung.rendition
        attributes = [f"BANDWIDTH={rung.peak}", f"AVERAGE-BANDWIDTH={rung.average}"]
        if r.width and r.height:
            attributes.append(f"RESOLUTION={r.width}x{r.height}")
        if r.frame_rate:
            attributes.append(f"FRAME-RATE={r.frame_rate:.3f}")
        attributes.append(f'CODECS="{r.codecs}"')
        lines += [f"#EXT-X-STREAM-INF:{','.join(attributes)}", f"{rung.name}/{MEDIA_PLAYLIST}"]
    return "\n".join(lines) + "\n"


def _mpd(rungs: list[_Rung]) -> str:
    # The muxer's names: '%05d' in SEGMENT_TEMPLATE is DASH's $Number%05d$, numbered from 1.
    template = SEGMENT_TEMPLATE.replace("%05d", "$Number%05d$")
    for rung in rungs:
        expected = tuple(SEGMENT_TEMPLATE % n for n in range(1, len(rung.durations) + 1))
        if rung.files[0] != INIT or rung.files[1:] != expected:
            raise ValueError(f"{rung.name}: the muxer's files are not init + numbered segments")
    return mpd([DashRung(name=r.name, codecs=r.rendition.codecs, bandwidth=r.peak,
                         width=r.rendition.width, height=r.rendition.height,
                         frame_rate=r.rendition.frame_rate, init=r.files[0],
                         segments=tuple(zip(r.files[1:], r.durations)))
                for r in rungs], template)
