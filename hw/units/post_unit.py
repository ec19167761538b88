"""The post unit (Verilog top ``dfsq_post_unit``) and, beside it, the static uniform requantizer (top
``uniform_requant``): what follows the conv engine's accumulator.

Post unit (contract 2, golden.int_layer.post_values; docs/datapath.md "Post unit"), per lane:

    Y   = floor((acc mult + 2^(sh-1)) / 2^sh)          requantization to the feature-map format (bias is in acc)
    Y   = max(Y, 0)                                     when ``in_relu``
    Y1  = clamp(Y, -x_max, x_max)                       flag bit 0
    out = clamp(Y1 + skip, -x_max, x_max)               when ``in_add`` (the residual); flag bit 1

Static uniform requantizer (a Min-Max / Uniform-MSE design's: one multiplier, shift and zero point per tensor, no
statistics; golden.int_layer.static_requantize): ``code = clamp(floor((acc mult + 2^(sh-1)) / 2^sh) + zero, 0,
2^b - 1)``, b-bit codes for the next layer.

Both: stage 1 multiplies (acc_bits x 24 bits, the exact float32 significand of the scale), stage 2 shifts right by
sh - 1 and rounds (``(p >> (sh - 1)) + 1 >> 1``, = floor((p + 2^(sh-1)) / 2^sh)), and clamps the result to one past
the output range (which changes no later comparison), stage 3 (post unit) applies the ReLU, the saturations and the
add. Back-pressure stalls the pipeline.
"""
from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from golden.int_spec import MULT_BITS, IntSpec, requant_widths
from golden.uniform_spec import UniformSpec

from .arith import shape_for
from .pipeline import stage_register, stall_enable
from .stats_unit import check_int_spec

__all__ = ["PostUnit", "POST_FAULTS", "StaticRequantizer", "rounding_shift", "check_lanes_positive"]

#: Deliberately broken post units, for mutation tests only.
POST_FAULTS = {
    "truncate": "the requantization shifts without rounding (floor(acc mult / 2^sh))",
    "late_sat": "no saturation before the residual add (only the sum is clamped)",
}


def check_lanes_positive(lanes) -> int:
    if not isinstance(lanes, int) or isinstance(lanes, bool) or lanes < 1:
        raise TypeError(f"lanes must be a positive integer, not {lanes!r}")
    return lanes


def rounding_shift(m: Module, p, sh, lo: int, hi: int, shift_max: int, *, name: str, truncate: bool = False):
    """floor((p + 2^(sh-1)) / 2^sh) for 1 <= sh <= shift_max, clamped to [lo, hi] (``truncate``: floor(p / 2^sh),
    a fault). ``p`` is a signed value; the result a signal of shape_for(lo, hi)."""
    amount = Signal(range(shift_max + 1), name=f"{name}_amount")
    m.d.comb += amount.eq(sh if truncate else sh - 1)
    t = Signal(p.shape(), name=f"{name}_t")
    m.d.comb += t.eq(p >> amount)                                # arithmetic: floor(p / 2^(sh-1))
    r = Signal(signed(p.shape().width + 1), name=f"{name}_r")
    m.d.comb += r.eq(t if truncate else ((t + 1) >> 1))
    out = Signal(shape_for(lo, hi), name=name)
    m.d.comb += out.eq(Mux(r < lo, lo, Mux(r > hi, hi, r)))
    return out


