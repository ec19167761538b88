"""The shift-add multiplier: weight x DFSQ point as N muxed, pre-wired shifts and a balanced adder tree.

Word i of a point selects one of three fixed shifts ``spec.wordset.shift_table[i-1]`` (or zero), so its partial
product is a small mux of pre-wired shifts of the weight; the N partial products meet in a balanced adder tree.

Four micro-architectures are kept, because docs/hardware.md measures them against each other:

``"registered"`` (the MAC's default)
    ``"deferred"``'s arithmetic with the partial products *registered*: the multiplier samples ``weight`` and
    ``code`` at a clock edge (latency 1, it replaces the input register of a MAC) and each bit of word i's
    partial product is a flip-flop. A bit with one source (``|w|_k`` when the selector is X) is that weight bit
    with the flip-flop's synchronous reset driven by "selector is not X" (one decode LUT per word and region,
    shared by the region's bits), so the AND costs no LUT; only bits where two shifts overlap keep a mux LUT in
    front of the flip-flop. The trade: fewer LUT4 but more flip-flops (one per partial-product bit instead of
    one per input bit); on iCE40 logic cells (one LUT4 + one flip-flop) the two roughly cancel.
``"fold"``
    The point's sign is folded into the weight first: ``ws = -w if sign else w``, computed bitwise
    (bit j of ``-w`` is ``w_j xor (any lower bit of w set)``: one small LUT per bit, no carry chain). Each
    partial product is kept at offset ``min(shifts)`` so its always-zero low bits never enter an adder, and each
    adder spans only the bits both operands can reach (:mod:`hw.units.arith`). The product is exact (``carry`` = 0),
    so an accumulator's restart mux merges into its adder LUTs.
``"deferred"``
    Shifts the weight's magnitude ``|w|`` (unsigned rows, no sign extension), XORs the tree's result with the
    product sign (free in the last adder's LUTs) and hands the negation's ``+1`` out as ``carry`` for the
    consumer's carry-in. Fewer LUT4, but the accumulator then needs a separate output register.
``"naive"``
    The textbook version: every partial product at full width and offset 0, negate the sum at the end.

``product + carry == weight * P(code)`` for every variant (``P`` as in ``golden.spec.WordSet.code_to_int``).
"""
from __future__ import annotations

from amaranth.hdl import Const, Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from golden.spec import DatapathSpec, SEL_NEAR, SEL_ONE

from .arith import Term, balanced_reduce, balanced_sum
from .decoder import Sel, check_spec, code_layout

__all__ = ["FAULTS", "VARIANTS", "COMBINATIONAL_VARIANTS", "shift_table", "negate_if", "ShiftAddMultiplier"]

#: Deliberately broken variants, for mutation tests of the verification flow only.
FAULTS = {
    "shift": "word 2's SEL_NEAR selection decodes to shift K-1 instead of K-2 (one wrong shift amount)",
}

#: Micro-architectures of the multiplier (see the module docstring).
VARIANTS = ("registered", "fold", "deferred", "naive")

#: The variants that are purely combinational (latency 0).
COMBINATIONAL_VARIANTS = ("fold", "deferred", "naive")


def check_fault(fault):
    if fault is not None and fault not in FAULTS:
        raise ValueError(f"unknown fault {fault!r}; known: {', '.join(sorted(FAULTS))}")
    return fault


def check_variant(variant, allowed=VARIANTS):
    if variant not in allowed:
        raise ValueError(f"unknown multiplier variant {variant!r}; known: {', '.join(allowed)}")
    return variant


def shift_table(spec: DatapathSpec, fault=None) -> tuple[tuple[int, int, int], ...]:
    """Per word (0-based row), the left shifts for SEL_ONE, SEL_NEAR, SEL_FAR; ``fault='shift'`` breaks one."""
    check_spec(spec)
    table = [list(row) for row in spec.wordset.shift_table]
    if check_fault(fault) == "shift":
        table[1][SEL_NEAR - SEL_ONE] += 1
    return tuple(tuple(row) for row in table)


