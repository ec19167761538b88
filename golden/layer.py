"""Whole quantized conv layers on the integer datapath of golden/spec.py, vectorized (NumPy only).

    codes  = derive_codes(x, mean, scale, points)          # the float32 ops of PyTorch, bit-identical
    ops    = operands(layer, spec)                          # w', P, sigma_m, mu_m, E, bias_int (int64)
    acc    = accumulate(ops, spec)                          # the exact accumulator, int64 (N, O, H, W)
    y_hw   = to_float(acc, ops, layer.weight_scale)         # s_w[o] * 2^-E[n] * acc, float64

:func:`accumulate` uses the identity

    acc = bias_int + conv3x3(w', Z),   Z[n, c] = sigma_m[n, c] * P[n, c] + mu_m[n, c] * valid

(``valid`` is 1 inside the image and 0 on the zero padding, where P is 0 too). By default it splits it as

    acc = [bias_int + sum_c mu_m[c] sum_t w'[., c, t]]  +  sum_c sigma_m[c] conv3x3(w'[., c], P[c])  +  border

The first term is one integer per output channel (int64); ``border`` corrects the pixels whose 3x3 window reaches
the padding (mu_m is masked there), exactly in int64 on the border rows and columns only; the middle term is a
Winograd F(2x2, 3x3) correlation of the small integers P with sigma_m folded into the transformed weights, in
float64 BLAS, exact because every intermediate is a multiple of 1/4 below :func:`winograd_bound` < 2^53 (proof in
:func:`winograd_bound` and docs/datapath.md). Configurations beyond that bound use an im2col product of Z in
float64 (exact while ``spec.acc_max < 2^53``, :attr:`DatapathSpec.float64_exact`), and beyond that (e.g.
``scale_bits = 32``) Z is split into base-2^s digits small enough for each digit's product to be exact, and the
digits' results are recombined in int64.
:func:`golden.datapath.pixel_reference` is the per-pixel reference these functions are tested against.

1x1 layers (RDN's local and global feature fusion) have no padding and no taps: ``acc = bias_int + w' Z`` is one
(O x C) by (C x H W) float64 BLAS product per sample, exact while every partial sum stays below 2^53 (the layer's
``acc_max``: 2^47.91 for the 1024-input 1x1 conv at the default configuration), else the same base-2^s digits.
Every layer runs with its own geometry (``DatapathSpec.for_layer``: C input channels, k x k kernel): the bias cap
of E, the bounds and the exact path are the layer's (:func:`layer_spec`).
"""
from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .errors import UserError
from .export_io import LayerData, check_layer_spec
from .spec import KERNELS, TAPS, DatapathSpec, SpecError

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

    w: np.ndarray            # (O, C, k, k)  w' = q - zero_point (k = 3, or 1 for a 1x1 conv)
    P: np.ndarray            # (N, C, H, W)  point integers of the codes (value * denom)
    sigma_m: np.ndarray      # (N, C)        round(scale / denom * 2^E)
    mu_m: np.ndarray         # (N, C)        round(mean * 2^E)
    E: np.ndarray            # (N,)          shared exponent per sample
    bias_int: np.ndarray     # (N, O)        round(bias / s_w * 2^E)
    codes: np.ndarray        # (N, C, H, W)  point indices
    point_codes: np.ndarray  # (C, 2^b)      spec codes of each channel's points
    sigma_s: np.ndarray | None = None  # (N, C) "split" only: sigma mantissa s_c (sigma_m = s_c << d_c)
    sigma_d: np.ndarray | None = None  # (N, C) "split" only: alignment shift d_c
    wino: np.ndarray | None = None     # winograd_weights(w), when the caller keeps them across samples (a cache)


def point_table(point_codes, spec: DatapathSpec) -> np.ndarray:
    """P of every (channel, index): the spec's decoder applied to the point codes (int64, (C, 2^b))."""
    return spec.wordset.code_to_int(point_codes)


