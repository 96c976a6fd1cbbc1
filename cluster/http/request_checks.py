"""What every route of the HTTP endpoint does with a request: authorize it, read its body
within bounds, name its path parameters, and build the URLs it hands back.

Imports the endpoint's service and auth, never the routes (``cluster.http.app``).
"""

from __future__ import annotations

from datetime import datetime, timezone

from anyio import to_thread
from python_multipart.multipart import parse_options_header
from starlette.requests import Request

from cluster.http.auth import Principal, authenticate
from cluster.http.errors import ApiError
from cluster.http.json_body import parse_object
from cluster.http.service import FarmService


def farm_service(request: Request) -> FarmService:
    return request.app.state.service


async def authorize(request: Request, scope: str) -> Principal:
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
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:  # nothing presented, nothing guessed
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
    if not principal.allows(scope):
        raise ApiError(403, "forbidden", f"this operation needs a token with the {scope!r} scope")
    return principal


def content_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    if value is None:
        return None
    if not value.isdigit():
        raise ApiError(400, "invalid_content_length", "Content-Length is not a number")
    return int(value)


def check_length(request: Request, limit: int) -> None:
    """413 from Content-Length alone, before a byte of the body is read."""
    length = content_length(request)
    if length is not None and length > limit:
        raise ApiError(413, "too_large", f"the request body is larger than the {limit}-byte limit")


def media_type(request: Request) -> str:
    return parse_options_header(request.headers.get("content-type", ""))[0].decode("latin-1").lower()


async def json_body(request: Request, *, required: bool = True) -> dict:
    """The JSON object in the body, read up to the JSON limit (413 past it)."""
    limit = farm_service(request).config.max_json_bytes
    check_length(request, limit)
    media = media_type(request)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, "too_large", f"the JSON body is larger than {limit} bytes")
    if not body and not required:
        return {}
    if media != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    return parse_object(bytes(body))


def only(data: dict, allowed: set[str]) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ApiError(422, "invalid_body", f"unknown fields: {', '.join(unknown)}")


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):  # SQLite may hand back text for server defaults
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)  # the catalog stores UTC
    return value.isoformat()


def path_id(request: Request, name: str, what: str) -> str:
    """A UUID-shaped path parameter; anything else names nothing (404), never a query error."""
    value = request.path_params[name]
    if len(value) != 36 or any(c not in "0123456789abcdef-" for c in value.lower()):
        raise ApiError(404, "not_found", f"there is no such {what}")
    return value


def api_url(request: Request, name: str, **params: str) -> str:
    """An absolute URL on this API, from the configured public base or else the address the
    server is bound to; never from the request's Host, which the client writes."""
    base = farm_service(request).config.public_url or bound_base(request.scope.get("server"))
    return base + str(request.app.url_path_for(name, **params))


def bound_base(server: tuple[str, int] | None) -> str:
    host, port = server or ("127.0.0.1", 80)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def accepted(request: Request, asset_id: str) -> dict:
    return {"id": asset_id, "status_url": api_url(request, "asset", asset_id=asset_id)}
