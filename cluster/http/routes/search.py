"""``/v1/search``: the owner's assets matching filters, a page at a time (catalog.search)."""

from __future__ import annotations

from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, Query

from catalog.search import SearchFilters, SearchQuery, search
from cluster.http.dependencies import Reader, Service
from cluster.http.errors import ApiError
from cluster.http.models import AUTH_ERRORS, SearchItem, SearchPage, errors
from cluster.http.request_checks import utc

router = APIRouter(tags=["library"], responses=AUTH_ERRORS)


@router.get("/v1/search", response_model=SearchPage, operation_id="searchAssets",
            summary="Search the owner's assets: filters, sort, keyset pages",
            response_description="one page of matches",
            responses=errors({422: "a parameter is not acceptable"}))
async def search_assets(principal: Reader, service: Service,
                        filters: Annotated[SearchFilters, Query()]) -> SearchPage:
    query = SearchQuery(owner=principal.owner, **filters.model_dump(exclude_unset=True))
    try:
        page = await to_thread.run_sync(search, service.engine, query)
    except ValueError as exc:  # a cursor of another sort
        raise ApiError(422, "invalid_request", str(exc)) from exc
    return SearchPage(next=page.next, items=[SearchItem(**{
        **item, **{k: utc(item[k]) for k in ("created_at", "updated_at", "deleted_at",
                                              "captured_at")}}) for item in page.items])
