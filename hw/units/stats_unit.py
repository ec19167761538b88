"""The statistics unit (Verilog top ``dfsq_stats_unit``): per channel sum, minimum and maximum of a streamed feature
map, then the mean and M of contract 2 (golden.int_layer.channel_stats, mean_range; docs/datapath.md).

A beat carries one value for each of L lanes; lane l of a beat with group g is channel g L + l (as in the conv
engine). Beats may come in any order of pixels and groups. Each lane keeps, per group, the running (sum, min, max)
of its channel in a small memory (G = channels / L entries) updated by a read-modify-write pipeline of two stages;
the read port is transparent to the write port, so back-to-back beats of one group see each other's updates.

After the beat marked ``in_last`` the unit drains: for every channel c < ``cfg_channels`` in order it divides
``2 S + N`` by ``2 N`` (a sequential restoring divider, one per unit: ``mu = floor((2 S + N) / (2 N))``, the mean
rounded half up; 0 when ``cfg_relu``), forms ``M = max(xmax - mu, mu - xmin)`` and outputs (c, S, xmin, xmax, mu,
M); after a group's channels it clears the group's entries for the next map. After reset it clears every entry
(``groups`` cycles) before taking the first beat.

Cycles: one per beat; the drain takes ``drain_cycles(C)`` (about C (W + 2), W = fmap_bits) with out_ready high.
"""
from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from golden.int_spec import IntSpec

from .decoder import index_bits

__all__ = ["StatsUnit", "STATS_FAULTS", "check_int_spec", "check_int_lanes"]

#: Deliberately broken units, for mutation tests only.
STATS_FAULTS = {
    "dropped_min": "lane 0 never updates its channels' minimum (it stays at the cleared value, +x_max)",
    "mean_floor": "the mean is floor(S / N) instead of rounded half up",
}


def check_int_spec(spec) -> IntSpec:
    """Validate a contract-2 unit's ``spec`` argument."""
    if not isinstance(spec, IntSpec):
        raise TypeError(f"spec must be a golden.int_spec.IntSpec, not {spec!r}")
    return spec


def check_int_lanes(spec: IntSpec, lanes) -> int:
    """``lanes``: a positive integer dividing the spec's channels (lane l of group g is channel g L + l)."""
    if not isinstance(lanes, int) or isinstance(lanes, bool) or lanes < 1:
        raise TypeError(f"lanes must be a positive integer, not {lanes!r}")
    if spec.datapath.channels % lanes:
        raise ValueError(f"lanes ({lanes}) must divide channels ({spec.datapath.channels})")
    return lanes


