"""The single definition of the DFSQ datapath: universal set, point codes, bit widths and fixed-point formats.

dfsq (PyTorch), golden (NumPy), hw (Amaranth) and sim (cocotb) all import this module; nothing else defines a
word set, a code layout or a width. NumPy only.

Universal set
-------------
With ``words`` = N and ``gap`` = G (default 4), word i (1-based) is one of {1, 2^-i, 2^-(i+G), 0}. A point is
the mean of one element per word, with either sign. Every point is an integer ``P`` over ``denom``:

    value = P / denom,   denom = N * 2^K,   K = N + G,   P = sum_i 2^(K - e_i)   (e_i in {0, i, i+G}; 0 word: 0)

so a weight times a point is ``sum_i sign * (w << (K - e_i))`` (K = 8 by default): N shifts and an adder tree,
exact. The factor 1/N (not a shift when N is not a power of two) is never applied in the integer datapath: it is
folded into the per-channel scale (``sigma = scale / denom`` below). N = 4 gives 377 distinct values (the
official DFSQ code's word sets), N = 3 gives 107 (the number in the paper's text); both are multiples of 2^-(K+log2 N).

Code of a point
---------------
``code_bits = 2N + 1``: bits [2i-1 : 2i-2] hold word i's selector (SEL_ZERO, SEL_ONE, SEL_NEAR = 2^-i,
SEL_FAR = 2^-(i+G)), bit 2N is the sign (1 = negative). Code 0 is the value 0. A value with several selector
combinations gets the numerically smallest code (:func:`value_to_code` is a fixed table, built once).

Integer datapath of one quantized conv (see docs/datapath.md)
------------------------------------------------------------
Per input channel c and output pixel, over the k x k taps t of the kernel (k = 3 or 1; ``valid_t`` is 0 for zero
padding, always 1 for k = 1):

    A_c = sum_t w'[o,c,t] * P[c, p+t]            (P = 0 on padding)
    B_c = sum_t w'[o,c,t] * valid_t
    acc = bias_int[o] + sum_c (sigma_m[c] * A_c + mu_m[c] * B_c)

``w' = q - zero_point`` (q in [0, 2^wb - 1]); ``sigma_m = round(scale_c / denom * 2^E)`` and
``mu_m = round(mean_c * 2^E)`` are ``scale_bits``-bit signed integers sharing one exponent E per
(layer, sample) (E is lowered, in degenerate cases only, so that bias_int fits: ``bias_exponent_limit``);
``bias_int = round(bias[o] / s_w[o] * 2^E)``; round = half up (``floor(x + 0.5)``).
The layer output is ``y = s_w[o] * 2^-E * acc``. Every width below is derived from worst-case bounds.

Layer geometry
--------------
A :class:`DatapathSpec` describes one configuration *and* a geometry: ``channels`` input channels C and a
``kernel`` k (3 or 1), so ``taps = k * k`` and ``terms = C * taps`` products per output. The bounds of A_c and
B_c grow with ``taps``, the channel sum with C: so every width and the bias cap of E are those of the layer.
``spec.for_layer(C, k)`` is the spec of one layer of an export whose ``spec`` entry is the widest layer's (EDSR:
C = 64, k = 3, the defaults, so nothing changes there; RDN: C = 1024, k = 3 covers every layer).
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .errors import UserError

SPEC_VERSION = 1

WORDS_RANGE = (2, 5)      # supported number of words (the paper's Appendix C ablation)
ACT_BITS_RANGE = (2, 8)   # bits of a point index (2^b points per channel)
WEIGHT_BITS_RANGE = (2, 8)
SCALE_BITS_RANGE = (4, 32)
DEFAULT_WORDS = 4
DEFAULT_GAP = 4
DEFAULT_SCALE_BITS = 24    # chosen by measured PSNR: docs/datapath.md, bench/results/scale_bits_set5.md, _set14.md
# De-normalization structure (docs/datapath.md, "Split de-normalization"):
#   "fused": every lane computes sigma_m * A_c + mu_m * B_c, both scale_bits wide, one exponent per (layer, sample);
#   "split": the mean term sum_c mu_m B_c leaves the lanes (one start value per output channel and border class,
#            computed once per layer and sample by the mean unit); each lane scales A_c by a low-bit mantissa
#            s_c (sigma_bits, unsigned) and a left shift d_c (shift_bits: 0 = one exponent per (layer, sample)).
DENORMS = ("fused", "split")
DEFAULT_DENORM = "fused"
SIGMA_BITS_RANGE = (1, 24)
SHIFT_BITS_RANGE = (0, 5)
# the split format's default, 6:0 (a 6-bit sigma mantissa, one exponent per (layer, sample), no shifter): the
# fewest mantissa bits, with no shifter, within 0.01 dB of fake-quant on Set5 and Set14 at both W4A4 and W3A3
# (bench/results/denorm_format_w4a4.md, _w3a3.md; also passing: 8:0, 5:3, 6:2), and on B100 at both and the first
# 20 Urban100 images at W4A4 (_w4a4_b100.md, _w3a3_b100.md, _w4a4_urban100_first20.md). The fused datapath stays
# the toolkit's default for compatibility (exports, reference digests, the demo): docs/datapath.md
DEFAULT_SIGMA_BITS = 6
DEFAULT_SHIFT_BITS = 0
# Point sets of the datapath: "universal" (DFSQ: the universal set, shift-add products) or "uniform" (the normalized
# uniform baseline of ``--method dfsq-uniform``: DFSQ's normalization with 2^b evenly spaced points per channel, one
# integer multiplier per product; :class:`UniformPointSet`)
POINT_SETS = ("universal", "uniform")
DEFAULT_POINT_SET = "universal"
DEFAULT_CHANNELS = 64     # max input channels of a layer (EDSR-baseline: 64); sizes accumulators
MAX_CHANNELS = 4096       # largest input channel count a spec accepts
KERNELS = (1, 3)          # supported square kernel sizes (EDSR: 3x3; RDN: 3x3 and the 1x1 fusion convs)
DEFAULT_KERNEL = 3
TAPS = 9                  # taps of a 3x3 kernel: the engine's multipliers per lane (a 1x1 layer uses the centre one)
CENTRE_TAP = 4            # tap t = 3 (dy + 1) + (dx + 1) of offset (0, 0): where a 1x1 kernel sits in a 3x3 window
EPS = 1e-8                # added to max-abs before normalizing (float32), as the DFSQ code does

# selector values of one word (2 bits)
SEL_ZERO, SEL_ONE, SEL_NEAR, SEL_FAR = 0, 1, 2, 3


class SpecError(UserError, ValueError):
    """An unsupported parameter combination (bad input: under :func:`golden.errors.cli_main` one line, exit 2)."""


def signed_bits(max_abs: int) -> int:
    """Width of a two's-complement integer holding every value in [-max_abs, max_abs]."""
    return int(max_abs).bit_length() + 1


