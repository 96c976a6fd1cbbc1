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
from pipelines.upload import capabilities
from pipelines.upload.isobmff import MAX_FTYP_BYTES, read_ftyp
from pipelines.upload.metadata import image_metadata
from pipelines.upload.raw import RAW_FORMATS, tiff_kind
from pipelines.vips import error_text

if TYPE_CHECKING:
    from pipelines.upload.media_probe import MediaInfo
    from pipelines.upload.served_source import Source

# Formats each media kind accepts; everything else is recognised only to say why not.
IMAGE_FORMATS = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp",
                 "gif": "image/gif", "avif": "image/avif", "heif": "image/heif"}
# Who decodes an accepted image (``Validated.decoder``): libvips in the worker, or a library
# libvips lacks here, in the sandbox (pipelines.transform.pillow_decode).
LIBVIPS, PILLOW_HEIF, PILLOW_AVIF = "libvips", "pillow-heif", "pillow-avif"
MEDIA_FORMATS = {"mp4": "video/mp4", "quicktime": "video/quicktime", "matroska": "video/x-matroska",
                 "ogg": "audio/ogg", "mp3": "audio/mpeg", "wav": "audio/wav", "flac": "audio/flac"}


@dataclass(frozen=True)
class Limits:
    # Sizes by kind, known from the first bytes: an image is decoded whole in memory, a
    # video or audio file is only ever streamed (store, scratch disk, the decoder's reads).
    max_image_bytes: int = 200 * 1024 * 1024
    max_media_bytes: int = 50 * 1024 ** 3
    max_side: int = 30_000
    max_pixels: int = 100_000_000          # one frame
    max_frames: int = 1_000                # animated GIF/WebP, AVIF sequences
    max_tiles: int = 1_000                 # HEIF grids: each tile is decoded whole (iPhones: 192)
    max_total_pixels: int = 1_000_000_000  # frames x pixels: what decoding would cost
    # What decoding one asset may hold (every frame at every size resize keeps), well
    # under a worker's memory: a few KB of GIF can describe gigabytes of frames.
    max_decode_bytes: int = 1024 ** 3

    @property
    def max_bytes(self) -> int:
        """The largest source of any kind: what a reader or an upload may take before the kind is known."""
        return max(self.max_image_bytes, self.max_media_bytes)

    def max_bytes_for(self, format_: str | None) -> int:
        """The size limit for a sniffed format: video and audio get the media limit; images,
        and anything else (refused later, but scanned first), the image limit."""
        return self.max_media_bytes if format_ in MEDIA_FORMATS else self.max_image_bytes


def kind_of(format_: str | None) -> str | None:
    """"image" or "media" for a sniffed format the farm accepts, else None."""
    return "image" if format_ in IMAGE_FORMATS else "media" if format_ in MEDIA_FORMATS else None


def too_large(size: int, format_: str | None, limits: Limits, exact: bool = True) -> Rejected:
    """``too_large`` with the figures; ``exact=False`` when the read stopped past the limit."""
    limit = limits.max_bytes_for(format_)
    what = {"image": "an image", "media": "a video or audio file"}.get(kind_of(format_), "this file")
    return Rejected("too_large", f"the file has {size} bytes{'' if exact else ' or more'}; the "
                    f"limit for {what} ({format_ or 'unknown type'}) is {limit}",
                    details={"bytes": size, "limit": limit, "format": format_})


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
    decoder: str = LIBVIPS  # who decodes it: LIBVIPS, PILLOW_HEIF or PILLOW_AVIF


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
    if head[:4] in (b"II*\x00", b"MM\x00*") or head.startswith(_OTHER_RAW_MAGIC):
        return tiff_kind(head)
    if head.startswith(b"\xff\x0a") or head.startswith(b"\x00\x00\x00\x0cJXL \r\n\x87\n"):
        return "jxl"
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


_OTHER_RAW_MAGIC = (b"IIRO", b"IIRS", b"MMOR", b"IIU\x00", b"FUJIFILMCCD-RAW")

# Recognised only to say why not.
_REFUSED = {
    "jxl": "JPEG XL is not accepted: this libvips build has no JPEG XL decoder (jxlload); "
           "convert it to JPEG, PNG or AVIF",
    **{kind: f"camera RAW ({name}) is not accepted: a RAW file is sensor data that needs "
             "developing (white balance, exposure, demosaicing); export a JPEG, HEIC or PNG "
             "from the camera or the editor" for kind, name in RAW_FORMATS.items()},
}


