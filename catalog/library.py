"""Tags and collections: an owner's own words for their assets.

Both belong to one owner. An asset of another owner, or a deleted one, is treated
as missing, so no door (Python, CLI, HTTP) can tag, collect or even confirm another
owner's asset. Names are checked here, the one place every door passes.

Tags are folded (Unicode NFC, case-folded, inner white space collapsed): ``Beach``
and ``beach`` are one tag. Collection names keep their case but are unique per owner.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from collections.abc import Iterable, Sequence

from sqlalchemy import Connection, Engine, delete, func, select
from sqlalchemy.dialects import postgresql, sqlite

from catalog.models import Asset, AssetTag, Collection, CollectionItem

TAG_MAX_CHARS = 64
COLLECTION_MAX_CHARS = 100
MAX_IDS = 1000  # assets per call: one statement's worth
# Letters, digits and marks of any script, then also . : + # & ' - _ and single spaces
# (no slash: a tag is one segment of a URL path).
_TAG_CHARS = re.compile(r"^\w[\w .:+#&'\-]*$")


class InvalidName(ValueError):
    """A tag or collection name that is empty, too long or holds characters not allowed."""


class UnknownAssets(ValueError):
    """Assets that are not the owner's (or do not exist, or are deleted)."""

    def __init__(self, missing: Sequence[str]) -> None:
        super().__init__(f"no such asset: {', '.join(sorted(missing)[:10])}")
        self.missing = sorted(missing)


class UnknownCollection(ValueError):
    """No collection of that name for this owner."""


def tag_name(raw: str) -> str:
    """``raw`` as the tag it names, or InvalidName saying why it cannot be one."""
    name = " ".join(unicodedata.normalize("NFC", str(raw)).split()).casefold()
    if not name:
        raise InvalidName("a tag cannot be empty")
    if len(name) > TAG_MAX_CHARS:
        raise InvalidName(f"a tag is at most {TAG_MAX_CHARS} characters")
    if not _TAG_CHARS.match(name):
        raise InvalidName(f"tag {name!r}: letters, digits, spaces and . : + # & ' - _ only, "
                          "starting with a letter or digit")
    return name


def collection_name(raw: str) -> str:
    """``raw`` trimmed, or InvalidName: 1 to 100 characters, none of them control characters."""
    name = " ".join(unicodedata.normalize("NFC", str(raw)).split())
    if not name:
        raise InvalidName("a collection name cannot be empty")
    if len(name) > COLLECTION_MAX_CHARS:
        raise InvalidName(f"a collection name is at most {COLLECTION_MAX_CHARS} characters")
    if any(unicodedata.category(c).startswith("C") for c in name):
        raise InvalidName("a collection name cannot hold control or unassigned characters")
    return name


def _ids(asset_ids: Iterable[str]) -> list[str]:
    ids = list(dict.fromkeys(str(i) for i in asset_ids))
    if not ids:
        raise ValueError("name at least one asset")
    if len(ids) > MAX_IDS:
        raise ValueError(f"at most {MAX_IDS} assets at a time")
    return ids


def _owned(conn: Connection, owner: str, ids: Sequence[str]) -> None:
    found = set(conn.scalars(select(Asset.id).where(
        Asset.id.in_(ids), Asset.owner == owner, Asset.deleted_at.is_(None))))
    if missing := set(ids) - found:
        raise UnknownAssets(list(missing))


def _insert_new(conn: Connection, table, rows: list[dict], keys: list[str]) -> int:
    if not rows:
        return 0
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    # RETURNING counts what was new: an executemany's rowcount is -1 on psycopg.
    statement = (dialect.insert(table).on_conflict_do_nothing(index_elements=keys)
                 .returning(table.c[keys[0]]))
    return len(conn.execute(statement, rows).all())


def add_tags(engine: Engine, owner: str, asset_ids: Iterable[str], tags: Iterable[str]) -> int:
    """Tag each asset with each tag; returns how many tags were new. All or nothing."""
    ids, names = _ids(asset_ids), sorted({tag_name(t) for t in tags})
    with engine.begin() as conn:
        _owned(conn, owner, ids)
        return _insert_new(conn, AssetTag.__table__,
                           [{"asset_id": i, "tag": t, "owner": owner} for i in ids for t in names],
                           ["asset_id", "tag"])


