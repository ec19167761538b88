"""The whole-body accelerator: layer-program compiler, sequential divider, bit-exactness against the golden integer
network (Amaranth's simulator, a synthetic body with every graph feature), mutations caught and located."""
from __future__ import annotations

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from golden.errors import UserError
from golden.int_spec import FmapFormat, IntSpec
from golden.spec import DatapathSpec
from golden.synthetic import synthetic_int_network
from hw.program import (MUTATIONS, allocate, check_program, compile_program, config_image, load_records, mutate,
                        pack_record, size_for)
from hw.testbench import run_accelerator
from hw.units.accelerator import ACCEL_FAULTS, Accelerator
from hw.units.divider import SeqDivider

H, W = 5, 6


@pytest.fixture(scope="module")
def net():
    return synthetic_int_network(np.random.default_rng(0), H, W)


def _spec(net, lanes=4, max_pixels=64):
    graph, convs, ispec, post, X0, res = net
    aisp = IntSpec(datapath=DatapathSpec(channels=16), fmap=FmapFormat(16, 0), max_pixels=max_pixels)
    return size_for(graph, convs, aisp, lanes=lanes, max_pixels=max_pixels)


def _compile(net, **kw):
    graph, convs, ispec, post, X0, res = net
    return compile_program(graph, convs, ispec, post, _spec(net, **kw))


def _mismatches(prog, res, outputs):
    """Per step, the number of traced values that differ from the golden tensor (missing ones count)."""
    tr = np.asarray(outputs, np.int64)
    out, pos = [], 0
    for s in prog.steps:
        n = H * W * s.out_channels
        want = np.asarray(res.tensors[s.output][0], np.int64).reshape(s.out_channels, H * W).T.reshape(-1)
        got = tr[pos:pos + n]
        pos += n
        out.append(int(np.count_nonzero(got != want[:len(got)])) + n - len(got))
    return out


def test_divider_floors_signed_numerators():
    dut = SeqDivider(num_bits=12, den_bits=6)
    rng = random.Random(1)
    cases = [(-2048, 1), (2047, 1), (-1, 63), (0, 5), (-7, 2), (7, 2)] + \
        [(rng.randrange(-2048, 2048), rng.randrange(1, 64)) for _ in range(30)]
    got = []

    async def bench(ctx):
        for num, den in cases:
            ctx.set(dut.num, num)
            ctx.set(dut.den, den)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            for _ in range(dut.latency + 1):
                if ctx.get(dut.done):
                    break
                await ctx.tick()
            got.append(ctx.get(dut.quotient))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert got == [n // d for n, d in cases]


def test_allocation_and_pieces(net):
    graph, *_ = net
    where, peak = allocate(graph, 4)
    # x0 (2 groups) lives until x1's residual; y reuses x0's groups; z reuses t0's
    assert where["x0"] == 0 and where["t0"] == 2 and where["x1"] == 4 and where["y"] == 0 and where["z"] == 2
    assert peak == 6
    prog = _compile(net)
    # step 3 reads y (6 channels) then x1 (8): x1 starts at lane 2 of group 1, each of its words splits in two
    assert prog.steps[3].pieces == ((0, 0, 0, 0, 4), (1, 0, 1, 0, 2), (4, 0, 1, 2, 2), (4, 2, 2, 0, 2),
                                    (5, 0, 2, 2, 2), (5, 2, 3, 0, 2))
    check_program(prog)


def test_pack_record_is_lsb_first_twos_complement():
    lay = (("a", 3, False), ("b", 5, True), ("c", 1, False))
    rows = pack_record(lay, {"a": np.array([5, 0]), "b": np.array([-1, 3]), "c": np.array([1, 0])}, 2)
    assert [int.from_bytes(r.tobytes(), "little") for r in rows] == [5 | (31 << 3) | (1 << 8), 3 << 3]
    with pytest.raises(ValueError, match="does not fit"):
        pack_record(lay, {"b": np.array([16])}, 1)


def test_bad_programs_are_one_line_errors(net):
    graph, convs, ispec, post, X0, res = net
    small = _spec(net)
    import dataclasses

    with pytest.raises(UserError, match="feature-map groups"):
        compile_program(graph, convs, ispec, post, dataclasses.replace(small, fm_groups=3))
    with pytest.raises(UserError, match="words of wmem"):
        compile_program(graph, convs, ispec, post, dataclasses.replace(small, wmem=10))
    prog = compile_program(graph, convs, ispec, post, small)
    with pytest.raises(UserError, match="holds 64"):
        config_image(prog, 9, 9)
    bad = dataclasses.replace(prog, images=dict(prog.images, wmem=prog.images["wmem"][:, :-1]))
    with pytest.raises(UserError, match="bytes wide"):
        check_program(bad)
    with pytest.raises(UserError, match="unknown mutation"):
        mutate(prog, "nonsense")


def test_accelerator_bit_exact_on_every_step(net):
    """Statistics, thresholds, codes, the exponent, bias_int, the engine and the post unit of every step, with a
    ReLU, a post-ReLU input, a residual, a 1x1 conv and two concatenations (one at an unaligned channel offset)."""
    graph, convs, ispec, post, X0, res = net
    prog = _compile(net)
    run = run_accelerator(Accelerator(spec=prog.spec), load_records(prog, X0[0], H, W))
    assert run.missing == 0 and run.latencies == {0}
    assert _mismatches(prog, res, run.outputs) == [0, 0, 0, 0]


@pytest.mark.slow
@pytest.mark.parametrize("fault,first", [("stats_min", 0), ("residual_lane", 1)])
def test_accelerator_faults_are_caught_and_located(net, fault, first):
    assert fault in ACCEL_FAULTS
    graph, convs, ispec, post, X0, res = net
    prog = _compile(net)
    run = run_accelerator(Accelerator(spec=prog.spec, fault=fault), load_records(prog, X0[0], H, W))
    bad = _mismatches(prog, res, run.outputs)
    assert bad[:first] == [0] * first and bad[first] > 0


@pytest.mark.slow
def test_program_mutation_is_caught_at_its_step(net):
    assert "residual" in MUTATIONS
    graph, convs, ispec, post, X0, res = net
    prog = mutate(_compile(net), "residual")
    run = run_accelerator(Accelerator(spec=prog.spec), load_records(prog, X0[0], H, W))
    bad = _mismatches(prog, res, run.outputs)
    assert prog.mutation == ("residual", 1) and bad[0] == 0 and bad[1] > 0
