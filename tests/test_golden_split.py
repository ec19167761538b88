"""The "split" de-normalization (golden.spec, golden.mean_unit): mean term out of the lanes, low-bit sigma.

The accumulator is the same integer as the fused datapath's formula with sigma_m = s << d; what changes is how it
is computed (start value per border class + lanes with a low-bit mantissa and a shift) and the widths."""
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from golden import mean_unit as mu
from golden.datapath import DatapathOverflow, mac_reference_split, mean_unit_reference, pixel_reference_split
from golden.layer import Operands, accumulate, error_bound, layer_spec, operands, run_layer
from golden.spec import DatapathSpec, SpecError, round_half_up
from golden.synthetic import synthetic_layer

SPLIT = dict(denorm="split")
CONFIGS = [dict(sigma_bits=1, shift_bits=0), dict(sigma_bits=1, shift_bits=5), dict(sigma_bits=4, shift_bits=3),
           dict(sigma_bits=8, shift_bits=3), dict(sigma_bits=24, shift_bits=2, scale_bits=32),
           dict(sigma_bits=4, shift_bits=3, words=2, act_bits=2, weight_bits=2),
           dict(sigma_bits=6, shift_bits=4, words=5, act_bits=8, weight_bits=8),
           dict(sigma_bits=4, shift_bits=3, channels=1024), dict(sigma_bits=4, shift_bits=3, channels=1024, kernel=1),
           dict(sigma_bits=8, shift_bits=2, channels=512, weight_bits=8, act_bits=8)]


def _id(kw):
    return ",".join(f"{k}={v}" for k, v in kw.items())


def test_fused_widths_unchanged():
    """The default ("fused") datapath and its manifest entry are exactly as before the split option."""
    w = DatapathSpec().widths()
    assert (w["term_bits"], w["sum_bits"], w["bias_bits"], w["acc_bits"], w["acc_max"]) == (42, 48, 48, 49,
                                                                                           148579007184000)
    assert "denorm" not in w and "sigma_bits" not in w
    assert DatapathSpec(denorm="split").widths()["denorm"] == "split"


def test_split_is_cheaper_in_the_lanes():
    f, s = DatapathSpec(), DatapathSpec(denorm="split", sigma_bits=4, shift_bits=3)
    assert s.term_bits < f.term_bits and s.acc_bits < f.acc_bits


@pytest.mark.parametrize("bad", [dict(denorm="other"), dict(denorm="split", sigma_bits=0),
                                 dict(denorm="split", sigma_bits=25), dict(denorm="split", shift_bits=6),
                                 dict(shift_bits=-1)])
def test_bad_format_refused(bad):
    with pytest.raises(SpecError):
        DatapathSpec(**bad)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 12), st.integers(0, 5), st.integers(1, 40), st.integers(0, 2 ** 32 - 1),
       st.floats(-12, 12), st.floats(0, 30))
def test_split_fixed_point_properties(m, s_bits, C, seed, log_mean, spread):
    try:
        spec = DatapathSpec(denorm="split", sigma_bits=m, shift_bits=s_bits)
    except SpecError:  # a too-wide accumulator is refused: tested elsewhere
        assume(m + (1 << s_bits) > 40)
        return
    rng = np.random.default_rng(seed)
    scale = (np.exp(rng.uniform(-spread, 0, C)) * 50).astype(np.float32) + np.float32(1e-8)
    mean = (rng.standard_normal(C) * np.exp(log_mean)).astype(np.float32)
    s, d, mu_m, E = spec.split_fixed_point(scale, mean)
    sigma = scale.astype(np.float64) / spec.wordset.denom
    assert np.all((0 <= s) & (s <= spec.sigma_max)) and np.all((0 <= d) & (d <= spec.shift_max))
    assert np.all(np.abs(mu_m) <= spec.mant_max)
    assert np.array_equal(s, round_half_up(np.ldexp(sigma, E - d)))  # s_c 2^d_c is sigma_c 2^E, rounded
    assert np.array_equal(mu_m, round_half_up(np.ldexp(mean.astype(np.float64), E)))
    e_c = spec.channel_exponents(sigma)
    # E is the smallest of its caps, so one more would break one of them
    assert E <= e_c.min() + spec.shift_max
    big_mean = np.abs(mean).max() > 0 and np.any(np.abs(round_half_up(np.ldexp(mean.astype(np.float64), E + 1)))
                                                 > spec.mant_max)
    assert E == e_c.min() + spec.shift_max or big_mean
    # every channel with e_c <= E is normalized (top bit set) unless its rounding carried into the next power
    norm = e_c <= E
    assert np.all(s[norm] >= (1 << (m - 1)))
    if s_bits == 0:
        assert np.all(d == 0)


@pytest.mark.parametrize("kernel,H,W", [(3, 5, 7), (3, 1, 4), (3, 2, 1), (3, 1, 1), (1, 3, 3), (1, 1, 2)])
@pytest.mark.parametrize("fmt", [dict(sigma_bits=4, shift_bits=3), dict(sigma_bits=1, shift_bits=0),
                                 dict(sigma_bits=8, shift_bits=4)], ids=_id)
def test_accumulator_is_start_plus_lanes(kernel, H, W, fmt):
    """acc (the golden fast paths) = the mean unit's start value of the pixel's border class + the lanes' sum."""
    spec = DatapathSpec(**SPLIT, **fmt)
    rng = np.random.default_rng(kernel * 100 + H * 10 + W)
    lay = synthetic_layer(rng, spec, N=2, C=8, O=5, H=H, W=W, kernel=kernel)
    ops = operands(lay, spec)
    lspec = layer_spec(spec, 8, kernel)
    acc = accumulate(ops, lspec)
    st_ = mu.starts(ops, lspec)
    assert np.array_equal(acc, mu.start_map(st_, H, W) + mu.lane_sum(ops))
    assert np.array_equal(ops.sigma_m, ops.sigma_s << ops.sigma_d)
    # and the per-pixel shift-add reference with every width checked, at every pixel of the first sample
    for o in range(2):
        for h in range(H):
            for x in range(W):
                assert pixel_reference_split(ops, spec.wordset, 1, o, h, x, lspec) == acc[1, o, h, x]


