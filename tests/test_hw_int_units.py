"""The contract-2 units in Amaranth's simulator against their golden functions: random and extreme values, random
gaps and back-pressure, every mutation caught (the Icarus checks on exported layers: tests/test_sim_int_units.py)."""
from __future__ import annotations

import numpy as np
import pytest
from amaranth.hdl import Fragment

from golden.int_layer import (channel_stats, codes_from_thresholds, mean_range, post_values, static_requantize,
                              thresholds)
from golden.int_spec import MULT_BITS, FmapFormat, IntSpec, requant_widths
from golden.spec import DatapathSpec, WordSet
from golden.uniform_spec import UniformSpec
from hw.stream import pack
from hw.testbench import run_stream
from hw.units.post_unit import POST_FAULTS, PostUnit, StaticRequantizer
from hw.units.quantizer import QUANTIZER_FAULTS, Quantizer, threshold_slot
from hw.units.stats_unit import STATS_FAULTS, StatsUnit
from hw.units.threshold_unit import THRESHOLD_FAULTS, ThresholdUnit, floor_div_const

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")


def _ispec(bits=10, channels=8, words=4, act_bits=4, max_pixels=64, **kw):
    return IntSpec(DatapathSpec(channels=channels, words=words, act_bits=act_bits, **kw), FmapFormat(bits, 2),
                   max_pixels=max_pixels)


def _signed(v: int, bits: int) -> int:
    return v - (1 << bits) if v >> (bits - 1) else v


def _unpack(v: int, width: int, count: int, signed: bool = True) -> list[int]:
    out = [(v >> (width * i)) & ((1 << width) - 1) for i in range(count)]
    return [_signed(x, width) if signed else x for x in out]


