"""One quantized conv of the integer-only network (contract 2): statistics, thresholds, codes, operands, post unit.

Every function here is exact integer arithmetic on int64 arrays (or Python integers for the few per-channel and
per-output-channel constants), in the formats of golden/int_spec.py (docs/datapath.md, "Contract 2"):

    S, xmin, xmax = channel_stats(X)                        # one pass over the feature map
    mu, M         = mean_range(S, xmin, xmax, H W, relu)    # mean rounded half up; M = max(xmax - mu, mu - xmin)
    T             = thresholds(mu, M, point_ints, ispec)    # 2^b - 1 per channel, ascending
    codes         = codes_from_thresholds(X, T)             # #{k : X > T_k}
    sigma_m, mu_m, E, bias_int = fixed_point_int(M, mu, F, bias, weight_scale, spec)
    acc           = golden.layer.accumulate(...)            # the engine, unchanged
    Y             = post(acc, ...)                          # requantize, ReLU, saturate, residual add, saturate

:func:`run_conv` chains them for one layer; :mod:`golden.int_network` runs a whole body.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from .errors import UserError
from .int_spec import MULT_BITS, IntSpec
from .layer import Operands, accumulate, gather_points, layer_spec, winograd_weights
from .spec import DatapathSpec, SpecError


# --- exact integer helpers ------------------------------------------------------------------------------------------
def div_round_half_up(num, den):
    """floor(num / den + 1/2) = floor((2 num + den) / (2 den)) for integers (int64 arrays or Python ints), den > 0."""
    return (2 * num + den) // (2 * den)


def scaled_round(v, k: int, den: int = 1):
    """round_half_up(v 2^k / den) exactly, for integer v (array or int), any integer k, den > 0."""
    if k >= 0:
        return div_round_half_up(v * (1 << k) if not isinstance(v, np.ndarray) else v << k, den)
    return div_round_half_up(v, den << -k)


def _pow2_cmp(a: int, k: int, b: int) -> int:
    """sign(a 2^k - b) for Python integers a, b >= 0 and any integer k."""
    lhs, rhs = (a << k, b) if k >= 0 else (a, b << -k)
    return (lhs > rhs) - (lhs < rhs)


def largest_shift(a: int, b: int, strict: bool = False) -> int:
    """The largest integer k with a 2^k <= b (``strict``: < b), for integers a > 0, b > 0."""
    a, b = int(a), int(b)
    if a <= 0 or b <= 0:
        raise ValueError("largest_shift needs positive integers")
    k = b.bit_length() - a.bit_length()
    ok = (lambda k: _pow2_cmp(a, k, b) < 0) if strict else (lambda k: _pow2_cmp(a, k, b) <= 0)
    while not ok(k):
        k -= 1
    while ok(k + 1):
        k += 1
    return k


def float32_parts(v) -> tuple[list[int], list[int]]:
    """Exact integer mantissas and exponents of float32 values: v = m 2^e, |m| < 2^24 (0 for zero)."""
    return _float32_parts(np.ascontiguousarray(v, dtype=np.float32).tobytes())


@functools.lru_cache(maxsize=4096)
def _float32_parts(raw: bytes) -> tuple[list[int], list[int]]:
    v = np.frombuffer(raw, dtype=np.float32).astype(np.float64)
    if not np.all(np.isfinite(v)):
        raise SpecError("a float32 parameter is not finite")
    f, e = np.frexp(v)
    m = np.ldexp(f, MULT_BITS).astype(np.int64)   # exact: a float32 has at most 24 significant bits
    return [int(x) for x in m], [int(x) - MULT_BITS for x in e]


# --- statistics -----------------------------------------------------------------------------------------------------
def channel_stats(X: np.ndarray):
    """(S, xmin, xmax), each int64 (N, C): per (sample, channel) sum, minimum and maximum of X (N, C, H, W)."""
    X = np.asarray(X)
    if X.ndim != 4 or X.dtype.kind not in "iu":
        raise UserError(f"channel_stats: X must be a 4-D integer array, got {X.dtype} {X.shape}")
    return (X.sum(axis=(2, 3), dtype=np.int64), X.min(axis=(2, 3)).astype(np.int64),
            X.max(axis=(2, 3)).astype(np.int64))


def mean_range(S, xmin, xmax, pixels: int, relu_input: bool):
    """(mu, M) int64 (N, C): mu = floor((2 S + N) / (2 N)) (0 for a conv after a ReLU), M = max(xmax - mu, mu - xmin).

    |mu| <= x_max because |S| <= N x_max; 0 <= M <= 2 x_max."""
    pixels = int(pixels)
    if pixels < 1:
        raise UserError("mean_range: the feature map has no pixels")
    S, xmin, xmax = (np.asarray(a, dtype=np.int64) for a in (S, xmin, xmax))
    mu = np.zeros_like(S) if relu_input else div_round_half_up(S, pixels)
    return mu, np.maximum(xmax - mu, mu - xmin)


# --- thresholds and codes -------------------------------------------------------------------------------------------
def check_point_table(point_ints, where: str = "point table") -> np.ndarray:
    """The (C, 2^b) point integers as int64; UserError unless each channel's points are ascending (non-decreasing):
    thresholds from a descending table would not be a binary-searchable sequence."""
    p = np.asarray(point_ints)
    if p.ndim != 2 or p.dtype.kind not in "iu" or p.shape[1] < 2:
        raise UserError(f"{where}: point integers must be a (C, 2^b) integer array, got {p.dtype} {p.shape}")
    p = p.astype(np.int64)
    bad = np.diff(p, axis=1) < 0
    if np.any(bad):
        c, k = (int(v) for v in np.argwhere(bad)[0])
        raise UserError(f"{where}: the points of channel {c} are not ascending ({int(p[c, k])} before "
                        f"{int(p[c, k + 1])}): the thresholds would not be ascending")
    return p


def thresholds(mu, M, point_ints, ispec: IntSpec) -> np.ndarray:
    """(N, C, 2^b - 1) in the feature-map dtype: T_k = mu + floor(M (P_k + P_{k+1}) / (2 denom)), clamped to
    [ispec.thr_lo, ispec.thr_hi]. Non-decreasing in k (M >= 0, points ascending)."""
    p = check_point_table(point_ints)
    mu = np.asarray(mu, dtype=np.int64)
    M = np.asarray(M, dtype=np.int64)
    if mu.shape != M.shape or mu.ndim != 2 or mu.shape[1] != p.shape[0]:
        raise UserError(f"thresholds: mu {mu.shape}, M {M.shape} and points {p.shape} do not match")
    if np.any(M < 0) or np.any(M > ispec.m_max) or np.any(np.abs(mu) > ispec.x_max):
        raise UserError("thresholds: mu or M outside the feature-map format's range")
    pair = p[:, :-1] + p[:, 1:]                                            # (C, K)
    q = (M[:, :, None] * pair[None]) // ispec.thr_divisor                  # floor division: exact, |.| < 2^50
    return np.clip(mu[:, :, None] + q, ispec.thr_lo, ispec.thr_hi).astype(ispec.fmap.dtype)


def codes_from_thresholds(X, T) -> np.ndarray:
    """uint8 (N, C, H, W): #{k : X > T[n, c, k]} (T non-decreasing), one comparison pass per threshold."""
    X = np.asarray(X)
    T = np.asarray(T)
    if X.ndim != 4 or T.ndim != 3 or T.shape[:2] != X.shape[:2] or T.shape[2] > 255:
        raise UserError(f"codes: X {X.shape} and thresholds {T.shape} do not match")
    if T.dtype != X.dtype and np.can_cast(T.dtype, X.dtype) is False and X.dtype.kind == "i" \
            and T.size and np.iinfo(X.dtype).min <= int(T.min()) and int(T.max()) <= np.iinfo(X.dtype).max:
        T = T.astype(X.dtype)   # same values, no per-pass up-cast of X
    codes = np.zeros(X.shape, dtype=np.uint8)
    hit = np.empty(X.shape, dtype=np.bool_)
    for k in range(T.shape[2]):
        np.greater(X, T[:, :, k, None, None], out=hit)
        codes += hit.view(np.uint8)
    return codes


