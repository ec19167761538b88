"""The fused CPU kernel (dfsq.fastquant) is bit-identical to the torch path of QuantConv.quantize_act."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from dfsq import fastquant
from dfsq.quantize import QuantConv, gather_points, midpoints, quantize_weight
from golden.spec import WordSet

needs_kernel = pytest.mark.skipif(fastquant.library() is None,
                                  reason=f"fastquant kernel unavailable: {fastquant.why_unavailable()}")


def _torch_act(qc: QuantConv, x: torch.Tensor) -> torch.Tensor:
    """The reference: quantize_act's torch path, written out."""
    mean, _, scale, xn = qc.normalize(x)
    return gather_points(qc.points, qc.table.codes(xn)) * scale[:, :, None, None] + mean[:, :, None, None]


def _qconv(c: int, bits: int, relu_input: bool, seed: int, dup: bool = False) -> QuantConv:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    conv = nn.Conv2d(c, 3, 3, padding=1)
    ws = WordSet(4)
    pool = ws.ints[ws.ints >= 0] if relu_input else ws.ints
    pts = np.sort(rng.choice(pool, (c, 1 << bits)), 1)
    if dup:   # duplicate points, as 8-bit k-means gives, and one channel of a single repeated point
        pts[0] = pts[0, 0]
        pts[1, : pts.shape[1] // 2] = pts[1, pts.shape[1] // 2]
    q, z, s = quantize_weight(conv.weight, 4)
    return QuantConv(conv, name="t", index=0, relu_input=relu_input, method="dfsq", act_bits=bits, weight_bits=4,
                     words=4, gap=4, weight_q=q, zero_point=z, weight_scale=s, point_ints=pts)


def _hard_input(qc: QuantConv, n: int, h: int, w: int, seed: int) -> torch.Tensor:
    """Random activations with a constant plane (maxabs 0, scale = eps), huge and tiny magnitudes, and in channel
    2 a plane in [-1, 1] holding 1.0 (so that with a zero mean its scale is exactly 1) and every midpoint of the
    channel with its float32 neighbours."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, qc.in_channels, h, w, generator=g) * 3 + 0.5
    x[0, 0] = 0.0 if qc.relu_input else 1.25
    x[:, -1, 0, :] *= 1e6
    x[:, -1, 1, :] *= 1e-30
    x[:, 2] = torch.rand(n, h, w, generator=g) * 2 - 1
    mids = qc.mid[2].numpy()
    flat = np.concatenate([mids, np.nextafter(mids, np.float32(2)), np.nextafter(mids, np.float32(-2)),
                           np.float32([1.0, -1.0, 0.0, -0.0])])
    plane = x[:, 2].reshape(n, -1)
    plane[:, : min(len(flat), plane.shape[1])] = torch.from_numpy(flat[: plane.shape[1]])
    if qc.relu_input:
        x = x.clamp(min=0)
    return x


@needs_kernel
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_kernel_codes_on_midpoints(bits):
    """With a zero mean and a scale of exactly 1 the normalized values are the planted ones: values on a
    midpoint go to the lower point, one ulp above to the upper, as searchsorted(side='left')."""
    from dfsq.quantize import dfsq_codes

    qc = _qconv(4, bits, False, seed=bits, dup=bits == 8)
    x = _hard_input(qc, 1, 30, 40, seed=3)
    mean = torch.zeros(1, 4)
    scale = x.abs().amax((2, 3)) + 1e-8
    assert float(scale[0, 2]) == 1.0
    xn = x / scale[:, :, None, None]
    want = gather_points(qc.points, dfsq_codes(xn, qc.mid)) * scale[:, :, None, None] + mean[:, :, None, None]
    got = fastquant.dfsq_fake_quant(x, mean, 1e-8, qc.mid, qc.points)
    assert torch.equal(got, want)


@needs_kernel
@pytest.mark.parametrize("bits", [2, 3, 4, 6, 8])
@pytest.mark.parametrize("relu_input", [False, True])
def test_kernel_equals_torch_path(bits, relu_input):
    qc = _qconv(6, bits, relu_input, seed=bits, dup=bits >= 6)
    for n, h, w in ((1, 9, 40), (2, 13, 600), (3, 1, 1)):
        x = _hard_input(qc, n, h, w, seed=n + h) if h > 4 else torch.randn(n, 6, h, w)
        want = _torch_act(qc, x)
        got = qc.quantize_act(x)
        assert got is not None and torch.equal(got, want), (bits, relu_input, n, h, w)
        assert torch.equal(qc(x), qc.conv(want))     # forward: the scratch-buffer path


@needs_kernel
def test_kernel_propagates_nan_like_torch():
    qc = _qconv(4, 4, False, seed=1)
    x = torch.randn(1, 4, 5, 7)
    x[0, 1, 2, 3] = float("nan")
    want, got = _torch_act(qc, x), qc.quantize_act(x)
    assert torch.equal(torch.isnan(got), torch.isnan(want)) and bool(torch.isnan(got[0, 1]).all())
    ok = ~torch.isnan(want)
    assert torch.equal(got[ok], want[ok])


@needs_kernel
def test_kernel_on_real_layers(x2_model, default_export):
    """Every quantized layer of the default x2 model on a real input: kernel == torch path, and the network."""
    from dfsq.calibrate import load_params
    from dfsq.quantize import quant_convs, quantize_model

    q = quantize_model(x2_model, load_params(default_export.parent / "params.npz"))
    acts = []
    hooks = [c.register_forward_pre_hook(lambda m, a: acts.append((m, a[0].clone()))) for c in quant_convs(q)]
    x = torch.rand(1, 3, 40, 56) * 255
    with torch.no_grad():
        y_fast = q(x)
        for h in hooks:
            h.remove()
        for m, a in acts:
            assert torch.equal(m.quantize_act(a), _torch_act(m, a)), m.name
        for c in quant_convs(q):
            c.quantize_act = lambda a, c=c: _torch_act(c, a)   # force the torch path through forward
        assert torch.equal(q(x), y_fast)


def test_fallback_when_disabled(monkeypatch):
    """DFSQ_FASTQUANT=0 (or no compiler) means the torch path: the kernel entry point declines."""
    monkeypatch.setenv("DFSQ_FASTQUANT", "0")
    qc = _qconv(3, 3, False, seed=2)
    x = torch.randn(1, 3, 6, 6)
    assert fastquant.dfsq_fake_quant(x, x.mean((2, 3)), 1e-8, qc.mid, qc.points) is None
    assert "DFSQ_FASTQUANT=0" in fastquant.why_unavailable()
    assert torch.equal(qc.quantize_act(x), _torch_act(qc, x))


def test_build_failure_is_reported(monkeypatch, tmp_path):
    """A compiler that fails leaves a reason and no stray file; the caller falls back."""
    bad = tmp_path / "badcc"
    bad.write_text("#!/bin/sh\necho 'error: no' >&2\nexit 1\n")
    bad.chmod(0o755)
    cache = tmp_path / "cache"
    monkeypatch.setenv("CC", str(bad))
    monkeypatch.setenv("DFSQ_CACHE_DIR", str(cache))
    monkeypatch.setattr(fastquant, "_cache_dirs", lambda: [cache])
    assert fastquant._build() is None
    assert "failed" in fastquant._why and "error: no" in fastquant._why
    assert not any(cache.iterdir())


def test_scratch_reuses_and_grows():
    a = fastquant.scratch((2, 3, 4))
    b = fastquant.scratch((1, 2, 3))
    assert a.data_ptr() == b.data_ptr()
    c = fastquant.scratch((100, 100))
    assert c.shape == (100, 100) and c.numel() == 10000


def _minmax_qconv(c: int, bits: int, relu_input: bool, lo: float, hi: float) -> QuantConv:
    torch.manual_seed(bits)
    conv = nn.Conv2d(c, 3, 3, padding=1)
    q, z, s = quantize_weight(conv.weight, 4)
    return QuantConv(conv, name="m", index=0, relu_input=relu_input, method="minmax", act_bits=bits,
                     weight_bits=4, words=4, gap=4, weight_q=q, zero_point=z, weight_scale=s, act_range=(lo, hi))


def _torch_minmax(qc: QuantConv, x: torch.Tensor) -> torch.Tensor:
    qmax = (1 << qc.act_bits) - 1
    q = torch.clamp(torch.round(x / qc.act_step) + qc.act_zero, 0, qmax)
    return (q - qc.act_zero) * qc.act_step


@needs_kernel
@pytest.mark.parametrize("bits", [3, 4, 8])
@pytest.mark.parametrize("relu_input", [False, True])
def test_minmax_kernel_equals_torch_path(bits, relu_input):
    """Layer-wise ranges (Python-float step) and per-channel ranges (dfsq.uniform's tensors); values on the
    rounding ties (half steps), at and beyond the clamps, NaN."""
    from dfsq.uniform import set_uniform_ranges

    qc = _minmax_qconv(5, bits, relu_input, -2.7, 3.1)
    g = torch.Generator().manual_seed(bits)
    x = torch.randn(2, 5, 17, 33, generator=g) * 3
    ties = (torch.arange(-40, 40, dtype=torch.float32) + 0.5) * qc.act_step
    x[0, 0, 0, :] = ties[:33]
    x[0, 1, 0, :] = ties[33:66]
    x[1, 2, 0, :4] = torch.tensor([float("nan"), 1e30, -1e30, -0.0])
    if relu_input:
        x = x.clamp(min=0)
    want = _torch_minmax(qc, x)
    got = qc.quantize_act(x)
    assert torch.equal(torch.isnan(got), torch.isnan(want))
    ok = ~torch.isnan(want)
    assert torch.equal(got[ok], want[ok]) and torch.equal(qc(x.nan_to_num()), qc.conv(_torch_minmax(qc, x.nan_to_num())))
    # per-channel ranges, as the Uniform-MSE baseline sets them
    model = nn.Sequential(qc)
    lo = np.linspace(-3, -0.5, 5, dtype=np.float32)[None]
    hi = np.linspace(0.7, 4, 5, dtype=np.float32)[None]
    set_uniform_ranges(model, lo, hi)
    xx = x.nan_to_num()
    assert torch.equal(qc.quantize_act(xx), _torch_minmax(qc, xx))
    assert torch.equal(qc(xx), qc.conv(_torch_minmax(qc, xx)))


@needs_kernel
def test_autograd_takes_the_torch_path():
    """With a graph to build the kernel steps aside, so gradients flow as before (through mean and scale)."""
    qc = _qconv(3, 4, False, seed=4)
    x = torch.randn(1, 3, 6, 6, requires_grad=True)
    qc.quantize_act(x).sum().backward()
    assert x.grad is not None and bool(torch.isfinite(x.grad).all())
    with torch.no_grad():
        assert torch.equal(qc.quantize_act(x), _torch_act(qc, x))


@needs_kernel
def test_fakequant_speed_bench(tmp_path, test_weights, default_export, one_thread):
    """bench.fakequant_speed times both paths and records that their outputs are bit-identical."""
    import json

    from PIL import Image

    from bench.fakequant_speed import main

    img = tmp_path / "lr.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(img)
    stem = tmp_path / "res" / "fq"
    main(["--model", "edsr", "--weights", test_weights, "--params", str(default_export.parent / "params.npz"),
          "--image", str(img), "--out", str(stem)])
    res = json.loads(stem.with_suffix(".json").read_text())
    assert res["rows"]["dfsq"]["equal"] is True and res["rows"]["minmax"]["equal"] is True
    assert res["lr_shape"] == [20, 24] and res["kernel"] == "loaded"
    assert stem.with_suffix(".md").is_file() and stem.with_suffix(".png").stat().st_size > 1000