def gather_points(table: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """table[c, codes[n, c, h, w]] for every element, vectorized."""
    C, npts = table.shape
    # flat index c * npts + code, in the narrowest integer type that holds it (a large intp index array would
    # cost more memory traffic than the gather itself)
    itype = np.int16 if C * npts <= np.iinfo(np.int16).max else np.intp
    flat = codes.astype(itype)
    flat += (np.arange(C, dtype=itype) * npts)[None, :, None, None]
    return table.ravel()[flat]


def fixed_point_params(scale, mean, bias, weight_scale, spec: DatapathSpec, parts: bool = False):
    """(sigma_m (N, C), mu_m (N, C), E (N,), bias_int (N, O)) from the float32 statistics, per spec.py.

    With ``parts`` (a "split" spec), also the sigma mantissas s (N, C) and shifts d (N, C): sigma_m = s << d."""
    scale = np.asarray(scale)
    mean = np.asarray(mean)
    N = scale.shape[0]
    sig = np.empty(scale.shape, np.int64)
    mu = np.empty(scale.shape, np.int64)
    s_all = np.empty(scale.shape, np.int64)
    d_all = np.zeros(scale.shape, np.int64)
    E = np.empty(N, np.int64)
    bias_int = np.empty((N, len(bias)), np.int64)
    try:
        cap = spec.bias_exponent_limit(bias, weight_scale)
        for n in range(N):  # one shared exponent per sample: a loop over samples, not pixels or channels
            if spec.split:
                s_all[n], d_all[n], mu[n], E[n] = spec.split_fixed_point(scale[n], mean[n], cap)
                sig[n] = s_all[n] << d_all[n]
            else:
                sig[n], mu[n], E[n] = spec.fixed_point(scale[n], mean[n], cap)
                s_all[n] = sig[n]
            bias_int[n] = spec.bias_int(bias, weight_scale, int(E[n]))
    except SpecError as exc:
        raise UserError(f"fixed-point format: {exc}") from None
    if parts:
        return sig, mu, E, bias_int, s_all, d_all
    return sig, mu, E, bias_int


def layer_spec(spec: DatapathSpec, channels: int, kernel: int) -> DatapathSpec:
    """``spec`` with the geometry of one layer (C input channels, a k x k kernel): its bounds, widths and the bias
    cap of E are that layer's. SpecError unless ``spec`` covers the layer (C <= channels, k x k <= taps)."""
    if kernel not in KERNELS:
        raise SpecError(f"kernel {kernel}x{kernel} is not supported (kernels {KERNELS})")
    if not spec.covers(channels, kernel):
        raise SpecError(f"a {kernel}x{kernel} layer with {channels} input channels exceeds the spec "
                        f"({spec.kernel}x{spec.kernel}, {spec.channels} channels)")
    return spec.for_layer(channels, kernel)


def operands(layer: LayerData, spec: DatapathSpec, codes=None) -> Operands:
    """The integer operands of ``layer`` (``codes`` default: the exported ones).

    ``spec`` is the export's configuration (it must cover the layer); the fixed-point parameters use the layer's
    own geometry (:func:`layer_spec`)."""
    check_layer_spec(layer, spec, layer.path or layer.name)
    try:
        lspec = layer_spec(spec, layer.x.shape[1], layer.kernel)
    except SpecError as exc:
        raise UserError(f"{layer.name}: {exc}") from None
    codes = layer.codes if codes is None else np.asarray(codes)
    if codes.shape != layer.x.shape:
        raise UserError(f"codes have shape {codes.shape}, expected {layer.x.shape}")
    table = point_table(layer.point_codes, spec)
    if not np.array_equal(table, layer.point_ints):
        raise UserError(f"{layer.name}: decoded point codes differ from point_ints")
    w = layer.weight_q.astype(np.int64) - layer.zero_point.astype(np.int64)[:, None, None, None]
    sig, mu, E, bias_int, s, d = fixed_point_params(layer.scale, layer.mean, layer.bias, layer.weight_scale, lspec,
                                                    parts=True)
    return Operands(w=w, P=gather_points(table, codes), sigma_m=sig, mu_m=mu, E=E, bias_int=bias_int,
                    codes=codes.astype(np.uint8, copy=False), point_codes=layer.point_codes,
                    sigma_s=s if spec.split else None, sigma_d=d if spec.split else None)


def _check_bounds(ops: Operands, spec: DatapathSpec) -> None:
    """SpecError unless every operand is within the spec's bounds (which make the accumulator exact)."""
    N, C, H, W = ops.P.shape
    k = ops.w.shape[-1] if ops.w.ndim == 4 else 0
    if ops.w.ndim != 4 or ops.w.shape[1:] != (C, k, k) or k not in KERNELS:
        raise SpecError(f"weights {ops.w.shape} do not match P {ops.P.shape} (kernels {KERNELS})")
    checks = (("input channels", C, spec.channels), ("kernel taps", k * k, spec.taps), ("|w'|", _amax(ops.w), spec.w_max),
              ("|P|", _amax_minmax(ops.P), spec.wordset.p_max), ("|sigma_m|", _amax(ops.sigma_m), spec.sigma_m_max),
              ("|mu_m|", _amax(ops.mu_m), spec.mant_max), ("|bias_int|", _amax(ops.bias_int), spec.bias_max))
    for what, value, limit in checks:
        if value > limit:
            raise SpecError(f"{what} = {value} exceeds the spec's bound {limit}")


def _amax(a) -> int:
    return int(np.max(np.abs(a), initial=0))


def _amax_minmax(a) -> int:
    """max |a| from max and min (no |a| temporary: a large array is read twice, never written)."""
    return max(int(np.max(a, initial=0)), -int(np.min(a, initial=0)))


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


# Winograd F(2x2, 3x3) on the point integers P, with sigma_m folded into the transformed weights
# (``conv3x3_winograd_sigma``): 4x4 input tiles d (stride 2), 2x2 output tiles y,
#     y = A^T [ sum_c (G g_c G^T) sigma_c  .  (B^T d_c B) ] A
WINO_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=np.float64)
WINO_AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=np.float64)
WINO_AT2 = np.kron(WINO_AT, WINO_AT)  # (4, 16): y[k, l] = sum_ij A^T[k, i] A^T[l, j] M[i, j], row 2k + l


