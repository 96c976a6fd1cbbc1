"""Named content-addressed stores over fsspec: local folders, memory, S3 and Cloudflare R2.

Objects live at ``<root>/sha256/ab/cd/<digest>``. Writes are put-if-absent and
never visible half-written: object stores publish a PUT only when it completes,
and local files are written beside their key and renamed into place.

Every store operation is retried through transient errors (lost or refused
connections, timeouts, HTTP 5xx and throttling) with jittered exponential backoff
until a time budget is spent, then ends the asset ``failed`` and retryable: the
policy is ``cluster.storage.retry``.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import hashlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar
from urllib.parse import unquote, urlparse

import fsspec
from fsspec.implementations.local import LocalFileSystem

from cluster.config import Settings, StoreConfig
from cluster.storage.retry import Backoff, retrying
from cluster.storage.staging import Staged, StagingWriter
from pipelines.outcome import Failed
from pipelines.upload.served_source import ServedSource, Serving

log = logging.getLogger(__name__)
T = TypeVar("T")

# S3 clients: bounded waits, and botocore's standard retries (3 requests at most, and a
# quota that stops retrying in a long outage) for quick blips, also for code that uses
# ``Store.fs`` directly. The budget is ours (``Backoff``): s3fs's own loop is turned off.
S3_CONFIG = {"connect_timeout": 5, "read_timeout": 15,
             "retries": {"mode": "standard", "total_max_attempts": 3}}


class Store:
    def __init__(self, name: str, config: StoreConfig, backoff: Backoff | None = None) -> None:
        self.name = name
        self.url = config.url.rstrip("/")
        self.backoff = backoff or Backoff()
        protocol, options, path = _resolve(config)
        if protocol in ("s3", "r2"):
            config_kwargs = {**S3_CONFIG, **options.get("config_kwargs", {})}
            options = {**options, "config_kwargs": config_kwargs}
        self.fs: fsspec.AbstractFileSystem = fsspec.filesystem(protocol, **options)
        if protocol in ("s3", "r2"):
            self.fs.retries = 1  # s3fs's retry loop: one pass, botocore's and ours do the rest
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
        key = self.key(digest)
        return self._io("checking", key, lambda: self.fs.exists(key))

    def put(self, digest: str, data: bytes) -> bool:
        """Store ``data`` under ``digest`` unless it is there already; True if written now.

        Two writers racing on one digest write the same bytes, so either may win; on
        local folders exactly one reports True, on object stores both may.
        """
        key = self.key(digest)
        return self._io("writing", key, lambda: self._put_if_absent(key, data))

    def put_at(self, relative: str, data: bytes) -> bool:
        """Store ``data`` at a path of its own (an HLS package's files), put-if-absent.

        The path names what made the bytes (source digest, preset id), so two writers
        of one path write the same bytes, as with digests.
        """
        key = self._relative_key(relative)
        return self._io("writing", key, lambda: self._put_if_absent(key, data))

    def url_at(self, relative: str) -> str:
        return self.url + self._relative_key(relative)[len(self.root):]

    def get_at(self, relative: str) -> bytes:
        key = self._relative_key(relative)
        return self._io("reading", key, lambda: self.fs.cat_file(key))

    def _relative_key(self, relative: str) -> str:
        parts = relative.split("/")
        if relative.startswith("/") or any(p in ("", ".", "..") for p in parts) or parts[0] == "sha256":
            raise ValueError(f"{relative!r} is not a plain relative path outside sha256/")
        return f"{self.root}/{relative}"

    def _put_if_absent(self, key: str, data: bytes) -> bool:
        return self._publish(key, lambda target: self.fs.pipe_file(target, data))

    def _publish(self, key: str, write) -> bool:
        """``write(target)`` the object at ``key`` unless it is there; True if written now.

        Object stores publish a PUT once it completes (s3fs aborts a failed multipart
        upload), so there ``write`` goes straight to the key. A local file is written
        beside it and linked into place: atomic, and ``link`` fails if the key exists.
        """
        if self.fs.exists(key):
            return False
        if not isinstance(self.fs, LocalFileSystem):
            write(key)
            return True
        self.fs.makedirs(self.fs._parent(key), exist_ok=True)
        partial = f"{key}.partial-{uuid.uuid4().hex}"
        try:
            write(partial)
            os.link(partial, key)
            return True
        except FileExistsError:
            return False
        finally:
            _unlink_if_there(partial)  # also when the write itself failed half-way

    def get(self, digest: str) -> bytes:
        key = self.key(digest)
        return self._io("reading", key, lambda: self.fs.cat_file(key))

    def put_file(self, digest: str, local_path: str) -> bool:
        """Store the local file at ``local_path`` under ``digest``, streamed, put-if-absent.

        As ``put``, but the bytes are copied from disk rather than held in memory;
        the caller vouches that ``digest`` is the SHA-256 of the file.
        """
        key = self.key(digest)
        return self._io("writing", key, lambda: self._publish(key, lambda target: self.fs.put_file(local_path, target)))

    def open(self, digest: str):
        """A binary file object reading the object, for streaming it out.

        Opening is retried; reads from the returned object are not (they may be half done).
        """
        key = self.key(digest)
        return self._io("opening", key, lambda: self.fs.open(key, "rb"))

    def size(self, digest: str) -> int:
        key = self.key(digest)
        return self._io("sizing", key, lambda: int(self.fs.size(key)))

    def delete(self, digest: str) -> bool:
        """Remove the object; True if it was there."""
        key = self.key(digest)
        return self._io("deleting", key, lambda: self._delete(key))

    def _delete(self, key: str) -> bool:
        if not self.fs.exists(key):
            return False
        self.fs.rm_file(key)
        return True

    def delete_at(self, relative: str) -> bool:
        """Remove a keyed object or a folder of them (an HLS package); True if there."""
        key = self._relative_key(relative)
        return self._io("deleting", key, lambda: self._delete_tree(key))

    def _delete_tree(self, key: str) -> bool:
        if not self.fs.exists(key):
            return False
        self.fs.rm(key, recursive=True)
        return True

    def key_at(self, relative: str) -> str:
        """The filesystem path of a keyed object (see ``put_at``), e.g. to presign it."""
        return self._relative_key(relative)

    def within(self, relative: str) -> Store:
        """The same store rooted at a folder inside it: its own ``sha256/`` and keyed paths."""
        inner = copy.copy(self)
        inner.root, inner.url = self._relative_key(relative), f"{self.url}/{relative}"
        return inner

    def digests(self) -> list[str]:
        """Every digest stored; for tests and audits, not for hot paths."""
        base = f"{self.root}/sha256"
        return self._io("listing", base, lambda: self._digests(base))

    def _digests(self, base: str) -> list[str]:
        if not self.fs.exists(base):
            return []
        return sorted(p.rsplit("/", 1)[-1] for p in self.fs.find(base) if ".partial-" not in p)

    def shard_digests(self, shard: str) -> list[str]:
        """The digests stored under ``sha256/<shard>/`` (two hex digits): a listing in 256
        pieces, so a store of any size is walked a piece at a time."""
        if len(shard) != 2 or not all(c in "0123456789abcdef" for c in shard):
            raise ValueError(f"{shard!r} is not two lowercase hex digits")
        base = f"{self.root}/sha256/{shard}"
        return [d for d in self._io("listing", base, lambda: self._digests(base))
                if len(d) == 64 and all(c in "0123456789abcdef" for c in d)]

    def hash(self, digest: str) -> str | None:
        """The SHA-256 of the object's bytes as stored, read in blocks (never whole in
        memory); None when there is no object. A read cut off is read again from the start."""
        key = self.key(digest)

        def read() -> str | None:
            if not self.fs.exists(key):
                return None
            sha = hashlib.sha256()
            with self.fs.open(key, "rb", block_size=STREAM_BLOCK) as handle:
                while chunk := handle.read(STREAM_BLOCK):
                    sha.update(chunk)
            return sha.hexdigest()
        try:
            return self._io("hashing", key, read)
        except FileNotFoundError:  # gone between the look and the read
            return None

    # Streaming: an object written chunk by chunk to a staging key, then promoted.

    def writer(self) -> StagingWriter:
        """A fresh staging object to write chunk by chunk, hashing what it takes.

        Staging objects live under ``staging/``, never under ``sha256/``: nothing reads
        them as content. Writes are not retried (a half-sent stream cannot resume: the
        caller starts again from its source); ``abort`` removes what was written.
        """
        key = f"{self.root}/{STAGING}/{uuid.uuid4().hex}"
        if isinstance(self.fs, LocalFileSystem):
            self.fs.makedirs(self.fs._parent(key), exist_ok=True)
            handle = open(key, "wb")
        else:
            handle = self._io("opening", key, lambda: self.fs.open(key, "wb", block_size=STREAM_BLOCK))
        return StagingWriter(self.name, self.fs, key, handle)

    def put_stream(self, chunks: Iterable[bytes]) -> Staged:
        """Write ``chunks`` to a staging object; what was written, with its size and SHA-256."""
        writer = self.writer()
        try:
            for chunk in chunks:
                writer.write(chunk)
            return writer.commit()
        except BaseException:
            writer.abort()
            raise

    def promote(self, staged: Staged, digest: str | None = None) -> bool:
        """Publish a staging object under its digest, put-if-absent; True if written now.

        Local folders link the staging file into place (atomic; fails if the key is
        there); object stores copy server-side (multipart past 5 GB) and check the
        copy's size. The staging object is removed whatever happens.
        """
        key = self.key(digest or staged.sha256)
        try:
            return self._io("publishing", key, lambda: self._promote(staged, key))
        finally:
            try:
                self.discard(staged)
            except Failed as exc:  # the outcome stands; a sweep of staging/ finds it later
                log.warning("could not remove %s: %s", staged.key, exc)

    def _promote(self, staged: Staged, key: str) -> bool:
        if self.fs.exists(key):
            return False
        if isinstance(self.fs, LocalFileSystem):
            self.fs.makedirs(self.fs._parent(key), exist_ok=True)
            try:
                os.link(staged.key, key)
            except FileExistsError:
                return False
            return True
        self.fs.copy(staged.key, key)
        size = int(self.fs.size(key))
        if size != staged.size:
            self.fs.rm_file(key)
            raise OSError(errno.EIO, f"the copy of {staged.key} has {size} bytes, not {staged.size}")
        return True

    def discard(self, staged: Staged) -> None:
        """Remove a staging object; nothing if it is gone already."""
        self._io("removing", staged.key, lambda: self._delete(staged.key))

    def open_staged(self, staged: Staged):
        """A binary file object reading a staging object."""
        return self._io("opening", staged.key, lambda: self.fs.open(staged.key, "rb"))

    def read_staged(self, staged: Staged) -> bytes:
        """A staging object's bytes, whole: for small objects only (images under their limit)."""
        return self._io("reading", staged.key, lambda: self.fs.cat_file(staged.key))

    def readable(self, digest: str) -> contextlib.AbstractContextManager[str | ServedSource]:
        """The object for a sandboxed decoder, while in a ``with``: its path where the store is
        a local folder, else served to the child range by range (``served_source``). The child
        holds no credentials and opens no connection, and nothing is copied to scratch disk:
        only the ranges the demuxer reads cross the network."""
        return self._readable(self.key(digest), lambda: self.size(digest))

    def readable_staged(self, staged: Staged) -> contextlib.AbstractContextManager[str | ServedSource]:
        """As ``readable``, for a staging object."""
        return self._readable(staged.key, lambda: staged.size)

    def _readable(self, key: str, size: Callable[[], int]):
        if isinstance(self.fs, LocalFileSystem):
            return contextlib.nullcontext(key)
        known = size()
        return Serving(lambda: _RangeReader(self, key, known), known)

    def download(self, digest: str, destination: str) -> str:
        """Copy the object to a local file, streamed in blocks (never whole in memory)."""
        key = self.key(digest)

        def fetch() -> str:
            with self.fs.open(key, "rb", block_size=STREAM_BLOCK) as source, \
                    open(destination, "wb") as target:
                while chunk := source.read(STREAM_BLOCK):
                    target.write(chunk)
            return destination
        return self._io("downloading", key, fetch)

    def staging_keys(self) -> list[str]:
        """Staging objects left behind (a worker lost mid-stream); for clean-up jobs and tests."""
        base = f"{self.root}/{STAGING}"
        return self._io("listing", base, lambda: self.fs.find(base) if self.fs.exists(base) else [])

    def sweep_staging(self, older_than_s: float) -> int:
        """Remove what a lost worker left under ``staging/`` more than ``older_than_s`` ago:
        finished staging objects and, on S3/R2, unfinished multipart uploads (whose parts
        S3 keeps and bills until someone aborts them). A live pass keeps writing, so its
        object's time stays fresh; returns how many went."""
        cutoff = time.time() - older_than_s
        removed = 0
        for key in self.staging_keys():
            try:
                modified = self.fs.modified(key).timestamp()
            except FileNotFoundError:
                continue
            if modified < cutoff:
                self._io("removing", key, lambda key=key: self._delete(key))
                removed += 1
        if not isinstance(self.fs, LocalFileSystem) and hasattr(self.fs, "call_s3"):
            removed += self._abort_staging_uploads(cutoff)
        return removed

    def _abort_staging_uploads(self, cutoff: float) -> int:
        bucket, prefix, _ = self.fs.split_path(f"{self.root}/{STAGING}/")
        aborted, markers = 0, {}
        while True:
            page = self._io("listing multipart uploads", prefix, lambda: self.fs.call_s3(
                "list_multipart_uploads", Bucket=bucket, Prefix=prefix, **markers))
            for upload in page.get("Uploads", []):
                if upload["Initiated"].timestamp() >= cutoff:
                    continue
                with contextlib.suppress(FileNotFoundError):
                    self._io("aborting a multipart upload", upload["Key"], lambda u=upload: (
                        self.fs.call_s3("abort_multipart_upload", Bucket=bucket,
                                        Key=u["Key"], UploadId=u["UploadId"])))
                    aborted += 1
            if not page.get("IsTruncated"):
                return aborted
            markers = {"KeyMarker": page["NextKeyMarker"],
                       "UploadIdMarker": page["NextUploadIdMarker"]}

    def _io(self, verb: str, key: str, call: Callable[[], T]) -> T:
        """Run one store operation through the retry policy; see ``retrying``."""
        where = f"the {self.name} store ({self.url})"
        return retrying(f"{verb} {key[len(self.root) + 1:] or key} in {where}", call, self.backoff,
                        store=self.name)


