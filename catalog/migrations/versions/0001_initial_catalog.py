"""initial catalog

Revision ID: 0001
Revises:
"""

from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('blobs',
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('media_type', sa.String(length=100), nullable=False),
    sa.Column('store', sa.String(length=40), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.PrimaryKeyConstraint('sha256')
    )
    op.create_table('recipes',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('definition', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('assets',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('owner', sa.String(length=200), nullable=False),
    sa.Column('source_uri', sa.Text(), nullable=False),
    sa.Column('source_fingerprint', sa.String(length=200), nullable=True),
    sa.Column('recipe_id', sa.String(length=64), nullable=True),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('reason', sa.String(length=100), nullable=True),
    sa.Column('message', sa.Text(), nullable=True),
    sa.Column('retryable', sa.Boolean(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=True),
    sa.Column('current_version', sa.Integer(), nullable=True),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.ForeignKeyConstraint(['recipe_id'], ['recipes.id'], ),
    sa.ForeignKeyConstraint(['sha256'], ['blobs.sha256'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('owner', 'source_uri', name='uq_assets_owner_source')
    )
    with op.batch_alter_table('assets', schema=None) as batch_op:
        batch_op.create_index('ix_assets_status', ['status'], unique=False)

    op.create_table('renditions',
    sa.Column('source_sha256', sa.String(length=64), nullable=False),
    sa.Column('recipe_id', sa.String(length=64), nullable=False),
    sa.Column('preset', sa.String(length=100), nullable=False),
    sa.Column('output_sha256', sa.String(length=64), nullable=False),
    sa.Column('format', sa.String(length=20), nullable=False),
    sa.Column('width', sa.Integer(), nullable=False),
    sa.Column('height', sa.Integer(), nullable=False),
    sa.Column('bytes', sa.BigInteger(), nullable=False),
    sa.Column('quality', sa.Integer(), nullable=True),
    sa.Column('tool_versions', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.ForeignKeyConstraint(['output_sha256'], ['blobs.sha256'], ),
    sa.ForeignKeyConstraint(['recipe_id'], ['recipes.id'], ),
    sa.ForeignKeyConstraint(['source_sha256'], ['blobs.sha256'], ),
    sa.PrimaryKeyConstraint('source_sha256', 'recipe_id', 'preset')
    )
    op.create_table('asset_versions',
    sa.Column('asset_id', sa.String(length=36), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('blob_sha256', sa.String(length=64), nullable=False),
    sa.Column('recipe_id', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.ForeignKeyConstraint(['asset_id'], ['assets.id'], ),
    sa.ForeignKeyConstraint(['blob_sha256'], ['blobs.sha256'], ),
    sa.ForeignKeyConstraint(['recipe_id'], ['recipes.id'], ),
    sa.PrimaryKeyConstraint('asset_id', 'version'),
    sa.UniqueConstraint('asset_id', 'blob_sha256', 'recipe_id', name='uq_versions_content')
    )
    op.create_table('stage_runs',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('asset_id', sa.String(length=36), nullable=False),
    sa.Column('stage', sa.String(length=40), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('duration_ms', sa.Double(), nullable=False),
    sa.Column('worker', sa.String(length=200), nullable=True),
    sa.Column('reason', sa.String(length=100), nullable=True),
    sa.Column('error_class', sa.String(length=200), nullable=True),
    sa.Column('error_message', sa.Text(), nullable=True),
    sa.Column('details', sa.JSON(), nullable=True),
    sa.ForeignKeyConstraint(['asset_id'], ['assets.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('asset_id', 'stage', 'attempt', name='uq_stage_runs_attempt')
    )
    with op.batch_alter_table('stage_runs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_stage_runs_asset_id'), ['asset_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('stage_runs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_stage_runs_asset_id'))

    op.drop_table('stage_runs')
    op.drop_table('asset_versions')
    op.drop_table('renditions')
    with op.batch_alter_table('assets', schema=None) as batch_op:
        batch_op.drop_index('ix_assets_status')

    op.drop_table('assets')
    op.drop_table('recipes')
    op.drop_table('blobs')