def negate_if(m: Module, value, condition, *, name="negated") -> Signal:
    """``-value if condition else value`` for a two's-complement ``value`` as plain logic, without an adder.

    Bit j of ``-v`` is ``v_j xor (any lower bit of v is set)``: the result is ``v ^ (condition ? below : 0)``
    with ``below`` the prefix OR of ``v`` shifted up one bit, written as whole-vector operations (one OR of
    shifted copies, not a net per bit) so that an event-driven simulator evaluates it once per change of ``v``
    rather than once per bit. The result has ``value``'s shape; the caller guarantees ``-value`` fits
    (``value`` is never the most negative number).
    """
    shape = value.shape()
    width = shape.width
    bits = value.as_unsigned()
    out = Signal(shape, name=name)
    if width == 1:  # -v == v for one bit
        m.d.comb += out.eq(bits)
        return out
    below = balanced_reduce([(bits << k)[:width] for k in range(1, width)], lambda a, b: a | b)
    m.d.comb += out.eq(bits ^ Mux(condition, below, 0))
    return out


def select_by_bits(sel, options: dict):
    """``options[sel]`` as a binary tree of 2-input muxes, one level per bit of ``sel`` (LSB first).

    The same 4:1 multiplexer as a ``case`` block, written so that an event-driven simulator evaluates a few
    muxes on a change of ``sel`` instead of a process or a chain of comparators.
    """
    level = [options[v] for v in range(1 << len(sel))]
    for bit in range(len(sel)):
        level = [Mux(sel[bit], level[j + 1], level[j]) for j in range(0, len(level), 2)]
    return level[0]


