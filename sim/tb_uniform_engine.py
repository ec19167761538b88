"""cocotb testbench of the generated uniform baseline engine ``uniform_engine``, run by :mod:`sim.uniform`.

Layout of cocotb's matrix_multiplier example (as ``sim/tb_engine.py``):

* :class:`UniformDriver` streams a layer's beats (packed by :func:`sim.uniform.layer_stimulus`; a port is written
  only when its value changes) and honours ``in_ready``;
* an input :class:`~sim.tb_common.StreamMonitor` counts accepted output transactions (beats with ``in_last``), an
  output monitor collects ``out_acc`` of every ``out_valid`` cycle;
* the transaction-level model is the golden model (:func:`golden.uniform_layer.accumulate`), evaluated in batch
  before the simulation: its value of transaction k is ``expected[k]`` of the stimulus file;
* :class:`~sim.tb_common.InOrderChecker` compares output k with model transaction k.

Inputs: ``$DFSQ_SIM_STIMULUS``. Output: ``$DFSQ_SIM_RESULT``. The test fails on any mismatch or missing output.
"""
from __future__ import annotations

import logging
import os

import cocotb
import numpy as np
from cocotb.triggers import FallingEdge

from sim.stimulus import RESULT_ENV, STIMULUS_ENV, UNIFORM_FORMAT, load_stimulus, unpack_ints
from sim.tb_common import (InOrderChecker, StreamMonitor, Stopwatch, cycles_now, drive_handshake, reset, start_clock,
                           write_result)

log = logging.getLogger("cocotb.uniform_engine")
STALL_LIMIT = 10_000


class UniformDriver:
    """Drives the input-beat ports of ``uniform_engine``."""

    def __init__(self, dut):
        self.dut = dut
        dut.in_valid.value = 0
        dut.out_ready.value = 1

    async def stream(self, layer: dict) -> None:
        dut = self.dut
        cols = (unpack_ints(layer["act"]), unpack_ints(layer["weight"]), [int(v) for v in layer["mask"]],
                [int(v) for v in layer["bias"]], [int(v) for v in layer["first"]], [int(v) for v in layer["last"]])
        ports = (dut.in_act, dut.in_weight, dut.in_mask, dut.in_bias, dut.in_first, dut.in_last)
        await drive_handshake(dut.clk, dut.in_valid, dut.in_ready, ports, cols, STALL_LIMIT)


@cocotb.test()
async def uniform_engine_matches_golden(dut):
    """Every output of every stimulus layer equals the golden model's accumulator, bit for bit, in order."""
    stim = load_stimulus(os.environ[STIMULUS_ENV], UNIFORM_FORMAT)
    acc_bits = int(stim.meta["spec"]["acc_bits"])
    layer_meta = stim.meta["layer_meta"]
    expected = np.concatenate([lay["expected"] for lay in stim.layers])
    bounds = np.cumsum([0] + [len(lay["expected"]) for lay in stim.layers])

    def describe(k: int) -> str:
        j = int(np.searchsorted(bounds, k, side="right") - 1)
        n, o, y, x = (int(v) for v in stim.layers[j]["keys"][k - bounds[j]])
        return f"(layer {layer_meta[j]['index']} {layer_meta[j]['name']}, sample {n}, output channel {o}, y {y}, x {x})"

    checker = InOrderChecker(expected, describe, log)
    accepted = [0]

    def on_beat(last):
        if last:
            accepted[0] += 1

    def on_output(value):
        if len(checker.actual) >= accepted[0]:
            log.error("output #%d appeared before its input transaction was accepted", len(checker.actual))
            checker.mismatches += 1
        checker.observe(value)

    start_clock(dut)
    driver = UniformDriver(dut)
    await reset(dut)
    in_mon = StreamMonitor(dut.clk, dut.in_valid, on_beat, ready=dut.in_ready, data=dut.in_last, signed=False).start()
    out_mon = StreamMonitor(dut.clk, dut.out_valid, on_output, ready=dut.out_ready, data=dut.out_acc).start()
    wall = Stopwatch()
    for lay in stim.layers:
        await driver.stream(lay)
    fe = FallingEdge(dut.clk)
    for _ in range(int(stim.meta.get("latency", 6)) + 8):   # drain, and a few more cycles for any extra output
        await fe
    in_mon.stop()
    out_mon.stop()
    actual = np.array(checker.actual, dtype=np.int64)
    missing = max(0, len(expected) - len(actual))
    write_result(os.environ[RESULT_ENV], actual=actual, received=len(actual), expected_count=len(expected),
                 mismatches=checker.mismatches + missing,
                 first_mismatch=(checker.first_mismatch if checker.first_mismatch is not None
                                 else (len(actual) if missing else -1)),
                 cycles=cycles_now(), wall_seconds=wall(), acc_bits=acc_bits)
    assert checker.mismatches == 0 and missing == 0, (
        f"{checker.mismatches} mismatches, {missing} missing outputs of {len(expected)}")
