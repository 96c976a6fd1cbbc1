"""``/v1/uploads``: presigned PUT uploads into the buffer store (S3 and R2), then completion."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from functools import partial
from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, Depends, Request

from catalog.repository import AssetRequest
from cluster.http import upload_store
from cluster.http.dependencies import Service, Submitter, UploadId, json_model
from cluster.http.errors import ApiError
from cluster.http.models import (AUTH_ERRORS, BODY_TIMEOUT, Accepted, UploadCreated,
                                 UploadRequest, errors, request_body)
from cluster.http.request_checks import accepted, api_url
from cluster.http.service import FarmService
from cluster.storage.sources import asset_id as make_asset_id

router = APIRouter(tags=["uploads"], responses=AUTH_ERRORS)


@router.post("/v1/uploads", status_code=201, response_model=UploadCreated,
             operation_id="createUpload",
             summary="A presigned PUT URL into the buffer store (S3 and R2 only)",
             response_description="upload here, then call complete_url",
             openapi_extra=request_body(UploadRequest, required=False),
             responses=errors({
                 400: "the body cannot be parsed",
                 408: BODY_TIMEOUT,
                 409: "the buffer store cannot presign (a local folder)",
                 413: "the announced size is over the limit",
                 415: "the announced content type is not accepted",
                 422: "the body is not acceptable",
             }))
async def create_upload(request: Request, principal: Submitter, service: Service,
                        body: Annotated[UploadRequest, Depends(json_model(
                            UploadRequest, required=False))]) -> UploadCreated:
    content_type, size = body.content_type, body.size
    if content_type is not None and content_type.lower() not in service.config.content_types:
        raise ApiError(415, "unsupported_media_type",
                       f"files of type {content_type!r} are not accepted")
    if size is not None and size > service.config.max_upload_bytes:
        raise ApiError(413, "too_large",
                       f"the file is larger than the {service.config.max_upload_bytes}-byte limit")
    buffer = service.stores["buffer"]
    if not upload_store.presigns(buffer):
        raise ApiError(409, "presign_unavailable",
                       "presigned uploads need the buffer store on S3 or R2; this server's is a "
                       "local folder, so upload with POST /v1/assets (multipart) instead")
    if size is None:
        raise ApiError(422, "invalid_body", "size is required: the upload URL is signed for "
                                            "exactly that many bytes")
    upload_id, relative = await to_thread.run_sync(upload_store.create_upload, service.engine,
                                                   principal.owner, size)
    expires = service.config.url_expires_s
    url = await to_thread.run_sync(partial(upload_store.presign_put, buffer,
                                           buffer.key_at(relative), expires, size,
                                           content_type and content_type.lower()))
    headers = {"Content-Length": str(size)}
    if content_type:
        headers["Content-Type"] = content_type.lower()
    return UploadCreated(
        id=upload_id, upload_url=url, method="PUT", headers=headers,
        expires_at=datetime.now(timezone.utc) + timedelta(seconds=expires),
        complete_url=api_url(request, "complete_upload", upload_id=upload_id))


@router.post("/v1/uploads/{upload_id}/complete", name="complete_upload", status_code=202,
             response_model=Accepted, operation_id="completeUpload",
             summary="Submit an uploaded object to the farm",
             response_description="accepted: the asset is queued",
             responses=errors({
                 404: "no such upload for this owner",
                 409: "nothing has been uploaded to the URL yet",
                 413: "the uploaded object is over the announced size or the limit; it was "
                      "removed",
                 422: "the uploaded object is empty",
             }))
async def complete_upload(request: Request, principal: Submitter, service: Service,
                          upload_id: UploadId) -> Accepted:
    asset_id = await to_thread.run_sync(_complete, service, principal.owner, upload_id)
    return accepted(request, asset_id)


def _complete(service: FarmService, owner: str, upload_id: str) -> str:
    upload = upload_store.find_upload(service.engine, owner, upload_id)
    if upload is None:
        raise ApiError(404, "not_found", "there is no such upload")
    buffer, limit = service.stores["buffer"], service.config.max_upload_bytes
    if upload["status"] != "pending":  # completing twice is answered like the first time
        return upload_store.settled_upload(buffer, upload, limit)
    path, info = upload_store.take_upload(service.engine, buffer, upload, limit)
    source = buffer.fs.unstrip_protocol(path)
    asset_id = make_asset_id(owner, source)
    service.submit(AssetRequest(asset_id, owner, source, upload_store.object_fingerprint(info)))
    upload_store.complete_upload(service.engine, upload_id, asset_id)
    return asset_id
