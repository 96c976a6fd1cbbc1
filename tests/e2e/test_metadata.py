"""Metadata of every kind through the farm into the catalog's typed columns and the Parquet export.

Real clamd, real PostgreSQL or SQLite, the shared Dask cluster; files from real encoders:
Pillow (EXIF), pillow-heif (HEIC), the ffmpeg CLI (video, tagged audio), Mutagen (malformed ID3).
"""

from __future__ import annotations

import dataclasses
import shutil
from datetime import datetime, timezone
from pathlib import Path

import pyvips
import pytest
from sqlalchemy import select, update

from catalog.export import export, open_dataset
from catalog.export_datasets import METADATA_COLUMNS
from catalog.models import Asset, Blob
from cluster.farm import Farm
from pipelines.recipe import Preset, Recipe
from pipelines.upload.tags import TEXT_LIMIT
from tests.conftest import make_settings
from tests.corpus.generate import camera_exif, heic, jpeg_with_exif
from tests.media_samples import TAGS, ffmpeg, malformed_mp3_file, tagged

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

WEB = Recipe("web", (Preset("small", 200, format="jpeg"),))
EXPECTED = {  # file: typed columns it must have
    "photo.jpg": {"kind": "image", "width": 640, "height": 480, "camera_make": "Canon",
                  "camera_model": "Canon EOS R5", "lens": "RF24-105mm F4 L IS USM",
                  "captured_at": datetime(2024, 7, 14, 7, 8, 7, tzinfo=timezone.utc)},
    "phone.heic": {"kind": "image", "width": 320, "height": 240, "camera_make": "Apple",
                   "camera_model": "iPhone 15 Pro",
                   "captured_at": datetime(2024, 7, 14, 16, 8, 7, tzinfo=timezone.utc)},
    "clip.mp4": {"kind": "video", "width": 320, "height": 240, "video_codec": "h264",
                 "audio_codec": "aac", "frame_rate": 25.0, "sample_rate": 48000, "channels": 1,
                 "captured_at": datetime(2024, 7, 14, 9, 8, 7, tzinfo=timezone.utc)},
    "song.mp3": {"kind": "audio", "artist": TAGS["artist"], "album": "The Album",
                 "title": "A Title", "track": 3, "year": 2021, "genre": "Jazz",
                 "audio_codec": "mp3", "sample_rate": 44100, "channels": 2, "width": None},
    "song.m4a": {"kind": "audio", "artist": TAGS["artist"], "track": 3, "year": 2021,
                 "audio_codec": "aac"},
    "song.flac": {"kind": "audio", "title": "A Title", "genre": "Jazz", "audio_codec": "flac"},
    "song.ogg": {"kind": "audio", "album": "The Album", "audio_codec": "vorbis"},
    "malformed.mp3": {"kind": "audio", "title": "t" * TEXT_LIMIT, "artist": "Bad Artist",
                      "track": None},
}
PLACES = ("photo.jpg", "phone.heic", "clip.mp4")


@pytest.fixture
def library(tmp_path) -> Path:
    folder = tmp_path / "library"
    folder.mkdir()
    (folder / "photo.jpg").write_bytes(jpeg_with_exif(camera_exif(), size=(640, 480)))
    phone = camera_exif("Apple", "iPhone 15 Pro", "iPhone 15 Pro back camera", offset="-07:00",
                        lat=("S", (33.0, 51.0, 54.0)), lon=("E", (151.0, 12.0, 36.0)))
    (folder / "phone.heic").write_bytes(heic(320, 240, exif=phone.tobytes()))
    ffmpeg("-f", "lavfi", "-t", "1", "-i", "testsrc2=size=320x240:rate=25", "-f", "lavfi", "-t",
           "1", "-i", "sine=sample_rate=48000", "-c:v", "libx264", "-preset", "ultrafast",
           "-pix_fmt", "yuv420p", "-c:a", "aac", "-ac", "1",
           "-metadata", "creation_time=2024-07-14T09:08:07Z",
           "-metadata", "location=+37.3349-122.0090/", str(folder / "clip.mp4"))
    for name, codec in (("song.mp3", "libmp3lame"), ("song.m4a", "aac"), ("song.flac", "flac"),
                        ("song.ogg", "libvorbis")):
        tagged(folder / name, "-c:a", codec, seconds=1.0)
    malformed_mp3_file(folder / "malformed.mp3")
    return folder


def _blobs(farm: Farm) -> dict[str, dict]:
    """Each source file's blob row, by file name."""
    with farm.catalog.engine.connect() as conn:
        rows = conn.execute(select(Asset.source_uri, Blob.__table__)
                            .join(Blob, Blob.sha256 == Asset.sha256)).all()
    return {Path(r.source_uri).name: dict(r._mapping) for r in rows}


