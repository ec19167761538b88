"""The accelerator's formats, one definition: its sizes, the layer instruction and every memory word's fields.

:class:`AccelSpec` is to the accelerator (:mod:`hw.units.accelerator`) what golden.spec is to the engine: the RTL
builds its ports and memories from it and the layer-program compiler (:mod:`hw.program`) packs its instructions and
memory images with the same field lists, so the two cannot drift. Plain Python, no Amaranth.

A **record layout** is a tuple of ``(name, width, signed)`` fields, packed LSB first (the first field at bit 0).
Nothing here is network-specific: the sizes (largest layer, number of steps, memory depths) are parameters that
:func:`hw.program.size_for` derives from a model's integer graph; a new adapter needs new sizes, not new RTL.

Memories (``MEMS``; the host writes each through one port before a run, ``host_mem`` selects it):

======== ================================================= ======================================================
prog     one instruction per step (:meth:`AccelSpec.instr_layout`)  steps in program order
tmem     per input channel of each step: its feature-map channel,   thresholds, point codes
         its 2^b point integers and point codes
omem     per output channel of each step: the bias as m 2^j / s,    bias_int (a division), requantization
         the requantization multiplier ``mult`` and ``r``
wmem     one engine beat of weights (L lanes x 9 taps of w')         ``(step base) + o G + g``
pmem     the quantize pieces: source group and lane, destination     per step, in order
         group and lane, channel count
fm       the feature maps: L lanes of one pixel of one group         ``group * max_pixels + pixel``
cfg      run configuration registers (``CFG_FIELDS``)
======== ================================================= ======================================================
"""
from __future__ import annotations

from dataclasses import dataclass

from golden.spec import TAPS, DatapathSpec

__all__ = ["AccelSpec", "MEMS", "CFG_FIELDS", "bits_for", "signed_bits_for", "record_width", "STATUS"]

#: host-writable memories, by ``host_mem`` number
MEMS = ("cfg", "prog", "tmem", "omem", "wmem", "pmem", "fm")
#: the run configuration (``cfg`` memory, one register per address): image size, steps, the feature map's fraction
#: bits, and the entry tensor's first group and channels (its statistics are gathered before the first step)
CFG_FIELDS = ("height", "width", "steps", "frac", "entry_group", "entry_channels")
#: ``status`` port values after ``done``
STATUS = {"ok": 0, "shift": 1}


def bits_for(n: int) -> int:
    """Unsigned width of the integers 0 .. n (at least 1)."""
    return max(1, int(n).bit_length())


def signed_bits_for(lo: int, hi: int) -> int:
    """Two's-complement width of the integers lo .. hi."""
    return max((-int(lo) - 1).bit_length() if lo < 0 else 0, int(hi).bit_length()) + 1


def record_width(layout) -> int:
    return sum(w for _, w, _ in layout)


