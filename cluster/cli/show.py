"""``mediafarm show`` and ``mediafarm get``: an asset's outcome and where its renditions are.

Stores stay content-addressed (``sha256/ab/cd/<digest>``, no extension); these commands
are the way from a source file to its renditions, and out of the store with a usable name.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import uuid
from pathlib import Path
from typing import TextIO

from fsspec.implementations.local import LocalFileSystem
from sqlalchemy import select

from catalog import Catalog, scrubs
from catalog.models import Asset
from cluster.cli.catalog_commands import open_catalog
from cluster.cli.options import command_settings
from cluster.cli.report import human_bytes
from cluster.config import Settings
from cluster.farm import with_locations
from cluster.storage.stores import Store, open_stores


def run_show(args: argparse.Namespace) -> int:
    settings = command_settings(args)
    catalog = open_catalog(settings)
    summaries, renditions = lookup(catalog, settings, args.asset, args.owner)
    marked = scrubs.marks(catalog.engine, [s["id"] for s in summaries])
    for index, asset in enumerate(summaries):
        if index:
            print()
        show(asset, renditions, mark=marked.get(asset["id"]))
    return 0


def run_get(args: argparse.Namespace) -> int:
    settings = command_settings(args)
    summaries, renditions = lookup(open_catalog(settings), settings, args.asset, args.owner)
    if len(summaries) > 1:
        raise ValueError(f"{args.asset} was ingested by several owners: name one with --owner")
    written = get(summaries[0], args.preset, renditions, args.output)
    print(f"wrote {written}", file=sys.stderr)
    return 0


def lookup(catalog: Catalog, settings: Settings, name: str,
           owner: str | None = None) -> tuple[list[dict], Store]:
    """The summaries of the assets ``name`` stands for, and the renditions store."""
    renditions = open_stores(settings)["renditions"]
    return with_locations(catalog, renditions, find_assets(catalog, name, owner)), renditions


def find_assets(catalog: Catalog, name: str, owner: str | None = None) -> list[str]:
    """Asset ids for an asset id, a source path or a source URL; ValueError if none."""
    try:
        uuid.UUID(name)
        ids = [name] if catalog.assets([name]) else []
    except ValueError:
        uri = name if "://" in name else LocalFileSystem().unstrip_protocol(
            str(Path(name).expanduser().absolute()))
        query = select(Asset.id).where(Asset.source_uri == uri).order_by(Asset.owner)
        if owner:
            query = query.where(Asset.owner == owner)
        with catalog.engine.connect() as conn:
            ids = list(conn.execute(query).scalars())
    if not ids:
        raise ValueError(f"no asset for {name} in the catalog")
    return ids


def show(summary: dict, renditions: Store, out: TextIO | None = None,
         mark: tuple[str, str] | None = None) -> None:
    """The asset's fields and renditions; ``mark``: what a scrub found wrong with its original."""
    out = out or sys.stdout
    fields = {"asset": summary["id"], "source": summary["source"], "owner": summary["owner"],
              "status": summary["status"], "reason": summary["reason"] or "-",
              "message": summary["message"] or "-", "sha256": summary["sha256"] or "-"}
    if mark:
        fields["scrub"] = f"{mark[0]}: {mark[1]}"
    for name, value in fields.items():
        print(f"{name:<8} {value}", file=out)
    if not summary["renditions"]:
        return
    rows = [("PRESET", "SIZE", "FORMAT", "BYTES", "LOCATION")] + [
        (r["preset"], f"{r['width']}x{r['height']}", r["format"], human_bytes(r["bytes"]),
         location(renditions, r["url"])) for r in summary["renditions"]]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    print("", file=out)
    for row in rows:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:4])) + "  " + row[4],
              file=out)


def location(store: Store, url: str) -> str:
    """A path one can open when the store is a local folder, else the store's URL."""
    path = store.path_of(url) if isinstance(store.fs, LocalFileSystem) else None
    return path or url


def get(summary: dict, preset: str, renditions: Store, target: str | None) -> Path:
    """Copy the rendition out through the store, checking its digest; the file written."""
    found = {r["preset"]: r for r in summary["renditions"]}
    if preset not in found:
        raise ValueError(f"{summary['source']} has no rendition {preset} "
                         f"(it has: {', '.join(found) or 'none'})")
    rendition = found[preset]
    if rendition["url"] != renditions.url_for(rendition["sha256"]):  # an HLS playlist
        raise ValueError(f"{preset} is a streaming package; its files are under "
                         f"{location(renditions, rendition['url']).rsplit('/', 1)[0]}")
    path = Path(target or f"{Path(summary['source']).stem}-{preset}.{rendition['format']}")
    partial = path.with_name(f".{path.name}.partial-{uuid.uuid4().hex[:8]}")
    digest = hashlib.sha256()
    try:
        with renditions.open(rendition["sha256"]) as source, open(partial, "wb") as sink:
            while chunk := source.read(1024 * 1024):
                digest.update(chunk)
                sink.write(chunk)
        if digest.hexdigest() != rendition["sha256"]:
            raise ValueError(f"the stored {preset} rendition of {summary['source']} does not "
                             f"match its digest {rendition['sha256']}; not written")
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return path

