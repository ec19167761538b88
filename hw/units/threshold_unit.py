"""The threshold unit (Verilog top ``dfsq_threshold_unit``): a channel's 2^b - 1 thresholds from its (mu, M) and the
layer's point table, one shared multiplier, one threshold per cycle (golden.int_layer.thresholds; docs/datapath.md,
"Thresholds and codes"):

    T_k = clamp(mu + floor(M (P_k + P_{k+1}) / (2 denom)), -(x_max + 1), x_max),   k = 0 .. 2^b - 2

The point table holds each channel's 2^b point codes (golden.spec layout, loaded like the conv engine's tables) and
decodes them to the point integers P. For a channel taken on the input stream the unit reads P_0 .. P_{2^b - 1}, one
per cycle, adds each to the previous one, multiplies by M (the unit's only multiplier), divides by 2 denom (an
arithmetic shift, and for 3 or 5 words a multiply by a reciprocal that is exact over the range, checked when the
unit is built), adds mu and clamps. Pipelined: 2^b cycles per channel, the next channel's reads overlap the last
thresholds; back-pressure (``out_ready``) stalls the whole pipeline.
"""
from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from golden.int_spec import IntSpec
from golden.spec import SEL_FAR, SEL_NEAR, SEL_ONE

from .arith import shape_for
from .decoder import PointDecoder, code_layout, index_bits
from .pipeline import stage_register
from .stats_unit import check_int_spec

__all__ = ["ThresholdUnit", "THRESHOLD_FAULTS", "point_int", "floor_div_const"]

#: Deliberately broken units, for mutation tests only.
THRESHOLD_FAULTS = {
    "off_by_one": "every threshold is one above the golden one (the tie rule moves: X = T_k + 1 takes the lower point)",
    "pair": "the midpoint uses 2 P_{k+1} instead of P_k + P_{k+1}",
}


def point_int(m: Module, code, spec, name: str = "p"):
    """The point integer P of a code (golden.spec layout), combinationally: the sum of the selected words' powers
    of two, negated by the sign bit (a uniform point set's code is P itself)."""
    dspec = spec
    if dspec.uniform_points:
        return code
    ws = dspec.wordset
    terms = []
    for i, shifts in enumerate(ws.shift_table):
        sel = code.sels[i].as_value()
        terms.append(Mux(sel == SEL_ONE, 1 << shifts[0], Mux(sel == SEL_NEAR, 1 << shifts[1],
                                                                Mux(sel == SEL_FAR, 1 << shifts[2], 0))))
    mag = Signal(unsigned(ws.p_max.bit_length()), name=f"{name}_mag")
    total = terms[0]
    for t in terms[1:]:
        total = total + t
    m.d.comb += mag.eq(total)
    p = Signal(shape_for(-ws.p_max, ws.p_max), name=name)
    m.d.comb += p.eq(Mux(code.sign, -mag, mag))
    return p


