"""Universal set (as DFSQ defines it) and point selection: k-means + snap, restarts, refinement, fill of repeated
points, exhaustive search."""
from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np
import pytest

from golden.spec import WordSet
from dfsq.select import Prefix, exhaustive_select, fill_repeats, histogram_values, kmeans_select, lloyd


def official_universal_set(words: int, gap: int = 4) -> list[Fraction]:
    """The word-set construction of the official DFSQ code, generalised to N words, in exact fractions."""
    word_sets = [[Fraction(1), Fraction(1, 2 ** i), Fraction(1, 2 ** (i + gap)), Fraction(0)]
                 for i in range(1, words + 1)]
    vals = {sum(c) / words for c in itertools.product(*word_sets)}
    return sorted(vals | {-v for v in vals})


def test_default_universal_set_is_377_multiples_of_2_pow_minus_10():
    ws = WordSet()
    ref = official_universal_set(4)
    assert len(ref) == 377 == len(ws)
    assert all((v * 1024).denominator == 1 for v in ref)
    assert [Fraction(int(p), ws.denom) for p in ws.ints] == ref
    assert np.array_equal(ws.values * 1024, np.rint(ws.values * 1024))


@pytest.mark.parametrize("words,size", [(2, 29), (3, 107), (4, 377), (5, 1065)])
def test_words_2_to_5(words, size):
    ws = WordSet(words)
    assert [Fraction(int(p), ws.denom) for p in ws.ints] == official_universal_set(words)
    assert len(ws) == size
    rng = np.random.default_rng(words)
    v = histogram_values(512)
    w = rng.integers(0, 50, (3, 512))
    r = kmeans_select(v, w, 3, ws, seed=1)
    assert r["point_ints"].shape == (3, 8)
    assert np.all(np.isin(r["point_ints"], ws.ints))
    assert np.all(np.diff(r["point_ints"], axis=1) >= 0)


def brute_loss(samples: np.ndarray, points: np.ndarray) -> float:
    """Nearest point, ties to the LOWER point (searchsorted side='left' on the midpoints), mean squared error."""
    mid = (points[:-1] + points[1:]) / 2
    q = points[np.searchsorted(mid, samples, side="left")]
    return float(np.mean((samples - q) ** 2))


def test_prefix_loss_matches_brute_force_including_ties():
    points = np.array([-0.5, 0.0, 0.25, 1.0])
    v = np.array([-1.0, -0.25, -0.1, 0.125, 0.2, 0.625, 0.9])  # -0.25, 0.125, 0.625 sit exactly on midpoints
    w = np.array([1, 3, 2, 5, 1, 4, 2])
    samples = np.repeat(v, w)
    assert Prefix(v, w).loss(points[None])[0] == pytest.approx(brute_loss(samples, points), rel=1e-12)
    # ties: a midpoint value goes to the lower point, so moving the upper point must not change its error
    e = Prefix(v, w).edges(points[None])[0]
    assert list(e) == [0, 2, 4, 6, 7]  # cells: {-1,-0.25} {-0.1,0.125} {0.2,0.625} {0.9}


def test_lloyd_finds_separated_clusters():
    v = histogram_values(2000)
    w = np.zeros((1, 2000))
    for c in (-0.6, 0.1, 0.7):
        w[0, np.argmin(np.abs(v - c))] = 100
    c = lloyd(Prefix(v, w), np.array([[-0.9, 0.0, 0.9]]))
    assert np.allclose(c, [[-0.6, 0.1, 0.7]], atol=1e-3)


def _data(rows=6, n=4000, seed=0):
    rng = np.random.default_rng(seed)
    v = histogram_values(1024)
    w = np.zeros((rows, v.size))
    for r in range(rows):
        x = rng.laplace(0, 0.05 + 0.05 * r, n) + (0.2 if r % 2 else 0)
        x = x / np.abs(x).max()
        w[r] = np.bincount(np.clip(((x + 1) * 512).astype(int), 0, 1023), minlength=1024)
    return v, w


def test_kmeans_select_deterministic_and_seeded():
    v, w = _data()
    ws = WordSet()
    a = kmeans_select(v, w, 4, ws, seed=3)
    b = kmeans_select(v, w, 4, ws, seed=3)
    for k in a:
        assert np.array_equal(a[k], b[k])
    c = kmeans_select(v, w, 4, ws, seed=4, refine=False)
    assert np.all(np.isin(c["point_ints"], ws.ints))


def test_restarts_keep_lowest_snapped_loss():
    v, w = _data(seed=5)
    ws = WordSet()
    best = kmeans_select(v, w, 3, ws, seed=7, restarts=4, refine=False)
    prefix = Prefix(v, w)
    rng = np.random.default_rng(7)
    from dfsq.select import init_centres

    losses, centres = [], []
    for r in range(4):
        c = lloyd(prefix, init_centres(prefix, 8, r, rng))
        centres.append(c)
        p = np.sort(ws.snap(c).reshape(c.shape), 1)
        losses.append(prefix.loss(p / ws.denom))
    assert np.allclose(best["loss"], np.min(losses, 0), rtol=0, atol=1e-15)
    assert np.array_equal(best["restart"], np.argmin(losses, 0))
    km = np.array([prefix.loss(c) for c in centres])
    assert np.allclose(best["kmeans_loss"], km[best["restart"], np.arange(len(best["restart"]))], rtol=0, atol=1e-15)


