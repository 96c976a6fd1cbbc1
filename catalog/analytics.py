"""Views over a Parquet export (``catalog.export``), computed with pyarrow.

Each function takes the export's URL (and the storage options it was written with)
and returns a small ``pyarrow.Table``. The datasets are change logs, so every view
first keeps each row's latest exported state (``load``). ``docs/analytics.md`` has the
same views as DuckDB SQL.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from catalog.export import CHANGE_COLUMN, KEYS, SCHEMAS, open_dataset


def load(url: str, dataset: str, storage_options: dict | None = None, *,
         latest: bool = True) -> pa.Table:
    """Read one exported dataset; with ``latest``, each row's most recent state only."""
    table = open_dataset(url, dataset, storage_options).to_table()
    return latest_rows(table, KEYS[dataset], CHANGE_COLUMN[dataset]) if latest else table


def latest_rows(table: pa.Table, keys: tuple[str, ...], change: str) -> pa.Table:
    """Keep, for each key, the row with the greatest ``change`` value."""
    if table.num_rows == 0:
        return table
    ordered = table.sort_by([(change, "ascending")])
    ordered = ordered.append_column("__row", pa.array(np.arange(ordered.num_rows)))
    picks = ordered.group_by(list(keys), use_threads=False).aggregate([("__row", "max")])
    rows = picks["__row_max"]
    return ordered.take(rows.take(pc.sort_indices(rows))).drop_columns(["__row"])


def storage_by_store(url: str, storage_options: dict | None = None) -> pa.Table:
    """Objects and bytes held, by store and media type (each stored object counted once).

    Columns: store, media_type, content_type, objects, bytes.
    """
    wanted = ["sha256", "store", "media_type", "content_type", "bytes"]
    assets = load(url, "assets", storage_options)
    versions = load(url, "asset_versions", storage_options)
    renditions = load(url, "renditions", storage_options)
    parts = [
        assets.select(["sha256", "store", "media_type", "content_type", "size_bytes"]),
        versions.select(["blob_sha256", "store", "media_type", "content_type", "size_bytes"]),
        renditions.select(["output_sha256", "store", "media_type", "content_type", "bytes"]),
    ]
    objects = pa.concat_tables([
        pa.table([part.column(i).cast(pa.int64() if i == 4 else pa.string()) for i in range(5)],
                 names=wanted) for part in parts])
    objects = objects.filter(pc.and_(pc.is_valid(objects["sha256"]), pc.is_valid(objects["store"])))
    unique = objects.group_by(wanted[:4]).aggregate([("bytes", "max")])
    result = unique.group_by(["store", "media_type", "content_type"]).aggregate(
        [("sha256", "count"), ("bytes_max", "sum")])
    result = result.rename_columns({"sha256_count": "objects", "bytes_max_sum": "bytes"})
    return _sorted(result.select(["store", "media_type", "content_type", "objects", "bytes"]),
                   ["store", "media_type", "content_type"])


def bytes_saved(url: str, storage_options: dict | None = None) -> pa.Table:
    """Original bytes against rendition bytes, by rendition format and preset.

    Columns: format, preset, renditions, original_bytes (the originals' sizes summed over
    the renditions made from them), rendition_bytes, saved_bytes, ratio
    (rendition_bytes / original_bytes).
    """
    renditions = load(url, "renditions", storage_options)
    renditions = renditions.filter(pc.is_valid(renditions["source_bytes"]))
    result = renditions.group_by(["format", "preset"]).aggregate(
        [("bytes", "count"), ("source_bytes", "sum"), ("bytes", "sum")])
    original = result["source_bytes_sum"]
    rendition = result["bytes_sum"]
    result = pa.table({
        "format": result["format"], "preset": result["preset"],
        "renditions": result["bytes_count"], "original_bytes": original,
        "rendition_bytes": rendition, "saved_bytes": pc.subtract(original, rendition),
        "ratio": pc.divide(pc.cast(rendition, pa.float64()), pc.cast(original, pa.float64())),
    })
    return _sorted(result, ["format", "preset"])


