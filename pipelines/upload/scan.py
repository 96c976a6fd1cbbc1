"""Virus scan through clamd's INSTREAM, failing closed.

Anything other than a clean answer from a live scanner stops the asset: an
infection or a scanner-side limit rejects it, an unreachable or slow scanner
fails it as retryable, and so does a clamd whose clean answer cannot be trusted
because it skips what is over its limits (``scanner_check``). An unscanned byte
never moves on.
"""

from __future__ import annotations

import re
import socket
import struct
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from urllib.parse import ParseResult, urlparse

import clamd

from pipelines.outcome import Failed, Rejected
from pipelines.upload import scanner_check
from pipelines.upload.hashing import iter_chunks

# The clamd package sends 1 KiB chunks; 256 KiB chunks scan 1.1-1.25x faster over
# loopback (benchmarks/bench_scan.py). Chunks must stay under clamd's StreamMaxLength.
CHUNK = 256 * 1024
# How long a scanner reuses clamd's VERSION answer. Asking before every scan cost a
# connection and a round trip per file, as much as the INSTREAM of a 100 KiB photo; and
# the answer was never exact anyway, since clamd may reload its database between the two
# calls. Within a second of the answer, a scan's recorded version is as good as before.
VERSION_TTL_S = 1.0
# ClamAV's database files (clamd.conf(5), sigtool(1)): signed containers and plain ones.
DATABASE_SUFFIXES = frozenset({".cvd", ".cld", ".cud", ".hdb", ".hsb", ".hdu", ".hsu", ".mdb",
                               ".msb", ".mdu", ".msu", ".ndb", ".ndu", ".ldb", ".ldu", ".cdb",
                               ".yar", ".yara", ".cbc", ".pdb", ".wdb", ".gdb", ".idb", ".imp"})
_FOUND = re.compile(r"^stream: (?P<signature>.+) FOUND$")


@dataclass(frozen=True)
class ScanVerdict:
    clean: bool
    signature: str | None
    engine: str
    signatures_version: str

    def as_details(self) -> dict:
        return {"clean": self.clean, "signature": self.signature,
                "engine": self.engine, "signatures_version": self.signatures_version}


class _TcpClamd(clamd.ClamdNetworkSocket):
    """The clamd package's client, but with the timeout applied to connect() too.

    Stock, it connects with no timeout, so a clamd that is shutting down or a host
    that drops packets would hold a worker for minutes instead of failing closed.
    """

    def _init_socket(self) -> None:
        try:
            self.clamd_socket = socket.create_connection((self.host, self.port),
                                                         timeout=self.timeout)
        except OSError as exc:
            raise clamd.ConnectionError(self._error_message(exc)) from exc


class _UnixClamd(clamd.ClamdUnixSocket):
    def _init_socket(self) -> None:
        try:
            self.clamd_socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.clamd_socket.settimeout(self.timeout)
            self.clamd_socket.connect(self.unix_socket)
        except OSError as exc:
            raise clamd.ConnectionError(self._error_message(exc)) from exc


def parse_clamd_url(url: str) -> ParseResult:
    """``url`` parsed if it is ``tcp://HOST:PORT`` or ``unix:///PATH``; else ValueError."""
    parsed = urlparse(url)
    try:
        port = parsed.port
    except ValueError:  # not a number, or out of range
        port = None
    if (parsed.scheme == "tcp" and parsed.hostname and port) or (
            parsed.scheme == "unix" and parsed.path):
        return parsed
    raise ValueError(f"clamd URL {url!r} is not tcp://HOST:PORT or unix:///PATH")


