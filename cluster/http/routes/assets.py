"""``/v1/assets``: upload a file or name one in a store, follow it, delete it.

Routes are thin: they authenticate, check limits, and hand work to the farm without
waiting for Dask; the catalog answers every status question. Blocking work (catalog
queries, store calls, submissions) runs in worker threads so the event loop keeps
streaming other uploads.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from functools import partial
from datetime import datetime, timezone

from anyio import CancelScope, to_thread
from fastapi import APIRouter, Request, Response

from catalog.records import AssetRequest
from catalog.webhooks import add_delivery
from cluster.http import idempotency, owned, signed_urls, upload_store
from cluster.http.auth import Principal
from cluster.http.dependencies import AssetId, IdempotencyKey, Reader, Service, Submitter
from cluster.http.errors import ApiError
from cluster.http.models import (AUTH_ERRORS, BODY_TIMEOUT, Accepted, Asset, FileUpload,
                                 Rendition, SourceRequest, errors, parse, request_body)
from cluster.http.request_checks import (accepted, api_url, check_length, json_body, media_type,
                                         utc)
from cluster.http.service import FarmService
from cluster.http.webhooks import allowed_callback
from cluster.storage.sources import asset_id as make_asset_id

router = APIRouter(tags=["assets"], responses=AUTH_ERRORS)


@router.post(
    "/v1/assets", status_code=202, response_model=Accepted, operation_id="createAsset",
    summary="Upload a file (multipart) or name an object in a store (JSON)",
    response_description="accepted: the asset is queued (or already done)",
    # The route streams the body itself (multipart to a spooled file, JSON within its limit),
    # so it is declared here rather than as a parameter FastAPI would read whole first.
    openapi_extra=request_body(FileUpload, SourceRequest),
    responses=errors({
        400: "the body cannot be parsed",
        408: BODY_TIMEOUT,
        409: "the Idempotency-Key was used for a different request, or a request with it is "
             "still being answered (Retry-After)",
        413: "the body is over the upload limit",
        415: "the body, or its file part, is of a type not accepted",
        422: "the form, the source_uri, the callback_url or the Idempotency-Key is not "
             "acceptable",
    }, {409: {"Retry-After": {"description": "while the first request is still answered",
                              "schema": {"type": "integer", "minimum": 1}}}}))
async def create_asset(request: Request, principal: Submitter, service: Service,
                       key: IdempotencyKey = None) -> Accepted:
    claim = idempotency.Claim(service.engine, principal.owner, key)
    try:
        return await _create_asset(request, principal, service, claim)
    except BaseException:
        if claim.held:  # a failed try gives its key back, even when cancelled
            with CancelScope(shield=True):
                await to_thread.run_sync(claim.release)
        raise


async def _create_asset(request: Request, principal: Principal, service: FarmService,
                        claim: idempotency.Claim) -> Accepted:
    media = media_type(request)
    if media == "multipart/form-data":
        check_length(request, service.config.max_upload_bytes)
        received = await upload_store.receive_multipart(
            request.stream(), request.headers["content-type"],
            max_bytes=service.config.max_upload_bytes,
            allowed_types=service.config.content_types, spool_dir=service.config.spool_dir)
        try:
            callback = await _callback(service, received.callback_url)
            digest = idempotency.request_digest("POST", "/v1/assets",
                                                ["file", received.sha256, received.content_type,
                                                 *([callback] if callback else [])])
            if claim.key and (stored := await to_thread.run_sync(claim.take, digest)):
                return Accepted.model_validate(stored)
            buffer = upload_store.owner_area(service.stores["buffer"], principal.owner)
            await to_thread.run_sync(buffer.put_file, received.sha256, received.path)
        finally:
            os.unlink(received.path)
        source = buffer.fs.unstrip_protocol(buffer.key(received.sha256))
        fingerprint = f"sha256:{received.sha256}"
    elif media == "application/json":
        body = parse(SourceRequest, await json_body(request))
        callback = await _callback(service, body.callback_url)
        digest = idempotency.request_digest("POST", "/v1/assets",
                                            ["source", body.model_dump(exclude_none=True)])
        if claim.key and (stored := await to_thread.run_sync(claim.take, digest)):
            return Accepted.model_validate(stored)
        store, path = upload_store.owned_object(body.source_uri, principal.owner,
                                                service.stores, service.config.ingest_prefix)
        info = await to_thread.run_sync(_object_info, store, path)
        source = store.fs.unstrip_protocol(path)
        fingerprint = upload_store.object_fingerprint(info)
    else:
        raise ApiError(415, "unsupported_media_type",
                       "send multipart/form-data with a 'file' part, or application/json "
                       "with a source_uri")
    asset_id = make_asset_id(principal.owner, source)
    await asyncio.wrap_future(service.enqueue(
        AssetRequest(asset_id, principal.owner, source, fingerprint)))
    if callback:  # logged once the asset is queued: the delivery loop sends it when it ends
        await to_thread.run_sync(partial(add_delivery, service.engine, principal.owner,
                                         callback, asset_id=asset_id))
    answer = accepted(request, asset_id)
    if claim.held:
        await to_thread.run_sync(claim.finish, answer.model_dump(mode="json"))
    return answer


async def _callback(service: FarmService, url: str | None) -> str | None:
    if url is None:
        return None
    return await to_thread.run_sync(allowed_callback, url, service.config.webhook_allowed_hosts)


def _object_info(store, path: str) -> dict:
    try:
        info = store.fs.info(path)
    except FileNotFoundError:
        info = None
    if info is None or info.get("type") != "file":
        raise ApiError(422, "source_missing", "source_uri names no object in the store")
    if not info.get("size"):
        raise ApiError(422, "empty", "the object source_uri names is empty")
    return info


@router.get("/v1/assets/{asset_id}", name="asset", response_model=Asset, operation_id="getAsset",
            summary="An asset's status, versions and renditions with their URLs",
            response_description="the asset",
            responses=errors({404: "no such asset for this owner"}))
async def get_asset(request: Request, principal: Reader, service: Service,
                    asset_id: AssetId) -> Asset:
    def local_url(sha: str, file: str | None) -> str:
        if file is None:
            return api_url(request, "rendition", sha256=sha)
        return api_url(request, "rendition_file", sha256=sha, file=file)

    return await to_thread.run_sync(_asset_view, service, principal.owner, asset_id, local_url)


def _asset_view(service: FarmService, owner: str, asset_id: str,
                local_url: Callable[[str, str | None], str]) -> Asset:
    asset = owned.asset_detail(service.engine, owner, asset_id)
    if asset is None:
        raise ApiError(404, "not_found", "there is no such asset")
    return Asset(
        id=asset["id"], status=asset["status"], reason=asset["reason"],
        message=asset["message"], retryable=bool(asset["retryable"]),
        sha256=asset["sha256"], version=asset["current_version"],
        deleted_at=utc(asset["deleted_at"]), created_at=utc(asset["created_at"]),
        updated_at=utc(asset["updated_at"]),
        versions=[{"version": v["version"], "sha256": v["blob_sha256"],
                   "recipe_id": v["recipe_id"], "created_at": utc(v["created_at"])}
                  for v in asset["versions"]],
        renditions=[_rendition_view(service, asset["id"], r, local_url)
                    for r in asset["renditions"]],
    )


def _rendition_view(service: FarmService, asset_id: str, rendition: dict,
                    local_url: Callable[[str, str | None], str]) -> Rendition:
    """A rendition row as the API shows it, with URLs anyone holding them can fetch until
    they expire: presigned by the object store, or signed by this server (local stores,
    and every HLS/DASH package, whose manifests are served here signed anew)."""
    store = service.stores["renditions"]
    encoder = rendition["encoder"] or {}
    digest = rendition["output_sha256"]
    lifetime = service.config.url_expires_s
    expires = int(time.time()) + lifetime

    def signed(file: str | None) -> str:
        query = signed_urls.signed_query(service.config.url_secret, f"/v1/renditions/{digest}",
                                         asset_id, expires)
        return f"{local_url(digest, file)}?{query}"

    if encoder.get("playlist"):
        url = signed(encoder["playlist"].rpartition("/")[2])
    elif upload_store.presigns(store):
        url = upload_store.presign_get(store, store.key(digest), lifetime)
    else:
        url = signed(None)
    dash = signed(encoder["mpd"].rpartition("/")[2]) if encoder.get("mpd") else None
    return Rendition(preset=rendition["preset"], format=rendition["format"],
                     media_type=rendition["media_type"], width=rendition["width"],
                     height=rendition["height"], bytes=rendition["bytes"],
                     quality=rendition["quality"], sha256=digest, url=url, dash_url=dash,
                     url_expires_at=datetime.fromtimestamp(expires, timezone.utc))


@router.delete("/v1/assets/{asset_id}", status_code=204, response_class=Response,
               operation_id="deleteAsset",
               summary="Unpublish an asset's renditions; its status and history stay",
               response_description="deleted (or already deleted)",
               responses=errors({404: "no such asset for this owner"}))
async def delete_asset(principal: Submitter, service: Service, asset_id: AssetId) -> Response:
    await to_thread.run_sync(_delete, service, principal.owner, asset_id)
    return Response(status_code=204)


def _delete(service: FarmService, owner: str, asset_id: str) -> None:
    asset = owned.asset(service.engine, owner, asset_id)
    if asset is None:
        raise ApiError(404, "not_found", "there is no such asset")
    owned.mark_deleted(service.engine, asset_id)
    sha = asset["sha256"]
    if (service.config.purge_originals_on_delete and sha
            and not owned.original_in_use(service.engine, sha)):
        service.stores["originals"].delete(sha)
