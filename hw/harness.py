"""A scan harness that registers every port of a design, for fmax measurements of designs with many ports.

Every input bit of the wrapped component comes from a flip-flop of a serial shift chain (pin ``si``); every
output bit is captured into a flip-flop of a parallel-load shift chain (pins ``load``, ``so``). Timing paths
then start and end at flip-flops inside the FPGA, whatever the number of ports, and nothing can be optimised
away (every output reaches ``so``). The harness adds flip-flops and one mux LUT per output bit, so area is
measured on the bare design, never on the harness.
"""
from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["ScanHarness"]


class ScanHarness(wiring.Component):
    """Wrap ``design`` (a :class:`wiring.Component` in the ``sync`` domain) between two scan chains.

    Parameters
    ----------
    design : wiring.Component
        The design under measurement; all its members must be plain ports (no nested signatures).

    Attributes
    ----------
    si : In(1)
        Serial input of the input chain.
    load : In(1)
        Capture all outputs into the output chain (else shift it).
    so : Out(1)
        Serial output of the output chain.
    """

    def __init__(self, design):
        if not isinstance(design, wiring.Component):
            raise TypeError(f"design must be a wiring.Component, not {design!r}")
        for name, member in design.signature.members.items():
            if not member.is_port:
                raise TypeError(f"member {name!r} of the design is not a port")
        self._design = design
        super().__init__({"si": In(1), "load": In(1), "so": Out(1)})

    @property
    def design(self):
        return self._design

    def elaborate(self, platform):
        m = Module()
        m.submodules.design = design = self._design
        inputs, outputs = [], []
        for name, member in design.signature.members.items():
            port = getattr(design, name)
            value = port.as_value() if hasattr(port, "as_value") else port
            (inputs if member.flow == wiring.In else outputs).append(value)
        in_width = sum(len(v) for v in inputs)
        out_width = sum(len(v) for v in outputs)
        chain_in = Signal(in_width)
        chain_out = Signal(out_width)
        m.d.sync += chain_in.eq(Cat(self.si, chain_in[:-1]) if in_width > 1 else self.si)
        pos = 0
        for v in inputs:
            m.d.comb += v.eq(chain_in[pos:pos + len(v)])
            pos += len(v)
        captured = Cat(*outputs)
        m.d.sync += chain_out.eq(Mux(self.load, captured, chain_out >> 1))
        m.d.comb += self.so.eq(chain_out[0])
        return m
