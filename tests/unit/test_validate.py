"""What may enter the farm: formats told by their magic numbers, limits checked on headers."""

from __future__ import annotations

import pyvips
import pytest

from pipelines.outcome import Rejected
from pipelines.upload.validate import Limits, sniff, validate


def image(width: int = 64, height: int = 48) -> pyvips.Image:
    return (pyvips.Image.black(width, height) + [200, 100, 50]).cast("uchar").copy(interpretation="srgb")


@pytest.mark.parametrize(("head", "kind"), [
    (b"\xff\xd8\xff\xe0\x00\x10JFIF", "jpeg"),
    (b"\x89PNG\r\n\x1a\n\x00\x00", "png"),
    (b"RIFF\x24\x00\x00\x00WEBPVP8 ", "webp"),
    (b"GIF89a\x01\x00", "gif"),
    (b"GIF87a\x01\x00", "gif"),
    (b"%PDF-1.7\n", "pdf"),
    (b"PK\x03\x04\x14\x00", "zip"),
    (b"  <svg xmlns='http://www.w3.org/2000/svg'/>", "svg/xml"),
    (b"<?xml version='1.0'?>", "svg/xml"),
    (b"hello, world", None),
    (b"", None),
])
def test_sniff_names_the_format_from_magic_numbers(head, kind):
    assert sniff(head) == kind


def rejection(data: bytes, limits: Limits = Limits()) -> str:
    with pytest.raises(Rejected) as caught:
        validate(data, limits)
    return caught.value.reason


def test_empty_file_is_rejected():
    assert rejection(b"") == "empty"


def test_file_over_max_bytes_is_rejected():
    assert rejection(image().pngsave_buffer(), Limits(max_bytes=10)) == "too_large"


def test_unknown_bytes_are_unsupported():
    assert rejection(bytes(range(256))) == "unsupported_type"


def test_text_named_jpg_is_unsupported(tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_text("definitely a photo")
    assert rejection(path.read_bytes()) == "unsupported_type"


def test_pdf_is_unsupported():
    assert rejection(b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\n") == "unsupported_type"


def test_png_over_the_pixel_limit_is_rejected():
    assert rejection(image(100, 100).pngsave_buffer(), Limits(max_pixels=5_000)) == "over_limit"


def test_png_over_the_side_limit_is_rejected():
    assert rejection(image(300, 10).pngsave_buffer(), Limits(max_side=200)) == "over_limit"


def test_jpeg_with_garbage_after_the_magic_is_corrupt():
    assert rejection(b"\xff\xd8\xff" + b"garbage" * 20) == "corrupt"


@pytest.mark.parametrize(("save", "media_type"), [
    ("jpegsave_buffer", "image/jpeg"),
    ("pngsave_buffer", "image/png"),
    ("webpsave_buffer", "image/webp"),
])
def test_real_images_are_accepted_with_their_size(save, media_type):
    result = validate(getattr(image(64, 48), save)())
    assert (result.width, result.height, result.media_type) == (64, 48, media_type)
