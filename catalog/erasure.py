"""Erasing an owner: every row of theirs, and a record that it happened (not of what).

The rows go in one transaction; the objects only they referenced are then garbage-
collected (``catalog.gc``), and their uploads' buffer objects deleted by the caller.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, delete, select

from catalog.gc import originals_of, purge_assets
from catalog.models import (ApiToken, Asset, Collection, CollectionItem, Erasure, IdempotencyKey,
                            NearDuplicateMember, TusUpload, Upload, WebhookDelivery,
                            WebhookSecret)


@dataclass(frozen=True)
class Erased:
    """What an erasure removed from the catalog; ``originals`` and ``buffers`` are for the
    caller's GC and buffer cleanup, not for the record."""

    erasure_id: str
    counts: dict[str, int]
    originals: frozenset[str]
    buffers: tuple[str, ...]  # keys of the owner's uploads in the buffer store


def erase_owner(engine: Engine, owner: str, erased_by: str, now: datetime) -> Erased:
    with engine.connect() as conn:
        asset_ids = list(conn.execute(select(Asset.id).where(Asset.owner == owner)).scalars())
    originals = originals_of(engine, asset_ids)
    with engine.begin() as conn:
        # Read again in the transaction: an asset queued meanwhile is erased too.
        asset_ids = list(conn.execute(select(Asset.id).where(Asset.owner == owner)).scalars())
        collections = select(Collection.id).where(Collection.owner == owner)
        counts = {"collection_items": conn.execute(delete(CollectionItem.__table__).where(
            CollectionItem.collection_id.in_(collections))).rowcount}
        purged = purge_assets(conn, asset_ids)
        counts["collection_items"] += purged.pop("collection_items")
        counts.update(purged)
        buffers = tuple(conn.execute(select(Upload.key).where(Upload.owner == owner)).scalars()) + tuple(
            conn.execute(select(TusUpload.key).where(TusUpload.owner == owner)).scalars())
        for table, column in ((Collection, Collection.owner),
                              (NearDuplicateMember, NearDuplicateMember.owner),
                              (Upload, Upload.owner), (TusUpload, TusUpload.owner),
                              (IdempotencyKey, IdempotencyKey.owner), (ApiToken, ApiToken.owner),
                              (WebhookSecret, WebhookSecret.owner),
                              (WebhookDelivery, WebhookDelivery.owner)):
            done = conn.execute(delete(table.__table__).where(column == owner)).rowcount
            counts[table.__tablename__] = counts.get(table.__tablename__, 0) + done
        erasure_id = str(uuid.uuid4())
        conn.execute(Erasure.__table__.insert().values(
            id=erasure_id, owner=owner, erased_by=erased_by, erased_at=now, counts=counts))
    return Erased(erasure_id, counts, frozenset(originals), buffers)


def record_objects(engine: Engine, erasure_id: str, swept: dict) -> None:
    """Add what the GC that followed deleted to the erasure's record."""
    with engine.begin() as conn:
        counts = conn.execute(select(Erasure.counts).where(Erasure.id == erasure_id)).scalar_one()
        conn.execute(Erasure.__table__.update().where(Erasure.id == erasure_id)
                     .values(counts={**counts, **{f"gc_{k}": v for k, v in swept.items()}}))


def erasures(engine: Engine, owner: str | None = None) -> list[dict]:
    query = select(Erasure.__table__).order_by(Erasure.erased_at)
    if owner is not None:
        query = query.where(Erasure.owner == owner)
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]
