"""Where a resumable (tus 1.0) upload's bytes go, and its state in the catalog.

Written here rather than taken from a library: the Python tus servers there are
(tuspyserver, fastapi-tusd, resumable-upload) keep uploads in a local folder or a store
of their own with JSON or SQLite side files, and none has owners: an upload id is the
only key, so any token could resume, read or delete any upload. The farm needs the
bytes in its ``buffer`` store (a local folder, or S3/R2 through s3fs) inside the owner's
area, the state in the catalog (PostgreSQL) so that a restarted or another server
process resumes it, and the endpoint's tokens, limits and error shape. The protocol
itself is small (``cluster.http.routes.tus``); its storage is this module.

Bytes land where the finished upload will be read from, ``owners/<owner key>/tus/<id>``
in the buffer store:

- **local folder**: one file, appended in place. Each checkpoint flushes and fsyncs it
  before the catalog's offset moves; a PATCH starts by truncating the file to the
  catalog's offset, so bytes written before a crash but never recorded are dropped.
- **S3 / R2**: one S3 multipart upload to that key. Parts are ``part_size`` bytes
  (at least 8 MiB, and enough for 10,000 parts to hold the whole length); their numbers
  and ETags are recorded in the catalog as each is written. Bytes that do not fill a
  part when a PATCH ends (or its connection drops) go to a tail object beside the key
  (``<key>.tail``), and the catalog records how many of its bytes count; the next PATCH
  reads them back and sends them with the first part it fills. The last part may be
  short; completing the multipart upload with the recorded list makes the object.

The catalog's ``offset`` (parts written plus counted tail bytes, or the file's fsync'd
length) is what the server reports to a resuming client. A request writes to an upload
only while it holds the upload's lease (``lease``), so two PATCHes never interleave.
"""

from __future__ import annotations

import base64
import binascii
import errno
import hashlib
import logging
import math
import os
import uuid
from datetime import datetime, timedelta
from typing import Protocol

from fsspec.implementations.local import LocalFileSystem
from sqlalchemy import Engine, delete, or_, select, update

from catalog.models import TusUpload
from catalog.repository import utcnow
from cluster.http.errors import ApiError
from cluster.http.upload_store import owner_area, presigns
from cluster.storage.retry import retrying
from cluster.storage.stores import Store

log = logging.getLogger(__name__)

VERSION = "1.0.0"
EXTENSIONS = ("creation", "creation-with-upload", "termination", "checksum", "expiration")
CHECKSUMS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha512": hashlib.sha512}
MIN_PART = 8 * 1024 * 1024   # above S3's 5 MiB floor for every part but the last
MAX_PARTS = 10_000           # S3's ceiling
MAX_METADATA = 4096          # bytes of Upload-Metadata
LEASE_S = 30                 # a writer renews its lease well before this passes
RECEIVING, ASSEMBLING, COMPLETED, EXPIRED = "receiving", "assembling", "completed", "expired"
# Errors of a full or over-quota disk: the upload fails (507), the server carries on.
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


# -- headers ----------------------------------------------------------------------------------


def parse_metadata(header: str | None) -> dict[str, str]:
    """``Upload-Metadata`` (``key base64,key base64``) as text; 400 for anything malformed."""
    if not header:
        return {}
    if len(header) > MAX_METADATA:
        raise ApiError(400, "invalid_metadata", f"Upload-Metadata is longer than {MAX_METADATA} bytes")
    found: dict[str, str] = {}
    for pair in header.split(","):
        key, _, value = pair.strip().partition(" ")
        if (not key or " " in value.strip() or key in found
                or any(ord(c) < 33 or ord(c) > 126 for c in key)):
            raise ApiError(400, "invalid_metadata",
                           "Upload-Metadata is comma-separated 'key base64value' pairs with "
                           "distinct printable ASCII keys")
        try:
            text = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise ApiError(400, "invalid_metadata",
                           f"the Upload-Metadata value of {key!r} is not base64 of UTF-8 text") from None
        if "\x00" in text:
            raise ApiError(400, "invalid_metadata", "Upload-Metadata values must not contain NUL")
        found[key] = text
    return found


def encode_metadata(metadata: dict[str, str]) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" if v else k
                    for k, v in metadata.items())


def parse_checksum(header: str | None):
    """``Upload-Checksum`` (``algorithm base64digest``) as (a new hash object, the digest)."""
    if header is None:
        return None
    algorithm, _, value = header.strip().partition(" ")
    if algorithm.lower() not in CHECKSUMS:
        raise ApiError(400, "unsupported_checksum",
                       f"Upload-Checksum algorithms: {', '.join(CHECKSUMS)}")
    try:
        digest = base64.b64decode(value.strip(), validate=True)
    except binascii.Error:
        raise ApiError(400, "invalid_checksum", "the Upload-Checksum value is not base64") from None
    hasher = CHECKSUMS[algorithm.lower()]()
    if len(digest) != hasher.digest_size:
        raise ApiError(400, "invalid_checksum",
                       f"a {algorithm} digest is {hasher.digest_size} bytes, not {len(digest)}")
    return hasher, digest


