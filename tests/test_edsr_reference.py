"""The model adapters changed nothing for EDSR, on any CPU: a seeded EDSR x2 run through calibration, fake-quant,
Min-Max, hardware mode and export against what the pre-adapter code (commit 7c12f02) produced
(``tests/data/edsr_reference.{json,npz}``, written by :mod:`tests.edsr_reference`).

Float32 convolutions sum in an order the CPU's vector unit, oneDNN's blocking and the thread count choose, so their
last bits differ between machines. Each stage is therefore checked in one of three ways.

1. **Exact (digests, ``np.array_equal``)** where the arithmetic is exact given the same inputs: the weights
   (NumPy integers times powers of two), their quantization (float64 min/max/divide/round of float32 values:
   correctly rounded IEEE operations, no reduction order), the layer list, the manifest, every export field that
   does not depend on an activation, the point selection (NumPy float64 elementwise ops, ``cumsum``, ``sort`` and
   ``searchsorted`` on the *stored* histograms; PCG64 seeding; no BLAS), and, per layer on the stored input ``x``
   and normalization: the DFSQ codes (``(x - mean) / scale`` then comparisons), the Min-Max activations
   (``round(x / step)``) and the golden integer datapath (hardware mode: integer accumulation, float64 sums
   provably below 2^53, one final rounding).
2. **One float32 stage on fixed inputs: a proven bound.** A sum of n products in float32, in *any* order (with
   or without FMA), is within gamma_n S of the exact value, gamma_n = n u / (1 - n u), u = 2^-24, S = the sum of
   the absolute terms (Higham, Accuracy and Stability, Thm 3.1); two machines are within 2 gamma_n S of each
   other. Per layer: the conv output ``y`` on the stored codes (n = C k^2 + 1 with the bias, S = |b| + sum |w||xq|
   computed in float64), and the per-channel ``mean`` of the H W values of ``x`` (S = sum |x|, then one
   correctly rounded division), whose error carries into ``maxabs = max |x - mean|`` (max is exact) and
   ``scale = maxabs + EPS`` with one rounding each.
3. **Chains of float32 convs: a relative tolerance** ``CHAIN_RTOL`` of each quantity's magnitude (the largest
   |value| of the layer or output). Worst-case bounds through 35 convs are vacuous (they multiply by sum |w| per
   layer), so the tolerance is derived from the rounding model instead: each conv adds an independent rounding
   difference of about sqrt(n) u S (S / |y| is at most about sqrt(n) for these weights), and a He-scaled network
   carries earlier differences with a gain near 1, so after L convs the relative difference is about
   sqrt(L) n u = sqrt(35) * 145 * 6e-8 = 5e-5; CHAIN_RTOL = 2e-4 leaves a factor 4. (Measured on an AMD EPYC
   with oneDNN limited to SSE4.1, AVX2 or off, MKL in its compatible mode, ATen's DEFAULT/AVX2/AVX512 kernels and
   1 or 2 threads: at most 5.3e-7 here, 4e-5 bins of histogram shift, and 0.013 of the proven bound of 2; every
   float32 conv output perturbed by a relative 4e-6 still passes, while two swapped layers, one wrong
   ``relu_input``, weights rounded down or bin centres half a bin off fail.) Discrete choices downstream of such chains
   are fixed to the reference so a last-bit difference cannot flip them: the points are selected from the stored
   histograms, and the whole-network runs (export, fake-quant, Min-Max, hardware mode) use the stored DFSQ and
   Min-Max codes. The calibration histograms themselves are compared through their earth mover's distance: a
   value crosses a bin edge with probability |d xn| / (bin width) for a density smooth at the bin scale, so the
   mean bin shift per value is at most about ``CHAIN_RTOL * bins`` (|d xn| <= 2 CHAIN_RTOL after normalization
   by max |x|); a changed binning rule (floor -> round) shifts half the values.
"""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.edsr_reference import (CALIB, DATA, LAYER_FIELDS, MANIFEST_KEYS, STATIC_FIELDS, calibration_crops, digest,
                                  export_image, seeded_edsr, weights_digest)

U = 2.0 ** -24
CHAIN_RTOL = 2e-4


def gamma(n: int) -> float:
    return n * U / (1 - n * U)


