"""Drop uploads left unfinished: expired tus uploads and abandoned S3 multipart uploads.

Run by the server every ``MEDIAFARM_API_UPLOAD_CLEANUP_INTERVAL`` seconds and by
``mediafarm uploads clean``. Three kinds of leftovers go:

- tus uploads still receiving past ``Upload-Expires``: their file, or their multipart
  upload and tail object, and their row is marked ``expired`` (a resuming client gets 404);
- presigned multipart uploads not completed by their ``abandoned_at``: aborted, ``expired``;
- multipart uploads in the buffer store's ``owners/`` area that no pending upload in the
  catalog names (a server died between starting one and recording it), once older than
  the expiry: aborted. S3 keeps (and bills) the parts of an unfinished multipart upload
  for ever unless someone aborts it;
- and, given the originals store, what a lost worker left under its ``staging/`` (a
  source pass cut off mid-stream), once older than the expiry (``Store.sweep_staging``).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import Engine, or_, select

from catalog.models import TusUpload, Upload
from catalog.repository import utcnow
from cluster.http import multipart_store, tus_store
from cluster.http.upload_store import presigns
from cluster.storage.stores import Store

log = logging.getLogger(__name__)


def clean_uploads(engine: Engine, buffer: Store, expires_s: int,
                  now: datetime | None = None, originals: Store | None = None) -> dict[str, int]:
    """Drop what expired by ``now``; how many of each kind went."""
    now = now or utcnow()
    counts = {"tus_expired": 0, "multipart_aborted": 0, "orphans_aborted": 0}
    with engine.connect() as conn:
        tus = [dict(r._mapping) for r in conn.execute(select(TusUpload.__table__).where(
            TusUpload.status == tus_store.RECEIVING, TusUpload.expires_at < now,
            or_(TusUpload.lease_until.is_(None), TusUpload.lease_until < now)))]
        multipart = [dict(r._mapping) for r in conn.execute(select(Upload.__table__).where(
            Upload.status == "pending", Upload.multipart_id.is_not(None),
            Upload.expires_at < now))]
    for row in tus:
        tus_store.remove(engine, buffer, row, tus_store.EXPIRED)
        counts["tus_expired"] += 1
    for row in multipart:
        multipart_store.abort(engine, buffer, row, "expired")
        counts["multipart_aborted"] += 1
    if presigns(buffer):
        counts["orphans_aborted"] = _abort_orphans(engine, buffer, now - timedelta(seconds=expires_s))
    if originals is not None:
        counts["staging_removed"] = originals.sweep_staging(expires_s)
    if any(counts.values()):
        log.info("upload clean-up: %s", counts)
    return counts


def _abort_orphans(engine: Engine, buffer: Store, started_before: datetime) -> int:
    with engine.connect() as conn:
        known = {r[0] for r in conn.execute(select(TusUpload.multipart_id).where(
            TusUpload.multipart_id.is_not(None), TusUpload.status.in_(
                (tus_store.RECEIVING, tus_store.ASSEMBLING))))}
        known |= {r[0] for r in conn.execute(select(Upload.multipart_id).where(
            Upload.multipart_id.is_not(None), Upload.status == "pending"))}
    bucket, prefix, _ = buffer.fs.split_path(f"{buffer.root}/owners/")
    aborted, markers = 0, {}
    while True:
        page = tus_store.s3_call(buffer, "listing multipart uploads", "list_multipart_uploads",
                                 Bucket=bucket, Prefix=prefix, **markers)
        for upload in page.get("Uploads", []):
            if upload["UploadId"] in known or upload["Initiated"] >= started_before:
                continue
            try:
                tus_store.s3_call(buffer, "aborting a multipart upload", "abort_multipart_upload",
                                  Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
                aborted += 1
            except FileNotFoundError:
                pass
        if not page.get("IsTruncated"):
            return aborted
        markers = {"KeyMarker": page["NextKeyMarker"],
                   "UploadIdMarker": page["NextUploadIdMarker"]}
