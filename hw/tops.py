"""The registry of generated tops: each top registered once, with everything the flow needs to know about it.

A :class:`Top` ties together the ``--top`` name, the Verilog module, the spec type it is built from, the component
builder (which validates its arguments and raises :class:`UserError`), the file stem, the sidecar's configuration,
packing and latency definition, and the cocotb testbench that checks it (``sim.tb_*``). :mod:`hw.generate` reads
nothing else; a new unit is one :func:`register` call here, beside its component in :mod:`hw.units`.

One ``--top`` name may be registered for several spec types: ``uniform-engine`` built from a
:class:`golden.uniform_spec.UniformSpec` is the static uniform baseline, built from a uniform-point
:class:`golden.spec.DatapathSpec` (``--normalized``) the normalized uniform baseline. :func:`lookup` picks the
entry by name and spec.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

from golden.errors import UserError
from golden.int_spec import DEFAULT_FMAP_BITS, INT_SPEC_VERSION, FmapFormat, IntSpec
from golden.spec import DEFAULT_GAP, DEFAULT_SCALE_BITS, DEFAULT_WORDS, SPEC_VERSION, DatapathSpec, denorm_format
from golden.uniform_spec import DEFAULT_UNIFORM_BITS, UNIFORM_SPEC_VERSION, UniformSpec

from .units.accel_spec import AccelSpec
from .units.engine import ENGINE_FAULTS, ConvEngine, check_lanes
from .units.mac import ShiftAddMAC
from .units.mean_unit import MEAN_UNIT_FAULTS, MeanUnit
from .units.post_unit import POST_FAULTS, PostUnit, StaticRequantizer
from .units.quantizer import QUANTIZER_FAULTS, Quantizer
from .units.shift_add import COMBINATIONAL_VARIANTS, FAULTS, VARIANTS
from .units.stats_unit import STATS_FAULTS, StatsUnit
from .units.threshold_unit import THRESHOLD_FAULTS, ThresholdUnit
from .units.uniform_engine import UNIFORM_FAULTS, UniformEngine, check_uniform_lanes

__all__ = ["Top", "register", "lookup", "by_name", "for_args", "names", "names_where", "modules", "all_faults", "REGISTRY"]

#: (spec, lanes, fault, variant, tables) -> component; raises UserError on a bad combination.
Builder = Callable[..., object]


@dataclass(frozen=True)
class Top:
    """One generated top.

    ``build(spec, lanes, fault, variant, tables)`` returns the component (validating first, so a rejected component
    is never half-built); ``stem(spec, lanes, fault, variant, tables)`` the file stem; ``config(component, spec,
    lanes, fault, variant)`` the sidecar's ``config``. ``lanes``: the top has engine lanes (``--lanes`` applies);
    ``variants``/``default_variant``: the shift-add multiplier variants it accepts; ``testbench``: the cocotb module
    that verifies it (``None``: checked by other means); ``versions``: the sidecar's spec-version entry.
    """

    name: str
    module: str
    spec_type: type
    build: Builder
    stem: Callable[..., str]
    config: Callable[..., dict]
    packing: str
    latency_definition: str
    faults: Mapping[str, str]
    testbench: str | None = None
    lanes: bool = False
    variants: tuple = ()
    default_variant: str | None = None
    versions: tuple = ("spec", SPEC_VERSION)
    description: str = ""
    default_spec: Callable[[], object] = field(default=DatapathSpec)
    #: the spec of ``python -m hw.generate``'s arguments (raises UserError or SpecError on a bad combination)
    spec_from_args: Callable[..., object] = field(default=lambda args: _dfsq_spec_from_args(args))
    #: the command-line flag that selects this entry over the name's first one (``--normalized``)
    cli_flag: str | None = None
    #: the engine without point tables (``--codes-in``) exists for this top
    codes_in: bool = False
    #: the top has a de-normalization format (``--denorm``, ``--sigma-bits``, ``--shift-bits`` apply)
    denorm: bool = True
    #: its Verilog must have no case blocks (``always @*``): the tops simulated under Icarus (hw.generate checks)
    case_free: bool = True
    #: its memories start with zeros (False: undefined, no initialization in the Verilog: see hw.generate)
    zero_init: bool = True

    def resolve_variant(self, variant):
        """The variant the component is built with: the top's default when none is given."""
        return self.default_variant if variant is None else variant