def nearest_codes(X, mu, M, point_ints, denom: int) -> np.ndarray:
    """The reference the threshold codes equal: per element, the index of the point P_i / denom nearest to
    (X - mu) / M (ties to the lower index; M = 0: index 0), by exact integer distances |denom (X - mu) - M P_i|.
    Slow (every point per element); for tests."""
    X = np.asarray(X, dtype=np.int64)
    p = np.asarray(point_ints, dtype=np.int64)
    d = denom * (X - np.asarray(mu, np.int64)[:, :, None, None])[..., None] - \
        np.asarray(M, np.int64)[:, :, None, None, None] * p[None, :, None, None, :]
    # the first index of the smallest distance, scanning upward: ties go to the lower point
    return np.argmin(np.abs(d), axis=-1).astype(np.uint8)


# --- de-normalization parameters from the integer statistics ------------------------------------------------------
def bias_cap(bias, weight_scale, spec: DatapathSpec) -> int | None:
    """The largest E with every |bias_o / s_w,o| 2^E <= spec.bias_max, exactly (None when the bias is zero)."""
    bm, be = float32_parts(bias)
    sm, se = float32_parts(weight_scale)
    if any(s <= 0 for s in sm):
        raise SpecError("weight_scale must be > 0")
    bmax = spec.bias_max
    caps = [largest_shift(abs(b), bmax * s) - (eb - es) for b, eb, s, es in zip(bm, be, sm, se) if b]
    return min(caps) if caps else None


