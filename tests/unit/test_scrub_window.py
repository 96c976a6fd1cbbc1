"""A sampled scrub's window of the digest space: its bounds, what it holds, the listings it
touches, and successive windows that cover everything once (catalog.scrubs.Window)."""

from __future__ import annotations

import hashlib

import pytest

from catalog.scrubs import POSITIONS, Window
from cluster.storage.scrub import shards

DIGESTS = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(2000)]


def test_everything_is_one_window_from_any_start():
    assert Window.sample(None, None).ranges() == [("", None)]
    assert Window.sample(1.0, "8" + "0" * 15).ranges() == [("8" + "0" * 15, None),
                                                         ("", "8" + "0" * 15)]
    assert all(Window.sample(None, "a" * 16).holds(d) for d in DIGESTS)
    assert len(shards(Window())) == 256 and shards(Window(0xab << 56))[0] == "ab"


def test_a_window_wraps_past_the_end_of_the_digest_space():
    window = Window.sample(0.25, "f" + "0" * 15)
    assert window.ranges() == [("f" + "0" * 15, None), ("", "3" + "0" * 15)]
    assert window.holds("f" * 64) and window.holds("0" * 64) and not window.holds("3" + "0" * 63)
    touched = shards(window)
    assert touched[0] == "f0" and touched[-1] == "2f" and len(touched) == 64


def test_successive_samples_cover_every_digest_once():
    cursor, seen = None, []
    for _ in range(10):
        window = Window.sample(0.1, cursor)
        seen += [d for d in DIGESTS if window.holds(d)]
        cursor = f"{window.end:016x}"
    assert sorted(seen) == sorted(DIGESTS)
    share = sum(Window.sample(0.1, None).holds(d) for d in DIGESTS) / len(DIGESTS)
    assert 0.07 < share < 0.13  # digests are uniform: a tenth, give or take
    assert int(cursor, 16) < POSITIONS >> 40  # ten tenths: back where it began (to a float's rounding)


@pytest.mark.parametrize("fraction", [0, -0.5])
def test_a_sample_is_a_fraction_above_nothing(fraction):
    with pytest.raises(ValueError, match="fraction above 0"):
        Window.sample(fraction, None)
