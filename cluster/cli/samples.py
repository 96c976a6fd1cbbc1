"""A small generated sample set: a few photos-like images, one EICAR test file, one corrupt JPEG."""

from __future__ import annotations

from pathlib import Path

import pyvips

from pipelines import vips  # noqa: F401  (hardened libvips)
from pipelines.upload.scanner_check import EICAR


def scene(width: int, height: int, seed: int) -> pyvips.Image:
    """A smooth colour field with grain: compresses like a photograph, unlike flat colour."""
    xy = pyvips.Image.xyz(width, height)
    x, y = xy[0], xy[1]
    red = (x * (255 / width) + seed * 40) % 256
    green = (y * (255 / height) + seed * 70) % 256
    blue = ((x + y) * (255 / (width + height)) + seed * 25) % 256
    noise = pyvips.Image.gaussnoise(width, height, sigma=12, mean=0, seed=seed)
    image = red.bandjoin([green, blue]) + noise
    return image.cast("uchar").copy(interpretation="srgb")


def write_samples(folder: Path, photos: int = 4) -> list[Path]:
    """Write the sample set into ``folder``; returns the paths in a stable order."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    sizes = [(2400, 1600), (1600, 2400), (1920, 1080), (1200, 1200), (3000, 2000)]
    for index in range(photos):
        width, height = sizes[index % len(sizes)]
        path = folder / f"photo-{index + 1}.jpg"
        scene(width, height, index).jpegsave(str(path), Q=88)
        paths.append(path)
    alpha = scene(800, 600, 9).bandjoin(pyvips.Image.black(800, 600) + 180).cast("uchar")
    path = folder / "logo.png"
    alpha.copy(interpretation="srgb").pngsave(str(path))
    paths.append(path)
    path = folder / "invoice.pdf.exe"
    path.write_bytes(EICAR)
    paths.append(path)
    whole = scene(1200, 800, 3).jpegsave_buffer(Q=88)
    path = folder / "truncated.jpg"
    path.write_bytes(whole[: len(whole) // 3])
    paths.append(path)
    return paths