#: Every registered top, in registration order.
REGISTRY: list[Top] = []


def register(top: Top) -> Top:
    if any(t.name == top.name and t.spec_type is top.spec_type for t in REGISTRY):
        raise ValueError(f"top {top.name!r} is already registered for {top.spec_type.__name__}")
    REGISTRY.append(top)
    return top


def names() -> list[str]:
    """The ``--top`` names, in registration order (each once)."""
    return list(dict.fromkeys(t.name for t in REGISTRY))


def names_where(pred) -> list[str]:
    """The ``--top`` names with at least one entry for which ``pred(entry)`` holds (the tops an option applies to)."""
    return list(dict.fromkeys(t.name for t in REGISTRY if pred(t)))


def modules() -> dict[str, str]:
    """``--top`` name -> Verilog module name."""
    return {t.name: t.module for t in REGISTRY}


def all_faults() -> dict[str, str]:
    """Every registered fault name with its description (for ``--fault`` choices)."""
    out = {}
    for t in REGISTRY:
        out.update(t.faults)
    return out


def by_name(name: str) -> Top:
    """The first entry registered under ``name`` (its default spec type)."""
    for t in REGISTRY:
        if t.name == name:
            return t
    raise UserError(f"--top must be one of {', '.join(names())}, not {name!r}")


def lookup(name: str, spec) -> Top:
    """The entry for ``name`` built from ``spec``; a spec of a type the top does not take is a one-line error."""
    first = by_name(name)
    for t in REGISTRY:
        if t.name == name and isinstance(spec, t.spec_type):
            return t
    return first  # its builder names the spec type it needs


def for_args(args) -> Top:
    """The entry ``python -m hw.generate``'s arguments select: ``--top`` and an entry's flag (``--normalized``)."""
    first = by_name(args.top)
    for t in REGISTRY:
        if t.cli_flag and getattr(args, t.cli_flag, False):
            if t.name != args.top:
                raise UserError(f"--{t.cli_flag} applies to --top {t.name} only")
            return t
    return first


def _given(value, default):
    return default if value is None else value


def _not_applying(args, names, what: str) -> None:
    """UserError naming every given option of ``names`` (argparse dests) that does not apply to ``what``."""
    given = [f"--{n.replace('_', '-')}" for n in names if getattr(args, n) is not None]
    if given:
        raise UserError(f"{', '.join(given)} {'does' if len(given) == 1 else 'do'} not apply to {what}")


def _dfsq_spec_from_args(args) -> DatapathSpec:
    return DatapathSpec(words=_given(args.words, DEFAULT_WORDS), act_bits=_given(args.act_bits, 4),
                        weight_bits=_given(args.weight_bits, 4),
                        scale_bits=_given(args.scale_bits, DEFAULT_SCALE_BITS), channels=args.channels,
                        gap=_given(args.gap, DEFAULT_GAP),
                        **denorm_format(args.denorm, args.sigma_bits, args.shift_bits))


def _uniform_spec_from_args(args) -> UniformSpec:
    _not_applying(args, ("words", "scale_bits", "gap", "variant", "denorm", "sigma_bits", "shift_bits"),
                  f"--top {args.top} (no word set, no de-normalization, integer multipliers)")
    return UniformSpec(act_bits=_given(args.act_bits, DEFAULT_UNIFORM_BITS),
                       weight_bits=_given(args.weight_bits, DEFAULT_UNIFORM_BITS), channels=args.channels)


def _normalized_spec_from_args(args) -> DatapathSpec:
    _not_applying(args, ("words", "gap", "variant"),
                  "the normalized uniform engine (no word set, integer multipliers)")
    return DatapathSpec(point_set="uniform", act_bits=_given(args.act_bits, DEFAULT_UNIFORM_BITS),
                        weight_bits=_given(args.weight_bits, DEFAULT_UNIFORM_BITS),
                        scale_bits=_given(args.scale_bits, DEFAULT_SCALE_BITS), channels=args.channels,
                        **denorm_format(args.denorm, args.sigma_bits, args.shift_bits))


