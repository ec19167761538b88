"""Bound-tracked integer arithmetic for the generated datapaths: exact widths and balanced adder trees.

Every operand is a :class:`Term`: an Amaranth value together with the Python-integer bounds of what it can hold
and a binary offset (its value counts in units of ``2**offset``). Adding two terms aligns them (the low bits of
the finer one pass straight through, so the adder only spans the bits where both can be non-zero) and sizes the
result from the sum of the bounds, never from a hard-coded width. :func:`balanced_sum` builds a balanced tree
(depth ceil(log2 n)) and can absorb single-bit addends ("deferred carries") as adder carry-ins, which is how the
shift-add multiplier's two's-complement ``+1`` reaches the accumulator for free.

Python's ``sum()`` is never used: a left fold over hundreds of Amaranth values is both deep logic and deep
recursion.
"""
from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Cat, Const, Module, Shape, Signal, Value, signed, unsigned

__all__ = ["shape_for", "Term", "Carry", "add", "balanced_sum", "balanced_reduce"]


def shape_for(lo: int, hi: int) -> Shape:
    """The narrowest shape holding every integer in [lo, hi] (unsigned when lo >= 0)."""
    lo, hi = int(lo), int(hi)
    if lo > hi:
        raise ValueError(f"empty range [{lo}, {hi}]")
    if lo >= 0:
        return unsigned(max(1, hi.bit_length()))
    width = max((-lo - 1).bit_length(), hi.bit_length() if hi > 0 else 0) + 1
    return signed(width)


@dataclass(frozen=True, eq=False)
class Term:
    """``value * 2**offset`` with ``value`` (an Amaranth value read with its own signedness) in [lo, hi]."""

    value: Value
    lo: int
    hi: int
    offset: int = 0

    @property
    def abs_lo(self) -> int:
        return self.lo << self.offset

    @property
    def abs_hi(self) -> int:
        return self.hi << self.offset

    def scaled(self) -> Value:
        """The term as a plain (offset 0) Amaranth value, sign-correct."""
        if self.offset == 0:
            return self.value
        return self.value << self.offset


@dataclass(frozen=True, eq=False)
class Carry:
    """A single-bit addend worth ``bit * 2**position``, to be absorbed as an adder's carry-in."""

    bit: Value
    position: int = 0


def add(m: Module, a: Term, b: Term, carry: Carry | None = None, *, name: str = "sum") -> Term:
    """``a + b (+ carry)`` as a new :class:`Term`.

    Only the bits where both operands can be non-zero go through the adder: the low ``|offset_a - offset_b|``
    bits of the finer operand are passed through. ``carry`` must sit at the adder's lowest position (the coarser
    offset).
    """
    if a.offset > b.offset:
        a, b = b, a
    d = b.offset - a.offset
    if carry is not None and carry.position != b.offset:
        raise ValueError("a carry-in must sit at the adder's lowest bit")
    c = 0 if carry is None else 1
    hlo = (a.lo >> d) + b.lo
    hhi = (a.hi >> d) + b.hi + c
    high = Signal(shape_for(hlo, hhi), name=f"{name}_hi" if d else name)
    operands = (a.value >> d) + b.value  # arithmetic shift when a is signed
    if carry is not None:
        operands = operands + carry.bit
    m.d.comb += high.eq(operands)
    lo = a.lo + (b.lo << d)
    hi = a.hi + ((b.hi + c) << d)
    if d == 0:
        return Term(high, lo, hi, a.offset)
    a_shape = a.value.shape()
    if a_shape.width < d:  # a lies entirely below b: extend it so its low d bits are well defined
        wide = Signal(Shape(d, a_shape.signed), name=f"{name}_ext")
        m.d.comb += wide.eq(a.value)
        low = wide
    else:
        low = a.value[:d]
    out = Signal(Shape(d + high.shape().width, high.shape().signed), name=name)
    m.d.comb += out.eq(Cat(low, high))
    return Term(out, lo, hi, a.offset)


def balanced_sum(m: Module, terms, carries=(), *, name: str = "tree"):
    """Sum ``terms`` with a balanced tree of two-input adders; absorb ``carries`` as carry-ins where aligned.

    Returns ``(total, leftover)``: ``total`` is a :class:`Term`, ``leftover`` the carries no adder could take
    (the caller adds them elsewhere, or passes them on). The tree pairs neighbours level by level, so put terms of
    similar offsets next to each other.
    """
    level = list(terms)
    pending = list(carries)
    if not level:
        raise ValueError("balanced_sum needs at least one term")
    depth = 0
    while len(level) > 1:
        nxt = []
        for j in range(0, len(level) - 1, 2):
            a, b = level[j], level[j + 1]
            pos = max(a.offset, b.offset)
            k = next((k for k, c in enumerate(pending) if c.position == pos), None)
            carry = None if k is None else pending.pop(k)
            nxt.append(add(m, a, b, carry, name=f"{name}_l{depth}_{j // 2}"))
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
        depth += 1
    return level[0], pending


def balanced_reduce(values, op):
    """Reduce a non-empty sequence of Amaranth values with a binary ``op`` as a balanced tree (for OR/XOR/AND)."""
    level = list(values)
    if not level:
        raise ValueError("balanced_reduce needs at least one value")
    while len(level) > 1:
        level = [op(level[j], level[j + 1]) for j in range(0, len(level) - 1, 2)] + (
            [level[-1]] if len(level) % 2 else [])
    return level[0]


def const_term(value: int) -> Term:
    """A constant as a :class:`Term` (for tests and degenerate trees)."""
    return Term(Const(value, shape_for(value, value)), value, value, 0)
