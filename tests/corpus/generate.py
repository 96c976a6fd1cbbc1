"""Generate the hostile-input corpus: ``python -m tests.corpus.generate FOLDER``.

Each case is made by code rather than committed as a binary, and names the
status and reason the farm must give it. The corpus runs with small limits
(``CORPUS_LIMITS``, and a clamd whose stream limit is ``CLAMD_STREAM_LIMIT``) so
that over-limit cases stay a few megabytes.
"""

from __future__ import annotations

import io
import random
import struct
import subprocess
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageCms
import PIL.PngImagePlugin
from PIL.ExifTags import GPS, IFD, Base
import pillow_heif
import pyvips

from cluster.cli.samples import EICAR, scene
from pipelines.upload.validate import Limits

MARKER = b"MEDIAFARM-TEST-MALWARE-MARKER"
CLAMD_STREAM_LIMIT = "6M"
CORPUS_LIMITS = Limits(max_image_bytes=10 * 1024 * 1024)
SCRIPT = b"<script>alert(document.domain)</script>"


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[], bytes]
    status: str
    reasons: frozenset[str]   # usually one; native decoders may fail in one of two ways


def case(name: str, status: str, *reasons: str) -> Callable[[Callable[[], bytes]], Case]:
    def wrap(make: Callable[[], bytes]) -> Case:
        return Case(name, make, status, frozenset(reasons or {None}))
    return wrap


def _jpeg(width: int = 640, height: int = 480, seed: int = 1, **save) -> bytes:
    return scene(width, height, seed).jpegsave_buffer(Q=85, **save)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _ffmpeg(*args: str) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "out.mp4"
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", *args, str(out)],
                       capture_output=True, check=True)
        return out.read_bytes()


def _mp4(size: str = "320x240", seconds: str = "2") -> bytes:
    return _ffmpeg("-f", "lavfi", "-i", f"testsrc=size={size}:rate=25", "-t", seconds,
                   "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p")


def _insert_jpeg_comment(jpeg: bytes, comment: bytes) -> bytes:
    segment = b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment
    return jpeg[:2] + segment + jpeg[2:]


CASES: list[Case] = []


def register(c: Case) -> Case:
    CASES.append(c)
    return c


# --- malware -----------------------------------------------------------------------------------
register(case("eicar.com", "rejected", "infected")(lambda: EICAR))


@register
@case("eicar-in.zip", "rejected", "infected")
def _eicar_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("readme.txt", "nothing to see")
        archive.writestr("eicar.com", EICAR)
    return buffer.getvalue()


register(case("marker-in-comment.jpg", "rejected", "infected")(
    lambda: _insert_jpeg_comment(_jpeg(), b"x" * 100 + MARKER)))

# --- decompression bombs and limits ------------------------------------------------------------


