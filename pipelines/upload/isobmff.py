"""What an ISO base media file is, from the brands in its ``ftyp`` box.

MP4, QuickTime, HEIF, AVIF and JPEG-in-HEIF are all ISO-BMFF files that open
with an ``ftyp`` box: a major brand, a minor version and a list of compatible
brands. Whether the file holds pictures or a film is written in those brands
(ISO/IEC 23008-12 for HEIF; MIAF and AVIF build on it), and often not in the
major brand alone: a JPEG-in-HEIF file may name ``jpeg`` or ``isom`` first and
``mif1`` later. Hand-written because the box is a 16-byte header and a list,
and the parsers that have one (libheif, FFmpeg) each answer only for their own
formats.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# Larger boxes are refused: real ones hold a handful of brands, and libvips' HEIF loader
# refuses an ftyp over 2048 bytes too. It bounds how much of a file sniffing reads.
MAX_FTYP_BYTES = 2048

# ISO/IEC 23008-12 and the formats on it: any of these brands means the file is built to
# hold images, whatever else it holds; a reader of images is the one to open it.
# Image items (a 'pict' meta box: one image, or a collection):
_IMAGE_ITEM_BRANDS = {
    b"mif1", b"mif2", b"mif3",                    # HEIF structural brands
    b"heic", b"heix", b"heim", b"heis",           # HEVC images
    b"avci", b"jpeg", b"j2ki", b"vvic", b"avif",  # AVC, JPEG, JPEG 2000, VVC and AV1 images
    b"miaf", b"MiHA", b"MiHB", b"MiHE", b"MiPr", b"MiAC",  # MIAF (ISO/IEC 23000-22)
    b"MA1A", b"MA1B",                             # AVIF's MIAF profiles
}
# Image sequences (a 'pict' track: a timed series of pictures, an animation or a burst):
_IMAGE_SEQUENCE_BRANDS = {
    b"msf1",                                      # HEIF structural brand
    b"hevc", b"hevx", b"hevm", b"hevs",           # HEVC sequences
    b"avcs", b"jpgs", b"j2is", b"vvis",           # AVC, JPEG, JPEG 2000 and VVC sequences
    b"avis", b"avio",                             # AV1 sequences (AVIF)
}
_AVIF_BRANDS = {b"avif", b"avis", b"avio", b"MA1A", b"MA1B"}


@dataclass(frozen=True)
class FileType:
    """The ``ftyp`` box: brands are four bytes each."""

    major: bytes
    minor: int
    compatible: tuple[bytes, ...]

    @property
    def brands(self) -> set[bytes]:
        return {self.major, *self.compatible}

    @property
    def image(self) -> bool:
        """Built to hold images (items or sequences), by ISO/IEC 23008-12's brands."""
        return bool(self.brands & (_IMAGE_ITEM_BRANDS | _IMAGE_SEQUENCE_BRANDS))

    @property
    def sequence(self) -> bool:
        """Holds an image sequence: pictures in a track, not (only) image items."""
        return bool(self.brands & _IMAGE_SEQUENCE_BRANDS)

    @property
    def format(self) -> str:
        """``avif`` or ``heif`` for images, else ``quicktime`` or ``mp4``."""
        if self.image:
            # A 'mini' file (mif3) names its codec's brand in the minor version's place.
            codec = {self.minor.to_bytes(4, "big")} if self.major == b"mif3" else set()
            return "avif" if (self.brands | codec) & _AVIF_BRANDS else "heif"
        return "quicktime" if self.major == b"qt  " else "mp4"


def read_ftyp(head: bytes) -> FileType | None:
    """The ``ftyp`` box that opens ``head``; None when there is none or it is malformed.

    ``head`` must hold the whole box (``MAX_FTYP_BYTES`` is enough for any box this
    accepts). A box that is truncated, over that size, shorter than its fields, has a
    brand list that is not whole brands, or claims to run to the end of the file
    (nothing would follow it) is not trusted to say anything.
    """
    if len(head) < 16 or head[4:8] != b"ftyp":
        return None
    size, start = struct.unpack_from(">I", head)[0], 8
    if size == 1:  # a 64-bit size follows the type
        size, start = struct.unpack_from(">Q", head, 8)[0], 16
    if not start + 8 <= size <= min(len(head), MAX_FTYP_BYTES) or (size - start) % 4:
        return None
    major, minor = head[start:start + 4], struct.unpack_from(">I", head, start + 4)[0]
    compatible = tuple(head[i:i + 4] for i in range(start + 8, size, 4))
    return FileType(major, minor, compatible)
