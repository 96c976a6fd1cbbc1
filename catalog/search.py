"""Search an owner's assets: one query model for Python, the CLI and HTTP.

``SearchQuery`` validates every parameter (pydantic): an unknown field, a value of the
wrong type or a range the wrong way round is refused before any SQL is built, and
values only ever reach the database as bound parameters. Results come a page at a
time with keyset pagination: each page names the ``next`` cursor, which encodes the
last row's sort value and id, so a deep page costs what the first does and rows
inserted meanwhile neither repeat nor vanish.

Content metadata (kind, dimensions, duration, camera, codecs) lives on the original's
blob; an asset that is not ready has none and matches no metadata filter.
"""

from __future__ import annotations

import base64
import json
import math
import unicodedata
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import (Connection, Engine, String, cast, exists, func, literal, or_, select,
                        tuple_, union, union_all)

from catalog.library import collection_name, tag_name, tags_of
from catalog.models import Asset, AssetTag, Blob, Collection, CollectionItem

MAX_LIMIT = 500
SORTS = Literal["created", "captured", "name", "size", "duration"]
Text = Annotated[str, Field(min_length=1, max_length=200)]
Pixels = Annotated[int, Field(ge=0, le=2 ** 31 - 1)]  # the catalog's integer columns
Seconds = Annotated[float, Field(ge=0, le=1e9, allow_inf_nan=False)]


class SearchFilters(BaseModel):
    """What to find among an owner's assets; every filter narrows (AND). Over HTTP these
    are the query parameters, the owner being the token's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["image", "video", "audio"] | None = None
    status: Literal["queued", "processing", "ready", "rejected", "failed"] | None = None
    tags: list[Text] = Field(default=[], max_length=20, description="all of these tags")
    collection: Text | None = None
    text: Text | None = Field(None, description="words, each found in the source's name, a "
                              "tag, or the title, artist or album")
    created_from: datetime | None = None
    created_to: datetime | None = None
    captured_from: datetime | None = None
    captured_to: datetime | None = None
    min_width: Pixels | None = None
    max_width: Pixels | None = None
    min_height: Pixels | None = None
    max_height: Pixels | None = None
    min_duration: Seconds | None = None
    max_duration: Seconds | None = None
    camera: Text | None = Field(None, description="part of the camera's make or model")
    codec: Annotated[str, Field(min_length=1, max_length=40)] | None = Field(
        None, description="the video or audio codec, e.g. h264, aac")
    deleted: bool = Field(False, description="search deleted assets instead")
    sort: SORTS = "created"
    order: Literal["asc", "desc"] = "desc"
    limit: Annotated[int, Field(ge=1, le=MAX_LIMIT)] = 50
    after: Annotated[str, Field(max_length=1000)] | None = Field(
        None, description="the previous page's next cursor")

    @field_validator("text", "camera", "codec", "after")
    @classmethod
    def _printable(cls, text: str | None) -> str | None:
        if text is not None and any(unicodedata.category(c) in ("Cc", "Cs") for c in text):
            raise ValueError("control characters are not searchable")
        return text

    @field_validator("tags")
    @classmethod
    def _tags(cls, tags: list[str]) -> list[str]:
        return sorted({tag_name(t) for t in tags})

    @field_validator("created_from", "created_to", "captured_from", "captured_to")
    @classmethod
    def _utc(cls, moment: datetime | None) -> datetime | None:
        """A time without a zone is UTC, as the catalog's times are."""
        if moment is None or moment.tzinfo is None:
            return moment and moment.replace(tzinfo=timezone.utc)
        try:
            return moment.astimezone(timezone.utc)
        except OverflowError as exc:  # past year 9999 or before year 1 in UTC
            raise ValueError("the time is out of range") from exc

    @field_validator("collection")
    @classmethod
    def _collection(cls, name: str | None) -> str | None:
        return None if name is None else collection_name(name)

    @model_validator(mode="after")
    def _ranges(self) -> "SearchFilters":
        for low, high in [("created_from", "created_to"), ("captured_from", "captured_to"),
                          ("min_width", "max_width"), ("min_height", "max_height"),
                          ("min_duration", "max_duration")]:
            a, b = getattr(self, low), getattr(self, high)
            if a is not None and b is not None and a > b:
                raise ValueError(f"{low} is after {high}")
        if self.after is not None:
            _decode(self.after)
        return self


