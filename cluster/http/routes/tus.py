"""``/v1/tus``: resumable uploads with the tus 1.0 protocol (https://tus.io/protocols/resumable-upload).

Core protocol with the creation, creation-with-upload, termination, checksum (sha1,
sha256, sha512) and expiration extensions; no concatenation or deferred length. Uppy,
tus-js-client, tuspy and the mobile SDKs speak it. Each upload belongs to the owner of
the token that created it: another owner's token finds nothing (404). Bytes go into the
owner's area of the buffer store and the state into the catalog (``cluster.http.tus_store``,
which says why no library does this); once the last byte is in, the upload is submitted
as an asset of its owner, once, and ``Mediafarm-Asset`` names it on HEAD and the last PATCH.

A PATCH is checked before its body is read (version, content type, offset, announced
length) and refused whole when its checksum does not match, when it runs past the
upload's length, or when it arrives without a Content-Length; otherwise bytes are kept
as they arrive, so a connection dropped mid-PATCH resumes from what the server got.
"""

from __future__ import annotations

import time
import uuid
from datetime import timedelta, timezone
from email.utils import format_datetime
from typing import Annotated

import anyio
from anyio import CancelScope, to_thread
from fastapi import APIRouter, Depends, Header, Request, Response
from starlette.requests import ClientDisconnect

from catalog.repository import utcnow
from catalog.records import AssetRequest
from cluster.http import idempotency, tus_store, upload_store
from cluster.http.dependencies import IdempotencyKey, Service, Submitter, UploadId
from cluster.http.errors import ApiError
from cluster.http.models import (AUTH_ERRORS, BODY_TIMEOUT, TUS_CHUNK, TusUploadState, errors,
                                 raw_body)
from cluster.http.request_checks import accepted, api_url, content_length, media_type, utc
from cluster.http.service import FarmService
from cluster.storage.sources import asset_id as make_asset_id

PREFIX = "/v1/tus"
BATCH = 1024 * 1024       # bytes gathered from the body before each write
LEASE_WAIT_S = 10.0       # how long a request waits for another one writing to the upload
HEAD_WAIT_S = 1.0         # ... and a HEAD, before it reports the offset as it stands

_header = {"schema": {"type": "string"}}
TUS_RESUMABLE = {"Tus-Resumable": {"description": "always 1.0.0", **_header}}
OFFSET = {"Upload-Offset": {"description": "bytes received so far", **_header}}
EXPIRES = {"Upload-Expires": {"description": "when an unfinished upload is dropped "
                                             "(RFC 9110 date)", **_header}}
ASSET = {"Mediafarm-Asset": {"description": "once complete: the asset's status URL", **_header}}
VERSION_ERROR = errors({412: "Tus-Resumable is missing or not 1.0.0 (Tus-Version says which)"},
                       {412: {"Tus-Version": {"description": "1.0.0", **_header}}})
LOCKED = "another request is writing to this upload (Retry-After)"
STORAGE = {503: "the buffer store is unavailable; try again",
           507: "the buffer store is full: nothing of this request was kept"}

router = APIRouter(tags=["tus"], responses=AUTH_ERRORS)