def _fault_suffix(fault) -> str:
    return f"_fault-{fault}" if fault is not None else ""


def _user_errors(fn, *args, **kwargs):
    """Run a component's own validation, turning its TypeError/ValueError into a one-line UserError."""
    try:
        return fn(*args, **kwargs)
    except (TypeError, ValueError) as exc:
        raise UserError(str(exc)) from None


def _check_fault(top: str, fault, known: Mapping[str, str], what: str | None = None) -> None:
    if fault is not None and fault not in known:
        raise UserError(f"unknown fault {fault!r} for {what or f'--top {top}'}; known: {', '.join(sorted(known))}")


# ---------------------------------------------------------------------------------------------------------------
# DFSQ tops: built from a universal-set golden.spec.DatapathSpec

def _dfsq_spec(top: str, spec) -> DatapathSpec:
    if not isinstance(spec, DatapathSpec):
        raise UserError(f"--top {top} needs a golden.spec.DatapathSpec, not {type(spec).__name__}")
    if spec.uniform_points:
        raise UserError(f"--top {top} needs a universal-set spec; the uniform point set is --top uniform-engine "
                        "--normalized")
    return spec


def _dfsq_stem(module: str, spec: DatapathSpec) -> str:
    points = "uniform" if spec.uniform_points else f"w{spec.words}"
    s = f"{module}_{points}_a{spec.act_bits}_b{spec.weight_bits}_s{spec.scale_bits}_c{spec.channels}"
    if spec.gap != DEFAULT_GAP:
        s += f"_g{spec.gap}"
    if spec.split:
        s += f"_split-m{spec.sigma_bits}s{spec.shift_bits}"
    return s


def _variant_suffix(variant, default) -> str:
    return f"_v-{variant}" if variant is not None and variant != default else ""


def _dfsq_config(top: Top, spec: DatapathSpec, fault, variant) -> dict:
    config = {"top": top.name, "module": top.module, "words": spec.words, "gap": spec.gap,
              "act_bits": spec.act_bits, "weight_bits": spec.weight_bits, "scale_bits": spec.scale_bits,
              "channels": spec.channels, "fault": fault,
              "fault_description": top.faults.get(fault) if fault else None, "variant": variant,
              "denorm": spec.denorm}
    if spec.uniform_points:
        del config["words"], config["gap"]
        config.update(point_set=spec.point_set, normalized=True)
    if spec.split:
        config.update(sigma_bits=spec.sigma_bits, shift_bits=spec.shift_bits)
    return config


def _check_variant(top: str, variant, allowed) -> None:
    if variant not in allowed:
        raise UserError(f"unknown multiplier variant {variant!r} for --top {top}; known: {', '.join(allowed)}")


_ENGINE_PACKING = ("element e = l*9 + t occupies bits [e*element_width, (e+1)*element_width) of in_idx/in_weight; "
                   "taps in raster order t = 3*(dy+1) + (dx+1); lane l of group g serves input channel g*L + l; "
                   "sigma/mu of lane l at [l*scale_bits, (l+1)*scale_bits); signed elements are two's complement")
_STREAM_LATENCY = "cycles from the handshake of a last beat to its out_valid, out_ready held high"


def _build_engine(spec, lanes, fault, variant, tables):
    spec = _dfsq_spec("engine", spec)
    known = {**FAULTS, **ENGINE_FAULTS} if spec.split else FAULTS
    _check_fault("engine", fault, known, "this top and spec")
    _check_variant("engine", variant, COMBINATIONAL_VARIANTS)
    _user_errors(check_lanes, spec, lanes)
    return ConvEngine(spec=spec, lanes=lanes, fault=fault, variant=variant, tables=tables)


def _engine_config(component, spec, lanes, fault, variant):
    return dict(_dfsq_config(ENGINE, spec, fault, variant), lanes=lanes, groups=component.groups,
                tables=component.tables)


