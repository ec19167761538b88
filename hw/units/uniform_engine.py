"""The uniform (Min-Max, static scale) baseline conv engine (Verilog top ``uniform_engine``), streaming valid/ready.

What a designer builds without DFSQ, with the DFSQ engine's (:mod:`hw.units.engine`) interface, lanes, groups, 1x1
centre-tap mapping and 6-stage pipeline, so that an area difference is the arithmetic's: per tap an integer
multiplier ``w' * a'`` (w' = q_w - zp_w, weight_bits + 1 signed; a' = q_a - zp_a, act_bits + 1 signed), a
9-input tree per lane, a tree over the lanes and the accumulator over the groups, starting from ``bias_int``.
No point table and no per-channel de-normalization: the activation scale is one static per-tensor factor, applied
with the weight scale when the output is requantized, outside the engine (the output is the accumulator, as for
the DFSQ engine). Every width comes from :class:`golden.uniform_spec.UniformSpec`; the model is
:func:`golden.uniform_layer.accumulate`.

One output (pixel, output channel) is ``G = channels / lanes`` beats; lane ``l`` of group ``g`` serves input channel
``g * lanes + l``. A 1x1 layer runs on the centre tap (``in_mask`` = bit 4 only), a layer of C < channels input
channels in ``ceil(C / lanes)`` beats (the lanes past C get weight 0), exactly as on the DFSQ engine.

Pipeline (one beat per cycle, every stage enabled by ``en = !out_valid | out_ready``):

====== =========================================================================================
stage  registered at the end of it
====== =========================================================================================
1      beat fields
2      per-tap products ``w' * a'`` (a masked tap's weight is 0)
3      per-lane sums (balanced 9-input trees)
4      partial lane sums: the lanes in groups of up to 4 (the first two levels of the lane tree)
5      sum over lanes (the rest of the lane tree)
6      accumulator over groups (bias on the first beat); on the last beat, the output register
====== =========================================================================================
"""
from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from golden.spec import TAPS
from golden.uniform_spec import UniformSpec

from .arith import Term, balanced_sum, shape_for
from .pipeline import accumulate_beats, stage_register, stall_enable

__all__ = ["UniformEngine", "UNIFORM_FAULTS", "check_uniform_lanes"]

#: Deliberately broken variants, for mutation tests only.
UNIFORM_FAULTS = {
    "mask": "the tap mask is ignored: a padded tap's activation enters the sum",
    "unsigned": "the activation a' is read as an unsigned number",
}
#: Lanes summed at stage 4 (the first two levels of the lane tree).
LANE_SPLIT = 4


def check_uniform_lanes(spec: UniformSpec, lanes) -> int:
    """Validate ``spec`` (a 3x3 :class:`UniformSpec`) and ``lanes`` (a positive integer dividing its channels)."""
    if not isinstance(spec, UniformSpec):
        raise TypeError(f"spec must be a golden.uniform_spec.UniformSpec, not {spec!r}")
    if spec.kernel != 3:
        raise ValueError(f"the engine's lanes hold 3x3 windows: pass spec.for_layer({spec.channels}, 3), not a "
                         f"{spec.kernel}x{spec.kernel} spec")
    if not isinstance(lanes, int) or isinstance(lanes, bool) or lanes < 1:
        raise TypeError(f"lanes must be a positive integer, not {lanes!r}")
    if spec.channels % lanes:
        raise ValueError(f"lanes ({lanes}) must divide channels ({spec.channels})")
    return lanes


def _check_fault(fault):
    if fault is not None and fault not in UNIFORM_FAULTS:
        raise ValueError(f"unknown fault {fault!r}; known: {', '.join(sorted(UNIFORM_FAULTS))}")
    return fault


