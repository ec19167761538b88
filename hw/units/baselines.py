"""Uniform multiplier MACs, the baselines of docs/hardware.md.

A :class:`MultiplierMAC` is what a designer writes without DFSQ: ``acc += a * b`` with Yosys mapping the ``*``.
It has the same pipeline as :class:`hw.units.mac.ShiftAddMAC` (registered inputs, product register, accumulator) and,
in :func:`baselines`, the same accumulator width, so an area difference is the multiplier's.
"""
from __future__ import annotations

from amaranth.hdl import Module, Shape, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from golden.spec import DatapathSpec

from .decoder import check_spec
from .mac import Accumulator, mac_acc_bits

__all__ = ["MultiplierMAC", "baselines", "equal_precision_name"]


class MultiplierMAC(wiring.Component):
    """``out_acc = sum of in_a * in_b`` since the last ``in_first`` beat, with a generic multiplier.

    Parameters
    ----------
    a_shape, b_shape : Shape
        Operand shapes (signed for two's-complement operands).
    acc_bits : int
        Width of the signed accumulator; must exceed the product width.

    Attributes
    ----------
    in_valid : In(1)
        A beat is present.
    in_first : In(1)
        The beat restarts the sum from zero.
    in_a : In(a_shape)
        First factor.
    in_b : In(b_shape)
        Second factor.
    out_valid : Out(1)
        ``out_acc`` holds the sum after a beat, ``latency`` cycles after that beat's ``in_valid``.
    out_acc : Out(signed(acc_bits))
        Running sum.
    """

    def __init__(self, *, a_shape, b_shape, acc_bits):
        a_shape, b_shape = Shape.cast(a_shape), Shape.cast(b_shape)
        product = a_shape.width + b_shape.width
        if not isinstance(acc_bits, int) or isinstance(acc_bits, bool) or acc_bits <= product:
            raise ValueError(f"acc_bits must be an integer above the product width {product}, not {acc_bits!r}")
        self._a_shape, self._b_shape, self._acc_bits = a_shape, b_shape, acc_bits
        super().__init__({
            "in_valid": In(1),
            "in_first": In(1),
            "in_a": In(a_shape),
            "in_b": In(b_shape),
            "out_valid": Out(1),
            "out_acc": Out(signed(acc_bits)),
        })

    @property
    def a_shape(self) -> Shape:
        return self._a_shape

    @property
    def b_shape(self) -> Shape:
        return self._b_shape

    @property
    def acc_bits(self) -> int:
        return self._acc_bits

    @property
    def latency(self) -> int:
        """Cycles from a beat's ``in_valid`` to its ``out_valid``: input register + accumulator."""
        return 1 + 2

    def elaborate(self, platform):
        m = Module()
        a, b = Signal(self._a_shape), Signal(self._b_shape)
        valid, first = Signal(), Signal()
        m.d.sync += [a.eq(self.in_a), b.eq(self.in_b), valid.eq(self.in_valid), first.eq(self.in_first)]
        product = a * b
        m.submodules.acc = acc = Accumulator(addend_shape=product.shape(), width=self._acc_bits)
        m.d.comb += [
            acc.valid.eq(valid),
            acc.first.eq(first),
            acc.addend.eq(product),
            acc.carry.eq(0),
            self.out_valid.eq(acc.out_valid),
            self.out_acc.eq(acc.out_acc),
        ]
        return m


def baselines(spec: DatapathSpec) -> dict[str, dict]:
    """Constructor arguments of the uniform MACs compared with the DFSQ MAC of ``spec``, by name.

    ``int4 x int4`` and ``int8 x int8`` (signed), and the equal-precision MAC: the same weight ``w'``
    (``w_bits``) times a signed ``p_bits`` operand, which holds every point of the universal set exactly. All
    use the DFSQ MAC's accumulator width. Build one with ``MultiplierMAC(**baselines(spec)[name])``.
    """
    check_spec(spec)
    acc = mac_acc_bits(spec)
    return {
        "int4 x int4": dict(a_shape=signed(4), b_shape=signed(4), acc_bits=acc),
        "int8 x int8": dict(a_shape=signed(8), b_shape=signed(8), acc_bits=acc),
        equal_precision_name(spec): dict(a_shape=signed(spec.w_bits), b_shape=signed(spec.p_bits), acc_bits=acc),
    }


def equal_precision_name(spec: DatapathSpec) -> str:
    return f"int{spec.w_bits} x int{spec.p_bits} (equal precision)"
