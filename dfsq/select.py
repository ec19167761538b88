"""Per-channel selection of DFSQ quantization points from the universal set.

Data for one row (a layer's input channel) is a weighted 1-D distribution: sorted ``values`` (shared by all rows,
e.g. histogram bin centres over [-1, 1]) and per-row non-negative ``weights`` (counts). Every loss here is the
weighted mean squared error of nearest-point quantization, with ties going to the LOWER point (the rule of
contract 1: ``searchsorted(mid, x, side='left')``).

Fast selection (:func:`kmeans_select`, the paper's method): weighted 1-D k-means with ``2^b`` clusters for all rows
at once, using prefix sums over the sorted values, so one Lloyd step costs O(rows * K * log(bins)) whatever the
number of samples. Several restarts (quantile, min-max and seeded random-quantile initialisations); each restart's
centres are snapped to the nearest universal-set value (``WordSet.snap``) and the restart with the lowest
*quantization* loss after snapping is kept. An optional local search (``refine``) then moves single points to a
neighbouring universal value while that lowers the loss (an extension of the paper, on by default; see
docs/quantization.md). An optional fill (``fill``, off by default) gives the slots of points that snapped onto the
same universal value to unused values, greedily where they lower the loss most: at 6 and 8 bits a third of the
2^b points are such repeats. Deterministic for a seed.

Exhaustive selection (:func:`exhaustive_select`): every ``C(n, K)`` subset of the universal set, for the
exponential-versus-linear benchmark. Only usable at small sizes.
"""
from __future__ import annotations

import itertools
import math

import numpy as np

from golden.spec import WordSet

DEFAULT_RESTARTS = 4
DEFAULT_ITERS = 60


class Prefix:
    """Prefix sums of w, w*v, w*v^2 for rows of weights over shared sorted values (weights normalised per row)."""

    def __init__(self, values: np.ndarray, weights: np.ndarray):
        values = np.asarray(values, dtype=np.float64)
        weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
        if values.ndim != 1 or weights.shape[1] != values.size:
            raise ValueError("weights must be (rows, len(values))")
        if np.any(np.diff(values) < 0):
            raise ValueError("values must be sorted ascending")
        tot = weights.sum(1, keepdims=True)
        w = weights / np.where(tot > 0, tot, 1.0)
        z = np.zeros((w.shape[0], 1))
        self.values = values
        self.rows = w.shape[0]
        self.w0 = np.concatenate([z, np.cumsum(w, 1)], 1)
        self.w1 = np.concatenate([z, np.cumsum(w * values, 1)], 1)
        self.w2 = np.concatenate([z, np.cumsum(w * values * values, 1)], 1)
        d = np.diff(values)
        self.uniform = values.size > 1 and bool(np.all(d == d[0])) and d[0] > 0
        occupied = w > 0
        any_occ = occupied.any(1)
        self.vmin = np.where(any_occ, values[np.argmax(occupied, 1)], 0.0)
        self.vmax = np.where(any_occ, values[values.size - 1 - np.argmax(occupied[:, ::-1], 1)], 0.0)

    def count_le(self, t: np.ndarray) -> np.ndarray:
        """Number of values <= t (any shape): ``searchsorted(values, t, 'right')``, arithmetic for uniform values."""
        t = np.asarray(t, dtype=np.float64)
        v = self.values
        n = v.size
        if not self.uniform:
            return np.searchsorted(v, t, side="right")
        step = v[1] - v[0]
        k = np.clip(np.floor((t - v[0]) / step).astype(np.int64) + 1, 0, n)
        # exact fix-up of rounding: values[k-1] <= t < values[k]
        k = np.where((k > 0) & (v[np.maximum(k - 1, 0)] > t), k - 1, k)
        k = np.where((k < n) & (v[np.minimum(k, n - 1)] <= t), k + 1, k)
        return k

    def edges(self, centres: np.ndarray) -> np.ndarray:
        """(R, K+1) value-index edges of the nearest-centre cells (ties to the lower centre)."""
        c = np.asarray(centres, dtype=np.float64)
        mids = (c[:, :-1] + c[:, 1:]) / 2
        inner = self.count_le(mids)  # values <= mid go to the lower centre
        r = c.shape[0]
        return np.concatenate([np.zeros((r, 1), np.int64), inner, np.full((r, 1), self.values.size)], 1)

    def sums(self, e: np.ndarray, rows: np.ndarray | None = None):
        """Per-cell (S0, S1, S2) for edges e (R, K+1)."""
        rows = np.arange(e.shape[0])[:, None] if rows is None else rows
        out = []
        for p in (self.w0, self.w1, self.w2):
            a = p[rows, e]
            out.append(a[:, 1:] - a[:, :-1])
        return out

    def cut(self, a, b) -> np.ndarray:
        """Value index where the cell of point a ends and that of point b > a begins (ties go to a)."""
        return self.count_le((a + b) / 2)

    def span_loss(self, rows, lo, hi, c) -> np.ndarray:
        """Weighted squared error of the values with index in [lo, hi) of ``rows`` quantized to c."""
        s0, s1, s2 = (q[rows, hi] - q[rows, lo] for q in (self.w0, self.w1, self.w2))
        return s2 - 2 * c * s1 + c * c * s0

    def local_loss(self, rows, lo, hi, *points) -> np.ndarray:
        """Weighted squared error of the values with index in [lo, hi) of ``rows`` quantized to the nearest of
        ``points`` (ascending, elementwise): the loss of a region that only these points can serve."""
        start, total = lo, None
        for a, b in zip(points, points[1:]):
            end = np.clip(self.cut(a, b), start, hi)
            part = self.span_loss(rows, start, end, a)
            total, start = part if total is None else total + part, end
        last = self.span_loss(rows, start, hi, points[-1])
        return last if total is None else total + last

    def loss(self, centres: np.ndarray) -> np.ndarray:
        """(R,) weighted MSE of nearest-centre quantization."""
        c = np.asarray(centres, dtype=np.float64)
        s0, s1, s2 = self.sums(self.edges(c))
        return np.maximum((s2 - 2 * c * s1 + c * c * s0).sum(1), 0.0)


