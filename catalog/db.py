"""Engines and migrations: PostgreSQL through psycopg 3 in production, SQLite embedded."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

MIGRATIONS = Path(__file__).with_name("migrations")
# The newest migration's revision (tests/unit/test_migrations_head.py holds it to Alembic's
# head): a catalog already there is not handed to Alembic, whose import and run cost most
# of a second of every command's start.
HEAD = "0014"
_EXAMPLES = "postgresql://USER@HOST/DATABASE or sqlite:///PATH (MEDIAFARM_CATALOG_URL, catalog_url)"


class CatalogURLError(ValueError):
    """A catalog URL that cannot work: not a URL, an unknown database, or its driver missing."""


def normalise_url(url: str) -> str:
    """Route plain ``postgresql://`` URLs through psycopg 3, the driver Mediafarm ships."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


@cache
def connect(url: str) -> Engine:
    """One engine per URL and process (workers reuse it across tasks)."""
    try:
        return _engine(normalise_url(url))
    except (ArgumentError, ImportError) as exc:
        raise CatalogURLError(f"the catalog URL {hide_password(url)!r} {_url_problem(exc)} "
                              f"use {_EXAMPLES}") from exc


def _url_problem(error: Exception) -> str:
    if isinstance(error, NoSuchModuleError):  # an ArgumentError too
        return "names a database SQLAlchemy does not know;"
    if isinstance(error, ImportError):  # the dialect is SQLAlchemy's, its driver is missing
        return f"needs the database driver {error.name}, which is not installed: install it, or"
    return "is not a database URL;"


def hide_password(url: str) -> str:
    """``url`` with the password masked, even where it does not parse as a URL."""
    head, at, host = url.rpartition("@")
    scheme_end = head.find("//")
    start = scheme_end + 2 if scheme_end >= 0 else 0
    user, colon, _ = head[start:].partition(":")
    return f"{head[:start]}{user}:***@{host}" if at and colon else url


def _engine(url: str) -> Engine:
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


def alembic_config(url: str):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["url"] = normalise_url(url)
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the catalog at ``url`` to ``revision``; safe to run again."""
    if revision == "head" and current_revision(url) == HEAD:
        return
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def current_revision(url: str) -> str | None:
    """The catalog's migration revision; None for a database with none yet."""
    try:
        with connect(url).connect() as conn:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except DBAPIError:  # no alembic_version table: a new catalog (a dead server fails again below)
        return None
