"""The mean unit of the "split" de-normalization (Verilog top ``dfsq_mean_unit``): the accumulator's start values.

With the mean term out of the conv engine's lanes (golden.spec, docs/datapath.md "Split de-normalization"), the
engine starts each output's accumulator from ``start[o, k] = bias_int[o] + sum over the taps t valid in the
pixel's border class k of K[o, t]``, ``K[o, t] = sum_c mu_m[c] w'[o, c, t]`` (golden.mean_unit). This unit
computes them once per (layer, sample, output channel), sequentially, with one ``mu_m x w'`` multiplier
(scale_bits x w_bits): one input beat per input channel c (mu_m[c] and the 9 weights w'[o, c, :]), 9 cycles of
multiply-accumulate into the 9 tap constants, and after the last channel 16 output beats, one start value per
border class (``bias_int + `` the masked sum of the tap constants, a 9-input adder tree). A 1x1 layer's weights sit
in the centre tap (the others 0), so every class gets ``bias_int + K[centre]``.

Cost: 9 C + 16 cycles per output channel (C input channels), against H W ceil(C / L) cycles of the engine for the
same output channel: 576 + 16 against 36,864 for a 64-channel layer on a 48 x 48 tile with 16 lanes (1.6%).
"""
from __future__ import annotations

from amaranth.hdl import Const, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from golden.mean_unit import CLASSES
from golden.spec import TAPS, DatapathSpec

from .arith import Term, balanced_sum, shape_for
from .decoder import check_spec

__all__ = ["MeanUnit", "MEAN_UNIT_FAULTS"]

#: Deliberately broken mean units, for mutation tests only.
MEAN_UNIT_FAULTS = {
    "border": "the first-row classes keep tap 1 (the padding row above) in their start value",
}


