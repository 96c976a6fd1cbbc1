"""Perceptual hashes: imagehash's 64-bit pHash, from pixels a stage has already decoded.

imagehash (a maintained library) computes the hash: a DCT of a 32x32 greyscale
picture, its 8x8 lowest frequencies compared with their median. It is chosen over PDQ
(pdqhash: 256 bits, its own decoder) because 64 bits fit one BIGINT column and one
machine word, which the near-duplicate search splits into bands and compares with a
popcount. imagehash asks for a PIL image and shrinks it to 32x32 itself; here the
32x32 greyscale picture is made by libvips from the intermediate ``resize`` already
holds (a few microseconds on a shrunk image), with Pillow's luma weights, so no second
decode is made and the hash stays close to imagehash's on the decoded file (a few bits
at most: tests/unit/test_perceptual_hash.py).
"""

from __future__ import annotations

import imagehash
import numpy as np
import pyvips
from PIL import Image

HASH_SIZE = 8
SIDE = HASH_SIZE * 4  # imagehash.phash's highfreq_factor: the DCT's input is 32x32
ALGORITHM = "imagehash-phash-64"
# Pillow's convert("L"), ITU-R 601-2 luma on the gamma-encoded values, as imagehash sees it.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)


def phash_image(image: pyvips.Image) -> int:
    """The 64-bit pHash (unsigned) of a decoded picture: its first frame, alpha ignored."""
    if image.get_typeof("page-height") and image.get("page-height") < image.height:
        image = image.crop(0, 0, image.width, image.get("page-height"))
    small = image.resize(SIDE / image.width, vscale=SIDE / image.height, kernel="lanczos3")
    if small.width != SIDE or small.height != SIDE:  # rounding: force the exact size
        small = small.thumbnail_image(SIDE, height=SIDE, size="force")
    colour = small.interpretation in ("srgb", "rgb", "rgb16", "cmyk", "lab", "labs", "scrgb",
                                      "xyz", "hsv", "lch", "cmc", "yxy")
    if small.interpretation not in ("srgb", "b-w") or small.format != "uchar":
        small = small.colourspace("srgb" if colour else "b-w").cast("uchar")
    pixels = np.ndarray(buffer=small.write_to_memory(), dtype=np.uint8,
                        shape=(small.height, small.width, small.bands))
    return phash_pixels(pixels)


def phash_pixels(pixels: np.ndarray) -> int:
    """The 64-bit pHash of an (h, w, bands) uint8 array: RGB(A) or grey(+alpha)."""
    if pixels.ndim == 2:
        grey = pixels.astype(np.float64)
    elif pixels.shape[2] >= 3:
        grey = pixels[:, :, :3].astype(np.float64) @ _LUMA
    else:
        grey = pixels[:, :, 0].astype(np.float64)
    picture = Image.fromarray(np.clip(np.rint(grey), 0, 255).astype(np.uint8))  # mode L
    return to_int(imagehash.phash(picture, hash_size=HASH_SIZE))


def to_int(value: imagehash.ImageHash) -> int:
    """An ImageHash as an unsigned integer, first bit most significant (as ``str(hash)``)."""
    return int(str(value), 16)


def to_signed(value: int) -> int:
    """An unsigned 64-bit hash as the signed BIGINT a catalog column holds."""
    return value - (1 << 64) if value >= 1 << 63 else value


def to_unsigned(value: int) -> int:
    return value + (1 << 64) if value < 0 else value


def hamming(a: int, b: int) -> int:
    return ((a ^ b) & ((1 << 64) - 1)).bit_count()