class TusResumableHeader:
    """ASGI middleware: ``Tus-Resumable: 1.0.0`` on every answer under ``/v1/tus``, errors too."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX):
            await self.app(scope, receive, send)
            return

        async def tagged(message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []),
                                      (b"tus-resumable", tus_store.VERSION.encode())]
            await send(message)

        await self.app(scope, receive, tagged)


def tus_version(tus_resumable: Annotated[str | None, Header(
        alias="Tus-Resumable", description="the protocol version: 1.0.0")] = None) -> None:
    if tus_resumable != tus_store.VERSION:
        raise ApiError(412, "unsupported_version", "this server speaks tus 1.0.0: send "
                       "Tus-Resumable: 1.0.0", {"Tus-Version": tus_store.VERSION})


TusVersion = Annotated[None, Depends(tus_version)]


def capabilities(service: FarmService) -> dict[str, str]:
    return {"Tus-Version": tus_store.VERSION, "Tus-Extension": ",".join(tus_store.EXTENSIONS),
            "Tus-Max-Size": str(service.config.max_upload_bytes),
            "Tus-Checksum-Algorithm": ",".join(tus_store.CHECKSUMS)}


@router.options(PREFIX, status_code=204, response_class=Response, operation_id="tusOptions",
                summary="What this tus server supports: version, extensions, size limit",
                responses={204: {"description": "the capabilities, in headers", "headers": {
                    **TUS_RESUMABLE, "Tus-Version": {"description": "1.0.0", **_header},
                    "Tus-Extension": {"description": "creation, creation-with-upload, "
                                                     "termination, checksum, expiration", **_header},
                    "Tus-Max-Size": {"description": "the upload limit in bytes", **_header},
                    "Tus-Checksum-Algorithm": {"description": "sha1, sha256, sha512", **_header},
                }}})
async def tus_options(principal: Submitter, service: Service) -> Response:
    return Response(status_code=204, headers=capabilities(service))


@router.post(PREFIX, status_code=201, response_class=Response, operation_id="createTusUpload",
             summary="Start a resumable upload (tus creation, creation-with-upload)",
             openapi_extra=raw_body("TusChunk", TUS_CHUNK, required=False),
             responses={201: {"description": "created: PATCH the bytes to Location", "headers": {
                 **TUS_RESUMABLE, "Location": {"description": "the upload's URL", **_header},
                 **OFFSET, **EXPIRES}},
                 **VERSION_ERROR, **errors({
                     400: "Upload-Length is missing or malformed, Upload-Defer-Length was sent, "
                          "or Upload-Metadata or Upload-Checksum is malformed",
                     404: "a retry with the Idempotency-Key of an upload that has expired",
                     408: BODY_TIMEOUT,
                     409: "the Idempotency-Key was used for a different request, or a request "
                          "with it is still being answered (Retry-After)",
                     413: "Upload-Length is over the upload limit (Tus-Max-Size), or the body "
                          "is longer than Upload-Length",
                     415: "the filetype in Upload-Metadata is not accepted, or a body is not "
                          "application/offset+octet-stream",
                     422: "Upload-Length is 0, or the Idempotency-Key is not acceptable",
                     460: "the body does not match Upload-Checksum: the upload was made, its "
                          "offset is 0",
                     423: LOCKED, **STORAGE})})
async def create_tus_upload(
        request: Request, principal: Submitter, service: Service, _version: TusVersion,
        upload_length: Annotated[str | None, Header(alias="Upload-Length")] = None,
        upload_metadata: Annotated[str | None, Header(alias="Upload-Metadata")] = None,
        upload_defer_length: Annotated[str | None, Header(alias="Upload-Defer-Length")] = None,
        upload_checksum: Annotated[str | None, Header(alias="Upload-Checksum")] = None,
        key: IdempotencyKey = None) -> Response:
    if upload_defer_length is not None:
        raise ApiError(400, "defer_length_unsupported",
                       "this server needs Upload-Length when an upload is created")
    length = tus_store.number(upload_length, "Upload-Length")
    if length is None:
        raise ApiError(400, "invalid_upload_length", "Upload-Length is required")
    if length == 0:
        raise ApiError(422, "empty", "an upload of 0 bytes cannot become an asset")
    if length > service.config.max_upload_bytes:
        raise ApiError(413, "too_large", f"Upload-Length is over this server's "
                                         f"{service.config.max_upload_bytes}-byte limit")
    metadata = tus_store.parse_metadata(upload_metadata)
    filetype = metadata.get("filetype", "").lower()
    if filetype and filetype not in service.config.content_types:
        raise ApiError(415, "unsupported_media_type", f"files of type {filetype!r} are not accepted")
    has_body = bool(content_length(request)) or "transfer-encoding" in request.headers
    if has_body and media_type(request) != TUS_CHUNK:
        raise ApiError(415, "unsupported_media_type", f"a body sent with the creation is {TUS_CHUNK}")
    checksum = tus_store.parse_checksum(upload_checksum) if has_body else None
    claim = idempotency.Claim(service.engine, principal.owner, key)
    try:
        digest = idempotency.request_digest("POST", PREFIX, [length, metadata])
        if claim.key and (stored := await to_thread.run_sync(claim.take, digest)):
            return await _created_again(request, service, principal.owner, stored["id"])
        row = await to_thread.run_sync(tus_store.create, service.engine, service.stores["buffer"],
                                       principal.owner, length, metadata,
                                       service.config.upload_expires_s)
        await to_thread.run_sync(claim.finish, {"id": row["id"]})
    except BaseException:
        if claim.held:
            with CancelScope(shield=True):
                await to_thread.run_sync(claim.release)
        raise
    headers = {"Location": api_url(request, "tus_upload", upload_id=row["id"]),
               "Upload-Expires": _http_date(row["expires_at"])}
    if has_body:
        holder = str(uuid.uuid4())
        row = await _leased(service, principal.owner, row["id"], holder, LEASE_WAIT_S)
        try:
            row = await _write(request, service, row, holder, checksum)
        finally:
            with CancelScope(shield=True):
                await to_thread.run_sync(tus_store.release, service.engine, row["id"], holder)
        headers.update(_progress_headers(request, row))
    return Response(status_code=201, headers=headers)


async def _created_again(request: Request, service: FarmService, owner: str,
                         upload_id: str) -> Response:
    """A retried creation (same Idempotency-Key): the first upload's Location and offset."""
    row = await to_thread.run_sync(tus_store.find, service.engine, owner, upload_id)
    if row is None:
        raise ApiError(404, "not_found", "the upload this Idempotency-Key created has expired")
    return Response(status_code=201, headers={
        "Location": api_url(request, "tus_upload", upload_id=upload_id),
        **_progress_headers(request, row)})


