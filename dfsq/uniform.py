"""Uniform activation quantizers beside the paper's Min-Max: the measurements behind docs/quantization.md's
"Why our Min-Max is weak", and the stronger uniform PTQ baseline the results table shows next to it.

The paper's Min-Max (``method="minmax"`` of :mod:`dfsq.quantize`) takes one [min, max] per layer from the
calibration data. Here the same asymmetric uniform quantizer (zero point, round half to even, clamp to
[0, 2^b - 1], lo = 0 after a ReLU) gets its range from one of several rules:

* granularity ``layer`` (one range per conv input) or ``channel`` (one per input channel);
* clipping ``minmax`` (the observed extremes), ``p99.9`` / ``p99.99`` (percentiles of |x| per side), or ``mse``
  (the range scaled by the factor in 0.05..1 that minimizes the quantization MSE of the calibration sample: the
  standard MSE-optimal clipping of PTQ toolkits).

:func:`collect_stats` runs the FP network once over the calibration images and keeps, per quantized conv, the
exact per-channel min/max and a fixed-seed random sample of ``samples_per_image`` pixel vectors per image (from
which percentiles and MSE are computed). :func:`uniform_ranges` turns them into per-channel (lo, hi) arrays, and
:func:`quantize_uniform` builds the fake-quantized network (weights exactly as for Min-Max and DFSQ:
per-output-channel asymmetric min/max).
"""
from __future__ import annotations

import sys

import numpy as np
import torch

from golden.errors import UserError

from .model import quantized_convs

GRANULARITIES = ("layer", "channel")
CLIPS = ("minmax", "p99.9", "p99.99", "mse")
ALPHAS = np.linspace(0.05, 1.0, 39)


def patch_images(n: int, scale: int, hr_patch: int = 192, seed: int = 0, calib=None):
    """LR inputs of one random ``hr_patch`` x ``hr_patch`` HR crop from each of the first ``n`` calibration images
    (the paper calibrates on 32 DIV2K images with HR patch 192: LR 96 x 96 at x2, 48 x 48 at x4)."""
    from .calibrate import DEFAULT_CALIB
    from .data import list_images, load_rgb, make_lr

    rng = np.random.default_rng(seed)
    paths = list_images(calib if calib is not None else DEFAULT_CALIB)[:n]
    if not paths:
        raise UserError(f"no images in {calib or DEFAULT_CALIB}")
    out = []
    for p in paths:
        hr = load_rgb(p)
        h, w = hr.shape[:2]
        if min(h, w) < hr_patch:
            raise UserError(f"{p.name} is smaller than the {hr_patch}-pixel patch")
        y, x = int(rng.integers(0, h - hr_patch + 1)), int(rng.integers(0, w - hr_patch + 1))
        out.append((p.name, make_lr(np.ascontiguousarray(hr[y:y + hr_patch, x:x + hr_patch]), scale)))
    return out


@torch.no_grad()
def collect_stats(model, images, samples_per_image: int = 1024, seed: int = 0) -> list[dict]:
    """Per quantized conv: ``name``, ``relu_input``, ``min``/``max`` (C,) exact over every pixel, ``sample``
    (S, C) float32 random pixel vectors (``samples_per_image`` per image, fixed seed)."""
    from .adapters import quantized_layers

    convs = quantized_convs(model)
    relu = [q.relu_input for q in quantized_layers(model)]
    gen = torch.Generator().manual_seed(seed)
    stats = [{"name": n, "relu_input": r, "min": None, "max": None, "sample": []} for (n, _), r in zip(convs, relu)]

    def hook(i):
        def f(module, inputs):
            x = inputs[0].detach().float()
            c = x.shape[1]
            flat = x.permute(1, 0, 2, 3).reshape(c, -1)
            s = stats[i]
            lo, hi = flat.min(1).values, flat.max(1).values
            s["min"] = lo if s["min"] is None else torch.minimum(s["min"], lo)
            s["max"] = hi if s["max"] is None else torch.maximum(s["max"], hi)
            idx = torch.randint(0, flat.shape[1], (samples_per_image,), generator=gen)
            s["sample"].append(flat[:, idx].T.contiguous())
        return f

    handles = [conv.register_forward_pre_hook(hook(i)) for i, (_, conv) in enumerate(convs)]
    try:
        for _, img in images:
            model(torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float())
    finally:
        for h in handles:
            h.remove()
    for s in stats:
        s["min"], s["max"] = s["min"].numpy(), s["max"].numpy()
        s["sample"] = torch.cat(s["sample"]).numpy()
    return stats