class SearchQuery(SearchFilters):
    """The filters, for one owner."""

    owner: Text = "default"


class Page(BaseModel):
    items: list[dict[str, Any]]
    next: str | None = Field(description="the cursor of the next page; null on the last")


def search(engine: Engine, query: SearchQuery) -> Page:
    """One page of the owner's assets matching ``query``, in its order."""
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(_statement(conn, query))]
        more = len(rows) > query.limit
        rows = rows[:query.limit]
        tags = tags_of(conn, query.owner, [r["id"] for r in rows])
    for row in rows:
        row["tags"] = tags.get(row["id"], [])
    last = rows[-1] if more else None
    return Page(items=[{k: v for k, v in r.items() if k != "sort_value"} for r in rows],
                next=_encode(query.sort, last["sort_value"], last["id"]) if last else None)


def _statement(conn: Connection, query: SearchQuery):
    key = _sort_key(query.sort)
    as_text = conn.dialect.name == "sqlite" and query.sort in ("created", "captured")
    if as_text:  # SQLite keeps times as text and orders them so: the cursor must match that
        key = cast(key, String)
    statement = (select(Asset.id, Asset.status, Asset.reason, Asset.source_uri, Asset.sha256,
                        Asset.created_at, Asset.updated_at, Asset.deleted_at, Blob.kind,
                        Blob.media_type, Blob.size, Blob.width, Blob.height, Blob.duration_s,
                        Blob.captured_at, Blob.camera_make, Blob.camera_model,
                        Blob.video_codec, Blob.audio_codec, Blob.title, Blob.artist,
                        Blob.album, key.label("sort_value"))
                 .select_from(Asset)
                 .join(Blob, Blob.sha256 == Asset.sha256,
                       isouter=query.sort not in CONTENT_SORTS)
                 .where(*_filters(query), *_text_filters(conn, query)))
    if query.after is not None:
        sort, value, last_id = _decode(query.after)
        if sort != query.sort:
            raise ValueError(f"after is a cursor of a search sorted by {sort}, not {query.sort}")
        bound = literal(_cursor_value(value, "name" if as_text else sort), type_=key.type)
        position = tuple_(key, Asset.id)
        statement = statement.where(position < tuple_(bound, last_id) if query.order == "desc"
                                    else position > tuple_(bound, last_id))
    direction = (lambda c: c.desc()) if query.order == "desc" else (lambda c: c.asc())
    return statement.order_by(direction(key), direction(Asset.id)).limit(query.limit + 1)


# A word at most this many of an owner's assets hold is looked up rather than tested per row.
RARE_WORD = 2000
# Sorts by what the original holds list assets with one (ready, or once stored): their keys
# are the blob's own columns, so an index on blobs can give the order (migration 0011).
CONTENT_SORTS = ("captured", "size", "duration")


def _sort_key(sort: str):
    return {"created": Asset.created_at,
            "captured": func.coalesce(Blob.captured_at, Blob.created_at),
            "name": Asset.source_uri,
            "size": Blob.size,
            "duration": func.coalesce(Blob.duration_s, 0.0)}[sort]


