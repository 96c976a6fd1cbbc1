"""Perceptual hashes and near-duplicate groups, without a catalog: the hash from resize's
intermediate against imagehash on the decoded file, the multi-index search against brute
force, and precision and recall on a small evaluation set made with real encoders."""

from __future__ import annotations

import io

import imagehash
import numpy as np
import pytest
from PIL import Image, ImageOps

from catalog.hamming import group_labels, near_pairs, plan, popcount
from catalog.near_duplicates import DEFAULT_THRESHOLD
from pipelines.recipe import DEFAULT_RECIPE, Preset
from pipelines.transform.perceptual import hamming, to_int, to_signed, to_unsigned
from pipelines.transform.resize import resize, resize_hashed
from tests import near_duplicate_set as evaluation

# Floors the small evaluation set must reach at the default threshold (the full set's
# figures are in docs/benchmarks.md).
MIN_RECALL, MIN_PRECISION = 0.9, 0.95


@pytest.fixture(scope="module")
def small_set() -> list[evaluation.Item]:
    sources = [evaluation.synthetic(seed, 900, 600) for seed in range(8)]
    unrelated = [evaluation.synthetic(seed, 900, 600) for seed in range(100, 112)]
    return evaluation.build(sources, unrelated)


def _reference(data: bytes) -> int:
    """imagehash's own pHash of the whole decoded file, upright."""
    return to_int(imagehash.phash(ImageOps.exif_transpose(Image.open(io.BytesIO(data)))))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_hash_from_the_intermediate_matches_imagehash_on_the_decoded_file(seed):
    data = evaluation.synthetic(seed, 2400, 1600).jpegsave_buffer(Q=90)
    for presets in (DEFAULT_RECIPE.presets, (Preset("small", 400),), (Preset("t", 150, 150,
                                                                           fit="cover"),)):
        rasters, phash = resize_hashed(data, presets)
        assert hamming(phash, _reference(data)) <= 4
        assert [r.pixels for r in rasters] == [r.pixels for r in resize(data, presets)]


def test_an_animation_is_hashed_by_its_first_frame_and_a_png_with_alpha_by_its_colour():
    import pyvips

    first, second = evaluation.synthetic(1, 300, 200), evaluation.synthetic(2, 300, 200)
    strip = first.join(second, "vertical").copy()
    strip.set_type(pyvips.GValue.gint_type, "page-height", 200)
    strip.set_type(pyvips.GValue.array_int_type, "delay", [100, 100])
    gif = strip.gifsave_buffer()
    _, phash = resize_hashed(gif, (Preset("small", 150),))
    assert hamming(phash, resize_hashed(first.pngsave_buffer(), (Preset("s", 150),))[1]) <= 6
    with_alpha = first.bandjoin(255).copy(interpretation="srgb").pngsave_buffer()
    assert hamming(resize_hashed(with_alpha, (Preset("s", 150),))[1], _reference(with_alpha)) <= 4


def test_signed_storage_round_trips():
    for value in (0, 1, 2 ** 63 - 1, 2 ** 63, 2 ** 64 - 1):
        assert to_unsigned(to_signed(value)) == value
        assert -2 ** 63 <= to_signed(value) < 2 ** 63


def _brute_force_pairs(values: np.ndarray, threshold: int) -> set[tuple[int, int]]:
    distance = popcount((values[:, None] ^ values[None, :]).ravel()).reshape(len(values), -1)
    i, j = np.nonzero(np.triu(distance <= threshold, 1))
    return set(zip(i.tolist(), j.tolist()))


def _planted(rng, count: int, copies: int) -> np.ndarray:
    """Random hashes, and copies of some with up to 12 bits flipped, and some repeated."""
    values = rng.integers(0, 2 ** 64 - 1, count, dtype=np.uint64, endpoint=True)
    flips = np.zeros(copies, np.uint64)
    for _ in range(12):
        flips |= np.uint64(1) << rng.integers(0, 64, copies).astype(np.uint64)
    return np.concatenate([values, values[:copies] ^ flips, values[:copies // 10]])


@pytest.mark.parametrize("threshold", [0, 3, 8, 12])
def test_multi_index_pairs_equal_brute_force(threshold):
    values = _planted(np.random.default_rng(threshold), 3000, 600)
    i, j = near_pairs(values, threshold)
    assert set(zip(i.tolist(), j.tolist())) == _brute_force_pairs(values, threshold)


@pytest.mark.parametrize("threshold", [4, 8])
def test_groups_equal_brute_force_connected_components(threshold):
    values = _planted(np.random.default_rng(100 + threshold), 4000, 800)
    labels = group_labels(values, threshold)
    parent = list(range(len(values)))  # the brute-force union-find

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in _brute_force_pairs(values, threshold):
        parent[root(a)] = root(b)
    roots = [root(x) for x in range(len(values))]
    same_label = labels[:, None] == labels[None, :]
    same_root = np.array(roots)[:, None] == np.array(roots)[None, :]
    assert (same_label == same_root).all()


def test_the_plan_uses_longer_keys_for_more_hashes():
    assert plan(1000, 8) == (9, 1)
    m, k = plan(1_000_000, 8)
    assert k > 1 and m == 8 + k


def test_precision_and_recall_on_the_evaluation_set(small_set):
    values = evaluation.hashes(small_set)
    score = evaluation.score(small_set, values, DEFAULT_THRESHOLD)
    assert score.recall >= MIN_RECALL, score
    assert score.precision >= MIN_PRECISION, score
    # Every copy made without touching the pixels' layout is at distance 0 or 2.
    by_name = dict(zip((item.name for item in small_set), values.tolist()))
    for index in range(8):
        source = by_name[f"source-{index}"]
        assert hamming(by_name[f"source-{index}-exif-edited"], source) == 0
