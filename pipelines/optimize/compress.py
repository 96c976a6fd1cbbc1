"""Encode a raster for publication, as small as its preset allows.

Metadata (EXIF, XMP, GPS, IPTC) never leaves the farm, and rasters are sRGB by
now, so the colour profile would add bytes and nothing else: every encoder runs
with ``keep="none"``. Formats without alpha get the image flattened onto the
preset's background. ``format: auto`` encodes every candidate and keeps the
smallest; a ``target_ssim`` or ``target_bytes`` searches quality, between the
preset's floor and its quality, for the smallest encoding that meets it. A
target the search cannot meet is not hidden: the rendition's settings say
``target_met: false`` with a note, and the encoding kept is the nearest miss
(for bytes: the floor's, never one below it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import pyvips

from pipelines.optimize.metrics import ssim
from pipelines.raster import Raster
from pipelines.recipe import ALPHA_FORMATS, Preset

# Encoder settings chosen for throughput: low effort costs a few percent in size
# and saves most of the time; JPEG is progressive with optimised Huffman tables.
ENCODERS: dict[str, tuple[str, dict]] = {
    "webp": ("webpsave_buffer", {"effort": 2}),
    "avif": ("heifsave_buffer", {"compression": "av1", "effort": 2}),
    "jpeg": ("jpegsave_buffer", {"interlace": True, "optimize_coding": True}),
    "png": ("pngsave_buffer", {"compression": 6}),
}
_LOSSY = ("webp", "avif", "jpeg")
ANIMATED_FORMATS = ("webp",)


@dataclass(frozen=True)
class Encoded:
    preset: str
    format: str
    width: int
    height: int
    quality: int | None
    data: bytes
    metric: tuple[str, float] | None = None
    settings: dict = field(default_factory=dict)

    @property
    def media_type(self) -> str:
        return f"image/{self.format}"


def compress(raster: Raster, preset: Preset) -> Encoded:
    image = raster.to_image()
    formats = preset.formats
    if raster.frames > 1 and preset.format == "auto":
        # A still frame is always smaller than the animation; auto must not drop the motion.
        formats = tuple(f for f in formats if f in ANIMATED_FORMATS) or formats
    encodings = [_encode_for_target(image, raster.preset, fmt, preset) for fmt in formats]
    best = min(encodings, key=lambda e: len(e.data))
    # The rendition's encoder settings also say which path decoded and shrank it.
    return replace(best, settings={**best.settings, "path": raster.path})


def encode(image: pyvips.Image, fmt: str, quality: int | None,
           background: tuple[int, int, int] = (255, 255, 255)) -> bytes:
    """One encoding with the farm's settings; no metadata, alpha only where the format has it."""
    if image.hasalpha() and fmt not in ALPHA_FORMATS:
        image = image.flatten(background=list(background))
    method, settings = ENCODERS[fmt]
    options = dict(settings, keep="none")
    if fmt in _LOSSY:
        options["Q"] = quality
    return getattr(image, method)(**options)


def _encode_for_target(image: pyvips.Image, name: str, fmt: str, preset: Preset) -> Encoded:
    # Animations are a strip of frames: formats that cannot animate get the first one.
    animated = bool(image.get_typeof("page-height"))
    frame_height = image.get("page-height") if animated else image.height
    if animated and fmt not in ANIMATED_FORMATS:
        image, animated = image.crop(0, 0, image.width, frame_height), False
    load_options = {"n": -1} if animated else {}

    def make(quality: int | None, data: bytes, metric: tuple[str, float] | None = None) -> Encoded:
        return Encoded(name, fmt, image.width, frame_height, quality, data, metric,
                       dict(ENCODERS[fmt][1]))

    if fmt not in _LOSSY:
        return make(None, encode(image, fmt, None, preset.background))
    def encode_at(quality: int) -> bytes:
        return encode(image, fmt, quality, preset.background)

    def searched(found: tuple[int, bytes, float, bool], target: str,
                 metric: tuple[str, float] | None = None) -> Encoded:
        quality, data, _, met = found
        encoded = make(quality, data, metric)
        settings = {**encoded.settings, "target_met": met}
        if not met:
            settings["note"] = (f"{target} not met: the nearest is quality {quality} "
                                f"(searched {preset.floor}..{preset.quality}, floor "
                                f"{preset.floor}), {len(data)} bytes"
                                + (f", {metric[0]} {metric[1]}" if metric else ""))
        return replace(encoded, settings=settings)

    if preset.target_ssim is not None:
        # Compared with what the encoder was given: the resized, sRGB rendition.
        def meets_ssim(data: bytes) -> tuple[bool, float]:
            decoded = pyvips.Image.new_from_buffer(data, "", **load_options)
            value = ssim(image, decoded, preset.background)
            return value >= preset.target_ssim, value

        found = _search_quality(encode_at, preset.floor, preset.quality, meets_ssim)
        return searched(found, f"target_ssim {preset.target_ssim}", ("ssim", round(found[2], 5)))
    if preset.target_bytes is not None:
        def fits(data: bytes) -> tuple[bool, float]:
            return len(data) <= preset.target_bytes, len(data)

        found = _search_quality(encode_at, preset.floor, preset.quality, fits,
                                prefer_highest=True)
        return searched(found, f"target_bytes {preset.target_bytes}")
    return make(preset.quality, encode(image, fmt, preset.quality, preset.background))


def _search_quality(encode_at: Callable[[int], bytes], floor: int, ceiling: int,
                    check: Callable[[bytes], tuple[bool, float]],
                    prefer_highest: bool = False) -> tuple[int, bytes, float, bool]:
    """Binary-search quality in [floor, ceiling]; (quality, bytes, value, target met).

    For a quality target (SSIM rises with quality) keep the lowest quality that
    meets it; for a size target (bytes rise with quality) keep the highest that
    fits. When nothing meets the target, the nearest miss is returned: the
    ceiling for a quality target, the floor for a size target.
    """
    low, high = floor, ceiling
    best: tuple[int, bytes, float] | None = None
    fallback: tuple[int, bytes, float] | None = None
    while low <= high:
        quality = (low + high) // 2
        data = encode_at(quality)
        ok, value = check(data)
        if ok:
            best = (quality, data, value)
            if prefer_highest:
                low = quality + 1
            else:
                high = quality - 1
        else:
            fallback = (quality, data, value)
            if prefer_highest:
                high = quality - 1
            else:
                low = quality + 1
    return (*best, True) if best else (*fallback, False)