def bias_int(bias, weight_scale, e: int, spec: DatapathSpec) -> np.ndarray:
    """(O,) int64: round_half_up(bias_o / s_w,o 2^E), exactly; SpecError beyond spec.bias_max."""
    bm, be = float32_parts(bias)
    sm, se = float32_parts(weight_scale)
    out = [scaled_round(b, eb - es + e, s) for b, eb, s, es in zip(bm, be, sm, se)]
    bmax = spec.bias_max
    if any(abs(v) > bmax for v in out):
        raise SpecError(f"bias does not fit in {spec.bias_bits} bits at exponent {e}")
    return np.array(out, dtype=np.int64)


def fixed_point_int(M, mu, frac: int, bias, weight_scale, spec: DatapathSpec):
    """(sigma_m, mu_m, E, bias_int, s, d) for one sample from integer statistics M, mu (C,) of a feature map with
    ``frac`` fraction bits: the rules of contract 1 (golden.spec.DatapathSpec.fixed_point / split_fixed_point) on
    the exact values scale = M 2^-frac and mean = mu 2^-frac, computed in integers.

    "fused": E is the largest with max_c(M_c / denom, |mu_c|) 2^(E - frac) <= mant_max, capped by the bias;
    sigma_m = round(M 2^(E - frac) / denom), mu_m = round(mu 2^(E - frac)). "split": e_c the largest with
    round(M_c 2^(e_c - frac) / denom) <= sigma_max, E = min(min_c e_c + shift_max, mean cap, bias cap),
    d_c = max(0, E - e_c) (0 where e_c > E), s_c = round(M_c 2^(E - d_c - frac) / denom), sigma_m = s_c << d_c.
    s and d are sigma_m and 0 for "fused". round = half up. A sample with no constraint (every M, mu and bias
    zero) gets E = 0."""
    M = [int(v) for v in np.asarray(M).ravel()]
    mu = [int(v) for v in np.asarray(mu).ravel()]
    if len(M) != len(mu) or any(v < 0 for v in M):
        raise SpecError("M must be non-negative and match mu")
    denom = spec.wordset.denom
    mant = spec.mant_max
    caps = []
    cap_b = bias_cap(bias, weight_scale, spec)
    if cap_b is not None:
        caps.append(cap_b)
    if spec.split:
        lim = (2 * spec.sigma_max + 1) * denom      # round(M 2^g / denom) <= sigma_max  <=>  2 M 2^g < lim
        e_c = [largest_shift(2 * m, lim, strict=True) + frac if m else None for m in M]
        live = [e for e in e_c if e is not None]
        if live:
            caps.append(min(live) + spec.shift_max)
        mmax = max((abs(v) for v in mu), default=0)
        if mmax:
            caps.append(largest_shift(mmax, mant) + frac)
        E = min(caps) if caps else 0
        d = [0 if e is None or e > E else E - e for e in e_c]
        s = [scaled_round(m, E - dc - frac, denom) for m, dc in zip(M, d)]
        sig = [sv << dc for sv, dc in zip(s, d)]
    else:
        V = max([max(m, abs(u) * denom) for m, u in zip(M, mu)], default=0)
        if V:
            caps.append(largest_shift(V, mant * denom) + frac)
        E = min(caps) if caps else 0
        sig = [scaled_round(m, E - frac, denom) for m in M]
        s, d = sig, [0] * len(M)
    mu_m = [scaled_round(u, E - frac) for u in mu]
    a = lambda v: np.array(v, dtype=np.int64)  # noqa: E731
    return a(sig), a(mu_m), int(E), bias_int(bias, weight_scale, E, spec), a(s), a(d)


