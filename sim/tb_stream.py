"""cocotb testbench of the contract-2 units (``dfsq_stats_unit``, ``dfsq_threshold_unit``, ``dfsq_quantizer``,
``dfsq_post_unit``), run by :mod:`sim.verify_int`.

Layout of cocotb's matrix_multiplier example, for any unit with a valid/ready input and output stream:

* :class:`StreamDriver` loads a layer's tables (point codes or thresholds: one write per cycle with the strobe
  high), then offers its beats with valid/ready (a port is written only when its value changes);
* :class:`OutputMonitor` samples every output port at each ``out_valid & out_ready`` and forms one output word
  (the ports' bits concatenated in the stimulus' order);
* the transaction-level model is the golden model, evaluated in batch by :mod:`sim.verify_int` before the
  simulation: output k's word is ``expected[k]`` of the stimulus file;
* :class:`WordChecker` compares them in order and names the first mismatches by layer, sample, channel and pixel
  (or threshold), in hex and decimal.

Inputs: ``$DFSQ_SIM_STIMULUS``; output: ``$DFSQ_SIM_RESULT`` (observed words, cycles per layer). The test fails on
any mismatch or missing output.
"""
from __future__ import annotations

import logging
import os

import cocotb
import numpy as np
from cocotb.triggers import FallingEdge, ReadOnly

from sim.stimulus import RESULT_ENV, STIMULUS_ENV, load_stimulus, unpack_ints
from sim.tb_common import Stopwatch, cycles_now, drive_beats, drive_handshake, reset, start_clock, write_stream_result

STREAM_FORMAT = "dfsq-sim-stream-stimulus-1"
log = logging.getLogger("cocotb.dfsq_stream")
STALL_LIMIT = 100_000   # a statistics unit drains 1024 channels with in_ready low


def word_bytes(bits: int) -> int:
    return max(1, -(-bits // 8))


def pack_word(value: int, bits: int) -> np.ndarray:
    """An output word as its little-endian bytes (uint8)."""
    return np.frombuffer(int(value).to_bytes(word_bytes(bits), "little"), dtype=np.uint8)


class StreamDriver:
    """Drives the table writes and the input beats of one unit."""

    def __init__(self, dut, strobe: str | None):
        self.dut = dut
        self.strobe = getattr(dut, strobe) if strobe else None
        if self.strobe is not None:
            self.strobe.value = 0
        dut.in_valid.value = 0
        dut.out_ready.value = 1

    async def load(self, ports: list[str], layer: dict) -> None:
        cols = [unpack_ints(layer[f"w_{p}"]) for p in ports]
        if self.strobe is None or not cols or not len(cols[0]):
            return
        await drive_beats(self.dut.clk, self.strobe, [getattr(self.dut, p) for p in ports], cols)

    async def stream(self, ports: list[str], layer: dict) -> None:
        cols = [unpack_ints(layer[f"b_{p}"]) for p in ports]
        await drive_handshake(self.dut.clk, self.dut.in_valid, self.dut.in_ready, [getattr(self.dut, p) for p in ports],
                              cols, STALL_LIMIT)


class OutputMonitor:
    """Calls ``callback(word)`` for every output transfer: the output ports' raw bits, concatenated (port 0 lowest)."""

    def __init__(self, dut, ports: list[str], widths: list[int], callback):
        self.dut, self.ports, self.widths, self.callback = dut, [getattr(dut, p) for p in ports], widths, callback
        self._task = None

    def start(self):
        self._task = cocotb.start_soon(self._run())
        return self

    def stop(self):
        if self._task is not None:
            self._task.cancel()

    async def _run(self):
        fe, ro = FallingEdge(self.dut.clk), ReadOnly()
        valid, ready = self.dut.out_valid, self.dut.out_ready
        while True:
            await fe
            await ro
            if valid.value == 1 and ready.value == 1:
                word, off = 0, 0
                for port, w in zip(self.ports, self.widths):
                    word |= int(port.value.to_unsigned()) << off
                    off += w
                self.callback(word)


class WordChecker:
    """Compares observed words, in order, with the expected ones; logs the first mismatches with their location."""

    def __init__(self, expected: list[int], describe, log_first: int = 5):
        self.expected, self.actual, self.describe = expected, [], describe
        self.mismatches, self.first_mismatch, self.log_first = 0, None, log_first

    def observe(self, word: int) -> None:
        k = len(self.actual)
        self.actual.append(word)
        want = self.expected[k] if k < len(self.expected) else None
        if word != want:
            self.mismatches += 1
            if self.first_mismatch is None:
                self.first_mismatch = k
            if self.mismatches <= self.log_first:
                log.error("MISMATCH output #%d %s: expected %s, got %s (%d)", k, self.describe(k),
                          "none" if want is None else f"{want:#x} ({want})", f"{word:#x}", word)


@cocotb.test()
async def unit_matches_golden(dut):
    """Every output word of every stimulus layer equals the golden model's, in order."""
    stim = load_stimulus(os.environ[STIMULUS_ENV], STREAM_FORMAT)
    meta = stim.meta
    out_ports, widths = meta["out_ports"], meta["out_widths"]
    bits = sum(widths)
    expected = [int.from_bytes(r.tobytes(), "little") for lay in stim.layers for r in lay["expected"]]
    bounds = np.cumsum([0] + [len(lay["expected"]) for lay in stim.layers])
    cols = meta["where_cols"]

    def describe(k: int) -> str:
        j = int(np.searchsorted(bounds, k, side="right") - 1)
        where = stim.layers[j]["where"][k - bounds[j]]
        lm = meta["layer_meta"][j]
        return f"(layer {lm['index']} {lm['name']}, " + ", ".join(f"{c} {int(v)}" for c, v in zip(cols, where)) + ")"

    checker = WordChecker(expected, describe)
    start_clock(dut)
    driver = StreamDriver(dut, meta.get("strobe"))
    await reset(dut)
    await FallingEdge(dut.clk)
    mon = OutputMonitor(dut, out_ports, widths, checker.observe).start()
    wall = Stopwatch()
    per_layer = []
    done = 0
    fe = FallingEdge(dut.clk)
    for lay in stim.layers:
        c0, t0 = cycles_now(), wall()
        await driver.load(meta["write_ports"], lay)
        await driver.stream(meta["beat_ports"], lay)
        done += len(lay["expected"])
        waited = 0
        while len(checker.actual) < done and waited < int(meta.get("drain_limit", 10_000)):
            await fe
            waited += 1
        per_layer.append((cycles_now() - c0, wall() - t0))
    for _ in range(8):
        await fe
    mon.stop()
    missing = max(0, len(expected) - len(checker.actual))
    actual = np.stack([pack_word(w, bits) for w in checker.actual]) if checker.actual else \
        np.zeros((0, word_bytes(bits)), np.uint8)
    write_stream_result(os.environ[RESULT_ENV], actual=actual, received=len(checker.actual),
                        expected_count=len(expected), mismatches=checker.mismatches + missing,
                        first_mismatch=checker.first_mismatch, per_layer=per_layer, wall=wall)
    assert checker.mismatches == 0 and missing == 0, (
        f"{checker.mismatches} mismatches, {missing} missing outputs of {len(expected)}")