def validate(data: bytes, limits: Limits = Limits(), foreign: bool = True) -> Validated:
    """Accept an allowed format within limits, reading headers only; raise Rejected otherwise.

    ``foreign=False`` refuses images that only a sandboxed library decodes here (HEIC
    through pillow-heif, AVIF sequences through Pillow): for callers already in a sandbox.
    """
    if not data:
        raise Rejected("empty", "the file is empty")
    kind = sniff(data[:MAX_FTYP_BYTES])
    if len(data) > limits.max_bytes_for(kind):
        raise too_large(len(data), kind, limits)
    if kind is None:
        raise Rejected("unsupported_type", "the bytes are not a format Mediafarm recognises")
    if kind in IMAGE_FORMATS:
        return _validate_image(data, kind, limits, foreign)
    if kind in MEDIA_FORMATS:
        return _validate_media(data, kind)
    raise Rejected("unsupported_type", _REFUSED.get(kind, f"{kind} files are not accepted"))


def _validate_image(data: bytes, kind: str, limits: Limits, foreign: bool) -> Validated:
    sequence = _image_sequence(data)
    if _sequence_decoder(kind, sequence) == PILLOW_AVIF:
        return _validate_foreign(data, kind, PILLOW_AVIF, limits, foreign, {}, sequence)
    header, loader = read_header(data, kind)
    if not loader.startswith(_LOADERS[kind]):
        # The magic number and libvips disagree: a polyglot. Trust neither.
        raise Rejected("unsupported_type", f"the file starts as {kind} but libvips reads it "
                       f"with {loader or 'no loader'}")
    metadata = image_metadata(header)
    width, height, frames = header.width, header.height, metadata["frames"]
    decoder = LIBVIPS
    if loader.startswith("heifload"):
        # Top-level images are a collection (Apple's multi-image files, layered grids), not
        # frames: the primary one is the photo. Sequences are pictures in a track instead.
        metadata["images"], metadata["frames"], frames = frames, 1, 1
        decoder = _heif_decoder(header)
    if loader.startswith("uhdrload"):
        # Android's UltraHDR: the SDR base is rendered; the HDR gain map is not published.
        metadata["gain_map"] = True
    check_picture(width, height, frames, limits)
    if decoder != LIBVIPS:
        return _validate_foreign(data, kind, decoder, limits, foreign, metadata, sequence)
    return Validated(kind, IMAGE_FORMATS[kind], "image", width, height, frames, metadata,
                     sequence=sequence)


def read_header(data: bytes, kind: str) -> tuple[pyvips.Image, str]:
    """libvips' header of the file, without decoding pixels, and the loader that read it.

    A HEIF file's header is its primary image's, which need not be the first.
    """
    try:
        header = pyvips.Image.new_from_buffer(data, "", access="sequential")
        loader = header.get("vips-loader") if header.get_typeof("vips-loader") else ""
        if loader.startswith("heifload") and header.get_typeof("heif-primary"):
            primary = header.get("heif-primary")
            if primary:
                header = pyvips.Image.new_from_buffer(data, "", access="sequential", page=primary)
        return header, loader
    except pyvips.Error as exc:
        raise Rejected("corrupt", f"the {kind} header cannot be read: {error_text(exc)}") from exc


def check_picture(width: int, height: int, frames: int, limits: Limits) -> None:
    """Rejected ``over_limit`` when a picture's header figures exceed ``limits``."""
    if width > limits.max_side or height > limits.max_side or width * height > limits.max_pixels:
        raise Rejected("over_limit", f"{width}x{height} exceeds the pixel limits "
                       f"({limits.max_side} per side, {limits.max_pixels} in all)")
    if frames > limits.max_frames or frames * width * height > limits.max_total_pixels:
        raise Rejected("over_limit", f"{frames} frames of {width}x{height} exceed the animation "
                       f"limits ({limits.max_frames} frames, {limits.max_total_pixels} pixels)")


def image_decoder(data: bytes) -> str:
    """Who decodes these image bytes (``Validated.decoder``), from the ftyp box and libvips'
    header only; a header libvips cannot read is left to libvips to refuse."""
    kind = sniff(data[:MAX_FTYP_BYTES])
    decoder = _sequence_decoder(kind, _image_sequence(data))
    if decoder == LIBVIPS and kind in ("heif", "avif"):
        try:
            return _heif_decoder(read_header(data, kind)[0])
        except Rejected:
            return LIBVIPS
    return decoder


