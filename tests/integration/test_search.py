"""Search on SQLite and PostgreSQL: every filter, sorts, keyset pages, refusals."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone

import pytest
from pydantic import ValidationError

from catalog import Catalog, library
from catalog.records import AssetRequest
from catalog import search as search_module
from catalog.search import SearchQuery, search
from cluster.storage.sources import asset_id

# name, media type, metadata
LIBRARY = [
    ("beach_sunset.jpg", "image/jpeg", {"width": 4032, "height": 3024, "camera_make": "Apple",
                                        "camera_model": "iPhone 15 Pro",
                                        "captured_at": "2024-07-01T18:00:00+00:00"}),
    ("beach_noon.heic", "image/heic", {"width": 4032, "height": 3024, "camera_make": "Apple",
                                       "camera_model": "iPhone 15 Pro",
                                       "captured_at": "2024-07-01T12:00:00+00:00"}),
    ("forest.jpg", "image/jpeg", {"width": 6000, "height": 4000, "camera_make": "FUJIFILM",
                                  "camera_model": "X-T5",
                                  "captured_at": "2023-10-05T09:30:00+00:00"}),
    ("100%_cotton.png", "image/png", {"width": 800, "height": 600}),
    ("concert.mp4", "video/mp4", {"width": 3840, "height": 2160, "duration_s": 312.5,
                                  "video_codec": "hevc", "audio_codec": "aac",
                                  "captured_at": "2024-08-15T21:00:00+00:00"}),
    ("clip.mov", "video/quicktime", {"width": 1920, "height": 1080, "duration_s": 8.0,
                                     "video_codec": "h264", "audio_codec": "aac"}),
    ("song.mp3", "audio/mpeg", {"duration_s": 201.0, "audio_codec": "mp3",
                                "title": "Summer Nights", "artist": "The Tides",
                                "album": "Coastline"}),
]


@pytest.fixture
def catalog(catalog_url) -> Catalog:
    catalog = Catalog(catalog_url)
    catalog.upgrade()
    catalog.ensure_recipe("r", "recipe", {})
    return catalog


def _add(catalog: Catalog, owner: str, name: str, media_type: str, metadata: dict,
         ready: bool = True) -> str:
    uri = f"file:///{owner}/{name}"
    request = AssetRequest(asset_id(owner, uri), owner, uri, None)
    catalog.queue([request], "r", {})
    if ready:
        digest = hashlib.sha256(uri.encode()).hexdigest()
        catalog.put_blob(digest, 1000 + len(name), media_type, "originals", metadata)
        catalog.record_ready(request.asset_id, 1, digest, "r", [], "originals")
    return request.asset_id


@pytest.fixture
def ids(catalog) -> dict[str, str]:
    found = {name: _add(catalog, "ann", name, media, meta) for name, media, meta in LIBRARY}
    found["queued.jpg"] = _add(catalog, "ann", "queued.jpg", "", {}, ready=False)
    _add(catalog, "bob", "beach_bob.jpg", "image/jpeg", {"width": 4032, "height": 3024})
    library.add_tags(catalog.engine, "ann", [found["beach_sunset.jpg"], found["beach_noon.heic"]],
                     ["holiday"])
    library.add_tags(catalog.engine, "ann", [found["beach_sunset.jpg"]], ["favourite"])
    library.add_to_collection(catalog.engine, "ann", "Summer",
                              [found["beach_sunset.jpg"], found["concert.mp4"]])
    return found


def _names(catalog, **filters) -> set[str]:
    page = search(catalog.engine, SearchQuery(owner="ann", limit=500, **filters))
    return {item["source_uri"].rsplit("/", 1)[1] for item in page.items}


def test_every_filter_narrows_to_what_it_names(catalog, ids):
    assert len(_names(catalog)) == 8  # ann's, not bob's
    assert _names(catalog, kind="video") == {"concert.mp4", "clip.mov"}
    assert _names(catalog, status="queued") == {"queued.jpg"}
    assert _names(catalog, tags=["Holiday"]) == {"beach_sunset.jpg", "beach_noon.heic"}
    assert _names(catalog, tags=["holiday", "favourite"]) == {"beach_sunset.jpg"}
    assert _names(catalog, collection="Summer") == {"beach_sunset.jpg", "concert.mp4"}
    assert _names(catalog, camera="iphone") == {"beach_sunset.jpg", "beach_noon.heic"}
    assert _names(catalog, camera="fujifilm") == {"forest.jpg"}
    assert _names(catalog, codec="AAC") == {"concert.mp4", "clip.mov"}
    assert _names(catalog, min_width=4000) == {"beach_sunset.jpg", "beach_noon.heic",
                                               "forest.jpg"}
    assert _names(catalog, max_height=1080) == {"100%_cotton.png", "clip.mov"}
    assert _names(catalog, min_duration=60, max_duration=300) == {"song.mp3"}
    assert _names(catalog, captured_from="2024-07-01T15:00:00Z",
                  captured_to="2024-12-31") == {"beach_sunset.jpg", "concert.mp4"}
    today = datetime.now(timezone.utc).date().isoformat()
    assert len(_names(catalog, created_from="2020-01-01", created_to="2999-01-01")) == 8
    assert _names(catalog, created_to=today[:4] + "-01-01") == set()


@pytest.mark.parametrize("rare_word", [2000, 0], ids=["looked-up", "tested-per-row"])
def test_text_matches_names_tags_and_audio_tags_with_wildcards_taken_literally(
        catalog, ids, rare_word, monkeypatch):
    monkeypatch.setattr(search_module, "RARE_WORD", rare_word)  # both forms of a word's filter
    assert _names(catalog, text="beach") == {"beach_sunset.jpg", "beach_noon.heic"}
    assert _names(catalog, text="BEACH noon") == {"beach_noon.heic"}   # every word
    assert _names(catalog, text="favour") == {"beach_sunset.jpg"}      # a tag
    assert _names(catalog, text="tides") == {"song.mp3"}               # the artist
    assert _names(catalog, text="100%") == {"100%_cotton.png"}
    assert _names(catalog, text="%") == {"100%_cotton.png"}  # not a wildcard
    assert _names(catalog, text="_") == {"beach_sunset.jpg", "beach_noon.heic", "100%_cotton.png"}
    assert _names(catalog, text="' OR 1=1 --") == set()  # a value, never SQL


@pytest.mark.parametrize("sort", ["created", "captured", "name", "size", "duration"])
@pytest.mark.parametrize("order", ["asc", "desc"])
def test_pages_walk_every_match_once_in_order(catalog, ids, sort, order):
    seen, after = [], None
    while True:
        page = search(catalog.engine, SearchQuery(owner="ann", sort=sort, order=order, limit=3,
                                                  after=after))
        seen += [item["id"] for item in page.items]
        if page.next is None:
            break
        after = page.next
    whole = search(catalog.engine, SearchQuery(owner="ann", sort=sort, order=order, limit=500))
    assert seen == [item["id"] for item in whole.items]
    # Sorts by what the original holds list the assets that have one: not the queued asset.
    stored = {name: i for name, i in ids.items() if name != "queued.jpg"}
    expected = stored if sort in ("captured", "size", "duration") else ids
    assert sorted(seen) == sorted(expected.values())
    if sort == "name":
        names = [item["source_uri"] for item in whole.items]
        assert names == sorted(names, reverse=order == "desc")


def test_items_carry_their_metadata_and_tags(catalog, ids):
    [item] = search(catalog.engine, SearchQuery(owner="ann", text="sunset")).items
    assert item["id"] == ids["beach_sunset.jpg"] and item["kind"] == "image"
    assert (item["width"], item["camera_model"]) == (4032, "iPhone 15 Pro")
    assert item["tags"] == ["favourite", "holiday"]


@pytest.mark.parametrize("filters", [
    {"kind": "document"}, {"limit": 0}, {"limit": 501}, {"min_width": -1},
    {"min_width": 10, "max_width": 5}, {"created_from": "2025-01-01", "created_to": "2024-01-01"},
    {"tags": ["no/slash"]}, {"sort": "owner"}, {"after": "not a cursor"}, {"owner_id": "x"},
    {"text": "x" * 201}, {"captured_from": "yesterday"},
])
def test_nonsense_is_refused_before_any_sql(filters):
    with pytest.raises(ValidationError):
        SearchQuery(owner="ann", **filters)


def test_a_cursor_of_another_sort_is_refused(catalog, ids):
    page = search(catalog.engine, SearchQuery(owner="ann", sort="size", limit=2))
    with pytest.raises(ValueError):
        search(catalog.engine, SearchQuery(owner="ann", sort="created", after=page.next))


@pytest.mark.parametrize("text", ["nul\x00", "bell\x07", "\ud800"])
def test_control_characters_are_refused_not_sent_to_the_database(text):
    with pytest.raises(ValidationError):
        SearchQuery(owner="ann", text=text)


@pytest.mark.parametrize("filters", [{"max_width": 2 ** 40}, {"min_duration": float("inf")},
                                     {"max_duration": float("nan")}])
def test_numbers_past_the_columns_are_refused(filters):
    with pytest.raises(ValidationError):
        SearchQuery(owner="ann", **filters)
