"""cocotb testbench of the generated conv engine ``dfsq_engine`` (contract 4), run by :mod:`sim.verify`.

Layout of cocotb's matrix_multiplier example:

* :class:`EngineDriver` loads a layer's point table, then streams its beats (every port value precomputed and
  packed by :mod:`sim.stimulus`; a port is written only when its value changes, so with ``lanes = channels`` a
  beat is one or two assignments);
* an input :class:`~sim.tb_common.StreamMonitor` counts accepted output transactions (beats with ``in_last``),
  an output monitor collects ``out_acc`` of every ``out_valid`` cycle;
* the transaction-level model is the golden model (:func:`golden.layer.accumulate`), evaluated in batch before
  the simulation: its value of transaction k is ``expected[k]`` of the stimulus file;
* :class:`~sim.tb_common.InOrderChecker` compares output k with model transaction k.

Inputs: ``$DFSQ_SIM_STIMULUS`` (stimulus .npz). Output: ``$DFSQ_SIM_RESULT`` (observed values, cycles, wall time
per layer). The test fails on any mismatch, a missing output, or a timeout.
"""
from __future__ import annotations

import logging
import os

import cocotb
import numpy as np
from cocotb.triggers import FallingEdge, ReadOnly

from sim.stimulus import ENGINE_FORMAT, RESULT_ENV, STIMULUS_ENV, load_stimulus, unpack_ints
from sim.tb_common import (InOrderChecker, cycles_now, StreamMonitor, Stopwatch, drive_beats, fmt_value, reset,
                           start_clock, write_result)

log = logging.getLogger("cocotb.dfsq_engine")
STALL_LIMIT = 10_000   # cycles of in_ready low (out_ready is held high, so the engine never has a reason to stall)


class EngineDriver:
    """Drives the table-write and input-beat ports of ``dfsq_engine``."""

    def __init__(self, dut, groups: int):
        self.dut = dut
        self.groups = groups
        self.clk = dut.clk
        if hasattr(dut, "tbl_we"):   # absent on the engine without point tables (codes in)
            dut.tbl_we.value = 0
        dut.in_valid.value = 0
        dut.out_ready.value = 1

    async def load_table(self, chans, idxs, codes) -> None:
        """One write per cycle: table[chan][idx] = code (nothing to do without writes)."""
        dut = self.dut
        if not len(chans):
            return
        await drive_beats(self.clk, dut.tbl_we, (dut.tbl_chan, dut.tbl_idx, dut.tbl_code), (chans, idxs, codes))

    async def stream(self, layer: dict) -> None:
        """All beats of one layer, in schedule order (sample, output channel, pixel, group): the layer's own
        ``groups`` beats per output (ceil(C / lanes); a layer narrower than the engine takes fewer)."""
        dut = self.dut
        G = int(layer["groups"]) if "groups" in layer else self.groups
        codes_in = "pix_code" in layer                   # the engine without point tables: codes per tap
        pix_idx = unpack_ints(layer["pix_code" if codes_in else "pix_idx"])   # index pixel * G + g
        pix_mask = [int(v) for v in layer["pix_mask"]]
        weight = unpack_ints(layer["weight"])            # index o * G + g
        sigma = unpack_ints(layer["sigma"])              # index n * G + g
        split = "start" in layer                         # split de-normalization: start values, no mu / bias
        if split:
            shift = unpack_ints(layer["shift"]) if "shift" in layer else None
            start = [[[int(v) for v in cl] for cl in row] for row in layer["start"]]   # [n][o][class]
            pix_class = [int(v) for v in layer["pix_class"]]
        else:
            mu = unpack_ints(layer["mu"])
            bias = [[int(v) for v in row] for row in layer["bias"]]
        pix_n = [int(v) for v in layer["pixels"][:, 0]]
        out_pix = [int(v) for v in layer["out_pix"]]
        out_o = [int(v) for v in layer["out_o"]]
        p_idx = dut.in_code if codes_in else dut.in_idx
        p_mask, p_weight, p_sigma = dut.in_mask, dut.in_weight, dut.in_sigma
        if split:
            p_start = dut.in_start
            p_shift = dut.in_shift if shift is not None else None
        else:
            p_mu, p_bias = dut.in_mu, dut.in_bias
        p_first, p_last, p_group, in_ready = dut.in_first, dut.in_last, dut.in_group, dut.in_ready
        fe, ro = FallingEdge(self.clk), ReadOnly()
        cur = {}  # port -> value presented now

        def put(port, key, value):
            if cur.get(key) != value:
                port.value = value
                cur[key] = value

        total = len(out_pix) * G
        beat = stalled = 0
        presented = -1
        while beat < total:
            await fe
            if presented != beat:
                m, g = divmod(beat, G)
                p, o = out_pix[m], out_o[m]
                n = pix_n[p]
                put(p_idx, "idx", pix_idx[p * G + g])
                put(p_mask, "mask", pix_mask[p])
                put(p_weight, "w", weight[o * G + g])
                put(p_sigma, "s", sigma[n * G + g])
                if split:
                    if p_shift is not None:
                        put(p_shift, "d", shift[n * G + g])
                    put(p_start, "b", start[n][o][pix_class[p]])
                else:
                    put(p_mu, "mu", mu[n * G + g])
                    put(p_bias, "b", bias[n][o])
                put(p_group, "g", g)
                put(p_first, "f", 1 if g == 0 else 0)
                put(p_last, "l", 1 if g == G - 1 else 0)
                put(dut.in_valid, "v", 1)
                presented = beat
            await ro
            if in_ready.value == 1:
                beat += 1
                stalled = 0
            else:
                stalled += 1
                assert stalled < STALL_LIMIT, f"in_ready stayed low for {STALL_LIMIT} cycles (beat {beat})"
        await fe
        dut.in_valid.value = 0


