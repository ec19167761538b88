"""Amaranth-simulator drivers for the MAC and the engine, with a latency-queue check against a Python model.

Each driver runs one async testbench (``Simulator.add_testbench``) that drives a beat per cycle (with random
gaps and, for the engine, random ``out_ready`` back-pressure), pushes the model's expected value on a queue when
a beat is taken, and pops and compares whenever an output is taken. It returns a :class:`Run` with the
mismatches (empty when the hardware agrees) and the observed latencies.
"""
from __future__ import annotations

import collections
import random
from dataclasses import dataclass, field

from amaranth.sim import Simulator

from .stream import engine_beats, pack, table_writes, uniform_beats

__all__ = ["Run", "run_mac", "run_engine", "run_uniform_engine", "run_stream", "run_accelerator"]


@dataclass
class Run:
    """Outcome of a simulation: outputs in order, mismatches, latencies (cycles), cycles simulated."""

    outputs: list = field(default_factory=list)
    mismatches: list = field(default_factory=list)
    latencies: set = field(default_factory=set)
    cycles: int = 0
    missing: int = 0

    @property
    def ok(self) -> bool:
        return not self.mismatches and not self.missing


def _describe(key, got, want):
    return f"{key}: got {got} ({got & 0xFFFFFFFFFFFFFFFF:#x}), want {want} ({want & 0xFFFFFFFFFFFFFFFF:#x})"


def run_mac(mac, beats, expected, *, valid_prob=1.0, seed=0, max_cycles=None) -> Run:
    """Drive ``beats`` = [(first, weight, code)] into a :class:`hw.units.mac.ShiftAddMAC`-like ``mac``.

    ``expected[i]`` is the model's ``out_acc`` after beat i. ``mac`` needs ports in_valid, in_first, in_weight,
    in_code (or in_a/in_b for the baselines: pass beats as (first, a, b)), out_valid, out_acc and ``latency``.
    """
    run = Run()
    rng = random.Random(seed)
    sim = Simulator(mac)
    sim.add_clock(1e-8)
    operand_b = mac.in_code.as_value() if hasattr(mac, "in_code") else mac.in_b
    operand_a = mac.in_weight if hasattr(mac, "in_weight") else mac.in_a
    limit = max_cycles or 4 * len(beats) + 16

    async def bench(ctx):
        queue = collections.deque()
        i = cycle = 0
        while (i < len(beats) or queue) and cycle < limit:
            offer = i < len(beats) and rng.random() < valid_prob
            ctx.set(mac.in_valid, offer)
            if offer:
                first, a, b = beats[i]
                ctx.set(mac.in_first, first)
                ctx.set(operand_a, a)
                ctx.set(operand_b, b)
                queue.append((i, cycle))
                i += 1
            await ctx.tick()
            cycle += 1
            if ctx.get(mac.out_valid):
                if not queue:
                    run.mismatches.append(f"cycle {cycle}: out_valid without a beat in flight")
                    continue
                k, start = queue.popleft()
                got = ctx.get(mac.out_acc)
                run.outputs.append(got)
                run.latencies.add(cycle - start)
                if got != int(expected[k]):
                    run.mismatches.append(_describe(f"beat {k} {beats[k]}", got, int(expected[k])))
        run.cycles = cycle
        run.missing = len(queue) + (len(beats) - i)

    sim.add_testbench(bench)
    sim.run()
    return run


async def _stream(ctx, engine, beats, expected, run: Run, rng, valid_prob, ready_prob, limit, set_beat) -> None:
    """Offer ``beats`` = [(key, beat)] with random gaps, take results with random back-pressure, check each against
    ``expected[key]`` through an in-order queue, and record latencies (first cycle a result is visible after the
    handshake of its last beat). ``set_beat(ctx, beat)`` drives the engine-specific ports of a beat."""
    queue = collections.deque()
    i = cycle = 0
    while (i < len(beats) or queue) and cycle < limit:
        ready = rng.random() < ready_prob
        ctx.set(engine.out_ready, ready)
        if ctx.get(engine.out_valid) and ready:
            key, start = queue.popleft()
            got = ctx.get(engine.out_acc)
            run.outputs.append((key, got))
            want = int(expected[key])
            if got != want:
                run.mismatches.append(_describe(f"output (n, o, h, w) = {key}", got, want))
        offer = i < len(beats) and rng.random() < valid_prob
        ctx.set(engine.in_valid, offer)
        if offer:
            key, b = beats[i]
            ctx.set(engine.in_first, b.first)
            ctx.set(engine.in_last, b.last)
            ctx.set(engine.in_mask, b.mask)
            set_beat(ctx, b)
            if ctx.get(engine.in_ready):
                i += 1
                if b.last:
                    queue.append((key, cycle))
        await ctx.tick()
        cycle += 1
        if ctx.get(engine.out_valid) and queue and queue[0][1] is not None:
            key, start = queue[0]
            run.latencies.add(cycle - start)
            queue[0] = (key, None)
    run.cycles = cycle
    run.missing = len(queue) + (len(beats) - i)