ENGINE = register(Top(
    name="engine", module="dfsq_engine", spec_type=DatapathSpec, build=_build_engine,
    stem=lambda spec, lanes, fault, variant, tables: (
        _dfsq_stem("dfsq_engine", spec) + f"_l{lanes}" + ("" if tables else "_codes-in")
        + _variant_suffix(variant, "deferred") + _fault_suffix(fault)),
    config=_engine_config, packing=_ENGINE_PACKING, latency_definition=_STREAM_LATENCY,
    faults={**FAULTS, **ENGINE_FAULTS}, testbench="sim.tb_engine", lanes=True, variants=COMBINATIONAL_VARIANTS,
    default_variant="deferred", codes_in=True, description="the lane-parallel DFSQ conv engine (hw.units.engine)"))


def _build_mac(spec, lanes, fault, variant, tables):
    spec = _dfsq_spec("mac", spec)
    _check_fault("mac", fault, FAULTS, "this top and spec")
    _check_variant("mac", variant, VARIANTS)
    return ShiftAddMAC(spec=spec, fault=fault, variant=variant)


MAC = register(Top(
    name="mac", module="dfsq_mac", spec_type=DatapathSpec, build=_build_mac,
    stem=lambda spec, lanes, fault, variant, tables: (
        _dfsq_stem("dfsq_mac", spec) + _variant_suffix(variant, "registered") + _fault_suffix(fault)),
    config=lambda component, spec, lanes, fault, variant: dict(_dfsq_config(MAC, spec, fault, variant),
                                                               acc_bits=component.acc_bits),
    packing="in_code is a point code (golden.spec layout: word i's selector at bits [2i-1:2i-2], sign at bit 2N)",
    latency_definition="cycles from a beat's in_valid to its out_valid", faults=FAULTS, testbench="sim.tb_mac",
    variants=VARIANTS, default_variant="registered", denorm=False,
    description="one shift-add multiply-accumulate (hw.units.mac)"))


# ---------------------------------------------------------------------------------------------------------------
# Uniform baselines

def _build_uniform(spec, lanes, fault, variant, tables):
    if not isinstance(spec, UniformSpec):
        raise UserError(f"--top uniform-engine needs a golden.uniform_spec.UniformSpec, not {type(spec).__name__}")
    _check_fault("uniform-engine", fault, UNIFORM_FAULTS)
    if variant is not None:
        raise UserError("--variant applies to the DFSQ tops only (the uniform engine has integer multipliers)")
    _user_errors(check_uniform_lanes, spec, lanes)
    return UniformEngine(spec=spec, lanes=lanes, fault=fault)


def _uniform_config(component, spec, lanes, fault, variant):
    return {"top": "uniform-engine", "module": "uniform_engine", "act_bits": spec.act_bits,
            "weight_bits": spec.weight_bits, "channels": spec.channels, "lanes": lanes, "groups": component.groups,
            "fault": fault, "fault_description": UNIFORM_FAULTS.get(fault) if fault else None}


UNIFORM_ENGINE = register(Top(
    name="uniform-engine", module="uniform_engine", spec_type=UniformSpec, build=_build_uniform,
    stem=lambda spec, lanes, fault, variant, tables: (
        f"uniform_engine_a{spec.act_bits}_b{spec.weight_bits}_c{spec.channels}_l{lanes}" + _fault_suffix(fault)),
    config=_uniform_config,
    packing=("element e = l*9 + t occupies bits [e*element_width, (e+1)*element_width) of in_act/in_weight; "
             "taps in raster order t = 3*(dy+1) + (dx+1); lane l of group g serves input channel g*L + l; "
             "a' = q_a - zp_a and w' = q_w - zp_w, two's complement; a masked tap's a' is ignored"),
    latency_definition=_STREAM_LATENCY, faults=UNIFORM_FAULTS, testbench="sim.tb_uniform_engine", lanes=True,
    versions=("uniform_spec", UNIFORM_SPEC_VERSION), default_spec=UniformSpec, spec_from_args=_uniform_spec_from_args,
    denorm=False, description="the static uniform (Min-Max) baseline engine (hw.units.uniform_engine)"))


def _build_normalized(spec, lanes, fault, variant, tables):
    if not spec.uniform_points:
        raise UserError("the normalized uniform engine needs DatapathSpec(point_set='uniform')")
    _check_fault("uniform-engine", fault, ENGINE_FAULTS, "the normalized uniform engine")
    if variant is not None:
        raise UserError("--variant applies to the shift-add multiplier, which the normalized uniform engine "
                        "does not have")
    _user_errors(check_lanes, spec, lanes)
    return _user_errors(ConvEngine, spec=spec, lanes=lanes, fault=fault, tables=tables)


