"""Decide what a file is from its bytes, then check it against limits before decoding.

The name and the client's content type are never consulted: a script renamed
``.jpg`` is still a script. Only allow-listed formats pass, and only after a
header-only probe shows they are within the limits.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import pyvips

from pipelines.outcome import Rejected
from pipelines.upload.isobmff import MAX_FTYP_BYTES, read_ftyp
from pipelines.upload.metadata import image_metadata
from pipelines.vips import error_text

if TYPE_CHECKING:
    from pipelines.upload.media_probe import MediaInfo

# Formats each media kind accepts; everything else is recognised only to say why not.
IMAGE_FORMATS = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp",
                 "gif": "image/gif", "avif": "image/avif", "heif": "image/heif"}
MEDIA_FORMATS = {"mp4": "video/mp4", "quicktime": "video/quicktime", "matroska": "video/x-matroska",
                 "ogg": "audio/ogg", "mp3": "audio/mpeg", "wav": "audio/wav", "flac": "audio/flac"}


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 200 * 1024 * 1024
    max_side: int = 30_000
    max_pixels: int = 100_000_000          # one frame
    max_frames: int = 1_000                # animated GIF/WebP, HEIF sequences
    max_total_pixels: int = 1_000_000_000  # frames x pixels: what decoding would cost
    # What decoding one asset may hold (every frame at every size resize keeps), well
    # under a worker's memory: a few KB of GIF can describe gigabytes of frames.
    max_decode_bytes: int = 1024 ** 3


@dataclass(frozen=True)
class Validated:
    format: str
    media_type: str
    kind: str       # "image", "video" or "audio"
    width: int
    height: int
    frames: int = 1
    metadata: dict = field(default_factory=dict)
    media: MediaInfo | None = None  # video and audio: what the sandboxed probe found
    sequence: bool = False  # HEIF/AVIF: an image sequence (pictures in a track, 'avis', 'msf1')


def sniff(head: bytes) -> str | None:
    """The format named by the file's magic number, or None when unknown.

    ISO-BMFF files (MP4, QuickTime, HEIF, AVIF) are told by every brand of their
    ``ftyp`` box, so ``head`` needs the whole box (``MAX_FTYP_BYTES`` at most);
    a box that cannot be read whole names nothing.
    """
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:4] == b"RIFF":
        return {b"WEBP": "webp", b"AVI ": "avi", b"WAVE": "wav"}.get(head[8:12], "riff")
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[4:8] == b"ftyp":
        file_type = read_ftyp(head)
        return file_type.format if file_type else None
    if head.startswith(b"\x1aE\xdf\xa3"):
        return "matroska"
    if head.startswith(b"OggS"):
        return "ogg"
    if head.startswith(b"fLaC"):
        return "flac"
    if head.startswith(b"ID3") or head[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return "mp3"
    if head.startswith(b"%PDF-"):
        return "pdf"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head.startswith(b"\x7fELF") or head.startswith(b"MZ"):
        return "executable"
    text = head.lstrip().lower()
    if text.startswith((b"<svg", b"<?xml", b"<!doctype svg")):
        return "svg/xml"
    if text.startswith((b"<html", b"<!doctype html", b"<script", b"<head", b"<body")):
        return "html"
    if text.startswith(b"#extm3u"):
        return "playlist"
    return None


def validate(data: bytes, limits: Limits = Limits()) -> Validated:
    """Accept an allowed format within limits, reading headers only; raise Rejected otherwise."""
    if not data:
        raise Rejected("empty", "the file is empty")
    if len(data) > limits.max_bytes:
        raise Rejected("too_large", f"the file has {len(data)} bytes; the limit is {limits.max_bytes}")
    kind = sniff(data[:MAX_FTYP_BYTES])
    if kind is None:
        raise Rejected("unsupported_type", "the bytes are not a format Mediafarm recognises")
    if kind in IMAGE_FORMATS:
        return _validate_image(data, kind, limits)
    if kind in MEDIA_FORMATS:
        return _validate_media(data, kind)
    raise Rejected("unsupported_type", f"{kind} files are not accepted")


def _validate_image(data: bytes, kind: str, limits: Limits) -> Validated:
    try:
        # Header only: libvips reads dimensions and page count without decoding pixels.
        header = pyvips.Image.new_from_buffer(data, "", access="sequential")
        width, height = header.width, header.height
        frames = header.get("n-pages") if header.get_typeof("n-pages") else 1
        loader = header.get("vips-loader") if header.get_typeof("vips-loader") else ""
    except pyvips.Error as exc:
        raise Rejected("corrupt", f"the {kind} header cannot be read: {error_text(exc)}") from exc
    if not loader.startswith(_LOADER_PREFIX[kind]):
        # The magic number and libvips disagree: a polyglot. Trust neither.
        raise Rejected("unsupported_type", f"the file starts as {kind} but libvips reads it "
                       f"with {loader or 'no loader'}")
    if width > limits.max_side or height > limits.max_side or width * height > limits.max_pixels:
        raise Rejected("over_limit", f"{width}x{height} exceeds the pixel limits "
                       f"({limits.max_side} per side, {limits.max_pixels} in all)")
    if frames > limits.max_frames or frames * width * height > limits.max_total_pixels:
        raise Rejected("over_limit", f"{frames} frames of {width}x{height} exceed the animation "
                       f"limits ({limits.max_frames} frames, {limits.max_total_pixels} pixels)")
    return Validated(kind, IMAGE_FORMATS[kind], "image", width, height, frames,
                     image_metadata(header), sequence=_image_sequence(data))


def _image_sequence(data: bytes) -> bool:
    file_type = read_ftyp(data)
    return file_type is not None and file_type.sequence


def check_decode_bytes(frames: int, width: int, height: int, pixel_bytes: int,
                       kept: list[tuple[int, int]], once: list[tuple[int, int]],
                       limits: Limits) -> int:
    """The bytes decoding will hold, from header figures; Rejected past the budget.

    Every frame is kept at each size in ``kept`` (a shrunk intermediate, each
    preset's raster); each size in ``once`` is held a single time (the frame
    being decoded, an encoder's state). Returns the figure.
    """
    area = frames * sum(w * h for w, h in kept) + sum(w * h for w, h in once)
    need = pixel_bytes * area
    if need > limits.max_decode_bytes:
        raise Rejected("over_limit", f"{frames} frames of {width}x{height} would hold {need} "
                       f"bytes decoded ({pixel_bytes} bytes a pixel, every frame kept at "
                       f"{', '.join(f'{w}x{h}' for w, h in kept)}); the budget is "
                       f"{limits.max_decode_bytes}")
    return need


_LOADER_PREFIX = {"jpeg": "jpegload", "png": "pngload", "webp": "webpload", "gif": "gifload",
                  "avif": "heifload", "heif": "heifload"}


def _validate_media(data: bytes, kind: str) -> Validated:
    from pipelines.upload.media_probe import probe_media

    info = probe_media(data)  # in a sandboxed subprocess: decoders may crash on hostile files
    video = next((s for s in info.streams if s.kind == "video"), None)
    metadata = {"container": info.container, "duration_s": info.duration_s,
                "bit_rate": info.bit_rate, "streams": [asdict(s) for s in info.streams]}
    media_type = MEDIA_FORMATS[kind]
    if info.media_kind == "audio" and media_type.startswith("video/"):
        media_type = "audio/" + media_type.split("/", 1)[1]
    return Validated(kind, media_type, info.media_kind, video.width if video else 0,
                     video.height if video else 0, 1, metadata, info)
