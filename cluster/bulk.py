"""Bulk graphs: one Dask task runs a partition of assets through the same stages, fused.

The scheduler costs a millisecond or two per task, so a million assets as seven
tasks each would spend hours on bookkeeping; a partition of a few hundred costs
one task and one catalog transaction, and keeps per-asset results.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterable
from concurrent.futures import CancelledError
from dataclasses import dataclass
from typing import Any

from distributed import Client, Future, as_completed
from distributed.scheduler import KilledWorker

from catalog import Catalog
from cluster import recorder, runtime
from cluster.config import Settings
from cluster.graph import stages_for
from cluster.quarantine import Isolation, Suspect, record_lost, worker_deaths
from cluster.tasks import TASKS, Job
from pipelines.recipe import Recipe

# Backfill partitions yield to interactive work (cluster.graph.INTERACTIVE_PRIORITY).
BULK_PRIORITY = -10
# Assets per partition at most, unless the caller sets a size: past a few hundred the
# scheduler's per-task cost is lost in the noise, and a lost worker costs more to redo.
DEFAULT_BATCH_SIZE = 200


def bounded(client: Client, function: Callable, batches: Iterable[list], *args: Any,
            settle: Callable[[list, Any], None], max_in_flight: int | None = None) -> None:
    """Run ``function(batch, *args)`` on the cluster for each batch, at bulk priority, at
    most ``max_in_flight`` (default: two per worker thread) out at once, so the client
    holds a bounded amount whatever the walk's size. ``settle(batch, result)`` hears each
    as it ends; ``result`` is the exception where the task raised."""
    limit = max_in_flight or 2 * max(1, sum(client.nthreads().values()))
    in_flight, out = as_completed(), {}

    def settled(future: Future) -> None:
        batch = out.pop(future.key)
        try:
            result = future.result()
        except Exception as exc:  # noqa: BLE001 - the caller says what it means
            result = exc
        settle(batch, result)

    for batch in batches:
        while len(out) >= limit:
            settled(next(in_flight))
        future = client.submit(function, batch, *args, priority=BULK_PRIORITY, pure=False)
        out[future.key] = batch
        in_flight.add(future)
    for future in in_flight:
        settled(future)


def partition_size(total: int | None, threads: int, cap: int = DEFAULT_BATCH_SIZE) -> int:
    """Assets per partition: at most ``cap``, and few enough that each worker thread gets
    two partitions when ``total`` is known, so none sits idle while another has a queue."""
    if not total:
        return cap
    return max(1, min(cap, total // (2 * max(1, threads))))


@dataclass(frozen=True)
class Item:
    asset_id: str
    source_uri: str
    attempt: int


def run_partition(items: list[Item], recipe: Recipe, settings: Settings) -> dict[str, int]:
    """Run each item through the recipe's stages (``cluster.graph.stages_for``); the catalog
    writes go out together at the end."""
    catalog = runtime.catalog(settings)
    catalog.mark_processing_many({i.asset_id: i.attempt for i in items})
    first, *middle, record = (TASKS[stage] for stage in stages_for(recipe))
    counts: Counter = Counter()
    with recorder.buffered(catalog) as writes:
        for item in items:
            job = Job(item.asset_id, item.attempt, item.source_uri, recipe, settings)
            carry = first(job)
            for stage in middle:
                carry = stage(job, carry)
            counts[record(job, carry)["status"]] += 1
        writes.flush()
    return dict(counts)


class ClusterLost(RuntimeError):
    """The Dask scheduler went away (or the client closed) with partitions in flight."""


class Partitions:
    """The client's side of a bulk job: at most ``limit`` partitions out at once.

    Dask cannot say which asset of a partition killed its worker, so a partition
    failed with ``KilledWorker`` is sent again as one partition per asset: no asset
    pays for a neighbour. An asset killed that way on its own is a suspect, run once
    more alone when everything else has finished (``cluster.quarantine``). ``settled``
    hears each partition's items and counts by status as it ends.
    """

    def __init__(self, submit: Callable[[list[Item]], Future], limit: int, isolation: Isolation,
                 catalog: Catalog, settled: Callable[[list[Item], dict], None]) -> None:
        self.submit, self.limit, self.isolation = submit, limit, isolation
        self.catalog, self.settled = catalog, settled
        self.in_flight = as_completed()
        self.out: dict[str, tuple[list[Item], int]] = {}  # key -> (items, worker deaths so far)
        self.queue: deque[tuple[list[Item], int]] = deque()
        self.suspects: list[tuple[Item, int]] = []

    def add(self, items: list[Item]) -> None:
        """Send ``items`` as one partition, first waiting for room."""
        self.queue.append((items, 0))
        self._send_queued()

    def finish(self) -> None:
        """Wait for every partition, then run the suspects alone, one at a time."""
        while self.out or self.queue:
            self._send_queued()
            if self.out:
                self._settle(next(self.in_flight))
        for item, deaths in self.suspects:
            suspect = Suspect(item.asset_id, item.attempt, item.source_uri, deaths)
            try:
                counts = self.isolation.run_alone(suspect, lambda: self.submit([item]))
            except CancelledError as exc:
                raise self._cluster_lost(exc, 1) from exc
            except Exception as exc:  # noqa: BLE001 - the asset still ends
                counts = self._lost([item], exc)
            self.settled([item], counts or {"failed": 1})

    def _send_queued(self) -> None:
        while self.queue:
            while len(self.out) >= self.limit:
                self._settle(next(self.in_flight))
            items, deaths = self.queue.popleft()
            future = self.submit(items)
            self.out[future.key] = (items, deaths)
            self.in_flight.add(future)

    def _settle(self, future: Future) -> None:
        items, deaths = self.out.pop(future.key)
        try:
            counts = future.result()
        except KilledWorker as exc:
            deaths += worker_deaths(exc)
            if len(items) > 1:
                self.queue.extend(([item], deaths) for item in items)
            else:
                self.suspects.append((items[0], deaths))
            return
        except CancelledError as exc:
            raise self._cluster_lost(exc, len(self.out) + 1) from exc
        except Exception as exc:  # noqa: BLE001 - its assets still end
            counts = self._lost(items, exc)
        self.settled(items, counts)

    @staticmethod
    def _cluster_lost(error: CancelledError, in_flight: int) -> ClusterLost:
        return ClusterLost(
            f"lost the Dask cluster ({getattr(error, 'reason', error)}) with {in_flight} "
            "partitions in flight; their assets stay unfinished in the catalog, and running "
            "the same job again finishes them")

    def _lost(self, items: list[Item], error: Exception) -> dict[str, int]:
        for item in items:
            record_lost(self.catalog, item.asset_id, item.attempt, error)
        return {"failed": len(items)}