def _largest_exponent(m: float, limit: int) -> int:
    """The largest integer E with ``m * 2**E <= limit`` (m > 0), exact in float arithmetic (log2 only seeds it)."""
    e = math.floor(math.log2(limit / m))
    while m * 2.0 ** (e + 1) <= limit:
        e += 1
    while m * 2.0 ** e > limit:
        e -= 1
    return e


def round_half_up(x):
    """The datapath's one rounding rule: floor(x + 0.5), elementwise, to int64."""
    return np.floor(np.asarray(x, dtype=np.float64) + 0.5).astype(np.int64)


class _PointCodes:
    """What every point set derives from its ``denom``, ``int_to_code`` and ``code_to_int`` (and its ``kind``, for
    messages): codes of exact values and values of codes."""

    def value_to_code(self, v) -> np.ndarray:
        """Codes of values that lie exactly on the set."""
        scaled = np.asarray(v, dtype=np.float64) * self.denom
        p = np.rint(scaled)
        if not np.array_equal(p, scaled):
            raise SpecError(f"a value is not a multiple of 1/denom, so not in the {self.kind}")
        return self.int_to_code(p.astype(np.int64))

    def code_to_value(self, code) -> np.ndarray:
        return self.code_to_int(code) / self.denom


@dataclass(frozen=True)
class WordSet(_PointCodes):
    """The universal set for ``words`` words with exponent gap ``gap``."""

    words: int = DEFAULT_WORDS
    gap: int = DEFAULT_GAP
    kind = "universal set"

    def __post_init__(self):
        lo, hi = WORDS_RANGE
        if not (isinstance(self.words, int) and lo <= self.words <= hi):
            raise SpecError(f"words must be an integer in {lo}..{hi}, got {self.words!r}")
        if not (isinstance(self.gap, int) and 1 <= self.gap <= 8):
            raise SpecError(f"gap must be an integer in 1..8, got {self.gap!r}")

    @property
    def K(self) -> int:
        """Shift base: a point's integer is a sum of ``2^(K - e)``."""
        return self.words + self.gap

    @property
    def denom(self) -> int:
        """value = P / denom."""
        return self.words << self.K

    @property
    def code_bits(self) -> int:
        return 2 * self.words + 1

    @property
    def sign_bit(self) -> int:
        return 2 * self.words

    def exponents(self, i: int) -> tuple[int, int, int]:
        """Exponents e of word i (1-based) for SEL_ONE, SEL_NEAR, SEL_FAR: the element is 2^-e."""
        return (0, i, i + self.gap)

    def shift(self, i: int, sel: int) -> int | None:
        """Left shift applied to the weight for word i's selector (None for SEL_ZERO)."""
        if sel == SEL_ZERO:
            return None
        return self.K - self.exponents(i)[sel - 1]

    @property
    def shift_table(self) -> tuple[tuple[int, int, int], ...]:
        """Per word (0-based row), the shifts for SEL_ONE, SEL_NEAR, SEL_FAR."""
        return tuple(tuple(self.K - e for e in self.exponents(i)) for i in range(1, self.words + 1))

    @property
    def p_max(self) -> int:
        """Largest |P| (every word = 1)."""
        return self.words << self.K

    @cached_property
    def _tables(self):
        mag_code: dict[int, int] = {}
        for sels in itertools.product(range(4), repeat=self.words):
            p = 0
            code = 0
            for i, s in enumerate(sels, start=1):
                sh = self.shift(i, s)
                if sh is not None:
                    p += 1 << sh
                code |= s << (2 * (i - 1))
            if p not in mag_code or code < mag_code[p]:
                mag_code[p] = code
        mags = np.array(sorted(mag_code), dtype=np.int64)
        ints = np.concatenate([-mags[:0:-1], mags]) if mags[0] == 0 else np.concatenate([-mags[::-1], mags])
        codes = {int(p): c for p, c in mag_code.items()}
        for p in list(codes):
            if p:
                codes[-p] = codes[p] | (1 << self.sign_bit)
        return ints, codes

    @property
    def ints(self) -> np.ndarray:
        """The universal set as sorted int64 integers P (value = P / denom)."""
        return self._tables[0].copy()

    @property
    def values(self) -> np.ndarray:
        """The universal set as sorted float64 values in [-1, 1]."""
        return self._tables[0] / self.denom

    def __len__(self) -> int:
        return len(self._tables[0])

    @cached_property
    def _dense(self) -> np.ndarray:
        """code of P at index P + p_max, -1 for integers outside the set."""
        table = np.full(2 * self.p_max + 1, -1, dtype=np.int32)
        for p, c in self._tables[1].items():
            table[p + self.p_max] = c
        return table

    def int_to_code(self, p) -> np.ndarray:
        """Codes of integer points (array in, uint16 array out). Raises SpecError for a P outside the set."""
        p = np.asarray(p, dtype=np.int64)
        inside = np.abs(p) <= self.p_max
        c = self._dense[np.where(inside, p + self.p_max, 0)]
        bad = ~inside | (c < 0)
        if np.any(bad):
            raise SpecError(f"{int(p[bad].flat[0])} is not in the {self.words}-word universal set")
        return c.astype(np.uint16)

    def code_to_int(self, code) -> np.ndarray:
        """Decode codes (any integer array) to P, exactly as the hardware decoder + shift-add does for w = 1."""
        code = np.asarray(code, dtype=np.int64)
        if np.any((code < 0) | (code >= (1 << self.code_bits))):
            raise SpecError(f"code out of range for {self.code_bits} bits")
        p = np.zeros(code.shape, dtype=np.int64)
        for i in range(1, self.words + 1):
            sel = (code >> (2 * (i - 1))) & 3
            for s in (SEL_ONE, SEL_NEAR, SEL_FAR):
                p += np.where(sel == s, 1 << self.shift(i, s), 0)
        return np.where((code >> self.sign_bit) & 1, -p, p)

    def snap(self, v) -> np.ndarray:
        """Nearest universal-set integer P for each value (ties go to the lower value)."""
        ints = self._tables[0]
        mids = (ints[:-1] + ints[1:]) / (2.0 * self.denom)
        return ints[np.searchsorted(mids, np.asarray(v, dtype=np.float64), side="left")]


