"""``/v1/collections``: an owner's named sets of assets.

A collection is named in the path (URL-encoded); its assets are listed through search
(``GET /v1/search?collection=NAME``). Another owner's asset is 404, as a missing one.
"""

from __future__ import annotations

from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, Path, Response

from catalog import library
from cluster.http.dependencies import AssetId, Reader, Service, Submitter
from cluster.http.models import AUTH_ERRORS, CollectionInfo, errors
from cluster.http.request_checks import utc
from cluster.http.routes.tags import library_call

router = APIRouter(tags=["library"], responses=AUTH_ERRORS)
Name = Annotated[str, Path(max_length=4 * library.COLLECTION_MAX_CHARS,
                           description="the collection's name")]


@router.get("/v1/collections", response_model=list[CollectionInfo],
            operation_id="listCollections", summary="The owner's collections",
            response_description="the collections, by name")
async def list_collections(principal: Reader, service: Service) -> list[CollectionInfo]:
    rows = await to_thread.run_sync(library.collections, service.engine, principal.owner)
    return [_info(row) for row in rows]


@router.put("/v1/collections/{name}", response_model=CollectionInfo,
            operation_id="createCollection", summary="Make a collection (again is no change)",
            response_description="the collection",
            responses=errors({404: "a name with a slash in it names no collection",
                              422: "not a name"}))
async def create_collection(principal: Submitter, service: Service,
                            name: Name) -> CollectionInfo:
    made = await to_thread.run_sync(library_call, library.create_collection, service.engine,
                                    principal.owner, name)
    rows = await to_thread.run_sync(library.collections, service.engine, principal.owner)
    return _info(next(row for row in rows if row["id"] == made["id"]))


def _info(row: dict) -> CollectionInfo:
    return CollectionInfo(**{**row, "created_at": utc(row["created_at"])})


@router.delete("/v1/collections/{name}", status_code=204, response_class=Response,
               operation_id="deleteCollection",
               summary="Delete a collection; its assets stay", response_description="deleted",
               responses=errors({404: "no such collection", 422: "not a name"}))
async def delete_collection(principal: Submitter, service: Service, name: Name) -> Response:
    await to_thread.run_sync(library_call, library.delete_collection, service.engine,
                             principal.owner, name)
    return Response(status_code=204)


@router.put("/v1/collections/{name}/assets/{asset_id}", status_code=204,
            response_class=Response, operation_id="addToCollection",
            summary="Put an asset in a collection (made if needed)",
            response_description="in the collection",
            responses=errors({404: "no such asset for this owner", 422: "not a name"}))
async def add_asset(principal: Submitter, service: Service, name: Name,
                    asset_id: AssetId) -> Response:
    await to_thread.run_sync(library_call, library.add_to_collection, service.engine,
                             principal.owner, name, [asset_id])
    return Response(status_code=204)


@router.delete("/v1/collections/{name}/assets/{asset_id}", status_code=204,
               response_class=Response, operation_id="removeFromCollection",
               summary="Take an asset out of a collection",
               response_description="not in the collection (any more)",
               responses=errors({404: "no such collection, or no such asset for this owner",
                                 422: "not a name"}))
async def remove_asset(principal: Submitter, service: Service, name: Name,
                       asset_id: AssetId) -> Response:
    await to_thread.run_sync(library_call, library.remove_from_collection, service.engine,
                             principal.owner, name, [asset_id])
    return Response(status_code=204)
