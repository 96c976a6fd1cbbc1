"""Parquet exports of the catalog for data engineers: incremental, partitioned, streamed.

``export(catalog, url)`` writes four datasets under ``url`` (any fsspec URL the
stores accept: a local folder, ``s3://``, ``r2://`` with the same storage options)::

    <url>/assets/day=2026-11-21/media_type=image/part-<run>-0.parquet
    <url>/asset_versions/...
    <url>/renditions/...
    <url>/stage_runs/...

Rows are read from the catalog straight into Arrow record batches (``catalog.export_arrow``:
ADBC's PostgreSQL driver over ``COPY ... (FORMAT BINARY)``; on SQLite the standard library's
cursor, column by column), at most ``batch_rows`` at a time, with the explicit schemas
of ``SCHEMAS`` (``catalog.export_datasets``: the schemas and the queries); the next batch
is read in a thread while one is written by one ``pyarrow.parquet.ParquetWriter`` per
partition file; rows come ordered by their change timestamp, so a day's files are closed
as soon as the next day starts and memory stays flat whatever the catalog's size.
Files are zstd-compressed and partitioned hive-style by the UTC day of the row's
change timestamp and by media type (``image``, ``video``, ``audio``, ``unknown``).

Each export is incremental. A watermark per (destination, dataset) in the
``export_watermarks`` table holds the largest change timestamp exported so far; the next
export takes only rows whose change timestamp is strictly greater, into new files
named after the run (``part-<run>-<i>.parquet``). Files already written are never
rewritten or removed, so a dataset is an append-only change log: an asset whose status
changed appears once per exported state, and its latest row (greatest ``updated_at``) is
its current state. ``catalog.analytics.load`` reads a dataset that way.

An export first waits for the next whole second (SQLite's server-side timestamps have
whole seconds), then takes every row stamped before that second, less those younger than
``settle`` seconds. A row is stamped before its transaction commits: pass a ``settle``
longer than the longest catalog transaction (a bulk partition stamps stage runs as it goes
and commits at the end) when exporting while jobs run, or rows committed late could fall
behind the watermark and never be exported.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import unquote, urlparse

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from sqlalchemy import select

from catalog.export_datasets import (CHANGE_COLUMN, DATASETS, JSON_COLUMNS, JSON_TEXT, KEYS,
                                     MEDIA_TYPE_FROM, MEDIA_TYPES, PARTITION_SCHEMA, PARTITIONING,
                                     SCHEMA_VERSION, SCHEMAS, TIMESTAMP, bind_moment)
from catalog.export_arrow import DIALECTS, arrow_batches
from catalog.export_rows import row_batches
from catalog.models import ExportWatermark
from catalog.repository import Catalog, utcnow
from pipelines.transform.readahead import ReadAhead

__all__ = [
    "CHANGE_COLUMN", "DATASETS", "JSON_COLUMNS", "JSON_TEXT", "KEYS", "MEDIA_TYPE_FROM",
    "MEDIA_TYPES", "PARTITION_SCHEMA", "PARTITIONING", "SCHEMA_VERSION", "SCHEMAS", "TIMESTAMP",
    "Destination", "destination_key", "export", "open_dataset", "set_watermark", "watermark",
]

# -- destinations -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Destination:
    """Where an export goes: a pyarrow filesystem, the root path on it, and its watermark key."""

    key: str
    filesystem: pafs.FileSystem
    root: str

    @classmethod
    def open(cls, url: str, storage_options: dict | None = None) -> "Destination":
        """Any fsspec URL (``r2://`` too: the package registers it) or a local path."""
        parsed = urlparse(str(url))
        if parsed.scheme in ("", "file", "local"):
            local = unquote(parsed.path) if parsed.scheme == "file" else str(url)
            root = str(Path(local).expanduser().resolve())
            return cls(Path(root).as_uri(), pafs.LocalFileSystem(), root)
        filesystem, root = fsspec.core.url_to_fs(str(url), **(storage_options or {}))
        root = root.rstrip("/")
        handler = pafs.PyFileSystem(pafs.FSSpecHandler(filesystem))
        return cls(str(url).rstrip("/"), handler, root)

    def path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])

    def relative(self, path: str) -> str:
        return path[len(self.root.rstrip("/")) + 1:] if path.startswith(self.root) else path


