"""The HTTP API accepts, lists in /openapi.json and names in its 415s only what decodes here."""

from __future__ import annotations

import json

import pytest

from cluster.http.app import create_app
from cluster.http.service import ApiConfig, accepted_content_types
from pipelines.upload import capabilities

WITHOUT_HEVC = frozenset({"libvips:jpeg", "libvips:png", "libvips:webp", "libvips:gif",
                          "libvips:av1"})


@pytest.fixture
def no_hevc_decoder(monkeypatch):
    """As with pyvips-binary alone: no HEVC decoder anywhere in the process."""
    monkeypatch.setattr(capabilities, "decoders", lambda: WITHOUT_HEVC)


def test_this_install_accepts_heic_because_pillow_heif_decodes_it():
    config = ApiConfig(max_upload_bytes=1)
    assert {"image/heic", "image/heif", "image/avif", "image/jpeg", "video/mp4"} <= config.content_types


def test_without_an_hevc_decoder_heic_is_neither_accepted_nor_advertised(no_hevc_decoder):
    config = ApiConfig(max_upload_bytes=1)
    assert not {"image/heic", "image/heif"} & config.content_types
    assert {"image/jpeg", "image/avif", "video/mp4", "audio/flac"} <= config.content_types
    document = create_app(lambda: None, config).openapi()
    assert "image/heic" not in json.dumps(document)
    assert "image/jpeg" in json.dumps(document)  # what is accepted is advertised


def test_types_an_operator_lists_are_kept_only_where_they_decode(no_hevc_decoder):
    assert accepted_content_types(frozenset({"image/heic", "image/jpeg", "video/mp4"})) == \
        {"image/jpeg", "video/mp4"}
