"""golden/layer.py: codes bit-identical to PyTorch's, operands, the vectorized accumulator against the per-pixel
shift-add reference (borders included), the float64 and int64 paths, and the error bound on synthetic layers."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from golden.datapath import pixel_reference
from golden.errors import UserError
from golden.export_io import layer_from_fields
from golden.layer import (Operands, accumulate, conv3x3, derive_codes, error_bound, fixed_point_params, operands,
                          run_layer, to_float)
from golden.spec import DatapathSpec
from golden.synthetic import random_points, synthetic_layer


def torch_codes(x, mean, scale, points):
    """Contract 1's activation code path, written with torch ops."""
    x, mean, scale, points = (torch.from_numpy(np.asarray(a)) for a in (x, mean, scale, points))
    xn = (x - mean[:, :, None, None]) / scale[:, :, None, None]
    mid = (points[:, :-1] + points[:, 1:]) / 2
    C = x.shape[1]
    out = torch.empty(x.shape, dtype=torch.int64)
    for c in range(C):
        out[:, c] = torch.searchsorted(mid[c].contiguous(), xn[:, c].contiguous(), side="left")
    return out.numpy()


@pytest.mark.parametrize("words,bits", [(4, 4), (3, 5), (2, 2), (5, 8)])
def test_codes_match_torch_and_searchsorted(words, bits):
    spec = DatapathSpec(words=words, act_bits=bits)
    rng = np.random.default_rng(words * 10 + bits)
    lay = synthetic_layer(rng, spec, N=3, C=6, O=2, H=9, W=10)
    got = derive_codes(lay.x, lay.mean, lay.scale, lay.points)
    assert got.dtype == np.uint8
    assert np.array_equal(got, torch_codes(lay.x, lay.mean, lay.scale, lay.points))
    xn = (lay.x - lay.mean[:, :, None, None]) / lay.scale[:, :, None, None]
    mid = (lay.points[:, :-1] + lay.points[:, 1:]) / np.float32(2)
    ref = np.stack([np.searchsorted(mid[c], xn[:, c], side="left") for c in range(6)], 1)
    assert np.array_equal(got, ref)


def test_ties_go_to_the_lower_point():
    spec = DatapathSpec()
    rng = np.random.default_rng(3)
    P = random_points(rng, spec, 2)
    points = (P / spec.wordset.denom).astype(np.float32)
    mid = (points[:, :-1] + points[:, 1:]) / np.float32(2)
    scale = np.full((1, 2), 2.0, np.float32)  # a power of two: x / scale is exact, so x = 2 * mid is a tie
    mean = np.zeros((1, 2), np.float32)
    x = (2 * mid)[None, :, :, None].repeat(3, axis=3).astype(np.float32)  # (1, 2, 15, 3)
    assert np.array_equal(x / scale[:, :, None, None], np.broadcast_to(mid[None, :, :, None], x.shape))  # ties
    codes = derive_codes(x, mean, scale, points)
    assert np.all(np.diff(points, axis=1) > 0)  # distinct points: the tie at midpoint k goes to point k
    assert np.array_equal(codes, np.broadcast_to(np.arange(15)[None, None, :, None], codes.shape))
    assert np.array_equal(codes, torch_codes(x, mean, scale, points))


def test_operands_fields():
    spec = DatapathSpec()
    lay = synthetic_layer(np.random.default_rng(5), spec, N=2, C=4, O=3, H=5, W=5)
    ops = operands(lay, spec)
    assert all(a.dtype == np.int64 for a in (ops.w, ops.P, ops.sigma_m, ops.mu_m, ops.E, ops.bias_int))
    assert np.array_equal(ops.w, lay.weight_q.astype(np.int64) - lay.zero_point[:, None, None, None])
    for n, c, h, w in [(0, 0, 0, 0), (1, 3, 4, 2), (1, 2, 0, 4)]:
        assert ops.P[n, c, h, w] == lay.point_ints[c, lay.codes[n, c, h, w]]
    for n in range(2):
        sig, mu, e = spec.fixed_point(lay.scale[n], lay.mean[n])
        assert np.array_equal(ops.sigma_m[n], sig) and np.array_equal(ops.mu_m[n], mu) and ops.E[n] == e
        assert np.array_equal(ops.bias_int[n], spec.bias_int(lay.bias, lay.weight_scale, e))
    acc = accumulate(ops, spec)
    y = to_float(acc, ops, lay.weight_scale)
    assert np.array_equal(y, acc * 2.0 ** -ops.E[:, None, None, None] * lay.weight_scale.astype(np.float64)[:, None, None])


layer_args = st.fixed_dictionaries({
    "words": st.integers(2, 5), "act_bits": st.integers(2, 6), "weight_bits": st.integers(2, 8),
    "scale_bits": st.sampled_from([4, 8, 12, 16, 20, 24, 28, 32]),
    "N": st.integers(1, 2), "C": st.integers(1, 5), "O": st.integers(1, 3), "H": st.integers(1, 5),
    "W": st.integers(1, 5), "relu": st.booleans(), "seed": st.integers(0, 2 ** 32 - 1)})


