"""Recipes are data: a named list of presets, identified by content hashes.

A recipe id hashes the canonical recipe plus the versions of the tools that
shape the output, so a rendition key (source sha256, recipe id, preset) changes
exactly when the bytes it names could change. Each preset has an id of its own
(its definition plus the tool versions): when a recipe changes one preset, the
others keep their ids and their renditions are reused, not made again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

FITS = ("contain", "cover", "fill")
CROPS = ("centre", "attention", "entropy", "low", "high")
FORMATS = ("webp", "avif", "jpeg", "png")
# The lowest quality a search (target_ssim, target_bytes) may choose unless a preset
# says otherwise: jpeg-recompress's default floor (it searches 40..95). SSIM hardly
# moves as blocking spreads over smooth gradients, so without a floor a search for
# SSIM 0.97 ran to quality 1 on a soft photograph.
DEFAULT_MIN_QUALITY = 40
ALPHA_FORMATS = ("webp", "avif", "png")


def _hash(data: object, length: int = 32) -> str:
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


@dataclass(frozen=True)
class Preset:
    """One rendition: its box, how to fit the image into it, and how to encode it.

    ``format`` is one of FORMATS or ``auto`` (the smallest of ``candidates``).
    ``target_ssim`` or ``target_bytes`` turn ``quality`` into a ceiling for a
    search that keeps the smallest encoding meeting the target, and never goes
    below ``min_quality`` (default: DEFAULT_MIN_QUALITY, or ``quality`` if lower).
    """

    name: str
    width: int
    height: int | None = None
    fit: str = "contain"
    crop: str = "centre"
    format: str = "webp"
    quality: int = 80
    candidates: tuple[str, ...] = ("webp", "avif", "jpeg")
    target_ssim: float | None = None
    target_bytes: int | None = None
    background: tuple[int, int, int] = (255, 255, 255)
    min_quality: int | None = None

    def __post_init__(self) -> None:
        def bad(message: str) -> ValueError:
            return ValueError(f"preset {self.name!r}: {message}")

        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"preset name {self.name!r} must be letters, digits, '-' or '_'")
        if self.width <= 0 or (self.height is not None and self.height <= 0):
            raise bad("width and height must be positive")
        if self.fit not in FITS:
            raise bad(f"fit {self.fit!r} is not one of {FITS}")
        if self.fit in ("cover", "fill") and self.height is None:
            raise bad(f"fit {self.fit!r} needs a height")
        if self.crop not in CROPS:
            raise bad(f"crop {self.crop!r} is not one of {CROPS}")
        if self.format not in FORMATS + ("auto",):
            raise bad(f"format {self.format!r} is not one of {FORMATS + ('auto',)}")
        if not self.candidates or set(self.candidates) - set(FORMATS):
            raise bad(f"candidates {self.candidates!r} must be among {FORMATS}")
        if not 1 <= self.quality <= 100:
            raise bad("quality must be 1..100")
        if self.target_ssim is not None and not 0 < self.target_ssim < 1:
            raise bad("target_ssim must be between 0 and 1")
        if self.target_bytes is not None and self.target_bytes <= 0:
            raise bad("target_bytes must be positive")
        if self.min_quality is not None and not 1 <= self.min_quality <= self.quality:
            raise bad(f"min_quality must be 1..quality ({self.quality})")
        if len(self.background) != 3 or not all(0 <= c <= 255 for c in self.background):
            raise bad("background is three 0..255 values")

    @property
    def formats(self) -> tuple[str, ...]:
        """The formats to try: the chosen one, or every candidate for ``auto``."""
        return self.candidates if self.format == "auto" else (self.format,)

    @property
    def floor(self) -> int:
        """The lowest quality a search may keep."""
        return self.min_quality or min(DEFAULT_MIN_QUALITY, self.quality)

    def canonical(self) -> dict:
        """The preset as hashed. The floor in force counts only where a search uses it:
        other presets' bytes do not depend on it, so their ids (and renditions) stay."""
        data = asdict(self)
        del data["min_quality"]
        if self.target_ssim is not None or self.target_bytes is not None:
            data["min_quality"] = self.floor
        return data

    def box(self) -> tuple[int, int]:
        """The box the preset fits into; ``contain`` without a height is a square."""
        return self.width, self.height or self.width


# NVIDIA's hardware encoders: named by a recipe, used only where a worker's GPU has NVENC
# (data-centre cards such as the H100 have none), never swapped for a software one.
NVENC_CODECS = ("h264_nvenc", "hevc_nvenc", "av1_nvenc")
NVENC_SPEEDS = ("p1", "p2", "p3", "p4", "p5", "p6", "p7")
VIDEO_CODECS = ("libx264", "libsvtav1", "libvpx-vp9") + NVENC_CODECS
AUDIO_CODECS = ("aac", "libopus")
CONTAINERS = {"mp4": ("libx264", "libsvtav1", *NVENC_CODECS, "aac", "libopus"),
              "webm": ("libvpx-vp9", "libsvtav1", "av1_nvenc", "libopus"),
              "ogg": ("libopus",)}


