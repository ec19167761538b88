"""The DFSQ MAC and shift-add multiplier in Amaranth's simulator, against golden.datapath.product."""
from __future__ import annotations

import random

import numpy as np
import pytest
from amaranth.hdl import Fragment

from golden.datapath import product
from golden.spec import DatapathSpec, TAPS
from hw.units.mac import Accumulator, ShiftAddMAC, mac_acc_bits
from hw.units.shift_add import COMBINATIONAL_VARIANTS, FAULTS, VARIANTS, ShiftAddMultiplier, shift_table
from hw.testbench import run_mac

# components whose constructor raised are never elaborated, by design
pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")



def _elaborated(component):
    """Elaborate once (checks it builds, and marks it used)."""
    Fragment.get(component, None)
    return component


def _running(beats, wordset):
    """Model: out_acc after each beat (restart on first)."""
    out, acc = [], 0
    for first, w, code in beats:
        acc = (0 if first else acc) + product(w, code, wordset)
        out.append(acc)
    return out


def _exhaustive_beats(spec, seed, first_prob=0.3):
    ws = spec.wordset
    codes = [int(c) for c in ws.int_to_code(ws.ints)]
    rng = random.Random(seed)
    pairs = [(w, c) for w in range(-spec.w_max, spec.w_max + 1) for c in codes]
    rng.shuffle(pairs)
    return [(k == 0 or rng.random() < first_prob, w, c) for k, (w, c) in enumerate(pairs)]


@pytest.mark.parametrize("variant", ["registered", "deferred", "fold"])
def test_mac_exhaustive_default(variant):
    """Every weight value x every point of the universal set (377 x 31 for the default spec), random restarts,
    one beat per cycle, checked through a latency queue."""
    spec = DatapathSpec()
    beats = _exhaustive_beats(spec, seed=1)
    assert len(beats) == len(spec.wordset) * (2 * spec.w_max + 1) == 377 * 31
    mac = ShiftAddMAC(spec=spec, variant=variant)
    run = run_mac(mac, beats, _running(beats, spec.wordset))
    assert run.ok, run.mismatches[:5]
    assert run.latencies == {mac.latency}
    assert len(run.outputs) == len(beats)


def test_mac_products_one_by_one_with_gaps():
    """Every beat restarts (out_acc is the bare product), beats arrive with random gaps."""
    spec = DatapathSpec()
    beats = [(True, w, c) for _, w, c in _exhaustive_beats(spec, seed=2)][:3000]
    run = run_mac(ShiftAddMAC(spec=spec), beats, _running(beats, spec.wordset), valid_prob=0.6, seed=3)
    assert run.ok, run.mismatches[:5]


@pytest.mark.parametrize("words,weight_bits,variant", [(2, 4, "deferred"), (3, 3, "deferred"), (5, 4, "deferred"),
                                                       (4, 8, "deferred"), (5, 6, "fold"), (3, 4, "naive"),
                                                       (4, 4, "naive"), (2, 4, "registered"), (3, 3, "registered"),
                                                       (5, 4, "registered"), (4, 8, "registered"),
                                                       (5, 6, "registered")])
def test_mac_other_configs(words, weight_bits, variant):
    """Other word counts / weight widths / micro-architectures: the extreme points and weights plus a random
    sample (every point for up to 4 words)."""
    spec = DatapathSpec(words=words, weight_bits=weight_bits)
    ws = spec.wordset
    rng = random.Random(words * 10 + weight_bits)
    points = ws.ints
    if len(points) > 400:
        points = np.unique(np.concatenate([points[:8], points[-8:], rng.sample(list(points), 300)]))
    weights = sorted({-spec.w_max, spec.w_max, 0, 1, -1} | {rng.randint(-spec.w_max, spec.w_max) for _ in range(3)})
    beats = [(rng.random() < 0.2, w, int(c)) for c in ws.int_to_code(points) for w in weights]
    run = run_mac(ShiftAddMAC(spec=spec, variant=variant), beats, _running(beats, ws))
    assert run.ok, run.mismatches[:5]


def test_mac_worst_case_accumulation_fits():
    """TAPS * channels beats of the largest product (both signs) reach the accumulator's bound exactly."""
    spec = DatapathSpec(channels=2)
    ws = spec.wordset
    top = int(ws.int_to_code(ws.p_max))
    bottom = int(ws.int_to_code(-ws.p_max))
    n = TAPS * spec.channels
    beats = [(k == 0, spec.w_max, top) for k in range(n)] + [(k == 0, spec.w_max, bottom) for k in range(n)]
    expected = _running(beats, ws)
    assert max(abs(v) for v in expected) == n * spec.product_max
    assert (n * spec.product_max).bit_length() + 1 == mac_acc_bits(spec)
    run = run_mac(ShiftAddMAC(spec=spec), beats, expected)
    assert run.ok, run.mismatches[:5]


