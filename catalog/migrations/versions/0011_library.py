"""tags, collections and search

An owner's tags on their assets (a tag is its name, so the many-to-many is one table)
and their collections, each a named set of assets; indexes for an owner's search
sorted by creation, with or without a status.

Revision ID: 0011
Revises: 0010
"""

import logging

from alembic import op
import sqlalchemy as sa

log = logging.getLogger("alembic.runtime.migration")


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'asset_tags',
        sa.Column('asset_id', sa.String(length=36), sa.ForeignKey('assets.id'), nullable=False),
        sa.Column('tag', sa.String(length=64), nullable=False),
        sa.Column('owner', sa.String(length=200), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.PrimaryKeyConstraint('asset_id', 'tag'),
    )
    op.create_index('ix_asset_tags_owner_tag', 'asset_tags', ['owner', 'tag', 'asset_id'])
    op.create_table(
        'collections',
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('owner', sa.String(length=200), nullable=False),
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('owner', 'name', name='uq_collections_owner_name'),
    )
    op.create_table(
        'collection_items',
        sa.Column('collection_id', sa.String(length=36), sa.ForeignKey('collections.id'),
                  nullable=False),
        sa.Column('asset_id', sa.String(length=36), sa.ForeignKey('assets.id'), nullable=False),
        sa.Column('added_at', sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.PrimaryKeyConstraint('collection_id', 'asset_id'),
    )
    op.create_index('ix_collection_items_asset_id', 'collection_items', ['asset_id'])
    op.create_index('ix_assets_owner_created', 'assets', ['owner', 'created_at', 'id'])
    op.create_index('ix_assets_owner_status_created', 'assets',
                    ['owner', 'status', 'created_at', 'id'])
    # Sorting by what the original holds walks an index of blobs and finds each one's assets.
    op.create_index('ix_assets_sha256', 'assets', ['sha256'])
    op.create_index('ix_blobs_taken', 'blobs', [sa.text('coalesce(captured_at, created_at)')])
    op.create_index('ix_blobs_size', 'blobs', ['size'])
    op.create_index('ix_blobs_duration_or_zero', 'blobs', [sa.text('coalesce(duration_s, 0.0)')])
    if op.get_bind().dialect.name == "postgresql":
        _trigram_indexes()


# Text search looks words up in these (catalog.search): trigram indexes serve ILIKE '%word%'.
TRIGRAM = [('ix_assets_source_uri_trgm', 'assets', 'source_uri'),
           ('ix_asset_tags_tag_trgm', 'asset_tags', 'tag'),
           ('ix_blobs_title_trgm', 'blobs', 'title'),
           ('ix_blobs_artist_trgm', 'blobs', 'artist'),
           ('ix_blobs_album_trgm', 'blobs', 'album')]


def _trigram_indexes() -> None:
    """PostgreSQL's pg_trgm indexes, where the extension can be made (it ships with the
    server; making it needs the right to CREATE in the database). Without them, search
    works the same, reading an owner's rows for each word."""
    bind = op.get_bind()
    try:
        with bind.begin_nested():
            bind.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    except sa.exc.DBAPIError as exc:
        log.warning("no pg_trgm (%s): text search will read an owner's rows for each word",
                    str(exc).splitlines()[0])
        return
    for name, table, column in TRIGRAM:
        op.create_index(name, table, [sa.text(f'{column} gin_trgm_ops')],
                        postgresql_using='gin')


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for name, _, _ in TRIGRAM:
            op.execute(f'DROP INDEX IF EXISTS {name}')
    for name, table in [('ix_blobs_duration_or_zero', 'blobs'), ('ix_blobs_size', 'blobs'),
                        ('ix_blobs_taken', 'blobs'), ('ix_assets_sha256', 'assets')]:
        op.drop_index(name, table_name=table)
    op.drop_index('ix_assets_owner_status_created', table_name='assets')
    op.drop_index('ix_assets_owner_created', table_name='assets')
    op.drop_index('ix_collection_items_asset_id', table_name='collection_items')
    op.drop_table('collection_items')
    op.drop_table('collections')
    op.drop_index('ix_asset_tags_owner_tag', table_name='asset_tags')
    op.drop_table('asset_tags')
