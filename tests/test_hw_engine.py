"""The conv engine in Amaranth's simulator: random small layers against golden.layer.accumulate."""
from __future__ import annotations

import numpy as np
import pytest
from amaranth.hdl import Fragment, Shape

from golden.layer import accumulate, gather_points, operands, point_table
from golden.spec import DatapathSpec
from golden.synthetic import synthetic_layer
from hw.units.engine import ConvEngine
from hw.stream import engine_beats, pack, window
from hw.testbench import run_engine

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")


def _layer(spec, seed, N=1, O=2, H=3, W=4, relu_input=False):
    layer = synthetic_layer(np.random.default_rng(seed), spec, N=N, C=spec.channels, O=O, H=H, W=W,
                            relu_input=relu_input)
    ops = operands(layer, spec)
    return ops, accumulate(ops, spec)


def _all_outputs(acc):
    N, O, H, W = acc.shape
    return [(n, o, h, w) for n in range(N) for o in range(O) for h in range(H) for w in range(W)]


@pytest.mark.parametrize("words,act_bits,channels,lanes,variant,relu", [
    (4, 4, 4, 2, "deferred", False),   # default word set, G = 2
    (4, 4, 4, 4, "deferred", True),    # G = 1: every beat is first and last
    (3, 3, 6, 2, "deferred", False),   # G = 3, 107-point set, lanes not a power of two of channels
    (5, 5, 4, 1, "deferred", True),    # 1065-point set, one lane
    (2, 6, 4, 2, "fold", False),       # exact-product multipliers in the lanes
    (4, 8, 2, 2, "naive", False),      # 256 points per channel
])
def test_engine_random_layer_with_backpressure(words, act_bits, channels, lanes, variant, relu):
    """Every output pixel of a small random layer (3x4: every pixel but two touches the border, so masked taps
    are exercised), random input gaps and random out_ready back-pressure, checked in order against
    golden.layer.accumulate."""
    spec = DatapathSpec(words=words, act_bits=act_bits, channels=channels)
    ops, acc = _layer(spec, seed=words * 100 + act_bits, relu_input=relu)
    outputs = _all_outputs(acc)
    run = run_engine(ConvEngine(spec=spec, lanes=lanes, variant=variant), ops, spec, outputs, acc,
                     valid_prob=0.8, ready_prob=0.6, seed=channels)
    assert run.ok, run.mismatches[:5]
    assert [key for key, _ in run.outputs] == outputs


def test_engine_latency_and_full_throughput():
    """With out_ready held high and no input gaps: one beat per cycle, each result exactly ``latency`` cycles
    after the handshake of its last beat; two samples, several output channels."""
    spec = DatapathSpec(channels=4)
    ops, acc = _layer(spec, seed=7, N=2, O=3, H=2, W=3)
    engine = ConvEngine(spec=spec, lanes=2)
    outputs = _all_outputs(acc)
    run = run_engine(engine, ops, spec, outputs, acc)
    assert run.ok, run.mismatches[:5]
    assert run.latencies == {engine.latency} == {6}
    beats = len(outputs) * engine.groups
    assert run.cycles == beats + engine.latency  # no bubble anywhere


def test_engine_fault_is_caught():
    spec = DatapathSpec(channels=4)
    ops, acc = _layer(spec, seed=3)
    run = run_engine(ConvEngine(spec=spec, lanes=2, fault="shift"), ops, spec, _all_outputs(acc), acc)
    assert run.mismatches and not run.missing


def test_engine_extreme_operands():
    """Largest |w'|, |P|, |sigma_m|, |mu_m| and bias of both signs: the widths from the spec hold the result."""
    spec = DatapathSpec(channels=4)
    ops, _ = _layer(spec, seed=11, N=1, O=2, H=3, W=3)
    ws = spec.wordset
    ops.point_codes[:] = ws.int_to_code(np.where(np.arange(spec.points) % 2, ws.p_max, -ws.p_max))[None, :]
    ops.codes[:, :2], ops.codes[:, 2:] = 1, 0  # channels 0-1: +p_max everywhere, channels 2-3: -p_max
    ops.w[0], ops.w[1] = spec.w_max, -spec.w_max
    ops.sigma_m[:], ops.mu_m[:] = spec.mant_max, -spec.mant_max
    ops.bias_int[0] = [spec.bias_max, -spec.bias_max]
    ops.P[:] = gather_points(point_table(ops.point_codes, spec), ops.codes)
    acc = accumulate(ops, spec)
    run = run_engine(ConvEngine(spec=spec, lanes=2), ops, spec, _all_outputs(acc), acc, ready_prob=0.5, seed=5)
    assert run.ok, run.mismatches[:5]
    assert np.abs(acc).max() > (1 << (spec.acc_bits - 4))  # the test really reaches the upper bits


