"""The scrub with the stores: hash each stored object against its key, act on what is wrong.

``check`` runs on a worker, a partition of objects at a time, each read in blocks. The
client's ``Scrub`` hears each partition's outcomes and acts (the catalog side, which
objects and who they concern, is ``catalog.scrubs``):

- a rendition missing or corrupt: the corrupt object is deleted (a put is put-if-absent,
  so it must go before the same bytes can be stored again) and the rendition rows naming
  it, so running one ready asset per (original, recipe) again makes it anew
  (``remakes``; the farm runs them) and the catalog ends naming the new object, whatever
  its digest; found ``repaired`` once the rows are back, else ``repair_failed``;
- an original missing or corrupt: reported, and each of its assets marked with a failed
  ``scrub`` stage row (``original_missing``/``original_corrupt``). Its status stays: the
  renditions are whole and still served, and nothing can make the original again; a
  later scrub that finds it whole (restored from a backup) turns the mark ``ok``. An
  original a re-scan moved to the quarantine store is where it should be;
- an object whose blob row no asset or rendition names any more is GC's: reported when
  lost, never mended, marked for GC (``catalog.gc``) and walked past until it goes; so is
  the blob of a rendition made again with other bytes;
- an object no row names (an orphan): listed with when first seen; removed by a later
  run once seen longer ago than the grace period and still unnamed;
- a partition that could not be checked (a store outage past its retry budget):
  ``check_failed``, and a sampled run's cursor does not move, so the next run does it.

A dry run hashes and lists, and changes nothing: no object, row, mark or sighting.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import timedelta

from catalog import scrubs
from catalog.repository import Catalog, utcnow
from catalog.scrubs import Finding, Remake, Target, Uses, Window
from cluster.config import Settings
from cluster.storage.stores import Store, open_stores, store_named
from pipelines.outcome import Failed

SCRUBBED = ("originals", "renditions")


def check(batch: list[Target], settings: Settings) -> list[dict]:
    """On a worker: each object hashed against its key, ``ok``, ``missing`` or ``corrupt``.
    A store that stays down raises (``Failed``): the partition is checked by the next run."""
    stores = open_stores(settings)
    outcomes = []
    for target in batch:
        actual = store_named(stores, target.store).hash(target.sha256)
        outcome = "ok" if actual == target.sha256 else "missing" if actual is None else "corrupt"
        if outcome == "missing" and target.original and "quarantine" in stores \
                and stores["quarantine"].exists(target.sha256):
            outcome = "quarantined"  # a re-scan found it infected and moved it: as it should be
        outcomes.append({"target": target, "outcome": outcome, "actual": actual})
    return outcomes


def shards(window: Window) -> list[str]:
    """The ``sha256/<shard>/`` listings the window touches, from its start."""
    spans = ([(window.start, scrubs.POSITIONS), (0, window.start)] if window.end is None
             else [(window.start, window.end)] if window.start < window.end
             else [(window.start, scrubs.POSITIONS), (0, window.end)])
    first, width = window.start >> 56, 1 << 56
    touched = [(first + i) % 256 for i in range(256)]
    return [f"{s:02x}" for s in touched
            if any(lo < (s + 1) * width and s * width < hi for lo, hi in spans)]


class Scrub:
    """One run on the client: what it found and did, and the record it leaves."""

    def __init__(self, catalog: Catalog, stores: Mapping[str, Store], *,
                 scrubbed: Sequence[str] = SCRUBBED, sample: float | None = None,
                 limit: int | None = None, orphan_grace_s: float = 86400.0,
                 dry_run: bool = False, run_id: str, worker: str = "client") -> None:
        unknown = set(scrubbed) - set(SCRUBBED)
        if unknown:
            raise ValueError(f"the scrub checks the stores {SCRUBBED}, not {sorted(unknown)}")
        self.catalog, self.engine, self.stores = catalog, catalog.engine, stores
        self.scrubbed, self.limit, self.dry_run = tuple(scrubbed), limit, dry_run
        self.grace_s, self.run_id, self.worker = orphan_grace_s, run_id, worker
        self.started = utcnow()
        self.window = Window.sample(sample, scrubs.last_cursor(self.engine)
                                    if sample or limit else None)
        self.options = {"stores": list(self.scrubbed), "sample": sample, "limit": limit,
                        "orphan_grace_s": orphan_grace_s, "dry_run": dry_run,
                        "window": self.window.as_dict()}
        self.counts: Counter = Counter()
        self.findings: list[Finding] = []
        self.walked, self.last = 0, None  # objects walked, and the last one's digest
        self.unchecked = 0  # objects of partitions that failed
        self._repairs: list[tuple[Finding, Uses]] = []
        self._bad_originals: set[str] = set()
        if not dry_run:
            scrubs.start_run(self.engine, run_id, self.options, self.started)

    def batches(self, batch_size: int):
        """The objects to check, in walk order; the last one walked is where a run cut
        short by its limit stops."""
        for batch in scrubs.targets(self.engine, self.window, self.scrubbed, batch_size,
                                    self.limit):
            self.walked += len(batch)
            self.last = batch[-1].sha256
            yield batch

    def covered(self) -> Window:
        """The part of the window this run walks: up to just past the last object, where
        its limit cut it short."""
        if self.limit is None or self.walked < self.limit or self.last is None:
            return self.window
        return Window(self.window.start, (int(self.last[:16], 16) + 1) % scrubs.POSITIONS)

    # -- hearing the checks -------------------------------------------------------------------

    def settle(self, batch: list[Target], outcomes: list[dict] | BaseException) -> None:
        """One partition's outcomes (or why it could not be checked), acted on at once."""
        if isinstance(outcomes, BaseException):
            self.unchecked += len(batch)
            self.failed(",".join(sorted({t.store for t in batch})),
                        f"{len(batch)} objects from {batch[0].sha256[:12]} to "
                        f"{batch[-1].sha256[:12]} were not checked: "
                        f"{type(outcomes).__name__}: {outcomes}; the next run checks them")
            return
        whole = []
        for found in outcomes:
            target, outcome = found["target"], found["outcome"]
            self.counts["checked"] += 1
            if outcome in ("ok", "quarantined"):
                self.counts[outcome] += 1
                whole += [target.sha256] if outcome == "ok" and target.original else []
            elif target.original:
                self._bad_original(target, outcome, found["actual"])
            else:
                self._bad_rendition(target, outcome, found["actual"])
        if not self.dry_run:
            scrubs.clear_marks(self.engine, whole, utcnow())

    def _bad_original(self, target: Target, outcome: str, actual: str | None) -> None:
        self._bad_originals.add(target.sha256)
        assets = scrubs.original_assets(self.engine, target.sha256)
        reason = f"original_{outcome}"
        message = (f"its original {target.sha256} is {_what(outcome, actual)} in the "
                   f"{target.store} store; its renditions are kept and served, and nothing can "
                   "make it again: restore it from a backup (or delete the asset)" if assets
                   else f"the original {target.sha256} is {_what(outcome, actual)} in the "
                   f"{target.store} store; no asset has it now")
        finding = Finding(target.store, target.sha256, self._key(target), reason,
                          "marked" if assets and not self.dry_run else "none", message,
                          [a for a, _ in assets])
        if not self.dry_run:
            scrubs.mark(self.catalog, assets, reason, message, utcnow(), self.worker)
        if not assets:
            self._retire(finding)
        self._found(finding)

    def _bad_rendition(self, target: Target, outcome: str, actual: str | None) -> None:
        uses = scrubs.rendition_uses(self.engine, target.sha256)
        finding = Finding(target.store, target.sha256, self._key(target), f"rendition_{outcome}",
                          "none", f"the rendition {target.sha256} is {_what(outcome, actual)}",
                          uses.assets)
        self._repairs.append((finding, uses))
        self._found(finding)

    def _retire(self, finding: Finding) -> None:
        """A lost object's blob that nothing references goes to GC (marked, unless dry)."""
        if not self.dry_run and scrubs.retire(self.engine, [finding.sha256], utcnow()):
            finding.message += "; its blob row, which nothing references, is left to GC"

    def _key(self, target: Target) -> str:
        return store_named(self.stores, target.store).url_for(target.sha256)

    def _found(self, finding: Finding) -> None:
        self.counts[finding.kind] += 1
        self.findings.append(finding)

    # -- repairs ------------------------------------------------------------------------------

    def remakes(self) -> list[Remake]:
        """Clear the way for the lost renditions (corrupt objects and their rows go) and
        say which assets to run again; in a dry run, only say what would be done."""
        wanted: dict[str, Remake] = {}
        for finding, uses in self._repairs:
            if not uses.remakes:
                finding.message += "; no ready asset shows it, so it is not made again"
                self._retire(finding)
            elif self.dry_run:
                finding.message += "; a run would make it again from its original"
            else:
                try:
                    blocked = self._clear(finding, uses)
                except Failed as exc:
                    blocked = f"a store failed: {exc.message}"
                if blocked:
                    finding.action = "repair_failed"
                    finding.message += f"; not made again: {blocked}"
                    self.counts["repair_failed"] += 1
                else:
                    wanted.update((r.asset_id, r) for r in uses.remakes)
        return list(wanted.values())

    def _clear(self, finding: Finding, uses: Uses) -> str | None:
        """Delete a corrupt object and the rows naming it; why not, if it must stay."""
        originals = store_named(self.stores, "originals")
        lost = sorted({r.sha256 for r in uses.remakes
                       if r.sha256 in self._bad_originals or not originals.exists(r.sha256)})
        if lost:
            return f"its original {lost[0]} is missing or corrupt too"
        store = store_named(self.stores, finding.store)
        if store.hash(finding.sha256) not in (None, finding.sha256):
            store.delete(finding.sha256)
        scrubs.drop_renditions(self.engine, finding.sha256)
        return None

    def remade(self, statuses: Mapping[str, dict]) -> None:
        """After the assets ran again (``statuses``: each one's catalog row): which lost
        renditions are back, under which digest."""
        for finding, uses in self._repairs:
            if self.dry_run or finding.action != "none" or not uses.remakes:
                continue
            # Under the recipe its asset now has: the same, unless the tools changed since.
            now_by_pair = {(r.sha256, r.recipe_id): statuses.get(r.asset_id, {}).get(
                "recipe_id") or r.recipe_id for r in uses.remakes}
            rows = [(source, now_by_pair[source, recipe], preset)
                    for source, recipe, preset in uses.rows if (source, recipe) in now_by_pair]
            back = scrubs.remade(self.engine, rows)
            if len(back) == len(rows):
                finding.action = "repaired"
                now = sorted(set(back.values()))
                finding.message += (f"; made again from its original, now {', '.join(now)}"
                                    if now != [finding.sha256] else
                                    "; made again from its original, the same bytes")
                self.counts["repaired"] += 1
                if finding.sha256 not in now:  # new bytes: the old blob row names nothing
                    self._retire(finding)
            else:
                finding.action = "repair_failed"
                ended = [f"{a} {s.get('status')}: {s.get('message')}"
                         for a, s in statuses.items() if a in {r.asset_id for r in uses.remakes}
                         and s.get("status") != "ready"]
                finding.message += ("; running its asset again did not make it"
                                    + (f" ({'; '.join(ended)})" if ended else ""))
                self.counts["repair_failed"] += 1

    # -- orphans ------------------------------------------------------------------------------

    def orphans(self) -> None:
        """List each scrubbed store's objects in the window that no row names; remove those
        a run before this one saw, longer ago than the grace period."""
        cutoff = utcnow() - timedelta(seconds=self.grace_s)
        window = self.covered()
        for name in self.scrubbed:
            store, found = store_named(self.stores, name), []
            try:
                for shard in shards(window):
                    digests = [d for d in store.shard_digests(shard) if window.holds(d)]
                    rowless = sorted(set(digests) - scrubs.named(self.engine, digests))
                    if rowless:
                        found += rowless
                        self._orphans(name, store, rowless, cutoff)
            except Failed as exc:  # the store is down: its sightings stay for the next run
                self.failed(name, f"listing the {name} store for orphans failed: {exc.message}")
                continue
            if not self.dry_run:
                scrubs.forget(self.engine, name, window, found)

    def _orphans(self, name: str, store: Store, digests: list[str], cutoff) -> None:
        now = utcnow()
        seen = scrubs.sight(self.engine, name, digests, now, self.dry_run)
        for digest in digests:
            first = seen.get(digest, now)
            removed = (digest in seen and not self.dry_run and scrubs.remove_orphan(
                self.engine, name, digest, cutoff, lambda d=digest: store.delete(d)))
            self.counts["orphans_removed" if removed else "orphans_listed"] += 1
            self._found(Finding(name, digest, store.url_for(digest), "orphan",
                                "removed" if removed else "none" if self.dry_run else "listed",
                                f"no catalog row names it; first seen {first:%Y-%m-%d %H:%M:%S}"
                                + ("" if removed else
                                   f", removed by a run after {self.grace_s:g} s")))

    # -- the record ---------------------------------------------------------------------------

    def failed(self, store: str, message: str) -> None:
        """A part of the run that could not be done (the next run does it)."""
        self._found(Finding(store, None, None, "check_failed", "none", message))

    def abandon(self) -> None:
        """The run was cut off (the cluster lost, an interrupt): say so in its record."""
        if not self.dry_run:
            scrubs.finish_run(self.engine, self.run_id, "failed", dict(self.counts), None,
                              self.findings, utcnow())

    def finish(self, cleaned: Mapping[str, int]) -> dict:
        """Record the run (unless dry) and return its report."""
        self.counts.update({k: v for k, v in cleaned.items() if v})
        failed = self.counts["check_failed"] > 0
        if self.unchecked:
            self.counts["unchecked"] = self.unchecked
        cursor = None
        if (self.options["sample"] or self.limit) and not failed:
            covered = self.covered().as_dict()
            cursor = covered["end"] or covered["start"]
        finished = utcnow()
        if not self.dry_run:
            scrubs.finish_run(self.engine, self.run_id, "finished", dict(self.counts), cursor,
                              self.findings, finished)
        return {"run_id": None if self.dry_run else self.run_id, "dry_run": self.dry_run,
                "started_at": self.started.isoformat(), "finished_at": finished.isoformat(),
                "options": self.options, "cursor": cursor, "counts": dict(self.counts),
                "findings": [vars(f) | {"needs_person": f.needs_person} for f in self.findings]}


def _what(outcome: str, actual: str | None) -> str:
    return "missing" if outcome == "missing" else f"corrupt: its bytes hash to {actual}"
