"""Staging objects: one object of a store written chunk by chunk, counted and hashed on
the way, then promoted to its content-addressed key or discarded (``Store.writer``)."""

from __future__ import annotations

import errno
import hashlib
from dataclasses import dataclass

import fsspec


@dataclass(frozen=True)
class Staged:
    """A staging object written by ``Store.writer``: where, how many bytes, their SHA-256."""

    store: str
    key: str
    size: int
    sha256: str


class StagingWriter:
    """Writes one staging object chunk by chunk, counting and hashing; see ``Store.writer``."""

    def __init__(self, store_name: str, fs: fsspec.AbstractFileSystem, key: str, handle) -> None:
        self.store_name, self.fs, self.key, self._handle = store_name, fs, key, handle
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self._handle.write(chunk)
        self._hash.update(chunk)
        self.size += len(chunk)

    def commit(self) -> Staged:
        """Finish the object (an S3 multipart upload completes here) and check its size."""
        self._handle.close()
        size = int(self.fs.size(self.key))
        if size != self.size:
            raise OSError(errno.EIO, f"the staging object {self.key} has {size} bytes; "
                                     f"{self.size} were written")
        return Staged(self.store_name, self.key, self.size, self._hash.hexdigest())

    def abort(self) -> None:
        """Drop what was written (an S3 multipart upload is aborted); never raises."""
        try:
            if hasattr(self._handle, "discard") and not self._handle.closed:
                self._handle.discard()
                self._handle.closed = True  # or its finaliser would try to finish the upload
            else:
                self._handle.close()
        except Exception:  # noqa: BLE001 - the write failed already; the object goes below
            pass
        try:
            self.fs.rm_file(self.key)
        except Exception:  # noqa: BLE001 - a sweep of staging/ finds it later
            pass
