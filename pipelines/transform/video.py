"""Video renditions: decode with PyAV, scale upright, encode each ladder rung per preset, mux.

One pass per rendition: demux → decode (threaded) → reformat (one reused
swscale context) → rotate if the source says so in one thread, encode
(threaded) → mux in another.
Timestamps are the source's own (rebased to start at zero), so variable frame
rate survives; nothing is assumed to be constant-rate except the GOP length.

A rung names the short side ("720p" is 1280x720 landscape, 720x1280 portrait),
as players and platforms do: MediaInfo does not carry rotation, and the short
side is the same either way up, so the ladder can be planned from it alone.
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass
from fractions import Fraction

import av
import av.error
import av.codec.context
import av.filter
from av.video.frame import PictureType
from av.video.reformatter import Interpolation, VideoReformatter

from pipelines.outcome import Failed, Rejected
from pipelines.recipe import NVENC_CODECS, VideoPreset
from pipelines.transform.cover import cover_picture
from pipelines.transform.readahead import ReadAhead
from pipelines.upload.media_probe import OPEN_OPTIONS, MediaInfo, MediaLimits, is_cover, picture_cap
from pipelines.upload.sandbox import run_isolated
from pipelines.upload.validate import Limits

# Containers whose header states the duration (an index), so ending early means a cut file.
_INDEXED = frozenset({"mov", "matroska", "avi", "flac", "wav"})
VIDEO_TYPES = {"mp4": "video/mp4", "webm": "video/webm"}
_AUDIO_TYPES = {"mp4": "audio/mp4", "ogg": "audio/ogg"}
_EXTENSIONS = {("video", "mp4"): ".mp4", ("video", "webm"): ".webm",
               ("audio", "mp4"): ".m4a", ("audio", "ogg"): ".ogg"}
# The CLI's scale filter default; bilinear is faster but visibly softer when halving.
_INTERPOLATION = Interpolation.BICUBIC
# Poster sampling: how many frames, over how much of the start, and what counts as "not flat".
POSTER_SAMPLES = 10
POSTER_SPAN_S = 60.0
POSTER_MIN_LUMA = 40.0
POSTER_MIN_STDDEV = 12.0
POSTER_MAX_SIDE = 1920
# NVENC encoders: used only when a recipe names one, and a failure where the engine is missing.
HARDWARE_ENCODERS = frozenset(NVENC_CODECS)
# NVDEC through FFmpeg's cuvid decoders, by the source's codec. Decoding is bit-exact by
# these standards, so the frames equal the software decoder's: only the engine differs.
NVDEC_DECODERS = {"h264": "h264_cuvid", "hevc": "hevc_cuvid", "av1": "av1_cuvid"}
# Sandbox limits: decoding plus encoding, with codec threads.
MEMORY_BYTES = 6 * 1024 ** 3
BASE_TIMEOUT_S = 60.0
TIMEOUT_PER_SECOND = 4.0
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


@dataclass(frozen=True)
class Geometry:
    """How decoded frames become output frames: scale to (scale_w, scale_h), then turn."""

    width: int  # output, upright
    height: int
    scale_width: int  # what swscale produces, before the turn
    scale_height: int
    turn: tuple[tuple[str, str | None], ...]  # filters, e.g. (("transpose", "clock"),)


# ---------------------------------------------------------------- the ladder

def ladder(preset: VideoPreset, info: MediaInfo) -> list[int]:
    """The rungs to make: those not above the source's short side, else one at the source's."""
    video = _video_info(info)
    if video is None or not video.width or not video.height:
        return []
    short = min(video.width, video.height)
    rungs = sorted(h for h in set(preset.heights) if h <= short)
    return rungs or [max(2, short - short % 2)]


def rung_label(height: int) -> str:
    return f"{height}p"


def _video_info(info: MediaInfo):
    return next((s for s in info.streams if s.kind == "video"), None)  # a cover is kind "cover"


# ---------------------------------------------------------------- encoder set-up (shared with chunks)

def video_settings(preset: VideoPreset, frame_rate: float) -> tuple[dict[str, str], dict]:
    """The encoder's private options and the settings record, for a preset at a frame rate."""
    gop = max(1, round(preset.gop_seconds * frame_rate))
    if preset.codec == "libx264":
        options = {"preset": preset.speed}
        if preset.hls:
            # Keyframes only on the GOP grid, so every rung's segments cut at the same times.
            options["x264-params"] = "scenecut=0"
    elif preset.codec == "libsvtav1":
        options = {"preset": preset.speed}
    elif preset.codec in HARDWARE_ENCODERS:
        options = {"preset": preset.speed}  # p1 (fastest) .. p7 (best)
        if preset.hls:
            options["no-scenecut"] = "1"  # keyframes on the GOP grid only, as for x264
        if preset.crf is not None:
            # NVENC's constant quality: VBR with a CQ level and no rate cap (FFmpeg's nvenc docs).
            options.update({"rc": "vbr", "cq": str(preset.crf), "b": "0"})
    else:  # libvpx-vp9
        options = {"cpu-used": preset.speed, "row-mt": "1"}
        if preset.crf is not None:
            options["b"] = "0"  # pure constant quality: with a target rate libvpx's CRF is only a floor
    if preset.crf is not None and preset.codec not in HARDWARE_ENCODERS:
        options["crf"] = str(preset.crf)
    settings = {"codec": preset.codec, "crf": preset.crf, "bit_rate": preset.bit_rate,
                "speed": preset.speed, "gop": gop, "gop_seconds": preset.gop_seconds,
                "pix_fmt": preset.pix_fmt, "options": dict(options)}
    return options, settings


