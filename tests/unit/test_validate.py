"""What may enter the farm: formats told by their magic numbers, limits checked on headers."""

from __future__ import annotations

import io
import struct
import subprocess
from pathlib import Path

import PIL.Image
import pillow_heif
import pyvips
import pytest

from pipelines.outcome import Rejected
from pipelines.upload.isobmff import read_ftyp
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
    assert rejection(image().pngsave_buffer(), Limits(max_image_bytes=10)) == "too_large"


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



# --- ISO-BMFF files: the ftyp box's brands say image or film ------------------------------------

def _ffmpeg(folder: Path, name: str, *args: str) -> bytes:
    out = folder / name
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", *args, str(out)], check=True,
                   capture_output=True)
    return out.read_bytes()


def _video(folder: Path, name: str, *codec: str) -> bytes:
    return _ffmpeg(folder, name, "-f", "lavfi", "-i", "testsrc=size=64x48:rate=5",
                   "-frames:v", "3", *codec)


def _pillow(fmt: str, frames: int = 1) -> bytes:
    pictures = [PIL.Image.new("RGB", (64, 48), (200, 100, 50 * i)) for i in range(frames)]
    buffer = io.BytesIO()
    pictures[0].save(buffer, fmt, save_all=frames > 1, append_images=pictures[1:], duration=100)
    return buffer.getvalue()


def _heic() -> bytes:
    buffer = io.BytesIO()
    pillow_heif.from_pillow(PIL.Image.new("RGB", (64, 48), (200, 100, 50))).save(buffer)
    return buffer.getvalue()


def _box(kind: bytes, payload: bytes, version: int | None = None) -> bytes:
    if version is not None:  # a full box: version and flags first
        payload = struct.pack(">I", version << 24) + payload
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def jpeg_in_heif(major: bytes, *compatible: bytes) -> bytes:
    """A HEIF file whose one image item is a JPEG (ISO/IEC 23008-12, annex H).

    No encoder at hand writes one (pillow-heif and Debian's heif-enc have no JPEG
    encoder), so the boxes are laid out here around a real JPEG; libheif reads it.
    """
    jpeg = image(64, 48).jpegsave_buffer()
    ftyp = _box(b"ftyp", major + bytes(4) + b"".join(compatible))

    def meta(offset: int) -> bytes:
        item = _box(b"infe", struct.pack(">HH", 1, 0) + b"jpeg\0", version=2)
        return _box(b"meta", version=0, payload=b"".join([
            _box(b"hdlr", bytes(4) + b"pict" + bytes(13), version=0),
            _box(b"pitm", struct.pack(">H", 1), version=0),
            _box(b"iloc", b"\x44\x00" + struct.pack(">HHHHII", 1, 1, 0, 1, offset, len(jpeg)),
                 version=0),
            _box(b"iinf", struct.pack(">H", 1) + item, version=0),
            _box(b"iprp", _box(b"ipco", _box(b"ispe", struct.pack(">II", 64, 48), version=0))
                 + _box(b"ipma", struct.pack(">IHBB", 1, 1, 1, 0x01), version=0)),
        ]))
    return ftyp + meta(len(ftyp) + len(meta(0)) + 8) + _box(b"mdat", jpeg)


def with_major_brand(data: bytes, brand: bytes) -> bytes:
    return data[:8] + brand + data[12:]


ISO_BMFF = {  # name: (make, format, image sequence)
    "heic": (lambda _: _heic(), "heif", False),
    "avif-libvips": (lambda _: image().heifsave_buffer(compression="av1"), "avif", False),
    "avif-pillow": (lambda _: _pillow("AVIF"), "avif", False),
    "avif-pillow-animated": (lambda _: _pillow("AVIF", frames=3), "avif", True),
    "avif-ffmpeg": (lambda d: _video(d, "a.avif", "-c:v", "libaom-av1", "-cpu-used", "8"), "avif", True),
    "jpeg-in-heif": (lambda _: jpeg_in_heif(b"mif1", b"mif1", b"jpeg"), "heif", False),
    "jpeg-in-heif-jpeg-first": (lambda _: jpeg_in_heif(b"jpeg", b"jpeg", b"mif1"), "heif", False),
    "jpeg-in-heif-isom-first": (lambda _: jpeg_in_heif(b"isom", b"isom", b"mif1", b"jpeg"), "heif", False),
    "mp4": (lambda d: _video(d, "a.mp4", "-c:v", "libx264"), "mp4", False),
    "mov": (lambda d: _video(d, "a.mov", "-c:v", "libx264"), "quicktime", False),
    "m4a": (lambda d: _ffmpeg(d, "a.m4a", "-f", "lavfi", "-i", "sine", "-t", "0.2"), "mp4", False),
}


def test_the_crafted_jpeg_in_heif_is_one_libheif_reads():
    header = pyvips.Image.heifload_buffer(jpeg_in_heif(b"mif1", b"mif1", b"jpeg"))
    assert (header.width, header.height) == (64, 48)


@pytest.mark.parametrize("name", ISO_BMFF)
def test_real_iso_bmff_files_sniff_by_their_brands(tmp_path, name):
    make, kind, sequence = ISO_BMFF[name]
    data = make(tmp_path)
    assert sniff(data) == kind
    assert read_ftyp(data).sequence is sequence


def test_jpeg_in_heif_is_an_image_never_a_video():
    validated = validate(jpeg_in_heif(b"mif1", b"mif1", b"jpeg"))
    assert (validated.format, validated.kind, validated.width, validated.height) == \
        ("heif", "image", 64, 48)
    for major, *compatible in ((b"jpeg", b"jpeg", b"mif1"), (b"isom", b"isom", b"mif1", b"jpeg")):
        # libvips' HEIF loader knows files by their major brand only: these it cannot open.
        with pytest.raises(Rejected) as caught:
            validate(jpeg_in_heif(major, *compatible))
        assert caught.value.reason == "corrupt" and "heif" in caught.value.message


def test_heic_is_validated_as_an_image():
    validated = validate(_heic())
    assert (validated.format, validated.media_type, validated.kind, validated.sequence) == \
        ("heif", "image/heif", "image", False)


def test_an_image_sequence_is_marked_for_the_image_path():
    # Pillow writes major brand 'avis', which libvips does not open; with 'avif' first (and
    # 'avis' and 'msf1' still among the compatible brands) it reads the primary image.
    validated = validate(with_major_brand(_pillow("AVIF", frames=3), b"avif"))
    assert (validated.format, validated.kind, validated.sequence) == ("avif", "image", True)
    assert validate(_pillow("AVIF")).sequence is False


def test_mp4_is_still_a_video(tmp_path):
    validated = validate(_video(tmp_path, "a.mp4", "-c:v", "libx264"))
    assert (validated.format, validated.kind) == ("mp4", "video")
