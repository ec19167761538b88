"""The learnable quantizers of block reconstruction (:mod:`dfsq.reconstruct`: BRECQ, QDROP, DFSQ + AdaRound).

* :class:`AdaRoundWeight`: DFSQ's weight format (per-output-channel asymmetric uniform with a zero point,
  :func:`dfsq.quantize.quantize_weight`: the same scale and zero point), with the rounding of each weight chosen by
  AdaRound (Nagel et al. 2020, as BRECQ's ``quant/adaptive_rounding.py``): ``q = clamp(floor(w / s) + h + z, 0,
  2^b - 1)``, ``h`` the rectified sigmoid ``clamp(sigmoid(alpha) (zeta - gamma) + gamma, 0, 1)`` (gamma = -0.1,
  zeta = 1.1) while soft, ``alpha >= 0`` once hard; alpha starts at the fractional part of ``w / s`` (so the hard
  rounding starts as round-half-up). :meth:`AdaRoundWeight.round_loss` is the regularizer ``sum(1 - |2h - 1|^b)``.
* :class:`StaticActQuant`: one static uniform activation quantizer per tensor, the format of the static uniform
  engine (``hw.uniform_engine``) and of the paper's Min-Max: ``q = clamp(round(x / s) + z, 0, 2^b - 1)``, ``x_hat =
  (q - z) s``, ``z`` an integer (0 after a ReLU), ``s`` learned (LSQ: the rounding passes the gradient straight
  through; QDROP scales the step's gradient by ``1 / sqrt(numel x (2^b - 1))``). Initialised by the step that
  minimizes ``mean |x - x_hat|^p`` over the range shrunk in 80 steps of 1% (BRECQ's ``scale_method='mse'``).
  QDROP's drop: while reconstructing, each quantized value is replaced by its float value with probability ``drop``.
* :class:`DFSQActQuant`: DFSQ's own activation quantizer (a :class:`dfsq.quantize.QuantConv`'s points, fixed),
  with a straight-through gradient, for AdaRound on DFSQ's weights.
* :class:`ReconConv`: a conv with one weight and one activation quantizer and their modes.

In the hard state (``weight_mode="hard"``, no drop, no gradient) a :class:`ReconConv` computes exactly what the
evaluated network computes (:class:`dfsq.quantize.QuantConv` with the same integers and steps), bit for bit.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .quantize import dequantize_weight, quantize_weight

GAMMA, ZETA = -0.1, 1.1
INIT_STEPS = 80          # candidate ranges of the MSE initialisation: 100%, 99%, ..., 21% of the observed range
INIT_SAMPLE = 1 << 20    # values of the observed tensor the initialisation scores (a fixed-seed random subset)
WEIGHT_MODES = ("fp", "soft", "hard")


class AdaRoundWeight(nn.Module):
    """AdaRound on DFSQ's per-output-channel weight format (module docstring). ``weight``: the float conv weight
    (O, C, k, k). Buffers: ``w_floor`` (floor(w / s), exact small integers in float32), ``zero_point`` (O,) int32,
    ``weight_scale`` (O,) float32, ``weight`` (the float weight, for ``mode="fp"``); parameter ``alpha``.
    :meth:`freeze` fixes the hard rounding (``weight_q``), after which ``alpha`` is no longer used."""

    def __init__(self, weight: torch.Tensor, bits: int):
        super().__init__()
        self.bits = int(bits)
        self.qmax = (1 << self.bits) - 1
        q, z, s = quantize_weight(weight, self.bits)
        w = weight.detach().double()
        ratio = w / s.double().view(-1, 1, 1, 1)
        floor = torch.floor(ratio)
        rest = (ratio - floor).float()
        self.register_buffer("weight", weight.detach().float().clone())
        self.register_buffer("w_floor", floor.float())
        self.register_buffer("zero_point", z)
        self.register_buffer("weight_scale", s)
        self.register_buffer("nearest_q", q)   # DFSQ's round-to-nearest integers (the starting point)
        self.register_buffer("weight_q", torch.zeros(0, dtype=torch.int32))   # set by freeze()
        self.alpha = nn.Parameter(-torch.log((ZETA - GAMMA) / (rest - GAMMA) - 1), requires_grad=False)

    @property
    def frozen(self) -> bool:
        return self.weight_q.numel() > 0

    def soft_h(self) -> torch.Tensor:
        return torch.clamp(torch.sigmoid(self.alpha) * (ZETA - GAMMA) + GAMMA, 0, 1)

    def hard_q(self) -> torch.Tensor:
        """The integers of the hard rounding, int32 (O, C, k, k)."""
        if self.frozen:
            return self.weight_q
        z = self.zero_point.float().view(-1, 1, 1, 1)
        q = torch.clamp(self.w_floor + (self.alpha.detach() >= 0).float() + z, 0, self.qmax)
        return q.to(torch.int32)

    def freeze(self, weight_q: torch.Tensor | None = None) -> None:
        """Fix the hard rounding (``weight_q``: given integers, e.g. from a checkpoint; default the current one)."""
        q = self.hard_q() if weight_q is None else torch.as_tensor(weight_q).to(torch.int32)
        if tuple(q.shape) != tuple(self.w_floor.shape):
            raise ValueError(f"weight_q has shape {tuple(q.shape)}, expected {tuple(self.w_floor.shape)}")
        self.weight_q = q.clone()
        self.alpha.requires_grad_(False)

    def forward(self, mode: str) -> torch.Tensor:
        if mode == "fp":
            return self.weight
        if mode == "hard":
            return dequantize_weight(self.hard_q(), self.zero_point, self.weight_scale)
        z = self.zero_point.float().view(-1, 1, 1, 1)
        q = torch.clamp(self.w_floor + self.soft_h() + z, 0, self.qmax)
        return (q - z) * self.weight_scale.view(-1, 1, 1, 1)

    def round_loss(self, b: float) -> torch.Tensor:
        """AdaRound's regularizer ``sum(1 - |2h - 1|^b)``: 0 when every h is 0 or 1."""
        return (1 - (2 * self.soft_h() - 1).abs().pow(b)).sum()


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """round(x) forward (exactly: r - x is exact for a float32 x and its nearest integer r), identity backward."""
    return (torch.round(x) - x).detach() + x


