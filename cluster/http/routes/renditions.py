"""``/v1/renditions/{sha256}``: a rendition's bytes, and the files of its HLS/DASH package.

Two ways in: the owner's bearer token (``read``), or a signed URL the asset view handed
out (``?asset=…&expires=…&sig=…``, ``cluster/http/signed_urls.py``), which is its own
credential, so players and caches need no token. Either way the rendition is served only
while its asset is ready and not deleted: a delete stops every URL at once.

Local stores serve the bytes here, with Starlette's ``FileResponse`` doing range requests;
a package's segments in an object store are a redirect to a presigned URL. Manifests are
rewritten so every URI in them carries the signature (``cluster/http/delivery.py``).
"""

# No `from __future__ import annotations`: FastAPI reads the dependency's annotations at runtime.

import os
import time
from dataclasses import dataclass
from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, Depends, Path, Query, Request, Security
from fastapi.security import APIKeyQuery, HTTPAuthorizationCredentials, SecurityScopes
from fsspec.implementations.local import LocalFileSystem
from starlette.responses import FileResponse, RedirectResponse, Response, StreamingResponse

from cluster.http import delivery, owned, signed_urls, upload_store
from cluster.http.auth import Principal
from cluster.http.dependencies import RenditionDigest, Service, authorized, bearer
from cluster.http.errors import ApiError
from cluster.http.models import AUTH_ERRORS, errors
from cluster.http.request_checks import farm_service

CHUNK = 256 * 1024

signed_url = APIKeyQuery(
    name="sig", scheme_name="signed_url", auto_error=False,
    description="a signed URL from the asset view: `asset`, `expires` and `sig` together; "
                "no token needed. A forged, altered or expired one is 403")


@dataclass(frozen=True)
class Access:
    owner: str | None = None    # by token
    asset: str | None = None    # by signature: the asset it was signed for
    expires: int | None = None  # and until when (Unix seconds)


async def _token_unless_signed(request: Request, security_scopes: SecurityScopes,
                               credentials: Annotated[HTTPAuthorizationCredentials | None,
                                                      Depends(bearer)]) -> Principal | None:
    if "sig" in request.query_params:
        return None
    return await authorized(request, security_scopes, credentials)


async def access(request: Request,
                 principal: Annotated[Principal | None,
                                      Security(_token_unless_signed, scopes=["read"])],
                 sig: Annotated[str | None, Security(signed_url)],
                 asset: Annotated[str | None, Query(
                     description="with `sig`: the asset the URL was signed for")] = None,
                 expires: Annotated[str | None, Query(
                     description="with `sig`: when the URL expires, Unix seconds")] = None,
                 ) -> Access:
    if principal is not None:
        return Access(owner=principal.owner)
    service = farm_service(request)
    address = request.client.host if request.client else ""
    wait = service.client_limiter.wait(address)
    if wait:
        raise ApiError(429, "rate_limited", "too many failed authentications from this address; "
                       f"retry in {wait} s", {"Retry-After": str(wait)})
    path = f"/v1/renditions/{request.path_params.get('sha256', '')}"
    if not (asset and expires and sig and signed_urls.valid(
            service.config.url_secret, "GET", path, asset, expires, sig, time.time())):
        service.client_limiter.take(address)
        raise ApiError(403, "forbidden", "the signed URL is forged, altered or expired")
    return Access(asset=asset, expires=int(expires))


Access_ = Annotated[Access, Depends(access)]
PackageFile = Annotated[str, Path(description="a file of the rendition's HLS/DASH package, "
                                               "e.g. master.m3u8, manifest.mpd, 360p/seg-00001.m4s")]

router = APIRouter(tags=["renditions"], responses={
    **AUTH_ERRORS, **errors({403: "the token lacks the read scope, or the signed URL is forged, "
                                  "altered or expired"})})
SERVED = {
    200: {"description": "the bytes", "content": {
        "*/*": {"schema": {"type": "string", "format": "binary"}}}},
    206: {"description": "the range asked for (Range: bytes=a-b, a-, -n)"},
    304: {"description": "not modified: If-None-Match names the ETag"},
    **errors({400: "a malformed Range header",
              404: "no published rendition (of this owner, or of the signed URL's asset) has "
                   "this digest, or its package has no such file",
              416: "the Range asks for none of the bytes"}),
}


@router.get("/v1/renditions/{sha256}", name="rendition", response_class=Response,
            operation_id="getRendition",
            summary="A rendition's bytes (local stores), by token or signed URL",
            responses=SERVED)