def png_bomb(width: int, height: int) -> bytes:
    """A real PNG header for width x height RGB and one compressed row: bytes on disk, gigabytes decoded."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    row = zlib.compress(b"\x00" + b"\x00" * 3 * width, 9)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", row)
            + png_chunk(b"IEND", b""))


@register
@case("bomb-50000x50000.png", "rejected", "over_limit")
def _png_bomb() -> bytes:
    # A few hundred bytes on disk, 7.5 GB once decoded: the header-only probe must refuse it.
    return png_bomb(50000, 50000)


# 7.5 GB once decoded: the header-only probe must refuse it before any decode.
register(case("bomb-50000x50000.png", "rejected", "over_limit")(lambda: png_bomb(50000, 50000)))


@register
@case("gif-3000-frames.gif", "rejected", "over_limit")
def _many_frames() -> bytes:
    # Distinct noise frames: the GIF encoder folds frames that repeat.
    frames = [pyvips.Image.gaussnoise(16, 16, seed=i).cast("uchar") for i in range(3000)]
    strip = pyvips.Image.arrayjoin(frames, across=1)
    return strip.copy(interpretation="b-w").gifsave_buffer(page_height=16)


register(case("over-the-byte-cap.jpg", "rejected", "too_large")(
    lambda: _jpeg() + random.Random(7).randbytes(CORPUS_LIMITS.max_image_bytes)))
register(case("over-clamd-stream-limit.jpg", "rejected", "scan_limit_exceeded")(
    lambda: _jpeg() + random.Random(8).randbytes(8 * 1024 * 1024)))
register(case("huge-dimensions.mp4", "rejected", "over_limit")(
    lambda: _ffmpeg("-f", "lavfi", "-i", "color=size=8192x8192:rate=1", "-frames:v", "1",
                    "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p")))

# --- truncated and corrupt ---------------------------------------------------------------------
register(case("truncated.jpg", "rejected", "corrupt")(lambda: _jpeg()[:6000]))
register(case("truncated.png", "rejected", "corrupt")(
    lambda: scene(640, 480, 2).pngsave_buffer()[:20000]))
register(case("truncated.webp", "rejected", "corrupt")(
    lambda: scene(640, 480, 3).webpsave_buffer(Q=80)[:3000]))
register(case("truncated.mp4", "rejected", "corrupt", "decoder_crashed")(
    lambda: (lambda whole: whole[: len(whole) * 6 // 10])(_mp4())))
register(case("jpeg-magic-then-garbage.jpg", "rejected", "corrupt")(
    lambda: b"\xff\xd8\xff\xe0" + random.Random(3).randbytes(4000)))
register(case("png-without-pixels.png", "rejected", "corrupt")(
    lambda: b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 64, 64, 8, 2, 0, 0, 0))
    + png_chunk(b"IEND", b"")))
register(case("empty.jpg", "rejected", "empty")(lambda: b""))

# --- wrong types, scripts and polyglots --------------------------------------------------------
register(case("text-renamed.jpg", "rejected", "unsupported_type")(
    lambda: b"Dear customer, please find attached...\n" * 20))
register(case("random-bytes.jpg", "rejected", "unsupported_type")(
    lambda: b"\x00\x13" + random.Random(4).randbytes(5000)))
register(case("imagemagick-mvg.jpg", "rejected", "unsupported_type")(
    lambda: b"push graphic-context\nviewbox 0 0 640 480\n"
            b"image over 0,0 0,0 'https://127.0.0.1/x.php?x=`id`'\npop graphic-context\n"))
register(case("imagemagick-msl.jpg", "rejected", "unsupported_type")(
    lambda: b'<?xml version="1.0" encoding="UTF-8"?>\n<image>\n<read filename="/etc/passwd"/>\n'
            b'<write filename="/tmp/owned.png"/>\n</image>\n'))
register(case("script.svg", "rejected", "unsupported_type")(
    lambda: b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">' + SCRIPT + b"</svg>"))
register(case("external-refs.svg", "rejected", "unsupported_type")(
    lambda: b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" '
            b'xmlns:xlink="http://www.w3.org/1999/xlink" width="10" height="10">'
            b'<image xlink:href="file:///etc/passwd" width="10" height="10"/></svg>'))
register(case("html-then-jpeg.jpg", "rejected", "unsupported_type")(
    lambda: b"<html><body>" + SCRIPT + b"</body></html>\n" + _jpeg()))
register(case("document.pdf", "rejected", "unsupported_type")(
    lambda: b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"))
register(case("passwd.m3u8", "rejected", "unsupported_type")(
    lambda: b"#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:10.0,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n"))
register(case("hls-disguised.avi", "rejected", "unsupported_type")(
    lambda: b"#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:1.0,\nconcat:file:///etc/passwd\n"
            b"#EXT-X-ENDLIST\n"))
register(case("concat-script.mp4", "rejected", "unsupported_type")(
    lambda: b"ffconcat version 1.0\nfile '/etc/passwd'\n"))
register(case("image.tiff", "rejected", "unsupported_type")(
    lambda: scene(64, 64, 4).tiffsave_buffer()))
register(case("program.elf.jpg", "rejected", "unsupported_type")(
    lambda: b"\x7fELF\x02\x01\x01" + b"\x00" * 200))

# --- accepted, with hostile payloads that must not survive -------------------------------------
register(case("jpeg-with-html-comment.jpg", "ready")(
    lambda: _insert_jpeg_comment(_jpeg(seed=5), SCRIPT)))
register(case("gps-exif.jpg", "ready")(lambda: _jpeg_with_exif()))
register(case("animated.gif", "ready")(
    lambda: pyvips.Image.arrayjoin([scene(120, 90, i) for i in range(6)], across=1)
    .gifsave_buffer(page_height=90)))
register(case("photo.png", "ready")(lambda: scene(900, 600, 6).pngsave_buffer()))
register(case("photo.webp", "ready")(lambda: scene(900, 600, 7).webpsave_buffer(Q=85)))


# --- metadata in odd encodings: kept as what it says or dropped, never fatal ---------------------


def png_with_text(*chunks: tuple[str, str | bytes]) -> bytes:
    """PNG text chunks as Pillow writes them: tEXt keywords and values are Latin-1 by the spec."""
    info = PIL.PngImagePlugin.PngInfo()
    for key, value in chunks:
        info.add_text(key, value)
    buffer = io.BytesIO()
    PIL.Image.new("RGB", (64, 48), (200, 100, 50)).save(buffer, "PNG", pnginfo=info)
    return buffer.getvalue()


def png_with_latin1_text() -> bytes:
    return png_with_text(("Beschreibung Größe", "Grüße aus Köln"), ("Comment", b"caf\xe9 \xff\xfe"))


def camera_exif(make="Canon", model="Canon EOS R5", lens="RF24-105mm F4 L IS USM",
                taken="2024:07:14 09:08:07", offset: str | None = "+02:00",
                lat=("N", (51.0, 30.0, 25.84)), lon=("W", (0.0, 7.0, 39.6))) -> PIL.Image.Exif:
    """EXIF as a camera writes it: make, model, lens, capture time and its offset, a place."""
    exif = PIL.Image.Exif()
    exif[Base.Make], exif[Base.Model] = make, model
    exif[Base.DateTime] = "2030:01:01 00:00:00"  # when it was edited: not the capture time
    sub = exif.get_ifd(IFD.Exif)
    sub[Base.DateTimeOriginal], sub[Base.LensModel] = taken, lens
    if offset:
        sub[Base.OffsetTimeOriginal] = offset
    if lat:
        gps = exif.get_ifd(IFD.GPSInfo)
        gps[GPS.GPSLatitudeRef], gps[GPS.GPSLatitude] = lat
        gps[GPS.GPSLongitudeRef], gps[GPS.GPSLongitude] = lon
    return exif


def jpeg_with_exif(exif: PIL.Image.Exif, size=(64, 48)) -> bytes:
    """A JPEG by Pillow's encoder carrying ``exif``."""
    buffer = io.BytesIO()
    pil_scene(*size, 3).save(buffer, "JPEG", quality=90, exif=exif)
    return buffer.getvalue()


