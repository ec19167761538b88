"""Pieces shared by the cocotb testbenches (layout of cocotb's matrix_multiplier example).

* :class:`StreamMonitor` watches a valid(/ready) interface and hands every transfer to a callback;
* :class:`InOrderChecker` compares each observed output with the next expected one (the transaction-level model's
  value, precomputed in batch by the golden model) and records the first mismatches;
* :func:`start_clock` / :func:`reset` / :func:`write_result`.

Timing convention, identical under Icarus (event driven) and Verilator (cycle based, where a value read right
after ``RisingEdge`` is already the post-edge one): drivers write on the falling edge; drivers and monitors then
sample in ``ReadOnly`` of that falling-edge time step. Nothing changes between that moment and the next rising
edge, so a sampled ``valid and ready`` is exactly the handshake of that edge.
"""
from __future__ import annotations

import time

import numpy as np
from cocotb.clock import Clock
from cocotb.simtime import get_sim_time
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

from golden.files import atomic_output

CLOCK_PERIOD_NS = 10


def cycles_now() -> int:
    """Clock cycles simulated so far."""
    return int(get_sim_time("ns") // CLOCK_PERIOD_NS)


def start_clock(dut):
    return Clock(dut.clk, CLOCK_PERIOD_NS, unit="ns").start()


async def reset(dut, cycles: int = 2) -> None:
    """Synchronous active-high reset for ``cycles`` rising edges; returns just after a falling edge."""
    dut.rst.value = 1
    for _ in range(cycles):
        await RisingEdge(dut.clk)
    await FallingEdge(dut.clk)
    dut.rst.value = 0


class StreamMonitor:
    """Calls ``callback(data)`` for every clock edge with ``valid`` (and ``ready``, when given) high.

    ``data`` is the value of ``data_signal`` read as a signed integer (or None when no data signal is given), so
    the callback gets plain ints. Sampling as described in the module docstring.
    """

    def __init__(self, clk, valid, callback, ready=None, data=None, signed=True):
        self._clk, self._valid, self._ready, self._data = clk, valid, ready, data
        self._callback = callback
        self._signed = signed
        self.transfers = 0
        self._task = None

    def start(self):
        import cocotb

        if self._task is None:
            self._task = cocotb.start_soon(self._run())
        return self

    def stop(self):
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self):
        fe, ro = FallingEdge(self._clk), ReadOnly()
        valid, ready, data, cb = self._valid, self._ready, self._data, self._callback
        signed = self._signed
        one_bit = data is not None and len(data) == 1
        while True:
            await fe
            await ro
            if valid.value == 1 and (ready is None or ready.value == 1):
                self.transfers += 1
                if data is None:
                    cb(None)
                elif one_bit:
                    cb(int(data.value))
                else:
                    v = data.value
                    cb(v.to_signed() if signed else v.to_unsigned())


class InOrderChecker:
    """Compares observed values, in order, with ``expected`` (int64 array from the golden model).

    ``describe(k)`` returns a human location of output k (layer, sample, channel, pixel). Keeps every observed
    value (for the result file), counts mismatches and logs the first ``log_first`` of them.
    """

    def __init__(self, expected: np.ndarray, describe, log, log_first: int = 5):
        self.expected = [int(v) for v in np.asarray(expected, dtype=np.int64)]
        self.actual: list[int] = []
        self.mismatches = 0
        self.first_mismatch: int | None = None
        self._describe = describe
        self._log = log
        self._log_first = log_first

    def observe(self, value: int) -> None:
        k = len(self.actual)
        self.actual.append(value)
        if k >= len(self.expected):
            self.mismatches += 1
            if self.first_mismatch is None:
                self.first_mismatch = k
            self._log.error("unexpected extra output #%d: %d", k, value)
            return
        exp = self.expected[k]
        if value != exp:
            self.mismatches += 1
            if self.first_mismatch is None:
                self.first_mismatch = k
            if self.mismatches <= self._log_first:
                self._log.error("MISMATCH output #%d %s: expected %s, got %s", k, self._describe(k),
                                fmt_value(exp), fmt_value(value))

    @property
    def done(self) -> bool:
        return len(self.actual) >= len(self.expected)


