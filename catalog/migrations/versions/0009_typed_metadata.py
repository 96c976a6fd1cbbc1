"""typed metadata

An original's metadata gets typed columns on ``blobs`` where people filter and sort: kind,
dimensions, duration, codecs, frame rate, capture time, camera, lens, place (when kept),
audio tags (artist, album, title, track, year, genre), bit rate, sample rate, channels.
``media_metadata`` stays the whole document. Blobs already catalogued get the columns filled
from their document here, with what it held then (no lens, place or tags: those were not
read before; indexing the files again reads them).

Revision ID: 0009
Revises: 0008
"""

from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

# As this revision made them, whatever later revisions add.
COLUMNS = (
    ('kind', sa.String(length=10)), ('width', sa.Integer()), ('height', sa.Integer()),
    ('duration_s', sa.Float()), ('video_codec', sa.String(length=40)),
    ('audio_codec', sa.String(length=40)), ('frame_rate', sa.Float()),
    ('captured_at', sa.DateTime(timezone=True)), ('camera_make', sa.String(length=200)),
    ('camera_model', sa.String(length=200)), ('lens', sa.String(length=200)),
    ('gps_lat', sa.Float()), ('gps_lon', sa.Float()), ('artist', sa.String(length=1000)),
    ('album', sa.String(length=1000)), ('title', sa.String(length=1000)),
    ('track', sa.Integer()), ('year', sa.Integer()), ('genre', sa.String(length=200)),
    ('bit_rate', sa.BigInteger()), ('sample_rate', sa.Integer()), ('channels', sa.Integer()),
)
INDEXES = {'ix_blobs_kind_captured_at': ['kind', 'captured_at'],
           'ix_blobs_captured_at': ['captured_at'], 'ix_blobs_camera_model': ['camera_model'],
           'ix_blobs_duration_s': ['duration_s']}
BATCH = 1000


def upgrade() -> None:
    with op.batch_alter_table('blobs', schema=None) as batch_op:
        for name, type_ in COLUMNS:
            batch_op.add_column(sa.Column(name, type_, nullable=True))
    with op.batch_alter_table('blobs', schema=None) as batch_op:
        for name, columns in INDEXES.items():
            batch_op.create_index(name, columns, unique=False)
    _fill()


def _fill() -> None:
    """The new columns of every blob with a metadata document, in batches of ``BATCH``."""
    from catalog.metadata_columns import metadata_columns

    names = [name for name, _ in COLUMNS]
    blobs = sa.table('blobs', sa.column('sha256'), sa.column('media_type'),
                     sa.column('media_metadata', sa.JSON()),
                     *(sa.column(name, type_) for name, type_ in COLUMNS))
    bind = op.get_bind()
    after = ''
    while True:
        rows = bind.execute(sa.select(blobs.c.sha256, blobs.c.media_type, blobs.c.media_metadata)
                            .where(blobs.c.sha256 > after, blobs.c.media_metadata.isnot(None))
                            .order_by(blobs.c.sha256).limit(BATCH)).all()
        if not rows:
            return
        updates = []
        for sha256, media_type, metadata in rows:
            if isinstance(metadata, dict):
                values = metadata_columns(metadata, media_type)
                updates.append({'b_sha256': sha256, **{f'v_{n}': values.get(n) for n in names}})
        if updates:
            bind.execute(blobs.update().where(blobs.c.sha256 == sa.bindparam('b_sha256'))
                         .values({n: sa.bindparam(f'v_{n}') for n in names}), updates)
        after = rows[-1][0]


def downgrade() -> None:
    with op.batch_alter_table('blobs', schema=None) as batch_op:
        for name in INDEXES:
            batch_op.drop_index(name)
    with op.batch_alter_table('blobs', schema=None) as batch_op:
        for name, _ in reversed(COLUMNS):
            batch_op.drop_column(name)
