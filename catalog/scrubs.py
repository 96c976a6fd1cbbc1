"""The scrub's catalog side: which stored objects a run checks, who they concern, orphans'
sightings, and the run's record (``scrub_runs``, ``scrub_findings``, a Parquet file).

The stores' side (``cluster.storage.scrub``) hashes the objects and deletes what goes.

A run covers all objects or a **window** of the digest space: a sampled run of fraction
``f`` takes the slice ``[cursor, cursor + f)`` of 16-hex-digit positions, wrapping, where
``cursor`` is where the last sampled run stopped; digests are uniform, so each run checks
about ``f`` of the objects and ``1/f`` runs check them all. ``limit`` stops a run after so
many objects, and the cursor then stops just past the last one checked.

Orphans (objects no blob or rendition row names) are removed like GC's sweep: a first run
records a sighting; a later one deletes the sighting, if older than the grace period, in
the transaction that checks again that no row names the digest and removes the object.
Every write that records a digest deletes its sighting first (``catalog.gc.pin``), so an
ingest that stored the bytes before its row wins.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import fsspec
from sqlalchemy import Engine, and_, delete, exists, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from catalog import gc
from catalog.models import (Asset, Blob, GcMark, Recipe, Rendition, ScrubFinding,
                            ScrubRun, ScrubSighting, StageRun)
from catalog.repository import Catalog
from catalog.records import StageRecord

STAGE = "scrub"
POSITIONS = 16 ** 16  # a position in the digest space: a digest's first 16 hex digits
# Findings that need a person (and make the command exit 1).
NEEDS_PERSON = frozenset({"original_missing", "original_corrupt", "check_failed"})


@dataclass(frozen=True)
class Window:
    """Positions ``[start, end)`` of the digest space, wrapping past the end; all if ``end`` is None."""

    start: int = 0
    end: int | None = None

    @classmethod
    def sample(cls, fraction: float | None, cursor: str | None) -> Window:
        start = int(cursor, 16) if cursor else 0
        if fraction is None or fraction >= 1:
            return cls(start)
        if not 0 < fraction:
            raise ValueError(f"a sample is a fraction above 0, not {fraction}")
        return cls(start, (start + math.ceil(fraction * POSITIONS)) % POSITIONS)

    def ranges(self) -> list[tuple[str, str | None]]:
        """The window as digest bounds, ``lower <= digest < upper`` (None: no bound), in walk order."""
        start = f"{self.start:016x}"
        if self.end is None:
            return [(start, None), ("", start)] if self.start else [("", None)]
        end = f"{self.end:016x}"
        return [(start, end)] if self.start < self.end else [(start, None), ("", end)]

    def holds(self, digest: str) -> bool:
        return any(lo <= digest and (hi is None or digest < hi) for lo, hi in self.ranges())

    def as_dict(self) -> dict:
        return {"start": f"{self.start:016x}",
                "end": None if self.end is None else f"{self.end:016x}"}


@dataclass(frozen=True)
class Target:
    """A stored object a catalog row names: in which store, and whether it is an original."""

    store: str
    sha256: str
    original: bool


def targets(engine: Engine, window: Window, stores: Sequence[str], batch_size: int = 500,
            limit: int | None = None) -> Iterator[list[Target]]:
    """The blobs recorded in ``stores`` whose digests fall in the window, bar those GC has
    marked, in batches, in walk order (the primary key's); at most ``limit``. Who an
    object concerns is looked up only for those found wrong (``original_assets``,
    ``rendition_uses``)."""
    left = limit
    for lower, upper in window.ranges():
        after = None
        while left is None or left > 0:
            size = batch_size if left is None else min(batch_size, left)
            rows = _page(engine, stores, lower, upper, after, size)
            if not rows:
                break
            after = rows[-1].sha256
            if left is not None:
                left -= len(rows)
            yield [Target(r.store, r.sha256, r.store == "originals") for r in rows]
            if len(rows) < size:
                break


def _page(engine: Engine, stores: Sequence[str], lower: str, upper: str | None,
          after: str | None, size: int) -> list:
    query = (select(Blob.sha256, Blob.store)
             .where(Blob.store.in_(list(stores)), Blob.sha256 >= lower,
                    ~exists().where(GcMark.sha256 == Blob.sha256))  # GC's, about to go
             .order_by(Blob.sha256).limit(size))
    if upper is not None:
        query = query.where(Blob.sha256 < upper)
    if after is not None:
        query = query.where(Blob.sha256 > after)
    with engine.connect() as conn:
        return list(conn.execute(query))


# -- who a finding concerns ---------------------------------------------------------------------

def original_assets(engine: Engine, digest: str) -> list[tuple[str, int]]:
    """(id, current attempt) of the undeleted assets whose original ``digest`` is."""
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            select(Asset.id, Asset.attempt).where(Asset.sha256 == digest,
                                                  Asset.deleted_at.is_(None))
            .order_by(Asset.id))]


@dataclass(frozen=True)
class Remake:
    """One ready asset to run again with its recipe, which makes a lost rendition anew for
    every asset with the same original and recipe."""

    asset_id: str
    owner: str
    source_uri: str
    fingerprint: str | None  # kept, so that taking the source in again sees it unchanged
    sha256: str
    recipe_id: str
    recipe: dict


@dataclass
class Uses:
    """Who a rendition object concerns: its rows' (source, recipe, preset), the ready assets
    that show it, and one asset per (source, recipe) to make it again."""

    rows: list[tuple[str, str, str]] = field(default_factory=list)
    assets: list[str] = field(default_factory=list)
    remakes: list[Remake] = field(default_factory=list)


def rendition_uses(engine: Engine, digest: str) -> Uses:
    uses = Uses()
    with engine.connect() as conn:
        uses.rows = [tuple(r) for r in conn.execute(
            select(Rendition.source_sha256, Rendition.recipe_id, Rendition.preset)
            .where(Rendition.output_sha256 == digest).order_by(Rendition.source_sha256))]
        for source, recipe_id in sorted({(s, r) for s, r, _ in uses.rows}):
            assets = conn.execute(
                select(Asset.id, Asset.owner, Asset.source_uri, Asset.source_fingerprint,
                       Recipe.definition)
                .join(Recipe, Recipe.id == Asset.recipe_id)
                .where(Asset.sha256 == source, Asset.recipe_id == recipe_id,
                       Asset.status == "ready", Asset.deleted_at.is_(None))
                .order_by(Asset.id)).all()
            uses.assets += [a.id for a in assets]
            if assets:
                first = assets[0]
                uses.remakes.append(Remake(first.id, first.owner, first.source_uri,
                                           first.source_fingerprint, source, recipe_id,
                                           first.definition))
    return uses


def retire(engine: Engine, digests: Sequence[str], now: datetime) -> list[str]:
    """Hand the blobs of these lost objects that nothing references to GC (``catalog.gc``:
    marked now, swept by a GC run after its grace period); the scrub walks past them."""
    unwanted = gc.unreferenced(engine, digests)
    gc.mark(engine, unwanted, now)
    return unwanted


def drop_renditions(engine: Engine, digest: str) -> int:
    """Delete the rendition rows whose output is ``digest``, so the next run of their assets
    makes them again rather than reusing them (``Catalog.renditions_by_preset``)."""
    with engine.begin() as conn:
        return conn.execute(delete(Rendition.__table__)
                            .where(Rendition.output_sha256 == digest)).rowcount


def remade(engine: Engine, rows: Iterable[tuple[str, str, str]]) -> dict[tuple, str]:
    """Which of these (source, recipe, preset) renditions are recorded again, and their outputs."""
    wanted = [tuple(row) for row in rows]
    if not wanted:
        return {}
    with engine.connect() as conn:
        found = {(s, r, p): out for s, r, p, out in conn.execute(
            select(Rendition.source_sha256, Rendition.recipe_id, Rendition.preset,
                   Rendition.output_sha256).where(
                or_(*(and_(Rendition.source_sha256 == s, Rendition.recipe_id == r,
                           Rendition.preset == p) for s, r, p in wanted))))}
    return {row: found[row] for row in wanted if row in found}


# -- marks on assets ----------------------------------------------------------------------------

def mark(catalog: Catalog, assets: Sequence[tuple[str, int]], reason: str, message: str,
         now: datetime, worker: str) -> None:
    """A failed ``scrub`` stage row on each asset's current attempt; its status stays as it was."""
    catalog.write_batch([], [StageRecord(asset_id, STAGE, attempt, "failed", now, now, worker,
                                         reason, None, message)
                             for asset_id, attempt in assets], [], [])


def marks(engine: Engine, asset_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
    """(reason, message) of each asset's failed ``scrub`` row on its current attempt."""
    with engine.connect() as conn:
        return {r.asset_id: (r.reason, r.error_message) for r in conn.execute(
            select(StageRun.asset_id, StageRun.reason, StageRun.error_message)
            .join(Asset, and_(Asset.id == StageRun.asset_id, Asset.attempt == StageRun.attempt))
            .where(StageRun.stage == STAGE, StageRun.status == "failed",
                   StageRun.asset_id.in_(list(asset_ids))))}


def clear_marks(engine: Engine, digests: Sequence[str], now: datetime) -> int:
    """Originals found whole again: their assets' failed ``scrub`` rows become ``ok``."""
    if not digests:
        return 0
    with engine.begin() as conn:
        return conn.execute(update(StageRun.__table__).where(
            StageRun.stage == STAGE, StageRun.status == "failed",
            StageRun.asset_id.in_(select(Asset.id).where(Asset.sha256.in_(list(digests)))))
            .values(status="ok", reason=None, finished_at=now,
                    error_message="a later scrub found the original whole")).rowcount


# -- orphans ------------------------------------------------------------------------------------

def named(engine: Engine, digests: Iterable[str]) -> set[str]:
    """Which of these digests a row names: a blob row, which every rendition's output has
    too (``renditions.output_sha256`` is a foreign key to ``blobs``)."""
    wanted, found = sorted(set(digests)), set()
    with engine.connect() as conn:
        for start in range(0, len(wanted), 500):
            found.update(conn.execute(select(Blob.sha256).where(
                Blob.sha256.in_(wanted[start:start + 500]))).scalars())
    return found


def sight(engine: Engine, store: str, digests: Sequence[str], now: datetime,
          dry_run: bool = False) -> dict[str, datetime]:
    """When an earlier run first saw each of these orphans; those new to it are recorded
    as seen ``now`` (unless dry) and left out."""
    with engine.begin() as conn:
        seen = dict(conn.execute(select(ScrubSighting.sha256, ScrubSighting.first_seen_at).where(
            ScrubSighting.store == store, ScrubSighting.sha256.in_(list(digests)))).all())
        new = [d for d in digests if d not in seen]
        if new and not dry_run:  # a run beside this one may record them too: the first stays
            dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
            conn.execute(dialect.insert(ScrubSighting.__table__).on_conflict_do_nothing(),
                         [{"store": store, "sha256": d, "first_seen_at": now} for d in new])
    return seen


def forget(engine: Engine, store: str, window: Window, orphans: Iterable[str]) -> int:
    """Drop the store's sightings in the window that are not orphans any more (gone, or named)."""
    keep = set(orphans)
    with engine.begin() as conn:
        stale = [d for d in conn.execute(select(ScrubSighting.sha256)
                                         .where(ScrubSighting.store == store)).scalars()
                 if window.holds(d) and d not in keep]
        for start in range(0, len(stale), 500):
            conn.execute(delete(ScrubSighting.__table__).where(
                ScrubSighting.store == store, ScrubSighting.sha256.in_(stale[start:start + 500])))
    return len(stale)


def remove_orphan(engine: Engine, store: str, digest: str, cutoff: datetime,
                  remove: Callable[[], object]) -> bool:
    """Remove an orphan seen before ``cutoff`` and still named by no row: its sighting is
    taken (the lock an ingest's pin waits on), the rows checked again, then ``remove()``."""
    with engine.begin() as conn:
        taken = conn.execute(delete(ScrubSighting.__table__).where(
            ScrubSighting.store == store, ScrubSighting.sha256 == digest,
            ScrubSighting.first_seen_at <= cutoff)).rowcount
        if not taken or conn.execute(select(exists().where(Blob.sha256 == digest))).scalar():
            return False
        remove()
    return True


# -- the record ---------------------------------------------------------------------------------

@dataclass
class Finding:
    """Something wrong with one object (or one partition's check), and what the run did."""

    store: str
    sha256: str | None
    key: str | None
    kind: str       # rendition_missing, rendition_corrupt, original_missing, original_corrupt,
                    # orphan, check_failed
    action: str     # repaired, repair_failed, marked, listed, removed, none (a dry run)
    message: str
    assets: list[str] = field(default_factory=list)

    @property
    def needs_person(self) -> bool:
        """A lost original some asset has, a failed repair, a part not checked."""
        return (self.kind in NEEDS_PERSON and (bool(self.assets) or self.kind == "check_failed")
                or self.action == "repair_failed")


def last_cursor(engine: Engine) -> str | None:
    """Where the last finished sampled run stopped."""
    with engine.connect() as conn:
        return conn.execute(select(ScrubRun.cursor).where(
            ScrubRun.status == "finished", ScrubRun.cursor.is_not(None))
            .order_by(ScrubRun.started_at.desc()).limit(1)).scalar()


def start_run(engine: Engine, run_id: str, options: dict, now: datetime) -> None:
    with engine.begin() as conn:
        conn.execute(ScrubRun.__table__.insert().values(
            id=run_id, started_at=now, status="running", options=options))


def finish_run(engine: Engine, run_id: str, status: str, counts: dict, cursor: str | None,
               findings: Sequence[Finding], now: datetime) -> None:
    """The run's outcome and its findings, a row per asset concerned, in one transaction."""
    rows = [{"run_id": run_id, "store": f.store, "sha256": f.sha256, "key": f.key,
             "kind": f.kind, "action": f.action, "asset_id": asset_id, "message": f.message,
             "found_at": now} for f in findings for asset_id in (f.assets or [None])]
    with engine.begin() as conn:
        conn.execute(update(ScrubRun.__table__).where(ScrubRun.id == run_id).values(
            finished_at=now, status=status, counts=counts, cursor=cursor))
        if rows:
            conn.execute(ScrubFinding.__table__.insert(), rows)


def findings(engine: Engine, run_id: str) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(
            select(ScrubFinding.__table__).where(ScrubFinding.run_id == run_id)
            .order_by(ScrubFinding.id))]


PARQUET_COLUMNS = ("run_id", "store", "sha256", "key", "kind", "action", "asset_ids", "message")


def write_parquet(run_id: str, found: Sequence[dict], url: str,
                  storage_options: dict | None = None) -> int:
    """A run's findings (as its report lists them) as one Parquet file at ``url``, any
    fsspec URL, a row per finding; how many rows."""
    import pyarrow as pa  # here: `mediafarm show` reads marks from this module
    import pyarrow.parquet as pq

    schema = pa.schema([(name, pa.list_(pa.string()) if name == "asset_ids" else pa.string())
                        for name in PARQUET_COLUMNS])
    table = pa.Table.from_pylist([{"run_id": run_id, "asset_ids": list(f["assets"]),
                                   **{n: f[n] for n in PARQUET_COLUMNS[1:] if n != "asset_ids"}}
                                  for f in found], schema=schema)
    with fsspec.open(url, "wb", **(storage_options or {})) as handle:
        pq.write_table(table, handle)
    return table.num_rows