def open_video_stream(output, preset: VideoPreset, width: int, height: int, time_base: Fraction,
                      frame_rate: Fraction | float | None, colors: dict | None = None):
    """Add and open the preset's video encoder on ``output``; the one place encoders are set up.

    Raises ``Failed("encoder_unavailable")`` when this build lacks the codec or
    its pixel format: another encoder would make a rendition the recipe did not ask for.
    """
    codec = _encoder(preset.codec, "video")
    if codec.name in HARDWARE_ENCODERS and not os.path.exists("/dev/nvidiactl"):
        raise Failed("encoder_unavailable", f"{codec.name} needs an NVIDIA GPU with NVENC; "
                     "this worker has no NVIDIA driver", retryable=False)
    if preset.pix_fmt not in {f.name for f in codec.video_formats or ()}:
        raise Failed("encoder_unavailable", f"{codec.name} cannot encode {preset.pix_fmt}", retryable=False)
    rate = Fraction(frame_rate).limit_denominator(1001000) if frame_rate else Fraction(25)
    options, settings = video_settings(preset, float(rate))
    stream = output.add_stream(codec.name, options=options)
    context = stream.codec_context
    context.width, context.height, context.pix_fmt = width, height, preset.pix_fmt
    # The source's time base: its timestamps go through untouched, so VFR stays VFR.
    context.time_base = time_base
    stream.time_base = time_base
    context.framerate = rate  # a rate-control and GOP hint (SVT-AV1 needs it), not a clock
    context.gop_size = settings["gop"]
    context.thread_count = 0  # the encoder's own choice for this machine
    # PyAV defaults to slice threads, with which libx264 turns on sliced_threads: slower than
    # its frame threads on few cores, and not what the ffmpeg CLI does. AUTO lets each encoder pick.
    context.thread_type = "AUTO"
    # Frame durations are real (the source's, VFR included): packets carry them, so the last frame has a length.
    context.flags |= av.codec.context.Flags.frame_duration
    if preset.bit_rate is not None:
        context.bit_rate = preset.bit_rate
    for name, value in (colors or {}).items():
        setattr(context, name, value)
    _open(context, codec.name)
    return stream


