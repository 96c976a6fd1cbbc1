"""The near-duplicate evaluation set: source pictures, their edited copies, unrelated pictures.

Each source is saved as a JPEG, then copied the ways people's libraries copy a photo, with
real encoders (libvips for JPEG and WebP, Pillow for the EXIF): resized, re-encoded at
several JPEG and WebP qualities, cropped 2 and 5%, EXIF edited. Unrelated pictures stand
among them. ``evaluate`` hashes every file the way the resize stage does and scores the
groups pair by pair. Used by tests/unit/test_near_duplicates.py (synthetic sources) and
benchmarks/bench_near_duplicates.py (the photo corpus as well).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pyvips
from PIL import Image

from catalog.hamming import group_labels
from pipelines.recipe import Preset
from pipelines.transform.resize import resize_hashed


@dataclass(frozen=True)
class Item:
    name: str
    source: int | None  # which source it copies; None for an unrelated picture
    data: bytes


def synthetic(seed: int, width: int = 1200, height: int = 800) -> pyvips.Image:
    """A picture of its own: a smooth random colour field (blobs of light and shade, as a
    photograph's large shapes) with grain, different for every seed."""
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 256, size=(4 + seed % 3, 6 + seed % 4, 3), dtype=np.uint8)
    coarse = pyvips.Image.new_from_memory(cells.tobytes(), cells.shape[1], cells.shape[0], 3,
                                          "uchar")
    field = coarse.resize(width / coarse.width, vscale=height / coarse.height, kernel="cubic")
    noise = pyvips.Image.gaussnoise(width, height, sigma=10, mean=0, seed=seed)
    return (field + noise).cast("uchar").copy(interpretation="srgb")


def _jpeg(image: pyvips.Image, quality: int = 90) -> bytes:
    return image.jpegsave_buffer(Q=quality, strip=True)


def _crop(image: pyvips.Image, fraction: float) -> pyvips.Image:
    """Cut ``fraction`` of the width and height, most from the right and bottom."""
    dx, dy = round(image.width * fraction), round(image.height * fraction)
    return image.crop(dx // 3, dy // 3, image.width - dx, image.height - dy)


def _exif_edited(jpeg: bytes) -> bytes:
    """The same JPEG stream with an EXIF block added (artist, description, date), pixels
    untouched: the APP1 segment is put after the start-of-image marker."""
    exif = Image.Exif()
    exif[0x013B] = "Someone Else"          # Artist
    exif[0x010E] = "edited description"    # ImageDescription
    exif[0x0132] = "2001:02:03 04:05:06"   # DateTime
    payload = b"Exif\x00\x00" + exif.tobytes()
    segment = b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
    return jpeg[:2] + segment + jpeg[2:]


# Each copy: a name and how it is made from the decoded source.
COPIES: tuple[tuple[str, Callable[[pyvips.Image], bytes]], ...] = (
    ("resized-50", lambda im: _jpeg(im.resize(0.5), 85)),
    ("resized-25", lambda im: _jpeg(im.resize(0.25), 85)),
    ("jpeg-q60", lambda im: _jpeg(im, 60)),
    ("jpeg-q30", lambda im: _jpeg(im, 30)),
    ("webp-q80", lambda im: im.webpsave_buffer(Q=80)),
    ("webp-q40", lambda im: im.webpsave_buffer(Q=40)),
    ("crop-2", lambda im: _jpeg(_crop(im, 0.02), 85)),
    ("crop-5", lambda im: _jpeg(_crop(im, 0.05), 85)),
    ("exif-edited", lambda im: _exif_edited(_jpeg(im, 90))),
)


def build(sources: Iterable[pyvips.Image], unrelated: Iterable[pyvips.Image]) -> list[Item]:
    """Each source as a JPEG and every copy of it, then the unrelated pictures."""
    items = []
    for index, image in enumerate(sources):
        image = image.copy_memory()
        items.append(Item(f"source-{index}", index, _jpeg(image)))
        items += [Item(f"source-{index}-{name}", index, make(image)) for name, make in COPIES]
    items += [Item(f"unrelated-{index}", None, _jpeg(image))
              for index, image in enumerate(unrelated)]
    return items


def load(path, max_side: int = 1600) -> pyvips.Image:
    """A photograph, upright, at most ``max_side`` a side, as a source."""
    return pyvips.Image.thumbnail(str(path), max_side, height=max_side, size="down")


def hashes(items: list[Item], presets: tuple[Preset, ...] = (Preset("small", 400),)
           ) -> np.ndarray:
    """Each item's pHash as the resize stage computes it (uint64)."""
    return np.array([resize_hashed(item.data, presets)[1] for item in items], dtype=np.uint64)


@dataclass(frozen=True)
class Score:
    threshold: int
    precision: float
    recall: float
    true_pairs: int
    found_pairs: int
    correct_pairs: int


def score(items: list[Item], values: np.ndarray, threshold: int) -> Score:
    """Pairwise precision and recall of the groups at ``threshold``: a pair is a true
    near-duplicate when both copy the same source (unrelated pictures copy nothing)."""
    labels = group_labels(values, threshold)
    sources = np.array([-1 - i if it.source is None else it.source for i, it in enumerate(items)])
    upper = np.triu(np.ones((len(items), len(items)), bool), 1)
    found = (labels[:, None] == labels[None, :]) & upper
    true = (sources[:, None] == sources[None, :]) & upper
    correct = int((found & true).sum())
    found_n, true_n = int(found.sum()), int(true.sum())
    return Score(threshold, correct / found_n if found_n else 1.0,
                 correct / true_n if true_n else 1.0, true_n, found_n, correct)


def evaluate(items: list[Item], thresholds: Iterable[int]) -> list[Score]:
    values = hashes(items)
    return [score(items, values, t) for t in thresholds]