def test_refine_never_increases_loss():
    v, w = _data(seed=9)
    ws = WordSet(3)
    plain = kmeans_select(v, w, 4, ws, seed=0, refine=False)
    ref = kmeans_select(v, w, 4, ws, seed=0, refine=True)
    assert np.all(ref["loss"] <= plain["loss"] + 1e-15)
    assert np.all(np.diff(ref["point_ints"], axis=1) >= 0)


def test_exhaustive_is_optimal_and_no_worse_than_kmeans():
    v, w = _data(rows=1, seed=2)
    ws = WordSet(2)
    ex = exhaustive_select(v, w[0], 1, ws)  # C(29, 2) subsets
    assert ex["subsets"] == 406
    samples = np.repeat(v, w[0].astype(int))
    brute = min(brute_loss(samples, np.array(s) / ws.denom) for s in itertools.combinations(ws.ints, 2))
    assert ex["loss"] == pytest.approx(brute, rel=1e-9)
    km = kmeans_select(v, w, 1, ws)
    assert ex["loss"] <= km["loss"][0] + 1e-15
    ex4 = exhaustive_select(v, w[0], 2, ws)
    assert ex4["loss"] <= kmeans_select(v, w, 2, ws)["loss"][0] + 1e-15
    with pytest.raises(ValueError, match="exceeds"):
        exhaustive_select(v, w[0], 4, WordSet(4))


def _fill_reference(prefix: Prefix, p_int: np.ndarray, ws: WordSet) -> np.ndarray:
    """fill_repeats spelled out: row by row, one value at a time, the full loss recomputed for every candidate."""
    out = []
    for r in range(p_int.shape[0]):
        sub = Prefix(prefix.values, (prefix.w0[r, 1:] - prefix.w0[r, :-1])[None])
        s = np.unique(p_int[r])
        while s.size < min(p_int.shape[1], len(ws)):
            cand = np.setdiff1d(ws.ints, s)
            base = sub.loss(s[None] / ws.denom)[0]
            gain = np.array([base - sub.loss(np.sort(np.append(s, c))[None] / ws.denom)[0] for c in cand])
            if gain.max() > 1e-15:
                c = cand[np.argmax(gain)]
            else:  # nothing to gain: the value that most lowers the largest distance to a point in its gap
                def worst(lo, hi):  # within [-1, 1], between points lo < hi (None: no point on that side)
                    if lo is None:
                        return 2.0 if hi is None else hi + 1
                    return 1 - lo if hi is None else (hi - lo) / 2

                def shrink(u):
                    lo = max((x for x in s / ws.denom if x < u), default=None)
                    hi = min((x for x in s / ws.denom if x > u), default=None)
                    return worst(lo, hi) - max(worst(lo, u), worst(u, hi))

                c = cand[np.argmax([shrink(c / ws.denom) for c in cand])]
            s = np.sort(np.append(s, c))
        out.append(s if s.size == p_int.shape[1] else np.sort(np.concatenate([s, p_int[r][: p_int.shape[1] - s.size]])))
    return np.array(out)


@pytest.mark.parametrize("bits", [3, 6])
def test_fill_repeats_matches_reference(bits):
    v, w = _data(rows=5, seed=11)
    w[3] = 0  # an empty row: points spread over [-1, 1]
    w[4] = 0
    w[4, 700] = 5  # a constant channel
    ws = WordSet(3)  # 107 values: the reference is slow
    prefix = Prefix(v, w)
    p = kmeans_select(v, w, bits, ws, seed=1, refine=False)["point_ints"]
    assert (np.diff(p, axis=1) == 0).any()  # there are repeats to fill
    got = fill_repeats(prefix, p, ws)
    assert np.array_equal(got, _fill_reference(prefix, p, ws))
    assert all(np.unique(r).size == r.size for r in got) and np.all(np.isin(got, ws.ints))
    assert np.all(prefix.loss(got / ws.denom) <= prefix.loss(p / ws.denom) + 1e-18)
    done = np.array([np.unique(r).size == r.size for r in p])
    assert np.array_equal(got[done], p[done])  # rows without repeats are left alone
    if bits == 6:
        assert got[3, 0] == -ws.denom and got[3, -1] == ws.denom  # the empty row covers the whole range
        assert np.diff(got[3]).max() <= 2 * np.diff(ws.ints).max()


def test_fill_keeps_repeats_only_when_the_universal_set_is_too_small():
    v, w = _data(rows=2, seed=3)
    ws = WordSet(2)  # 29 values < 64 points
    p = kmeans_select(v, w, 6, ws, seed=0, refine=False)["point_ints"]
    got = fill_repeats(Prefix(v, w), p, ws)
    for r in got:
        assert np.array_equal(np.unique(r), ws.ints) and np.all(np.diff(r) >= 0)


def test_kmeans_select_fill_option():
    v, w = _data(seed=13)
    ws = WordSet()
    plain = kmeans_select(v, w, 8, ws, seed=0)
    filled = kmeans_select(v, w, 8, ws, seed=0, fill=True)
    assert all(np.unique(r).size < 256 for r in plain["point_ints"])  # 8 bits: k-means centres share values
    assert all(np.unique(r).size == 256 for r in filled["point_ints"])
    assert np.all(filled["loss"] < plain["loss"])
    assert np.array_equal(filled["loss"], Prefix(v, w).loss(filled["point_ints"] / ws.denom))
    small = kmeans_select(v, w, 2, ws, seed=0)
    assert all(np.array_equal(small[k], kmeans_select(v, w, 2, ws, seed=0, fill=True)[k]) for k in small)
