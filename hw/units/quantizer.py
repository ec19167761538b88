"""The quantizer (Verilog top ``dfsq_quantizer``): point indices of feature-map values by a pipelined binary search
over each channel's thresholds (golden.int_layer.codes_from_thresholds; docs/datapath.md, "Thresholds and codes").

    code(X) = #{k : X > T_k},   T_0 <= T_1 <= ... <= T_{2^b - 2}

With ascending thresholds the count is found in b steps: stage s (s = 0 .. b - 1) compares X with the threshold in
the middle of the interval the earlier stages left, ``T[c + 2^(b-1-s) - 1]`` with c the code so far, and sets bit
b - 1 - s of the code when X is above it. So each lane has one comparator per stage, and stage s only ever needs the
2^s thresholds at positions ``j 2^(b-s) + 2^(b-1-s) - 1`` (j = 0 .. 2^s - 1): each stage has its own small memory per
lane, addressed by (group, j), read one cycle ahead of its comparison. The structure follows FINN's RTL
thresholding (finn-rtllib/thresholding: a binary search of b pipelined stages with per-stage threshold memories);
written here from the contract above.

A beat carries L values; lane l of a beat with group g is channel g L + l (as in the conv engine). Thresholds are
written through ``thr_*`` (channel, k, value; while no beat is in flight). Back-pressure stalls the pipeline.
"""
from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from golden.int_spec import IntSpec

from .decoder import index_bits
from .pipeline import stage_register, stall_enable
from .stats_unit import check_int_lanes, check_int_spec

__all__ = ["Quantizer", "QUANTIZER_FAULTS", "threshold_slot"]

#: Deliberately broken quantizers, for mutation tests only.
QUANTIZER_FAULTS = {
    "tie_upper": "every stage compares X >= T (a value on a midpoint takes the upper point)",
    "stale_prefix": "the last stage reads its threshold at the previous stage's address (the newest code bit dropped)",
}


def threshold_slot(k: int, bits: int) -> tuple[int, int]:
    """(stage s, entry j) of threshold k in a b-stage search: k + 1 = (2 j + 1) 2^(b - 1 - s)."""
    v = k + 1
    if not 1 <= v < (1 << bits):
        raise ValueError(f"threshold index {k} outside 0 .. {(1 << bits) - 2}")
    tz = (v & -v).bit_length() - 1
    s = bits - 1 - tz
    return s, v >> (tz + 1)