def _moment(value):
    """SQLite gives back naive UTC datetimes; everything else as it is."""
    return value.replace(tzinfo=timezone.utc) if isinstance(value, datetime) and \
        value.tzinfo is None else value


def test_typed_metadata_lands_in_the_catalog_and_the_export_without_places(
        tmp_path, library, pg_url, clamd, dask_client):
    settings = make_settings(tmp_path / "data", pg_url, clamd.url)
    assert settings.keep_gps is False  # the default: places are not kept
    with Farm(settings, client=dask_client) as farm:
        # The photo through the per-asset graph, rendered; the rest indexed as bulk partitions.
        [photo] = farm.ingest([str(library / "photo.jpg")], WEB).wait()
        assert photo["status"] == "ready", photo
        job = farm.index([str(library)])
        assert job["counts"] == {"ready": len(EXPECTED) - 1}, job
        blobs = _blobs(farm)
        for name, expected in EXPECTED.items():
            actual = {c: _moment(blobs[name][c]) if c == "captured_at" else blobs[name][c]
                      for c in expected}
            assert actual == expected, name
        assert blobs["clip.mp4"]["duration_s"] == pytest.approx(1.0, abs=0.1)
        assert blobs["song.flac"]["duration_s"] == pytest.approx(1.0, abs=0.1)
        assert blobs["song.mp3"]["bit_rate"] > 0
        for name in PLACES:  # a place was there, and is not kept
            assert blobs[name]["gps_lat"] is blobs[name]["gps_lon"] is None, name
            assert blobs[name]["media_metadata"]["has_gps"] is True, name
            assert "gps_lat" not in blobs[name]["media_metadata"], name
        notes = blobs["malformed.mp3"]["media_metadata"]["notes"]
        assert f"title: truncated to {TEXT_LIMIT} of 200000 characters" in notes

        # Nor does any rendition carry EXIF, camera or place.
        small = farm.stores["renditions"].get(photo["renditions"][0]["sha256"])
        assert not [f for f in pyvips.Image.new_from_buffer(small, "").get_fields()
                    if f.startswith("exif")]

        report = export(farm.catalog, str(tmp_path / "exports"))
        assert report["datasets"]["assets"]["rows"] == len(EXPECTED)
    exported = {Path(r["source_uri"]).name: r
                for r in open_dataset(str(tmp_path / "exports"), "assets").to_table().to_pylist()}
    for name, expected in EXPECTED.items():
        row = exported[name]
        assert row["media_type"] == expected["kind"], name
        assert {c: row[c] for c in expected if c != "kind"} == \
            {c: v for c, v in expected.items() if c != "kind"}, name
        assert {c: row[c] for c in METADATA_COLUMNS} == {
            c: _moment(blobs[name][c]) for c in METADATA_COLUMNS}, name
    assert '"has_gps": true' in exported["photo.jpg"]["media_metadata"]


def test_places_are_kept_by_policy_and_an_index_fills_blobs_it_finds_again(
        tmp_path, library, sqlite_url, clamd, dask_client):
    settings = dataclasses.replace(make_settings(tmp_path / "data", sqlite_url, clamd.url),
                                   keep_gps=True)
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in PLACES:
        shutil.copy(library / name, photos / name)
    with Farm(settings, client=dask_client) as farm:
        assert farm.index([str(photos)])["counts"] == {"ready": len(PLACES)}
        blobs = _blobs(farm)
        assert (blobs["photo.jpg"]["gps_lat"], blobs["photo.jpg"]["gps_lon"]) == pytest.approx(
            (51.5071778, -0.1276667))
        assert (blobs["phone.heic"]["gps_lat"], blobs["phone.heic"]["gps_lon"]) == pytest.approx(
            (-33.865, 151.21))
        assert (blobs["clip.mp4"]["gps_lat"], blobs["clip.mp4"]["gps_lon"]) == (37.3349, -122.009)

        # Blobs catalogued before their columns existed: the same bytes found again (a library
        # reorganised) are read again, and their columns filled.
        with farm.catalog.engine.begin() as conn:
            conn.execute(update(Blob).values(kind=None, width=None, camera_model=None,
                                             gps_lat=None, captured_at=None))
        moved = tmp_path / "moved"
        shutil.copytree(photos, moved)
        assert farm.index([str(moved)])["counts"] == {"ready": len(PLACES)}
        again = _blobs(farm)
        assert again["photo.jpg"]["camera_model"] == "Canon EOS R5"
        assert again["phone.heic"]["width"] == 320 and again["clip.mp4"]["kind"] == "video"
        assert again["photo.jpg"]["gps_lat"] == pytest.approx(51.5071778)