STAGING = "staging"
# Blocks of a streamed write or read: an S3 multipart part (at most 10,000 parts: 160 GiB).
STREAM_BLOCK = 16 * 1024 * 1024
# Read-ahead of an object served to a decoder: each ranged GET fetches this much more.
SERVE_BLOCK = 32 * 1024 * 1024


class _RangeReader:
    """One served connection's reads of ``key``: read ahead in large blocks, each read
    retried through the store's policy (a ranged read is safe to repeat)."""

    def __init__(self, store: Store, key: str, size: int) -> None:
        self._store, self._key = store, key
        # The size is known already: given, the file asks no HEAD of the store per connection.
        self._file = store._io("opening", key, lambda: store.fs.open(
            key, "rb", block_size=SERVE_BLOCK, cache_type="readahead", size=size))

    def read_at(self, offset: int, length: int) -> bytes:
        def read() -> bytes:
            self._file.seek(offset)
            return self._file.read(length)
        return self._store._io("reading", self._key, read)

    def close(self) -> None:
        self._file.close()


def _resolve(config: StoreConfig) -> tuple[str, dict, str]:
    """(fsspec protocol, storage options, path) for a store URL (``r2://``: ``cluster.storage.r2``)."""
    parsed = urlparse(config.url)
    options = dict(config.options)
    if parsed.scheme in ("", "file", "local"):
        return "file", options, unquote(parsed.path) if parsed.scheme == "file" else config.url
    return parsed.scheme, options, parsed.netloc + parsed.path


def open_source(uri: str, stores: Iterable[Store]):
    """A binary file object for a source: inside a configured store it opens with that
    store's options (``r2://`` and percent-encoded ``file://`` URLs need them); any other
    URL through plain fsspec."""
    for store in stores:
        path = store.path_of(uri)
        if path is not None:
            return store.fs.open(path, "rb")
    return fsspec.open(uri, "rb").open()


def source_location(uri: str, stores: Iterable[Store]) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem and path of a source, as ``open_source`` resolves them (for ``info``)."""
    for store in stores:
        path = store.path_of(uri)
        if path is not None:
            return store.fs, path
    fs, path = fsspec.core.url_to_fs(uri)
    return fs, path


def open_stores(settings: Settings) -> dict[str, Store]:
    backoff = Backoff(budget_s=settings.storage_retry_s)
    return {name: Store(name, config, backoff) for name, config in settings.stores.items()}


def store_named(stores: Mapping[str, Store], name: str) -> Store:
    """The store a blob row names; one recorded under a name no longer configured is looked
    for where its kind lives by default."""
    return stores.get(name) or stores["originals" if name == "originals" else "renditions"]


def _unlink_if_there(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