def _normalized_stem(spec, lanes, fault, variant, tables):
    s = f"uniform_engine_normalized_a{spec.act_bits}_b{spec.weight_bits}_s{spec.scale_bits}_c{spec.channels}"
    if spec.split:
        s += f"_split-m{spec.sigma_bits}s{spec.shift_bits}"
    return s + f"_l{lanes}" + ("" if tables else "_codes-in") + _fault_suffix(fault)


NORMALIZED_UNIFORM_ENGINE = register(Top(
    name="uniform-engine", module="uniform_engine", spec_type=DatapathSpec, build=_build_normalized,
    stem=_normalized_stem,
    config=lambda component, spec, lanes, fault, variant: dict(
        _dfsq_config(NORMALIZED_UNIFORM_ENGINE, spec, fault, variant), lanes=lanes, groups=component.groups,
        tables=component.tables),
    packing=_ENGINE_PACKING, latency_definition=_STREAM_LATENCY, faults=ENGINE_FAULTS, testbench="sim.tb_engine",
    lanes=True, default_spec=lambda: DatapathSpec(point_set="uniform"), spec_from_args=_normalized_spec_from_args,
    cli_flag="normalized", codes_in=True,
    description="the normalized uniform baseline: DFSQ's engine with evenly spaced points and integer multipliers"))


def _build_mean_unit(spec, lanes, fault, variant, tables):
    if not isinstance(spec, DatapathSpec):
        raise UserError(f"--top mean-unit needs a golden.spec.DatapathSpec, not {type(spec).__name__}")
    if not spec.split:
        raise UserError("--top mean-unit belongs to the split de-normalization: pass --denorm split")
    _check_fault("mean-unit", fault, MEAN_UNIT_FAULTS)
    if variant is not None:
        raise UserError("--variant does not apply to --top mean-unit (it has no shift-add multiplier)")
    return MeanUnit(spec=spec, fault=fault)


MEAN_UNIT = register(Top(
    name="mean-unit", module="dfsq_mean_unit", spec_type=DatapathSpec, build=_build_mean_unit,
    stem=lambda spec, lanes, fault, variant, tables: (
        _dfsq_stem("dfsq_mean_unit", spec) + _fault_suffix(fault)),
    config=lambda component, spec, lanes, fault, variant: _dfsq_config(MEAN_UNIT, spec, fault, variant),
    packing=("in_weight: tap t at bits [t*w_bits, (t+1)*w_bits), raster order, two's complement; one beat per "
             "input channel; out_class k = 4 r + q (golden.mean_unit), 16 outputs per output channel"),
    latency_definition="cycles from the handshake of a last beat to its first out_valid", faults=MEAN_UNIT_FAULTS,
    testbench="sim.tb_mean_unit", description="the split de-normalization's start values (hw.units.mean_unit)"))


# ---------------------------------------------------------------------------------------------------------------
# Contract 2: the integer network's units, built from a golden.int_spec.IntSpec (docs/datapath.md "Contract 2")

def _int_spec_from_args(args) -> IntSpec:
    """The DFSQ datapath of the arguments and the feature-map width ``--fmap-bits`` (the fraction bits are no
    hardware parameter: the units see integers; 0 here)."""
    bits = DEFAULT_FMAP_BITS if getattr(args, "fmap_bits", None) is None else args.fmap_bits
    return IntSpec(datapath=_dfsq_spec_from_args(args), fmap=FmapFormat(bits, 0))


def _int_spec(top: str, spec) -> IntSpec:
    if not isinstance(spec, IntSpec):
        raise UserError(f"--top {top} needs a golden.int_spec.IntSpec, not {type(spec).__name__}")
    _dfsq_spec(top, spec.datapath)
    return spec


def _int_stem(module: str, spec: IntSpec, lanes=None, fault=None) -> str:
    return (_dfsq_stem(module, spec.datapath) + f"_f{spec.fmap.bits}" + (f"_l{lanes}" if lanes else "")
            + _fault_suffix(fault))


