"""golden/datapath.py: shift-add products, the one-pixel MAC, and the accumulator widths at the extremes."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from golden.datapath import DatapathOverflow, decode, mac_reference, product
from golden.layer import Operands, accumulate
from golden.spec import DatapathSpec, SpecError, WordSet


def test_product_exhaustive_default():
    """Every weight value x every point of the 377-value set (and every non-canonical code)."""
    spec = DatapathSpec()
    ws = spec.wordset
    weights = range(-spec.w_max, spec.w_max + 1)
    for p, code in zip(ws.ints.tolist(), ws.int_to_code(ws.ints).tolist()):
        for w in weights:
            assert product(w, code, ws) == w * p
    all_codes = np.arange(1 << ws.code_bits)
    p_all = ws.code_to_int(all_codes).tolist()
    for code, p in zip(all_codes.tolist(), p_all):
        for w in (-spec.w_max, -1, 0, 1, 7, spec.w_max):
            assert product(w, code, ws) == w * p


@settings(max_examples=300, deadline=None)
@given(st.integers(2, 5), st.integers(2, 8), st.data())
def test_product_sampled_other_word_sets(words, wbits, data):
    spec = DatapathSpec(words=words, weight_bits=wbits)
    ws = spec.wordset
    p = data.draw(st.sampled_from(ws.ints.tolist()))
    w = data.draw(st.integers(-spec.w_max, spec.w_max))
    code = int(ws.int_to_code(p))
    assert product(w, code, ws) == w * p
    assert abs(product(w, code, ws)) <= spec.product_max < 2 ** (spec.product_bits - 1)


def test_decode():
    ws = WordSet(4)
    neg, shifts = decode(int(ws.value_to_code(-(1 + 2 ** -2 + 2 ** -7) / 4)), ws)
    assert neg and sorted(shifts) == [1, 6, 8]  # 2^8 + 2^6 + 2^1 = 322 = 1024 * (1 + 1/4 + 1/128) / 4
    assert decode(0, ws) == (False, ())
    with pytest.raises(SpecError):
        decode(1 << ws.code_bits, ws)


def _numpy_mac(weights, idx, mask, table_ints, sigma, mu, bias):
    """The same sum written with numpy and integer points (independent of the shift-add path)."""
    C = len(weights)
    P = table_ints[np.arange(C)[:, None], idx]
    A = (weights * P * mask).sum(1)
    B = (weights * mask).sum(1)
    return int(bias + (sigma * A + mu * B).sum())


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 5), st.integers(2, 5), st.integers(2, 8), st.integers(4, 32), st.integers(1, 6), st.data())
def test_mac_reference_matches_integer_formula(words, abits, wbits, sb, C, data):
    spec = DatapathSpec(words=words, act_bits=abits, weight_bits=wbits, scale_bits=sb)
    ws = spec.wordset
    seed = data.draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)
    table_ints = np.sort(rng.choice(ws.ints, (C, spec.points)), axis=1)
    table = ws.int_to_code(table_ints)
    weights = rng.integers(-spec.w_max, spec.w_max + 1, (C, 9))
    idx = rng.integers(0, spec.points, (C, 9))
    mask = rng.integers(0, 2, 9)
    sigma = rng.integers(0, spec.mant_max + 1, C)
    mu = rng.integers(-spec.mant_max, spec.mant_max + 1, C)
    bias = int(rng.integers(-spec.mant_max, spec.mant_max + 1))
    got = mac_reference(weights, idx, mask, table, sigma, mu, bias, ws, spec)  # spec: widths checked too
    assert got == _numpy_mac(weights, idx, mask, table_ints, sigma, mu, bias)


CONFIGS = [dict(), dict(words=3, act_bits=5), dict(words=2), dict(words=5, weight_bits=8), dict(scale_bits=8),
           dict(scale_bits=24), dict(scale_bits=28), dict(scale_bits=32), dict(channels=16, weight_bits=2), dict(act_bits=8)]


def _extreme(spec: DatapathSpec, sign: int):
    """All channels, every tap valid, |w'| = w_max, |P| = p_max, sigma = mu = mant_max, bias at bias_max,
    signs chosen so that every term adds up: the accumulator reaches exactly sign * acc_max."""
    ws = spec.wordset
    C = spec.channels
    pcode = int(ws.int_to_code(ws.p_max))
    weights = np.full((C, 9), sign * spec.w_max)
    idx = np.zeros((C, 9), np.int64)
    table = np.full((C, spec.points), pcode, np.uint16)
    sigma = np.full(C, spec.mant_max)
    mu = np.full(C, spec.mant_max)
    return weights, idx, table, sigma, mu, sign * spec.bias_max


@pytest.mark.parametrize("kw", CONFIGS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "default")
@pytest.mark.parametrize("sign", [1, -1])
def test_extreme_input_cannot_overflow(kw, sign):
    spec = DatapathSpec(**kw)
    weights, idx, table, sigma, mu, bias = _extreme(spec, sign)
    acc = mac_reference(weights, idx, np.ones(9), table, sigma, mu, bias, spec.wordset, spec)
    assert acc == sign * spec.acc_max
    # the widths are the bounds: every intermediate reached its maximum and still fit, and one bit less would not
    for name in ("product", "a", "b", "term", "sum", "bias", "acc"):
        m, b = getattr(spec, f"{name}_max"), getattr(spec, f"{name}_bits")
        assert m < 2 ** (b - 1) and m >= 2 ** (b - 2)
    assert spec.acc_bits <= 63


@pytest.mark.parametrize("kw", CONFIGS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "default")
def test_extreme_layer_vectorized(kw):
    """The vectorized accumulator on a 3x3 image of extreme operands (float64 BLAS or int64 digits path)."""
    spec = DatapathSpec(**kw)
    C, O = spec.channels, 2
    w = np.empty((O, C, 3, 3), np.int64)
    w[0], w[1] = spec.w_max, -spec.w_max
    P = np.full((1, C, 3, 3), spec.wordset.p_max, np.int64)
    ops = Operands(w=w, P=P, sigma_m=np.full((1, C), spec.mant_max, np.int64),
                   mu_m=np.full((1, C), spec.mant_max, np.int64), E=np.zeros(1, np.int64),
                   bias_int=np.array([[spec.bias_max, -spec.bias_max]], np.int64),
                   codes=np.zeros((1, C, 3, 3), np.uint8), point_codes=np.zeros((C, spec.points), np.uint16))
    acc = accumulate(ops, spec)
    assert acc[0, 0, 1, 1] == spec.acc_max and acc[0, 1, 1, 1] == -spec.acc_max
    # a corner pixel sees 4 valid taps: the padding contributes nothing (not even mu_m)
    term4 = spec.mant_max * 4 * spec.w_max * (spec.wordset.p_max + 1)
    assert acc[0, 0, 0, 0] == spec.bias_max + C * term4


def test_out_of_spec_operands_are_refused():
    spec = DatapathSpec()
    weights, idx, table, sigma, mu, bias = _extreme(spec, 1)
    with pytest.raises(DatapathOverflow):
        mac_reference(weights, idx, np.ones(9), table, sigma, mu, 1 << (spec.bias_bits - 1), spec.wordset, spec)
    big = DatapathSpec(weight_bits=5)
    with pytest.raises(DatapathOverflow):  # a 5-bit weight in a 4-bit datapath breaks the product width
        mac_reference(np.full((1, 9), big.w_max), np.zeros((1, 9), int), np.ones(9), table[:1], sigma[:1], mu[:1],
                      0, spec.wordset, spec)
    C = spec.channels + 1
    ops = Operands(w=np.ones((1, C, 3, 3), np.int64), P=np.zeros((1, C, 2, 2), np.int64),
                   sigma_m=np.zeros((1, C), np.int64), mu_m=np.zeros((1, C), np.int64), E=np.zeros(1, np.int64),
                   bias_int=np.zeros((1, 1), np.int64), codes=np.zeros((1, C, 2, 2), np.uint8),
                   point_codes=np.zeros((C, 16), np.uint16))
    with pytest.raises(SpecError, match="channels"):
        accumulate(ops, spec)
