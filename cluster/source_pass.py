"""One streamed pass over a source: scan, hash and stage its bytes while reading them once.

The source is read in ``READ_CHUNK`` pieces. The first piece names the format
(``sniff``), hence the size limit of its kind, checked against the size the
source declares before anything else is read, and again as bytes arrive. Each
piece then goes, in the same pass, to clamd (INSTREAM), to SHA-256 and to a
staging object in the originals store (``Store.writer``). What travels on through
Dask is a reference to that object (``Staged``), never the bytes, except for
small images (``INLINE_IMAGE_BYTES``), which are read whole and carried as today:
for those one PUT from memory is cheaper than stage, copy and delete
(docs/benchmarks.md, "Streamed ingest").

A source larger than the scanner's stream limit is rejected
``scan_limit_exceeded`` before any byte is stored, unless the settings trust
oversize sources explicitly (``scan_oversize: skip``); the scan stage row then
says it was skipped and why. A source that changes while it is read (its size,
mtime or ETag differ afterwards, or it yields another number of bytes than it
declared) fails retryably: the digest would not name what the store holds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from cluster.config import Settings
from cluster.storage.retry import Backoff, retrying
from cluster.storage.staging import Staged, StagingWriter
from cluster.storage.stores import Store, source_location
from pipelines.outcome import Failed, Rejected
from pipelines.upload.hashing import sha256_hex
from pipelines.upload.isobmff import MAX_FTYP_BYTES
from pipelines.upload.scan import ClamdScanner, SourceError, outage_or, scan
from pipelines.upload.validate import kind_of, sniff, too_large

READ_CHUNK = 8 * 1024 * 1024
# Images up to this size are read whole and carried through Dask as bytes (see above).
INLINE_IMAGE_BYTES = 16 * 1024 * 1024
SKIPPED = "skipped (over scanner limit)"


@dataclass(frozen=True)
class Passed:
    """What the pass hands on: the bytes of a small image, or the staging object."""

    format: str | None      # sniffed from the first bytes
    head: bytes             # the first MAX_FTYP_BYTES bytes, to sniff again downstream
    size: int
    data: bytes | None = None
    staged: Staged | None = None
    details: dict | None = None  # the scan stage row's details


def read_pass(uri: str, settings: Settings, stores: dict[str, Store], scanner: ClamdScanner,
              on_chunk: Callable[[int], None] | None = None) -> Passed:
    """Scan, hash and stage ``uri`` in one read; Rejected or Failed when it must stop.

    Transient storage errors (reading the source, writing the staging object)
    restart the pass from the source, within the storage retry budget.
    ``on_chunk(bytes_so_far)`` is called after each piece (progress; tests use it).
    """
    def attempt() -> Passed:
        return _attempt(uri, settings, stores, scanner, on_chunk)
    try:
        return retrying(f"reading the source {uri}", attempt, Backoff(settings.storage_retry_s),
                        store="source")
    except FileNotFoundError as exc:
        raise Failed("source_missing", f"the source {uri} no longer exists") from exc
    except OSError as exc:
        raise Failed("storage_unavailable", f"reading {uri} failed: {exc}", retryable=True) from exc


def _attempt(uri: str, settings: Settings, stores: dict[str, Store], scanner: ClamdScanner,
             on_chunk: Callable[[int], None] | None) -> Passed:
    fs, path = source_location(uri, stores.values())
    before = fs.info(path)
    declared = before.get("size")
    with fs.open(path, "rb", block_size=READ_CHUNK) as handle:
        head = handle.read(READ_CHUNK)
        format_ = sniff(head[:MAX_FTYP_BYTES])
        limits = settings.limits
        limit = limits.max_bytes_for(format_)
        if declared is not None and declared > limit:
            raise too_large(declared, format_, limits)
        oversize = declared is not None and declared > settings.scan_max_bytes
        if oversize and settings.scan_oversize != "skip":
            raise _over_scanner_limit(declared, settings)
        reader = _Reader(handle, head, limit, format_, settings, on_chunk, unscanned=oversize)
        if kind_of(format_) != "media" and (declared or 0) <= INLINE_IMAGE_BYTES:
            prefix = reader.take(INLINE_IMAGE_BYTES + 1)
            if len(prefix) <= INLINE_IMAGE_BYTES:  # the whole file, small: the in-memory path
                _unchanged(fs, path, before, len(prefix))
                return _scan_inline(prefix, format_, scanner, stores["quarantine"])
            reader.push_back(prefix)
        return _scan_streamed(reader, fs, path, before, format_, stores["originals"],
                              stores["quarantine"], scanner, settings, oversize)


def _scan_inline(data: bytes, format_: str | None, scanner: ClamdScanner,
                 quarantine: Store) -> Passed:
    try:
        verdict = scan(data, scanner)
    except Rejected as exc:
        if exc.reason == "infected":
            # Infected bytes are kept for inspection, in quarantine only, never decoded.
            digest = sha256_hex(data)
            quarantine.put(digest, data)
            exc.details["quarantine_sha256"] = digest
        raise
    return Passed(format_, data[:MAX_FTYP_BYTES], len(data), data=data,
                  details={**verdict.as_details(), "bytes": len(data)})


def _scan_streamed(reader: _Reader, fs, path: str, before: dict, format_: str | None,
                   originals: Store, quarantine: Store, scanner: ClamdScanner,
                   settings: Settings, unscanned: bool) -> Passed:
    writer = originals.writer()
    reader.sinks.append(writer.write)
    try:
        if unscanned:
            for _ in reader:
                pass
            details = {"skipped": "over scanner limit", "scan": SKIPPED, "bytes": reader.count,
                       "scanner_limit": settings.scan_max_bytes,
                       "trusted_by": "scan_oversize=skip (MEDIAFARM_SCAN_OVERSIZE)"}
        else:
            try:
                verdict = scan(reader, scanner)
            except SourceError as exc:
                raise exc.error from None
            except Rejected as exc:
                if exc.reason == "infected" and reader.done:
                    exc.details["quarantine_sha256"] = _quarantine(writer, originals, quarantine)
                raise
            details = {**verdict.as_details(), "bytes": reader.count}
        if not reader.done:  # clamd answered before the end: not a verdict on the whole file
            raise outage_or(Failed("scanner_error", "clamd answered before the whole stream "
                                   "was sent", retryable=True), scanner)
        _unchanged(fs, path, before, reader.count)
        staged = writer.commit()
    except BaseException:
        writer.abort()
        raise
    return Passed(format_, reader.head[:MAX_FTYP_BYTES], staged.size, staged=staged,
                  details={**details, "streamed": True})


def _quarantine(writer: StagingWriter, originals: Store, quarantine: Store) -> str:
    """Move infected bytes, never decoded, from the staging object to the quarantine store."""
    staged = writer.commit()
    try:
        with originals.open_staged(staged) as handle:
            kept = quarantine.put_stream(iter(lambda: handle.read(READ_CHUNK), b""))
        quarantine.promote(kept)
    finally:
        originals.discard(staged)
    return staged.sha256


def _over_scanner_limit(size: int, settings: Settings) -> Rejected:
    return Rejected("scan_limit_exceeded", f"the file has {size} bytes, more than the scanner's "
                    f"stream limit of {settings.scan_max_bytes} (MEDIAFARM_SCAN_MAX_BYTES); "
                    "nothing was stored. A trusted source may be let through unscanned with "
                    "MEDIAFARM_SCAN_OVERSIZE=skip",
                    details={"bytes": size, "scanner_limit": settings.scan_max_bytes})


def _fingerprint(info: dict) -> tuple:
    return (info.get("size"), info.get("mtime"), info.get("ETag") or info.get("etag"),
            str(info.get("LastModified") or ""))


def _unchanged(fs, path: str, before: dict, count: int) -> None:
    """Failed ``source_changed`` (retryable) if the source moved under the read."""
    after = fs.info(path)
    declared = before.get("size")
    if _fingerprint(after) != _fingerprint(before) or (declared is not None and count != declared):
        raise Failed("source_changed", f"the source changed while it was read ({declared} bytes "
                     f"declared, {count} read, {after.get('size')} now); try again once it is "
                     "written", retryable=True,
                     details={"declared": declared, "read": count, "now": after.get("size")})


class _Reader:
    """The source's chunks, counted against the kind's limit (and the scanner's, when the
    size was not declared), each handed to every sink as it passes."""

    def __init__(self, handle, head: bytes, limit: int, format_: str | None, settings: Settings,
                 on_chunk: Callable[[int], None] | None, unscanned: bool) -> None:
        self.handle, self.head, self.limit, self.format = handle, head, limit, format_
        self.settings, self.on_chunk, self.unscanned = settings, on_chunk, unscanned
        self.pending: list[bytes] = [head] if head else []
        self.sinks: list[Callable[[bytes], None]] = []
        self.count, self.done = 0, False

    def push_back(self, data: bytes) -> None:
        self.pending.insert(0, data)
        self.count -= len(data)

    def take(self, most: int) -> bytes:
        """Up to ``most`` bytes, unsent to the sinks (the in-memory path decides on them)."""
        parts, got = [], 0
        for chunk in self._raw():
            parts.append(chunk)
            got += len(chunk)
            if got >= most:
                break
        return b"".join(parts)

    def _raw(self) -> Iterator[bytes]:
        while self.pending or not self.done:
            chunk = self.pending.pop(0) if self.pending else self.handle.read(READ_CHUNK)
            if not chunk:
                self.done = True
                return
            self.count += len(chunk)
            if self.count > self.limit:
                raise too_large(self.count, self.format, self.settings.limits, exact=False)
            if self.count > self.settings.scan_max_bytes and not self.unscanned:
                raise _over_scanner_limit(self.count, self.settings)
            if self.on_chunk is not None:
                self.on_chunk(self.count)
            yield chunk

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._raw():
            for sink in self.sinks:
                sink(chunk)
            yield chunk
