"""Tag and collection names: folded, bounded, and refused with a reason."""

from __future__ import annotations

import pytest

from catalog.library import InvalidName, collection_name, tag_name


@pytest.mark.parametrize("raw, folded", [
    ("Beach", "beach"), ("  Summer   2024 ", "summer 2024"), ("Straße", "strasse"),
    ("e\u0301t\u00e9", "\u00e9t\u00e9"),  # NFC: one é however it was typed
    ("東京", "東京"), ("c++", "c++"), ("rock & roll", "rock & roll"), ("a:b.c-d_e#1", "a:b.c-d_e#1"),
])
def test_tags_are_folded_to_one_form(raw, folded):
    assert tag_name(raw) == folded


@pytest.mark.parametrize("raw", ["", "   ", "x" * 65, "-leading", "a/b", "semi;colon",
                                 "quote\"", "bell\x07", "nul\x00", "<script>", "%2e%2e"])
def test_tags_that_cannot_be_are_refused(raw):
    with pytest.raises(InvalidName):
        tag_name(raw)


def test_collection_names_keep_their_case_and_refuse_control_characters():
    assert collection_name("  Holiday  in Rome ") == "Holiday in Rome"
    assert collection_name("x" * 100) == "x" * 100
    for raw in ["", "x" * 101, "bell\x07", "rtl\u202eoverride", "zero\u200bwidth"]:
        with pytest.raises(InvalidName):
            collection_name(raw)


def test_the_search_command_has_an_option_for_every_search_filter():
    from catalog.search import SearchFilters
    from cluster.cli.library_commands import SEARCH_OPTIONS

    assert list(SEARCH_OPTIONS) == list(SearchFilters.model_fields)
