"""QuantConv (contract 1), the weight quantizer (eq. 6-7), the Min-Max baseline and model surgery."""
from __future__ import annotations

import argparse
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from golden.errors import UserError
from golden.spec import EPS, WordSet
from dfsq.model import EDSR, quantized_convs
from dfsq.quantize import QuantConv, build_quantized, quant_convs, quantize_model, quantize_weight


def test_weight_quantizer_eq_6_7():
    torch.manual_seed(0)
    w = torch.randn(8, 4, 3, 3) * torch.linspace(0.01, 1.0, 8).view(-1, 1, 1, 1)
    w[3] = w[3].abs() + 0.1  # all positive: range widened to include 0, zero point 0
    w[5] = 0.0  # all zero
    for bits in (2, 4, 8):
        q, z, s = quantize_weight(w, bits)
        qmax = 2 ** bits - 1
        assert q.dtype == torch.int32 and z.dtype == torch.int32 and s.dtype == torch.float32
        assert int(q.min()) >= 0 and int(q.max()) <= qmax
        assert int(z.min()) >= 0 and int(z.max()) <= qmax
        assert int(z[3]) == 0
        assert torch.all(q[5] == z[5])
        wd = w.double().reshape(8, -1)
        lo = wd.min(1).values.clamp(max=0)
        hi = wd.max(1).values.clamp(min=0)
        ok = hi > lo
        assert torch.allclose(s.double()[ok], ((hi - lo) / qmax)[ok], rtol=1e-6)
        w_hat = (q - z.view(-1, 1, 1, 1)).double() * s.double().view(-1, 1, 1, 1)
        err = (w_hat - w.double()).abs().reshape(8, -1).max(1).values
        assert torch.all(err <= s.double() / 2 * (1 + 1e-6) + 1e-12)
        # the extremes are representable: min -> q = 0 and max -> q = qmax for a channel spanning 0
        assert int(q[0].min()) == 0 and int(q[0].max()) == qmax


def _qconv(relu_input: bool, act_bits=3, words=4, seed=0):
    torch.manual_seed(seed)
    conv = nn.Conv2d(4, 5, 3, padding=1)
    ws = WordSet(words)
    k = 2 ** act_bits
    rng = np.random.default_rng(seed)
    lo = 0 if relu_input else 1
    pts = np.sort(rng.choice(ws.ints[ws.ints >= 0] if relu_input else ws.ints, (4, k)), 1)
    pts[:, 0] = 0 if relu_input else pts[:, 0]
    q, z, s = quantize_weight(conv.weight, 4)
    return QuantConv(conv, name="body.0.body.2" if relu_input else "body.0.body.0", index=lo, relu_input=relu_input,
                     method="dfsq", act_bits=act_bits, weight_bits=4, words=words, gap=4, weight_q=q, zero_point=z,
                     weight_scale=s, point_ints=pts), conv


def reference_forward(qc: QuantConv, x: np.ndarray) -> np.ndarray:
    """Contract 1 written independently in NumPy float32 (codes), then torch for the conv. The mean is torch's
    (a float32 mean's summation order is library-specific; the export carries it for the golden model)."""
    x = x.astype(np.float32)
    mean = np.zeros(x.shape[:2], np.float32) if qc.relu_input else torch.from_numpy(x).mean((2, 3)).numpy()
    d = x - mean[:, :, None, None]
    scale = np.abs(d).max((2, 3)) + np.float32(EPS)
    xn = d / scale[:, :, None, None]
    pts = qc.points.numpy()
    mid = (pts[:, :-1] + pts[:, 1:]) / np.float32(2)
    codes = np.stack([np.searchsorted(mid[c], xn[:, c], side="left") for c in range(x.shape[1])], 1)
    xq = np.take_along_axis(pts[None, :, :], codes.reshape(x.shape[0], x.shape[1], -1), 2).reshape(x.shape)
    xq = torch.from_numpy(xq) * torch.from_numpy(scale)[:, :, None, None] + torch.from_numpy(mean)[:, :, None, None]
    w = (qc.weight_q - qc.zero_point.view(-1, 1, 1, 1)).float() * qc.weight_scale.view(-1, 1, 1, 1)
    return F.conv2d(xq, w, qc.bias, padding=1).numpy(), codes


