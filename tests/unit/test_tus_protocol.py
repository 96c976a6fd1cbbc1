"""The tus and multipart uploads' header parsing and part arithmetic (pure, no IO)."""

from __future__ import annotations

import base64
import hashlib

import pytest

from cluster.http import multipart_store, tus_store
from cluster.http.errors import ApiError

MiB = 1024 * 1024


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_upload_metadata_is_decoded_and_malformed_metadata_is_400():
    header = f"filename {_b64('clip été.mp4')},filetype {_b64('video/mp4')},flag"
    assert tus_store.parse_metadata(header) == {"filename": "clip été.mp4",
                                                "filetype": "video/mp4", "flag": ""}
    assert tus_store.parse_metadata(None) == {}
    assert tus_store.parse_metadata(tus_store.encode_metadata({"a": "b", "c": ""})) == {
        "a": "b", "c": ""}
    for bad in ("a !!!", f"a {_b64('x')},a {_b64('y')}", "a b c", f"a {_b64('x' + chr(0))}",
                "é " + _b64("x"), "a " + base64.b64encode(b"\xff").decode(), "x" * 5000):
        with pytest.raises(ApiError) as refused:
            tus_store.parse_metadata(bad)
        assert refused.value.status == 400, bad


def test_upload_checksum_names_a_supported_algorithm_and_a_digest_of_its_size():
    digest = hashlib.sha256(b"abc").digest()
    hasher, expected = tus_store.parse_checksum(f"sha256 {base64.b64encode(digest).decode()}")
    hasher.update(b"abc")
    assert hasher.digest() == expected
    assert tus_store.parse_checksum(None) is None
    for bad, code in (("md5 AAAA", "unsupported_checksum"), ("sha1 !!", "invalid_checksum"),
                      (f"sha1 {base64.b64encode(digest).decode()}", "invalid_checksum")):
        with pytest.raises(ApiError) as refused:
            tus_store.parse_checksum(bad)
        assert (refused.value.status, refused.value.code) == (400, code)


def test_offsets_and_lengths_are_plain_non_negative_integers():
    assert tus_store.number("0", "Upload-Offset") == 0
    assert tus_store.number(None, "Upload-Offset") is None
    for bad in ("-1", "1.5", " 1", "1e3", "9" * 20, "٣", "³"):
        with pytest.raises(ApiError):
            tus_store.number(bad, "Upload-Offset")


def test_parts_are_at_least_8_mib_and_never_more_than_10000():
    assert tus_store.part_size(1) == 8 * MiB
    assert tus_store.part_size(50 * 1024**3) == 8 * MiB
    big = 200 * 1024**3
    assert tus_store.part_size(big) * 10_000 >= big and tus_store.part_size(big) % MiB == 0
    upload = {"size": 20 * MiB + 5, "part_size": 8 * MiB}
    assert multipart_store.part_count(upload["size"], upload["part_size"]) == 3
    assert [multipart_store.part_length(upload, n) for n in (1, 2, 3)] == [8 * MiB, 8 * MiB,
                                                                         4 * MiB + 5]


def test_a_part_list_must_match_what_s3_holds():
    upload = {"size": 20 * MiB, "part_size": 8 * MiB}
    listed = {1: ("a", 8 * MiB), 2: ("b", 8 * MiB), 3: ("c", 4 * MiB)}
    multipart_store.check_parts(upload, [(1, '"A"'), (2, "b"), (3, '"c"')], listed)
    for sent in ([(1, "a"), (2, "b")], [(2, "b"), (1, "a"), (3, "c")], [(1, "a"), (2, "x"), (3, "c")],
                 [(1, "a"), (2, "b"), (3, "c"), (3, "c")]):
        with pytest.raises(ApiError) as refused:
            multipart_store.check_parts(upload, sent, listed)
        assert (refused.value.status, refused.value.code) == (409, "parts_mismatch")
    short = {**listed, 2: ("b", 5 * MiB)}
    with pytest.raises(ApiError) as refused:
        multipart_store.check_parts(upload, [(1, "a"), (2, "b"), (3, "c")], short)
    assert refused.value.status == 409
    over = {**listed, 3: ("c", 4 * MiB + 1)}
    with pytest.raises(ApiError) as refused:
        multipart_store.check_parts(upload, [(1, "a"), (2, "b"), (3, "c")], over)
    assert (refused.value.status, refused.value.code) == (413, "too_large")