class StatsUnit(wiring.Component):
    """Streaming per-channel statistics of one feature map, L lanes per beat (see the module docstring).

    Parameters
    ----------
    spec : golden.int_spec.IntSpec
        ``fmap.bits`` (W, the values), ``sum_bits``, ``pixel_bits``, ``m_bits``; ``datapath.channels`` the largest
        channel count of a map (up to golden.spec.MAX_CHANNELS).
    lanes : int
        Values per beat L; divides the channels.
    fault : str or None
        A key of :data:`STATS_FAULTS`, for mutation tests.

    Attributes
    ----------
    cfg_channels : In(range(channels + 1))
        Channels of the map (1 .. channels); read with the last beat, held during the drain.
    cfg_pixels : In(pixel_bits)
        Pixels per channel N (1 .. max_pixels); read with the last beat.
    cfg_relu : In(1)
        The map follows a ReLU: mu = 0 (no division).
    in_valid : In(1)
        A beat is offered.
    in_ready : Out(1)
        The unit takes it (low while it clears or drains, and in the cycle after a last beat).
    in_last : In(1)
        Last beat of the map: the drain starts after it.
    in_group : In(index_bits(channels / lanes))
        Group g of the beat: lane l carries channel g L + l.
    in_data : In(ArrayLayout(signed(W), L))
        The values, in the feature-map format (|X| <= x_max).
    out_valid : Out(1)
        A channel's statistics are on the out_* ports.
    out_ready : In(1)
        The consumer takes them.
    out_chan : Out(index_bits(channels))
        Channel c (0, 1, .. cfg_channels - 1 in order).
    out_sum : Out(signed(sum_bits))
        S.
    out_min, out_max : Out(signed(W))
        xmin, xmax.
    out_mu : Out(signed(W))
        mu (0 when cfg_relu).
    out_m : Out(unsigned(m_bits))
        M.
    """

    def __init__(self, *, spec, lanes, fault=None):
        self._spec = check_int_spec(spec)
        self._lanes = check_int_lanes(spec, lanes)
        if fault is not None and fault not in STATS_FAULTS:
            raise ValueError(f"unknown fault {fault!r}; known: {', '.join(sorted(STATS_FAULTS))}")
        self._fault = fault
        W = spec.fmap.bits
        C = spec.datapath.channels
        super().__init__({
            "cfg_channels": In(range(C + 1)),
            "cfg_pixels": In(spec.pixel_bits),
            "cfg_relu": In(1),
            "in_valid": In(1),
            "in_ready": Out(1),
            "in_last": In(1),
            "in_group": In(index_bits(self.groups)),
            "in_data": In(data.ArrayLayout(signed(W), lanes)),
            "out_valid": Out(1),
            "out_ready": In(1),
            "out_chan": Out(index_bits(C)),
            "out_sum": Out(signed(spec.sum_bits)),
            "out_min": Out(signed(W)),
            "out_max": Out(signed(W)),
            "out_mu": Out(signed(W)),
            "out_m": Out(unsigned(spec.m_bits)),
        })

    @property
    def spec(self) -> IntSpec:
        return self._spec

    @property
    def lanes(self) -> int:
        return self._lanes

    @property
    def groups(self) -> int:
        """Memory entries per lane: channels / lanes."""
        return self._spec.datapath.channels // self._lanes

    @property
    def fault(self):
        return self._fault

    @property
    def quotient_bits(self) -> int:
        """Iterations of the divider: |mu| <= x_max < 2^(W-1)."""
        return self._spec.fmap.bits - 1

    @property
    def latency(self) -> int:
        """Cycles from the handshake of the last beat to the first ``out_valid`` (out_ready high)."""
        return 3 + self.quotient_bits + 1

    def drain_cycles(self, channels: int) -> int:
        """Cycles of the drain of a ``channels``-channel map with out_ready held high (the last beat's write
        included): per channel a division and an output, per group a read and a clear."""
        groups = -(-channels // self._lanes)
        return 1 + channels * (self.quotient_bits + 2) + 2 * groups

    def elaborate(self, platform):
        m = Module()
        spec, L, G = self._spec, self._lanes, self.groups
        W = spec.fmap.bits
        x_max = spec.x_max
        entry = data.StructLayout({"sum": signed(spec.sum_bits), "min": signed(W), "max": signed(W)})
        empty = Cat(Const(0, spec.sum_bits), Const(x_max, signed(W)), Const(-x_max, signed(W)))

        INIT, ACCUM, DRAIN = 0, 1, 2
        state = Signal(range(3), init=INIT)
        # drain sub-steps: read the group's entries, divide, output, clear
        D_READ, D_LOAD, D_DIV, D_OUT, D_CLEAR = range(5)
        step = Signal(range(5))
        init_g = Signal(range(max(G, 2)))
        dg = Signal(range(max(G, 2)))          # drained group
        dl = Signal(range(max(L, 2)))          # drained lane
        chans = Signal.like(self.cfg_channels)
        pixels = Signal.like(self.cfg_pixels)
        relu = Signal()

        # stage 2 of the accumulation: the beat of the previous cycle
        v2, last2 = Signal(), Signal()
        g2 = Signal.like(self.in_group)
        x2 = Signal.like(self.in_data)
        accept = Signal()
        m.d.comb += [accept.eq(self.in_valid & self.in_ready),
                     self.in_ready.eq((state == ACCUM) & ~(v2 & last2))]
        m.d.sync += [v2.eq(accept), last2.eq(self.in_last), g2.eq(self.in_group), x2.eq(self.in_data)]
        with m.If(accept & self.in_last):
            m.d.sync += [chans.eq(self.cfg_channels), pixels.eq(self.cfg_pixels), relu.eq(self.cfg_relu)]

        lane_data = []
        for l in range(L):
            mem = Memory(shape=entry, depth=G, init=[])
            m.submodules[f"acc{l}"] = mem
            wp = mem.write_port()
            rp = mem.read_port(transparent_for=(wp,))
            old = rp.data
            x = x2[l]
            new = Signal(entry, name=f"new{l}")
            keep_min = self._fault == "dropped_min" and l == 0
            m.d.comb += [new.sum.eq(old.sum + x),
                         new.min.eq(old.min if keep_min else Mux(x < old.min, x, old.min)),
                         new.max.eq(Mux(x > old.max, x, old.max))]
            # the read address: the incoming beat's group (accumulating), the drained group (draining)
            m.d.comb += [rp.addr.eq(Mux(state == DRAIN, dg, self.in_group)),
                         rp.en.eq(Mux(state == DRAIN, step == D_READ, 1))]
            with m.If(state == INIT):
                m.d.comb += [wp.en.eq(1), wp.addr.eq(init_g), wp.data.eq(empty)]
            with m.Elif((state == DRAIN) & (step == D_CLEAR)):
                m.d.comb += [wp.en.eq(1), wp.addr.eq(dg), wp.data.eq(empty)]
            with m.Else():
                m.d.comb += [wp.en.eq(v2), wp.addr.eq(g2), wp.data.eq(new)]
            lane_data.append(old)

        # the drained channel's entry (lane dl of the group read)
        cur = Signal(entry)
        sel = lane_data[L - 1]
        for l in reversed(range(L - 1)):
            sel = Mux(dl == l, lane_data[l], sel)
        m.d.comb += cur.eq(sel)

        # restoring divider: q = floor(a / d), a = 2 S + N (or 2 S: fault), d = 2 N, |q| <= x_max
        qb = self.quotient_bits
        a_bits = spec.sum_bits + 2
        rem = Signal(unsigned(a_bits))
        neg = Signal()
        dsh = Signal(unsigned(spec.pixel_bits + 1 + qb))     # d << i
        q = Signal(unsigned(qb))
        it = Signal(range(qb + 1))
        num = Signal(signed(a_bits))
        rounding = 0 if self._fault == "mean_floor" else pixels
        m.d.comb += num.eq((cur.sum << 1) + rounding)
        ge = Signal()
        m.d.comb += ge.eq(rem >= dsh)
        mu = Signal(signed(W))
        qneg = Signal(signed(W + 1))
        m.d.comb += qneg.eq(-(q + (rem != 0)))
        m.d.comb += mu.eq(Mux(relu, 0, Mux(neg, qneg, q)))
        mm = Signal(signed(W + 2))
        lo_d, hi_d = Signal(signed(W + 2)), Signal(signed(W + 2))
        m.d.comb += [hi_d.eq(cur.max - mu), lo_d.eq(mu - cur.min), mm.eq(Mux(hi_d > lo_d, hi_d, lo_d))]

        chan = Signal(range(spec.datapath.channels + 1))
        m.d.comb += [self.out_valid.eq((state == DRAIN) & (step == D_OUT)),
                     self.out_chan.eq(chan), self.out_sum.eq(cur.sum), self.out_min.eq(cur.min),
                     self.out_max.eq(cur.max), self.out_mu.eq(mu), self.out_m.eq(mm)]

        # the control, as if/elif chains (a case statement would become a Verilog function: see hw.generate)
        with m.If(state == INIT):
            m.d.sync += init_g.eq(init_g + 1)
            with m.If(init_g == G - 1):
                m.d.sync += [state.eq(ACCUM), init_g.eq(0)]
        with m.Elif(state == ACCUM):
            with m.If(v2 & last2):   # the last beat's write happens now; drain from the next cycle
                m.d.sync += [state.eq(DRAIN), step.eq(D_READ), dg.eq(0), dl.eq(0), chan.eq(0)]
        with m.Elif(step == D_READ):
            m.d.sync += step.eq(D_LOAD)
        with m.Elif(step == D_LOAD):
            m.d.sync += [neg.eq(num < 0), rem.eq(Mux(num < 0, -num, num)),
                         dsh.eq(pixels << qb), q.eq(0), it.eq(0), step.eq(D_DIV)]
        with m.Elif(step == D_DIV):
            m.d.sync += [dsh.eq(dsh >> 1), it.eq(it + 1), q.eq(Cat(ge, q[:-1]) if qb > 1 else ge)]
            with m.If(ge):
                m.d.sync += rem.eq(rem - dsh)
            with m.If(it == qb - 1):
                m.d.sync += step.eq(D_OUT)
        with m.Elif(step == D_OUT):
            with m.If(self.out_ready):
                m.d.sync += [chan.eq(chan + 1), dl.eq(dl + 1)]
                with m.If((dl == L - 1) | (chan == chans - 1)):
                    m.d.sync += step.eq(D_CLEAR)
                with m.Else():
                    m.d.sync += step.eq(D_LOAD)
        with m.Else():   # D_CLEAR
            m.d.sync += [dg.eq(dg + 1), dl.eq(0), step.eq(D_READ)]
            with m.If(chan == chans):
                m.d.sync += state.eq(ACCUM)
        return m
