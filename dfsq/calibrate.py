"""Calibrate DFSQ (and the Min-Max baseline) on a few images and write a versioned parameter artifact.

    python -m dfsq.calibrate --weights default --scale 2 --act-bits 4 --weight-bits 4 --words 4 \
        [--calib DIR] [--images 32] [--seed S] [--no-norm] [--layerwise] [--restarts R] [--bins B] \
        [--no-refine] [--fill] --out PARAMS.npz

One forward pass of the full-precision network (``--model edsr|rdn``) over the calibration images (the LR
versions, MATLAB bicubic, of the first ``--images`` files of ``--calib`` in sorted order; default
../shared/data/train/BSD200, else images that ship with scikit-image) records, for the input of each quantized
conv (the model's adapter, :mod:`dfsq.adapters`, lists them: EDSR's 32 body convs, RDN's 146 at config B):

* a per-channel histogram (``--bins`` equal bins over [-1, 1]) of the normalized activations of every pixel of
  every image (normalized per sample and channel exactly as at inference), from which the points are selected
  by the vectorized weighted k-means of :mod:`dfsq.select` (histogram-weighted 1-D k-means: the cost does not
  grow with the number of pixels);
* the layer's min and max (the Min-Max baseline) and each channel's max |x| (the ``--no-norm`` ablation).

The artifact (see docs/quantization.md) is one ``.npz`` (``np.load(..., allow_pickle=False)``) holding the arrays
below and a ``meta`` JSON string, plus the same metadata as a ``.json`` sidecar for people (shapes for L layers
of C inputs and O outputs, as EDSR's (L = 32, C = O = 64); when the layers' shapes differ, as in RDN, each
per-layer array is stored flattened and concatenated, with the per-layer shapes in ``meta["packed"]``):
``point_ints`` (32, C, 2^b) int32, ``points`` (32, C, 2^b) float32, ``loss`` / ``kmeans_loss`` (32, C) float64,
``restart`` (32, C) int16, ``weight_q`` (32, O, C, k, k) uint8, ``zero_point`` (32, O) int32, ``weight_scale``
(32, O) float32, ``act_min`` / ``act_max`` (32,) float32, ``static_scale`` (32, C) float32.
"""
from __future__ import annotations

import hashlib
import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from golden.args import Parser
from golden.errors import UserError, cli_main
from golden.files import atomic_output, check_output_file
from golden.spec import (ACT_BITS_RANGE, DEFAULT_GAP, EPS, SPEC_VERSION, WEIGHT_BITS_RANGE, WORDS_RANGE, SpecError,
                         WordSet)

from .data import TRAIN_ROOT, list_images, load_rgb, make_lr, modcrop, sample_images
from .adapters import get_module, model_config, quantized_layers
from .model import ARCHS
from .quantize import quantize_weight
from .select import DEFAULT_RESTARTS, Prefix, histogram_values, kmeans_select
from .weights import weights_option

FORMAT = "dfsq-params"
VERSION = 1
DEFAULT_BINS = 4096
DEFAULT_CALIB = TRAIN_ROOT / "BSD200"
ARRAY_KEYS = ("point_ints", "points", "loss", "kmeans_loss", "restart", "weight_q", "zero_point", "weight_scale",
              "act_min", "act_max", "static_scale")


@dataclass
class CalibParams:
    """A calibration result: ``config`` (what it is valid for, including ``model`` and, for RDN,
    ``rdn_config``), ``layers`` (names in network order), ``arrays`` (see the module docstring; per-layer arrays
    are stacked when every layer has the same shape, as for EDSR, else a list with one array per layer),
    ``info`` (images, timings, versions: informative only) and ``layer_info`` (the adapter's description of each
    layer: name, kernel, in_channels, out_channels, relu_input). ``arrays[key][i]`` is layer i's array either way."""

    config: dict
    layers: list[str]
    arrays: dict[str, np.ndarray | list[np.ndarray]]
    info: dict = field(default_factory=dict)
    layer_info: list[dict] = field(default_factory=list)

    @property
    def packed(self) -> bool:
        return any(isinstance(v, list) for v in self.arrays.values())

    def meta(self) -> dict:
        m = {"format": FORMAT, "version": VERSION, "config": self.config, "layers": self.layers,
             "info": self.info}
        if self.layer_info:
            m["layer_info"] = self.layer_info
        if self.packed:
            m["packed"] = {k: [list(a.shape) for a in v] for k, v in self.arrays.items() if isinstance(v, list)}
        return m


