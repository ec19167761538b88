"""Write the Verilog of the DFSQ MAC or conv engine, plus a JSON sidecar (contract 4).

    python -m hw.generate --words 4 [--act-bits 4] [--weight-bits 4] [--scale-bits 24] [--channels 64]
        [--lanes 16] [--top mac|engine] [--fault NAME] [--variant registered|fold|deferred|naive] [--out rtl_out/]
    python -m hw.generate --top uniform-engine --act-bits 6 --weight-bits 6 [--channels 64] [--lanes 16]

writes ``<out>/<stem>.v`` (`` `timescale 1ns/1ps`` first, top module ``dfsq_engine`` or ``dfsq_mac``, clock
``clk`` and synchronous active-high reset ``rst``) and ``<out>/<stem>.json`` (configuration, ``spec.widths()``,
ports with direction, width, signedness and packing, latency). Stems: ``dfsq_engine_w4_a4_b4_s24_c64_l16`` and
``dfsq_mac_w4_a4_b4_s24_c64``; a faulted variant adds ``_fault-NAME``, a non-default multiplier variant
``_v-NAME``. The same arguments always give the same bytes.

``--top uniform-engine`` writes the uniform (Min-Max, static scale) baseline engine of :mod:`hw.units.uniform_engine`
(top module ``uniform_engine``, stem ``uniform_engine_a6_b6_c64_l16``): int weights times int activations, widths
from :class:`golden.uniform_spec.UniformSpec`; ``--words``, ``--scale-bits``, ``--gap`` and ``--variant`` do not
apply to it. With ``--normalized`` it writes the normalized uniform baseline instead (stem
``uniform_engine_normalized_a6_b6_s24_c64_l16``): the DFSQ engine (:class:`hw.units.engine.ConvEngine`, the same ports,
per-(sample, channel) normalization, de-normalization format ``--denorm/--sigma-bits/--shift-bits``, point tables or
``--codes-in``) with ``DatapathSpec(point_set="uniform")``: 2^b evenly spaced points per channel (``--method
dfsq-uniform``) and one integer multiplier ``w' * P`` per tap in place of the shift-add multiplier.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

import amaranth
from amaranth._toolchain.yosys import YosysError, find_yosys
from amaranth.back import rtlil
from amaranth.hdl import Shape
from amaranth.lib import data

from golden.args import Parser, When
from golden.errors import UserError, cli_main
from golden.files import atomic_output, check_output_dir
from golden.int_spec import DEFAULT_FMAP_BITS, FMAP_BITS_RANGE, IntSpec
from golden.spec import DEFAULT_CHANNELS, DEFAULT_SCALE_BITS, DatapathSpec, SpecError, add_denorm_args

from . import tops
from .units.shift_add import VARIANTS

__all__ = ["TOPS", "TIMESCALE", "DEFAULT_LANES", "DEFAULT_VARIANTS", "VERILOG_SCRIPT", "build", "stem", "port_map",
           "sidecar", "to_verilog", "render", "generate", "main"]

#: ``--top`` name -> Verilog module (every top of the registry, :mod:`hw.tops`).
TOPS = tops.modules()
TIMESCALE = "`timescale 1ns/1ps"
DEFAULT_LANES = 16
#: Multiplier micro-architecture per top (measured in docs/hardware.md).
DEFAULT_VARIANTS = {t.name: t.default_variant for t in tops.REGISTRY if t.default_variant}
FORMAT_VERSION = 1


def build(top: str, spec, lanes: int = DEFAULT_LANES, fault=None, variant=None, tables: bool = True):
    """The Amaranth component for ``top``; bad combinations raise :class:`UserError` (one line)."""
    entry = tops.lookup(top, spec)
    return entry.build(spec, lanes, fault, entry.resolve_variant(variant), tables)


def stem(top: str, spec, lanes: int = DEFAULT_LANES, fault=None, variant=None, tables: bool = True) -> str:
    """File stem of a configuration (contract 4)."""
    entry = tops.lookup(top, spec)
    return entry.stem(spec, lanes, fault, entry.resolve_variant(variant), tables)


def _describe_shape(shape) -> dict:
    """Width, signedness and packing of one port shape."""
    if isinstance(shape, data.ArrayLayout):
        elem, count = shape.elem_shape, shape.length
        inner = _describe_shape(elem)
        elements = count * inner.get("elements", 1)
        return {"width": shape.size, "signed": False, "elements": elements,
                "element_width": inner.get("element_width", inner["width"]),
                "element_signed": inner.get("element_signed", inner["signed"])}
    if isinstance(shape, data.Layout):
        return {"width": shape.size, "signed": False,
                "fields": {name: {"offset": f.offset, "width": Shape.cast(f.shape).width}
                           for name, f in shape}}
    s = Shape.cast(shape)
    return {"width": s.width, "signed": s.signed}


def port_map(component) -> list[dict]:
    """Ports of a generated top: clock and reset, then every signature member (flat Verilog names)."""
    ports = [{"name": "clk", "direction": "in", "width": 1, "signed": False},
             {"name": "rst", "direction": "in", "width": 1, "signed": False}]
    for name, member in component.signature.members.items():
        entry = {"name": name, "direction": "in" if member.flow.name == "In" else "out"}
        entry.update(_describe_shape(member.shape))
        ports.append(entry)
    return ports


def sidecar(top: str, component, spec, lanes: int, fault, variant, name: str) -> dict:
    """The JSON sidecar of a generated configuration."""
    entry = tops.lookup(top, spec)
    return {
        "format": "dfsq-hw", "version": FORMAT_VERSION, "stem": name, "verilog": f"{name}.v",
        "module": entry.module, "timescale": TIMESCALE.split()[1],
        "clock": {"name": "clk", "edge": "rising"},
        "reset": {"name": "rst", "active": "high", "kind": "synchronous"},
        "config": entry.config(component, spec, lanes, fault, variant), "spec": spec.widths(),
        "latency": component.latency, "latency_definition": entry.latency_definition,
        "ports": port_map(component), "packing": entry.packing,
        "versions": {"amaranth": amaranth.__version__, entry.versions[0]: entry.versions[1]},
    }


def load_sidecar(path) -> dict:
    """The format validator of a sidecar (:mod:`golden.formats` ``sidecar``): format, version, module, latency and
    every port's name, direction and width; a one-line UserError naming the file and the field otherwise."""
    from golden.formats import INT, LIST, OBJECT, TEXT, need, read_json

    data = read_json(path, "Verilog sidecar")
    where = str(path)
    need(data, "format", TEXT, where, check=lambda v: v == "dfsq-hw", expect="'dfsq-hw'")
    need(data, "version", INT, where, check=lambda v: v == FORMAT_VERSION, expect=str(FORMAT_VERSION))
    need(data, "module", TEXT, where, check=bool, expect="a module name")
    need(data, "latency", INT, where, check=lambda v: v >= 0, expect="a cycle count >= 0")
    need(data, "config", OBJECT, where)
    need(data, "spec", OBJECT, where)
    ports = need(data, "ports", LIST, where, check=bool, expect="a non-empty list")
    for i, p in enumerate(ports):
        at = f"{where}: ports[{i}]"
        need(p, "name", TEXT, at, check=bool, expect="a port name")
        need(p, "direction", TEXT, at, check=lambda v: v in ("in", "out"), expect="'in' or 'out'")
        need(p, "width", INT, at, check=lambda v: v >= 1, expect="a width >= 1")
    return data