def run_engine(engine, ops, spec, outputs, expected, *, valid_prob=1.0, ready_prob=1.0, seed=0,
               max_cycles=None) -> Run:
    """Load the point table of ``ops``, stream the beats of ``outputs`` = [(n, o, h, w)] and check each result.

    ``expected`` maps (n, o, h, w) to the model's accumulator (e.g. ``golden.layer.accumulate(ops, spec)``).
    Latencies are measured from the handshake of a last beat to the first cycle its result is visible; they
    equal ``engine.latency`` whenever ``ready_prob`` is 1.
    """
    run = Run()
    rng = random.Random(seed)
    sim = Simulator(engine)
    sim.add_clock(1e-8)
    beats = [(key, beat) for key, group in engine_beats(ops, spec, engine.lanes, outputs) for beat in group]
    limit = max_cycles or 8 * len(beats) + ops.point_codes.size + 64

    tables = getattr(engine, "tables", True)

    def set_beat(ctx, b):
        ctx.set(engine.in_group, b.group)
        if tables:
            ctx.set(engine.in_idx.as_value(), pack(b.idx, spec.act_bits))
        else:
            ctx.set(engine.in_code.as_value(), pack(b.code, spec.code_bits))
        ctx.set(engine.in_weight.as_value(), pack(b.weight, spec.w_bits))
        if spec.split:
            ctx.set(engine.in_sigma.as_value(), pack(b.sigma, spec.sigma_bits))
            if spec.shift_bits:
                ctx.set(engine.in_shift.as_value(), pack(b.shift, spec.shift_bits))
            ctx.set(engine.in_start, b.start)
        else:
            ctx.set(engine.in_sigma.as_value(), pack(b.sigma, spec.scale_bits))
            ctx.set(engine.in_mu.as_value(), pack(b.mu, spec.scale_bits))
            ctx.set(engine.in_bias, b.bias)

    async def bench(ctx):
        if tables:
            for chan, idx, code in table_writes(ops.point_codes):
                ctx.set(engine.tbl_we, 1)
                ctx.set(engine.tbl_chan, chan)
                ctx.set(engine.tbl_idx, idx)
                port = engine.tbl_code  # a code layout (universal set) or a signed P (uniform point set)
                ctx.set(port.as_value() if hasattr(port, "as_value") else port.as_unsigned(), code)
                await ctx.tick()
            ctx.set(engine.tbl_we, 0)
        await _stream(ctx, engine, beats, expected, run, rng, valid_prob, ready_prob, limit, set_beat)

    sim.add_testbench(bench)
    sim.run()
    return run


def run_uniform_engine(engine, ops, outputs, expected, *, valid_prob=1.0, ready_prob=1.0, seed=0, max_cycles=None,
                       beats=None) -> Run:
    """Stream the beats of ``outputs`` = [(n, o, h, w)] of :class:`golden.uniform_layer.UniformOperands` ``ops``
    into a :class:`hw.units.uniform_engine.UniformEngine` and check each result against ``expected[(n, o, h, w)]``
    (e.g. ``golden.uniform_layer.accumulate(ops, spec)``), with the same latency queue as :func:`run_engine`.
    ``beats`` replaces the beats of :func:`hw.stream.uniform_beats` (a list of (key, beat)), e.g. with junk in
    masked taps.
    """
    run = Run()
    rng = random.Random(seed)
    spec = engine.spec
    sim = Simulator(engine)
    sim.add_clock(1e-8)
    if beats is None:
        beats = [(key, beat) for key, group in uniform_beats(ops, engine.lanes, outputs) for beat in group]
    limit = max_cycles or 8 * len(beats) + 64

    def set_beat(ctx, b):
        ctx.set(engine.in_act.as_value(), pack(b.act, spec.a_bits))
        ctx.set(engine.in_weight.as_value(), pack(b.weight, spec.w_bits))
        ctx.set(engine.in_bias, b.bias)

    async def bench(ctx):
        await _stream(ctx, engine, beats, expected, run, rng, valid_prob, ready_prob, limit, set_beat)

    sim.add_testbench(bench)
    sim.run()
    return run