def check_bits(act_bits: int, weight_bits: int, words: int) -> None:
    for name, v, (lo, hi) in (("act-bits", act_bits, ACT_BITS_RANGE), ("weight-bits", weight_bits, WEIGHT_BITS_RANGE),
                              ("words", words, WORDS_RANGE)):
        if not isinstance(v, (int, np.integer)) or not lo <= v <= hi:
            raise UserError(f"--{name} must be an integer in {lo}..{hi}, got {v!r}")


def weights_fingerprint(model: torch.nn.Module) -> str:
    """sha256 of every parameter (float32 bytes, sorted keys): ties a params file to the weights it was made for."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().float().contiguous().numpy().tobytes())
    return h.hexdigest()


def calibration_images(calib: str | Path | None, n: int, scale: int = 2) -> list[tuple[str, np.ndarray]]:
    """LR network inputs (name, uint8 (H, W, 3)) of the first ``n`` images of ``calib`` in sorted order
    (default ../shared/data/train/BSD200; when that is absent and no folder was given, scikit-image's images)."""
    if not isinstance(n, int) or n < 1:
        raise UserError(f"--images must be a positive integer, got {n!r}")
    if calib is None and not DEFAULT_CALIB.is_dir():
        found = sample_images(n)
        if not found:
            raise UserError(f"no calibration images: {DEFAULT_CALIB} is absent and no sample image loads")
        items = found
    else:
        paths = list_images(calib if calib is not None else DEFAULT_CALIB)[:n]
        if not paths:
            raise UserError(f"no images in {calib or DEFAULT_CALIB}")
        items = [(p.name, load_rgb(p)) for p in paths]
    out = []
    for name, hr in items:
        hr = modcrop(hr, scale)
        if min(hr.shape[:2]) < 4 * scale:
            raise UserError(f"calibration image {name} is too small ({hr.shape[1]}x{hr.shape[0]})")
        out.append((name, make_lr(hr, scale)))
    return out


def stack_if_uniform(arrays: list[np.ndarray]):
    """One stacked array when every layer's array has the same shape (EDSR: the original (32, ...) layout),
    else the list itself (RDN: per-layer channel counts differ; saved packed, see :func:`save_params`)."""
    if all(a.shape == arrays[0].shape for a in arrays):
        return np.stack(arrays)
    return list(arrays)


def _to_tensor(img: np.ndarray) -> torch.Tensor:
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[2] != 3:
        raise UserError(f"a calibration image must be (H, W, 3), got {img.shape}")
    if not np.all(np.isfinite(img)):
        raise UserError("a calibration image holds NaN or infinite values")
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float()


class _Collector:
    """Forward pre-hooks on the quantized convs (from the model's adapter) of a full-precision network that
    accumulate the calibration statistics. Memory stays flat whatever the number of images: per layer one
    histogram of C x bins counts (int32, widened to int64 only if a layer sees 2^31 pixels per channel) and the
    per-channel min and max; no activation is kept after its hook returns. A layer whose input is a prefix of
    another's (``QLayer.input_prefix_of``: RDN's RDB convs) is not hooked: its statistics are the first channels
    of the other layer's."""

    def __init__(self, model, bins: int, norm: bool, static_scale: list[torch.Tensor] | None, stats_tile=None):
        self.stats_tile = stats_tile   # per-tile statistics (dfsq.tile_stats), else per feature map
        self.qlayers = quantized_layers(model)
        self.convs = [(q.name, get_module(model, q.name)) for q in self.qlayers]
        L = len(self.convs)
        index = {q.name: i for i, q in enumerate(self.qlayers)}
        # source[i]: the layer whose hook records layer i's statistics (itself unless its input is a prefix)
        self.source = []
        for q in self.qlayers:
            j = index.get(q.input_prefix_of, None) if q.input_prefix_of else None
            ok = (j is not None and self.qlayers[j].input_prefix_of is None and self.qlayers[j].in_channels
                  >= q.in_channels and self.qlayers[j].relu_input == q.relu_input
                  and (static_scale is None or norm))
            self.source.append(j if ok else index[q.name])
        self.bins, self.norm, self.static_scale = bins, norm, static_scale
        self.hist = [torch.zeros(q.in_channels * bins, dtype=torch.int32) if self.source[i] == i else None
                     for i, q in enumerate(self.qlayers)]
        self.pixels = [0] * L
        self.chan_min = [torch.full((q.in_channels,), float("inf")) for q in self.qlayers]
        self.chan_max = [torch.full((q.in_channels,), float("-inf")) for q in self.qlayers]
        self.handles = [conv.register_forward_pre_hook(self._hook(i)) for i, (_, conv) in enumerate(self.convs)
                        if self.source[i] == i]
        self.collect_hist = True

    def _hook(self, i):
        relu = self.qlayers[i].relu_input

        def hook(module, inputs):
            x = inputs[0].detach().float()
            cmin, cmax = x.amin((0, 2, 3)), x.amax((0, 2, 3))  # NaN propagates: the finiteness check is free
            if not (torch.isfinite(cmin).all() and torch.isfinite(cmax).all()):
                raise UserError(f"activations at {self.convs[i][0]} are not finite (bad weights or input?)")
            self.chan_min[i] = torch.minimum(self.chan_min[i], cmin)
            self.chan_max[i] = torch.maximum(self.chan_max[i], cmax)
            if not self.collect_hist:
                return
            n, c = x.shape[:2]
            # the float32 ops of contract 1 in the same order (in place where that changes no rounding):
            # xn = (x - mean) / (max|x - mean| + EPS); bin = floor((xn + 1) * bins / 2), clamped
            if self.norm and self.stats_tile is not None:
                from .tile_stats import tile_normalize

                d = tile_normalize(x, relu, self.stats_tile)
            elif self.norm:
                mean = torch.zeros(n, c) if relu else x.mean((2, 3))
                d = x - mean[:, :, None, None]
                maxabs = torch.maximum(d.amax((2, 3)), -d.amin((2, 3)))  # == d.abs().amax((2, 3)), exactly
                d.div_((maxabs + EPS)[:, :, None, None])
            else:
                d = (x / self.static_scale[i][None, :, None, None]).clamp_(-1.0, 1.0)
            d.add_(1.0).mul_(self.bins / 2).floor_().clamp_(0, self.bins - 1)
            idx = d.long().add_((torch.arange(c) * self.bins)[None, :, None, None])
            counts = torch.bincount(idx.view(-1), minlength=c * self.bins)
            self.pixels[i] += n * x.shape[2] * x.shape[3]
            if self.pixels[i] > np.iinfo(np.int32).max and self.hist[i].dtype == torch.int32:
                self.hist[i] = self.hist[i].long()
            self.hist[i] += counts.to(self.hist[i].dtype)

        return hook

    def layer_stats(self):
        """Per-layer (act_min (L,), act_max (L,), per-channel max |x| list): shared layers read their source's
        first channels."""
        L = len(self.qlayers)
        act_min, act_max, absmax = torch.empty(L), torch.empty(L), []
        for i, q in enumerate(self.qlayers):
            s, c = self.source[i], q.in_channels
            lo, hi = self.chan_min[s][:c], self.chan_max[s][:c]
            act_min[i], act_max[i] = lo.min(), hi.max()
            absmax.append(torch.maximum(-lo, hi))  # == x.abs().amax((0, 2, 3)), exactly
        return act_min, act_max, absmax

    def take_histogram(self, i: int) -> np.ndarray:
        """Layer i's (C, bins) int64 counts; a source's counts are freed once no later layer needs them."""
        s, c = self.source[i], self.qlayers[i].in_channels
        h = self.hist[s][:c * self.bins].view(c, self.bins).numpy().astype(np.int64)
        if all(self.source[j] != s for j in range(i + 1, len(self.qlayers))):
            self.hist[s] = None
        return h

    def histograms(self) -> list[np.ndarray]:
        """Per layer, (C, bins) int64 counts."""
        return [self.take_histogram(i) for i in range(len(self.qlayers))]

    def close(self):
        for h in self.handles:
            h.remove()


@torch.no_grad()
def _run(model, inputs, collector, progress, desc):
    for name, img in tqdm(inputs, desc=desc, disable=not progress, leave=False):
        model(_to_tensor(img))


def collect_histograms(model, images, bins: int = DEFAULT_BINS, progress: bool = False):
    """Histograms over [-1, 1] of the per-sample, per-channel normalized inputs of the quantized convs of
    ``model`` over ``images`` (network inputs), exactly as :func:`calibrate` collects them: an (L, C, bins) int64
    array when every layer has C input channels (EDSR: (32, 64, bins)), else a list of (C_i, bins) arrays."""
    inputs = [(it if isinstance(it, tuple) else (f"image{i}", it)) for i, it in enumerate(images)]
    col = _Collector(model.eval(), bins, True, None)
    try:
        _run(model, inputs, col, progress, "collecting")
    finally:
        col.close()
    return stack_if_uniform(col.histograms())


def calibrate(model, images, *, act_bits: int = 4, weight_bits: int = 4, words: int = 4, gap: int = DEFAULT_GAP,
              seed: int = 0, norm: bool = True, layerwise: bool = False, restarts: int = DEFAULT_RESTARTS,
              bins: int = DEFAULT_BINS, refine: bool = True, fill: bool = False, weights: str = "",
              progress: bool = False, stats_tile=None) -> CalibParams:
    """Calibrate ``model`` (a full-precision EDSR or RDN, left unchanged) on ``images``: network inputs, a list of
    uint8 (H, W, 3) arrays or (name, array) pairs. Deterministic for a seed. ``stats_tile``: normalize per tile
    (:mod:`dfsq.tile_stats`, e.g. ``"64x64"``), recorded in the config; default per feature map."""
    check_bits(act_bits, weight_bits, words)
    try:
        ws = WordSet(words, gap)
    except SpecError as exc:
        raise UserError(str(exc)) from None
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UserError(f"seed must be a non-negative integer, got {seed!r}")
    if restarts < 3:
        raise UserError(f"--restarts must be at least 3, got {restarts}")
    if not 64 <= bins <= 1 << 16:
        raise UserError(f"--bins must be in 64..65536, got {bins}")
    inputs = [(it if isinstance(it, tuple) else (f"image{i}", it)) for i, it in enumerate(images)]
    if not inputs:
        raise UserError("no calibration images")
    model = model.eval()
    t0, c0 = time.perf_counter(), time.process_time()
    static_scale = None
    if not norm:  # first pass: per-channel max |x| (the static scale of the ablation)
        col = _Collector(model, bins, True, None)
        col.collect_hist = False
        try:
            _run(model, inputs, col, progress, "calibration pass 1/2")
        finally:
            col.close()
        static_scale = [m + EPS for m in col.layer_stats()[2]]
    if stats_tile is not None:
        from .tile_stats import tile_name

        if not norm:
            raise UserError("per-tile statistics belong to the normalized method (not --no-norm)")
        stats_tile = tile_name(stats_tile)
    col = _Collector(model, bins, norm, static_scale, stats_tile)
    try:
        _run(model, inputs, col, progress, "calibration" if norm else "calibration pass 2/2")
    finally:
        col.close()
    t_collect, c_collect = time.perf_counter() - t0, time.process_time() - c0

    t1 = time.perf_counter()
    L = len(col.convs)
    K = 1 << act_bits
    values = histogram_values(bins)
    chans = [q.in_channels for q in col.qlayers]
    point_ints = [np.zeros((C, K), np.int64) for C in chans]
    loss = [np.zeros(C) for C in chans]
    kloss = [np.zeros(C) for C in chans]
    restart = [np.zeros(C, np.int16) for C in chans]
    for i in tqdm(range(L), desc="selecting points", disable=not progress, leave=False):
        C = chans[i]
        hist = col.take_histogram(i)  # frees the counts as it goes (config-B RDN: 47k channels x bins)
        h = hist.sum(0, keepdims=True) if layerwise else hist
        r = kmeans_select(values, h, act_bits, ws, seed=np.random.SeedSequence([seed, i]).generate_state(1)[0],
                          restarts=restarts, refine=refine, fill=fill)
        if layerwise:
            point_ints[i][:] = r["point_ints"][0]
            loss[i][:] = Prefix(values, hist).loss(np.broadcast_to(r["point_ints"][0] / ws.denom, (C, K)))
            kloss[i][:] = r["kmeans_loss"][0]
            restart[i][:] = r["restart"][0]
        else:
            point_ints[i][:], loss[i][:], kloss[i][:], restart[i][:] = (r["point_ints"], r["loss"], r["kmeans_loss"],
                                                                        r["restart"])
    t_select, c_select = time.perf_counter() - t1, time.process_time() - c0 - c_collect

    wq, zp, sc = zip(*(quantize_weight(conv.weight, weight_bits) for _, conv in col.convs))
    act_min, act_max, absmax = col.layer_stats()
    static = static_scale if static_scale is not None else [m + EPS for m in absmax]
    arrays = {
        "point_ints": stack_if_uniform([p.astype(np.int32) for p in point_ints]),
        "points": stack_if_uniform([(p / ws.denom).astype(np.float32) for p in point_ints]),
        "loss": stack_if_uniform(loss),
        "kmeans_loss": stack_if_uniform(kloss),
        "restart": stack_if_uniform(restart),
        "weight_q": stack_if_uniform([w.numpy().astype(np.uint8) for w in wq]),
        "zero_point": stack_if_uniform([z.numpy().astype(np.int32) for z in zp]),
        "weight_scale": stack_if_uniform([s_.numpy().astype(np.float32) for s_ in sc]),
        "act_min": act_min.numpy().astype(np.float32),
        "act_max": act_max.numpy().astype(np.float32),
        "static_scale": stack_if_uniform([m.numpy().astype(np.float32) for m in static]),
    }
    config = {**model_config(model),
              "scale": int(model.scale), "act_bits": int(act_bits), "weight_bits": int(weight_bits),
              "words": int(words), "gap": int(gap), "norm": bool(norm), "layerwise": bool(layerwise),
              "seed": int(seed), "restarts": int(restarts), "bins": int(bins), "refine": bool(refine),
              **({"fill": True} if fill else {}),  # absent unless used: default params files stay as they were
              **({"stats_tile": stats_tile} if stats_tile else {}),
              "weights": str(weights), "weights_fingerprint": weights_fingerprint(model)}
    mean_loss = float(np.concatenate([np.ravel(v) for v in loss]).mean())
    info = {"images": [n for n, _ in inputs], "n_images": len(inputs),
            "pixels": int(sum(img.shape[0] * img.shape[1] for _, img in inputs)),
            "seconds_collect": round(t_collect, 3), "seconds_select": round(t_select, 3),
            "cpu_seconds": round(time.process_time() - c0, 3), "cpu_seconds_collect": round(c_collect, 3),
            "cpu_seconds_select": round(c_select, 3), "torch_threads": torch.get_num_threads(),
            "universal_set_size": len(ws), "mean_loss": mean_loss,
            "versions": versions()}
    return CalibParams(config, [n for n, _ in col.convs], arrays, info, [q.describe() for q in col.qlayers])


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    try:
        pkg = version("dfsq-hw")
    except PackageNotFoundError:
        pkg = "unknown"
    return {"dfsq-hw": pkg, "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version(),
            "spec": SPEC_VERSION, "params_format": VERSION, "cpu": cpu_name(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def cpu_name() -> str:
    """The CPU's model name: float32 conv results (so activations, points and the last PSNR digits) can differ
    between CPUs, whose vector units make oneDNN choose other kernels and summation orders."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_label() -> str:
    """``cpu_name()`` with the vector unit torch dispatches to, e.g. ``AMD EPYC (AVX2)``."""
    return f"{cpu_name()} ({torch.backends.cpu.get_cpu_capability()})"


def sidecar_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_suffix(".json") if path.suffix == ".npz" else Path(str(path) + ".json")


def _pack(v):
    """A stacked array as is; a per-layer list flattened into one 1-D array (shapes in meta ``packed``)."""
    return np.concatenate([a.ravel() for a in v]) if isinstance(v, list) else v


def _unpack(flat: np.ndarray, shapes, key: str, path) -> list[np.ndarray]:
    try:
        sizes = [int(np.prod(s, dtype=np.int64)) for s in shapes]
        if flat.ndim != 1 or sum(sizes) != flat.size:
            raise ValueError
        offs = np.cumsum([0] + sizes)
        return [flat[offs[i]:offs[i + 1]].reshape(s) for i, s in enumerate(shapes)]
    except (TypeError, ValueError):
        raise UserError(f"{path}: packed array {key!r} does not match the shapes in its meta") from None


def save_params(params: CalibParams, path: str | Path) -> Path:
    """Write the npz (with ``meta``) and the JSON sidecar, each atomically (nothing is left behind on failure)."""
    path = check_output_file(path, "params file")
    side = check_output_file(sidecar_path(path), "params sidecar")
    meta = json.dumps(params.meta(), sort_keys=True)
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, meta=np.array(meta), **{k: _pack(params.arrays[k]) for k in ARRAY_KEYS})
    with atomic_output(side) as tmp:
        tmp.write_text(json.dumps(params.meta(), indent=2, sort_keys=True) + "\n")
    return path


# array -> (dtype kind(s), shape as names: L layers, C input channels, O output channels, K points, k kernel)
PARAM_ARRAYS = {
    "point_ints": ("i", ("L", "C", "K")), "points": ("f", ("L", "C", "K")), "loss": ("f", ("L", "C")),
    "kmeans_loss": ("f", ("L", "C")), "restart": ("iu", ("L", "C")), "weight_q": ("u", ("L", "O", "C", "k", "k")),
    "zero_point": ("iu", ("L", "O")), "weight_scale": ("f", ("L", "O")), "act_min": ("f", ("L",)),
    "act_max": ("f", ("L",)), "static_scale": ("f", ("L", "C")),
}
CONFIG_INTS = ("scale", "act_bits", "weight_bits", "words", "gap")


def layer_arrays(table: dict, data: dict, packed: dict, layers: list[str], dims: list[dict], where: str,
                 note: str = "") -> dict:
    """The per-layer arrays of a params-like file, checked against ``table`` (name -> (dtype kinds, dimension
    names, the first being L)): dtype kind, the shape of every layer's array consistent with the sizes in ``dims``
    (one dict per layer, filled in as sizes are first seen), finite floats. Packed arrays (``packed``: name -> the
    layers' shapes) are unpacked. Returns name -> stacked array or list of per-layer arrays; UserError otherwise."""
    def fail(msg):
        raise UserError(f"{where}: {msg}")

    L = len(layers)
    arrays = {}
    for k, (kinds, names) in table.items():
        a = data[k]
        if a.dtype.kind not in kinds:
            fail(f"{k} has dtype {a.dtype}, expected kind {kinds!r}")
        if k in packed:
            arrays[k] = per_layer = _unpack(a, packed[k], k, where)
        else:
            if a.ndim != len(names) or a.shape[0] != L:
                fail(f"{k} has shape {a.shape}, expected {len(names)} dimensions ({', '.join(names)}) "
                     f"with {L} layers")
            arrays[k] = per_layer = a
        for i in range(L):
            shape = per_layer[i].shape
            ok = len(shape) == len(names) - 1
            for n, size in zip(names[1:], shape if ok else ()):
                want = dims[i].setdefault(n, size)
                ok = ok and size == want and size >= 1
            if not ok:
                expect = tuple(dims[i].get(n, n) for n in names[1:])
                fail(f"{k} of layer {i} ({layers[i]}) has shape {shape}, expected {expect}" +
                     (f" ({note})" if note else ""))
        if kinds == "f" and not np.all(np.isfinite(a)):
            fail(f"{k} holds NaN or infinite values")
    return arrays


def validate_params(meta, data: dict, where: str = "params") -> CalibParams:
    """Check a params file's ``meta`` (parsed JSON) and arrays against each other; CalibParams or a UserError.

    Every array must be present with the right dtype kind and shape (layers, channels and points consistent
    across arrays), finite, and in range: points ascending on the universal set, weights and zero points in
    [0, 2^weight_bits - 1], weight scales > 0, static scales > 0.
    """
    def fail(msg):
        raise UserError(f"{where}: {msg}")

    if not isinstance(meta, dict):
        fail(f"'meta' must be a JSON object, got {type(meta).__name__}")
    if meta.get("format") != FORMAT:
        fail(f"not a dfsq params file (format {meta.get('format')!r})")
    if meta.get("version") != VERSION:
        fail(f"params version {meta.get('version')!r}, this tool reads version {VERSION}")
    cfg, layers = meta.get("config"), meta.get("layers")
    if not isinstance(cfg, dict):
        fail("meta has no 'config' object")
    if not isinstance(layers, list) or not layers or not all(isinstance(n, str) for n in layers):
        fail("meta 'layers' must be a non-empty list of layer names")
    if len(set(layers)) != len(layers):
        fail("meta 'layers' lists a layer twice")
    for k in CONFIG_INTS:
        v = cfg.get(k)
        if not isinstance(v, int) or isinstance(v, bool):
            fail(f"config {k!r} must be an integer, got {v!r}")
    if cfg["scale"] not in (2, 3, 4):
        fail(f"config scale must be 2, 3 or 4, got {cfg['scale']}")
    for k in ("weights_fingerprint", "weights"):
        if not isinstance(cfg.get(k), str):
            fail(f"config {k!r} must be a string, got {cfg.get(k)!r}")
    if not isinstance(cfg.get("seed"), int):
        fail(f"config 'seed' must be an integer, got {cfg.get('seed')!r}")
    for k in ("norm", "layerwise", "fill"):
        if not isinstance(cfg.get(k, False), bool):
            fail(f"config {k!r} must be true or false, got {cfg.get(k)!r}")
    if "norm" not in cfg:
        fail("config has no 'norm'")
    try:
        check_bits(cfg["act_bits"], cfg["weight_bits"], cfg["words"])
        ws = WordSet(cfg["words"], cfg["gap"])
    except (UserError, SpecError) as exc:
        fail(f"config: {str(exc).removeprefix('--')}")
    missing = [k for k in ARRAY_KEYS if k not in data]
    if missing:
        fail(f"lacks arrays {missing}")
    L, K = len(layers), 1 << cfg["act_bits"]
    packed = meta.get("packed") or {}
    if not isinstance(packed, dict) or any(k not in ARRAY_KEYS or not isinstance(v, list) or len(v) != L
                                           for k, v in packed.items()):
        fail(f"'packed' in meta must give {L} shapes per packed array")
    dims = [{"K": K} for _ in range(L)]
    arrays = layer_arrays(PARAM_ARRAYS, data, packed, layers, dims, where,
                          f"{K} points for act_bits {cfg['act_bits']}")
    layer_info = meta.get("layer_info") or []
    if not isinstance(layer_info, list) or (layer_info and len(layer_info) != L):
        fail(f"'layer_info' in meta must describe all {L} layers")
    for i, d in enumerate(dims):
        if d.get("k") not in (1, 3):
            fail(f"weight_q of layer {i} ({layers[i]}) has a {d.get('k')}x{d.get('k')} kernel; 1x1 and 3x3 are "
                 "supported")
        info_i = layer_info[i] if layer_info else None
        if info_i is not None and (not isinstance(info_i, dict) or info_i.get("kernel", d["k"]) != d["k"]):
            fail(f"'layer_info' of layer {i} ({layers[i]}) does not match its {d['k']}x{d['k']} weights")
    wmax = (1 << cfg["weight_bits"]) - 1
    for k in ("weight_q", "zero_point"):
        a = data[k]
        if a.min(initial=0) < 0 or a.max(initial=0) > wmax:
            fail(f"{k} outside [0, {wmax}] ({cfg['weight_bits']}-bit weights)")
    if np.any(data["weight_scale"] <= 0):
        fail("weight_scale must be > 0")
    if np.any(data["static_scale"] <= 0):
        fail("static_scale must be > 0")
    lo, hi = data["act_min"], data["act_max"]
    bad = np.flatnonzero(~(lo < hi)) if lo.shape == hi.shape else [0]
    if len(bad):
        fail(f"act_min must be below act_max (the Min-Max range of layer {int(bad[0])} ({layers[int(bad[0])]}) "
             f"is empty or reversed)")
    pi = data["point_ints"]
    if not np.all(np.isin(pi, ws.ints)):
        fail(f"point_ints are not all in the {cfg['words']}-word universal set")
    for i in range(L):
        p_int, p_val = arrays["point_ints"][i], arrays["points"][i]
        if np.any(np.diff(p_int.astype(np.int64), axis=-1) < 0):
            fail(f"points of layer {i} are not ascending per channel")
        if not np.allclose(p_val, p_int / ws.denom, rtol=2.0 ** -20, atol=0):
            fail(f"points of layer {i} are not point_ints / the universal set's denominator")
    arrays = {k: arrays.get(k, data[k]) for k in ARRAY_KEYS}
    info = meta.get("info", {})
    return CalibParams(cfg, list(layers), arrays, info if isinstance(info, dict) else {}, list(layer_info))


def read_meta_npz(path: str | Path, what: str = "params file") -> tuple[dict, dict]:
    """(meta, arrays) of an .npz with a ``meta`` JSON string (params and reconstruction files), read with
    ``allow_pickle=False``; UserError (one line) when it is missing, unreadable or has no JSON meta."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except MemoryError:
        raise UserError(f"cannot read {what} {path}: an array claims more memory than there is") from None
    except Exception as exc:  # noqa: BLE001 - any unreadable file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if "pickle" in first:  # np.load's advice to allow pickles is not for files from others
            first = "not an .npz file (or one holding pickled objects, which are never loaded)"
        raise UserError(f"cannot read {what} {path}: {first[:160]}") from None
    if "meta" not in data:
        raise UserError(f"{path} is not a dfsq {what} (no 'meta')")
    if data["meta"].dtype.kind != "U" or data["meta"].ndim != 0:
        raise UserError(f"{path}: 'meta' is not a JSON string")
    try:
        meta = json.loads(str(data["meta"]))
    except ValueError:
        raise UserError(f"{path}: 'meta' is not valid JSON") from None
    return meta, data


def load_params(path: str | Path) -> CalibParams:
    """Read and validate a params file (:func:`validate_params`); UserError (one line) for anything wrong."""
    meta, data = read_meta_npz(path)
    return validate_params(meta, data, str(path))


def build_parser() -> Parser:
    ap = Parser(prog="python -m dfsq.calibrate", description=__doc__.split("\n")[0])
    ap.choice("--model", ARCHS, default="edsr", help="network (default edsr)")
    weights_option(ap, help="checkpoint path, or 'default' for the embedded one")
    ap.choice("--scale", (2, 4), default=2)
    ap.integer("--act-bits", *ACT_BITS_RANGE, default=4)
    ap.integer("--weight-bits", *WEIGHT_BITS_RANGE, default=4)
    ap.integer("--words", *WORDS_RANGE, default=4, help="universal-set words (2..5); 4 -> 377 values, 3 -> 107")
    ap.input_dir("--calib", "images", help=f"calibration image folder (default {DEFAULT_CALIB})")
    ap.integer("--images", 1, 100_000, default=32, help="calibration images (default 32)")
    ap.seed(help="seed of the k-means restarts")
    ap.flag("--no-norm", help="ablation: static per-channel scale, no per-sample norm")
    ap.flag("--layerwise", help="ablation: one point set per layer")
    ap.integer("--restarts", 3, 1000, default=DEFAULT_RESTARTS, help=f"k-means restarts (default {DEFAULT_RESTARTS})")
    ap.integer("--bins", 64, 1 << 16, default=DEFAULT_BINS, help="histogram bins over [-1, 1]")
    ap.flag("--no-refine", help="plain k-means + snap (no local search after it)")
    ap.flag("--fill", help="give points that snapped onto the same universal value to unused values (6 and 8 bits)")
    ap.threads(help="torch threads (default: torch's choice; 1 is faster on a busy machine)")
    ap.output_file("--out", required=True, help="params file to write (.npz; a .json sidecar is written too)")
    return ap


@cli_main
def main(argv=None):
    args = build_parser().parse_args(argv)
    check_output_file(sidecar_path(args.out), "params sidecar")
    if args.threads:
        torch.set_num_threads(args.threads)
    from .model import load_model

    t0 = time.perf_counter()
    model = load_model(args.model, args.weights, args.scale)
    images = calibration_images(args.calib, args.images, args.scale)
    params = calibrate(model, images, act_bits=args.act_bits, weight_bits=args.weight_bits, words=args.words,
                       seed=args.seed, norm=not args.no_norm, layerwise=args.layerwise, restarts=args.restarts,
                       bins=args.bins, refine=not args.no_refine, fill=args.fill, weights=str(args.weights),
                       progress=True)
    params.info["seconds_total"] = round(time.perf_counter() - t0, 3)
    save_params(params, args.out)
    i = params.info
    print(f"calibrated {args.model} x{args.scale} W{args.weight_bits}A{args.act_bits} words={args.words} on "
          f"{i['n_images']} images ({len(params.layers)} layers): collect {i['seconds_collect']:.1f} s, "
          f"select {i['seconds_select']:.1f} s, total "
          f"{i['seconds_total']:.1f} s wall ({i['cpu_seconds']:.1f} s CPU, {i['torch_threads']} threads); "
          f"mean loss {i['mean_loss']:.3g} -> {args.out}")


if __name__ == "__main__":
    main()
