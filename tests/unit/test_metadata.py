"""Metadata in any encoding: odd text is kept as what it says or dropped, never fatal."""

from __future__ import annotations

import zlib

import pyvips
import pytest

from pipelines.recipe import DEFAULT_RECIPE
from pipelines.transform.resize import resize
from pipelines.upload.metadata import field_names, image_metadata
from pipelines.upload.validate import validate
from tests.corpus.generate import (jpeg_with_odd_exif, jpeg_with_xmp_not_utf8, png_chunk,
                                   png_with_latin1_text, png_with_text)


def with_chunk(png: bytes, chunk: bytes) -> bytes:
    after_header = 8 + 25  # the signature, then IHDR; text before the pixels is read with the header
    return png[:after_header] + chunk + png[after_header:]


CASES = {
    "png-latin1-text": png_with_latin1_text(),
    "png-latin1-ztxt": with_chunk(png_with_text(), png_chunk(
        b"zTXt", "Überschrift".encode("latin-1") + b"\0\0" + zlib.compress(b"\xe9t\xe9"))),
    "png-itxt-not-utf8": with_chunk(png_with_text(), png_chunk(
        b"iTXt", b"Title\0\0\0\0\0" + b"caf\xe9 \xff")),
    "png-xmp-not-utf8": with_chunk(png_with_text(), png_chunk(
        b"iTXt", b"XML:com.adobe.xmp\0\0\0\0\0<x:xmpmeta>\xff\xfe\xe9</x:xmpmeta>")),
    "jpeg-odd-exif": jpeg_with_odd_exif(),
    "jpeg-xmp-not-utf8": jpeg_with_xmp_not_utf8(),
}


@pytest.mark.parametrize("name", CASES)
def test_odd_metadata_never_stops_an_image(name):
    validated = validate(CASES[name])
    assert (validated.kind, validated.width, validated.height) == ("image", 64, 48)
    assert validated.metadata["width"] == 64 and validated.metadata["frames"] == 1
    rasters = resize(CASES[name], DEFAULT_RECIPE.presets)
    assert {r.preset for r in rasters} == {p.name for p in DEFAULT_RECIPE.presets}


def test_latin1_field_names_are_listed_as_latin1():
    header = pyvips.Image.new_from_buffer(CASES["png-latin1-text"], "")
    assert "png-comment-0-Beschreibung Größe" in field_names(header)


def test_sane_exif_fields_are_kept_beside_odd_ones():
    metadata = validate(CASES["jpeg-odd-exif"]).metadata
    assert metadata["camera_model"] == "Model 7"
    assert metadata["captured_at"] == "2020-01-02T03:04:05"
    # libvips hands EXIF text on as UTF-8, with U+FFFD where a byte was not.
    assert metadata["camera_make"] in ("Café Cameras", "Caf\ufffd Cameras")


class UncheckedText:
    """A header whose text comes back as the file's bytes, as from a libvips that does not
    make text valid UTF-8 before handing it on: pyvips then raises on decoding it."""

    def __init__(self, image: pyvips.Image, raw: dict[str, bytes]) -> None:
        self._image, self._raw = image, raw

    def __getattr__(self, name: str):
        return getattr(self._image, name)

    def get(self, name: str):
        if name in self._raw:
            return self._raw[name].decode("utf-8")
        return self._image.get(name)


def test_text_values_that_are_not_utf8_are_read_as_latin1():
    header = pyvips.Image.new_from_buffer(CASES["jpeg-odd-exif"], "")
    raw = {"exif-ifd0-Make": b"Caf\xe9 Cameras (Caf\xe9 Cameras, ASCII, 13 components, 13 bytes)"}
    metadata = image_metadata(UncheckedText(header, raw))
    assert (metadata["camera_make"], metadata["camera_model"]) == ("Café Cameras", "Model 7")