def open_audio_stream(output, preset: VideoPreset, source, codec_name: str | None = None):
    """Add and open the audio encoder; return it with a resampler to its format, layout and rate."""
    codec = _encoder(codec_name or preset.audio_codec, "audio")
    rates = codec.audio_rates or ()
    # Opus only speaks 48 kHz (and fractions); other encoders keep the source's rate when they can.
    rate = source.sample_rate if not rates or source.sample_rate in rates else 48000
    layout = "mono" if source.channels == 1 else "stereo"  # web renditions: more is downmixed
    audio_format = codec.audio_formats[0].name if codec.audio_formats else "fltp"
    stream = output.add_stream(codec.name, rate=rate)
    context = stream.codec_context
    context.layout, context.format, context.bit_rate = layout, audio_format, preset.audio_bit_rate
    context.time_base = Fraction(1, rate)
    _open(context, codec.name)
    return stream, AudioConverter(audio_format, layout, rate, context.frame_size or None)


class AudioConverter:
    """Resample to the encoder's format, layout, rate and frame size, whatever the source does mid-stream.

    PyAV's AudioResampler is bound to the first frame it sees and raises on any
    other ("Frame does not match AudioResampler setup"), and a FLAC or two MP3s
    joined end to end can change rate or channels part-way. Frames unlike the
    first are brought to its format, layout and rate by a bridge resampler of
    their own, made again at each change, so the encoder's resampler (its frame
    size and its timestamps) carries on as if nothing had changed.

    Where such a join overlaps (the second part's first samples timed before
    the first part's last ones end) a frame starts where the one before it
    ended, as the ffmpeg CLI's muxer does: a muxer refuses time going back.
    """

    def __init__(self, audio_format: str, layout: str, rate: int, frame_size: int | None) -> None:
        self.main = av.AudioResampler(format=audio_format, layout=layout, rate=rate, frame_size=frame_size)
        self.first: tuple | None = None  # the first frame's (format, layout, rate)
        self.time_base = None  # and its time base, which the main resampler reads timestamps in
        self.bridge, self.bridged = None, None
        self.next_pts = None  # where the last frame out ended

    def resample(self, frame) -> list:
        """The frames ready for the encoder; ``None`` flushes, at the end."""
        return self._in_order(self._convert(frame))

    def _convert(self, frame) -> list:
        if frame is None:
            return self._close_bridge() + self.main.resample(None)
        shape = (frame.format.name, frame.layout.name, frame.sample_rate)
        if self.first is None:
            self.first, self.time_base = shape, frame.time_base
        if shape == self.first:
            return self._close_bridge() + self.main.resample(frame)
        out = []
        if shape != self.bridged:
            out = self._close_bridge()
            audio_format, layout, rate = self.first
            self.bridge, self.bridged = av.AudioResampler(format=audio_format, layout=layout, rate=rate), shape
        return out + self._into_main(self.bridge.resample(frame))

    def _in_order(self, frames: list) -> list:
        for piece in frames:
            if piece.pts is None or not piece.time_base:
                continue
            if self.next_pts is not None and piece.pts < self.next_pts:
                piece.pts = self.next_pts
            self.next_pts = piece.pts + round(Fraction(piece.samples, piece.sample_rate) / piece.time_base)
        return frames

    def _close_bridge(self) -> list:
        if self.bridge is None:
            return []
        rest, self.bridge, self.bridged = self.bridge.resample(None), None, None
        return self._into_main(rest)

    def _into_main(self, frames) -> list:
        out = []
        for piece in frames:
            if piece.pts is not None and self.time_base and piece.time_base != self.time_base:
                piece.pts = round(piece.pts * piece.time_base / self.time_base)
            piece.time_base = self.time_base
            out += self.main.resample(piece)
        return out


def _encoder(name: str, kind: str):
    try:
        codec = av.Codec(name, "w")
    except (av.codec.codec.UnknownCodecError, ValueError):
        raise Failed("encoder_unavailable", f"this FFmpeg build has no {name} encoder", retryable=False) from None
    if codec.type != kind:
        raise Failed("encoder_unavailable", f"{name} is not a {kind} encoder", retryable=False)
    return codec


