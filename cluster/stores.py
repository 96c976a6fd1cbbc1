"""Named content-addressed stores over fsspec: local folders, memory, S3 and Cloudflare R2.

Objects live at ``<root>/sha256/ab/cd/<digest>``. Writes are put-if-absent and
never visible half-written: object stores publish a PUT only when it completes,
and local files are written beside their key and renamed into place.
"""

from __future__ import annotations

import os
import shutil
import uuid
from urllib.parse import unquote, urlparse

import fsspec
from fsspec.implementations.local import LocalFileSystem

from cluster.config import Settings, StoreConfig


class Store:
    def __init__(self, name: str, config: StoreConfig) -> None:
        self.name = name
        self.url = config.url.rstrip("/")
        protocol, options, path = _resolve(config)
        self.fs: fsspec.AbstractFileSystem = fsspec.filesystem(protocol, **options)
        self.root = path.rstrip("/")

    def key(self, digest: str) -> str:
        if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
            raise ValueError(f"{digest!r} is not a lowercase hex SHA-256 digest")
        return f"{self.root}/sha256/{digest[:2]}/{digest[2:4]}/{digest}"

    def url_for(self, digest: str) -> str:
        """The object's URL in the store's own scheme (``file://``, ``s3://``, ``r2://``)."""
        return self.url + self.key(digest)[len(self.root):]

    def path_of(self, url: str) -> str | None:
        """The filesystem path of a URL inside this store, or None when it lies elsewhere.

        Store URLs (``r2://…``, percent-encoded ``file://…``) are only meaningful with
        the store's own options; plain fsspec cannot open them.
        """
        if not url.startswith(self.url + "/"):
            return None
        relative = url[len(self.url) + 1:]
        if relative.startswith("sha256/"):
            return self.key(relative.rsplit("/", 1)[-1])
        return self._relative_key(relative)

    def exists(self, digest: str) -> bool:
        return self.fs.exists(self.key(digest))

    def put(self, digest: str, data: bytes) -> bool:
        """Store ``data`` under ``digest`` unless it is there already; True if written now.

        Two writers racing on one digest write the same bytes, so either may win; on
        local folders exactly one reports True, on object stores both may.
        """
        return self._put_if_absent(self.key(digest), data)

    def put_at(self, relative: str, data: bytes) -> bool:
        """Store ``data`` at a path of its own (an HLS package's files), put-if-absent.

        The path names what made the bytes (source digest, preset id), so two writers
        of one path write the same bytes, as with digests.
        """
        return self._put_if_absent(self._relative_key(relative), data)

    def url_at(self, relative: str) -> str:
        return self.url + self._relative_key(relative)[len(self.root):]

    def get_at(self, relative: str) -> bytes:
        return self.fs.cat_file(self._relative_key(relative))

    def _relative_key(self, relative: str) -> str:
        parts = relative.split("/")
        if relative.startswith("/") or any(p in ("", ".", "..") for p in parts) or parts[0] == "sha256":
            raise ValueError(f"{relative!r} is not a plain relative path outside sha256/")
        return f"{self.root}/{relative}"

    def _put_if_absent(self, key: str, data: bytes) -> bool:
        if self.fs.exists(key):
            return False
        if not isinstance(self.fs, LocalFileSystem):
            self.fs.pipe_file(key, data)
            return True
        self.fs.makedirs(self.fs._parent(key), exist_ok=True)
        partial = f"{key}.partial-{uuid.uuid4().hex}"
        self.fs.pipe_file(partial, data)
        try:
            os.link(partial, key)  # atomic, and fails if the key exists: put-if-absent
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(partial)

    def get(self, digest: str) -> bytes:
        return self.fs.cat_file(self.key(digest))

    def put_file(self, digest: str, local_path: str) -> bool:
        """Store the local file at ``local_path`` under ``digest``, streamed, put-if-absent.

        As ``put``, but the bytes are copied from disk rather than held in memory;
        the caller vouches that ``digest`` is the SHA-256 of the file.
        """
        key = self.key(digest)
        if self.fs.exists(key):
            return False
        if not isinstance(self.fs, LocalFileSystem):
            self.fs.put_file(local_path, key)  # object stores publish a PUT once it completes
            return True
        self.fs.makedirs(self.fs._parent(key), exist_ok=True)
        partial = f"{key}.partial-{uuid.uuid4().hex}"
        shutil.copyfile(local_path, partial)
        try:
            os.link(partial, key)
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(partial)

    def open(self, digest: str):
        """A binary file object reading the object, for streaming it out."""
        return self.fs.open(self.key(digest), "rb")

    def size(self, digest: str) -> int:
        return int(self.fs.size(self.key(digest)))

    def delete(self, digest: str) -> bool:
        """Remove the object; True if it was there."""
        key = self.key(digest)
        if not self.fs.exists(key):
            return False
        self.fs.rm_file(key)
        return True

    def key_at(self, relative: str) -> str:
        """The filesystem path of a keyed object (see ``put_at``), e.g. to presign it."""
        return self._relative_key(relative)

    def digests(self) -> list[str]:
        """Every digest stored; for tests and audits, not for hot paths."""
        base = f"{self.root}/sha256"
        if not self.fs.exists(base):
            return []
        return sorted(p.rsplit("/", 1)[-1] for p in self.fs.find(base) if ".partial-" not in p)


def _resolve(config: StoreConfig) -> tuple[str, dict, str]:
    """(fsspec protocol, storage options, path) for a store URL; ``r2://`` is S3 at Cloudflare."""
    parsed = urlparse(config.url)
    options = dict(config.options)
    if parsed.scheme == "r2":
        account = options.pop("account_id", None)
        client_kwargs = dict(options.pop("client_kwargs", {}))
        endpoint = options.pop("endpoint_url", None) or (
            account and f"https://{account}.r2.cloudflarestorage.com")
        if not endpoint:
            raise ValueError(f"store {config.url}: an r2:// store needs 'account_id' or 'endpoint_url'")
        client_kwargs.setdefault("endpoint_url", endpoint)
        client_kwargs.setdefault("region_name", "auto")
        return "s3", {**options, "client_kwargs": client_kwargs}, parsed.netloc + parsed.path
    if parsed.scheme in ("", "file", "local"):
        return "file", options, unquote(parsed.path) if parsed.scheme == "file" else config.url
    protocol = parsed.scheme
    return protocol, options, parsed.netloc + parsed.path


def open_stores(settings: Settings) -> dict[str, Store]:
    return {name: Store(name, config) for name, config in settings.stores.items()}
