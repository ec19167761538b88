"""Contract 2 (golden.int_spec, golden.int_layer): integer statistics, thresholds, codes, fixed point, post unit.

Every function is checked against a slower reference in Python integers or exact rationals, at the extremes of its
format, and against contract 1 where both apply."""
from fractions import Fraction

import numpy as np
import pytest

from golden.errors import UserError
from golden.int_layer import (channel_stats, codes_from_thresholds, div_round_half_up, fixed_point_int,
                              float32_parts, largest_shift, mean_range, nearest_codes, post, post_multiplier,
                              post_shift, requantize, scaled_round, static_requantize, thresholds)
from golden.int_spec import FmapFormat, IntSpec, fmap_frac_for
from golden.spec import DatapathSpec, SpecError, WordSet

RNG = np.random.default_rng(0)


def _ispec(bits=16, frac=6, **kw):
    return IntSpec(datapath=DatapathSpec(**kw), fmap=FmapFormat(bits, frac))


# --- helpers ---------------------------------------------------------------------------------------------------------
def test_rounding_helpers_are_exact():
    for num in range(-50, 51):
        for den in (1, 2, 3, 7, 8):
            assert div_round_half_up(num, den) == int(np.floor(Fraction(num, den) + Fraction(1, 2)))
            for k in (-3, 0, 4):
                want = int(np.floor(Fraction(num) * Fraction(2) ** k / den + Fraction(1, 2)))
                assert scaled_round(num, k, den) == want
                assert scaled_round(np.array([num]), k, den)[0] == want
    for a in (1, 3, 1000, 2 ** 40 + 1):
        for b in (1, 5, 2 ** 33, 2 ** 50 - 1):
            k = largest_shift(a, b)
            assert Fraction(a) * Fraction(2) ** k <= b < Fraction(a) * Fraction(2) ** (k + 1)
            k = largest_shift(a, b, strict=True)
            assert Fraction(a) * Fraction(2) ** k < b <= Fraction(a) * Fraction(2) ** (k + 1)
    m, e = float32_parts(np.array([0.0, 1.5, -3e-8, 2.0 ** -140, np.float32(0.1)], np.float32))
    for v, mi, ei in zip([0.0, 1.5, -3e-8, 2.0 ** -140, 0.1], m, e):
        assert Fraction(mi) * Fraction(2) ** ei == Fraction(float(np.float32(v)))
        assert abs(mi) < 2 ** 24


# --- feature-map format ----------------------------------------------------------------------------------------------
def test_fmap_format_rounds_half_up_and_saturates():
    f = FmapFormat(8, 2)
    assert f.x_max == 127 and f.max_value == 31.75 and f.dtype == np.int16
    v = np.array([0.125, -0.125, 0.375, -0.375, 31.75, 31.9, -31.9, 1e9, -1e9, 31.87], np.float32)
    x, n = f.to_fixed(v)
    assert x.tolist() == [1, 0, 2, -1, 127, 127, -127, 127, -127, 127]
    assert n == 4   # 31.9 (127.6 rounds to 128), -31.9, 1e9, -1e9; 31.87 (127.48) rounds to 127: in range
    assert np.array_equal(f.to_float(x), np.ldexp(x.astype(np.float64), -2).astype(np.float32))
    with pytest.raises(SpecError, match="NaN"):
        f.to_fixed(np.array([np.nan], np.float32))
    y, n = f.saturate(np.array([200, -200, 5], np.int64))
    assert y.tolist() == [127, -127, 5] and n == 2 and y.dtype == np.int16
    with pytest.raises(SpecError):
        FmapFormat(16, 16)
    assert FmapFormat(24, 8).dtype == np.int32


def test_fmap_frac_for():
    assert fmap_frac_for(277.0, 16) == 5           # 554 * 32 <= 32767 < 554 * 64
    assert fmap_frac_for(242.0, 16) == 6
    assert fmap_frac_for(0.0, 16) == 15
    assert fmap_frac_for(16383.0, 16) == 0
    with pytest.raises(SpecError, match="too narrow"):
        fmap_frac_for(1000.0, 8)
    with pytest.raises(SpecError):
        fmap_frac_for(1.0, 7)


