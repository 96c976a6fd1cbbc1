"""perceptual hashes and near-duplicate groups

Each original picture's (or video poster's) 64-bit pHash, keyed by its blob, with a
video's keyframe fingerprint; and the near-duplicate groups the last search found, per
owner and asset.

Revision ID: 0010
Revises: 0009
"""

from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'perceptual_hashes',
        sa.Column('sha256', sa.String(length=64), nullable=False),
        sa.Column('phash', sa.BigInteger(), nullable=False),
        sa.Column('keyframes', sa.JSON(), nullable=True),
        sa.Column('algorithm', sa.String(length=40), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.ForeignKeyConstraint(['sha256'], ['blobs.sha256']),
        sa.PrimaryKeyConstraint('sha256'),
    )
    op.create_index('ix_perceptual_hashes_phash', 'perceptual_hashes', ['phash'])
    op.create_table(
        'near_duplicate_groups',
        sa.Column('owner', sa.String(length=200), nullable=False),
        sa.Column('asset_id', sa.String(length=36), nullable=False),
        sa.Column('group_id', sa.String(length=36), nullable=True),
        sa.Column('sha256', sa.String(length=64), nullable=False),
        sa.Column('phash', sa.BigInteger(), nullable=False),
        sa.Column('threshold', sa.Integer(), nullable=False),
        sa.Column('computed_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['asset_id'], ['assets.id']),
        sa.PrimaryKeyConstraint('owner', 'asset_id'),
    )
    op.create_index('ix_near_duplicate_groups_group', 'near_duplicate_groups',
                    ['owner', 'group_id'])


def downgrade() -> None:
    op.drop_index('ix_near_duplicate_groups_group', table_name='near_duplicate_groups')
    op.drop_table('near_duplicate_groups')
    op.drop_index('ix_perceptual_hashes_phash', table_name='perceptual_hashes')
    op.drop_table('perceptual_hashes')
