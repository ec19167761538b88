"""The DFSQ accelerator: a whole quantized body from a layer program, on integers only (contract 2).

Top module ``dfsq_accel``. The host writes the memories of :data:`hw.units.accel_spec.MEMS` (the layer program,
the parameter memories, the entry feature map and the run configuration) through one port, pulses ``start`` and
waits for ``done``; every value the post unit writes into the feature-map memory also leaves on the ``trace_*``
ports (in step order, each step pixel-major with the output channel innermost), so a simulator can check every layer
of the network. The RTL holds nothing network-specific: the program (:mod:`hw.program`, compiled from a model
adapter's integer graph) says what each step reads, writes and adds; the sizes come from
:class:`~hw.units.accel_spec.AccelSpec`.

Per step (one quantized conv and its post unit, golden.int_network's loop), the sequencer runs these phases; the
contract-2 units are issue 23's (:mod:`hw.units.stats_unit`, :mod:`hw.units.threshold_unit`,
:mod:`hw.units.quantizer`, :mod:`hw.units.post_unit`):

1. **Parameters**: the step's point codes into the threshold unit's point table and the code decoder; per input
   channel c, mu and M of the feature-map channel the program maps c to (the statistics unit's, gathered when that
   channel was written; after a ReLU the reader takes mu = 0 and M = max(xmax, -xmin)) into the threshold unit,
   whose 2^b - 1 thresholds go straight into the quantizer. Then the exponent E (golden.int_layer.fixed_point_int,
   "fused": the largest E with max_c(M_c / denom, |mu_c|) 2^(E - frac) <= mant_max, capped by the layer's bias cap
   from the program); sigma_m and mu_m of every channel (shifts with rounding half up); per output channel
   bias_int = round(bias / s_w 2^E) (the program stores bias / s_w as bm 2^jb / sm exactly; a sequential divider)
   and the requantization shift sh = E + r - frac (an error status when sh < 1, as golden's SpecError).
2. **Quantize**: every pixel of every input channel once: the program's quantize pieces move up to L channels of a
   feature-map word to their place in the step's input (a lane rotation: RDN's concatenations), the quantizer gives
   the point indices and the decoder table the point codes, written to the code memory (the step's quantized input,
   L channels per word).
3. **Conv**: the engine (:class:`hw.units.engine.ConvEngine` without tables) streams ``H W O G`` beats, pixel-major:
   the 3x3 window of point codes (9 reads of the code memory; taps outside the image masked; a 1x1 layer on the
   centre tap), one beat of weights, the lanes' sigma_m / mu_m and the output channel's bias_int.
4. **Post**, on each engine output (the same cycles as the conv): the post unit (one lane: an output per cycle)
   requantizes, applies the ReLU, saturates and adds the residual read from the feature-map memory; the result is
   written to the output tensor's channel, traced, and fed to the **statistics unit**, so the next layer's
   statistics are ready when it starts: no extra pass.
5. **Drain**: the statistics unit's mu, M, min and max of every output channel into the statistics memory.

The entry tensor (written by the host) passes through the statistics unit once before the first step. Memories are
on-chip RAM models sized for ``max_pixels`` (docs/accelerator.md says what a real device needs: the feature maps in
DRAM, line buffers for the windows).
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
from .post_unit import PostUnit
from .quantizer import Quantizer
from .stats_unit import StatsUnit
from .threshold_unit import ThresholdUnit

__all__ = ["Accelerator", "ACCEL_FAULTS"]

#: Deliberately broken accelerators, for mutation tests only.
ACCEL_FAULTS = {
    "stats_min": "the statistics unit's lane never updates a channel's minimum (its 'dropped_min' fault)",
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
    """A memory of ``lanes`` equal lanes with lane write enables: ``w_addr``/``w_data``/``w_en`` (a lane mask) write;
    each reader has ``addr`` and ``data`` (every lane, synchronous). One memory with a lane-granular write port
    (Yosys writes one slice assignment per lane; a memory per lane would cost Verilator a read per lane per port)."""

    def __init__(self, m: Module, name: str, lanes: int, width: int, depth: int, readers: int):
        mem = Memory(shape=unsigned(lanes * width), depth=depth, init=[])
        m.submodules[name] = mem
        self.w_addr = Signal(range(max(2, depth)), name=f"{name}_waddr")
        self.w_data = Signal(lanes * width, name=f"{name}_wdata")
        self.w_en = Signal(lanes, name=f"{name}_wen")
        wp = mem.write_port(granularity=width)
        m.d.comb += [wp.addr.eq(self.w_addr), wp.data.eq(self.w_data), wp.en.eq(self.w_en)]
        self.readers = []
        for r in range(readers):
            rp = mem.read_port()
            self.readers.append(_Reader(rp.addr, rp.data))


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
        layouts, depths = S.layouts(), S.depths()
        m.submodules.engine = eng = self._engine
        # issue 23's units: statistics (one value per beat: the post unit's output stream), thresholds (one
        # multiplier), the L-lane binary-search quantizer, the post unit (one lane: one output per cycle)
        m.submodules.stats = stu = StatsUnit(spec=isp, lanes=1,
                                             fault="dropped_min" if self._fault == "stats_min" else None)
        m.submodules.thresholds = thu = ThresholdUnit(spec=isp)
        m.submodules.quantizer = qu = Quantizer(spec=isp, lanes=L)
        m.submodules.post = pu = PostUnit(spec=isp, lanes=1)

        # --- host-written memories ------------------------------------------------------------------------------
        mems = {}
        for i, name in enumerate(MEMS):
            if name in ("cfg", "fm"):
                continue
            mem = Memory(shape=unsigned(record_width(layouts[name])), depth=depths[name], init=[])
            m.submodules[f"mem_{name}"] = mem
            mems[name] = mem
            wp = mem.write_port()
            m.d.comb += [wp.addr.eq(self.host_addr), wp.data.eq(self.host_data),
                         wp.en.eq(self.host_we & (self.host_mem == i) & ~self.busy)]
        cfg = {f: Signal(S.cfg_width(), name=f"cfg_{f}") for f in CFG_FIELDS}
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
        # per feature-map channel: the statistics unit's mu and M (with mean subtraction) and the minimum and maximum,
        # from which a reader that takes the tensor as a ReLU output forms its own M (mu = 0)
        stat_layout = (("mu", fb, True), ("M", isp.m_bits, False), ("mn", fb, True), ("mx", fb, True))
        mum_layout = (("mu", fb, True), ("M", isp.m_bits, False))
        m.submodules.mem_stats = stats = Memory(shape=unsigned(record_width(stat_layout)), depth=S.fm_channels,
                                                init=[])
        stats_w, stats_r = stats.write_port(), stats.read_port()
        m.submodules.mem_mum = mum = Memory(shape=unsigned(record_width(mum_layout)), depth=S.channels, init=[])
        mum_w, mum_r = mum.write_port(), mum.read_port()
        pc_bits = K * dp.code_bits
        pcode = _LaneMemory(m, "mem_pcode", L, pc_bits, S.groups, readers=1)
        pcode_w, pcode_r = _Writer(pcode), pcode.readers[0]
        sb = dp.scale_bits
        sig = _LaneMemory(m, "mem_sig", 2 * L, sb, S.groups, readers=1)   # sigma_m lanes, then mu_m lanes
        sig_w, sig_r = _Writer(sig), sig.readers[0]
        sh_bits = isp.post_shift_bits
        opar_layout = (("bias", dp.bias_bits, True), ("mult", isp.mult_bits, False), ("sh", sh_bits, False))
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
        G = ins["groups"]
        C_in, O_out = ins["in_channels"], ins["out_channels"]
        last_step = Signal()
        m.d.comb += last_step.eq(step + 1 >= cfg["steps"])

        # --- dividers (bias_int) ----------------------------------------------------------------------------------
        jneg_max = S.bias_s_bits + 2        # beyond this, bias_int is 0 (|bias / s_w 2^E| < 1/4)
        num_b = dp.bias_bits + S.bias_s_bits + S.bias_m_bits + 4
        jpos_max = num_b - S.bias_m_bits - 3     # E <= the bias cap keeps bias_int, so bm 2^j / sm, in range
        m.submodules.div_b = div_b = SeqDivider(num_bits=num_b, den_bits=S.bias_s_bits + 2 + jneg_max)
        m.d.comb += div_b.start.eq(0)

        # --- defaults ---------------------------------------------------------------------------------------------
        for p in (fm_w, stats_w, mum_w, pcode_w, sig_w, opar_w, code_w):
            m.d.comb += p.en.eq(0)
        m.d.comb += [fm_w.addr.eq(self.host_addr), fm_w.data.eq(self.host_data[:L * fb]),
                     fm_w.en.eq(Mux(self.host_we & (self.host_mem == MEMS.index("fm")) & ~self.busy,
                                    (1 << L) - 1, 0))]
        m.d.comb += [thu.tbl_we.eq(0), thu.in_valid.eq(0), thu.out_ready.eq(1), qu.out_ready.eq(1),
                     stu.in_valid.eq(0), stu.out_ready.eq(1), pu.out_ready.eq(1), eng.out_ready.eq(1)]
        # the threshold unit's thresholds go straight into the quantizer's threshold memories
        m.d.comb += [qu.thr_we.eq(thu.out_valid), qu.thr_chan.eq(thu.out_chan), qu.thr_k.eq(thu.out_k),
                     qu.thr_value.eq(thu.out_t)]
        thr_count = Signal(range(S.channels * K + 1))
        with m.If(thu.out_valid):
            m.d.sync += thr_count.eq(thr_count + 1)

        c = Signal(range(S.channels + 1))           # channel / output counter of the parameter phases
        kk = Signal(range(K + 1))                   # point index of the table load
        V = Signal(unsigned(max(isp.m_bits, fb + S.log2_denom) + 1))
        E = Signal(signed(S.exp_bits + 2))
        err = Signal()
        drained = Signal(range(max(S.channels, S.max_out) + 1))   # statistics written back
        # the statistics unit's drain: mu and M of each channel into the statistics memory
        st_base = Signal(range(S.fm_channels + 1))
        with m.If(stu.out_valid):
            m.d.comb += [stats_w.en.eq(1), stats_w.addr.eq(st_base + stu.out_chan),
                         stats_w.data.eq(Cat(stu.out_mu, stu.out_m, stu.out_min, stu.out_max))]
            m.d.sync += drained.eq(drained + 1)

        # entry pass
        eg = Signal(bits_for(S.fm_groups))
        ep = Signal(S.pixel_bits)
        el = Signal(range(max(L, 2)))
        e_valid, e_last, e_lane = Signal(), Signal(), Signal(range(max(L, 2)))
        e_chan_r = Signal(range(S.channels + 1))
        entry_channels = cfg["entry_channels"]

        # quantize pipeline
        qp = Signal(S.pixel_bits)
        qj = Signal(bits_for(S.pmem))
        q_run = Signal()
        q1_valid = Signal()
        q1_p = Signal(S.pixel_bits)
        piece = _fields(pmem_r.data, layouts["pmem"])
        pw = record_width(layouts["pmem"])
        qlat = qu.latency
        # the piece and pixel of each beat in the quantizer: a delay line as long as its latency
        dl_valid = [Signal(name=f"qd_v{i}") for i in range(qlat + 1)]
        dl_piece = [Signal(pw, name=f"qd_piece{i}") for i in range(qlat + 1)]
        dl_p = [Signal(S.pixel_bits, name=f"qd_p{i}") for i in range(qlat + 1)]

        # conv
        cy, cx = Signal(S.dim_bits), Signal(S.dim_bits)
        cpix = Signal(S.pixel_bits)
        co = Signal(range(S.max_out + 1))
        cg = Signal(range(S.groups + 1))
        wa = Signal(bits_for(S.wmem))
        c_run = Signal()
        b_valid, b_first, b_last, b_group, b_mask = Signal(), Signal(), Signal(), Signal(range(S.groups)), Signal(TAPS)

        # post: engine output -> (residual and parameters read) -> post unit -> write
        po, pp = Signal(range(S.max_out + 1)), Signal(S.pixel_bits)       # outputs entering the post unit
        wo, wpx = Signal(range(S.max_out + 1)), Signal(S.pixel_bits)      # outputs leaving it
        outs_left = Signal(S.pixel_bits + bits_for(S.max_out) + 1)
        pa_valid = Signal()
        pa_acc = Signal(signed(dp.acc_bits))
        pa_o = Signal(range(S.max_out))

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

        # pass 2: sigma_m and mu_m per input channel, one per cycle (read at t, written at t+1)
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
        tm = _fields(tmem_r.data, layouts["tmem"])
        st = _fields(stats_r.data, stat_layout)
        # the reader's mu and M: the tensor's, or after a ReLU mu = 0 and M = max(xmax, -xmin)
        p1_mu = _sig(m, Mux(ins["relu_input"], 0, st["mu"]), "p1_mu", signed(fb))
        neg_mn = _sig(m, -st["mn"], "p1_neg_mn")
        p1_m = _sig(m, Mux(ins["relu_input"], Mux(st["mx"] > neg_mn, st["mx"], neg_mn), st["M"]), "p1_m",
                    unsigned(isp.m_bits))
        mu_den = _sig(m, Mux(p1_mu < 0, -p1_mu, p1_mu) << S.log2_denom, "p1_mu_den")
        p1_vc = _sig(m, Mux(p1_m > mu_den, p1_m, mu_den), "p1_vc")

        with m.FSM(name="seq"):
            with m.State("IDLE"):
                with m.If(self.start & ~self.busy):
                    m.d.sync += [self.busy.eq(1), status.eq(STATUS["ok"]), err.eq(0), step.eq(0), npix.eq(H * W),
                                 eg.eq(0), ep.eq(0), el.eq(0), drained.eq(0),
                                 st_base.eq(cfg["entry_group"] * L)]
                    m.next = "ENTRY_WAIT"

            # ---- entry statistics: every value of the entry tensor through the statistics unit -------------------
            with m.State("ENTRY_WAIT"):
                with m.If(stu.in_ready):            # it clears its memory after reset
                    m.next = "ENTRY"
            with m.State("ENTRY"):
                m.d.comb += fm_ra.addr.eq((cfg["entry_group"] + eg) * MP + ep)
                chan = _sig(m, eg * L + el, "e_chan")
                chan_last = chan + 1 == entry_channels
                m.d.sync += [e_valid.eq(1), e_lane.eq(el), e_chan_r.eq(chan), e_last.eq((ep + 1 == npix) & chan_last)]
                with m.If((el + 1 == L) | chan_last):
                    m.d.sync += el.eq(0)
                    with m.If(ep + 1 == npix):
                        m.d.sync += [ep.eq(0), eg.eq(eg + 1)]
                        with m.If(chan_last):
                            m.next = "ENTRY_DRAIN"
                    with m.Else():
                        m.d.sync += ep.eq(ep + 1)
                with m.Else():
                    m.d.sync += el.eq(el + 1)
            with m.State("ENTRY_DRAIN"):
                m.d.sync += e_valid.eq(0)
                with m.If(drained == entry_channels):
                    m.next = "FETCH"

            # ---- fetch the step's instruction -------------------------------------------------------------------
            with m.State("FETCH"):
                m.d.comb += prog_r.addr.eq(step)
                m.next = "FETCH2"
            with m.State("FETCH2"):
                m.d.sync += [instr.eq(prog_r.data), c.eq(0), kk.eq(0), V.eq(0), thr_count.eq(0)]
                m.next = "P0_A"

            # ---- parameters, pass 0: the step's point tables (threshold unit, code decoder) ----------------------
            with m.State("P0_A"):
                m.d.comb += tmem_r.addr.eq(ins["tbase"] + c)
                m.next = "P0_B"
            with m.State("P0_B"):
                m.d.comb += tmem_r.addr.eq(ins["tbase"] + c)     # held: the data stays valid while kk counts
                m.d.comb += [thu.tbl_we.eq(1), thu.tbl_chan.eq(c),  thu.tbl_idx.eq(kk),
                             thu.tbl_code.eq(Array([tm[f"c{j}"] for j in range(K)])[kk])]
                with m.If(kk == 0):
                    m.d.comb += [pcode_w.en.eq(1 << c[:lanes_log2] if L > 1 else 1),
                                 pcode_w.addr.eq(c >> lanes_log2),
                                 pcode_w.data.eq(Cat(*([Cat(*(tm[f"c{j}"] for j in range(K)))] * L)))]
                m.d.sync += kk.eq(kk + 1)
                with m.If(kk == K - 1):
                    m.d.sync += [kk.eq(0), c.eq(c + 1)]
                    with m.If(c + 1 == C_in):
                        m.d.sync += c.eq(0)
                        m.next = "P1_A"
                    with m.Else():
                        m.next = "P0_A"

            # ---- parameters, pass 1: per input channel, its statistics into the threshold unit ------------------
            with m.State("P1_A"):
                m.d.comb += tmem_r.addr.eq(ins["tbase"] + c)
                m.next = "P1_B"
            with m.State("P1_B"):
                m.d.comb += [tmem_r.addr.eq(ins["tbase"] + c), stats_r.addr.eq(tm["fm_channel"])]
                m.next = "P1_C"
            with m.State("P1_C"):   # addresses held: the data stays while the threshold unit is busy
                m.d.comb += [tmem_r.addr.eq(ins["tbase"] + c), stats_r.addr.eq(tm["fm_channel"]), thu.in_valid.eq(1), thu.in_chan.eq(c), thu.in_mu.eq(p1_mu), thu.in_m.eq(p1_m)]
                with m.If(thu.in_ready):
                    m.d.comb += [mum_w.en.eq(1), mum_w.addr.eq(c), mum_w.data.eq(Cat(p1_mu, p1_m))]
                    with m.If(p1_vc > V):
                        m.d.sync += V.eq(p1_vc)
                    m.d.sync += c.eq(c + 1)
                    with m.If(c + 1 == C_in):
                        m.next = "P1_WAIT"
                    with m.Else():
                        m.next = "P1_A"
            with m.State("P1_WAIT"):   # every threshold written into the quantizer
                with m.If(thr_count == C_in * (K - 1)):
                    m.next = "EXP"

            # ---- the exponent E -----------------------------------------------------------------------------------
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

            # ---- parameters, pass 2: sigma_m and mu_m ---------------------------------------------------------------
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
                    shc = Mux(sh > isp.post_shift_max, isp.post_shift_max, Mux(sh < 1, 1, sh))
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
                with m.If(~q_run & ~q1_valid & ~Cat(*dl_valid).any()):
                    m.d.sync += [cy.eq(0), cx.eq(0), cpix.eq(0), co.eq(0), cg.eq(0), wa.eq(ins["wbase"]),
                                 c_run.eq(1), pp.eq(0), po.eq(0), wo.eq(0), wpx.eq(0), outs_left.eq(npix * O_out),
                                 drained.eq(0), st_base.eq(ins["out_group"] * L)]
                    m.next = "CONV"

            # ---- conv and post ------------------------------------------------------------------------------------
            with m.State("CONV"):
                with m.If(~c_run & (outs_left == 0)):
                    m.next = "DRAIN"

            # ---- the statistics unit drains the output's statistics -----------------------------------------------
            with m.State("DRAIN"):
                with m.If(drained == O_out):
                    with m.If(last_step | err):
                        m.d.sync += [self.busy.eq(0), self.done.eq(1)]
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += step.eq(step + 1)
                        m.next = "FETCH"

        # --- entry pass data path: the word read in ENTRY arrives a cycle later; one lane per beat ------------------
        e_word = Array([fm_ra.data[i * fb:(i + 1) * fb].as_signed() for i in range(L)])
        with m.If(e_valid):
            m.d.comb += [stu.in_valid.eq(1), stu.in_group.eq(e_chan_r), stu.in_data.eq(e_word[e_lane]),
                         stu.in_last.eq(e_last), stu.cfg_channels.eq(entry_channels), stu.cfg_pixels.eq(npix),
                         stu.cfg_relu.eq(0)]

        # --- quantize pipeline -------------------------------------------------------------------------------------
        # stage 0: piece address; stage 1: piece -> feature-map read; stage 2: rotate -> quantizer; at its output:
        # point codes (decoder table read one cycle ahead) -> masked write of the code memory
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
            m.d.comb += fm_ra.addr.eq(piece["src_group"] * MP + q1_p)
        m.d.sync += [dl_valid[0].eq(q1_valid), dl_piece[0].eq(pmem_r.data), dl_p[0].eq(q1_p)]
        pc0 = _fields(dl_piece[0], layouts["pmem"])
        rot = Signal(max(1, lanes_log2))
        m.d.comb += rot.eq(pc0["src_lane"] - pc0["dst_lane"])
        rotated = _rotate(m, fm_ra.data, rot, L, fb)
        m.d.comb += [qu.in_valid.eq(dl_valid[0]), qu.in_group.eq(pc0["dst_group"]), qu.in_data.eq(rotated)]
        for i in range(qlat):
            m.d.sync += [dl_valid[i + 1].eq(dl_valid[i]), dl_piece[i + 1].eq(dl_piece[i]), dl_p[i + 1].eq(dl_p[i])]
        pc_pre = _fields(dl_piece[qlat - 1], layouts["pmem"])
        m.d.comb += pcode_r.addr.eq(pc_pre["dst_group"])
        pcq = _fields(dl_piece[qlat], layouts["pmem"])
        codes = []
        for i in range(L):
            pcl = pcode_r.data[i * pc_bits:(i + 1) * pc_bits]
            idx = _sig(m, qu.out_code[i], f"q_idx{i}", unsigned(dp.act_bits))
            codes.append(Array([pcl[j * cb:(j + 1) * cb] for j in range(K)])[idx])
        lane_ids = [Const(i, bits_for(L)) for i in range(L)]
        with m.If(dl_valid[qlat]):
            m.d.comb += [code_w.en.eq(Cat(*((lane_ids[i] >= pcq["dst_lane"])
                                           & (lane_ids[i] < pcq["dst_lane"] + pcq["count"]) for i in range(L)))),
                         code_w.addr.eq(pcq["dst_group"] * MP + dl_p[qlat]), code_w.data.eq(Cat(*codes))]

        # --- conv beats: issue reads at t, the engine takes the beat at t+1 -----------------------------------------
        kernel1 = ins["kernel1"]
        offs = [(t // 3 - 1, t % 3 - 1) for t in range(TAPS)]
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
        in_code = [code_r[t].data[lane * cb:(lane + 1) * cb] for lane in range(L) for t in range(TAPS)]
        opa = _fields(opar_ra.data, opar_layout)
        m.d.comb += [eng.in_valid.eq(b_valid), eng.in_first.eq(b_first), eng.in_last.eq(b_last),
                     eng.in_group.eq(b_group), eng.in_mask.eq(b_mask), eng.in_code.eq(Cat(*in_code)),
                     eng.in_weight.eq(wmem_r.data), eng.in_sigma.eq(sig_r.data[:L * sb]),
                     eng.in_mu.eq(sig_r.data[L * sb:]), eng.in_bias.eq(opa["bias"])]

        # --- post: stage A reads the output channel's parameters and the residual; the post unit (contract 2's
        # requantization, ReLU, saturation, residual add) follows; its output is written and fed to the statistics
        # unit (the next steps' statistics, no extra pass) and the trace ------------------------------------------
        m.d.sync += pa_valid.eq(eng.out_valid)
        with m.If(eng.out_valid):
            m.d.comb += [opar_rb.addr.eq(po), fm_rb.addr.eq((ins["res_group"] + (po >> lanes_log2)) * MP + pp)]
            m.d.sync += [pa_acc.eq(eng.out_acc), pa_o.eq(po)]
            with m.If(po + 1 == O_out):
                m.d.sync += [po.eq(0), pp.eq(pp + 1)]
            with m.Else():
                m.d.sync += po.eq(po + 1)
        opb = _fields(opar_rb.data, opar_layout)
        res_lane = pa_o[:lanes_log2] if L > 1 else Const(0, 1)
        if self._fault == "residual_lane":
            res_lane = res_lane + 1
        res_v = Array([fm_rb.data[i * fb:(i + 1) * fb].as_signed() for i in range(L)])[res_lane]
        m.d.comb += [pu.in_valid.eq(pa_valid), pu.in_relu.eq(ins["relu"]), pu.in_add.eq(ins["residual"]),
                     pu.in_acc[0].eq(pa_acc), pu.in_mult[0].eq(opb["mult"]), pu.in_shift[0].eq(opb["sh"]),
                     pu.in_skip[0].eq(res_v)]
        y = pu.out_y[0]
        with m.If(pu.out_valid):
            lane_sel = (1 << wo[:lanes_log2]) if L > 1 else 1
            m.d.comb += [fm_w.en.eq(lane_sel), fm_w.addr.eq((ins["out_group"] + (wo >> lanes_log2)) * MP + wpx),
                         fm_w.data.eq(Cat(*([y] * L))),
                         stu.in_valid.eq(1), stu.in_group.eq(wo), stu.in_data.eq(y),
                         stu.in_last.eq((wo + 1 == O_out) & (wpx + 1 == npix)), stu.cfg_channels.eq(O_out),
                         stu.cfg_pixels.eq(npix), stu.cfg_relu.eq(0),
                         self.trace_valid.eq(1), self.trace_data.eq(y)]
            m.d.sync += outs_left.eq(outs_left - 1)
            with m.If(wo + 1 == O_out):
                m.d.sync += [wo.eq(0), wpx.eq(wpx + 1)]
            with m.Else():
                m.d.sync += wo.eq(wo + 1)
        return m
