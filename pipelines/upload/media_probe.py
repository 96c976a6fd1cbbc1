"""Probe untrusted video and audio in the sandbox: allowed containers, limits, a trial decode."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field, replace

import av
import av.logging

from pipelines.outcome import Rejected
from pipelines.upload.sandbox import run_isolated
from pipelines.upload.served_source import ServedReader, ServedSource, Source, open_media
from pipelines.upload.tags import Notes, audio_tags, buffered, container_fields

# Demuxers that may read an upload. Playlist and indirection demuxers (hls, dash,
# concat, image2, tty...) are absent: they open other files or URLs named inside
# the upload. avi stays: the classic AVI-with-embedded-HLS trick needs the hls
# demuxer, and avi passes these whitelists on to the nested demuxer it opens.
DEMUXERS = frozenset({
    "mov", "mp4", "m4a", "3gp", "3g2", "mj2",
    "matroska", "webm", "avi", "ogg", "mp3", "wav", "flac", "mpegts", "aac",
})

# Formats whose header states the duration authoritatively (an index, a sample
# count), so ending early means the file was cut. mp3, aac and mpegts durations
# are estimates from bit rate or the last timestamp and prove nothing.
_INDEXED = frozenset({"mov", "matroska", "avi", "flac", "wav"})

# ffmpeg checks the probed demuxer against format_whitelist *before* its
# read_header runs, so a playlist is refused before it can open anything;
# protocol_whitelist stops any demuxer from reaching past the file itself.
OPEN_OPTIONS = {"protocol_whitelist": "file", "format_whitelist": ",".join(sorted(DEMUXERS))}
# One decoder thread for the frames avformat_find_stream_info decodes inside av.open:
# the farm runs one single-threaded worker per core, and each thread costs address space.
DECODER_OPTIONS = {"threads": "1"}
# A whitelist nothing matches: opening with it probes the format and stops there.
_PROBE_ONLY = {"protocol_whitelist": "file", "format_whitelist": "mediafarm-probe-only"}

TIMEOUT_S = 20.0
MEMORY_BYTES = 1024 ** 3
CPU_SECONDS = 20
# The probe demuxes the whole file (see _read_through), so its limits grow with the size:
# the slowest a disk or a store may feed it before it counts as hung, and the slowest
# the demuxer may go through it (measured: 0.85 s of CPU for a 2.05 GiB MP4 at 40 Mb/s).
READ_FLOOR_BYTES_S = 16 * 1024 * 1024
DEMUX_FLOOR_BYTES_S = 128 * 1024 * 1024
# The trial decode: enough to prove the stream decodes, cheap for any length.
TRIAL_FRAMES = 50
TRIAL_SECONDS = 1.0


@dataclass(frozen=True)
class StreamInfo:
    kind: str  # "video", "audio", "cover" (an attached picture, e.g. album art), "subtitle" or "data"
    codec: str
    width: int | None = None
    height: int | None = None
    frame_rate: float | None = None
    channels: int | None = None
    sample_rate: int | None = None
    bit_rate: int | None = None


@dataclass(frozen=True)
class MediaInfo:
    container: str  # ffmpeg's demuxer name, e.g. "mov,mp4,m4a,3gp,3g2,mj2"
    duration_s: float | None
    bit_rate: int | None
    streams: tuple[StreamInfo, ...]
    # What the file says of itself (pipelines.upload.tags): artist, album, title, track, year,
    # genre, other tags; capture time, camera and place from a video's container; and notes
    # on what was dropped or cut.
    tags: dict = field(default_factory=dict)

    @property
    def media_kind(self) -> str:
        return "video" if any(s.kind == "video" for s in self.streams) else "audio"

    @property
    def cover(self) -> StreamInfo | None:
        """The first attached picture (album art), which is a still image and never a video."""
        return next((s for s in self.streams if s.kind == "cover"), None)


@dataclass(frozen=True)
class MediaLimits:
    max_duration_s: float = 4 * 3600
    max_width: int = 7680
    max_height: int = 4320
    max_pixels: int = 7680 * 4320
    max_streams: int = 16
    max_bit_rate: int = 200_000_000


def probe_media(data: bytes, limits: MediaLimits = MediaLimits()) -> MediaInfo:
    """Describe an acceptable video or audio file; raise Rejected for anything else, crashes included."""
    if not data:
        raise Rejected("empty", "the file is empty")
    return run_isolated(_probe, data, limits, timeout=TIMEOUT_S, memory_bytes=MEMORY_BYTES,
                        cpu_seconds=CPU_SECONDS)


def probe_media_file(source: Source, limits: MediaLimits = MediaLimits()) -> MediaInfo:
    """As ``probe_media``, for a file the child reads in place: a stored original on local
    disk, or one in a remote store that the worker serves (``served_source``). Nothing is
    held in memory or copied.

    A path must have no extension (see ``_probe``); the child only reads it.
    """
    size = source.size if isinstance(source, ServedSource) else os.path.getsize(source)
    if size == 0:
        raise Rejected("empty", "the file is empty")
    return run_isolated(_probe_path, source, limits, timeout=TIMEOUT_S + size / READ_FLOOR_BYTES_S,
                        memory_bytes=MEMORY_BYTES,
                        cpu_seconds=CPU_SECONDS + size // DEMUX_FLOOR_BYTES_S)


def _probe(data: bytes, limits: MediaLimits) -> MediaInfo:
    """The child's side of probe_media: the bytes go to a private file, probed there."""
    with tempfile.TemporaryDirectory() as scratch:
        # No extension: demuxers that pick themselves by file name (hls, image2, tty) stay out of it.
        path = os.path.join(scratch, "input")
        with open(path, "wb") as file:
            file.write(data)
        del data
        return _probe_path(path, limits)


