"""hw.units.arith: exact widths from bounds and balanced adder trees with carry-ins, checked by simulation."""
from __future__ import annotations

import random

import pytest
from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.sim import Simulator

from hw.units.arith import Carry, Term, balanced_reduce, balanced_sum, shape_for


def test_shape_for():
    assert shape_for(0, 0) == unsigned(1)
    assert shape_for(0, 255) == unsigned(8)
    assert shape_for(-1, 0) == signed(1)
    assert shape_for(-128, 127) == signed(8)
    assert shape_for(-129, 0) == signed(9)
    assert shape_for(0 - 5, 128) == signed(9)
    with pytest.raises(ValueError):
        shape_for(1, 0)


@pytest.mark.parametrize("seed", range(4))
def test_balanced_sum_matches_python(seed):
    """Random operands at random offsets and signs, plus carries: the tree's value and bounds are exact."""
    rng = random.Random(seed)
    m = Module()
    specs, terms, inputs = [], [], []
    for k in range(rng.randint(2, 9)):
        lo = rng.choice([0, -rng.randint(1, 300)])
        hi = rng.randint(max(lo, 0), 300)
        off = rng.choice([0, 0, 1, 3])
        sig = Signal(shape_for(lo, hi), name=f"x{k}")
        inputs.append(sig)
        specs.append((lo, hi, off))
        terms.append(Term(sig, lo, hi, off))
    terms.sort(key=lambda t: t.offset)
    specs = [(t.lo, t.hi, t.offset) for t in terms]
    inputs = [t.value for t in terms]
    carries = [Carry(Signal(name=f"c{k}"), 0) for k in range(3)]
    total, leftover = balanced_sum(m, terms, carries)
    out = Signal(shape_for(total.abs_lo, total.abs_hi))
    m.d.comb += out.eq(total.scaled())
    assert total.abs_lo == sum(lo << off for lo, _, off in specs)
    assert total.abs_hi == sum(hi << off for _, hi, off in specs) + sum(
        1 << c.position for c in carries if all(c is not x for x in leftover))
    sim = Simulator(m)

    async def bench(ctx):
        for _ in range(200):
            want = 0
            for sig, (lo, hi, off) in zip(inputs, specs):
                v = rng.randint(lo, hi)
                ctx.set(sig, v)
                want += v << off
            for c in carries:
                bit = rng.randint(0, 1)
                ctx.set(c.bit, bit)
                if all(c is not x for x in leftover):
                    want += bit
            assert ctx.get(out) == want
            for v in (total.abs_lo, total.abs_hi):
                assert out.shape().width >= shape_for(v, v).width

    sim.add_testbench(bench)
    sim.run()


def test_balanced_reduce_depth():
    xs = [Signal(name=f"b{k}") for k in range(9)]
    expr = balanced_reduce(xs, lambda a, b: a | b)
    m = Module()
    y = Signal()
    m.d.comb += y.eq(expr)
    sim = Simulator(m)

    async def bench(ctx):
        assert ctx.get(y) == 0
        ctx.set(xs[8], 1)
        assert ctx.get(y) == 1

    sim.add_testbench(bench)
    sim.run()
    with pytest.raises(ValueError):
        balanced_reduce([], lambda a, b: a)