def _fake_quant(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, bits: int) -> np.ndarray:
    """The uniform quantizer of :class:`dfsq.quantize.QuantConv` (``minmax``) with broadcastable lo/hi."""
    qmax = (1 << bits) - 1
    lo, hi = np.minimum(lo, 0.0), np.maximum(hi, 0.0)
    s = np.where(hi > lo, (hi - lo) / qmax, 1.0).astype(np.float32)
    z = np.clip(np.round(-lo / s), 0, qmax)
    return (np.clip(np.round(x / s) + z, 0, qmax) - z) * s


def _mse_scale(sample: np.ndarray, lo: np.ndarray, hi: np.ndarray, bits: int) -> np.ndarray:
    """Per column of ``sample`` (S, C): the factor in :data:`ALPHAS` whose range (alpha*lo, alpha*hi) gives the
    least quantization MSE."""
    errs = np.stack([((_fake_quant(sample, a * lo, a * hi, bits) - sample) ** 2).mean(0) for a in ALPHAS])
    return ALPHAS[errs.argmin(0)]


def uniform_ranges(stats: list[dict], bits: int, granularity: str = "layer", clip: str = "minmax"):
    """(lo, hi), each (L, C) float32 for every quantized conv (lists of (C_l,) arrays when the layers' channel
    counts differ, as in RDN); lo = 0 after a ReLU."""
    from .calibrate import stack_if_uniform

    if granularity not in GRANULARITIES:
        raise UserError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    if clip not in CLIPS:
        raise UserError(f"clip must be one of {CLIPS}, got {clip!r}")
    los, his = [], []
    for s in stats:
        smp = s["sample"].astype(np.float64)
        C = smp.shape[1]
        if granularity == "layer":
            smp = smp.reshape(-1, 1)
            lo, hi = np.array([s["min"].min()]), np.array([s["max"].max()])
        else:
            lo, hi = s["min"].astype(np.float64), s["max"].astype(np.float64)
        if clip.startswith("p"):
            q = float(clip[1:])
            lo = np.minimum(np.percentile(smp, 100 - q, axis=0), 0.0)
            hi = np.maximum(np.percentile(smp, q, axis=0), 0.0)
        if s["relu_input"]:
            lo = np.zeros_like(lo)
        if clip == "mse":
            a = _mse_scale(smp, lo, hi, bits)
            lo, hi = a * lo, a * hi
        los.append(np.broadcast_to(lo, (C,)).astype(np.float32))
        his.append(np.broadcast_to(hi, (C,)).astype(np.float32))
    return stack_if_uniform(los), stack_if_uniform(his)


def set_uniform_ranges(qmodel, lo: np.ndarray, hi: np.ndarray) -> None:
    """Give every ``minmax`` QuantConv of ``qmodel`` per-channel ranges (lo, hi) (L, C), in place: the same
    quantizer as the paper's Min-Max (zero point, round half to even, clamp) with one step and zero point per
    input channel."""
    from .quantize import midpoints, quant_convs

    convs = quant_convs(qmodel)
    if len(convs) != len(lo):
        raise UserError(f"{len(lo)} ranges for {len(convs)} quantized convs")
    for qc, l, h in zip(convs, lo, hi):
        if qc.method != "minmax":
            raise UserError(f"{qc.name}: per-channel ranges need the minmax quantizer, not {qc.method}")
        qmax = (1 << qc.act_bits) - 1
        l = torch.as_tensor(np.minimum(l, 0.0), dtype=torch.float64)
        h = torch.as_tensor(np.maximum(h, 0.0), dtype=torch.float64)
        if qc.relu_input:
            l = torch.zeros_like(l)
        s = torch.where(h > l, (h - l) / qmax, torch.ones_like(h)).float()
        z = torch.clamp(torch.round(-l / s.double()), 0, qmax).float()
        qc.act_step = s.view(1, -1, 1, 1)
        qc.act_zero = z.view(1, -1, 1, 1)
        qc.act_range = torch.stack([l.float().min(), h.float().max()])
        levels = (torch.arange(1 << qc.act_bits, dtype=torch.float32)[None] - z[:, None]) * s[:, None]
        qc.points = levels.contiguous()
        qc.mid = midpoints(qc.points)


