"""DFSQ and Min-Max fake quantization of the convs a model's adapter lists (contract 1 of the brief).

:class:`QuantConv` replaces each conv that :mod:`dfsq.adapters` declares (EDSR: ``block.body[0]`` and
``block.body[2]`` of each residual block; RDN: every RDB conv, each LFF, GFF.0 and GFF.1). Activations:

* ``dfsq``: per sample n and input channel c, ``mean`` (zeros after a ReLU), ``maxabs = max |x - mean|``,
  ``scale = maxabs + 1e-8``, ``xn = (x - mean) / scale``; the code is ``searchsorted(mid[c], xn, side='left')``
  with ``mid`` the float32 midpoints of the channel's ascending points, so a value exactly on a midpoint goes to
  the LOWER point; ``xq = points[c, code] * scale + mean``. All float32 torch ops.
  With ``norm=False`` (the ``--no-norm`` ablation) ``mean = 0`` and ``scale`` is a static per-channel
  calibration max-abs instead of the per-sample one.
* ``minmax``: the paper's uniform baseline: one [lo, hi] per layer from calibration data (lo = 0 after a ReLU),
  asymmetric with a zero point, round-half-to-even, clamped.

Weights (both methods): per-output-channel asymmetric uniform quantization with a zero point (paper eq. 6-7),
``s = (max - min) / (2^wb - 1)``, ``z = round(-min / s)``, ``q = clamp(round(w / s) + z, 0, 2^wb - 1)``,
``w_hat = (q - z) * s``; min/max are first widened to include 0 so that z is in [0, 2^wb - 1] (a no-op for
EDSR, whose every output channel has weights of both signs).
"""
from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from golden.errors import UserError
from golden.spec import EPS, UniformPointSet, WordSet

from . import fastquant
from .adapters import check_model_matches, get_module, quantized_layers, set_module

METHODS = ("dfsq", "minmax")


def quantize_weight(weight: torch.Tensor, bits: int):
    """Per-output-channel asymmetric uniform quantization. Returns (q int32 (O,C,kh,kw), zero_point int32 (O,),
    scale float32 (O,)). Computed in float64 from the float32 weights; ``w_hat = (q - z) * s`` in float32."""
    qmax = (1 << bits) - 1
    w = weight.detach().double().reshape(weight.shape[0], -1)
    lo = torch.clamp(w.min(1).values, max=0.0)
    hi = torch.clamp(w.max(1).values, min=0.0)
    s32 = ((hi - lo) / qmax).float()
    s32 = torch.where(s32 > 0, s32, torch.ones_like(s32))  # an all-zero channel: any scale, q = z
    s = s32.double()
    z = torch.clamp(torch.round(-lo / s), 0, qmax)
    q = torch.clamp(torch.round(w / s[:, None]) + z[:, None], 0, qmax)
    return q.reshape(weight.shape).to(torch.int32), z.to(torch.int32), s32


def dequantize_weight(weight_q: torch.Tensor, zero_point: torch.Tensor, weight_scale: torch.Tensor) -> torch.Tensor:
    """``(q - z) * s`` in float32, exactly as the forward pass uses it."""
    w = (weight_q.to(torch.int32) - zero_point.to(torch.int32).view(-1, 1, 1, 1)).to(torch.float32)
    return w * weight_scale.to(torch.float32).view(-1, 1, 1, 1)


def points_from_ints(point_ints, denom: int) -> torch.Tensor:
    """float32 values of integer points (P / denom, correctly rounded once)."""
    p = torch.as_tensor(np.asarray(point_ints, dtype=np.int64))
    return (p.double() / denom).float()


def midpoints(points: torch.Tensor) -> torch.Tensor:
    """float32 midpoints of consecutive points, ``(p[:, :-1] + p[:, 1:]) / 2``."""
    return (points[:, :-1] + points[:, 1:]) / 2