def open_dataset(url: str, name: str, storage_options: dict | None = None) -> ds.Dataset:
    """An exported dataset, every run of it, with its full schema (partition columns included)."""
    if name not in SCHEMAS:
        raise ValueError(f"no dataset {name!r}; the export writes {', '.join(DATASETS)}")
    destination = Destination.open(url, storage_options)
    base = destination.path(name)
    # One listing, and an empty dataset (not an error) before the first export.
    selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
    options = ds.FileSystemFactoryOptions(partition_base_dir=base, partitioning=PARTITIONING,
                                          selector_ignore_prefixes=[".", "_"])
    factory = ds.FileSystemDatasetFactory(destination.filesystem, selector,
                                          ds.ParquetFileFormat(), options)
    return factory.finish(SCHEMAS[name])


# -- export -------------------------------------------------------------------------------------

READERS: dict[str, Callable] = {"arrow": arrow_batches, "rows": row_batches}


def export(catalog: Catalog, url: str, storage_options: dict | None = None,
           batch_rows: int = 50_000, *, settle: float = 0.0,
           datasets: tuple[str, ...] = DATASETS, reader: str = "arrow") -> dict:
    """Export what changed since the last export to ``url``; returns what was written.

    ``{"destination", "run", "cutoff", "datasets": {name: {"rows", "files", "watermark",
    "previous_watermark"}}}``; ``files`` are paths relative to ``url``. ``reader``:
    ``"arrow"`` (``catalog.export_arrow``; databases other than PostgreSQL and SQLite fall
    back to the next) or ``"rows"``, the row-wise reader through SQLAlchemy
    (``catalog.export_rows``), the baseline it is measured and checked against.
    """
    if batch_rows < 1:
        raise ValueError("batch_rows must be at least 1")
    if reader not in READERS:
        raise ValueError(f"no reader {reader!r}; use {' or '.join(READERS)}")
    if catalog.engine.dialect.name not in DIALECTS:
        reader = "rows"
    unknown = set(datasets) - set(DATASETS)
    if unknown:
        raise ValueError(f"no dataset {sorted(unknown)}; the export writes {', '.join(DATASETS)}")
    destination = Destination.open(url, storage_options)
    if len(destination.key) > 500:
        raise ValueError("the destination URL is longer than 500 characters")
    started = utcnow()
    run = f"{started:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    # Wait for the next whole second: then every row stamped before the export began is in
    # (SQLite's server-side stamps are whole seconds), less what is younger than `settle`.
    boundary = started.replace(microsecond=0) + timedelta(seconds=1)
    time.sleep(max(0.0, (boundary - utcnow()).total_seconds()))
    cutoff = boundary - timedelta(seconds=settle, microseconds=1)
    report = {"destination": destination.key, "run": run, "cutoff": cutoff.isoformat(),
              "datasets": {}}
    for name in datasets:
        report["datasets"][name] = _export_dataset(catalog, destination, name, run, cutoff,
                                                   batch_rows, READERS[reader])
    return report


def _export_dataset(catalog: Catalog, destination: Destination, name: str, run: str,
                    cutoff: datetime, batch_rows: int, batches: Callable) -> dict:
    previous = watermark(catalog, destination.key, name)
    result = {"rows": 0, "files": [], "watermark": _iso(previous),
              "previous_watermark": _iso(previous)}
    writer = _PartitionedWriter(destination, name, run, row_group_rows=batch_rows)
    rows, latest = 0, None
    try:
        with _read_ahead(catalog, batches(catalog, name, previous, cutoff, batch_rows)) as read:
            for batch in read:
                writer.write(batch)
                rows += batch.num_rows
                batch_latest = pc.max(batch.column(CHANGE_COLUMN[name])).as_py()
                latest = batch_latest if latest is None else max(latest, batch_latest)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    if rows:
        set_watermark(catalog, destination.key, name, latest)
        result.update(rows=rows, watermark=_iso(latest),
                      files=sorted(destination.relative(p) for p in writer.paths))
    return result


def _read_ahead(catalog: Catalog, batches: Iterator[pa.RecordBatch]
                ) -> contextlib.AbstractContextManager[Iterable[pa.RecordBatch]]:
    """The next batch read in a thread while this one writes the current one.

    Reading (ADBC decoding PostgreSQL's binary rows; sqlite3 stepping) and writing
    (partition filters, zstd) both let go of the GIL, so on two cores they overlap. An
    in-memory SQLite catalog is one database per thread (SingletonThreadPool): read there.
    """
    url = catalog.engine.url
    if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
        return contextlib.nullcontext(batches)
    return ReadAhead(batches, 1, "export-read-ahead")