def quantize_uniform(model, params, lo: np.ndarray, hi: np.ndarray):
    """A copy of ``model`` quantized like Min-Max (weights from ``params``) with activation ranges (lo, hi)."""
    from .quantize import quantize_model

    qmodel = quantize_model(model, params, "minmax")
    set_uniform_ranges(qmodel, lo, hi)
    return qmodel


def outlier_table(stats: list[dict], bits: int = 4) -> list[dict]:
    """Per layer: range from min/max vs the 99.99th/99.9th percentile range of the sample; how much of the
    range the bulk of the values uses; how many sampled values sit exactly on a rounding tie of the layer's
    ``bits``-bit Min-Max quantizer (where half-to-even and half-away-from-zero differ)."""
    rows = []
    for s in stats:
        lo_l, hi_l = min(float(s["min"].min()), 0.0), max(float(s["max"].max()), 0.0)
        if s["relu_input"]:
            lo_l = 0.0
        step = np.float32((hi_l - lo_l) / ((1 << bits) - 1))
        t = s["sample"].astype(np.float32) / step
        ties = int(np.count_nonzero(t - np.floor(t) == 0.5))
        smp = s["sample"].reshape(-1)
        lo, hi = float(s["min"].min()), float(s["max"].max())
        if s["relu_input"]:
            lo = 0.0
        r = hi - lo
        p = {q: float(np.percentile(smp, q)) for q in (0.01, 0.1, 99.9, 99.99)}
        r9999 = p[99.99] - (0.0 if s["relu_input"] else p[0.01])
        r999 = p[99.9] - (0.0 if s["relu_input"] else p[0.1])
        rows.append({"layer": s["name"], "relu_input": s["relu_input"], "min": lo, "max": hi,
                     "range_over_p99.99": r / r9999 if r9999 > 0 else float("inf"),
                     "range_over_p99.9": r / r999 if r999 > 0 else float("inf"),
                     "ties": ties, "sampled": int(t.size),
                     "chan_range_median_over_layer": float(np.median(s["max"] - (0 if s["relu_input"] else s["min"]))
                                                           / r)})
    return rows


def build_uniform(model, args):
    """The ``uniform`` network of ``python -m dfsq.evaluate --method uniform``: per-channel, MSE-clipped
    activation ranges from the calibration images (``args.calib``, ``args.images``, ``args.seed``)."""
    from .calibrate import calibration_images

    if args.act_bits != args.weight_bits:
        raise UserError("--method uniform needs --act-bits equal to --weight-bits")
    images = calibration_images(getattr(args, "calib", None), getattr(args, "images", 32), int(model.scale))
    stats = collect_stats(model, images, seed=getattr(args, "seed", 0))
    lo, hi = uniform_ranges(stats, args.act_bits, "channel", "mse")
    return quantize_uniform(model, minmax_params(model, args.act_bits, stats, str(getattr(args, "weights", ""))),
                            lo, hi)