def test_fault_shift_is_caught():
    """The mutation: word 2's NEAR shift is off by one, so products using it differ from the model."""
    spec = DatapathSpec()
    assert shift_table(spec, "shift")[1] != spec.wordset.shift_table[1]
    assert [row for k, row in enumerate(shift_table(spec, "shift")) if k != 1] == \
        [row for k, row in enumerate(spec.wordset.shift_table) if k != 1]
    beats = [(True, w, c) for _, w, c in _exhaustive_beats(spec, seed=4)][:2000]
    run = run_mac(ShiftAddMAC(spec=spec, fault="shift"), beats, _running(beats, spec.wordset))
    assert run.mismatches
    assert not run.missing


def test_components_validate_parameters():
    spec = DatapathSpec()
    with pytest.raises(TypeError, match="DatapathSpec"):
        ShiftAddMAC(spec={"words": 4})
    with pytest.raises(ValueError, match="unknown fault"):
        ShiftAddMultiplier(spec=spec, fault="nope")
    with pytest.raises(ValueError, match="variant"):
        ShiftAddMAC(spec=spec, variant="fast")
    with pytest.raises(ValueError, match="wider than the addend"):
        Accumulator(addend_shape=16, width=8)
    with pytest.raises(TypeError, match="carry_in"):
        Accumulator(addend_shape=16, width=20, carry_in=1)
    assert set(VARIANTS) == {"registered", "fold", "deferred", "naive"} and "shift" in FAULTS
    assert set(COMBINATIONAL_VARIANTS) == set(VARIANTS) - {"registered"}


def test_parameters_are_read_only():
    mac = _elaborated(ShiftAddMAC(spec=DatapathSpec()))
    for name in ("spec", "latency", "fault", "variant", "acc_bits"):
        with pytest.raises(AttributeError):
            setattr(mac, name, None)
    assert mac.latency == 3 and mac.acc_bits == mac_acc_bits(DatapathSpec())
    mul = _elaborated(ShiftAddMultiplier(spec=DatapathSpec(), variant="fold"))
    assert mul.latency == 0 and mul.exact
    assert not _elaborated(ShiftAddMultiplier(spec=DatapathSpec(), variant="deferred")).exact
    reg = _elaborated(ShiftAddMultiplier(spec=DatapathSpec(), variant="registered"))
    assert reg.latency == 1 and not reg.exact
    assert mac.variant == "registered"  # the MAC's default
    for variant in VARIANTS:
        assert _elaborated(ShiftAddMAC(spec=DatapathSpec(), variant=variant)).latency == 3


@pytest.mark.parametrize("variant", VARIANTS)
def test_multiplier_every_weight_and_point(variant):
    """``product + carry == w' * P(code)`` for every weight value x every point, ``latency`` cycles later."""
    from amaranth.sim import Simulator
    spec = DatapathSpec()
    ws = spec.wordset
    codes = [int(c) for c in ws.int_to_code(ws.ints)]
    pairs = [(w, c) for w in range(-spec.w_max, spec.w_max + 1) for c in codes]
    mul = ShiftAddMultiplier(spec=spec, variant=variant)
    assert mul.latency in (0, 1)
    got = []

    async def bench(ctx):
        for w, c in pairs:
            ctx.set(mul.weight, w)
            ctx.set(mul.code.as_value(), c)
            for _ in range(mul.latency):  # a clock edge samples the operands (latency is 0 or 1)
                await ctx.tick()
            got.append(ctx.get(mul.product) + ctx.get(mul.carry))

    sim = Simulator(mul)
    if mul.latency:
        sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    want = [product(w, c, ws) for w, c in pairs]
    assert len(got) == len(want) and np.array_equal(np.array(got), np.array(want))


def test_signature_widths_come_from_the_spec():
    spec = DatapathSpec(words=3, weight_bits=6, channels=16)
    mac = _elaborated(ShiftAddMAC(spec=spec))
    members = mac.signature.members
    assert members["in_weight"].shape.width == spec.w_bits
    assert members["in_code"].shape.size == spec.code_bits
    assert members["out_acc"].shape.width == mac_acc_bits(spec)
    mul = _elaborated(ShiftAddMultiplier(spec=spec))
    assert mul.signature.members["product"].shape.width == spec.product_bits
    assert np.array_equal(np.array(mul.shifts), np.array(spec.wordset.shift_table))
