"""Whether a finished asset is left alone when it is submitted again, by recipe and source."""

from __future__ import annotations

from catalog.records import AssetRequest
from cluster.quarantine import is_quarantined
from pipelines.recipe import Recipe


def done(previous: dict | None, recipe: Recipe) -> bool:
    """Finished with this recipe: ready, rejected, or quarantined (which a re-run would
    only let take down more workers; a new libvips makes a new recipe id). An index-only
    recipe takes an asset finished under any recipe: that run scanned, hashed and recorded
    it too, and indexing it again would only drop its renditions from its record."""
    return bool(previous and (previous["status"] in ("ready", "rejected")
                              or is_quarantined(previous))
                and (recipe.index_only or previous["recipe_id"] == recipe.id))


def unchanged(previous: dict | None, request: AssetRequest, recipe: Recipe) -> bool:
    return bool(done(previous, recipe) and request.fingerprint
                and previous["source_fingerprint"] == request.fingerprint)


def finished(previous: dict | None, request: AssetRequest, recipe: Recipe) -> bool:
    """A bulk job's test: done, and unchanged where the source gives a fingerprint (a
    folder does; a Parquet or catalog manifest names sources without one)."""
    if request.fingerprint:
        return unchanged(previous, request, recipe)
    return done(previous, recipe)
