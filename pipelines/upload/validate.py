"""Decide what a file is from its bytes, then check it against limits before decoding."""

from __future__ import annotations

from dataclasses import dataclass

import pyvips

from pipelines import vips  # noqa: F401  (hardens libvips before any load)
from pipelines.outcome import Rejected

# Formats the image path accepts; everything else is recognised only to say why not.
IMAGE_FORMATS = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp", "gif": "image/gif"}


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 200 * 1024 * 1024
    max_pixels: int = 100_000_000
    max_side: int = 30_000


@dataclass(frozen=True)
class Validated:
    format: str
    media_type: str
    width: int
    height: int


def sniff(head: bytes) -> str | None:
    """The format named by the file's magic number, or None when unknown."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head.startswith(b"%PDF-"):
        return "pdf"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    stripped = head.lstrip().lower()
    if stripped.startswith((b"<svg", b"<?xml")):
        return "svg/xml"
    return None


def validate(data: bytes, limits: Limits = Limits()) -> Validated:
    """Accept an allowed image within limits, reading headers only; raise Rejected otherwise."""
    if not data:
        raise Rejected("empty", "the file is empty")
    if len(data) > limits.max_bytes:
        raise Rejected("too_large", f"the file has {len(data)} bytes; the limit is {limits.max_bytes}")
    kind = sniff(data[:64])
    if kind is None:
        raise Rejected("unsupported_type", "the bytes are not a format Mediafarm recognises")
    if kind not in IMAGE_FORMATS:
        raise Rejected("unsupported_type", f"{kind} files are not accepted")
    try:
        header = pyvips.Image.new_from_buffer(data, "", access="sequential")
        width, height = header.width, header.height
    except pyvips.Error as exc:
        raise Rejected("corrupt", f"the {kind} header cannot be read: {_first_line(exc)}") from exc
    if width > limits.max_side or height > limits.max_side or width * height > limits.max_pixels:
        raise Rejected("over_limit", f"{width}x{height} exceeds the pixel limits "
                       f"({limits.max_side} per side, {limits.max_pixels} in all)")
    return Validated(kind, IMAGE_FORMATS[kind], width, height)


def _first_line(exc: pyvips.Error) -> str:
    text = (exc.detail or exc.message or "").strip()
    return text.splitlines()[0] if text else "unknown libvips error"
