"""The Farm: submit assets to a Dask cluster and follow them through the catalog."""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

from distributed import Client, Future, LocalCluster

from catalog import Catalog, library
from catalog import search as catalog_search
from catalog.records import AssetRequest
from cluster import reencode, rescan as rescans, script_workers, worker_start
from cluster.batch import Batch
from cluster.claims import CLAIM_LEASE_S, Lease, await_held, new_holder
from cluster.config import Settings, load_settings
from cluster.bulk import (BULK_PRIORITY, DEFAULT_BATCH_SIZE, Item, Partitions, bounded,
                          partition_size, run_partition)
from cluster.gc import DEFAULT_GRACE_S
from cluster.graph import plan_asset, resubmit, stages_for, submit_plan
from cluster.interrupt import workers_ignore_ctrl_c
from cluster.manifest import Manifest, of_sources
from cluster.quarantine import QUARANTINED, Isolation, Suspect
from cluster.redo import finished, unchanged
from cluster.storage import scrub as scrubbing, sources
from cluster.storage.scrub import SCRUBBED
from cluster.storage.stores import Store, open_stores
from cluster.tasks import Job
from cluster.worker_plugin import MediafarmWorkerPlugin, clamd_verdict
from pipelines.outcome import Failed
from pipelines.recipe import DEFAULT_RECIPE, INDEX_RECIPE, Recipe, recipe_from_dict
from pipelines.upload.scan import ClamdScanner
from pipelines.vips import tool_versions

log = logging.getLogger(__name__)

BulkProgress = Callable[[int, int | None, Counter], None]

# Dask's own retries of a task whose worker died (default 3) on the cluster the farm
# starts: the farm retries such assets itself, alone (cluster.quarantine), so each of
# Dask's retries would only let a poison file take down more workers. One is kept for
# the work without that isolation (re-encode samples, video chunk tasks). A cluster the
# farm joins is left as its operator configured it: it may run other work, and its
# workers may be far costlier to lose and restart than a LocalCluster's.
OWN_CLUSTER_ALLOWED_FAILURES = 1