# --- statistics ------------------------------------------------------------------------------------------------------
def test_mean_is_rounded_half_up_and_M_covers_the_map():
    X = np.array([[[[1, 2]], [[-1, -2]], [[3, 3]], [[-3, 4]]]], np.int16)   # sums 3, -3, 6, 1 over 2 pixels
    S, lo, hi = channel_stats(X)
    mu, M = mean_range(S, lo, hi, 2, relu_input=False)
    assert mu.tolist() == [[2, -1, 3, 1]]        # 1.5 -> 2, -1.5 -> -1, 3, 0.5 -> 1
    assert M.tolist() == [[1, 1, 0, 4]]
    mu, M = mean_range(S, lo, hi, 2, relu_input=True)
    assert mu.tolist() == [[0, 0, 0, 0]] and M.tolist() == [[2, 2, 3, 4]]
    # extremes: every pixel at +-x_max, the largest map
    isp = _ispec(16, 6)
    S = np.array([[isp.max_pixels * isp.x_max, -isp.max_pixels * isp.x_max]], np.int64)
    mu, M = mean_range(S, np.array([[isp.x_max, -isp.x_max]]), np.array([[isp.x_max, -isp.x_max]]),
                       isp.max_pixels, False)
    assert mu.tolist() == [[isp.x_max, -isp.x_max]] and M.tolist() == [[0, 0]]
    assert int(S.max()).bit_length() + 1 <= isp.sum_bits
    mu, M = mean_range([[0]], [[-isp.x_max]], [[isp.x_max]], 2, False)
    assert M[0, 0] == isp.x_max and mean_range([[isp.x_max]], [[-isp.x_max]], [[isp.x_max]], 1, True)[1] == isp.x_max
    assert isp.m_max == 2 * isp.x_max and isp.m_bits == 16


# --- thresholds and codes ------------------------------------------------------------------------------------------
def _points(C, bits=4, words=4, relu=False, seed=0):
    ws = WordSet(words)
    rng = np.random.default_rng(seed)
    vals = ws.ints[ws.ints >= 0] if relu else ws.ints
    return np.sort(rng.choice(vals, (C, 1 << bits)), axis=1)


def _exact_codes(X, mu, M, p, denom):
    """#{k : (X - mu) / M > mid_k} with exact rationals (M = 0: #{k : 0 > mid_k}... but then every point is mu)."""
    out = np.zeros(X.shape, np.int64)
    for idx in np.ndindex(*X.shape):
        n, c = idx[:2]
        mids = [Fraction(int(p[c, k]) + int(p[c, k + 1]), 2 * denom) for k in range(p.shape[1] - 1)]
        x = Fraction(int(X[idx]) - int(mu[n, c]))
        out[idx] = sum(x > mid * int(M[n, c]) for mid in mids)
    return out


@pytest.mark.parametrize("words,bits", [(4, 4), (3, 3), (5, 2), (2, 4)])
def test_threshold_codes_are_the_nearest_point(words, bits):
    """codes = #{k : X > T_k} = the nearest point (ties to the lower one) = #{k : (X - mu)/M > mid_k} exactly."""
    isp = _ispec(10, 3, words=words, act_bits=bits)
    ws = isp.datapath.wordset
    C = 6
    p = _points(C, bits, words, seed=words)
    # small M so that many X sit exactly on a midpoint (ties), plus random and extreme ones
    X = RNG.integers(-isp.x_max, isp.x_max + 1, (2, C, 5, 7)).astype(np.int16)
    X[0, :, 0, :] = np.arange(-3, 4)
    S, lo, hi = channel_stats(X)
    mu, M = mean_range(S, lo, hi, 35, False)
    M[0, :3] = [1, 2, 4]       # M small: more exact ties (thresholds still computed from these statistics)
    T = thresholds(mu, M, p, isp)
    assert T.dtype == np.int16 and np.all(np.diff(T.astype(int), axis=2) >= 0)
    codes = codes_from_thresholds(X, T)
    assert np.array_equal(codes, _exact_codes(X, mu, M, p, ws.denom))
    # the nearest point's value (repeated points: the index may be another copy of the same value)
    near = nearest_codes(X, mu, M, p, ws.denom)
    pick = lambda cd: np.take_along_axis(p[None, :, None, :].repeat(2, 0), cd.reshape(2, C, -1, 1).astype(int),  # noqa
                                         axis=3)
    assert np.array_equal(pick(codes), pick(near))


def test_threshold_clamp_changes_no_comparison_at_the_extremes():
    isp = _ispec(8, 0)
    p = np.array([[-1024, -1024, 0, 1024]] * 2)
    X = np.array([[[[-127, 127, 0, 1]], [[-127, 127, -1, 1]]]], np.int16)
    mu = np.array([[127, -127]])
    M = np.array([[254, 254]])   # unclamped thresholds reach mu - M - ... = -127 - 254 and 127 + 254
    T = thresholds(mu, M, p, isp)
    assert T.min() >= isp.thr_lo and T.max() <= isp.thr_hi
    raw = mu[:, :, None] + (M[:, :, None] * (p[:, :-1] + p[:, 1:])[None]) // isp.thr_divisor
    assert raw.min() < isp.thr_lo and raw.max() > isp.thr_hi
    want = (X[:, :, :, :, None] > raw[:, :, None, None, :]).sum(-1)
    assert np.array_equal(codes_from_thresholds(X, T), want)