class ClamdScanner:
    """A clamd reached at ``tcp://host:port`` or ``unix:///path``.

    ``timeout`` bounds every socket operation: connecting, each chunk sent, and
    waiting for the verdict (clamd answers once the whole stream is scanned).
    """

    def __init__(self, url: str, timeout: float = 60.0) -> None:
        parsed = parse_clamd_url(url)
        if parsed.scheme == "tcp":
            self._conn = _TcpClamd(parsed.hostname, parsed.port, timeout=timeout)
        else:
            self._conn = _UnixClamd(parsed.path, timeout=timeout)
        self.url = url
        self._version: tuple[float, tuple[str, str]] | None = None  # (asked at, answer)

    def version(self) -> tuple[str, str]:
        """(engine, signature database version); custom databases have no version number.

        An answer is reused for ``VERSION_TTL_S`` seconds.
        """
        now = time.monotonic()
        if self._version is not None and now - self._version[0] < VERSION_TTL_S:
            return self._version[1]
        try:
            answer = self._conn.version()
        except (clamd.ClamdError, OSError) as exc:
            raise _unavailable(self.url, exc) from exc
        engine, _, rest = answer.partition("/")
        self._version = (now, (engine.strip(), rest.split("/")[0] or "custom"))
        return self._version[1]

    def answers(self) -> bool:
        """Whether clamd answers a PING now."""
        try:
            return self._conn.ping() == "PONG"
        except (clamd.ClamdError, OSError):
            return False

    def instream(self, data: bytes | Iterable[bytes]) -> str:
        """Send ``data`` (bytes, or an iterable of chunks of any size: a stream) to clamd
        and return its one-line answer.

        An error raised by the iterable itself (the source failing) is raised as
        ``SourceError``, never taken for the scanner's.
        """
        pieces = iter_chunks(data, CHUNK) if isinstance(data, (bytes, bytearray, memoryview)) \
            else _rechunked(data, CHUNK)
        conn = self._conn
        try:
            conn._init_socket()
            try:
                conn._send_command("INSTREAM")
                sock: socket.socket = conn.clamd_socket
                try:
                    for chunk in pieces:
                        sock.sendall(struct.pack("!L", len(chunk)))
                        sock.sendall(chunk)
                    sock.sendall(struct.pack("!L", 0))
                except (BrokenPipeError, ConnectionResetError):
                    pass  # clamd hangs up once a stream passes its limit; its answer says why
                return conn._recv_response()
            finally:
                conn._close_socket()
        except (clamd.ClamdError, OSError) as exc:
            raise _unavailable(self.url, exc) from exc


class SourceError(Exception):
    """The stream being scanned failed (its source or a sink fed from it); ``error`` says how."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def _rechunked(chunks: Iterable[bytes], size: int) -> Iterator[memoryview]:
    """Each chunk cut to at most ``size`` bytes (clamd's chunks stay under StreamMaxLength)."""
    iterator = iter(chunks)
    while True:
        try:
            chunk = next(iterator)
        except StopIteration:
            return
        except Exception as exc:  # the source's error, not the scanner's
            raise SourceError(exc) from exc
        view = memoryview(chunk)
        for start in range(0, len(view), size):
            yield view[start:start + size]


def _unavailable(url: str, exc: Exception) -> Failed:
    return Failed("scanner_unavailable", f"clamd at {url} did not answer: {exc}", retryable=True)


def scan(data: bytes | Iterable[bytes], scanner: ClamdScanner) -> ScanVerdict:
    """Scan ``data`` (bytes, or chunks as they are read); return the verdict if clean,
    raise Rejected/Failed otherwise (``SourceError`` when the chunks' source failed)."""
    try:
        return _verdict(data, scanner)
    except Failed as exc:
        failure = outage_or(exc, scanner)
        if failure.reason == "scanner_unavailable":
            scanner_check.forget(scanner.url)  # a restarted clamd may have another clamd.conf
        if failure is exc:
            raise
        raise failure from exc


def outage_or(failure: Failed, scanner: ClamdScanner) -> Failed:
    """``failure``, or ``scanner_unavailable`` when it is a scanner error and clamd no
    longer answers: a clamd stopping mid-scan can answer oddly or hang up early, and
    that is an outage, not something about this file."""
    if failure.reason != "scanner_error" or scanner.answers():
        return failure
    return Failed("scanner_unavailable",
                  f"clamd at {scanner.url} stopped answering ({failure.message})",
                  retryable=True, details=failure.details)


def _verdict(data: bytes | Iterable[bytes], scanner: ClamdScanner) -> ScanVerdict:
    scanner_check.require_fails_closed(scanner)
    engine, signatures = scanner.version()
    answer = scanner.instream(data)
    if answer == scanner_check.CLEAN:
        return ScanVerdict(True, None, engine, signatures)
    details = {"engine": engine, "signatures_version": signatures}
    if found := _FOUND.match(answer):
        signature = found["signature"]
        details["signature"] = signature
        if signature.startswith("Heuristics.Limits.Exceeded"):
            raise Rejected("scan_limit_exceeded",
                           f"the file exceeds the scanner's limits ({signature})", details=details)
        raise Rejected("infected", f"the scanner found {signature}", details=details)
    if "size limit exceeded" in answer:
        raise Rejected("scan_limit_exceeded",
                       "the file is larger than the scanner accepts", details=details)
    if not answer:
        raise Failed("scanner_unavailable", "clamd closed the connection without an answer",
                     retryable=True, details=details)
    raise Failed("scanner_error", f"clamd answered {answer!r}", retryable=True, details=details)
