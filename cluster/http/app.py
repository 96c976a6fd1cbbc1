"""The HTTP submit endpoint: a Starlette app over one Farm (``mediafarm serve``).

Routes are thin: they authenticate, check limits, and hand work to the farm
without waiting for Dask; the catalog answers every status question. Blocking
work (catalog queries, store calls, submissions) runs in worker threads so the
event loop keeps streaming other uploads.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from functools import partial

from anyio import CancelScope, to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from catalog.repository import AssetRequest
from cluster.http import idempotency, owned, uploads
from cluster.http.auth import Principal
from cluster.farm import Farm
from cluster.http.errors import ApiError
from cluster.manifest import catalog_filter
from cluster.http.openapi import document
from cluster.http.request_checks import (accepted, api_url, authorize, check_length, farm_service, iso,
                                  json_body, media_type, only, path_id)
from cluster.http.service import ApiConfig, FarmService
from cluster.http.slow_clients import BodyIdleTimeout
from cluster.storage.sources import asset_id as make_asset_id
from pipelines.recipe import Recipe, recipe_from_dict

log = logging.getLogger(__name__)

CHUNK = 256 * 1024


def create_app(farm_factory: Callable[[], Farm], config: ApiConfig,
               recipe: Recipe | None = None) -> Starlette:
    """The ASGI app; ``farm_factory`` makes the one Farm the server holds while it runs."""

    @asynccontextmanager
    async def lifespan(app: Starlette):
        farm = await to_thread.run_sync(farm_factory)  # Dask's sync client wants its own thread
        app.state.service = FarmService(farm, config, recipe)
        try:
            yield
        finally:
            await to_thread.run_sync(app.state.service.close)

    routes = [
        Route("/v1/assets", create_asset, methods=["POST"]),
        Route("/v1/assets/{asset_id}", get_asset, methods=["GET"], name="asset"),
        Route("/v1/assets/{asset_id}", delete_asset, methods=["DELETE"]),
        Route("/v1/renditions/{sha256}", get_rendition, methods=["GET"], name="rendition"),
        Route("/v1/uploads", create_upload, methods=["POST"]),
        Route("/v1/uploads/{upload_id}/complete", complete_upload, methods=["POST"],
              name="complete_upload"),
        Route("/v1/jobs", create_job, methods=["POST"]),
        Route("/v1/jobs/{job_id}", get_job, methods=["GET"], name="job"),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={
        ApiError: _api_error, HTTPException: _http_error, ClientDisconnect: _gone,
        Exception: _internal_error},
        middleware=[Middleware(BodyIdleTimeout, seconds=config.body_timeout_s)])
    app.state.config = config
    app.state.openapi = document(config)
    return app


# -- errors -----------------------------------------------------------------------------------


async def _api_error(_request: Request, exc: ApiError) -> Response:
    return JSONResponse(exc.body(), exc.status, headers=exc.headers)


async def _http_error(_request: Request, exc: HTTPException) -> Response:
    codes = {404: ("not_found", "there is nothing at this path"),
             405: ("method_not_allowed", "this path does not take that method")}
    code, message = codes.get(exc.status_code, ("http_error", str(exc.detail)))
    return JSONResponse({"error": code, "message": message}, exc.status_code,
                        headers=getattr(exc, "headers", None))


async def _gone(_request: Request, _exc: ClientDisconnect) -> Response:
    # The client hung up mid-body; nobody will read this answer, and it is not a server fault.
    return Response(status_code=400)


async def _internal_error(_request: Request, exc: Exception) -> Response:
    log.exception("unhandled error", exc_info=exc)
    return JSONResponse({"error": "internal_error",
                         "message": "the server failed to answer; try again later"}, 500)


# -- assets -----------------------------------------------------------------------------------


async def create_asset(request: Request) -> Response:
    principal = await authorize(request, "submit")
    service = farm_service(request)
    key = idempotency.parse_key(request.headers.get("idempotency-key"))
    claim = idempotency.Claim(service.engine, principal.owner, key)
    try:
        return await _create_asset(request, principal, service, claim)
    except BaseException:
        if claim.held:  # a failed try gives its key back, even when cancelled
            with CancelScope(shield=True):
                await to_thread.run_sync(claim.release)
        raise


async def _create_asset(request: Request, principal: Principal, service: FarmService,
                        claim: idempotency.Claim) -> Response:
    media = media_type(request)
    if media == "multipart/form-data":
        check_length(request, service.config.max_upload_bytes)
        received = await uploads.receive_multipart(
            request.stream(), request.headers["content-type"],
            max_bytes=service.config.max_upload_bytes,
            allowed_types=service.config.content_types, spool_dir=service.config.spool_dir)
        try:
            digest = idempotency.request_digest("POST", "/v1/assets",
                                                ["file", received.sha256, received.content_type])
            if claim.key and (stored := await to_thread.run_sync(claim.take, digest)):
                return JSONResponse(stored, 202)
            buffer = uploads.owner_area(service.stores["buffer"], principal.owner)
            await to_thread.run_sync(buffer.put_file, received.sha256, received.path)
        finally:
            os.unlink(received.path)
        source = buffer.fs.unstrip_protocol(buffer.key(received.sha256))
        fingerprint = f"sha256:{received.sha256}"
    elif media == "application/json":
        data = await json_body(request)
        only(data, {"source_uri"})
        digest = idempotency.request_digest("POST", "/v1/assets", ["source", data])
        if claim.key and (stored := await to_thread.run_sync(claim.take, digest)):
            return JSONResponse(stored, 202)
        store, path = uploads.owned_object(data.get("source_uri"), principal.owner,
                                           service.stores, service.config.ingest_prefix)
        info = await to_thread.run_sync(_object_info, store, path)
        source, fingerprint = store.fs.unstrip_protocol(path), uploads.object_fingerprint(info)
    else:
        raise ApiError(415, "unsupported_media_type",
                       "send multipart/form-data with a 'file' part, or application/json "
                       "with a source_uri")
    asset_id = make_asset_id(principal.owner, source)
    await asyncio.wrap_future(service.enqueue(
        AssetRequest(asset_id, principal.owner, source, fingerprint)))
    answer = accepted(request, asset_id)
    if claim.held:
        answer = await to_thread.run_sync(claim.finish, answer)
    return JSONResponse(answer, 202)


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


async def get_asset(request: Request) -> Response:
    principal = await authorize(request, "read")
    service = farm_service(request)
    body = await to_thread.run_sync(_asset_view, service, principal.owner,
                                    path_id(request, "asset_id", "asset"),
                                    lambda sha: api_url(request, "rendition", sha256=sha))
    return JSONResponse(body)


def _asset_view(service: FarmService, owner: str, asset_id: str,
                local_url: Callable[[str], str]) -> dict:
    asset = owned.asset_detail(service.engine, owner, asset_id)
    if asset is None:
        raise ApiError(404, "not_found", "there is no such asset")
    return {
        "id": asset["id"], "status": asset["status"], "reason": asset["reason"],
        "message": asset["message"], "retryable": bool(asset["retryable"]),
        "sha256": asset["sha256"], "version": asset["current_version"],
        "deleted_at": iso(asset["deleted_at"]), "created_at": iso(asset["created_at"]),
        "updated_at": iso(asset["updated_at"]),
        "versions": [{"version": v["version"], "sha256": v["blob_sha256"],
                      "recipe_id": v["recipe_id"], "created_at": iso(v["created_at"])}
                     for v in asset["versions"]],
        "renditions": [_rendition_view(service, r, local_url) for r in asset["renditions"]],
    }


def _rendition_view(service: FarmService, rendition: dict,
                    local_url: Callable[[str], str]) -> dict:
    """A rendition row as the API shows it, with a URL its owner can fetch."""
    store = service.stores["renditions"]
    playlist = (rendition["encoder"] or {}).get("playlist")
    digest = rendition["output_sha256"]
    expires = None
    if uploads.presigns(store):
        path = store.key_at(playlist) if playlist else store.key(digest)
        url = uploads.presign_get(store, path, service.config.url_expires_s)
        expires = iso(datetime.now(timezone.utc) + timedelta(seconds=service.config.url_expires_s))
    else:
        url = local_url(digest)
    return {"preset": rendition["preset"], "format": rendition["format"],
            "media_type": rendition["media_type"], "width": rendition["width"],
            "height": rendition["height"], "bytes": rendition["bytes"],
            "quality": rendition["quality"], "sha256": digest,
            "url": url, "url_expires_at": expires}


async def delete_asset(request: Request) -> Response:
    principal = await authorize(request, "submit")
    await to_thread.run_sync(_delete, farm_service(request), principal.owner,
                             path_id(request, "asset_id", "asset"))
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


async def get_rendition(request: Request) -> Response:
    principal = await authorize(request, "read")
    service = farm_service(request)
    sha = request.path_params["sha256"]
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise ApiError(404, "not_found", "there is no such rendition")
    found = await to_thread.run_sync(owned.published_rendition, service.engine,
                                     principal.owner, sha)
    store = service.stores["renditions"]
    size = await to_thread.run_sync(_size_or_none, store, sha) if found else None
    if size is None:
        raise ApiError(404, "not_found", "there is no such rendition")
    return StreamingResponse(_chunks(store, sha), media_type=found["media_type"]
                             or "application/octet-stream",
                             headers={"Content-Length": str(size),
                                      "Cache-Control": "private, max-age=3600",
                                      "X-Content-Type-Options": "nosniff"})


def _size_or_none(store, sha: str) -> int | None:
    try:
        return store.size(sha)
    except FileNotFoundError:
        return None


def _chunks(store, sha: str) -> Iterator[bytes]:
    # A sync iterator: Starlette pulls it in a worker thread, chunk by chunk.
    with store.open(sha) as handle:
        while chunk := handle.read(CHUNK):
            yield chunk


# -- presigned uploads ------------------------------------------------------------------------


async def create_upload(request: Request) -> Response:
    principal = await authorize(request, "submit")
    service = farm_service(request)
    data = await json_body(request, required=False)
    only(data, {"content_type", "size"})
    content_type, size = data.get("content_type"), data.get("size")
    if content_type is not None and (not isinstance(content_type, str)
                                     or content_type.lower() not in service.config.content_types):
        raise ApiError(415, "unsupported_media_type",
                       f"files of type {content_type!r} are not accepted")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ApiError(422, "invalid_body", "size is a positive number of bytes")
    if size is not None and size > service.config.max_upload_bytes:
        raise ApiError(413, "too_large",
                       f"the file is larger than the {service.config.max_upload_bytes}-byte limit")
    buffer = service.stores["buffer"]
    if not uploads.presigns(buffer):
        raise ApiError(409, "presign_unavailable",
                       "presigned uploads need the buffer store on S3 or R2; this server's is a "
                       "local folder, so upload with POST /v1/assets (multipart) instead")
    if size is None:
        raise ApiError(422, "invalid_body", "size is required: the upload URL is signed for "
                                            "exactly that many bytes")
    upload_id, relative = await to_thread.run_sync(uploads.create_upload, service.engine,
                                                   principal.owner, size)
    expires = service.config.url_expires_s
    url = await to_thread.run_sync(partial(uploads.presign_put, buffer, buffer.key_at(relative),
                                           expires, size, content_type and content_type.lower()))
    headers = {"Content-Length": str(size)}
    if content_type:
        headers["Content-Type"] = content_type.lower()
    return JSONResponse({
        "id": upload_id, "upload_url": url, "method": "PUT", "headers": headers,
        "expires_at": iso(datetime.now(timezone.utc) + timedelta(seconds=expires)),
        "complete_url": api_url(request, "complete_upload", upload_id=upload_id),
    }, 201)


async def complete_upload(request: Request) -> Response:
    principal = await authorize(request, "submit")
    service = farm_service(request)
    asset_id = await to_thread.run_sync(_complete, service, principal.owner,
                                        path_id(request, "upload_id", "upload"))
    return JSONResponse(accepted(request, asset_id), 202)


def _complete(service: FarmService, owner: str, upload_id: str) -> str:
    upload = uploads.find_upload(service.engine, owner, upload_id)
    if upload is None:
        raise ApiError(404, "not_found", "there is no such upload")
    buffer, limit = service.stores["buffer"], service.config.max_upload_bytes
    if upload["status"] != "pending":  # completing twice is answered like the first time
        return uploads.settled_upload(buffer, upload, limit)
    path, info = uploads.take_upload(service.engine, buffer, upload, limit)
    source = buffer.fs.unstrip_protocol(path)
    asset_id = make_asset_id(owner, source)
    service.submit(AssetRequest(asset_id, owner, source, uploads.object_fingerprint(info)))
    uploads.complete_upload(service.engine, upload_id, asset_id)
    return asset_id


# -- jobs -------------------------------------------------------------------------------------


async def create_job(request: Request) -> Response:
    principal = await authorize(request, "admin")
    service = farm_service(request)
    data = await json_body(request)
    only(data, {"kind", "where", "manifest", "recipe", "owner"})
    kind = data.get("kind")
    if kind not in ("reencode", "backfill"):
        raise ApiError(422, "invalid_body", "kind is 'reencode' or 'backfill'")
    recipe = _recipe(data.get("recipe"), required=kind == "reencode") or service.recipe
    owner = data.get("owner", principal.owner)
    if not isinstance(owner, str) or not 0 < len(owner) <= 200:
        raise ApiError(422, "invalid_body", "owner is a name of 1 to 200 characters")
    if kind == "reencode":
        if "manifest" in data:
            raise ApiError(422, "invalid_body", "a reencode selects with 'where', not a manifest")
        where = data.get("where", "")
        _selection(where)
        job_id = await to_thread.run_sync(partial(service.start_job, kind, recipe, where=where))
    else:
        if "where" in data:
            raise ApiError(422, "invalid_body", "a backfill reads a 'manifest', not 'where'")
        manifest = data.get("manifest")
        if not isinstance(manifest, str) or not manifest:
            raise ApiError(422, "invalid_body", "a backfill needs a manifest")
        if manifest.startswith("catalog:"):
            _selection(manifest)
        else:
            store, path = uploads.store_object(manifest, service.stores,
                                               service.config.source_stores, patterns=True)
            manifest = store.fs.unstrip_protocol(path)
        job_id = await to_thread.run_sync(partial(service.start_job, kind, recipe,
                                                  manifest=manifest, owner=owner))
    return JSONResponse({"id": job_id, "status_url": api_url(request, "job", job_id=job_id)}, 202)


def _recipe(value: object, *, required: bool) -> Recipe | None:
    if value is None:
        if required:
            raise ApiError(422, "invalid_recipe", "a reencode needs a recipe")
        return None
    try:
        return recipe_from_dict(value)
    except Exception as exc:  # noqa: BLE001 - any malformed recipe is the client's mistake
        raise ApiError(422, "invalid_recipe", f"the recipe is not valid: {exc}") from exc


def _selection(where: object) -> None:
    if not isinstance(where, str) or len(where) > 2000:
        raise ApiError(422, "invalid_selection", "a selection is text like owner=alice")
    try:
        catalog_filter(where)
    except ValueError as exc:
        raise ApiError(422, "invalid_selection", str(exc)) from exc


async def get_job(request: Request) -> Response:
    await authorize(request, "admin")
    service = farm_service(request)
    job_id = path_id(request, "job_id", "job")
    job = await to_thread.run_sync(service.catalog.job_status, job_id)
    if job is None:
        raise ApiError(404, "not_found", "there is no such job")
    return JSONResponse({
        "id": job["id"], "kind": job["kind"], "recipe_id": job["recipe_id"],
        "manifest": job["manifest"], "status": job["status"], "submitted": job["submitted"],
        "skipped": job["skipped"], "counts": job["counts"], "assets": job["assets"],
        "created_at": iso(job["created_at"]), "updated_at": iso(job["updated_at"]),
        "message": service.job_error(job_id)})


# -- health and the document ------------------------------------------------------------------


async def healthz(_request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    checks = await to_thread.run_sync(farm_service(request).readiness)
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ready" if ready else "unready", "checks": checks},
                        200 if ready else 503)


async def openapi(request: Request) -> Response:
    return JSONResponse(request.app.state.openapi)