def _row_quantiles(prefix: Prefix, u: np.ndarray) -> np.ndarray:
    """Values at cumulative-weight fractions u (R, K), per row."""
    cdf = prefix.w0[:, 1:]
    r = cdf.shape[0]
    off = 2.0 * np.arange(r)[:, None]
    idx = np.searchsorted((cdf + off).ravel(), (u + off).ravel(), side="left").reshape(u.shape)
    idx = idx - (np.arange(r) * cdf.shape[1])[:, None]
    return prefix.values[np.clip(idx, 0, prefix.values.size - 1)]


def lloyd(prefix: Prefix, centres: np.ndarray, iters: int = DEFAULT_ITERS) -> np.ndarray:
    """Weighted 1-D k-means (Lloyd) from ``centres`` (R, K); empty cells keep their centre."""
    c = np.sort(np.asarray(centres, dtype=np.float64), 1)
    for _ in range(iters):
        s0, s1, _ = prefix.sums(prefix.edges(c))
        new = np.where(s0 > 0, s1 / np.where(s0 > 0, s0, 1.0), c)
        new = np.sort(new, 1)
        if np.array_equal(new, c):
            break
        c = new
    return c


def init_centres(prefix: Prefix, k: int, restart: int, rng: np.random.Generator) -> np.ndarray:
    """Initial centres of one restart: 0 = weight quantiles, 1 = evenly spaced over [min, max], 2.. = random."""
    r = prefix.rows
    if restart == 0:
        u = np.broadcast_to((np.arange(k) + 0.5) / k, (r, k))
        return _row_quantiles(prefix, np.ascontiguousarray(u))
    if restart == 1:
        t = np.linspace(0.0, 1.0, k)
        return prefix.vmin[:, None] + (prefix.vmax - prefix.vmin)[:, None] * t
    u = np.sort(rng.random((r, k)), 1)
    return _row_quantiles(prefix, u)


def _snap(c: np.ndarray, wordset: WordSet) -> np.ndarray:
    return np.sort(wordset.snap(c).reshape(c.shape), 1)


