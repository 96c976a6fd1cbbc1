"""Encoders: a preset's encoder settings, and opening an encoder (the one place, for renditions and chunks)."""

from __future__ import annotations

import os
from fractions import Fraction

import av
import av.codec.context
import av.error

from pipelines.outcome import Failed
from pipelines.recipe import NVENC_CODECS, VideoPreset
from pipelines.transform.streams import describe_error

# NVENC encoders: used only when a recipe names one, and a failure where the engine is missing.
HARDWARE_ENCODERS = frozenset(NVENC_CODECS)


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
    codec = find_encoder(preset.codec, "video")
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
    open_encoder(context, codec.name)
    return stream


def find_encoder(name: str, kind: str):
    try:
        codec = av.Codec(name, "w")
    except (av.codec.codec.UnknownCodecError, ValueError):
        raise Failed("encoder_unavailable", f"this FFmpeg build has no {name} encoder", retryable=False) from None
    if codec.type != kind:
        raise Failed("encoder_unavailable", f"{name} is not a {kind} encoder", retryable=False)
    return codec


def open_encoder(context, name: str) -> None:
    try:
        context.open()
    except av.error.FFmpegError as exc:
        if name in HARDWARE_ENCODERS:
            # The engine is tried, never assumed: data-centre GPUs (H100) have no NVENC at all.
            raise Failed("encoder_unavailable", f"{name} does not open on this worker "
                         f"(no NVENC engine, or none free): {describe_error(exc)}", retryable=False) from None
        raise Failed("encoder_error", f"{name} refused its settings: {describe_error(exc)}", retryable=False) from None
    unused = {k for k in context.options if k not in ("threads",)}
    if unused:  # a misspelt option would otherwise be silently ignored
        raise Failed("encoder_error", f"{name} did not take options {sorted(unused)}", retryable=False)
