"""golden.uniform_spec and golden.uniform_layer: validated parameters, widths at the extremes, the exact model."""
import numpy as np
import pytest

from golden.spec import SpecError
from golden.uniform_layer import UniformOperands, accumulate, random_operands
from golden.uniform_spec import UniformSpec


def _direct(ops):
    """The same conv as nested Python-int loops (independent of the einsum path)."""
    w, a, bias = ops.w.tolist(), ops.a.tolist(), ops.bias.tolist()
    O, C, k = len(w), len(w[0]), len(w[0][0])
    N, H, W = len(a), len(a[0][0]), len(a[0][0][0])
    r = k // 2
    out = np.zeros((N, O, H, W), dtype=object)
    for n in range(N):
        for o in range(O):
            for y in range(H):
                for x in range(W):
                    s = bias[o]
                    for c in range(C):
                        for ky in range(k):
                            for kx in range(k):
                                yy, xx = y + ky - r, x + kx - r
                                if 0 <= yy < H and 0 <= xx < W:
                                    s += w[o][c][ky][kx] * a[n][c][yy][xx]
                    out[n, o, y, x] = s
    return out


@pytest.mark.parametrize("kernel", [3, 1])
@pytest.mark.parametrize("bits", [(2, 2), (4, 4), (6, 6), (8, 3)])
def test_accumulate_matches_direct_sum(kernel, bits):
    spec = UniformSpec(act_bits=bits[0], weight_bits=bits[1], channels=5, kernel=kernel)
    ops = random_operands(np.random.default_rng(kernel * 10 + bits[0]), spec, N=2, O=3, H=4, W=5)
    acc = accumulate(ops, spec)
    assert acc.dtype == np.int64 and acc.shape == (2, 3, 4, 5)
    assert np.array_equal(acc, _direct(ops).astype(np.int64))


@pytest.mark.parametrize("kernel", [3, 1])
def test_widths_hold_the_extremes(kernel):
    """Every operand at its largest magnitude with one sign, and the bias at +-bias_max: the accumulator reaches
    +-acc_max exactly, which fits acc_bits and needs all of them."""
    for ab, wb, C in ((8, 8, 4096), (2, 2, 1), (6, 6, 64), (4, 7, 1024)):
        spec = UniformSpec(act_bits=ab, weight_bits=wb, channels=C, kernel=kernel)
        for sign in (1, -1):
            ops = UniformOperands(w=np.full((1, C, kernel, kernel), spec.w_max, np.int64),
                                  a=np.full((1, C, 3, 3), sign * spec.a_max, np.int64),
                                  bias=np.array([sign * spec.bias_max], np.int64))
            acc = accumulate(ops, spec)
            assert acc[0, 0, 1, 1] == sign * spec.acc_max  # the centre pixel sees every tap
            assert spec.acc_max < 2 ** (spec.acc_bits - 1) and spec.acc_max >= 2 ** (spec.acc_bits - 2)
        assert spec.w_bits == wb + 1 and spec.a_bits == ab + 1
        assert spec.product_max < 2 ** (spec.product_bits - 1)
        assert spec.tap_sum_max == kernel * kernel * spec.product_max < 2 ** (spec.tap_sum_bits - 1)
        assert spec.acc_max < 2 ** 63


def test_default_is_w6a6_64_channels():
    spec = UniformSpec()
    assert (spec.act_bits, spec.weight_bits, spec.channels, spec.kernel) == (6, 6, 64, 3)
    assert spec.widths()["acc_bits"] == spec.acc_bits == 24  # 2 * 64 * 9 * 63 * 63 < 2^23


@pytest.mark.parametrize("kwargs,match", [
    (dict(act_bits=1), "act_bits"), (dict(act_bits=9), "act_bits"), (dict(weight_bits=0), "weight_bits"),
    (dict(weight_bits=4.0), "weight_bits"), (dict(act_bits=True), "act_bits"), (dict(channels=0), "channels"),
    (dict(channels=4097), "channels"), (dict(kernel=5), "kernel"), (dict(kernel=True), "kernel"),
])
def test_spec_rejects_bad_parameters(kwargs, match):
    with pytest.raises(SpecError, match=match):
        UniformSpec(**kwargs)


def test_spec_is_frozen_and_geometry():
    spec = UniformSpec(channels=64)
    with pytest.raises(AttributeError):
        spec.act_bits = 3
    assert spec.for_layer(64, 3) is spec and spec.for_layer(16, 1).taps == 1
    assert spec.covers(16, 1) and spec.covers(64, 3) and not spec.covers(65, 3)


def test_operands_out_of_bounds_are_refused():
    spec = UniformSpec(act_bits=4, weight_bits=4, channels=2)
    good = random_operands(np.random.default_rng(0), spec)
    for field, value, match in (("w", spec.w_max + 1, "w'"), ("a", -spec.a_max - 1, "a'"),
                                ("bias", spec.bias_max + 1, "bias_int")):
        arr = getattr(good, field).copy()
        arr.flat[0] = value
        with pytest.raises(SpecError, match=match):
            accumulate(UniformOperands(**{**good.__dict__, field: arr}), spec)
    with pytest.raises(SpecError, match="exceeds the spec"):
        accumulate(random_operands(np.random.default_rng(1), UniformSpec(act_bits=4, weight_bits=4, channels=3)),
                   spec)
    with pytest.raises(SpecError, match="integer"):
        accumulate(UniformOperands(w=good.w.astype(float), a=good.a, bias=good.bias), spec)
