"""``/v1/tags`` and ``/v1/assets/{asset_id}/tags``: an owner's tags on their assets.

A tag is folded to its canonical form (``catalog.library.tag_name``); a name that cannot
be a tag is 422, and another owner's asset is 404, as a missing one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, Path, Response

from catalog import library
from cluster.http.dependencies import AssetId, Reader, Service, Submitter
from cluster.http.errors import ApiError
from cluster.http.models import AUTH_ERRORS, AssetTags, TagCount, errors

router = APIRouter(tags=["library"], responses=AUTH_ERRORS)
Tag = Annotated[str, Path(max_length=4 * library.TAG_MAX_CHARS,
                          description="a tag: letters, digits, spaces and . : + # & ' - _")]
NAME_ERRORS = errors({404: "no such asset for this owner", 422: "not a tag"})


def library_call(function: Callable, *args):
    """``function(*args)`` with the library's refusals as API errors (404, 422)."""
    try:
        return function(*args)
    except library.InvalidName as exc:
        raise ApiError(422, "invalid_name", str(exc)) from exc
    except library.UnknownAssets as exc:
        raise ApiError(404, "not_found", "there is no such asset") from exc
    except library.UnknownCollection as exc:
        raise ApiError(404, "not_found", "there is no such collection") from exc


@router.get("/v1/tags", response_model=list[TagCount], operation_id="listTags",
            summary="The owner's tags and how many assets carry each",
            response_description="the tags, by name")
async def list_tags(principal: Reader, service: Service) -> list[TagCount]:
    rows = await to_thread.run_sync(library.tags, service.engine, principal.owner)
    return [TagCount(**row) for row in rows]


@router.get("/v1/assets/{asset_id}/tags", response_model=AssetTags, operation_id="getAssetTags",
            summary="An asset's tags", response_description="the tags, by name",
            responses=errors({404: "no such asset for this owner"}))
async def asset_tags(principal: Reader, service: Service, asset_id: AssetId) -> AssetTags:
    tags = await to_thread.run_sync(library_call, library.asset_tags, service.engine,
                                    principal.owner, asset_id)
    return AssetTags(asset_id=asset_id, tags=tags)


@router.put("/v1/assets/{asset_id}/tags/{tag}", status_code=204, response_class=Response,
            operation_id="tagAsset", summary="Tag an asset (again is no change)",
            response_description="tagged", responses=NAME_ERRORS)
async def tag_asset(principal: Submitter, service: Service, asset_id: AssetId,
                    tag: Tag) -> Response:
    await to_thread.run_sync(library_call, library.add_tags, service.engine, principal.owner,
                             [asset_id], [tag])
    return Response(status_code=204)


@router.delete("/v1/assets/{asset_id}/tags/{tag}", status_code=204, response_class=Response,
               operation_id="untagAsset", summary="Take a tag off an asset",
               response_description="not tagged (any more)", responses=NAME_ERRORS)
async def untag_asset(principal: Submitter, service: Service, asset_id: AssetId,
                      tag: Tag) -> Response:
    await to_thread.run_sync(library_call, library.remove_tags, service.engine,
                             principal.owner, [asset_id], [tag])
    return Response(status_code=204)