def _open(context, name: str) -> None:
    try:
        context.open()
    except av.error.FFmpegError as exc:
        if name in HARDWARE_ENCODERS:
            # The engine is tried, never assumed: data-centre GPUs (H100) have no NVENC at all.
            raise Failed("encoder_unavailable", f"{name} does not open on this worker "
                         f"(no NVENC engine, or none free): {_say(exc)}", retryable=False) from None
        raise Failed("encoder_error", f"{name} refused its settings: {_say(exc)}", retryable=False) from None
    unused = {k for k in context.options if k not in ("threads",)}
    if unused:  # a misspelt option would otherwise be silently ignored
        raise Failed("encoder_error", f"{name} did not take options {sorted(unused)}", retryable=False)


# ---------------------------------------------------------------- renditions

def transcode(source: str, out_dir: str, preset: VideoPreset, height: int | None,
              info: MediaInfo, decoders: tuple[str, ...] = ()) -> VideoOutput:
    """Write one rendition: the video rung ``height`` with audio, or the audio-only one for None.

    ``decoders`` names the hardware (NVDEC) decoders this worker may use; see ``encode_video``.
    """
    if height is None:
        return _audio_rendition(source, out_dir, preset, info)
    short = _short_side(info)
    if short is not None:
        height = min(height, max(2, short - short % 2))  # never upscale, whatever the caller asked
    rung = rung_label(height)
    path = os.path.join(out_dir, f"{preset.name}-{rung}{_EXTENSIONS['video', preset.container]}")
    return encode_video(source, path, preset, height, info, rung=rung, audio=preset.audio_codec is not None,
                        decoders=decoders)


def transcode_isolated(source: str, out_dir: str, preset: VideoPreset, height: int | None,
                       info: MediaInfo, decoders: tuple[str, ...] = ()) -> VideoOutput:
    """transcode in a throwaway child: a decoder crash or runaway costs the rendition, not the worker."""
    return isolated(transcode, source, out_dir, preset, height, info, decoders,
                    media_s=info.duration_s or 0.0)


def isolated(func, *args, media_s: float):
    """``func(*args)`` in a sandboxed child, with time limits for ``media_s`` seconds of media.

    Everything that demuxes or decodes an upload goes through here, so a hostile
    file can crash, hang or bloat only a child.
    """
    timeout = BASE_TIMEOUT_S + TIMEOUT_PER_SECOND * media_s
    return run_isolated(func, *args, timeout=timeout, memory_bytes=MEMORY_BYTES,
                        cpu_seconds=_cpu_seconds(timeout))


def preview_clip(source: str, out_dir: str, preset: VideoPreset, info: MediaInfo,
                 seconds: float, decoders: tuple[str, ...] = ()) -> VideoOutput:
    """A short, muted clip at the lowest rung, from a little way in (past intros and fades)."""
    rungs = ladder(preset, info)
    if not rungs:
        raise Rejected("unsupported_type", "a preview needs a video stream")
    duration = info.duration_s or seconds
    start = max(0.0, min(0.1 * duration, 60.0, duration - seconds))
    path = os.path.join(out_dir, f"{preset.name}-preview{_EXTENSIONS['video', preset.container]}")
    return encode_video(source, path, preset, rungs[0], info, rung="preview", audio=False,
                        start=start, end=start + seconds, rebase_to_start=True, decoders=decoders)


