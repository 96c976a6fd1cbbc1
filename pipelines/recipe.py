"""Recipes are data: a named list of presets, identified by a content hash.

A recipe id hashes the canonical recipe plus the versions of the tools that
shape the output, so a rendition key (source sha256, recipe id, preset) changes
exactly when the bytes it names could change.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

FITS = ("contain", "cover")
FORMATS = ("webp",)


@dataclass(frozen=True)
class Preset:
    name: str
    width: int
    height: int | None = None
    fit: str = "contain"
    format: str = "webp"
    quality: int = 80

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"preset name {self.name!r} must be letters, digits, '-' or '_'")
        if self.width <= 0 or (self.height is not None and self.height <= 0):
            raise ValueError(f"preset {self.name!r}: width and height must be positive")
        if self.fit not in FITS:
            raise ValueError(f"preset {self.name!r}: fit {self.fit!r} is not one of {FITS}")
        if self.fit == "cover" and self.height is None:
            raise ValueError(f"preset {self.name!r}: fit 'cover' needs a height")
        if self.format not in FORMATS:
            raise ValueError(f"preset {self.name!r}: format {self.format!r} is not one of {FORMATS}")
        if not 1 <= self.quality <= 100:
            raise ValueError(f"preset {self.name!r}: quality must be 1..100")


@dataclass(frozen=True)
class Recipe:
    name: str
    presets: tuple[Preset, ...]
    tool_versions: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if not self.presets:
            raise ValueError(f"recipe {self.name!r} has no presets")
        names = [p.name for p in self.presets]
        if len(set(names)) != len(names):
            raise ValueError(f"recipe {self.name!r} repeats a preset name: {names}")

    def canonical(self) -> dict:
        """The recipe as plain data, in a stable order; what the id hashes."""
        return {
            "name": self.name,
            "presets": [asdict(p) for p in sorted(self.presets, key=lambda p: p.name)],
            "tools": dict(sorted(self.tool_versions)),
        }

    @property
    def id(self) -> str:
        blob = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:32]

    def with_tools(self, versions: dict[str, str]) -> "Recipe":
        return Recipe(self.name, self.presets, tuple(sorted(versions.items())))


DEFAULT_RECIPE = Recipe(
    name="default",
    presets=(
        Preset("thumb", 150, 150, fit="cover"),
        Preset("small", 400),
        Preset("medium", 800),
        Preset("large", 1600),
    ),
)


def recipe_from_dict(data: dict) -> Recipe:
    """Build a recipe from parsed YAML/JSON: ``{name, presets: [{name, width, ...}]}``."""
    if not isinstance(data, dict) or "presets" not in data:
        raise ValueError("a recipe is a mapping with a 'presets' list")
    known = set(Preset.__dataclass_fields__)
    presets = []
    for item in data["presets"]:
        unknown = set(item) - known
        if unknown:
            raise ValueError(f"preset {item.get('name')!r}: unknown keys {sorted(unknown)}")
        presets.append(Preset(**item))
    return Recipe(name=str(data.get("name", "custom")), presets=tuple(presets))


def load_recipe(path: str | Path) -> Recipe:
    """Read a recipe file; YAML and JSON both parse (JSON is YAML)."""
    import yaml

    text = Path(path).read_text()
    return recipe_from_dict(yaml.safe_load(text))