def refine_snapped(prefix: Prefix, p_int: np.ndarray, wordset: WordSet, passes: int = 4) -> np.ndarray:
    """Local search on snapped points: move points to a neighbouring universal value (order kept) where that
    strictly lowers the loss. Points j, j+3, j+6, ... move together (their loss regions do not interact).
    ``p_int`` (R, K) int64 sorted; returns the improved copy."""
    uni = wordset.ints
    denom = float(wordset.denom)
    p = np.array(p_int, dtype=np.int64)
    r, k = p.shape
    if k < 2:
        return p
    rows = np.arange(r)[:, None]
    BIG = 4 * wordset.denom  # sentinel points far outside [-1, 1]: their cells are empty

    for _ in range(passes):
        changed = False
        for start in range(3):
            for step in (-1, 1):
                j = np.arange(start, k, 3)
                pp = np.concatenate([np.full((r, 2), -BIG), p, np.full((r, 2), BIG)], 1) / denom
                left2, left, cur, right, right2 = (pp[:, j + o] for o in range(5))
                lo, hi = prefix.cut(left2, left), prefix.cut(right, right2)  # sentinels give 0 and nv at the ends

                def local(c):
                    return prefix.local_loss(rows, lo, hi, left, c, right)

                base = local(cur)
                pos = np.searchsorted(uni, p[:, j])
                cand = uni[np.clip(pos + step, 0, uni.size - 1)]
                ok = (cand != p[:, j]) & (cand >= pp[:, j + 1] * denom) & (cand <= pp[:, j + 3] * denom)
                if not ok.any():
                    continue
                better = ok & (local(cand / denom) < base - 1e-15)
                if better.any():
                    sub = p[:, j]
                    sub[better] = cand[better]
                    p[:, j] = sub
                    changed = True
        if not changed:
            break
    return p


