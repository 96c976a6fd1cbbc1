"""Prove that a clamd fails closed before believing its ``stream: OK``.

clamd answers OK for content it skipped at a limit. Measured with clamd 1.4.6 (what
the canaries probe is asserted in tests/integration/test_scanner_check.py):

- past MaxRecursion, MaxScanSize, MaxFiles, MaxScanTime, or a MaxFileSize of the
  stream itself, it says OK unless ``AlertExceedsMax yes`` turns the skip into a
  ``Heuristics.Limits.Exceeded.*`` alert;
- an archive member longer than MaxFileSize is cut at MaxFileSize and only its head is
  scanned, without an alert even under AlertExceedsMax, unless the cut member also
  runs past MaxScanSize, which alerts: so MaxFileSize must be at least MaxScanSize;
- with ScanArchive off it never looks inside an archive.

Each canary below probes one of these and is built so that a fail-closed clamd cannot
call it clean: it finds EICAR or raises a limits alert. The three cost about one
scan of ``CUT_MEMBER_BYTES`` at most, so the verdict is cached per clamd URL and
process: a clamd that fails closed is checked again after ``OK_TTL_S`` (its
clamd.conf changes only with a restart, and the scan stage forgets the verdict
whenever clamd stops answering, which a restart shows), one that fails open after
``MISCONFIGURED_TTL_S``, so that a fixed clamd is taken back quickly.
"""

from __future__ import annotations

import io
import threading
import time
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Protocol

from pipelines.outcome import Failed

# Assembled at run time so that no scanner flags this source file itself.
EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"

CLEAN = "stream: OK"
# Far past the MaxRecursion of stock configurations (16 in Debian's, 17 by default), at
# about 120 bytes and 0.1 ms a level; a clamd set to recurse deeper can hide AlertExceedsMax.
NESTING = 110
# Past the MaxFileSize of both common stock configurations: Debian's 25M, ClamAV's 100M.
CUT_MEMBER_BYTES = 101 * 1024 * 1024
OK_TTL_S = 300.0
MISCONFIGURED_TTL_S = 30.0


class Scanner(Protocol):
    url: str

    def instream(self, data: bytes) -> str: ...


@dataclass(frozen=True)
class Canary:
    name: str
    data: bytes
    setting: str  # what clamd.conf needs when clamd calls this canary clean


@dataclass(frozen=True)
class ScannerCheck:
    url: str
    answers: dict[str, str]  # canary name -> clamd's answer

    @property
    def clean_canaries(self) -> list[str]:
        return [name for name, answer in self.answers.items() if answer == CLEAN]

    @property
    def fails_closed(self) -> bool:
        return not self.clean_canaries

    @property
    def settings(self) -> list[str]:
        wanted = {c.name: c.setting for c in canaries()}
        return [wanted[name] for name in self.clean_canaries]

    def message(self) -> str:
        return (f"clamd at {self.url} answers OK for content it did not scan (canaries "
                f"{', '.join(self.clean_canaries)}): in clamd.conf set "
                f"{'; '.join(self.settings)}; then restart clamd (docs/deployment.md, "
                f"\"What the farm needs of clamd\")")


