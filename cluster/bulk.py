"""Bulk graphs: one Dask task runs a partition of assets through the same stages, fused.

The scheduler costs a millisecond or two per task, so a million assets as seven
tasks each would spend hours on bookkeeping; a partition of a few hundred costs
one task and one catalog transaction, and keeps per-asset results.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from cluster import recorder, runtime
from cluster.config import Settings
from cluster.tasks import (Job, compress_task, convert_task, hash_task, record_task, resize_task,
                           scan_task, validate_task)
from pipelines.recipe import Recipe

# Backfill partitions yield to interactive work (cluster.graph.INTERACTIVE_PRIORITY).
BULK_PRIORITY = -10


@dataclass(frozen=True)
class Item:
    asset_id: str
    source_uri: str
    attempt: int


def run_partition(items: list[Item], recipe: Recipe, settings: Settings) -> dict[str, int]:
    """Run each item through every stage; the catalog writes go out together at the end."""
    catalog = runtime.catalog(settings)
    catalog.mark_processing_many({i.asset_id: i.attempt for i in items})
    counts: Counter = Counter()
    with recorder.buffered(catalog) as writes:
        for item in items:
            job = Job(item.asset_id, item.attempt, item.source_uri, recipe, settings)
            carry = scan_task(job)
            for stage in (validate_task, hash_task, resize_task, convert_task, compress_task):
                carry = stage(job, carry)
            counts[record_task(job, carry)["status"]] += 1
        writes.flush()
    return dict(counts)