def winograd_bound(channels: int, w_max: int, mant_max: int, p_max: int, const_max: int) -> int:
    """4 x the largest magnitude of any intermediate of :func:`conv3x3_winograd_sigma` (see its docstring).

    Transformed weights: |(G g G^T)_ij sigma| <= g_i g_j w_max mant_max (g = row sums of |G| = 1, 3/2, 3/2, 1);
    transformed inputs: |(B^T d B)_ij| <= 4 p_max; so every partial sum of the product over the channels is at most
    channels (g_i b_i)(g_j b_j) w_max mant_max p_max <= 9 channels w_max mant_max p_max. The output transform
    (A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]) sums at most 3 x 3 of them, each weighted by its own g b: at most
    (2 + 3 + 3)^2 = 64 channels w_max mant_max p_max, plus the constant added to one of them. Every value is a
    multiple of 1/4 (the entries of G g G^T are), so float64 holds it exactly when 4 x the bound is below 2^53.
    """
    return 4 * (64 * channels * w_max * mant_max * p_max + const_max)


WINO_BLOCK_TILES = 192  # output tiles per block: the transformed block (16 C tiles doubles, 1.6 MB at C 64) stays in L2


def winograd_weights(w: np.ndarray) -> np.ndarray:
    """(16, O, C) float64: G g G^T of every (o, c), transform index i * 4 + j first (exact: multiples of 1/4)."""
    O, C = w.shape[:2]
    GG = np.kron(WINO_G, WINO_G)  # (16, 9): (G g G^T)[i, j] = sum_ab G[i, a] G[j, b] g[a, b]
    return (GG @ np.asarray(w, dtype=np.float64).reshape(O * C, 9).T).reshape(16, O, C)


_WORKSPACE = threading.local()


def _scratch(name: str, size: int) -> np.ndarray:
    """A float64 scratch array of ``size`` elements, reused across calls in this thread (no fresh pages)."""
    buf = getattr(_WORKSPACE, name, None)
    if buf is None or buf.size < size:
        buf = np.empty(size, dtype=np.float64)
        setattr(_WORKSPACE, name, buf)
    return buf[:size]