def stage_throughput(url: str, storage_options: dict | None = None) -> pa.Table:
    """How long each stage takes and how many items it gets through.

    Columns: stage, runs, failed (runs that ended rejected or failed), p50_ms, p90_ms,
    mean_ms (duration_ms quantiles, linear interpolation), items_per_s (runs over the wall
    time from the stage's first start to its last end, across the cluster) and
    items_per_worker_s (1000 / mean_ms: one worker's rate).
    """
    runs = load(url, "stage_runs", storage_options)
    rows = []
    for stage in sorted(pc.unique(runs["stage"]).to_pylist()):
        of_stage = runs.filter(pc.equal(runs["stage"], stage))
        duration = of_stage["duration_ms"]
        p50, p90 = pc.quantile(duration, q=[0.5, 0.9], interpolation="linear").to_pylist()
        mean = pc.mean(duration).as_py()
        span = (pc.max(of_stage["finished_at"]).as_py()
                - pc.min(of_stage["started_at"]).as_py()).total_seconds()
        failed = pc.sum(pc.is_in(of_stage["status"], pa.array(["rejected", "failed"]))).as_py()
        rows.append({"stage": stage, "runs": of_stage.num_rows, "failed": failed or 0,
                     "p50_ms": p50, "p90_ms": p90, "mean_ms": mean,
                     "items_per_s": of_stage.num_rows / span if span > 0 else None,
                     "items_per_worker_s": 1000 / mean if mean else None})
    return pa.Table.from_pylist(rows, schema=pa.schema([
        ("stage", pa.string()), ("runs", pa.int64()), ("failed", pa.int64()),
        ("p50_ms", pa.float64()), ("p90_ms", pa.float64()), ("mean_ms", pa.float64()),
        ("items_per_s", pa.float64()), ("items_per_worker_s", pa.float64())]))


def failure_classes(url: str, storage_options: dict | None = None, *,
                    include_ready: bool = False) -> pa.Table:
    """Assets by source media type, status and reason (rejected and failed only, by default).

    Columns: media_type (of the original; ``unknown`` when the asset stopped before its bytes
    were typed), source_extension, status, reason, assets, share (of that media type's assets).
    """
    assets = load(url, "assets", storage_options)
    totals = assets.group_by(["media_type"]).aggregate([("asset_id", "count")])
    if not include_ready:
        assets = assets.filter(pc.is_in(assets["status"], pa.array(["rejected", "failed"])))
    keys = ["media_type", "source_extension", "status", "reason"]
    counts = assets.group_by(keys).aggregate([("asset_id", "count")])
    counts = counts.join(totals.rename_columns({"asset_id_count": "total"}), "media_type")
    result = pa.table({
        **{k: counts[k] for k in keys}, "assets": counts["asset_id_count"],
        "share": pc.divide(pc.cast(counts["asset_id_count"], pa.float64()),
                           pc.cast(counts["total"], pa.float64()))})
    return _sorted(result, keys)


_SCAN_DETAILS = pa.schema([("engine", pa.string()), ("signatures_version", pa.string()),
                           ("clean", pa.bool_()), ("signature", pa.string())])


def scan_results(url: str, storage_options: dict | None = None) -> pa.Table:
    """Scans by scanner engine and signature database version, and what they found.

    Columns: engine, signatures_version, status (of the scan stage: ok, rejected, failed),
    clean (a clean verdict), signature (what was found, null when clean or no verdict), scans.
    Scans that got no verdict (clamd unreachable) have a null engine.
    """
    runs = load(url, "stage_runs", storage_options)
    scans = runs.filter(pc.equal(runs["stage"], "scan"))
    details = _parse_json(pc.fill_null(scans["details"], "{}"), _SCAN_DETAILS)
    table = pa.table({"engine": details["engine"],
                      "signatures_version": details["signatures_version"],
                      "status": scans["status"],
                      "clean": pc.fill_null(details["clean"], False),
                      "signature": details["signature"],
                      "asset_id": scans["asset_id"]})
    keys = ["engine", "signatures_version", "status", "clean", "signature"]
    result = table.group_by(keys).aggregate([("asset_id", "count")])
    return _sorted(result.rename_columns({"asset_id_count": "scans"}).select([*keys, "scans"]),
                   keys)


def _parse_json(texts: pa.ChunkedArray, schema: pa.Schema) -> pa.Table:
    if len(texts) == 0:
        return schema.empty_table()
    # JSON text from the catalog is one line each (json.dumps escapes newlines).
    lines = "\n".join(texts.to_pylist())
    options = pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    return pajson.read_json(pa.BufferReader(lines.encode()), parse_options=options)


def _sorted(table: pa.Table, keys: list[str]) -> pa.Table:
    return table.sort_by([(k, "ascending") for k in keys]).combine_chunks()


__all__ = ["SCHEMAS", "bytes_saved", "failure_classes", "latest_rows", "load", "scan_results",
           "stage_throughput", "storage_by_store"]
