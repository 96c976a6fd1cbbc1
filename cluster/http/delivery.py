"""What a delivered rendition looks like on the wire, as pure functions: which files of a
package may be asked for, their content types, cache headers and ETags, conditional and
range requests checked up front, and manifests rewritten so every URI they name carries
the signature that fetched them (relative URIs drop the base's query string).

Range requests themselves are Starlette's (``FileResponse``: single and multiple ranges,
``If-Range``); only its refusals are taken over here, so they carry the API's error body.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from starlette.responses import FileResponse, MalformedRangeHeader, RangeNotSatisfiable

from pipelines.optimize.dash import MPD_NAMESPACE

MEDIA_TYPES = {
    "m3u8": "application/vnd.apple.mpegurl",
    "mpd": "application/dash+xml",
    "mp4": "video/mp4",
    "m4s": "video/iso.segment",
}
MANIFESTS = ("m3u8", "mpd")
_PACKAGE_FILE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}(/[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}){0,3}")
_URI_ATTRIBUTE = re.compile(r'URI="([^"]*)"')
YEAR = 365 * 24 * 3600

ET.register_namespace("", MPD_NAMESPACE)


def package_file(file: str) -> str | None:
    """The file's extension when ``file`` may name a file of an HLS/DASH package, else None."""
    if not _PACKAGE_FILE.fullmatch(file) or ".." in file:
        return None
    extension = file.rsplit(".", 1)[-1] if "." in file else ""
    return extension if extension in MEDIA_TYPES else None


def cache_control(signed_for_s: int | None, manifest: bool = False) -> str:
    """Content-addressed bytes never change: immutable. A signed URL's response may be kept by
    shared caches, never past the URL's own expiry; a token's, by the client only."""
    if signed_for_s is None:
        return "private, no-cache" if manifest else "private, max-age=3600, immutable"
    lifetime = max(0, min(signed_for_s, YEAR))
    return f"public, max-age={lifetime}" + ("" if manifest else ", immutable")


def etag(digest: str, file: str | None = None) -> str:
    """The rendition's SHA-256, quoted; a package file's path under it (written once, never
    changed: the package's key names the source and the recipe)."""
    return f'"{digest}"' if file is None else f'"{digest}/{file}"'


def not_modified(if_none_match: str | None, tag: str) -> bool:
    """RFC 9110 If-None-Match for GET: a weak comparison against any listed tag, or ``*``."""
    if not if_none_match:
        return False
    listed = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
    return "*" in listed or tag in listed


def range_refusal(header: str | None, size: int) -> tuple[int, str] | None:
    """(400, why) for a malformed Range, (416, ...) for one no byte of ``size`` satisfies."""
    if not header:
        return None
    try:
        FileResponse._parse_range_header(header, size)  # the parser FileResponse will use
    except MalformedRangeHeader as exc:
        return 400, exc.content
    except RangeNotSatisfiable:
        return 416, f"the range asks for none of the rendition's {size} bytes"
    return None


def signed_playlist(text: str, query: str) -> str:
    """An HLS playlist whose URI lines and URI="…" attributes carry ``query``."""
    lines = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            line = _with_query(stripped, query)
        elif stripped.startswith("#"):
            line = _URI_ATTRIBUTE.sub(lambda m: f'URI="{_with_query(m[1], query)}"', line)
        lines.append(line)
    return "\n".join(lines) + "\n"


def signed_mpd(text: str, query: str) -> str:
    """An MPD whose segment templates (initialization, media) carry ``query``."""
    root = ET.fromstring(text)
    for template in root.iter(f"{{{MPD_NAMESPACE}}}SegmentTemplate"):
        for attribute in ("initialization", "media"):
            if template.get(attribute):
                template.set(attribute, _with_query(template.get(attribute), query))
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _with_query(uri: str, query: str) -> str:
    return f"{uri}{'&' if '?' in uri else '?'}{query}"