@cocotb.test()
async def engine_matches_golden(dut):
    """Every output of every stimulus layer equals the golden model's accumulator, bit for bit, in order."""
    stim = load_stimulus(os.environ[STIMULUS_ENV], ENGINE_FORMAT)
    result_path = os.environ[RESULT_ENV]
    meta = stim.meta
    groups = int(meta["groups"])
    latency = meta.get("latency")
    acc_bits = int(meta["spec"]["acc_bits"])
    layer_meta = meta["layer_meta"]

    # transaction-level model: the golden accumulators of every output transaction, in order
    expected = np.concatenate([lay["expected"] for lay in stim.layers]) if stim.layers else np.zeros(0, np.int64)
    bounds = np.cumsum([0] + [len(lay["expected"]) for lay in stim.layers])

    def describe(k: int) -> str:
        j = int(np.searchsorted(bounds, k, side="right") - 1)
        lay = stim.layers[j]
        kk = k - bounds[j]
        n, y, x = (int(v) for v in lay["pixels"][lay["out_pix"][kk]])
        return (f"(layer {layer_meta[j]['index']} {layer_meta[j]['name']}, sample {n}, output channel "
                f"{int(lay['out_o'][kk])}, y {y}, x {x})")

    checker = InOrderChecker(expected, describe, log)
    checker_bits = acc_bits
    accepted = [0]

    def on_input(_):
        accepted[0] += 1

    def on_output(value):
        if len(checker.actual) >= accepted[0]:
            log.error("output #%d appeared before its input transaction was accepted", len(checker.actual))
            checker.mismatches += 1
        checker.observe(value)

    start_clock(dut)
    driver = EngineDriver(dut, groups)
    await reset(dut)
    if groups == 1:   # every beat is a last beat
        in_mon = StreamMonitor(dut.clk, dut.in_valid, on_input, ready=dut.in_ready)
    else:             # count only beats with in_last

        def on_beat(last):
            if last:
                on_input(None)

        in_mon = StreamMonitor(dut.clk, dut.in_valid, on_beat, ready=dut.in_ready, data=dut.in_last, signed=False)
    in_mon.start()
    out_mon = StreamMonitor(dut.clk, dut.out_valid, on_output, ready=dut.out_ready, data=dut.out_acc).start()

    wall = Stopwatch()
    per_layer = []
    drain_limit = (latency or 0) + 64 * groups + 64
    done = 0
    for j, lay in enumerate(stim.layers):
        t_layer = wall()
        c0 = cycles_now()
        await driver.load_table(lay["table_chan"].tolist(), lay["table_idx"].tolist(), lay["table_code"].tolist())
        c1, t1 = cycles_now(), wall()
        cpu0 = wall.cpu()
        await driver.stream(lay)
        cpu_stream = wall.cpu() - cpu0
        done += len(lay["expected"])
        # drain: the table may only be rewritten when no beat is in flight
        fe = FallingEdge(dut.clk)
        waited = 0
        while len(checker.actual) < done and waited < drain_limit:
            await fe
            waited += 1
        c2 = cycles_now()
        per_layer.append((c2 - c0, c1 - c0, wall() - t_layer, wall() - t1, cpu_stream))
        log.info("layer %s: %d outputs, %d cycles (%d table), %.2f s", layer_meta[j]["index"],
                 len(lay["expected"]), c2 - c0, c1 - c0, wall() - t_layer)
    # a few more cycles: any extra output would show up as a mismatch
    fe = FallingEdge(dut.clk)
    for _ in range(4):
        await fe
    in_mon.stop()
    out_mon.stop()
    total_wall = wall()
    actual = np.array(checker.actual, dtype=np.int64)
    missing = max(0, len(expected) - len(actual))
    write_result(result_path, actual=actual, received=len(actual), expected_count=len(expected),
                 mismatches=checker.mismatches + missing,
                 first_mismatch=-1 if checker.first_mismatch is None else checker.first_mismatch,
                 layer_cycles=np.array([p[0] for p in per_layer], np.int64),
                 layer_table_cycles=np.array([p[1] for p in per_layer], np.int64),
                 layer_seconds=np.array([p[2] for p in per_layer]),
                 layer_stream_seconds=np.array([p[3] for p in per_layer]),
                 layer_stream_cpu_seconds=np.array([p[4] for p in per_layer]),
                 cycles=cycles_now(), wall_seconds=total_wall, cpu_seconds=wall.cpu())
    if missing:
        k = len(actual)
        log.error("%d outputs missing; the first is #%d %s (expected %s)", missing, k, describe(k),
                  fmt_value(expected[k], checker_bits))
    assert checker.mismatches == 0 and missing == 0, (
        f"{checker.mismatches} mismatches, {missing} missing outputs of {len(expected)}")