def _zip(name: str, data: bytes, method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        archive.writestr(name, data)
    return buffer.getvalue()


def _nested(depth: int) -> bytes:
    data = _zip("eicar.com", EICAR)  # deflated: EICAR never appears as plain bytes
    for level in range(depth - 1):
        data = _zip(f"level-{level}.zip", data, zipfile.ZIP_STORED)
    return data


def _cut_member(size: int) -> bytes:
    """A ZIP whose one member is ``size`` zero bytes and then the EICAR file, zipped.

    The databases know EICAR as a whole file (a hash), hence the inner ZIP, which
    clamd finds inside the member once it scans that far. About 100 KB on the wire.
    """
    buffer, zeros = io.BytesIO(), bytes(1024 * 1024)
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("member.bin", "w") as member:
            for _ in range(size // len(zeros)):
                member.write(zeros)
            member.write(bytes(size % len(zeros)) + _zip("eicar.com", EICAR))
    return buffer.getvalue()


@cache
def canaries() -> tuple[Canary, ...]:
    """Built once per process (the last takes about 0.4 s of CPU)."""
    return (
        Canary("archive", _zip("eicar.com", EICAR),
               "ScanArchive yes (and a signature database that detects the EICAR test file, "
               "as the official one does)"),
        Canary("nested", _nested(NESTING), "AlertExceedsMax yes"),
        Canary("cut_member", _cut_member(CUT_MEMBER_BYTES),
               "MaxFileSize at least MaxScanSize (clamd cuts an archive member longer than "
               "MaxFileSize short without an alert unless the cut passes MaxScanSize)"),
    )


def judge(url: str, answers: Mapping[str, str]) -> ScannerCheck:
    """Judge clamd's answers to the canaries; raise Failed for an answer that says nothing.

    A signature or a limits alert (``... FOUND``) or a refused stream (``size limit
    exceeded``) is failing closed; ``stream: OK`` is failing open.
    """
    for name, answer in answers.items():
        if not answer:
            raise Failed("scanner_unavailable",
                         f"clamd at {url} closed the connection without an answer", retryable=True)
        closed = answer.endswith(" FOUND") or "size limit exceeded" in answer
        if answer != CLEAN and not closed:
            raise Failed("scanner_error", f"clamd at {url} answered {answer!r} to the {name} "
                         "canary", retryable=True)
    return ScannerCheck(url, dict(answers))


def run_check(scanner: Scanner) -> ScannerCheck:
    """Scan every canary now, uncached."""
    return judge(scanner.url, {c.name: scanner.instream(c.data) for c in canaries()})


class _Verdicts:
    """Each clamd URL's last check and when it expires; one check at a time per URL."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._url_locks: dict[str, threading.Lock] = {}
        self._known: dict[str, tuple[ScannerCheck, float]] = {}

    def check(self, scanner: Scanner) -> ScannerCheck:
        with self._lock:
            url_lock = self._url_locks.setdefault(scanner.url, threading.Lock())
        with url_lock:
            known = self._known.get(scanner.url)
            if known and self.clock() < known[1]:
                return known[0]
            verdict = run_check(scanner)  # raises, and caches nothing, when clamd is unwell
            ttl = OK_TTL_S if verdict.fails_closed else MISCONFIGURED_TTL_S
            self._known[scanner.url] = (verdict, self.clock() + ttl)
            return verdict

    def forget(self, url: str) -> None:
        self._known.pop(url, None)

    def adopt(self, verdict: ScannerCheck) -> None:
        ttl = OK_TTL_S if verdict.fails_closed else MISCONFIGURED_TTL_S
        with self._lock:
            self._known[verdict.url] = (verdict, self.clock() + ttl)


_verdicts = _Verdicts()


def check(scanner: Scanner) -> ScannerCheck:
    """This process's verdict on ``scanner``'s clamd, checked again once it expires."""
    return _verdicts.check(scanner)


def adopt(verdict: ScannerCheck) -> None:
    """Take a verdict just made by another process on the same clamd URL (the farm's, handed
    to its workers) as this process's own, for as long as one made here would last."""
    _verdicts.adopt(verdict)


def forget(url: str) -> None:
    """Drop the verdict on a clamd that stopped answering: it may come back set up otherwise."""
    _verdicts.forget(url)


def require_fails_closed(scanner: Scanner) -> None:
    """Raise ``Failed("scanner_misconfigured")`` unless the clamd fails closed."""
    verdict = check(scanner)
    if not verdict.fails_closed:
        raise Failed("scanner_misconfigured", verdict.message(), retryable=True,
                     details={"canaries": verdict.answers})


def problem(scanner: Scanner) -> str | None:
    """None when clamd answers and fails closed; otherwise what is wrong, for people."""
    try:
        verdict = check(scanner)
    except Failed as exc:
        return f"{'unreachable' if exc.reason == 'scanner_unavailable' else 'error'}: {exc.message}"
    return None if verdict.fails_closed else f"misconfigured: {verdict.message()}"