async def get_rendition(request: Request, who: Access_, service: Service,
                        sha: RenditionDigest) -> Response:
    found = await to_thread.run_sync(_published, service, who, sha)
    store = service.stores["renditions"]
    cache = delivery.cache_control(_signed_for(who))
    headers = {"ETag": delivery.etag(sha), "Cache-Control": cache,
               "X-Content-Type-Options": "nosniff"}
    media_type = found["media_type"] or "application/octet-stream"
    if not isinstance(store.fs, LocalFileSystem):
        size = await to_thread.run_sync(_size_or_none, store, sha)
        if size is None:
            raise ApiError(404, "not_found", "there is no such rendition")
        if delivery.not_modified(request.headers.get("if-none-match"), headers["ETag"]):
            return Response(status_code=304, headers=headers)
        return StreamingResponse(_chunks(store, sha), media_type=media_type,
                                 headers={**headers, "Content-Length": str(size)})
    return await _file(request, store.key(sha), media_type, headers)


@router.get("/v1/renditions/{sha256}/{file:path}", name="rendition_file", response_class=Response,
            operation_id="getRenditionFile",
            summary="A file of an HLS/DASH rendition's package: manifests signed anew, segments",
            responses={**SERVED, 307: {"description": "an object store's segment: its "
                                                      "presigned URL"}})
async def get_rendition_file(request: Request, who: Access_, service: Service,
                             sha: RenditionDigest, file: PackageFile) -> Response:
    extension = delivery.package_file(file)
    found = await to_thread.run_sync(_published, service, who, sha)
    prefix = (found["encoder"] or {}).get("playlist", "").rpartition("/")[0]
    if extension is None or not prefix:
        raise ApiError(404, "not_found", "the rendition's package has no such file")
    store = service.stores["renditions"]
    key = store.key_at(f"{prefix}/{file}")
    expires = who.expires or int(time.time()) + service.config.url_expires_s
    if extension in delivery.MANIFESTS:
        text = await to_thread.run_sync(_text_or_none, store, f"{prefix}/{file}")
        if text is None:
            raise ApiError(404, "not_found", "the rendition's package has no such file")
        query = signed_urls.signed_query(service.config.url_secret, f"/v1/renditions/{sha}",
                                         found["asset_id"], expires)
        body = (delivery.signed_playlist(text, query) if extension == "m3u8"
                else delivery.signed_mpd(text, query))
        return Response(body, media_type=delivery.MEDIA_TYPES[extension], headers={
            "Cache-Control": delivery.cache_control(_signed_for(who), manifest=True),
            "X-Content-Type-Options": "nosniff"})
    if upload_store.presigns(store):
        lifetime = max(1, expires - int(time.time()))
        url = await to_thread.run_sync(upload_store.presign_get, store, key, lifetime)
        return RedirectResponse(url, status_code=307)
    headers = {"ETag": delivery.etag(sha, file), "X-Content-Type-Options": "nosniff",
               "Cache-Control": delivery.cache_control(_signed_for(who))}
    return await _file(request, key, delivery.MEDIA_TYPES[extension], headers)


def _published(service, who: Access, sha: str) -> dict:
    found = (owned.signed_rendition(service.engine, who.asset, sha) if who.asset
             else owned.published_rendition(service.engine, who.owner, sha))
    if found is None:
        raise ApiError(404, "not_found", "there is no such rendition")
    return found


def _signed_for(who: Access) -> int | None:
    return None if who.expires is None else who.expires - int(time.time())


async def _file(request: Request, path: str, media_type: str, headers: dict) -> Response:
    """A local file with ranges (Starlette), after If-None-Match and the Range are checked."""
    stat = await to_thread.run_sync(_stat_or_none, path)
    if stat is None:
        raise ApiError(404, "not_found", "there is no such rendition")
    if delivery.not_modified(request.headers.get("if-none-match"), headers["ETag"]):
        return Response(status_code=304, headers=headers)
    refusal = delivery.range_refusal(request.headers.get("range"), stat.st_size)
    if refusal and refusal[0] == 400:
        raise ApiError(400, "bad_range", refusal[1])
    if refusal:
        raise ApiError(416, "range_not_satisfiable", refusal[1],
                       {"Content-Range": f"bytes */{stat.st_size}"})
    return FileResponse(path, media_type=media_type, headers=headers, stat_result=stat)


def _stat_or_none(path: str) -> os.stat_result | None:
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return stat if os.path.isfile(path) else None


def _text_or_none(store, relative: str) -> str | None:
    try:
        return store.get_at(relative).decode("utf-8")
    except FileNotFoundError:
        return None


def _size_or_none(store, sha: str) -> int | None:
    try:
        return store.size(sha)
    except FileNotFoundError:
        return None


def _chunks(store, sha: str):
    # A sync iterator: Starlette pulls it in a worker thread, chunk by chunk.
    with store.open(sha) as handle:
        while chunk := handle.read(CHUNK):
            yield chunk
