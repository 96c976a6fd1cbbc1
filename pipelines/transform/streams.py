"""Reading untrusted media: open it with the probe's whitelists, demux and decode with errors as outcomes.

A read or decode error becomes ``Rejected("corrupt")`` at the last good time,
in seconds from the source's start (its ``origin_s``).
"""

from __future__ import annotations

from fractions import Fraction

import av
import av.error

from pipelines.outcome import Rejected
from pipelines.upload.media_probe import OPEN_OPTIONS, MediaLimits, is_cover, picture_cap
from pipelines.upload.served_source import Source, open_media


def open_input(source: Source):
    """Open an untrusted file with the probe's whitelists: no other protocols, only allowed demuxers.

    ``source`` is a local path, or a stored original the worker serves (see ``served_source``).
    """
    try:
        return open_media(source, options=picture_cap(MediaLimits()), container_options=OPEN_OPTIONS)
    except av.error.FFmpegError as exc:
        raise Rejected("corrupt", f"the file cannot be read: {describe_error(exc)}") from None


def video_stream(container):
    """The first moving-picture stream: cover art is not video."""
    return next((stream for stream in container.streams.video if not is_cover(stream)), None)


def enable_threads(stream) -> None:
    # Frame and slice threads, as many as FFmpeg sees cores: decode is half the work at 1080p.
    stream.codec_context.thread_count = 0
    stream.codec_context.thread_type = "AUTO"


def origin_s(container) -> float:
    """The source's start time in seconds: output timelines start there."""
    return container.start_time / 1_000_000 if container.start_time is not None else 0.0


def to_pts(seconds: float, time_base: Fraction) -> int:
    return round(Fraction(seconds).limit_denominator(10 ** 9) / time_base)


def _packet_time(packet, origin: float) -> float:
    stamp = packet.pts if packet.pts is not None else packet.dts
    if stamp is None or not packet.time_base:
        return 0.0
    return max(0.0, float(stamp * packet.time_base) - origin)


def demux(container, streams, origin: float):
    """The container's packets; a read error becomes Rejected("corrupt") at the last good time."""
    packets = container.demux(streams)
    packet = None
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return
        except av.error.FFmpegError as exc:
            at = _packet_time(packet, origin) if packet is not None else 0.0
            raise Rejected("corrupt", f"decode failed at {at:.2f}s: {describe_error(exc)}") from None
        yield packet


def decode_packet(packet, origin: float, decoder=None) -> list:
    try:
        return decoder.decode(packet) if decoder is not None else packet.decode()
    except av.error.FFmpegError as exc:
        at = _packet_time(packet, origin)
        raise Rejected("corrupt", f"decode failed at {at:.2f}s: {describe_error(exc)}") from None


def describe_error(error: av.error.FFmpegError) -> str:
    """FFmpeg's error and its last log line, without the file's path."""
    text = error.strerror or type(error).__name__
    detail = error.log[2].strip() if getattr(error, "log", None) else ""
    return f"{text} ({detail})" if detail and detail not in text else text