def test_codes_equal_contract_1_on_exactly_representable_inputs():
    """With float inputs on the fixed-point grid and no eps, contract 1's float32 codes equal the integer ones
    wherever float32 rounding cannot move xn across a midpoint (checked with exact rationals)."""
    from golden.layer import derive_codes

    isp = _ispec(12, 4)
    p = _points(4, 4, seed=3)
    X = RNG.integers(-400, 400, (1, 4, 8, 8)).astype(np.int16)
    S, lo, hi = channel_stats(X)
    mu, M = mean_range(S, lo, hi, 64, False)
    codes = codes_from_thresholds(X, thresholds(mu, M, p, isp))
    ws = isp.datapath.wordset
    c1 = derive_codes(np.ldexp(X, -4).astype(np.float32), np.ldexp(mu, -4).astype(np.float32),
                      np.ldexp(M, -4).astype(np.float32), (p / ws.denom).astype(np.float32))
    # float32 is exact here except for the division (x - mu) / M: allow differences only where xn is within one
    # float32 ulp of a midpoint
    mids = (p[:, :-1] + p[:, 1:]) / (2 * ws.denom)
    xn = (X - mu[:, :, None, None]) / M[:, :, None, None]
    near = np.min(np.abs(xn[..., None] - mids[None, :, None, None, :]), axis=-1) <= 2.0 ** -22
    assert np.array_equal(codes[~near], c1[~near])


def test_bad_point_table_is_refused():
    isp = _ispec()
    with pytest.raises(UserError, match="not ascending"):
        thresholds(np.zeros((1, 2), int), np.ones((1, 2), int), np.array([[0, 1, 2, 3], [0, 2, 1, 3]]), isp)


# --- fixed point from integer statistics -------------------------------------------------------------------------
@pytest.mark.parametrize("kw", [{}, dict(denorm="split"), dict(denorm="split", sigma_bits=4, shift_bits=3),
                                dict(scale_bits=16), dict(words=3)])
def test_fixed_point_int_equals_contract_1_on_exact_values(kw):
    """On the exact values scale = M 2^-F, mean = mu 2^-F (no eps, zero bias), contract 1's float64 rules give the
    same sigma_m, mu_m and E (every step there is exact for these inputs, or rounds the same way)."""
    spec = DatapathSpec(**kw)
    F = 5
    for trial in range(30):
        rng = np.random.default_rng(trial)
        C = 8
        M = rng.integers(0, 2 ** 16, C) >> rng.integers(0, 16, C)
        mu = rng.integers(-2 ** 15, 2 ** 15, C) >> rng.integers(0, 16, C)
        if trial == 0:
            M[:] = 0
            mu[:] = 0
        zero = np.zeros(4, np.float32)
        ws = np.full(4, 0.01, np.float32)
        sig, mum, E, bi, s, d = fixed_point_int(M, mu, F, zero, ws, spec)
        if trial == 0:
            assert E == 0 and not sig.any() and not mum.any()
            continue
        scale, mean = np.ldexp(M.astype(np.float64), -F), np.ldexp(mu.astype(np.float64), -F)
        if spec.split:
            s1, d1, mu1, e1 = spec.split_fixed_point(scale, mean)
            sig1 = s1 << d1
            assert np.array_equal(s, s1) and np.array_equal(d, d1)
        else:
            sig1, mu1, e1 = spec.fixed_point(scale, mean)
        assert E == e1 and np.array_equal(sig, sig1) and np.array_equal(mum, mu1)
        assert np.abs(sig).max() <= spec.sigma_m_max and np.abs(mum).max() <= spec.mant_max
        assert not bi.any()


def test_fixed_point_int_bias_cap_and_exact_bias():
    spec = DatapathSpec()
    bias = np.array([3.5, -1e-3, 0.0], np.float32)
    ws = np.array([0.02, 0.03, 0.01], np.float32)
    M = np.zeros(4, np.int64)
    mu = np.zeros(4, np.int64)
    sig, mum, E, bi, _, _ = fixed_point_int(M, mu, 6, bias, ws, spec)   # degenerate map: the bias sets E
    assert np.abs(bi).max() <= spec.bias_max and np.abs(bi).max() > spec.bias_max // 2
    for b, w, v in zip(bias, ws, bi):
        want = Fraction(float(b)) / Fraction(float(w)) * Fraction(2) ** E
        assert v == int(np.floor(want + Fraction(1, 2)))