def minmax_params(model, bits: int, stats: list[dict] | None = None, weights: str = ""):
    """Calibration parameters for the uniform quantizers without the DFSQ point selection (seconds, not
    minutes): the weights quantized exactly as :func:`dfsq.calibrate.calibrate` does, the layer min/max from
    ``stats`` (or 0 when absent), dummy DFSQ points (unused by ``minmax``)."""
    from golden.spec import DEFAULT_GAP, WordSet

    from .adapters import model_config
    from .calibrate import CalibParams, stack_if_uniform, weights_fingerprint
    from .quantize import quantize_weight

    convs = quantized_convs(model)
    L, K = len(convs), 1 << bits
    ws = WordSet(4, DEFAULT_GAP)
    wq, zp, sc = zip(*(quantize_weight(conv.weight, bits) for _, conv in convs))
    first = np.sort(np.asarray(ws.ints))[:K].astype(np.int32)
    pi = [np.broadcast_to(first, (conv.in_channels, K)).copy() for _, conv in convs]
    arrays = {"point_ints": stack_if_uniform(pi), "points": stack_if_uniform([(p / ws.denom).astype(np.float32)
                                                                              for p in pi]),
              "weight_q": stack_if_uniform([w.numpy().astype(np.uint8) for w in wq]),
              "zero_point": stack_if_uniform([z.numpy().astype(np.int32) for z in zp]),
              "weight_scale": stack_if_uniform([x.numpy().astype(np.float32) for x in sc]),
              "act_min": np.array([s["min"].min() for s in stats] if stats else np.zeros(L), np.float32),
              "act_max": np.array([s["max"].max() for s in stats] if stats else np.zeros(L), np.float32)}
    config = {**model_config(model), "scale": int(model.scale), "act_bits": bits, "weight_bits": bits, "words": 4,
              "gap": DEFAULT_GAP, "norm": True, "layerwise": False, "weights": weights,
              "weights_fingerprint": weights_fingerprint(model)}
    return CalibParams(config, [n for n, _ in convs], arrays, {})


def load_stats(path) -> dict:
    """The format validator of a statistics cache (:mod:`golden.formats` ``uniform-stats``): ``{"tag", "names",
    "layers": [(min, max, sample), ...]}``, every array finite with min <= max; a one-line UserError naming the file
    and the field otherwise."""
    from pathlib import Path

    from golden.formats import read_npz

    path = Path(path)
    d = read_npz(path, "statistics cache")
    for key in ("tag", "names"):
        if key not in d or d[key].dtype.kind != "U":
            raise UserError(f"{path}: field {key!r} is missing or not text")
    names = [str(n) for n in np.atleast_1d(d["names"])]
    if "min" in d:
        lo, hi, sample = (d.get(k) for k in ("min", "max", "sample"))
        if hi is None or sample is None or not (len(lo) == len(hi) == len(sample) == len(names)):
            raise UserError(f"{path}: fields 'min', 'max', 'sample' and 'names' disagree in length")
        layers = [(lo[i], hi[i], sample[i]) for i in range(len(names))]
    else:
        try:
            layers = [(d[f"min_{i}"], d[f"max_{i}"], d[f"sample_{i}"]) for i in range(len(names))]
        except KeyError as exc:
            raise UserError(f"{path}: field {exc.args[0]!r} is missing") from None
    for name, (a, b, c) in zip(names, layers):
        for key, arr in (("min", a), ("max", b), ("sample", c)):
            if arr.dtype.kind != "f" or not np.isfinite(arr).all():
                raise UserError(f"{path}: layer {name}: field {key!r} is not finite floating point")
        if a.shape != b.shape or np.any(a > b):
            raise UserError(f"{path}: layer {name}: 'min' exceeds 'max' (or their shapes differ)")
    return {"tag": str(d["tag"]), "names": names, "layers": layers}