def test_beat_packing_matches_contract():
    """Element e = l*9 + t at bits [e*width, (e+1)*width); masked taps carry index 0."""
    assert pack([1, -1, 2], 4) == 1 | (0xF << 4) | (2 << 8)
    codes = np.arange(2 * 3 * 3).reshape(2, 3, 3)
    idx, mask = window(codes, 0, 0)
    assert mask == 0b110110000  # taps (0,0), (0,1), (1,0), (1,1) of the window are inside
    assert idx[1].tolist() == [0, 0, 0, 0, 9, 10, 0, 12, 13]
    spec = DatapathSpec(channels=4)
    ops, _ = _layer(spec, seed=1)
    (key, beats), = engine_beats(ops, spec, 2, [(0, 1, 2, 3)])
    assert key == (0, 1, 2, 3) and [b.first for b in beats] == [True, False] and [b.last for b in beats] == [False,
                                                                                                          True]
    assert np.array_equal(beats[1].weight, ops.w[1, 2:4].reshape(2, 9))


def test_engine_validates_parameters():
    spec = DatapathSpec(channels=6)
    with pytest.raises(ValueError, match="must divide"):
        ConvEngine(spec=spec, lanes=4)
    with pytest.raises(TypeError, match="positive integer"):
        ConvEngine(spec=spec, lanes=0)
    with pytest.raises(ValueError, match="unknown fault"):
        ConvEngine(spec=spec, lanes=2, fault="x")
    engine = ConvEngine(spec=spec, lanes=3)
    Fragment.get(engine, None)
    assert (engine.lanes, engine.groups, engine.latency) == (3, 2, 6)
    for name in ("lanes", "groups", "latency", "spec"):
        with pytest.raises(AttributeError):
            setattr(engine, name, 1)
    members = engine.signature.members
    assert members["in_idx"].shape.size == 3 * 9 * spec.act_bits
    assert members["in_weight"].shape.size == 3 * 9 * spec.w_bits
    assert members["in_sigma"].shape.size == 3 * spec.scale_bits
    assert members["in_bias"].shape.width == spec.bias_bits
    assert members["out_acc"].shape.width == spec.acc_bits
    assert Shape.cast(members["in_group"].shape).width == 1 and Shape.cast(members["tbl_chan"].shape).width == 3


def _geometry_layer(spec, seed, C, kernel, N=1, O=2, H=3, W=4):
    layer = synthetic_layer(np.random.default_rng(seed), spec, N=N, C=C, O=O, H=H, W=W, kernel=kernel)
    ops = operands(layer, spec)
    return ops, accumulate(ops, spec.for_layer(C, kernel))


@pytest.mark.parametrize("C,kernel,channels,lanes", [
    (8, 1, 8, 2),     # 1x1 on the centre tap, G = 4
    (5, 1, 8, 2),     # 1x1, C not a multiple of the lanes: the last group padded with zero weights
    (3, 3, 8, 2),     # a narrower 3x3 layer on a wider engine: 2 beats instead of 4
    (7, 1, 8, 4),     # 1x1, 2 beats, last group 3/4 full
])
def test_engine_any_geometry(C, kernel, channels, lanes):
    """Layers narrower than the engine and 1x1 layers (centre tap only), with back-pressure, against golden."""
    spec = DatapathSpec(channels=channels)
    ops, acc = _geometry_layer(spec, seed=C * 10 + kernel, C=C, kernel=kernel)
    outputs = _all_outputs(acc)
    run = run_engine(ConvEngine(spec=spec, lanes=lanes), ops, spec, outputs, acc, valid_prob=0.8, ready_prob=0.7,
                     seed=C)
    assert run.ok, run.mismatches[:5]
    assert [key for key, _ in run.outputs] == outputs


def test_engine_1x1_fault_is_caught():
    spec = DatapathSpec(channels=4)
    ops, acc = _geometry_layer(spec, seed=5, C=4, kernel=1)
    run = run_engine(ConvEngine(spec=spec, lanes=2, fault="shift"), ops, spec, _all_outputs(acc), acc)
    assert run.mismatches and not run.missing


def test_engine_1x1_extreme_operands():
    """A 1x1 layer at its bounds: |w'|, |P|, sigma_m, mu_m at their maxima, bias at the 1x1 layer's bias_max."""
    spec = DatapathSpec(channels=4)
    ops, _ = _geometry_layer(spec, seed=13, C=4, kernel=1, H=2, W=2)
    ws = spec.wordset
    ops.point_codes[:] = ws.int_to_code(np.full(spec.points, ws.p_max))[None, :]
    ops.w[:] = spec.w_max
    ops.sigma_m[:] = ops.mu_m[:] = spec.mant_max
    lspec = spec.for_layer(4, 1)
    ops.bias_int[:] = lspec.bias_max
    ops.P[:] = gather_points(point_table(ops.point_codes, spec), ops.codes)
    acc = accumulate(ops, lspec)
    assert acc.max() == lspec.acc_max
    run = run_engine(ConvEngine(spec=spec, lanes=2), ops, spec, _all_outputs(acc), acc)
    assert run.ok, run.mismatches[:5]