@pytest.fixture(scope="module")
def ref():
    with np.load(DATA / "edsr_reference.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return SimpleNamespace(json=json.loads((DATA / "edsr_reference.json").read_text()), **arrays)


@pytest.fixture(scope="module")
def threads1():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def run(ref, threads1):
    """Calibrate the seeded EDSR with today's code; the collected histograms and statistics are recorded, then the
    reference's stand in for them (so the selection and everything after it see the reference's inputs)."""
    import dfsq.calibrate as cal

    model = seeded_edsr()
    collected = {}
    orig = cal._Collector.take_histogram

    def take_histogram(self, i):
        collected[i] = orig(self, i)
        return ref.hist[i].astype(np.int64)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cal._Collector, "take_histogram", take_histogram)
        params = cal.calibrate(model, calibration_crops(), **CALIB)
    stats = {k: params.arrays[k] for k in ("act_min", "act_max", "static_scale")}
    params.arrays.update({k: getattr(ref, k) for k in stats})
    return SimpleNamespace(model=model, params=params, hist=np.stack([collected[i] for i in sorted(collected)]),
                           stats=stats)


def _close(got, want, tol, what):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, what
    bad = np.abs(got - want) > tol
    assert not bad.any(), (f"{what}: {bad.sum()} of {bad.size} values beyond the float32 tolerance, worst "
                           f"|diff| {np.abs(got - want).max():.3g} (tolerance {np.min(tol):.3g}..{np.max(tol):.3g})")


def _chain_close(got, want, what, axis=None):
    """Within CHAIN_RTOL of the magnitude (per index of ``axis`` when given, else of the whole array)."""
    want = np.asarray(want, np.float64)
    mag = np.abs(want).max() if axis is None else np.abs(want).reshape(want.shape[0], -1).max(1).reshape(
        (-1,) + (1,) * (want.ndim - 1))
    _close(got, want, CHAIN_RTOL * mag, what)


# --- 1. exact stages -------------------------------------------------------------------------------------------
def test_weights_layers_and_selection_exact(ref, run):
    from dfsq.calibrate import ARRAY_KEYS

    assert weights_digest(run.model) == ref.json["weights"]
    assert run.params.layers == ref.json["layers"]
    for k in ARRAY_KEYS:   # the statistics were replaced by the reference's: the selection saw its histograms
        assert digest(run.params.arrays[k]) == ref.json["params"][k], k


# --- 3. calibration statistics of the float32 network ---------------------------------------------------------
def test_calibration_statistics_within_float_noise(ref, run):
    h, hr = run.hist.astype(np.int64), ref.hist.astype(np.int64)
    assert h.shape == hr.shape
    assert np.array_equal(h.sum(-1), hr.sum(-1)), "every channel counts every pixel"
    emd = np.abs(np.cumsum(h - hr, -1)).sum((1, 2)) / hr.sum((1, 2))   # mean bin shift per value, per layer
    assert emd.max() <= CHAIN_RTOL * CALIB["bins"], f"histograms moved: mean shift {emd.max():.3g} bins"
    mag = np.maximum(np.abs(ref.act_min), np.abs(ref.act_max))
    _close(run.stats["act_min"], ref.act_min, CHAIN_RTOL * mag, "act_min")
    _close(run.stats["act_max"], ref.act_max, CHAIN_RTOL * mag, "act_max")
    _close(run.stats["static_scale"], ref.static_scale, CHAIN_RTOL * mag[:, None], "static_scale")


# --- 1 and 2. every layer on its stored input ------------------------------------------------------------------
def _ref_norm(ref, i):
    mean, maxabs, scale = (torch.from_numpy(getattr(ref, k)[i]) for k in ("mean", "maxabs", "scale"))
    x = torch.from_numpy(ref.x[i])
    return mean, maxabs, scale, (x - mean[:, :, None, None]) / scale[:, :, None, None]


