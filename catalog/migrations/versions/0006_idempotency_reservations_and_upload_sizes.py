"""idempotency reservations and upload sizes

An Idempotency-Key is reserved (state 'pending', no response yet) before a request
does anything, so concurrent requests with one key cannot all go ahead; a presigned
upload records the size its URL was signed for.

Revision ID: 0006
Revises: 0005
"""

from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('idempotency_keys', schema=None) as batch_op:
        batch_op.add_column(sa.Column('state', sa.String(length=20), server_default='done',
                                      nullable=False))
        batch_op.alter_column('response', existing_type=sa.JSON(), nullable=True)
    with op.batch_alter_table('uploads', schema=None) as batch_op:
        batch_op.add_column(sa.Column('size', sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('uploads', schema=None) as batch_op:
        batch_op.drop_column('size')
    op.execute("DELETE FROM idempotency_keys WHERE state <> 'done'")
    with op.batch_alter_table('idempotency_keys', schema=None) as batch_op:
        batch_op.alter_column('response', existing_type=sa.JSON(), nullable=False)
        batch_op.drop_column('state')
