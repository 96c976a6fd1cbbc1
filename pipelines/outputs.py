"""What renditions an asset gets from a recipe: names and the ids their bytes depend on."""

from __future__ import annotations

from pipelines.recipe import Recipe
from pipelines.upload.validate import Validated


def planned_outputs(recipe: Recipe, validated: Validated) -> dict[str, str]:
    """``{rendition name: preset id}`` for this asset.

    Images get the image presets. Video gets one rendition per ladder rung
    (``h264-720p``), the image presets applied to a poster frame
    (``poster-thumb``), and optionally an HLS package and a preview clip. Audio
    gets one rendition per video preset that keeps audio (``h264-audio``), and
    the poster presets when it has a cover picture (album art).
    """
    if validated.kind == "image":
        return {p.name: recipe.preset_id(p) for p in recipe.presets}
    from pipelines.transform.ladder import ladder

    outputs: dict[str, str] = {}
    for preset in recipe.video:
        base = recipe.preset_id(preset)
        if validated.kind == "audio":
            if preset.audio_codec:
                outputs[f"{preset.name}-audio"] = f"{base}-audio"
            continue
        for height in ladder(preset, validated.media):
            outputs[f"{preset.name}-{height}p"] = f"{base}-{height}p"
        if preset.hls:
            outputs[f"{preset.name}-hls"] = f"{base}-hls"
        if preset.preview_seconds:
            outputs[f"{preset.name}-preview"] = f"{base}-preview"
    if has_poster(validated):
        for preset in recipe.presets:
            outputs[f"poster-{preset.name}"] = f"{recipe.preset_id(preset)}-poster"
    return outputs


def has_poster(validated: Validated) -> bool:
    """Whether the asset gets a poster: video (a frame of it), or audio with a cover picture."""
    return validated.kind == "video" or (validated.kind == "audio" and validated.media is not None
                                         and validated.media.cover is not None)
