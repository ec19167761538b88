"""Golden integer model of the uniform (Min-Max, static scale) conv datapath, and random operands for it.

``accumulate`` is the transaction-level model of ``hw.units.uniform_engine``: ``acc = bias_int + conv(w', a')``, k x k
(3 or 1), zero padded, computed exactly in int64 (widths and bounds: :mod:`golden.uniform_spec`). NumPy only.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .spec import SpecError
from .uniform_spec import UniformSpec

__all__ = ["UniformOperands", "accumulate", "random_operands", "check_operands"]


@dataclass
class UniformOperands:
    """Integer operands of one uniform conv layer.

    ``w``: (O, C, k, k) int64 w' = q_w - zp_w; ``a``: (N, C, H, W) int64 a' = q_a - zp_a; ``bias``: (O,) int64
    bias_int (the bias in accumulator units s_w[o] * s_a).
    """

    w: np.ndarray
    a: np.ndarray
    bias: np.ndarray


def check_operands(ops: UniformOperands, spec: UniformSpec) -> None:
    """Shapes consistent and every operand within ``spec``'s bounds (SpecError, one line, otherwise)."""
    w, a, bias = (np.asarray(v) for v in (ops.w, ops.a, ops.bias))
    if w.ndim != 4 or w.shape[2] != w.shape[3] or w.shape[2] not in (1, 3):
        raise SpecError(f"w must be (O, C, k, k) with k 1 or 3, got shape {w.shape}")
    if a.ndim != 4 or a.shape[1] != w.shape[1]:
        raise SpecError(f"a must be (N, C, H, W) with C = {w.shape[1]}, got shape {a.shape}")
    if bias.shape != (w.shape[0],):
        raise SpecError(f"bias must be ({w.shape[0]},), got shape {bias.shape}")
    for name, v in (("w", w), ("a", a), ("bias", bias)):
        if not np.issubdtype(v.dtype, np.integer):
            raise SpecError(f"{name} must be an integer array, got {v.dtype}")
    if not spec.covers(w.shape[1], w.shape[2]):
        raise SpecError(f"a {w.shape[2]}x{w.shape[2]} layer of {w.shape[1]} input channels exceeds the spec "
                        f"({spec.kernel}x{spec.kernel}, {spec.channels} channels)")
    for name, v, bound in (("w'", w, spec.w_max), ("a'", a, spec.a_max), ("bias_int", bias, spec.bias_max)):
        if v.size and int(np.abs(v.astype(np.int64)).max()) > bound:
            raise SpecError(f"|{name}| exceeds its bound {bound}")


def accumulate(ops: UniformOperands, spec: UniformSpec) -> np.ndarray:
    """(N, O, H, W) int64: ``bias[o] + sum_c sum_t w'[o, c, t] a'[c, p + t]``, zero padded, exact."""
    check_operands(ops, spec)
    w, a, bias = (np.asarray(v, dtype=np.int64) for v in (ops.w, ops.a, ops.bias))
    N, C, H, W = a.shape
    O, k = w.shape[0], w.shape[2]
    r = k // 2
    padded = np.zeros((N, C, H + 2 * r, W + 2 * r), np.int64)
    padded[:, :, r:r + H, r:r + W] = a
    acc = np.broadcast_to(bias[None, :, None, None], (N, O, H, W)).copy()
    for ky in range(k):
        for kx in range(k):
            # integer einsum: exact (no BLAS, no float); |acc| <= acc_max < 2^63 by the spec's bounds
            acc += np.einsum("oc,nchw->nohw", w[:, :, ky, kx], padded[:, :, ky:ky + H, kx:kx + W])
    return acc