def _filters(q: SearchQuery) -> list:
    where = [Asset.owner == q.owner,
             Asset.deleted_at.is_not(None) if q.deleted else Asset.deleted_at.is_(None)]
    equal = [(q.kind, Blob.kind), (q.status, Asset.status)]
    captured = Blob.captured_at
    if q.sort == "captured" and (q.captured_from or q.captured_to):
        # The same range, on the sort's key (the capture time where there is one), so that
        # one index of blobs serves both the range and the order.
        captured = _sort_key("captured")
        where.append(Blob.captured_at.is_not(None))
    where += [column == value for value, column in equal if value is not None]
    bounds = [(q.created_from, Asset.created_at, ">="), (q.created_to, Asset.created_at, "<"),
              (q.captured_from, captured, ">="), (q.captured_to, captured, "<"),
              (q.min_width, Blob.width, ">="), (q.max_width, Blob.width, "<="),
              (q.min_height, Blob.height, ">="), (q.max_height, Blob.height, "<="),
              (q.min_duration, Blob.duration_s, ">="), (q.max_duration, Blob.duration_s, "<=")]
    where += [column >= value if op == ">=" else column < value if op == "<" else column <= value
              for value, column, op in bounds if value is not None]
    for tag in q.tags:
        where.append(exists().where(AssetTag.asset_id == Asset.id, AssetTag.tag == tag))
    if q.collection is not None:
        where.append(exists().where(
            CollectionItem.asset_id == Asset.id, CollectionItem.collection_id == Collection.id,
            Collection.owner == q.owner, Collection.name == q.collection))
    if q.camera is not None:
        where.append(or_(_contains(Blob.camera_make, q.camera),
                         _contains(Blob.camera_model, q.camera)))
    if q.codec is not None:
        codec = q.codec.lower()
        where.append(or_(func.lower(Blob.video_codec) == codec,
                         func.lower(Blob.audio_codec) == codec))
    return where


def _text_filters(conn: Connection, q: SearchQuery) -> list:
    """Each word of ``q.text`` as a filter, in the form that is cheap for it: a word few of
    the owner's assets hold is looked up (indexed lookups, then those ids); a word many
    hold is tested on each row as the order walks, which soon finds a page of them."""
    where = []
    for word in (q.text or "").split():
        found = select(func.count()).select_from(
            _matching(q.owner, word, union_all).limit(RARE_WORD + 1).subquery())
        if conn.execute(found).scalar_one() <= RARE_WORD:
            where.append(Asset.id.in_(_matching(q.owner, word, union)))
        else:
            where.append(or_(*(_contains(column, word) for column in (
                Asset.source_uri, Blob.title, Blob.artist, Blob.album)),
                exists().where(AssetTag.asset_id == Asset.id,
                               AssetTag.tag.like(_pattern(word.casefold()), escape="\\"))))
    return where


def _matching(owner: str, word: str, combine):
    """The ids of the owner's assets with ``word`` in the source URI, a tag, or the audio
    title, artist or album: a union of lookups that each have an index (trigram indexes
    on PostgreSQL, migration 0011), rather than one test per asset of the owner."""
    in_content = or_(*(_contains(column, word) for column in (Blob.title, Blob.artist,
                                                              Blob.album)))
    return combine(
        select(Asset.id).where(Asset.owner == owner, _contains(Asset.source_uri, word)),
        select(AssetTag.asset_id).where(AssetTag.owner == owner,  # tags are folded already
                                        AssetTag.tag.like(_pattern(word.casefold()), escape="\\")),
        select(Asset.id).join(Blob, Blob.sha256 == Asset.sha256)
        .where(Asset.owner == owner, in_content))


def _contains(column, text: str):
    """Case-insensitive containment, with ``%`` and ``_`` in ``text`` taken literally: ILIKE
    on PostgreSQL (which its trigram indexes serve), ``lower() LIKE lower()`` on SQLite."""
    return column.ilike(_pattern(text), escape="\\")


def _pattern(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _encode(sort: str, value: Any, asset_id: str) -> str:
    text = json.dumps([sort, value.isoformat() if isinstance(value, datetime) else value,
                       asset_id])
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _decode(cursor: str) -> tuple[str, Any, str]:
    """(sort, last row's sort value, last row's id) from a cursor ``_encode`` made."""
    try:
        sort, value, asset_id = json.loads(
            base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, TypeError) as exc:
        raise ValueError("after is not a cursor this search gave") from exc
    if not (isinstance(asset_id, str) and isinstance(value, (str, int, float))
            and sort in SORTS.__args__):
        raise ValueError("after is not a cursor this search gave")
    return sort, value, asset_id


def _cursor_value(value: Any, sort: str) -> Any:
    if sort in ("created", "captured"):
        try:
            return datetime.fromisoformat(str(value))
        except ValueError as exc:
            raise ValueError("after is not a cursor of this sort") from exc
    if sort == "name":
        return str(value)
    if isinstance(value, str) or not math.isfinite(value) or abs(value) >= 2 ** 63:
        raise ValueError("after is not a cursor of this sort")
    return value