class Quantizer(wiring.Component):
    """Pipelined binary-search quantizer, L lanes, b stages (see the module docstring).

    Parameters
    ----------
    spec : golden.int_spec.IntSpec
        ``fmap.bits`` (W: values and thresholds), ``datapath.act_bits`` (b) and ``datapath.channels``.
    lanes : int
        Values per beat L; divides the channels.
    fault : str or None
        A key of :data:`QUANTIZER_FAULTS`, for mutation tests.

    Attributes
    ----------
    thr_we : In(1)
        Threshold write strobe: threshold ``thr_k`` of channel ``thr_chan`` = ``thr_value``.
    thr_chan : In(index_bits(channels))
        Channel written.
    thr_k : In(b)
        Threshold index k (0 .. 2^b - 2).
    thr_value : In(signed(W))
        T_k.
    in_valid : In(1)
        A beat is offered.
    in_ready : Out(1)
        The quantizer takes it (``in_valid & in_ready``).
    in_group : In(index_bits(channels / lanes))
        Group g: lane l carries channel g L + l.
    in_data : In(ArrayLayout(signed(W), L))
        The values.
    out_valid : Out(1)
        ``out_code`` holds the codes of a beat.
    out_ready : In(1)
        The consumer takes them.
    out_code : Out(ArrayLayout(unsigned(b), L))
        Point index of each lane's value.
    """

    def __init__(self, *, spec, lanes, fault=None):
        self._spec = check_int_spec(spec)
        self._lanes = check_int_lanes(spec, lanes)
        if fault is not None and fault not in QUANTIZER_FAULTS:
            raise ValueError(f"unknown fault {fault!r}; known: {', '.join(sorted(QUANTIZER_FAULTS))}")
        self._fault = fault
        W, b, C = spec.fmap.bits, spec.datapath.act_bits, spec.datapath.channels
        super().__init__({
            "thr_we": In(1),
            "thr_chan": In(index_bits(C)),
            "thr_k": In(b),
            "thr_value": In(signed(W)),
            "in_valid": In(1),
            "in_ready": Out(1),
            "in_group": In(index_bits(self.groups)),
            "in_data": In(data.ArrayLayout(signed(W), lanes)),
            "out_valid": Out(1),
            "out_ready": In(1),
            "out_code": Out(data.ArrayLayout(unsigned(b), lanes)),
        })

    @property
    def spec(self) -> IntSpec:
        return self._spec

    @property
    def lanes(self) -> int:
        return self._lanes

    @property
    def groups(self) -> int:
        return self._spec.datapath.channels // self._lanes

    @property
    def stages(self) -> int:
        """b: one comparator per lane in each."""
        return self._spec.datapath.act_bits

    @property
    def fault(self):
        return self._fault

    @property
    def latency(self) -> int:
        """Cycles from a beat's handshake to its ``out_valid`` (out_ready high): the input register and one cycle
        per stage."""
        return self.stages + 1

    def elaborate(self, platform):
        m = Module()
        spec, L, G, b = self._spec, self._lanes, self.groups, self.stages
        W = spec.fmap.bits
        gb = index_bits(G)
        en = stall_enable(m, self)
        stage = stage_register(m, en)

        # the threshold write: lane, group and (stage, entry) of index k (k + 1 = (2 j + 1) 2^(b - 1 - s))
        kp1 = Signal(b + 1)
        m.d.comb += kp1.eq(self.thr_k + 1)
        w_lane = Signal(range(max(L, 2)))
        w_group = Signal(gb)
        m.d.comb += [w_lane.eq(self.thr_chan % L), w_group.eq(self.thr_chan // L)]

        v = stage("v0", self.in_valid & en)
        g = stage("g0", self.in_group)
        xs = [stage(f"x0_{l}", self.in_data[l]) for l in range(L)]
        codes = [0] * L
        reads = []    # per stage: per lane the read port
        for s in range(b):
            depth = G << s
            lane_ports = []
            for l in range(L):
                mem = Memory(shape=signed(W), depth=depth, init=[])
                m.submodules[f"thr_s{s}_l{l}"] = mem
                wp = mem.write_port()
                rp = mem.read_port()
                low = (1 << (b - s)) - 1          # k + 1 = (2 j + 1) 2^(b-1-s): its low b - s bits are 2^(b-1-s)
                hit = (kp1 & low) == (1 << (b - 1 - s))
                m.d.comb += [wp.en.eq(self.thr_we & hit & (w_lane == l)),
                             wp.addr.eq(Cat((kp1 >> (b - s))[:s], w_group) if s else w_group),
                             wp.data.eq(self.thr_value)]
                lane_ports.append(rp)
            reads.append(lane_ports)
        # stage 0's read: at the handshake, address (group, 0)
        for l in range(L):
            m.d.comb += [reads[0][l].en.eq(en), reads[0][l].addr.eq(self.in_group)]
        for s in range(b):
            nv, ng = stage(f"v{s + 1}", v), stage(f"g{s + 1}", g)
            nxs, ncodes = [], []
            for l in range(L):
                t = reads[s][l].data
                above = (xs[l] >= t) if self._fault == "tie_upper" else (xs[l] > t)
                code = Signal(unsigned(b), name=f"code{s}_{l}")
                m.d.comb += code.eq(codes[l] | Mux(above, 1 << (b - 1 - s), 0))
                if s + 1 < b:     # the next stage's read: address (group, the s + 1 code bits found so far)
                    prefix = code[b - 1 - s:] if not (self._fault == "stale_prefix" and s + 2 == b) else \
                        Cat(Const(0, 1), code[b - s:]) if s else Const(0, 1)
                    m.d.comb += [reads[s + 1][l].en.eq(en), reads[s + 1][l].addr.eq(Cat(prefix, g))]
                nxs.append(stage(f"x{s + 1}_{l}", xs[l]))
                ncodes.append(stage(f"c{s + 1}_{l}", code))
            v, g, xs, codes = nv, ng, nxs, ncodes
        m.d.comb += self.out_valid.eq(v)
        for l in range(L):
            m.d.comb += self.out_code[l].eq(codes[l])
        return m