def _worst_error(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Largest distance from a value in [-1, 1] between neighbouring points a < b to its nearest point; a below
    -2 (b above 2) stands for no point on that side."""
    return np.where(a < -2, np.where(b > 2, 2.0, b + 1.0), np.where(b > 2, 1.0 - a, (b - a) / 2))


def fill_repeats(prefix: Prefix, p_int: np.ndarray, wordset: WordSet) -> np.ndarray:
    """Replace repeated points (several k-means centres snapped to one universal value) by unused universal values.

    One value per step and row, for every row still short of distinct points: the unused value whose insertion
    lowers the row's weighted MSE the most (the first such value on a tie); where no insertion lowers it (no data
    left to serve, e.g. a constant channel), the one that most shortens the largest distance from a value of
    [-1, 1] in its gap to the nearest point, so the points spread over the range. ``p_int`` (R, K) int64 sorted
    on the universal set; returns the filled copy, sorted. A row keeps repeats only if the universal set has fewer
    than K values."""
    uni = np.asarray(wordset.ints, dtype=np.int64)
    p = np.asarray(p_int, dtype=np.int64)
    r, k = p.shape
    n = uni.size
    used = np.zeros((r, n), bool)
    used[np.arange(r)[:, None], np.searchsorted(uni, p)] = True
    need = np.minimum(k, n) - used.sum(1)
    if not need.any():
        return p.copy()
    big = 4.0  # sentinel neighbours far outside [-1, 1]: their cells are empty
    val = np.concatenate([[-big], uni / float(wordset.denom), [big]])  # val[i + 1] = value of universal index i
    idx = np.arange(n)
    while True:
        rows = np.nonzero(need > 0)[0]
        if rows.size == 0:
            break
        u = used[rows]
        prev = np.maximum.accumulate(np.where(u, idx, -1), 1)  # last used index <= j
        prev = np.concatenate([np.full((rows.size, 1), -1), prev[:, :-1]], 1)  # ... < j
        nxt = np.minimum.accumulate(np.where(u, idx, n)[:, ::-1], 1)[:, ::-1]  # first used index >= j
        nxt = np.concatenate([nxt[:, 1:], np.full((rows.size, 1), n)], 1)  # ... > j
        prev2 = np.where(prev >= 0, np.take_along_axis(prev, np.maximum(prev, 0), 1), -1)
        nxt2 = np.where(nxt < n, np.take_along_axis(nxt, np.minimum(nxt, n - 1), 1), n)
        a, b, aa, bb = (val[q + 1] for q in (prev, nxt, prev2, nxt2))
        c = np.broadcast_to(val[1:-1], a.shape)
        rr = rows[:, None]
        lo, hi = prefix.cut(aa, a), prefix.cut(b, bb)
        gain = prefix.local_loss(rr, lo, hi, a, b) - prefix.local_loss(rr, lo, hi, a, c, b)
        gain = np.where(u, -np.inf, gain)
        cover = _worst_error(a, b) - np.maximum(_worst_error(a, c), _worst_error(c, b))
        cover = np.where(u, -np.inf, cover)
        pick = np.where(gain.max(1) > 1e-15, np.argmax(gain, 1), np.argmax(cover, 1))
        used[rows, pick] = True
        need[rows] -= 1
    out = np.empty_like(p)
    for i in range(r):
        s = uni[used[i]]
        out[i] = s if s.size == k else np.sort(np.concatenate([s, p[i][: k - s.size]]))
    return out


def kmeans_select(values: np.ndarray, weights: np.ndarray, act_bits: int, wordset: WordSet, *,
                  seed: int = 0, restarts: int = DEFAULT_RESTARTS, iters: int = DEFAULT_ITERS,
                  refine: bool = True, fill: bool = False) -> dict:
    """Fast selection for every row of ``weights`` (R, len(values)).

    Returns ``point_ints`` (R, 2^b) int64 ascending universal-set integers, ``loss`` (R,) weighted MSE after
    snapping (and fill, and refinement), ``kmeans_loss`` (R,) of the unsnapped centres of the kept restart, ``restart``
    (R,) index of the kept restart.
    """
    if restarts < 1:
        raise ValueError("restarts must be >= 1")
    k = 1 << act_bits
    prefix = Prefix(values, weights)
    rng = np.random.default_rng(seed)
    best_p = best_loss = best_km = best_r = None
    for rs in range(restarts):
        c = lloyd(prefix, init_centres(prefix, k, rs, rng), iters)
        p = _snap(c, wordset)
        loss = prefix.loss(p / wordset.denom)
        km = prefix.loss(c)
        if best_p is None:
            best_p, best_loss, best_km, best_r = p, loss, km, np.zeros(prefix.rows, np.int64)
        else:
            take = loss < best_loss
            best_p = np.where(take[:, None], p, best_p)
            best_loss = np.where(take, loss, best_loss)
            best_km = np.where(take, km, best_km)
            best_r = np.where(take, rs, best_r)
    if fill:
        best_p = fill_repeats(prefix, best_p, wordset)
    if refine:
        best_p = refine_snapped(prefix, best_p, wordset)
    if fill or refine:
        best_loss = prefix.loss(best_p / wordset.denom)
    return {"point_ints": best_p, "loss": best_loss, "kmeans_loss": best_km, "restart": best_r}


def exhaustive_select(values: np.ndarray, weights: np.ndarray, act_bits: int, wordset: WordSet, *,
                      candidates: np.ndarray | None = None, batch: int = 200_000,
                      max_subsets: int = 50_000_000) -> dict:
    """Optimal subset of ``candidates`` (default: the whole universal set) for ONE row, by enumerating all
    ``C(n, 2^b)`` subsets. Exponential: refuses more than ``max_subsets`` subsets.

    Returns ``point_ints`` (2^b,), ``loss`` and ``subsets`` (how many were evaluated).
    """
    k = 1 << act_bits
    cand = np.unique(np.asarray(wordset.ints if candidates is None else candidates, dtype=np.int64))
    n = cand.size
    if n < k:
        raise ValueError(f"{n} candidates cannot fill {k} distinct points")
    total = math.comb(n, k)
    if total > max_subsets:
        raise ValueError(f"C({n}, {k}) = {total} subsets exceeds max_subsets={max_subsets}")
    prefix = Prefix(values, np.atleast_2d(weights)[:1])
    denom = float(wordset.denom)
    best_loss, best = np.inf, None
    combos = itertools.combinations(range(n), k)
    while True:
        chunk = np.fromiter(itertools.chain.from_iterable(itertools.islice(combos, batch)), dtype=np.int64)
        if chunk.size == 0:
            break
        idx = chunk.reshape(-1, k)
        c = cand[idx] / denom
        e = np.concatenate([np.zeros((len(c), 1), np.int64),
                            np.searchsorted(prefix.values, (c[:, :-1] + c[:, 1:]) / 2, side="right"),
                            np.full((len(c), 1), prefix.values.size)], 1)
        s0, s1, s2 = (q[0, e][:, 1:] - q[0, e][:, :-1] for q in (prefix.w0, prefix.w1, prefix.w2))
        loss = (s2 - 2 * c * s1 + c * c * s0).sum(1)
        i = int(np.argmin(loss))
        if loss[i] < best_loss:
            best_loss, best = float(loss[i]), cand[idx[i]].copy()
    return {"point_ints": best, "loss": max(best_loss, 0.0), "subsets": total}


def histogram_values(bins: int, lo: float = -1.0, hi: float = 1.0) -> np.ndarray:
    """Bin centres of ``bins`` equal bins over [lo, hi]."""
    return lo + (np.arange(bins) + 0.5) * ((hi - lo) / bins)