@router.head(f"{PREFIX}/{{upload_id}}", name="tus_upload", status_code=200,
             response_class=Response, operation_id="getTusOffset",
             summary="How many bytes of the upload the server has (resume from there)",
             responses={200: {"description": "the offset, in headers", "headers": {
                 **TUS_RESUMABLE, **OFFSET,
                 "Upload-Length": {"description": "the announced length", **_header},
                 "Upload-Metadata": {"description": "as sent at creation", **_header},
                 "Cache-Control": {"description": "no-store", **_header}, **EXPIRES, **ASSET}},
                 **VERSION_ERROR, **errors({404: "no such upload for this owner, or it expired",
                                            **STORAGE})})
async def tus_offset(request: Request, principal: Submitter, service: Service,
                     upload_id: UploadId, _version: TusVersion) -> Response:
    row = await _settled(service, principal.owner, upload_id)
    headers = {"Upload-Length": str(row["length"]), "Cache-Control": "no-store",
               **_progress_headers(request, row)}
    if row["upload_metadata"]:
        headers["Upload-Metadata"] = tus_store.encode_metadata(row["upload_metadata"])
    return Response(status_code=200, headers=headers)


@router.get(f"{PREFIX}/{{upload_id}}", response_model=TusUploadState,
            operation_id="getTusUpload",
            summary="A tus upload's state as JSON, with the asset it became once complete",
            response_description="the upload",
            responses=errors({404: "no such upload for this owner, or it expired", **STORAGE}))
async def get_tus_upload(request: Request, principal: Submitter, service: Service,
                         upload_id: UploadId) -> TusUploadState:
    row = await _settled(service, principal.owner, upload_id)
    complete = row["status"] == tus_store.COMPLETED
    return TusUploadState(
        id=row["id"], length=row["length"], offset=row["offset"],
        metadata=row["upload_metadata"] or {}, complete=complete,
        expires_at=None if complete else utc(row["expires_at"]),
        asset=accepted(request, row["asset_id"]) if complete else None)


@router.patch(f"{PREFIX}/{{upload_id}}", status_code=204, response_class=Response,
              operation_id="patchTusUpload",
              summary="Send bytes of the upload from Upload-Offset on",
              openapi_extra=raw_body("TusChunk", TUS_CHUNK),
              responses={204: {"description": "received: the new offset", "headers": {
                  **TUS_RESUMABLE, **OFFSET, **EXPIRES, **ASSET}},
                  **VERSION_ERROR, **errors({
                      400: "Upload-Offset is missing or malformed, Upload-Checksum is malformed "
                           "or of an algorithm not supported, or Upload-Length differs from the "
                           "upload's",
                      404: "no such upload for this owner, or it expired",
                      408: BODY_TIMEOUT,
                      409: "Upload-Offset is not the upload's offset (HEAD says it), or the "
                           "upload is complete",
                      411: "no Content-Length and no chunked body",
                      413: "the body runs past the upload's length: none of it was kept",
                      415: f"the body is not {TUS_CHUNK}",
                      423: LOCKED,
                      460: "the body does not match Upload-Checksum: none of it was kept",
                      **STORAGE})})
