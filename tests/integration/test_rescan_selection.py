"""Which ready assets a re-scan selects, on SQLite and PostgreSQL (``catalog.rescans``)."""

from __future__ import annotations

import hashlib

from catalog import Catalog
from catalog.models import Asset, Blob, StageRun
from catalog.repository import utcnow
from catalog.rescans import Target, targets


def _asset(conn, asset_id: str, sha: str, *, status: str = "ready", attempt: int = 1,
           deleted: bool = False, scanned: str | None = "custom",
           rescanned: tuple[str, str] | None = None) -> None:
    conn.execute(Asset.__table__.insert().values(
        id=asset_id, owner="alice", source_uri=f"file:///{asset_id}", status=status,
        sha256=sha, attempt=attempt, deleted_at=utcnow() if deleted else None))
    runs = [("scan", "ok", {"signatures_version": scanned} if scanned else {"skipped": "big"})]
    if rescanned:
        runs.append(("rescan", rescanned[0], {"signatures_version": rescanned[1]}))
    for stage, state, details in runs:
        conn.execute(StageRun.__table__.insert().values(
            asset_id=asset_id, stage=stage, attempt=attempt, status=state, started_at=utcnow(),
            finished_at=utcnow(), duration_ms=1.0, details=details))


def test_ready_originals_scanned_under_older_signatures_are_selected_once_each(catalog_url):
    catalog = Catalog(catalog_url)
    shas = {name: name * 64 for name in "abcdefg"}
    with catalog.engine.begin() as conn:
        for sha in shas.values():
            conn.execute(Blob.__table__.insert().values(sha256=sha, size=1,
                                                        media_type="image/jpeg", store="originals"))
        _asset(conn, "a1", shas["a"], scanned="27000")
        _asset(conn, "a2", shas["a"], scanned="27000")  # the same bytes: one scan for both
        _asset(conn, "b1", shas["b"], scanned="27100", rescanned=("ok", "27400"))  # up to date
        _asset(conn, "c1", shas["c"], scanned="27500")  # newer than clamd: left alone
        _asset(conn, "d1", shas["d"], scanned=None)  # scanned nothing (over the limit)
        _asset(conn, "e1", shas["e"], scanned="27000", deleted=True)
        _asset(conn, "f1", shas["f"], status="rejected", scanned="27000")
        _asset(conn, "g1", shas["g"], scanned="27000", rescanned=("failed", "27400"))
    found = [t for batch in targets(catalog, "27400", batch_size=1) for t in batch]
    assert found == [Target(shas["a"], (("a1", 1), ("a2", 1))), Target(shas["d"], (("d1", 1),)),
                     Target(shas["g"], (("g1", 1),))]
    everything = [t.sha256 for batch in targets(catalog, "27400", everything=True)
                  for t in batch]
    assert everything == [shas[name] for name in "abcdg"]
    # A custom database's derived version: anything else recorded is older.
    assert [t.sha256 for batch in targets(catalog, "custom-0123456789abcdef")
            for t in batch] == [shas[name] for name in "abcdg"]


def test_a_run_stopped_after_moving_an_infected_original_is_finished_by_the_next(
        tmp_path, sqlite_url, clamd):
    """The original went to quarantine but the partition's transaction never ran: the next
    run scans the quarantined copy and rejects the asset."""
    from cluster.cli.samples import EICAR
    from cluster.rescan import rescan_partition
    from cluster.storage.stores import open_stores
    from tests.conftest import make_settings

    settings = make_settings(tmp_path / "data", sqlite_url, clamd.url)
    catalog = Catalog(sqlite_url)
    sha = hashlib.sha256(EICAR).hexdigest()
    open_stores(settings)["quarantine"].put(sha, EICAR)
    with catalog.engine.begin() as conn:
        conn.execute(Blob.__table__.insert().values(sha256=sha, size=len(EICAR),
                                                    media_type="image/jpeg", store="originals"))
        _asset(conn, "x1", sha)
    [batch] = list(targets(catalog, "custom-new"))
    [outcome] = rescan_partition(batch, "custom-new", settings)
    assert outcome["outcome"] == "infected", outcome
    assert catalog.assets(["x1"])["x1"]["status"] == "rejected"
    assert list(targets(catalog, "custom-new")) == []
