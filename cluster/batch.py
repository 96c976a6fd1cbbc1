"""A batch of assets submitted by a Farm, and waiting for every one of them to end."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Protocol

from distributed import Future, as_completed

from catalog import Catalog
from catalog.records import AssetRequest
from cluster.claims import await_held
from cluster.interrupt import Interrupted
from cluster.quarantine import record_lost, worker_deaths
from cluster.tasks import Job
from pipelines.recipe import Recipe

Progress = Callable[[int, int, Counter], None]


class Submitter(Protocol):
    """What a batch needs of the farm that submitted it (``cluster.farm.Farm``)."""

    catalog: Catalog
    holder: str
    claim_lease_s: float

    def start(self, batch: Batch, requests: list[AssetRequest],
              attempts: dict[str, int]) -> None: ...

    def retry_alone(self, job: Job, deaths: int) -> dict: ...

    def results(self, asset_ids: list[str]) -> list[dict]: ...


@dataclass
class Batch:
    farm: Submitter
    recipe: Recipe
    asset_ids: list[str]
    futures: dict[str, Future]
    attempts: dict[str, int]
    jobs: dict[str, Job]
    held: dict[str, AssetRequest]  # by other runs: awaited, taken over if their claim lapses

    def wait(self, progress: Progress | None = None) -> list[dict]:
        """Wait for every asset to end; returns their summaries in the order submitted.

        An asset whose task was on workers that died is run once more, alone, after
        the others (``cluster.quarantine``). Assets another run holds are awaited
        until they end, and run here if that run's claim lapses (``cluster.claims``).
        """
        counts: Counter = Counter()
        total = len(self.asset_ids)
        done = total - len(self.futures) - len(self.held)
        if progress:
            progress(done, total, counts)
        suspects: list[tuple[str, int]] = []

        def settle(asset_id: str, outcome: Callable[[], dict]) -> None:
            nonlocal done
            try:
                counts[outcome()["status"]] += 1
            except Exception as exc:  # noqa: BLE001 - e.g. a lost scheduler: the asset still ends
                counts["failed"] += 1
                record_lost(self.farm.catalog, asset_id, self.attempts[asset_id], exc)
            done += 1
            if progress:
                progress(done, total, counts)

        try:
            while True:
                by_future = {future.key: asset_id for asset_id, future in self.futures.items()}
                for future in as_completed(list(self.futures.values())):
                    asset_id = by_future[future.key]
                    deaths = worker_deaths(future.exception()) if future.status == "error" else 0
                    if deaths:
                        suspects.append((asset_id, deaths))
                    else:
                        settle(asset_id, future.result)
                    # Let go of the result once read, before waiting for the next: a worker
                    # that died holding it would make Dask run the whole asset again.
                    del self.futures[asset_id], future
                if not self.held:
                    break
                farm = self.farm
                ended = await_held(farm.catalog, self.held, farm.holder, farm.claim_lease_s,
                                   self.recipe.id, partial(farm.start, self))
                for asset_id, status in ended.items():
                    settle(asset_id, partial(dict, status=status))
            for asset_id, deaths in suspects:
                settle(asset_id, partial(self.farm.retry_alone, self.jobs[asset_id], deaths))
        except KeyboardInterrupt:
            raise Interrupted(done, total, counts) from None
        return self.farm.results(self.asset_ids)
