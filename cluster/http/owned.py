"""What an owner may see and do with assets over HTTP: read, list renditions, delete.

Another owner's asset is indistinguishable from a missing one. A deleted asset
keeps its status and history; its renditions are no longer published.
"""

from __future__ import annotations

from sqlalchemy import Engine, and_, select, update

from catalog.models import Asset, AssetVersion, Rendition
from catalog.repository import utcnow


def asset(engine: Engine, owner: str, asset_id: str) -> dict | None:
    with engine.connect() as conn:
        row = conn.execute(select(Asset.__table__).where(Asset.id == asset_id,
                                                         Asset.owner == owner)).first()
    return dict(row._mapping) if row else None


def asset_detail(engine: Engine, owner: str, asset_id: str) -> dict | None:
    """The asset with its ``versions`` and, while ready and not deleted, its ``renditions``.

    One connection for all three reads: status polling is the endpoint's commonest call.
    """
    with engine.connect() as conn:
        row = conn.execute(select(Asset.__table__).where(Asset.id == asset_id,
                                                         Asset.owner == owner)).first()
        if row is None:
            return None
        found = dict(row._mapping)
        found["versions"] = [dict(v._mapping) for v in conn.execute(
            select(AssetVersion.version, AssetVersion.blob_sha256, AssetVersion.recipe_id,
                   AssetVersion.created_at)
            .where(AssetVersion.asset_id == asset_id).order_by(AssetVersion.version))]
        published = found["status"] == "ready" and found["sha256"] and found["deleted_at"] is None
        found["renditions"] = [dict(r._mapping) for r in conn.execute(
            select(Rendition.__table__).where(Rendition.source_sha256 == found["sha256"],
                                              Rendition.recipe_id == found["recipe_id"])
            .order_by(Rendition.preset))] if published else []
    return found


def mark_deleted(engine: Engine, asset_id: str) -> None:
    with engine.begin() as conn:
        conn.execute(update(Asset.__table__)
                     .where(Asset.id == asset_id, Asset.deleted_at.is_(None))
                     .values(deleted_at=utcnow(), updated_at=utcnow()))


def undelete(engine: Engine, asset_id: str) -> None:
    with engine.begin() as conn:
        conn.execute(update(Asset.__table__).where(Asset.id == asset_id)
                     .values(deleted_at=None, updated_at=utcnow()))


def original_in_use(engine: Engine, sha256: str) -> bool:
    """Whether any asset not deleted still has these bytes as its original."""
    with engine.connect() as conn:
        return conn.execute(select(Asset.id).where(Asset.sha256 == sha256,
                                                   Asset.deleted_at.is_(None)).limit(1)).first() is not None


def published_rendition(engine: Engine, owner: str, output_sha256: str) -> dict | None:
    """A rendition this owner may fetch: of one of their ready assets, not deleted."""
    return _published(engine, output_sha256, Asset.owner == owner)


def signed_rendition(engine: Engine, asset_id: str, output_sha256: str) -> dict | None:
    """The rendition a signed URL names, while its asset is ready and not deleted."""
    return _published(engine, output_sha256, Asset.id == asset_id)


def _published(engine: Engine, output_sha256: str, whose) -> dict | None:
    query = (select(Rendition.output_sha256, Rendition.media_type, Rendition.format,
                    Rendition.encoder, Asset.id.label("asset_id"))
             .join(Asset, and_(Asset.sha256 == Rendition.source_sha256,
                               Asset.recipe_id == Rendition.recipe_id))
             .where(Rendition.output_sha256 == output_sha256, whose,
                    Asset.status == "ready", Asset.deleted_at.is_(None))
             .order_by(Asset.id)
             .limit(1))
    with engine.connect() as conn:
        row = conn.execute(query).first()
    return dict(row._mapping) if row else None
