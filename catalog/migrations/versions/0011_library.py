"""tags, collections and search

An owner's tags on their assets (a tag is its name, so the many-to-many is one table)
and their collections, each a named set of assets; indexes for an owner's search
sorted by creation, with or without a status.

Revision ID: 0011
Revises: 0009
"""

from alembic import op
import sqlalchemy as sa


revision = '0011'
down_revision = '0009'
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
    op.create_index('ix_asset_tags_owner_tag', 'asset_tags', ['owner', 'tag'])
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


def downgrade() -> None:
    op.drop_index('ix_assets_owner_status_created', table_name='assets')
    op.drop_index('ix_assets_owner_created', table_name='assets')
    op.drop_index('ix_collection_items_asset_id', table_name='collection_items')
    op.drop_table('collection_items')
    op.drop_table('collections')
    op.drop_index('ix_asset_tags_owner_tag', table_name='asset_tags')
    op.drop_table('asset_tags')
