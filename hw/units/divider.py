"""A sequential divider: ``q = floor(num / den)`` for a signed numerator and a positive denominator.

One quotient bit per cycle (restoring division on |num|, then the floor correction for a negative numerator), so
``num_bits`` cycles from ``start`` to ``done``. The accelerator's parameter unit uses it for the statistics' mean
(``floor((2 S + N) / (2 N))``) and each output channel's ``bias_int`` (golden.int_layer: a round-half-up division
by the weight scale's significand), a few hundred divisions per layer against the conv's ``H W O G`` cycles.
"""
from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["SeqDivider"]


class SeqDivider(wiring.Component):
    """``quotient = floor(num / den)`` (den > 0), ``num_bits`` cycles after ``start``.

    Parameters
    ----------
    num_bits : int
        Width of the signed numerator.
    den_bits : int
        Width of the unsigned denominator.

    Attributes
    ----------
    start : In(1)
        Latch ``num`` and ``den`` and begin (ignored while busy).
    num : In(signed(num_bits))
        Numerator.
    den : In(unsigned(den_bits))
        Denominator, > 0 (0 gives an all-ones magnitude).
    busy : Out(1)
        A division is running.
    done : Out(1)
        ``quotient`` is valid (one cycle, then held until the next ``start``).
    quotient : Out(signed(num_bits))
        floor(num / den).
    """

    def __init__(self, *, num_bits: int, den_bits: int):
        for name, v in (("num_bits", num_bits), ("den_bits", den_bits)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 2:
                raise ValueError(f"{name} must be an integer >= 2, not {v!r}")
        self._num_bits, self._den_bits = num_bits, den_bits
        super().__init__({"start": In(1), "num": In(signed(num_bits)), "den": In(unsigned(den_bits)),
                          "busy": Out(1), "done": Out(1), "quotient": Out(signed(num_bits))})

    @property
    def num_bits(self) -> int:
        return self._num_bits

    @property
    def latency(self) -> int:
        """Cycles from ``start`` to ``done``."""
        return self._num_bits + 1

    def elaborate(self, platform):
        m = Module()
        n, d = self._num_bits, self._den_bits
        mag = Signal(n)                       # |num|, shifted out MSB first
        den = Signal(d)
        neg = Signal()
        rem = Signal(d + 1)
        q = Signal(n)
        count = Signal(range(n + 1))
        trial = Signal(d + 2)
        m.d.comb += trial.eq(Cat(mag[-1], rem) - den)
        m.d.sync += self.done.eq(0)
        with m.If(self.busy):
            with m.If(count == 0):
                # floor for a negative numerator: -(q) - (remainder != 0)
                m.d.sync += [self.busy.eq(0), self.done.eq(1),
                             self.quotient.eq(Mux(neg, -q.as_signed() - (rem != 0), q.as_signed()))]
            with m.Else():
                with m.If(~trial[-1]):
                    m.d.sync += [rem.eq(trial[:d + 1]), q.eq(Cat(1, q[:-1]))]
                with m.Else():
                    m.d.sync += [rem.eq(Cat(mag[-1], rem[:-1])), q.eq(Cat(0, q[:-1]))]
                m.d.sync += [mag.eq(Cat(0, mag[:-1])), count.eq(count - 1)]
        with m.Elif(self.start):
            m.d.sync += [mag.eq(Mux(self.num < 0, -self.num, self.num)), den.eq(self.den),
                         neg.eq(self.num < 0), rem.eq(0), q.eq(0), count.eq(n), self.busy.eq(1)]
        return m
