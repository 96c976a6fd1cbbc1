"""Per-process handles that workers reuse across tasks: catalog, stores, scanner."""

from __future__ import annotations

import os
import socket
from functools import cache

from catalog.repository import Catalog
from cluster.config import Settings
from cluster.storage.stores import Store, open_stores
from pipelines.upload.scan import ClamdScanner

_stores: dict[str, dict[str, Store]] = {}
# The last settings asked for and their stores: every stage of every asset of a partition
# asks with one Settings object, and its key() (JSON of the whole configuration) cost more
# per small file than validating it.
_last: tuple[Settings, dict[str, Store]] | None = None


def catalog(settings: Settings) -> Catalog:
    return _catalog(settings.catalog_url, settings.catalog_retry_s)


@cache
def _catalog(url: str, retry_s: float) -> Catalog:
    return Catalog(url, retry_s)


def stores(settings: Settings) -> dict[str, Store]:
    global _last
    if _last is not None and _last[0] is settings:
        return _last[1]
    key = settings.key()
    if key not in _stores:
        _stores[key] = open_stores(settings)
    _last = (settings, _stores[key])
    return _stores[key]


@cache
def scanner(url: str) -> ClamdScanner:
    return ClamdScanner(url)


def worker_name() -> str:
    """The Dask worker's address when running in one, else host:pid."""
    try:
        from distributed import get_worker

        return get_worker().address
    except ValueError:
        return f"{socket.gethostname()}:{os.getpid()}"