def grad_scale(x: torch.Tensor, scale: float) -> torch.Tensor:
    """x forward, its gradient times ``scale`` backward (LSQ's step-size gradient scale)."""
    return (x - x * scale).detach() + x * scale


def lp_error(x: torch.Tensor, y: torch.Tensor, p: float) -> torch.Tensor:
    """mean |x - y|^p."""
    return (x - y).abs().pow(p).mean()


class StaticActQuant(nn.Module):
    """One static uniform quantizer per tensor (module docstring). ``step`` is a parameter (scalar float32),
    ``zero`` an integer-valued float32 buffer; both are unset (``inited`` False) until :meth:`init_from`.
    ``drop``: QDROP's probability of keeping a value in float (0: off), drawn from ``generator`` when set;
    ``lsq_grad_scale``: scale the step's gradient by 1 / sqrt(numel x qmax) (QDROP)."""

    def __init__(self, bits: int, relu_input: bool):
        super().__init__()
        self.bits = int(bits)
        self.qmax = (1 << self.bits) - 1
        self.relu_input = bool(relu_input)
        self.step = nn.Parameter(torch.tensor(1.0), requires_grad=False)
        self.register_buffer("zero", torch.tensor(0.0))
        self.inited = False
        self.drop = 0.0
        self.lsq_grad_scale = False
        self.generator: torch.Generator | None = None

    @torch.no_grad()
    def init_from(self, x: torch.Tensor, p: float, seed: int = 0) -> None:
        """The step and zero point minimizing ``mean |x - x_hat|^p`` among the ranges [a lo, a hi], a = 1, 0.99,
        ..., 0.21 (lo = min(x, 0), 0 after a ReLU; hi = max(x, 0)), scored on at most :data:`INIT_SAMPLE` values."""
        flat = x.detach().float().reshape(-1)
        if flat.numel() > INIT_SAMPLE:
            g = torch.Generator(device="cpu").manual_seed(seed)
            flat = flat[torch.randint(0, flat.numel(), (INIT_SAMPLE,), generator=g).to(flat.device)]
        lo = 0.0 if self.relu_input else min(float(x.min()), 0.0)
        hi = max(float(x.max()), 0.0)
        best = None
        for i in range(INIT_STEPS):
            a = 1.0 - 0.01 * i
            step, zero = static_step(a * lo, a * hi, self.qmax)
            err = float(lp_error(flat, fake_quant_static(flat, step, zero, self.qmax), p))
            if best is None or err < best[0]:
                best = (err, step, zero)
        self.set(best[1], best[2])

    @torch.no_grad()
    def set(self, step: float, zero: float) -> None:
        self.step.data = torch.tensor(float(step), dtype=torch.float32, device=self.step.device)
        self.zero.data = torch.tensor(float(zero), dtype=torch.float32, device=self.zero.device)
        self.inited = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.inited:
            raise RuntimeError("StaticActQuant used before init_from()")
        step = self.step
        if not torch.is_grad_enabled() or not (step.requires_grad or x.requires_grad):
            return fake_quant_static(x, step, self.zero, self.qmax)
        keep = None
        if self.drop > 0:
            keep = torch.rand(x.shape, generator=self.generator, device=x.device) < self.drop
        scale = 1.0 / math.sqrt(x.numel() * self.qmax) if self.lsq_grad_scale else 1.0
        return _LSQ.apply(x, step, self.zero, self.qmax, scale, keep)