def jpeg_with_odd_exif() -> bytes:
    exif = PIL.Image.Exif()
    exif[0x010F] = b"Caf\xe9 Cameras"  # Make: Latin-1 bytes where EXIF says ASCII
    exif[0x0110] = "Model 7"
    exif[0x0132] = "2021:03:04 05:06:07"
    ifd = exif.get_ifd(0x8769)
    ifd[0x9003] = "2020:01:02 03:04:05"  # DateTimeOriginal
    ifd[0x9286] = b"UNICODE\x00" + "Grüße".encode("utf-16-le")  # UserComment, UCS-2
    ifd[0xA420] = b"\xff\xfe\x00id"  # ImageUniqueID: ASCII by the spec, binary here
    ifd[0x927C] = bytes(range(256)) * 4  # MakerNote: a vendor's binary blob
    buffer = io.BytesIO()
    PIL.Image.new("RGB", (64, 48), (200, 100, 50)).save(buffer, "JPEG", exif=exif)
    return buffer.getvalue()


def jpeg_with_xmp_not_utf8() -> bytes:
    xmp = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/'
           b'02/22-rdf-syntax-ns#"><rdf:Description dc:title="Caf\xe9 \xff\xfe\xc3"/>'
           b"</rdf:RDF></x:xmpmeta>")
    segment = b"http://ns.adobe.com/xap/1.0/\x00" + xmp
    jpeg = _jpeg(64, 48)
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(segment) + 2) + segment + jpeg[2:]


register(case("latin1-text.png", "ready")(png_with_latin1_text))
register(case("odd-exif.jpg", "ready")(jpeg_with_odd_exif))
register(case("xmp-not-utf8.jpg", "ready")(jpeg_with_xmp_not_utf8))


# --- audio whose cover picture is hostile: the poster is refused as the image would be, the audio
# is not. 12000x12000 is within FFmpeg's own size check, so only the image limits stop its decode.
register(case("bomb-cover.flac", "ready")(lambda: _audio_with_cover("flac", png_bomb(12000, 12000))))


@register
@case("corrupt-cover.mp3", "ready")
def _corrupt_cover() -> bytes:
    cover = _jpeg(seed=9)
    data = _audio_with_cover("mp3", cover)
    # Noise after the magic number, the same length: the ID3 frame around it still adds up.
    return data.replace(cover, cover[:4] + random.Random(9).randbytes(len(cover) - 4))