@settings(max_examples=40, deadline=None)
@given(layer_args)
def test_accumulate_matches_per_pixel_reference(a):
    spec = DatapathSpec(words=a["words"], act_bits=a["act_bits"], weight_bits=a["weight_bits"],
                        scale_bits=a["scale_bits"])
    lay = synthetic_layer(np.random.default_rng(a["seed"]), spec, N=a["N"], C=a["C"], O=a["O"], H=a["H"],
                          W=a["W"], relu_input=a["relu"])
    ops = operands(lay, spec)
    acc = accumulate(ops, spec)
    ref = np.array([pixel_reference(ops, spec.wordset, n, o, h, w, spec)
                    for n in range(a["N"]) for o in range(a["O"]) for h in range(a["H"]) for w in range(a["W"])])
    assert np.array_equal(acc.ravel(), ref)


def test_winograd_im2col_and_int64_paths_agree(monkeypatch):
    import golden.layer as gl
    spec = DatapathSpec(scale_bits=24)
    const_max = spec.bias_max + 9 * spec.channels * spec.w_max * spec.mant_max
    assert spec.float64_exact and gl.winograd_bound(64, 15, spec.mant_max, spec.wordset.p_max, const_max) < 2 ** 53
    lay = synthetic_layer(np.random.default_rng(9), spec, N=2, C=16, O=5, H=7, W=9)
    ops = operands(lay, spec)
    wino = accumulate(ops, spec)
    monkeypatch.setattr(gl, "winograd_bound", lambda *a: 2 ** 60)
    im2col = accumulate(ops, spec)
    monkeypatch.setattr(DatapathSpec, "float64_exact", property(lambda self: False))
    digits = accumulate(ops, spec)
    assert np.array_equal(wino, im2col) and np.array_equal(wino, digits)
    assert np.array_equal(wino, direct_int64(ops))


def direct_int64(ops) -> np.ndarray:
    """The simplest reference: acc = bias_int + sum over c and taps of w' Z, Z = sigma_m P + mu_m on the image and 0
    on the padding, every product and sum in exact int64 (|acc| <= acc_max < 2^63)."""
    N, C, H, W = ops.P.shape
    Z = ops.P * ops.sigma_m[:, :, None, None] + ops.mu_m[:, :, None, None]
    Zp = np.zeros((N, C, H + 2, W + 2), np.int64)
    Zp[:, :, 1:H + 1, 1:W + 1] = Z
    acc = np.broadcast_to(ops.bias_int[:, :, None, None], (N, ops.w.shape[0], H, W)).copy()
    for dy in range(3):
        for dx in range(3):
            acc += np.einsum("oc,nchw->nohw", ops.w[:, :, dy, dx], Zp[:, :, dy:dy + H, dx:dx + W])
    return acc


def random_operands(spec, rng, N, C, O, H, W, extreme):
    """Operands of random values within the spec's bounds; ``extreme``: mostly the bounds themselves."""
    ws, mm = spec.wordset, spec.mant_max
    if extreme:
        P = rng.choice([-ws.p_max, ws.p_max, ws.p_max - 1, 0, 1], (N, C, H, W))
        w = rng.choice([-spec.w_max, spec.w_max, spec.w_max - 1, 0], (O, C, 3, 3))
        sig, mu = (rng.choice([-mm, mm, mm - 1, 0], (N, C)) for _ in range(2))
        bias = rng.choice([-spec.bias_max, spec.bias_max, 0], (N, O))
    else:
        P = rng.integers(-ws.p_max, ws.p_max + 1, (N, C, H, W))
        w = rng.integers(-spec.w_max, spec.w_max + 1, (O, C, 3, 3))
        sig, mu = (rng.integers(-mm, mm + 1, (N, C)) for _ in range(2))
        bias = rng.integers(-spec.bias_max, spec.bias_max + 1, (N, O))
    i64 = lambda a: np.asarray(a, np.int64)  # noqa: E731
    return Operands(w=i64(w), P=i64(P), sigma_m=i64(sig), mu_m=i64(mu), E=np.zeros(N, np.int64), bias_int=i64(bias),
                    codes=np.zeros((N, C, H, W), np.uint8), point_codes=np.zeros((C, spec.points), np.uint16))


@pytest.mark.parametrize("extreme", [False, True])
@pytest.mark.parametrize("shape", [(1, 1, 1, 1, 1), (2, 3, 2, 1, 4), (1, 5, 3, 5, 7), (2, 64, 64, 9, 12),
                                   (1, 64, 8, 16, 15), (1, 7, 3, 2, 2), (1, 4, 2, 1, 9), (1, 64, 16, 31, 33)])