@dataclass(frozen=True)
class UniformPointSet(_PointCodes):
    """The point set of the normalized uniform baseline (``DatapathSpec(point_set="uniform")``).

    With ``bits`` = b and D = 2^b - 1, the set is every integer P in [-D, D] over ``denom`` = D, so values lie
    in [-1, 1]. The 2^b points of a channel (:meth:`channel_ints`) are evenly spaced: ``(2k - D) / D`` (odd P,
    k = 0 .. D) for a mean-subtracted input, ``k / D`` after a ReLU (DFSQ normalizes those to [0, 1]). A weight
    times a point is one signed multiply ``w' * P``; the code of a point is P itself in two's complement,
    ``code_bits = b + 1`` (so the interface of :class:`WordSet` — ints, denom, p_max, codes — carries over and the
    golden model, the export and the engine run unchanged apart from the multiplier)."""

    bits: int
    kind = "uniform point set"

    def __post_init__(self):
        lo, hi = ACT_BITS_RANGE
        if not (isinstance(self.bits, int) and not isinstance(self.bits, bool) and lo <= self.bits <= hi):
            raise SpecError(f"bits must be an integer in {lo}..{hi}, got {self.bits!r}")

    @property
    def denom(self) -> int:
        """value = P / denom (2^b - 1)."""
        return (1 << self.bits) - 1

    @property
    def p_max(self) -> int:
        return (1 << self.bits) - 1

    @property
    def code_bits(self) -> int:
        return self.bits + 1

    @property
    def sign_bit(self) -> int:
        return self.bits

    @property
    def ints(self) -> np.ndarray:
        return np.arange(-self.p_max, self.p_max + 1, dtype=np.int64)

    @property
    def values(self) -> np.ndarray:
        return self.ints / self.denom

    def __len__(self) -> int:
        return 2 * self.p_max + 1

    def channel_ints(self, relu_input: bool) -> np.ndarray:
        """The 2^b points of one channel, ascending: k (after a ReLU) or 2k - D, k = 0 .. D."""
        k = np.arange(1 << self.bits, dtype=np.int64)
        return k if relu_input else 2 * k - self.p_max

    def int_to_code(self, p) -> np.ndarray:
        """Two's-complement codes (uint16) of integer points; SpecError outside [-D, D]."""
        p = np.asarray(p, dtype=np.int64)
        bad = np.abs(p) > self.p_max
        if np.any(bad):
            raise SpecError(f"{int(p[bad].flat[0])} is not in the {self.bits}-bit uniform point set")
        return (p & ((1 << self.code_bits) - 1)).astype(np.uint16)

    def code_to_int(self, code) -> np.ndarray:
        """P of each code (sign extension of ``code_bits``), exactly as the engine's multiplier reads it."""
        code = np.asarray(code, dtype=np.int64)
        if np.any((code < 0) | (code >= (1 << self.code_bits))):
            raise SpecError(f"code out of range for {self.code_bits} bits")
        return np.where(code >> self.sign_bit, code - (1 << self.code_bits), code)

    def snap(self, v) -> np.ndarray:
        """Nearest integer P (ties go to the lower value), clipped to [-D, D]."""
        v = np.asarray(v, dtype=np.float64) * self.denom
        return np.clip(np.ceil(v - 0.5), -self.p_max, self.p_max).astype(np.int64)