def poster_frame(source: str, info: MediaInfo, limits: Limits = Limits()) -> bytes:
    """PNG bytes of an upright frame near the start that is neither black nor flat.

    A file with no video but a cover picture (album art) has the cover as its
    poster, held to the image ``limits`` (see ``cover``).
    """
    import numpy as np

    with open_input(source) as container:
        video = video_stream(container)
        if video is None:
            return cover_picture(container, limits, POSTER_MAX_SIDE)
        _threads(video)
        duration = info.duration_s or 0.0
        span = min(duration, POSTER_SPAN_S) if duration > 0 else 1.0
        best, best_luma, previous = None, -1.0, None
        for index in range(POSTER_SAMPLES):
            target = span * index / POSTER_SAMPLES
            frame = _frame_at(container, video, target)
            if frame is None or (previous is not None and frame.pts == previous):
                continue
            previous = frame.pts
            small = frame.reformat(64, max(2, round(64 * frame.height / frame.width)), "gray")
            luma = small.to_ndarray().astype(np.float32)
            mean, spread = float(luma.mean()), float(luma.std())
            if mean >= POSTER_MIN_LUMA and spread >= POSTER_MIN_STDDEV:
                best = frame
                break
            if mean > best_luma:
                best, best_luma = frame, mean
        if best is None:
            raise Rejected("corrupt", "no video frame could be decoded")
        geometry = plan_geometry(best, video, _poster_rung(best, video))
        upright = Turner(geometry).apply(VideoReformatter().reformat(
            best, geometry.scale_width, geometry.scale_height, "rgb24", interpolation=_INTERPOLATION))
        return _png(upright)


def poster_frame_isolated(source: str, info: MediaInfo, limits: Limits = Limits()) -> bytes:
    """poster_frame in a throwaway child."""
    return isolated(poster_frame, source, info, limits, media_s=0.0)


def _poster_rung(frame, video) -> int:
    width, height = _display_size(frame, video)
    short, long = min(width, height), max(width, height)
    rung = short if long <= POSTER_MAX_SIDE else math.floor(short * POSTER_MAX_SIDE / long)
    return max(2, rung - rung % 2)


def _frame_at(container, video, target: float):
    """The first frame at or after ``target`` seconds from the start: seek to the keyframe before, decode on."""
    origin = origin_s(container)
    container.seek(to_pts(target + origin, video.time_base), stream=video)
    try:
        for frame in container.decode(video):
            if frame.pts is None or frame.pts * video.time_base - origin >= target - 1e-6:
                return frame
    except av.error.FFmpegError:
        return None
    return None


def _png(frame) -> bytes:
    context = av.CodecContext.create("png", "w")
    context.width, context.height, context.pix_fmt = frame.width, frame.height, "rgb24"
    # Lossless at any level, and only carried to the poster stage: level 1 deflates a 1080p
    # frame in a sixth of the default's time, for about 10% more bytes.
    context.options = {"compression_level": "1"}
    context.time_base = Fraction(1, 25)
    frame.pts = 0
    frame.time_base = context.time_base
    return b"".join(bytes(packet) for packet in context.encode(frame) + context.encode(None))


# ---------------------------------------------------------------- the encode loop

def encode_video(source: str, path: str, preset: VideoPreset, height: int, info: MediaInfo, *,
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
                                    interpolation=_INTERPOLATION)
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
        _threads(self.video)
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
            _flush_audio(self.output, aout, resampler)
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
                for frame in _decode(packet, origin, decoder):
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
                    out = scaler.reformat(frame, width, height, pix_fmt, interpolation=_INTERPOLATION)
                    if turn:
                        out = turner.apply(out)
                    out.pts = pts - shift
                    out.duration = frame.duration  # becomes the packet's: the last frame's length in the file
                    out.pict_type = none  # a source I-frame would force a keyframe; the GOP is the encoder's
                    yield True, out
                if done and audio_in is None:
                    return
            else:
                for frame in _decode(packet, origin):
                    if frame.pts is not None:
                        frame.pts -= audio_shift
                    yield False, frame


def _audio_rendition(source: str, out_dir: str, preset: VideoPreset, info: MediaInfo) -> VideoOutput:
    """The audio-only rendition: AAC (or Opus) in MP4 as .m4a; Opus from a WebM preset in Ogg."""
    if preset.audio_codec is None:
        raise Rejected("unsupported_type", f"video preset {preset.name!r} makes no audio, "
                       "and the source has no video")
    fmt = "mp4" if preset.container == "mp4" else "ogg"
    path = os.path.join(out_dir, f"{preset.name}-audio{_EXTENSIONS['audio', fmt]}")
    try:
        with open_input(source) as container:
            if not container.streams.audio:
                raise Rejected("unsupported_type", "the source has no audio stream")
            audio_in = container.streams.audio[0]
            options = {"movflags": "+faststart"} if fmt == "mp4" else {}
            with av.open(path, "w", format=fmt, container_options=options) as output:
                aout, converter = open_audio_stream(output, preset, audio_in)
                encode_audio(container, output, audio_in, aout, converter)
        return VideoOutput(preset.name, "audio", path, fmt, _AUDIO_TYPES[fmt], None, aout.codec.canonical_name,
                           aout.codec.name, None, None, file_duration(path), os.path.getsize(path),
                           audio_settings(aout, preset))
    except BaseException:
        remove_quietly(path)
        raise