@pytest.mark.parametrize("relu_input", [False, True])
def test_quantconv_matches_contract(relu_input):
    qc, _ = _qconv(relu_input)
    x = torch.randn(2, 4, 7, 6) * 3 + 1
    if relu_input:
        x = x.clamp(min=0)
    y = qc(x)
    ref, codes = reference_forward(qc, x.numpy())
    assert np.array_equal(y.detach().numpy(), ref)
    f = qc.quant_fields(x)
    assert np.array_equal(f["codes"], codes) and np.array_equal(f["y"], ref)
    assert f["relu_input"] == relu_input and np.all(f["mean"] == 0) == relu_input


def test_tie_goes_to_lower_point():
    """After a ReLU (mean 0) with max 1, scale = float32(1 + 1e-8) = 1 and xn = x: put x on every midpoint."""
    qc, _ = _qconv(True, act_bits=3)
    pts = qc.points.numpy()
    for c in range(4):
        mids = (pts[c, :-1] + pts[c, 1:]) / np.float32(2)
        x = np.zeros((1, 4, 1, 1 + len(mids)), np.float32)
        x[0, :, 0, 0] = 1.0
        x[0, c, 0, 1:] = mids
        f = qc.quant_fields(x)
        assert f["scale"][0, c] == 1 and f["mean"][0, c] == 0
        codes = f["codes"][0, c, 0, 1:]
        distinct = np.r_[pts[c, :-1] != pts[c, 1:]]
        # a midpoint between two distinct points goes to the lower one: code j for mid j
        assert np.array_equal(codes[distinct], np.arange(len(mids))[distinct])
        assert np.array_equal(pts[c][codes], pts[c, :-1])


def test_more_bits_are_closer_to_float():
    """8-bit DFSQ is close to the float conv (limited by the 377-value set's gaps, up to 1/64 below 0.5) and
    much closer than 3-bit."""
    torch.manual_seed(1)
    conv = nn.Conv2d(8, 8, 3, padding=1)
    ws = WordSet(4)
    x = torch.distributions.Laplace(0.0, 1.0).sample((1, 8, 16, 16))
    from dfsq.select import histogram_values, kmeans_select

    mean = x.mean((2, 3), keepdim=True)
    xn = ((x - mean) / ((x - mean).abs().amax((2, 3), keepdim=True) + EPS)).permute(1, 0, 2, 3).reshape(8, -1)
    hist = np.stack([np.bincount(np.clip(((r.numpy() + 1) * 1024).astype(int), 0, 2047), minlength=2048)
                     for r in xn])
    rel = {}
    with torch.no_grad():
        yf = conv(x)
        for bits in (3, 8):
            pts = kmeans_select(histogram_values(2048), hist, bits, ws)["point_ints"]
            q, z, s = quantize_weight(conv.weight, 8)
            qc = QuantConv(conv, name="n", index=0, relu_input=False, method="dfsq", act_bits=bits, weight_bits=8,
                           words=4, gap=4, weight_q=q, zero_point=z, weight_scale=s, point_ints=pts)
            rel[bits] = float((qc(x) - yf).norm() / yf.norm())
    assert rel[8] < 0.02 and rel[8] < rel[3] / 4, rel


