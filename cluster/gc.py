"""Garbage collection and owner erasure with the stores: the catalog decides what goes
(``catalog.gc``, ``catalog.erasure``), this deletes the objects."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from catalog import erasure
from catalog.gc import Objects, Swept, collect
from catalog.repository import Catalog, utcnow
from cluster.storage.stores import Store, store_named

log = logging.getLogger(__name__)

DEFAULT_GRACE_S = 24 * 3600.0  # longer than any ingest takes from its hash to its record


def remover(stores: Mapping[str, Store]):
    """The sweep's callback: delete objects and package folders from the named stores."""

    def remove(objects: Objects, packages: Objects) -> None:
        for name, digest in objects:
            store_named(stores, name).delete(digest)
        for name, folder in packages:
            store_named(stores, name).delete_at(folder)

    return remove


def run_gc(catalog: Catalog, stores: Mapping[str, Store], grace_s: float = DEFAULT_GRACE_S,
           dry_run: bool = False) -> Swept:
    return collect(catalog.engine, utcnow(), grace_s, remover(stores), dry_run=dry_run)


def erase_owner(catalog: Catalog, stores: Mapping[str, Store], owner: str, erased_by: str,
                grace_s: float = 0.0) -> dict:
    """Remove every row of ``owner``, their uploads' buffers, then what only they referenced.

    Returns the erasure's record: its id and counts (rows by table, objects deleted).
    """
    erased = erasure.erase_owner(catalog.engine, owner, erased_by, utcnow())
    buffer = stores.get("buffer")
    buffers = 0
    for key in erased.buffers:
        try:
            buffers += bool(buffer is not None and buffer.delete_at(key))
        except ValueError:  # a key that is a digest path or absolute: not ours to guess at
            log.warning("upload buffer key %r not deleted", key)
    swept = collect(catalog.engine, utcnow(), grace_s, remover(stores),
                    digests=erased.originals).as_dict()
    swept["buffers"] = buffers
    erasure.record_objects(catalog.engine, erased.erasure_id, swept)
    return {"id": erased.erasure_id, "owner": owner, "counts": {
        **erased.counts, **{f"gc_{k}": v for k, v in swept.items()}}}
