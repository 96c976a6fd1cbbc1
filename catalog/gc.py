"""Garbage collection of blobs no asset references: reference counting in the catalog.

A blob's referrers are the assets whose original it is (``assets.sha256``, any version's
``asset_versions.blob_sha256``) and, for a rendition's output, the renditions of a source
still kept. Deleted assets stop being referrers once ``purge_deleted`` has removed their
rows (after the grace period, so a delete can still be undone until then).

Two phases, so a GC never deletes bytes an ingest is taking up again:

1. ``mark`` records each original blob with no referrer in ``gc_marks``, with the time.
2. ``sweep`` takes one mark older than the grace period and, in one transaction, deletes
   the mark (its lock: on PostgreSQL a concurrent delete of the same row waits; SQLite
   serialises writers), locks the blob's row (``SELECT ... FOR UPDATE``), checks again that
   nothing references it, deletes the objects (a callback: the catalog does no store IO)
   and then the rows: the blob, its renditions, their outputs nothing else uses, their
   perceptual hashes.

Every write that records or references a blob deletes its mark first (``pin``): the
ingest pins a digest before it stores the object, ``put_blob`` and ``record_ready`` pin
what they write. A pin that comes first makes the sweep skip the blob; one that comes
while the sweep holds the mark waits for it, and the object the ingest then stores is
written anew (stores are put-if-absent, and it is absent). What the grace period must
cover is an ingest pinned before a later ``mark``: the longest ingest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Engine, delete, exists, select, union
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from catalog.models import (Asset, AssetTag, AssetVersion, Blob, CollectionItem, GcMark,
                            NearDuplicateMember, PerceptualHash, Rendition, ScrubFinding,
                            ScrubSighting, StageRun)

# What a sweep hands the store side to delete: (store name, digest) objects and
# (store name, folder) prefixes of HLS/DASH packages.
Objects = list[tuple[str, str]]
Remove = Callable[[Objects, Objects], None]


@dataclass
class Swept:
    """What one GC run did (or, dry, would do)."""

    assets_purged: int = 0
    marked: int = 0
    blobs: int = 0
    renditions: int = 0
    objects: int = 0
    packages: int = 0
    kept: list[str] = field(default_factory=list)  # marks a re-check found referenced again

    def as_dict(self) -> dict:
        return {"assets_purged": self.assets_purged, "marked": self.marked, "blobs": self.blobs,
                "renditions": self.renditions, "objects": self.objects,
                "packages": self.packages, "kept": len(self.kept)}


def pin(conn: Connection, digests: Iterable[str]) -> None:
    """Take these blobs out of any GC run and any scrub's orphan removal: delete their marks
    and sightings (``catalog.scrubs``; waits for a sweep or removal holding one)."""
    wanted = sorted(set(digests))
    for start in range(0, len(wanted), 500):
        for table in (GcMark, ScrubSighting):
            conn.execute(delete(table.__table__).where(table.sha256.in_(wanted[start:start + 500])))


def purge_assets(conn: Connection, asset_ids: Sequence[str]) -> dict[str, int]:
    """Delete these assets' rows and every row that hangs off them; counts by table."""
    counts: dict[str, int] = {}
    ids = list(asset_ids)
    for table, column in ((StageRun, StageRun.asset_id), (AssetVersion, AssetVersion.asset_id),
                          (AssetTag, AssetTag.asset_id), (CollectionItem, CollectionItem.asset_id),
                          (NearDuplicateMember, NearDuplicateMember.asset_id),
                          (ScrubFinding, ScrubFinding.asset_id), (Asset, Asset.id)):
        done = 0
        for start in range(0, len(ids), 500):
            done += conn.execute(delete(table.__table__)
                                 .where(column.in_(ids[start:start + 500]))).rowcount
        counts[table.__tablename__] = done
    return counts


def deleted_assets(engine: Engine, cutoff: datetime) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(select(Asset.id).where(Asset.deleted_at.is_not(None),
                                                        Asset.deleted_at <= cutoff)).scalars())


def purge_deleted(engine: Engine, cutoff: datetime) -> int:
    """Remove the rows of assets deleted before ``cutoff``; their blobs become unreferenced."""
    ids = deleted_assets(engine, cutoff)
    with engine.begin() as conn:
        # Read again inside the transaction: an undelete in between keeps its asset.
        ids = list(conn.execute(select(Asset.id).where(
            Asset.id.in_(ids), Asset.deleted_at.is_not(None))).scalars()) if ids else []
        return purge_assets(conn, ids)["assets"] if ids else 0


def _referenced(digest) -> object:
    """A condition: some asset has ``digest`` as an original."""
    return (exists().where(Asset.sha256 == digest)
            | exists().where(AssetVersion.blob_sha256 == digest))


def unreferenced(engine: Engine, digests: Iterable[str] | None = None) -> list[str]:
    """Original blobs (not a kept rendition's output) that no asset references."""
    outputs = select(Rendition.output_sha256).where(Rendition.output_sha256 != Rendition.source_sha256)
    query = (select(Blob.sha256).where(~_referenced(Blob.sha256), Blob.sha256.not_in(outputs))
             .order_by(Blob.sha256))
    if digests is not None:
        query = query.where(Blob.sha256.in_(sorted(set(digests))))
    with engine.connect() as conn:
        return list(conn.execute(query).scalars())


