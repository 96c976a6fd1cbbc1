"""The HTTP endpoint's request and response bodies; FastAPI makes the OpenAPI document from them.

Request bodies are read by the routes themselves (bounded, after authorization) and checked
with :func:`parse`, which answers in the endpoint's error shape; each request model says which
error code a bad value of each field earns (``field_errors``), where it is not ``invalid_body``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal, TypeVar
from uuid import UUID

from pydantic import (BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr,
                      ValidationError)

from cluster.http.errors import ApiError

STATUSES = Literal["queued", "processing", "ready", "rejected", "failed"]
Sha256 = Annotated[str, Field(pattern="^[0-9a-f]{64}$")]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- errors -----------------------------------------------------------------------------------


class Error(Model):
    """Every error the endpoint answers."""

    error: str = Field(description="a machine-readable code, e.g. not_found")
    message: str = Field(description="what went wrong, in a sentence for people")


def errors(descriptions: dict[int, str], headers: dict[int, dict] | None = None) -> dict:
    """OpenAPI ``responses`` for error statuses, each with the :class:`Error` body."""
    return {status: {"model": Error, "description": text, **(
        {"headers": headers[status]} if headers and status in headers else {})}
        for status, text in descriptions.items()}


RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying",
                               "schema": {"type": "integer", "minimum": 1}}}
WWW_AUTHENTICATE = {"WWW-Authenticate": {"description": "the Bearer challenge",
                                         "schema": {"type": "string"}}}
# What every authenticated operation can answer.
AUTH_ERRORS = errors({
    401: "no token, or an unknown or revoked one",
    403: "the token lacks the scope this operation needs",
    429: "this token's rate limit, or this address's budget of failed authentications, is spent",
}, {401: WWW_AUTHENTICATE, 429: RETRY_AFTER})
# What an operation that reads a body can answer while it arrives.
BODY_TIMEOUT = "the request body stopped arriving (MEDIAFARM_API_BODY_TIMEOUT)"


# -- requests ---------------------------------------------------------------------------------

Request = TypeVar("Request", bound="RequestModel")


class RequestModel(Model):
    # A bad value of these fields is answered with (status, code) rather than 422 invalid_body.
    field_errors: ClassVar[dict[str, tuple[int, str]]] = {}


class FileUpload(RequestModel):
    """The multipart form of ``POST /v1/assets`` (streamed by the route, never parsed whole)."""

    file: bytes = Field(description="the media file; its part's Content-Type must be accepted",
                        json_schema_extra={"format": "binary"})
    callback_url: StrictStr | None = Field(
        None, max_length=2000, description="POSTed a signed JSON event when the asset ends "
                                           "(see Webhooks in docs/http.md)")


class SourceRequest(RequestModel):
    """``POST /v1/assets`` as JSON: take in an object already in a store."""

    source_uri: StrictStr = Field(description="an object the caller's owner uploaded, or one "
                                              "under its ingest prefix")
    callback_url: StrictStr | None = Field(
        None, max_length=2000, description="POSTed a signed JSON event when the asset ends "
                                           "(see Webhooks in docs/http.md)")
    field_errors = {"source_uri": (422, "source_not_allowed"),
                    "callback_url": (422, "callback_not_allowed")}


class UploadRequest(RequestModel):
    """``POST /v1/uploads``: what the presigned PUT (or the multipart upload's parts) will carry."""

    content_type: StrictStr | None = Field(None, description="the file's media type")
    size: Annotated[StrictInt, Field(ge=1)] | None = Field(
        None, description="the file's exact size in bytes (required)")
    multipart: StrictBool = Field(False, description="an S3 multipart upload: one presigned "
                                                     "URL per part instead of one PUT")
    field_errors = {"content_type": (415, "unsupported_media_type")}


MAX_PART_URLS = 1000  # part URLs in one answer


class PartsRequest(RequestModel):
    """``POST /v1/uploads/{upload_id}/parts``: which parts' URLs to sign (again)."""

    numbers: list[Annotated[StrictInt, Field(ge=1, le=10_000)]] = Field(
        min_length=1, max_length=MAX_PART_URLS, description="part numbers, from 1")


class CompletedPart(Model):
    number: Annotated[StrictInt, Field(ge=1, le=10_000)]
    etag: Annotated[StrictStr, Field(min_length=1, max_length=200)] = Field(
        description="the ETag header S3 answered the part's PUT with")


class CompleteRequest(RequestModel):
    """``POST /v1/uploads/{upload_id}/complete``: for a multipart upload, its parts."""

    parts: list[CompletedPart] | None = Field(
        None, max_length=10_000, description="multipart uploads: every part, in order")


class JobRequest(RequestModel):
    """``POST /v1/jobs``: a re-encode (selected with ``where``) or a backfill (a manifest)."""

    kind: Literal["reencode", "backfill"]
    where: StrictStr = Field("", description="reencode: e.g. owner=alice")
    manifest: StrictStr = Field("", description="backfill: catalog:… or a path in a store")
    recipe: dict[str, Any] | None = Field(None, description="a recipe, as in YAML")
    owner: StrictStr | None = Field(None, min_length=1, max_length=200,
                                    description="backfill: whose assets they become")
    callback_url: StrictStr | None = Field(
        None, max_length=2000, description="POSTed a signed JSON event when the job ends "
                                           "(see Webhooks in docs/http.md)")
    field_errors = {"where": (422, "invalid_selection"), "recipe": (422, "invalid_recipe"),
                    "callback_url": (422, "callback_not_allowed")}


REQUEST_MODELS: tuple[type[RequestModel], ...] = (FileUpload, SourceRequest, UploadRequest,
                                                  JobRequest, PartsRequest, CompleteRequest)
# Bodies that are bytes, not JSON: their schemas, by name, for the document's components.
RAW_BODIES = {"TusChunk": {"type": "string", "format": "binary",
                           "description": "bytes of a tus upload, from its Upload-Offset on"}}
TUS_CHUNK = "application/offset+octet-stream"


def raw_body(name: str, media: str, *, required: bool = True) -> dict:
    """``openapi_extra`` declaring a body of bytes the route streams itself."""
    return {"requestBody": {"required": required, "content": {
        media: {"schema": {"$ref": f"#/components/schemas/{name}"}}}}}


def parse(model: type[Request], data: dict) -> Request:
    """``data`` (a JSON object) as ``model``, or the ApiError its first problem earns."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = exc.errors(include_url=False, include_input=False)
    unknown = sorted(str(p["loc"][0]) for p in problems if p["type"] == "extra_forbidden")
    if unknown:
        raise ApiError(422, "invalid_body", f"unknown fields: {', '.join(unknown)}")
    first = problems[0]
    field = str(first["loc"][0]) if first["loc"] else ""
    status, code = model.field_errors.get(field, (422, "invalid_body"))
    raise ApiError(status, code, f"{field}: {first['msg']}" if field else first["msg"])


def request_body(*models: type[RequestModel], required: bool = True,
                 encoding: dict | None = None) -> dict:
    """``openapi_extra`` declaring a request body the route reads itself (streamed, bounded)."""
    content = {}
    for model in models:
        media = "multipart/form-data" if model is FileUpload else "application/json"
        content[media] = {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
        if media == "multipart/form-data" and encoding:
            content[media]["encoding"] = encoding
    return {"requestBody": {"required": required, "content": content}}


# -- responses --------------------------------------------------------------------------------


class Accepted(Model):
    id: UUID
    status_url: str


class Version(Model):
    version: int
    sha256: Sha256
    recipe_id: str
    created_at: datetime


class Rendition(Model):
    preset: str
    format: str
    media_type: str | None
    width: int | None
    height: int | None
    bytes: int
    quality: int | None
    sha256: Sha256
    url: str = Field(description="a URL that needs no token until url_expires_at: presigned by "
                                 "the object store, or this API's /v1/renditions/{sha256} signed "
                                 "(for HLS, the master playlist in its package)")
    dash_url: str | None = Field(default=None, description="for HLS packages: the DASH MPD over "
                                                          "the same segments, signed likewise")
    url_expires_at: datetime | None


class Asset(Model):
    id: UUID
    status: STATUSES
    reason: str | None
    message: str | None
    retryable: bool
    sha256: Sha256 | None
    version: int | None
    deleted_at: datetime | None
    created_at: datetime
    updated_at: datetime
    versions: list[Version]
    renditions: list[Rendition]


class UploadCreated(Model):
    id: UUID
    upload_url: str
    method: Literal["PUT"]
    headers: dict[str, str] = Field(description="send these headers with the PUT")
    expires_at: datetime
    complete_url: str


class UploadPart(Model):
    number: int
    size: int = Field(description="the part's exact length: its URL is signed for it")
    url: str


class MultipartUploadCreated(Model):
    id: UUID
    method: Literal["PUT"]
    part_size: int = Field(description="every part's size but the last's")
    part_count: int
    parts: list[UploadPart] = Field(description=f"the first {MAX_PART_URLS} parts' URLs; "
                                                "ask parts_url for more")
    expires_at: datetime = Field(description="when these URLs expire")
    abandoned_at: datetime = Field(description="when an upload still not complete is aborted")
    parts_url: str
    complete_url: str


class PartUrls(Model):
    parts: list[UploadPart]
    expires_at: datetime


class TusUploadState(Model):
    """A tus upload, as ``GET /v1/tus/{upload_id}`` shows it."""

    id: UUID
    length: int
    offset: int
    metadata: dict[str, str]
    complete: bool
    expires_at: datetime | None = Field(description="while incomplete: when it is dropped")
    asset: Accepted | None = Field(description="once complete: the asset it became")


class Job(Model):
    id: str
    kind: str
    recipe_id: str
    manifest: str
    status: Literal["running", "finished", "failed"]
    submitted: int
    skipped: int
    counts: dict[str, int] | None
    assets: dict[str, int]
    created_at: datetime
    updated_at: datetime
    message: str | None


class WebhookSecret(Model):
    secret: str = Field(description="the HMAC-SHA256 key of your webhooks' signatures")
    header: str = Field(description="the header carrying t=<unix time>,v1=<hex HMAC of "
                                    "'<t>.<body>'>")


class Health(Model):
    status: Literal["ok"]


class Ready(Model):
    status: Literal["ready", "unready"]
    checks: dict[str, str]


# -- the library ------------------------------------------------------------------------------


class TagCount(Model):
    tag: str
    assets: int = Field(description="how many of the owner's assets carry it")


class AssetTags(Model):
    asset_id: UUID
    tags: list[str]


class CollectionInfo(Model):
    id: UUID
    name: str
    assets: int = Field(description="how many of the owner's assets it holds")
    created_at: datetime


class SearchItem(Model):
    id: UUID
    status: STATUSES
    reason: str | None
    source_uri: str
    sha256: Sha256 | None
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None
    kind: Literal["image", "video", "audio"] | None
    media_type: str | None
    size: int | None
    width: int | None
    height: int | None
    duration_s: float | None
    captured_at: datetime | None
    camera_make: str | None
    camera_model: str | None
    video_codec: str | None
    audio_codec: str | None
    title: str | None
    artist: str | None
    album: str | None
    tags: list[str]


class SearchPage(Model):
    items: list[SearchItem]
    next: str | None = Field(description="pass as ``after`` for the next page; null on the last")



class Erasure(Model):
    id: UUID
    owner: str
    counts: dict[str, int] = Field(description="rows removed by table, and gc_*: blobs, "
                                               "renditions, objects, packages and upload "
                                               "buffers deleted")