def denorm_format(denorm: str | None = None, sigma_bits: int | None = None, shift_bits: int | None = None) -> dict:
    """DatapathSpec keyword arguments for a de-normalization format given as command-line flags (None: the
    default). SpecError for an unknown ``denorm``, for sigma/shift bits without ``split`` or out of range."""
    denorm = DEFAULT_DENORM if denorm is None else denorm
    if denorm not in DENORMS:
        raise SpecError(f"--denorm must be one of {', '.join(DENORMS)}, got {denorm!r}")
    if denorm != "split" and (sigma_bits is not None or shift_bits is not None):
        raise SpecError("--sigma-bits and --shift-bits apply to --denorm split only")
    out = {"denorm": denorm,
           "sigma_bits": DEFAULT_SIGMA_BITS if sigma_bits is None else sigma_bits,
           "shift_bits": DEFAULT_SHIFT_BITS if shift_bits is None else shift_bits}
    for flag, (lo, hi) in (("sigma_bits", SIGMA_BITS_RANGE), ("shift_bits", SHIFT_BITS_RANGE)):
        if not (isinstance(out[flag], int) and lo <= out[flag] <= hi):
            raise SpecError(f"--{flag.replace('_', '-')} must be in {lo}..{hi}, got {out[flag]}")
    return out


