"""Whole quantized conv layers on the integer datapath of golden/spec.py, vectorized (NumPy only).

    codes  = derive_codes(x, mean, scale, points)          # the float32 ops of PyTorch, bit-identical
    ops    = operands(layer, spec)                          # w', P, sigma_m, mu_m, E, bias_int (int64)
    acc    = accumulate(ops, spec)                          # the exact accumulator, int64 (N, O, H, W)
    y_hw   = to_float(acc, ops, layer.weight_scale)         # s_w[o] * 2^-E[n] * acc, float64

:func:`accumulate` uses the identity

    acc = bias_int + conv3x3(w', Z),   Z[n, c] = sigma_m[n, c] * P[n, c] + mu_m[n, c] * valid

(``valid`` is 1 inside the image and 0 on the zero padding, where P is 0 too), computed as an im2col matrix
product in float64. It is exact: every operand lies within the spec's bounds (asserted), so every partial sum of
the product is an integer below ``spec.acc_max < 2^53`` (:attr:`DatapathSpec.float64_exact`). When a
configuration breaks that (e.g. ``scale_bits = 32``), Z is split into base-2^s digits small enough for each
digit's product to be exact, and the digits' results are recombined in int64.
:func:`golden.datapath.pixel_reference` is the per-pixel reference these functions are tested against.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .errors import UserError
from .export_io import LayerData, check_layer_spec
from .spec import TAPS, DatapathSpec, SpecError

F32_U = 2.0 ** -24          # unit roundoff of float32
F64_U = 2.0 ** -53
COLS_BUDGET = 32 << 20      # bytes of one im2col block (rows of the image are processed in blocks)


def derive_codes(x, mean, scale, points) -> np.ndarray:
    """Point indices of ``x`` (N, C, H, W), with PyTorch's float32 ops of contract 1, bit for bit.

    ``xn = (x - mean) / scale``; ``mid = (points[:, :-1] + points[:, 1:]) / 2``;
    ``code = searchsorted(mid[c], xn, side='left')`` = the number of midpoints strictly below xn (ties go to the
    lower point). Vectorized: one comparison pass per midpoint, no loop over pixels or channels.
    """
    x = np.asarray(x, dtype=np.float32)
    mean = np.asarray(mean, dtype=np.float32)
    scale = np.asarray(scale, dtype=np.float32)
    points = np.asarray(points, dtype=np.float32)
    if x.ndim != 4 or mean.shape != x.shape[:2] or scale.shape != x.shape[:2] or points.ndim != 2 \
            or points.shape[0] != x.shape[1]:
        raise UserError(f"derive_codes: shapes x {x.shape}, mean {mean.shape}, scale {scale.shape}, "
                        f"points {points.shape} do not match")
    if points.shape[1] > 256:
        raise UserError("derive_codes: more than 256 points per channel do not fit uint8 codes")
    xn = (x - mean[:, :, None, None]) / scale[:, :, None, None]
    mid = (points[:, :-1] + points[:, 1:]) / np.float32(2)
    codes = np.zeros(x.shape, dtype=np.uint8)
    for k in range(mid.shape[1]):
        codes += xn > mid[None, :, k, None, None]
    return codes


@dataclass
class Operands:
    """The integer operands of one layer (contract 3). All int64 except ``codes`` (uint8), ``point_codes``."""

    w: np.ndarray            # (O, C, 3, 3)  w' = q - zero_point
    P: np.ndarray            # (N, C, H, W)  point integers of the codes (value * denom)
    sigma_m: np.ndarray      # (N, C)        round(scale / denom * 2^E)
    mu_m: np.ndarray         # (N, C)        round(mean * 2^E)
    E: np.ndarray            # (N,)          shared exponent per sample
    bias_int: np.ndarray     # (N, O)        round(bias / s_w * 2^E)
    codes: np.ndarray        # (N, C, H, W)  point indices
    point_codes: np.ndarray  # (C, 2^b)      spec codes of each channel's points


def point_table(point_codes, spec: DatapathSpec) -> np.ndarray:
    """P of every (channel, index): the spec's decoder applied to the point codes (int64, (C, 2^b))."""
    return spec.wordset.code_to_int(point_codes)