class _LSQ(torch.autograd.Function):
    """The static quantizer with LSQ's gradients in one autograd node (the elementwise chain of round, clamp and
    scale would store and traverse six tensors): forward ``(clamp(round(x / s) + z, 0, qmax) - z) s``, where
    ``keep`` (QDROP) holds x itself; backward: d/dx 1 where the clamp passes (or kept), d/ds ``(q - z) - x / s``
    where it passes and ``q - z`` where it clamps (0 where kept), summed and times ``scale``; the gradients of
    ``round_ste`` and ``torch.clamp`` through autograd, without their intermediates."""

    @staticmethod
    def forward(ctx, x, step, zero, qmax, scale, keep):
        y = x / step
        r = torch.round(y) + zero
        out = (torch.clamp(r, 0, qmax) - zero) * step
        if keep is not None:
            out = torch.where(keep, x, out)
        ctx.save_for_backward(x, step, zero, keep)
        ctx.qmax, ctx.scale = qmax, scale
        return out

    @staticmethod
    def backward(ctx, g):
        x, step, zero, keep = ctx.saved_tensors
        y = x / step
        r = torch.round(y) + zero
        inside = (r >= 0) & (r <= ctx.qmax)
        ds = torch.where(inside, r - y, r.clamp(0, ctx.qmax)) - zero
        gx = g * inside
        if keep is not None:
            gx = torch.where(keep, g, gx)
            ds = ds.masked_fill(keep, 0.0)
        gs = (g * ds).sum() * ctx.scale if ctx.needs_input_grad[1] else None
        return gx, gs, None, None, None, None


def static_step(lo: float, hi: float, qmax: int) -> tuple[float, float]:
    """(step, zero point) of the range [lo, hi] (lo <= 0 <= hi), as Min-Max: float32 step, integer zero point in
    [0, qmax] (the computation of :class:`dfsq.quantize.QuantConv`'s ``minmax``)."""
    import numpy as np

    s = (hi - lo) / qmax if hi > lo else 1.0
    step = float(np.float32(s))
    return step, float(np.clip(np.round(-lo / step), 0, qmax))


def fake_quant_static(x: torch.Tensor, step, zero, qmax: int) -> torch.Tensor:
    """``(clamp(round(x / step) + zero, 0, qmax) - zero) * step``: the op order of QuantConv's ``minmax``."""
    q = torch.clamp(torch.round(x / step) + zero, 0, qmax)
    return (q - zero) * step


class DFSQActQuant(nn.Module):
    """DFSQ's activation quantizer of ``qconv`` (a :class:`dfsq.quantize.QuantConv`, points fixed), with a
    straight-through gradient (AdaRound of the weights upstream sees the quantized activations)."""

    def __init__(self, qconv: nn.Module):
        super().__init__()
        self.qconv = qconv
        self.inited = True
        self.drop = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled() or not x.requires_grad:
            return self.qconv.quantize_act(x)
        with torch.no_grad():
            xq = self.qconv.quantize_act(x.detach())
        return (xq - x).detach() + x


class ReconConv(nn.Module):
    """A quantized conv under reconstruction: ``weight_mode`` fp | soft | hard, ``act_on`` (False: float
    activations). ``act`` is a :class:`StaticActQuant` or a :class:`DFSQActQuant`."""

    def __init__(self, conv: nn.Conv2d, *, name: str, weight_bits: int, act: nn.Module):
        super().__init__()
        self.name = name
        self.kernel = int(conv.kernel_size[0])
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.register_buffer("bias", conv.bias.detach().float().clone())
        self.weight = AdaRoundWeight(conv.weight, weight_bits)
        self.act = act
        self.weight_mode = "fp"
        self.act_on = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xq = self.act(x) if self.act_on else x
        return F.conv2d(xq, self.weight(self.weight_mode), self.bias, padding=self.kernel // 2)

    def extra_repr(self) -> str:
        return f"{self.name}, weight_mode={self.weight_mode}, act_on={self.act_on}"


__all__ = ["AdaRoundWeight", "StaticActQuant", "DFSQActQuant", "ReconConv", "static_step", "fake_quant_static",
           "round_ste", "grad_scale", "lp_error", "GAMMA", "ZETA"]