def _port_value(port):
    """A port as a plain Amaranth value (layouts and arrays as their raw bits)."""
    return port.as_value() if hasattr(port, "as_value") else port


def run_stream(dut, beats, read_out, *, writes=(), valid_prob=1.0, ready_prob=1.0, seed=0,
               max_cycles=None) -> Run:
    """A valid/ready stream through any unit with ``in_valid``/``in_ready``/``out_valid``/``out_ready``.

    ``writes``: lists of (port, int) applied one per cycle before the stream (table or threshold loading; each
    list's ports are set, then one clock edge, then its ports are cleared to 0); ``beats``: lists of (port, int)
    offered in order with random gaps (``valid_prob``); every output taken under random back-pressure
    (``ready_prob``) is ``read_out(ctx)`` appended to ``run.outputs``; ``run.latencies`` holds, for the first
    output after each accepted beat, the cycles since that beat's handshake when ``ready_prob`` is 1 (units with
    one output per beat). Values are the ports' raw bits (pack / unpack with :func:`hw.stream.pack`)."""
    run = Run()
    rng = random.Random(seed)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    limit = max_cycles or 50 * len(beats) + len(writes) + 2000

    async def bench(ctx):
        for w in writes:
            for port, value in w:
                ctx.set(_port_value(port), value)
            await ctx.tick()
            for port, _ in w:
                ctx.set(_port_value(port), 0)
        i = cycle = 0
        taken = collections.deque()
        idle = 0
        while cycle < limit:
            ready = rng.random() < ready_prob
            ctx.set(dut.out_ready, ready)
            if ctx.get(dut.out_valid) and ready:
                run.outputs.append(read_out(ctx))
                if taken:
                    run.latencies.add(cycle - taken.popleft())
                idle = 0
            offer = i < len(beats) and rng.random() < valid_prob
            ctx.set(dut.in_valid, offer)
            if offer:
                for port, value in beats[i]:
                    ctx.set(_port_value(port), value)
                if ctx.get(dut.in_ready):
                    taken.append(cycle)
                    i += 1
            await ctx.tick()
            cycle += 1
            if i == len(beats):
                idle += 1
                if idle > 400:   # nothing came out for a while after the last beat: done
                    break
        run.cycles = cycle
        run.missing = len(beats) - i

    sim.add_testbench(bench)
    sim.run()
    return run


def run_accelerator(accel, records, max_cycles: int = 1_000_000) -> Run:
    """Load ``records`` ([(memory number, first address, uint8 rows)]) through the host port of a
    :class:`hw.units.accelerator.Accelerator`, pulse ``start`` and run until ``done``: ``outputs`` holds every traced
    value in order, ``cycles`` the cycles from start to done (``missing`` = 1 when it never finished), and
    ``latencies`` the final status. The Amaranth simulator: small configurations only (sim.network runs the real
    ones under Verilator)."""
    run = Run()
    sim = Simulator(accel)
    sim.add_clock(1e-8)

    async def bench(ctx):
        for mem, addr, rows in records:
            ctx.set(accel.host_mem, mem)
            for i, row in enumerate(rows):
                ctx.set(accel.host_we, 1)
                ctx.set(accel.host_addr, addr + i)
                ctx.set(accel.host_data, int.from_bytes(row.tobytes(), "little"))
                await ctx.tick()
        ctx.set(accel.host_we, 0)
        ctx.set(accel.start, 1)
        await ctx.tick()
        ctx.set(accel.start, 0)
        while run.cycles < max_cycles:
            if ctx.get(accel.trace_valid):
                run.outputs.append(ctx.get(accel.trace_data))
            if ctx.get(accel.done):
                run.latencies.add(ctx.get(accel.status))
                return
            await ctx.tick()
            run.cycles += 1
        run.missing = 1

    sim.add_testbench(bench)
    sim.run()
    return run
