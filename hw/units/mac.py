"""The DFSQ multiply-accumulate unit (Verilog top ``dfsq_mac``) and the accumulator it shares with the baselines."""
from __future__ import annotations

from amaranth.hdl import Module, Mux, Shape, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from golden.spec import TAPS, DatapathSpec, signed_bits

from .decoder import check_spec, code_layout
from .shift_add import ShiftAddMultiplier, check_fault, check_variant

__all__ = ["mac_acc_bits", "Accumulator", "ShiftAddMAC"]


def mac_acc_bits(spec: DatapathSpec) -> int:
    """Accumulator width of the MAC: the running sum of ``TAPS * channels`` products cannot overflow."""
    check_spec(spec)
    return signed_bits(TAPS * spec.channels * spec.product_max)


class Accumulator(wiring.Component):
    """Pipelined accumulator with restart, registered input and output.

    ``out_acc`` after a beat is the sum of ``addend (+ carry)`` over the beats since the last ``first`` (that beat
    included). Two implementations, both without any extra logic in front of the adder:

    * ``carry_in=False``: ``sum <= first ? addend : sum + addend``; the restart mux merges into the adder's LUTs
      (under restart the carry chain is ignored) and the sum register is the output.
    * ``carry_in=True``: ``sum + addend + carry`` (the carry enters the adder's carry chain, so a restart cannot
      simply ignore the chain): the sum register is cleared (synchronous reset) while a ``first`` beat waits in
      the input register, and the result is kept in a separate output register.

    Parameters
    ----------
    addend_shape : Shape
        Shape of the addend (signed or unsigned).
    width : int
        Width of the signed sum; the caller guarantees it cannot overflow.
    carry_in : bool
        Whether ``carry`` is used (else it is ignored).

    Attributes
    ----------
    valid : In(1)
        A beat is present on ``first``/``addend``/``carry``.
    first : In(1)
        The beat restarts the sum.
    addend : In(addend_shape)
        Value added.
    carry : In(1)
        Extra ``+1`` (a deferred negation carry); only with ``carry_in``.
    out_valid : Out(1)
        ``out_acc`` holds the result of a beat.
    out_acc : Out(signed(width))
        Running sum after that beat.
    """

    def __init__(self, *, addend_shape, width, carry_in=False):
        addend_shape = Shape.cast(addend_shape)
        if not isinstance(width, int) or isinstance(width, bool) or width < addend_shape.width + 1:
            raise ValueError(f"width must be an integer wider than the addend ({addend_shape.width} bits), "
                             f"not {width!r}")
        if not isinstance(carry_in, bool):
            raise TypeError(f"carry_in must be a bool, not {carry_in!r}")
        self._addend_shape = addend_shape
        self._width = width
        self._carry_in = carry_in
        super().__init__({
            "valid": In(1),
            "first": In(1),
            "addend": In(addend_shape),
            "carry": In(1),
            "out_valid": Out(1),
            "out_acc": Out(signed(width)),
        })

    @property
    def addend_shape(self) -> Shape:
        return self._addend_shape

    @property
    def width(self) -> int:
        return self._width

    @property
    def carry_in(self) -> bool:
        return self._carry_in

    @property
    def latency(self) -> int:
        """Cycles from a beat on the inputs to its ``out_valid``."""
        return 2

    def elaborate(self, platform):
        m = Module()
        valid = Signal()
        first = Signal()
        addend = Signal(self._addend_shape)
        total = Signal(signed(self._width))
        m.d.sync += [valid.eq(self.valid), first.eq(self.first), addend.eq(self.addend),
                     self.out_valid.eq(valid)]
        if not self._carry_in:
            with m.If(valid):
                m.d.sync += total.eq(Mux(first, addend, total + addend))
            m.d.comb += self.out_acc.eq(total)
            return m
        carry = Signal()
        nxt = Signal(signed(self._width))
        m.d.sync += carry.eq(self.carry)
        m.d.comb += nxt.eq(total + addend + carry)
        with m.If(self.valid & self.first):
            m.d.sync += total.eq(0)  # the waiting beat is first: start it from zero
        with m.Elif(valid):
            m.d.sync += total.eq(nxt)
        with m.If(valid):
            m.d.sync += self.out_acc.eq(nxt)
        return m