class Farm:
    """Start or join a Dask cluster and run the per-asset graph on it.

    With no scheduler address (argument, ``DASK_SCHEDULER_ADDRESS`` or config)
    the farm starts a LocalCluster with one single-threaded worker process per core.
    The farm is one run for ``cluster.claims``: the assets it queues are its own
    until they end, and other runs wait for them rather than doing them again.
    """

    def __init__(self, settings: Settings | None = None, *, client: Client | None = None,
                 scheduler_address: str | None = None, n_workers: int | None = None,
                 claim_lease_s: float = CLAIM_LEASE_S) -> None:
        self.settings = settings or load_settings()
        address = scheduler_address or self.settings.scheduler_address
        own_cluster = client is None and not address
        verdict = None  # the clamd check running beside an own cluster's start
        if own_cluster:
            # The two slowest parts of an own cluster's start run beside the rest of it: the
            # workers' fork server importing the stages, and clamd's canaries (seconds),
            # scanned once here for all its workers, rather than by each worker when the
            # plugin is registered. Only for a cluster of this machine: elsewhere clamd's URL
            # may name another host, or none this machine reaches, and each worker checks
            # it as it sees it.
            worker_start.fork_workers()
            checking = ThreadPoolExecutor(1, thread_name_prefix="mediafarm-clamd-check")
            verdict = checking.submit(clamd_verdict, self.settings.clamd_url)
            checking.shutdown(wait=False)
        self.catalog = Catalog(self.settings.catalog_url, self.settings.catalog_retry_s)
        self.catalog.upgrade()
        self.holder, self.claim_lease_s = new_holder(), claim_lease_s
        self._cluster: LocalCluster | None = None
        if client is not None:
            self.client, self._owns_client = client, False
        elif address:
            self.client, self._owns_client = _join(address, self.settings), True
        else:
            script_workers.install()  # a script without a __main__ guard must not hang
            # libvips threads would fight the one-process-per-core layout; keep each worker at one.
            with workers_ignore_ctrl_c():
                self._cluster = LocalCluster(
                    n_workers=n_workers or os.cpu_count() or 1, threads_per_worker=1,
                    processes=True, dashboard_address=self.settings.dashboard_address,
                    env={"VIPS_CONCURRENCY": "1"},
                    scheduler_kwargs={"allowed_failures": OWN_CLUSTER_ALLOWED_FAILURES})
            self.client, self._owns_client = Client(self._cluster), True
        self._lease = Lease(self.catalog, self.holder, claim_lease_s)
        # A Farm dropped without close() stops renewing once collected: its claims lapse.
        weakref.finalize(self, self._lease.halt)
        try:
            self.client.register_plugin(MediafarmWorkerPlugin(
                self.settings.clamd_url, clamd_verdict=verdict and verdict.result()))
        except BaseException:  # Ctrl-C included: stop what was started
            self.close()
            raise
        self._stores: dict[str, Store] | None = None
        self.isolation = Isolation(self.catalog, lambda: self.stores,
                                   self.settings.limits.max_bytes)

    @property
    def stores(self) -> dict[str, Store]:
        if self._stores is None:
            self._stores = open_stores(self.settings)
        return self._stores

    @property
    def dashboard_link(self) -> str | None:
        return self.client.dashboard_link

    def ingest(self, sources_: Iterable[str], recipe: Recipe | None = None, *,
               owner: str = "default", force: bool = False) -> "Batch":
        """Submit every file named by ``sources_``; unchanged, finished assets are not redone."""
        return self.submit(sources.expand(sources_, owner), recipe, force=force)

    def submit(self, requests: list[AssetRequest], recipe: Recipe | None = None, *,
               force: bool = False) -> "Batch":
        """Submit expanded requests (see ``cluster.storage.sources.expand``).

        Assets another live run holds are not started again: the batch waits for
        them to end (``cluster.claims``).
        """
        recipe = (recipe or DEFAULT_RECIPE).with_tools(tool_versions())
        self.catalog.ensure_recipe(recipe.id, recipe.name, recipe.canonical())
        claim = self.catalog.claim(requests, recipe.id, self.holder, self.claim_lease_s,
                                   lambda row, r: force or not unchanged(row, r, recipe))
        by_id = {r.asset_id: r for r in requests}
        batch = Batch(self, recipe, [r.asset_id for r in requests], {}, {}, {},
                      {asset_id: by_id[asset_id] for asset_id in claim.held})
        self.start(batch, [by_id[asset_id] for asset_id in claim.attempts], claim.attempts)
        log.info("submitted %d of %d assets (%d unchanged, %d held by other runs)",
                 len(claim.attempts), len(requests), len(claim.unwanted), len(claim.held))
        return batch

    def start(self, batch: "Batch", requests: list[AssetRequest],
              attempts: dict[str, int]) -> None:
        """Put the per-asset graphs of claimed ``requests`` on the cluster, into ``batch``."""
        key = uuid.uuid4().hex[:8]
        for request in requests:
            job = batch.jobs[request.asset_id] = Job(
                request.asset_id, attempts[request.asset_id], request.source_uri,
                batch.recipe, self.settings)
            batch.attempts[request.asset_id] = job.attempt
            batch.futures[request.asset_id] = submit_plan(
                self.client, plan_asset(request.asset_id, job.attempt, key,
                                        stages_for(batch.recipe)), job)

    def retry_alone(self, job: Job, deaths: int,
                    hold: Callable[[Future], None] = lambda future: None) -> dict:
        """Run an asset whose task was on workers that died once more, alone (see
        ``cluster.quarantine``); its summary, ``failed: quarantined`` if it killed again.
        ``hold`` sees the retry's future once it is submitted."""
        def submit() -> Future:
            future = resubmit(self.client, job)
            hold(future)
            return future

        result = self.isolation.run_alone(
            Suspect(job.asset_id, job.attempt, job.source_uri, deaths), submit)
        return result or {"asset_id": job.asset_id, "status": "failed", "reason": QUARANTINED}

    def backfill(self, manifest: str | Manifest, recipe: Recipe | None = None, *,
                 batch_size: int | None = None,
                 max_in_flight: int | None = None, job_id: str | None = None,
                 owner: str = "default", kind: str = "backfill",
                 progress: BulkProgress | None = None,
                 partition: Callable[..., dict[str, int]] = run_partition,
                 from_originals: bool = False, force: bool = False) -> dict:
        """Run a manifest as bulk partitions; returns the job's status from the catalog.

        Assets already ``ready`` or ``rejected`` with this recipe (with any recipe, for an
        index-only one) are skipped, unless the source says its bytes changed, so a
        re-run after a crash redoes only what is unfinished. ``partition`` runs one
        batch on a worker (``cluster.bulk.run_partition``: every stage);
        ``from_originals`` reads each asset's stored original instead of its source;
        ``force`` runs assets finished already too (a scrub's repairs). At most
        ``max_in_flight`` partitions (default: two per worker thread) are submitted
        at once, so the client and scheduler hold a bounded amount whatever the size.
        ``batch_size`` assets go in a partition; by default as many as gives every worker
        thread two partitions, at most ``cluster.bulk.DEFAULT_BATCH_SIZE``.
        """
        recipe = (recipe or DEFAULT_RECIPE).with_tools(tool_versions())
        self.catalog.ensure_recipe(recipe.id, recipe.name, recipe.canonical())
        job_id = job_id or str(uuid.uuid4())
        self.catalog.start_job(job_id, kind, recipe.id,
                               manifest if isinstance(manifest, str) else manifest.manifest)
        threads = max(1, sum(self.client.nthreads().values()))
        limit = max_in_flight or 2 * threads
        total: int | None = None
        counts: Counter = Counter()
        submitted = skipped = 0

        def report() -> None:
            if progress:
                progress(sum(counts.values()), total, counts)

        def settled(items: list[Item], outcome: dict[str, int]) -> None:
            counts.update(outcome)
            report()

        partitions = Partitions(
            lambda items: self.client.submit(partition, items, recipe, self.settings,
                                             priority=BULK_PRIORITY, pure=False),
            limit, self.isolation, self.catalog, settled)
        held: dict[str, AssetRequest] = {}  # by other runs (cluster.claims): awaited at the end

        def start(requests: list[AssetRequest], attempts: dict[str, int]) -> None:
            nonlocal submitted
            if not requests:
                return
            stored = self.catalog.assets(attempts) if from_originals else {}
            originals = self.stores["originals"]
            submitted += len(requests)
            partitions.add([Item(r.asset_id, originals.url_for(stored[r.asset_id]["sha256"])
                                 if from_originals else r.source_uri, attempts[r.asset_id])
                            for r in requests])

        try:
            opened = (manifest if isinstance(manifest, Manifest)
                      else Manifest(manifest, self.catalog, owner))
            total = opened.size
            report()
            for requests in opened.batches(batch_size or partition_size(total, threads)):
                claim = self.catalog.claim(requests, recipe.id, self.holder, self.claim_lease_s,
                                           lambda row, r: force or not finished(row, r, recipe),
                                           job_id)
                skipped += len(claim.unwanted)
                counts["skipped"] = skipped
                held.update((r.asset_id, r) for r in requests if r.asset_id in claim.held)
                start([r for r in requests if r.asset_id in claim.attempts], claim.attempts)
                if not claim.attempts:
                    report()
            partitions.finish()
            while held:
                ended = await_held(self.catalog, held, self.holder, self.claim_lease_s,
                                   recipe.id, start, job_id)
                settled([], Counter(ended.values()))
                partitions.finish()
        except BaseException:
            # A bad manifest or a lost cluster: the job must not look as if it still ran,
            # nor hold its unfinished assets from the run that finishes them.
            self.catalog.update_job(job_id, status="failed", submitted=submitted,
                                    skipped=skipped, counts=dict(counts))
            self.catalog.release_claims(self.holder, job_id)
            raise
        del counts["skipped"]
        self.catalog.update_job(job_id, status="finished", submitted=submitted, skipped=skipped,
                                counts=dict(counts))
        return self.catalog.job_status(job_id)

    def index(self, sources_: Sequence[str] | Manifest, *, owner: str = "default",
              **backfill_options) -> dict:
        """Scan, validate, hash, store and record every file named by ``sources_`` (as
        ``ingest`` takes them), rendering nothing, as bulk partitions (see ``backfill``).

        Each asset ends ``ready`` with no renditions, or ``rejected``/``failed`` with a
        reason; its blob carries what validation read (dimensions, camera, duration…).
        Files already finished under any recipe, with unchanged bytes, are not redone.
        """
        manifest = sources_ if isinstance(sources_, Manifest) else of_sources(sources_, owner)
        return self.backfill(manifest, INDEX_RECIPE, kind="index", **backfill_options)

    def reencode(self, recipe: Recipe, *, where: str = "", dry_run: bool = False,
                 sample: int = 0, **backfill_options) -> dict:
        """Make what ``recipe`` changes for the ready assets matching ``where``.

        ``where`` selects like a catalog manifest (``owner=alice,status=ready``).
        ``dry_run`` only counts, by media kind and rendition, what would be made;
        ``sample`` N first renders N image assets without keeping anything and
        reports size and quality distributions and an estimate of the whole run.
        """
        recipe = recipe.with_tools(tool_versions())
        planned = reencode.plan(self.catalog, where, recipe)
        report: dict = {"recipe_id": recipe.id, "plan": planned}
        if sample:
            picks = [(row["sha256"], validated)
                     for batch in reencode.candidates(self.catalog, where, recipe, sample)
                     for row, validated in batch if validated.kind == "image"][:sample]
            futures = [self.client.submit(reencode.render_sample, sha, validated, recipe,
                                          self.settings, pure=False) for sha, validated in picks]
            workers = sum(self.client.nthreads().values())
            report["sample"] = reencode.summarise_sample(self.client.gather(futures), planned,
                                                         workers)
        if dry_run:
            return report
        selector = ",".join(filter(None, ["catalog:status=ready", f"recipe_id!={recipe.id}",
                                          where]))
        report["job"] = self.backfill(selector, recipe, kind="reencode", from_originals=True,
                                      **backfill_options)
        return report

    def rescan(self, *, signatures: str | None = None, everything: bool = False,
               batch_size: int | None = None, max_in_flight: int | None = None,
               progress: BulkProgress | None = None) -> dict:
        """Scan the ready originals last found clean under older signatures than clamd's
        again, at bulk priority; those now detected end ``rejected: infected`` (renditions
        withdrawn, original in quarantine). Returns the report (``cluster.rescan``).

        ``signatures`` is the folder clamd loads, to derive a version where clamd gives
        none (a custom database); ``everything`` re-scans every ready asset.
        """
        current = rescans.current_version(ClamdScanner(self.settings.clamd_url), signatures,
                                          everything)
        return rescans.run(self.client, self.catalog, self.settings, current,
                           everything=everything, batch_size=batch_size,
                           max_in_flight=max_in_flight, progress=progress)

    def scrub(self, *, sample: float | None = None, limit: int | None = None,
              stores: Sequence[str] = SCRUBBED, orphan_grace_s: float = DEFAULT_GRACE_S,
              dry_run: bool = False, cleanup: Callable[[], dict[str, int]] | None = None,
              batch_size: int | None = None, max_in_flight: int | None = None,
              progress: BulkProgress | None = None) -> dict:
        """Hash the stored objects against their keys on the cluster, at bulk priority; make
        lost renditions again from their originals, mark assets whose original is lost,
        list and (after ``orphan_grace_s``) remove objects no row names, sweep what lost
        workers left in staging. Returns the run's report (``cluster.storage.scrub``),
        also recorded in ``scrub_runs``/``scrub_findings`` unless ``dry_run``.

        ``sample`` checks that fraction of the objects, each run going on where the last
        stopped; ``limit`` at most that many; ``cleanup`` (``mediafarm scrub`` passes the
        upload clean-up) runs too, and its counts join the report.
        """
        run = scrubbing.Scrub(self.catalog, self.stores, scrubbed=stores, sample=sample,
                              limit=limit, orphan_grace_s=orphan_grace_s, dry_run=dry_run,
                              run_id=str(uuid.uuid4()), worker=f"scrub:{self.holder}")

        def settle(batch: list, outcomes: list[dict] | Exception) -> None:
            run.settle(batch, outcomes)
            if progress:
                progress(run.counts["checked"] + run.unchecked, None, run.counts)

        try:
            bounded(self.client, scrubbing.check, run.batches(batch_size or DEFAULT_BATCH_SIZE),
                    self.settings, settle=settle, max_in_flight=max_in_flight)
            run.orphans()
            self._remake(run)
            return run.finish({} if dry_run else self._clean_up(run, cleanup, orphan_grace_s))
        except BaseException:
            with contextlib.suppress(Exception):  # the catalog may be what went away
                run.abandon()
            raise

    def _remake(self, run: scrubbing.Scrub) -> None:
        """Run the assets whose renditions a scrub lost again, from their originals, with
        their recipes: only the lost renditions are made (the rest are reused)."""
        remakes = run.remakes()
        for recipe_id in sorted({r.recipe_id for r in remakes}):
            group = [r for r in remakes if r.recipe_id == recipe_id]
            listed = [AssetRequest(r.asset_id, r.owner, r.source_uri, r.fingerprint)
                      for r in group]
            try:
                self.backfill(Manifest(f"scrub:{run.run_id}", None, listed=listed),
                              recipe_from_dict(group[0].recipe), kind="scrub",
                              from_originals=True, force=True)
            except Exception:  # noqa: BLE001 - its findings say repair_failed
                log.exception("a scrub's repairs with recipe %s failed", recipe_id)
        run.remade(self.catalog.assets([r.asset_id for r in remakes]))

    def _clean_up(self, run: scrubbing.Scrub, cleanup: Callable[[], dict[str, int]] | None,
                  staging_s: float) -> dict[str, int]:
        """The upload clean-up and the staging sweeps, counted; a failure is a finding."""
        cleaned: dict[str, int] = {}
        try:
            cleaned = {f"uploads_{k}": v for k, v in (cleanup() if cleanup else {}).items()}
        except Exception as exc:  # noqa: BLE001 - the next run tries again
            run.failed("buffer", f"the upload clean-up failed: {type(exc).__name__}: {exc}")
        for name in ("originals", "quarantine"):
            try:
                cleaned["staging_removed"] = (cleaned.get("staging_removed", 0)
                                              + self.stores[name].sweep_staging(staging_s))
            except Failed as exc:
                run.failed(name, f"sweeping its staging area failed: {exc.message}")
        return cleaned

    def export(self, url: str, storage_options: dict | None = None, **options) -> dict:
        """Write what changed in the catalog since the last export to ``url`` as Parquet.

        See ``catalog.export.export``; the cluster is not used.
        """
        from catalog.export import export

        return export(self.catalog, url, storage_options, **options)

    # The library (catalog.library): an owner's tags and collections; the cluster is not used.

    def tag(self, asset_ids: str | Iterable[str], *tags: str, owner: str = "default") -> int:
        """Tag the owner's assets; returns how many tags were new."""
        return library.add_tags(self.catalog.engine, owner, _ids(asset_ids), tags)

    def untag(self, asset_ids: str | Iterable[str], *tags: str, owner: str = "default") -> int:
        return library.remove_tags(self.catalog.engine, owner, _ids(asset_ids), tags)

    def collect(self, collection: str, asset_ids: str | Iterable[str], *,
                owner: str = "default") -> int:
        """Put the owner's assets in their collection (made if needed); returns how many
        were not in it yet."""
        return library.add_to_collection(self.catalog.engine, owner, collection,
                                         _ids(asset_ids))

    def search(self, *, owner: str = "default", **filters) -> catalog_search.Page:
        """A page of the owner's assets matching ``filters`` (``catalog.search.SearchFilters``:
        kind, status, tags, collection, text, date ranges, dimensions, ...); pass the page's
        ``next`` as ``after`` for the next one."""
        query = catalog_search.SearchQuery(owner=owner, **filters)
        return catalog_search.search(self.catalog.engine, query)

    def near_duplicates(self, owner: str = "default", threshold: int | None = None, *,
                        search: bool = True) -> list[dict]:
        """``owner``'s near-duplicate groups (pHashes at most ``threshold`` bits apart),
        after searching that owner's ready assets again unless ``search`` is False.

        See ``catalog.near_duplicates``; the cluster is not used.
        """
        from catalog import near_duplicates

        if search:
            near_duplicates.find(self.catalog, owner,
                                 near_duplicates.DEFAULT_THRESHOLD if threshold is None else threshold)
        return near_duplicates.groups(self.catalog, owner)

    def results(self, asset_ids: list[str]) -> list[dict]:
        return with_locations(self.catalog, self.stores["renditions"], asset_ids)

    def close(self) -> None:
        self._lease.stop()
        if self._owns_client:
            self.client.close()
        if self._cluster is not None:
            try:
                self._cluster.close()
            except TimeoutError:
                # A worker its nanny is still restarting (after a crash) can outlast Dask's
                # close; the nanny kills it. The work is done, so this is no error.
                log.warning("the local Dask cluster did not close in time; its nannies kill "
                            "what is left")

    def __enter__(self) -> "Farm":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class SchedulerUnreachable(RuntimeError):
    """No Dask scheduler answered at the address within ``Settings.scheduler_timeout_s``."""


def _join(address: str, settings: Settings) -> Client:
    timeout = settings.scheduler_timeout_s
    try:
        return Client(address, timeout=timeout)
    except OSError as exc:  # refused, unresolvable, or timed out
        raise SchedulerUnreachable(
            f"no Dask scheduler answered at {address} within {timeout:g} s "
            "(MEDIAFARM_SCHEDULER_TIMEOUT_S); start it, or fix --scheduler or "
            "DASK_SCHEDULER_ADDRESS") from exc


def with_locations(catalog: Catalog, renditions: Store, asset_ids: list[str]) -> list[dict]:
    """The assets' summaries (``Catalog.results``), each rendition with its store ``url``."""
    summaries = catalog.results(asset_ids)
    for summary in summaries:
        for rendition in summary["renditions"]:
            playlist = rendition.pop("playlist")
            rendition["url"] = (renditions.url_at(playlist) if playlist
                                else renditions.url_for(rendition["sha256"]))
    return summaries


def _ids(asset_ids: str | Iterable[str]) -> list[str]:
    return [asset_ids] if isinstance(asset_ids, str) else list(asset_ids)
