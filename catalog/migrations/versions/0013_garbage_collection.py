"""garbage collection marks and erasure records

``gc_marks``: blobs a GC run found with no referrer, and when; a later run deletes what is
still marked and unreferenced after its grace period, and every write that records or
references a blob deletes its mark first (catalog.gc). ``erasures``: that an owner was
erased, by whom, when and how much; never what was erased.

Revision ID: 0013
Revises: 0012
"""

from alembic import op
import sqlalchemy as sa


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'gc_marks',
        sa.Column('sha256', sa.String(length=64), nullable=False),
        sa.Column('marked_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('sha256'),
    )
    op.create_table(
        'erasures',
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('owner', sa.String(length=200), nullable=False),
        sa.Column('erased_by', sa.String(length=200), nullable=False),
        sa.Column('erased_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('counts', sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_erasures_owner', 'erasures', ['owner'])


def downgrade() -> None:
    op.drop_index('ix_erasures_owner', table_name='erasures')
    op.drop_table('erasures')
    op.drop_table('gc_marks')
