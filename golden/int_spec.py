"""Formats and widths of the integer-only DFSQ network (contract 2): a sibling of golden/spec.py.

golden/spec.py defines one quantized conv's datapath (point codes, the engine's accumulator). This module defines
everything around it that makes a whole network integer-only (docs/datapath.md, "Contract 2"), each fact once:

Feature-map format
    Every tensor between the quantized convs (the body's entry, ReLU outputs, residual sums, RDN's concatenations,
    its exit) is a signed fixed-point integer ``X`` of ``fmap_bits`` bits with ``fmap_frac`` fraction bits:
    value = X * 2^-fmap_frac, |X| <= x_max = 2^(fmap_bits - 1) - 1 (symmetric: saturation clamps to [-x_max, x_max],
    so -X is always representable). One format per network: ``fmap_frac`` is the largest F with
    ``margin * R * 2^F <= x_max``, R the calibrated max |activation| over the body's tensors (FMAP_MARGIN = 2: one
    bit of headroom); a value beyond the format saturates, and saturations are counted (:func:`fmap_frac_for`).

Per-channel statistics (one pass: sum, minimum, maximum)
    ``S = sum X`` over the N = H W pixels of a channel (``sum_bits``, for N <= ``max_pixels``),
    ``mu = floor((2 S + N) / (2 N))`` (the mean rounded half up; 0 when the conv's input follows a ReLU),
    ``M = max(xmax - mu, mu - xmin)`` (``m_bits``, unsigned, 0 <= M <= 2 x_max).

Thresholds (per channel, once per feature map)
    ``T_k = mu + floor(M (P_k + P_{k+1}) / (2 denom))`` for k = 0 .. 2^b - 2, clamped to
    [-2^(fmap_bits-1), 2^(fmap_bits-1) - 1] (``thr_bits`` = fmap_bits: the clamp changes no comparison with an X in
    range); the code of X is ``#{k : X > T_k}``: X > T_k exactly when X - mu > M mid_k, mid_k = (P_k + P_{k+1}) /
    (2 denom) (X - mu is an integer), so the code is the count of midpoints strictly below (X - mu) / M: the nearest
    point, an X exactly on a midpoint taking the lower one, as contract 1's ``searchsorted(mid, xn, side='left')``
    on the same integers. The product M (P_k + P_{k+1}) is ``thr_product_bits`` wide.

De-normalization parameters from the integer statistics
    scale = M 2^-F and mean = mu 2^-F are exact, so sigma_m, mu_m, E (golden.spec's "fused" or "split" format) are
    computed in integers from (M, mu) with the same rules as contract 1 (golden.int_layer.fixed_point_int).

Post unit (requantization, bias, ReLU, residual add)
    The weight scale (times the residual scale) is a fixed-point multiplier ``mult * 2^-r``, mult an unsigned
    ``mult_bits``-bit integer with its top bit set (a float32's significand: exact for res_scale 1);
    ``Y = floor((acc mult + 2^(sh-1)) / 2^sh)``, sh = E + r - F in [1, ``post_shift_max``] (larger shifts are
    clamped there: the result is the same), then ReLU (max(Y, 0)), saturation to [-x_max, x_max], the residual add
    and saturation again. The bias is inside acc (bias_int, as the engine computes it).

Entry and exit
    The FP prologue's float32 output h enters as ``X = sat(floor(h 2^F + 1/2))``; the exit is X 2^-F (float32).
NumPy only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .spec import DatapathSpec, SpecError, check_int_ranges, signed_bits

INT_SPEC_VERSION = 1
FMAP_BITS_RANGE = (8, 32)
DEFAULT_FMAP_BITS = 16        # chosen by measured PSNR (docs/datapath.md, "Contract 2")
FMAP_MARGIN = 2.0             # calibrated max |activation| times this must fit the format (one bit of headroom)
DEFAULT_MAX_PIXELS = 1 << 22  # pixels per channel the statistics are sized for (1920 x 1080 LR: 2^21 = 2.07 M)
MAX_PIXELS_RANGE = (1, 1 << 30)
MULT_BITS = 24                # requantization multiplier: a float32 significand (24 bits with the hidden one)


def requant_widths(acc_max: int) -> tuple[int, int, int]:
    """(product bound, product bits, largest shift) of a rounding requantizer ``floor((acc mult + 2^(sh-1)) / 2^sh)``
    for |acc| <= acc_max and a MULT_BITS-bit multiplier: beyond the largest shift (product bits + 1) every result is
    0, so larger shifts are clamped to it. The post unit (IntSpec) and the static uniform requantizer share it."""
    pmax = int(acc_max) * ((1 << MULT_BITS) - 1)
    bits = signed_bits(pmax)
    return pmax, bits, bits + 1


def fmap_frac_for(max_abs: float, fmap_bits: int, margin: float = FMAP_MARGIN) -> int:
    """The largest fraction-bit count F with ``margin * max_abs * 2^F <= x_max`` (x_max = 2^(fmap_bits-1) - 1).

    SpecError when even F = 0 does not fit (the format is too narrow for the network's range); F is at most
    ``fmap_bits - 1`` (a range below 1)."""
    lo, hi = FMAP_BITS_RANGE
    if not (isinstance(fmap_bits, int) and not isinstance(fmap_bits, bool) and lo <= fmap_bits <= hi):
        raise SpecError(f"fmap_bits must be an integer in {lo}..{hi}, got {fmap_bits!r}")
    r = float(max_abs) * float(margin)
    if not (math.isfinite(r) and r >= 0):
        raise SpecError(f"activation range {max_abs!r} x margin {margin!r} is not a finite non-negative number")
    x_max = (1 << (fmap_bits - 1)) - 1
    if r > x_max:
        need = int(math.floor(math.log2(r))) + 2
        raise SpecError(f"a {fmap_bits}-bit feature map is too narrow: the calibrated range {max_abs:.4g} times the "
                        f"margin {margin:g} needs {need} bits with no fraction bits")
    if r == 0:
        return fmap_bits - 1
    f = fmap_bits - 1
    while f > 0 and r * 2.0 ** f > x_max:
        f -= 1
    return f


@dataclass(frozen=True)
class FmapFormat:
    """Signed fixed point: value = X 2^-frac, |X| <= x_max = 2^(bits-1) - 1 (saturation is symmetric)."""

    bits: int = DEFAULT_FMAP_BITS
    frac: int = 8

    def __post_init__(self):
        check_int_ranges(self, (("bits", FMAP_BITS_RANGE),))
        if not (isinstance(self.frac, int) and not isinstance(self.frac, bool) and 0 <= self.frac < self.bits):
            raise SpecError(f"fraction bits must be an integer in 0..{self.bits - 1}, got {self.frac!r}")

    @property
    def x_max(self) -> int:
        return (1 << (self.bits - 1)) - 1

    @property
    def max_value(self) -> float:
        """The largest representable magnitude, x_max 2^-frac."""
        return math.ldexp(self.x_max, -self.frac)

    def describe(self) -> str:
        return f"Q{self.bits - 1 - self.frac}.{self.frac} ({self.bits} bits, range +-{self.max_value:g})"

    def saturate(self, x: np.ndarray) -> tuple[np.ndarray, int]:
        """(clamp(x, -x_max, x_max) in the format's dtype, count of clamped elements)."""
        x = np.asarray(x)
        lim = self.x_max
        if x.size == 0 or (int(x.max()) <= lim and int(x.min()) >= -lim):
            return x.astype(self.dtype, copy=False), 0
        n = int(np.count_nonzero(x > lim)) + int(np.count_nonzero(x < -lim))
        return np.clip(x, -lim, lim).astype(self.dtype, copy=False), n

    def to_fixed(self, v) -> tuple[np.ndarray, int]:
        """(X, saturations) of float values v: X = sat(floor(v 2^frac + 1/2)), exact for float32/float64 v."""
        v = np.asarray(v)
        if not np.all(np.isfinite(v)):
            raise SpecError("a feature map entering the integer network holds NaN or infinite values")
        s = np.ldexp(v.astype(np.float64), self.frac)   # exact: a power-of-two scaling
        lim = float(self.x_max)
        n = int(np.count_nonzero(s > lim + 0.5)) + int(np.count_nonzero(s < -lim - 0.5))
        # floor(s + 1/2) is exact in float64 while |s| < 2^52; clip first so the cast cannot wrap
        x = np.floor(np.clip(s, -lim - 1.0, lim + 1.0) + 0.5)
        return np.clip(x, -lim, lim).astype(self.dtype), n

    @property
    def dtype(self):
        """The narrowest NumPy integer type holding the format (int16 up to 16 bits, else int32)."""
        return np.int16 if self.bits <= 16 else np.int32

    def to_float(self, x) -> np.ndarray:
        """float32 X 2^-frac (exact while bits <= 25)."""
        return np.ldexp(np.asarray(x, dtype=np.float64), -self.frac).astype(np.float32)


@dataclass(frozen=True)
class IntSpec:
    """The integer network's widths for one datapath configuration and feature-map format.

    ``datapath``: the quantized conv's :class:`golden.spec.DatapathSpec` (its ``channels``/``kernel`` the widest
    layer's); ``fmap``: the :class:`FmapFormat`; ``max_pixels``: the largest H W the statistics are sized for."""

    datapath: DatapathSpec = DatapathSpec()
    fmap: FmapFormat = FmapFormat()
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self):
        if not isinstance(self.datapath, DatapathSpec) or not isinstance(self.fmap, FmapFormat):
            raise SpecError("IntSpec needs a DatapathSpec and an FmapFormat")
        check_int_ranges(self, (("max_pixels", MAX_PIXELS_RANGE),))

    # --- statistics ---------------------------------------------------------------------------------------------
    @property
    def x_max(self) -> int:
        return self.fmap.x_max

    @property
    def sum_max(self) -> int:
        """Bound of a channel sum S over at most ``max_pixels`` pixels."""
        return self.max_pixels * self.x_max

    @property
    def sum_bits(self) -> int:
        return signed_bits(self.sum_max)

    @property
    def pixel_bits(self) -> int:
        """Unsigned width of a pixel count N (1 .. max_pixels)."""
        return self.max_pixels.bit_length()

    @property
    def m_max(self) -> int:
        """Bound of M = max(xmax - mu, mu - xmin): 2 x_max."""
        return 2 * self.x_max

    @property
    def m_bits(self) -> int:
        """Unsigned width of M."""
        return self.m_max.bit_length()

    # --- thresholds ---------------------------------------------------------------------------------------------
    @property
    def thresholds(self) -> int:
        """Thresholds per channel: 2^b - 1."""
        return self.datapath.points - 1

    @property
    def thr_lo(self) -> int:
        """Thresholds are clamped to [thr_lo, thr_hi] = [-(x_max + 1), x_max]: every X in [-x_max, x_max] compares
        the same (X > -(x_max + 1) always, X > x_max never), and they fit ``thr_bits`` = fmap_bits."""
        return -(self.x_max + 1)

    @property
    def thr_hi(self) -> int:
        return self.x_max

    @property
    def thr_bits(self) -> int:
        return self.fmap.bits

    @property
    def pair_max(self) -> int:
        """Bound of P_k + P_{k+1}."""
        return 2 * self.datapath.wordset.p_max

    @property
    def thr_product_max(self) -> int:
        """Bound of M (P_k + P_{k+1})."""
        return self.m_max * self.pair_max

    @property
    def thr_product_bits(self) -> int:
        return signed_bits(self.thr_product_max)

    @property
    def thr_divisor(self) -> int:
        """2 denom: T_k = mu + floor(M (P_k + P_{k+1}) / thr_divisor)."""
        return 2 * self.datapath.wordset.denom

    # --- post unit ----------------------------------------------------------------------------------------------
    @property
    def mult_bits(self) -> int:
        return MULT_BITS

    @property
    def post_product_max(self) -> int:
        """Bound of acc * mult (the engine's acc_max for the widest layer)."""
        return requant_widths(self.datapath.acc_max)[0]

    @property
    def post_product_bits(self) -> int:
        return requant_widths(self.datapath.acc_max)[1]

    @property
    def post_shift_max(self) -> int:
        """Largest right shift the post unit applies: beyond it |acc mult| < 2^(sh-1), so the result is 0 (or -0
        rounded up to 0) for every larger shift too; larger shifts are clamped to it."""
        return requant_widths(self.datapath.acc_max)[2]

    @property
    def post_shift_bits(self) -> int:
        return self.post_shift_max.bit_length()

    def widths(self) -> dict:
        d = {"int_spec_version": INT_SPEC_VERSION, "fmap_bits": self.fmap.bits, "fmap_frac": self.fmap.frac,
             "x_max": self.x_max, "max_pixels": self.max_pixels, "sum_bits": self.sum_bits,
             "pixel_bits": self.pixel_bits, "m_bits": self.m_bits, "thresholds": self.thresholds,
             "thr_bits": self.thr_bits, "thr_product_bits": self.thr_product_bits,
             "thr_divisor": self.thr_divisor, "mult_bits": self.mult_bits,
             "post_product_bits": self.post_product_bits, "post_shift_max": self.post_shift_max,
             "post_shift_bits": self.post_shift_bits, "datapath": self.datapath.widths()}
        return d


__all__ = ["INT_SPEC_VERSION", "FMAP_BITS_RANGE", "DEFAULT_FMAP_BITS", "FMAP_MARGIN", "DEFAULT_MAX_PIXELS",
           "MULT_BITS", "requant_widths", "fmap_frac_for", "FmapFormat", "IntSpec"]