@dataclass(frozen=True)
class AccelSpec:
    """The sizes of one generated accelerator.

    ``ispec``: the integer network's spec (golden.int_spec.IntSpec: the engine's DatapathSpec, whose ``channels`` is
    the widest conv input, and the feature-map format); ``lanes``: engine lanes L (divides ``channels``; also the
    lanes of a feature-map word); ``max_out``: the widest conv output; ``max_pixels``: H W the feature-map memory is
    sized for; ``fm_groups``: feature-map words per pixel (groups of L channels) the memory holds; ``steps``,
    ``tmem``, ``omem``, ``wmem``, ``pmem``: memory depths (instructions, input channels, output channels, weight
    beats and quantize pieces over all steps); ``max_pieces``: the most quantize pieces of one step.
    """

    ispec: object
    lanes: int
    max_out: int
    max_pixels: int
    fm_groups: int
    steps: int
    tmem: int
    omem: int
    wmem: int
    pmem: int

    def __post_init__(self):
        dp = self.datapath
        if not isinstance(dp, DatapathSpec) or dp.uniform_points or dp.split:
            raise ValueError("the accelerator runs the universal set with the fused de-normalization")
        if dp.kernel != 3:
            raise ValueError("the accelerator's engine is the 3x3 engine (1x1 layers on the centre tap)")
        for name in ("lanes", "max_out", "max_pixels", "fm_groups", "steps", "tmem", "omem", "wmem", "pmem"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, not {v!r}")
        if dp.channels % self.lanes:
            raise ValueError(f"lanes ({self.lanes}) must divide the widest layer's channels ({dp.channels})")
        if self.max_pixels > self.ispec.max_pixels:
            raise ValueError(f"max_pixels {self.max_pixels} exceeds the statistics' {self.ispec.max_pixels}")
        if self.ispec.thr_divisor & (self.ispec.thr_divisor - 1) or dp.wordset.denom & (dp.wordset.denom - 1):
            raise ValueError("the threshold divisor and the point denominator must be powers of two")

    # --- derived sizes ---------------------------------------------------------------------------------------------
    @property
    def datapath(self) -> DatapathSpec:
        return self.ispec.datapath

    @property
    def channels(self) -> int:
        return self.datapath.channels

    @property
    def groups(self) -> int:
        """Engine groups of the widest layer: channels / lanes."""
        return self.channels // self.lanes

    @property
    def points(self) -> int:
        return self.datapath.points

    @property
    def fb(self) -> int:
        """Feature-map bits."""
        return self.ispec.fmap.bits

    @property
    def fm_depth(self) -> int:
        return self.fm_groups * self.max_pixels

    @property
    def code_depth(self) -> int:
        return self.groups * self.max_pixels

    @property
    def fm_channels(self) -> int:
        return self.fm_groups * self.lanes

    @property
    def dim_bits(self) -> int:
        """Width of a row or column count (0 .. max_pixels)."""
        return bits_for(self.max_pixels)

    @property
    def pixel_bits(self) -> int:
        return bits_for(self.max_pixels)

    @property
    def log2_denom(self) -> int:
        return self.datapath.wordset.denom.bit_length() - 1

    @property
    def log2_thr_divisor(self) -> int:
        return self.ispec.thr_divisor.bit_length() - 1

    @property
    def exp_bits(self) -> int:
        """Signed width of the exponents E, frac, r and the shifts derived from them."""
        return 10

    @property
    def frac_bits(self) -> int:
        return bits_for(self.fb - 1)

    # --- record layouts ---------------------------------------------------------------------------------------------
    def instr_layout(self):
        """One step (layer instruction)."""
        ch, oc = bits_for(self.channels), bits_for(self.max_out)
        g = bits_for(self.fm_groups)
        return (("kernel1", 1, False), ("relu_input", 1, False), ("relu", 1, False), ("residual", 1, False),
                ("cap_valid", 1, False), ("cap", self.exp_bits, True),
                ("in_channels", ch, False), ("out_channels", oc, False), ("groups", bits_for(self.groups), False),
                ("out_group", g, False), ("res_group", g, False),
                ("tbase", bits_for(self.tmem), False), ("obase", bits_for(self.omem), False),
                ("wbase", bits_for(self.wmem), False), ("pbase", bits_for(self.pmem), False),
                ("pieces", bits_for(self.pmem), False))

    def tmem_layout(self):
        """Per input channel of a step: its feature-map channel (statistics) and its 2^b point codes (the threshold
        unit's point table and the code decoder)."""
        dp = self.datapath
        return (("fm_channel", bits_for(self.fm_channels - 1), False),
                *((f"c{k}", dp.code_bits, False) for k in range(self.points)))

    @property
    def bias_m_bits(self) -> int:
        return 25   # a float32 significand with its sign

    @property
    def bias_s_bits(self) -> int:
        return 24   # the weight scale's significand

    def omem_layout(self):
        """Per output channel of a step: bias / s_w = bm 2^jb / sm exactly, requantization mult 2^-r."""
        return (("bm", self.bias_m_bits, True), ("jb", self.exp_bits, True), ("sm", self.bias_s_bits, False),
                ("mult", self.ispec.mult_bits, False), ("r", self.exp_bits, True))

    def wmem_layout(self):
        """One beat of weights: element e = l * 9 + t (the engine's in_weight packing)."""
        return tuple((f"w{e}", self.datapath.w_bits, True) for e in range(self.lanes * TAPS))

    def pmem_layout(self):
        """One quantize piece: ``count`` channels from (source group, lane) to (destination group, lane)."""
        g, lb = bits_for(self.fm_groups - 1), bits_for(self.lanes - 1)
        return (("src_group", g, False), ("src_lane", lb, False), ("dst_group", bits_for(self.groups - 1), False),
                ("dst_lane", lb, False), ("count", bits_for(self.lanes), False))

    def fm_layout(self):
        return tuple((f"x{l}", self.fb, True) for l in range(self.lanes))

    def cfg_width(self) -> int:
        return max(self.dim_bits, bits_for(self.steps), bits_for(self.fm_groups), self.frac_bits,
                   bits_for(self.channels))

    def layouts(self) -> dict:
        return {"cfg": (("value", self.cfg_width(), False),), "prog": self.instr_layout(),
                "tmem": self.tmem_layout(), "omem": self.omem_layout(), "wmem": self.wmem_layout(),
                "pmem": self.pmem_layout(), "fm": self.fm_layout()}

    def depths(self) -> dict:
        return {"cfg": len(CFG_FIELDS), "prog": self.steps, "tmem": self.tmem, "omem": self.omem,
                "wmem": self.wmem, "pmem": self.pmem, "fm": self.fm_depth}

    @property
    def host_data_bits(self) -> int:
        return max(record_width(lay) for lay in self.layouts().values())

    @property
    def host_addr_bits(self) -> int:
        return bits_for(max(self.depths().values()) - 1)

    def describe(self) -> dict:
        return {"lanes": self.lanes, "channels": self.channels, "max_out": self.max_out,
                "max_pixels": self.max_pixels, "fm_groups": self.fm_groups, "steps": self.steps,
                "tmem": self.tmem, "omem": self.omem, "wmem": self.wmem, "pmem": self.pmem,
                "fmap_bits": self.fb, "memories": {k: {"depth": self.depths()[k], "width": record_width(v)}
                                                   for k, v in self.layouts().items()}}

    def widths(self) -> dict:
        """What the sidecar's ``spec`` records: the integer spec's widths and the sizes."""
        return {**self.ispec.widths(), **self.datapath.widths(), "accel": self.describe()}