def number(header: str | None, name: str) -> int | None:
    """A non-negative integer header (Upload-Length, Upload-Offset); 400 if malformed."""
    if header is None:
        return None
    if not (header.isascii() and header.isdigit()) or len(header) > 19:  # not "³" (latin-1)
        raise ApiError(400, f"invalid_{name.lower().replace('-', '_')}",
                       f"{name} must be a non-negative integer")
    return int(header)


def part_size(length: int) -> int:
    """Parts big enough that ``length`` fits in S3's 10,000, whole MiB, at least ``MIN_PART``."""
    mib = 1024 * 1024
    return max(MIN_PART, math.ceil(length / MAX_PARTS / mib) * mib)


# -- catalog ----------------------------------------------------------------------------------


def create(engine: Engine, buffer: Store, owner: str, length: int, metadata: dict[str, str],
           expires_s: int) -> dict:
    """A new upload of ``length`` bytes for ``owner``: its bytes' place made, its row written."""
    upload_id = str(uuid.uuid4())
    area = owner_area(buffer, owner)
    key = area.key_at(f"tus/{upload_id}")[len(buffer.root) + 1:]
    row = {"id": upload_id, "owner": owner, "key": key, "length": length, "offset": 0,
           "upload_metadata": metadata, "tail_size": 0, "status": RECEIVING,
           "expires_at": utcnow() + timedelta(seconds=expires_s)}
    path = buffer.key_at(key)
    if presigns(buffer):
        bucket, object_key, _ = buffer.fs.split_path(path)
        made = s3_call(buffer, "starting a multipart upload", "create_multipart_upload",
                   Bucket=bucket, Key=object_key)
        row.update(part_size=part_size(length), multipart_id=made["UploadId"], parts=[])
    else:
        try:
            buffer.fs.makedirs(buffer.fs._parent(path), exist_ok=True)
            with open(path, "xb"):
                pass
        except OSError as exc:
            raise _storage_error(exc) from exc
    with engine.begin() as conn:
        conn.execute(TusUpload.__table__.insert().values(**row))
    return row


def find(engine: Engine, owner: str, upload_id: str) -> dict | None:
    """The owner's upload, while it can still be used (another owner's is not found)."""
    with engine.connect() as conn:
        row = conn.execute(select(TusUpload.__table__).where(
            TusUpload.id == upload_id, TusUpload.owner == owner)).first()
    if row is None:
        return None
    found = dict(row._mapping)
    if found["status"] == EXPIRED or (found["status"] == RECEIVING and expired(found)):
        return None
    return found


def expired(row: dict, now: datetime | None = None) -> bool:
    expires = row["expires_at"]
    if expires.tzinfo is None:  # SQLite hands back naive UTC
        expires = expires.replace(tzinfo=(now or utcnow()).tzinfo)
    return expires < (now or utcnow())


def take_lease(engine: Engine, owner: str, upload_id: str, holder: str) -> bool:
    """Hold the upload for one writer for ``LEASE_S`` (renewed by ``commit``); False if held."""
    now = utcnow()
    with engine.begin() as conn:
        won = conn.execute(update(TusUpload.__table__).where(
            TusUpload.id == upload_id, TusUpload.owner == owner,
            TusUpload.status.in_((RECEIVING, ASSEMBLING)),
            or_(TusUpload.lease_until.is_(None), TusUpload.lease_until < now))
            .values(lease_holder=holder, lease_until=now + timedelta(seconds=LEASE_S))
            .returning(TusUpload.id)).first()
    return won is not None


def release(engine: Engine, upload_id: str, holder: str) -> None:
    with engine.begin() as conn:
        conn.execute(update(TusUpload.__table__).where(
            TusUpload.id == upload_id, TusUpload.lease_holder == holder)
            .values(lease_holder=None, lease_until=None))


def commit(engine: Engine, upload_id: str, holder: str, fields: dict,
           expires_s: int | None = None) -> None:
    """Record ``fields`` (offset, parts, tail size, status) while holding the lease; renews it."""
    now = utcnow()
    values = {**fields, "lease_until": now + timedelta(seconds=LEASE_S)}
    if expires_s is not None:
        values["expires_at"] = now + timedelta(seconds=expires_s)
    with engine.begin() as conn:
        done = conn.execute(update(TusUpload.__table__).where(
            TusUpload.id == upload_id, TusUpload.lease_holder == holder).values(**values))
    if done.rowcount != 1:
        raise ApiError(423, "upload_locked", "this upload was taken over by another request",
                       {"Retry-After": "1"})


