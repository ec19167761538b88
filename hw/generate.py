"""Write the Verilog of the DFSQ MAC or conv engine, plus a JSON sidecar (contract 4).

    python -m hw.generate --words 4 [--act-bits 4] [--weight-bits 4] [--scale-bits 24] [--channels 64]
        [--lanes 16] [--top mac|engine] [--fault NAME] [--variant registered|fold|deferred|naive] [--out rtl_out/]
    python -m hw.generate --top uniform-engine --act-bits 6 --weight-bits 6 [--channels 64] [--lanes 16]

writes ``<out>/<stem>.v`` (`` `timescale 1ns/1ps`` first, top module ``dfsq_engine`` or ``dfsq_mac``, clock
``clk`` and synchronous active-high reset ``rst``) and ``<out>/<stem>.json`` (configuration, ``spec.widths()``,
ports with direction, width, signedness and packing, latency). Stems: ``dfsq_engine_w4_a4_b4_s24_c64_l16`` and
``dfsq_mac_w4_a4_b4_s24_c64``; a faulted variant adds ``_fault-NAME``, a non-default multiplier variant
``_v-NAME``. The same arguments always give the same bytes.

``--top uniform-engine`` writes the uniform (Min-Max, static scale) baseline engine of :mod:`hw.uniform_engine`
(top module ``uniform_engine``, stem ``uniform_engine_a6_b6_c64_l16``): int weights times int activations, widths
from :class:`golden.uniform_spec.UniformSpec`; ``--words``, ``--scale-bits``, ``--gap`` and ``--variant`` do not
apply to it. With ``--normalized`` it writes the normalized uniform baseline instead (stem
``uniform_engine_normalized_a6_b6_s24_c64_l16``): the DFSQ engine (:class:`hw.engine.ConvEngine`, the same ports,
per-(sample, channel) normalization, de-normalization format ``--denorm/--sigma-bits/--shift-bits``, point tables or
``--codes-in``) with ``DatapathSpec(point_set="uniform")``: 2^b evenly spaced points per channel (``--method
dfsq-uniform``) and one integer multiplier ``w' * P`` per tap in place of the shift-add multiplier.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import amaranth
from amaranth._toolchain.yosys import YosysError, find_yosys
from amaranth.back import rtlil
from amaranth.hdl import Shape
from amaranth.lib import data

from golden.errors import UserError, cli_main
from golden.files import atomic_output, check_output_dir
from golden.spec import (DEFAULT_CHANNELS, DEFAULT_GAP, DEFAULT_SCALE_BITS, DEFAULT_WORDS, SPEC_VERSION, DatapathSpec,
                         SpecError, add_denorm_args, denorm_format)

from golden.uniform_spec import DEFAULT_UNIFORM_BITS, UNIFORM_SPEC_VERSION, UniformSpec

from .engine import ENGINE_FAULTS, ConvEngine, check_lanes
from .mac import ShiftAddMAC
from .mean_unit import MEAN_UNIT_FAULTS, MeanUnit
from .shift_add import COMBINATIONAL_VARIANTS, FAULTS, VARIANTS
from .uniform_engine import UNIFORM_FAULTS, UniformEngine, check_uniform_lanes

__all__ = ["TOPS", "UNIFORM_TOPS", "TIMESCALE", "DEFAULT_LANES", "DEFAULT_VARIANTS", "VERILOG_SCRIPT", "build", "stem", "port_map",
           "sidecar", "to_verilog", "render", "generate", "main"]

TOPS = {"engine": "dfsq_engine", "mac": "dfsq_mac", "uniform-engine": "uniform_engine",
        "mean-unit": "dfsq_mean_unit"}
#: Tops built from a golden.uniform_spec.UniformSpec (no word set, no multiplier variant).
UNIFORM_TOPS = ("uniform-engine",)
TIMESCALE = "`timescale 1ns/1ps"
DEFAULT_LANES = 16
#: Multiplier micro-architecture per top (measured in docs/hardware.md).
DEFAULT_VARIANTS = {"engine": "deferred", "mac": "registered"}
FORMAT_VERSION = 1


def _check_top(top):
    if top not in TOPS:
        raise UserError(f"--top must be one of {', '.join(TOPS)}, not {top!r}")
    return top


def _build_uniform(spec, lanes, fault, variant):
    if not isinstance(spec, UniformSpec):
        raise UserError(f"--top uniform-engine needs a golden.uniform_spec.UniformSpec, not {type(spec).__name__}")
    if fault is not None and fault not in UNIFORM_FAULTS:
        raise UserError(f"unknown fault {fault!r} for --top uniform-engine; known: {', '.join(sorted(UNIFORM_FAULTS))}")
    if variant is not None:
        raise UserError("--variant applies to the DFSQ tops only (the uniform engine has integer multipliers)")
    try:
        check_uniform_lanes(spec, lanes)
    except (TypeError, ValueError) as exc:
        raise UserError(str(exc)) from None
    return UniformEngine(spec=spec, lanes=lanes, fault=fault)


def normalized(top: str, spec) -> bool:
    """``top`` is the uniform engine built from a uniform-point DatapathSpec: the normalized uniform baseline."""
    return top in UNIFORM_TOPS and isinstance(spec, DatapathSpec)


def build(top: str, spec, lanes: int = DEFAULT_LANES, fault=None, variant=None, tables: bool = True):
    """The Amaranth component for ``top``; bad combinations raise :class:`UserError` (one line)."""
    _check_top(top)
    if normalized(top, spec):
        if not spec.uniform_points:
            raise UserError("the normalized uniform engine needs DatapathSpec(point_set='uniform')")
        if fault is not None and fault not in ENGINE_FAULTS:
            raise UserError(f"unknown fault {fault!r} for the normalized uniform engine; known: "
                            f"{', '.join(sorted(ENGINE_FAULTS))}")
        if variant is not None:
            raise UserError("--variant applies to the shift-add multiplier, which the normalized uniform engine "
                            "does not have")
        try:
            check_lanes(spec, lanes)
            return ConvEngine(spec=spec, lanes=lanes, fault=fault, tables=tables)
        except (TypeError, ValueError) as exc:
            raise UserError(str(exc)) from None
    if top in UNIFORM_TOPS:
        return _build_uniform(spec, lanes, fault, variant)
    if not isinstance(spec, DatapathSpec):
        raise UserError(f"--top {top} needs a golden.spec.DatapathSpec, not {type(spec).__name__}")
    if top == "mean-unit":
        if not spec.split:
            raise UserError("--top mean-unit belongs to the split de-normalization: pass --denorm split")
        if fault is not None and fault not in MEAN_UNIT_FAULTS:
            raise UserError(f"unknown fault {fault!r} for --top mean-unit; known: {', '.join(sorted(MEAN_UNIT_FAULTS))}")
        if variant is not None:
            raise UserError("--variant does not apply to --top mean-unit (it has no shift-add multiplier)")
        return MeanUnit(spec=spec, fault=fault)
    if isinstance(spec, DatapathSpec) and spec.uniform_points:
        raise UserError(f"--top {top} needs a universal-set spec; the uniform point set is --top uniform-engine "
                        "--normalized")
    known = {**FAULTS, **ENGINE_FAULTS} if top == "engine" and spec.split else FAULTS
    if fault is not None and fault not in known:
        raise UserError(f"unknown fault {fault!r} for this top and spec; known: {', '.join(sorted(known))}")
    variant = DEFAULT_VARIANTS[top] if variant is None else variant
    allowed = VARIANTS if top == "mac" else COMBINATIONAL_VARIANTS
    if variant not in allowed:
        raise UserError(f"unknown multiplier variant {variant!r} for --top {top}; known: {', '.join(allowed)}")
    try:  # validate before constructing, so a rejected component is never half-built
        if top == "engine":
            check_lanes(spec, lanes)
    except (TypeError, ValueError) as exc:
        raise UserError(str(exc)) from None
    if top == "mac":
        return ShiftAddMAC(spec=spec, fault=fault, variant=variant)
    return ConvEngine(spec=spec, lanes=lanes, fault=fault, variant=variant, tables=tables)


def stem(top: str, spec, lanes: int = DEFAULT_LANES, fault=None, variant=None, tables: bool = True) -> str:
    """File stem of a configuration (contract 4)."""
    if normalized(_check_top(top), spec):
        s = f"{TOPS[top]}_normalized_a{spec.act_bits}_b{spec.weight_bits}_s{spec.scale_bits}_c{spec.channels}"
        if spec.split:
            s += f"_split-m{spec.sigma_bits}s{spec.shift_bits}"
        s += f"_l{lanes}" + ("" if tables else "_codes-in")
        return s + (f"_fault-{fault}" if fault is not None else "")
    if top in UNIFORM_TOPS:
        s = f"{TOPS[top]}_a{spec.act_bits}_b{spec.weight_bits}_c{spec.channels}_l{lanes}"
        return s + (f"_fault-{fault}" if fault is not None else "")
    points = "uniform" if spec.uniform_points else f"w{spec.words}"
    s = f"{TOPS[_check_top(top)]}_{points}_a{spec.act_bits}_b{spec.weight_bits}_s{spec.scale_bits}_c{spec.channels}"
    if spec.gap != DEFAULT_GAP:
        s += f"_g{spec.gap}"
    if spec.split:
        s += f"_split-m{spec.sigma_bits}s{spec.shift_bits}"
    if top == "engine":
        s += f"_l{lanes}" + ("" if tables else "_codes-in")
    if variant is not None and variant != DEFAULT_VARIANTS.get(top):
        s += f"_v-{variant}"
    if fault is not None:
        s += f"_fault-{fault}"
    return s


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


PACKING = {
    "engine": ("element e = l*9 + t occupies bits [e*element_width, (e+1)*element_width) of in_idx/in_weight; "
               "taps in raster order t = 3*(dy+1) + (dx+1); lane l of group g serves input channel g*L + l; "
               "sigma/mu of lane l at [l*scale_bits, (l+1)*scale_bits); signed elements are two's complement"),
    "mac": "in_code is a point code (golden.spec layout: word i's selector at bits [2i-1:2i-2], sign at bit 2N)",
    "mean-unit": ("in_weight: tap t at bits [t*w_bits, (t+1)*w_bits), raster order, two's complement; one beat per "
                  "input channel; out_class k = 4 r + q (golden.mean_unit), 16 outputs per output channel"),
    "uniform-engine": ("element e = l*9 + t occupies bits [e*element_width, (e+1)*element_width) of in_act/in_weight; "
                       "taps in raster order t = 3*(dy+1) + (dx+1); lane l of group g serves input channel g*L + l; "
                       "a' = q_a - zp_a and w' = q_w - zp_w, two's complement; a masked tap's a' is ignored"),
}


def sidecar(top: str, component, spec, lanes: int, fault, variant, name: str) -> dict:
    """The JSON sidecar of a generated configuration."""
    if top in UNIFORM_TOPS and not normalized(top, spec):
        config = {"top": top, "module": TOPS[top], "act_bits": spec.act_bits, "weight_bits": spec.weight_bits,
                  "channels": spec.channels, "lanes": lanes, "groups": component.groups, "fault": fault,
                  "fault_description": UNIFORM_FAULTS.get(fault) if fault else None}
        return {
            "format": "dfsq-hw", "version": FORMAT_VERSION, "stem": name, "verilog": f"{name}.v",
            "module": TOPS[top], "timescale": TIMESCALE.split()[1],
            "clock": {"name": "clk", "edge": "rising"},
            "reset": {"name": "rst", "active": "high", "kind": "synchronous"},
            "config": config, "spec": spec.widths(), "latency": component.latency,
            "latency_definition": "cycles from the handshake of a last beat to its out_valid, out_ready held high",
            "ports": port_map(component), "packing": PACKING[top],
            "versions": {"amaranth": amaranth.__version__, "uniform_spec": UNIFORM_SPEC_VERSION},
        }
    config = {"top": top, "module": TOPS[top], "words": spec.words, "gap": spec.gap, "act_bits": spec.act_bits,
              "weight_bits": spec.weight_bits, "scale_bits": spec.scale_bits, "channels": spec.channels,
              "fault": fault,
              "fault_description": {**FAULTS, **ENGINE_FAULTS, **MEAN_UNIT_FAULTS}.get(fault) if fault else None,
              "variant": variant, "denorm": spec.denorm}
    if spec.uniform_points:
        del config["words"], config["gap"]
        config.update(point_set=spec.point_set, normalized=True)
    if spec.split:
        config.update(sigma_bits=spec.sigma_bits, shift_bits=spec.shift_bits)
    if component.__class__ is ConvEngine:
        config.update(lanes=lanes, groups=component.groups, tables=component.tables)
    elif top == "mac":
        config.update(acc_bits=component.acc_bits)
    return {
        "format": "dfsq-hw", "version": FORMAT_VERSION, "stem": name, "verilog": f"{name}.v",
        "module": TOPS[top], "timescale": TIMESCALE.split()[1],
        "clock": {"name": "clk", "edge": "rising"},
        "reset": {"name": "rst", "active": "high", "kind": "synchronous"},
        "config": config, "spec": spec.widths(), "latency": component.latency,
        "latency_definition": {"engine": "cycles from the handshake of a last beat to its out_valid, out_ready held high",
                               "mean-unit": "cycles from the handshake of a last beat to its first out_valid"}.get(
                                   "engine" if spec.uniform_points else top,
                                   "cycles from a beat's in_valid to its out_valid"),
        "ports": port_map(component), "packing": PACKING["engine" if spec.uniform_points else top],
        "versions": {"amaranth": amaranth.__version__, "spec": SPEC_VERSION},
    }


#: Yosys passes from Amaranth's RTLIL to the Verilog written (Amaranth's builtin Yosys). Unlike
#: ``amaranth.back.verilog`` (``proc -nomux``), the processes are lowered completely: every register becomes an
#: ``always @(posedge clk)`` with its next state as plain ``assign``s, never an ``always @*`` block per register,
#: which halves the work of an event-driven simulator (Icarus) and reads the same to a synthesis tool.
VERILOG_SCRIPT = ("proc -norom", "opt_clean", "memory_collect")


def to_verilog(component, name: str) -> str:
    """Verilog text of ``component`` with top module ``name`` (``VERILOG_SCRIPT``, no source attributes)."""
    text = rtlil.convert(component, name=name, emit_src=False)
    yosys = find_yosys(lambda ver: ver >= (0, 40))
    script = [f"read_rtlil <<rtlil\n{text}\nrtlil", *VERILOG_SCRIPT, "write_verilog -norename"]
    try:
        verilog = yosys.run(["-q", "-"], "\n".join(script), ignore_warnings=True)
    except YosysError as exc:  # pragma: no cover - a bug of ours, not of the user's input
        raise UserError(f"Yosys could not write the Verilog of {name}: {str(exc).strip().splitlines()[-1:]}") from None
    return verilog


def render(top: str, spec, lanes: int = DEFAULT_LANES, fault=None, variant=None, tables: bool = True):
    """(verilog text, sidecar dict, stem) without writing anything."""
    if _check_top(top) in DEFAULT_VARIANTS:
        variant = DEFAULT_VARIANTS[top] if variant is None else variant
    component = build(top, spec, lanes, fault, variant, tables)
    name = stem(top, spec, lanes, fault, variant, tables)
    text = to_verilog(component, TOPS[top])
    if "always @*" in text or "function " in text:  # pragma: no cover - the datapath is written as muxes
        raise AssertionError(f"{name}: the Verilog has a case block; write that logic as muxes (see hw/shift_add.py)")
    text = f"{TIMESCALE}\n{text}"
    return text, sidecar(top, component, spec, lanes, fault, variant, name), name


def _write_atomic(path: Path, text: str) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(text)


def generate(top: str = "engine", spec=None, lanes: int = DEFAULT_LANES, fault=None,
             out_dir="rtl_out", variant=None, tables: bool = True):
    """Write ``<out_dir>/<stem>.v`` and ``<out_dir>/<stem>.json``; return their paths. ``spec``: a
    :class:`DatapathSpec` (default ``DatapathSpec()``), or a :class:`UniformSpec` for ``uniform-engine``."""
    if spec is None:
        spec = UniformSpec() if top in UNIFORM_TOPS else DatapathSpec()
    text, meta, name = render(top, spec, lanes, fault, variant, tables)
    out = check_output_dir(out_dir, "output folder")
    v_path, j_path = out / f"{name}.v", out / f"{name}.json"
    _write_atomic(v_path, text)
    _write_atomic(j_path, json.dumps(meta, indent=2) + "\n")
    return v_path, j_path


def _parser():
    p = argparse.ArgumentParser(prog="python -m hw.generate", description=__doc__.split("\n\n")[0])
    p.add_argument("--words", type=int, default=None, help="words per point (2..5, default 4; DFSQ tops only)")
    p.add_argument("--act-bits", type=int, default=None,
                   help="bits of a point index (default 4); uniform-engine: activation bits (default 6)")
    p.add_argument("--weight-bits", type=int, default=None, help="weight bits (default 4; uniform-engine: 6)")
    p.add_argument("--scale-bits", type=int, default=None,
                   help=f"sigma/mu bits (default {DEFAULT_SCALE_BITS}; DFSQ tops only)")
    p.add_argument("--channels", type=int, default=DEFAULT_CHANNELS,
                   help="largest input channel count of a layer: point-table rows, accumulator width (default 64; "
                        "RDN: 1024; 1x1 layers run on the centre tap)")
    p.add_argument("--gap", type=int, default=None, help="exponent gap of the word set (default 4; DFSQ tops only)")
    p.add_argument("--lanes", type=int, default=None,
                   help=f"engine lanes, divides channels (default {DEFAULT_LANES}; engines only)")
    p.add_argument("--top", choices=sorted(TOPS), default="engine", help="which top to write (default engine)")
    add_denorm_args(p, " (DFSQ tops only)")
    p.add_argument("--fault", choices=sorted(set(FAULTS) | set(UNIFORM_FAULTS) | set(ENGINE_FAULTS)
                                             | set(MEAN_UNIT_FAULTS)), default=None,
                   help="deliberately broken variant, for mutation tests only")
    p.add_argument("--variant", choices=VARIANTS, default=None,
                   help="multiplier micro-architecture (default: deferred)")
    p.add_argument("--normalized", action="store_true",
                   help="with --top uniform-engine: the normalized uniform baseline (DFSQ's normalization and "
                        "de-normalization, evenly spaced points, integer multipliers)")
    p.add_argument("--codes-in", action="store_true",
                   help="engine without point tables: beats carry point codes, decoded where activations enter")
    p.add_argument("--out", default="rtl_out", help="output folder (default rtl_out/)")
    return p


def _quiet_unused_elaboratables() -> None:
    """An interrupted or failed run leaves Amaranth elaboratables unused: no warning per object at exit."""
    import warnings

    from amaranth.hdl import UnusedElaboratable

    warnings.filterwarnings("ignore", category=UnusedElaboratable)


def _given(value, default):
    return default if value is None else value


@cli_main
def main(argv=None):
    args = _parser().parse_args(argv)
    _quiet_unused_elaboratables()
    if args.lanes is not None and args.top in ("mac", "mean-unit"):
        raise UserError(f"--lanes applies to the engines only (the {args.top} has no lanes)")
    lanes = DEFAULT_LANES if args.lanes is None else args.lanes
    check_output_dir(args.out, "--out")
    if args.normalized and args.top not in UNIFORM_TOPS:
        raise UserError("--normalized applies to --top uniform-engine only")
    try:
        if args.normalized:
            given = [f"--{n.replace('_', '-')}" for n in ("words", "gap", "variant") if getattr(args, n) is not None]
            if given:
                raise UserError(f"{', '.join(given)} {'does' if len(given) == 1 else 'do'} not apply to the "
                                f"normalized uniform engine (no word set, integer multipliers)")
            spec = DatapathSpec(point_set="uniform", act_bits=_given(args.act_bits, DEFAULT_UNIFORM_BITS),
                                weight_bits=_given(args.weight_bits, DEFAULT_UNIFORM_BITS),
                                scale_bits=_given(args.scale_bits, DEFAULT_SCALE_BITS), channels=args.channels,
                                **denorm_format(args.denorm, args.sigma_bits, args.shift_bits))
        elif args.top in UNIFORM_TOPS:
            given = [f"--{n.replace('_', '-')}" for n in ("words", "scale_bits", "gap", "variant", "denorm",
                                                           "sigma_bits", "shift_bits")
                     if getattr(args, n) is not None]
            if given:
                raise UserError(f"{', '.join(given)} {'does' if len(given) == 1 else 'do'} not apply to --top "
                                f"{args.top} (no word set, no de-normalization, integer multipliers)")
            spec = UniformSpec(act_bits=_given(args.act_bits, DEFAULT_UNIFORM_BITS),
                               weight_bits=_given(args.weight_bits, DEFAULT_UNIFORM_BITS), channels=args.channels)
        else:
            spec = DatapathSpec(words=_given(args.words, DEFAULT_WORDS), act_bits=_given(args.act_bits, 4),
                                weight_bits=_given(args.weight_bits, 4),
                                scale_bits=_given(args.scale_bits, DEFAULT_SCALE_BITS), channels=args.channels,
                                gap=_given(args.gap, DEFAULT_GAP),
                                **denorm_format(args.denorm, args.sigma_bits, args.shift_bits))
    except SpecError as exc:
        raise UserError(str(exc)) from None
    if args.codes_in and args.top != "engine" and not args.normalized:
        raise UserError("--codes-in applies to --top engine (and --top uniform-engine --normalized) only")
    v_path, j_path = generate(args.top, spec, lanes, args.fault, args.out, args.variant, tables=not args.codes_in)
    print(v_path)
    print(j_path)
    return 0


if __name__ == "__main__":
    main()
