"""What the routes of the HTTP endpoint do with a request: read its body within bounds and
build the URLs they hand back (authorization and path parameters are ``dependencies``).

Imports the endpoint's service, never the routes (``cluster.http.routes``).
"""

from __future__ import annotations

from datetime import datetime, timezone

from python_multipart.multipart import parse_options_header
from starlette.requests import Request

from cluster.http.errors import ApiError
from cluster.http.json_body import parse_object
from cluster.http.models import Accepted
from cluster.http.service import FarmService


def farm_service(request: Request) -> FarmService:
    return request.app.state.service


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


def utc(value: datetime | str | None) -> datetime | None:
    """A catalog time as an aware UTC datetime (the catalog stores UTC)."""
    if value is None:
        return None
    if isinstance(value, str):  # SQLite may hand back text for server defaults
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value


def api_url(request: Request, name: str, **params: str) -> str:
    """An absolute URL on this API, from the configured public base or else the address the
    server is bound to; never from the request's Host, which the client writes."""
    base = farm_service(request).config.public_url or bound_base(request.scope.get("server"))
    return base + str(request.app.url_path_for(name, **params))


def bound_base(server: tuple[str, int] | None) -> str:
    host, port = server or ("127.0.0.1", 80)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def accepted(request: Request, asset_id: str) -> Accepted:
    return Accepted(id=asset_id, status_url=api_url(request, "asset", asset_id=asset_id))