class UniformEngine(wiring.Component):
    """Uniform integer 3x3 conv engine: L lanes over input channels, 9 taps each, valid/ready streaming.

    ``out_acc`` = ``bias + sum over the G beats of one output, over lanes and taps, of mask_t * w'_t * a'_t``,
    exactly as :func:`golden.uniform_layer.accumulate`. Outputs leave in input order, ``latency`` cycles after the
    handshake of their last beat when ``out_ready`` is held high.

    Parameters (keyword-only, validated; read-only properties)
    ----------------------------------------------------------
    spec : golden.uniform_spec.UniformSpec
        Every width; ``spec.channels`` is the largest number of input channels of a layer, ``spec.kernel`` must be
        3 (a 1x1 layer runs on the centre tap).
    lanes : int
        Parallel lanes L; must divide ``spec.channels``. Groups G = channels / L.
    fault : str or None
        A key of :data:`UNIFORM_FAULTS` for a deliberately broken variant, else ``None``.

    Attributes
    ----------
    in_valid : In(1)
        A beat is offered.
    in_ready : Out(1)
        The engine takes the beat this cycle (``in_valid & in_ready`` is the handshake).
    in_first : In(1)
        First beat of an output: the accumulator restarts from ``in_bias``.
    in_last : In(1)
        Last beat of an output: the result is emitted.
    in_mask : In(9)
        Bit t: tap t lies inside the image (taps in raster order, t = 3 * (dy + 1) + (dx + 1)).
    in_act : In(ArrayLayout(ArrayLayout(signed(a_bits), 9), L))
        Activation a' = q_a - zp_a of tap t of lane l (flat element l * 9 + t); ignored where the tap is masked.
    in_weight : In(ArrayLayout(ArrayLayout(signed(w_bits), 9), L))
        Weight w' = q_w - zp_w of tap t of lane l (flat element l * 9 + t).
    in_bias : In(signed(bias_bits))
        bias_int of the output channel (used on the first beat).
    out_valid : Out(1)
        ``out_acc`` holds a result.
    out_ready : In(1)
        The consumer takes the result this cycle.
    out_acc : Out(signed(acc_bits))
        The accumulator of one output.

    Unlike the DFSQ engine there is no point table (``tbl_*``), no ``in_group`` (nothing depends on the group)
    and no ``in_sigma`` / ``in_mu``.
    """

    def __init__(self, *, spec, lanes, fault=None):
        self._lanes = check_uniform_lanes(spec, lanes)
        self._spec = spec
        self._fault = _check_fault(fault)
        L = lanes
        super().__init__({
            "in_valid": In(1),
            "in_ready": Out(1),
            "in_first": In(1),
            "in_last": In(1),
            "in_mask": In(TAPS),
            "in_act": In(data.ArrayLayout(data.ArrayLayout(signed(spec.a_bits), TAPS), L)),
            "in_weight": In(data.ArrayLayout(data.ArrayLayout(signed(spec.w_bits), TAPS), L)),
            "in_bias": In(signed(spec.bias_bits)),
            "out_valid": Out(1),
            "out_ready": In(1),
            "out_acc": Out(signed(spec.acc_bits)),
        })

    @property
    def spec(self) -> UniformSpec:
        return self._spec

    @property
    def lanes(self) -> int:
        return self._lanes

    @property
    def groups(self) -> int:
        """Beats per output, G = channels / lanes."""
        return self._spec.channels // self._lanes

    @property
    def fault(self):
        return self._fault

    @property
    def latency(self) -> int:
        """Cycles from the handshake of a last beat to its ``out_valid`` (``out_ready`` held high)."""
        return 6

    def elaborate(self, platform):
        m = Module()
        spec, L = self._spec, self._lanes
        p_max = spec.product_max

        en = stall_enable(m, self)
        stage = stage_register(m, en)

        def control(k, prev):
            """The beat's control fields (valid, first, last, bias) registered at stage ``k``."""
            return tuple(stage(f"{n}{k}", v) for n, v in zip(("v", "first", "last", "bias"), prev))

        # stage 1: beat fields
        ctl = control(1, (self.in_valid & en, self.in_first, self.in_last, self.in_bias))
        mask1 = stage("mask1", self.in_mask)
        weights1 = [stage(f"weight1_{l}", self.in_weight[l]) for l in range(L)]
        acts1 = [stage(f"act1_{l}", self.in_act[l]) for l in range(L)]

        # stage 2: per-tap products (a masked tap's weight is 0)
        ctl = control(2, ctl)
        products = []
        for l in range(L):
            row = []
            for t in range(TAPS):
                wm = Signal(signed(spec.w_bits), name=f"wm{l}_{t}")
                keep = 1 if self._fault == "mask" and (l, t) == (0, 0) else mask1[t]
                m.d.comb += wm.eq(Mux(keep, weights1[l][t], 0))
                a = acts1[l][t]
                if self._fault == "unsigned" and (l, t) == (0, 0):
                    a = a.as_unsigned()
                row.append(stage(f"p2_{l}_{t}", wm * a, shape_for(-p_max, p_max)))
            products.append(row)

        # stage 3: one sum per lane (9-input tree)
        ctl = control(3, ctl)
        lane_sums = []
        for l, row in enumerate(products):
            total, _ = balanced_sum(m, [Term(p, -p_max, p_max) for p in row], name=f"s{l}")
            bound = spec.tap_sum_max
            lane_sums.append(Term(stage(f"s3_{l}", total.scaled(), shape_for(-bound, bound)), -bound, bound))

        # stage 4: the lanes in groups of up to LANE_SPLIT
        ctl = control(4, ctl)
        partial = []
        for j in range(0, L, LANE_SPLIT):
            part, _ = balanced_sum(m, lane_sums[j:j + LANE_SPLIT], name=f"q{j // LANE_SPLIT}")
            partial.append(Term(stage(f"q4_{j // LANE_SPLIT}", part.scaled(), shape_for(part.abs_lo, part.abs_hi)),
                                part.abs_lo, part.abs_hi))

        # stage 5: sum over lanes
        v5, first5, last5, bias5 = control(5, ctl)
        lane_sum, _ = balanced_sum(m, partial, name="lanes")
        total5 = stage("total5", lane_sum.scaled(), shape_for(lane_sum.abs_lo, lane_sum.abs_hi))

        # stage 6: accumulate over groups; emit on the last beat
        accumulate_beats(m, en, self, valid=v5, first=first5, last=last5, start=bias5, total=total5,
                         acc_bits=spec.acc_bits)
        return m