#: Yosys passes from Amaranth's RTLIL to the Verilog written (Amaranth's builtin Yosys). Unlike
#: ``amaranth.back.verilog`` (``proc -nomux``), the processes are lowered completely: every register becomes an
#: ``always @(posedge clk)`` with its next state as plain ``assign``s, never an ``always @*`` block per register,
#: which halves the work of an event-driven simulator (Icarus) and reads the same to a synthesis tool.
VERILOG_SCRIPT = ("proc -norom", "opt_clean", "memory_collect")


@contextlib.contextmanager
def _no_zero_meminit():
    """Amaranth's RTLIL backend writes every memory's initial contents, zeros included, as one constant of depth x
    width bits: for the accelerator's megabit memories that is gigabytes of work for nothing (the host writes what a
    run reads). Inside this block a memory whose contents are all zero gets no initialization cell."""
    from amaranth.back.rtlil import ModuleEmitter

    original = ModuleEmitter.emit_memory

    def emit_memory(self, cell_idx, cell):
        if any(cell.init):
            original(self, cell_idx, cell)

    ModuleEmitter.emit_memory = emit_memory
    try:
        yield
    finally:
        ModuleEmitter.emit_memory = original


#: ``flat=True``: the same Verilog as one flattened, cheaply optimized module (Verilator runs a big design faster
#: that way: sim.network); memories stay whole-word arrays, as Yosys keeps them from Amaranth's RTLIL.
FLAT_VERILOG_SCRIPT = ("proc -norom", "flatten", "opt -fast", "opt_clean -purge", "memory_collect")


