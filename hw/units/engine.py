"""The lane-parallel 3x3 conv engine (Verilog top ``dfsq_engine``), streaming valid/ready, contract 4.

One output (pixel, output channel) is ``G = channels / lanes`` beats. Lane ``l`` of group ``g`` serves input
channel ``g * lanes + l``: it looks its 9 point indices up in its share of the point table, multiplies each by
the tap's weight with a shift-add multiplier, sums the masked taps into ``A`` (products) and ``B`` (weights),
and scales them with the channel's fixed-point ``sigma_m * A + mu_m * B``. A balanced tree adds the lanes; the
accumulator adds the groups and the bias (golden.spec, "Integer datapath of one quantized conv").

Layers of any geometry (docs/hardware.md, "Layers of any geometry"): ``spec.channels`` is the largest input channel
count the engine serves (its point-table rows; 1024 for RDN); a layer with C <= channels input channels takes
``ceil(C / lanes)`` beats per output (``in_first`` / ``in_last`` frame them; channels past C in the last group get
weight 0). A 1x1 layer runs on the centre tap: ``in_mask`` has only bit 4 set, the weight and index sit in tap 4
and the other 8 taps are masked, so A = w' P and B = w' exactly as golden.layer computes them. The accumulator is
``spec.acc_bits`` wide, derived for the widest layer the engine serves (``channels`` inputs, 3x3), so every
layer it can run is overflow-free.

Pipeline (one beat per cycle, every stage enabled by ``en = !out_valid | out_ready``, so back-pressure stalls
the whole pipeline and ``in_ready = en``):

====== =========================================================================================
stage  registered at the end of it
====== =========================================================================================
1      beat fields; point table read (synchronous memory)
2      per-tap products (shift-add) and masked weights
3      per-lane ``A`` and ``B`` (balanced 9-input trees; the multipliers' deferred carries are their
       carry-ins)
4      per-lane ``sigma_m * A`` and ``mu_m * B`` ("split": ``(s_c * A) << d_c``)
5      sum over lanes (balanced tree)
6      accumulator over groups (bias on the first beat); on the last beat, the output register
====== =========================================================================================
"""
from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from golden.spec import TAPS, DatapathSpec

from .arith import Carry, Term, add, balanced_sum, shape_for
from .decoder import PointDecoder, check_spec, code_layout, index_bits
from .pipeline import accumulate_beats, stage_register, stall_enable
from .shift_add import COMBINATIONAL_VARIANTS, ShiftAddMultiplier, check_fault, check_variant

__all__ = ["ConvEngine", "check_lanes", "ENGINE_FAULTS", "LATENCY"]

#: Pipeline latency (stages 1 to 6 of the module docstring): cycles from a last beat's handshake to its out_valid.
LATENCY = 6

#: Deliberately broken engines, for mutation tests only: the multiplier's faults (hw.units.shift_add.FAULTS) and, with
#: a "split" spec, faults of the split de-normalization.
ENGINE_FAULTS = {
    "sigma_shift": "split: every lane shifts s_c A_c one bit further left than d_c",
    "start_class": "split: the accumulator starts from 0 instead of in_start on the first beat",
}


def check_engine_fault(fault, spec: DatapathSpec):
    if fault in ENGINE_FAULTS:
        if not spec.split:
            raise ValueError(f"fault {fault!r} needs a split de-normalization spec")
        return fault
    if fault is not None and spec.uniform_points:
        raise ValueError(f"fault {fault!r} belongs to the shift-add multiplier, which a uniform point set does not "
                         f"use; known: {', '.join(sorted(ENGINE_FAULTS))}")
    return check_fault(fault)


def check_lanes(spec: DatapathSpec, lanes) -> int:
    """Validate ``lanes`` for ``spec``: a positive integer dividing ``spec.channels``; ``spec`` must be a 3x3
    geometry (the lanes hold 3x3 windows; a 1x1 layer runs on the centre tap)."""
    if spec.kernel != 3:
        raise ValueError(f"the engine's lanes hold 3x3 windows: pass spec.for_layer({spec.channels}, 3), not a "
                         f"{spec.kernel}x{spec.kernel} spec")
    if not isinstance(lanes, int) or isinstance(lanes, bool) or lanes < 1:
        raise TypeError(f"lanes must be a positive integer, not {lanes!r}")
    if spec.channels % lanes:
        raise ValueError(f"lanes ({lanes}) must divide channels ({spec.channels})")
    return lanes