def encode_audio(container, output, audio_in, aout, converter: AudioConverter) -> None:
    """Decode the source's audio, convert it, encode and mux it, flushing at the end.

    An audio rendition is its samples in order, timed by their count from zero:
    a source's timestamps can jump (see the probe's ``_Span``) where its samples do not.
    """
    origin = origin_s(container)

    def converted():
        for packet in demux(container, (audio_in,), origin):
            for frame in _decode(packet, origin):
                yield from converter.resample(frame)
        yield from converter.resample(None)

    written, time_base = 0, Fraction(1, aout.codec_context.sample_rate)
    for piece in converted():
        piece.pts, piece.time_base = written, time_base
        written += piece.samples
        output.mux(aout.encode(piece))
    output.mux(aout.encode(None))


def _flush_audio(output, aout, converter: AudioConverter) -> None:
    for piece in converter.resample(None):
        output.mux(aout.encode(piece))
    output.mux(aout.encode(None))


def audio_settings(aout, preset: VideoPreset) -> dict:
    context = aout.codec_context
    return {"audio_codec": context.name, "audio_bit_rate": preset.audio_bit_rate,
            "sample_rate": context.sample_rate, "channels": context.channels}


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
            raise Rejected("corrupt", f"decode failed at {at:.2f}s: {_say(exc)}") from None
        yield packet


def _decode(packet, origin: float, decoder=None) -> list:
    try:
        return decoder.decode(packet) if decoder is not None else packet.decode()
    except av.error.FFmpegError as exc:
        raise Rejected("corrupt", f"decode failed at {_packet_time(packet, origin):.2f}s: {_say(exc)}") from None


# ---------------------------------------------------------------- geometry and rotation

def plan_geometry(frame, video, height: int) -> Geometry:
    """Output size for a rung (the short side), upright, even, keeping the display aspect."""
    turn, swap = _turn(frame)
    width_d, height_d = _display_size(frame, video)
    if width_d >= height_d:
        out_w, out_h = _even(width_d * height / height_d), height
    else:
        out_w, out_h = height, _even(height_d * height / width_d)
    scale_w, scale_h = (out_h, out_w) if swap else (out_w, out_h)
    return Geometry(out_w, out_h, scale_w, scale_h, turn)


def _display_size(frame, video) -> tuple[float, float]:
    """Width and height as shown: pixel aspect applied, turned upright."""
    aspect = video.sample_aspect_ratio or video.codec_context.sample_aspect_ratio
    width = frame.width * float(aspect) if aspect else float(frame.width)
    height = float(frame.height)
    _, swap = _turn(frame)
    return (height, width) if swap else (width, height)


def _turn(frame) -> tuple[tuple[tuple[str, str | None], ...], bool]:
    """The filters that make a frame upright, and whether they swap width and height.

    Mirrors the ffmpeg CLI's autorotate (fftools' display-matrix handling),
    flips included, so a rendition looks as the source plays everywhere else.
    """
    matrix = _display_matrix(frame)
    if matrix is None:
        return (), False
    theta = -round(frame.rotation)
    theta -= 360 * math.floor(theta / 360 + 0.9 / 360)
    if abs(theta - 90) < 1:
        return (("transpose", "cclock_flip" if matrix[3] > 0 else "clock"),), True
    if abs(theta - 270) < 1:
        return (("transpose", "clock_flip" if matrix[3] < 0 else "cclock"),), True
    if abs(theta - 180) < 1:
        return tuple(f for f, flip in ((("hflip", None), matrix[0] < 0), (("vflip", None), matrix[4] < 0))
                     if flip), False
    if abs(theta) < 1 and matrix[4] < 0:
        return (("vflip", None),), False
    return (), False  # other angles are left as they are: the CLI pads those with black


