"""Chunked encoding: split a long video on keyframes, encode the spans apart, join them losslessly.

Each span starts on a source keyframe, so a chunk decodes from there without
needing anything before it, and starts its own encode with a keyframe.

Chunks are MP4 files that keep the source's timeline (a chunk from 120 s has
its first frame at 120 s): MP4 stores every packet's pts and dts exactly in
the stream's own time base, negative and B-frame-shifted dts included, which
Matroska (milliseconds), NUT (no dts) and raw Annex B / IVF (no timestamps at
all) do not; variable frame rate survives the round trip untouched. The join
is then a plain remux: the chunks already sit on the output's timeline, so a
packet's offset is only the rebase from its chunk's time base to the output
stream's; that chunk k starts where chunk k-1 ended is checked, not assumed.
"""

from __future__ import annotations

import bisect
import heapq
import math
import os

import av
import av.error

from pipelines.outcome import Failed
from pipelines.recipe import VideoPreset
from pipelines.transform.audio import audio_settings, open_audio_stream
from pipelines.transform.encode_loop import VIDEO_TYPES, VideoOutput, encode_video, file_duration, remove_quietly
from pipelines.transform.encoder_setup import video_settings
from pipelines.transform.ladder import rung_label
from pipelines.transform.streams import demux, open_input, origin_s, to_pts, video_stream
from pipelines.upload.media_probe import MediaInfo
from pipelines.upload.served_source import Source

SPLIT_THRESHOLD_S = 120.0
# Chunk files are ours, but opened with the same whitelists as anything else: only mov/mp4.
_CHUNK_OPTIONS = {"protocol_whitelist": "file", "format_whitelist": "mov,mp4,m4a,3gp,3g2,mj2"}


def should_split(duration_s: float, threshold_s: float = SPLIT_THRESHOLD_S) -> bool:
    """Whether a video is long enough that encoding it in parallel chunks pays for the join."""
    return duration_s > threshold_s


def keyframe_times(source: Source) -> list[float]:
    """Seconds from the source's start of each keyframe of its first video stream, by demuxing only."""
    with open_input(source) as container:
        video = video_stream(container)
        if video is None:
            return []
        origin, time_base = origin_s(container), video.time_base
        times = {float(packet.pts * time_base) - origin
                 for packet in demux(container, (video,), origin)
                 if packet.is_keyframe and packet.pts is not None}
    return sorted(times)


def plan_chunks(keyframes: list[float], duration: float, target_seconds: float) -> list[tuple[float, float]]:
    """[start, end) spans covering 0..duration, each starting on a keyframe, about target_seconds long.

    The first span starts at zero whatever the first keyframe says (the file's
    start is where a decoder starts anyway); a tail shorter than half a target
    joins the span before it rather than becoming a chunk of its own.
    """
    if duration <= 0:
        return []
    if target_seconds <= 0:
        raise ValueError("target_seconds must be positive")
    candidates = sorted(k for k in set(keyframes) if 0 < k < duration)
    starts = [0.0]
    while True:
        goal = starts[-1] + target_seconds
        if goal > duration - target_seconds / 2:
            break
        index = bisect.bisect_left(candidates, goal)
        near = [k for k in candidates[max(0, index - 1):index + 1] if k > starts[-1]]
        if not near:
            break
        chosen = min(near, key=lambda k: abs(k - goal))
        if duration - chosen < target_seconds / 2:
            break
        starts.append(chosen)
    return list(zip(starts, starts[1:] + [duration]))


def encode_chunk(source: Source, out_path: str, start: float, end: float, preset: VideoPreset, height: int,
                 info: MediaInfo) -> str:
    """Encode the video frames with start <= t < end to an MP4 chunk on the source's timeline."""
    if info.duration_s is not None and end >= info.duration_s:
        end = math.inf  # the last span takes everything to the end, whatever the header rounded to
    encode_video(source, out_path, preset, height, info, rung=rung_label(height), audio=False,
                 start=start, end=end, container_format="mp4", faststart=False)
    return out_path


