"""golden/spec.py: universal set, codes, widths derived from bounds, fixed-point format."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from golden.spec import (SCALE_BITS_RANGE, SEL_FAR, SEL_NEAR, SEL_ONE, WORDS_RANGE, DatapathSpec, SpecError,
                         WordSet, round_half_up, signed_bits)

ALL_WORDS = range(WORDS_RANGE[0], WORDS_RANGE[1] + 1)


def brute_force_values(words, gap=4):
    """The universal set from its definition (fractions, no integers): mean of one element per word, +-."""
    from fractions import Fraction
    from itertools import product
    elems = [[Fraction(1), Fraction(1, 2 ** i), Fraction(1, 2 ** (i + gap)), Fraction(0)] for i in range(1, words + 1)]
    vals = {sum(c) / words for c in product(*elems)}
    return sorted(vals | {-v for v in vals})


@pytest.mark.parametrize("words,size", [(3, 107), (4, 377)])
def test_universal_set_sizes(words, size):
    assert len(WordSet(words)) == size


@pytest.mark.parametrize("words", ALL_WORDS)
def test_universal_set_matches_definition(words):
    ws = WordSet(words)
    ref = brute_force_values(words)
    assert [p / ws.denom for p in ws.ints.tolist()] == [float(v) for v in ref]
    from fractions import Fraction
    assert all(Fraction(int(p), ws.denom) == v for p, v in zip(ws.ints, ref))


def test_default_set_is_multiples_of_2_pow_minus_10():
    ws = WordSet()
    assert ws.K == 8 and ws.denom == 1024
    v = ws.values
    assert np.array_equal(v * 1024, np.round(v * 1024)) and v.min() == -1 and v.max() == 1


@pytest.mark.parametrize("words", ALL_WORDS)
def test_codes_round_trip_and_layout(words):
    ws = WordSet(words)
    codes = ws.int_to_code(ws.ints)
    assert codes.dtype == np.uint16
    assert np.array_equal(ws.code_to_int(codes), ws.ints)
    assert len(set(codes.tolist())) == len(ws)  # one code per value
    assert int(ws.int_to_code(0)) == 0
    neg = ws.ints < 0
    assert np.all((codes[neg] >> ws.sign_bit) & 1) and not np.any((codes[~neg] >> ws.sign_bit) & 1)
    # every code decodes to a member of the set (non-canonical codes included)
    all_codes = np.arange(1 << ws.code_bits)
    assert np.isin(ws.code_to_int(all_codes), ws.ints).all()


def test_code_is_the_smallest_among_equal_values():
    ws = WordSet(4)
    all_codes = np.arange(1 << ws.code_bits)
    p = ws.code_to_int(all_codes)
    for v in ws.ints[:: 17]:
        assert int(ws.int_to_code(v)) == int(all_codes[p == v].min())


def test_selector_shifts_default():
    ws = WordSet(4)
    assert ws.shift_table == ((8, 7, 3), (8, 6, 2), (8, 5, 1), (8, 4, 0))
    assert ws.shift(2, SEL_ONE) == 8 and ws.shift(2, SEL_NEAR) == 6 and ws.shift(2, SEL_FAR) == 2
    # code of 1/4 * (2^-1 + 0 + 0 + 0): word 1 = SEL_NEAR
    assert int(ws.value_to_code(0.125)) == SEL_NEAR


def test_value_code_errors():
    ws = WordSet(4)
    with pytest.raises(SpecError):
        ws.int_to_code([3, 17])  # 3 = 2 + 1 is a point, 17/1024 is not
    with pytest.raises(SpecError):
        ws.value_to_code([1 / 3])
    with pytest.raises(SpecError):
        ws.code_to_int([1 << ws.code_bits])


def test_snap_ties_go_low():
    ws = WordSet(4)
    ints = ws.ints
    mid = (ints[10] + ints[11]) / 2 / ws.denom
    assert ws.snap(mid) == ints[10]
    assert ws.snap(np.nextafter(mid, 2)) == ints[11]


@pytest.mark.parametrize("kw", [dict(words=1), dict(words=6), dict(act_bits=1), dict(weight_bits=9),
                                dict(scale_bits=3), dict(scale_bits=33), dict(channels=0), dict(words=4.0)])
def test_bad_parameters(kw):
    with pytest.raises(SpecError):
        DatapathSpec(**kw)


def test_accumulator_wider_than_63_bits_refused():
    with pytest.raises(SpecError):
        DatapathSpec(scale_bits=32, channels=4096, weight_bits=8, words=5)


@given(st.integers(0, 2 ** 62))
def test_signed_bits_is_minimal(m):
    b = signed_bits(m)
    assert -(1 << (b - 1)) <= -m and m <= (1 << (b - 1)) - 1
    assert b == 1 or m > (1 << (b - 2)) - 1  # one bit fewer would not hold m


def test_round_half_up():
    assert round_half_up([0.5, 1.5, -0.5, -1.5, 2.4999, -2.5001]).tolist() == [1, 2, 0, -1, 2, -3]


@pytest.mark.parametrize("words", ALL_WORDS)
@pytest.mark.parametrize("scale_bits", [8, 16, 24, 32])
def test_widths_are_the_bounds(words, scale_bits):
    s = DatapathSpec(words=words, scale_bits=scale_bits)
    ws = s.wordset
    assert s.product_max == s.w_max * ws.p_max == max(abs(w * p) for w in (s.w_max,) for p in ws.ints)
    assert s.a_max == 9 * s.product_max and s.b_max == 9 * s.w_max
    assert s.term_max == s.mant_max * (s.a_max + s.b_max)
    assert s.sum_max == s.channels * s.term_max and s.acc_max == s.sum_max + s.bias_max
    for name in ("product", "a", "b", "term", "sum", "bias", "acc"):
        assert getattr(s, f"{name}_bits") == signed_bits(getattr(s, f"{name}_max"))
    assert s.w_bits == signed_bits(s.w_max) and s.p_bits == signed_bits(ws.p_max)
    assert s.float64_exact == (s.acc_max < 2 ** 53)
    d = s.widths()
    assert d["acc_bits"] == s.acc_bits and d["universal_set_size"] == len(ws)


def test_default_is_float64_exact():
    assert DatapathSpec().float64_exact
    assert not DatapathSpec(scale_bits=32).float64_exact


finite = st.floats(min_value=1e-6, max_value=1e4, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(st.lists(finite, min_size=1, max_size=8), st.lists(st.floats(-1e4, 1e4), min_size=1, max_size=8),
       st.sampled_from([4, 8, 12, 16, 24, 32]))
def test_fixed_point_fits_and_is_maximal(scales, means, sb):
    s = DatapathSpec(scale_bits=sb)
    n = min(len(scales), len(means))
    scale = np.array(scales[:n], np.float32)
    mean = np.array(means[:n], np.float32)
    sig, mu, e = s.fixed_point(scale, mean)
    assert np.all(np.abs(sig) <= s.mant_max) and np.all(np.abs(mu) <= s.mant_max)
    exact_sig = scale.astype(np.float64) / s.wordset.denom * 2.0 ** e
    exact_mu = mean.astype(np.float64) * 2.0 ** e
    assert np.all(np.abs(sig - exact_sig) <= 0.5) and np.all(np.abs(mu - exact_mu) <= 0.5)
    m = max(np.abs(exact_sig).max(), np.abs(exact_mu).max())
    assert m <= s.mant_max < 2 * m  # E is the largest exponent that fits
    assert e == s.exponent(scale.astype(np.float64) / s.wordset.denom, mean)


def test_fixed_point_zero_and_nonfinite():
    s = DatapathSpec()
    assert s.exponent(np.zeros(3), np.zeros(3)) == 0
    with pytest.raises(SpecError):
        s.exponent(np.array([np.inf]), np.zeros(1))


def test_bias_int():
    s = DatapathSpec()
    b = s.bias_int(np.array([0.5, -0.25], np.float32), np.array([0.25, 0.5], np.float32), 3)
    assert b.tolist() == [16, -4]
    with pytest.raises(SpecError):
        s.bias_int(np.array([1.0]), np.array([0.0]), 0)  # zero weight scale
    with pytest.raises(SpecError):
        s.bias_int(np.array([1.0]), np.array([1.0]), 62)  # far beyond bias_max: refused, not wrapped
    big = float(s.bias_max)
    assert int(s.bias_int(np.array([big]), np.array([1.0]), 0)[0]) == s.bias_max
    assert math.isclose(s.bias_max, s.sum_max)


@pytest.mark.parametrize("sb", range(SCALE_BITS_RANGE[0], SCALE_BITS_RANGE[1], 4))
def test_acc_bits_monotone_in_scale_bits(sb):
    assert DatapathSpec(scale_bits=sb).acc_bits <= DatapathSpec(scale_bits=sb + 1).acc_bits


def test_bias_exponent_limit_caps_a_degenerate_sample():
    """All inputs zero (after a ReLU): sigma = 1e-8 / denom would give a huge E and an overflowing bias_int."""
    s = DatapathSpec(scale_bits=8)
    scale = np.full(4, 1e-8, np.float32)
    mean = np.zeros(4, np.float32)
    bias = np.array([0.3, -0.2], np.float32)
    ws = np.array([0.01, 0.02], np.float32)
    e_free = s.exponent(scale / s.wordset.denom, mean)
    with pytest.raises(SpecError):
        s.bias_int(bias, ws, e_free)
    cap = s.bias_exponent_limit(bias, ws)
    assert cap < e_free
    sig, mu, e = s.fixed_point(scale, mean, cap)
    assert e == cap and np.all(np.abs(sig) <= s.mant_max)
    b = s.bias_int(bias, ws, e)
    assert np.abs(b).max() <= s.bias_max < 2 * np.abs(b).max() + 2
    assert s.bias_exponent_limit(np.zeros(2), ws) is None
    # a normal sample: the cap does not bind
    assert s.fixed_point(np.full(4, 3.0, np.float32), mean, cap)[2] == s.exponent(np.full(4, 3.0) / 1024, mean)