def _display_matrix(frame) -> tuple[int, ...] | None:
    for data in frame.side_data:
        if data.type.name == "DISPLAYMATRIX":
            raw = bytes(data)
            return struct.unpack("=9i", raw[:36]) if len(raw) >= 36 else None
    return None


class Turner:
    """Applies a geometry's turn (transpose and flip filters) to scaled frames, one in, one out."""

    def __init__(self, geometry: Geometry) -> None:
        self.filters = geometry.turn
        self.graph = None

    def apply(self, frame):
        if not self.filters:
            return frame
        if self.graph is None:  # built from the first frame: its size, format and time base
            self.graph = av.filter.Graph()
            node = self.graph.add_buffer(width=frame.width, height=frame.height, format=frame.format,
                                         time_base=frame.time_base or Fraction(1, 25))
            for name, argument in self.filters:
                following = self.graph.add(name, argument) if argument else self.graph.add(name)
                node.link_to(following)
                node = following
            node.link_to(self.graph.add("buffersink"))
            self.graph.configure()
        self.graph.push(frame)
        return self.graph.pull()


def _even(value: float) -> int:
    return max(2, 2 * round(value / 2))


def _colors(scaled) -> dict:
    """The encoder's colour tags, from a frame as it leaves swscale (which keeps the source's matrix)."""
    colors = {}
    for name in ("colorspace", "color_primaries", "color_trc", "color_range"):
        value = int(getattr(scaled, name, 0) or 0)
        # 0 is RGB or reserved and 2 unspecified for the first three; 0 is unspecified for range.
        if value not in (0, 2) or (name == "color_range" and value):
            colors[name] = value
    return colors


# ---------------------------------------------------------------- helpers

def open_input(source: str):
    """Open an untrusted file with the probe's whitelists: no other protocols, only allowed demuxers."""
    try:
        return av.open(source, options=picture_cap(MediaLimits()), container_options=OPEN_OPTIONS)
    except av.error.FFmpegError as exc:
        raise Rejected("corrupt", f"the file cannot be read: {_say(exc)}") from None


def video_stream(container):
    """The first moving-picture stream: cover art is not video."""
    return next((stream for stream in container.streams.video if not is_cover(stream)), None)


def _first_frame(source: str):
    """Decode the first video frame on its own: its side data says how to turn, its tags the colours."""
    with open_input(source) as container:
        video = video_stream(container)
        if video is None:
            raise Rejected("unsupported_type", "the source has no video stream")
        video.codec_context.thread_count = 1
        origin = origin_s(container)
        for packet in demux(container, (video,), origin):
            for frame in _decode(packet, origin):
                return frame
    raise Rejected("corrupt", "no video frame could be decoded")


def _threads(stream) -> None:
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


def _short_side(info: MediaInfo) -> int | None:
    video = _video_info(info)
    return min(video.width, video.height) if video and video.width and video.height else None


def _check_complete(info: MediaInfo, container, reached: float, start: float, end: float) -> None:
    """A cut file whose index survived decodes cleanly and just stops: say so rather than publish less."""
    duration = info.duration_s
    if duration is None or container.format.name.split(",")[0] not in _INDEXED:
        return
    video = _video_info(info)
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


def _cpu_seconds(timeout: float) -> int:
    # Codec threads burn CPU in parallel: allow every core the whole wall-clock budget.
    return int(timeout * max(2, os.cpu_count() or 1))


def remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _say(error: av.error.FFmpegError) -> str:
    """FFmpeg's error and its last log line, without the file's path."""
    text = error.strerror or type(error).__name__
    detail = error.log[2].strip() if getattr(error, "log", None) else ""
    return f"{text} ({detail})" if detail and detail not in text else text
