"""Re-scans: which ready originals were last found clean under older signatures.

An asset's last clean scan is its current attempt's ``rescan`` stage row when that
ended ``ok``, else the attempt's ``scan`` row; each records ``signatures_version`` in
its details (``pipelines.upload.scan.ScanVerdict.as_details``). The cluster side
(``cluster.rescan``) scans the originals again and writes the outcome.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import and_, select, tuple_
from sqlalchemy.orm import aliased

from catalog.models import Asset, StageRun
from catalog.repository import Catalog

STAGE = "rescan"


@dataclass(frozen=True)
class Target:
    """One original to scan again, and the ready assets whose bytes it is (asset id, attempt)."""

    sha256: str
    assets: tuple[tuple[str, int], ...]


def is_older(recorded: str | None, current: str) -> bool:
    """Whether a scan under ``recorded`` signatures is older than ``current``.

    Two numbers (the official database's daily version) compare as numbers, so an
    asset scanned under a newer database than a lagging clamd is left alone; any other
    pair (a custom database's derived version, none recorded) is older when it differs.
    """
    if recorded is not None and recorded.isdigit() and current.isdigit():
        return int(recorded) < int(current)
    return recorded != current


def targets(catalog: Catalog, current: str, everything: bool = False,
            batch_size: int = 500) -> Iterator[list[Target]]:
    """Ready, undeleted originals last found clean under signatures older than ``current``
    (every one with ``everything``), in batches of about ``batch_size`` assets.

    Walks assets by (sha256, id), so the assets sharing an original come together and
    it is scanned once for all of them; what a batch writes never moves the walk.
    """
    after: tuple[str, str] | None = None
    while True:
        rows = _page(catalog, after, batch_size)
        if not rows:
            return
        after = (rows[-1].sha256, rows[-1].id)
        if len(rows) == batch_size:  # the last original's other assets, if any
            rows += _page(catalog, after, None, rows[-1].sha256)
            after = (rows[-1].sha256, rows[-1].id)
        grouped: dict[str, list[tuple[str, int]]] = {}
        for row in rows:
            if everything or is_older(row.version, current):
                grouped.setdefault(row.sha256, []).append((row.id, row.attempt))
        if grouped:
            yield [Target(sha, tuple(assets)) for sha, assets in grouped.items()]
        if len(rows) < batch_size:
            return


def _page(catalog: Catalog, after: tuple[str, str] | None, limit: int | None,
          sha256: str | None = None) -> list:
    scan, rescan = aliased(StageRun), aliased(StageRun)
    version = (rescan.details["signatures_version"].as_string(),
               scan.details["signatures_version"].as_string())
    query = (select(Asset.id, Asset.attempt, Asset.sha256, *version)
             .outerjoin(scan, and_(scan.asset_id == Asset.id, scan.attempt == Asset.attempt,
                                   scan.stage == "scan"))
             .outerjoin(rescan, and_(rescan.asset_id == Asset.id,
                                     rescan.attempt == Asset.attempt,
                                     rescan.stage == STAGE, rescan.status == "ok"))
             .where(Asset.status == "ready", Asset.deleted_at.is_(None),
                    Asset.sha256.is_not(None))
             .order_by(Asset.sha256, Asset.id))
    if after is not None:
        query = query.where(tuple_(Asset.sha256, Asset.id) > tuple_(*after))
    if sha256 is not None:
        query = query.where(Asset.sha256 == sha256)
    if limit is not None:
        query = query.limit(limit)
    with catalog.engine.connect() as conn:
        return [_Row(id_, attempt, sha, again if again is not None else first)
                for id_, attempt, sha, again, first in conn.execute(query)]


@dataclass(frozen=True)
class _Row:
    id: str
    attempt: int
    sha256: str
    version: str | None
