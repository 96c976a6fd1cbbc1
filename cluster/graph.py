"""The per-asset graph as data: planning is pure, submitting is the only IO."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from distributed import Client, Future

from cluster import placement
from cluster.tasks import TASKS, Job
from pipelines.recipe import Recipe

STAGES = ("scan", "validate", "hash", "resize", "convert", "compress", "record")
# What makes renditions; an index-only recipe has none to make, so its assets skip them.
RENDER_STAGES = ("resize", "convert", "compress")
INDEX_STAGES = tuple(stage for stage in STAGES if stage not in RENDER_STAGES)

# Interactive work runs ahead of bulk partitions (higher numbers go first).
INTERACTIVE_PRIORITY = 10


@dataclass(frozen=True)
class StageCall:
    stage: str
    key: str
    after: str | None  # the key whose result this stage consumes


def stages_for(recipe: Recipe) -> tuple[str, ...]:
    """The stages an asset runs under ``recipe``: all seven, or the four of an index."""
    return INDEX_STAGES if recipe.index_only else STAGES


def plan_asset(asset_id: str, attempt: int, batch: str,
               stages: tuple[str, ...] = STAGES) -> list[StageCall]:
    """The stage calls of one asset (seven by default), each consuming the one before."""
    calls: list[StageCall] = []
    for stage in stages:
        key = f"{stage}-{asset_id}-{attempt}-{batch}"
        calls.append(StageCall(stage, key, calls[-1].key if calls else None))
    return calls


def submit_plan(client: Client, plan: list[StageCall], job: Job,
                priority: int = INTERACTIVE_PRIORITY) -> Future:
    """Submit one asset's plan; returns the future of its last stage.

    The resize stage asks for a GPU when the cluster has GPU workers (and the
    ``gpu`` setting allows it); the other stages run anywhere.
    """
    futures: dict[str, Future] = {}
    gpu = placement.resize_resources(client, job.settings.gpu)
    for call in plan:
        args = (job,) if call.after is None else (job, futures[call.after])
        futures[call.key] = client.submit(TASKS[call.stage], *args, key=call.key,
                                          priority=priority, pure=False,
                                          resources=gpu if call.stage == "resize" else None)
    return futures[plan[-1].key]


def resubmit(client: Client, job: Job, priority: int = INTERACTIVE_PRIORITY) -> Future:
    """Submit one asset's plan again under fresh keys, so Dask counts its failures afresh."""
    return submit_plan(client, plan_asset(job.asset_id, job.attempt, f"retry-{uuid.uuid4().hex[:8]}",
                                          stages_for(job.recipe)), job, priority)
