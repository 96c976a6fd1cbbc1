"""The ladder: which rungs a video preset makes for a source.

A rung names the short side ("720p" is 1280x720 landscape, 720x1280 portrait),
as players and platforms do: MediaInfo does not carry rotation, and the short
side is the same either way up, so the ladder can be planned from it alone.
"""

from __future__ import annotations

from pipelines.recipe import VideoPreset
from pipelines.upload.media_probe import MediaInfo


def ladder(preset: VideoPreset, info: MediaInfo) -> list[int]:
    """The rungs to make: those not above the source's short side, else one at the source's."""
    video = video_info(info)
    if video is None or not video.width or not video.height:
        return []
    short = min(video.width, video.height)
    rungs = sorted(h for h in set(preset.heights) if h <= short)
    return rungs or [max(2, short - short % 2)]


def rung_label(height: int) -> str:
    return f"{height}p"


def video_info(info: MediaInfo):
    return next((s for s in info.streams if s.kind == "video"), None)  # a cover is kind "cover"


def short_side(info: MediaInfo) -> int | None:
    video = video_info(info)
    return min(video.width, video.height) if video and video.width and video.height else None