def _probe_path(path: Source, limits: MediaLimits) -> MediaInfo:
    """The child's side: open, describe, check limits, demux through, trial-decode."""
    # PyAV leaves FFmpeg's log off by default; error-level records name the demuxer that refused.
    av.logging.set_level(av.logging.ERROR)
    with _open(path, limits) as container:
        info = _describe(container)
        _check(info, limits)
        length = _read_through(container, info, limits)
        container_tags = _container_tags(container)
    info = replace(info, tags=_tags(path, info, container_tags))
    # No duration in the header (a FLAC whose STREAMINFO leaves it out): what the packets say.
    return info if info.duration_s is not None else replace(info, duration_s=round(length, 6))


def _container_tags(container) -> dict[str, str]:
    """FFmpeg's tags of the file, and of its streams (where Ogg keeps Vorbis comments)."""
    tags = {}
    for stream in container.streams:
        if stream.type == "audio":
            tags.update(stream.metadata)
    return {**tags, **container.metadata}


def _tags(path: Source, info: MediaInfo, container_tags: dict[str, str]) -> dict:
    """Tags read after the file proved sound; a broken tag is dropped or cut, with a note."""
    notes = Notes()
    try:
        source = path if isinstance(path, str) else buffered(ServedReader(path))
        try:
            tags = audio_tags(source, info.container, container_tags, notes)
        finally:
            if source is not path:
                source.close()
        tags.update(container_fields(container_tags, notes) if info.media_kind == "video" else {})
    except Exception as exc:  # noqa: BLE001 - the file is sound; its tags are only tags
        tags = {}
        notes.add(f"tags: not read ({type(exc).__name__})")
    if notes:
        tags["notes"] = list(notes)
    return tags


def _open(path: Source, limits: MediaLimits):
    try:
        # Tags in another encoding than UTF-8 are read with U+FFFD, not refused (tags.py).
        return open_media(path, options={**DECODER_OPTIONS, **picture_cap(limits)},
                          container_options=OPEN_OPTIONS, metadata_errors="replace")
    except av.error.FFmpegError as exc:
        error = exc
    name = _probed_format(path)
    if name is None:
        raise Rejected("unsupported_type", "the bytes are not a media format Mediafarm recognises")
    if not _allowed(name):
        raise Rejected("unsupported_type", f"{name or 'these'} files are not accepted")
    raise Rejected("corrupt", f"the {name} container cannot be read: {_say(error)}")


def _probed_format(path: Source) -> str | None:
    """The demuxer FFmpeg would pick, without letting it read further: None if none would."""
    with av.logging.Capture() as logs:
        try:
            open_media(path, container_options=_PROBE_ONLY).close()
        except av.error.ArgumentError:
            # The refusal is logged by the format context, whose log name is the demuxer's.
            return next((name for _, name, message in logs if "not on whitelist" in message), "")
        except av.error.FFmpegError:
            return None
    return ""  # opened despite the whitelist: treat as unknown, hence not allowed


