"""Image metadata as cameras write it (EXIF from Pillow, HEIC from pillow-heif), the place kept
only by policy, tags made safe, and the catalog's typed columns from the JSON document."""

from __future__ import annotations

from datetime import datetime, timezone

import pyvips
import pytest

from catalog.metadata_columns import FILLED, metadata_columns
from pipelines.recipe import Preset
from pipelines.optimize.compress import compress
from pipelines.transform.convert import to_srgb
from pipelines.transform.resize import resize
from pipelines.upload.metadata import without_gps
from pipelines.upload.tags import (SHORT_LIMIT, TEXT_LIMIT, Notes, clean_text, container_fields,
                                   iso6709, typed_tags)
from pipelines.upload.validate import validate
from tests.corpus.generate import camera_exif, heic, jpeg_with_exif as jpeg


def test_a_cameras_jpeg_gives_make_model_lens_capture_time_and_place():
    metadata = validate(jpeg(camera_exif())).metadata
    assert (metadata["camera_make"], metadata["camera_model"], metadata["lens"]) == (
        "Canon", "Canon EOS R5", "RF24-105mm F4 L IS USM")
    assert metadata["captured_at"] == "2024-07-14T09:08:07+02:00"  # DateTimeOriginal, its offset
    assert metadata["has_gps"] is True
    assert metadata["gps_lat"] == pytest.approx(51 + 30 / 60 + 25.84 / 3600, abs=1e-6)
    assert metadata["gps_lon"] == pytest.approx(-(7 / 60 + 39.6 / 3600), abs=1e-6)  # west
    assert "notes" not in metadata
    columns = metadata_columns(metadata, "image/jpeg")
    assert columns["kind"] == "image" and (columns["width"], columns["height"]) == (64, 48)
    assert columns["captured_at"] == datetime(2024, 7, 14, 7, 8, 7, tzinfo=timezone.utc)
    assert columns["camera_model"] == "Canon EOS R5" and columns["gps_lat"] > 51


def test_a_capture_time_without_an_offset_is_the_cameras_clock_read_as_utc():
    metadata = validate(jpeg(camera_exif(offset=None, lat=None))).metadata
    assert metadata["captured_at"] == "2024-07-14T09:08:07"
    assert metadata["has_gps"] is False and "gps_lat" not in metadata
    assert metadata_columns(metadata, "image/jpeg")["captured_at"] == datetime(
        2024, 7, 14, 9, 8, 7, tzinfo=timezone.utc)


def test_a_heic_from_pillow_heif_gives_its_exif_too():
    exif = camera_exif("Apple", "iPhone 15 Pro", "iPhone 15 Pro back triple camera 6.86mm f/1.78",
                       offset="-07:00", lat=("S", (33.0, 51.0, 54.0)), lon=("E", (151.0, 12.0, 36.0)))
    validated = validate(heic(320, 240, exif=exif.tobytes()))
    metadata = validated.metadata
    assert (validated.format, metadata["width"], metadata["height"]) == ("heif", 320, 240)
    assert (metadata["camera_make"], metadata["camera_model"]) == ("Apple", "iPhone 15 Pro")
    assert metadata["lens"].startswith("iPhone 15 Pro back")
    assert metadata["captured_at"] == "2024-07-14T09:08:07-07:00"
    assert (metadata["gps_lat"], metadata["gps_lon"]) == pytest.approx((-33.865, 151.21))


def test_the_place_is_dropped_unless_kept_and_no_rendition_ever_carries_it():
    data = jpeg(camera_exif(), size=(640, 480))
    metadata = validate(data).metadata
    private = without_gps(metadata)
    assert "gps_lat" not in private and "gps_lon" not in private and private["has_gps"] is True
    columns = metadata_columns(private, "image/jpeg")
    assert columns["gps_lat"] is columns["gps_lon"] is None and columns["camera_make"] == "Canon"
    presets = (Preset("small", 200, format="jpeg"), Preset("web", 300, format="webp"))
    for raster in resize(data, presets):
        encoded = compress(to_srgb(raster), next(p for p in presets if p.name == raster.preset))
        fields = pyvips.Image.new_from_buffer(encoded.data, "").get_fields()
        assert not [f for f in fields if f.startswith("exif")], encoded.format
        assert b"GPS" not in encoded.data and b"Canon" not in encoded.data