def join_chunks(chunk_paths: list[str], source: Source, out_path: str, preset: VideoPreset,
                info: MediaInfo) -> VideoOutput:
    """Remux the chunks' video into one file, audio encoded once from the source; no gap, no overlap.

    Raises ``Failed("chunk_mismatch")`` when the chunks were encoded differently,
    leave a gap or overlap, or hold another number of frames than the source:
    the caller can then transcode in one piece instead.
    """
    if not chunk_paths:
        raise ValueError("no chunks to join")
    fmt = preset.container
    options = {"movflags": "+faststart"} if fmt == "mp4" else {}
    chunks = []
    try:
        chunks = [av.open(path, container_options=_CHUNK_OPTIONS) for path in chunk_paths]
        _check_alike(chunks)
        template = chunks[0].streams.video[0]
        with open_input(source) as container, \
                av.open(out_path, "w", format=fmt, container_options=options) as output:
            video_in = video_stream(container)
            audio_in = container.streams.audio[0] if container.streams.audio and preset.audio_codec else None
            # opaque: take the chunk's codec as it is (the decoder PyAV picked), no encoder needed for a remux.
            vout = output.add_stream_from_template(template, opaque=True)
            vout.time_base = template.time_base
            aout, resampler = open_audio_stream(output, preset, audio_in) if audio_in is not None else (None, None)
            feed = _VideoFeed(chunks, vout)
            original = _SourceFeed(container, video_in, audio_in, aout, resampler)
            # Interleave by dts as we go: muxing all video first would hold it all in memory.
            for _, _, packet in heapq.merge(feed, original, key=lambda item: item[:2]):
                output.mux(packet)
            if aout is not None:
                for packet in original.flush():
                    output.mux(packet)
        if feed.frames != original.frames:
            raise Failed("chunk_mismatch", f"the chunks hold {feed.frames} frames, the source "
                         f"{original.frames}", retryable=False)
        context = template.codec_context
        _, settings = video_settings(preset, float(template.average_rate or template.guessed_rate or 25))
        settings.update(size=f"{context.width}x{context.height}", chunks=len(chunk_paths), frames=feed.frames)
        if aout is not None:
            settings.update(audio_settings(aout, preset))
        return VideoOutput(preset.name, rung_label(min(context.width, context.height)), out_path, fmt,
                           VIDEO_TYPES[fmt], context.codec.canonical_name,
                           aout.codec.canonical_name if aout is not None else None, preset.codec,
                           context.width, context.height, file_duration(out_path), os.path.getsize(out_path),
                           settings)
    except BaseException:
        remove_quietly(out_path)
        raise
    finally:
        for chunk in chunks:
            chunk.close()


def _check_alike(chunks) -> None:
    """Every chunk must have been made by the same encoder set-up: the first chunk's headers serve all."""
    def shape(chunk):
        stream = chunk.streams.video[0]
        context = stream.codec_context
        return (context.codec.name, context.width, context.height, context.pix_fmt, bytes(context.extradata or b""))

    first = shape(chunks[0])
    for index, chunk in enumerate(chunks[1:], start=1):
        if shape(chunk) != first:
            raise Failed("chunk_mismatch", f"chunk {index} was encoded differently from chunk 0", retryable=False)


class _VideoFeed:
    """The chunks' packets in order as (dts seconds, 0, packet), checking each chunk follows the last.

    Packet data and pts go out untouched. A chunk's first dts are its encoder's
    guess at the B-frame delay in *its* frame durations; where the frame rate
    changes at a boundary they can fall at or before the previous chunk's last
    dts, so those are nudged forward by a tick each (still no later than their pts).
    """

    def __init__(self, chunks, vout) -> None:
        self.chunks, self.vout = chunks, vout
        self.frames = 0

    def __iter__(self):
        time_base = self.chunks[0].streams.video[0].time_base
        previous_end = None  # where the previous chunk's last frame ends, in ticks of time_base
        last_dts = None
        for index, chunk in enumerate(self.chunks):
            stream = chunk.streams.video[0]
            if stream.time_base != time_base:
                raise Failed("chunk_mismatch", f"chunk {index} has time base {stream.time_base}, "
                             f"chunk 0 {time_base}", retryable=False)
            chunk_end = None
            for packet in chunk.demux(stream):
                if packet.size == 0:
                    continue  # the demuxer's end-of-stream marker
                pts, dts = packet.pts, packet.dts
                if chunk_end is None:  # a chunk's first packet is its keyframe and its earliest frame
                    if previous_end is not None and abs(pts - previous_end) * 2 > max(1, packet.duration):
                        raise Failed("chunk_mismatch", f"chunk {index} starts at {float(pts * time_base):.3f}s, "
                                     f"the one before ends at {float(previous_end * time_base):.3f}s",
                                     retryable=False)
                    chunk_end = pts
                if last_dts is not None and dts <= last_dts:
                    dts = last_dts + 1
                    if dts > pts:
                        raise Failed("chunk_mismatch", f"chunk {index} overlaps the one before at "
                                     f"{float(pts * time_base):.3f}s", retryable=False)
                    packet.dts = dts
                last_dts = dts
                chunk_end = max(chunk_end, pts + packet.duration)
                packet.stream = self.vout
                self.frames += 1
                yield float(dts * time_base), 0, packet
            previous_end = chunk_end


class _SourceFeed:
    """The source's audio, encoded once, as (dts seconds, 1, packet); counts its video frames on the way."""

    def __init__(self, container, video_in, audio_in, aout, resampler) -> None:
        self.container, self.video_in, self.audio_in = container, video_in, audio_in
        self.aout, self.resampler = aout, resampler
        self.frames = 0

    def __iter__(self):
        container, video_in, audio_in = self.container, self.video_in, self.audio_in
        origin = origin_s(container)
        streams = (video_in, audio_in) if audio_in is not None else (video_in,)
        shift = to_pts(origin, audio_in.time_base) if audio_in is not None else 0
        for packet in demux(container, streams, origin):
            if packet.stream is video_in:
                self.frames += packet.size > 0  # demux only: the chunks decoded these
                continue
            for frame in packet.decode():
                if frame.pts is not None:
                    frame.pts -= shift
                for piece in self.resampler.resample(frame):
                    yield from self._timed(self.aout.encode(piece))

    def flush(self):
        """The encoder's last packets, once the merge has drained everything else."""
        pieces = self.resampler.resample(None)
        return [packet for piece in pieces for packet in self.aout.encode(piece)] + self.aout.encode(None)

    @staticmethod
    def _timed(packets):
        for packet in packets:
            yield float(packet.dts * packet.time_base), 1, packet