def cached_stats(model, images, path, samples_per_image: int = 1024, seed: int = 0) -> list[dict]:
    """:func:`collect_stats`, saved to / loaded from ``path`` (.npz), tied to the weights' fingerprint and the
    sampling settings (a stale file is recomputed). ``images`` is a list or a zero-argument callable."""
    from pathlib import Path

    from golden.files import atomic_output

    from .adapters import quantized_layers
    from .calibrate import weights_fingerprint

    path = Path(path)
    tag = f"{weights_fingerprint(model)}/{samples_per_image}/{seed}"
    if path.is_file():
        try:
            cached = load_stats(path)
        except UserError as exc:   # a damaged cache is recomputed, never half-used
            print(f"warning: {exc}; recomputing it", file=sys.stderr)
            cached = None
        relu = {q.name: q.relu_input for q in quantized_layers(model)}
        if cached is not None and cached["tag"] == tag and sorted(cached["names"]) == sorted(relu):
            return [{"name": n, "relu_input": relu[n], "min": a, "max": b, "sample": c}
                    for n, (a, b, c) in zip(cached["names"], cached["layers"])]
    st = collect_stats(model, images() if callable(images) else images, samples_per_image, seed)
    arrays = {"tag": np.array(tag), "names": np.array([s["name"] for s in st])}
    if len({s["min"].shape for s in st}) == 1 and len({s["sample"].shape for s in st}) == 1:
        arrays.update(min=np.stack([s["min"] for s in st]), max=np.stack([s["max"] for s in st]),
                      sample=np.stack([s["sample"] for s in st]))
    else:
        for i, s_ in enumerate(st):
            arrays.update({f"min_{i}": s_["min"], f"max_{i}": s_["max"], f"sample_{i}": s_["sample"]})
    with atomic_output(path, ".npz") as tmp:
        np.savez(tmp, **arrays)
    return st


def uniform_points(bits: int, relu_input: bool) -> np.ndarray:
    """2^b uniform points of the ``dfsq-uniform`` baseline in the normalized range: [-1, 1], or [0, 1] for a
    post-ReLU input (DFSQ normalizes those without subtracting the mean, so they lie in [0, 1]). Defined once in
    golden.spec.UniformPointSet (integers over 2^b - 1), so the hardware-exact mode and the engine use the same
    points."""
    from golden.spec import UniformPointSet

    ps = UniformPointSet(bits)
    return (ps.channel_ints(relu_input) / ps.denom).astype(np.float32)


def quantize_dfsq_uniform(model, bits: int, weights: str = ""):
    """A copy of ``model`` with DFSQ's per-(sample, channel) normalization and 2^b uniform points per channel
    (``--method dfsq-uniform``): the quantizer of the normalized uniform engine. Weights as every method. Each
    QuantConv's ``point_ints`` are the points' integers over 2^b - 1 (golden.spec.UniformPointSet), so
    ``dfsq.hw_mode.apply_hw_mode(qmodel, point_set="uniform")`` runs it on the engine's integer datapath."""
    from golden.spec import UniformPointSet

    from .quantize import CodeTable, midpoints, quant_convs, quantize_model

    ps = UniformPointSet(bits)
    qmodel = quantize_model(model, minmax_params(model, bits, None, weights), "dfsq")
    for qc in quant_convs(qmodel):
        ints = torch.from_numpy(ps.channel_ints(qc.relu_input)).expand(qc.in_channels, -1).contiguous()
        pts = torch.from_numpy(uniform_points(bits, qc.relu_input)).expand(qc.in_channels, -1).contiguous()
        qc.method = "dfsq-uniform"
        qc.points = pts
        qc.mid = midpoints(pts)
        qc.table = CodeTable(qc.mid)
        qc.point_ints = ints.to(torch.int32)
    return qmodel


def build_dfsq_uniform(model, args):
    """The ``dfsq-uniform`` network of ``python -m dfsq.evaluate`` (no activation calibration: the normalization is
    per sample); ``dfsq-uniform-hw``: the same on the normalized uniform engine's integer datapath (golden model,
    ``--denorm/--sigma-bits/--shift-bits/--scale-bits`` as for ``dfsq-hw``)."""
    if args.act_bits != args.weight_bits:
        raise UserError(f"--method {args.method} needs --act-bits equal to --weight-bits")
    qmodel = quantize_dfsq_uniform(model, args.act_bits, str(getattr(args, "weights", "")))
    if args.method == "dfsq-uniform-hw":
        from .hw_mode import apply_hw_mode

        apply_hw_mode(qmodel, scale_bits=args.scale_bits, denorm=args.denorm, sigma_bits=args.sigma_bits,
                      shift_bits=args.shift_bits, point_set="uniform")
    return qmodel