async def drive_beats(clk, strobe, ports, columns) -> None:
    """Drive one beat per cycle, without back-pressure: at each falling edge of ``clk``, ``ports[i]`` takes
    ``columns[i][k]`` for beat ``k`` (a port is written only when its value changes: per-cycle Python is the
    simulation's cost), with ``strobe`` high from the first beat until the falling edge after the last."""
    fe = FallingEdge(clk)
    last = [None] * len(ports)
    await fe
    strobe.value = 1
    for k, beat in enumerate(zip(*columns)):
        if k:
            await fe
        for i, v in enumerate(beat):
            if v != last[i]:
                ports[i].value = v
                last[i] = v
    await fe
    strobe.value = 0


async def drive_handshake(clk, valid, ready, ports, columns, stall_limit: int = 10_000) -> None:
    """Drive beats with valid/ready: beat ``k`` (``ports[i]`` takes ``columns[i][k]``, written only when it changes)
    is presented at a falling edge of ``clk`` with ``valid`` high and held until ``ready`` is seen high (sampled in
    the ReadOnly phase), then the next beat follows; ``valid`` drops after the last. Fails when ``ready`` stays
    low for ``stall_limit`` cycles."""
    cur = [None] * len(ports)
    fe, ro = FallingEdge(clk), ReadOnly()
    total = len(columns[0]) if columns else 0
    beat = stalled = 0
    presented = -1
    while beat < total:
        await fe
        if presented != beat:
            for i, port in enumerate(ports):
                v = columns[i][beat]
                if cur[i] != v:
                    port.value = v
                    cur[i] = v
            valid.value = 1
            presented = beat
        await ro
        if ready.value == 1:
            beat += 1
            stalled = 0
        else:
            stalled += 1
            assert stalled < stall_limit, f"{ready._name} stayed low for {stall_limit} cycles (beat {beat})"
    await fe
    valid.value = 0


def fmt_value(v: int, bits: int = 64) -> str:
    """``-5 (0x...fb)``: decimal, and hex of the two's complement in ``bits`` bits."""
    v = int(v)
    return f"{v} (0x{v & ((1 << bits) - 1):x})"


def write_result(path, **arrays) -> None:
    """Atomically write the testbench's result .npz (observed outputs, cycles, wall time, ...)."""
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})


def write_stream_result(path, *, actual, received: int, expected_count: int, mismatches: int, first_mismatch,
                        per_layer, wall: "Stopwatch") -> None:
    """:func:`write_result` of a streaming unit's testbench (no table phase): ``per_layer`` holds (cycles,
    seconds) per layer; ``first_mismatch`` None when there was none."""
    write_result(path, actual=actual, received=received, expected_count=expected_count, mismatches=mismatches,
                 first_mismatch=-1 if first_mismatch is None else first_mismatch,
                 layer_cycles=np.array([p[0] for p in per_layer], np.int64),
                 layer_table_cycles=np.zeros(len(per_layer), np.int64),
                 layer_seconds=np.array([p[1] for p in per_layer]),
                 layer_stream_seconds=np.array([p[1] for p in per_layer]),
                 cycles=cycles_now(), wall_seconds=wall(), cpu_seconds=wall.cpu())


class Stopwatch:
    """Wall time (and, with :meth:`cpu`, CPU time of the simulator process: the simulator and cocotb share it, so
    this is the load-independent cost on a busy machine) since creation."""

    def __init__(self):
        self.t0 = time.perf_counter()
        self.c0 = time.process_time()

    def __call__(self) -> float:
        return time.perf_counter() - self.t0

    def cpu(self) -> float:
        return time.process_time() - self.c0
