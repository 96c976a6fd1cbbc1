"""Near-duplicate groups: each owner's ready pictures whose pHashes are a few bits apart.

``find`` is the bulk job: it reads every (owner, asset, pHash) of ready assets in one
query, groups each owner's hashes with ``catalog.hamming`` (multi-index hashing, then
connected components), and records each owner's groups in ``near_duplicate_groups``
in one transaction per owner. Owners are grouped apart: no group holds two owners'
assets. A group's id is its smallest asset id, so an unchanged group keeps its id and
its rows are not written again; an asset that leaves every group keeps its row with
``group_id`` None, so the exported change log says it left. ``groups`` reads them back.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import groupby

import numpy as np
from sqlalchemy import select

from catalog.hamming import group_labels
from catalog.models import Asset, NearDuplicateMember, PerceptualHash
from catalog.repository import Catalog, utcnow
from catalog.retry import retried
from pipelines.transform.perceptual import ALGORITHM, to_signed

# Bits of 64 that may differ. Chosen on the evaluation set (docs/benchmarks.md,
# "Near-duplicates"): precision 1.0 and recall 0.96 at 8; past 8, unrelated pictures
# start to join groups.
DEFAULT_THRESHOLD = 8


def hash_row(sha256: str, phash: int, keyframes: Sequence[int] = ()) -> dict:
    """A ``perceptual_hashes`` row for unsigned 64-bit hashes (stored as signed BIGINTs)."""
    return {"sha256": sha256, "phash": to_signed(phash),
            "keyframes": [to_signed(k) for k in keyframes] or None, "algorithm": ALGORITHM}


def find(catalog: Catalog, owner: str | None = None,
         threshold: int = DEFAULT_THRESHOLD) -> dict:
    """Search ``owner``'s (or every owner's) ready assets and record their groups.

    Returns ``{"threshold", "owners", "assets", "groups", "grouped"}``: owners searched,
    assets with a hash, groups found and assets in them.
    """
    if not 0 <= threshold < 64:
        raise ValueError(f"the threshold is a count of bits, 0 to 63, not {threshold}")
    report = {"threshold": threshold, "owners": 0, "assets": 0, "groups": 0, "grouped": 0}
    for name, rows in groupby(_hashed_assets(catalog, owner), key=lambda row: row[0]):
        rows = list(rows)
        members = _members(rows, threshold)
        _record(catalog, name, members, threshold)
        report["owners"] += 1
        report["assets"] += len(rows)
        report["groups"] += len({group for group, _, _ in members.values()})
        report["grouped"] += len(members)
    if owner is not None and report["owners"] == 0:
        _record(catalog, owner, {}, threshold)  # its last hashed asset went: groups go too
    return report


def _members(rows: list, threshold: int) -> dict[str, tuple[str, str, int]]:
    """``{asset_id: (group_id, sha256, signed phash)}`` of the assets that have a group."""
    values = np.array([phash for *_, phash in rows], dtype=np.int64).view(np.uint64)
    labels = group_labels(values, threshold)
    sizes = np.bincount(labels)
    groups: dict[int, list] = {}
    for row, label in zip(rows, labels.tolist()):
        if sizes[label] > 1:
            groups.setdefault(label, []).append(row)
    members = {}
    for rows_ in groups.values():
        group_id = min(asset_id for _, asset_id, _, _ in rows_)
        members.update({asset_id: (group_id, sha256, phash) for _, asset_id, sha256, phash in rows_})
    return members


@retried
def _hashed_assets(catalog: Catalog, owner: str | None) -> list:
    a, h = Asset.__table__.c, PerceptualHash.__table__.c
    query = (select(a.owner, a.id, a.sha256, h.phash)
             .join_from(Asset.__table__, PerceptualHash.__table__, h.sha256 == a.sha256)
             .where(a.status == "ready", a.deleted_at.is_(None))
             .order_by(a.owner))
    if owner is not None:
        query = query.where(a.owner == owner)
    with catalog.engine.connect() as conn:
        return conn.execute(query).all()


@retried
def _record(catalog: Catalog, owner: str, members: dict[str, tuple[str, str, int]],
            threshold: int) -> None:
    """Write what changed of ``owner``'s groups, in one transaction."""
    table = NearDuplicateMember.__table__
    now = utcnow()
    with catalog.engine.begin() as conn:
        before = {row.asset_id: (row.group_id, row.threshold) for row in conn.execute(
            select(table.c.asset_id, table.c.group_id, table.c.threshold)
            .where(table.c.owner == owner))}
        rows = [{"owner": owner, "asset_id": asset_id, "group_id": group_id, "sha256": sha256,
                 "phash": phash, "threshold": threshold, "computed_at": now}
                for asset_id, (group_id, sha256, phash) in members.items()
                if before.get(asset_id) != (group_id, threshold)]
        left = [asset_id for asset_id, (group_id, _) in before.items()
                if group_id is not None and asset_id not in members]
        if left:
            conn.execute(table.update().where(table.c.owner == owner,
                                               table.c.asset_id.in_(left))
                         .values(group_id=None, threshold=threshold, computed_at=now))
        catalog._upsert(conn, table, rows, ["owner", "asset_id"],
                        ["group_id", "sha256", "phash", "threshold", "computed_at"])


@retried
def groups(catalog: Catalog, owner: str) -> list[dict]:
    """``owner``'s groups as the last ``find`` left them, largest first:
    ``[{"group_id", "assets": [{"asset_id", "source_uri", "sha256", "phash"}]}]``
    (``phash``: the unsigned 64-bit hash as 16 hexadecimal digits)."""
    g, a = NearDuplicateMember.__table__.c, Asset.__table__.c
    query = (select(g.group_id, g.asset_id, a.source_uri, g.sha256, g.phash)
             .join_from(NearDuplicateMember.__table__, Asset.__table__, a.id == g.asset_id)
             .where(g.owner == owner, g.group_id.is_not(None))
             .order_by(g.group_id, g.asset_id))
    with catalog.engine.connect() as conn:
        rows = conn.execute(query).all()
    found = [{"group_id": group_id,
              "assets": [{"asset_id": r.asset_id, "source_uri": r.source_uri,
                          "sha256": r.sha256, "phash": f"{r.phash & (2 ** 64 - 1):016x}"}
                         for r in members]}
             for group_id, members in groupby(rows, key=lambda row: row.group_id)]
    return sorted(found, key=lambda group: -len(group["assets"]))


@retried
def owners(catalog: Catalog) -> list[str]:
    """Owners with at least one recorded group."""
    g = NearDuplicateMember.__table__.c
    with catalog.engine.connect() as conn:
        return list(conn.execute(select(g.owner).where(g.group_id.is_not(None))
                                 .distinct().order_by(g.owner)).scalars())
