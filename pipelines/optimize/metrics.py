"""Perceptual metrics computed with libvips: SSIM on luminance, Gaussian window (sigma 1.5)."""

from __future__ import annotations

import pyvips

_C1 = (0.01 * 255) ** 2
_C2 = (0.03 * 255) ** 2


def ssim(reference: pyvips.Image, candidate: pyvips.Image,
         background: tuple[int, int, int] = (255, 255, 255)) -> float:
    """Mean structural similarity of two same-sized images, 1.0 for identical ones.

    Transparent pixels are compared as seen on ``background``, the same for both.
    """
    if (reference.width, reference.height) != (candidate.width, candidate.height):
        raise ValueError("SSIM compares images of the same size")
    a, b = _luma(reference, background), _luma(candidate, background)

    def blur(image: pyvips.Image) -> pyvips.Image:
        return image.gaussblur(1.5, precision="float")

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a * mu_a
    var_b = blur(b * b) - mu_b * mu_b
    covariance = blur(a * b) - mu_a * mu_b
    numerator = (mu_a * mu_b * 2 + _C1) * (covariance * 2 + _C2)
    denominator = (mu_a * mu_a + mu_b * mu_b + _C1) * (var_a + var_b + _C2)
    return float((numerator / denominator).avg())


def _luma(image: pyvips.Image, background: tuple[int, int, int]) -> pyvips.Image:
    if image.hasalpha():
        image = image.flatten(background=list(background) if image.bands > 2 else
                              [sum(background) / 3])
    return image.colourspace("b-w")[0].cast("float")