def add_denorm_args(parser, what: str = "", when=()) -> None:
    """The ``--denorm``, ``--sigma-bits`` and ``--shift-bits`` flags of every command that takes a de-normalization
    format (a :class:`golden.args.Parser`; validated by :func:`denorm_format`; None means the default). ``when``:
    the :class:`golden.args.When` rules under which the three apply (the sigma and shift widths also need
    ``--denorm split``)."""
    from .args import When

    when = (when,) if isinstance(when, When) else tuple(when)
    split = (*when, When("denorm", "split"))
    parser.choice("--denorm", DENORMS, default=None, when=when or None,
                  help=f"de-normalization{what}: fused (sigma and mean in every lane, the default) or split "
                       "(mean term out of the lanes, low-bit sigma; docs/datapath.md)")
    parser.integer("--sigma-bits", *SIGMA_BITS_RANGE, default=None, when=split,
                   help=f"split: bits of the sigma mantissa (default {DEFAULT_SIGMA_BITS})")
    parser.integer("--shift-bits", *SHIFT_BITS_RANGE, default=None, when=split,
                   help=f"split: bits of the alignment shift, 0 = one exponent per layer and sample "
                        f"(default {DEFAULT_SHIFT_BITS})")


@functools.lru_cache(maxsize=None)
def _wordset(words: int, gap: int) -> WordSet:
    """One shared WordSet per (words, gap), so its tables are built once."""
    return WordSet(words, gap)


def check_int_ranges(obj, ranges) -> None:
    """SpecError unless each named field of ``obj`` is an integer (not a bool) within its (lo, hi)."""
    for name, (lo, hi) in ranges:
        v = getattr(obj, name)
        if not (isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi):
            raise SpecError(f"{name} must be an integer in {lo}..{hi}, got {v!r}")


class LayerGeometry:
    """A datapath spec's layer geometry (``channels`` C, ``kernel`` k) and weight range, shared by
    :class:`DatapathSpec` and :class:`golden.uniform_spec.UniformSpec` (frozen dataclasses with those fields)."""

    def _check_geometry(self) -> None:
        check_int_ranges(self, (("weight_bits", WEIGHT_BITS_RANGE), ("channels", (1, MAX_CHANNELS))))
        if self.kernel not in KERNELS or isinstance(self.kernel, bool):
            raise SpecError(f"kernel must be one of {KERNELS}, got {self.kernel!r}")

    @property
    def taps(self) -> int:
        """Taps of the kernel, k * k (9 for 3x3, 1 for 1x1)."""
        return self.kernel * self.kernel

    @property
    def terms(self) -> int:
        """Products summed into one output: channels x taps."""
        return self.channels * self.taps

    def for_layer(self, channels: int, kernel: int):
        """This configuration with the geometry of one layer (C input channels, a k x k kernel)."""
        if channels == self.channels and kernel == self.kernel:
            return self
        return dataclasses.replace(self, channels=int(channels), kernel=int(kernel))

    def covers(self, channels: int, kernel: int) -> bool:
        """Every bound of a layer with this geometry is within this spec's (so its widths hold that layer)."""
        return channels <= self.channels and kernel * kernel <= self.taps

    @property
    def w_max(self) -> int:
        """Largest |w'|, w' = q - zero_point with q, zero_point in [0, 2^wb - 1]."""
        return (1 << self.weight_bits) - 1

    @property
    def w_bits(self) -> int:
        """Signed width of w'."""
        return signed_bits(self.w_max)