def _audio_with_cover(container: str, cover: bytes) -> bytes:
    codec = {"flac": "flac", "mp3": "libmp3lame"}[container]
    with tempfile.TemporaryDirectory() as folder:
        picture, out = Path(folder) / "cover", Path(folder) / f"out.{container}"
        picture.write_bytes(cover)
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-t", "2", "-i", "sine",
                        "-i", str(picture), "-map", "0", "-map", "1", "-c:a", codec, "-c:v", "copy",
                        "-disposition:v", "attached_pic", str(out)], capture_output=True, check=True)
        return out.read_bytes()


def _jpeg_with_exif() -> bytes:
    image = scene(800, 600, 8).copy()
    image.set_type(pyvips.GValue.gstr_type, "exif-ifd0-Make", "SecretCam")
    image.set_type(pyvips.GValue.gstr_type, "exif-ifd0-Artist", "Private Person")
    return image.jpegsave_buffer(Q=85)


# --- what phones, cameras and recorders make: each must end ready, from the right picture ----------
# Made with the encoders of the formats' own libraries. ``CAMERA_REFERENCES`` says how the
# producing library itself decodes each (upright, the picture a viewer shows), to compare with.


def pil_scene(width: int, height: int, seed: int) -> PIL.Image.Image:
    image = scene(width, height, seed)
    return PIL.Image.fromarray(np.ndarray(buffer=image.write_to_memory(), dtype=np.uint8,
                                          shape=(image.height, image.width, image.bands)))


def heic(width: int = 800, height: int = 600, seed: int = 11, **save) -> bytes:
    """An HEVC-coded HEIF (pillow-heif's x265 encoder)."""
    buffer = io.BytesIO()
    pillow_heif.from_pillow(pil_scene(width, height, seed)).save(buffer, quality=85, **save)
    return buffer.getvalue()


def heic_display_p3() -> bytes:
    """As iPhones write: HEVC, Display P3 pixels and their ICC profile (libvips' own P3)."""
    p3 = scene(800, 600, 10).icc_transform("p3", input_profile="srgb")
    picture = pil_scene(800, 600, 10)
    pixels = np.ndarray(buffer=p3.write_to_memory(), dtype=np.uint8, shape=(600, 800, 3))
    picture.frombytes(pixels.tobytes())
    buffer = io.BytesIO()
    pillow_heif.from_pillow(picture).save(buffer, quality=85,
                                          icc_profile=bytes(p3.get("icc-profile-data")))
    return buffer.getvalue()


def heic_rotated() -> bytes:
    """As a phone held upright writes it: pixels stored landscape, an ``irot`` box turning
    them upright, and EXIF orientation 6 as well, which libheif's readers must not apply again."""
    exif = PIL.Image.Exif()
    exif[0x0112] = 6
    data = heic(seed=12, exif=exif.tobytes())
    assert b"irot" in data and pillow_heif.open_heif(io.BytesIO(data)).size == (600, 800)
    return data


def heic_multi_image() -> bytes:
    """Several top-level images of different sizes, the second primary, the first with a thumbnail
    (Apple's multi-image files; grids with layers): only the primary is the photo."""
    first, second = pil_scene(400, 300, 13), pil_scene(640, 480, 14)
    container = pillow_heif.from_pillow(first)
    container.add_from_pillow(second)
    container[0].info["thumbnails"] = [96]
    buffer = io.BytesIO()
    container.save(buffer, quality=85, primary_index=1)
    return buffer.getvalue()


def heic_grid(width: int = 1200, height: int = 900, tile: int = 256) -> bytes:
    """A grid of tiles, as iPhones store every photo (512-pixel tiles)."""
    return heic(width, height, seed=15, tile_size=tile)


def ultrahdr() -> bytes:
    """Android's UltraHDR: an SDR JPEG with a gain map (libvips' uhdrsave, from HDR pixels)."""
    return (scene(800, 600, 16).colourspace("scrgb") * 1.5).uhdrsave_buffer(Q=90)


def mpo() -> bytes:
    """A multi-picture JPEG (stereo cameras and many compacts): the first picture is the photo."""
    buffer = io.BytesIO()
    pil_scene(800, 600, 17).save(buffer, "MPO", save_all=True, quality=90,
                                 append_images=[pil_scene(800, 600, 18)])
    return buffer.getvalue()


