"""The ftyp box read whole, and what its brands make of a file; hostile boxes say nothing."""

from __future__ import annotations

import struct

import pytest

from pipelines.upload.isobmff import MAX_FTYP_BYTES, FileType, read_ftyp


def ftyp(major: bytes, *compatible: bytes, minor: int = 0) -> bytes:
    payload = major + struct.pack(">I", minor) + b"".join(compatible)
    return struct.pack(">I", 8 + len(payload)) + b"ftyp" + payload


def test_the_box_is_read_whole():
    box = ftyp(b"heic", b"mif1", b"MiHE", b"MiPr", b"miaf", b"MiHB", b"heic", minor=7)
    assert read_ftyp(box + b"\x00\x00\x01\xd4meta") == FileType(
        b"heic", 7, (b"mif1", b"MiHE", b"MiPr", b"miaf", b"MiHB", b"heic"))


def test_a_64_bit_size_is_understood():
    payload = b"avif" + bytes(4) + b"mif1avif"
    box = struct.pack(">I", 1) + b"ftyp" + struct.pack(">Q", 16 + len(payload)) + payload
    assert read_ftyp(box) == FileType(b"avif", 0, (b"mif1", b"avif"))


@pytest.mark.parametrize(("file_type", "expected"), [
    # Still images: HEIF by any of its brands, AVIF when an AV1 brand is there.
    (FileType(b"heic", 0, (b"mif1", b"heic", b"miaf")), ("heif", False)),
    (FileType(b"mif1", 0, (b"mif1", b"jpeg")), ("heif", False)),      # JPEG in HEIF
    (FileType(b"jpeg", 0, (b"jpeg", b"mif1")), ("heif", False)),
    (FileType(b"isom", 0, (b"isom", b"mif1", b"jpeg")), ("heif", False)),  # 23008-12 decides
    (FileType(b"isom", 0, (b"isom", b"miaf")), ("heif", False)),
    (FileType(b"avif", 0, (b"mif1", b"avif", b"miaf", b"MA1B")), ("avif", False)),
    (FileType(b"mif1", 0, (b"mif1", b"MA1A")), ("avif", False)),
    (FileType(b"mif3", struct.unpack(">I", b"avif")[0], ()), ("avif", False)),  # 'mini' files
    (FileType(b"mif3", struct.unpack(">I", b"heic")[0], ()), ("heif", False)),
    # Image sequences: a track of pictures.
    (FileType(b"avis", 0, (b"avif", b"avis", b"msf1", b"iso8", b"mif1", b"miaf")), ("avif", True)),
    (FileType(b"msf1", 0, (b"msf1", b"hevc")), ("heif", True)),
    (FileType(b"isom", 0, (b"isom", b"msf1")), ("heif", True)),
    (FileType(b"hevc", 0, (b"hevc",)), ("heif", True)),
    # Films: no image brand at all.
    (FileType(b"isom", 512, (b"isom", b"iso2", b"avc1", b"mp41")), ("mp4", False)),
    (FileType(b"qt  ", 512, (b"qt  ",)), ("quicktime", False)),
    (FileType(b"M4A ", 512, (b"M4A ", b"isom", b"iso2")), ("mp4", False)),
    (FileType(b"3gp6", 0, (b"3gp6", b"isom", b"iso2", b"avc1")), ("mp4", False)),
])
def test_brands_decide_image_or_film(file_type, expected):
    assert (file_type.format, file_type.sequence) == expected
    assert file_type.image == (expected[0] in ("heif", "avif"))


@pytest.mark.parametrize("head", [
    b"",
    b"\x00\x00\x00\x18ftypheic",                       # cut inside the box
    ftyp(b"heic", b"mif1")[:-2],                       # cut inside a brand
    struct.pack(">I", 0) + b"ftypheic" + bytes(4),      # "to the end of the file": nothing follows
    struct.pack(">I", 12) + b"ftypheic" + bytes(8),     # shorter than its own fields
    struct.pack(">I", 18) + b"ftypheic" + bytes(4) + b"mi" + bytes(8),  # half a brand
    struct.pack(">I", 0xFFFFFFFF) + b"ftypheic" + bytes(4) + b"mif1" * 600,  # absurdly large
    struct.pack(">I", 1) + b"ftyp" + struct.pack(">Q", 2**63) + b"heic" + bytes(4),
    struct.pack(">I", 1) + b"ftyp" + struct.pack(">Q", 8) + b"heic" + bytes(4),
    ftyp(b"heic", *[b"mif1"] * (MAX_FTYP_BYTES // 4)),  # real but over the bound
    b"\x00\x00\x00\x18moovheic" + bytes(12),            # another box first
])
def test_truncated_or_hostile_boxes_say_nothing(head):
    assert read_ftyp(head) is None


def test_a_box_at_the_size_bound_is_read():
    box = ftyp(b"heic", *[b"mif1"] * ((MAX_FTYP_BYTES - 16) // 4))
    assert len(box) == MAX_FTYP_BYTES and read_ftyp(box).major == b"heic"
