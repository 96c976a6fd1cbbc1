"""image metadata and preset ids

Revision ID: 0002
Revises: 0001
"""

from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('blobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('media_metadata', sa.JSON(), nullable=True))

    with op.batch_alter_table('renditions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('preset_id', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('metric_name', sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column('metric_value', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('encoder', sa.JSON(), nullable=True))
        batch_op.create_index('ix_renditions_source_preset', ['source_sha256', 'preset_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('renditions', schema=None) as batch_op:
        batch_op.drop_index('ix_renditions_source_preset')
        batch_op.drop_column('encoder')
        batch_op.drop_column('metric_value')
        batch_op.drop_column('metric_name')
        batch_op.drop_column('preset_id')

    with op.batch_alter_table('blobs', schema=None) as batch_op:
        batch_op.drop_column('media_metadata')

