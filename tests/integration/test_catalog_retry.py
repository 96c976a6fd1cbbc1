"""The catalog rides out a lost PostgreSQL server: which errors are retried, for how long.

Errors come from real psycopg and SQLAlchemy calls: a connection to a closed
port, a session the server terminates, a statement timeout, a constraint
violation. Outages are real too: the suite's own throwaway server is stopped
and started (never the shared one on 5432).
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import psycopg
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from catalog import Catalog
from catalog.repository import utcnow
from catalog.records import AssetRequest, StageRecord
from catalog.retry import CatalogUnavailable, is_disconnect
from cluster import runtime
from cluster.config import load_settings
from tests.services.postgres import LOCAL_HOST, _conninfo, _free_port


STARTED = text("SELECT pg_postmaster_start_time()")


def _raised(action) -> BaseException:
    try:
        action()
    except Exception as error:  # noqa: BLE001 - the error is the result under test
        return error
    raise AssertionError("expected an error")


def _closed_port_url() -> str:
    return f"postgresql+psycopg://postgres@{LOCAL_HOST}:{_free_port()}/nowhere"


# -- which errors are retryable ---------------------------------------------------------------

def test_a_refused_connection_is_retryable():
    url = _closed_port_url()
    direct = _raised(lambda: psycopg.connect(_conninfo(url), connect_timeout=2))
    assert type(direct) is psycopg.OperationalError and direct.sqlstate is None
    assert is_disconnect(direct)
    engine = create_engine(url)
    through_sqlalchemy = _raised(lambda: engine.connect())
    assert isinstance(through_sqlalchemy, OperationalError)
    assert is_disconnect(through_sqlalchemy)


def test_a_session_the_server_terminates_is_retryable(restartable_pg_url):
    engine = create_engine(restartable_pg_url)
    with engine.connect() as victim, psycopg.connect(_conninfo(restartable_pg_url),
                                                     autocommit=True) as admin:
        pid = victim.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        error = _raised(lambda: victim.exec_driver_sql("SELECT 1"))
    assert isinstance(error, DBAPIError) and error.connection_invalidated
    assert is_disconnect(error)


def test_the_server_shutting_down_is_retryable(restartable_pg, restartable_pg_url):
    conn = psycopg.connect(_conninfo(restartable_pg_url))
    try:
        restartable_pg.stop("fast")
        error = _raised(lambda: conn.execute("SELECT 1"))
    finally:
        conn.close()
        restartable_pg.start()
    assert isinstance(error, psycopg.OperationalError)
    assert error.sqlstate in (None, "57P01")  # admin_shutdown, or the socket already closed
    assert is_disconnect(error)


def test_constraint_violations_timeouts_and_bugs_are_not_retryable(restartable_pg_url):
    with psycopg.connect(_conninfo(restartable_pg_url), autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY)")
        conn.execute("INSERT INTO t VALUES (1)")
        duplicate = _raised(lambda: conn.execute("INSERT INTO t VALUES (1)"))
        syntax = _raised(lambda: conn.execute("SELEC 1"))
        conn.execute("SET statement_timeout = '50ms'")
        timeout = _raised(lambda: conn.execute("SELECT pg_sleep(2)"))
    assert isinstance(duplicate, psycopg.errors.UniqueViolation)
    assert isinstance(syntax, psycopg.errors.SyntaxError)
    # A statement timeout is an OperationalError too, but the server is fine: no retry.
    assert isinstance(timeout, psycopg.errors.QueryCanceled)
    assert isinstance(timeout, psycopg.OperationalError)
    for error in (duplicate, syntax, timeout, ValueError("a bug")):
        assert not is_disconnect(error), error


# -- the catalog's retries --------------------------------------------------------------------

def test_the_catalog_gives_up_after_its_budget_naming_the_server():
    url = _closed_port_url()
    catalog = Catalog(url, retry_s=1.0)
    began = time.monotonic()
    # results() reads through assets(): the nested call must not get a budget of its own.
    with pytest.raises(CatalogUnavailable) as raised:
        catalog.results(["asset-1"])
    elapsed = time.monotonic() - began
    # not a speed claim: the retry must not give up before its 1 s budget, nor hang past it
    assert 1.0 <= elapsed < 2.5  # not a speed claim (see above)
    message = str(raised.value)
    assert url.split("@")[1].rsplit("/", 1)[0] in message  # host:port
    assert "gave up after 1." in message and "MEDIAFARM_CATALOG_RETRY_S" in message
    assert isinstance(raised.value.__cause__, OperationalError)
    stats = catalog.retry.stats
    assert stats.gave_up == 1 and stats.recovered == 0 and stats.retries >= 3


def test_an_integrity_error_is_raised_at_once(restartable_pg_url):
    catalog = Catalog(restartable_pg_url)
    start = utcnow()
    record = StageRecord("no-such-asset", "scan", 1, "ok", start, start + timedelta(seconds=1))
    began = time.monotonic()
    with pytest.raises(IntegrityError):  # stage_runs.asset_id references assets
        catalog.record_stage(record)
    assert time.monotonic() - began < 1
    assert catalog.retry.stats.retries == 0


def test_a_transaction_waits_out_a_restart(restartable_pg, restartable_pg_url):
    catalog = Catalog(restartable_pg_url, retry_s=30)
    catalog.ensure_recipe("r1", "default", {})
    restartable_pg.stop("fast")
    starter = threading.Timer(2.0, restartable_pg.start)
    starter.start()
    began = time.monotonic()
    try:
        request = AssetRequest("asset-1", "owner", "file:///asset-1.jpg", "1:1")
        attempts = catalog.queue([request], "r1", {})
    finally:
        starter.join()
    waited = time.monotonic() - began
    assert attempts == {"asset-1": 1}
    assert catalog.assets(["asset-1"])["asset-1"]["status"] == "queued"
    stats = catalog.retry.stats
    assert stats.recovered == 1 and stats.retries >= 2 and stats.gave_up == 0
    assert 1.5 <= stats.longest_s <= waited


def test_a_pool_of_dead_connections_recovers_without_a_failed_call(restartable_pg,
                                                                   restartable_pg_url):
    catalog = Catalog(restartable_pg_url)
    engine = catalog.engine
    held = [engine.connect() for _ in range(engine.pool.size())]
    for conn in held:  # every pooled connection is open when the server goes away
        started = conn.execute(STARTED).scalar_one()
        conn.close()
    assert engine.pool.checkedin() == engine.pool.size()
    restartable_pg.restart()
    for _ in range(3 * engine.pool.size()):
        assert catalog.row_counts()["assets"] == 0
    with engine.connect() as conn:
        assert conn.execute(STARTED).scalar_one() > started  # it did restart
    # Pre-ping caught the dead connections and the pool refilled itself: nothing to retry.
    assert catalog.retry.stats.retries == 0


def test_the_budget_is_a_setting():
    assert load_settings(environ={}).catalog_retry_s == 60.0
    settings = load_settings(environ={"MEDIAFARM_CATALOG_RETRY_S": "7.5",
                                      "MEDIAFARM_CATALOG_URL": _closed_port_url()})
    assert settings.catalog_retry_s == 7.5
    assert runtime.catalog(settings).retry.budget_s == 7.5
