"""Idempotency keys on SQLite and PostgreSQL: one request holds a key, the others are told.

The HTTP tests race real requests (tests/integration/test_api_auth.py); these race the
reservation itself, many threads on one key, on each catalog.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import update

from catalog import connect
from catalog.models import IdempotencyKey
from catalog.repository import utcnow
from cluster.http.errors import ApiError
from cluster.http.idempotency import LEASE_S, Claim


def _refused(claim: Claim, digest: str) -> ApiError:
    with pytest.raises(ApiError) as refused:
        claim.take(digest)
    assert refused.value.status == 409
    return refused.value


def test_one_holder_others_are_told_in_progress_or_reused(catalog_url):
    engine = connect(catalog_url)
    first = Claim(engine, "olga", "k1")
    assert first.take("d1") is None and first.held
    busy = _refused(Claim(engine, "olga", "k1"), "d1")
    assert busy.code == "idempotency_key_in_progress" and int(busy.headers["Retry-After"]) >= 1
    assert _refused(Claim(engine, "olga", "k1"), "d2").code == "idempotency_key_reused"
    assert Claim(engine, "pat", "k1").take("d2") is None  # keys are per owner
    assert first.finish({"id": "a"}) == {"id": "a"}
    assert Claim(engine, "olga", "k1").take("d1") == {"id": "a"}  # replayed, nothing held
    assert _refused(Claim(engine, "olga", "k1"), "d2").code == "idempotency_key_reused"


def test_release_frees_the_key_only_for_its_holder(catalog_url):
    engine = connect(catalog_url)
    first = Claim(engine, "olga", "k2")
    first.take("d1")
    waiting = Claim(engine, "olga", "k2")
    _refused(waiting, "d1")
    waiting.release()  # it never held the key: the holder keeps it
    _refused(Claim(engine, "olga", "k2"), "d1")
    first.release()
    again = Claim(engine, "olga", "k2")
    assert again.take("d2") is None and again.held  # a failed try is not remembered


def test_a_reservation_left_by_a_dead_server_is_taken_over(catalog_url):
    engine = connect(catalog_url)
    Claim(engine, "olga", "k3").take("d1")
    with engine.begin() as conn:
        conn.execute(update(IdempotencyKey.__table__).where(IdempotencyKey.key == "k3")
                     .values(created_at=utcnow() - timedelta(seconds=LEASE_S + 5)))
    heir = Claim(engine, "olga", "k3")
    assert heir.take("d1") is None and heir.held
    assert heir.finish({"id": "b"}) == {"id": "b"}


def test_ten_threads_racing_for_one_key_one_wins(catalog_url):
    engine = connect(catalog_url)
    barrier = threading.Barrier(10)
    outcomes: list[str] = []

    def race(i: int) -> None:
        claim = Claim(engine, "olga", "k4")
        barrier.wait(timeout=30)
        try:
            claim.take(f"digest-{i}")
            outcomes.append("held")
        except ApiError as exc:
            outcomes.append(exc.code)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes) == ["held"] + ["idempotency_key_reused"] * 9
