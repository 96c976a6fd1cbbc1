"""libvips set up for untrusted input: one place that every image stage imports."""

from __future__ import annotations

import re

import pyvips

from pipelines.outcome import clip

MIN_VERSION = (8, 13)


def libvips_version() -> tuple[int, int, int]:
    return pyvips.version(0), pyvips.version(1), pyvips.version(2)


def harden() -> None:
    """Block loaders that are not fuzzed for untrusted input, ImageMagick's among them.

    ``block_untrusted_set`` arrived in libvips 8.13; on anything older we refuse
    to run rather than decode strangers' files with every loader enabled.
    """
    if libvips_version()[:2] < MIN_VERSION:
        raise RuntimeError(
            f"libvips {'.'.join(map(str, libvips_version()))} is too old: "
            f"Mediafarm needs >= {'.'.join(map(str, MIN_VERSION))} to block untrusted loaders")
    pyvips.block_untrusted_set(True)
    pyvips.operation_block_set("VipsForeignLoadMagick", True)
    pyvips.operation_block_set("VipsForeignLoadSvg", True)


def error_text(exc: pyvips.Error) -> str:
    """The whole of a libvips error on one line, at most ``MESSAGE_CHARS`` long.

    libvips stacks a line per layer, and the first is not always the cause: a HEIF
    of images of several sizes reports a dozen "source: bad seek to N" probes before
    "not all pages are the same size". Lines are kept in order, joined with "; ";
    lines that differ only in their numbers are said once, with a count.
    """
    lines = [line.strip() for line in (exc.detail or "").splitlines() if line.strip()]
    if not lines:
        return (exc.message or "").strip() or "unknown libvips error"
    counts: dict[str, list] = {}  # shape (digits masked) -> [first line, how many]
    for line in lines:
        counts.setdefault(re.sub(r"\d+", "#", line), [line, 0])[1] += 1
    return clip("; ".join(line if n == 1 else f"{line} (and {n - 1} more like it)"
                          for line, n in counts.values()))


def tool_versions() -> dict[str, str]:
    return {"libvips": ".".join(map(str, libvips_version()))}


harden()