async def patch_tus_upload(
        request: Request, principal: Submitter, service: Service, upload_id: UploadId,
        _version: TusVersion,
        upload_offset: Annotated[str | None, Header(alias="Upload-Offset")] = None,
        upload_checksum: Annotated[str | None, Header(alias="Upload-Checksum")] = None,
        upload_length: Annotated[str | None, Header(alias="Upload-Length")] = None) -> Response:
    if media_type(request) != TUS_CHUNK:
        raise ApiError(415, "unsupported_media_type", f"send the bytes as {TUS_CHUNK}")
    offset = tus_store.number(upload_offset, "Upload-Offset")
    if offset is None:
        raise ApiError(400, "invalid_upload_offset", "Upload-Offset is required")
    length = tus_store.number(upload_length, "Upload-Length")
    checksum = tus_store.parse_checksum(upload_checksum)
    if content_length(request) is None and "transfer-encoding" not in request.headers:
        raise ApiError(411, "length_required", "send Content-Length (or a chunked body)")
    holder = str(uuid.uuid4())
    row = await _leased(service, principal.owner, upload_id, holder, LEASE_WAIT_S)
    try:
        if row["status"] != tus_store.RECEIVING:
            raise ApiError(409, "upload_complete", "every byte of this upload is in already",
                           _progress_headers(request, row))
        if length is not None and length != row["length"]:
            raise ApiError(400, "length_mismatch",
                           f"this upload's length is {row['length']}, not {length}")
        if offset != row["offset"]:
            raise ApiError(409, "offset_mismatch",
                           f"this upload's offset is {row['offset']}, not {offset}; HEAD it "
                           "and resume from there", {"Upload-Offset": str(row["offset"])})
        row = await _write(request, service, row, holder, checksum)
    finally:
        with CancelScope(shield=True):
            await to_thread.run_sync(tus_store.release, service.engine, upload_id, holder)
    return Response(status_code=204, headers=_progress_headers(request, row))


@router.delete(f"{PREFIX}/{{upload_id}}", status_code=204, response_class=Response,
               operation_id="deleteTusUpload",
               summary="Terminate an upload and drop its bytes (tus termination)",
               responses={204: {"description": "terminated (a complete upload's asset stays)",
                                "headers": TUS_RESUMABLE},
                          **VERSION_ERROR,
                          **errors({404: "no such upload for this owner, or it expired",
                                    423: LOCKED, **STORAGE})})
async def delete_tus_upload(principal: Submitter, service: Service, upload_id: UploadId,
                            _version: TusVersion) -> Response:
    holder = str(uuid.uuid4())
    row = await _leased(service, principal.owner, upload_id, holder, LEASE_WAIT_S)
    buffer = service.stores["buffer"]
    if row["status"] == tus_store.COMPLETED:  # its object is the asset's source: kept
        row = {**row, "multipart_id": None}
    await to_thread.run_sync(tus_store.remove, service.engine, buffer, row)
    return Response(status_code=204)


# -- writing ----------------------------------------------------------------------------------


async def _write(request: Request, service: FarmService, row: dict, holder: str,
                 checksum) -> dict:
    """Take the body into the upload after its offset; the row as recorded after it."""
    remaining = row["length"] - row["offset"]
    declared = content_length(request)
    if declared is not None and declared > remaining:
        raise ApiError(413, "past_length", f"the body is {declared} bytes; this upload takes "
                                           f"{remaining} more")
    # Bytes are kept as they arrive unless the whole body must be seen first: to check it
    # against a checksum, or when no Content-Length promises it ends within the length.
    keep_as_received = checksum is None and declared is not None
    hasher, expected = checksum or (None, None)
    engine, expires = service.engine, service.config.upload_expires_s
    receiver = tus_store.receiver(service.stores["buffer"], row)

    async def record(fields: dict | None) -> None:
        if fields:
            await to_thread.run_sync(tus_store.commit, engine, row["id"], holder, fields, expires)
            row.update(fields, expires_at=utcnow() + timedelta(seconds=expires))

    batch, seen, renewed = bytearray(), 0, time.monotonic()
    try:
        await to_thread.run_sync(receiver.begin)
        try:
            async for chunk in request.stream():
                seen += len(chunk)
                if seen > remaining:
                    raise ApiError(413, "past_length", "the body runs past the upload's length; "
                                                       "none of it was kept")
                if hasher is not None:
                    hasher.update(chunk)
                batch += chunk
                if len(batch) >= BATCH:
                    data, batch = bytes(batch), bytearray()
                    await to_thread.run_sync(receiver.write, data)
                    if keep_as_received:
                        await record(await to_thread.run_sync(receiver.progress))
                    if time.monotonic() - renewed > tus_store.LEASE_S / 3:  # a long PATCH
                        await to_thread.run_sync(tus_store.commit, engine, row["id"], holder, {})
                        renewed = time.monotonic()
        except (ClientDisconnect, ApiError) as exc:
            gone = isinstance(exc, ClientDisconnect) or exc.status == 408
            if keep_as_received and gone:  # keep what arrived, as tus asks of a server
                with CancelScope(shield=True):
                    await to_thread.run_sync(receiver.write, bytes(batch))
                    await record(await to_thread.run_sync(receiver.checkpoint))
            raise
        if batch:
            await to_thread.run_sync(receiver.write, bytes(batch))
        if hasher is not None and hasher.digest() != expected:
            raise ApiError(460, "checksum_mismatch", "the body does not match Upload-Checksum; "
                                                     "none of it was kept")
        fields = await to_thread.run_sync(receiver.checkpoint)
        if fields["offset"] == row["length"]:
            fields["status"] = tus_store.ASSEMBLING
        await record(fields)
    except BaseException:
        with CancelScope(shield=True):
            await to_thread.run_sync(receiver.rollback)
        raise
    finally:
        receiver.close()
    if row["status"] == tus_store.ASSEMBLING:
        row = await to_thread.run_sync(_submit, service, row, holder)
    return row


