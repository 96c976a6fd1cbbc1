"""The encode loop: one video rendition (or chunk) from a source, and the record of what was written.

One pass per rendition: demux → decode (threaded) → reformat (one reused
swscale context) → rotate if the source says so in one thread, encode
(threaded) → mux in another.
Timestamps are the source's own (rebased to start at zero), so variable frame
rate survives; nothing is assumed to be constant-rate except the GOP length.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import av
import av.error
from av.video.frame import PictureType
from av.video.reformatter import VideoReformatter

from pipelines.outcome import Rejected
from pipelines.recipe import VideoPreset
from pipelines.transform.audio import audio_settings, flush_audio, open_audio_stream
from pipelines.transform.encoder_setup import open_video_stream, video_settings
from pipelines.transform.geometry import INTERPOLATION, Geometry, Turner, plan_geometry
from pipelines.transform.ladder import video_info
from pipelines.transform.readahead import ReadAhead
from pipelines.transform.streams import (decode_packet, demux, enable_threads, open_input, origin_s, to_pts,
                                         video_stream)
from pipelines.upload.media_probe import MediaInfo
from pipelines.upload.served_source import Source

# Containers whose header states the duration (an index), so ending early means a cut file.
_INDEXED = frozenset({"mov", "matroska", "avi", "flac", "wav"})
VIDEO_TYPES = {"mp4": "video/mp4", "webm": "video/webm"}
# NVDEC through FFmpeg's cuvid decoders, by the source's codec. Decoding is bit-exact by
# these standards, so the frames equal the software decoder's: only the engine differs.
NVDEC_DECODERS = {"h264": "h264_cuvid", "hevc": "hevc_cuvid", "av1": "av1_cuvid"}
# Frames decoded and scaled ahead of the encoder: a 720p yuv420p frame is 1.4 MB.
_FRAMES_AHEAD = 8


@dataclass(frozen=True)
class VideoOutput:
    """One written rendition: where it is, what it holds and how it was made."""

    preset: str
    rung: str  # "720p" for video rungs, "audio" for audio-only, "preview"
    path: str
    container: str
    media_type: str
    video_codec: str | None
    audio_codec: str | None
    encoder: str | None  # the video encoder actually used, or the audio one for audio-only
    width: int | None
    height: int | None
    duration_s: float
    bytes: int
    settings: dict


def encode_video(source: Source, path: str, preset: VideoPreset, height: int, info: MediaInfo, *,
                 rung: str, audio: bool, start: float = 0.0, end: float = math.inf,
                 rebase_to_start: bool = False, container_format: str | None = None,
                 faststart: bool = True, decoders: tuple[str, ...] = ()) -> VideoOutput:
    """Encode the frames with start <= t < end (seconds from the source's start) to ``path``.

    Output timestamps are the source's less its start time (a chunk keeps the
    source's timeline), or less ``start`` with ``rebase_to_start`` (a preview begins at zero).
    The video is decoded by the NVDEC decoder for its codec when ``decoders``
    names it and it opens here, else in software; ``settings["decoder"]`` says which.
    """
    fmt = container_format or preset.container
    try:
        first = _first_frame(source)
        with open_input(source) as container:
            video = video_stream(container)
            geometry = plan_geometry(first, video, height)
            audio_in = container.streams.audio[0] if audio and container.streams.audio else None
            options = {"movflags": "+faststart"} if fmt == "mp4" and faststart else {}
            decoder, decoder_name, decoder_note = _video_decoder(video, decoders)
            scaler = VideoReformatter()
            trial = scaler.reformat(first, geometry.scale_width, geometry.scale_height, preset.pix_fmt,
                                    interpolation=INTERPOLATION)
            with av.open(path, "w", format=fmt, container_options=options) as output:
                vout = open_video_stream(output, preset, geometry.width, geometry.height, video.time_base,
                                         video.average_rate or video.guessed_rate, _colors(trial))
                aout, resampler = open_audio_stream(output, preset, audio_in) if audio_in else (None, None)
                loop = _Loop(container, output, video, vout, scaler, Turner(geometry), geometry, decoder)
                reached = loop.run(start, end, rebase_to_start, audio_in, aout, resampler)
            _check_complete(info, container, reached, start, end)
        _, settings = video_settings(preset, float(vout.codec_context.framerate))
        settings.update(size=f"{geometry.width}x{geometry.height}",
                        turn=[f"{name}={arg}" if arg else name for name, arg in geometry.turn],
                        time_base=str(video.time_base), frames=loop.frames, decoder=decoder_name)
        if decoder_note:
            settings["decoder_fallback"] = decoder_note
        if aout is not None:
            settings.update(audio_settings(aout, preset))
        return VideoOutput(preset.name, rung, path, fmt, VIDEO_TYPES[fmt], vout.codec.canonical_name,
                           aout.codec.canonical_name if aout is not None else None, vout.codec.name,
                           geometry.width, geometry.height, file_duration(path), os.path.getsize(path), settings)
    except BaseException:
        remove_quietly(path)
        raise


class _Loop:
    """The hot loop: demux → decode → reformat → turn in one thread, encode → mux in this one.

    Nothing else happens per frame. The two threads overlap the decoder's and
    the scaler's serial work with the encoder's (see ``readahead``).
    """

    def __init__(self, container, output, video, vout, scaler, turner: Turner, geometry: Geometry,
                 decoder=None) -> None:
        self.container, self.output, self.video, self.vout = container, output, video, vout
        self.scaler, self.turner, self.geometry = scaler, turner, geometry
        self.decoder = decoder  # a hardware decoder's context, or None for the stream's own
        self.origin = origin_s(container)
        self.frames = 0
        self.last = None  # the last pts encoded: encoders demand strictly increasing ones

    def run(self, start: float, end: float, rebase_to_start: bool, audio_in, aout, resampler) -> float:
        """Encode the span; return how far the video got, in seconds from the source's start."""
        mux, encode = self.output.mux, self.vout.encode
        if start > 0:  # lands on the keyframe at or before start
            self.container.seek(to_pts(start + self.origin, self.video.time_base), stream=self.video)
        enable_threads(self.video)
        decoded = self._decoded(start, end, rebase_to_start, audio_in)
        with ReadAhead(decoded, _FRAMES_AHEAD, "mediafarm-decode") as frames:
            for is_video, frame in frames:
                if is_video:
                    mux(encode(frame))
                    self.frames += 1
                else:
                    for piece in resampler.resample(frame):
                        mux(aout.encode(piece))
        mux(encode(None))
        if aout is not None:
            flush_audio(self.output, aout, resampler)
        return float(self.last * self.video.time_base) - self.origin if self.last is not None else 0.0

    def _decoded(self, start: float, end: float, rebase_to_start: bool, audio_in):
        """(True, scaled video frame ready to encode) and (False, audio frame), in demux order."""
        container, video, scaler, turner, decoder = self.container, self.video, self.scaler, self.turner, \
            self.decoder
        time_base, origin = video.time_base, self.origin
        start_pts = to_pts(start + origin, time_base)
        end_pts = to_pts(end + origin, time_base) if math.isfinite(end) else None
        shift = None if rebase_to_start else to_pts(origin, time_base)  # None: the first frame's pts
        audio_shift = to_pts((start if rebase_to_start else 0.0) + origin, audio_in.time_base) \
            if audio_in is not None else 0
        width, height, pix_fmt = self.geometry.scale_width, self.geometry.scale_height, \
            self.vout.codec_context.pix_fmt
        turn = bool(turner.filters)
        none = PictureType.NONE
        done = False
        for packet in demux(container, (video, audio_in) if audio_in is not None else (video,), origin):
            if packet.stream is video:
                if done:
                    continue
                for frame in decode_packet(packet, origin, decoder):
                    pts, last = frame.pts, self.last
                    if pts is None:  # an untimed frame (AVI, some TS) follows the one before
                        pts = last + (frame.duration or 1) if last is not None else start_pts
                    if pts < start_pts or (last is not None and pts <= last):
                        continue  # before the span (decoded from the keyframe before it), or a repeat
                    if end_pts is not None and pts >= end_pts:
                        done = True
                        break
                    if last is None and shift is None:
                        shift = pts
                    self.last = pts
                    out = scaler.reformat(frame, width, height, pix_fmt, interpolation=INTERPOLATION)
                    if turn:
                        out = turner.apply(out)
                    out.pts = pts - shift
                    out.duration = frame.duration  # becomes the packet's: the last frame's length in the file
                    out.pict_type = none  # a source I-frame would force a keyframe; the GOP is the encoder's
                    yield True, out
                if done and audio_in is None:
                    return
            else:
                for frame in decode_packet(packet, origin):
                    if frame.pts is not None:
                        frame.pts -= audio_shift
                    yield False, frame


def _video_decoder(video, allowed: tuple[str, ...]):
    """(hardware decoder context or None, the decoder's name, why the hardware one was not used).

    FFmpeg's cuvid decoders hand back frames in system memory (NV12 for 8-bit),
    so the rest of the loop is the same as for a software decode.
    """
    software = video.codec_context.name
    name = NVDEC_DECODERS.get(video.codec_context.codec.canonical_name)
    if name is None or name not in allowed:
        return None, software, None
    try:
        context = av.CodecContext.create(name, "r")
        # What the demuxer knows about the stream; cuvid reads SPS/PPS (avcC, hvcC...) from it.
        context.extradata = video.codec_context.extradata
        context.width, context.height = video.codec_context.width, video.codec_context.height
        context.open()
    except (av.error.FFmpegError, ValueError) as exc:
        # Detection opened it in the worker; a sandboxed child may still fail (its limits).
        return None, software, f"{name} did not open: {exc}"
    return context, name, None


def _colors(scaled) -> dict:
    """The encoder's colour tags, from a frame as it leaves swscale (which keeps the source's matrix)."""
    colors = {}
    for name in ("colorspace", "color_primaries", "color_trc", "color_range"):
        value = int(getattr(scaled, name, 0) or 0)
        # 0 is RGB or reserved and 2 unspecified for the first three; 0 is unspecified for range.
        if value not in (0, 2) or (name == "color_range" and value):
            colors[name] = value
    return colors


def _first_frame(source: Source):
    """Decode the first video frame on its own: its side data says how to turn, its tags the colours."""
    with open_input(source) as container:
        video = video_stream(container)
        if video is None:
            raise Rejected("unsupported_type", "the source has no video stream")
        video.codec_context.thread_count = 1
        origin = origin_s(container)
        for packet in demux(container, (video,), origin):
            for frame in decode_packet(packet, origin):
                return frame
    raise Rejected("corrupt", "no video frame could be decoded")


def _check_complete(info: MediaInfo, container, reached: float, start: float, end: float) -> None:
    """A cut file whose index survived decodes cleanly and just stops: say so rather than publish less."""
    duration = info.duration_s
    if duration is None or container.format.name.split(",")[0] not in _INDEXED:
        return
    video = video_info(info)
    frame = 1 / video.frame_rate if video and video.frame_rate else 0.04
    wanted = min(duration, end)
    # The slack covers muxers that count the last frame's duration differently (as the probe does).
    if start < wanted and reached + frame < wanted - (0.5 + 0.005 * duration):
        raise Rejected("corrupt", f"decode failed at {reached:.2f}s: the data ends there, "
                       f"{duration:.2f}s were declared")


def file_duration(path: str) -> float:
    """The written file's duration, read back from its own header."""
    with av.open(path) as written:
        if written.duration is not None:
            return written.duration / 1_000_000
        stream = written.streams[0]
        return float(stream.duration * stream.time_base) if stream.duration else 0.0


def remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
