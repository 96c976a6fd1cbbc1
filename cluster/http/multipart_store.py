"""Presigned S3 multipart uploads: the client PUTs each part straight to the bucket.

The multipart upload is made at the key the completed upload keeps, in its owner's
area of the buffer store (``owners/<owner key>/uploads/<id>``): its part URLs name the
multipart upload's id, which completing or aborting ends, so nothing can be written there
through them afterwards. Each part URL is signed for the part's exact length (S3 and R2
refuse any other); completion checks the client's part list against ``list_parts`` and
the announced size before ``complete_multipart_upload``, because an endpoint that does
not check signatures (moto, some S3 lookalikes) would take any length.
"""

from __future__ import annotations

import math
import uuid
from datetime import timedelta

from sqlalchemy import Engine, update

from catalog.models import Upload
from catalog.repository import utcnow
from cluster.http.errors import ApiError
from cluster.http.tus_store import part_size, s3_call
from cluster.http.upload_store import _signer, owner_area
from cluster.storage.stores import Store


def part_count(size: int, part: int) -> int:
    return max(1, math.ceil(size / part))


def part_length(upload: dict, number: int) -> int:
    """Part ``number``'s exact length: ``part_size`` but for the last."""
    count = part_count(upload["size"], upload["part_size"])
    return upload["part_size"] if number < count else upload["size"] - (count - 1) * upload["part_size"]


def path(buffer: Store, upload: dict) -> str:
    return owner_area(buffer, upload["owner"]).key_at(upload["key"])


def create(engine: Engine, buffer: Store, owner: str, size: int, content_type: str | None,
           abandon_after_s: int) -> dict:
    """Start the multipart upload and record it; the upload's row."""
    upload_id = str(uuid.uuid4())
    relative = f"uploads/{upload_id}"
    bucket, key, _ = buffer.fs.split_path(owner_area(buffer, owner).key_at(relative))
    params = {"ContentType": content_type} if content_type else {}
    made = s3_call(buffer, "starting a multipart upload", "create_multipart_upload",
               Bucket=bucket, Key=key, **params)
    row = {"id": upload_id, "owner": owner, "key": relative, "status": "pending", "size": size,
           "multipart_id": made["UploadId"], "part_size": part_size(size),
           "expires_at": utcnow() + timedelta(seconds=abandon_after_s)}
    with engine.begin() as conn:
        conn.execute(Upload.__table__.insert().values(**row))
    return row


def part_url(buffer: Store, upload: dict, number: int, expires: int) -> str:
    """A URL that PUTs part ``number`` of exactly its length, until it expires."""
    return _signer(buffer).url(path(buffer, upload), expires=expires, client_method="upload_part",
                               UploadId=upload["multipart_id"], PartNumber=number,
                               ContentLength=part_length(upload, number))


def listed_parts(buffer: Store, upload: dict) -> dict[int, tuple[str, int]]:
    """What S3 holds of the upload: part number to (ETag, size)."""
    bucket, key, _ = buffer.fs.split_path(path(buffer, upload))
    found: dict[int, tuple[str, int]] = {}
    marker = 0
    while True:
        page = s3_call(buffer, "listing the parts of a multipart upload", "list_parts",
                   Bucket=bucket, Key=key, UploadId=upload["multipart_id"],
                   PartNumberMarker=marker, MaxParts=1000)
        for part in page.get("Parts", []):
            found[part["PartNumber"]] = (_etag(part["ETag"]), part["Size"])
        if not page.get("IsTruncated"):
            return found
        marker = int(page["NextPartNumberMarker"])


def check_parts(upload: dict, sent: list[tuple[int, str]],
                listed: dict[int, tuple[str, int]]) -> None:
    """The client's part list must be every part, in order, as S3 has it, of the right lengths.

    A mismatch is 409 (the client may upload a part again and complete again); bytes over the
    announced size are 413, as for a single PUT.
    """
    count = part_count(upload["size"], upload["part_size"])
    numbers = [n for n, _ in sent]
    if numbers != list(range(1, count + 1)):
        raise ApiError(409, "parts_mismatch", f"the part list must name parts 1 to {count}, in "
                                              "order, each once")
    for number, etag in sent:
        if number not in listed:
            raise ApiError(409, "parts_mismatch", f"part {number} has not been uploaded")
        if _etag(etag) != listed[number][0]:
            raise ApiError(409, "parts_mismatch", f"part {number}'s ETag is not the one S3 has; "
                                                  "upload it again or send its ETag")
    if sum(size for _, size in listed.values()) > upload["size"] or any(
            size > part_length(upload, n) for n, (_, size) in listed.items()):
        raise ApiError(413, "too_large", "the parts hold more than the announced "
                                         f"{upload['size']} bytes; the upload was removed")
    for number in numbers:
        if listed[number][1] != part_length(upload, number):
            raise ApiError(409, "parts_mismatch", f"part {number} has {listed[number][1]} bytes, "
                                                  f"not {part_length(upload, number)}")


def complete(buffer: Store, upload: dict, sent: list[tuple[int, str]]) -> dict:
    """Complete the multipart upload with the checked parts; the object's info."""
    target = path(buffer, upload)
    bucket, key, _ = buffer.fs.split_path(target)
    s3_call(buffer, "completing a multipart upload", "complete_multipart_upload",
        Bucket=bucket, Key=key, UploadId=upload["multipart_id"],
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": _quoted(e)} for n, e in sent]})
    buffer.fs.invalidate_cache(target)
    return buffer.fs.info(target)


def abort(engine: Engine, buffer: Store, upload: dict, status: str) -> None:
    """Abort the multipart upload (its parts go) and mark the upload ``status``."""
    bucket, key, _ = buffer.fs.split_path(path(buffer, upload))
    try:
        s3_call(buffer, "aborting a multipart upload", "abort_multipart_upload",
            Bucket=bucket, Key=key, UploadId=upload["multipart_id"])
    except FileNotFoundError:
        pass
    with engine.begin() as conn:
        conn.execute(update(Upload.__table__).where(Upload.id == upload["id"],
                                                    Upload.status == "pending")
                     .values(status=status))


def _etag(value: str) -> str:
    return value.strip().strip('"').lower()


def _quoted(value: str) -> str:
    return f'"{_etag(value)}"'