def _allowed(name: str) -> bool:
    return any(token in DEMUXERS for token in name.split(",") if token)


def _describe(container) -> MediaInfo:
    if not _allowed(container.format.name):  # belt and braces: format_whitelist already said so
        raise Rejected("unsupported_type", f"{container.format.name} files are not accepted")
    duration = container.duration / 1_000_000 if container.duration is not None else None
    streams = tuple(_stream_info(stream) for stream in container.streams)
    return MediaInfo(container.format.name, duration, container.bit_rate or None, streams)


def picture_cap(limits: MediaLimits) -> dict[str, str]:
    """Decoder options for av.open: decode no picture larger than a video may be.

    avformat_find_stream_info decodes an attached picture inside av.open to learn
    its size, whatever that is: a 12000x12000 PNG cover costs half a gigabyte
    there. A cover is held to the image limits, and decoded, on its own (see
    ``pipelines.transform.cover``).
    """
    return {"max_pixels": str(limits.max_pixels)}


def is_cover(stream) -> bool:
    """An attached picture: one still image (album art) that FFmpeg lists as a video stream."""
    return stream.type == "video" and bool(stream.disposition & av.stream.Disposition.attached_pic)


def _stream_info(stream) -> StreamInfo:
    context = stream.codec_context
    kind = stream.type if stream.type in ("video", "audio", "subtitle") else "data"
    codec = context.codec.canonical_name if context is not None and context.codec is not None else "unknown"
    bit_rate = (context.bit_rate if context is not None else None) or None
    if is_cover(stream):
        return StreamInfo("cover", codec, width=context.width or None, height=context.height or None)
    if kind == "video":
        rate = stream.average_rate or stream.guessed_rate
        return StreamInfo(kind, codec, width=context.width or None, height=context.height or None,
                          frame_rate=float(rate) if rate else None, bit_rate=bit_rate)
    if kind == "audio":
        return StreamInfo(kind, codec, channels=context.channels or None,
                          sample_rate=context.sample_rate or None, bit_rate=bit_rate)
    return StreamInfo(kind, codec, bit_rate=bit_rate)


def _check(info: MediaInfo, limits: MediaLimits) -> None:
    """Reject on what the headers claim, before the trial decode."""
    if not info.streams:
        raise Rejected("unsupported_type", "the file has no streams")
    if len(info.streams) > limits.max_streams:
        raise Rejected("over_limit", f"the file has {len(info.streams)} streams; "
                       f"the limit is {limits.max_streams}")
    if not any(s.kind in ("video", "audio") for s in info.streams):
        raise Rejected("unsupported_type", "the file has no video or audio stream")
    if info.duration_s is not None and info.duration_s > limits.max_duration_s:
        raise Rejected("over_limit", f"the file lasts {info.duration_s:.1f} s; "
                       f"the limit is {limits.max_duration_s:g} s")
    for stream in info.streams:
        if stream.kind != "video":
            continue  # a cover is held to the image limits when it is decoded, and costs only the poster
        width, height = stream.width or 0, stream.height or 0
        if width > limits.max_width or height > limits.max_height or width * height > limits.max_pixels:
            raise Rejected("over_limit", f"the {width}x{height} video exceeds the size limits "
                           f"({limits.max_width}x{limits.max_height}, {limits.max_pixels} pixels)")
    rates = [info.bit_rate or 0, *(s.bit_rate or 0 for s in info.streams)]
    if max(rates) > limits.max_bit_rate:
        raise Rejected("over_limit", f"the bit rate of {max(rates)} b/s exceeds the limit of "
                       f"{limits.max_bit_rate} b/s")