def finish(engine: Engine, upload_id: str, holder: str, asset_id: str) -> None:
    with engine.begin() as conn:
        conn.execute(update(TusUpload.__table__).where(
            TusUpload.id == upload_id, TusUpload.lease_holder == holder,
            TusUpload.status == ASSEMBLING)
            .values(status=COMPLETED, asset_id=asset_id, lease_holder=None, lease_until=None,
                    parts=None))


def remove(engine: Engine, buffer: Store, row: dict, status: str | None = None) -> None:
    """Drop an unfinished upload's bytes; then its row (``status`` None) or mark it ``status``."""
    discard_bytes(buffer, row)
    with engine.begin() as conn:
        where = TusUpload.id == row["id"]
        if status is None:
            conn.execute(delete(TusUpload.__table__).where(where))
        else:
            conn.execute(update(TusUpload.__table__).where(where).values(
                status=status, parts=None, lease_holder=None, lease_until=None))


def discard_bytes(buffer: Store, row: dict) -> None:
    path = buffer.key_at(row["key"])
    if row.get("multipart_id"):
        bucket, key, _ = buffer.fs.split_path(path)
        try:
            s3_call(buffer, "aborting a multipart upload", "abort_multipart_upload",
                Bucket=bucket, Key=key, UploadId=row["multipart_id"])
        except FileNotFoundError:
            pass  # already aborted or completed
        _remove(buffer, f"{path}.tail")
    if row["status"] != COMPLETED:
        _remove(buffer, path)


# -- receivers --------------------------------------------------------------------------------


class Receiver(Protocol):
    """Writes one PATCH's bytes after an upload's recorded offset (blocking calls)."""

    offset: int          # bytes received, durable or not
    durable: int         # bytes made durable by the last checkpoint

    def begin(self) -> None: ...
    def write(self, data: bytes) -> None: ...
    def checkpoint(self) -> dict: ...       # durable up to ``offset``; the catalog's new fields
    def progress(self) -> dict | None: ...  # what is durable already, mid-PATCH, if anything new
    def rollback(self) -> None: ...         # forget what is not durable
    def close(self) -> None: ...


def receiver(buffer: Store, row: dict) -> Receiver:
    if row.get("multipart_id"):
        return S3Receiver(buffer, row)
    return LocalReceiver(buffer, row)


class LocalReceiver:
    """Append to the upload's file; a checkpoint fsyncs it."""

    CHECKPOINT = 16 * 1024 * 1024

    def __init__(self, buffer: Store, row: dict) -> None:
        if not isinstance(buffer.fs, LocalFileSystem):
            raise TypeError("a local receiver needs a local buffer store")
        self.path = buffer.key_at(row["key"])
        self.offset = self.durable = row["offset"]
        self.handle = None

    def begin(self) -> None:
        try:
            self.handle = open(self.path, "r+b")
            if os.fstat(self.handle.fileno()).st_size > self.offset:
                self.handle.truncate(self.offset)  # past the recorded offset: never accepted
            self.handle.seek(self.offset)
        except FileNotFoundError:
            raise ApiError(404, "not_found", "there is no such upload") from None
        except OSError as exc:
            raise _storage_error(exc) from exc

    def write(self, data: bytes) -> None:
        try:
            self.handle.write(data)
        except OSError as exc:
            raise _storage_error(exc) from exc
        self.offset += len(data)

    def checkpoint(self) -> dict:
        try:
            self.handle.flush()
            os.fsync(self.handle.fileno())
        except OSError as exc:
            raise _storage_error(exc) from exc
        self.durable = self.offset
        return {"offset": self.offset}

    def progress(self) -> dict | None:
        if self.offset - self.durable >= self.CHECKPOINT:
            return self.checkpoint()
        return None

    def rollback(self) -> None:
        if self.handle is None:
            return
        try:
            self.handle.seek(self.durable)
            if os.fstat(self.handle.fileno()).st_size > self.durable:
                self.handle.truncate(self.durable)
        except OSError:
            # The disk may refuse even this when full; the next PATCH truncates again.
            log.warning("could not truncate %s back to %d bytes", self.path, self.durable)
        self.offset = self.durable

    def close(self) -> None:
        if self.handle is not None:
            try:
                self.handle.close()
            except OSError:
                pass  # its unflushed bytes were never recorded
            self.handle = None


