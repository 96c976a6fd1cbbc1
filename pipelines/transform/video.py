"""Video renditions, the entry points: one rung (or the audio-only rendition), a preview, a poster.

``isolated`` runs any of them in a sandboxed child, with limits for the media's
length; the encode itself is ``encode_loop.encode_video``.
"""

from __future__ import annotations

import math
import os
from fractions import Fraction

import av
import av.error
from av.video.reformatter import VideoReformatter

from pipelines.outcome import Rejected
from pipelines.recipe import VideoPreset
from pipelines.transform.audio import audio_settings, encode_audio, open_audio_stream
from pipelines.transform import perceptual
from pipelines.transform.cover import cover_picture
from pipelines.transform.encode_loop import VideoOutput, encode_video, file_duration, remove_quietly
from pipelines.transform.geometry import INTERPOLATION, Turner, display_size, plan_geometry
from pipelines.transform.ladder import ladder, rung_label, short_side
from pipelines.transform.streams import enable_threads, open_input, origin_s, to_pts, video_stream
from pipelines.upload.media_probe import MediaInfo
from pipelines.upload.sandbox import run_isolated
from pipelines.upload.served_source import Source
from pipelines.upload.validate import Limits

_AUDIO_TYPES = {"mp4": "audio/mp4", "ogg": "audio/ogg"}
_EXTENSIONS = {("video", "mp4"): ".mp4", ("video", "webm"): ".webm",
               ("audio", "mp4"): ".m4a", ("audio", "ogg"): ".ogg"}
# Poster sampling: how many frames, over how much of the start, and what counts as "not flat".
POSTER_SAMPLES = 10
POSTER_SPAN_S = 60.0
POSTER_MIN_LUMA = 40.0
POSTER_MIN_STDDEV = 12.0
POSTER_MAX_SIDE = 1920
# A video's fingerprint: the pHashes of this many keyframes over its length.
FINGERPRINT_KEYFRAMES = 4
# Sandbox limits: decoding plus encoding, with codec threads.
MEMORY_BYTES = 6 * 1024 ** 3
BASE_TIMEOUT_S = 60.0
TIMEOUT_PER_SECOND = 4.0


def transcode(source: Source, out_dir: str, preset: VideoPreset, height: int | None,
              info: MediaInfo, decoders: tuple[str, ...] = ()) -> VideoOutput:
    """Write one rendition: the video rung ``height`` with audio, or the audio-only one for None.

    ``decoders`` names the hardware (NVDEC) decoders this worker may use; see ``encode_video``.
    """
    if height is None:
        return _audio_rendition(source, out_dir, preset, info)
    short = short_side(info)
    if short is not None:
        height = min(height, max(2, short - short % 2))  # never upscale, whatever the caller asked
    rung = rung_label(height)
    path = os.path.join(out_dir, f"{preset.name}-{rung}{_EXTENSIONS['video', preset.container]}")
    return encode_video(source, path, preset, height, info, rung=rung, audio=preset.audio_codec is not None,
                        decoders=decoders)


def transcode_isolated(source: Source, out_dir: str, preset: VideoPreset, height: int | None,
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


def preview_clip(source: Source, out_dir: str, preset: VideoPreset, info: MediaInfo,
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


def poster_frame(source: Source, info: MediaInfo, limits: Limits = Limits()) -> bytes:
    """PNG bytes of an upright frame near the start that is neither black nor flat.

    A file with no video but a cover picture (album art) has the cover as its
    poster, held to the image ``limits`` (see ``cover``).
    """
    return poster_and_fingerprint(source, info, limits, keyframes=0)[0]


def poster_and_fingerprint(source: Source, info: MediaInfo, limits: Limits = Limits(),
                           keyframes: int = FINGERPRINT_KEYFRAMES) -> tuple[bytes, tuple[int, ...]]:
    """``poster_frame``, and the video's fingerprint from the same opened file: the 64-bit
    pHash (``pipelines.transform.perceptual``) of ``keyframes`` keyframes evenly spaced over
    its length, each the keyframe a seek lands on, so one frame is decoded per hash.
    A cover has no fingerprint (empty)."""
    with open_input(source) as container:
        video = video_stream(container)
        if video is None:
            return cover_picture(container, limits, POSTER_MAX_SIDE), ()
        enable_threads(video)
        png = _poster(container, video, info)
        return png, _keyframe_hashes(container, video, info.duration_s or 0.0, keyframes)


def _poster(container, video, info: MediaInfo) -> bytes:
    import numpy as np

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
        best, geometry.scale_width, geometry.scale_height, "rgb24", interpolation=INTERPOLATION))
    return _png(upright)


def _keyframe_hashes(container, video, duration: float, count: int) -> tuple[int, ...]:
    """pHashes of the keyframes at or before 1/(count+1), 2/(count+1)... of ``duration``."""
    hashes, seen = [], set()
    if duration <= 0:
        return ()
    origin = origin_s(container)
    for index in range(1, count + 1):
        try:
            container.seek(to_pts(duration * index / (count + 1) + origin, video.time_base),
                           stream=video)
            frame = next(container.decode(video), None)
        except av.error.FFmpegError:
            continue  # a frame that cannot be had leaves the fingerprint shorter
        if frame is None or frame.pts in seen:
            continue
        seen.add(frame.pts)
        side = perceptual.SIDE
        hashes.append(perceptual.phash_pixels(frame.reformat(side, side, "rgb24").to_ndarray()))
    return tuple(hashes)


def poster_frame_isolated(source: Source, info: MediaInfo, limits: Limits = Limits()) -> bytes:
    """poster_frame in a throwaway child."""
    return isolated(poster_frame, source, info, limits, media_s=0.0)


def poster_and_fingerprint_isolated(source: Source, info: MediaInfo,
                                    limits: Limits = Limits()) -> tuple[bytes, tuple[int, ...]]:
    """poster_and_fingerprint in a throwaway child."""
    return isolated(poster_and_fingerprint, source, info, limits, media_s=0.0)


def _poster_rung(frame, video) -> int:
    width, height = display_size(frame, video)
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


def _audio_rendition(source: Source, out_dir: str, preset: VideoPreset, info: MediaInfo) -> VideoOutput:
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


def _cpu_seconds(timeout: float) -> int:
    # Codec threads burn CPU in parallel: allow every core the whole wall-clock budget.
    return int(timeout * max(2, os.cpu_count() or 1))
