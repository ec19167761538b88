"""The DFSQ accelerator: a whole quantized body from a layer program, on integers only (contract 2).

Top module ``dfsq_accel``. The host writes the memories of :data:`hw.units.accel_spec.MEMS` (the layer program,
the parameter memories, the entry feature map and the run configuration) through one port, pulses ``start`` and
waits for ``done``; every value the post unit writes into the feature-map memory also leaves on the ``trace_*``
ports (in step order, each step pixel-major with the output channel innermost), so a simulator can check every layer
of the network. The RTL holds nothing network-specific: the program (:mod:`hw.program`, compiled from a model
adapter's integer graph) says what each step reads, writes and adds; the sizes come from
:class:`~hw.units.accel_spec.AccelSpec`.

Per step (one quantized conv and its post unit, golden.int_network's loop), the sequencer runs five phases:

1. **Parameters**, per input channel c of the step: the statistics (S, xmin, xmax) of the feature-map channel the
   program maps c to, gathered when that channel was written; mu = floor((2 S + N) / (2 N)) (0 after a ReLU; a
   sequential divider), M = max(xmax - mu, mu - xmin); the 2^b - 1 thresholds T_k = clamp(mu + floor(M (P_k +
   P_{k+1}) / (2 denom))) with one multiplier (golden.int_layer.thresholds); the channel's point codes into the
   decoder table. Then the exponent E (golden.int_layer.fixed_point_int, "fused": the largest E with
   max_c(M_c / denom, |mu_c|) 2^(E - frac) <= mant_max, capped by the layer's bias cap from the program); sigma_m and
   mu_m of every channel (shifts with rounding half up); per output channel bias_int = round(bias / s_w 2^E) (the
   program stores bias / s_w as bm 2^jb / sm exactly; a sequential divider) and the requantization shift
   sh = E + r - frac (an error status when sh < 1, as golden's SpecError).
2. **Quantize**: every pixel of every input channel once: the program's quantize pieces move up to L channels of a
   feature-map word to their place in the step's input (a lane rotation: RDN's concatenations), the threshold unit's
   binary search gives the point index (#{k : X > T_k}) and the decoder table the point code, written to the code
   memory (the step's quantized input, L channels per word).
3. **Conv**: the engine (:class:`hw.units.engine.ConvEngine` without tables) streams ``H W O G`` beats, pixel-major:
   the 3x3 window of point codes (9 reads of the code memory; taps outside the image masked; a 1x1 layer on the
   centre tap), one beat of weights, the lanes' sigma_m / mu_m and the output channel's bias_int.
4. **Post**, on each engine output (the same cycles as the conv): Y = sat(relu(floor((acc mult + 2^(sh-1)) / 2^sh)))
   plus the residual (read from the feature-map memory), saturated again (golden.int_layer.post), written to the
   output tensor's channel, and fed to the **statistics unit** (per output channel: sum, minimum, maximum), so the
   next layer's statistics are ready when it starts: no extra pass.
5. **Write-back** of the output channels' statistics.

The entry tensor (written by the host) gets its statistics in one pass before the first step. Memories are
on-chip RAM models sized for ``max_pixels`` (docs/hardware.md, "The accelerator", says what a real device needs:
the feature maps in DRAM, line buffers for the windows). The parameter, quantize and write-back phases take
O(C (2^b + 48) + O 100) cycles per step, against the conv's H W O G.
"""
from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from golden.spec import CENTRE_TAP, TAPS

from .accel_spec import CFG_FIELDS, MEMS, STATUS, AccelSpec, bits_for, record_width
from .divider import SeqDivider
from .engine import ConvEngine

__all__ = ["Accelerator", "ACCEL_FAULTS"]

#: Deliberately broken accelerators, for mutation tests only.
ACCEL_FAULTS = {
    "stats_min": "the statistics unit never updates a channel's minimum (xmin stays at the first value)",
    "residual_lane": "the post unit adds the residual of the next channel (a wrong residual address)",
}


def _fields(value, layout) -> dict:
    """name -> slice of ``value`` (signed fields read as signed) for a record layout."""
    out, pos = {}, 0
    for name, width, sgn in layout:
        v = value[pos:pos + width]
        out[name] = v.as_signed() if sgn else v
        pos += width
    return out


def _round_shift(m: Module, value, amount, *, max_left: int, width: int, name: str):
    """``round_half_up(value 2^amount)`` for a signed ``amount``: a left shift (at most ``max_left``, which the
    caller's bounds guarantee) when >= 0, else ``floor((floor(value / 2^(n-1)) + 1) / 2)`` for n = -amount (the same
    as ``floor((value + 2^(n-1)) / 2^n)``). A ``width``-bit signed result."""
    out = Signal(signed(width), name=name)
    left = Signal(range(max_left + 1), name=f"{name}_l")
    right = Signal(range(value.shape().width + 2), name=f"{name}_r")
    m.d.comb += [left.eq(Mux(amount > max_left, max_left, amount)),
                 right.eq(Mux(-amount - 1 > value.shape().width, value.shape().width, -amount - 1))]
    with m.If(amount >= 0):
        m.d.comb += out.eq(value << left)
    with m.Else():
        m.d.comb += out.eq(((value >> right) + 1) >> 1)
    return out