def dfsq_codes(xn: torch.Tensor, mid: torch.Tensor) -> torch.Tensor:
    """Point indices for normalized activations ``xn`` (N, C, H, W) against per-channel ``mid`` (C, K-1):
    ``searchsorted(mid[c], xn, side='left')``, ties to the lower point. Returns int64 (N, C, H, W)."""
    n, c, h, w = xn.shape
    flat = xn.permute(1, 0, 2, 3).reshape(c, -1).contiguous()
    codes = torch.searchsorted(mid.contiguous(), flat, side="left")
    return codes.reshape(c, n, h, w).permute(1, 0, 2, 3)


LUT_CELLS = 4096
MAX_ITERS = 8   # above this, torch.searchsorted (8 compares of a binary search over 256 points) is cheaper


class CodeTable:
    """Fast exact ``searchsorted(mid[c], xn, side='left')`` for many values against few per-channel midpoints.

    ``xn`` is mapped to one of ``cells`` equal cells of [-1, 1]; ``start[c, cell]`` is a lower bound of the code
    of any value that can land in the cell (midpoints below the cell's lower edge minus a margin larger than the
    float32 rounding of the cell index), and ``iters`` the most midpoints any cell (with margins) holds. Then
    ``iters`` steps of ``code += xn > mid[c, code]`` reach the exact code: codes only grow, and stop at the
    first midpoint >= xn, i.e. the count of midpoints < xn. Values outside [-1, 1] land in the end cells, whose
    bounds are open (first cell starts at code 0; last cell may need every remaining midpoint).

    When some cell holds more than ``max_iters`` midpoints (duplicate points: at 8 bits many k-means centres snap
    to the same universal value, and a cell can hold 50 copies of one midpoint), ``iters`` full passes would cost
    more than a binary search, so :meth:`codes` uses ``torch.searchsorted`` itself (the same codes)."""

    def __init__(self, mid: torch.Tensor, cells: int = LUT_CELLS, max_iters: int = MAX_ITERS):
        c, km1 = mid.shape
        self.cells = cells
        self.mid = mid.contiguous()
        self.max_iters = max_iters
        edges = torch.linspace(-1.0, 1.0, cells + 1, dtype=torch.float64, device=mid.device)
        m = mid.double()
        lo = torch.searchsorted(m, (edges[:-1] - 1e-6).expand(c, cells).contiguous(), side="left")
        hi = torch.searchsorted(m, (edges[1:] + 1e-6).expand(c, cells).contiguous(), side="right")
        lo[:, 0] = 0
        hi[:, -1] = km1
        self.start = lo.contiguous()
        self.iters = int((hi - lo).max()) if km1 else 0
        self.mid_ext = torch.cat([mid, torch.full((c, 1), float("inf"), device=mid.device)], 1).contiguous()

    def codes(self, xn: torch.Tensor) -> torch.Tensor:
        """Codes (int64, same shape) for ``xn`` (N, C, H, W) float32."""
        if self.iters > self.max_iters:
            return dfsq_codes(xn, self.mid)
        n, c, h, w = xn.shape
        flat = xn.permute(1, 0, 2, 3).reshape(c, -1)
        cell = ((flat + 1.0) * (self.cells / 2)).nan_to_num_(0.0).to(torch.int64).clamp_(0, self.cells - 1)
        code = torch.gather(self.start, 1, cell)
        for _ in range(self.iters):
            code += flat > torch.gather(self.mid_ext, 1, code)
        return code.reshape(c, n, h, w).permute(1, 0, 2, 3)


