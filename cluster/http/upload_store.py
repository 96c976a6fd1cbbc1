"""How bytes come in over HTTP: streamed multipart bodies, presigned PUTs, allowed store URLs.

A multipart upload is never held in memory: its file part goes to a temporary
file chunk by chunk, hashed on the way, and the body is counted against the
size limit as it arrives. Sources named by URL must lie inside a configured
store, so the endpoint cannot be made to fetch arbitrary URLs; over HTTP they must
moreover be the caller's own: what its owner uploaded (kept in the buffer store under
``owners/<owner key>/``) or its ingest prefix. Stores are shared and content-addressed,
so without that one owner could take in, and learn of, another's bytes.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import uuid
import weakref
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from fsspec.implementations.local import LocalFileSystem
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from s3fs import S3FileSystem
from sqlalchemy import Engine, select, update

from catalog.models import Upload
from cluster.config import StoreConfig
from cluster.http.errors import ApiError
from cluster.storage.stores import Store

# -- streamed multipart ---------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    """A file part written to ``path``: its digest, size and declared type."""

    path: str
    sha256: str
    size: int
    content_type: str
    filename: str | None
    callback_url: str | None = None


TEXT_FIELDS = {"callback_url": 2000}  # the form's optional text parts, and their byte limits


class _FilePart:
    """Parser callbacks for a form with one part ``file`` and the optional TEXT_FIELDS."""

    def __init__(self, allowed_types: frozenset[str], spool_dir: str | None) -> None:
        self.allowed_types, self.spool_dir = allowed_types, spool_dir
        self.header_field = bytearray()
        self.header_value = bytearray()
        self.headers: dict[str, str] = {}
        self.handle = None
        self.path: str | None = None
        self.hash = hashlib.sha256()
        self.size = 0
        self.content_type = ""
        self.filename: str | None = None
        self.parts = 0
        self.finished = False
        self.texts: dict[str, bytearray] = {}
        self.text: bytearray | None = None  # the text part being read, if one is

    def callbacks(self) -> dict:
        return {"on_part_begin": self.part_begin, "on_header_field": self.field,
                "on_header_value": self.value, "on_header_end": self.header_end,
                "on_headers_finished": self.headers_finished, "on_part_data": self.data,
                "on_end": self.end}

    def part_begin(self) -> None:
        self.headers = {}
        self.text = None

    def field(self, data: bytes, start: int, end: int) -> None:
        self.header_field += data[start:end]

    def value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def header_end(self) -> None:
        name = bytes(self.header_field).decode("latin-1").strip().lower()
        self.headers[name] = bytes(self.header_value).decode("latin-1").strip()
        self.header_field.clear()
        self.header_value.clear()

    def headers_finished(self) -> None:
        disposition, params = parse_options_header(self.headers.get("content-disposition", ""))
        name = params.get(b"name", b"").decode("latin-1")
        if (disposition == b"form-data" and name in TEXT_FIELDS and name not in self.texts
                and b"filename" not in params):
            self.text = self.texts[name] = bytearray()
            return
        self.parts += 1
        if disposition != b"form-data" or name != "file" or self.parts > 1:
            raise ApiError(422, "invalid_form",
                           "the form takes exactly one part, a file named 'file', and "
                           f"optionally {', '.join(TEXT_FIELDS)}")
        media_type = parse_options_header(self.headers.get("content-type", ""))[0]
        self.content_type = media_type.decode("latin-1").lower() or "application/octet-stream"
        if self.content_type not in self.allowed_types:
            raise ApiError(415, "unsupported_media_type",
                           f"files of type {self.content_type} are not accepted; send one of "
                           f"{', '.join(sorted(self.allowed_types))}")
        filename = params.get(b"filename")
        self.filename = filename.decode("utf-8", "replace")[:300] if filename else None
        descriptor, self.path = tempfile.mkstemp(prefix="mediafarm-upload-", dir=self.spool_dir)
        self.handle = os.fdopen(descriptor, "wb")

    def data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self.text is not None:
            self.text += chunk
            if len(self.text) > max(TEXT_FIELDS.values()):
                raise ApiError(422, "invalid_form", "a text part of the form is too long")
            return
        self.hash.update(chunk)
        self.size += len(chunk)
        self.handle.write(chunk)

    def end(self) -> None:
        self.finished = True

    def discard(self) -> None:
        if self.handle is not None:
            self.handle.close()
        if self.path is not None and os.path.exists(self.path):
            os.unlink(self.path)


async def receive_multipart(chunks: AsyncIterator[bytes], content_type: str, *, max_bytes: int,
                            allowed_types: Iterable[str],
                            spool_dir: str | None = None) -> Received:
    """Stream a ``multipart/form-data`` body's ``file`` part to a temporary file.

    The caller removes ``Received.path``. The whole body is counted against
    ``max_bytes`` while it arrives (413 as soon as it passes); a part of a type
    not in ``allowed_types`` is refused (415) before its bytes are read.
    """
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary or len(boundary) > 200:
        raise ApiError(400, "invalid_multipart", "the multipart body has no usable boundary")
    part = _FilePart(frozenset(allowed_types), spool_dir)
    parser = MultipartParser(boundary, part.callbacks())
    seen = 0
    try:
        async for chunk in chunks:
            seen += len(chunk)
            if seen > max_bytes:
                raise ApiError(413, "too_large",
                               f"the request body is larger than the {max_bytes}-byte limit")
            parser.write(chunk)
        parser.finalize()
        if part.path is None or not part.finished:
            raise ApiError(422, "invalid_form", "the form has no complete part named 'file'")
        part.handle.close()
        if part.size == 0:
            raise ApiError(422, "empty", "the uploaded file is empty")
        callback = part.texts.get("callback_url")
        try:
            callback_url = bytes(callback).decode() if callback is not None else None
        except UnicodeDecodeError:
            raise ApiError(422, "callback_not_allowed", "callback_url is not UTF-8 text")
        return Received(part.path, part.hash.hexdigest(), part.size, part.content_type,
                        part.filename, callback_url)
    except MultipartParseError as exc:
        part.discard()
        raise ApiError(400, "invalid_multipart", f"the multipart body cannot be parsed: {exc}")
    except BaseException:
        part.discard()
        raise


# -- sources named by URL -------------------------------------------------------------------


def store_object(uri: object, stores: dict[str, Store], allowed: Iterable[str], *,
                 patterns: bool = False, refused: ApiError | None = None) -> tuple[Store, str]:
    """The (store, filesystem path) that ``uri`` names inside one of the ``allowed`` stores.

    Anything else is ``refused`` (by default 422 naming the stores): other schemes
    (``http://``, ``file://`` outside the stores), lookalike prefixes, ``..``, query
    strings, globs (unless ``patterns``), fsspec chains, credentials in the URL, and
    local symlinks leading out.
    """
    refused = refused or ApiError(422, "source_not_allowed",
                                  "source_uri must name one object inside a configured store "
                                  f"({', '.join(sorted(allowed))})")
    if (not isinstance(uri, str) or not uri or len(uri) > 2000 or "::" in uri
            or any(c in uri for c in ("\\#" if patterns else "\\*?[]#"))
            or any(ord(c) < 32 for c in uri)):
        raise refused
    parsed = urlsplit(uri.replace("?", "_") if patterns else uri)
    if parsed.query or parsed.fragment or "@" in parsed.netloc:
        raise refused
    for name in allowed:
        store = stores[name]
        local = isinstance(store.fs, LocalFileSystem)
        prefixes = [(store.url + "/", local), (store.fs.unstrip_protocol(store.root) + "/", False)]
        for prefix, quoted in prefixes:
            if not uri.startswith(prefix):
                continue
            rest = unquote(uri[len(prefix):]) if quoted else uri[len(prefix):]
            if "%" in rest and not local:
                raise refused
            parts = rest.split("/")
            if any(p in ("", ".", "..") for p in parts):
                raise refused
            path = f"{store.root}/{rest}"
            if local:
                root = os.path.realpath(store.root)
                if not os.path.realpath(path).startswith(root + os.sep):
                    raise refused
            return store, path
    raise refused


# An owner name that can stand as one path segment of an ingest prefix as it is.
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+=-]{0,199}")


def owner_key(owner: str) -> str:
    """The folder of an owner's uploads: a digest, as owner names may hold any character."""
    return hashlib.sha256(f"mediafarm-owner\0{owner}".encode()).hexdigest()[:32]


def owner_area(buffer: Store, owner: str) -> Store:
    """Where the buffer store keeps what ``owner`` uploaded (multipart, completed presigned)."""
    return buffer.within(f"owners/{owner_key(owner)}")


def ingest_area(template: str | None, owner: str, stores: dict[str, Store]) -> Store | None:
    """``owner``'s ingest prefix as a store, when one is configured and the name fits a path.

    Inside the buffer store it is read with the buffer's options; elsewhere with plain
    fsspec and the environment's credentials, as the workers read sources.
    """
    if not template or not _SEGMENT.fullmatch(owner):
        return None
    url = template.replace("{owner}", owner).rstrip("/")
    buffer = stores["buffer"]
    if url.startswith(buffer.url + "/"):
        return buffer.within(url[len(buffer.url) + 1:])
    return Store("ingest", StoreConfig(url))


def check_ingest_prefix(template: str, store_urls: dict[str, str]) -> None:
    """Refuse (ValueError) an ingest prefix that would open a store's shared objects."""
    head, placeholder, tail = template.partition("{owner}")
    if not placeholder or "{owner}" in tail or not head.endswith("/") or tail.rstrip("/"):
        raise ValueError("MEDIAFARM_API_INGEST_PREFIX is a URL ending in a /{owner}/ folder, "
                         f"e.g. s3://bucket/ingest/{{owner}}/ (got {template!r})")
    for name, url in store_urls.items():
        url = url.rstrip("/") + "/"
        inside = head.startswith(url) and head[len(url):].split("/")[0] not in (
            "", "sha256", "owners", "uploads")
        if (head.startswith(url) or url.startswith(head)) and not (name == "buffer" and inside):
            raise ValueError(f"MEDIAFARM_API_INGEST_PREFIX {template!r} overlaps the {name} "
                             "store; put it in a folder of its own (inside the buffer store, "
                             "or outside every store)")


def owned_object(uri: object, owner: str, stores: dict[str, Store],
                 ingest_prefix: str | None) -> tuple[Store, str]:
    """The (store, path) of an object ``owner`` may name over HTTP, else 422 ``source_not_allowed``.

    Decided from the URL alone, before anything is looked up: another owner's object and
    one that never existed get the same answer.
    """
    areas = {"uploads": owner_area(stores["buffer"], owner)}
    ingest = ingest_area(ingest_prefix, owner, stores)
    if ingest is not None:
        areas["ingest"] = ingest
    return store_object(uri, areas, areas, refused=ApiError(
        422, "source_not_allowed",
        "source_uri must name one object you uploaded, or one under your ingest prefix"))


def object_fingerprint(info: dict) -> str:
    """Size and change marker of a store object, as ``cluster.storage.sources`` fingerprints files."""
    changed = info.get("mtime") or info.get("LastModified") or info.get("ETag") or info.get("created")
    return f"{info.get('size')}:{changed}"


# -- presigned uploads ----------------------------------------------------------------------


def presigns(store: Store) -> bool:
    """Whether the store can hand out presigned URLs (S3 and R2 through s3fs)."""
    return isinstance(store.fs, S3FileSystem)


def presign_put(store: Store, path: str, expires: int, size: int,
                content_type: str | None = None) -> str:
    """A URL that lets its holder PUT one object of ``size`` bytes at ``path`` until it expires.

    Content-Length is among the signed headers, so S3 and R2 refuse (403) a body of any
    other length. A presigned POST could take a range instead, but R2 has no POST Object.
    """
    params = {"ContentType": content_type} if content_type else {}
    return _signer(store).url(path, expires=expires, client_method="put_object",
                              ContentLength=size, **params)


def presign_get(store: Store, path: str, expires: int) -> str:
    return _signer(store).url(path, expires=expires)


_signers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _signer(store: Store) -> S3FileSystem:
    """The store's filesystem with Signature Version 4, whatever the store's own options say.

    botocore presigns S3 URLs with the legacy version 2 unless told otherwise, and
    R2 (like newer AWS regions) accepts only version 4.
    """
    if store.fs not in _signers:
        options = dict(store.fs.storage_options)
        config = dict(options.pop("config_kwargs", None) or {})
        config.setdefault("signature_version", "s3v4")
        options["skip_instance_cache"] = True
        _signers[store.fs] = type(store.fs)(**options, config_kwargs=config)
    return _signers[store.fs]


def create_upload(engine: Engine, owner: str, size: int) -> tuple[str, str]:
    """Record a pending upload; returns (upload id, its path relative to the buffer store)."""
    upload_id = str(uuid.uuid4())
    relative = f"uploads/{upload_id}"
    with engine.begin() as conn:
        conn.execute(Upload.__table__.insert().values(id=upload_id, owner=owner, key=relative,
                                                      status="pending", size=size))
    return upload_id, relative


def find_upload(engine: Engine, owner: str, upload_id: str) -> dict | None:
    with engine.connect() as conn:
        row = conn.execute(select(Upload.__table__).where(Upload.id == upload_id,
                                                          Upload.owner == owner)).first()
    return dict(row._mapping) if row else None


def complete_upload(engine: Engine, upload_id: str, asset_id: str) -> bool:
    """Mark a pending upload completed with its asset; False if it already was."""
    with engine.begin() as conn:
        result = conn.execute(update(Upload.__table__)
                              .where(Upload.id == upload_id, Upload.status == "pending")
                              .values(status="completed", asset_id=asset_id))
    return result.rowcount > 0


def _limit(upload: dict, max_bytes: int) -> int:
    return min(upload["size"] or max_bytes, max_bytes)


def _too_large(upload: dict, max_bytes: int) -> ApiError:
    return ApiError(413, "too_large", "the uploaded object is larger than this upload's "
                                      f"{_limit(upload, max_bytes)} bytes; it was removed")


def take_upload(engine: Engine, buffer: Store, upload: dict, max_bytes: int) -> tuple[str, dict]:
    """Move a pending upload's object out of its URL's reach; (its path now, its info).

    The object goes into its owner's area and leaves the key the URL writes to, so a
    later PUT (the URL works until it expires) can change nothing that was accepted.
    Over the announced size or the limit it is removed and the upload rejected (413).
    """
    sent = buffer.key_at(upload["key"])
    kept = owner_area(buffer, upload["owner"]).key_at(upload["key"])
    try:
        buffer.fs.copy(sent, kept)
    except FileNotFoundError:
        if not buffer.fs.exists(kept):  # else a concurrent complete moved it a moment ago
            raise ApiError(409, "not_uploaded",
                           "nothing has been uploaded to this upload's URL yet") from None
    _remove(buffer, sent)
    buffer.fs.invalidate_cache(kept)
    info = buffer.fs.info(kept)
    if info["size"] > _limit(upload, max_bytes):
        _remove(buffer, kept)
        with engine.begin() as conn:
            conn.execute(update(Upload.__table__).where(Upload.id == upload["id"],
                                                        Upload.status == "pending")
                         .values(status="rejected"))
        raise _too_large(upload, max_bytes)
    if not info["size"]:
        _remove(buffer, kept)  # the upload stays pending: its URL may be used again
        raise ApiError(422, "empty", "the uploaded object is empty")
    return kept, info


def settled_upload(buffer: Store, upload: dict, max_bytes: int) -> str:
    """A completed upload's asset id again (a rejected one's 413 again), after removing
    whatever was PUT to its URL since: nothing reads it any more."""
    _remove(buffer, buffer.key_at(upload["key"]))
    if upload["status"] == "rejected":
        raise _too_large(upload, max_bytes)
    return upload["asset_id"]


def _remove(store: Store, path: str) -> None:
    try:
        store.fs.rm_file(path)
    except FileNotFoundError:
        pass