def _int_config(top: Top, component, spec: IntSpec, lanes, fault, variant) -> dict:
    return dict(_dfsq_config(top, spec.datapath, fault, variant), fmap_bits=spec.fmap.bits,
                max_pixels=spec.max_pixels, **({"lanes": lanes} if top.lanes else {}))


def _int_builder(name: str, cls, faults, lanes: bool):
    def build(spec, n_lanes, fault, variant, tables):
        spec = _int_spec(name, spec)
        _check_fault(name, fault, faults)
        if variant is not None:
            raise UserError(f"--variant does not apply to --top {name} (no shift-add multiplier)")
        kw = {"lanes": n_lanes} if lanes else {}
        return _user_errors(cls, spec=spec, fault=fault, **kw)
    return build


def _register_int(name: str, module: str, cls, faults, lanes: bool, packing: str, latency: str, testbench: str,
                  description: str, denorm: bool = False) -> Top:
    top = None

    def config(component, spec, n_lanes, fault, variant):
        return _int_config(top, component, spec, n_lanes, fault, variant)

    top = register(Top(
        name=name, module=module, spec_type=IntSpec, build=_int_builder(name, cls, faults, lanes),
        stem=lambda spec, n_lanes, fault, variant, tables: _int_stem(module, spec, n_lanes if lanes else None, fault),
        config=config, packing=packing, latency_definition=latency, faults=faults, testbench=testbench, lanes=lanes,
        versions=("int_spec", INT_SPEC_VERSION), default_spec=IntSpec, spec_from_args=_int_spec_from_args,
        denorm=denorm, description=description))
    return top


_LANES_PACKING = ("lane l of a beat with group g is channel g*L + l; element l of an array port at bits "
                  "[l*width, (l+1)*width), signed elements two's complement")
STATS_UNIT = _register_int(
    "stats-unit", "dfsq_stats_unit", StatsUnit, STATS_FAULTS, True, _LANES_PACKING,
    "cycles from the handshake of a map's last beat to its first out_valid (out_ready high)", "sim.tb_stream",
    "per-channel sum, min, max, rounded mean and M of a streamed feature map (hw.units.stats_unit)")
THRESHOLD_UNIT = _register_int(
    "threshold-unit", "dfsq_threshold_unit", ThresholdUnit, THRESHOLD_FAULTS, False,
    "tbl_code: golden.spec point-code layout; one input per channel, 2^b - 1 outputs (k ascending) per channel",
    "cycles from a channel's input handshake to its first threshold's out_valid (out_ready high)",
    "sim.tb_stream", "a channel's 2^b - 1 thresholds with one multiplier (hw.units.threshold_unit)")
QUANTIZER = _register_int(
    "quantizer", "dfsq_quantizer", Quantizer, QUANTIZER_FAULTS, True, _LANES_PACKING + "; codes unsigned",
    _STREAM_LATENCY.replace("a last beat", "a beat"), "sim.tb_stream",
    "pipelined binary-search thresholding, b stages (hw.units.quantizer)")
POST_UNIT = _register_int(
    "post-unit", "dfsq_post_unit", PostUnit, POST_FAULTS, True,
    "element l of in_acc/in_mult/in_shift/in_skip/out_y/out_sat at bits [l*width, (l+1)*width); out_sat bit 0: the "
    "requantized value clamped, bit 1: the sum clamped", _STREAM_LATENCY.replace("a last beat", "a beat"),
    "sim.tb_stream", "requantization, ReLU, saturation and residual add (hw.units.post_unit)", denorm=True)


def _build_uniform_requant(spec, lanes, fault, variant, tables):
    if not isinstance(spec, UniformSpec):
        raise UserError(f"--top uniform-requant needs a golden.uniform_spec.UniformSpec, not {type(spec).__name__}")
    _check_fault("uniform-requant", fault, {})
    if variant is not None:
        raise UserError("--variant does not apply to --top uniform-requant")
    return _user_errors(StaticRequantizer, spec=spec, lanes=lanes)