def avif_sequence(frames: int = 4) -> bytes:
    """An AVIF image sequence ('avis'), written by Pillow's libavif."""
    pictures = [pil_scene(480, 360, 20 + i) for i in range(frames)]
    buffer = io.BytesIO()
    pictures[0].save(buffer, "AVIF", save_all=True, append_images=pictures[1:], duration=120,
                     quality=80)
    return buffer.getvalue()


def avif_multi_image() -> bytes:
    """Two top-level AV1 images (libvips' heifsave writes each page as one): the primary is the photo."""
    pages = [scene(480, 360, 22), scene(480, 360, 23)]
    strip = pyvips.Image.arrayjoin(pages, across=1).copy()
    strip.set_type(pyvips.GValue.gint_type, "page-height", 360)
    return strip.heifsave_buffer(compression="av1", Q=80)


def _pillow_reference(data: bytes) -> np.ndarray:
    with PIL.Image.open(io.BytesIO(data)) as image:
        return _in_srgb(image)  # the first frame, the primary picture


def _heif_reference(data: bytes) -> np.ndarray:
    # libheif applies irot/imir; the primary image is what open_heif's attributes describe.
    return _in_srgb(pillow_heif.open_heif(io.BytesIO(data)).to_pillow())


def _in_srgb(image: PIL.Image.Image) -> np.ndarray:
    """RGB pixels in sRGB, through the embedded profile (LittleCMS, by Pillow) when there is one."""
    image = image.convert("RGB")
    profile = image.info.get("icc_profile")
    if profile:
        image = PIL.ImageCms.profileToProfile(image, PIL.ImageCms.ImageCmsProfile(io.BytesIO(profile)),
                                              PIL.ImageCms.createProfile("sRGB"))
    return np.asarray(image)


CAMERA_REFERENCES: dict[str, Callable[[bytes], np.ndarray]] = {
    "iphone.heic": _heif_reference,
    "iphone-upright.heic": _heif_reference,
    "multi-image.heic": _heif_reference,
    "grid.heic": _heif_reference,
    "android-ultrahdr.jpg": _pillow_reference,
    "stereo.mpo": _pillow_reference,
    "sequence.avif": _pillow_reference,
    "multi-image.avif": _pillow_reference,
}
for _name, _make in (("iphone.heic", heic_display_p3), ("iphone-upright.heic", heic_rotated),
                     ("multi-image.heic", heic_multi_image), ("grid.heic", heic_grid),
                     ("android-ultrahdr.jpg", ultrahdr), ("stereo.mpo", mpo),
                     ("sequence.avif", avif_sequence), ("multi-image.avif", avif_multi_image)):
    register(case(_name, "ready")(_make))


def heic_claiming(grid: tuple[int, int] | None = None, tiles: tuple[int, int] | None = None) -> bytes:
    """A real 5x4 grid of 256-pixel tiles whose header claims other sizes (its ``ispe`` boxes):
    the grid's own (the picture), or every tile's (decoded whole, then cut to the grid)."""
    data = heic_grid()
    for (width, height), claim in (((1200, 900), grid), ((256, 256), tiles)):
        if claim is not None:
            old = b"ispe" + bytes(4) + struct.pack(">II", width, height)
            assert data.count(old) == 1
            data = data.replace(old, b"ispe" + bytes(4) + struct.pack(">II", *claim))
    return data


# A few hundred KB: the grid claims 40000x40000, or its 20 tiles 8192x8192 each (1.3 gigapixels
# decoded for a 1200x900 picture); both are refused from the header, before a tile is decoded.
register(case("heic-huge-grid.heic", "rejected", "over_limit")(
    lambda: heic_claiming(grid=(40000, 40000))))
register(case("heic-huge-tiles.heic", "rejected", "over_limit")(
    lambda: heic_claiming(tiles=(8192, 8192))))
# Its header reads; the coded picture it points at is cut off.
register(case("truncated.heic", "rejected", "corrupt")(lambda: heic()[:250_000]))


def write_corpus(folder: Path) -> dict[str, Case]:
    """Write every case into ``folder``; returns the cases by file name."""
    folder.mkdir(parents=True, exist_ok=True)
    for item in CASES:
        (folder / item.name).write_bytes(item.make())
    return {item.name: item for item in CASES}


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "corpus")
    cases = write_corpus(target)
    print(f"wrote {len(cases)} cases to {target}")