def random_operands(rng: np.random.Generator, spec: UniformSpec, N=1, C=None, O=2, H=3, W=4, kernel=None,
                    extreme=False) -> UniformOperands:
    """Random operands within ``spec``'s bounds (``extreme``: only the largest magnitudes, both signs).

    Weights as the quantizer makes them: q_w and zp_w in [0, 2^wb - 1]; activations likewise, one zero point."""
    C = spec.channels if C is None else C
    k = spec.kernel if kernel is None else kernel
    if extreme:
        w = rng.choice([-spec.w_max, spec.w_max], (O, C, k, k))
        a = rng.choice([-spec.a_max, spec.a_max], (N, C, H, W))
        bias = rng.choice([-spec.bias_max, spec.bias_max], O)
    else:
        hi_w, hi_a = 1 << spec.weight_bits, 1 << spec.act_bits
        w = rng.integers(0, hi_w, (O, C, k, k)) - rng.integers(0, hi_w, O)[:, None, None, None]
        a = rng.integers(0, hi_a, (N, C, H, W)) - int(rng.integers(0, hi_a))
        bias = rng.integers(-spec.bias_max, spec.bias_max + 1, O)
    return UniformOperands(w=w.astype(np.int64), a=a.astype(np.int64), bias=bias.astype(np.int64))


# --- exported layers with static activations (dfsq.export --method minmax|brecq|qdrop) ------------------------------
def static_codes(x, act_step, act_zero, act_bits: int) -> np.ndarray:
    """The activation codes q of ``x`` (float32 (N, C, H, W)), bit for bit as PyTorch's fake quantizer computes
    them: ``clamp(round_half_even(x / s) + z, 0, 2^b - 1)`` in float32 (``x / s`` one IEEE division, exact
    integer additions), as uint8."""
    x = np.asarray(x, dtype=np.float32)
    q = np.rint(x / np.float32(act_step)) + np.float32(act_zero)
    return np.clip(q, 0, (1 << act_bits) - 1).astype(np.uint8)


def static_operands(layer, spec: UniformSpec, codes=None) -> UniformOperands:
    """w' = q_w - zp_w, a' = codes - act_zero and bias_int (:meth:`UniformSpec.bias_int`) of an exported static
    layer (``codes`` default: the exported ones)."""
    codes = layer.codes if codes is None else codes
    w = layer.weight_q.astype(np.int64) - layer.zero_point.astype(np.int64)[:, None, None, None]
    a = np.asarray(codes, np.int64) - int(layer.act_zero)
    return UniformOperands(w=w, a=a, bias=spec.bias_int(layer.bias, layer.weight_scale, layer.act_step))


def static_to_float(acc: np.ndarray, layer) -> np.ndarray:
    """y_hw = s_w[o] s_a acc in float64 (the requantization outside the engine)."""
    step = np.asarray(layer.weight_scale, np.float64) * float(layer.act_step)
    return acc * step[None, :, None, None]


def static_error_bound(layer, ops: UniformOperands, y_hw: np.ndarray) -> dict:
    """Elementwise bound of |y_hw - y| for the exported float32 output y: ``fixed`` the bias rounding, s_w s_a / 2;
    ``float32`` / ``float64`` the references' rounding (:func:`golden.layer.float_bounds`) with
    S = |bias| + s_w s_a sum |w'| |a'|."""
    from .layer import conv_kxk, float_bounds

    O, C, k = ops.w.shape[0], ops.w.shape[1], ops.w.shape[-1]
    unit = (np.asarray(layer.weight_scale, np.float64) * float(layer.act_step))[None, :, None, None]
    absw = np.abs(ops.w).reshape(O, C * k * k).astype(np.float64)
    S = np.abs(np.asarray(layer.bias, np.float64))[None, :, None, None] + unit * conv_kxk(
        np.abs(ops.a).astype(np.float64), absw, k)
    float32, float64 = float_bounds(S, C * k * k + 1, y_hw)
    fixed = np.broadcast_to(unit * 0.5, y_hw.shape)
    return {"fixed": fixed, "float32": float32, "float64": float64, "total": fixed + float32 + float64}


__all__ += ["static_codes", "static_operands", "static_to_float", "static_error_bound"]
