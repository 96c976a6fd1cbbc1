"""libvips errors reach people whole: every line, in order, on one bounded line."""

from __future__ import annotations

import io

import PIL.Image
import pillow_heif
import pyvips
import pytest

from pipelines.outcome import MESSAGE_CHARS
from pipelines.recipe import DEFAULT_RECIPE
from pipelines.transform.resize import resize
from pipelines.vips import error_text


def test_every_line_is_kept_in_order():
    error = pyvips.Error("unable to call thumbnail_buffer",
                         "VipsJpeg: Corrupt JPEG data: 2 extraneous bytes\nVipsJpeg: premature end\n")
    assert error_text(error) == "VipsJpeg: Corrupt JPEG data: 2 extraneous bytes; VipsJpeg: premature end"


def test_lines_that_differ_only_in_numbers_count_once():
    detail = "".join(f"source: bad seek to {n}\n" for n in (1024, 768, 640, 576, 1024))
    error = pyvips.Error("unable to call VipsForeignLoadHeifBuffer",
                         detail + "heifload_buffer: not all pages are the same size\n")
    assert error_text(error) == ("source: bad seek to 1024 (and 4 more like it); "
                                 "heifload_buffer: not all pages are the same size")


def test_without_detail_the_message_is_the_text():
    # pyvips.Error without a detail takes (and clears) libvips' global error buffer,
    # which an earlier test's decode may have left lines in: empty it first.
    pyvips.Error("", "")
    assert error_text(pyvips.Error("unable to call avg", "")) == "unable to call avg"
    assert error_text(pyvips.Error("", "")) == "unknown libvips error"


def test_a_long_error_keeps_both_ends_within_bounds():
    detail = "first: the start\n" + "".join(f"line {'x' * n}\n" for n in range(200)) + "last: the cause\n"
    text = error_text(pyvips.Error("unable to call avg", detail))
    assert len(text) <= MESSAGE_CHARS
    assert text.startswith("first: the start") and text.endswith("last: the cause")


def heif_of_two_sizes() -> bytes:
    pictures = pillow_heif.from_pillow(PIL.Image.new("RGB", (64, 48), (200, 100, 50)))
    pictures.add_from_pillow(PIL.Image.new("RGB", (32, 40), (0, 100, 50)))
    buffer = io.BytesIO()
    pictures.save(buffer)
    return buffer.getvalue()


def test_a_multi_line_libvips_error_keeps_its_cause_at_the_end():
    # Asked for every page of a HEIF of two sizes, libheif probes past the end a dozen times
    # before libvips says what is wrong: the cause is the last line, not the first.
    with pytest.raises(pyvips.Error) as caught:
        pyvips.Image.new_from_buffer(heif_of_two_sizes(), "", n=-1).avg()
    text = error_text(caught.value)
    assert "not all pages are the same size" in text and "more like it" in text


def test_the_farm_renders_such_a_heif_by_its_primary_image():
    rasters = resize(heif_of_two_sizes(), DEFAULT_RECIPE.presets)
    assert {(r.width, r.height) for r in rasters} >= {(64, 48)}
