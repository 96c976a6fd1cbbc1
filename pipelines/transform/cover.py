"""An audio file's cover picture as its poster: taken out of the container, then treated as an upload.

Music files carry album art as an attached picture (a FLAC PICTURE block, an
ID3 APIC frame, an MP4 ``covr`` atom, a Vorbis METADATA_BLOCK_PICTURE), which
FFmpeg lists as a one-frame video stream. The picture is a JPEG or PNG file as
the tagger put it there, so it is checked as an uploaded image is (magic
number, libvips header, ``Limits``) and decoded by libvips as images are, but
from inside the sandboxed child that opened the media file: a bomb or a broken
cover costs the poster, never the audio.
"""

from __future__ import annotations

import pyvips

from pipelines.outcome import Rejected
from pipelines.upload.media_probe import is_cover
from pipelines.upload.validate import IMAGE_FORMATS, Limits, sniff, validate
from pipelines.vips import error_text

# The role ID3 and FLAC give the picture people expect (FFmpeg puts it in the stream's comment).
FRONT = "Cover (front)"


def cover_picture(container, limits: Limits, max_side: int) -> bytes:
    """PNG bytes of the container's cover, upright, at most ``max_side`` a side.

    Raises Rejected as validate and resize would for the same picture uploaded
    on its own (``over_limit``, ``corrupt``, ``unsupported_type``), the message
    saying it is the cover; ``unsupported_type`` also when there is no cover.
    """
    data = _cover_bytes(container)
    kind = sniff(data[:64])
    if kind not in IMAGE_FORMATS:
        raise Rejected("unsupported_type", f"the cover is {f'a {kind} file' if kind else 'in no known format'}, "
                       "not an image Mediafarm accepts")
    try:
        validate(data, limits)  # header only: the limits hold before a pixel is decoded
        picture = pyvips.Image.thumbnail_buffer(data, max_side, height=max_side, size="down",
                                                option_string="fail_on=truncated")
        if picture.interpretation != "srgb":  # CMYK, 16-bit or grey covers: the poster stage takes sRGB
            picture = picture.colourspace("srgb")
        return picture.pngsave_buffer(compression=1)
    except Rejected as exc:
        raise Rejected(exc.reason, f"the cover: {exc.message}") from None
    except pyvips.Error as exc:
        raise Rejected("corrupt", f"the cover cannot be decoded: {error_text(exc)}") from None


def _cover_bytes(container) -> bytes:
    covers = [stream for stream in container.streams.video if is_cover(stream)]
    if not covers:
        raise Rejected("unsupported_type", "a poster needs a video stream or a cover picture")
    chosen = next((s for s in covers if s.metadata.get("comment") == FRONT), covers[0])
    # FFmpeg queues attached pictures ahead of the file's packets: this reads no further.
    for packet in container.demux(chosen):
        if packet.size:
            return bytes(packet)
    raise Rejected("corrupt", "the cover picture holds no data")
