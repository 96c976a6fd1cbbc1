"""Alembic environment: the URL comes from the caller (``mediafarm db upgrade``), not an ini file."""

from alembic import context

from catalog.db import connect
from catalog.models import Base

config = context.config
engine = connect(config.attributes["url"])

with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()
