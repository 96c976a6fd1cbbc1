"""Every pair of 64-bit hashes within a Hamming distance, without comparing every pair.

Multi-index hashing, exact: split the 64 bits into ``m = threshold + k`` disjoint bands.
Two hashes at most ``threshold`` bits apart differ in at most ``threshold`` bands, so they
agree exactly on at least ``k`` of them (the pigeonhole principle), hence on every band of
at least one of the ``C(m, k)`` sets of ``k`` bands. For each such set the hashes are
sorted by their bits in it; only neighbours with equal bits there are candidates, and a
popcount of the XOR keeps those within the threshold. ``k`` is chosen for the count of
hashes: more bands in a key make fewer candidates and more sorts (``plan``). Numpy does
the sorts and popcounts; SciPy's connected components (union-find over the pairs) makes
the groups. No library does this all-pairs join on bit strings (FAISS and the like answer
queries one at a time, and are not dependencies here), hence this module.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from itertools import combinations
from math import comb

import numpy as np

BITS = 64
# Measured roughly with numpy 2.4 on this 2-core machine, loaded: a band set's sort and
# gather cost 80-150 ns a hash, a candidate pair about 60-70 ns; only their ratio matters
# to ``plan``. At a million hashes and 8 bits it picks 11 / 3; 10 / 2 took about 4x as long.
_SORT_COST, _PAIR_COST = 1.3, 1.0


def popcount(values: np.ndarray) -> np.ndarray:
    """Set bits of each uint64."""
    if hasattr(np, "bitwise_count"):  # numpy >= 2
        return np.bitwise_count(values)
    return np.unpackbits(values.view(np.uint8)).reshape(-1, BITS).sum(axis=1)


def plan(count: int, threshold: int) -> tuple[int, int]:
    """``(m, k)``: bands, and how many of them each key holds, cheapest for ``count`` hashes."""
    if not 0 <= threshold < BITS:
        raise ValueError(f"threshold must be 0 to {BITS - 1}, not {threshold}")
    best = None
    for k in range(1, BITS - threshold + 1):
        m = threshold + k
        key_bits = BITS * k / m
        keys = comb(m, k)
        cost = keys * (count * _SORT_COST + count * count / 2 / 2 ** key_bits * _PAIR_COST)
        if best is None or cost < best[0]:
            best = (cost, m, k)
        if keys > 20_000:  # past this, more sorts never pay
            break
    return best[1], best[2]


def _band_masks(m: int) -> list[int]:
    edges = [round(BITS * i / m) for i in range(m + 1)]
    return [((1 << (hi - lo)) - 1) << lo for lo, hi in zip(edges, edges[1:])]


def near_pairs(hashes: np.ndarray, threshold: int,
               threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs ``(i, j)``, ``i < j``, of ``hashes`` (uint64) at most ``threshold`` bits
    apart, each pair once. Equal hashes are pairs too. The band sets are searched on
    ``threads`` threads (default: one per core; numpy lets go of the GIL in its loops)."""
    hashes = np.ascontiguousarray(hashes, dtype=np.uint64)
    n = len(hashes)
    if n < 2:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    m, k = plan(n, threshold)
    masks = [np.uint64(sum(chosen)) for chosen in combinations(_band_masks(m), k)]
    with ThreadPoolExecutor(threads or os.cpu_count() or 1) as pool:
        found = [pair for pairs in pool.map(lambda mask: _pairs_sharing(hashes, mask, threshold),
                                            masks) for pair in pairs]
    if not found:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    i = np.concatenate([i for i, _ in found])
    j = np.concatenate([j for _, j in found])
    low, high = np.minimum(i, j).astype(np.int64), np.maximum(i, j).astype(np.int64)
    unique = np.unique(low * n + high)  # a pair found under several band sets, once
    return unique // n, unique % n


def _pairs_sharing(hashes: np.ndarray, mask: np.uint64,
                   threshold: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The pairs within ``threshold`` among hashes equal on ``mask``'s bits."""
    n = len(hashes)
    order = np.argsort(hashes & mask)
    ordered = hashes[order]  # one gather; candidates are then read in order
    keys = ordered & mask
    # Pairs (p, p + step) of the sorted keys with equal keys; a run of equal keys is
    # walked one step further each round while any run is still that long.
    active = np.flatnonzero(keys[:-1] == keys[1:])
    step, found = 1, []
    while active.size:
        hit = active[popcount(ordered[active] ^ ordered[active + step]) <= threshold]
        found.append((order[hit], order[hit + step]))
        step += 1
        active = active[active + step < n]
        active = active[keys[active] == keys[active + step]]
    return found


def group_labels(hashes: np.ndarray, threshold: int) -> np.ndarray:
    """A label per hash: hashes joined by a chain of pairs within ``threshold`` share one
    (single linkage), labels 0.. in order of first appearance."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    hashes = np.ascontiguousarray(hashes, dtype=np.uint64)
    values, inverse = np.unique(hashes, return_inverse=True)
    i, j = near_pairs(values, threshold)
    graph = coo_matrix((np.ones(len(i), np.int8), (i, j)), shape=(len(values), len(values)))
    _, labels = connected_components(graph, directed=False)
    labels = labels[inverse.ravel()]
    _, first, relabelled = np.unique(labels, return_index=True, return_inverse=True)
    # Renumber by first appearance so the labels do not depend on hash values' order.
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first)] = np.arange(len(first))
    return rank[relabelled.ravel()]
