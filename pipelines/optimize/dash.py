"""A DASH MPD over an HLS package's own fMP4 (CMAF-style) segments: one set of files, two manifests.

The MPD is static (on demand), ISO BMFF live profile: one AdaptationSet holding every rung
(they share the ladder's codec and GOP, so segments align and players may switch), each a
Representation whose ``SegmentTemplate`` names the rung's ``init.mp4`` and ``seg-NNNNN.m4s``
with a ``SegmentTimeline`` of the durations the HLS muxer reported. Audio stays muxed in
each rung, as in the HLS package, so a Representation lists both codecs.

Written with ``xml.etree``: the MPD is small and its schema (ISO/IEC 23009-1) is all we use.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass

MPD_NAMESPACE = "urn:mpeg:dash:schema:mpd:2011"
LIVE_PROFILE = "urn:mpeg:dash:profile:isoff-live:2011"
TIMESCALE = 1000  # milliseconds: finer than any segment boundary a player acts on


@dataclass(frozen=True)
class DashRung:
    """One rung as packaged: its folder, codecs, size and its init and media segments."""

    name: str
    codecs: str
    bandwidth: int
    width: int | None
    height: int | None
    frame_rate: float | None
    init: str
    segments: tuple[tuple[str, float], ...]  # (file name, seconds), in order, numbered from 1


def mpd(rungs: list[DashRung], template: str) -> str:
    """The MPD text; ``template`` is the rungs' media name with ``$Number%05d$`` for the number."""
    if not rungs:
        raise ValueError("an MPD needs at least one rung")
    duration = max(sum(d for _, d in r.segments) for r in rungs)
    root = ET.Element("MPD", {
        "xmlns": MPD_NAMESPACE, "type": "static", "profiles": LIVE_PROFILE,
        "mediaPresentationDuration": _iso_duration(duration),
        "minBufferTime": _iso_duration(max(d for r in rungs for _, d in r.segments))})
    period = ET.SubElement(root, "Period", {"id": "0", "start": "PT0S"})
    adaptation = ET.SubElement(period, "AdaptationSet", {
        "id": "0", "mimeType": "video/mp4" if rungs[0].width else "audio/mp4",
        "segmentAlignment": "true", "startWithSAP": "1"})
    for kind in _content_types(rungs[0]):
        ET.SubElement(adaptation, "ContentComponent", {"contentType": kind})
    for index, rung in enumerate(rungs):
        attributes = {"id": rung.name, "bandwidth": str(rung.bandwidth), "codecs": rung.codecs}
        if rung.width and rung.height:
            attributes.update(width=str(rung.width), height=str(rung.height))
        if rung.frame_rate:
            attributes["frameRate"] = _frame_rate(rung.frame_rate)
        representation = ET.SubElement(adaptation, "Representation", attributes)
        segments = ET.SubElement(representation, "SegmentTemplate", {
            "timescale": str(TIMESCALE), "startNumber": "1",
            "initialization": f"{rung.name}/{rung.init}",
            "media": f"{rung.name}/{template}"})
        timeline = ET.SubElement(segments, "SegmentTimeline")
        for start, length in _timeline([d for _, d in rung.segments]):
            ET.SubElement(timeline, "S", {"t": str(start), "d": str(length)})
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _timeline(durations: list[float]) -> list[tuple[int, int]]:
    # Boundaries rounded from the running total, so rounding never drifts along the timeline.
    edges, total = [0], 0.0
    for seconds in durations:
        total += seconds
        edges.append(round(total * TIMESCALE))
    return [(edges[i], edges[i + 1] - edges[i]) for i in range(len(durations))]


def _content_types(rung: DashRung) -> list[str]:
    kinds = ["audio" if c.startswith(("mp4a", "opus")) else "video" for c in rung.codecs.split(",")]
    return kinds if len(kinds) > 1 else []  # one stream: the AdaptationSet's mimeType says it


def _frame_rate(rate: float) -> str:
    for denominator in (1, 1001):
        numerator = rate * denominator
        if abs(numerator - round(numerator)) < 0.01:
            return str(round(numerator)) if denominator == 1 else f"{round(numerator)}/1001"
    return f"{round(rate * 1000)}/1000"


def _iso_duration(seconds: float) -> str:
    return f"PT{math.ceil(seconds * 1000) / 1000:.3f}S"