def to_verilog(component, name: str, zero_init: bool = True, flat: bool = False) -> str:
    """Verilog text of ``component`` with top module ``name`` (``VERILOG_SCRIPT``, no source attributes).
    ``zero_init=False``: memories whose initial contents are zero start undefined (no initialization);
    ``flat``: one flattened module (``FLAT_VERILOG_SCRIPT``)."""
    with (contextlib.nullcontext() if zero_init else _no_zero_meminit()):
        text = rtlil.convert(component, name=name, emit_src=False)
    yosys = find_yosys(lambda ver: ver >= (0, 40))
    script = [f"read_rtlil <<rtlil\n{text}\nrtlil", *(FLAT_VERILOG_SCRIPT if flat else VERILOG_SCRIPT),
              "write_verilog -norename"]
    try:
        verilog = yosys.run(["-q", "-"], "\n".join(script), ignore_warnings=True)
    except YosysError as exc:  # pragma: no cover - a bug of ours, not of the user's input
        raise UserError(f"Yosys could not write the Verilog of {name}: {str(exc).strip().splitlines()[-1:]}") from None
    return verilog


def render(top: str, spec, lanes: int = DEFAULT_LANES, fault=None, variant=None, tables: bool = True,
           flat: bool = False):
    """(verilog text, sidecar dict, stem) without writing anything; ``flat``: one flattened module (stem
    ``<stem>_flat``)."""
    entry = tops.lookup(top, spec)
    variant = entry.resolve_variant(variant)
    component = entry.build(spec, lanes, fault, variant, tables)
    name = entry.stem(spec, lanes, fault, variant, tables) + ("_flat" if flat else "")
    text = to_verilog(component, entry.module, zero_init=entry.zero_init, flat=flat)
    if entry.case_free and ("always @*" in text or "function " in text):  # pragma: no cover - the datapath is written as muxes
        raise AssertionError(f"{name}: the Verilog has a case block; write that logic as muxes (see hw/units/shift_add.py)")
    text = f"{TIMESCALE}\n{text}"
    return text, sidecar(top, component, spec, lanes, fault, variant, name), name


def _write_atomic(path: Path, text: str) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(text)


def generate(top: str = "engine", spec=None, lanes: int = DEFAULT_LANES, fault=None,
             out_dir="rtl_out", variant=None, tables: bool = True, flat: bool = False):
    """Write ``<out_dir>/<stem>.v`` and ``<out_dir>/<stem>.json``; return their paths. ``spec``: a
    :class:`DatapathSpec` (default ``DatapathSpec()``), or a :class:`UniformSpec` for ``uniform-engine``."""
    if spec is None:
        spec = tops.by_name(top).default_spec()
    text, meta, name = render(top, spec, lanes, fault, variant, tables, flat)
    out = check_output_dir(out_dir, "output folder")
    v_path, j_path = out / f"{name}.v", out / f"{name}.json"
    _write_atomic(v_path, text)
    _write_atomic(j_path, json.dumps(meta, indent=2) + "\n")
    return v_path, j_path