def mark(engine: Engine, digests: Sequence[str], now: datetime) -> int:
    """Mark these blobs as GC candidates; a blob marked already keeps its older mark."""
    if not digests:
        return 0
    with engine.begin() as conn:
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        before = conn.execute(select(GcMark.sha256).where(GcMark.sha256.in_(list(digests)))).scalars()
        conn.execute(dialect.insert(GcMark.__table__).on_conflict_do_nothing(index_elements=["sha256"]),
                     [{"sha256": d, "marked_at": now} for d in digests])
        return len(digests) - len(list(before))


def marked(engine: Engine, cutoff: datetime, digests: Iterable[str] | None = None) -> list[str]:
    query = select(GcMark.sha256).where(GcMark.marked_at <= cutoff).order_by(GcMark.sha256)
    if digests is not None:
        query = query.where(GcMark.sha256.in_(sorted(set(digests))))
    with engine.connect() as conn:
        return list(conn.execute(query).scalars())


def sweep(engine: Engine, digest: str, cutoff: datetime, remove: Remove, report: Swept) -> bool:
    """Delete one marked blob, its objects and rows, if still marked before ``cutoff`` and
    unreferenced; the objects go (``remove``) while the mark's lock is held. True if deleted."""
    with engine.begin() as conn:
        taken = conn.execute(delete(GcMark.__table__).where(GcMark.sha256 == digest,
                                                            GcMark.marked_at <= cutoff)).rowcount
        if not taken:  # pinned by an ingest since, or swept by another run
            return False
        blob = conn.execute(select(Blob.sha256, Blob.store).where(Blob.sha256 == digest)
                            .with_for_update()).first()
        if blob is None:
            return False
        if conn.execute(select(_referenced(digest))).scalar() or conn.execute(
                select(exists().where(Rendition.output_sha256 == digest,
                                      Rendition.source_sha256 != digest))).scalar():
            report.kept.append(digest)
            return False
        renditions = conn.execute(select(Rendition.output_sha256, Rendition.encoder)
                                  .where(Rendition.source_sha256 == digest)).all()
        outputs = sorted({r.output_sha256 for r in renditions} - {digest})
        shared = set(conn.execute(select(Blob.sha256).where(
            Blob.sha256.in_(outputs),
            _referenced(Blob.sha256) | exists().where(Rendition.output_sha256 == Blob.sha256,
                                                      Rendition.source_sha256 != digest))
        ).scalars()) if outputs else set()
        free = [o for o in outputs if o not in shared]
        stores = dict(conn.execute(select(Blob.sha256, Blob.store).where(Blob.sha256.in_(free))).all())
        objects = [(blob.store, digest)] + [(stores[o], o) for o in free if o in stores]
        packages = sorted({(stores.get(r.output_sha256, "renditions"),
                            r.encoder["playlist"].rpartition("/")[0])
                           for r in renditions if (r.encoder or {}).get("playlist")})
        remove(objects, packages)
        gone = [digest, *free]
        conn.execute(delete(PerceptualHash.__table__).where(PerceptualHash.sha256.in_(gone)))
        report.renditions += conn.execute(delete(Rendition.__table__)
                                          .where(Rendition.source_sha256 == digest)).rowcount
        pin(conn, free)
        conn.execute(delete(Blob.__table__).where(Blob.sha256.in_(gone)))
    report.blobs += len(gone)
    report.objects += len(objects)
    report.packages += len(packages)
    return True


def collect(engine: Engine, now: datetime, grace_s: float, remove: Remove,
            digests: Iterable[str] | None = None, dry_run: bool = False) -> Swept:
    """One GC run: purge assets deleted before the grace period, mark what no asset
    references, sweep the marks older than the grace period. ``digests`` limits the run
    to those blobs (an owner's erasure); ``dry_run`` writes and deletes nothing."""
    cutoff = now - timedelta(seconds=grace_s)
    report = Swept()
    if dry_run:
        report.assets_purged = len(deleted_assets(engine, cutoff))
        report.marked = len(unreferenced(engine, digests))
        return report
    report.assets_purged = purge_deleted(engine, cutoff) if digests is None else 0
    chosen = list(digests) if digests is not None else None
    report.marked = mark(engine, unreferenced(engine, chosen), now)
    for digest in marked(engine, cutoff, chosen):
        sweep(engine, digest, cutoff, remove, report)
    return report


def originals_of(engine: Engine, asset_ids: Sequence[str]) -> set[str]:
    """Every blob these assets have as an original, in any version."""
    ids = list(asset_ids)
    found: set[str] = set()
    with engine.connect() as conn:
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            found.update(conn.execute(union(
                select(Asset.sha256).where(Asset.id.in_(chunk), Asset.sha256.is_not(None)),
                select(AssetVersion.blob_sha256).where(AssetVersion.asset_id.in_(chunk)))).scalars())
    return found