# --- statistics unit --------------------------------------------------------------------------------------------
def _stats_beats(unit, X, relu, order_seed=None):
    """Beats of one map X (C, H, W): every pixel, every group (shuffled with ``order_seed``)."""
    spec, L = unit.spec, unit.lanes
    C, H, W = X.shape
    groups = -(-C // L)
    Xp = np.zeros((groups * L, H * W), np.int64)
    Xp[:C] = X.reshape(C, -1)
    order = [(p, g) for p in range(H * W) for g in range(groups)]
    if order_seed is not None:
        np.random.default_rng(order_seed).shuffle(order)
    beats = []
    for i, (p, g) in enumerate(order):
        beats.append([(unit.cfg_channels, C), (unit.cfg_pixels, H * W), (unit.cfg_relu, int(relu)),
                      (unit.in_last, int(i == len(order) - 1)), (unit.in_group, g),
                      (unit.in_data, pack(Xp[g * L:(g + 1) * L, p], spec.fmap.bits))])
    return beats


def _stats_expected(X, relu):
    S, lo, hi = channel_stats(X[None])
    mu, M = mean_range(S, lo, hi, X.shape[1] * X.shape[2], relu)
    return [(c, int(S[0, c]), int(lo[0, c]), int(hi[0, c]), int(mu[0, c]), int(M[0, c])) for c in range(X.shape[0])]


def _run_stats(unit, maps, **kw):
    W = unit.spec.fmap.bits

    def read(ctx):
        return (ctx.get(unit.out_chan), ctx.get(unit.out_sum), ctx.get(unit.out_min), ctx.get(unit.out_max),
                ctx.get(unit.out_mu), ctx.get(unit.out_m))

    beats = [b for X, relu, seed in maps for b in _stats_beats(unit, X, relu, seed)]
    run = run_stream(unit, beats, read, **kw)
    want = [e for X, relu, _ in maps for e in _stats_expected(X, relu)]
    return run, want


def _maps(spec, rng):
    x = spec.x_max
    return [
        (rng.integers(-x, x + 1, (spec.datapath.channels, 3, 5)), False, 1),          # every channel, shuffled order
        (rng.integers(0, x + 1, (5, 2, 3)), True, None),                               # fewer channels, after a ReLU
        (np.full((3, 8, 8), x), False, 2),                                              # the largest sum (max_pixels)
        (np.full((3, 8, 8), -x), False, None),
        (np.array([[[1, 2, -7, -8]], [[-1, -2, 3, -3]], [[x, -x, x, -x]]]), False, None),   # mean ties, +-0.5
    ]


@pytest.mark.parametrize("lanes,valid_prob,ready_prob", [(4, 1.0, 1.0), (2, 0.7, 0.6), (8, 0.9, 0.5), (1, 1.0, 0.8)])
def test_stats_unit_matches_golden(lanes, valid_prob, ready_prob):
    spec = _ispec()
    unit = StatsUnit(spec=spec, lanes=lanes)
    maps = _maps(spec, np.random.default_rng(lanes))
    run, want = _run_stats(unit, maps, valid_prob=valid_prob, ready_prob=ready_prob, seed=lanes)
    assert run.missing == 0 and run.outputs == want
    assert max(abs(s) for _, s, *_ in want) == spec.max_pixels * spec.x_max   # the sum bound is reached


def test_stats_unit_cycles_and_latency():
    spec = _ispec(channels=8)
    unit = StatsUnit(spec=spec, lanes=4)
    X = np.random.default_rng(0).integers(-100, 100, (8, 2, 2))
    beats = _stats_beats(unit, X, False)
    run = run_stream(unit, beats, lambda ctx: ctx.get(unit.out_chan))
    assert run.outputs == list(range(8))
    clear, stream = unit.groups, len(beats)
    assert run.cycles <= clear + stream + unit.drain_cycles(8) + 402
    assert unit.latency == 4 + spec.fmap.bits - 1
    with pytest.raises(ValueError, match="divide"):
        StatsUnit(spec=spec, lanes=3)
    for name in ("spec", "lanes", "fault"):
        with pytest.raises(AttributeError):
            setattr(unit, name, 1)


@pytest.mark.parametrize("fault", sorted(STATS_FAULTS))
def test_stats_unit_faults_are_caught(fault):
    spec = _ispec()
    run, want = _run_stats(StatsUnit(spec=spec, lanes=4, fault=fault), _maps(spec, np.random.default_rng(0)))
    assert run.outputs != want


# --- threshold unit -----------------------------------------------------------------------------------------------
def _points(spec, rng):
    ws = spec.datapath.wordset
    return np.sort(rng.choice(ws.ints, (spec.datapath.channels, spec.datapath.points)), axis=1)


def _run_thresholds(unit, p, mu, M, **kw):
    spec = unit.spec
    dp = spec.datapath
    codes = dp.wordset.int_to_code(p)
    writes = [[(unit.tbl_we, 1), (unit.tbl_chan, c), (unit.tbl_idx, k), (unit.tbl_code, int(codes[c, k]))]
              for c in range(p.shape[0]) for k in range(p.shape[1])]
    beats = [[(unit.in_chan, c), (unit.in_mu, int(mu[c]) & ((1 << spec.fmap.bits) - 1)), (unit.in_m, int(M[c]))]
             for c in range(len(mu))]

    def read(ctx):
        return ctx.get(unit.out_chan), ctx.get(unit.out_k), ctx.get(unit.out_t)

    run = run_stream(unit, beats, read, writes=writes, **kw)
    T = thresholds(mu[None], M[None], p[:len(mu)], spec)[0]
    want = [(c, k, int(T[c, k])) for c in range(len(mu)) for k in range(T.shape[1])]
    return run, want


def _stats_for_thresholds(spec, rng, C):
    x = spec.x_max
    mu = rng.integers(-x, x + 1, C)
    M = rng.integers(0, 2 * x + 1, C)
    mu[:4], M[:4] = [x, -x, 0, 3], [2 * x, 2 * x, 0, 1]     # clamped both ways, M = 0, tiny M (many ties)
    return mu, M


@pytest.mark.parametrize("words,act_bits,ready_prob", [(4, 4, 1.0), (3, 3, 0.6), (5, 2, 0.8), (2, 4, 0.7)])
def test_threshold_unit_matches_golden(words, act_bits, ready_prob):
    spec = _ispec(words=words, act_bits=act_bits)
    rng = np.random.default_rng(words)
    unit = ThresholdUnit(spec=spec)
    p = _points(spec, rng)
    mu, M = _stats_for_thresholds(spec, rng, spec.datapath.channels)
    run, want = _run_thresholds(unit, p, mu, M, valid_prob=0.8, ready_prob=ready_prob, seed=words)
    assert run.missing == 0 and run.outputs == want


def test_threshold_unit_throughput():
    spec = _ispec()
    unit = ThresholdUnit(spec=spec)
    rng = np.random.default_rng(1)
    p = _points(spec, rng)
    mu, M = _stats_for_thresholds(spec, rng, 8)
    run, want = _run_thresholds(unit, p, mu, M)
    assert run.outputs == want
    # 16 point reads per channel, back to back, after the table writes (the run idles 400 cycles at the end)
    assert run.cycles <= len(mu) * unit.cycles_per_channel + unit.latency + 402


@pytest.mark.parametrize("fault", sorted(THRESHOLD_FAULTS))
def test_threshold_unit_faults_are_caught(fault):
    spec = _ispec()
    rng = np.random.default_rng(2)
    p = _points(spec, rng)
    mu, M = _stats_for_thresholds(spec, rng, 8)
    run, want = _run_thresholds(ThresholdUnit(spec=spec, fault=fault), p, mu, M)
    assert run.outputs != want


def test_floor_div_const_is_exact_over_its_range():
    """The divider of the threshold unit for 3 and 5 words (2 denom = 768, 5120) against Python's floor division,
    exhaustively over a range, by simulating the combinational logic."""
    from amaranth.hdl import Module, Signal, signed
    from amaranth.sim import Simulator

    for d, lo, hi in ((768, -3000, 3000), (5120, -20000, 20000), (2048, -5000, 5000), (3, -50, 50)):
        m = Module()
        v = Signal(signed(20))
        q = floor_div_const(m, v, lo, hi, d)
        sim = Simulator(m)
        bad = []

        async def bench(ctx):
            for x in range(lo, hi + 1, 7):
                ctx.set(v, x)
                if ctx.get(q) != x // d:
                    bad.append(x)

        sim.add_testbench(bench)
        sim.run()
        assert not bad, (d, bad[:3])


# --- quantizer ------------------------------------------------------------------------------------------------------
def _quantizer_case(spec, rng, C):
    """Thresholds of random statistics and values hitting every threshold exactly, one above, one below, and the
    format's extremes."""
    p = _points(spec, rng)[:C]
    mu, M = _stats_for_thresholds(spec, rng, C)
    T = thresholds(mu[None], M[None], p, spec)[0].astype(np.int64)
    x = spec.x_max
    vals = [np.clip(np.concatenate([T[c], T[c] + 1, T[c] - 1, [x, -x, 0], rng.integers(-x, x + 1, 20)]), -x, x)
            for c in range(C)]
    n = max(len(v) for v in vals)
    X = np.stack([np.resize(v, n) for v in vals])       # (C, n)
    return T, X


def _run_quantizer(unit, T, X, **kw):
    spec, L = unit.spec, unit.lanes
    W, b = spec.fmap.bits, spec.datapath.act_bits
    C, n = X.shape
    writes = [[(unit.thr_we, 1), (unit.thr_chan, c), (unit.thr_k, k), (unit.thr_value, int(T[c, k]) & ((1 << W) - 1))]
              for c in range(C) for k in range(T.shape[1])]
    beats = [[(unit.in_group, g), (unit.in_data, pack(X[g * L:(g + 1) * L, i], W))]
             for i in range(n) for g in range(C // L)]
    run = run_stream(unit, beats, lambda ctx: _unpack(ctx.get(unit.out_code.as_value()), b, L, signed=False),
                     writes=writes, **kw)
    codes = codes_from_thresholds(X.T[None, :, :, None].transpose(0, 2, 1, 3), T[None])[0, :, :, 0]   # (C, n)
    want = [[int(v) for v in codes[g * L:(g + 1) * L, i]] for i in range(n) for g in range(C // L)]
    return run, want


@pytest.mark.parametrize("act_bits,lanes,ready_prob", [(4, 4, 1.0), (3, 2, 0.6), (2, 8, 0.8), (6, 4, 0.7)])
def test_quantizer_matches_golden(act_bits, lanes, ready_prob):
    spec = _ispec(act_bits=act_bits, words=5 if act_bits == 6 else 4)
    unit = Quantizer(spec=spec, lanes=lanes)
    T, X = _quantizer_case(spec, np.random.default_rng(act_bits), spec.datapath.channels)
    run, want = _run_quantizer(unit, T, X, valid_prob=0.8, ready_prob=ready_prob, seed=act_bits)
    assert run.missing == 0 and run.outputs == want


def test_quantizer_latency_and_slots():
    spec = _ispec()
    unit = Quantizer(spec=spec, lanes=4)
    T, X = _quantizer_case(spec, np.random.default_rng(5), 8)
    run, want = _run_quantizer(unit, T, X)
    assert run.outputs == want and run.latencies == {unit.latency} == {5}
    # the slots of a 4-stage search: stage 0 holds T_7, stage 1 T_3 and T_11, stage 3 the even-indexed ones
    assert threshold_slot(7, 4) == (0, 0) and threshold_slot(3, 4) == (1, 0) and threshold_slot(11, 4) == (1, 1)
    assert sorted(threshold_slot(k, 4) for k in range(0, 15, 2)) == [(3, j) for j in range(8)]


@pytest.mark.parametrize("fault", sorted(QUANTIZER_FAULTS))
def test_quantizer_faults_are_caught(fault):
    spec = _ispec()
    T, X = _quantizer_case(spec, np.random.default_rng(3), 8)
    run, want = _run_quantizer(Quantizer(spec=spec, lanes=4, fault=fault), T, X)
    assert run.outputs != want


# --- post unit --------------------------------------------------------------------------------------------------
def _post_case(spec, rng, n):
    """n lane values: accumulators (the extremes included), multipliers, shifts, residuals and ReLU/add flags."""
    amax = spec.datapath.acc_max
    acc = np.concatenate([[amax, -amax, 0, 1, -1], rng.integers(-amax, amax + 1, n // 3),
                          rng.integers(-(1 << 20), 1 << 20, n)])[:n]
    mult = rng.integers(1 << (MULT_BITS - 1), 1 << MULT_BITS, n)
    mult[:2] = (1 << MULT_BITS) - 1
    sh = rng.integers(1, spec.post_shift_max + 1, n)
    sh[5:n // 2] = rng.integers(18, 30, n // 2 - 5)      # shifts that leave values near the format's range
    sh[:3] = [1, spec.post_shift_max, 40]
    skip = rng.integers(-spec.x_max, spec.x_max + 1, n)
    flags = rng.integers(0, 4, n)                         # bit 0: relu, bit 1: add
    return acc, mult, sh, skip, flags


def _post_expected(spec, acc, mult, sh, skip, flags):
    y = np.zeros(len(acc), np.int64)
    sat = np.zeros(len(acc), np.int64)
    for f in range(4):
        idx = np.nonzero(flags == f)[0]
        if not len(idx):
            continue
        k = len(idx)
        yy, _, fl = post_values(acc[idx].reshape(1, k, 1, 1), mult[idx], sh[idx].reshape(1, k), spec,
                                relu=bool(f & 1), skip=skip[idx].reshape(1, k, 1, 1) if f & 2 else None, flags=True)
        y[idx], sat[idx] = yy.ravel(), fl.ravel()
    return y, sat


def _run_post(unit, acc, mult, sh, skip, flags, **kw):
    spec, L = unit.spec, unit.lanes
    W = spec.fmap.bits
    n = len(acc)
    pad = (-n) % L
    acc, mult, sh, skip, flags = (np.concatenate([a, np.resize(a, pad)]) for a in (acc, mult, sh, skip, flags))
    beats, order = [], []
    for f in range(4):   # the flags are per beat: group lanes of equal flags
        idx = np.nonzero(flags == f)[0]
        idx = np.concatenate([idx, np.resize(idx, (-len(idx)) % L)]) if len(idx) else idx
        for i in range(0, len(idx), L):
            j = idx[i:i + L]
            order.append(j)
            beats.append([(unit.in_relu, f & 1), (unit.in_add, f >> 1),
                          (unit.in_acc, pack(acc[j], spec.datapath.acc_bits)), (unit.in_mult, pack(mult[j], MULT_BITS)),
                          (unit.in_shift, pack(sh[j], spec.post_shift_bits)), (unit.in_skip, pack(skip[j], W))])
    run = run_stream(unit, beats, lambda ctx: (tuple(_unpack(ctx.get(unit.out_y.as_value()), W, L)),
                                               tuple(_unpack(ctx.get(unit.out_sat.as_value()), 2, L, False))), **kw)
    y, sat = _post_expected(spec, acc, mult, sh, skip, flags)
    want = [(tuple(int(v) for v in y[j]), tuple(int(v) for v in sat[j])) for j in order]
    return run, want


@pytest.mark.parametrize("lanes,kw,ready_prob", [(2, {}, 1.0), (3, dict(denorm="split"), 0.6), (1, {}, 0.7)])
def test_post_unit_matches_golden(lanes, kw, ready_prob):
    spec = IntSpec(DatapathSpec(channels=8, **kw), FmapFormat(10, 2))
    unit = PostUnit(spec=spec, lanes=lanes)
    case = _post_case(spec, np.random.default_rng(lanes), 90)
    run, want = _run_post(unit, *case, valid_prob=0.8, ready_prob=ready_prob, seed=lanes)
    assert run.missing == 0 and run.outputs == want
    assert any(s[0] for _, ss in want for s in [ss]) and any(any(s) for _, s in want)


def test_post_unit_latency():
    spec = _ispec()
    unit = PostUnit(spec=spec, lanes=2)
    run, want = _run_post(unit, *_post_case(spec, np.random.default_rng(9), 40))
    assert run.outputs == want and run.latencies == {unit.latency} == {3}


@pytest.mark.parametrize("fault", sorted(POST_FAULTS))
def test_post_unit_faults_are_caught(fault):
    spec = _ispec()
    run, want = _run_post(PostUnit(spec=spec, lanes=2, fault=fault), *_post_case(spec, np.random.default_rng(4), 80))
    assert run.outputs != want


def test_static_requantizer_matches_golden():
    spec = UniformSpec(4, 4, channels=8)
    unit = StaticRequantizer(spec=spec, lanes=4)
    rng = np.random.default_rng(0)
    _, _, shift_max = requant_widths(spec.acc_max)
    seen = set()
    for mult, sh, zero in (((1 << 24) - 1, 30, 3), (1 << 23, 1, 0), (12345678, shift_max, 15), (9999999, 20, 8)):
        acc = np.concatenate([[spec.acc_max, -spec.acc_max, 0, 1], rng.integers(-spec.acc_max, spec.acc_max + 1, 12),
                              rng.integers(-64, 64, 16) << max(0, sh - 8)]).clip(-spec.acc_max, spec.acc_max)
        beats = [[(unit.cfg_mult, mult), (unit.cfg_shift, sh), (unit.cfg_zero, zero),
                  (unit.in_acc, pack(acc[i:i + 4], spec.acc_bits))] for i in range(0, len(acc), 4)]
        run = run_stream(unit, beats, lambda ctx: _unpack(ctx.get(unit.out_code.as_value()), 4, 4, False),
                         ready_prob=0.7)
        want = static_requantize(acc.reshape(1, 1, 1, -1), np.array([mult]), np.array([[sh]]), zero, 4).ravel()
        assert [v for beat in run.outputs for v in beat] == want.tolist()
        seen |= set(want.tolist())
    assert {0, 15} < seen and len(seen) > 4     # both clamps and values between them


def test_units_validate_and_elaborate():
    spec = _ispec()
    for unit in (StatsUnit(spec=spec, lanes=4), ThresholdUnit(spec=spec), Quantizer(spec=spec, lanes=4),
                 PostUnit(spec=spec, lanes=2), StaticRequantizer(spec=UniformSpec(4, 4), lanes=2)):
        Fragment.get(unit, None)
    with pytest.raises(TypeError):
        StatsUnit(spec=DatapathSpec(), lanes=4)
    with pytest.raises(ValueError, match="unknown fault"):
        Quantizer(spec=spec, lanes=4, fault="x")
    assert WordSet(4).denom * 2 == spec.thr_divisor


def test_report_rows_and_section():
    """hw.report's contract-2 designs elaborate, and its section turns rows into the pipeline share."""
    from hw.report import ECP5_LANES, SPLIT_DEFAULT, _int_units_section, int_units_plan

    jobs = int_units_plan()
    assert {j["kind"] for j in jobs} == {"stats", "thresholds", "quantizer", "post", "uniform-requant"}
    for j in jobs[:3]:
        Fragment.get(j["make"](), None)

    def row(kind, lanes, lut_eq, group="ecp5-int", **kw):
        return dict(group=group, kind=kind, lanes=lanes, name=f"{kind} l{lanes}",
                    raw={"ecp5": {"lut_eq": lut_eq, "lut4": lut_eq}, "ecp5-dsp": {"lut_eq": lut_eq, "mult18": 0}}, **kw)

    rows = [row("stats", 16, 300), row("stats", 1, 100), row("thresholds", None, 200), row("quantizer", 16, 400),
            row("post", 16, 1600), row("post", 1, 100), row("uniform-requant", 16, 900), row("uniform-requant", 1, 60),
            row("dfsq", ECP5_LANES, 8000, group="ecp5", denorm="split", sigma_bits=SPLIT_DEFAULT[0],
                shift_bits=SPLIT_DEFAULT[1]),
            row("mean-unit", None, 1000, group="ecp5")]
    text = "\n".join(_int_units_section(rows))
    assert "| every unit at 16 lanes | 9000 | 300 | 200 | 400 | 1600 | 900 | 7.8% | 900 | 2.8 |" in text
    assert "| rate-matched: quantizer 16 lanes, statistics and post unit 1 lane | 9000 | 100 | 200 | 400 | 100 | " \
           "700 | 7.1% | 60 | 13.3 |" in text