def remove_tags(engine: Engine, owner: str, asset_ids: Iterable[str], tags: Iterable[str]) -> int:
    ids, names = _ids(asset_ids), sorted({tag_name(t) for t in tags})
    with engine.begin() as conn:
        _owned(conn, owner, ids)
        return conn.execute(delete(AssetTag).where(
            AssetTag.owner == owner, AssetTag.asset_id.in_(ids), AssetTag.tag.in_(names))).rowcount


def tags(engine: Engine, owner: str) -> list[dict]:
    """The owner's tags with how many of their assets (not deleted) carry each."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(AssetTag.tag, func.count().label("assets"))
            .join(Asset, Asset.id == AssetTag.asset_id)
            .where(AssetTag.owner == owner, Asset.deleted_at.is_(None))
            .group_by(AssetTag.tag).order_by(AssetTag.tag))
        return [dict(r._mapping) for r in rows]


def asset_tags(engine: Engine, owner: str, asset_id: str) -> list[str]:
    """The tags of one of the owner's assets, sorted; UnknownAssets if it is not theirs."""
    with engine.connect() as conn:
        _owned(conn, owner, [asset_id])
        return list(conn.scalars(select(AssetTag.tag).where(AssetTag.asset_id == asset_id)
                                 .order_by(AssetTag.tag)))


def tags_of(conn: Connection, owner: str, asset_ids: Sequence[str]) -> dict[str, list[str]]:
    """Each of the owner's assets among ``asset_ids`` that has tags, with them sorted."""
    found: dict[str, list[str]] = {}
    if asset_ids:
        for asset_id, tag in conn.execute(
                select(AssetTag.asset_id, AssetTag.tag)
                .where(AssetTag.owner == owner, AssetTag.asset_id.in_(list(asset_ids)))
                .order_by(AssetTag.asset_id, AssetTag.tag)):
            found.setdefault(asset_id, []).append(tag)
    return found


def create_collection(engine: Engine, owner: str, name: str) -> dict:
    """The owner's collection called ``name``, made if it does not exist yet."""
    name = collection_name(name)
    with engine.begin() as conn:
        _insert_new(conn, Collection.__table__,
                    [{"id": str(uuid.uuid4()), "owner": owner, "name": name}], ["owner", "name"])
        return _collection(conn, owner, name)


def _collection(conn: Connection, owner: str, name: str) -> dict:
    row = conn.execute(select(Collection.__table__).where(
        Collection.owner == owner, Collection.name == collection_name(name))).first()
    if row is None:
        raise UnknownCollection(f"no collection named {name!r}")
    return dict(row._mapping)


def collections(engine: Engine, owner: str) -> list[dict]:
    """The owner's collections, by name, each with how many assets (not deleted) it holds."""
    counted = (select(CollectionItem.collection_id, func.count().label("assets"))
               .join(Asset, Asset.id == CollectionItem.asset_id)
               .where(Asset.deleted_at.is_(None))
               .group_by(CollectionItem.collection_id).subquery())
    with engine.connect() as conn:
        rows = conn.execute(
            select(Collection.id, Collection.name, Collection.created_at,
                   func.coalesce(counted.c.assets, 0).label("assets"))
            .outerjoin(counted, counted.c.collection_id == Collection.id)
            .where(Collection.owner == owner).order_by(Collection.name))
        return [dict(r._mapping) for r in rows]


def add_to_collection(engine: Engine, owner: str, name: str, asset_ids: Iterable[str]) -> int:
    """Put the assets in the owner's collection ``name`` (made if needed); returns how many
    were not in it yet. All or nothing."""
    ids = _ids(asset_ids)
    collection = create_collection(engine, owner, name)
    with engine.begin() as conn:
        _owned(conn, owner, ids)
        return _insert_new(conn, CollectionItem.__table__,
                           [{"collection_id": collection["id"], "asset_id": i} for i in ids],
                           ["collection_id", "asset_id"])


def remove_from_collection(engine: Engine, owner: str, name: str,
                           asset_ids: Iterable[str]) -> int:
    ids = _ids(asset_ids)
    with engine.begin() as conn:
        collection = _collection(conn, owner, name)
        _owned(conn, owner, ids)
        return conn.execute(delete(CollectionItem).where(
            CollectionItem.collection_id == collection["id"],
            CollectionItem.asset_id.in_(ids))).rowcount


def delete_collection(engine: Engine, owner: str, name: str) -> None:
    """Remove the collection (its assets stay); UnknownCollection if there is none."""
    with engine.begin() as conn:
        collection = _collection(conn, owner, name)
        conn.execute(delete(CollectionItem).where(
            CollectionItem.collection_id == collection["id"]))
        conn.execute(delete(Collection).where(Collection.id == collection["id"]))