def test_minmax_activation_levels():
    torch.manual_seed(2)
    conv = nn.Conv2d(4, 4, 3, padding=1)
    q, z, s = quantize_weight(conv.weight, 4)
    for relu in (False, True):
        qc = QuantConv(conv, name="m", index=0, relu_input=relu, method="minmax", act_bits=3, weight_bits=4,
                       words=4, gap=4, weight_q=q, zero_point=z, weight_scale=s, act_range=(-2.0, 3.0))
        x = torch.randn(2, 4, 9, 9) * 2
        if relu:
            x = x.clamp(min=0)
        xq = qc.quantize_act(x)
        lo = 0.0 if relu else -2.0
        assert qc.act_step == pytest.approx((3.0 - lo) / 7)
        grid = (torch.arange(8) - qc.act_zero) * qc.act_step  # zero point: 0 is exact, grid ends within a step
        assert float(grid[0]) <= lo + 1e-6 < float(grid[0]) + qc.act_step and qc.act_zero == round(-lo / qc.act_step)
        assert torch.equal(qc.points[0], grid.float())
        levels = torch.unique(xq)
        assert len(levels) <= 8 and all(torch.isclose(grid, v).any() for v in levels)
        assert torch.any(xq == 0)
        inside = (x >= grid[0]) & (x <= grid[-1])
        assert float((xq - x)[inside].abs().max()) <= qc.act_step / 2 + 1e-6
        assert torch.all(xq[x > grid[-1]] == grid[-1]) and torch.all(xq[x < grid[0]] == grid[0])


def test_quantize_model_replaces_only_body_convs(default_export, x2_model):
    from dfsq.calibrate import load_params

    params = load_params(default_export.parent / "params.npz")
    q = quantize_model(x2_model, params, "dfsq")
    qcs = quant_convs(q)
    assert [m.name for m in qcs] == [n for n, _ in quantized_convs(x2_model)]
    assert [m.index for m in qcs] == list(range(32))
    assert [m.relu_input for m in qcs] == [i % 2 == 1 for i in range(32)]
    for m in qcs:
        assert m.points.dtype == torch.float32 and m.points.shape == (64, 16)
        assert m.weight_q.shape == (64, 64, 3, 3) and m.zero_point.shape == (64,) and m.bias.shape == (64,)
        assert (m.act_bits, m.weight_bits, m.words, m.method) == (4, 4, 4, "dfsq")
    # the FP model is untouched; head, last body conv and tail stay float
    assert len(quant_convs(x2_model)) == 0
    assert isinstance(q.body[16], nn.Conv2d) and isinstance(q.head[0], nn.Conv2d)
    assert torch.equal(q.tail[1].weight, x2_model.tail[1].weight)


def test_build_quantized_checks_params(default_export, x2_model, test_weights):
    ppath = str(default_export.parent / "params.npz")
    ok = argparse.Namespace(method="dfsq", act_bits=4, weight_bits=4, words=4, params=ppath, weights=test_weights)
    assert len(quant_convs(build_quantized(x2_model, ok))) == 32
    for k, v in (("act_bits", 3), ("weight_bits", 8), ("words", 3)):
        bad = argparse.Namespace(**{**vars(ok), k: v})
        with pytest.raises(UserError, match=k):
            build_quantized(x2_model, bad)
    other = EDSR(2)
    with pytest.raises(UserError, match="other weights"):
        build_quantized(other, ok)


@pytest.mark.skipif(os.environ.get("DFSQ_TEST_WEIGHTS") == "random", reason="needs trained weights")
def test_dfsq_beats_minmax_at_low_bits(default_export, x2_model, one_thread):
    """On a real image crop, 4-bit DFSQ stays closer to the float network than the 4-bit Min-Max baseline."""
    from dfsq.calibrate import load_params
    from dfsq.data import sample_image

    params = load_params(default_export.parent / "params.npz")
    x = torch.from_numpy(sample_image()[150:214, 180:244].copy()).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        yf = x2_model(x)
        err = {m: float((quantize_model(x2_model, params, m)(x) - yf).pow(2).mean()) for m in ("dfsq", "minmax")}
    assert err["dfsq"] < err["minmax"], err