def build_parser() -> Parser:
    from golden.spec import ACT_BITS_RANGE, MAX_CHANNELS, SCALE_BITS_RANGE, WEIGHT_BITS_RANGE, WORDS_RANGE

    p = Parser(prog="python -m hw.generate", description=__doc__.split("\n\n")[0])
    # which tops each option has an effect on, from the registry (hw.tops)
    dfsq_tops = When("top", *tops.names_where(lambda t: t.spec_type in (DatapathSpec, IntSpec) and t.cli_flag is None))
    with_lanes = When("top", *tops.names_where(lambda t: t.lanes))
    p.integer("--words", *WORDS_RANGE, default=None, when=dfsq_tops,
              help="words per point (2..5, default 4; DFSQ tops only)")
    p.integer("--act-bits", *ACT_BITS_RANGE, default=None,
              help="bits of a point index (default 4); uniform-engine: activation bits (default 6)")
    p.integer("--weight-bits", *WEIGHT_BITS_RANGE, default=None, help="weight bits (default 4; uniform-engine: 6)")
    p.integer("--scale-bits", *SCALE_BITS_RANGE, default=None,
              help=f"sigma/mu bits (default {DEFAULT_SCALE_BITS}; DFSQ tops only)")
    p.integer("--channels", 1, MAX_CHANNELS, default=DEFAULT_CHANNELS,
              help="largest input channel count of a layer: point-table rows, accumulator width (default 64; "
                   "RDN: 1024; 1x1 layers run on the centre tap)")
    p.integer("--gap", 1, 8, default=None, when=dfsq_tops,
              help="exponent gap of the word set (default 4; DFSQ tops only)")
    p.integer("--lanes", 1, MAX_CHANNELS, default=None, when=with_lanes,
              help=f"engine lanes, divides channels (default {DEFAULT_LANES}; engines only)")
    p.choice("--top", sorted(TOPS), default="engine", help="which top to write (default engine)")
    add_denorm_args(p, " (the tops that de-normalize)", when=When("top", *tops.names_where(lambda t: t.denorm)))
    p.choice("--fault", sorted(tops.all_faults()), default=None,
             help="deliberately broken variant, for mutation tests only")
    p.choice("--variant", VARIANTS, default=None, when=When("top", *tops.names_where(lambda t: t.variants)),
             help="multiplier micro-architecture (default: deferred)")
    for t in tops.REGISTRY:
        if t.cli_flag == "normalized":
            p.flag("--normalized", when=When("top", t.name),
                   help=f"with --top {t.name}: the normalized uniform baseline (DFSQ's normalization and "
                        "de-normalization, evenly spaced points, integer multipliers)")
    p.flag("--codes-in", when=When("top", *tops.names_where(lambda t: t.codes_in)),
           help="engine without point tables: beats carry point codes, decoded where activations enter")
    p.integer("--fmap-bits", *FMAP_BITS_RANGE, default=None,
              when=When("top", *tops.names_where(lambda t: t.spec_type is IntSpec), "accelerator"),
              help=f"feature-map width of the contract-2 units and the accelerator (default {DEFAULT_FMAP_BITS})")
    accel = When("top", "accelerator")
    p.choice("--model", ("edsr", "rdn"), default="edsr", when=accel,
             help="accelerator: the network whose integer graph sizes it (no network-specific logic)")
    p.text("--rdn-config", _rdn_config, default="S", when=(accel, When("model", "rdn")),
           help="accelerator: RDN structure (S, A, B or D,C,G[,G0]; default S, the embedded one)")
    p.integer("--max-pixels", 1, 1 << 22, default=128 * 128, when=accel,
              help="accelerator: pixels per channel of the feature-map memory (default 128 x 128)")
    p.output_dir("--out", default="rtl_out", help="output folder (default rtl_out/)")
    return p


def _rdn_config(text: str) -> str:
    from dfsq.rdn import parse_config

    parse_config(text)
    return text


def _quiet_unused_elaboratables() -> None:
    """An interrupted or failed run leaves Amaranth elaboratables unused: no warning per object at exit."""
    import warnings

    from amaranth.hdl import UnusedElaboratable

    warnings.filterwarnings("ignore", category=UnusedElaboratable)


@cli_main
def main(argv=None):
    args = build_parser().parse_args(argv)
    _quiet_unused_elaboratables()
    entry = tops.for_args(args)
    lanes = DEFAULT_LANES if args.lanes is None else args.lanes
    try:
        spec = entry.spec_from_args(args)
    except SpecError as exc:
        raise UserError(str(exc)) from None
    if args.codes_in and not entry.codes_in:
        raise UserError("--codes-in applies to --top engine (and --top uniform-engine --normalized) only")
    v_path, j_path = generate(args.top, spec, lanes, args.fault, args.out, args.variant, tables=not args.codes_in)
    print(v_path)
    print(j_path)
    return 0


if __name__ == "__main__":
    main()