def gather_points(points: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """``points[c, codes]`` for codes (N, C, H, W) -> float32 (N, C, H, W)."""
    n, c, h, w = codes.shape
    flat = codes.permute(1, 0, 2, 3).reshape(c, -1)
    return torch.gather(points, 1, flat).reshape(c, n, h, w).permute(1, 0, 2, 3)


class QuantConv(nn.Module):
    """A fake-quantized 3x3 or 1x1 conv ('same' padding; see the module docstring and contract 1).

    Attributes: ``name``, ``index``, ``relu_input``, ``kernel``, ``method``, ``act_bits``, ``weight_bits``,
    ``words``, ``gap``, ``norm``; buffers ``bias`` (O,), ``weight_q`` (O,C,k,k) int32, ``zero_point`` (O,) int32,
    ``weight_scale`` (O,) float32, ``points`` (C, 2^b) float32 (dfsq: universal-set values; minmax: the uniform
    levels of the layer), ``point_ints`` (C, 2^b) int32 (dfsq only), ``static_scale`` (C,) (dfsq, norm=False),
    ``act_range`` (2,) float32 (minmax).
    """

    def __init__(self, conv: nn.Conv2d, *, name: str, index: int, relu_input: bool, method: str, act_bits: int,
                 weight_bits: int, words: int, gap: int, weight_q, zero_point, weight_scale,
                 point_ints=None, act_range=None, static_scale=None, norm: bool = True):
        super().__init__()
        if method not in METHODS:
            raise UserError(f"method must be one of {METHODS}, got {method!r}")
        self.name, self.index, self.relu_input = name, int(index), bool(relu_input)
        self.method, self.act_bits, self.weight_bits = method, int(act_bits), int(weight_bits)
        self.words, self.gap, self.norm = int(words), int(gap), bool(norm)
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel = int(conv.kernel_size[0])
        k = 1 << self.act_bits
        self.register_buffer("bias", conv.bias.detach().float().clone())
        self.register_buffer("weight_q", torch.as_tensor(np.asarray(weight_q), dtype=torch.int32).clone())
        if tuple(self.weight_q.shape) != tuple(conv.weight.shape):
            raise UserError(f"{name}: weight_q has shape {tuple(self.weight_q.shape)}, the conv's weight "
                            f"{tuple(conv.weight.shape)}")
        self.register_buffer("zero_point", torch.as_tensor(np.asarray(zero_point), dtype=torch.int32).clone())
        self.register_buffer("weight_scale", torch.as_tensor(np.asarray(weight_scale), dtype=torch.float32).clone())
        self.register_buffer("weight_fq", dequantize_weight(self.weight_q, self.zero_point, self.weight_scale),
                             persistent=False)
        if method == "dfsq":
            pi = torch.as_tensor(np.asarray(point_ints, dtype=np.int64))
            if tuple(pi.shape) != (self.in_channels, k):
                raise UserError(f"{name}: points have shape {tuple(pi.shape)}, expected {(self.in_channels, k)}")
            self.register_buffer("point_ints", pi.to(torch.int32))
            self.register_buffer("points", points_from_ints(pi, WordSet(self.words, self.gap).denom))
            if static_scale is not None:
                self.register_buffer("static_scale", torch.as_tensor(np.asarray(static_scale), dtype=torch.float32))
            else:
                self.static_scale = None
            if not self.norm and self.static_scale is None:
                raise UserError(f"{name}: norm=False needs a static per-channel scale")
        else:
            lo, hi = (float(v) for v in act_range)
            if self.relu_input:
                lo = 0.0
            lo, hi = min(lo, 0.0), max(hi, 0.0)
            qmax = (1 << self.act_bits) - 1
            s = (hi - lo) / qmax if hi > lo else 1.0
            self.act_step = float(np.float32(s))
            self.act_zero = float(np.clip(np.round(-lo / self.act_step), 0, qmax))
            self.register_buffer("act_range", torch.tensor([lo, hi], dtype=torch.float32))
            levels = (torch.arange(k, dtype=torch.float32) - self.act_zero) * self.act_step
            self.register_buffer("points", levels.expand(self.in_channels, k).contiguous())
        self.register_buffer("mid", midpoints(self.points), persistent=False)
        self.table = CodeTable(self.mid) if method == "dfsq" else None

    def _apply(self, fn, *args, **kwargs):
        """Moving the module (``.to(device)``) also moves the per-channel step tensors and rebuilds the code table
        on the buffers' new device."""
        out = super()._apply(fn, *args, **kwargs)
        for name in ("act_step", "act_zero"):   # per-channel tensors of the Uniform-MSE baseline (dfsq.uniform)
            if torch.is_tensor(getattr(self, name, None)):
                setattr(self, name, fn(getattr(self, name)))
        if getattr(self, "table", None) is not None:
            self.table = CodeTable(self.mid)
        return out

    def extra_repr(self) -> str:
        return (f"{self.name}, method={self.method}, A{self.act_bits}W{self.weight_bits}, words={self.words}, "
                f"relu_input={self.relu_input}, norm={self.norm}")

    # --- activations ------------------------------------------------------------------------------------------
    def normalize(self, x: torch.Tensor):
        """(mean (N,C), maxabs (N,C), scale (N,C), xn) float32, contract 1."""
        x = x.float()
        n, c = x.shape[:2]
        if not self.norm:
            mean = torch.zeros(n, c, dtype=torch.float32, device=x.device)
            scale = self.static_scale.expand(n, c).contiguous()
            maxabs = (x - mean[:, :, None, None]).abs().amax((2, 3))
            return mean, maxabs, scale, x / scale[:, :, None, None]
        mean = torch.zeros(n, c, dtype=torch.float32, device=x.device) if self.relu_input else x.mean((2, 3))
        d = x - mean[:, :, None, None]
        maxabs = d.abs().amax((2, 3))
        scale = maxabs + EPS
        return mean, maxabs, scale, d / scale[:, :, None, None]

    def quantize_act(self, x: torch.Tensor) -> torch.Tensor:
        xq = self._fast_act(x, reuse=False)
        if xq is not None:
            return xq
        if self.method == "minmax":
            qmax = (1 << self.act_bits) - 1
            q = torch.clamp(torch.round(x / self.act_step) + self.act_zero, 0, qmax)
            return (q - self.act_zero) * self.act_step
        mean, _, scale, xn = self.normalize(x)
        codes = self.table.codes(xn)
        return gather_points(self.points, codes) * scale[:, :, None, None] + mean[:, :, None, None]

    def _fast_act(self, x: torch.Tensor, reuse: bool):
        """The activations from the fused CPU kernels (:mod:`dfsq.fastquant`), bit-identical to the torch path of
        :meth:`quantize_act`; None where they do not apply (dfsq with ``norm=False``, not on the CPU, no C
        compiler). ``reuse``: write into the thread's scratch buffer, valid until the next such call."""
        if x.device.type != "cpu" or (x.requires_grad and torch.is_grad_enabled()):   # no autograd through C
            return None
        if self.method == "minmax":
            if x.dtype != torch.float32:   # the torch path computes in x's own dtype
                return None
            # act_step / act_zero: float32-exact Python floats (one range per layer) or (1, C, 1, 1) tensors
            step, zero = (torch.as_tensor(v, dtype=torch.float32).reshape(-1).expand(x.shape[1])
                          for v in (self.act_step, self.act_zero))
            return fastquant.uniform_fake_quant(x, step, zero, (1 << self.act_bits) - 1, reuse=reuse)
        if not self.norm:
            return None
        x = x.float()
        mean = torch.zeros(x.shape[:2], dtype=torch.float32) if self.relu_input else x.mean((2, 3))
        return fastquant.dfsq_fake_quant(x, mean, EPS, self.mid, self.points, reuse=reuse)

    def conv(self, xq: torch.Tensor) -> torch.Tensor:
        return F.conv2d(xq, self.weight_fq, self.bias, padding=self.kernel // 2)

    def forward(self, x):
        if "quantize_act" not in vars(self):   # benches replace quantize_act on an instance; honour that
            xq = self._fast_act(x, reuse=True)   # the conv consumes xq at once: a reused buffer saves page faults
            if xq is not None:
                return self.conv(xq)
        return self.conv(self.quantize_act(x))

    # --- export -----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def quant_fields(self, x) -> dict:
        """The export fields of contract 2 for input ``x`` (N, C, H, W), as NumPy arrays (``minmax`` with one static
        step per layer: the static fields of golden.export_io.STATIC_FIELDS)."""
        if self.method not in ("dfsq", "dfsq-uniform", "minmax") or not self.norm:
            raise UserError("export supports the normalized dfsq and dfsq-uniform methods and static activations")
        x = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x).float().contiguous()
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise UserError(f"{self.name}: input must be (N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        if not torch.isfinite(x).all():
            raise UserError(f"{self.name}: input holds NaN or infinite values")
        if self.method == "minmax":
            return self._static_fields(x)
        mean, maxabs, scale, xn = self.normalize(x)
        codes = self.table.codes(xn)
        xq = gather_points(self.points, codes) * scale[:, :, None, None] + mean[:, :, None, None]
        y = self.conv(xq)
        ws = UniformPointSet(self.act_bits) if self.method == "dfsq-uniform" else WordSet(self.words, self.gap)
        pi = self.point_ints.numpy().astype(np.int32)
        return {
            **self._conv_fields(x, codes, y),
            "mean": mean.numpy().astype(np.float32),
            "maxabs": maxabs.numpy().astype(np.float32),
            "scale": scale.numpy().astype(np.float32),
            "points": self.points.numpy().astype(np.float32),
            "point_ints": pi,
            "point_codes": ws.int_to_code(pi).astype(np.uint16),
        }

    def _conv_fields(self, x: torch.Tensor, codes: torch.Tensor, y: torch.Tensor) -> dict:
        """The export fields every datapath has: input, activation codes, weights, bias, output, identity."""
        return {
            "x": x.numpy().astype(np.float32),
            "codes": codes.numpy().astype(np.uint8),
            "weight_q": self.weight_q.numpy().astype(np.uint8),
            "zero_point": self.zero_point.numpy().astype(np.int32),
            "weight_scale": self.weight_scale.numpy().astype(np.float32),
            "bias": self.bias.numpy().astype(np.float32),
            "y": y.numpy().astype(np.float32),
            "relu_input": np.array(self.relu_input),
            "name": np.array(self.name),
            "index": np.array(self.index, dtype=np.int64),
        }

    def _static_fields(self, x: torch.Tensor) -> dict:
        """The export fields of a static-activation layer (one step and zero point for the whole input)."""
        if torch.is_tensor(self.act_step) or torch.is_tensor(self.act_zero):
            raise UserError(f"{self.name}: export needs one static activation step per layer (Min-Max, BRECQ, "
                            "QDROP), not per-channel ranges")
        qmax = (1 << self.act_bits) - 1
        q = torch.clamp(torch.round(x / self.act_step) + self.act_zero, 0, qmax)
        y = self.conv((q - self.act_zero) * self.act_step)
        return {**self._conv_fields(x, q, y), "act_step": np.array(self.act_step, dtype=np.float32),
                "act_zero": np.array(self.act_zero, dtype=np.int32)}


def quant_convs(model: nn.Module) -> list[QuantConv]:
    """The QuantConv modules of a quantized model, in network order."""
    return [m for m in model.modules() if isinstance(m, QuantConv)]


def quantize_model(model: nn.Module, params, method: str = "dfsq") -> nn.Module:
    """A copy of ``model`` with the convs its adapter lists replaced by :class:`QuantConv` configured from
    ``params`` (a :class:`dfsq.calibrate.CalibParams` made for the same network)."""
    if method not in METHODS:
        raise UserError(f"method must be one of {METHODS}, got {method!r}")
    qmodel = copy.deepcopy(model).eval()
    cfg = params.config
    check_model_matches(cfg, qmodel, "the params file")
    qlayers = quantized_layers(qmodel)
    if len(params.layers) != len(qlayers):
        raise UserError(f"the params file lists {len(params.layers)} layers, the model quantizes {len(qlayers)}")
    for idx, ql in enumerate(qlayers):
        name, conv = ql.name, get_module(qmodel, ql.name)
        if params.layers[idx] != name:
            raise UserError(f"params layer {idx} is {params.layers[idx]!r}, the model has {name!r}")
        qc = QuantConv(conv, name=name, index=idx, relu_input=ql.relu_input, method=method,
                       act_bits=cfg["act_bits"],
                       weight_bits=cfg["weight_bits"], words=cfg["words"], gap=cfg["gap"],
                       weight_q=params.arrays["weight_q"][idx], zero_point=params.arrays["zero_point"][idx],
                       weight_scale=params.arrays["weight_scale"][idx],
                       point_ints=params.arrays["point_ints"][idx],
                       act_range=(params.arrays["act_min"][idx], params.arrays["act_max"][idx]),
                       static_scale=None if cfg["norm"] else params.arrays["static_scale"][idx],
                       norm=cfg["norm"])
        # the calibrated max |input| (the integer network's feature-map format comes from it: dfsq.int_mode)
        qc.act_absmax = float(max(abs(float(params.arrays["act_min"][idx])), abs(float(params.arrays["act_max"][idx]))))
        set_module(qmodel, name, qc)
    return qmodel


def check_params_fit(params, model: nn.Module, where: str, **want) -> None:
    """UserError (one line) unless ``params`` were calibrated for ``model`` (its network, structure, scale and
    weights) and with the settings in ``want`` (``act_bits=4``, ``words=4``, ...)."""
    from .calibrate import weights_fingerprint

    check_model_matches(params.config, model, where)
    if params.config["scale"] != int(model.scale):
        raise UserError(f"{where} was calibrated for the x{params.config['scale']} network, not x{int(model.scale)}: "
                        f"use params calibrated at x{int(model.scale)}")
    for k, v in want.items():
        if params.config[k] != v:
            raise UserError(f"{where} was calibrated with {k}={params.config[k]}, not {v}: "
                            f"pass --{k.replace('_', '-')} {params.config[k]} or recalibrate")
    fp = weights_fingerprint(model)
    if params.config["weights_fingerprint"] != fp:
        raise UserError(f"{where} was calibrated for other weights ({params.config['weights']}, "
                        f"fingerprint {params.config['weights_fingerprint'][:12]} != {fp[:12]})")


def build_quantized(model: nn.Module, args) -> nn.Module:
    """The quantized network for ``dfsq.evaluate`` (``args.method`` minmax | dfsq | dfsq-hw | dfsq-int), with the
    params of :func:`quant_params`."""
    method = "dfsq" if args.method in ("dfsq", "dfsq-hw", "dfsq-int") else args.method
    return quantize_model(model, quant_params(model, args), method)


def quant_params(model: nn.Module, args):
    """``args.params`` loaded and checked against the flags and weights, or a calibration made now when no params
    are given (``args``: act_bits, weight_bits, words and optionally params, calib, images, seed, weights, no_norm,
    layerwise)."""
    from .calibrate import calibrate, calibration_images, load_params

    if getattr(args, "params", None):
        params = load_params(args.params)
        check_params_fit(params, model, str(args.params), act_bits=int(args.act_bits),
                         weight_bits=int(args.weight_bits), words=int(args.words))
    else:
        images = calibration_images(getattr(args, "calib", None), getattr(args, "images", 32), int(model.scale))
        params = calibrate(model, images, act_bits=args.act_bits, weight_bits=args.weight_bits, words=args.words,
                           seed=getattr(args, "seed", 0), weights=str(getattr(args, "weights", "")),
                           norm=not getattr(args, "no_norm", False), layerwise=getattr(args, "layerwise", False),
                           progress=True)
    return params