def gather_points(table: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """table[c, codes[n, c, h, w]] for every element, vectorized."""
    C, npts = table.shape
    flat = codes.astype(np.intp) + (np.arange(C, dtype=np.intp) * npts)[None, :, None, None]
    return np.take(table.ravel(), flat)


def fixed_point_params(scale, mean, bias, weight_scale, spec: DatapathSpec):
    """(sigma_m (N, C), mu_m (N, C), E (N,), bias_int (N, O)) from the float32 statistics, per spec.py."""
    scale = np.asarray(scale)
    mean = np.asarray(mean)
    N = scale.shape[0]
    sig = np.empty(scale.shape, np.int64)
    mu = np.empty(scale.shape, np.int64)
    E = np.empty(N, np.int64)
    bias_int = np.empty((N, len(bias)), np.int64)
    try:
        cap = spec.bias_exponent_limit(bias, weight_scale)
        for n in range(N):  # one shared exponent per sample: a loop over samples, not pixels or channels
            sig[n], mu[n], E[n] = spec.fixed_point(scale[n], mean[n], cap)
            bias_int[n] = spec.bias_int(bias, weight_scale, int(E[n]))
    except SpecError as exc:
        raise UserError(f"fixed-point format: {exc}") from None
    return sig, mu, E, bias_int


def operands(layer: LayerData, spec: DatapathSpec, codes=None) -> Operands:
    """The integer operands of ``layer`` (``codes`` default: the exported ones)."""
    check_layer_spec(layer, spec, layer.path or layer.name)
    codes = layer.codes if codes is None else np.asarray(codes)
    if codes.shape != layer.x.shape:
        raise UserError(f"codes have shape {codes.shape}, expected {layer.x.shape}")
    table = point_table(layer.point_codes, spec)
    if not np.array_equal(table, layer.point_ints):
        raise UserError(f"{layer.name}: decoded point codes differ from point_ints")
    w = layer.weight_q.astype(np.int64) - layer.zero_point.astype(np.int64)[:, None, None, None]
    sig, mu, E, bias_int = fixed_point_params(layer.scale, layer.mean, layer.bias, layer.weight_scale, spec)
    return Operands(w=w, P=gather_points(table, codes), sigma_m=sig, mu_m=mu, E=E, bias_int=bias_int,
                    codes=codes.astype(np.uint8, copy=False), point_codes=layer.point_codes)


def _check_bounds(ops: Operands, spec: DatapathSpec) -> None:
    """SpecError unless every operand is within the spec's bounds (which make the accumulator exact)."""
    N, C, H, W = ops.P.shape
    if ops.w.shape[1:] != (C, 3, 3):
        raise SpecError(f"weights {ops.w.shape} do not match P {ops.P.shape}")
    checks = (("input channels", C, spec.channels), ("|w'|", _amax(ops.w), spec.w_max),
              ("|P|", _amax(ops.P), spec.wordset.p_max), ("|sigma_m|", _amax(ops.sigma_m), spec.mant_max),
              ("|mu_m|", _amax(ops.mu_m), spec.mant_max), ("|bias_int|", _amax(ops.bias_int), spec.bias_max))
    for what, value, limit in checks:
        if value > limit:
            raise SpecError(f"{what} = {value} exceeds the spec's bound {limit}")


def _amax(a) -> int:
    return int(np.max(np.abs(a), initial=0))


def conv3x3(Z: np.ndarray, wmat: np.ndarray, dtype=np.float64) -> np.ndarray:
    """Zero-padded 3x3 correlation of Z (N, C, H, W) with wmat (O, C*9), in ``dtype``, as im2col + matmul.

    The padded image is flattened with row pitch W + 2, so tap (dy, dx) is a constant offset: the im2col block
    is a strided view (copied once by reshape) and two junk columns per row are computed and dropped.
    """
    N, C, H, W = Z.shape
    O = wmat.shape[0]
    Wp = W + 2
    zp = np.zeros((N, C, (H + 2) * Wp + 2), dtype=dtype)
    zp[:, :, : (H + 2) * Wp].reshape(N, C, H + 2, Wp)[:, :, 1:H + 1, 1:W + 1] = Z
    wmat = np.asarray(wmat, dtype=dtype)
    out = np.empty((N, O, H, W), dtype=dtype)
    rows = max(1, min(H, COLS_BUDGET // (C * TAPS * Wp * zp.itemsize)))
    s_c, s_x = zp.strides[1], zp.strides[2]
    for n in range(N):
        for h0 in range(0, H, rows):  # blocks of rows bound the im2col memory
            h1 = min(H, h0 + rows)
            L = (h1 - h0) * Wp
            base = zp[n, :, h0 * Wp:]
            cols = as_strided(base, (C, 3, 3, L), (s_c, Wp * s_x, s_x, s_x), writeable=False).reshape(C * TAPS, L)
            out[n, :, h0:h1, :] = (wmat @ cols).reshape(O, h1 - h0, Wp)[:, :, :W]
    return out


# F(2x2, 3x3) Winograd with G scaled by 2 so that every transform is an integer matrix:
# 4 * conv = A^T [ (G2 g G2^T) . (B^T d B) ] A  for each 4x4 input tile d and 2x2 output tile.
WINO_G2 = np.array([[2, 0, 0], [1, 1, 1], [1, -1, 1], [0, 0, 2]], dtype=np.float64)


def winograd_bound(channels: int, w_max: int, z_max: int) -> int:
    """Largest magnitude of any intermediate of :func:`conv3x3_winograd` (before the final exact / 4).

    |G2 g G2^T| <= 9 w_max (rows of G2 sum to at most 3 in absolute value), |B^T d B| <= 4 z_max (two +-1 per row
    of B^T), the products summed over ``channels``, then the output transform adds at most 9 of them.
    """
    return 9 * channels * (9 * w_max) * (4 * z_max)


WINO_BLOCK_TILES = 128  # output tiles per block: keeps the transformed block near cache size (48..192 measured alike)


def conv3x3_winograd(Z: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Zero-padded 3x3 correlation of integer-valued Z (N, C, H, W) with integer weights w (O, C, 3, 3), float64.

    Winograd F(2x2, 3x3): 16 matrix products of (O x C) by (C x tiles) instead of one (O x 9C) by (9C x pixels),
    2.25 times fewer multiplications. Exact (the caller checks :func:`winograd_bound` < 2^53): every transform
    matrix is an integer matrix, so every intermediate is an integer below the bound, and the result is 4 x the
    correlation, divided by 4 exactly at the end. The padded image is split into its four (row, column) parity
    planes, so the transforms are whole-array adds of contiguous slices; tile rows are processed in blocks of
    about ``WINO_BLOCK_TILES`` tiles.
    """
    N, C, H, W = Z.shape
    O = w.shape[0]
    th, tw = (H + 1) // 2, (W + 1) // 2
    V = np.matmul(WINO_G2, np.matmul(w.astype(np.float64), WINO_G2.T))  # (O, C, 4, 4) = G2 g G2^T
    V = np.ascontiguousarray(V.transpose(2, 3, 0, 1)).reshape(16, O, C)
    out = np.empty((N, O, 2 * th, 2 * tw), dtype=np.float64)
    rows = max(1, min(th, WINO_BLOCK_TILES // tw))
    for n in range(N):
        # plane[a][b][c, i, j] = zp[c, 2i + a, 2j + b] with zp the image padded by one zero row / column on each
        # side, i.e. Z[c, 2i + a - 1, 2j + b - 1]
        plane = [[np.zeros((C, th + 1, tw + 1), dtype=np.float64) for _ in range(2)] for _ in range(2)]
        for a in range(2):
            for b in range(2):
                src = Z[n, :, 1 - a::2, 1 - b::2]
                plane[a][b][:, 1 - a:1 - a + src.shape[1], 1 - b:1 - b + src.shape[2]] = src
        for r0 in range(0, th, rows):
            r1 = min(th, r0 + rows)
            nt = r1 - r0
            # rows of B^T d (B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]), per column parity
            R = []
            for b in range(2):
                e0, e1 = plane[0][b][:, r0:r1], plane[0][b][:, r0 + 1:r1 + 1]
                o0, o1 = plane[1][b][:, r0:r1], plane[1][b][:, r0 + 1:r1 + 1]
                R.append((e0 - e1, o0 + e1, e1 - o0, o0 - o1))
            U = np.empty((4, 4, C, nt, tw), dtype=np.float64)  # U = B^T d B
            for i in range(4):
                ev, od = R[0][i], R[1][i]
                np.subtract(ev[..., :-1], ev[..., 1:], out=U[i, 0])
                np.add(od[..., :-1], ev[..., 1:], out=U[i, 1])
                np.subtract(ev[..., 1:], od[..., :-1], out=U[i, 2])
                np.subtract(od[..., :-1], od[..., 1:], out=U[i, 3])
            M = np.matmul(V, U.reshape(16, C, nt * tw)).reshape(4, 4, O, nt, tw)
            # Y = A^T M A with A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]
            o = out[n, :, 2 * r0:2 * r1]
            for pr, a in enumerate((M[0] + M[1] + M[2], M[1] - M[2] - M[3])):
                o[:, pr::2, 0::2] = a[0] + a[1] + a[2]
                o[:, pr::2, 1::2] = a[1] - a[2] - a[3]
    out *= 0.25
    return out[:, :, :H, :W]


def _digit_bits(C: int, w_max: int) -> int:
    """Largest s with C * 9 * w_max * 2^s <= 2^53: digits below 2^s keep every partial sum exact."""
    return 53 - math.ceil(math.log2(C * TAPS * max(w_max, 1) + 1))


def accumulate(ops: Operands, spec: DatapathSpec) -> np.ndarray:
    """The exact accumulator of spec.py's datapath, int64 (N, O, H, W)."""
    _check_bounds(ops, spec)
    N, C, H, W = ops.P.shape
    O = ops.w.shape[0]
    wmat = ops.w.reshape(O, C * TAPS).astype(np.float64)
    sig = ops.sigma_m[:, :, None, None]
    mu = ops.mu_m[:, :, None, None]
    z_max = spec.mant_max * (spec.wordset.p_max + 1)  # |sigma_m P + mu_m|
    if spec.float64_exact:
        Z = ops.P.astype(np.float64)
        Z *= sig
        Z += mu
        if winograd_bound(spec.channels, spec.w_max, z_max) < 2 ** 53:
            acc = conv3x3_winograd(Z, ops.w).astype(np.int64)
        else:
            acc = conv3x3(Z, wmat).astype(np.int64)
    else:
        Z = ops.P * sig + mu  # int64: |Z| <= mant_max * (p_max + 1) < 2^63
        s = _digit_bits(C, spec.w_max)
        acc = np.zeros((N, O, H, W), np.int64)
        shift = 0
        while not np.all(np.abs(Z) < (1 << s)):
            acc += conv3x3((Z & ((1 << s) - 1)).astype(np.float64), wmat).astype(np.int64) << shift
            Z = Z >> s  # floor division: Z = (Z >> s) * 2^s + (Z & (2^s - 1))
            shift += s
        acc += conv3x3(Z.astype(np.float64), wmat).astype(np.int64) << shift
    acc += ops.bias_int[:, :, None, None]
    return acc


def to_float(acc: np.ndarray, ops: Operands, weight_scale) -> np.ndarray:
    """y_hw = weight_scale[o] * 2^-E[n] * acc, float64 (one rounding: s_w 2^-E is exact, acc < 2^53 is exact)."""
    step = np.ldexp(np.asarray(weight_scale, dtype=np.float64)[None, :], -ops.E[:, None])  # (N, O), exact
    return np.multiply(acc, step[:, :, None, None], dtype=np.float64)


def run_layer(layer: LayerData, spec: DatapathSpec, codes=None):
    """(ops, acc, y_hw) of one layer."""
    ops = operands(layer, spec, codes)
    try:
        acc = accumulate(ops, spec)
    except SpecError as exc:
        raise UserError(f"{layer.name}: {exc}") from None
    return ops, acc, to_float(acc, ops, layer.weight_scale)


def error_bound(layer: LayerData, ops: Operands, spec: DatapathSpec, y_hw: np.ndarray) -> dict:
    """Elementwise bound of |y_hw - y| for the fake-quant float32 output y of contract 1 (docs/datapath.md).

    ``fixed``: the fixed-point format's rounding, s_w 2^-E (1/2 + 1/2 sum_c,t |w'| (|P| + valid)), since
    bias_int, sigma_m and mu_m are each within 1/2 of their exact values. ``float32``: the reference's own
    float32 rounding, (4.02 u + 1.0001 gamma_n) S with u = 2^-24, n = 9C + 1 products, gamma_n = n u / (1 - n u)
    and S = |bias| + s_w sum |w'| (|P| scale/denom + |mean|) (points, point*scale, +mean, weight, then any
    summation order). ``float64``: this model's own float64 rounding. ``total`` = their sum.
    """
    N, C, H, W = ops.P.shape
    O = ops.w.shape[0]
    absw = np.abs(ops.w).reshape(O, C * TAPS).astype(np.float64)
    ws = layer.weight_scale.astype(np.float64)[None, :, None, None]
    step = np.ldexp(ws, -ops.E[:, None, None, None])  # s_w 2^-E: one accumulator unit
    absP = np.abs(ops.P).astype(np.float64)
    R = conv3x3(absP + 1.0, absw)  # sum |w'| (|P| + valid), exact
    fixed = step * (0.5 + 0.5 * R)
    sig = layer.scale.astype(np.float64) / spec.wordset.denom
    m = absP * sig[:, :, None, None] + np.abs(layer.mean.astype(np.float64))[:, :, None, None]
    S = np.abs(layer.bias.astype(np.float64))[None, :, None, None] + ws * conv3x3(m, absw)
    n = C * TAPS + 1
    gamma = n * F32_U / (1 - n * F32_U)
    float32 = (4.02 * F32_U + 1.0001 * gamma) * S
    float64 = 8 * F64_U * (S + np.abs(y_hw))
    return {"fixed": fixed, "float32": float32, "float64": float64, "total": fixed + float32 + float64}
