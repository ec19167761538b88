"""Point decoding: the code layout of golden.spec as Amaranth data layouts, and the loadable point table.

A point's code (``golden.spec``, "Code of a point") is N two-bit word selectors followed by a sign bit. In
hardware the selectors *are* the shift selections: word i's selector picks one of three pre-wired shifts of the
weight (or zero), so decoding a code needs no logic, only the right view of its bits (:func:`code_layout`).
The per-input-channel point table (:class:`PointDecoder`) maps a b-bit point index to such a code.
"""
from __future__ import annotations

from amaranth.hdl import Cat, Module, signed
from amaranth.lib import data, enum, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from golden.spec import DatapathSpec, SEL_FAR, SEL_NEAR, SEL_ONE, SEL_ZERO

__all__ = ["Sel", "code_layout", "index_bits", "check_spec", "PointDecoder"]


class Sel(enum.Enum, shape=max(SEL_ZERO, SEL_ONE, SEL_NEAR, SEL_FAR).bit_length()):
    """One word's selector (values from golden.spec): zero, or the element 1, 2^-i ("near"), 2^-(i+G) ("far")."""

    ZERO = SEL_ZERO
    ONE = SEL_ONE
    NEAR = SEL_NEAR
    FAR = SEL_FAR


def check_spec(spec) -> DatapathSpec:
    """Validate a ``spec`` argument (every hw component takes one)."""
    if not isinstance(spec, DatapathSpec):
        raise TypeError(f"spec must be a golden.spec.DatapathSpec, not {spec!r}")
    return spec


def code_layout(spec: DatapathSpec):
    """The layout of a point code: ``sels`` (word i at index i-1, LSB first) then ``sign`` (1 = negative). For the
    uniform point set (``spec.uniform_points``) a code is the point integer P itself: ``signed(act_bits + 1)``."""
    check_spec(spec)
    if spec.uniform_points:
        return signed(spec.code_bits)
    layout = data.StructLayout({"sels": data.ArrayLayout(Sel, spec.words), "sign": 1})
    ws = spec.wordset
    if layout.size != spec.code_bits or layout["sign"].offset != ws.sign_bit:  # pragma: no cover - spec drift
        raise AssertionError("golden.spec's code layout no longer matches hw.units.decoder.code_layout")
    return layout


def index_bits(count: int) -> int:
    """Width of an index into ``count`` items (at least one bit, so ports never vanish)."""
    return max(1, ceil_log2(count))


class PointDecoder(wiring.Component):
    """Loadable per-input-channel point table: (channel, b-bit point index) -> sign and N shift selections.

    The table holds ``channels x 2**act_bits`` codes in a synchronous memory. Each cycle it reads
    ``read_ports`` points of one channel (the 9 taps of a 3x3 window share their input channel), one cycle
    after ``r_en``. Writes and reads of the same entry in one cycle are not supported (tables are loaded while
    no beat is in flight); the read data then is undefined.

    Parameters
    ----------
    spec : golden.spec.DatapathSpec
        Gives ``act_bits`` (index width) and the code layout.
    channels : int
        Table rows (input channels served by this table), at least 1.
    read_ports : int
        Points read per cycle, at least 1.

    Attributes
    ----------
    w_en : In(1)
        Write strobe: ``table[w_chan][w_idx] = w_code``.
    w_chan : In(index_bits(channels))
        Channel (row) written.
    w_idx : In(act_bits)
        Point index written.
    w_code : In(code_layout(spec))
        Code written (golden.spec layout).
    r_en : In(1)
        Read strobe; when low, ``r_code`` holds its value.
    r_chan : In(index_bits(channels))
        Channel read by every read port.
    r_idx : In(ArrayLayout(act_bits, read_ports))
        Point index of each read port.
    r_code : Out(ArrayLayout(code_layout(spec), read_ports))
        Code of each read port, ``latency`` cycles after ``r_en``.
    """

    def __init__(self, *, spec, channels, read_ports=1):
        self._spec = check_spec(spec)
        if not isinstance(channels, int) or isinstance(channels, bool) or channels < 1:
            raise TypeError(f"channels must be a positive integer, not {channels!r}")
        if not isinstance(read_ports, int) or isinstance(read_ports, bool) or read_ports < 1:
            raise TypeError(f"read_ports must be a positive integer, not {read_ports!r}")
        self._channels = channels
        self._read_ports = read_ports
        code = code_layout(spec)
        chan = index_bits(channels)
        super().__init__({
            "w_en": In(1),
            "w_chan": In(chan),
            "w_idx": In(spec.act_bits),
            "w_code": In(code),
            "r_en": In(1),
            "r_chan": In(chan),
            "r_idx": In(data.ArrayLayout(spec.act_bits, read_ports)),
            "r_code": Out(data.ArrayLayout(code, read_ports)),
        })

    @property
    def spec(self) -> DatapathSpec:
        return self._spec

    @property
    def channels(self) -> int:
        return self._channels

    @property
    def read_ports(self) -> int:
        return self._read_ports

    @property
    def latency(self) -> int:
        """Cycles from ``r_en`` to ``r_code``."""
        return 1

    def elaborate(self, platform):
        m = Module()
        spec = self._spec
        m.submodules.table = table = Memory(shape=code_layout(spec), depth=self._channels << spec.act_bits,
                                            init=[])
        wp = table.write_port()
        m.d.comb += [
            wp.en.eq(self.w_en),
            wp.addr.eq(Cat(self.w_idx, self.w_chan)),
            wp.data.eq(self.w_code),
        ]
        for k in range(self._read_ports):
            rp = table.read_port()
            m.d.comb += [
                rp.en.eq(self.r_en),
                rp.addr.eq(Cat(self.r_idx[k], self.r_chan)),
                self.r_code[k].eq(rp.data),
            ]
        return m