def _sig(m: Module, value, name: str, shape=None):
    """``value`` held in a named Signal (an expression used more than once is computed once)."""
    s = Signal(shape if shape is not None else value.shape(), name=name)
    m.d.comb += s.eq(value)
    return s


def _clamp(m: Module, value, lo: int, hi: int, name: str):
    v = _sig(m, value, f"{name}_in")
    return _sig(m, Mux(v > hi, hi, Mux(v < lo, lo, v)), name)


class _LaneMemory:
    """A memory of ``lanes`` equal lanes kept as one memory per lane, so a write of some lanes is a whole-word
    write of those lanes' memories (a partial-word write becomes one statement per bit in Yosys' netlists and a
    test per bit per cycle in Verilator). ``w_addr``/``w_data``/``w_en`` (a lane mask) write; each reader has
    ``addr`` and ``data`` (every lane, synchronous)."""

    def __init__(self, m: Module, name: str, lanes: int, width: int, depth: int, readers: int):
        mems = [Memory(shape=unsigned(width), depth=depth, init=[]) for _ in range(lanes)]
        for i, mem in enumerate(mems):
            m.submodules[f"{name}_l{i}"] = mem
        self.w_addr = Signal(range(max(2, depth)), name=f"{name}_waddr")
        self.w_data = Signal(lanes * width, name=f"{name}_wdata")
        self.w_en = Signal(lanes, name=f"{name}_wen")
        for i, mem in enumerate(mems):
            wp = mem.write_port()
            m.d.comb += [wp.addr.eq(self.w_addr), wp.data.eq(self.w_data[i * width:(i + 1) * width]),
                         wp.en.eq(self.w_en[i])]
        self.readers = []
        for r in range(readers):
            addr = Signal(range(max(2, depth)), name=f"{name}_raddr{r}")
            data = Signal(lanes * width, name=f"{name}_rdata{r}")
            ports = [mem.read_port() for mem in mems]
            m.d.comb += [p.addr.eq(addr) for p in ports]
            m.d.comb += data.eq(Cat(*(p.data for p in ports)))
            self.readers.append(_Reader(addr, data))


class _Reader:
    def __init__(self, addr, data):
        self.addr, self.data = addr, data


class _Writer:
    def __init__(self, lm: _LaneMemory):
        self.addr, self.data, self.en = lm.w_addr, lm.w_data, lm.w_en


def _rotate(m: Module, value, amount, lanes: int, width: int):
    """Lane ``i`` of the result is lane ``(i + amount) mod lanes`` of ``value`` (a barrel rotator)."""
    cur = _sig(m, value, "rot_in")
    for s in range(max(0, (lanes - 1).bit_length())):
        k = 1 << s
        cur = _sig(m, Mux(amount[s], Cat(cur[k * width:], cur[:k * width]), cur), f"rot_s{s}")
    return cur