# --- post unit ------------------------------------------------------------------------------------------------------
def post_multiplier(weight_scale, res_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(mult (O,), r (O,)) int64 with s_w,o * res_scale = mult_o 2^-r_o: mult a ``MULT_BITS``-bit integer with its
    top bit set. Exact for res_scale 1 (a float32 significand); else s_w * res_scale (exact in float64, both
    float32) rounded half up to MULT_BITS bits."""
    ws = np.asarray(weight_scale, dtype=np.float32).astype(np.float64)
    rs = float(np.float32(res_scale))
    if not (np.all(np.isfinite(ws)) and np.all(ws > 0)) or not (np.isfinite(rs) and rs > 0):
        raise SpecError("weight_scale and res_scale must be finite and > 0")
    v = ws * rs   # exact: 24 x 24 significant bits
    f, e = np.frexp(v)
    mult, r = [], []
    for fi, ei in zip(f.tolist(), e.tolist()):
        num, den = float(fi).as_integer_ratio()           # fi = num / den exactly, den a power of two
        m = scaled_round(num, MULT_BITS, den)
        ri = MULT_BITS - ei
        if m >> MULT_BITS:                                 # rounded up to 2^MULT_BITS: renormalize
            m, ri = m >> 1, ri - 1
        mult.append(m)
        r.append(ri)
    return np.array(mult, dtype=np.int64), np.array(r, dtype=np.int64)


def post_shift(E, r, frac: int, ispec: IntSpec) -> np.ndarray:
    """(N, O) int64: sh = E + r - frac, clamped to at most ``post_shift_max`` (the result is unchanged). SpecError
    for sh < 1: a layer whose requantization would need a left shift (never seen: sh is ~40 in practice)."""
    sh = np.asarray(E, np.int64)[:, None] + np.asarray(r, np.int64)[None, :] - int(frac)
    if np.any(sh < 1):
        raise SpecError(f"requantization shift {int(sh.min())} < 1: the post unit shifts right only")
    return np.minimum(sh, ispec.post_shift_max)


def _split_bits(amax: int) -> int:
    """j for :func:`requantize`: acc = a1 2^j + a0 with |a1| mult and a0 mult below 2^61."""
    return max(0, int(amax).bit_length() + MULT_BITS - 61)


def requantize(acc, mult, sh) -> np.ndarray:
    """int64 floor((acc mult + 2^(sh-1)) / 2^sh), exactly: the post unit's rounding shift. ``acc`` (N, O, H, W) (or
    any shape), ``mult`` < 2^MULT_BITS and ``sh`` >= 1 broadcast against it ((O,) and (N, O) are taken per output
    channel and per (sample, output channel) of a 4-D acc).

    acc * mult can exceed int64, so acc = a1 2^j + a0 (0 <= a0 < 2^j) and, with sh' = min(sh, L + 1) (L the bit
    length of max |acc mult|: any larger shift gives the same result, 0),
        floor((acc mult + 2^(sh'-1)) / 2^sh') = floor((a1 mult + floor(a0 mult / 2^j) + 2^(sh'-1-j)) / 2^(sh'-j))
    (nested floors of exact divisions by powers of two), every term below 2^62 (values beyond 2^62 are clamped there:
    they saturate every feature-map format)."""
    acc = np.asarray(acc, dtype=np.int64)
    mult, sh = _per_output(acc, mult), _per_output(acc, sh, ndim=2)
    if np.any(mult < 1) or np.any(mult >> MULT_BITS):
        raise SpecError(f"a requantization multiplier must be in 1 .. 2^{MULT_BITS} - 1")
    if np.any(sh < 1):
        raise SpecError("a requantization shift must be >= 1")
    return _requantize(acc, mult, sh)


def _requantize(acc, mult, sh):
    """:func:`requantize` without its argument checks (the post unit checks once per layer)."""
    amax = max(int(acc.max(initial=0)), -int(acc.min(initial=0)))
    if amax >> 62:
        raise SpecError("an accumulator exceeds 62 bits")
    L = amax.bit_length() + MULT_BITS
    j = _split_bits(amax)
    sh = np.minimum(sh, L + 1)
    if np.any(sh - 1 < j):   # a huge |acc| with a tiny shift (never in practice): Python integers, exactly
        a, m, k = np.broadcast_arrays(acc, mult, sh)
        out = [(int(x) * int(y) + (1 << (int(z) - 1))) >> int(z) for x, y, z in zip(a.ravel(), m.ravel(), k.ravel())]
        return np.clip(np.array(out, dtype=object), -(1 << 62), 1 << 62).astype(np.int64).reshape(a.shape)
    if j == 0:   # |acc mult| < 2^61 (the usual case): one product, in place
        t = acc * mult
        t += np.int64(1) << (sh - 1)
        t >>= sh
        return t
    t = (acc >> j) * mult + (((acc & ((1 << j) - 1)) * mult) >> j) + (np.int64(1) << (sh - 1 - j))
    return t >> (sh - j)


def _per_output(acc: np.ndarray, v, ndim: int = 1) -> np.ndarray:
    """``v`` shaped to broadcast against a 4-D acc (N, O, H, W): (O,) -> (1, O, 1, 1), (N, O) -> (N, O, 1, 1)."""
    v = np.asarray(v, dtype=np.int64)
    if acc.ndim == 4 and v.ndim == ndim and v.ndim in (1, 2):
        return v.reshape((1,) * (2 - v.ndim) + v.shape + (1, 1))
    return v


POST_BLOCK = 1 << 16   # values per block of the post unit's passes (512 KB of int64: the L2 cache)


@dataclass
class PostResult:
    """The post unit's output and what saturated: ``y`` int64 (N, O, H, W) in the feature-map format."""

    y: np.ndarray
    saturated: int          # elements where a clamp changed the value (requantized value or the sum)


def post(acc, E, mult, r, frac: int, ispec: IntSpec, relu: bool = False, skip=None) -> PostResult:
    """Y = sat(sat(relu(requantize(acc))) + skip) (skip optional), in the feature-map format of ``ispec``.

    Computed in blocks of about POST_BLOCK values (whole output channels), so every pass stays in the CPU's cache."""
    y, n_sat, _ = post_values(acc, mult, post_shift(E, r, frac, ispec), ispec, relu, skip)
    return PostResult(y, n_sat)


def post_values(acc, mult, sh, ispec: IntSpec, relu: bool = False, skip=None, flags: bool = False):
    """(y, saturations, flags) of the post unit for acc (N, O, H, W), mult (O,) and sh (N, O) (>= 1): y in the
    feature-map format; ``saturations`` counts clamps (a value clamped before and after its residual add counts
    twice); with ``flags``, a uint8 (N, O, H, W) array whose bit 0 says the requantized value was clamped and bit 1
    that the sum was (what the RTL post unit outputs per lane), else None."""
    acc = np.asarray(acc, dtype=np.int64)
    mult = np.asarray(mult, dtype=np.int64)
    sh = np.asarray(sh, dtype=np.int64)
    N, O = acc.shape[:2]
    if mult.shape != (O,) or np.any(mult < 1) or np.any(mult >> MULT_BITS):
        raise SpecError(f"post unit: one multiplier in 1 .. 2^{MULT_BITS} - 1 per output channel is needed")
    if sh.shape != (N, O) or np.any(sh < 1):
        raise SpecError("post unit: one shift >= 1 per (sample, output channel) is needed")
    if skip is not None:
        skip = np.asarray(skip)
        if skip.shape != acc.shape:
            raise UserError(f"residual: {skip.shape} does not match the conv output {acc.shape}")
        if skip.size and (int(skip.max()) > ispec.x_max or int(skip.min()) < -ispec.x_max):
            raise UserError("residual: the skip tensor is outside the feature-map format")
    lim = ispec.x_max
    y = np.empty(acc.shape, dtype=ispec.fmap.dtype)
    fl = np.zeros(acc.shape, dtype=np.uint8) if flags else None
    n_sat = 0
    step = max(1, POST_BLOCK // max(1, acc.shape[2] * acc.shape[3]))   # output channels per block
    for n in range(N):
        for o0 in range(0, O, step):
            o1 = min(O, o0 + step)
            v = _requantize(acc[n, o0:o1], mult[o0:o1, None, None], sh[n, o0:o1, None, None])
            if relu:
                np.maximum(v, 0, out=v)
            for bit, add in ((1, None), (2, None if skip is None else skip[n, o0:o1])):
                if add is None and bit == 2:
                    break
                if add is not None:
                    v += add
                if int(v.max(initial=0)) > lim or int(v.min(initial=0)) < -lim:
                    hit = (v > lim) | (v < -lim)
                    n_sat += int(np.count_nonzero(hit))
                    if fl is not None:
                        fl[n, o0:o1] |= hit.astype(np.uint8) * bit
                    np.clip(v, -lim, lim, out=v)
            y[n, o0:o1] = v
    return y, n_sat, fl


def static_requantize(acc, mult, sh, zero, bits: int) -> np.ndarray:
    """The static uniform requantizer (a Min-Max / Uniform-MSE design's, beside DFSQ's post unit): b-bit codes
    clamp(requantize(acc) + zero, 0, 2^b - 1), one multiplier, shift and zero point per tensor (or per output
    channel: they broadcast as in :func:`requantize`)."""
    acc = np.asarray(acc, dtype=np.int64)
    q = requantize(acc, mult, sh) + _per_output(acc, zero)
    return np.clip(q, 0, (1 << int(bits)) - 1)


# --- one conv -------------------------------------------------------------------------------------------------------
@dataclass
class IntConvParams:
    """A quantized conv's integer parameters (what an export or a QuantConv holds)."""

    name: str
    index: int
    kernel: int
    relu_input: bool
    w: np.ndarray              # (O, C, k, k) int64: w' = q - zero_point
    point_ints: np.ndarray     # (C, 2^b) int64, ascending per channel
    point_codes: np.ndarray    # (C, 2^b) spec codes of the points
    weight_scale: np.ndarray   # (O,) float32
    bias: np.ndarray           # (O,) float32

    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def in_channels(self) -> int:
        return int(self.w.shape[1])

    def table16(self) -> np.ndarray:
        """The point integers as int16 (|P| <= p_max <= 2^13 for every word set): P is gathered into int16."""
        if "table16" not in self._cache:
            self._cache["table16"] = check_point_table(self.point_ints, self.name).astype(np.int16)
        return self._cache["table16"]

    def winograd(self) -> np.ndarray | None:
        """golden.layer.winograd_weights(w) of a 3x3 conv, computed once."""
        if self.kernel != 3:
            return None
        if "wino" not in self._cache:
            self._cache["wino"] = winograd_weights(self.w)
        return self._cache["wino"]

    @property
    def out_channels(self) -> int:
        return int(self.w.shape[0])


@dataclass
class ConvRecord:
    """Everything one conv computed (N samples): what the RTL units are checked against."""

    S: np.ndarray
    xmin: np.ndarray
    xmax: np.ndarray
    mu: np.ndarray
    M: np.ndarray
    T: np.ndarray
    codes: np.ndarray
    ops: Operands
    acc: np.ndarray


def conv_operands(X, p: IntConvParams, ispec: IntSpec, stats=None):
    """(ConvRecord without acc, layer spec): statistics, thresholds, codes and the engine's operands of conv ``p``
    on the integer feature map X (N, C, H, W)."""
    X = np.asarray(X)
    N, C, H, W = X.shape
    if C != p.in_channels:
        raise UserError(f"{p.name}: input has {C} channels, the conv takes {p.in_channels}")
    if H * W > ispec.max_pixels:
        raise UserError(f"{p.name}: {H}x{W} = {H * W} pixels per channel exceed the statistics' max_pixels "
                        f"{ispec.max_pixels} (sum_bits {ispec.sum_bits})")
    try:
        lspec = layer_spec(ispec.datapath, C, p.kernel)
    except SpecError as exc:
        raise UserError(f"{p.name}: {exc}") from None
    S, xmin, xmax = channel_stats(X) if stats is None else stats
    mu, M = mean_range(S, xmin, xmax, H * W, p.relu_input)
    T = thresholds(mu, M, p.point_ints, ispec)
    codes = codes_from_thresholds(X, T)
    frac = ispec.fmap.frac
    sig, mum, s_, d_ = (np.empty((N, C), np.int64) for _ in range(4))
    E = np.empty(N, np.int64)
    bias_i = np.empty((N, p.out_channels), np.int64)
    try:
        for n in range(N):   # one exponent per sample: a loop over samples, not pixels or channels
            sig[n], mum[n], E[n], bias_i[n], s_[n], d_[n] = fixed_point_int(M[n], mu[n], frac, p.bias,
                                                                             p.weight_scale, lspec)
    except SpecError as exc:
        raise UserError(f"{p.name}: fixed-point format: {exc}") from None
    ops = Operands(w=p.w, P=gather_points(p.table16(), codes), sigma_m=sig, mu_m=mum, E=E, bias_int=bias_i,
                   codes=codes, point_codes=p.point_codes, sigma_s=s_ if lspec.split else None,
                   sigma_d=d_ if lspec.split else None, wino=p.winograd())
    return ConvRecord(S, xmin, xmax, mu, M, T, codes, ops, None), lspec


def run_conv(X, p: IntConvParams, ispec: IntSpec, threads: int = 1) -> ConvRecord:
    """Statistics, thresholds, codes, operands and the exact accumulator of conv ``p`` on X (N, C, H, W)."""
    rec, lspec = conv_operands(X, p, ispec)
    try:
        rec.acc = accumulate(rec.ops, lspec, threads)
    except SpecError as exc:
        raise UserError(f"{p.name}: {exc}") from None
    return rec


__all__ = ["div_round_half_up", "scaled_round", "largest_shift", "float32_parts", "channel_stats", "mean_range",
           "check_point_table", "thresholds", "codes_from_thresholds", "nearest_codes", "bias_cap", "bias_int",
           "fixed_point_int", "post_multiplier", "post_shift", "requantize", "PostResult", "post", "post_values",
           "static_requantize", "IntConvParams", "ConvRecord", "conv_operands", "run_conv"]