class S3Receiver:
    """Fill parts of the upload's S3 multipart upload; leftovers go to its tail object."""

    def __init__(self, buffer: Store, row: dict) -> None:
        self.buffer = buffer
        self.path = buffer.key_at(row["key"])
        self.tail_path = f"{self.path}.tail"
        self.bucket, self.key, _ = buffer.fs.split_path(self.path)
        self.upload_id, self.part_size = row["multipart_id"], row["part_size"]
        self.length = row["length"]
        self.parts = [list(p) for p in row["parts"] or []]  # committed: [number, etag, size]
        self.new_parts: list[list] = []                      # written this PATCH, not recorded
        self.tail_size = row["tail_size"]
        self.pending = bytearray()
        self.offset = self.durable = row["offset"]

    def begin(self) -> None:
        if self.tail_size:
            tail = retrying("reading a tus tail", lambda: self.buffer.fs.cat_file(
                self.tail_path, start=0, end=self.tail_size), self.buffer.backoff,
                store=self.buffer.name)
            if len(tail) != self.tail_size:
                raise ApiError(500, "internal_error", "the upload's tail object is short")
            self.pending += tail

    def write(self, data: bytes) -> None:
        self.pending += data
        self.offset += len(data)
        while len(self.pending) >= self.part_size:
            self._send(bytes(self.pending[:self.part_size]))
            del self.pending[:self.part_size]

    def _send(self, data: bytes) -> None:
        number = len(self.parts) + len(self.new_parts) + 1
        sent = s3_call(self.buffer, f"writing part {number}", "upload_part", Bucket=self.bucket,
                   Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=data)
        self.new_parts.append([number, sent["ETag"], len(data)])

    def progress(self) -> dict | None:
        """Parts written since the last record, with no tail counted (it is in memory)."""
        if not self.new_parts:
            return None
        self.parts += self.new_parts
        self.new_parts = []
        self.tail_size = 0
        self.durable = sum(p[2] for p in self.parts)
        return {"parts": self.parts, "tail_size": 0, "offset": self.durable}

    def checkpoint(self) -> dict:
        """Leftovers to the tail object; once every byte is in, they are the last part."""
        if self.pending and self.offset == self.length:
            self._send(bytes(self.pending))
            self.pending.clear()
        elif self.pending:
            data = bytes(self.pending)
            _retry(self.buffer, "writing a tus tail",
                   lambda: self.buffer.fs.pipe_file(self.tail_path, data))
        self.parts += self.new_parts
        self.new_parts = []
        self.tail_size = len(self.pending)
        self.durable = self.offset
        return {"parts": self.parts, "tail_size": self.tail_size, "offset": self.offset}

    def rollback(self) -> None:
        # Parts written but not recorded are left to be overwritten (same numbers) or
        # dropped by the completion, which lists only recorded parts.
        self.new_parts = []
        self.offset = self.durable

    def close(self) -> None:
        self.pending = bytearray()


def assemble(buffer: Store, row: dict) -> dict:
    """Make the object of an upload whose every byte is recorded; returns its info.

    On S3 the multipart upload is completed with the recorded parts; an earlier try that
    completed it and died before saying so left the object, which is then taken as it is.
    """
    path = buffer.key_at(row["key"])
    if row.get("multipart_id"):
        bucket, key, _ = buffer.fs.split_path(path)
        parts = [{"PartNumber": n, "ETag": etag} for n, etag, _ in row["parts"] or []]
        try:
            s3_call(buffer, "completing a multipart upload", "complete_multipart_upload",
                Bucket=bucket, Key=key, UploadId=row["multipart_id"],
                MultipartUpload={"Parts": parts})
        except FileNotFoundError:
            if _size(buffer, path) != row["length"]:
                raise
        _remove(buffer, f"{path}.tail")
    buffer.fs.invalidate_cache(path)
    info = buffer.fs.info(path)
    if int(info["size"]) != row["length"]:
        raise RuntimeError(f"tus upload {row['id']}: {info['size']} bytes assembled, "
                           f"{row['length']} announced")
    return info


# -- helpers ----------------------------------------------------------------------------------


def s3_call(store: Store, operation: str, method: str, **params) -> dict:
    return _retry(store, operation, lambda: store.fs.call_s3(method, **params))


def _retry(store: Store, operation: str, call):
    return retrying(f"{operation} in the {store.name} store", call, store.backoff,
                    store=store.name)


def _size(store: Store, path: str) -> int | None:
    try:
        store.fs.invalidate_cache(path)
        return int(store.fs.info(path)["size"])
    except FileNotFoundError:
        return None


def _remove(store: Store, path: str) -> None:
    try:
        store.fs.rm_file(path)
    except FileNotFoundError:
        pass


def _storage_error(exc: OSError) -> ApiError:
    """The answer to a full disk (507); any other error is raised as it is."""
    if exc.errno in NO_SPACE:
        return ApiError(507, "insufficient_storage",
                        "the server's upload storage is full; the bytes of this request were "
                        "not kept; resume later from the offset HEAD reports")
    raise exc
