"""media renditions

Revision ID: 0003
Revises: 0002
"""

from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('renditions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('media_type', sa.String(length=100), nullable=True))
        batch_op.alter_column('width',
               existing_type=sa.INTEGER(),
               nullable=True)
        batch_op.alter_column('height',
               existing_type=sa.INTEGER(),
               nullable=True)
    # Every rendition before this revision was an image.
    op.execute("UPDATE renditions SET media_type = 'image/' || format WHERE media_type IS NULL")


def downgrade() -> None:
    with op.batch_alter_table('renditions', schema=None) as batch_op:
        batch_op.alter_column('height',
               existing_type=sa.INTEGER(),
               nullable=False)
        batch_op.alter_column('width',
               existing_type=sa.INTEGER(),
               nullable=False)
        batch_op.drop_column('media_type')