def test_layers_on_fixed_inputs(ref, run):
    from dfsq.hw_mode import apply_hw_mode
    from dfsq.quantize import gather_points, quant_convs, quantize_model

    q = quant_convs(quantize_model(run.model, run.params, "dfsq"))
    mm = quant_convs(quantize_model(run.model, run.params, "minmax"))
    hw = quant_convs(apply_hw_mode(quantize_model(run.model, run.params, "dfsq")))
    files = list(ref.json["export"].values())
    assert len(q) == len(mm) == len(hw) == len(files) == 32
    for i, (qc, mc, hc) in enumerate(zip(q, mm, hw)):
        x = torch.from_numpy(ref.x[i])
        # normalization: one reduction of H W values, the rest exact or one rounding (docstring, 2)
        mean, maxabs, scale, _ = qc.normalize(x)
        xa = np.abs(ref.x[i]).astype(np.float64)
        tol_mean = 2 * (gamma(xa[0, 0].size) * xa.mean((2, 3)) + U * np.abs(ref.mean[i]))
        _close(mean, ref.mean[i], tol_mean, f"layer {i} mean")
        tol_max = tol_mean + 2 * U * (xa.max((2, 3)) + np.abs(ref.mean[i]))
        _close(maxabs, ref.maxabs[i], tol_max, f"layer {i} maxabs")
        _close(scale, ref.scale[i], tol_max + 2 * U * ref.scale[i], f"layer {i} scale")
        # with the reference's normalization: codes and the static fields exact, y within the conv bound
        qc.normalize = hc.normalize = lambda x, i=i: _ref_norm(ref, i)
        f = qc.quant_fields(x)
        assert np.array_equal(f["codes"], ref.codes[i]), f"layer {i} codes"
        for k in STATIC_FIELDS:
            assert digest(f[k]) == files[i][k], f"layer {i} {k}"
        xq = gather_points(qc.points, torch.from_numpy(ref.codes[i]).long()).double() * scale[:, :, None, None] \
            + torch.from_numpy(ref.mean[i]).double()[:, :, None, None]
        w = qc.weight_fq.double().abs()
        S = F.conv2d(xq.abs(), w, qc.bias.double().abs(), padding=qc.kernel // 2).numpy()
        _close(f["y"], ref.y[i], 2 * gamma(w[0].numel() + 1) * S, f"layer {i} y")
        assert digest(mc.quantize_act(x).numpy()) == ref.json["minmax_act"][i], f"layer {i} Min-Max activations"
        assert digest(hc(x).numpy()) == ref.json["hw_layer"][i], f"layer {i} hardware mode"


# --- 3. the whole network, with the reference's codes ----------------------------------------------------------
class _FixedCodes:
    """Stands in for a QuantConv's code table: the reference's codes of its layer, whatever the input."""

    def __init__(self, codes: np.ndarray):
        self.c = torch.from_numpy(codes.astype(np.int64))

    def codes(self, xn):
        assert tuple(xn.shape) == tuple(self.c.shape)
        return self.c


def _fix_codes(qmodel, codes):
    from dfsq.quantize import quant_convs

    for qc, c in zip(quant_convs(qmodel), codes, strict=True):
        qc.table = _FixedCodes(c)
        qc._fast_act = lambda x, reuse: None   # the torch path, which reads the table
    return qmodel


def test_export_and_network_outputs(ref, run, tmp_path, monkeypatch):
    import dfsq.export as ex
    import dfsq.hw_mode as hwm
    from dfsq.quantize import quant_convs, quantize_model

    codes = ref.codes
    quantize = ex.quantize_model
    monkeypatch.setattr(ex, "quantize_model", lambda *a, **k: _fix_codes(quantize(*a, **k), codes))
    img = export_image()
    man = ex.export(run.model, run.params, img, tmp_path / "exp", crop=(200, 220, 8, 8))
    assert [{k: e[k] for k in MANIFEST_KEYS} for e in man["layers"]] == ref.json["manifest_layers"]
    spec = dict(man["spec"])
    assert spec.pop("kernel", 3) == 3   # the spec gained the per-layer kernel; every other width is equal
    assert spec == ref.json["manifest_spec"]
    got = {k: [] for k in LAYER_FIELDS}
    for e in man["layers"]:
        with np.load(tmp_path / "exp" / e["file"], allow_pickle=False) as z:
            for k in STATIC_FIELDS:
                assert digest(z[k]) == ref.json["export"][e["file"]][k], (e["file"], k)
            for k in LAYER_FIELDS:
                got[k].append(z[k])
    for k in ("x", "y", "mean", "maxabs", "scale"):
        _chain_close(np.stack(got[k]), getattr(ref, k), f"export {k}", axis=0)

    x = torch.from_numpy(np.array(img, order="C")).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        fq = _fix_codes(quantize_model(run.model, run.params, "dfsq"), codes)
        _chain_close(fq(x).numpy(), ref.out_fake_quant, "fake-quant output")
        mm = quantize_model(run.model, run.params, "minmax")
        for qc, c in zip(quant_convs(mm), ref.minmax_codes, strict=True):
            qc.quantize_act = lambda x, qc=qc, c=c: (torch.from_numpy(c).float() - qc.act_zero) * qc.act_step
        _chain_close(mm(x).numpy(), ref.out_minmax, "Min-Max output")
        hw = hwm.apply_hw_mode(quantize_model(run.model, run.params, "dfsq"))
        by_points = {id(qc.forward.points): c for qc, c in zip(quant_convs(hw), ref.hw_codes, strict=True)}
        monkeypatch.setattr(hwm, "derive_codes", lambda x, mean, scale, points: by_points[id(points)])
        _chain_close(hw(x).numpy(), ref.out_hw, "hardware-mode output")