class Accelerator(wiring.Component):
    """The whole-body DFSQ accelerator (see the module docstring).

    Parameters
    ----------
    spec : AccelSpec
        Sizes and formats.
    fault : str or None
        A key of :data:`ACCEL_FAULTS` (mutation tests only).

    Attributes
    ----------
    host_we : In(1)
        Write ``host_data`` (the low bits a memory's word needs) at ``host_addr`` of memory ``host_mem`` (the index
        of :data:`hw.units.accel_spec.MEMS`; ``cfg`` addresses are the registers of ``CFG_FIELDS``). Only while idle.
    host_mem : In(3)
        Memory written.
    host_addr : In(host_addr_bits)
        Word address.
    host_data : In(host_data_bits)
        Word (fields LSB first, as :mod:`hw.program` packs them).
    start : In(1)
        Run the program (ignored while busy).
    busy : Out(1)
        A run is in progress.
    done : Out(1)
        One cycle when the run ends.
    status : Out(2)
        After ``done``: 0 ok, 1 a requantization shift below 1 (:data:`~hw.units.accel_spec.STATUS`).
    step : Out(bits_for(steps))
        The step running.
    trace_valid : Out(1)
        The post unit writes ``trace_data`` into the feature-map memory this cycle.
    trace_data : Out(signed(fmap_bits))
        The value written (steps in order; pixel-major, output channel innermost).
    """

    def __init__(self, *, spec: AccelSpec, fault=None):
        if not isinstance(spec, AccelSpec):
            raise TypeError(f"spec must be an AccelSpec, not {spec!r}")
        if fault is not None and fault not in ACCEL_FAULTS:
            raise ValueError(f"unknown fault {fault!r}; known: {', '.join(sorted(ACCEL_FAULTS))}")
        if spec.lanes & (spec.lanes - 1):
            raise ValueError(f"the accelerator's lanes must be a power of two, not {spec.lanes}")
        self._spec, self._fault = spec, fault
        self._engine = ConvEngine(spec=spec.datapath, lanes=spec.lanes, tables=False)
        super().__init__({
            "host_we": In(1), "host_mem": In(3), "host_addr": In(spec.host_addr_bits),
            "host_data": In(spec.host_data_bits), "start": In(1),
            "busy": Out(1), "done": Out(1), "status": Out(2), "step": Out(bits_for(spec.steps)),
            "trace_valid": Out(1), "trace_data": Out(signed(spec.fb)),
        })

    @property
    def spec(self) -> AccelSpec:
        return self._spec

    @property
    def fault(self):
        return self._fault

    @property
    def latency(self) -> int:
        """The engine's pipeline latency (the accelerator runs until ``done``)."""
        return self._engine_latency()

    def _engine_latency(self) -> int:
        from .engine import LATENCY

        return LATENCY

    # ---------------------------------------------------------------------------------------------------------------
    def elaborate(self, platform):
        m = Module()
        S = self._spec
        dp, isp = S.datapath, S.ispec
        L, K, fb, MP = S.lanes, S.points, S.fb, S.max_pixels
        lanes_log2 = L.bit_length() - 1
        x_max = isp.x_max
        m.submodules.engine = eng = self._engine
        layouts, depths = S.layouts(), S.depths()

        # --- host-written memories ------------------------------------------------------------------------------
        mems = {}
        for i, name in enumerate(MEMS):
            if name in ("cfg", "fm"):
                continue
            mem = Memory(shape=unsigned(record_width(layouts[name])), depth=depths[name], init=[])
            m.submodules[f"mem_{name}"] = mem
            mems[name] = mem
        cfg = {f: Signal(S.cfg_width(), name=f"cfg_{f}") for f in CFG_FIELDS}
        host_w = {}
        for i, name in enumerate(MEMS):
            if name in ("cfg", "fm"):
                continue
            wp = mems[name].write_port()
            m.d.comb += [wp.addr.eq(self.host_addr), wp.data.eq(self.host_data),
                         wp.en.eq(self.host_we & (self.host_mem == i) & ~self.busy)]
        with m.If(self.host_we & (self.host_mem == MEMS.index("cfg")) & ~self.busy):
            with m.Switch(self.host_addr):
                for a, f in enumerate(CFG_FIELDS):
                    with m.Case(a):
                        m.d.sync += cfg[f].eq(self.host_data)
        fm = _LaneMemory(m, "mem_fm", L, fb, S.fm_depth, readers=2)
        fm_w = _Writer(fm)
        fm_ra, fm_rb = fm.readers       # entry statistics / quantize; residual
        prog_r = mems["prog"].read_port()
        tmem_r = mems["tmem"].read_port()
        omem_r = mems["omem"].read_port()
        wmem_r = mems["wmem"].read_port()
        pmem_r = mems["pmem"].read_port()

        # --- internal memories -----------------------------------------------------------------------------------
        stat_layout = (("s", isp.sum_bits, True), ("mn", fb, True), ("mx", fb, True))
        m.submodules.mem_stats = stats = Memory(shape=unsigned(record_width(stat_layout)), depth=S.fm_channels,
                                                init=[])
        stats_w, stats_r = stats.write_port(), stats.read_port()
        mum_layout = (("mu", fb, True), ("M", isp.m_bits, False))
        m.submodules.mem_mum = mum = Memory(shape=unsigned(record_width(mum_layout)), depth=S.channels, init=[])
        mum_w, mum_r = mum.write_port(), mum.read_port()
        thr_w_bits = (K - 1) * fb
        thr = _LaneMemory(m, "mem_thr", L, thr_w_bits, S.groups, readers=1)
        thr_w, thr_r = _Writer(thr), thr.readers[0]
        pc_bits = K * dp.code_bits
        pcode = _LaneMemory(m, "mem_pcode", L, pc_bits, S.groups, readers=1)
        pcode_w, pcode_r = _Writer(pcode), pcode.readers[0]
        sb = dp.scale_bits
        sig = _LaneMemory(m, "mem_sig", 2 * L, sb, S.groups, readers=1)   # sigma_m lanes, then mu_m lanes
        sig_w, sig_r = _Writer(sig), sig.readers[0]
        sh_bits = bits_for(isp.post_shift_max)
        # sh1 = sh - 1: floor((acc mult + 2^(sh-1)) / 2^sh) = floor((floor(acc mult / 2^(sh-1)) + 1) / 2)
        opar_layout = (("bias", dp.bias_bits, True), ("mult", isp.mult_bits, False), ("sh1", sh_bits, False))
        m.submodules.mem_opar = opar = Memory(shape=unsigned(record_width(opar_layout)), depth=S.max_out, init=[])
        opar_w, opar_ra, opar_rb = opar.write_port(), opar.read_port(), opar.read_port()
        cb = dp.code_bits
        code = _LaneMemory(m, "mem_code", L, cb, S.code_depth, readers=TAPS)
        code_w, code_r = _Writer(code), code.readers

        # --- run state --------------------------------------------------------------------------------------------
        instr = Signal(record_width(layouts["prog"]))
        ins = _fields(instr, layouts["prog"])
        npix = Signal(S.pixel_bits)
        status = Signal(2)
        m.d.comb += self.status.eq(status)
        step = Signal(bits_for(S.steps))
        m.d.comb += self.step.eq(step)
        m.d.sync += self.done.eq(0)
        frac = cfg["frac"][:S.frac_bits]
        H, W = cfg["height"][:S.dim_bits], cfg["width"][:S.dim_bits]

        # --- statistics unit: L-lane bank (entry) or one channel per output (post) --------------------------------
        NB = max(L, S.max_out)
        acc_s = [Signal(signed(isp.sum_bits), name=f"st_s{i}") for i in range(NB)]
        acc_mn = [Signal(signed(fb), name=f"st_mn{i}") for i in range(NB)]
        acc_mx = [Signal(signed(fb), name=f"st_mx{i}") for i in range(NB)]
        st_lanes_valid = Signal()         # entry pass: lanes 0..L-1 take st_lanes
        st_lanes = Signal(L * fb)
        st_one_valid = Signal()           # post: element st_idx takes st_val
        st_idx = Signal(range(NB))
        st_val = Signal(signed(fb))
        st_first = Signal()
        e_first = Signal()
        for i in range(NB):
            lane_v = st_lanes[i * fb:(i + 1) * fb].as_signed() if i < L else Const(0, signed(fb))
            take = Signal(name=f"st_take{i}")
            val = Signal(signed(fb), name=f"st_val{i}")
            m.d.comb += [take.eq((st_lanes_valid & (i < L)) | (st_one_valid & (st_idx == i))),
                         val.eq(Mux(st_lanes_valid, lane_v, st_val))]
            with m.If(take):
                with m.If(st_first):
                    m.d.sync += [acc_s[i].eq(val), acc_mn[i].eq(val), acc_mx[i].eq(val)]
                with m.Else():
                    m.d.sync += acc_s[i].eq(acc_s[i] + val)
                    if self._fault != "stats_min":
                        m.d.sync += acc_mn[i].eq(Mux(val < acc_mn[i], val, acc_mn[i]))
                    m.d.sync += acc_mx[i].eq(Mux(val > acc_mx[i], val, acc_mx[i]))
        a_s, a_mn, a_mx = Array(acc_s), Array(acc_mn), Array(acc_mx)

        # --- dividers -----------------------------------------------------------------------------------------------
        m.submodules.div_mu = div_mu = SeqDivider(num_bits=isp.sum_bits + 3, den_bits=S.pixel_bits + 2)
        jneg_max = S.bias_s_bits + 2        # beyond this, bias_int is 0 (|bias / s_w 2^E| < 1/4)
        num_b = dp.bias_bits + S.bias_s_bits + S.bias_m_bits + 4
        jpos_max = num_b - S.bias_m_bits - 3     # E <= the bias cap keeps bias_int, so bm 2^j / sm, in range
        m.submodules.div_b = div_b = SeqDivider(num_bits=num_b, den_bits=S.bias_s_bits + 2 + jneg_max)
        m.d.comb += [div_mu.start.eq(0), div_b.start.eq(0)]

        # --- defaults -----------------------------------------------------------------------------------------------
        for p in (fm_w, stats_w, mum_w, thr_w, pcode_w, sig_w, opar_w, code_w):
            m.d.comb += p.en.eq(0)
        m.d.comb += [fm_w.addr.eq(self.host_addr), fm_w.data.eq(self.host_data[:L * fb]),
                     fm_w.en.eq(Mux(self.host_we & (self.host_mem == MEMS.index("fm")) & ~self.busy,
                                    (1 << L) - 1, 0))]

        # per-channel and per-phase counters
        c = Signal(range(S.channels + 1))           # channel / output counter of the parameter phases
        V = Signal(unsigned(max(isp.m_bits, fb + S.log2_denom) + 1))
        E = Signal(signed(S.exp_bits + 2))
        err = Signal()
        mu = Signal(signed(fb + 1))
        Mr = Signal(unsigned(isp.m_bits))
        pts = Signal(K * S.p_bits)
        k = Signal(range(K + 1))
        thr_regs = [Signal(signed(fb), name=f"thr{i}") for i in range(K - 1)]
        fm_channel = Signal(bits_for(S.fm_channels - 1))
        s_lat = Signal(signed(isp.sum_bits))
        mn_lat, mx_lat = Signal(signed(fb)), Signal(signed(fb))
        G = ins["groups"]
        C_in, O_out = ins["in_channels"], ins["out_channels"]

        # entry pass
        eg = Signal(bits_for(S.fm_groups))
        ep = Signal(S.pixel_bits)
        e_valid = Signal()
        e_last = Signal()

        # quantize pipeline
        qp = Signal(S.pixel_bits)
        qj = Signal(bits_for(S.pmem))
        q_run = Signal()
        q1_valid, q2_valid = Signal(), Signal()
        q1_p, q2_p = Signal(S.pixel_bits), Signal(S.pixel_bits)
        q3_codes, q3_mask, q3_addr, q3_valid = (Signal(L * dp.code_bits), Signal(L), Signal(range(S.code_depth)),
                                                Signal())
        piece = _fields(pmem_r.data, layouts["pmem"])
        q2_piece = Signal(record_width(layouts["pmem"]))
        pc2 = _fields(q2_piece, layouts["pmem"])

        # conv
        cy, cx = Signal(S.dim_bits), Signal(S.dim_bits)
        cpix = Signal(S.pixel_bits)
        co = Signal(range(S.max_out + 1))
        cg = Signal(range(S.groups + 1))
        wa = Signal(bits_for(S.wmem))
        c_run = Signal()
        b_valid, b_first, b_last, b_group, b_mask = Signal(), Signal(), Signal(), Signal(range(S.groups)), Signal(TAPS)

        # post
        pp = Signal(S.pixel_bits)
        po = Signal(range(S.max_out + 1))
        outs_left = Signal(S.pixel_bits + bits_for(S.max_out) + 1)
        pa_valid = Signal()
        pa_acc = Signal(signed(dp.acc_bits))
        pa_o = Signal(range(S.max_out))
        pa_first = Signal()
        pa_p = Signal(S.pixel_bits)

        last_step = Signal()
        m.d.comb += last_step.eq(step + 1 >= cfg["steps"])

        tm = _fields(tmem_r.data, layouts["tmem"])
        # M and the exponent's candidate of one channel (pass 1)
        d1, d2 = _sig(m, mx_lat - mu, "p1_d1"), _sig(m, mu - mn_lat, "p1_d2")
        p1_M = _sig(m, Mux(d1 > d2, d1, d2), "p1_M")
        mu_den = _sig(m, Mux(mu < 0, -mu, mu) << S.log2_denom, "p1_mu_den")
        p1_vc = _sig(m, Mux(p1_M > mu_den, p1_M, mu_den), "p1_vc")
        # thresholds (pass 1): T_k = clamp(mu + floor(M (P_k + P_{k+1}) / (2 denom))), one multiplier
        pv = Array([pts[j * S.p_bits:(j + 1) * S.p_bits].as_signed() for j in range(K)])
        pair = _sig(m, pv[k] + pv[k + 1], "thr_pair")
        tsum = _sig(m, mu + ((Mr * pair) >> S.log2_thr_divisor), "thr_sum")
        tcl = _clamp(m, tsum, isp.thr_lo, isp.thr_hi, "thr")
        # the exponent E: ls = the largest k with V 2^k <= B (B = mant_max denom), by V's leading one
        B = dp.mant_max << S.log2_denom
        if max(2 * x_max, x_max << S.log2_denom) >= B:
            raise ValueError("the feature-map format is too wide for the fixed-point de-normalization")
        vmsb = Signal(range(V.shape().width + 1))
        for j in range(V.shape().width):
            with m.If(V[j]):
                m.d.comb += vmsb.eq(j)
        k0 = Signal(range(B.bit_length() + 1))
        m.d.comb += k0.eq(B.bit_length() - 1 - vmsb)
        ls = _sig(m, Mux((V << k0) > B, k0 - 1, k0), "ls")
        p2_valid = Signal()
        p2_c = Signal(range(S.channels))
        mr = _fields(mum_r.data, mum_layout)
        sig_m = _round_shift(m, Cat(mr["M"], Const(0, 1)).as_signed(), E - frac - S.log2_denom,
                             max_left=sb, width=sb + 1, name="sigma_m")
        mu_m = _round_shift(m, mr["mu"], E - frac, max_left=sb, width=sb + 1, name="mu_m")
        with m.If(p2_valid):
            lane_en = (1 << p2_c[:lanes_log2]) if L > 1 else 1
            m.d.comb += [sig_w.en.eq(lane_en | (lane_en << L)), sig_w.addr.eq(p2_c >> lanes_log2),
                         sig_w.data.eq(Cat(*([sig_m[:sb]] * L), *([mu_m[:sb]] * L)))]
        m.d.sync += p2_valid.eq(0)
        om = _fields(omem_r.data, layouts["omem"])
        om_lat = Signal(record_width(layouts["omem"]))
        oml = _fields(om_lat, layouts["omem"])

        with m.FSM(name="seq"):
            with m.State("IDLE"):
                with m.If(self.start & ~self.busy):
                    m.d.sync += [self.busy.eq(1), status.eq(STATUS["ok"]), err.eq(0), step.eq(0), npix.eq(H * W),
                                 eg.eq(0), ep.eq(0)]
                    m.next = "ENTRY"

            # ---- entry statistics: one pass over the entry tensor's groups --------------------------------------
            with m.State("ENTRY"):
                with m.If(eg >= cfg["entry_groups"]):
                    m.next = "FETCH"
                with m.Else():
                    m.d.comb += fm_ra.addr.eq((cfg["entry_group"] + eg) * MP + ep)
                    m.d.sync += [e_valid.eq(1), e_last.eq(ep + 1 == npix), e_first.eq(ep == 0)]
                    with m.If(ep + 1 == npix):
                        m.d.sync += ep.eq(0)
                        m.next = "ENTRY_LAST"
                    with m.Else():
                        m.d.sync += ep.eq(ep + 1)
            with m.State("ENTRY_LAST"):
                m.d.sync += [e_valid.eq(0), c.eq(0)]
                m.next = "ENTRY_WB"
            with m.State("ENTRY_WB"):
                m.d.comb += [stats_w.en.eq(1), stats_w.addr.eq((cfg["entry_group"] + eg) * L + c),
                             stats_w.data.eq(Cat(a_s[c], a_mn[c], a_mx[c]))]
                m.d.sync += c.eq(c + 1)
                with m.If(c + 1 == L):
                    m.d.sync += eg.eq(eg + 1)
                    m.next = "ENTRY"

            # ---- fetch the step's instruction -------------------------------------------------------------------
            with m.State("FETCH"):
                m.d.comb += prog_r.addr.eq(step)
                m.next = "FETCH2"
            with m.State("FETCH2"):
                m.d.sync += [instr.eq(prog_r.data), c.eq(0), V.eq(0)]
                m.next = "P1_A"

            # ---- parameters, pass 1: per input channel ------------------------------------------------------------
            with m.State("P1_A"):
                m.d.comb += tmem_r.addr.eq(ins["tbase"] + c)
                m.next = "P1_B"
            with m.State("P1_B"):
                m.d.comb += [stats_r.addr.eq(tm["fm_channel"]),
                             pcode_w.en.eq(1 << c[:lanes_log2] if L > 1 else 1),
                             pcode_w.addr.eq(c >> lanes_log2),
                             pcode_w.data.eq(Cat(*([Cat(*(tm[f"c{j}"] for j in range(K)))] * L)))]
                m.d.sync += pts.eq(Cat(*(tm[f"p{j}"] for j in range(K))))
                m.next = "P1_C"
            with m.State("P1_C"):
                st = _fields(stats_r.data, stat_layout)
                m.d.sync += [s_lat.eq(st["s"]), mn_lat.eq(st["mn"]), mx_lat.eq(st["mx"])]
                with m.If(ins["relu_input"]):
                    m.d.sync += mu.eq(0)
                    m.next = "P1_M"
                with m.Else():
                    m.d.comb += [div_mu.start.eq(1), div_mu.num.eq((st["s"] << 1) + npix),
                                 div_mu.den.eq(npix << 1)]
                    m.next = "P1_DIV"
            with m.State("P1_DIV"):
                with m.If(div_mu.done):
                    m.d.sync += mu.eq(div_mu.quotient)
                    m.next = "P1_M"
            with m.State("P1_M"):
                Mv, vc = p1_M, p1_vc
                m.d.sync += [Mr.eq(Mv), k.eq(0)]
                with m.If(vc > V):
                    m.d.sync += V.eq(vc)
                m.d.comb += [mum_w.en.eq(1), mum_w.addr.eq(c), mum_w.data.eq(Cat(mu[:fb], Mv[:isp.m_bits]))]
                m.next = "P1_T"
            with m.State("P1_T"):
                for j in range(K - 1):
                    with m.If(k == j):
                        m.d.sync += thr_regs[j].eq(tcl)
                m.d.sync += k.eq(k + 1)
                with m.If(k == K - 2):
                    m.next = "P1_TW"
            with m.State("P1_TW"):
                m.d.comb += [thr_w.en.eq(1 << c[:lanes_log2] if L > 1 else 1), thr_w.addr.eq(c >> lanes_log2),
                             thr_w.data.eq(Cat(*([Cat(*thr_regs)] * L)))]
                m.d.sync += c.eq(c + 1)
                with m.If(c + 1 == C_in):
                    m.next = "EXP"
                with m.Else():
                    m.next = "P1_A"

            with m.State("EXP"):
                capv = ls + frac
                with m.If(V == 0):
                    m.d.sync += E.eq(Mux(ins["cap_valid"], ins["cap"], 0))
                with m.Elif(ins["cap_valid"] & (ins["cap"] < capv)):
                    m.d.sync += E.eq(ins["cap"])
                with m.Else():
                    m.d.sync += E.eq(capv)
                m.d.sync += c.eq(0)
                m.next = "P2"

            # ---- parameters, pass 2: sigma_m and mu_m per input channel (one per cycle) -------------------------
            with m.State("P2"):
                m.d.comb += mum_r.addr.eq(c)
                m.d.sync += [p2_valid.eq(1), p2_c.eq(c), c.eq(c + 1)]
                with m.If(c + 1 == C_in):
                    m.next = "P2_END"
            with m.State("P2_END"):
                m.d.sync += c.eq(0)
                m.next = "P3_A"

            # ---- parameters, pass 3: bias_int and the requantization shift per output channel --------------------
            with m.State("P3_A"):
                m.d.comb += omem_r.addr.eq(ins["obase"] + c)
                m.next = "P3_B"
            with m.State("P3_B"):
                m.d.sync += om_lat.eq(omem_r.data)
                j = om["jb"] + E
                jn = Signal(range(jneg_max + 1), name="p3_jn")
                jp = Signal(range(jpos_max + 1), name="p3_jp")
                m.d.comb += [jn.eq(Mux(-j > jneg_max, jneg_max, -j)), jp.eq(Mux(j > jpos_max, jpos_max, j))]
                bm2 = om["bm"] << 1
                with m.If(j >= 0):
                    m.d.comb += [div_b.num.eq((bm2 << jp) + om["sm"]), div_b.den.eq(om["sm"] << 1)]
                with m.Else():
                    m.d.comb += [div_b.num.eq(bm2 + (om["sm"] << jn)), div_b.den.eq(om["sm"] << (jn + 1))]
                m.d.comb += div_b.start.eq(1)
                m.next = "P3_DIV"
            with m.State("P3_DIV"):
                with m.If(div_b.done):
                    sh = E + oml["r"] - frac
                    with m.If(sh < 1):
                        m.d.sync += [err.eq(1), status.eq(STATUS["shift"])]
                    shc = Mux(sh > isp.post_shift_max, isp.post_shift_max, Mux(sh < 1, 1, sh)) - 1
                    m.d.comb += [opar_w.en.eq(1), opar_w.addr.eq(c),
                                 opar_w.data.eq(Cat(div_b.quotient[:dp.bias_bits], oml["mult"],
                                                    shc.as_unsigned()[:sh_bits]))]
                    m.d.sync += c.eq(c + 1)
                    with m.If(c + 1 == O_out):
                        m.d.sync += [qp.eq(0), qj.eq(0), q_run.eq(1)]
                        m.next = "QUANT"
                    with m.Else():
                        m.next = "P3_A"

            # ---- quantize: pieces of every pixel, 1 per cycle, pipelined ------------------------------------------
            with m.State("QUANT"):
                with m.If(~q_run & ~q1_valid & ~q2_valid & ~q3_valid):
                    m.d.sync += [cy.eq(0), cx.eq(0), cpix.eq(0), co.eq(0), cg.eq(0), wa.eq(ins["wbase"]),
                                 c_run.eq(1), pp.eq(0), po.eq(0), outs_left.eq(npix * O_out)]
                    m.next = "CONV"

            # ---- conv and post ------------------------------------------------------------------------------------
            with m.State("CONV"):
                with m.If(~c_run & (outs_left == 0) & ~pa_valid):
                    m.d.sync += c.eq(0)
                    m.next = "WB"

            # ---- write-back of the output statistics ----------------------------------------------------------------
            with m.State("WB"):
                m.d.comb += [stats_w.en.eq(1), stats_w.addr.eq(ins["out_group"] * L + c),
                             stats_w.data.eq(Cat(a_s[c], a_mn[c], a_mx[c]))]
                m.d.sync += c.eq(c + 1)
                with m.If(c + 1 == O_out):
                    with m.If(last_step | err):
                        m.d.sync += [self.busy.eq(0), self.done.eq(1)]
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += step.eq(step + 1)
                        m.next = "FETCH"

        # --- entry statistics data path (the read issued in ENTRY arrives a cycle later) ----------------------------
        with m.If(e_valid):
            m.d.comb += [st_lanes_valid.eq(1), st_lanes.eq(fm_ra.data), st_first.eq(e_first)]

        # --- quantize pipeline -------------------------------------------------------------------------------------
        # stage 0: piece address; stage 1: piece -> feature-map, threshold and code-table reads; stage 2: data ->
        # rotate, binary search, point code -> stage 3: masked write of the code memory
        with m.If(q_run):
            m.d.comb += pmem_r.addr.eq(ins["pbase"] + qj)
            m.d.sync += [q1_valid.eq(1), q1_p.eq(qp)]
            with m.If(qj + 1 == ins["pieces"]):
                m.d.sync += [qj.eq(0), qp.eq(qp + 1)]
                with m.If(qp + 1 == npix):
                    m.d.sync += q_run.eq(0)
            with m.Else():
                m.d.sync += qj.eq(qj + 1)
        with m.Else():
            m.d.sync += q1_valid.eq(0)
        with m.If(q1_valid):
            m.d.comb += [fm_ra.addr.eq(piece["src_group"] * MP + q1_p), thr_r.addr.eq(piece["dst_group"]),
                         pcode_r.addr.eq(piece["dst_group"])]
        m.d.sync += [q2_valid.eq(q1_valid), q2_p.eq(q1_p), q2_piece.eq(pmem_r.data)]
        lb = max(1, lanes_log2)
        rot = Signal(lb)
        m.d.comb += rot.eq(pc2["src_lane"] - pc2["dst_lane"])
        rotated = _rotate(m, fm_ra.data, rot, L, fb)
        codes = []
        for i in range(L):
            x = rotated[i * fb:(i + 1) * fb].as_signed()
            tl = thr_r.data[i * thr_w_bits:(i + 1) * thr_w_bits]
            tv = Array([tl[j * fb:(j + 1) * fb].as_signed() for j in range(K - 1)] + [Const(x_max, signed(fb))])
            x = _sig(m, x, f"q_x{i}")
            idx = Const(0, unsigned(dp.act_bits))
            for s in reversed(range(dp.act_bits)):   # binary search: #{k : x > T_k}
                probe = idx + (1 << s) - 1
                idx = _sig(m, Mux(x > tv[probe], idx + (1 << s), idx), f"q_idx{i}_{s}", unsigned(dp.act_bits))
            idx_s = idx
            pcl = pcode_r.data[i * pc_bits:(i + 1) * pc_bits]
            codes.append(Array([pcl[j * cb:(j + 1) * cb] for j in range(K)])[idx_s])
        lane_ids = [Const(i, bits_for(L)) for i in range(L)]
        m.d.sync += [q3_valid.eq(q2_valid), q3_codes.eq(Cat(*codes)), q3_addr.eq(pc2["dst_group"] * MP + q2_p),
                     q3_mask.eq(Cat(*((lane_ids[i] >= pc2["dst_lane"]) & (lane_ids[i] < pc2["dst_lane"]
                                                                               + pc2["count"])
                                      for i in range(L))))]
        with m.If(q3_valid):
            m.d.comb += [code_w.en.eq(q3_mask), code_w.addr.eq(q3_addr), code_w.data.eq(q3_codes)]

        # --- conv beats: issue reads at t, the engine takes the beat at t+1 -----------------------------------------
        kernel1 = ins["kernel1"]
        offs = []
        for t in range(TAPS):
            dy, dx = t // 3 - 1, t % 3 - 1
            offs.append((dy, dx))
        with m.If(c_run):
            row = {-1: cpix - W, 0: cpix, 1: cpix + W}
            for t, (dy, dx) in enumerate(offs):
                m.d.comb += code_r[t].addr.eq(cg * MP + row[dy] + dx)
            m.d.comb += [wmem_r.addr.eq(wa), sig_r.addr.eq(cg), opar_ra.addr.eq(co)]
            inside = []
            for t, (dy, dx) in enumerate(offs):
                ok = Const(1, 1)
                if dy < 0:
                    ok = ok & (cy != 0)
                if dy > 0:
                    ok = ok & (cy + 1 != H)
                if dx < 0:
                    ok = ok & (cx != 0)
                if dx > 0:
                    ok = ok & (cx + 1 != W)
                inside.append(Mux(kernel1, t == CENTRE_TAP, ok))
            m.d.sync += [b_valid.eq(1), b_first.eq(cg == 0), b_last.eq(cg + 1 == G), b_group.eq(cg),
                         b_mask.eq(Cat(*inside)), wa.eq(wa + 1)]
            # counters: group, output channel, pixel
            with m.If(cg + 1 == G):
                m.d.sync += cg.eq(0)
                with m.If(co + 1 == O_out):
                    m.d.sync += [co.eq(0), wa.eq(ins["wbase"]), cpix.eq(cpix + 1)]
                    with m.If(cx + 1 == W):
                        m.d.sync += [cx.eq(0), cy.eq(cy + 1)]
                        with m.If(cy + 1 == H):
                            m.d.sync += c_run.eq(0)
                    with m.Else():
                        m.d.sync += cx.eq(cx + 1)
                with m.Else():
                    m.d.sync += co.eq(co + 1)
            with m.Else():
                m.d.sync += cg.eq(cg + 1)
        with m.Else():
            m.d.sync += b_valid.eq(0)
        # the engine's beat
        in_code = []
        for lane in range(L):
            for t in range(TAPS):
                in_code.append(code_r[t].data[lane * cb:(lane + 1) * cb])
        opa = _fields(opar_ra.data, opar_layout)
        m.d.comb += [eng.in_valid.eq(b_valid), eng.in_first.eq(b_first), eng.in_last.eq(b_last),
                     eng.in_group.eq(b_group), eng.in_mask.eq(b_mask), eng.in_code.eq(Cat(*in_code)),
                     eng.in_weight.eq(wmem_r.data), eng.in_sigma.eq(sig_r.data[:L * sb]),
                     eng.in_mu.eq(sig_r.data[L * sb:]), eng.in_bias.eq(opa["bias"]), eng.out_ready.eq(1)]

        # --- post unit: stage A (engine output, reads) -> B (requantize, ReLU, residual) -> write ----------------
        m.d.sync += pa_valid.eq(eng.out_valid)
        with m.If(eng.out_valid):
            ogrp = ins["res_group"] + (po >> lanes_log2)
            m.d.comb += [opar_rb.addr.eq(po), fm_rb.addr.eq(ogrp * MP + pp)]
            m.d.sync += [pa_acc.eq(eng.out_acc), pa_o.eq(po), pa_p.eq(pp), pa_first.eq(pp == 0)]
            with m.If(po + 1 == O_out):
                m.d.sync += [po.eq(0), pp.eq(pp + 1)]
            with m.Else():
                m.d.sync += po.eq(po + 1)
        opb = _fields(opar_rb.data, opar_layout)
        prod = _sig(m, pa_acc * opb["mult"], "post_prod")
        rq = _sig(m, ((prod >> opb["sh1"]) + 1) >> 1, "post_rq")
        relu_v = _sig(m, Mux(ins["relu"] & (rq < 0), 0, rq), "post_relu")
        sat1 = _clamp(m, relu_v, -x_max, x_max, "post_sat1")
        res_lane = pa_o[:lanes_log2] if L > 1 else Const(0, 1)
        if self._fault == "residual_lane":
            res_lane = res_lane + 1
        res_v = Array([fm_rb.data[i * fb:(i + 1) * fb].as_signed() for i in range(L)])[res_lane]
        y_s = _sig(m, _clamp(m, sat1 + Mux(ins["residual"], res_v, 0), -x_max, x_max, "post_sum"), "post_y",
                   signed(fb))
        with m.If(pa_valid):
            out_grp = ins["out_group"] + (pa_o >> lanes_log2)
            lane_sel = (1 << pa_o[:lanes_log2]) if L > 1 else 1
            m.d.comb += [fm_w.en.eq(lane_sel), fm_w.addr.eq(out_grp * MP + pa_p), fm_w.data.eq(Cat(*([y_s] * L))),
                         st_one_valid.eq(1), st_idx.eq(pa_o), st_val.eq(y_s), st_first.eq(pa_first),
                         self.trace_valid.eq(1), self.trace_data.eq(y_s)]
            m.d.sync += outs_left.eq(outs_left - 1)
        return m
