"""``/v1/owners/{owner}``: erase an owner (admin): every asset, token, upload, tag and
collection of theirs, and the objects only they referenced, with a record that it happened."""

from __future__ import annotations

from functools import partial
from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, Path

from cluster import gc
from cluster.http.dependencies import Admin, Service
from cluster.http.models import AUTH_ERRORS, Erasure, errors

router = APIRouter(tags=["owners"], responses=AUTH_ERRORS)


@router.delete("/v1/owners/{owner}", response_model=Erasure, operation_id="eraseOwner",
               summary="Erase an owner: their assets, tokens, uploads, library and the objects "
                       "only they referenced (admin)",
               response_description="erased (an owner with nothing left erases to zero counts)",
               responses=errors({404: "nothing at this path (a name with a slash in it)",
                                 422: "not an owner name (1 to 200 characters)"}))
async def erase_owner(principal: Admin, service: Service,
                      owner: Annotated[str, Path(min_length=1, max_length=200)]) -> Erasure:
    record = await to_thread.run_sync(partial(
        gc.erase_owner, service.catalog, service.stores, owner, f"{principal.owner} (token {principal.token_id})"))
    return Erasure(**record)
