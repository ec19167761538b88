"""cocotb testbench of the generated multiply-accumulate unit ``dfsq_mac`` (contract 4), run by :mod:`sim.verify`.

Layout of cocotb's matrix_multiplier example: :class:`MacDriver` streams (w', point code) beats of real layer
windows (one per cycle, ``in_first`` on the first tap of each output pixel); an output
:class:`~sim.tb_common.StreamMonitor` collects ``out_acc`` of every ``out_valid`` cycle; the transaction-level model
is the golden model's running sum ``cumsum(w' * P)`` per output (computed in batch by :mod:`sim.stimulus` from
:func:`golden.layer.operands`); :class:`~sim.tb_common.InOrderChecker` compares every beat's running sum.

Inputs: ``$DFSQ_SIM_STIMULUS``; output: ``$DFSQ_SIM_RESULT``. The test fails on any mismatch or missing output.
"""
from __future__ import annotations

import logging
import os

import cocotb
import numpy as np
from cocotb.triggers import FallingEdge

from sim.stimulus import MAC_FORMAT, RESULT_ENV, STIMULUS_ENV, load_stimulus
from sim.tb_common import (InOrderChecker, cycles_now, StreamMonitor, Stopwatch, drive_beats, reset, start_clock,
                           write_stream_result)

log = logging.getLogger("cocotb.dfsq_mac")


class MacDriver:
    """Drives ``in_valid``, ``in_first``, ``in_weight``, ``in_code``: one beat per cycle."""

    def __init__(self, dut):
        self.dut = dut
        dut.in_valid.value = 0

    async def stream(self, weights, codes, firsts) -> None:
        dut = self.dut
        await drive_beats(dut.clk, dut.in_valid, (dut.in_weight, dut.in_code, dut.in_first), (weights, codes, firsts))


@cocotb.test()
async def mac_matches_golden(dut):
    """Every running sum of every beat equals the golden model's, bit for bit, in order."""
    stim = load_stimulus(os.environ[STIMULUS_ENV], MAC_FORMAT)
    meta = stim.meta
    layer_meta = meta["layer_meta"]
    latency = int(meta.get("latency") or 0)
    expected = np.concatenate([lay["expected"] for lay in stim.layers])
    bounds = np.cumsum([0] + [len(lay["expected"]) for lay in stim.layers])

    def describe(k: int) -> str:
        j = int(np.searchsorted(bounds, k, side="right") - 1)
        lay = stim.layers[j]
        kk = k - bounds[j]
        m = int(lay["beat_output"][kk])
        n, o, y, x = (int(v) for v in lay["outputs"][m])
        return f"(layer {layer_meta[j]['index']} {layer_meta[j]['name']}, sample {n}, output channel {o}, y {y}, x {x})"

    checker = InOrderChecker(expected, describe, log)
    start_clock(dut)
    driver = MacDriver(dut)
    await reset(dut)
    out_mon = StreamMonitor(dut.clk, dut.out_valid, checker.observe, data=dut.out_acc).start()
    wall = Stopwatch()
    per_layer = []
    for j, lay in enumerate(stim.layers):
        t0, c0 = wall(), cycles_now()
        await driver.stream(lay["weight"].tolist(), lay["code"].tolist(), lay["first"].tolist())
        c1 = cycles_now()
        per_layer.append((c1 - c0, wall() - t0))
    fe = FallingEdge(dut.clk)
    for _ in range(latency + 4):
        await fe
    out_mon.stop()
    actual = np.array(checker.actual, dtype=np.int64)
    missing = max(0, len(expected) - len(actual))
    write_stream_result(os.environ[RESULT_ENV], actual=actual, received=len(actual), expected_count=len(expected),
                        mismatches=checker.mismatches + missing, first_mismatch=checker.first_mismatch,
                        per_layer=per_layer, wall=wall)
    assert checker.mismatches == 0 and missing == 0, (
        f"{checker.mismatches} mismatches, {missing} missing outputs of {len(expected)}")