class MeanUnit(wiring.Component):
    """Sequential start-value unit: one multiplier, 9 tap accumulators, 16 border-class outputs per output channel.

    Parameters
    ----------
    spec : golden.spec.DatapathSpec
        A "split" spec: ``scale_bits`` (mu_m), ``w_bits``, ``bias_bits``, ``tap_const_bits``, ``start_bits``;
        ``channels`` bounds the input channels per output (the tap accumulators' width).
    fault : str or None
        A key of :data:`MEAN_UNIT_FAULTS` for a deliberately broken unit, else ``None``.

    Attributes
    ----------
    in_valid : In(1)
        An input channel's beat is offered.
    in_ready : Out(1)
        The unit takes the beat this cycle (it is idle between its 9 multiply cycles and its outputs).
    in_first : In(1)
        First input channel of an output channel: the tap constants restart.
    in_last : In(1)
        Last input channel: after its 9 cycles the 16 start values are emitted; ``in_bias`` is read with it.
    in_mu : In(signed(scale_bits))
        mu_m of the beat's input channel.
    in_weight : In(ArrayLayout(signed(w_bits), 9))
        w'[o, c, t] of the beat's input channel, taps in raster order (a 1x1 weight in tap 4, the others 0).
    in_bias : In(signed(bias_bits))
        bias_int of the output channel (read on the last beat).
    out_valid : Out(1)
        ``out_class`` / ``out_start`` hold a start value.
    out_ready : In(1)
        The consumer takes it this cycle.
    out_class : Out(4)
        Border class k = 4 r + q (golden.mean_unit), 0 to 15 in order.
    out_start : Out(signed(start_bits))
        bias_int + sum of the tap constants of the class's valid taps.
    """

    def __init__(self, *, spec, fault=None):
        self._spec = check_spec(spec)
        if not spec.split:
            raise ValueError("the mean unit belongs to the split de-normalization: pass a spec with denorm='split'")
        if fault is not None and fault not in MEAN_UNIT_FAULTS:
            raise ValueError(f"unknown fault {fault!r}; known: {', '.join(sorted(MEAN_UNIT_FAULTS))}")
        self._fault = fault
        super().__init__({
            "in_valid": In(1),
            "in_ready": Out(1),
            "in_first": In(1),
            "in_last": In(1),
            "in_mu": In(signed(spec.scale_bits)),
            "in_weight": In(data.ArrayLayout(signed(spec.w_bits), TAPS)),
            "in_bias": In(signed(spec.bias_bits)),
            "out_valid": Out(1),
            "out_ready": In(1),
            "out_class": Out(4),
            "out_start": Out(signed(spec.start_bits)),
        })

    @property
    def spec(self) -> DatapathSpec:
        return self._spec

    @property
    def fault(self):
        return self._fault

    @property
    def latency(self) -> int:
        """Cycles from the handshake of a last beat to the first ``out_valid`` (its 9 products, then the output)."""
        return TAPS + 1

    @property
    def cycles_per_channel(self) -> int:
        """Cycles from taking an input beat to being ready for the next (9 products + the handshake)."""
        return TAPS + 1

    def cycles_per_output(self, channels: int) -> int:
        """Cycles per output channel of C input channels with no stalls: C beats, then 16 start values."""
        return channels * self.cycles_per_channel + CLASSES

    def elaborate(self, platform):
        m = Module()
        spec = self._spec
        prod_max = spec.mant_max * spec.w_max
        mu = Signal(signed(spec.scale_bits))
        w = Signal(data.ArrayLayout(signed(spec.w_bits), TAPS))
        first, last = Signal(), Signal()
        bias = Signal(signed(spec.bias_bits))
        t = Signal(range(TAPS))
        k = Signal(4)
        K = [Signal(shape_for(-spec.tap_const_max, spec.tap_const_max), name=f"K{j}") for j in range(TAPS)]
        ACCEPT, MUL, EMIT = 0, 1, 2
        state = Signal(2)

        # the multiplier: one mu_m x w' product per cycle (the weight of tap t: a mux chain, no case block)
        wsel = w[TAPS - 1]
        for j in reversed(range(TAPS - 1)):
            wsel = Mux(t == j, w[j], wsel)
        prod = Signal(shape_for(-prod_max, prod_max))
        m.d.comb += prod.eq(mu * wsel)

        # the start value of class k = 4 r + q: bias + the tap constants of the valid taps. Tap (ty, tx) is valid
        # when row ty is inside for the row class r and column tx for the column class q (golden.mean_unit).
        r, q = k[2:4], k[0:2]

        def inside(edge, pos):  # INTERIOR 0, FIRST 1 (the row/column before is padding), LAST 2, BOTH 3
            return [(edge == 0) | (edge == 2), Const(1, 1), (edge == 0) | (edge == 1)][pos]

        terms = []
        for j in range(TAPS):
            valid = inside(r, j // 3) & inside(q, j % 3)
            if self._fault == "border" and j == 1:  # first-row classes wrongly keep tap 1
                valid = valid | (r == 1)
            terms.append(Term(Mux(valid, K[j], 0), -spec.tap_const_max, spec.tap_const_max))
        terms.append(Term(bias, -spec.bias_max, spec.bias_max))
        total, _ = balanced_sum(m, terms, name="start")
        m.d.comb += [self.out_class.eq(k), self.out_start.eq(total.scaled()),
                     self.in_ready.eq(state == ACCEPT), self.out_valid.eq(state == EMIT)]

        with m.If(state == ACCEPT):
            with m.If(self.in_valid):
                m.d.sync += [mu.eq(self.in_mu), w.eq(self.in_weight), first.eq(self.in_first),
                             last.eq(self.in_last), t.eq(0), state.eq(MUL)]
                with m.If(self.in_last):
                    m.d.sync += bias.eq(self.in_bias)
        with m.Elif(state == MUL):
            for j in range(TAPS):
                with m.If(t == j):
                    m.d.sync += K[j].eq(Mux(first, 0, K[j]) + prod)
            m.d.sync += t.eq(t + 1)
            with m.If(t == TAPS - 1):
                m.d.sync += [k.eq(0), state.eq(Mux(last, EMIT, ACCEPT))]
        with m.Elif(state == EMIT):
            with m.If(self.out_ready):
                m.d.sync += k.eq(k + 1)
                with m.If(k == CLASSES - 1):
                    m.d.sync += state.eq(ACCEPT)
        return m
