"""The pipeline skeleton shared by the conv engines (:mod:`hw.units.engine`, :mod:`hw.units.uniform_engine`).

Both engines are a chain of registers enabled by one stall signal, ``en = !out_valid | out_ready`` (back-pressure
stalls the whole pipeline and ``in_ready = en``), ending in the accumulator over an output's beats: it restarts from
a start value on the first beat (the bias, or the split datapath's border-class start value) and emits on the last.
"""
from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed

__all__ = ["stall_enable", "stage_register", "accumulate_beats"]


def stall_enable(m: Module, component) -> Signal:
    """``en = !out_valid | out_ready``, driven onto ``component.in_ready``; every pipeline register uses it."""
    en = Signal()
    m.d.comb += [en.eq(~component.out_valid | component.out_ready), component.in_ready.eq(en)]
    return en


def stage_register(m: Module, en: Signal):
    """A factory of pipeline registers: ``stage(name, value, shape=None)`` registers ``value`` while ``en``."""

    def stage(name, value, shape=None):
        reg = Signal(shape if shape is not None else value.shape(), name=name)
        with m.If(en):
            m.d.sync += reg.eq(value)
        return reg

    return stage


def accumulate_beats(m: Module, en: Signal, component, *, valid, first, last, start, total, acc_bits: int) -> None:
    """The last stage: ``acc = (first ? start : acc) + total`` for every valid beat; on a last beat the sum goes to
    ``component.out_acc`` and ``out_valid`` rises (``acc_bits`` wide: the spec's bound, so it cannot overflow)."""
    acc = Signal(signed(acc_bits))
    nxt = Signal(signed(acc_bits))
    m.d.comb += nxt.eq(Mux(first, start, acc) + total)
    with m.If(en):
        m.d.sync += component.out_valid.eq(valid & last)
        with m.If(valid):
            m.d.sync += acc.eq(nxt)
            with m.If(last):
                m.d.sync += component.out_acc.eq(nxt)
