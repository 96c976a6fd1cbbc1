"""Re-encodes: find what a new recipe would change, estimate it from a sample, then run it.

Only renditions whose preset id is missing are made: presets the new recipe
keeps unchanged are reused by the bulk path, never encoded again.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Iterator

from sqlalchemy import select

from catalog import Catalog
from catalog.models import Asset, Blob, Rendition
from cluster import runtime
from cluster.config import Settings
from cluster.manifest import catalog_filter
from pipelines.optimize.compress import compress
from pipelines.outputs import planned_outputs
from pipelines.recipe import Recipe
from pipelines.transform.convert import to_srgb
from pipelines.transform.resize import resize
from pipelines.upload.media_probe import MediaInfo, StreamInfo
from pipelines.upload.validate import Validated


def candidates(catalog: Catalog, where: str, recipe: Recipe,
               batch_size: int = 1000) -> Iterator[list[tuple[dict, Validated]]]:
    """Ready assets matching ``where`` made with another recipe, with what was known of them."""
    query = (select(Asset.id, Asset.source_uri, Asset.sha256, Blob.media_type,
                    Blob.media_metadata)
             .join(Blob, Blob.sha256 == Asset.sha256)
             .where(Asset.status == "ready", Asset.recipe_id != recipe.id,
                    *catalog_filter(where)).order_by(Asset.id))
    with catalog.engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=batch_size).execute(query)
        for rows in result.partitions(batch_size):
            yield [(dict(row._mapping), _validated(row.media_type, row.media_metadata or {}))
                   for row in rows]


def _validated(media_type: str, metadata: dict) -> Validated:
    kind = media_type.split("/", 1)[0]
    if kind == "image":
        return Validated("", media_type, "image", metadata.get("width", 0),
                         metadata.get("height", 0), metadata.get("frames", 1), metadata)
    streams = tuple(StreamInfo(**s) for s in metadata.get("streams", []))
    media = MediaInfo(metadata.get("container", ""), metadata.get("duration_s"),
                      metadata.get("bit_rate"), streams)
    return Validated("", media_type, media.media_kind, 0, 0, 1, metadata, media)


def plan(catalog: Catalog, where: str, recipe: Recipe) -> dict:
    """Counts of assets and of renditions to make, by media kind and rendition name."""
    assets: Counter = Counter()
    to_make: dict[str, Counter] = defaultdict(Counter)
    for batch in candidates(catalog, where, recipe):
        digests = [row["sha256"] for row, _ in batch]
        with catalog.engine.connect() as conn:
            existing = set(conn.execute(select(Rendition.source_sha256, Rendition.preset_id)
                                        .where(Rendition.source_sha256.in_(digests))).all())
        for row, validated in batch:
            missing = [name for name, pid in planned_outputs(recipe, validated).items()
                       if (row["sha256"], pid) not in existing]
            if missing:
                assets[validated.kind] += 1
                to_make[validated.kind].update(missing)
    return {"assets": dict(assets), "renditions": {k: dict(v) for k, v in to_make.items()}}


def render_sample(sha256: str, validated: Validated, recipe: Recipe,
                  settings: Settings) -> dict:
    """Make an image asset's renditions without storing or recording them: sizes and time."""
    started = time.perf_counter()
    data = runtime.stores(settings)["originals"].get(sha256)
    presets = recipe.presets
    rasters = resize(data, presets, limits=settings.limits)
    encoded = [compress(to_srgb(r), p) for r, p in zip(rasters, presets)]
    return {"seconds": time.perf_counter() - started,
            "renditions": {e.preset: {"bytes": len(e.data), "quality": e.quality,
                                      "format": e.format, "metric": e.metric} for e in encoded}}


def summarise_sample(samples: list[dict], planned: dict, workers: int) -> dict:
    """Size and quality distributions per preset, and the whole run's time and bytes."""
    per_preset: dict[str, list[dict]] = defaultdict(list)
    for sample in samples:
        for name, rendition in sample["renditions"].items():
            per_preset[name].append(rendition)
    distributions = {name: {"bytes": _quantiles([r["bytes"] for r in items]),
                            "quality": _quantiles([r["quality"] for r in items if r["quality"]]),
                            "formats": dict(Counter(r["format"] for r in items))}
                     for name, items in per_preset.items()}
    images = planned["renditions"].get("image", {})
    mean_bytes = {name: statistics.fmean(r["bytes"] for r in items)
                  for name, items in per_preset.items()}
    seconds = statistics.fmean(s["seconds"] for s in samples) if samples else 0.0
    return {"sampled": len(samples), "presets": distributions,
            # Rounded to what an estimate from a few samples can claim.
            "estimate": {"image_seconds": round(seconds * planned["assets"].get("image", 0)
                                                / max(workers, 1), 1),
                         "image_bytes": round(sum(mean_bytes.get(n, 0) * c
                                                  for n, c in images.items())),
                         "worker_threads": workers}}


def _quantiles(values: list[float]) -> dict:
    if not values:
        return {}
    values = sorted(values)

    def at(q: float) -> float:
        return values[min(len(values) - 1, int(q * (len(values) - 1) + 0.5))]
    return {"min": values[0], "p50": at(0.5), "p90": at(0.9), "max": values[-1]}