class _PartitionedWriter:
    """One ``pyarrow.parquet.ParquetWriter`` per (day, media type) partition file of one run.

    Rows come ordered by their change timestamp, hence by day: when a batch starts on a
    later day, the earlier days' files are complete and are closed. Rows wait in memory
    until a partition has ``row_group_rows`` of them (one row group), or until all the
    partitions together hold twice that, so memory stays within about two batches.
    """

    def __init__(self, destination: Destination, dataset: str, run: str,
                 row_group_rows: int) -> None:
        self.destination, self.dataset, self.run = destination, dataset, run
        self.schema = SCHEMAS[dataset]
        self.file_schema = pa.schema([f for f in self.schema if f.name not in ("day", "media_type")],
                                     metadata=self.schema.metadata)
        self.row_group_rows = row_group_rows
        self.open: dict[tuple, dict] = {}
        self.paths: list[str] = []
        self.pending_rows = 0

    def write(self, batch: pa.RecordBatch) -> None:
        days = batch.column("day")
        first_day = pc.min(days).as_py()
        for key in [k for k in self.open if k[0] < first_day]:
            self._close(key)
        partitions = pa.Table.from_batches([batch]).group_by(["day", "media_type"]).aggregate([])
        for day, media_type in zip(partitions["day"].to_pylist(),
                                   partitions["media_type"].to_pylist()):
            part = batch.filter(pc.and_(pc.equal(days, pa.scalar(day, pa.date32())),
                                        pc.equal(batch.column("media_type"), media_type)))
            state = self.open.get((day, media_type)) or self._open(day, media_type)
            state["pending"].append(pa.RecordBatch.from_arrays(
                [part.column(f.name) for f in self.file_schema], schema=self.file_schema))
            state["rows"] += part.num_rows
            self.pending_rows += part.num_rows
            if state["rows"] >= self.row_group_rows:
                self._flush(state)
        if self.pending_rows >= 2 * self.row_group_rows:
            for state in self.open.values():
                self._flush(state)

    def _open(self, day, media_type: str) -> dict:
        folder = self.destination.path(self.dataset, f"day={day.isoformat()}",
                                       f"media_type={media_type}")
        number = sum(1 for p in self.paths if p.startswith(folder + "/"))
        path = f"{folder}/part-{self.run}-{number}.parquet"
        if isinstance(self.destination.filesystem, pafs.LocalFileSystem):
            self.destination.filesystem.create_dir(folder, recursive=True)
        self.paths.append(path)
        writer = pq.ParquetWriter(path, self.file_schema, filesystem=self.destination.filesystem,
                                  compression="zstd")
        state = {"writer": writer, "pending": [], "rows": 0}
        self.open[(day, media_type)] = state
        return state

    def _flush(self, state: dict) -> None:
        if state["rows"]:
            state["writer"].write_table(pa.Table.from_batches(state["pending"]),
                                        row_group_size=state["rows"])
            self.pending_rows -= state["rows"]
            state["pending"], state["rows"] = [], 0

    def _close(self, key: tuple) -> None:
        state = self.open.pop(key)
        self._flush(state)
        state["writer"].close()

    def close(self) -> None:
        for key in list(self.open):
            self._close(key)

    def abort(self) -> None:
        """Close what is open and delete this run's files (best effort)."""
        for state in self.open.values():
            with contextlib.suppress(Exception):
                state["writer"].close()
        self.open = {}
        for path in self.paths:
            with contextlib.suppress(OSError):
                self.destination.filesystem.delete_file(path)


# -- watermarks ---------------------------------------------------------------------------------


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def destination_key(url: str, storage_options: dict | None = None) -> str:
    """The key under which ``export_watermarks`` remembers an export destination."""
    return Destination.open(url, storage_options).key


def watermark(catalog: Catalog, destination: str, dataset: str) -> datetime | None:
    table = ExportWatermark.__table__
    with catalog.engine.connect() as conn:
        value = conn.execute(select(table.c.watermark).where(
            table.c.destination == destination, table.c.dataset == dataset)).scalar()
    return _utc(value)


def set_watermark(catalog: Catalog, destination: str, dataset: str, value: datetime) -> None:
    with catalog.engine.begin() as conn:
        catalog._upsert(conn, ExportWatermark.__table__, [{
            "destination": destination, "dataset": dataset,
            "watermark": bind_moment(catalog, value), "updated_at": bind_moment(catalog, utcnow())}],
            ["destination", "dataset"], ["watermark", "updated_at"])