def _sequence_decoder(kind: str | None, sequence: bool) -> str:
    # libvips' HEIF loader reads image items only, and opens no file whose major brand is 'avis'.
    if kind == "avif" and sequence and capabilities.PILLOW_AVIS in capabilities.decoders():
        return PILLOW_AVIF
    return LIBVIPS


def _heif_decoder(header: pyvips.Image) -> str:
    """libvips where it decodes the primary image's coding here, else pillow-heif for HEVC."""
    coding = header.get("heif-compression") if header.get_typeof("heif-compression") else ""
    have = capabilities.decoders()
    if coding != "hevc" or capabilities.LIBVIPS_HEVC in have:
        return LIBVIPS
    if capabilities.PILLOW_HEIF_HEVC in have:
        return PILLOW_HEIF
    raise Rejected("unsupported_type", "HEVC-coded HEIF (HEIC) cannot be decoded here: neither "
                   "this libvips nor pillow-heif has an HEVC decoder")


def _validate_foreign(data: bytes, kind: str, decoder: str, limits: Limits, foreign: bool,
                      metadata: dict, sequence: bool) -> Validated:
    """The header as the decoding library reads it, in the sandbox, limits checked there."""
    if not foreign:
        raise Rejected("unsupported_type", f"this {kind} needs {decoder}, which runs only in "
                       "the sandbox")
    from pipelines.transform import pillow_decode

    found = pillow_decode.probe(data, decoder, limits)
    metadata = {**metadata, **found.metadata()}
    return Validated(kind, IMAGE_FORMATS[kind], "image", found.width, found.height, found.frames,
                     metadata, sequence=sequence, decoder=decoder)


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


# The loaders libvips may pick for each sniffed format. UltraHDR and MPO are JPEGs with more
# pictures after the first; libvips 8.18 reads those with a gain map through uhdrload.
_LOADERS = {"jpeg": ("jpegload", "uhdrload"), "png": ("pngload",), "webp": ("webpload",),
            "gif": ("gifload",), "avif": ("heifload",), "heif": ("heifload",)}


def validate_media_file(path: Source, head: bytes, size: int,
                        limits: Limits = Limits()) -> Validated:
    """``validate`` for a video or audio file probed in place in the sandbox: on local disk, or
    served from a remote store (``served_source``); ``head`` is its first bytes (at least
    ``MAX_FTYP_BYTES`` where it has them)."""
    from pipelines.upload.media_probe import probe_media_file

    kind = sniff(head[:MAX_FTYP_BYTES])
    if kind not in MEDIA_FORMATS:
        raise ValueError(f"validate_media_file takes video or audio, not {kind}")
    if size > limits.max_bytes_for(kind):
        raise too_large(size, kind, limits)
    return _described(probe_media_file(path), kind)


def _validate_media(data: bytes, kind: str) -> Validated:
    from pipelines.upload.media_probe import probe_media

    # In a sandboxed subprocess: decoders may crash on hostile files.
    return _described(probe_media(data), kind)


def _described(info: MediaInfo, kind: str) -> Validated:
    video = next((s for s in info.streams if s.kind == "video"), None)
    audio = next((s for s in info.streams if s.kind == "audio"), None)
    metadata = {"container": info.container, "duration_s": info.duration_s,
                "bit_rate": info.bit_rate, "streams": [asdict(s) for s in info.streams],
                # The first video and audio streams' figures, as the catalog's columns hold them.
                "width": video.width if video else None, "height": video.height if video else None,
                "video_codec": video.codec if video else None,
                "frame_rate": round(video.frame_rate, 3) if video and video.frame_rate else None,
                "audio_codec": audio.codec if audio else None,
                "sample_rate": audio.sample_rate if audio else None,
                "channels": audio.channels if audio else None,
                **info.tags}
    media_type = MEDIA_FORMATS[kind]
    if info.media_kind == "audio" and media_type.startswith("video/"):
        media_type = "audio/" + media_type.split("/", 1)[1]
    return Validated(kind, media_type, info.media_kind, video.width if video else 0,
                     video.height if video else 0, 1, metadata, info)