@pytest.mark.parametrize("max_iters", [10 ** 9, 8])
@pytest.mark.parametrize("k", [4, 16, 256])
def test_code_table_equals_searchsorted(k, max_iters):
    """The fast code lookup equals searchsorted(mid, xn, side='left') exactly, also on midpoints, on duplicate
    points, at +-1 and outside [-1, 1]."""
    from dfsq.quantize import CodeTable, dfsq_codes, midpoints

    ws = WordSet(4)
    rng = np.random.default_rng(k)
    c = 6
    p = np.sort(rng.choice(ws.ints, (c, k)), 1)
    p[0] = p[0, 0]  # all equal
    p[1, : k // 2] = p[1, k // 2]  # many duplicates
    points = torch.from_numpy((p / ws.denom).astype(np.float32))
    mid = midpoints(points)
    m = mid.numpy()
    xs = [rng.uniform(-1, 1, (c, 300)).astype(np.float32), np.repeat(m, 2, axis=1)[:, : 300],
          np.nextafter(np.repeat(m, 2, axis=1), np.float32(2))[:, :300], np.nextafter(np.repeat(m, 2, axis=1),
                                                                                      np.float32(-2))[:, :300]]
    xs = [np.pad(x, ((0, 0), (0, 300 - x.shape[1])), mode="edge") for x in xs]
    edge = np.tile(np.array([-1, 1, -1.5, 3, 0, -0.0, 1e-9, np.nextafter(np.float32(1), np.float32(0))],
                            np.float32), (c, 1))
    x = np.concatenate(xs + [edge], 1)[None]  # (1, C, 1, M)
    x = torch.from_numpy(x.reshape(1, c, 1, -1))
    table = CodeTable(mid, max_iters=max_iters)
    assert torch.equal(table.codes(x), dfsq_codes(x, mid))
    if max_iters > 10 ** 6:
        assert table.iters <= max_iters   # the iterative path itself was checked


@pytest.mark.parametrize("relu_input", [False, True])
def test_moved_quantconv_rebuilds_its_code_table(relu_input):
    """``.to(device)`` (as ``bench.psnr_table --device`` does with a deep copy) rebuilds the code table on the
    buffers' device and leaves the outputs bit-identical; here the move is CPU -> CPU and a dtype round trip."""
    import copy

    qc, _ = _qconv(relu_input)
    x = torch.randn(2, 4, 7, 6) * 3 + 1
    if relu_input:
        x = x.clamp(min=0)
    moved = copy.deepcopy(qc).to("cpu")
    assert moved.table is not qc.table and moved.table.start.device == moved.mid.device
    assert np.array_equal(moved(x).detach().numpy(), qc(x).detach().numpy())
    table = moved.table
    moved.float()
    assert moved.table is not table
    assert np.array_equal(moved(x).detach().numpy(), qc(x).detach().numpy())


def test_device_flag_refuses_a_missing_accelerator():
    from dfsq.device import module_device, resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert module_device(nn.Conv2d(1, 1, 1)) == torch.device("cpu") == module_device(nn.ReLU())
    with pytest.raises(UserError, match="one of cpu, cuda"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA device"):
            resolve_device("cuda")


def test_moving_a_uniform_mse_network_moves_its_step_tensors(one_thread):
    """The Uniform-MSE baseline keeps per-channel steps as plain tensors; ``_apply`` (what ``.to()`` calls) passes
    them through the same function as the buffers, so the network still runs after a move."""
    from dfsq.uniform import set_uniform_ranges

    torch.manual_seed(0)
    model = EDSR(2).eval()
    from dfsq.calibrate import calibrate

    img = np.random.default_rng(0).integers(0, 256, (12, 14, 3), dtype=np.uint8)
    q = quantize_model(model, calibrate(model, [("a", img)], act_bits=4, weight_bits=4, words=4, bins=256), "minmax")
    convs = quant_convs(q)
    lo = np.full((len(convs), 64), -2.0)
    hi = np.full((len(convs), 64), 3.0)
    set_uniform_ranges(q, lo, hi)
    x = torch.rand(1, 3, 9, 10) * 255
    with torch.no_grad():
        ref = q(x)
        before = convs[0].act_step
        q._apply(lambda t: t.clone())
        assert convs[0].act_step is not before and torch.equal(convs[0].act_step, before)
        assert torch.equal(q(x), ref)


def test_evaluate_device_refusals(capsys):
    from dfsq.evaluate import main

    for extra in (["--method", "dfsq-hw"], ["--method", "fp"]):
        if extra[1] == "fp" and torch.cuda.is_available():
            continue
        with pytest.raises(SystemExit) as exc:
            main(["--datasets", "Set5", "--device", "cuda", *extra])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and ("golden datapath" in err[0] if extra[1] == "dfsq-hw" else "no CUDA" in err[0])