class ShiftAddMultiplier(wiring.Component):
    """Weight x point product from N shifters and a balanced adder tree.

    ``product + carry == weight * P(code)`` exactly, for every ``|weight| <= spec.w_max`` and every code of the
    universal set, ``latency`` cycles after ``weight`` and ``code`` (0: combinational; 1 for ``"registered"``,
    whose partial products are flip-flops in the ``sync`` domain, updated every cycle). ``carry`` is constant 0
    unless the variant defers its negation carry (``"deferred"``, ``"registered"``).

    Parameters
    ----------
    spec : golden.spec.DatapathSpec
        Word set, weight width and product width.
    fault : str or None
        ``None`` for the correct datapath; a key of :data:`FAULTS` for a deliberately broken variant.
    variant : str
        Micro-architecture, one of :data:`VARIANTS` (default ``"fold"``).

    Attributes
    ----------
    weight : In(signed(spec.w_bits))
        Two's-complement weight ``w' = q - zero_point``.
    code : In(code_layout(spec))
        Point code: N word selectors and a sign.
    product : Out(signed(spec.product_bits))
        ``w * P - carry`` (of the ``weight`` and ``code`` of ``latency`` cycles before).
    carry : Out(1)
        The deferred ``+1`` of a ones'-complement negation (``"deferred"``, ``"registered"``); add it as a
        carry-in.
    """

    def __init__(self, *, spec, fault=None, variant="fold"):
        self._spec = check_spec(spec)
        if spec.uniform_points:
            raise ValueError("the shift-add multiplier needs a universal-set spec (point_set='universal'), not the "
                             "uniform point set")
        self._fault = check_fault(fault)
        self._variant = check_variant(variant)
        self._shifts = shift_table(spec, fault)
        super().__init__({
            "weight": In(signed(spec.w_bits)),
            "code": In(code_layout(spec)),
            "product": Out(signed(spec.product_bits)),
            "carry": Out(1),
        })

    @property
    def spec(self) -> DatapathSpec:
        return self._spec

    @property
    def fault(self):
        return self._fault

    @property
    def variant(self) -> str:
        return self._variant

    @property
    def exact(self) -> bool:
        """``product`` alone is the exact product (``carry`` is always 0)."""
        return self._variant not in ("deferred", "registered")

    @property
    def shifts(self) -> tuple[tuple[int, int, int], ...]:
        """The shift table this instance is wired with (per word: ONE, NEAR, FAR)."""
        return self._shifts

    @property
    def latency(self) -> int:
        """Cycles from ``weight``/``code`` to ``product``/``carry``: 1 for ``"registered"``, else 0."""
        return 1 if self._variant == "registered" else 0

    def _registered_rows(self, m, magnitude, code):
        """Word i's partial product ``|w| << shift(sel_i)`` as flip-flops (:data:`VARIANTS`, ``"registered"``).

        Each bit is written as a mux chain ending in 0 (``sel == X ? |w|_k : ... : 0``), which Yosys turns into
        a flip-flop whose synchronous reset is the (shared) "no source selected" decode.
        """
        wb = magnitude.shape().width
        terms = []
        for i, shifts in enumerate(self._shifts):
            low, high = min(shifts), max(shifts) + wb
            row = Signal(unsigned(high - low), name=f"row{i + 1}")
            sel = code.sels[i].as_value()
            for b in range(low, high):
                bit = Const(0, 1)
                for s, shift in zip((Sel.ONE, Sel.NEAR, Sel.FAR), shifts):
                    if 0 <= b - shift < wb:
                        bit = Mux(sel == s.value, magnitude[b - shift], bit)
                m.d.sync += row[b - low].eq(bit)
            terms.append(Term(row, 0, self._spec.w_max << (max(shifts) - low), low))
        return terms

    def _terms(self, m, operand, w_lo, w_hi, *, trim):
        """Word i's partial product: a mux of ``operand`` shifted by the word's three shifts, or zero."""
        width = operand.shape().width
        terms = []
        for i, shifts in enumerate(self._shifts):
            low = min(shifts) if trim else 0
            high = max(shifts)
            term = Signal(Shape(width + high - low, operand.shape().signed), name=f"term{i + 1}")
            options = {s.value: operand << (shift - low) for s, shift in zip((Sel.ONE, Sel.NEAR, Sel.FAR), shifts)}
            options[Sel.ZERO.value] = Const(0, term.shape())
            m.d.comb += term.eq(select_by_bits(self.code.sels[i].as_value(), options))
            scale = high - low
            terms.append(Term(term, min(0, w_lo << scale), max(0, w_hi << scale), low))
        return terms

    def elaborate(self, platform):
        m = Module()
        spec = self._spec
        w_max = spec.w_max
        product = Signal(signed(spec.product_bits))
        if self._variant == "fold":
            ws = negate_if(m, self.weight, self.code.sign, name="signed_weight")
            total, _ = balanced_sum(m, self._terms(m, ws, -w_max, w_max, trim=True), name="prod")
            m.d.comb += [product.eq(total.scaled()), self.carry.eq(0)]
        elif self._variant == "registered":
            negative = Signal()
            m.d.sync += negative.eq(self.code.sign ^ self.weight[-1])
            magnitude = Signal(unsigned(spec.weight_bits))
            m.d.comb += magnitude.eq(negate_if(m, self.weight, self.weight[-1], name="abs_weight"))
            total, _ = balanced_sum(m, self._registered_rows(m, magnitude, self.code), name="mag")
            mag = Signal(signed(spec.product_bits))
            m.d.comb += [
                mag.eq(total.scaled()),
                # XOR with the replicated sign: measured one LUT4 and one flip-flop fewer than a mux here
                product.eq(mag ^ negative.replicate(spec.product_bits)),
                self.carry.eq(negative),
            ]
        elif self._variant == "deferred":
            negative = Signal()
            m.d.comb += negative.eq(self.code.sign ^ self.weight[-1])
            magnitude = Signal(unsigned(spec.weight_bits))
            m.d.comb += magnitude.eq(negate_if(m, self.weight, self.weight[-1], name="abs_weight"))
            total, _ = balanced_sum(m, self._terms(m, magnitude, 0, w_max, trim=True), name="mag")
            mag = Signal(signed(spec.product_bits))
            m.d.comb += [
                mag.eq(total.scaled()),
                # a mux, not an XOR with the replicated sign: one event per sign change under Icarus
                product.eq(Mux(negative, ~mag, mag)),
                self.carry.eq(negative),
            ]
        else:  # naive
            total, _ = balanced_sum(m, self._terms(m, self.weight, -w_max, w_max, trim=False), name="prod")
            mag = Signal(signed(spec.product_bits))
            m.d.comb += [
                mag.eq(total.scaled()),
                product.eq(Mux(self.code.sign, -mag, mag)),
                self.carry.eq(0),
            ]
        if max(abs(total.abs_lo), abs(total.abs_hi)) > spec.product_max and self._fault is None:
            raise AssertionError("shift-add product exceeds golden.spec's bound")  # pragma: no cover
        m.d.comb += self.product.eq(product)
        return m