@dataclass(frozen=True)
class VideoPreset:
    """A video (or audio-only) rendition ladder: one encoding per height, never upscaled.

    ``crf`` or ``bit_rate`` sets the rate control; ``speed`` is the encoder's own
    preset (x264: ultrafast..veryslow; SVT-AV1: 0..13; VP9: cpu-used 0..8; NVENC:
    p1..p7, which it must name, since the default is x264's).
    Audio-only sources get one audio rendition in the same container (``ogg``
    for Opus in ``webm``). ``hls`` also packages the ladder as HLS.
    """

    name: str
    codec: str = "libx264"
    heights: tuple[int, ...] = (360, 720, 1080)
    crf: int | None = 23
    bit_rate: int | None = None
    speed: str = "veryfast"
    gop_seconds: float = 2.0
    pix_fmt: str = "yuv420p"
    audio_codec: str | None = "aac"
    audio_bit_rate: int = 128_000
    container: str = "mp4"
    hls: bool = False
    preview_seconds: float | None = None

    def __post_init__(self) -> None:
        def bad(message: str) -> ValueError:
            return ValueError(f"video preset {self.name!r}: {message}")

        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"preset name {self.name!r} must be letters, digits, '-' or '_'")
        if self.codec not in VIDEO_CODECS:
            raise bad(f"codec {self.codec!r} is not one of {VIDEO_CODECS}")
        if self.codec in NVENC_CODECS and self.speed not in NVENC_SPEEDS:
            raise bad(f"{self.codec} takes a speed of {NVENC_SPEEDS[0]} (fastest) to "
                      f"{NVENC_SPEEDS[-1]} (best), not {self.speed!r}")
        if self.audio_codec is not None and self.audio_codec not in AUDIO_CODECS:
            raise bad(f"audio codec {self.audio_codec!r} is not one of {AUDIO_CODECS}")
        if self.container not in CONTAINERS:
            raise bad(f"container {self.container!r} is not one of {tuple(CONTAINERS)}")
        for codec in (self.codec, self.audio_codec):
            if codec and codec not in CONTAINERS[self.container]:
                raise bad(f"{codec} does not go in {self.container}")
        if not self.heights or any(h <= 0 or h % 2 for h in self.heights):
            raise bad("heights are positive even numbers")
        if (self.crf is None) == (self.bit_rate is None):
            raise bad("set exactly one of crf and bit_rate")
        if self.gop_seconds <= 0 or self.audio_bit_rate <= 0:
            raise bad("gop_seconds and audio_bit_rate must be positive")
        if self.hls and self.container != "mp4":
            raise bad("HLS packaging takes mp4 renditions")

    def canonical(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Recipe:
    name: str
    presets: tuple[Preset, ...]
    tool_versions: tuple[tuple[str, str], ...] = field(default=(), compare=False)
    video: tuple[VideoPreset, ...] = ()

    def __post_init__(self) -> None:
        if self.video and not self.presets:
            # A video's poster and an audio file's cover are cut with the image presets.
            raise ValueError(f"recipe {self.name!r} has video presets but no image presets "
                             "(a recipe with neither indexes only)")
        names = [p.name for p in self.presets + self.video]
        if len(set(names)) != len(names):
            raise ValueError(f"recipe {self.name!r} repeats a preset name: {names}")

    def canonical(self) -> dict:
        """The recipe as plain data, in a stable order; what the id hashes."""
        return {
            "name": self.name,
            "presets": [p.canonical() for p in sorted(self.presets, key=lambda p: p.name)],
            "video": [p.canonical() for p in sorted(self.video, key=lambda p: p.name)],
            "tools": dict(sorted(self.tool_versions)),
        }

    @property
    def id(self) -> str:
        return _hash(self.canonical())

    @property
    def index_only(self) -> bool:
        """No renditions at all: scan, validate, hash, store the original and record."""
        return not self.presets and not self.video

    def preset_id(self, preset: Preset | VideoPreset) -> str:
        """What a rendition's bytes depend on: the preset and the tools, not its neighbours."""
        return _hash({"preset": preset.canonical(), "tools": dict(sorted(self.tool_versions))})

    def with_tools(self, versions: dict[str, str]) -> "Recipe":
        return Recipe(self.name, self.presets, tuple(sorted(versions.items())), self.video)


DEFAULT_RECIPE = Recipe(
    name="default",
    presets=(
        Preset("thumb", 150, 150, fit="cover"),
        Preset("small", 400),
        Preset("medium", 800),
        Preset("large", 1600),
    ),
    video=(VideoPreset("h264"),),
)

# ``mediafarm index``: what every asset gets, and nothing rendered.
INDEX_RECIPE = Recipe(name="index", presets=())


def recipe_from_dict(data: dict) -> Recipe:
    """Build a recipe from parsed YAML/JSON: ``{name, presets: [{name, width, ...}]}``.

    ``presets: []`` with no ``video`` is an index-only recipe (``Recipe.index_only``).
    """
    if not isinstance(data, dict) or "presets" not in data:
        raise ValueError("a recipe is a mapping with a 'presets' list (empty to index only)")
    known = set(Preset.__dataclass_fields__)
    presets = []
    for item in data["presets"] or []:
        unknown = set(item) - known
        if unknown:
            raise ValueError(f"preset {item.get('name')!r}: unknown keys {sorted(unknown)}")
        values = dict(item)
        for key in ("candidates", "background"):  # lists in YAML, tuples in a frozen preset
            if key in values:
                values[key] = tuple(values[key])
        presets.append(Preset(**values))
    video = []
    for item in data.get("video") or []:
        unknown = set(item) - set(VideoPreset.__dataclass_fields__)
        if unknown:
            raise ValueError(f"video preset {item.get('name')!r}: unknown keys {sorted(unknown)}")
        values = dict(item)
        if "heights" in values:
            values["heights"] = tuple(values["heights"])
        video.append(VideoPreset(**values))
    return Recipe(name=str(data.get("name", "custom")), presets=tuple(presets), video=tuple(video))


def load_recipe(path: str | Path) -> Recipe:
    """Read a recipe file; YAML and JSON both parse (JSON is YAML)."""
    import yaml

    with Path(path).open(encoding="utf-8") as stream:  # a stream: a YAML error names the file
        return recipe_from_dict(yaml.safe_load(stream))
