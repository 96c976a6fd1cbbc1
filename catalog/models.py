"""The catalog's tables. It, not Dask, is the source of truth about every asset."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer,
                        String, Text, UniqueConstraint, func)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SHA256 = String(64)


class Base(DeclarativeBase):
    pass


class Blob(Base):
    """A stored object, addressed by the SHA-256 of its bytes.

    An original's metadata is content metadata: every asset with these bytes shares it. The
    whole document is ``media_metadata``; the fields people filter by are also typed columns
    (``catalog.metadata_columns``, docs/metadata.md), null for renditions and where unknown.
    """

    __tablename__ = "blobs"
    __table_args__ = (Index("ix_blobs_kind_captured_at", "kind", "captured_at"),
                      Index("ix_blobs_captured_at", "captured_at"),
                      Index("ix_blobs_camera_model", "camera_model"),
                      Index("ix_blobs_duration_s", "duration_s"))
    sha256: Mapped[str] = mapped_column(SHA256, primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    media_type: Mapped[str] = mapped_column(String(100))
    store: Mapped[str] = mapped_column(String(40))
    # For originals: everything validation read (dimensions, camera, streams, tags, notes...).
    media_metadata: Mapped[dict | None] = mapped_column(JSON)
    kind: Mapped[str | None] = mapped_column(String(10))  # image, video or audio
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    duration_s: Mapped[float | None] = mapped_column(Float)
    video_codec: Mapped[str | None] = mapped_column(String(40))
    audio_codec: Mapped[str | None] = mapped_column(String(40))
    frame_rate: Mapped[float | None] = mapped_column(Float)
    captured_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    camera_make: Mapped[str | None] = mapped_column(String(200))
    camera_model: Mapped[str | None] = mapped_column(String(200))
    lens: Mapped[str | None] = mapped_column(String(200))
    # Only where the farm keeps places (MEDIAFARM_KEEP_GPS); never in a rendition.
    gps_lat: Mapped[float | None] = mapped_column(Float)
    gps_lon: Mapped[float | None] = mapped_column(Float)
    artist: Mapped[str | None] = mapped_column(String(1000))
    album: Mapped[str | None] = mapped_column(String(1000))
    title: Mapped[str | None] = mapped_column(String(1000))
    track: Mapped[int | None] = mapped_column(Integer)
    year: Mapped[int | None] = mapped_column(Integer)
    genre: Mapped[str | None] = mapped_column(String(200))
    bit_rate: Mapped[int | None] = mapped_column(BigInteger)
    sample_rate: Mapped[int | None] = mapped_column(Integer)
    channels: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


# For sorts by capture time (else when first stored), size and duration (catalog.search).
Index("ix_blobs_taken", func.coalesce(Blob.captured_at, Blob.created_at))
Index("ix_blobs_size", Blob.size)
Index("ix_blobs_duration_or_zero", func.coalesce(Blob.duration_s, 0.0))


class Recipe(Base):
    __tablename__ = "recipes"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    definition: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Asset(Base):
    """One source, for one owner; its status is always one of queued, processing or terminal."""

    __tablename__ = "assets"
    __table_args__ = (UniqueConstraint("owner", "source_uri", name="uq_assets_owner_source"),
                      Index("ix_assets_status", "status"),
                      # an owner's search, newest first, with or without a status (search.py)
                      Index("ix_assets_owner_created", "owner", "created_at", "id"),
                      Index("ix_assets_owner_status_created", "owner", "status", "created_at",
                            "id"),
                      Index("ix_assets_sha256", "sha256"))
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner: Mapped[str] = mapped_column(String(200))
    source_uri: Mapped[str] = mapped_column(Text)
    # Size and mtime/ETag of the source when last taken in: a change means new bytes to take.
    source_fingerprint: Mapped[str | None] = mapped_column(String(200))
    recipe_id: Mapped[str | None] = mapped_column(String(64), ForeignKey("recipes.id"))
    status: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(String(100))
    message: Mapped[str | None] = mapped_column(Text)
    retryable: Mapped[bool] = mapped_column(Boolean, default=False)
    sha256: Mapped[str | None] = mapped_column(SHA256, ForeignKey("blobs.sha256"))
    current_version: Mapped[int | None] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    job_id: Mapped[str | None] = mapped_column(String(36), index=True)  # the last job to queue it
    # The run working on it and until when, unless renewed; cleared when it ends (None: free).
    claim_holder: Mapped[str | None] = mapped_column(String(200), index=True)
    claim_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class AssetVersion(Base):
    """A version is an (original bytes, recipe) pair; a new pair makes the next version."""

    __tablename__ = "asset_versions"
    __table_args__ = (UniqueConstraint("asset_id", "blob_sha256", "recipe_id",
                                       name="uq_versions_content"),)
    asset_id: Mapped[str] = mapped_column(String(36), ForeignKey("assets.id"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    blob_sha256: Mapped[str] = mapped_column(SHA256, ForeignKey("blobs.sha256"))
    recipe_id: Mapped[str] = mapped_column(String(64), ForeignKey("recipes.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Rendition(Base):
    """An output, keyed by what made it: (source digest, recipe id, preset)."""

    __tablename__ = "renditions"
    __table_args__ = (Index("ix_renditions_source_preset", "source_sha256", "preset_id"),)
    source_sha256: Mapped[str] = mapped_column(SHA256, ForeignKey("blobs.sha256"), primary_key=True)
    recipe_id: Mapped[str] = mapped_column(String(64), ForeignKey("recipes.id"), primary_key=True)
    preset: Mapped[str] = mapped_column(String(100), primary_key=True)
    output_sha256: Mapped[str] = mapped_column(SHA256, ForeignKey("blobs.sha256"))
    format: Mapped[str] = mapped_column(String(20))
    media_type: Mapped[str | None] = mapped_column(String(100))
    width: Mapped[int | None] = mapped_column(Integer)   # None for audio
    height: Mapped[int | None] = mapped_column(Integer)
    bytes: Mapped[int] = mapped_column(BigInteger)
    quality: Mapped[int | None] = mapped_column(Integer)
    # What the bytes depend on (preset + tools): equal ids across recipes share one output.
    preset_id: Mapped[str | None] = mapped_column(String(64))
    metric_name: Mapped[str | None] = mapped_column(String(20))
    metric_value: Mapped[float | None] = mapped_column(Float)
    encoder: Mapped[dict | None] = mapped_column(JSON)
    tool_versions: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Job(Base):
    """A backfill or re-encode: what it runs over, with which recipe, and how far it got."""

    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    recipe_id: Mapped[str] = mapped_column(String(64), ForeignKey("recipes.id"))
    manifest: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20))  # running, finished, failed
    submitted: Mapped[int] = mapped_column(BigInteger, default=0)
    skipped: Mapped[int] = mapped_column(BigInteger, default=0)
    counts: Mapped[dict | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class StageRun(Base):
    """One stage of one attempt at one asset: when, where, and how it ended."""

    __tablename__ = "stage_runs"
    __table_args__ = (UniqueConstraint("asset_id", "stage", "attempt", name="uq_stage_runs_attempt"),)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"),
                                    primary_key=True, autoincrement=True)
    asset_id: Mapped[str] = mapped_column(String(36), ForeignKey("assets.id"), index=True)
    stage: Mapped[str] = mapped_column(String(40))
    attempt: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    duration_ms: Mapped[float] = mapped_column()
    worker: Mapped[str | None] = mapped_column(String(200))
    reason: Mapped[str | None] = mapped_column(String(100))
    error_class: Mapped[str | None] = mapped_column(String(200))
    error_message: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict | None] = mapped_column(JSON)


class ApiToken(Base):
    """A bearer token of the HTTP endpoint, stored as its SHA-256, never in clear."""

    __tablename__ = "api_tokens"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    token_sha256: Mapped[str] = mapped_column(SHA256, unique=True)
    owner: Mapped[str] = mapped_column(String(200))
    scopes: Mapped[list] = mapped_column(JSON)  # "submit", "read", "admin"
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Upload(Base):
    """A presigned upload into the buffer store, waiting for its client to say it is complete."""

    __tablename__ = "uploads"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner: Mapped[str] = mapped_column(String(200))
    key: Mapped[str] = mapped_column(Text)        # where in the buffer store
    status: Mapped[str] = mapped_column(String(20))  # pending, completed, rejected
    asset_id: Mapped[str | None] = mapped_column(String(36))
    size: Mapped[int | None] = mapped_column(BigInteger)  # announced; the signed Content-Length
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # An S3 multipart upload (presigned part URLs): its UploadId, part size and when the
    # clean-up aborts it if it is still not complete.
    multipart_id: Mapped[str | None] = mapped_column(Text)
    part_size: Mapped[int | None] = mapped_column(BigInteger)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class TusUpload(Base):
    """A resumable (tus 1.0) upload: what it announced, what has been received, where it is.

    ``offset`` is what the server reports to a resuming client; bytes past it that reached
    the store before a crash are discarded by the next PATCH. On S3 the received bytes are
    ``parts`` (``[number, etag, size]``) of the multipart upload ``multipart_id`` plus the
    first ``tail_size`` bytes of the tail object (less than one part, waiting to fill one).
    """

    __tablename__ = "tus_uploads"
    __table_args__ = (Index("ix_tus_uploads_status_expires", "status", "expires_at"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner: Mapped[str] = mapped_column(String(200))
    key: Mapped[str] = mapped_column(Text)  # relative to the buffer store
    length: Mapped[int] = mapped_column(BigInteger)
    offset: Mapped[int] = mapped_column(BigInteger, server_default="0")
    upload_metadata: Mapped[dict | None] = mapped_column(JSON)
    part_size: Mapped[int | None] = mapped_column(BigInteger)
    multipart_id: Mapped[str | None] = mapped_column(Text)
    parts: Mapped[list | None] = mapped_column(JSON)
    tail_size: Mapped[int] = mapped_column(BigInteger, server_default="0")
    status: Mapped[str] = mapped_column(String(20))  # receiving, completed, expired
    asset_id: Mapped[str | None] = mapped_column(String(36))
    lease_holder: Mapped[str | None] = mapped_column(String(36))  # the request writing to it
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class IdempotencyKey(Base):
    """What a retried request with the same Idempotency-Key must answer again."""

    __tablename__ = "idempotency_keys"
    owner: Mapped[str] = mapped_column(String(200), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    request_sha256: Mapped[str] = mapped_column(SHA256)
    state: Mapped[str] = mapped_column(String(20), server_default="done")  # pending, done
    response: Mapped[dict | None] = mapped_column(JSON)  # once done
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ExportWatermark(Base):
    """How far each Parquet export of the catalog has got, per destination and dataset."""

    __tablename__ = "export_watermarks"
    destination: Mapped[str] = mapped_column(String(500), primary_key=True)
    dataset: Mapped[str] = mapped_column(String(50), primary_key=True)
    watermark: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class AssetTag(Base):
    """An owner's tag on one of their assets (many-to-many: a tag is its name)."""

    __tablename__ = "asset_tags"
    __table_args__ = (Index("ix_asset_tags_owner_tag", "owner", "tag", "asset_id"),)
    asset_id: Mapped[str] = mapped_column(String(36), ForeignKey("assets.id"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(200))  # the asset's, kept for the owner's index
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Collection(Base):
    """An owner's named set of assets (an album)."""

    __tablename__ = "collections"
    __table_args__ = (UniqueConstraint("owner", "name", name="uq_collections_owner_name"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner: Mapped[str] = mapped_column(String(200))
    name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class CollectionItem(Base):
    __tablename__ = "collection_items"
    collection_id: Mapped[str] = mapped_column(String(36), ForeignKey("collections.id"),
                                               primary_key=True)
    asset_id: Mapped[str] = mapped_column(String(36), ForeignKey("assets.id"), primary_key=True,
                                          index=True)
    added_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class PerceptualHash(Base):
    """A picture's perceptual hash, per original blob: an image's, or a video's poster's.

    ``phash`` is the 64-bit pHash as a signed BIGINT (two's complement of the unsigned
    value); ``keyframes`` a video's fingerprint, the pHashes of a few keyframes, likewise.
    """

    __tablename__ = "perceptual_hashes"
    __table_args__ = (Index("ix_perceptual_hashes_phash", "phash"),)
    sha256: Mapped[str] = mapped_column(SHA256, ForeignKey("blobs.sha256"), primary_key=True)
    phash: Mapped[int] = mapped_column(BigInteger)
    keyframes: Mapped[list | None] = mapped_column(JSON)
    algorithm: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class NearDuplicateMember(Base):
    """An asset's place in its owner's near-duplicate groups, as the last search left it.

    ``group_id`` is the smallest asset id of the group; None when the asset was in a group
    and no longer is (kept, so an exported change log says so). Owners never share a group.
    """

    __tablename__ = "near_duplicate_groups"
    __table_args__ = (Index("ix_near_duplicate_groups_group", "owner", "group_id"),)
    owner: Mapped[str] = mapped_column(String(200), primary_key=True)
    asset_id: Mapped[str] = mapped_column(String(36), ForeignKey("assets.id"), primary_key=True)
    group_id: Mapped[str | None] = mapped_column(String(36))
    sha256: Mapped[str] = mapped_column(SHA256)
    phash: Mapped[int] = mapped_column(BigInteger)
    threshold: Mapped[int] = mapped_column(Integer)
    computed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class GcMark(Base):
    """A blob a GC run found unreferenced (``catalog.gc``); any write that records or
    references the blob deletes its mark, so an ingest of the same bytes wins."""

    __tablename__ = "gc_marks"
    sha256: Mapped[str] = mapped_column(SHA256, primary_key=True)
    marked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Erasure(Base):
    """That an owner was erased: by whom, when, how many rows and objects. Not what."""

    __tablename__ = "erasures"
    __table_args__ = (Index("ix_erasures_owner", "owner"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner: Mapped[str] = mapped_column(String(200))
    erased_by: Mapped[str] = mapped_column(String(200))
    erased_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    counts: Mapped[dict] = mapped_column(JSON)


class WebhookSecret(Base):
    """An owner's key for signing completion webhooks, made on first use (catalog.webhooks)."""

    __tablename__ = "webhook_secrets"
    owner: Mapped[str] = mapped_column(String(200), primary_key=True)
    secret: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class WebhookDelivery(Base):
    """One callback to send when an asset or job ends, and how its sending went: the log,
    and the queue (pending rows with their next attempt survive a restart)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner: Mapped[str] = mapped_column(String(200))
    asset_id: Mapped[str | None] = mapped_column(String(36), index=True)
    job_id: Mapped[str | None] = mapped_column(String(36), index=True)
    url: Mapped[str] = mapped_column(Text)
    event: Mapped[str | None] = mapped_column(String(40))  # set when first sent
    status: Mapped[str] = mapped_column(String(20))  # pending, delivered, given_up
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ScrubRun(Base):
    """One scrub (``catalog.scrubs``): when, with which options, what it found and did, and
    where in the digest space a sampled run stopped (``cursor``), so the next goes on from there."""

    __tablename__ = "scrub_runs"
    __table_args__ = (Index("ix_scrub_runs_started_at", "started_at"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(20))  # running, finished, failed
    options: Mapped[dict] = mapped_column(JSON)
    counts: Mapped[dict | None] = mapped_column(JSON)
    cursor: Mapped[str | None] = mapped_column(String(16))


class ScrubFinding(Base):
    """One thing a scrub found wrong with a stored object, and what it did: one row per
    asset the object concerns (none for an orphan or a failed check)."""

    __tablename__ = "scrub_findings"
    __table_args__ = (Index("ix_scrub_findings_run", "run_id"),)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"),
                                    primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(36))
    store: Mapped[str] = mapped_column(String(40))
    sha256: Mapped[str | None] = mapped_column(SHA256)
    key: Mapped[str | None] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(40))
    action: Mapped[str] = mapped_column(String(40))
    asset_id: Mapped[str | None] = mapped_column(String(36), index=True)
    message: Mapped[str] = mapped_column(Text)
    found_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ScrubSighting(Base):
    """An object in a store's content-addressed area that no row named when a scrub first
    saw it; removed by a later run after the grace period. Like a GC mark, any write that
    records or references the digest deletes it (``catalog.gc.pin``)."""

    __tablename__ = "scrub_sightings"
    store: Mapped[str] = mapped_column(String(40), primary_key=True)
    sha256: Mapped[str] = mapped_column(SHA256, primary_key=True)
    first_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
