"""Engines and migrations: PostgreSQL through psycopg 3 in production, SQLite embedded."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

MIGRATIONS = Path(__file__).with_name("migrations")


def normalise_url(url: str) -> str:
    """Route plain ``postgresql://`` URLs through psycopg 3, the driver Mediafarm ships."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


@cache
def connect(url: str) -> Engine:
    """One engine per URL and process (workers reuse it across tasks)."""
    url = normalise_url(url)
    if url.startswith("sqlite"):
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 60})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # After a server restart every pooled connection is dead: pre-ping finds the first
    # one, and SQLAlchemy then invalidates the whole pool (as it does whenever a
    # statement fails with a disconnect), so later checkouts connect afresh instead
    # of failing one by one. A bounded connect timeout keeps a black-holed server
    # from stalling a retry past its budget (catalog.retry).
    connect_args = {} if "connect_timeout" in make_url(url).query else {"connect_timeout": 10}
    return create_engine(url, pool_pre_ping=True, pool_size=4, max_overflow=4,
                         connect_args=connect_args)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # Several worker processes share the embedded catalog: WAL lets readers run
    # beside the one writer, and the busy timeout queues writers instead of failing.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=60000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["url"] = normalise_url(url)
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the catalog at ``url`` to ``revision``; safe to run again."""
    command.upgrade(alembic_config(url), revision)
