"""Claims in the catalog, on SQLite and PostgreSQL: one run at a time per asset.

Lapsed leases are made by moving a claim's expiry into the past, not by waiting.
"""

from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy import update

from catalog import Catalog
from catalog.models import Asset
from catalog.repository import utcnow
from catalog.records import AssetRequest, RenditionRecord

LEASE_S = 3600.0
REQUESTS = [AssetRequest(f"asset-{i}", "owner", f"file:///in/{i}.jpg", "1:1") for i in range(4)]


def _catalog(url: str) -> Catalog:
    catalog = Catalog(url)
    catalog.ensure_recipe("r1", "default", {})
    return catalog


def _always(row, request) -> bool:
    return True


def _lapse(catalog: Catalog, holder: str) -> None:
    """What a crashed run leaves: claims nobody renews any more, past their expiry."""
    with catalog.engine.begin() as conn:
        conn.execute(update(Asset.__table__).where(Asset.claim_holder == holder)
                     .values(claim_expires_at=utcnow() - timedelta(seconds=1)))


def _ready(catalog: Catalog, asset_id: str, attempt: int) -> None:
    catalog.put_blob("a" * 64, 100, "image/jpeg", "originals")
    catalog.record_ready(asset_id, attempt, "a" * 64, "r1", [
        RenditionRecord("thumb", "c" * 64, "webp", 150, 150, 10, 80, "image/webp", "p1")],
        "renditions")


def test_a_live_claim_is_not_taken_by_another_run(catalog_url):
    catalog = _catalog(catalog_url)
    first = catalog.claim(REQUESTS, "r1", "run-a", LEASE_S, _always)
    assert first.attempts == {r.asset_id: 1 for r in REQUESTS} and not first.held
    second = catalog.claim(REQUESTS, "r1", "run-b", LEASE_S, _always)
    assert second.attempts == {} and second.held == {r.asset_id: "run-a" for r in REQUESTS}
    assert {a["attempt"] for a in catalog.assets(r.asset_id for r in REQUESTS).values()} == {1}


def test_a_lapsed_claim_is_taken_over_and_the_old_runs_late_writes_are_dropped(catalog_url):
    catalog = _catalog(catalog_url)
    catalog.claim(REQUESTS[:1], "r1", "crashed-run", LEASE_S, _always)
    _lapse(catalog, "crashed-run")
    taken = catalog.claim(REQUESTS[:1], "r1", "run-b", LEASE_S, _always)
    assert taken.attempts == {"asset-0": 2} and not taken.held
    row = catalog.assets(["asset-0"])["asset-0"]
    assert (row["claim_holder"], row["status"], row["attempt"]) == ("run-b", "queued", 2)

    _ready(catalog, "asset-0", 1)  # the crashed run's task, finishing late: not its asset now
    assert catalog.assets(["asset-0"])["asset-0"]["status"] == "queued"
    _ready(catalog, "asset-0", 2)  # the run that took it over: ends it and lets go
    row = catalog.assets(["asset-0"])["asset-0"]
    assert (row["status"], row["attempt"], row["claim_holder"]) == ("ready", 2, None)


def test_an_ended_asset_lets_go_so_the_next_run_takes_it_at_once(catalog_url):
    catalog = _catalog(catalog_url)
    catalog.claim(REQUESTS[:1], "r1", "run-a", LEASE_S, _always)
    catalog.record_stop("asset-0", 1, "failed", "internal_error", "boom", retryable=True)
    assert catalog.claim(REQUESTS[:1], "r1", "run-b", LEASE_S, _always).attempts == {"asset-0": 2}


def test_renewal_keeps_a_claim_and_release_frees_it(catalog_url):
    catalog = _catalog(catalog_url)
    catalog.claim(REQUESTS, "r1", "run-a", LEASE_S, _always)
    _lapse(catalog, "run-a")
    assert catalog.renew_claims("run-a", LEASE_S) == len(REQUESTS)
    assert catalog.claim(REQUESTS, "r1", "run-b", LEASE_S, _always).attempts == {}
    catalog.release_claims("run-a")
    assert catalog.claim(REQUESTS, "r1", "run-b", LEASE_S, _always).attempts == {
        r.asset_id: 2 for r in REQUESTS}


def test_unwanted_assets_are_left_alone(catalog_url):
    catalog = _catalog(catalog_url)
    catalog.claim(REQUESTS[:1], "r1", "run-a", LEASE_S, _always)
    _ready(catalog, "asset-0", 1)
    claim = catalog.claim(REQUESTS[:1], "r1", "run-b", LEASE_S,
                          lambda row, request: row is None or row["status"] != "ready")
    assert claim.unwanted == ["asset-0"] and claim.attempts == {} and not claim.held
    assert catalog.assets(["asset-0"])["asset-0"]["attempt"] == 1


def test_runs_claiming_at_once_split_the_assets_without_overlap(catalog_url):
    catalog = _catalog(catalog_url)
    requests = [AssetRequest(f"race-{i}", "owner", f"file:///in/race-{i}.jpg", "1:1")
                for i in range(40)]
    # Half the assets exist already (a finished earlier run), half are new.
    catalog.claim(requests[::2], "r1", "earlier", LEASE_S, _always)
    for request in requests[::2]:
        catalog.record_stop(request.asset_id, 1, "failed", "internal_error", "x", retryable=True)
    gate, results = threading.Barrier(4), {}

    def run(name: str) -> None:
        gate.wait()
        results[name] = Catalog(catalog_url).claim(requests, "r1", name, LEASE_S, _always)

    threads = [threading.Thread(target=run, args=(f"run-{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    taken = [asset_id for claim in results.values() for asset_id in claim.attempts]
    assert sorted(taken) == sorted(r.asset_id for r in requests)  # each once, by one run
    for name, claim in results.items():
        assert set(claim.attempts).isdisjoint(claim.held)
        assert set(claim.attempts) | set(claim.held) == {r.asset_id for r in requests}
    rows = catalog.assets(r.asset_id for r in requests)
    assert {a: rows[a]["attempt"] for a in rows} == {
        r.asset_id: 2 if i % 2 == 0 else 1 for i, r in enumerate(requests)}


def test_a_failed_job_lets_go_of_its_own_assets_only(catalog_url):
    catalog = _catalog(catalog_url)
    catalog.claim(REQUESTS[:2], "r1", "run-a", LEASE_S, _always, job_id="job-1")
    catalog.claim(REQUESTS[2:], "r1", "run-a", LEASE_S, _always)  # e.g. uploads beside it
    catalog.release_claims("run-a", "job-1")
    claim = catalog.claim(REQUESTS, "r1", "run-b", LEASE_S, _always)
    assert set(claim.attempts) == {"asset-0", "asset-1"}
    assert set(claim.held) == {"asset-2", "asset-3"}
