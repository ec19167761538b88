"""hw.units.mean_unit in Amaranth's simulator against golden.datapath.mean_unit_reference (through an in-order queue)."""
from __future__ import annotations

import random

import numpy as np
import pytest
from amaranth.hdl import Fragment
from amaranth.sim import Simulator

from golden.datapath import mean_unit_reference
from golden.mean_unit import CLASSES, class_starts, tap_constants
from golden.spec import TAPS, DatapathSpec
from hw.units.mean_unit import MeanUnit
from hw.stream import pack

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")


def run_mean_unit(unit, mu, w, bias, *, valid_prob=1.0, ready_prob=1.0, seed=0):
    """Stream the O output channels (C beats each) and collect the (class, start) outputs in order."""
    spec = unit.spec
    O, C = w.shape[:2]
    rng = random.Random(seed)
    out, cycles = [], [0]
    sim = Simulator(unit)
    sim.add_clock(1e-8)

    async def bench(ctx):
        beats = [(o, c) for o in range(O) for c in range(C)]
        i = cycle = 0
        while (i < len(beats) or len(out) < O * CLASSES) and cycle < 40 * len(beats) + 64 * O + 100:
            ready = rng.random() < ready_prob
            ctx.set(unit.out_ready, ready)
            if ctx.get(unit.out_valid) and ready:
                out.append((ctx.get(unit.out_class), ctx.get(unit.out_start)))
            offer = i < len(beats) and rng.random() < valid_prob
            ctx.set(unit.in_valid, offer)
            if offer:
                o, c = beats[i]
                ctx.set(unit.in_first, c == 0)
                ctx.set(unit.in_last, c == C - 1)
                ctx.set(unit.in_mu, int(mu[c]))
                ctx.set(unit.in_weight.as_value(), pack(w[o, c], spec.w_bits))
                ctx.set(unit.in_bias, int(bias[o]))
                if ctx.get(unit.in_ready):
                    i += 1
            await ctx.tick()
            cycle += 1
        cycles[0] = cycle

    sim.add_testbench(bench)
    sim.run()
    return out, cycles[0]


def _operands(spec, rng, O, C, kernel=3, extreme=False):
    if extreme:
        mu = np.full(C, spec.mant_max, np.int64)
        w = np.full((O, C, TAPS), spec.w_max, np.int64)
        w[1::2] = -spec.w_max
        bias = np.where(np.arange(O) % 2, -spec.bias_max, spec.bias_max)
    else:
        mu = rng.integers(-spec.mant_max, spec.mant_max + 1, C)
        w = rng.integers(-spec.w_max, spec.w_max + 1, (O, C, TAPS))
        bias = rng.integers(-spec.bias_max, spec.bias_max + 1, O)
    if kernel == 1:
        w[:, :, [t for t in range(TAPS) if t != 4]] = 0
    return mu, w, bias


@pytest.mark.parametrize("C,kernel,extreme,valid_prob,ready_prob", [
    (3, 3, False, 0.7, 0.6), (4, 3, True, 1.0, 1.0), (5, 1, False, 0.8, 0.5), (1, 3, False, 1.0, 0.7)])
def test_mean_unit_matches_golden(C, kernel, extreme, valid_prob, ready_prob):
    spec = DatapathSpec(channels=max(C, 4), denorm="split", sigma_bits=4, shift_bits=3)
    rng = np.random.default_rng(C * 10 + kernel)
    O = 3
    mu, w, bias = _operands(spec, rng, O, C, kernel, extreme)
    out, _ = run_mean_unit(MeanUnit(spec=spec), mu, w, bias, valid_prob=valid_prob, ready_prob=ready_prob, seed=C)
    want = [(k, v) for o in range(O) for k, v in enumerate(mean_unit_reference(mu, w[o], int(bias[o]), 3, spec))]
    assert out == want
    # the vectorized golden function agrees (the engine's stimulus uses it)
    wk = w.reshape(O, C, 3, 3) if kernel == 3 else w[:, :, 4].reshape(O, C, 1, 1)
    st = class_starts(tap_constants(wk, mu[None]), bias[None], kernel)
    assert [v for _, v in out] == st[0].ravel().tolist()
    if extreme:
        assert max(abs(v) for _, v in out) == spec.start_max


def test_mean_unit_cycles():
    spec = DatapathSpec(channels=4, denorm="split")
    unit = MeanUnit(spec=spec)
    mu, w, bias = _operands(spec, np.random.default_rng(0), 2, 4)
    out, cycles = run_mean_unit(unit, mu, w, bias)
    assert len(out) == 2 * CLASSES
    assert cycles <= 2 * unit.cycles_per_output(4) + 2
    assert unit.cycles_per_output(64) == 64 * 10 + 16


def test_mean_unit_fault_is_caught():
    spec = DatapathSpec(channels=4, denorm="split")
    mu, w, bias = _operands(spec, np.random.default_rng(1), 2, 4)
    out, _ = run_mean_unit(MeanUnit(spec=spec, fault="border"), mu, w, bias)
    want = [(k, v) for o in range(2) for k, v in enumerate(mean_unit_reference(mu, w[o], int(bias[o]), 3, spec))]
    assert len(out) == len(want) and out != want


def test_mean_unit_validates():
    with pytest.raises(ValueError, match="split"):
        MeanUnit(spec=DatapathSpec())
    with pytest.raises(ValueError, match="unknown fault"):
        MeanUnit(spec=DatapathSpec(denorm="split"), fault="x")
    unit = MeanUnit(spec=DatapathSpec(denorm="split"))
    Fragment.get(unit, None)
    for name in ("spec", "fault", "cycles_per_channel"):
        with pytest.raises(AttributeError):
            setattr(unit, name, 1)
    assert unit.signature.members["out_start"].shape.width == unit.spec.start_bits