def test_odd_exif_text_is_cleaned_and_bounded_with_a_note():
    metadata = validate(jpeg(camera_exif(make="Bad\x01\x02Make", model="M" * 5000))).metadata
    assert metadata["camera_make"] == "BadMake"
    assert metadata["camera_model"] == "M" * SHORT_LIMIT
    assert any(n.startswith("camera_model: truncated") for n in metadata["notes"])
    assert any(n.startswith("camera_make: 2 control") for n in metadata["notes"])


def test_a_place_that_is_not_one_is_dropped_with_a_note():
    exif = camera_exif(lat=("N", (95.0, 0.0, 0.0)), lon=("E", (10.0, 0.0, 0.0)))
    metadata = validate(jpeg(exif)).metadata
    assert "gps_lat" not in metadata and metadata["has_gps"] is True
    assert any(n.startswith("gps:") for n in metadata["notes"])


def test_tag_text_is_made_safe_and_bounded():
    notes = Notes()
    assert clean_text("a\x00b\ud800c\x7f\td", "title", notes) == "abc\td"
    assert clean_text("x" * 5000, "title", notes) == "x" * TEXT_LIMIT
    assert clean_text(b"caf\xe9", "album", notes) == "caf\ufffd"
    assert clean_text(" \x00 ", "artist", notes) is None
    assert notes == ["title: 3 control or invalid characters removed",
                     f"title: truncated to {TEXT_LIMIT} of 5000 characters",
                     "artist: 1 control or invalid characters removed"]


def test_typed_tags_take_numbers_leniently_and_drop_the_rest():
    notes = Notes()
    tags = typed_tags({"artist": ["A", "B"], "tracknumber": ["7/12"], "date": ["1999-05-04"],
                       "genre": ["G" * 500], "comment": ["hello\x00"], "encoder": ["Lavf"]}, notes)
    assert tags == {"artist": "A", "track": 7, "year": 1999, "genre": "G" * SHORT_LIMIT,
                    "tags": {"comment": "hello"}}
    notes = Notes()
    assert typed_tags({"track": ["side A"], "year": ["0"], "title": [""]}, notes) == {}
    assert len(notes) == 2
    many = typed_tags({f"k{i}": ["v"] for i in range(100)}, Notes())
    assert len(many["tags"]) == 32


def test_a_video_containers_tags_give_time_camera_and_place():
    notes = Notes()
    fields = container_fields({"creation_time": "2024-07-14T09:08:07.000000Z",
                               "com.apple.quicktime.make": "Apple",
                               "com.apple.quicktime.model": "iPhone 15 Pro",
                               "com.apple.quicktime.location.ISO6709": "+37.3349-122.0090+012.000/"},
                              notes)
    assert fields == {"captured_at": "2024-07-14T09:08:07+00:00", "camera_make": "Apple",
                      "camera_model": "iPhone 15 Pro", "has_gps": True,
                      "gps_lat": 37.3349, "gps_lon": -122.009}
    assert iso6709("+95.0+010.0/") is None and iso6709("nowhere") is None
    odd = container_fields({"location": "somewhere"}, notes)
    assert odd == {"has_gps": True} and notes[-1].startswith("location:")


@pytest.mark.parametrize("value", ["junk", 3.5, float("nan"), float("inf"), 2 ** 40, 10 ** 400,
                                   True, {"a": 1}, [1]])
def test_a_column_takes_only_a_value_of_its_type_and_range(value):
    columns = metadata_columns({"width": value, "captured_at": value, "frame_rate": value,
                                "bit_rate": value}, "video/mp4")
    assert columns["width"] in (None, 3)
    assert columns["captured_at"] is None
    assert columns["frame_rate"] in (None, 3.5, float(2 ** 40))
    assert set(columns) == set(FILLED) and columns["kind"] == "video"
    assert metadata_columns(None, "image/webp") == dict.fromkeys(FILLED)