class ShiftAddMAC(wiring.Component):
    """DFSQ multiply-accumulate: ``out_acc = sum of w' * P(code)`` since the last ``in_first`` beat.

    Pipeline: registered inputs, then the shift-add multiplier (:class:`hw.units.shift_add.ShiftAddMultiplier`),
    then the :class:`Accumulator` (with a carry-in when the multiplier defers its negation carry). With the
    ``"registered"`` multiplier the input register *is* the multiplier's partial-product register (the weight's
    magnitude and the selectors are combined before it), so the latency is the same.
    One beat per cycle, no back-pressure.

    Parameters
    ----------
    spec : golden.spec.DatapathSpec
        Word set and widths; the accumulator holds ``TAPS * spec.channels`` products (:func:`mac_acc_bits`).
    fault : str or None
        A key of :data:`hw.units.shift_add.FAULTS` for a deliberately broken variant, else ``None``.
    variant : str
        Multiplier micro-architecture (:data:`hw.units.shift_add.VARIANTS`, default ``"registered"``, the smallest
        in iCE40 LUT4; ``python -m hw.generate`` uses ``hw.generate.DEFAULT_VARIANTS["mac"]``, the same).

    Attributes
    ----------
    in_valid : In(1)
        A beat is present.
    in_first : In(1)
        The beat restarts the sum from zero.
    in_weight : In(signed(spec.w_bits))
        Two's-complement weight ``w'``.
    in_code : In(code_layout(spec))
        Point code (golden.spec layout: selectors, then sign).
    out_valid : Out(1)
        ``out_acc`` holds the sum after a beat, ``latency`` cycles after that beat's ``in_valid``.
    out_acc : Out(signed(mac_acc_bits(spec)))
        Running sum.
    """

    def __init__(self, *, spec, fault=None, variant="registered"):
        self._spec = check_spec(spec)
        self._fault = check_fault(fault)
        self._variant = check_variant(variant)
        super().__init__({
            "in_valid": In(1),
            "in_first": In(1),
            "in_weight": In(signed(spec.w_bits)),
            "in_code": In(code_layout(spec)),
            "out_valid": Out(1),
            "out_acc": Out(signed(mac_acc_bits(spec))),
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
    def acc_bits(self) -> int:
        return mac_acc_bits(self._spec)

    @property
    def latency(self) -> int:
        """Cycles from a beat's ``in_valid`` to its ``out_valid``: input register + accumulator."""
        return 1 + 2

    def elaborate(self, platform):
        m = Module()
        spec = self._spec
        m.submodules.mul = mul = ShiftAddMultiplier(spec=spec, fault=self._fault, variant=self._variant)
        m.submodules.acc = acc = Accumulator(addend_shape=mul.product.shape(), width=self.acc_bits,
                                             carry_in=not mul.exact)
        valid = Signal()
        first = Signal()
        m.d.sync += [valid.eq(self.in_valid), first.eq(self.in_first)]
        operands = [mul.weight.eq(self.in_weight), mul.code.eq(self.in_code)]
        if mul.latency == 0:
            m.d.sync += operands
        else:  # the multiplier registers its own (partial-product) inputs
            assert mul.latency == 1
            m.d.comb += operands
        m.d.comb += [
            acc.valid.eq(valid),
            acc.first.eq(first),
            acc.addend.eq(mul.product),
            acc.carry.eq(mul.carry),
            self.out_valid.eq(acc.out_valid),
            self.out_acc.eq(acc.out_acc),
        ]
        return m