def test_engine_needs_a_3x3_spec():
    with pytest.raises(ValueError, match="3x3"):
        ConvEngine(spec=DatapathSpec(channels=4, kernel=1), lanes=2)


# --- the "split" de-normalization: mean term out of the lanes, low-bit sigma with an alignment shift ----------------

SPLIT_FORMATS = [dict(sigma_bits=8, shift_bits=0), dict(sigma_bits=4, shift_bits=3), dict(sigma_bits=1, shift_bits=4),
                 dict(sigma_bits=6, shift_bits=2)]


@pytest.mark.parametrize("fmt", SPLIT_FORMATS, ids=lambda f: f"m{f['sigma_bits']}s{f['shift_bits']}")
@pytest.mark.parametrize("C,kernel,lanes", [(4, 3, 2), (3, 3, 2), (5, 1, 2)])
def test_split_engine_random_layer(fmt, C, kernel, lanes):
    """The split engine (lanes: (s_c A_c) << d_c; accumulator from the border class's start value) against the
    golden accumulator, with back-pressure, on 3x3 (every border class of a 3x4 image) and 1x1 layers."""
    spec = DatapathSpec(channels=6, denorm="split", **fmt)
    ops, acc = _geometry_layer(spec, seed=C * 7 + kernel + fmt["sigma_bits"], C=C, kernel=kernel, N=2)
    assert ops.sigma_d is not None and (fmt["shift_bits"] == 0 or ops.sigma_d.any())
    outputs = _all_outputs(acc)
    engine = ConvEngine(spec=spec, lanes=lanes)
    run = run_engine(engine, ops, spec, outputs, acc, valid_prob=0.8, ready_prob=0.7, seed=C)
    assert run.ok, run.mismatches[:5]
    assert [key for key, _ in run.outputs] == outputs
    members = engine.signature.members
    assert "in_mu" not in members and "in_bias" not in members
    assert members["in_sigma"].shape.size == lanes * spec.sigma_bits
    assert members["in_start"].shape.width == spec.start_bits and members["out_acc"].shape.width == spec.acc_bits
    assert ("in_shift" in members) == (spec.shift_bits > 0)


@pytest.mark.parametrize("fault", ["sigma_shift", "start_class", "shift"])
def test_split_engine_faults_are_caught(fault):
    spec = DatapathSpec(channels=4, denorm="split", sigma_bits=4, shift_bits=3)
    ops, acc = _layer(spec, seed=21)
    run = run_engine(ConvEngine(spec=spec, lanes=2, fault=fault), ops, spec, _all_outputs(acc), acc)
    assert run.mismatches and not run.missing


def test_split_engine_extreme_operands():
    """s_c, d_c, |w'|, |P| at their maxima and the start value at +-start_max: the widths hold the result."""
    spec = DatapathSpec(channels=4, denorm="split", sigma_bits=4, shift_bits=3)
    ops, _ = _layer(spec, seed=17, N=1, O=2, H=3, W=3)
    ws = spec.wordset
    ops.point_codes[:] = ws.int_to_code(np.full(spec.points, ws.p_max))[None, :]
    ops.w[0], ops.w[1] = spec.w_max, -spec.w_max
    ops.sigma_s[:], ops.sigma_d[:] = spec.sigma_max, spec.shift_max
    ops.sigma_m[:] = ops.sigma_s << ops.sigma_d
    ops.mu_m[:] = spec.mant_max
    ops.bias_int[0] = [spec.bias_max, -spec.bias_max]
    ops.P[:] = gather_points(point_table(ops.point_codes, spec), ops.codes)
    acc = accumulate(ops, spec)
    assert acc[0, 0, 1, 1] == spec.acc_max and acc[0, 1, 1, 1] == -spec.acc_max
    run = run_engine(ConvEngine(spec=spec, lanes=2), ops, spec, _all_outputs(acc), acc, ready_prob=0.5, seed=5)
    assert run.ok, run.mismatches[:5]


def test_split_faults_need_a_split_spec():
    with pytest.raises(ValueError, match="split"):
        ConvEngine(spec=DatapathSpec(channels=4), lanes=2, fault="sigma_shift")


