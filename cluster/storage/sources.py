"""Turn what a user names (paths, folders, globs, fsspec URLs) into asset requests."""

from __future__ import annotations

import glob
import uuid
from collections.abc import Iterable
from pathlib import Path

import fsspec

from catalog.records import AssetRequest

# Asset ids derive from (owner, source): re-submitting a source finds its asset.
_NAMESPACE = uuid.UUID("6f0b7a4e-2f41-5d3c-9a57-6d656469616d")


class SourceError(ValueError):
    """A source the user named does not exist or cannot be listed."""


def asset_id(owner: str, source_uri: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{owner}\0{source_uri}"))


def expand(sources: Iterable[str], owner: str = "default") -> list[AssetRequest]:
    """One request per file, in a stable order; folders are walked, hidden files skipped.

    A source is a local path, a folder, a glob (``photos/*.jpg``) or an fsspec URL.
    """
    found: dict[str, str | None] = {}
    for source in sources:
        for uri, info in _expand_one(source):
            found.setdefault(uri, _fingerprint(info))
    return [AssetRequest(asset_id(owner, uri), owner, uri, fingerprint)
            for uri, fingerprint in found.items()]


def _expand_one(source: str) -> list[tuple[str, dict]]:
    if "://" not in source:
        path = Path(source).expanduser()
        if not path.exists() and not glob.has_magic(source):
            raise SourceError(f"{source}: no such file or directory")
        source = str(path.absolute())  # a plain path: fsspec does not unquote file:// URLs
    fs, _, paths = fsspec.get_fs_token_paths(source)
    if not paths:
        raise SourceError(f"{source}: nothing matches")
    files: list[tuple[str, dict]] = []
    for path in paths:
        try:
            info = fs.info(path)
        except FileNotFoundError as exc:
            raise SourceError(f"{source}: no such file or object") from exc
        if info["type"] == "directory":
            listing = fs.find(path, detail=True)
            files.extend((p, i) for p, i in sorted(listing.items()) if not _hidden(p, path))
        elif not (glob.has_magic(source) and path.rsplit("/", 1)[-1].startswith(".")):
            files.append((path, info))  # a glob skips dot-files, as a folder walk does
    if not files:
        raise SourceError(f"{source}: the folder holds no files")
    return [(fs.unstrip_protocol(p), info) for p, info in files]


def _hidden(path: str, root: str) -> bool:
    return any(part.startswith(".") for part in path[len(root):].split("/"))


def _fingerprint(info: dict) -> str | None:
    changed = info.get("mtime") or info.get("LastModified") or info.get("ETag") or info.get("created")
    return f"{info.get('size')}:{changed}" if changed is not None else None