@dataclass(frozen=True)
class DatapathSpec(LayerGeometry):
    """Every width of the integer datapath for one configuration, derived from worst-case bounds."""

    words: int = DEFAULT_WORDS
    act_bits: int = 4
    weight_bits: int = 4
    scale_bits: int = DEFAULT_SCALE_BITS
    channels: int = DEFAULT_CHANNELS
    gap: int = DEFAULT_GAP
    kernel: int = DEFAULT_KERNEL
    denorm: str = DEFAULT_DENORM
    sigma_bits: int = DEFAULT_SIGMA_BITS    # "split" only: bits of the unsigned sigma mantissa s_c
    shift_bits: int = DEFAULT_SHIFT_BITS    # "split" only: bits of the per-channel alignment shift d_c
    point_set: str = DEFAULT_POINT_SET      # "universal" (DFSQ) or "uniform" (the normalized uniform baseline)

    def __post_init__(self):
        WordSet(self.words, self.gap)  # validates words/gap
        if self.point_set not in POINT_SETS:
            raise SpecError(f"point_set must be one of {POINT_SETS}, got {self.point_set!r}")
        check_int_ranges(self, (("act_bits", ACT_BITS_RANGE), ("scale_bits", SCALE_BITS_RANGE),
                                ("sigma_bits", SIGMA_BITS_RANGE), ("shift_bits", SHIFT_BITS_RANGE)))
        self._check_geometry()
        if self.denorm not in DENORMS:
            raise SpecError(f"denorm must be one of {DENORMS}, got {self.denorm!r}")
        if self.acc_bits > 63:
            raise SpecError(f"accumulator needs {self.acc_bits} bits (> 63): lower scale_bits or channels")

    @property
    def wordset(self) -> WordSet | UniformPointSet:
        """The point set: the universal set of ``words``/``gap``, or ("uniform") the :class:`UniformPointSet` of
        ``act_bits`` (``words`` and ``gap`` then play no part)."""
        if self.point_set == "uniform":
            return UniformPointSet(self.act_bits)
        return _wordset(self.words, self.gap)

    @property
    def uniform_points(self) -> bool:
        """Products are integer multiplies ``w' * P`` (the normalized uniform baseline), not shift-adds."""
        return self.point_set == "uniform"

    # geometry (taps, terms, for_layer, covers) and w_max / w_bits: LayerGeometry

    # --- operand widths -------------------------------------------------------------------------------------
    @property
    def points(self) -> int:
        """Points per input channel (2^act_bits). They need not be distinct: 2^b may exceed the set's size."""
        return 1 << self.act_bits

    @property
    def code_bits(self) -> int:
        return self.wordset.code_bits

    @property
    def p_bits(self) -> int:
        """Signed width of a point integer P."""
        return signed_bits(self.wordset.p_max)

    @property
    def product_max(self) -> int:
        return self.w_max * self.wordset.p_max

    @property
    def product_bits(self) -> int:
        return signed_bits(self.product_max)

    @property
    def a_max(self) -> int:
        """Bound of the per-channel partial sum A_c over the kernel's taps."""
        return self.taps * self.product_max

    @property
    def a_bits(self) -> int:
        return signed_bits(self.a_max)

    @property
    def b_max(self) -> int:
        """Bound of the valid-tap weight sum B_c."""
        return self.taps * self.w_max

    @property
    def b_bits(self) -> int:
        return signed_bits(self.b_max)

    @property
    def mant_max(self) -> int:
        """Largest |mu_m| (and, "fused", |sigma_m|): the symmetric range of a scale_bits-bit signed integer."""
        return (1 << (self.scale_bits - 1)) - 1

    # --- split de-normalization ("split"; in "fused" these describe the fused lane) ------------------------------
    @property
    def split(self) -> bool:
        """The mean term is out of the lanes and sigma is a low-bit mantissa with an alignment shift."""
        return self.denorm == "split"

    @property
    def sigma_max(self) -> int:
        """Largest sigma mantissa: "split" 2^sigma_bits - 1 (unsigned s_c), "fused" mant_max."""
        return (1 << self.sigma_bits) - 1 if self.split else self.mant_max

    @property
    def shift_max(self) -> int:
        """Largest alignment shift d_c ("split": 2^shift_bits - 1; "fused": 0)."""
        return (1 << self.shift_bits) - 1 if self.split else 0

    @property
    def sigma_m_max(self) -> int:
        """Largest effective sigma_m = s_c << d_c (the integer that multiplies A_c)."""
        return self.sigma_max << self.shift_max

    @property
    def sa_max(self) -> int:
        """"split": bound of s_c * A_c, before the shift."""
        return self.sigma_max * self.a_max

    @property
    def sa_bits(self) -> int:
        return signed_bits(self.sa_max)

    @property
    def term_max(self) -> int:
        """Bound of one lane's contribution: "fused" sigma_m A_c + mu_m B_c, "split" (s_c A_c) << d_c."""
        if self.split:
            return self.sigma_m_max * self.a_max
        return self.mant_max * (self.a_max + self.b_max)

    @property
    def term_bits(self) -> int:
        return signed_bits(self.term_max)

    @property
    def sum_max(self) -> int:
        """Bound of the sum of the lanes' contributions over all input channels (before the bias / start)."""
        return self.channels * self.term_max

    @property
    def sum_bits(self) -> int:
        return signed_bits(self.sum_max)

    @property
    def tap_const_max(self) -> int:
        """"split": bound of a tap constant K_t = sum_c mu_m[c] w'[o, c, t] (the mean unit's accumulators)."""
        return self.channels * self.mant_max * self.w_max

    @property
    def tap_const_bits(self) -> int:
        return signed_bits(self.tap_const_max)

    @property
    def mean_max(self) -> int:
        """Bound of the mean term sum_c mu_m B_c ("split": out of the lanes; "fused": inside them, 0 here)."""
        return self.channels * self.mant_max * self.b_max if self.split else 0

    @property
    def bias_max(self) -> int:
        """Largest |bias_int| accepted (the magnitude of the whole channel sum)."""
        return self.sum_max + self.mean_max

    @property
    def bias_bits(self) -> int:
        return signed_bits(self.bias_max)

    @property
    def start_max(self) -> int:
        """Bound of the accumulator's start value: "split" bias_int + mean term, "fused" bias_int."""
        return self.bias_max + self.mean_max

    @property
    def start_bits(self) -> int:
        return signed_bits(self.start_max)

    @property
    def acc_max(self) -> int:
        return self.sum_max + self.start_max

    @property
    def acc_bits(self) -> int:
        """Width of the output accumulator: cannot overflow for any operands within the bounds above."""
        return signed_bits(self.acc_max)

    @property
    def float64_exact(self) -> bool:
        """Every partial sum stays below 2^53, so float64 BLAS computes the accumulator exactly."""
        return self.acc_max < (1 << 53)

    def widths(self) -> dict:
        """All widths and bounds, for reports and sidecars."""
        keys = ("words", "gap", "act_bits", "weight_bits", "scale_bits", "channels", "kernel", "points", "code_bits",
                "w_bits", "p_bits", "product_bits", "a_bits", "b_bits", "term_bits", "sum_bits", "bias_bits",
                "acc_bits")
        d = {k: getattr(self, k) for k in keys}
        ws = self.wordset
        d.update({} if self.uniform_points else {"K": ws.K})
        d.update(denom=ws.denom, universal_set_size=len(ws), p_max=ws.p_max, acc_max=self.acc_max)
        if self.uniform_points:  # only then: a universal-set spec's widths (and export manifests) are unchanged
            d.update(point_set=self.point_set)
            del d["words"], d["gap"]
        if self.split:  # only then: a fused spec's widths (and export manifests) are unchanged
            d.update(denorm=self.denorm, sigma_bits=self.sigma_bits, shift_bits=self.shift_bits,
                     sa_bits=self.sa_bits, tap_const_bits=self.tap_const_bits, start_bits=self.start_bits)
        return d

    # --- fixed-point de-normalization --------------------------------------------------------------------------
    def exponent(self, sigma: np.ndarray, mean: np.ndarray) -> int:
        """The shared exponent E of one (layer, sample): the largest E with every |v| * 2^E <= mant_max.

        So every ``round_half_up(v * 2^E)`` lies in [-mant_max, mant_max]: sigma_m and mu_m fit ``scale_bits``
        signed bits, and the largest of them has at least ``scale_bits - 2`` significant bits."""
        m = float(max(np.max(np.abs(sigma), initial=0.0), np.max(np.abs(mean), initial=0.0)))
        if not math.isfinite(m):
            raise SpecError("scale or mean is not finite")
        if m == 0.0:
            return 0
        return _largest_exponent(m, self.mant_max)

    def bias_exponent_limit(self, bias: np.ndarray, weight_scale: np.ndarray) -> int | None:
        """The largest E with every |bias / s_w| * 2^E <= bias_max (None when the bias is all zero).

        Only binds in degenerate cases (a sample whose every input channel is (almost) constant, so sigma and mean
        are tiny and :meth:`exponent` is huge): capping E there keeps ``bias_int`` within its width."""
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.abs(np.asarray(bias, np.float64) / np.asarray(weight_scale, np.float64))
        if not np.all(np.isfinite(r)):
            raise SpecError("bias / weight_scale is not finite (zero weight scale?)")
        m = float(np.max(r, initial=0.0))
        if m == 0.0:
            return None
        return _largest_exponent(m, self.bias_max)

    def fixed_point(self, scale: np.ndarray, mean: np.ndarray, max_exponent: int | None = None):
        """(sigma_m, mu_m, E) for per-channel float32 ``scale`` (= max-abs + EPS) and ``mean`` of one sample.

        "fused": E = :meth:`exponent`, capped at ``max_exponent`` when given (see :meth:`bias_exponent_limit`).
        "split": sigma_m = s_c << d_c of :meth:`split_fixed_point` (the effective integer multiplying A_c)."""
        if self.split:
            s, d, mu, e = self.split_fixed_point(scale, mean, max_exponent)
            return s << d, mu, e
        sigma = np.asarray(scale, dtype=np.float64) / self.wordset.denom
        mean = np.asarray(mean, dtype=np.float64)
        e = self.exponent(sigma, mean)
        if max_exponent is not None:
            e = min(e, int(max_exponent))
        return round_half_up(np.ldexp(sigma, e)), round_half_up(np.ldexp(mean, e)), e

    def channel_exponents(self, sigma: np.ndarray) -> np.ndarray:
        """Per channel, the largest e with ``round_half_up(sigma 2^e) <= sigma_max`` (int64; a huge value for a
        zero sigma, which constrains nothing). Vectorized and exact: log2 seeds it, ldexp checks it."""
        sigma = np.asarray(sigma, dtype=np.float64)
        limit = self.sigma_max + 0.5  # round_half_up(v) <= sigma_max  <=>  v < sigma_max + 1/2
        pos = sigma > 0
        v = np.where(pos, sigma, 1.0)
        e = np.floor(np.log2(limit / v)).astype(np.int64)
        for _ in range(3):  # log2's rounding is off by at most one: settle to the largest e with v 2^e < limit
            e += np.ldexp(v, e + 1) < limit
            e -= np.ldexp(v, e) >= limit
        return np.where(pos, e, np.iinfo(np.int64).max // 4)

    def split_fixed_point(self, scale: np.ndarray, mean: np.ndarray, max_exponent: int | None = None):
        """(s, d, mu_m, E) of the "split" format for one sample (docs/datapath.md, "Split de-normalization").

        sigma_c = scale_c / denom. Each channel's own exponent e_c is the largest e with
        ``round(sigma_c 2^e) <= sigma_max`` (an m-bit mantissa with its top bit set, m = sigma_bits). The
        accumulator's exponent E of the (layer, sample) is the smallest of: min_c e_c + shift_max (the largest
        channel shifted the furthest), the largest E with every |mean_c| 2^E <= mant_max, and ``max_exponent``
        (the bias cap). Then d_c = max(0, E - e_c) <= shift_max and s_c = round(sigma_c 2^(E - d_c)) <= sigma_max;
        a channel smaller than the largest by more than 2^shift_max (e_c > E) gets d_c = 0 and fewer significant
        bits. With shift_bits = 0 every d_c is 0: one exponent per (layer, sample). mu_m = round(mean_c 2^E)."""
        sigma = np.asarray(scale, dtype=np.float64) / self.wordset.denom
        mean = np.asarray(mean, dtype=np.float64)
        if not (np.all(np.isfinite(sigma)) and np.all(np.isfinite(mean))):
            raise SpecError("scale or mean is not finite")
        if np.any(sigma < 0):
            raise SpecError("scale is negative")
        e_c = self.channel_exponents(sigma)
        caps = []
        if np.any(sigma > 0):
            caps.append(int(e_c.min()) + self.shift_max)
        m = float(np.max(np.abs(mean), initial=0.0))
        if m > 0:
            caps.append(_largest_exponent(m, self.mant_max))
        if max_exponent is not None:
            caps.append(int(max_exponent))
        e = min(caps) if caps else 0
        d = np.where(e_c > e, 0, e - np.minimum(e_c, e)).astype(np.int64)
        s = round_half_up(np.ldexp(sigma, e - d))
        return s, d, round_half_up(np.ldexp(mean, e)), e

    def bias_int(self, bias: np.ndarray, weight_scale: np.ndarray, e: int) -> np.ndarray:
        """Bias in accumulator units (s_w * 2^-E); SpecError if it exceeds ``bias_max``."""
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            v = np.ldexp(np.asarray(bias, np.float64) / np.asarray(weight_scale, np.float64), e)
        if not np.all(np.isfinite(v)):
            raise SpecError("bias / weight_scale is not finite (zero weight scale?)")
        if np.any(np.abs(v) > self.bias_max):  # compared before the cast, so no int64 wrap-around can hide it
            raise SpecError(f"bias does not fit in {self.bias_bits} bits at exponent {e}")
        return round_half_up(v)
