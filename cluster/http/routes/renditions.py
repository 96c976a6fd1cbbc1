"""``/v1/renditions/{sha256}``: a rendition's bytes, for renditions kept in a local store."""

from __future__ import annotations

from collections.abc import Iterator

from anyio import to_thread
from fastapi import APIRouter
from starlette.responses import StreamingResponse

from cluster.http import owned
from cluster.http.dependencies import Reader, RenditionDigest, Service
from cluster.http.errors import ApiError
from cluster.http.models import AUTH_ERRORS, errors

CHUNK = 256 * 1024

router = APIRouter(tags=["renditions"], responses=AUTH_ERRORS)


@router.get("/v1/renditions/{sha256}", name="rendition", response_class=StreamingResponse,
            operation_id="getRendition",
            summary="A rendition's bytes, for renditions kept in a local store",
            responses={200: {"description": "the rendition's bytes", "content": {
                "*/*": {"schema": {"type": "string", "format": "binary"}}}},
                **errors({404: "no published rendition of this owner has this digest"})})
async def get_rendition(principal: Reader, service: Service,
                        sha: RenditionDigest) -> StreamingResponse:
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