def _exact_reciprocal(d: int, top: int) -> tuple[int, int]:
    """(R, s) with floor(u R / 2^s) == floor(u / d) for every integer 0 <= u <= top (d odd > 1): the smallest s
    with R = ceil(2^s / d) and (R d - 2^s) top < 2^s, which suffices (Granlund and Montgomery)."""
    s = 0
    while True:
        r = -(-(1 << s) // d)
        if (r * d - (1 << s)) * top < (1 << s):
            return r, s
        s += 1


def floor_div_const(m: Module, v, lo: int, hi: int, d: int, name: str = "q"):
    """floor(v / d) for a value v known to lie in [lo, hi] and a positive constant d: an arithmetic shift by the
    power of two in d, then (an odd factor above 1) an offset to make the dividend non-negative, a multiply by an
    exact reciprocal and a shift. Returns a signal of the quotient's range."""
    if d < 1:
        raise ValueError("the divisor must be positive")
    t = (d & -d).bit_length() - 1
    odd = d >> t
    v1 = Signal(shape_for(lo >> t, hi >> t), name=f"{name}_sh")
    m.d.comb += v1.eq(v >> t)
    lo1, hi1 = lo >> t, hi >> t
    if odd == 1:
        return v1
    k = -(lo1 // odd) if lo1 < 0 else 0      # u = v1 + k odd >= 0; floor(v1 / odd) = floor(u / odd) - k
    top = hi1 + k * odd
    r, s = _exact_reciprocal(odd, top)
    u = Signal(unsigned(max(1, top.bit_length())), name=f"{name}_u")
    m.d.comb += u.eq(v1 + k * odd)
    q = Signal(shape_for(lo1 // odd, hi1 // odd), name=name)
    m.d.comb += q.eq(((u * r) >> s) - k)
    return q


class ThresholdUnit(wiring.Component):
    """Sequential thresholds of contract 2, one multiplier (see the module docstring).

    Parameters
    ----------
    spec : golden.int_spec.IntSpec
        ``fmap.bits`` (W: mu and the thresholds), ``m_bits``, the datapath's point set and ``act_bits``;
        ``datapath.channels`` point-table rows.
    fault : str or None
        A key of :data:`THRESHOLD_FAULTS`, for mutation tests.

    Attributes
    ----------
    tbl_we : In(1)
        Point table write strobe: ``table[tbl_chan][tbl_idx] = tbl_code`` (while no channel is in flight).
    tbl_chan : In(index_bits(channels))
        Channel written.
    tbl_idx : In(act_bits)
        Point index written.
    tbl_code : In(code_layout(datapath))
        Code written (golden.spec layout).
    in_valid : In(1)
        A channel's statistics are offered.
    in_ready : Out(1)
        The unit takes them (it then reads the channel's 2^b points over 2^b cycles).
    in_chan : In(index_bits(channels))
        The channel.
    in_mu : In(signed(W))
        Its mean mu.
    in_m : In(unsigned(m_bits))
        Its M.
    out_valid : Out(1)
        A threshold is on the out_* ports.
    out_ready : In(1)
        The consumer takes it.
    out_chan : Out(index_bits(channels))
        Its channel.
    out_k : Out(act_bits)
        Its index k (0 .. 2^b - 2, in order).
    out_t : Out(signed(W))
        T_k.
    """

    def __init__(self, *, spec, fault=None):
        self._spec = check_int_spec(spec)
        if fault is not None and fault not in THRESHOLD_FAULTS:
            raise ValueError(f"unknown fault {fault!r}; known: {', '.join(sorted(THRESHOLD_FAULTS))}")
        self._fault = fault
        dp = spec.datapath
        C, W = dp.channels, spec.fmap.bits
        super().__init__({
            "tbl_we": In(1),
            "tbl_chan": In(index_bits(C)),
            "tbl_idx": In(dp.act_bits),
            "tbl_code": In(code_layout(dp)),
            "in_valid": In(1),
            "in_ready": Out(1),
            "in_chan": In(index_bits(C)),
            "in_mu": In(signed(W)),
            "in_m": In(unsigned(spec.m_bits)),
            "out_valid": Out(1),
            "out_ready": In(1),
            "out_chan": Out(index_bits(C)),
            "out_k": Out(dp.act_bits),
            "out_t": Out(signed(W)),
        })

    @property
    def spec(self) -> IntSpec:
        return self._spec

    @property
    def fault(self):
        return self._fault

    @property
    def latency(self) -> int:
        """Cycles from a channel's input handshake to its first threshold's ``out_valid`` (out_ready high)."""
        return 5

    @property
    def cycles_per_channel(self) -> int:
        """Input-to-input cycles of back-to-back channels: one read per point."""
        return self._spec.datapath.points

    def elaborate(self, platform):
        m = Module()
        spec = self._spec
        dp = spec.datapath
        npts = dp.points
        W = spec.fmap.bits
        en = Signal()   # the pipeline's enable: the output register is free or being read
        m.d.comb += en.eq(~self.out_valid | self.out_ready)
        stage = stage_register(m, en)

        # the reader: a channel in flight issues reads idx = 0 .. npts - 1, one per enabled cycle
        busy = Signal()
        idx = Signal(range(npts))
        chan0, mu0, mm0 = Signal.like(self.in_chan), Signal.like(self.in_mu), Signal.like(self.in_m)
        take = Signal()
        m.d.comb += [self.in_ready.eq(en & ~busy), take.eq(self.in_valid & self.in_ready)]
        issue = Signal()
        m.d.comb += issue.eq(en & (busy | take))
        cur_chan = Mux(take, self.in_chan, chan0)
        cur_idx = Mux(take, 0, idx)
        with m.If(en):
            with m.If(take):
                m.d.sync += [busy.eq(npts > 1), idx.eq(1 % npts), chan0.eq(self.in_chan), mu0.eq(self.in_mu),
                             mm0.eq(self.in_m)]
            with m.Elif(busy):
                m.d.sync += idx.eq(idx + 1)
                with m.If(idx == npts - 1):
                    m.d.sync += busy.eq(0)

        m.submodules.table = table = PointDecoder(spec=dp, channels=dp.channels, read_ports=1)
        m.d.comb += [table.w_en.eq(self.tbl_we), table.w_chan.eq(self.tbl_chan), table.w_idx.eq(self.tbl_idx),
                     table.w_code.eq(self.tbl_code), table.r_en.eq(en), table.r_chan.eq(cur_chan),
                     table.r_idx[0].eq(cur_idx)]

        # stage 1: the read issued (its code arrives in stage 2)
        v1 = stage("v1", issue)
        k1 = stage("k1", cur_idx)
        c1 = stage("c1", cur_chan)
        mu1 = stage("mu1", Mux(take, self.in_mu, mu0))
        m1 = stage("m1", Mux(take, self.in_m, mm0))
        # stage 2: P of the code; the pair with the previous point of the same channel (k >= 1)
        p = point_int(m, table.r_code[0], dp)
        prev = Signal.like(p)
        with m.If(en & v1):
            m.d.sync += prev.eq(p)
        pair_lo = 2 * -dp.wordset.p_max
        pair = Signal(shape_for(pair_lo, -pair_lo), name="pair")
        m.d.comb += pair.eq((p << 1) if self._fault == "pair" else prev + p)
        v2 = stage("v2", v1 & (k1 != 0))
        k2 = stage("k2", k1 - 1)
        c2, mu2, m2 = stage("c2", c1), stage("mu2", mu1), stage("m2", m1)
        pair2 = stage("pair2", pair)
        # stage 3: the product M (P_k + P_{k+1})
        pm = spec.thr_product_max
        v3, k3, c3, mu3 = stage("v3", v2), stage("k3", k2), stage("c3", c2), stage("mu3", mu2)
        prod3 = stage("prod3", m2 * pair2, shape_for(-pm, pm))
        # stage 4 (output register): the division by 2 denom, + mu (+1: fault), clamp
        q = floor_div_const(m, prod3, -pm, pm, spec.thr_divisor)
        t = Signal(shape_for(-spec.x_max - 2 * spec.x_max - 1, spec.x_max + 2 * spec.x_max + 1), name="t")
        m.d.comb += t.eq(mu3 + q + (1 if self._fault == "off_by_one" else 0))
        clamped = Mux(t < spec.thr_lo, spec.thr_lo, Mux(t > spec.thr_hi, spec.thr_hi, t))
        with m.If(en):
            m.d.sync += [self.out_valid.eq(v3), self.out_chan.eq(c3), self.out_k.eq(k3), self.out_t.eq(clamped)]
        return m