def _read_through(container, info: MediaInfo, limits: MediaLimits) -> float:
    """Demux every packet (cheap) and decode the first frames of the main stream (proof it decodes).

    Reading to the end catches a file cut short whose index survived, which
    decoding its first second never would. Returns how long the file is, by
    its packets (see ``_Span``).
    """
    media = [i for i, s in enumerate(info.streams) if s.kind in ("video", "audio")]
    target = container.streams[next((i for i in media if info.streams[i].kind == "video"), media[0])]
    # One thread, as DECODER_OPTIONS. Not frame threads: this child turns PyAV's log callback on,
    # which takes the GIL from FFmpeg's threads, and that can deadlock against a close holding it
    # (PyAV-Org/PyAV#751). A two-thread trial decode hung twice in the test suite.
    target.codec_context.thread_count = 1
    start = container.start_time / 1_000_000 if container.start_time is not None else 0.0
    spans = [_Span(stream, start, limits.max_duration_s) if stream.index in media else None
             for stream in container.streams]
    frames, trial_over = 0, False
    try:
        for packet in container.demux():
            span = spans[packet.stream.index]
            if span is None:
                continue  # a cover, subtitles or data: they do not make the file longer to transcode
            if span.add(packet):
                raise Rejected("over_limit", f"the file lasts more than {limits.max_duration_s:g} s")
            if packet.stream is target and not trial_over:
                try:
                    decoded = packet.decode()
                except av.error.FFmpegError as exc:
                    at = (_packet_start(packet) or start) - start
                    raise Rejected("corrupt", f"decode failed at {at:.2f}s: {_say(exc)}") from None
                frames += len(decoded)
                last = decoded[-1].time if decoded and decoded[-1].time is not None else None
                trial_over = frames >= TRIAL_FRAMES or (last is not None and last - start >= TRIAL_SECONDS)
    except av.error.FFmpegError as exc:
        raise Rejected("corrupt", f"the file cannot be read past {_length(spans):.2f} s: {_say(exc)}") from None
    if frames == 0:
        raise Rejected("corrupt", f"no {target.type} frame could be decoded")
    length, duration = _length(spans), info.duration_s
    # The slack covers muxers that count the last frame's duration differently.
    if container.format.name.split(",")[0] in _INDEXED and duration is not None \
            and length < duration - (0.5 + 0.005 * duration):
        raise Rejected("corrupt", f"the file ends at {length:.2f} s of {duration:.2f} s")
    return length


class _Span:
    """How long one stream lasts: the sum of its packets' durations, or failing those its timestamps.

    A demuxer's parser gives each packet its own length (a FLAC or MP3 frame's
    sample count, an MP4 sample's duration), and those add up to the stream's
    length however its clock is written. Timestamps can jump: FLAC encoders
    before 1.2 numbered variable-size blocks by sample, which readers take for
    frame numbers times the block size, putting 25.7 s at 32 hours (ffprobe goes
    by STREAMINFO's sample count instead). A stream whose packets do not all
    carry a duration (video in MPEG-TS) is measured by its timestamps.
    """

    __slots__ = ("numerator", "denominator", "origin", "end", "total", "counted", "limit", "stamp_limit")

    def __init__(self, stream, start_s: float, limit_s: float) -> None:
        base = stream.time_base
        self.numerator, self.denominator = base.numerator, base.denominator
        self.origin = start_s
        self.end: int | None = None
        self.total = 0
        self.counted = True
        # The limit in the stream's ticks, so that each packet costs integer sums and compares only
        # (Fraction arithmetic once cost a sixth of a probe's time, over every packet of the file).
        self.limit = limit_s * self.denominator / self.numerator
        self.stamp_limit = (limit_s + start_s) * self.denominator / self.numerator

    def add(self, packet) -> bool:
        """Count one packet in; whether the stream is now longer than the limit."""
        if packet.size:
            stamp, duration = _stamp(packet), packet.duration or 0
            if stamp is not None and (self.end is None or stamp + duration > self.end):
                self.end = stamp + duration
            self.total += duration
            self.counted = self.counted and duration > 0
        if self.counted:
            return self.total > self.limit
        return self.end is not None and self.end > self.stamp_limit

    def seconds(self) -> float:
        if self.counted:
            return self.total * self.numerator / self.denominator
        return self.end * self.numerator / self.denominator - self.origin if self.end is not None else 0.0


def _length(spans: list[_Span | None]) -> float:
    return max((span.seconds() for span in spans if span is not None), default=0.0)


def _packet_start(packet) -> float | None:
    stamp = _stamp(packet)
    return stamp * packet.time_base.numerator / packet.time_base.denominator \
        if stamp is not None and packet.time_base else None


def _stamp(packet) -> int | None:
    return packet.pts if packet.pts is not None else packet.dts


def _say(error: av.error.FFmpegError) -> str:
    """FFmpeg's error and its last log line, without the private temp path."""
    text = error.strerror or type(error).__name__
    detail = error.log[2].strip() if getattr(error, "log", None) else ""
    return f"{text} ({detail})" if detail and detail not in text else text