def _submit(service: FarmService, row: dict, holder: str) -> dict:
    """Make the finished upload's object and submit it as its owner's asset, once.

    The asset's id comes from the owner and the object's URL, which only this upload
    has: a submission retried after a crash names the same asset, never a second one.
    """
    buffer = service.stores["buffer"]
    info = tus_store.assemble(buffer, row)
    source = buffer.fs.unstrip_protocol(buffer.key_at(row["key"]))
    asset_id = make_asset_id(row["owner"], source)
    service.submit(AssetRequest(asset_id, row["owner"], source,
                                upload_store.object_fingerprint(info)))
    tus_store.finish(service.engine, row["id"], holder, asset_id)
    return {**row, "status": tus_store.COMPLETED, "asset_id": asset_id}


async def _leased(service: FarmService, owner: str, upload_id: str, holder: str,
                  wait_s: float) -> dict:
    """The owner's upload, held for this request (a complete one is not held)."""
    deadline = time.monotonic() + wait_s
    while True:
        won = await to_thread.run_sync(tus_store.take_lease, service.engine, owner, upload_id,
                                       holder)
        row = await to_thread.run_sync(tus_store.find, service.engine, owner, upload_id)
        if row is None:
            if won:
                await to_thread.run_sync(tus_store.release, service.engine, upload_id, holder)
            raise ApiError(404, "not_found", "there is no such upload")
        if won or row["status"] == tus_store.COMPLETED:
            return row
        if time.monotonic() > deadline:
            raise ApiError(423, "upload_locked", "another request is writing to this upload; "
                           "retry when it is done", {"Retry-After": "1"})
        await anyio.sleep(0.2)


async def _settled(service: FarmService, owner: str, upload_id: str) -> dict:
    """The upload as a reader should see it: after a write under way ends (for a while),
    and submitted if every byte is in but an earlier request died before submitting it."""
    holder = str(uuid.uuid4())
    try:
        row = await _leased(service, owner, upload_id, holder, HEAD_WAIT_S)
    except ApiError as exc:
        if exc.status != 423:
            raise
        row = await to_thread.run_sync(tus_store.find, service.engine, owner, upload_id)
        if row is None:
            raise ApiError(404, "not_found", "there is no such upload") from None
        return row
    try:
        if row["status"] == tus_store.ASSEMBLING:
            row = await to_thread.run_sync(_submit, service, row, holder)
    finally:
        with CancelScope(shield=True):
            await to_thread.run_sync(tus_store.release, service.engine, upload_id, holder)
    return row


def _progress_headers(request: Request, row: dict) -> dict[str, str]:
    headers = {"Upload-Offset": str(row["offset"])}
    if row["status"] == tus_store.COMPLETED:
        headers["Mediafarm-Asset"] = api_url(request, "asset", asset_id=row["asset_id"])
    else:
        headers["Upload-Expires"] = _http_date(row["expires_at"])
    return headers


def _http_date(value) -> str:
    return format_datetime(utc(value).astimezone(timezone.utc), usegmt=True)