UNIFORM_REQUANT = register(Top(
    name="uniform-requant", module="uniform_requant", spec_type=UniformSpec, build=_build_uniform_requant,
    stem=lambda spec, lanes, fault, variant, tables: (
        f"uniform_requant_a{spec.act_bits}_b{spec.weight_bits}_c{spec.channels}_l{lanes}"),
    config=lambda component, spec, lanes, fault, variant: {
        "top": "uniform-requant", "module": "uniform_requant", "act_bits": spec.act_bits,
        "weight_bits": spec.weight_bits, "channels": spec.channels, "lanes": lanes},
    packing="element l of in_acc/out_code at bits [l*width, (l+1)*width); one multiplier, shift, zero point per tensor",
    latency_definition=_STREAM_LATENCY.replace("a last beat", "a beat"), faults={}, testbench=None, lanes=True,
    versions=("uniform_spec", UNIFORM_SPEC_VERSION), default_spec=UniformSpec, spec_from_args=_uniform_spec_from_args,
    denorm=False, description="the static uniform requantizer of a Min-Max / Uniform-MSE design (hw.units.post_unit)"))


# ---------------------------------------------------------------------------------------------------------------
# The whole-body accelerator: sized for a model's integer graph (hw.program), nothing network-specific in its RTL

def _accel_spec_from_args(args):
    from .program import model_sizes

    _not_applying(args, ("gap", "variant", "sigma_bits", "shift_bits"), "--top accelerator")
    if args.denorm not in (None, "fused"):
        raise UserError("--top accelerator implements the fused de-normalization (--denorm fused)")
    lanes = args.lanes if args.lanes is not None else 16
    return model_sizes(args.model, rdn_config=args.rdn_config, lanes=lanes, max_pixels=args.max_pixels,
                       words=_given(args.words, DEFAULT_WORDS), act_bits=_given(args.act_bits, 4),
                       weight_bits=_given(args.weight_bits, 4), scale_bits=_given(args.scale_bits, DEFAULT_SCALE_BITS),
                       fmap_bits=_given(args.fmap_bits, DEFAULT_FMAP_BITS))


def _build_accel(spec, lanes, fault, variant, tables):
    from .units.accelerator import ACCEL_FAULTS, Accelerator

    if not isinstance(spec, AccelSpec):
        raise UserError(f"--top accelerator needs an hw.units.accel_spec.AccelSpec, not {type(spec).__name__}")
    _check_fault("accelerator", fault, ACCEL_FAULTS)
    if variant is not None:
        raise UserError("--variant does not apply to --top accelerator")
    if lanes != spec.lanes:
        raise UserError(f"--lanes {lanes} does not match the accelerator's sizes ({spec.lanes} lanes)")
    return _user_errors(Accelerator, spec=spec, fault=fault)


def _accel_stem(spec, lanes, fault, variant, tables):
    import hashlib
    import json

    dp = spec.datapath
    digest = hashlib.sha256(json.dumps(spec.describe(), sort_keys=True).encode()).hexdigest()[:8]
    return (f"dfsq_accel_w{dp.words}_a{dp.act_bits}_b{dp.weight_bits}_s{dp.scale_bits}_f{spec.fb}_l{spec.lanes}"
            f"_px{spec.max_pixels}_{digest}" + _fault_suffix(fault))


def _accel_config(component, spec, lanes, fault, variant):
    from .units.accelerator import ACCEL_FAULTS

    return {"top": "accelerator", "module": "dfsq_accel", **spec.describe(), "fault": fault,
            "fault_description": ACCEL_FAULTS.get(fault) if fault else None}


def _accel_faults():
    from .units.accelerator import ACCEL_FAULTS

    return ACCEL_FAULTS


ACCELERATOR = register(Top(
    name="accelerator", module="dfsq_accel", spec_type=AccelSpec, build=_build_accel, stem=_accel_stem,
    config=_accel_config,
    packing=("host_data: the record of memory host_mem (hw.units.accel_spec layouts, fields LSB first); "
             "trace_data: every value the post unit writes, steps in order, pixel-major, output channel innermost"),
    latency_definition="cycles from start to done: the report of sim.network", faults=_accel_faults(),
    testbench=None, lanes=True, denorm=False, case_free=False, zero_init=False,
    spec_from_args=_accel_spec_from_args,
    default_spec=lambda: None,
    description="the whole-body DFSQ accelerator (hw.units.accelerator), driven by sim.network's C++ harness"))
