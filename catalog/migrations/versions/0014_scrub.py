"""scrub runs, findings and orphan sightings

``scrub_runs``: each scrub of the stores, its options, counts and where a sampled run
stopped. ``scrub_findings``: what it found wrong and did, a row per asset concerned.
``scrub_sightings``: objects no row names, with when a scrub first saw them (catalog.scrubs).

Revision ID: 0014
Revises: 0013
"""

from alembic import op
import sqlalchemy as sa


revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'scrub_runs',
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('options', sa.JSON(), nullable=False),
        sa.Column('counts', sa.JSON(), nullable=True),
        sa.Column('cursor', sa.String(length=16), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_scrub_runs_started_at', 'scrub_runs', ['started_at'])
    op.create_table(
        'scrub_findings',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True,
                  nullable=False),
        sa.Column('run_id', sa.String(length=36), nullable=False),
        sa.Column('store', sa.String(length=40), nullable=False),
        sa.Column('sha256', sa.String(length=64), nullable=True),
        sa.Column('key', sa.Text(), nullable=True),
        sa.Column('kind', sa.String(length=40), nullable=False),
        sa.Column('action', sa.String(length=40), nullable=False),
        sa.Column('asset_id', sa.String(length=36), nullable=True),
        sa.Column('message', sa.Text(), nullable=False),
        sa.Column('found_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_scrub_findings_run', 'scrub_findings', ['run_id'])
    op.create_index('ix_scrub_findings_asset_id', 'scrub_findings', ['asset_id'])
    op.create_table(
        'scrub_sightings',
        sa.Column('store', sa.String(length=40), nullable=False),
        sa.Column('sha256', sa.String(length=64), nullable=False),
        sa.Column('first_seen_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('store', 'sha256'),
    )


def downgrade() -> None:
    op.drop_table('scrub_sightings')
    op.drop_index('ix_scrub_findings_asset_id', table_name='scrub_findings')
    op.drop_index('ix_scrub_findings_run', table_name='scrub_findings')
    op.drop_table('scrub_findings')
    op.drop_index('ix_scrub_runs_started_at', table_name='scrub_runs')
    op.drop_table('scrub_runs')