@pytest.mark.parametrize("spec_kw,C,kernel", [(dict(channels=6), 5, 3), (dict(channels=6, denorm="split"), 6, 3),
                                              (dict(channels=6, denorm="split", sigma_bits=4, shift_bits=3), 4, 1)])
def test_engine_without_tables(spec_kw, C, kernel):
    """tables=False: beats carry point codes (decoded where the activations enter); no tbl_* ports, same results."""
    spec = DatapathSpec(**spec_kw)
    ops, acc = _geometry_layer(spec, seed=C + kernel, C=C, kernel=kernel, N=2)
    engine = ConvEngine(spec=spec, lanes=2, tables=False)
    members = engine.signature.members
    assert "tbl_we" not in members and "in_idx" not in members and engine.tables is False
    assert members["in_code"].shape.size == 2 * 9 * spec.code_bits
    outputs = _all_outputs(acc)
    run = run_engine(engine, ops, spec, outputs, acc, valid_prob=0.8, ready_prob=0.7, seed=C)
    assert run.ok, run.mismatches[:5]
    with pytest.raises(TypeError):
        ConvEngine(spec=spec, lanes=2, tables=1)


# --- the normalized uniform baseline: DFSQ's engine with integer multipliers (point_set="uniform") ------------------

@pytest.mark.parametrize("spec_kw,C,kernel,tables,relu", [
    (dict(denorm="split", sigma_bits=6, act_bits=4, weight_bits=4), 4, 3, True, False),
    (dict(denorm="split", sigma_bits=6, act_bits=6, weight_bits=6), 3, 3, False, True),
    (dict(denorm="split", sigma_bits=4, shift_bits=3, act_bits=3, weight_bits=3), 5, 1, True, False),
    (dict(denorm="fused", act_bits=5, weight_bits=5), 4, 3, True, False),
])
def test_uniform_point_engine(spec_kw, C, kernel, tables, relu):
    """The normalized uniform engine (DFSQ's normalization and de-normalization, 2^b evenly spaced points, one
    w' x P multiplier per tap) against the golden accumulator of the same spec, with back-pressure."""
    spec = DatapathSpec(channels=6, point_set="uniform", **spec_kw)
    rng = np.random.default_rng(C + kernel)
    layer = synthetic_layer(rng, spec, N=2, C=C, O=2, H=3, W=4, kernel=kernel, relu_input=relu)
    ops = operands(layer, spec)
    acc = accumulate(ops, spec.for_layer(C, kernel))
    engine = ConvEngine(spec=spec, lanes=2, tables=tables)
    assert engine.signature.members["in_weight"].shape.size == 2 * 9 * spec.w_bits
    run = run_engine(engine, ops, spec, _all_outputs(acc), acc, valid_prob=0.8, ready_prob=0.7, seed=C)
    assert run.ok, run.mismatches[:5]
    fault = "start_class" if spec.split else None
    if fault:
        bad = run_engine(ConvEngine(spec=spec, lanes=2, tables=tables, fault=fault), ops, spec, _all_outputs(acc), acc)
        assert bad.mismatches


def test_uniform_point_engine_extreme_operands():
    spec = DatapathSpec(channels=4, point_set="uniform", denorm="split", sigma_bits=4, shift_bits=3, act_bits=5,
                        weight_bits=5)
    ops, _ = _layer(spec, seed=3, N=1, O=2, H=3, W=3)
    ws = spec.wordset
    for sign in (1, -1):
        ops.point_codes[:] = ws.int_to_code(np.full(spec.points, sign * ws.p_max))[None, :]
        ops.w[0], ops.w[1] = spec.w_max, -spec.w_max
        ops.sigma_s[:], ops.sigma_d[:] = spec.sigma_max, spec.shift_max
        ops.sigma_m[:] = ops.sigma_s << ops.sigma_d
        ops.mu_m[:] = sign * spec.mant_max
        ops.bias_int[0] = [sign * spec.bias_max, -sign * spec.bias_max]
        ops.P[:] = gather_points(point_table(ops.point_codes, spec), ops.codes)
        acc = accumulate(ops, spec)
        assert acc[0, 0, 1, 1] == sign * spec.acc_max and acc[0, 1, 1, 1] == -sign * spec.acc_max
        run = run_engine(ConvEngine(spec=spec, lanes=2), ops, spec, _all_outputs(acc), acc, ready_prob=0.5, seed=5)
        assert run.ok, run.mismatches[:5]


def test_uniform_point_engine_refuses_multiplier_faults():
    from hw.units.engine import check_engine_fault   # (the engine's own validation; no component is left unused)

    spec = DatapathSpec(channels=4, point_set="uniform", denorm="split")
    with pytest.raises(ValueError, match="shift-add"):
        check_engine_fault("shift", spec)
    assert check_engine_fault("sigma_shift", spec) == "sigma_shift"