class PostUnit(wiring.Component):
    """Requantization, ReLU, saturation and residual add of contract 2, L lanes (see the module docstring).

    Parameters
    ----------
    spec : golden.int_spec.IntSpec
        ``datapath.acc_bits`` (the engine's accumulator), ``mult_bits``, ``post_shift_bits`` / ``post_shift_max``,
        ``fmap.bits`` (W).
    lanes : int
        Outputs per beat L.
    fault : str or None
        A key of :data:`POST_FAULTS`, for mutation tests.

    Attributes
    ----------
    in_valid : In(1)
        A beat is offered.
    in_ready : Out(1)
        The unit takes it.
    in_relu : In(1)
        The layer's conv is followed by a ReLU.
    in_add : In(1)
        The layer adds a residual (``in_skip``).
    in_acc : In(ArrayLayout(signed(acc_bits), L))
        The engine's accumulators (bias included).
    in_mult : In(ArrayLayout(unsigned(24), L))
        Each lane's requantization multiplier (its output channel's weight scale significand).
    in_shift : In(ArrayLayout(unsigned(post_shift_bits), L))
        Each lane's shift sh (1 .. post_shift_max).
    in_skip : In(ArrayLayout(signed(W), L))
        The residual values (read when ``in_add``).
    out_valid : Out(1)
        ``out_y`` holds a beat's results.
    out_ready : In(1)
        The consumer takes them.
    out_y : Out(ArrayLayout(signed(W), L))
        The outputs, in the feature-map format.
    out_sat : Out(ArrayLayout(unsigned(2), L))
        Per lane: bit 0 the requantized value was clamped, bit 1 the sum was.
    """

    def __init__(self, *, spec, lanes, fault=None):
        self._spec = check_int_spec(spec)
        self._lanes = check_lanes_positive(lanes)
        if fault is not None and fault not in POST_FAULTS:
            raise ValueError(f"unknown fault {fault!r}; known: {', '.join(sorted(POST_FAULTS))}")
        self._fault = fault
        W, L = spec.fmap.bits, lanes
        super().__init__({
            "in_valid": In(1),
            "in_ready": Out(1),
            "in_relu": In(1),
            "in_add": In(1),
            "in_acc": In(data.ArrayLayout(signed(spec.datapath.acc_bits), L)),
            "in_mult": In(data.ArrayLayout(unsigned(MULT_BITS), L)),
            "in_shift": In(data.ArrayLayout(unsigned(spec.post_shift_bits), L)),
            "in_skip": In(data.ArrayLayout(signed(W), L)),
            "out_valid": Out(1),
            "out_ready": In(1),
            "out_y": Out(data.ArrayLayout(signed(W), L)),
            "out_sat": Out(data.ArrayLayout(unsigned(2), L)),
        })

    @property
    def spec(self) -> IntSpec:
        return self._spec

    @property
    def lanes(self) -> int:
        return self._lanes

    @property
    def fault(self):
        return self._fault

    @property
    def latency(self) -> int:
        """Cycles from a beat's handshake to its ``out_valid`` (out_ready high)."""
        return 3

    def elaborate(self, platform):
        m = Module()
        spec, L = self._spec, self._lanes
        lim = spec.x_max
        en = stall_enable(m, self)
        stage = stage_register(m, en)
        pm = spec.post_product_max
        v1, relu1, add1 = stage("v1", self.in_valid & en), stage("relu1", self.in_relu), stage("add1", self.in_add)
        v2, relu2, add2 = stage("v2", v1), stage("relu2", relu1), stage("add2", add1)
        ys, sats = [], []
        for l in range(L):
            # stage 1: the product
            p1 = stage(f"p1_{l}", self.in_acc[l] * self.in_mult[l], shape_for(-pm, pm))
            sh1 = stage(f"sh1_{l}", self.in_shift[l])
            skip1 = stage(f"skip1_{l}", self.in_skip[l])
            # stage 2: the rounding shift, clamped one past the format (no later comparison changes)
            y = rounding_shift(m, p1, sh1, -lim - 1, lim + 1, spec.post_shift_max, name=f"y{l}",
                               truncate=self._fault == "truncate")
            y2 = stage(f"y2_{l}", y)
            skip2 = stage(f"skip2_{l}", skip1)
            # stage 3 (output register): ReLU, saturation, residual add, saturation
            r = Signal.like(y2, name=f"r{l}")
            m.d.comb += r.eq(Mux(relu2 & (y2 < 0), 0, y2))
            over1 = (r > lim) | (r < -lim)
            c1 = Signal(signed(spec.fmap.bits + 1), name=f"c1_{l}")
            late = self._fault == "late_sat"
            m.d.comb += c1.eq(r if late else Mux(r > lim, lim, Mux(r < -lim, -lim, r)))
            s = Signal(signed(spec.fmap.bits + 2), name=f"s{l}")
            m.d.comb += s.eq(c1 + Mux(add2, skip2, 0))
            over2 = add2 & ((s > lim) | (s < -lim))
            out = Mux(s > lim, lim, Mux(s < -lim, -lim, s))
            with m.If(en):
                m.d.sync += [self.out_y[l].eq(out), self.out_sat[l].eq(Cat(over1, over2))]
        with m.If(en):
            m.d.sync += self.out_valid.eq(v2)
        return m