class ConvEngine(wiring.Component):
    """DFSQ 3x3 conv engine: L lanes over input channels, 9 taps each, valid/ready streaming.

    ``out_acc`` = ``bias + sum over the G beats of one output, over lanes, of (sigma_m * A + mu_m * B)`` with
    ``A = sum_t mask_t * w'_t * P(table[c][idx_t])`` and ``B = sum_t mask_t * w'_t``, exactly as
    ``golden.layer.accumulate``. With a "split" spec (golden.spec: the mean term out of the lanes), each lane
    computes only ``(s_c * A) << d_c`` (an m-bit multiplier and a shifter) and the accumulator starts from
    ``in_start`` (bias_int plus the mean term of the pixel's border class, golden.mean_unit); the result is the
    same integer as golden.layer.accumulate's for sigma_m = s_c << d_c. Outputs leave in input order, ``latency`` cycles after the handshake of their
    last beat when ``out_ready`` is held high.

    Parameters
    ----------
    spec : golden.spec.DatapathSpec
        Every width; ``spec.channels`` is the largest number of input channels of a layer (table rows), and
        ``spec.kernel`` must be 3 (the accumulator is sized for ``channels`` inputs with 3x3 kernels, which covers
        every 1x1 layer of at most ``channels`` inputs too).
    lanes : int
        Parallel lanes L; must divide ``spec.channels``. Groups G = channels / L.
    fault : str or None
        A key of :data:`hw.units.shift_add.FAULTS` for a deliberately broken variant, else ``None``.
    tables : bool
        True (default): each lane holds its channels' point tables (9 read ports, the ``tbl_*`` ports) and beats
        carry point indices (``in_idx``). False: beats carry the 9 point codes per lane (``in_code``), decoded once
        per activation where the activations enter (a line buffer with one table read port per lane), so the
        engine has no tables: the 9 read ports of each lane are the largest block after the de-normalization.
    variant : str
        Multiplier micro-architecture, one of :data:`hw.units.shift_add.COMBINATIONAL_VARIANTS` (default
        ``"deferred"``: the tap trees take the deferred negation carries as carry-ins). ``"registered"`` is not
        offered: its partial-product registers would need the engine's stall enable.

    Attributes
    ----------
    tbl_we : In(1)
        (``tables`` only, like every ``tbl_*`` port.) Point table write strobe: ``table[tbl_chan][tbl_idx] = tbl_code``. Only while no beat is in flight.
    tbl_chan : In(index_bits(channels))
        Input channel written.
    tbl_idx : In(act_bits)
        Point index written.
    tbl_code : In(code_layout(spec))
        Code written (golden.spec layout, code_bits wide).
    in_valid : In(1)
        A beat is offered.
    in_ready : Out(1)
        The engine takes the beat this cycle (``in_valid & in_ready`` is the handshake).
    in_first : In(1)
        First beat of an output: the accumulator restarts from ``in_bias``.
    in_last : In(1)
        Last beat of an output: the result is emitted.
    in_group : In(index_bits(G))
        Channel group g of the beat (lane l serves channel g * L + l).
    in_mask : In(9)
        Bit t: tap t lies inside the image (taps in raster order, t = 3 * (dy + 1) + (dx + 1)).
    in_idx : In(ArrayLayout(ArrayLayout(act_bits, 9), L))
        ``tables`` only: point index of tap t of lane l (flat element l * 9 + t).
    in_code : In(ArrayLayout(ArrayLayout(code_layout(spec), 9), L))
        Without ``tables``: the point code (golden.spec layout) of tap t of lane l (flat element l * 9 + t).
    in_weight : In(ArrayLayout(ArrayLayout(signed(w_bits), 9), L))
        Two's-complement weight w' of tap t of lane l (flat element l * 9 + t).
    in_sigma : In(ArrayLayout(signed(scale_bits), L)) ("fused") or In(ArrayLayout(unsigned(sigma_bits), L)) ("split")
        sigma_m ("fused") or the sigma mantissa s_c ("split") of each lane's channel.
    in_mu : In(ArrayLayout(signed(scale_bits), L))
        "fused" only: mu_m of each lane's channel.
    in_bias : In(signed(bias_bits))
        "fused" only: bias_int of the output channel (used on the first beat).
    in_shift : In(ArrayLayout(unsigned(shift_bits), L))
        "split" with ``shift_bits`` > 0 only: the alignment shift d_c of each lane's channel.
    in_start : In(signed(start_bits))
        "split" only: the start value of the output (bias_int plus the mean term of the pixel's border class,
        from the mean unit: golden.mean_unit), used on the first beat.
    out_valid : Out(1)
        ``out_acc`` holds a result.
    out_ready : In(1)
        The consumer takes the result this cycle.
    out_acc : Out(signed(acc_bits))
        The accumulator of one output.
    """

    def __init__(self, *, spec, lanes, fault=None, variant="deferred", tables=True):
        self._spec = check_spec(spec)
        self._lanes = check_lanes(spec, lanes)
        self._fault = check_engine_fault(fault, spec)
        self._variant = check_variant(variant, COMBINATIONAL_VARIANTS)
        if not isinstance(tables, bool):
            raise TypeError(f"tables must be a bool, not {tables!r}")
        self._tables = tables
        L = lanes
        members = {}
        if tables:
            members.update({
                "tbl_we": In(1),
                "tbl_chan": In(index_bits(spec.channels)),
                "tbl_idx": In(spec.act_bits),
                "tbl_code": In(code_layout(spec)),
            })
        members.update({
            "in_valid": In(1),
            "in_ready": Out(1),
            "in_first": In(1),
            "in_last": In(1),
            "in_group": In(index_bits(self.groups)),
            "in_mask": In(TAPS),
        })
        if tables:
            members["in_idx"] = In(data.ArrayLayout(data.ArrayLayout(spec.act_bits, TAPS), L))
        else:
            members["in_code"] = In(data.ArrayLayout(data.ArrayLayout(code_layout(spec), TAPS), L))
        members["in_weight"] = In(data.ArrayLayout(data.ArrayLayout(signed(spec.w_bits), TAPS), L))
        if spec.split:
            members["in_sigma"] = In(data.ArrayLayout(unsigned(spec.sigma_bits), L))
            if spec.shift_bits:
                members["in_shift"] = In(data.ArrayLayout(unsigned(spec.shift_bits), L))
            members["in_start"] = In(signed(spec.start_bits))
        else:
            members["in_sigma"] = In(data.ArrayLayout(signed(spec.scale_bits), L))
            members["in_mu"] = In(data.ArrayLayout(signed(spec.scale_bits), L))
            members["in_bias"] = In(signed(spec.bias_bits))
        members.update({
            "out_valid": Out(1),
            "out_ready": In(1),
            "out_acc": Out(signed(spec.acc_bits)),
        })
        super().__init__(members)

    @property
    def spec(self) -> DatapathSpec:
        return self._spec

    @property
    def lanes(self) -> int:
        return self._lanes

    @property
    def tables(self) -> bool:
        """The lanes hold point tables (beats carry point indices); False: beats carry point codes."""
        return self._tables

    @property
    def groups(self) -> int:
        """Beats per output, G = channels / lanes."""
        return self._spec.channels // self._lanes

    @property
    def fault(self):
        return self._fault

    @property
    def variant(self) -> str:
        return self._variant

    @property
    def latency(self) -> int:
        """Cycles from the handshake of a last beat to its ``out_valid`` (``out_ready`` held high)."""
        return LATENCY

    def elaborate(self, platform):
        m = Module()
        spec, L = self._spec, self._lanes
        w_max, p_max, mant = spec.w_max, spec.product_max, spec.mant_max

        en = stall_enable(m, self)
        stage = stage_register(m, en)

        # stage 1: beat fields; point table read
        v1 = stage("v1", self.in_valid & en)
        first1, last1 = stage("first1", self.in_first), stage("last1", self.in_last)
        mask1 = stage("mask1", self.in_mask)
        split = spec.split
        # "bias" carries bias_int ("fused") or the start value of the pixel's border class ("split")
        bias1 = stage("bias1", self.in_start if split else self.in_bias)
        lanes1 = []
        for l in range(L):
            if self._tables:
                dec = PointDecoder(spec=spec, channels=self.groups, read_ports=TAPS)
                m.submodules[f"table{l}"] = dec
                m.d.comb += [
                    dec.w_en.eq(self.tbl_we & (self.tbl_chan % L == l)),
                    dec.w_chan.eq(self.tbl_chan // L),
                    dec.w_idx.eq(self.tbl_idx),
                    dec.w_code.eq(self.tbl_code),
                    dec.r_en.eq(en),
                    dec.r_chan.eq(self.in_group),
                    dec.r_idx.eq(self.in_idx[l]),
                ]
                code = dec.r_code
            else:  # point codes decoded where the activations enter (one lookup per activation, not per tap use)
                code = stage(f"code1_{l}", self.in_code[l])
            ln = dict(code=code, weight=stage(f"weight1_{l}", self.in_weight[l]),
                      sigma=stage(f"sigma1_{l}", self.in_sigma[l]))
            if not split:
                ln["mu"] = stage(f"mu1_{l}", self.in_mu[l])
            elif spec.shift_bits:
                ln["shift"] = stage(f"shift1_{l}", self.in_shift[l])
            lanes1.append(ln)

        # stage 2: per-tap products and masked weights
        v2, first2, last2, bias2 = (stage("v2", v1), stage("first2", first1), stage("last2", last1),
                                    stage("bias2", bias1))
        lanes2 = []
        deferred = self._variant == "deferred" and not spec.uniform_points
        for l, ln in enumerate(lanes1):
            products, carries, weights = [], [], []
            for t in range(TAPS):
                wm = Signal(signed(spec.w_bits), name=f"wm{l}_{t}")
                m.d.comb += wm.eq(Mux(mask1[t], ln["weight"][t], 0))
                if spec.uniform_points:  # the normalized uniform baseline: one integer multiplier w' * P
                    products.append(stage(f"p2_{l}_{t}", wm * ln["code"][t], shape_for(-p_max, p_max)))
                else:
                    mul = ShiftAddMultiplier(spec=spec, fault=None if self._fault in ENGINE_FAULTS else self._fault,
                                             variant=self._variant)
                    m.submodules[f"mul{l}_{t}"] = mul
                    m.d.comb += [mul.weight.eq(wm), mul.code.eq(ln["code"][t])]
                    products.append(stage(f"p2_{l}_{t}", mul.product))
                    carries.append(stage(f"c2_{l}_{t}", mul.carry))
                if not split:  # the split datapath has no B_c in the lanes (the mean unit's start value has it)
                    weights.append(stage(f"w2_{l}_{t}", wm))
            lanes2.append(dict(products=products, carries=carries, weights=weights,
                               **{k: stage(f"{k}2_{l}", ln[k]) for k in ("sigma", "mu", "shift") if k in ln}))

        # stage 3: A and B per lane
        v3, first3, last3, bias3 = (stage("v3", v2), stage("first3", first2), stage("last3", last2),
                                    stage("bias3", bias2))
        lanes3 = []
        for l, ln in enumerate(lanes2):
            lo = -p_max - (1 if deferred else 0)
            a_terms = [Term(p, lo, p_max) for p in ln["products"]]
            a_carries = list(ln["carries"]) if deferred else []
            a_total, leftover = balanced_sum(m, a_terms, [Carry(c) for c in a_carries], name=f"a{l}")
            for k, c in enumerate(leftover):
                a_total = add(m, a_total, Term(c.bit, 0, 1), name=f"a{l}_c{k}")
            # |A| <= a_max, |B| <= b_max exactly (the trees' bounds are looser only by the deferred carries)
            ln3 = dict(a=stage(f"a3_{l}", a_total.scaled(), signed(spec.a_bits)),
                       **{k: stage(f"{k}3_{l}", ln[k]) for k in ("sigma", "mu", "shift") if k in ln})
            if not split:
                b_total, _ = balanced_sum(m, [Term(w, -w_max, w_max) for w in ln["weights"]], name=f"b{l}")
                ln3["b"] = stage(f"b3_{l}", b_total.scaled(), signed(spec.b_bits))
            lanes3.append(ln3)

        # stage 4: fixed-point scale and offset
        v4, first4, last4, bias4 = (stage("v4", v3), stage("first4", first3), stage("last4", last3),
                                    stage("bias4", bias3))
        scaled = []
        for l, ln in enumerate(lanes3):
            if split:  # (s_c * A_c) << d_c: an m-bit multiplier and a barrel shifter
                sa = Signal(shape_for(-spec.sa_max, spec.sa_max), name=f"sa{l}")
                m.d.comb += sa.eq(ln["sigma"] * ln["a"])
                shifted = sa << ln["shift"] if "shift" in ln else sa
                if self._fault == "sigma_shift":
                    shifted = shifted << 1
                bound = spec.term_max
                term = stage(f"term4_{l}", shifted, shape_for(-bound, bound))
                scaled.append(Term(term, -bound, bound))
                continue
            sa_bound, mb_bound = mant * spec.a_max, mant * spec.b_max
            sa = stage(f"sa4_{l}", ln["sigma"] * ln["a"], shape_for(-sa_bound, sa_bound))
            mb = stage(f"mb4_{l}", ln["mu"] * ln["b"], shape_for(-mb_bound, mb_bound))
            scaled += [Term(sa, -sa_bound, sa_bound), Term(mb, -mb_bound, mb_bound)]

        # stage 5: sum over lanes
        v5, first5, last5, bias5 = (stage("v5", v4), stage("first5", first4), stage("last5", last4),
                                    stage("bias5", bias4))
        lane_sum, _ = balanced_sum(m, scaled, name="lanes")
        total5 = stage("total5", lane_sum.scaled(), shape_for(lane_sum.abs_lo, lane_sum.abs_hi))

        # stage 6: accumulate over groups; emit on the last beat
        start5 = 0 if self._fault == "start_class" else bias5
        accumulate_beats(m, en, self, valid=v5, first=first5, last=last5, start=start5, total=total5,
                         acc_bits=spec.acc_bits)
        return m
