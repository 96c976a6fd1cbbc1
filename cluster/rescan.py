"""Re-scan stored originals when clamd's signatures change; reject what they now detect.

The client walks the catalog for ready originals last found clean under older
signatures (``catalog.rescans``) and sends them to the cluster as partitions at
bulk priority, at most ``max_in_flight`` at once. A partition streams each original
to clamd and writes its outcome in one transaction:

- clean: a ``rescan`` stage row (status ok) with the signature version, so the next
  run skips the asset;
- infected: the original is moved to the quarantine store, every ready asset with
  those bytes is marked ``rejected: infected`` (which withdraws its renditions from
  delivery) and gets a ``rescan`` row with the signature and when it was found;
- original missing: a ``rescan`` row (failed, ``original_missing``); the asset is
  left as it was and listed in the report, and the next run looks again;
- a scanner or store outage: nothing is written; the next run does it.

An infected original is moved before the partition's transaction: if the run stops
in between, the next run finds the bytes in quarantine and scans them there.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from distributed import Client

from catalog import Catalog
from catalog.repository import utcnow
from catalog.records import StageRecord
from catalog.rescans import STAGE, Target, targets
from cluster import runtime
from cluster.bulk import DEFAULT_BATCH_SIZE, bounded
from cluster.config import Settings
from cluster.storage.stores import Store
from pipelines.outcome import Failed, Rejected
from pipelines.upload.scan import (CHUNK, DATABASE_SUFFIXES, ClamdScanner, SourceError,
                                   scan)

Progress = Callable[[int, int | None, Counter], None]


def current_version(scanner: ClamdScanner, signatures: str | None, everything: bool) -> str:
    """The signature version a re-scan compares against and records.

    clamd's own number when its database has one (the official daily.cvd); else one
    derived from the database files in ``signatures`` (the folder clamd loads); else,
    with ``everything``, ``custom``. Otherwise ValueError: nothing could be called older.
    """
    engine, version = scanner.version()
    if version != "custom":
        return version
    if signatures:
        return database_version(Path(signatures))
    if everything:
        return version
    raise ValueError(
        f"clamd at {scanner.url} ({engine}) loads a custom signature database, which has no "
        "version number: pass --signatures DIR (the folder clamd loads) to derive one from its "
        "files, or --all to re-scan every ready asset")


def database_version(folder: Path) -> str:
    """``custom-`` and 16 hex digits of the SHA-256 of the folder's database files (names
    and bytes, in name order): any signature added, changed or removed changes it."""
    files = sorted(p for p in folder.iterdir() if p.suffix in DATABASE_SUFFIXES and p.is_file())
    if not files:
        raise ValueError(f"{folder} holds no ClamAV signature database")
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return f"custom-{digest.hexdigest()[:16]}"


@dataclass
class Report:
    """What a run did: assets counted by outcome, and the originals that need a person."""

    signatures_version: str
    counts: Counter = field(default_factory=Counter)
    infected: list[dict] = field(default_factory=list)
    missing: list[dict] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)

    def add(self, outcome: dict) -> None:
        self.counts[outcome["outcome"]] += len(outcome["assets"])
        listed = {"infected": self.infected, "missing": self.missing, "failed": self.failed}
        if outcome["outcome"] in listed:
            listed[outcome["outcome"]].append(outcome)

    def as_dict(self) -> dict:
        return {"signatures_version": self.signatures_version, "counts": dict(self.counts),
                "infected": self.infected, "missing": self.missing, "failed": self.failed}


def run(client: Client, catalog: Catalog, settings: Settings, current: str, *,
        everything: bool = False, batch_size: int | None = None,
        max_in_flight: int | None = None, progress: Progress | None = None) -> dict:
    """Re-scan what ``catalog.rescans.targets`` selects; the run's ``Report`` as a dict."""
    report = Report(current)

    def settle(batch: list[Target], outcomes: list[dict] | Exception) -> None:
        if isinstance(outcomes, Exception):  # reported; the next run does them again
            outcomes = [_failed(t, f"{type(outcomes).__name__}: {outcomes}") for t in batch]
        for outcome in outcomes:
            report.add(outcome)
        if progress:
            progress(sum(report.counts.values()), None, report.counts)

    bounded(client, rescan_partition, targets(catalog, current, everything,
                                              batch_size or DEFAULT_BATCH_SIZE),
            current, settings, settle=settle, max_in_flight=max_in_flight)
    return report.as_dict()


