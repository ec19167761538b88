"""cocotb testbench of the generated mean unit ``dfsq_mean_unit`` (split de-normalization), run by :mod:`sim.verify`.

Layout of cocotb's matrix_multiplier example: :class:`MeanUnitDriver` streams, for every (sample, output channel) of
each stimulus layer, one beat per input channel (mu_m, the 9 weights w', ``in_first`` / ``in_last``, bias_int on the
last beat), honouring ``in_ready`` (the unit takes a beat, then spends 9 cycles on its products); two output
:class:`~sim.tb_common.StreamMonitor` s collect ``out_start`` and ``out_class`` of every ``out_valid & out_ready``
cycle; the transaction-level model is :func:`golden.mean_unit.starts` (16 start values per output channel, computed
in batch by :func:`sim.stimulus.mean_unit_layer_stimulus`); :class:`~sim.tb_common.InOrderChecker` s compare both,
in order.

Inputs: ``$DFSQ_SIM_STIMULUS``; output: ``$DFSQ_SIM_RESULT``. The test fails on any mismatch or missing output.
"""
from __future__ import annotations

import logging
import os

import cocotb
import numpy as np
from cocotb.triggers import FallingEdge

from golden.mean_unit import CLASSES
from sim.stimulus import MEAN_UNIT_FORMAT, RESULT_ENV, STIMULUS_ENV, load_stimulus, unpack_ints
from sim.tb_common import (InOrderChecker, StreamMonitor, Stopwatch, cycles_now, drive_handshake, reset, start_clock,
                           write_stream_result)

log = logging.getLogger("cocotb.dfsq_mean_unit")
STALL_LIMIT = 1_000


class MeanUnitDriver:
    """Drives ``in_valid``, ``in_first``, ``in_last``, ``in_mu``, ``in_weight``, ``in_bias`` with valid/ready."""

    def __init__(self, dut):
        self.dut = dut
        dut.in_valid.value = 0
        dut.out_ready.value = 1

    async def stream(self, layer: dict) -> None:
        """Every beat of one layer: (sample, output channel) pairs in order, C input channels each."""
        dut = self.dut
        mu = [[int(v) for v in row] for row in layer["mu"]]            # [n][c] (unsigned bit patterns)
        bias = [[int(v) for v in row] for row in layer["bias"]]        # [n][o]
        weight = unpack_ints(layer["weight"])                          # index out_index * C + c
        C = len(mu[0])
        cols = ([], [], [], [], [])                                    # mu, weight, first, last, bias per beat
        for (n, o), oi in zip(layer["pairs"].tolist(), layer["out_index"].tolist()):
            for c in range(C):
                for col, v in zip(cols, (mu[n][c], weight[oi * C + c], int(c == 0), int(c == C - 1), bias[n][o])):
                    col.append(v)
        ports = (dut.in_mu, dut.in_weight, dut.in_first, dut.in_last, dut.in_bias)
        await drive_handshake(dut.clk, dut.in_valid, dut.in_ready, ports, cols, STALL_LIMIT)


@cocotb.test()
async def mean_unit_matches_golden(dut):
    """Every start value (and its border class) of every output channel equals the golden model's, in order."""
    stim = load_stimulus(os.environ[STIMULUS_ENV], MEAN_UNIT_FORMAT)
    layer_meta = stim.meta["layer_meta"]
    expected = np.concatenate([lay["expected"] for lay in stim.layers]) if stim.layers else np.zeros(0, np.int64)
    classes = np.concatenate([lay["classes"] for lay in stim.layers]) if stim.layers else np.zeros(0, np.int64)
    bounds = np.cumsum([0] + [len(lay["expected"]) for lay in stim.layers])

    def describe(k: int) -> str:
        j = int(np.searchsorted(bounds, k, side="right") - 1)
        kk = int(k - bounds[j])
        n, o = (int(v) for v in stim.layers[j]["pairs"][kk // CLASSES])
        return (f"(layer {layer_meta[j]['index']} {layer_meta[j]['name']}, sample {n}, output channel {o}, "
                f"border class {kk % CLASSES})")

    checker = InOrderChecker(expected, describe, log)
    class_checker = InOrderChecker(classes, describe, log)
    start_clock(dut)
    driver = MeanUnitDriver(dut)
    await reset(dut)
    mon = StreamMonitor(dut.clk, dut.out_valid, checker.observe, ready=dut.out_ready, data=dut.out_start).start()
    cmon = StreamMonitor(dut.clk, dut.out_valid, class_checker.observe, ready=dut.out_ready, data=dut.out_class,
                         signed=False).start()
    wall = Stopwatch()
    per_layer = []
    done = 0
    fe = FallingEdge(dut.clk)
    for lay in stim.layers:
        t0, c0 = wall(), cycles_now()
        await driver.stream(lay)
        done += len(lay["expected"])
        waited = 0
        while len(checker.actual) < done and waited < 64:
            await fe
            waited += 1
        per_layer.append((cycles_now() - c0, wall() - t0))
    for _ in range(4):
        await fe
    mon.stop()
    cmon.stop()
    actual = np.array(checker.actual, dtype=np.int64)
    missing = max(0, len(expected) - len(actual))
    mismatches = checker.mismatches + class_checker.mismatches + missing
    first = checker.first_mismatch if checker.first_mismatch is not None else class_checker.first_mismatch
    write_stream_result(os.environ[RESULT_ENV], actual=actual, received=len(actual), expected_count=len(expected),
                        mismatches=mismatches, first_mismatch=first, per_layer=per_layer, wall=wall)
    assert mismatches == 0, f"{checker.mismatches} start and {class_checker.mismatches} class mismatches, " \
                            f"{missing} missing outputs of {len(expected)}"
