"""The uniform baseline engine in Amaranth's simulator: random layers against golden.uniform_layer.accumulate."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from amaranth.hdl import Fragment

from golden.uniform_layer import UniformOperands, accumulate, random_operands
from golden.uniform_spec import UniformSpec
from hw.stream import uniform_beats
from hw.testbench import run_uniform_engine
from hw.units.uniform_engine import UniformEngine

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")


def _all_outputs(acc):
    N, O, H, W = acc.shape
    return [(n, o, h, w) for n in range(N) for o in range(O) for h in range(H) for w in range(W)]


@pytest.mark.parametrize("act_bits,weight_bits,channels,lanes,C,kernel", [
    (6, 6, 4, 2, 4, 3),     # W6A6, G = 2
    (4, 4, 4, 4, 4, 3),     # G = 1: every beat is first and last
    (3, 8, 6, 2, 6, 3),     # G = 3, unequal widths
    (8, 2, 16, 8, 13, 3),   # 8 lanes: two stage-4 lane groups; 2 beats, the last one 5/8 full
    (6, 6, 8, 2, 5, 1),     # 1x1 on the centre tap, C not a multiple of the lanes
    (5, 5, 8, 4, 3, 3),     # a narrower 3x3 layer on a wider engine
])
def test_uniform_engine_random_layer_with_backpressure(act_bits, weight_bits, channels, lanes, C, kernel):
    """Every output pixel of a small random layer (3x4: the border taps are masked), random input gaps and
    out_ready back-pressure, checked in order against the golden model."""
    spec = UniformSpec(act_bits=act_bits, weight_bits=weight_bits, channels=channels)
    ops = random_operands(np.random.default_rng(act_bits * 100 + C), spec.for_layer(C, kernel), N=2)
    acc = accumulate(ops, spec.for_layer(C, kernel))
    outputs = _all_outputs(acc)
    run = run_uniform_engine(UniformEngine(spec=spec, lanes=lanes), ops, outputs, acc, valid_prob=0.8,
                             ready_prob=0.6, seed=channels)
    assert run.ok, run.mismatches[:5]
    assert [key for key, _ in run.outputs] == outputs


def test_uniform_engine_latency_and_full_throughput():
    spec = UniformSpec(channels=4)
    ops = random_operands(np.random.default_rng(7), spec, N=2, O=3, H=2, W=3)
    acc = accumulate(ops, spec)
    engine = UniformEngine(spec=spec, lanes=2)
    outputs = _all_outputs(acc)
    run = run_uniform_engine(engine, ops, outputs, acc)
    assert run.ok, run.mismatches[:5]
    assert run.latencies == {engine.latency} == {6}
    assert run.cycles == len(outputs) * engine.groups + engine.latency  # no bubble anywhere


@pytest.mark.parametrize("lanes", [2, 16])
def test_uniform_engine_extreme_operands(lanes):
    """|w'|, |a'| and the bias at their bounds, one sign per output channel: the accumulator reaches +-acc_max."""
    spec = UniformSpec(act_bits=8, weight_bits=8, channels=16)
    ops = random_operands(np.random.default_rng(3), spec, O=2, H=3, W=3, extreme=True)
    ops.w[0], ops.w[1] = spec.w_max, -spec.w_max
    ops.a[:] = spec.a_max
    ops.bias[:] = [spec.bias_max, -spec.bias_max]
    acc = accumulate(ops, spec)
    assert acc[0, 0, 1, 1] == spec.acc_max and acc[0, 1, 1, 1] == -spec.acc_max
    run = run_uniform_engine(UniformEngine(spec=spec, lanes=lanes), ops, _all_outputs(acc), acc, ready_prob=0.5,
                             seed=5)
    assert run.ok, run.mismatches[:5]


def _junk_in_masked_taps(ops, lanes, outputs, seed):
    """The beats of ``outputs`` with random activations in every masked tap (the engine must ignore them)."""
    rng = np.random.default_rng(seed)
    spec_a = int(np.abs(ops.a).max())
    beats = []
    for key, group in uniform_beats(ops, lanes, outputs):
        for b in group:
            act = b.act.copy()
            junk = rng.integers(-spec_a, spec_a + 1, act.shape)
            masked = [(b.mask >> t) & 1 == 0 for t in range(9)]
            act[:, masked] = junk[:, masked]
            beats.append((key, dataclasses.replace(b, act=act)))
    return beats


def test_masked_taps_are_ignored_and_the_mask_fault_is_caught():
    spec = UniformSpec(channels=4)
    ops = random_operands(np.random.default_rng(11), spec, O=2, H=3, W=3)
    acc = accumulate(ops, spec)
    outputs = _all_outputs(acc)
    beats = _junk_in_masked_taps(ops, 2, outputs, seed=1)
    run = run_uniform_engine(UniformEngine(spec=spec, lanes=2), ops, outputs, acc, beats=beats)
    assert run.ok, run.mismatches[:5]
    bad = run_uniform_engine(UniformEngine(spec=spec, lanes=2, fault="mask"), ops, outputs, acc, beats=beats)
    assert bad.mismatches and not bad.missing


def test_unsigned_fault_is_caught():
    spec = UniformSpec(channels=4)
    ops = random_operands(np.random.default_rng(12), spec, O=2, H=3, W=3)
    ops.a[:] = -np.abs(ops.a) - 1  # negative activations everywhere
    acc = accumulate(ops, spec)
    run = run_uniform_engine(UniformEngine(spec=spec, lanes=2, fault="unsigned"), ops, _all_outputs(acc), acc)
    assert run.mismatches and not run.missing


def test_uniform_engine_validates_parameters():
    spec = UniformSpec(channels=6)
    with pytest.raises(ValueError, match="must divide"):
        UniformEngine(spec=spec, lanes=4)
    with pytest.raises(TypeError, match="positive integer"):
        UniformEngine(spec=spec, lanes=0)
    with pytest.raises(TypeError, match="UniformSpec"):
        UniformEngine(spec=object(), lanes=1)
    with pytest.raises(ValueError, match="unknown fault"):
        UniformEngine(spec=spec, lanes=2, fault="x")
    with pytest.raises(ValueError, match="3x3"):
        UniformEngine(spec=UniformSpec(channels=6, kernel=1), lanes=2)
    with pytest.raises(TypeError):
        UniformEngine(spec, 2)  # keyword-only
    engine = UniformEngine(spec=spec, lanes=3)
    Fragment.get(engine, None)
    assert (engine.lanes, engine.groups, engine.latency, engine.fault) == (3, 2, 6, None)
    for name in ("lanes", "groups", "latency", "spec", "fault"):
        with pytest.raises(AttributeError):
            setattr(engine, name, 1)
    members = engine.signature.members
    assert members["in_act"].shape.size == 3 * 9 * spec.a_bits
    assert members["in_weight"].shape.size == 3 * 9 * spec.w_bits
    assert members["in_bias"].shape.width == spec.bias_bits
    assert members["out_acc"].shape.width == spec.acc_bits
    assert not {"tbl_we", "in_sigma", "in_mu", "in_group"} & set(members)
