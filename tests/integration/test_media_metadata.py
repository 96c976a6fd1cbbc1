"""Video and audio metadata from real encoders' output (the ffmpeg CLI, Mutagen's ID3 writer),
through the sandboxed probe; malformed tags never stop a file; migration 0009 fills the typed
columns of blobs already catalogued, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
from sqlalchemy import insert, inspect, select, text

from catalog import upgrade
from catalog.db import alembic_config, connect, current_revision
from catalog.models import Blob
from pipelines.upload.served_source import Serving
from pipelines.upload.tags import SHORT_LIMIT, TEXT_LIMIT
from pipelines.upload.validate import validate, validate_media_file
from tests.media_samples import TAGS, ffmpeg, malformed_mp3_file, tagged
from tests.services.postgres import scratch_database

pytestmark = pytest.mark.slow

# name: (codec arguments, the codec the probe names)
AUDIO = {"tagged.mp3": (("-c:a", "libmp3lame"), "mp3"), "tagged.m4a": (("-c:a", "aac"), "aac"),
         "tagged.flac": (("-c:a", "flac"), "flac"),
         "tagged.ogg": (("-c:a", "libvorbis"), "vorbis"),
         "tagged.opus": (("-c:a", "libopus"), "opus"),
         "tagged.wav": (("-c:a", "pcm_s16le"), "pcm_s16le")}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("metadata")


@pytest.mark.parametrize("name", AUDIO)
def test_audio_tags_from_ffmpeg_in_every_container(folder, name):
    codec, codec_name = AUDIO[name]
    metadata = validate(tagged(folder / name, *codec).read_bytes()).metadata
    assert {k: metadata.get(k) for k in ("artist", "album", "title", "track", "year", "genre")} == {
        "artist": TAGS["artist"], "album": "The Album", "title": "A Title", "track": 3,
        "year": 2021, "genre": "Jazz"}, name
    assert metadata["audio_codec"] == codec_name and metadata["channels"] == 2
    assert metadata["sample_rate"] in (44100, 48000)  # Opus is always 48 kHz
    assert metadata["duration_s"] == pytest.approx(1.5, abs=0.1)
    assert metadata["bit_rate"] > 0 and metadata["video_codec"] is None
    assert "notes" not in metadata, metadata.get("notes")


def test_video_codec_duration_frame_rate_dimensions_time_and_place(folder):
    path = folder / "clip.mp4"
    ffmpeg("-f", "lavfi", "-t", "2", "-i", "testsrc2=size=320x240:rate=30000/1001",
           "-f", "lavfi", "-t", "2", "-i", "sine=sample_rate=48000", "-c:v", "libx264",
           "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-ac", "1",
           "-metadata", "creation_time=2024-07-14T09:08:07Z",
           "-metadata", "location=+51.5074-000.1278/", "-metadata", "title=Harbour", str(path))
    metadata = validate(path.read_bytes()).metadata
    assert (metadata["width"], metadata["height"]) == (320, 240)
    assert (metadata["video_codec"], metadata["audio_codec"]) == ("h264", "aac")
    assert metadata["frame_rate"] == pytest.approx(29.97, abs=0.01)
    assert metadata["duration_s"] == pytest.approx(2.0, abs=0.1)
    assert (metadata["sample_rate"], metadata["channels"]) == (48000, 1)
    assert metadata["captured_at"] == "2024-07-14T09:08:07+00:00"
    assert (metadata["gps_lat"], metadata["gps_lon"], metadata["has_gps"]) == (51.5074, -0.1278, True)
    assert metadata["title"] == "Harbour"


@pytest.fixture(scope="module")
def malformed_mp3(folder) -> Path:
    return malformed_mp3_file(folder / "malformed.mp3")


def test_malformed_tags_are_dropped_or_cut_with_notes_and_the_file_still_passes(malformed_mp3):
    metadata = validate(malformed_mp3.read_bytes()).metadata
    assert metadata["audio_codec"] == "mp3" and metadata["duration_s"] == pytest.approx(1.5, abs=0.1)
    assert metadata["title"] == "t" * TEXT_LIMIT
    assert metadata["artist"] == "Bad Artist"
    assert len(metadata["genre"]) <= SHORT_LIMIT and "track" not in metadata
    # Mutagen skips the album frame it cannot decode; FFmpeg's reading stands in, on the record.
    assert "\ud800" not in metadata.get("album", "")
    if "album" in metadata:
        assert "album: unreadable to Mutagen; FFmpeg's reading is kept" in metadata["notes"]
    notes = metadata["notes"]
    assert f"title: truncated to {TEXT_LIMIT} of 200000 characters" in notes
    assert any(n.startswith("artist: ") for n in notes)
    assert any(n.startswith("genre: ") for n in notes)
    assert "track: 'side B' is not a track number; dropped" in notes
    assert all(len(n) < 300 for n in notes)


def test_tags_are_read_from_a_served_source_as_from_a_file(folder, malformed_mp3):
    path = tagged(folder / "served.flac", "-c:a", "flac")
    for source, expected in ((path, "A Title"), (malformed_mp3, "t" * TEXT_LIMIT)):
        with Serving(lambda: _Reader(source), source.stat().st_size) as served:
            validated = validate_media_file(served, source.read_bytes()[:4096],
                                            source.stat().st_size)
        assert validated.metadata["title"] == expected


class _Reader:
    def __init__(self, path: Path):
        self._file = open(path, "rb")

    def read_at(self, offset: int, length: int) -> bytes:
        self._file.seek(offset)
        return self._file.read(length)

    def close(self) -> None:
        self._file.close()


# -- migration 0009 -------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog_at_0008(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'old.sqlite'}"
        upgrade(url, "0008")
        yield url
        return
    with scratch_database(request.getfixturevalue("pg_server")) as url:
        upgrade(url, "0008")
        yield url


def test_migration_0009_fills_the_columns_of_blobs_already_catalogued(catalog_at_0008):
    url = catalog_at_0008
    engine = connect(url)
    old = {"photo": ("image/jpeg", {"width": 4000, "height": 3000, "camera_make": "Canon",
                                    "camera_model": "EOS R5", "captured_at": "2020-01-02T03:04:05",
                                    "has_gps": True}),
           "clip": ("video/mp4", {"container": "mov,mp4", "duration_s": 12.5, "bit_rate": 900_000,
                                  "streams": [{"kind": "video", "codec": "h264"}]}),
           "thumb": ("image/webp", None)}
    with engine.begin() as conn:  # as the 0008 schema has them: no typed columns yet
        conn.execute(text("INSERT INTO blobs (sha256, size, media_type, store, media_metadata) "
                          "VALUES (:sha256, 1, :media_type, 'originals', :metadata)"),
                     [{"sha256": name, "media_type": media_type,
                       "metadata": None if metadata is None else json.dumps(metadata)}
                      for name, (media_type, metadata) in old.items()])
    upgrade(url, "0009")
    assert current_revision(url) == "0009"
    with engine.connect() as conn:
        rows = {r.sha256: r for r in conn.execute(select(Blob.__table__))}
    assert (rows["photo"].kind, rows["photo"].width, rows["photo"].camera_model) == (
        "image", 4000, "EOS R5")
    assert rows["photo"].captured_at.replace(tzinfo=timezone.utc) == datetime(
        2020, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert rows["photo"].gps_lat is None  # a place was never read before: none to fill
    assert (rows["clip"].kind, rows["clip"].duration_s, rows["clip"].bit_rate) == ("video", 12.5,
                                                                                   900_000)
    assert rows["thumb"].kind is None and rows["thumb"].width is None
    with engine.connect() as conn:
        indexes = {i["name"] for i in inspect(conn).get_indexes("blobs")}
    assert {"ix_blobs_kind_captured_at", "ix_blobs_captured_at", "ix_blobs_camera_model",
            "ix_blobs_duration_s"} <= indexes

    from alembic import command

    command.downgrade(alembic_config(url), "0008")
    with engine.connect() as conn:
        assert "width" not in {c["name"] for c in inspect(conn)
                               .get_columns("blobs")}
    upgrade(url)
    with engine.begin() as conn:  # and the models write it again
        conn.execute(insert(Blob.__table__), [{"sha256": "new", "size": 1, "media_type": "audio/flac",
                                               "store": "originals", "artist": "A", "track": 1}])
