"""Is a rendition the picture its source shows? Compared with a reference decode, within tolerance."""

from __future__ import annotations

import numpy as np
import pyvips


def decoded(data: bytes) -> np.ndarray:
    """An encoded rendition's first frame as RGB pixels."""
    image = pyvips.Image.new_from_buffer(data, "")
    return np.ndarray(buffer=image.write_to_memory(), dtype=np.uint8,
                      shape=(image.height, image.width, image.bands))[..., :3]


def shrunk(reference: np.ndarray, width: int, height: int) -> np.ndarray:
    image = pyvips.Image.new_from_array(np.ascontiguousarray(reference)).copy(interpretation="srgb")
    small = image.thumbnail_image(width, height=height, size="force")
    return np.ndarray(buffer=small.write_to_memory(), dtype=np.uint8,
                      shape=(small.height, small.width, small.bands))


def assert_same_picture(rendition: np.ndarray, reference: np.ndarray) -> None:
    """The reference's shape (so its orientation), mean and spread per channel, and close pixel
    by pixel, which a turned or mirrored picture is not."""
    ref_height, ref_width = reference.shape[:2]
    height, width = rendition.shape[:2]
    assert abs(width / height - ref_width / ref_height) < 0.02, (width, height, ref_width, ref_height)
    want = shrunk(reference, width, height).astype(float)
    got = rendition.astype(float)
    assert np.allclose(got.mean(axis=(0, 1)), want.mean(axis=(0, 1)), atol=6), \
        (got.mean(axis=(0, 1)), want.mean(axis=(0, 1)))
    assert np.allclose(got.std(axis=(0, 1)), want.std(axis=(0, 1)), atol=6), \
        (got.std(axis=(0, 1)), want.std(axis=(0, 1)))
    assert np.abs(got - want).mean() < 10, np.abs(got - want).mean()
