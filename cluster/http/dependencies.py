"""What routes declare they need: the caller's principal with a scope, the service, path ids,
the Idempotency-Key and a JSON body; FastAPI resolves them in the order a route lists them
(authorization first) and documents each one.
"""

# No `from __future__ import annotations`: FastAPI reads the closures' annotations at runtime.

from collections.abc import Awaitable, Callable
from typing import Annotated

from anyio import to_thread
from fastapi import Depends, Header, Path, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer, SecurityScopes

from cluster.http.auth import Principal, authenticate
from cluster.http.errors import ApiError
from cluster.http.idempotency import KEY_PATTERN
from cluster.http.models import RequestModel, parse
from cluster.http.request_checks import farm_service, json_body
from cluster.http.service import FarmService

# Parses the header and names the scheme in the document; the refusals are ``authorized``'s own.
bearer = HTTPBearer(scheme_name="bearer", auto_error=False,
                    description="a token from `mediafarm token create`")


async def authorized(request: Request, security_scopes: SecurityScopes,
                     credentials: Annotated[HTTPAuthorizationCredentials | None,
                                            Depends(bearer)]) -> Principal:
    """The caller's principal: 401 without a valid token, 429 over its rate, 403 without scope.

    Failed authentications are budgeted per client address, and the budget is checked before
    any catalog work, so guessing tokens costs the server no queries once it is spent. Only
    failures are taken from it: many honest clients behind one address are limited by their
    own tokens' buckets, not by each other (nor by their own concurrency).
    """
    service = farm_service(request)
    address = request.client.host if request.client else ""
    wait = service.client_limiter.wait(address)
    if wait:
        raise ApiError(429, "rate_limited", "too many failed authentications from this address; "
                       f"retry in {wait} s", {"Retry-After": str(wait)})
    token = credentials.credentials.strip() if credentials else ""
    if not token:  # nothing presented, nothing guessed
        raise ApiError(401, "unauthorized", "send a token: Authorization: Bearer <token>",
                       {"WWW-Authenticate": 'Bearer realm="mediafarm"'})
    principal = await to_thread.run_sync(authenticate, service.engine, token)
    if principal is None:
        service.client_limiter.take(address)
        raise ApiError(401, "unauthorized", "the token is unknown or revoked",
                       {"WWW-Authenticate": 'Bearer realm="mediafarm", error="invalid_token"'})
    wait = service.limiter.take(principal.token_id)
    if wait:
        raise ApiError(429, "rate_limited",
                       f"this token's request rate is spent; retry in {wait} s",
                       {"Retry-After": str(wait)})
    for scope in security_scopes.scopes:
        if not principal.allows(scope):
            raise ApiError(403, "forbidden",
                           f"this operation needs a token with the {scope!r} scope")
    return principal


Submitter = Annotated[Principal, Security(authorized, scopes=["submit"])]
Reader = Annotated[Principal, Security(authorized, scopes=["read"])]
Admin = Annotated[Principal, Security(authorized, scopes=["admin"])]
Service = Annotated[FarmService, Depends(farm_service)]


def _uuid_path(name: str, what: str) -> Callable[[str], str]:
    """A UUID-shaped path parameter; anything else names nothing (404), never a 422."""

    def checked(value: Annotated[str, Path(alias=name, json_schema_extra={"format": "uuid"})]) -> str:
        if len(value) != 36 or any(c not in "0123456789abcdef-" for c in value.lower()):
            raise ApiError(404, "not_found", f"there is no such {what}")
        return value

    return checked


AssetId = Annotated[str, Depends(_uuid_path("asset_id", "asset"))]
UploadId = Annotated[str, Depends(_uuid_path("upload_id", "upload"))]
JobId = Annotated[str, Depends(_uuid_path("job_id", "job"))]


def _rendition_digest(sha256: Annotated[str, Path(
        json_schema_extra={"pattern": "^[0-9a-f]{64}$"})]) -> str:
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ApiError(404, "not_found", "there is no such rendition")
    return sha256


RenditionDigest = Annotated[str, Depends(_rendition_digest)]

IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", pattern=KEY_PATTERN,
    description="a retry with the same key and request gets the same answer")]


def json_model(model: type[RequestModel], *,
               required: bool = True) -> Callable[[Request], Awaitable[RequestModel]]:
    """A dependency reading ``model`` from the JSON body, up to the JSON limit (413 past it).

    The route reads the body itself, after authorization, rather than letting FastAPI read it
    whole first; the route declares it in the document with ``models.request_body``.
    """

    async def read(request: Request) -> RequestModel:
        return parse(model, await json_body(request, required=required))

    return read