def test_fast_path_equals_int64_direct_conv(shape, extreme, monkeypatch):
    """The Winograd fast path is bit-exact against an int64 direct conv: random and extreme operands (the spec's
    bounds, signs mixed or aligned), odd sizes (half tiles), borders, any block size (one tile row per block, two,
    all) and 1 to 3 worker threads."""
    import golden.layer as gl
    N, C, O, H, W = shape
    spec = DatapathSpec()
    rng = np.random.default_rng(C * H + W + extreme)
    ops = random_operands(spec, rng, N, C, O, H, W, extreme)
    ref = direct_int64(ops)
    assert np.array_equal(accumulate(ops, spec), ref)
    if extreme:  # signs aligned: every partial sum at its largest magnitude
        ops.P[:] = spec.wordset.p_max
        ops.w[:] = spec.w_max
        ops.sigma_m[:] = ops.mu_m[:] = spec.mant_max
        ops.bias_int[:] = spec.bias_max
        ref = direct_int64(ops)
        assert ref.max() == spec.acc_max or (H, W) == (1, 1) or C < spec.channels or min(H, W) < 3
    for tiles, threads in ((1, 1), (2 * ((W + 1) // 2), 1), (10 ** 6, 1), (1, 3), (2 * ((W + 1) // 2), 2)):
        monkeypatch.setattr(gl, "WINO_BLOCK_TILES", tiles)
        acc = accumulate(ops, spec, threads=threads)
        assert acc.dtype == np.int64 and acc.flags.c_contiguous
        assert np.array_equal(acc, ref)


def test_conv3x3_matches_direct_sum():
    rng = np.random.default_rng(2)
    Z = rng.integers(-1000, 1000, (2, 3, 5, 4)).astype(np.float64)
    w = rng.integers(-7, 8, (4, 3, 3, 3)).astype(np.float64)
    got = conv3x3(Z, w.reshape(4, 27))
    Zp = np.pad(Z, ((0, 0), (0, 0), (1, 1), (1, 1)))
    ref = np.zeros((2, 4, 5, 4))
    for dy in range(3):
        for dx in range(3):
            ref += np.einsum("oc,nchw->nohw", w[:, :, dy, dx], Zp[:, :, dy:dy + 5, dx:dx + 4])
    assert np.array_equal(got, ref)
    ref_t = torch.nn.functional.conv2d(torch.from_numpy(Z), torch.from_numpy(w), padding=1).numpy()
    assert np.array_equal(got, ref_t)


def test_conv3x3_row_blocks(monkeypatch):
    import golden.layer as gl
    rng = np.random.default_rng(4)
    Z = rng.integers(-99, 99, (1, 4, 11, 6)).astype(np.float64)
    w = rng.integers(-3, 4, (2, 36)).astype(np.float64)
    whole = conv3x3(Z, w)
    monkeypatch.setattr(gl, "COLS_BUDGET", 4 * 9 * 8 * 8 * 3)  # 3 rows per block
    assert np.array_equal(conv3x3(Z, w), whole)


@pytest.mark.parametrize("kw", [dict(), dict(words=3, act_bits=5), dict(scale_bits=24), dict(scale_bits=8)])
@pytest.mark.parametrize("relu", [False, True])
def test_synthetic_layer_within_bound(kw, relu):
    spec = DatapathSpec(**kw)
    lay = synthetic_layer(np.random.default_rng(11), spec, N=2, C=32, O=8, H=8, W=8, relu_input=relu)
    ops, acc, y_hw = run_layer(lay, spec)
    b = error_bound(lay, ops, spec, y_hw)
    err = np.abs(y_hw - lay.y)
    assert np.all(err <= b["total"])
    assert np.all(b["fixed"] > 0) and np.all(b["float32"] > 0)


def test_more_scale_bits_smaller_error():
    lay = synthetic_layer(np.random.default_rng(12), DatapathSpec(), N=1, C=32, O=8, H=8, W=8)
    errs = []
    for sb in (8, 12, 16, 24):
        errs.append(np.abs(run_layer(lay, DatapathSpec(scale_bits=sb))[2] - lay.y).max())
    assert errs == sorted(errs, reverse=True) and errs[-1] < errs[0] / 100


def test_bad_inputs():
    spec = DatapathSpec()
    lay = synthetic_layer(np.random.default_rng(1), spec, N=1, C=2, O=2, H=3, W=3)
    with pytest.raises(UserError):
        derive_codes(lay.x, lay.mean[:, :1], lay.scale, lay.points)
    with pytest.raises(UserError, match="act_bits"):
        operands(lay, DatapathSpec(act_bits=5))
    d = lay.arrays()
    d["weight_scale"] = np.zeros(2, np.float32)
    with pytest.raises(UserError, match="weight_scale"):
        layer_from_fields(d, "bad", spec)
    lay.weight_scale[0] = 0
    with pytest.raises(UserError, match="bias"):
        fixed_point_params(lay.scale, lay.mean, lay.bias, lay.weight_scale, spec)


def test_all_zero_relu_input_is_handled():
    """A sample whose input is all zero (after a ReLU): E is capped so that bias_int fits; output = bias."""
    spec = DatapathSpec(words=2, act_bits=2, weight_bits=2, scale_bits=4)
    lay = synthetic_layer(np.random.default_rng(0), spec, N=1, C=3, O=2, H=2, W=3, relu_input=True,
                          x=np.zeros((1, 3, 2, 3), np.float32))
    ops, acc, y = run_layer(lay, spec)
    assert np.abs(ops.bias_int).max() <= spec.bias_max
    assert np.all(np.abs(y - lay.y) <= error_bound(lay, ops, spec, y)["total"])