def conv3x3_winograd_sigma(P: np.ndarray, V: np.ndarray, sigma: np.ndarray, const: np.ndarray,
                           out: np.ndarray, threads: int = 1) -> None:
    """out[o, y, x] = const[o] + sum_c sigma[c] sum_t w[o, c, t] P[c, y + dy, x + dx] for one sample, zero-padded.

    ``P`` (C, H, W) integers, ``V`` = :func:`winograd_weights` (16, O, C), ``sigma`` (C,) and ``const`` (O,)
    integers; ``out`` an int64 (O, 2 ceil(H/2), 2 ceil(W/2)) array (rows / columns past H, W are junk).
    Exact when :func:`winograd_bound` < 2^53 (the caller checks): the weight transform (G, with halves) is folded
    with sigma into V sigma, multiples of 1/4 below 2^29; the input transform B^T d B of the integer P and the
    output transform A^T M A are integer matrices; so every value is a multiple of 1/4 within the bound, stored
    exactly, and the output, an integer, is cast to int64 without rounding. ``const`` is added to the middle
    element M[1, 1] of every tile, which A^T M A adds to all four outputs of the tile (A[1] = (1, 1)).

    Layout: every transform step is a few whole-array adds on long 1D (or long-row) views, never a loop over
    pixels or channels. Rows first: R[k] (C, tiles rows, Wp) from rows 2i .. 2i + 3 of the padded image; then
    columns on the flattened R[k] with stride 2, so tile column j of a row reads R[2j .. 2j + 3] and each row
    yields tw + 1 values, the last one junk (it straddles two rows): the products and the output transform carry
    that junk column along (4% more work at 48 pixels wide) and it is dropped when the tile rows are written out.
    The output transform is a BLAS product too: the 4 outputs of every tile as (4 x 16) +-1 combinations of its
    16 products (``WINO_AT2``).
    Tile rows are processed in blocks of about ``WINO_BLOCK_TILES`` tiles, by ``threads`` worker threads (each
    block writes its own output rows; BLAS should then be single-threaded, e.g. ``OPENBLAS_NUM_THREADS=1``).
    """
    H, W = P.shape[1:]
    th, tw = (H + 1) // 2, (W + 1) // 2
    threads = max(1, int(threads))
    Vs = V * np.asarray(sigma, dtype=np.float64)[None, None, :]  # (16, O, C), exact
    const = np.asarray(const, dtype=np.float64)[:, None]
    nblocks = -(-th // max(1, min(th, WINO_BLOCK_TILES // tw)))  # blocks of at most WINO_BLOCK_TILES tiles
    nblocks = -(-nblocks // threads) * threads if th >= threads else nblocks  # as many per worker
    rows = -(-th // nblocks)
    blocks = [(r0, min(th, r0 + rows)) for r0 in range(0, th, rows)]
    if threads > 1 and len(blocks) > 1:  # NumPy and BLAS release the GIL: blocks run in parallel
        list(_pool(threads).map(lambda b: _winograd_block(P, Vs, const, out, *b), blocks))
    else:
        for b in blocks:
            _winograd_block(P, Vs, const, out, *b)


_POOLS: dict[int, ThreadPoolExecutor] = {}


def _pool(threads: int) -> ThreadPoolExecutor:
    """A persistent pool of ``threads`` workers (so that their scratch arrays persist too)."""
    if threads not in _POOLS:
        _POOLS[threads] = ThreadPoolExecutor(threads, thread_name_prefix="golden-layer")
    return _POOLS[threads]


def _winograd_block(P, Vs, const, out, r0: int, r1: int) -> None:
    """Tile rows r0 .. r1 - 1 of :func:`conv3x3_winograd_sigma` (writes output rows 2 r0 .. 2 r1 - 1 only)."""
    C, H, W = P.shape
    O = Vs.shape[1]
    tw = (W + 1) // 2
    Wp = 2 * tw + 2
    nt = r1 - r0
    q = nt * (tw + 1)  # columns of a transformed block per channel, junk column included
    # X: rows 2 r0 .. 2 r1 + 1 of the zero-padded image (padded row y + 1 = image row y; one extra zero row /
    # column at the end for odd sizes)
    X = _scratch("X", C * (2 * nt + 2) * Wp).reshape(C, 2 * nt + 2, Wp)
    y0, y1 = max(0, 2 * r0 - 1), min(H, 2 * r1 + 1)  # image rows inside the block
    a0, a1 = y0 - 2 * r0 + 1, y1 - 2 * r0 + 1
    X[:, :a0] = 0
    X[:, a1:] = 0
    X[:, a0:a1, 0] = 0
    X[:, a0:a1, W + 1:] = 0
    X[:, a0:a1, 1:W + 1] = P[:, y0:y1]
    # rows: B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]] on rows (d0, d1, d2, d3)
    d0, d1, d2, d3 = (X[:, m:2 * nt + m:2] for m in range(4))
    R = _scratch("R", 4 * (C * nt * Wp + 2)).reshape(4, C * nt * Wp + 2)
    R[:, -2:] = 0
    Rv = R[:, :-2].reshape(4, C, nt, Wp)
    np.subtract(d0, d2, out=Rv[0])
    np.add(d1, d2, out=Rv[1])
    np.subtract(d2, d1, out=Rv[2])
    np.subtract(d1, d3, out=Rv[3])
    # columns: the same B^T on (R[2j], R[2j + 1], R[2j + 2], R[2j + 3]) of the flattened rows
    U = _scratch("U", 16 * C * q).reshape(4, 4, C * q)
    n = C * q
    for k in range(4):
        e0, o0, e1, o1 = R[k, 0:2 * n:2], R[k, 1:2 * n + 1:2], R[k, 2:2 * n + 2:2], R[k, 3:2 * n + 3:2]
        np.subtract(e0, e1, out=U[k, 0])
        np.add(o0, e1, out=U[k, 1])
        np.subtract(e1, o0, out=U[k, 2])
        np.subtract(o0, o1, out=U[k, 3])
    M = np.matmul(Vs, U.reshape(16, C, q), out=_scratch("M", 16 * O * q).reshape(16, O, q)).reshape(4, 4, O * q)
    M[1, 1].reshape(O, q)[:] += const
    # Y = A^T M A for the 4 outputs (k, l) of every tile at once: one (4 x 16) by (16 x O q) product
    Y4 = np.matmul(WINO_AT2, M.reshape(16, O * q), out=_scratch("Y4", 4 * O * q).reshape(4, O * q))
    Y = _scratch("Y", 2 * O * q)  # (O, nt, tw + 1, 2): one output row of each tile row, junk pair last
    for k in range(2):
        Y[0::2] = Y4[2 * k]
        Y[1::2] = Y4[2 * k + 1]
        np.copyto(out[:, 2 * r0 + k:2 * r1:2], Y.reshape(O, nt, Wp)[:, :, :Wp - 2], casting="unsafe")


def mu_taps(w: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """(O, 3, 3) int64: sum_c mu[c] w[o, c, dy, dx], exact (|.| <= channels w_max mant_max)."""
    return np.einsum("ocyx,c->oyx", w, np.asarray(mu, dtype=np.int64))


def mu_border(acc: np.ndarray, S: np.ndarray) -> None:
    """Add to ``acc`` (O, H, W) int64, holding sum_t S[o, t] at every pixel, the correction on the border pixels
    where some taps fall on the zero padding (their mu_m is masked out: the padding is 0, not the mean).
    Exact int64; touches the first and last rows and columns only (a loop over those at most 4 lines)."""
    O, H, W = acc.shape
    K = S.sum(axis=(1, 2))
    d = np.arange(3)[:, None] - 1
    rv = (np.arange(H) + d >= 0) & (np.arange(H) + d < H)  # (3, H): tap row dy inside the image
    cv = ((np.arange(W) + d >= 0) & (np.arange(W) + d < W)).astype(np.int64)  # (3, W)
    for y in sorted({0, H - 1}):
        acc[:, y, :] += S[:, rv[:, y], :].sum(axis=1) @ cv - K[:, None]
    if H > 2:  # rows 1 .. H-2: every row tap inside, only the columns 0 and W-1 lose taps
        Sx = S.sum(axis=1)  # (O, 3)
        for x in sorted({0, W - 1}):
            acc[:, 1:H - 1, x] += (Sx @ cv[:, x] - K)[:, None]


def _digit_bits(C: int, w_max: int, taps: int = TAPS) -> int:
    """Largest s with C * taps * w_max * 2^s <= 2^53: digits below 2^s keep every partial sum exact."""
    return 53 - math.ceil(math.log2(C * taps * max(w_max, 1) + 1))


def conv1x1(Z: np.ndarray, wmat: np.ndarray, dtype=np.float64) -> np.ndarray:
    """1x1 conv of Z (N, C, H, W) with wmat (O, C): one (O x C) by (C x H W) product per sample, in ``dtype``."""
    N, C, H, W = Z.shape
    wmat = np.asarray(wmat, dtype=dtype)
    out = np.empty((N, wmat.shape[0], H, W), dtype=dtype)
    for n in range(N):
        np.matmul(wmat, np.asarray(Z[n], dtype=dtype).reshape(C, H * W), out=out[n].reshape(-1, H * W))
    return out


def conv_kxk(Z: np.ndarray, wmat: np.ndarray, kernel: int, dtype=np.float64) -> np.ndarray:
    """Zero-padded k x k correlation (k = 3 or 1) of Z (N, C, H, W) with wmat (O, C * k * k)."""
    return conv3x3(Z, wmat, dtype) if kernel == 3 else conv1x1(Z, wmat, dtype)


def accumulate(ops: Operands, spec: DatapathSpec, threads: int = 1) -> np.ndarray:
    """The exact accumulator of spec.py's datapath, int64 (N, O, H, W); ``threads`` workers for the fast path.

    ``spec`` bounds the operands (it must cover the layer's geometry: the export's spec or the layer's own); the
    exact path is chosen from the layer's real C and kernel, with |bias_int| <= ``spec.bias_max``."""
    _check_bounds(ops, spec)
    N, C, H, W = ops.P.shape
    O, k = ops.w.shape[0], ops.w.shape[-1]
    taps = k * k
    # |sum_c,t w' Z| <= C taps w_max mant_max (p_max + 1); with the bias: the layer's bound of |acc| (acc_max when
    # spec is the layer's own)
    acc_bound = C * taps * spec.w_max * (spec.sigma_m_max * spec.wordset.p_max + spec.mant_max) + spec.bias_max
    const_max = spec.bias_max + taps * C * spec.w_max * spec.mant_max  # |bias_int + sum mu_m w'|
    if k == 3 and winograd_bound(C, spec.w_max, spec.sigma_m_max, spec.wordset.p_max, const_max) < 2 ** 53:
        V = winograd_weights(ops.w) if ops.wino is None else ops.wino
        th, tw = (H + 1) // 2, (W + 1) // 2
        full = np.empty((N, O, 2 * th, 2 * tw), dtype=np.int64)
        for n in range(N):  # a loop over samples (sigma_m, mu_m are per sample), not over pixels or channels
            S = mu_taps(ops.w, ops.mu_m[n])
            const = ops.bias_int[n] + S.sum(axis=(1, 2))
            conv3x3_winograd_sigma(ops.P[n], V, ops.sigma_m[n], const, full[n], threads)
            mu_border(full[n, :, :H, :W], S)
        return full if (2 * th, 2 * tw) == (H, W) else np.ascontiguousarray(full[:, :, :H, :W])
    wmat = ops.w.reshape(O, C * taps).astype(np.float64)
    sig = ops.sigma_m[:, :, None, None]
    mu = ops.mu_m[:, :, None, None]
    if acc_bound < (1 << 53) and spec.float64_exact:
        Z = ops.P.astype(np.float64)
        Z *= sig
        Z += mu
        acc = conv_kxk(Z, wmat, k).astype(np.int64)
    else:
        Z = ops.P * sig + mu  # int64: |Z| <= sigma_m_max p_max + mant_max < 2^63
        s = _digit_bits(C, spec.w_max, taps)
        acc = np.zeros((N, O, H, W), np.int64)
        shift = 0
        while not np.all(np.abs(Z) < (1 << s)):
            acc += conv_kxk((Z & ((1 << s) - 1)).astype(np.float64), wmat, k).astype(np.int64) << shift
            Z = Z >> s  # floor division: Z = (Z >> s) * 2^s + (Z & (2^s - 1))
            shift += s
        acc += conv_kxk(Z.astype(np.float64), wmat, k).astype(np.int64) << shift
    acc += ops.bias_int[:, :, None, None]
    return acc


def to_float(acc: np.ndarray, ops: Operands, weight_scale) -> np.ndarray:
    """y_hw = weight_scale[o] * 2^-E[n] * acc, float64 (one rounding: s_w 2^-E is exact, acc < 2^53 is exact)."""
    step = np.ldexp(np.asarray(weight_scale, dtype=np.float64)[None, :], -ops.E[:, None])  # (N, O), exact
    return np.multiply(acc, step[:, :, None, None], dtype=np.float64)


def run_layer(layer: LayerData, spec: DatapathSpec, codes=None, threads: int = 1):
    """(ops, acc, y_hw) of one layer (``threads``: worker threads of :func:`accumulate`), on the layer's own
    geometry (:func:`layer_spec`)."""
    ops = operands(layer, spec, codes)
    try:
        acc = accumulate(ops, layer_spec(spec, layer.x.shape[1], layer.kernel), threads)
    except SpecError as exc:
        raise UserError(f"{layer.name}: {exc}") from None
    return ops, acc, to_float(acc, ops, layer.weight_scale)


def error_bound(layer: LayerData, ops: Operands, spec: DatapathSpec, y_hw: np.ndarray) -> dict:
    """Elementwise bound of |y_hw - y| for the fake-quant float32 output y of contract 1 (docs/datapath.md).

    ``fixed``: the fixed-point format's rounding, s_w 2^-E (1/2 + 1/2 sum_c,t |w'| (|P| + valid)), since
    bias_int, sigma_m and mu_m are each within 1/2 of their exact values ("split": sigma_m = s_c << d_c is within
    2^d_c / 2, so |P| is weighted by 2^d_c there). ``float32``: the reference's own
    float32 rounding, (4.02 u + 1.0001 gamma_n) S with u = 2^-24, n = C k^2 + 1 products, gamma_n = n u / (1 - n u)
    and S = |bias| + s_w sum |w'| (|P| scale/denom + |mean|) (points, point*scale, +mean, weight, then any
    summation order). ``float64``: this model's own float64 rounding. ``total`` = their sum.
    """
    N, C, H, W = ops.P.shape
    O, k = ops.w.shape[0], ops.w.shape[-1]
    absw = np.abs(ops.w).reshape(O, C * k * k).astype(np.float64)
    ws = layer.weight_scale.astype(np.float64)[None, :, None, None]
    step = np.ldexp(ws, -ops.E[:, None, None, None])  # s_w 2^-E: one accumulator unit
    absP = np.abs(ops.P).astype(np.float64)
    # sigma_m is within half its last unit of sigma 2^E: 1/2 ("fused"), 2^d_c / 2 ("split", shift d_c); mu_m within 1/2
    half_ulp = 0.5 if ops.sigma_d is None else np.ldexp(0.5, ops.sigma_d)[:, :, None, None]
    R = conv_kxk(absP * half_ulp + 0.5, absw, k)  # sum |w'| (|P| ulp_c / 2 + valid / 2), exact
    fixed = step * (0.5 + R)
    sig = layer.scale.astype(np.float64) / spec.wordset.denom
    m = absP * sig[:, :, None, None] + np.abs(layer.mean.astype(np.float64))[:, :, None, None]
    S = np.abs(layer.bias.astype(np.float64))[None, :, None, None] + ws * conv_kxk(m, absw, k)
    float32, float64 = float_bounds(S, C * k * k + 1, y_hw)
    return {"fixed": fixed, "float32": float32, "float64": float64, "total": fixed + float32 + float64}


def float_bounds(S: np.ndarray, n: int, y_hw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(float32, float64) rounding bounds of a conv output: the float32 reference's (4.02 u + 1.0001 gamma_n) S
    (u = 2^-24, gamma_n = n u / (1 - n u), ``n`` products and the bias summed, ``S`` the sum of the magnitudes of
    every term: each operand rounded once or twice before the products, then any summation order), and this
    model's own float64 rounding of ``y_hw``, 8 u64 (S + |y_hw|)."""
    gamma = n * F32_U / (1 - n * F32_U)
    return (4.02 * F32_U + 1.0001 * gamma) * S, 8 * F64_U * (S + np.abs(y_hw))
