"""Manifests for bulk work, read in batches so the client's memory stays flat.

A manifest is a Parquet file (columns ``source_uri``, optional ``asset_id`` and
``owner``), a catalog selection (``catalog:`` plus ``status=…``/``owner=…``), or
an fsspec path, folder or glob.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import fsspec
import pyarrow.parquet as pq
from sqlalchemy import func, select

from catalog import Catalog
from catalog.models import Asset
from catalog.records import AssetRequest
from cluster.storage import sources


class Manifest:
    """A manifest opened once: how many items it holds when that is cheap to know (for
    progress, ETA and partition sizes), and its requests in batches.

    A folder or glob is listed here, once: its listing is its size. ``listed`` gives the
    requests already listed (``of_sources``); ``manifest`` then only names them.
    """

    def __init__(self, manifest: str, catalog: Catalog | None, owner: str = "default",
                 listed: list[AssetRequest] | None = None) -> None:
        self.manifest, self.catalog, self.owner = manifest, catalog, owner
        if listed is None and not (manifest.startswith("catalog:")
                                   or manifest.endswith(".parquet")):
            listed = sources.expand([manifest], owner)
        self._listed = listed

    @property
    def size(self) -> int | None:
        if self._listed is not None:
            return len(self._listed)
        if self.manifest.endswith(".parquet"):
            with fsspec.open(self.manifest, "rb") as handle:
                return pq.ParquetFile(handle).metadata.num_rows
        with self.catalog.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(Asset)
                                .where(*catalog_filter(self.manifest))).scalar_one()

    def batches(self, batch_size: int) -> Iterator[list[AssetRequest]]:
        if self.manifest.startswith("catalog:"):
            yield from _from_catalog(self.manifest, self.catalog, batch_size)
        elif self._listed is None:
            yield from _from_parquet(self.manifest, batch_size, self.owner)
        else:
            for start in range(0, len(self._listed), batch_size):
                yield self._listed[start:start + batch_size]


def of_sources(sources_: Sequence[str], owner: str = "default") -> Manifest:
    """What ``ingest`` takes (files, folders, globs, fsspec URLs) as a manifest, listed now,
    so that a missing path fails before any work starts."""
    return Manifest(" ".join(sources_), None, owner, sources.expand(list(sources_), owner))


def read_manifest(manifest: str, catalog: Catalog, batch_size: int,
                  owner: str = "default") -> Iterator[list[AssetRequest]]:
    yield from Manifest(manifest, catalog, owner).batches(batch_size)


def _from_parquet(path: str, batch_size: int, owner: str) -> Iterator[list[AssetRequest]]:
    with fsspec.open(path, "rb") as handle:
        parquet = pq.ParquetFile(handle)
        names = set(parquet.schema_arrow.names)
        if "source_uri" not in names:
            raise ValueError(f"{path}: a manifest needs a 'source_uri' column (it has {sorted(names)})")
        columns = [c for c in ("source_uri", "asset_id", "owner") if c in names]
        for batch in parquet.iter_batches(batch_size=batch_size, columns=columns):
            rows = batch.to_pydict()
            owners = rows.get("owner") or [owner] * batch.num_rows
            ids = rows.get("asset_id") or [None] * batch.num_rows
            yield [AssetRequest(asset_id or sources.asset_id(who or owner, uri), who or owner,
                                uri, None)
                   for uri, asset_id, who in zip(rows["source_uri"], ids, owners)]


def catalog_filter(selector: str) -> list:
    """``status=ready,owner=alice,recipe_id!=abc`` as SQLAlchemy conditions on assets."""
    conditions = []
    for clause in filter(None, selector.removeprefix("catalog:").split(",")):
        negate = "!=" in clause
        column, _, value = clause.partition("!=" if negate else "=")
        if column not in ("status", "owner", "recipe_id", "job_id", "reason"):
            raise ValueError(f"catalog selections filter on status, owner, recipe_id, job_id or "
                             f"reason, not {column!r}")
        attribute = getattr(Asset, column)
        conditions.append(attribute != value if negate else attribute == value)
    return conditions


def _from_catalog(manifest: str, catalog: Catalog, batch_size: int) -> Iterator[list[AssetRequest]]:
    query = (select(Asset.id, Asset.owner, Asset.source_uri).where(*catalog_filter(manifest))
             .order_by(Asset.id))
    with catalog.engine.connect() as conn:
        # A server-side cursor on PostgreSQL: rows stream in batches, never all at once.
        result = conn.execution_options(stream_results=True, yield_per=batch_size).execute(query)
        for rows in result.partitions(batch_size):
            yield [AssetRequest(row.id, row.owner, row.source_uri, None) for row in rows]
