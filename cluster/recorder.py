"""Where the stage tasks' catalog writes go: straight to the catalog, or batched.

The per-asset path writes each stage's row as it happens, so progress is
visible at once. The bulk path runs many assets in one task and sends their
writes in one transaction at the end of the partition (a few statements for
hundreds of assets), through the same calls: the stages do not know which.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from catalog.near_duplicates import hash_row
from catalog.repository import Catalog
from catalog.records import RenditionRecord, StageRecord


class Recorder:
    """Writes through to the catalog, one transaction per call."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def processing(self, asset_id: str, attempt: int) -> None:
        self.catalog.mark_processing(asset_id, attempt)

    def stage(self, record: StageRecord) -> None:
        self.catalog.record_stage(record)

    def blob(self, sha256: str, size: int, media_type: str, store: str, metadata: dict) -> None:
        self.catalog.put_blob(sha256, size, media_type, store, metadata)

    def perceptual_hash(self, sha256: str, phash: int, keyframes: tuple[int, ...]) -> None:
        self.catalog.write_batch([], [], [], [], [hash_row(sha256, phash, keyframes)])

    def ready(self, asset_id: str, attempt: int, source_sha256: str, recipe_id: str,
              renditions: list[RenditionRecord], store: str) -> None:
        self.catalog.record_ready(asset_id, attempt, source_sha256, recipe_id, renditions, store)

    def stop(self, asset_id: str, attempt: int, status: str, reason: str, message: str,
             retryable: bool, sha256: str | None) -> None:
        self.catalog.record_stop(asset_id, attempt, status, reason, message, retryable, sha256)


@dataclass
class BufferedRecorder(Recorder):
    """Collects the writes of a partition; ``flush`` sends them in one transaction."""

    catalog: Catalog
    blobs: list[dict] = field(default_factory=list)
    stages: list[StageRecord] = field(default_factory=list)
    readies: list[tuple] = field(default_factory=list)
    stops: list[tuple] = field(default_factory=list)
    hashes: list[dict] = field(default_factory=list)

    def processing(self, asset_id: str, attempt: int) -> None:
        pass  # the partition marks its assets processing in one statement when it starts

    def stage(self, record: StageRecord) -> None:
        self.stages.append(record)

    def blob(self, sha256: str, size: int, media_type: str, store: str, metadata: dict) -> None:
        self.blobs.append({"sha256": sha256, "size": size, "media_type": media_type,
                           "store": store, "media_metadata": metadata})

    def perceptual_hash(self, sha256: str, phash: int, keyframes: tuple[int, ...]) -> None:
        self.hashes.append(hash_row(sha256, phash, keyframes))

    def ready(self, *args) -> None:
        self.readies.append(args)

    def stop(self, *args) -> None:
        self.stops.append(args)

    def flush(self) -> None:
        self.catalog.write_batch(self.blobs, self.stages, self.readies, self.stops, self.hashes)
        self.blobs, self.stages, self.readies, self.stops, self.hashes = [], [], [], [], []


_active: ContextVar[Recorder | None] = ContextVar("mediafarm_recorder", default=None)


def current(catalog: Catalog) -> Recorder:
    return _active.get() or Recorder(catalog)


@contextmanager
def buffered(catalog: Catalog) -> Iterator[BufferedRecorder]:
    """Route the stage tasks' writes into a buffer for the duration of the block."""
    recorder = BufferedRecorder(catalog)
    token = _active.set(recorder)
    try:
        yield recorder
    finally:
        _active.reset(token)