class StaticRequantizer(wiring.Component):
    """The static uniform requantizer: b-bit codes from accumulators with one multiplier, shift and zero point per
    tensor (see the module docstring), L lanes.

    Parameters
    ----------
    spec : golden.uniform_spec.UniformSpec
        ``acc_bits`` of the uniform engine and ``act_bits`` (b, the codes).
    lanes : int
        Accumulators per beat L.

    Attributes
    ----------
    cfg_mult : In(unsigned(24))
        The tensor's multiplier.
    cfg_shift : In(unsigned(shift_bits))
        Its shift sh (1 .. shift_max).
    cfg_zero : In(unsigned(b))
        Its zero point.
    in_valid : In(1)
        A beat is offered.
    in_ready : Out(1)
        The unit takes it.
    in_acc : In(ArrayLayout(signed(acc_bits), L))
        Accumulators.
    out_valid : Out(1)
        ``out_code`` holds a beat's codes.
    out_ready : In(1)
        The consumer takes them.
    out_code : Out(ArrayLayout(unsigned(b), L))
        The codes.
    """

    def __init__(self, *, spec, lanes):
        if not isinstance(spec, UniformSpec):
            raise TypeError(f"spec must be a golden.uniform_spec.UniformSpec, not {spec!r}")
        self._spec = spec
        self._lanes = check_lanes_positive(lanes)
        _, _, shift_max = requant_widths(spec.acc_max)
        super().__init__({
            "cfg_mult": In(unsigned(MULT_BITS)),
            "cfg_shift": In(range(shift_max + 1)),
            "cfg_zero": In(unsigned(spec.act_bits)),
            "in_valid": In(1),
            "in_ready": Out(1),
            "in_acc": In(data.ArrayLayout(signed(spec.acc_bits), lanes)),
            "out_valid": Out(1),
            "out_ready": In(1),
            "out_code": Out(data.ArrayLayout(unsigned(spec.act_bits), lanes)),
        })

    @property
    def spec(self) -> UniformSpec:
        return self._spec

    @property
    def lanes(self) -> int:
        return self._lanes

    @property
    def fault(self):
        return None

    @property
    def latency(self) -> int:
        return 2

    def elaborate(self, platform):
        m = Module()
        spec, L = self._spec, self._lanes
        qmax = (1 << spec.act_bits) - 1
        pm, _, shift_max = requant_widths(spec.acc_max)
        en = stall_enable(m, self)
        stage = stage_register(m, en)
        v1 = stage("v1", self.in_valid & en)
        for l in range(L):
            p1 = stage(f"p1_{l}", self.in_acc[l] * self.cfg_mult, shape_for(-pm, pm))
            # clamped to +-(qmax + 1): with 0 <= zero <= qmax the final clamp to [0, qmax] is unchanged
            y = rounding_shift(m, p1, self.cfg_shift, -qmax - 1, qmax + 1, shift_max, name=f"y{l}")
            z = Signal(shape_for(-qmax - 1, 2 * qmax + 1), name=f"z{l}")
            m.d.comb += z.eq(y + self.cfg_zero)
            with m.If(en):
                m.d.sync += self.out_code[l].eq(Mux(z < 0, 0, Mux(z > qmax, qmax, z)))
        with m.If(en):
            m.d.sync += self.out_valid.eq(v1)
        return m