# --- post unit -----------------------------------------------------------------------------------------------------
def _requant_ref(acc, mult, sh):
    """Python integers; results beyond 2^62 are clamped there (requantize's documented range)."""
    return [max(-(1 << 62), min(1 << 62, (int(a) * int(m) + (1 << (int(s) - 1))) >> int(s)))
            for a, m, s in zip(acc, mult, sh)]


def test_requantize_is_exact_at_the_extremes():
    isp = _ispec(16, 5)
    amax = isp.datapath.acc_max
    acc = np.concatenate([np.array([amax, -amax, 0, 1, -1, amax - 1, -(1 << 40)]),
                          RNG.integers(-amax, amax + 1, 500), RNG.integers(-2 ** 30, 2 ** 30, 500)])
    for mult in (1, (1 << 24) - 1, 1 << 23, 12345677):
        for sh in (1, 2, 15, 16, 17, 24, 40, 47, 60, isp.post_shift_max, isp.post_shift_max + 20):
            got = requantize(acc, mult, sh)
            assert got.tolist() == _requant_ref(acc, [mult] * len(acc), [sh] * len(acc)), (mult, sh)
    # per output channel / per (sample, output channel) broadcasting of a 4-D acc
    a4 = RNG.integers(-2 ** 45, 2 ** 45, (2, 3, 4, 5))
    m = np.array([1 << 23, (1 << 24) - 1, 9999991])
    s = np.array([[40, 41, 42], [50, 30, 20]])
    got = requantize(a4, m, s)
    for n in range(2):
        for o in range(3):
            assert got[n, o].ravel().tolist() == _requant_ref(a4[n, o].ravel(), [m[o]] * 20, [s[n, o]] * 20)
    assert isp.post_product_bits == isp.datapath.acc_bits + 24


def test_post_multiplier_is_the_float32_significand():
    ws = np.array([0.0123, 1.0, 3e-7, np.float32(2.0 ** -126)], np.float32)
    mult, r = post_multiplier(ws)
    for w, m, rr in zip(ws, mult, r):
        assert (1 << 23) <= m < (1 << 24) and Fraction(int(m)) / Fraction(2) ** int(rr) == Fraction(float(w))
    mult, r = post_multiplier(ws[:1], 0.1)
    want = Fraction(float(ws[0])) * Fraction(float(np.float32(0.1)))
    assert abs(Fraction(int(mult[0])) / Fraction(2) ** int(r[0]) - want) <= Fraction(1, 2 ** (24 + 7 + 1)) * 4
    with pytest.raises(SpecError):
        post_multiplier(np.array([0.0], np.float32))


def test_post_relu_saturation_and_residual():
    isp = _ispec(8, 2)
    E = np.array([10])
    mult, r = np.array([1 << 23]), np.array([23])          # s_w = 1: Y = round(acc 2^(F - E)) = round(acc / 256)
    acc = np.array([[[[256 * 5, -256 * 5, 128, -128, 256 * 200, -256 * 200]]]])
    assert post_shift(E, r, 2, isp).tolist() == [[31]]
    res = post(acc * (1 << 23) // (1 << 23), E, mult, r, 2, isp)
    assert res.y.ravel().tolist() == [5, -5, 1, 0, 127, -127] and res.saturated == 2
    res = post(acc, E, mult, r, 2, isp, relu=True)
    assert res.y.ravel().tolist() == [5, 0, 1, 0, 127, 0] and res.saturated == 1
    skip = np.array([[[[120, -120, -127, 127, -100, 100]]]], np.int16)
    res = post(acc, E, mult, r, 2, isp, skip=skip)
    assert res.y.ravel().tolist() == [125, -125, -126, 127, 27, -27] and res.saturated == 2
    res = post(acc, E, mult, r, 2, isp, relu=True, skip=np.full((1, 1, 1, 6), 127, np.int16))
    assert res.y.ravel().tolist() == [127, 127, 127, 127, 127, 127] and res.saturated == 4   # 200, then 132, 128, 254
    with pytest.raises(SpecError, match="shifts right only"):
        post(acc, np.array([-40]), mult, r, 2, isp)


def test_static_requantize():
    acc = np.array([[[[0, 256, -256, 100000]]]])
    q = static_requantize(acc, np.array([1 << 23]), np.array([[31]]), 3, 4)
    assert q.ravel().tolist() == [3, 4, 2, 15]
