"""resumable uploads

A tus upload's state lives in the catalog, so its offset survives a server restart:
where its bytes are, how many have been received, and on S3 the multipart upload's id,
the parts written so far (with their ETags) and how many bytes wait in its tail object.
A presigned upload may be an S3 multipart upload: its id, its part size and when it is
abandoned are recorded with it.

Revision ID: 0008
Revises: 0007
"""

from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'tus_uploads',
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('owner', sa.String(length=200), nullable=False),
        sa.Column('key', sa.Text(), nullable=False),
        sa.Column('length', sa.BigInteger(), nullable=False),
        sa.Column('offset', sa.BigInteger(), server_default='0', nullable=False),
        sa.Column('upload_metadata', sa.JSON(), nullable=True),
        sa.Column('part_size', sa.BigInteger(), nullable=True),
        sa.Column('multipart_id', sa.Text(), nullable=True),
        sa.Column('parts', sa.JSON(), nullable=True),
        sa.Column('tail_size', sa.BigInteger(), server_default='0', nullable=False),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('asset_id', sa.String(length=36), nullable=True),
        sa.Column('lease_holder', sa.String(length=36), nullable=True),
        sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_tus_uploads_status_expires', 'tus_uploads', ['status', 'expires_at'])
    with op.batch_alter_table('uploads', schema=None) as batch_op:
        batch_op.add_column(sa.Column('multipart_id', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('part_size', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('uploads', schema=None) as batch_op:
        batch_op.drop_column('expires_at')
        batch_op.drop_column('part_size')
        batch_op.drop_column('multipart_id')
    op.drop_index('ix_tus_uploads_status_expires', table_name='tus_uploads')
    op.drop_table('tus_uploads')
