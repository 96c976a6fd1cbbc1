"""Camera RAW files told apart from plain TIFFs, so that a refusal can name what was sent.

Most RAW formats are TIFF files (DNG, NEF, ARW, CR2, PEF...) that only their
first directory's tags tell apart: Canon writes "CR" after the header, DNG has a
DNGVersion tag, the rest name their maker. A few have magic numbers of their own
(ORF, RW2, RAF); CR3 is an ISO-BMFF file with brand ``crx `` (``isobmff``).
Hand-written: reading the tags of one directory from the first bytes is a dozen
lines, where a TIFF library would parse the whole file.
"""

from __future__ import annotations

import struct

RAW_FORMATS = {
    "cr2": "Canon CR2", "cr3": "Canon CR3", "nef": "Nikon NEF", "arw": "Sony ARW",
    "dng": "DNG", "orf": "Olympus ORF", "rw2": "Panasonic RW2", "raf": "Fujifilm RAF",
    "pef": "Pentax PEF",
}
# IFD0's Make tag, upper-cased, for makers whose RAW is a TIFF with nothing else to tell it by.
_MAKERS = {"NIKON": "nef", "SONY": "arw", "PENTAX": "pef", "RICOH": "pef"}
_MAGIC = {b"IIRO": "orf", b"IIRS": "orf", b"MMOR": "orf", b"IIU\x00": "rw2",
          b"FUJI": "raf"}
_DNG_VERSION, _MAKE, _ASCII = 0xC612, 0x010F, 2
_MAX_ENTRIES = 512


def tiff_kind(head: bytes) -> str:
    """A RAW format's key in ``RAW_FORMATS`` for ``head`` (a file's first bytes), else "tiff"."""
    if head[:4] in _MAGIC:
        return _MAGIC[head[:4]]
    if head[8:10] == b"CR":
        return "cr2"
    order = "<" if head[:2] == b"II" else ">"
    tags = _first_directory(head, order)
    if _DNG_VERSION in tags:
        return "dng"
    make = _text(head, order, tags.get(_MAKE)).upper()
    return next((kind for maker, kind in _MAKERS.items() if make.startswith(maker)), "tiff")


def _first_directory(head: bytes, order: str) -> dict[int, tuple[int, int, bytes]]:
    """IFD0's entries in ``head``: tag -> (type, count, the 4-byte value or offset)."""
    if len(head) < 8:
        return {}
    offset = struct.unpack_from(order + "I", head, 4)[0]
    if offset + 2 > len(head):
        return {}
    count = min(struct.unpack_from(order + "H", head, offset)[0], _MAX_ENTRIES)
    entries = {}
    for index in range(count):
        start = offset + 2 + 12 * index
        if start + 12 > len(head):
            break
        tag, kind, number = struct.unpack_from(order + "HHI", head, start)
        entries[tag] = (kind, number, head[start + 8:start + 12])
    return entries


def _text(head: bytes, order: str, entry: tuple[int, int, bytes] | None) -> str:
    if entry is None or entry[0] != _ASCII:
        return ""
    _, count, value = entry
    if count <= 4:
        raw = value[:count]
    else:
        start = struct.unpack(order + "I", value)[0]
        raw = head[start:start + min(count, 64)]
    return raw.split(b"\0", 1)[0].decode("latin-1")
