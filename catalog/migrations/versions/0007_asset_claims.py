"""asset claims

The run that queues an asset claims it: a holder and a lease expiry, renewed while
the run lives and cleared when the asset ends. Another run skips an asset with a
live claim; a crashed run's claims lapse and the next run takes them over.

Revision ID: 0007
Revises: 0006
"""

from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('assets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('claim_holder', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('claim_expires_at', sa.DateTime(timezone=True),
                                      nullable=True))
        batch_op.create_index('ix_assets_claim_holder', ['claim_holder'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('assets', schema=None) as batch_op:
        batch_op.drop_index('ix_assets_claim_holder')
        batch_op.drop_column('claim_expires_at')
        batch_op.drop_column('claim_holder')
