"""libvips set up for untrusted input: one place that every image stage imports."""

from __future__ import annotations

import pyvips

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


def first_line(exc: pyvips.Error) -> str:
    """libvips errors carry a stack of lines; the first names the problem."""
    text = (exc.detail or exc.message or "").strip()
    return text.splitlines()[0] if text else "unknown libvips error"


def tool_versions() -> dict[str, str]:
    return {"libvips": ".".join(map(str, libvips_version()))}


harden()
