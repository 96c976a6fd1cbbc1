"""``/v1/uploads``: presigned uploads into the buffer store (S3 and R2), then completion: one
PUT, or an S3 multipart upload with one presigned PUT per part (``cluster.http.multipart_store``)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from functools import partial
from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, Depends, Request

from catalog.records import AssetRequest
from cluster.http import multipart_store, upload_store
from cluster.http.dependencies import Service, Submitter, UploadId, json_model
from cluster.http.errors import ApiError
from cluster.http.models import (AUTH_ERRORS, BODY_TIMEOUT, MAX_PART_URLS, Accepted,
                                 CompleteRequest, MultipartUploadCreated, PartsRequest, PartUrls,
                                 UploadCreated, UploadPart, UploadRequest, errors, request_body)
from cluster.http.request_checks import accepted, api_url
from cluster.http.service import FarmService
from cluster.storage.sources import asset_id as make_asset_id

router = APIRouter(tags=["uploads"], responses=AUTH_ERRORS)


@router.post("/v1/uploads", status_code=201,
             response_model=UploadCreated | MultipartUploadCreated,
             operation_id="createUpload",
             summary="A presigned PUT URL into the buffer store (S3 and R2 only), or with "
                     "multipart: one per part",
             response_description="upload here (each part, for multipart), then call "
                                  "complete_url",
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
                            UploadRequest, required=False))]
                        ) -> UploadCreated | MultipartUploadCreated:
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
                       "local folder, so upload with POST /v1/assets (multipart) or "
                       "POST /v1/tus (resumable) instead")
    if size is None:
        raise ApiError(422, "invalid_body", "size is required: the upload URL is signed for "
                                            "exactly that many bytes")
    if body.multipart:
        return await _create_multipart(request, service, principal.owner, size,
                                       content_type and content_type.lower())
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


async def _create_multipart(request: Request, service: FarmService, owner: str, size: int,
                            content_type: str | None) -> MultipartUploadCreated:
    buffer, expires = service.stores["buffer"], service.config.url_expires_s
    upload = await to_thread.run_sync(multipart_store.create, service.engine, buffer, owner,
                                      size, content_type, service.config.upload_expires_s)
    count = multipart_store.part_count(size, upload["part_size"])
    parts = await to_thread.run_sync(_part_urls, service, upload,
                                     range(1, min(count, MAX_PART_URLS) + 1))
    return MultipartUploadCreated(
        id=upload["id"], method="PUT", part_size=upload["part_size"], part_count=count,
        parts=parts, expires_at=datetime.now(timezone.utc) + timedelta(seconds=expires),
        abandoned_at=upload["expires_at"],
        parts_url=api_url(request, "upload_parts", upload_id=upload["id"]),
        complete_url=api_url(request, "complete_upload", upload_id=upload["id"]))


def _part_urls(service: FarmService, upload: dict, numbers) -> list[UploadPart]:
    buffer, expires = service.stores["buffer"], service.config.url_expires_s
    return [UploadPart(number=n, size=multipart_store.part_length(upload, n),
                       url=multipart_store.part_url(buffer, upload, n, expires)) for n in numbers]


@router.post("/v1/uploads/{upload_id}/parts", name="upload_parts", response_model=PartUrls,
             operation_id="signUploadParts",
             summary="Presigned URLs for parts of a multipart upload (more, or again)",
             response_description="one URL per part asked for",
             openapi_extra=request_body(PartsRequest),
             responses=errors({
                 400: "the body cannot be parsed",
                 404: "no such upload for this owner",
                 408: BODY_TIMEOUT,
                 409: "the upload is not a multipart upload, or it is no longer pending",
                 413: "the body is over the JSON limit",
                 415: "the body is not JSON",
                 422: "a part number is out of range",
             }))
async def sign_parts(principal: Submitter, service: Service, upload_id: UploadId,
                     body: Annotated[PartsRequest, Depends(json_model(PartsRequest))]
                     ) -> PartUrls:
    upload = await to_thread.run_sync(upload_store.find_upload, service.engine,
                                      principal.owner, upload_id)
    if upload is None:
        raise ApiError(404, "not_found", "there is no such upload")
    if not upload["multipart_id"] or upload["status"] != "pending":
        raise ApiError(409, "not_multipart", "part URLs are for pending multipart uploads")
    count = multipart_store.part_count(upload["size"], upload["part_size"])
    if any(n > count for n in body.numbers):
        raise ApiError(422, "invalid_body", f"this upload has parts 1 to {count}")
    parts = await to_thread.run_sync(_part_urls, service, upload, sorted(set(body.numbers)))
    return PartUrls(parts=parts, expires_at=datetime.now(timezone.utc)
                    + timedelta(seconds=service.config.url_expires_s))


@router.post("/v1/uploads/{upload_id}/complete", name="complete_upload", status_code=202,
             response_model=Accepted, operation_id="completeUpload",
             summary="Submit an uploaded object to the farm",
             response_description="accepted: the asset is queued",
             openapi_extra=request_body(CompleteRequest, required=False),
             responses=errors({
                 400: "the body cannot be parsed",
                 404: "no such upload for this owner",
                 408: BODY_TIMEOUT,
                 409: "nothing has been uploaded to the URL yet, or (multipart) the part list "
                      "does not match the parts uploaded",
                 413: "the uploaded object is over the announced size or the limit; it was "
                      "removed",
                 415: "the body is not JSON",
                 422: "the uploaded object is empty, or the part list is missing (multipart) "
                      "or was sent for a single PUT",
             }))
async def complete_upload(request: Request, principal: Submitter, service: Service,
                          upload_id: UploadId,
                          body: Annotated[CompleteRequest, Depends(json_model(
                              CompleteRequest, required=False))]) -> Accepted:
    parts = None if body.parts is None else [(p.number, p.etag) for p in body.parts]
    asset_id = await to_thread.run_sync(_complete, service, principal.owner, upload_id, parts)
    return accepted(request, asset_id)


def _complete(service: FarmService, owner: str, upload_id: str,
              parts: list[tuple[int, str]] | None) -> str:
    upload = upload_store.find_upload(service.engine, owner, upload_id)
    if upload is None:
        raise ApiError(404, "not_found", "there is no such upload")
    buffer, limit = service.stores["buffer"], service.config.max_upload_bytes
    if upload["multipart_id"]:
        return _complete_multipart(service, upload, parts)
    if parts is not None:
        raise ApiError(422, "invalid_body", "parts are for multipart uploads; this one is a "
                                            "single PUT")
    if upload["status"] != "pending":  # completing twice is answered like the first time
        return upload_store.settled_upload(buffer, upload, limit)
    path, info = upload_store.take_upload(service.engine, buffer, upload, limit)
    source = buffer.fs.unstrip_protocol(path)
    asset_id = make_asset_id(owner, source)
    service.submit(AssetRequest(asset_id, owner, source, upload_store.object_fingerprint(info)))
    upload_store.complete_upload(service.engine, upload_id, asset_id)
    return asset_id


def _complete_multipart(service: FarmService, upload: dict,
                        parts: list[tuple[int, str]] | None) -> str:
    buffer = service.stores["buffer"]
    if upload["status"] == "completed":
        return upload["asset_id"]
    if upload["status"] != "pending":
        raise ApiError(413 if upload["status"] == "rejected" else 404,
                       "too_large" if upload["status"] == "rejected" else "not_found",
                       "this upload was refused: its parts held more than announced"
                       if upload["status"] == "rejected" else "this upload was abandoned")
    if parts is None:
        raise ApiError(422, "invalid_body", "a multipart upload is completed with its parts: "
                                            '{"parts": [{"number": 1, "etag": "..."}, ...]}')
    listed = multipart_store.listed_parts(buffer, upload)
    try:
        multipart_store.check_parts(upload, parts, listed)
    except ApiError as refused:
        if refused.status == 413:
            multipart_store.abort(service.engine, buffer, upload, "rejected")
        raise
    try:
        info = multipart_store.complete(buffer, upload, parts)
    except FileNotFoundError:  # a concurrent completion ended the multipart upload a moment ago
        try:
            info = buffer.fs.info(multipart_store.path(buffer, upload))
        except FileNotFoundError:
            raise ApiError(409, "not_uploaded", "this multipart upload is gone") from None
    source = buffer.fs.unstrip_protocol(multipart_store.path(buffer, upload))
    asset_id = make_asset_id(upload["owner"], source)
    service.submit(AssetRequest(asset_id, upload["owner"], source,
                                upload_store.object_fingerprint(info)))
    upload_store.complete_upload(service.engine, upload["id"], asset_id)
    return asset_id