def rescan_partition(batch: list[Target], current: str, settings: Settings) -> list[dict]:
    """Scan each target's original again (on a worker) and write the outcomes together."""
    stores, scanner = runtime.stores(settings), runtime.scanner(settings.clamd_url)
    outcomes, stages, stops = [], [], []
    for target in batch:
        started = utcnow()
        outcome = rescan_one(target, current, settings, stores, scanner)
        outcomes.append(outcome)
        stages += stage_rows(target, outcome, started)
        if outcome["outcome"] == "infected":
            stops += [(asset_id, attempt, "rejected", "infected", outcome["message"], False,
                       target.sha256) for asset_id, attempt in target.assets]
    runtime.catalog(settings).write_batch([], stages, [], stops)
    return outcomes


def rescan_one(target: Target, current: str, settings: Settings, stores: dict[str, Store],
               scanner: ClamdScanner) -> dict:
    """One original's outcome (see the module's docstring); moves it if infected."""
    sha = target.sha256
    originals, quarantine = stores["originals"], stores["quarantine"]
    try:
        store = next((s for s in (originals, quarantine) if s.exists(sha)), None)
        if store is None:
            return _outcome(target, "missing", "original_missing",
                            f"its original {sha} is in neither the originals nor the quarantine "
                            "store, so it could not be scanned again")
        size = store.size(sha)
        if size > settings.scan_max_bytes:
            return _outcome(target, "skipped", "scan_limit_exceeded",
                            f"its original has {size} bytes, more than the scanner's stream "
                            f"limit of {settings.scan_max_bytes}", signatures_version=current)
        with store.open(sha) as handle:
            verdict = scan(iter(lambda: handle.read(CHUNK), b""), scanner)
    except Rejected as exc:
        if exc.reason != "infected":  # over clamd's own limits: as at ingest, trusted or not
            return _outcome(target, "skipped", exc.reason, exc.message,
                            signatures_version=current)
        return _infected(target, exc.details, current, store, quarantine)
    except FileNotFoundError:  # gone between the look and the read
        return _outcome(target, "missing", "original_missing",
                        f"its original {sha} vanished while it was read")
    except SourceError as exc:
        return _failed(target, f"reading the original failed: {exc.error}")
    except Failed as exc:
        return _failed(target, exc.message, exc.reason)
    version = verdict.signatures_version
    return _outcome(target, "clean", None, None, engine=verdict.engine,
                    signatures_version=version if version.isdigit() else current)


def _infected(target: Target, details: dict, current: str, store: Store,
              quarantine: Store) -> dict:
    sha, found_at = target.sha256, utcnow()
    version = details.get("signatures_version", "")
    version = version if version.isdigit() else current
    if store is not quarantine:
        _move(sha, store, quarantine)
    signature = details["signature"]
    return _outcome(target, "infected", "infected",
                    f"a re-scan on {found_at:%Y-%m-%d} found {signature} (signatures "
                    f"{version}); its renditions are withdrawn and its original is kept in "
                    f"the quarantine store as {sha}",
                    signature=signature, engine=details.get("engine"),
                    signatures_version=version, found_at=found_at.isoformat(),
                    quarantine_sha256=sha)


def _move(sha: str, originals: Store, quarantine: Store) -> None:
    """Copy the bytes, never decoded, to quarantine, then remove them from the originals."""
    if not quarantine.exists(sha):
        with originals.open(sha) as handle:
            quarantine.promote(quarantine.put_stream(iter(lambda: handle.read(CHUNK), b"")), sha)
    originals.delete(sha)


def _outcome(target: Target, outcome: str, reason: str | None, message: str | None,
             **details) -> dict:
    return {"sha256": target.sha256, "assets": [a for a, _ in target.assets],
            "attempts": [n for _, n in target.assets], "outcome": outcome, "reason": reason,
            "message": message, "details": details}


def _failed(target: Target, message: str, reason: str = "rescan_failed") -> dict:
    return _outcome(target, "failed", reason, message)


_STATUS = {"clean": "ok", "skipped": "ok", "infected": "rejected", "missing": "failed"}


def stage_rows(target: Target, outcome: dict, started) -> list[StageRecord]:
    """The ``rescan`` rows of one outcome: none for a failure (the next run tries again)."""
    status = _STATUS.get(outcome["outcome"])
    if status is None:
        return []
    details = {"outcome": outcome["outcome"], **outcome["details"]}
    return [StageRecord(asset_id, STAGE, attempt, status, started, utcnow(),
                        worker=runtime.worker_name(), reason=outcome["reason"],
                        error_message=outcome["message"], details=details)
            for asset_id, attempt in target.assets]