def test_border_classes():
    k = mu.border_classes(4, 5)
    assert k[0, 0] == 4 * mu.FIRST + mu.FIRST and k[3, 4] == 4 * mu.LAST + mu.LAST and k[1, 2] == 0
    assert mu.border_classes(1, 1)[0, 0] == 4 * mu.BOTH + mu.BOTH
    assert sorted(set(mu.border_classes(6, 6).ravel().tolist())) == sorted(4 * r + q for r in range(3) for q in range(3))
    assert mu.class_taps(0) == tuple(range(9)) and mu.class_taps(4 * mu.BOTH + mu.BOTH) == (4,)
    assert mu.class_taps(4 * mu.FIRST + mu.LAST) == (3, 4, 6, 7)
    with pytest.raises(ValueError):
        mu.class_taps(16)


def _extreme_ops(spec: DatapathSpec, sign: int, H: int = 3, W: int = 3):
    """Every operand at its bound, signs aligned: the interior pixel reaches sign * acc_max."""
    C, k = spec.channels, spec.kernel
    w = np.full((1, C, k, k), sign * spec.w_max, np.int64)
    P = np.full((1, C, H, W), spec.wordset.p_max, np.int64)
    s = np.full((1, C), spec.sigma_max, np.int64)
    d = np.full((1, C), spec.shift_max, np.int64)
    ops = Operands(w=w, P=P, sigma_m=s << d, mu_m=np.full((1, C), spec.mant_max, np.int64), E=np.zeros(1, np.int64),
                   bias_int=np.array([[sign * spec.bias_max]], np.int64), codes=np.zeros((1, C, H, W), np.uint8),
                   point_codes=np.full((C, spec.points), spec.wordset.int_to_code(spec.wordset.p_max), np.uint16),
                   sigma_s=s, sigma_d=d)
    return ops


@pytest.mark.parametrize("kw", CONFIGS, ids=_id)
@pytest.mark.parametrize("sign", [1, -1])
def test_extreme_input_cannot_overflow(kw, sign):
    spec = DatapathSpec(**SPLIT, **kw)
    ops = _extreme_ops(spec, sign)
    acc = accumulate(ops, spec)
    assert acc[0, 0, 1, 1] == sign * spec.acc_max
    st_ = mu.starts(ops, spec)
    assert st_[0, 0, 0] == sign * spec.start_max  # the interior class: every tap constant at its bound
    assert np.array_equal(acc, mu.start_map(st_, 3, 3) + mu.lane_sum(ops))
    if spec.channels <= 512:  # the per-pixel reference checks every intermediate against its width
        assert pixel_reference_split(ops, spec.wordset, 0, 0, 1, 1, spec) == sign * spec.acc_max
    K = mean_unit_reference(ops.mu_m[0], ops.w[0].reshape(spec.channels, -1), sign * spec.bias_max, spec.kernel, spec)
    assert K[0] == sign * spec.start_max
    for name in ("sa", "term", "sum", "tap_const", "bias", "start", "acc"):
        m, b = getattr(spec, f"{name}_max"), getattr(spec, f"{name}_bits")
        assert 2 ** (b - 2) <= m < 2 ** (b - 1), name
    assert spec.acc_bits <= 63


def test_out_of_range_operands_are_refused():
    spec = DatapathSpec(**SPLIT, sigma_bits=4, shift_bits=3, channels=4)
    ops = _extreme_ops(spec, 1)
    wo = ops.w[0].reshape(4, 9)
    idx = np.zeros((4, 9), int)
    with pytest.raises(DatapathOverflow):
        mac_reference_split(wo, idx, np.ones(9), ops.point_codes, [16] * 4, [0] * 4, 0, spec.wordset, spec)
    with pytest.raises(DatapathOverflow):
        mac_reference_split(wo, idx, np.ones(9), ops.point_codes, [1] * 4, [8] * 4, 0, spec.wordset, spec)
    with pytest.raises(DatapathOverflow):
        mac_reference_split(wo, idx, np.ones(9), ops.point_codes, [1] * 4, [0] * 4, 1 << (spec.start_bits - 1),
                            spec.wordset, spec)
    ops.sigma_m[0, 0] = spec.sigma_m_max + 1
    with pytest.raises(SpecError):
        accumulate(ops, spec)


@pytest.mark.parametrize("fmt", [dict(sigma_bits=1, shift_bits=0), dict(sigma_bits=3, shift_bits=3),
                                 dict(sigma_bits=8, shift_bits=3)], ids=_id)
def test_error_bound_holds_for_low_bit_sigma(fmt):
    """The golden error bound against the fake-quant float32 output includes the sigma mantissa's rounding."""
    spec = DatapathSpec(**SPLIT, **fmt)
    rng = np.random.default_rng(3)
    lay = synthetic_layer(rng, spec, N=2, C=16, O=8, H=6, W=7)
    ops, acc, y_hw = run_layer(lay, spec)
    bound = error_bound(lay, ops, spec, y_hw)["total"]
    assert np.all(np.abs(y_hw - lay.y) <= bound)
    # and it is not vacuous: the low-bit format really is further from fake-quant than the fused one
    f_ops, _, f_y = run_layer(lay, DatapathSpec())
    assert np.abs(y_hw - lay.y).max() >= np.abs(f_y - lay.y).max()
