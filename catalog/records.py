"""What the catalog is handed to write: a request for an asset, a stage's run, a rendition."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class AssetRequest:
    """What the client asks for: this source, for this owner, with this recipe."""

    asset_id: str
    owner: str
    source_uri: str
    fingerprint: str | None


@dataclass(frozen=True)
class StageRecord:
    asset_id: str
    stage: str
    attempt: int
    status: str
    started_at: datetime
    finished_at: datetime
    worker: str | None = None
    reason: str | None = None
    error_class: str | None = None
    error_message: str | None = None
    details: dict | None = None


@dataclass(frozen=True)
class RenditionRecord:
    preset: str
    output_sha256: str
    format: str
    width: int | None
    height: int | None
    bytes: int
    quality: int | None
    media_type: str
    preset_id: str
    tool_versions: dict = field(default_factory=dict)
    metric_name: str | None = None
    metric_value: float | None = None
    encoder: dict | None = None
