"""The webhook delivery log as a queue, on SQLite and PostgreSQL: a delivery is due only once
its job has ended, one server process takes each attempt, and owners' secrets are stable."""

from __future__ import annotations

from datetime import timedelta

from catalog import webhooks
from catalog.repository import Catalog


def test_a_delivery_is_due_once_its_job_ends_and_is_leased_once(catalog_url):
    catalog = Catalog(catalog_url)
    engine = catalog.engine
    catalog.ensure_recipe("r1", "r", {})
    catalog.start_job("j1", "reencode", "r1", "")
    delivery_id = webhooks.add_delivery(engine, "olga", "http://127.0.0.1:9/x", job_id="j1")
    assert webhooks.due(engine, webhooks.utcnow()) == []  # the job still runs
    catalog.update_job("j1", status="finished")
    [row] = webhooks.due(engine, webhooks.utcnow())
    assert (row["id"], row["subject_status"], row["attempts"]) == (delivery_id, "finished", 0)
    assert webhooks.lease(engine, row, 60)
    assert not webhooks.lease(engine, row, 60)  # another process that read the same row
    assert webhooks.due(engine, webhooks.utcnow()) == []
    later = webhooks.utcnow() + timedelta(seconds=1)
    webhooks.record_attempt(engine, delivery_id, event="job.finished", status="pending",
                            status_code=500, error="HTTP 500", next_attempt_at=later)
    assert webhooks.due(engine, webhooks.utcnow()) == []
    [again] = webhooks.due(engine, later + timedelta(seconds=1))
    assert (again["attempts"], again["last_status_code"]) == (1, 500)
    webhooks.record_attempt(engine, delivery_id, event="job.finished", status="delivered",
                            status_code=200, error=None, next_attempt_at=None)
    [logged] = webhooks.deliveries(engine, "olga", job_id="j1")
    assert (logged["status"], logged["attempts"], logged["last_error"]) == ("delivered", 2, None)
    assert webhooks.deliveries(engine, "someone-else", job_id="j1") == []


def test_an_owners_secret_is_made_once_and_is_theirs(catalog_url):
    engine = Catalog(catalog_url).engine
    first = webhooks.owner_secret(engine, "olga")
    assert first.startswith("whsec_") and len(first) > 40
    assert webhooks.owner_secret(engine, "olga") == first
    assert webhooks.owner_secret(engine, "pavel") != first
