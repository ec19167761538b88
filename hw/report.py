"""Area and timing of the DFSQ MAC and engine next to uniform multiplier MACs; writes docs/hardware.md.

    python -m hw.report [--sweep none|words4|all] [--engine-sweep none|words4|all] [--ecp5 none|engines]
        [--cache build/hw_report] [--results bench/results] [--out docs/hardware.md] [--json docs/hardware.json]

Yosys (YoWASP) synthesizes every design three ways (generic gates, iCE40, Xilinx 7-series without DSPs) and
nextpnr-ice40 places and routes a scan harness around it for fmax (:mod:`hw.synth`). Results are cached, so a
rerun only synthesizes what changed. The MAC comparison measures every multiplier variant of :mod:`hw.units.shift_add`
and the equal-precision multiplier MAC at 4-bit (the default) and 8-bit weights, fmax included. The trade-off
table covers words 2..5 x bits 3..8 (weights and activations at the same width, as in the paper's tables) with the
PSNR of each configuration where ``bench.psnr_table`` has measured it (blank otherwise). ``--ecp5 engines`` (the
default) adds the engines at a real size on a Lattice ECP5 (LFE5U-85F): the 64-channel, 16-lane DFSQ engine and the
uniform (Min-Max, static scale) engines of :mod:`hw.units.uniform_engine`, synthesized once without DSPs and once with,
and placed and routed by nextpnr-ecp5 for fmax. Raw numbers go to the JSON file next to the Markdown.
"""
from __future__ import annotations

import json
import math
import re
from datetime import datetime, timezone
from pathlib import Path

from tqdm import tqdm

from golden.args import Parser
from golden.errors import UserError, cli_main
from golden.files import atomic_output
from golden.spec import DEFAULT_SHIFT_BITS, DEFAULT_SIGMA_BITS, DatapathSpec
from golden.uniform_spec import UniformSpec

from .units.baselines import MultiplierMAC, baselines, equal_precision_name
from .units.decoder import PointDecoder
from .units.engine import ConvEngine
from .generate import DEFAULT_VARIANTS, to_verilog
from .harness import ScanHarness
from .units.mac import ShiftAddMAC, mac_acc_bits
from .units.mean_unit import MeanUnit
from .units.shift_add import VARIANTS
from .synth import ECP5_CAPACITY, ECP5_DEVICE, ECP5_TARGET_MHZ, ICE40_DEVICE, Tools, place_failure, run_flow
from .units.uniform_engine import UniformEngine

ROOT = Path(__file__).resolve().parent.parent
WORDS = (2, 3, 4, 5)
BITS = (3, 4, 5, 6, 7, 8)
DATASETS = ("Set5", "Set14", "B100", "Urban100")
ENGINE_CHANNELS, ENGINE_LANES = 8, 2
ALL_FLOWS = ("ice40", "xilinx", "generic", "fmax")
SWEEP_FLOWS = ("ice40", "xilinx")
GOAL = 0.45
#: Weight widths of the MAC comparison (every variant and the equal-precision baseline, all flows).
COMPARE_WEIGHT_BITS = (4, 8)
#: The issue's reference figures (iCE40 LUT4): a naive shift-add MAC and the equal-precision multiplier MAC.
ISSUE_NAIVE, ISSUE_BASELINE = 238, 453
#: ECP5: the engines at a real size (EDSR's 64 input channels, 16 lanes) and the small DFSQ engine of the iCE40 table.
ECP5_CHANNELS, ECP5_LANES = 64, 16
ECP5_FLOWS = ("ecp5", "ecp5-dsp", "ecp5-fmax")
#: Lanes of the instance placed and routed for the fmax of the 16-lane DFSQ engine: nextpnr-ecp5 (WebAssembly) on
#: the 16-lane engine would take longer than the ~20 minutes a report run may spend on one design. The lanes are
#: identical; the 16-lane engine's lane tree (stage 5) adds 32 terms instead of 8 and a larger design has longer
#: routes, so the 4-lane fmax is an optimistic estimate of the 16-lane one.
ECP5_DFSQ_FMAX_LANES = 4
#: Weight and activation bits of the uniform engines measured on the ECP5; the comparison takes W6A6 (about DFSQ
#: W4A4's PSNR on all four x2 sets in docs/results.md).
UNIFORM_BITS = (4, 5, 6, 8)
UNIFORM_COMPARE_BITS = 6
#: Uniform engines placed and routed for fmax, and at how many lanes.
UNIFORM_FMAX = {6: ECP5_LANES}
#: The split de-normalization format the comparison takes: the spec's default (golden.spec.DEFAULT_SIGMA_BITS /
#: DEFAULT_SHIFT_BITS, 6:0: the cheapest format within 0.01 dB of fake-quant, bench/results/denorm_format_*.md).
SPLIT_DEFAULT = (DEFAULT_SIGMA_BITS, DEFAULT_SHIFT_BITS)
#: Split de-normalization engines measured on the ECP5 (sigma bits, shift bits, flows): the default, placed and
#: routed at its full 16 lanes for fmax; 8:0 (a wider mantissa, also within 0.01 dB); 1:0 has no sigma multiplier
#: at all (an AND per bit of A), so the difference between the default and 1:0 is the lanes' de-normalization.
SPLIT_FORMATS = ((*SPLIT_DEFAULT, ECP5_FLOWS), (8, 0, ("ecp5", "ecp5-dsp")), (1, 0, ("ecp5",)))
#: Normalized uniform engines (``hw.generate --top uniform-engine --normalized``): DFSQ's engine with the uniform
#: point set, split de-normalization in the default format, codes in (a uniform point needs no table: the beat
#: carries P itself), at these bits; with flows.
NORMALIZED_BITS = {5: ("ecp5",), 6: ("ecp5", "ecp5-dsp")}
#: The issue's figures (synth_ecp5 -nodsp, LUT4-equivalents): today's DFSQ engine and a plain datapath of 144
#: int6 x int6 multipliers with an adder tree.
ISSUE_ECP5_DFSQ, ISSUE_ECP5_UNIFORM = 70_000, 20_000


def mac_group(weight_bits: int) -> str:
    """Row group of the MAC comparison at ``weight_bits`` (``"mac"`` for the default width)."""
    return "mac" if weight_bits == DatapathSpec().weight_bits else f"mac-wb{weight_bits}"


# --- designs --------------------------------------------------------------------------------------------------

def _mac(spec, variant):
    return lambda: ShiftAddMAC(spec=spec, variant=variant)


def _baseline(kwargs):
    return lambda: MultiplierMAC(**kwargs)


def _engine(spec, lanes, tables=True):
    return lambda: ConvEngine(spec=spec, lanes=lanes, tables=tables)


def _uniform_engine(spec, lanes):
    return lambda: UniformEngine(spec=spec, lanes=lanes)


def ecp5_plan() -> list[dict]:
    """The ECP5 jobs: the small and the 16-lane DFSQ engine, the uniform engines (``fmax_make``: the instance
    placed and routed for fmax when it is not the design itself)."""
    jobs = []
    for ch, lanes in ((ENGINE_CHANNELS, ENGINE_LANES), (ECP5_CHANNELS, ECP5_LANES)):
        spec = DatapathSpec(channels=ch)
        job = dict(group="ecp5", name=f"DFSQ engine w4 a4 b4 c{ch} l{lanes}", kind="dfsq", words=4, bits=4,
                   lanes=lanes, channels=ch, make=_engine(spec, lanes), flows=ECP5_FLOWS, fmax_lanes=lanes)
        if lanes > ECP5_DFSQ_FMAX_LANES:
            job.update(fmax_make=_engine(spec, ECP5_DFSQ_FMAX_LANES), fmax_lanes=ECP5_DFSQ_FMAX_LANES)
        jobs.append(job)
    for m, sh, flows in SPLIT_FORMATS:  # the split de-normalization (issue 14): mean term out of the lanes
        spec = DatapathSpec(channels=ECP5_CHANNELS, denorm="split", sigma_bits=m, shift_bits=sh)
        job = dict(group="ecp5", name=f"DFSQ engine w4 a4 b4 c{ECP5_CHANNELS} l{ECP5_LANES} split {m}:{sh}",
                   kind="dfsq", denorm="split", sigma_bits=m, shift_bits=sh, words=4, bits=4, lanes=ECP5_LANES,
                   channels=ECP5_CHANNELS, make=_engine(spec, ECP5_LANES), flows=flows, fmax_lanes=ECP5_LANES)
        jobs.append(job)
    mspec = DatapathSpec(channels=ECP5_CHANNELS, denorm="split", sigma_bits=SPLIT_DEFAULT[0],
                         shift_bits=SPLIT_DEFAULT[1])
    # without point tables in the lanes: beats carry codes, decoded once where the activations enter (one 1-port
    # point table per lane: the decoders row, synthesized once and counted ECP5_LANES times)
    jobs.append(dict(group="ecp5", name=f"DFSQ engine w4 a4 b4 c{ECP5_CHANNELS} l{ECP5_LANES} split "
                                        f"{SPLIT_DEFAULT[0]}:{SPLIT_DEFAULT[1]} codes-in", kind="dfsq",
                     denorm="split", sigma_bits=SPLIT_DEFAULT[0], shift_bits=SPLIT_DEFAULT[1], codes_in=True,
                     words=4, bits=4, lanes=ECP5_LANES, channels=ECP5_CHANNELS,
                     make=_engine(mspec, ECP5_LANES, tables=False), flows=("ecp5",)))
    rows = ECP5_CHANNELS // ECP5_LANES   # a lane serves channels l, l + L, ...: its table has channels / L rows
    jobs.append(dict(group="ecp5", name=f"input decoder (1-port point table, {rows} channels x 16 points), "
                                        f"x{ECP5_LANES} for codes-in", kind="decoder", words=4, bits=4, lanes=None,
                     count=ECP5_LANES, channels=rows,
                     make=lambda: PointDecoder(spec=mspec, channels=rows, read_ports=1), flows=("ecp5",)))
    for b, flows in NORMALIZED_BITS.items():
        nspec = DatapathSpec(channels=ECP5_CHANNELS, point_set="uniform", act_bits=b, weight_bits=b, denorm="split",
                             sigma_bits=SPLIT_DEFAULT[0], shift_bits=SPLIT_DEFAULT[1])
        jobs.append(dict(group="ecp5", name=f"normalized uniform engine W{b}A{b} c{ECP5_CHANNELS} l{ECP5_LANES} "
                                            f"split {SPLIT_DEFAULT[0]}:{SPLIT_DEFAULT[1]} codes-in",
                         kind="normalized", bits=b, lanes=ECP5_LANES, channels=ECP5_CHANNELS, codes_in=True,
                         make=_engine(nspec, ECP5_LANES, tables=False), flows=flows))
    jobs.append(dict(group="ecp5", name=f"mean unit (split) c{ECP5_CHANNELS}", kind="mean-unit", words=4, bits=4,
                     lanes=None, channels=ECP5_CHANNELS, make=lambda: MeanUnit(spec=mspec), flows=("ecp5",)))
    small = UniformSpec(act_bits=UNIFORM_COMPARE_BITS, weight_bits=UNIFORM_COMPARE_BITS, channels=ENGINE_CHANNELS)
    jobs.append(dict(group="ecp5", name=f"uniform engine W{UNIFORM_COMPARE_BITS}A{UNIFORM_COMPARE_BITS} "
                                        f"c{ENGINE_CHANNELS} l{ENGINE_LANES}", kind="uniform",
                     bits=UNIFORM_COMPARE_BITS, lanes=ENGINE_LANES, channels=ENGINE_CHANNELS,
                     make=_uniform_engine(small, ENGINE_LANES), flows=ECP5_FLOWS, fmax_lanes=ENGINE_LANES))
    for b in UNIFORM_BITS:
        spec = UniformSpec(act_bits=b, weight_bits=b, channels=ECP5_CHANNELS)
        job = dict(group="ecp5", name=f"uniform engine W{b}A{b} c{ECP5_CHANNELS} l{ECP5_LANES}", kind="uniform",
                   bits=b, lanes=ECP5_LANES, channels=ECP5_CHANNELS, make=_uniform_engine(spec, ECP5_LANES),
                   flows=("ecp5", "ecp5-dsp"))
        if b in UNIFORM_FMAX:
            job.update(flows=ECP5_FLOWS, fmax_lanes=UNIFORM_FMAX[b])
            if UNIFORM_FMAX[b] != ECP5_LANES:
                job["fmax_make"] = _uniform_engine(spec, UNIFORM_FMAX[b])
        jobs.append(job)
    return jobs + int_units_plan()


#: The contract-2 units (docs/datapath.md "Contract 2") at the engine's size: 64 channels, 16-bit feature maps,
#: the split 6:0 engine's accumulator for the post unit; at 16 lanes (the issue's size) and at 1 lane (what one
#: engine's output stream needs: at most one accumulator per cycle). Beside them the static uniform requantizer of
#: the uniform W6A6 engine (the uniform design of DFSQ W4A4's PSNR, docs/results.md): its only activation unit.
INT_FMAP_BITS = 16
INT_FLOWS = ("ecp5", "ecp5-dsp")


def int_units_plan() -> list[dict]:
    from golden.int_spec import FmapFormat, IntSpec

    from .units.post_unit import PostUnit, StaticRequantizer
    from .units.quantizer import Quantizer
    from .units.stats_unit import StatsUnit
    from .units.threshold_unit import ThresholdUnit

    dp = DatapathSpec(channels=ECP5_CHANNELS, denorm="split", sigma_bits=SPLIT_DEFAULT[0], shift_bits=SPLIT_DEFAULT[1])
    ispec = IntSpec(datapath=dp, fmap=FmapFormat(INT_FMAP_BITS, 0))
    uspec = UniformSpec(act_bits=UNIFORM_COMPARE_BITS, weight_bits=UNIFORM_COMPARE_BITS, channels=ECP5_CHANNELS)
    c = ECP5_CHANNELS
    designs = [("stats", f"statistics unit c{c} l{ECP5_LANES}", ECP5_LANES, lambda: StatsUnit(spec=ispec, lanes=16)),
               ("stats", f"statistics unit c{c} l1", 1, lambda: StatsUnit(spec=ispec, lanes=1)),
               ("thresholds", f"threshold unit c{c}", None, lambda: ThresholdUnit(spec=ispec)),
               ("quantizer", f"quantizer c{c} l{ECP5_LANES}", ECP5_LANES, lambda: Quantizer(spec=ispec, lanes=16)),
               ("post", f"post unit (split {SPLIT_DEFAULT[0]}:{SPLIT_DEFAULT[1]} acc) l{ECP5_LANES}", ECP5_LANES,
                lambda: PostUnit(spec=ispec, lanes=16)),
               ("post", f"post unit (split {SPLIT_DEFAULT[0]}:{SPLIT_DEFAULT[1]} acc) l1", 1,
                lambda: PostUnit(spec=ispec, lanes=1)),
               ("uniform-requant", f"static uniform requantizer W{UNIFORM_COMPARE_BITS}A{UNIFORM_COMPARE_BITS} "
                                   f"l{ECP5_LANES}", ECP5_LANES, lambda: StaticRequantizer(spec=uspec, lanes=16)),
               ("uniform-requant", f"static uniform requantizer W{UNIFORM_COMPARE_BITS}A{UNIFORM_COMPARE_BITS} l1",
                1, lambda: StaticRequantizer(spec=uspec, lanes=1))]
    return [dict(group="ecp5-int", name=name, kind=kind, words=4, bits=4, lanes=lanes, channels=c,
                 fmap_bits=INT_FMAP_BITS, make=make, flows=INT_FLOWS) for kind, name, lanes, make in designs]


#: The accelerator synthesized for area (hw.units.accelerator, EDSR's sizes at 16 lanes): memories sized as a real
#: device would hold them on chip (one 16 x 16 tile of each feature map instead of whole maps, the weights of two
#: layers instead of all 32: docs/hardware.md, "The accelerator"); the logic is the one sim.network runs.
ACCEL_AREA = dict(max_pixels=256, steps=32, wmem=2 * 64 * 4, tmem=2 * 64, omem=2 * 64, pmem=16)


def accelerator_area_spec():
    """The :class:`~hw.units.accel_spec.AccelSpec` of the area rows (EDSR's widths, ``ACCEL_AREA`` memories)."""
    import dataclasses

    from .program import model_sizes

    s = model_sizes("edsr", lanes=ECP5_LANES, max_pixels=ACCEL_AREA["max_pixels"])
    return dataclasses.replace(s, **{k: v for k, v in ACCEL_AREA.items() if k != "max_pixels"})


def accelerator_plan() -> list[dict]:
    """ECP5 jobs of the whole accelerator and of the engine it instantiates (fused, codes-in)."""
    from .units.accelerator import Accelerator

    espec = DatapathSpec(channels=ECP5_CHANNELS)
    return [
        dict(group="ecp5-accel", name=f"DFSQ accelerator W4A4 l{ECP5_LANES} (EDSR sizes)", kind="accelerator",
             words=4, bits=4, lanes=ECP5_LANES, channels=ECP5_CHANNELS,
             make=lambda: Accelerator(spec=accelerator_area_spec()), flows=("ecp5", "ecp5-dsp"), zero_init=False,
             timeout=12 * 3600),
        dict(group="ecp5-accel", name=f"its engine: DFSQ engine w4 a4 b4 c{ECP5_CHANNELS} l{ECP5_LANES} codes-in",
             kind="dfsq", words=4, bits=4, lanes=ECP5_LANES, channels=ECP5_CHANNELS, codes_in=True,
             make=_engine(espec, ECP5_LANES, tables=False), flows=("ecp5",)),
    ]


def plan(sweep: str, engine_sweep: str, ecp5: str = "none") -> list[dict]:
    """Every design to measure: name, kind, configuration, factory, flows."""
    jobs = []
    for wb in COMPARE_WEIGHT_BITS:
        spec = DatapathSpec(weight_bits=wb)
        group = mac_group(wb)
        for variant in VARIANTS:
            jobs.append(dict(group=group, name=f"DFSQ MAC ({variant})", kind="dfsq", variant=variant,
                             words=spec.words, bits=wb, make=_mac(spec, variant), flows=ALL_FLOWS))
        named = baselines(spec)
        if wb != DatapathSpec().weight_bits:  # the int4/int8 reference MACs do not depend on the weight width
            named = {equal_precision_name(spec): named[equal_precision_name(spec)]}
        for name, kwargs in named.items():
            jobs.append(dict(group=group, name=f"{name} MAC", kind="baseline", baseline=name, words=spec.words,
                             bits=wb, make=_baseline(kwargs), flows=ALL_FLOWS))
    if sweep != "none":
        for words in WORDS if sweep == "all" else (4,):
            for bits in BITS:
                s = DatapathSpec(words=words, act_bits=bits, weight_bits=bits)
                jobs.append(dict(group="sweep", name=f"DFSQ MAC w{words} b{bits}", kind="dfsq",
                                 variant=DEFAULT_VARIANTS["mac"], words=words, bits=bits,
                                 make=_mac(s, DEFAULT_VARIANTS["mac"]), flows=SWEEP_FLOWS))
                eq = baselines(s)[equal_precision_name(s)]
                jobs.append(dict(group="sweep", name=f"{equal_precision_name(s)} w{words} b{bits}", kind="baseline",
                                 words=words, bits=bits, make=_baseline(eq), flows=SWEEP_FLOWS))
    es = DatapathSpec(channels=ENGINE_CHANNELS)
    jobs.append(dict(group="engine", name=f"engine w4 a4 b4 c{ENGINE_CHANNELS} l{ENGINE_LANES}", words=4, bits=4,
                     lanes=ENGINE_LANES, channels=ENGINE_CHANNELS, make=_engine(es, ENGINE_LANES), flows=ALL_FLOWS))
    if engine_sweep != "none":
        for words in WORDS if engine_sweep == "all" else (4,):
            for bits in BITS:
                if (words, bits) == (4, 4):
                    continue
                s = DatapathSpec(words=words, act_bits=bits, weight_bits=bits, channels=ENGINE_CHANNELS)
                jobs.append(dict(group="engine-sweep", name=f"engine w{words} b{bits}", words=words, bits=bits,
                                 lanes=ENGINE_LANES, channels=ENGINE_CHANNELS, make=_engine(s, ENGINE_LANES),
                                 flows=("ice40",)))
    if ecp5 != "none":
        jobs += ecp5_plan()
    return jobs


def measure(job: dict, cache: Path, tools: Tools) -> dict:
    """Run every flow of a job (the bare design for area, the scan harness for fmax)."""
    out = {}
    top = "design"
    bare = to_verilog(job["make"](), top, zero_init=job.get("zero_init", True))
    for flow in job["flows"]:
        if flow in ("fmax", "ecp5-fmax"):
            text = to_verilog(ScanHarness(job.get("fmax_make", job["make"])()), "harness")
            try:
                out[flow] = run_flow(flow, text, "harness", cache, tools)
            except UserError as exc:  # a design larger than the device has no fmax; anything else is an error
                if not place_failure(str(exc)):
                    raise
                out[flow] = {"fmax_mhz": None, "fits": False, "error": str(exc)}
        else:
            out[flow] = run_flow(flow, bare, top, cache, tools, timeout=job.get("timeout", 3600))
    return out


def mac_area(spec: DatapathSpec | None = None, cache=None, tools: Tools | None = None) -> dict:
    """iCE40 area of the default DFSQ MAC of ``spec`` and of its equal-precision multiplier MAC (cached).

    Returns ``dfsq_lut4``, ``baseline_lut4``, ``ratio`` (LUT4), ``dfsq_lc``, ``baseline_lc``, ``lc_ratio`` and
    the baseline's name.
    """
    spec = DatapathSpec() if spec is None else spec
    cache = Path(cache) if cache is not None else ROOT / "build" / "hw_report"
    tools = tools or Tools()
    name = equal_precision_name(spec)
    d = measure(dict(make=_mac(spec, DEFAULT_VARIANTS["mac"]), flows=("ice40",)), cache, tools)["ice40"]
    b = measure(dict(make=_baseline(baselines(spec)[name]), flows=("ice40",)), cache, tools)["ice40"]
    return {"dfsq_lut4": d["lut4"], "baseline_lut4": b["lut4"], "ratio": _ratio(d["lut4"], b["lut4"]),
            "dfsq_lc": d["lc"], "baseline_lc": b["lc"], "lc_ratio": _ratio(d["lc"], b["lc"]), "baseline": name,
            "variant": DEFAULT_VARIANTS["mac"]}


# --- PSNR results -----------------------------------------------------------------------------------------------

_KEY = re.compile(r"^x(?P<scale>\d+)/dfsq/W(?P<wb>\d+)A(?P<ab>\d+)/words(?P<words>\d+)/(?P<dataset>\w+)$")


def _is_psnr(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 0 < v < 200


def load_psnr(folder: Path) -> tuple[dict, list[str]]:
    """{(scale, words, weight_bits, act_bits, dataset): psnr} from the JSON files in ``folder`` (measured only)."""
    found, sources = {}, []
    folder = check_results_path(folder)
    single = folder.is_file()
    for path in [folder] if single else sorted(folder.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise UserError(f"--results: cannot read {path} as JSON ({str(exc).splitlines()[0][:120]})") from None
        records = []
        if isinstance(data, dict) and isinstance(data.get("results"), dict):
            for key, rec in data["results"].items():
                m = _KEY.match(str(key))
                if not m:
                    continue
                if not (isinstance(rec, dict) and _is_psnr(rec.get("psnr"))):
                    raise UserError(f"--results: {path}: results[{key!r}] has no PSNR in dB (field 'psnr')")
                records.append(((int(m["scale"]), int(m["words"]), int(m["wb"]), int(m["ab"]), m["dataset"]),
                                float(rec["psnr"])))
        elif isinstance(data, list):
            for i, rec in enumerate(data):
                if not (isinstance(rec, dict) and "psnr" in rec):
                    continue   # not a PSNR record (other benchmarks' rows)
                try:
                    if rec.get("method", "dfsq") != "dfsq":
                        continue
                    wb = int(rec.get("weight_bits", rec.get("bits")))
                    ab = int(rec.get("act_bits", rec.get("bits")))
                    cell = (int(rec.get("scale", 2)), int(rec["words"]), wb, ab, str(rec["dataset"]))
                except (AttributeError, KeyError, TypeError, ValueError):
                    raise UserError(f"--results: {path}: record {i} lacks scale/words/bits/dataset") from None
                if not _is_psnr(rec["psnr"]):
                    raise UserError(f"--results: {path}: record {i}: field 'psnr' must be a PSNR in dB")
                records.append((cell, float(rec["psnr"])))
        if records:
            sources.append(str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path))
            found.update(records)
    if not found:
        raise UserError(f"--results {folder}: no PSNR results in {'it' if single else 'its .json files'}")
    return found, sources


def check_results_path(path) -> Path:
    """``--results``: an existing folder of result JSON files, or one such file; a one-line UserError otherwise."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"--results {path} does not exist")
    if not (path.is_dir() or path.is_file()):
        raise UserError(f"--results {path} is neither a folder nor a file")
    return path


# --- rendering ----------------------------------------------------------------------------------------------------

def _fmt(v, digits=0):
    if v is None:
        return ""
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _ratio(a, b):
    return round(a / b, 2) if a is not None and b else None


def _best(rows: dict, key: str, pick=min) -> str:
    have = {name: r[key] for name, r in rows.items() if r.get(key) is not None}
    return pick(have, key=have.get) if have else "?"


def summarize(jobs: list[dict], results: list[dict]) -> dict:
    rows = []
    for job, res in zip(jobs, results):
        row = {k: v for k, v in job.items() if k not in ("make", "flows", "fmax_make")}
        ice, xil, gen, fmx = (res.get(f, {}) for f in ("ice40", "xilinx", "generic", "fmax"))
        row.update(lut4=ice.get("lut4"), lc=ice.get("lc"), carry=ice.get("carry"), ffs=ice.get("ffs"),
                   bram=ice.get("bram"), xilinx_luts=xil.get("luts"), xilinx_lutram=xil.get("lutram"),
                   xilinx_ffs=xil.get("ffs"), gates=gen.get("gates"), generic_ffs=gen.get("ffs"),
                   fmax_mhz=fmx.get("fmax_mhz"), raw=res)
        rows.append(row)
    return {"rows": rows}


def _mac_rows(rows: list[dict], weight_bits: int):
    """(DFSQ rows by variant, baseline rows by name, equal-precision row) of the comparison at ``weight_bits``."""
    macs = [r for r in rows if r["group"] == mac_group(weight_bits)]
    dfsq = {r["variant"]: r for r in macs if r["kind"] == "dfsq"}
    base = {r["baseline"]: r for r in macs if r["kind"] == "baseline"}
    eq = base.get(equal_precision_name(DatapathSpec(weight_bits=weight_bits)), {})
    return dfsq, base, eq


def _verdict(ratio) -> str:
    if ratio is None:
        return "not measured"
    return "met" if ratio <= GOAL else "not met"


def render(summary: dict, psnr: dict, psnr_sources: list[str], versions: dict, argv_line: str) -> str:
    rows = summary["rows"]
    spec = DatapathSpec()
    default = DEFAULT_VARIANTS["mac"]
    dfsq, base, eq = _mac_rows(rows, spec.weight_bits)
    lines = [
        "# Hardware: area and timing of the DFSQ datapath",
        "",
        f"Generated by `{argv_line}` (do not edit by hand; raw numbers in `docs/hardware.json`).",
        f"Tools: {versions['yosys']}; {versions['nextpnr-ice40']}"
        + (f"; {versions['nextpnr-ecp5']}" if versions.get("nextpnr-ecp5") else "")
        + f". Place and route: iCE40 {ICE40_DEVICE[0].lstrip('-').upper()} ({ICE40_DEVICE[1]}), seed 1"
        + ("; ECP5 LFE5U-85F (" + ECP5_DEVICE[1] + "), seed 1, section \"ECP5\" below."
           if any(r["group"] == "ecp5" for r in rows) else "."),
        "",
        "Columns: **LUT4** = `SB_LUT4` cells after `synth_ice40`; **carry** = `SB_CARRY` cells (the carry chain, "
        "free in an iCE40 logic cell next to its LUT4); **LC** = iCE40 logic cells after nextpnr packing "
        "(one LUT4 + one flip-flop each: the real iCE40 area, it also counts flip-flops that have no LUT to pair "
        "with); **FF** = flip-flops; **Xilinx LUT** = LUT1..LUT6 after `synth_xilinx -nodsp` (7-series, no DSP); "
        "**gates** = logic cells of Yosys' generic library after `synth` (flip-flops excluded); **fmax** = "
        "nextpnr-ice40's achieved clock of the design inside a scan harness that registers every input and output.",
        "",
        "## The MAC: DFSQ shift-add against uniform multipliers",
        "",
        f"Default configuration: {spec.words} words (universal set of {len(spec.wordset)} points), "
        f"{spec.weight_bits}-bit weights (w' = q - zero point: {spec.w_bits} bits signed), point integers of "
        f"{spec.p_bits} bits. Every MAC has the same pipeline (one register stage in front of the multiplier, "
        f"product register, accumulator) and the same {mac_acc_bits(spec)}-bit accumulator (9 taps x "
        f"{spec.channels} channels of products). The equal-precision baseline is the same weight w' times a "
        f"signed {spec.p_bits}-bit integer (every point exactly), `acc += a * b` with Yosys mapping the `*`. "
        f"The goal of issue 5 is a DFSQ MAC of at most {GOAL}x the equal-precision MAC's iCE40 LUT4.",
        "",
        f"### Summary: the default DFSQ MAC (`{default}`) at {' and '.join(map(str, COMPARE_WEIGHT_BITS))}-bit "
        "weights",
        "",
        "| weight bits | design | LUT4 | carry | FF | LC | Xilinx LUT | fmax (MHz) | LUT4 ratio | LC ratio "
        f"| goal (LUT4 <= {GOAL}x) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    verdicts = {}
    for wb in COMPARE_WEIGHT_BITS:
        d_w, _, eq_w = _mac_rows(rows, wb)
        d = d_w.get(default, {})
        ratio = _ratio(d.get("lut4"), eq_w.get("lut4"))
        verdicts[wb] = (ratio, _verdict(ratio))
        for r, is_dfsq in ((d, True), (eq_w, False)):
            lines.append(
                f"| {wb} | {r.get('name', '?')} | {_fmt(r.get('lut4'))} | {_fmt(r.get('carry'))} "
                f"| {_fmt(r.get('ffs'))} | {_fmt(r.get('lc'))} | {_fmt(r.get('xilinx_luts'))} "
                f"| {_fmt(r.get('fmax_mhz'), 1)} | "
                + (f"{_fmt(ratio, 2)} | {_fmt(_ratio(d.get('lc'), eq_w.get('lc')), 2)} | **{verdicts[wb][1]}** |"
                   if is_dfsq else "1.00 | 1.00 | |"))
    lines += [
        "",
        "**Result.** " + "; ".join(
            f"{wb}-bit weights: {_fmt(_mac_rows(rows, wb)[0].get(default, {}).get('lut4'))} against "
            f"{_fmt(_mac_rows(rows, wb)[2].get('lut4'))} LUT4, **{_fmt(verdicts[wb][0], 2)}x** (goal "
            f"{verdicts[wb][1]}), at {_fmt(_mac_rows(rows, wb)[0].get(default, {}).get('fmax_mhz'), 1)} MHz "
            f"against {_fmt(_mac_rows(rows, wb)[2].get('fmax_mhz'), 1)} MHz"
            for wb in COMPARE_WEIGHT_BITS) + ". "
        "In iCE40 logic cells (LUT4 and flip-flops packed: the real area) the ratios are " + " and ".join(
            f"{_fmt(_ratio(_mac_rows(rows, wb)[0].get(default, {}).get('lc'), _mac_rows(rows, wb)[2].get('lc')), 2)}x"
            for wb in COMPARE_WEIGHT_BITS) + ": the DFSQ MAC has more flip-flops (its registered partial products, "
        "and a separate output register in the accumulator because the negation carry enters the carry chain), "
        "while the multiplier MAC's few flip-flops pack with its many LUTs.",
    ]
    for wb in COMPARE_WEIGHT_BITS:
        d_w, base_w, eq_w = _mac_rows(rows, wb)
        s_w = DatapathSpec(weight_bits=wb)
        lines += [
            "",
            f"### Every variant at {wb}-bit weights (w' {s_w.w_bits} bits signed)",
            "",
            "| design | LUT4 | carry | FF | LC | Xilinx LUT | gates | fmax (MHz) | LUT4 vs equal precision | "
            "LC vs equal precision |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in [d_w[v] for v in VARIANTS if v in d_w] + list(base_w.values()):
            name = r["name"] + (" **default**" if r.get("variant") == default else "")
            lines.append(f"| {name} | {_fmt(r['lut4'])} | {_fmt(r['carry'])} | {_fmt(r['ffs'])} | {_fmt(r['lc'])} "
                         f"| {_fmt(r['xilinx_luts'])} | {_fmt(r['gates'])} | {_fmt(r['fmax_mhz'], 1)} "
                         f"| {_fmt(_ratio(r['lut4'], eq_w.get('lut4')), 2)} "
                         f"| {_fmt(_ratio(r['lc'], eq_w.get('lc')), 2)} |")
        lines += ["", f"Measured at {wb}-bit weights: fewest LUT4 `{_best(d_w, 'lut4')}`, fewest logic cells "
                      f"`{_best(d_w, 'lc')}`, fewest Xilinx LUTs `{_best(d_w, 'xilinx_luts')}`, fewest generic gates "
                      f"`{_best(d_w, 'gates')}`, highest fmax `{_best(d_w, 'fmax_mhz', max)}`."]
    d8, _, eq8 = _mac_rows(rows, 8) if 8 in COMPARE_WEIGHT_BITS else ({}, {}, {})
    naive8 = d8.get("naive", {}).get("lut4")
    lines += [
        "",
        "Micro-architecture (each row above is a measured variant of `hw.units.shift_add`; `--variant` selects one):",
        "",
        f"* `naive`: every partial product at full width and offset 0, negate the sum: {dfsq['naive']['lut4']} "
        f"LUT4 against {eq['lut4']} for the multiplier MAC. A muxed partial-product bit costs at least the LUT an "
        "AND-gated one costs, and full-width adders spend LUTs on bits that are always zero or sign copies.",
        "* `fold`: the point's sign folded into the weight bitwise (bit j of -w is w_j xor OR(lower bits): one "
        "LUT per bit, no carry chain); each partial product kept at its lowest shift so the adders span only the "
        "bits two operands can both reach; exact products, so the accumulator's restart mux merges into its "
        "adder LUTs.",
        "* `deferred`: the partial products shift |w| (unsigned rows: no sign extension, every row bit a single "
        "4-input LUT), the tree's result is XORed with the product sign inside the last adder's LUTs, and the "
        "negation's +1 becomes the accumulator's carry-in. The restart then cannot ignore the carry chain, so the "
        "accumulator clears its sum register ahead of a restart and keeps the result in a separate output "
        "register (flip-flops, no LUTs).",
        "* `registered` (the MAC's default): `deferred`'s arithmetic, with the register stage in front of the "
        "multiplier moved from the inputs (w', code) to the partial products. Each partial-product bit is a "
        "flip-flop; a bit with a single source (weight bit k when word i's selector is X) takes that weight bit "
        "as its data and \"selector is not X\" as its synchronous reset (`SB_DFFSR`), so the AND costs no LUT "
        "and one decode LUT serves a whole region of a row; only the bits where two shifts of a word overlap keep "
        "a mux LUT. This trades LUT4 for flip-flops: at 4-bit weights "
        f"{_fmt(dfsq.get('registered', {}).get('ffs'))} flip-flops against {_fmt(dfsq.get('deferred', {}).get('ffs'))} "
        f"for `deferred`, {_fmt(dfsq.get('registered', {}).get('lc'))} logic cells against "
        f"{_fmt(dfsq.get('deferred', {}).get('lc'))}. The multiplier is then not combinational (latency 1), so "
        "the conv engine, whose stage registers carry a stall enable, keeps `deferred`.",
        "",
        ("Why the goal is not met at 4-bit weights: " if verdicts.get(4, (0, "met"))[1] == "not met" else
         "What bounds the saving at 4-bit weights: ")
        + "the accumulator alone is one LUT4 per bit (its upper bits add the product's sign extension and the "
        "carry), the N - 1 adders that join the N partial products cost one LUT4 per bit they span (the iCE40 "
        "carry chain takes its operands straight from LUT inputs or flip-flops, so no logic can be folded into an "
        "adder's operands), and each word's selector decodes and overlap muxes remain. With 4-bit weights the "
        "multiplier being replaced is small (5 x 12 bits), and the accumulator both MACs share is a larger part of "
        "each, which bounds the ratio; with 8-bit weights the multiplier dominates the baseline and the shift-add "
        "MAC's advantage grows (the sweep below shows the trend).",
        "",
        f"The issue's reference figures were {ISSUE_NAIVE} LUT4 for a naive shift-add MAC against "
        f"{ISSUE_BASELINE} for the equal-precision multiplier MAC (0.53x). This repository's `naive` variant at "
        f"8-bit weights measures {_fmt(naive8)} LUT4, so the reference was at 8-bit weights; its multiplier MAC "
        f"measures {_fmt(eq8.get('lut4'))} LUT4 here (the issue's baseline design and flow are not recorded, so "
        f"its {ISSUE_BASELINE} is not reproduced). Against the issue's own {ISSUE_BASELINE}, the default DFSQ MAC "
        f"at 8-bit weights would be {_fmt(_ratio(d8.get(default, {}).get('lut4'), ISSUE_BASELINE), 2)}x; the "
        f"ratios above use this repository's measured baseline.",
    ]
    sweep = [r for r in rows if r["group"] == "sweep"]
    engines = {(r["words"], r["bits"]): r for r in rows if r["group"] in ("engine", "engine-sweep")}
    if sweep:
        pairs = {}
        for r in sweep:
            pairs.setdefault((r["words"], r["bits"]), {})[r["kind"]] = r
        lines += [
            "",
            "## Trade-off: words x bits",
            "",
            "Weights and activations at the same width (bits), as in the paper's tables; MAC columns are the default "
            f"MAC and the equal-precision multiplier MAC of that configuration. Engine: L = {ENGINE_LANES} lanes, "
            f"{ENGINE_CHANNELS} channels, iCE40 LUT4 (blank: not synthesized). PSNR: x2, DFSQ, "
            "from " + (", ".join(f"`{s}`" for s in psnr_sources) if psnr_sources else "no measured results yet")
            + " (blank: not measured).",
            "",
            "| words | bits | set size | DFSQ MAC LUT4 | equal-precision MAC | LUT4 ratio | Xilinx LUT ratio | "
            "engine LUT4 | " + " | ".join(f"PSNR {d}" for d in DATASETS) + " |",
            "|---:|---:|---:|---:|---|---:|---:|---:|" + "---:|" * len(DATASETS),
        ]
        for (words, bits), pr in sorted(pairs.items()):
            d, b = pr.get("dfsq", {}), pr.get("baseline", {})
            s = DatapathSpec(words=words, act_bits=bits, weight_bits=bits)
            eng = engines.get((words, bits), {})
            ps = [psnr.get((2, words, bits, bits, ds)) for ds in DATASETS]
            lines.append(
                f"| {words} | {bits} | {len(s.wordset)} | {_fmt(d.get('lut4'))} | {_fmt(b.get('lut4'))} "
                f"(int{s.w_bits} x int{s.p_bits}) | {_fmt(_ratio(d.get('lut4'), b.get('lut4')), 2)} | "
                f"{_fmt(_ratio(d.get('xilinx_luts'), b.get('xilinx_luts')), 2)} | {_fmt(eng.get('lut4'))} | "
                + " | ".join(_fmt(p, 2) for p in ps) + " |")
    eng_rows = [r for r in rows if r["group"] == "engine"]
    if eng_rows:
        lines += [
            "",
            "## The conv engine",
            "",
            "A small instance (the full 64-channel, 16-lane engine does not fit an iCE40; it is measured on an ECP5 "
            "below where the report includes it): per lane, 9 shift-add "
            "multipliers, a 9-read-port point table, two 9-input trees and two fixed-point multipliers "
            "(scale_bits x a_bits and scale_bits x b_bits, which dominate the area without DSPs).",
            "",
            "| engine | LUT4 | LC | FF | BRAM | Xilinx LUT | Xilinx LUTRAM | gates | fmax (MHz) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in eng_rows:
            fits = r["raw"].get("fmax", {}).get("fits", True)
            lines.append(f"| {r['name']} | {_fmt(r['lut4'])} | {_fmt(r['lc'])} | {_fmt(r['ffs'])} | {_fmt(r['bram'])} "
                         f"| {_fmt(r['xilinx_luts'])} | {_fmt(r['xilinx_lutram'])} | {_fmt(r['gates'])} "
                         f"| {_fmt(r['fmax_mhz'], 1) if fits else 'does not fit'} |")
        if any(not r["raw"].get("fmax", {}).get("fits", True) for r in eng_rows):
            lines += ["", f"fmax \"does not fit\": nextpnr-ice40 could not place the design on the "
                          f"{ICE40_DEVICE[0].lstrip('-').upper()} (more logic cells than the device has), so it has "
                          "no fmax on this device."]
    lines += _ecp5_section(rows)
    lines += _int_units_section(rows)
    if any(r["group"] == "ecp5" for r in rows):
        from .iso_psnr import section as iso_section

        lines += iso_section(rows, [ROOT / "bench" / "results" / "psnr_table.json"], split_format=SPLIT_DEFAULT)
    lines += _throughput_section(rows)
    lines += _system_section(rows)
    lines += ["", GEOMETRY_SECTION.rstrip("\n")]
    lines += [
        "",
        "## Reproduce",
        "",
        "```",
        argv_line,
        "python -m hw.generate --words 4            # the default engine's Verilog, rtl_out/",
        "python -m hw.generate --top mac --words 4  # the default MAC's Verilog",
        "```",
        "",
        "Each figure is one Yosys run (`synth_ice40`, `synth_xilinx -nodsp -flatten`, `synth -flatten`, then "
        "`stat`) and one `nextpnr-ice40 --hx8k --package ct256 --seed 1` run; `build/hw_report/` caches them.",
    ]
    if any(r["group"] == "ecp5" for r in rows):
        lines += [
            "",
            "ECP5: `python -m hw.generate --top engine --lanes 16` and `python -m hw.generate --top uniform-engine "
            "--act-bits 6 --weight-bits 6 --lanes 16` write the engines' Verilog; each ECP5 figure is `synth_ecp5 "
            f"-nodsp` or `synth_ecp5` then `stat`, and `nextpnr-ecp5 {ECP5_DEVICE[0]} --package {ECP5_DEVICE[1]} "
            f"--freq {ECP5_TARGET_MHZ} --seed 1 --timing-allow-fail` on the scan harness.",
        ]
    lines.append("")
    return "\n".join(lines)


def _ecp5_fits(r: dict) -> dict:
    """Whether each ECP5 synthesis of a row fits the LFE5U-85F, resource by resource."""
    out = {}
    for flow in ("ecp5", "ecp5-dsp"):
        res = r["raw"].get(flow)
        if not res:
            continue
        over = [name for name, used, cap in (("LUT4 sites", res["lut_eq"], ECP5_CAPACITY["lut4"]),
                                             ("flip-flops", res["ffs"], ECP5_CAPACITY["ffs"]),
                                             ("MULT18X18D", res["mult18"], ECP5_CAPACITY["mult18"]),
                                             ("DP16KD", res["bram"], ECP5_CAPACITY["bram"])) if used > cap]
        out[flow] = over
    return out


def _ecp5_section(rows: list[dict]) -> list[str]:
    ecp = [r for r in rows if r["group"] == "ecp5"]
    if not ecp:
        return []
    cap = ECP5_CAPACITY

    def res(r, flow):
        return r["raw"].get(flow, {})

    def fits_text(r, flow):
        over = _ecp5_fits(r).get(flow)
        if over is None:
            return ""
        return "yes" if not over else "**no** (" + ", ".join(over) + ")"

    def lut_text(r, flow):
        e = res(r, flow)
        mark = " †" if str(e.get("mapper", "")).startswith("abc ") else ""
        return f"{_fmt(e.get('lut4'))}{mark}"

    def fmax_text(r):
        f = res(r, "ecp5-fmax")
        if not f:
            return ""
        if f.get("fits") is False:
            return "does not fit"
        lanes = r.get("fmax_lanes", r.get("lanes"))
        note = f" ({lanes}-lane instance)" if lanes != r.get("lanes") else ""
        return f"{_fmt(f.get('fmax_mhz'), 1)}{note}"

    lines = [
        "",
        "## ECP5 (LFE5U-85F): the engines at a real size",
        "",
        f"Lattice LFE5U-85F, package {ECP5_DEVICE[1]}, speed grade 6: {cap['lut4']:,} LUT4 sites, {cap['ffs']:,} "
        f"flip-flops, {cap['mult18']} 18x18 multipliers (MULT18X18D), {cap['bram']} 18 kbit block RAMs (DP16KD). "
        "**LUT4** = `LUT4` cells after `synth_ecp5`; **carry** = `CCU2C` cells (two LUT4 sites and a carry chain "
        "each); **DPR16X4** = 16x4 distributed RAMs (the DFSQ engine's point tables; each takes four LUT4 sites "
        "and the two of its write-port slice); **LUT4-eq** = LUT4 + 2 x carry + 6 x DPR16X4, the LUT4 sites the "
        "netlist occupies (the issue's measure); **FF** = `TRELLIS_FF`; **fits** compares every count with the "
        "device. The DFSQ engines are `hw.generate --top engine` (W4A4, 4 words, 24-bit sigma/mu); the uniform "
        "engines are `hw.generate --top uniform-engine` (Min-Max static scale: w' and a' are (B+1)-bit signed "
        "integers, Yosys maps each `w' * a'`). Same lanes, groups, pipeline and accumulator structure.",
        "",
        "### Without DSPs (`synth_ecp5 -nodsp`)",
        "",
        "| engine | LUT4 | carry | DPR16X4 | LUT4-eq | FF | BRAM | fits | synthesis (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in ecp:
        e = res(r, "ecp5")
        lines.append(f"| {r['name']} | {lut_text(r, 'ecp5')} | {_fmt(e.get('carry'))} | {_fmt(e.get('dpram'))} "
                     f"| {_fmt(e.get('lut_eq'))} | {_fmt(e.get('ffs'))} | {_fmt(e.get('bram'))} "
                     f"| {fits_text(r, 'ecp5')} | {_fmt(e.get('synth_seconds'), 0)} |")
    if any(str(res(r, f).get("mapper", "")).startswith("abc ") for r in ecp for f in ("ecp5", "ecp5-dsp")):
        lines += ["", "†: YoWASP's ABC9 crashed on this netlist, so its LUTs were mapped by classic ABC "
                      "(`synth_ecp5 -run :map_luts; abc -lut 4; synth_ecp5 -run map_cells:`); every other row is "
                      "ABC9's mapping, so this row's LUT4 count is not exactly comparable with theirs."]
    lines += [
        "",
        "### With DSPs (`synth_ecp5`) and place and route (`nextpnr-ecp5`)",
        "",
        "| engine | LUT4 | carry | LUT4-eq | FF | MULT18X18D | ALU54B | BRAM | fits | fmax (MHz) "
        "| P&R TRELLIS_COMB | synthesis (s) | P&R (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in ecp:
        e, f = res(r, "ecp5-dsp"), res(r, "ecp5-fmax")
        lines.append(f"| {r['name']} | {lut_text(r, 'ecp5-dsp')} | {_fmt(e.get('carry'))} | {_fmt(e.get('lut_eq'))} "
                     f"| {_fmt(e.get('ffs'))} | {_fmt(e.get('mult18'))} | {_fmt(e.get('alu54'))} "
                     f"| {_fmt(e.get('bram'))} | {fits_text(r, 'ecp5-dsp')} | {fmax_text(r)} | {_fmt(f.get('comb'))} "
                     f"| {_fmt(e.get('synth_seconds'), 0)} | {_fmt(f.get('pnr_seconds'), 0)} |")
    inst = next((r for r in ecp if r.get("fmax_lanes", r.get("lanes")) != r.get("lanes")
                 and res(r, "ecp5-fmax").get("pnr_seconds")), None)
    why = (f" (the {inst['fmax_lanes']}-lane instance of {inst['name']} alone took "
           f"{_fmt(res(inst, 'ecp5-fmax')['pnr_seconds'], 0)} s of place and route)" if inst else "")
    lines += [
        "",
        f"fmax: nextpnr-ecp5's achieved clock of the scan harness around the design (every input and output "
        f"registered), synthesized with DSPs, target {ECP5_TARGET_MHZ} MHz, seed 1; a row marked with an instance "
        "was placed and routed at fewer lanes (the same lanes, a shallower lane tree, shorter routes), so its fmax "
        "is an optimistic estimate of the full engine's: nextpnr-ecp5 in WebAssembly on the 16-lane DFSQ engine "
        f"would take longer than this report spends on one design{why}. P&R TRELLIS_COMB: LUT4 sites after "
        "nextpnr's packing of that harness (the instance placed, plus the harness's one mux LUT per output bit). "
        "Synthesis and P&R wall times are those of the run that filled the cache, on a 2-core machine shared with "
        "other jobs.",
    ]
    fused = next((r for r in ecp if r["kind"] == "dfsq" and r["lanes"] == ECP5_LANES
                  and r.get("denorm", "fused") == "fused"), None)
    split = next((r for r in ecp if r["kind"] == "dfsq" and r["lanes"] == ECP5_LANES and r.get("denorm") == "split"
                  and (r["sigma_bits"], r["shift_bits"]) == SPLIT_DEFAULT), None)
    dfsq = split if split and res(split, "ecp5") else fused
    uni = next((r for r in ecp if r["kind"] == "uniform" and r["lanes"] == ECP5_LANES
                and r["bits"] == UNIFORM_COMPARE_BITS), None)
    if dfsq and uni and res(dfsq, "ecp5") and res(uni, "ecp5"):
        d, u = res(dfsq, "ecp5"), res(uni, "ecp5")
        b = UNIFORM_COMPARE_BITS
        lines += [
            "",
            f"### DFSQ W4A4 against uniform W{b}A{b}, 16 lanes, without DSPs",
            "",
            f"DFSQ: {dfsq['name']}" + (" (the split de-normalization; the fused engine of the first rows for "
                                       "reference)" if dfsq is split else ""),
            "",
            "| | DFSQ W4A4 | uniform W{0}A{0} | ratio (DFSQ / uniform) | fused DFSQ W4A4 |".format(b),
            "|---|---:|---:|---:|---:|",
        ]
        fz = res(fused, "ecp5") if fused else {}
        for label, key in (("LUT4", "lut4"), ("carry (CCU2C)", "carry"), ("LUT4-eq", "lut_eq"), ("FF", "ffs")):
            lines.append(f"| {label} | {_fmt(d.get(key))} | {_fmt(u.get(key))} | "
                         f"{_fmt(_ratio(d.get(key), u.get(key)), 2)} | {_fmt(fz.get(key))} |")
        lines += [
            "",
            f"**Result.** At equal MACs per cycle (144 multipliers: 16 lanes x 9 taps), the DFSQ W4A4 engine takes "
            f"{_fmt(d.get('lut_eq'))} LUT4 sites against {_fmt(u.get('lut_eq'))} for the uniform W{b}A{b} engine, "
            f"**{_fmt(_ratio(d.get('lut_eq'), u.get('lut_eq')), 2)}x** ({_fmt(d.get('lut4'))} against "
            f"{_fmt(u.get('lut4'))} LUT4 cells, {_fmt(_ratio(d.get('lut4'), u.get('lut4')), 2)}x). The issue quoted "
            f"about {ISSUE_ECP5_DFSQ:,} LUT4-equivalents for this DFSQ engine against about {ISSUE_ECP5_UNIFORM:,} "
            f"for a plain datapath of 144 int6 x int6 multipliers with an adder tree "
            f"({ISSUE_ECP5_DFSQ / ISSUE_ECP5_UNIFORM:.1f}x). Here the uniform W{b}A{b} engine multiplies "
            f"int{b + 1} x int{b + 1} (w' and a' carry their zero points) and has the engine's pipeline registers, "
            f"lane tree and accumulator; the uniform W5A5 row is the int6 x int6 engine. The fused DFSQ engine's "
            "area goes to the per-lane de-normalization (two 24-bit fixed-point multipliers per lane); the split "
            "engine keeps one m-bit multiplier per lane and starts its accumulator from the mean unit's values.",
        ]
        low = next((r for r in ecp if r.get("denorm") == "split" and r.get("sigma_bits") == 1
                    and r.get("shift_bits") == 0 and res(r, "ecp5")), None)
        if dfsq is split and low:
            lo = res(low, "ecp5")
            share = (d.get("lut_eq", 0) - lo.get("lut_eq", 0)) / d["lut_eq"] if d.get("lut_eq") else float("nan")
            lines += [
                "",
                f"De-normalization share: the same engine with a 1-bit sigma (no multiplier: an AND per bit of A) "
                f"takes {_fmt(lo.get('lut_eq'))} LUT4 sites, so the {split['sigma_bits']}-bit sigma multipliers "
                f"of the 16 lanes cost {_fmt(d.get('lut_eq', 0) - lo.get('lut_eq', 0))} LUT4 sites: "
                f"**{100 * share:.1f}%** of the engine (goal: at most 25%). The mean unit is not in the engine "
                "(one per layer pipeline, `hw/units/mean_unit.py`).",
            ]
        dd, ud = res(dfsq, "ecp5-dsp"), res(uni, "ecp5-dsp")
        if dd and ud:
            lines += [
                "",
                f"With DSPs allowed the uniform engine puts its 144 multipliers in {_fmt(ud.get('mult18'))} "
                f"MULT18X18D and keeps {_fmt(ud.get('lut_eq'))} LUT4 sites; the DFSQ engine uses "
                f"{_fmt(dd.get('mult18'))} MULT18X18D (its sigma multipliers) and keeps "
                f"{_fmt(dd.get('lut_eq'))} LUT4 sites (shift-add multipliers, trees, point tables): "
                f"{_fmt(_ratio(dd.get('lut_eq'), ud.get('lut_eq')), 2)}x the LUT4 sites and "
                f"{_fmt(_ratio(dd.get('mult18'), ud.get('mult18')), 2)}x the DSPs.",
            ]
    codes = next((r for r in ecp if r["kind"] == "dfsq" and r.get("codes_in") and res(r, "ecp5")), None)
    dec = next((r for r in ecp if r["kind"] == "decoder" and res(r, "ecp5")), None)
    if codes and dec and uni and res(uni, "ecp5"):
        c, k, u = res(codes, "ecp5"), res(dec, "ecp5"), res(uni, "ecp5")
        n = int(dec.get("count", ECP5_LANES))
        t_eq, t_lut = c["lut_eq"] + n * k["lut_eq"], c["lut4"] + n * k["lut4"]
        b = UNIFORM_COMPARE_BITS
        lines += [
            "",
            f"**Without point tables in the lanes** ({codes['name']}: `hw.generate --codes-in`; each activation is "
            f"decoded once where it enters, by one 1-port point table per lane, and the beats carry point codes): "
            f"engine {_fmt(c['lut_eq'])} + {n} input decoders x {_fmt(k['lut_eq'])} = **{t_eq:,} LUT4-eq, "
            f"{_fmt(_ratio(t_eq, u['lut_eq']), 2)}x** the uniform W{b}A{b} engine's {_fmt(u['lut_eq'])} "
            f"({t_lut:,} against {_fmt(u['lut4'])} LUT4 cells, {_fmt(_ratio(t_lut, u['lut4']), 2)}x), at equal MACs "
            "per cycle. Verified under Icarus by `sim.verify --codes-in`.",
        ]
        norm = [r for r in ecp if r["kind"] == "normalized" and res(r, "ecp5")]
        if norm:
            lines += ["", "Normalized uniform engines (`hw.generate --top uniform-engine --normalized --codes-in`: "
                          "the same engine, de-normalization and split format, with evenly spaced points and an "
                          "integer multiplier per tap), against that DFSQ W4A4 engine plus its decoders:", "",
                      "| engine | LUT4 | LUT4-eq | DFSQ W4A4 codes-in + decoders / this (LUT4-eq) |",
                      "|---|---:|---:|---:|"]
            for r in norm:
                e = res(r, "ecp5")
                lines.append(f"| {r['name']} | {_fmt(e.get('lut4'))} | {_fmt(e.get('lut_eq'))} | "
                             f"{_fmt(_ratio(t_eq, e.get('lut_eq')), 2)} |")
    return lines


def _int_units_section(rows: list[dict]) -> list[str]:
    """The contract-2 units beside the engine: their area, the share of DFSQ's activation units in a layer
    pipeline, and the static uniform requantizer a Min-Max / Uniform-MSE design needs instead."""
    units = [r for r in rows if r["group"] == "ecp5-int" and r["raw"].get("ecp5")]
    if not units:
        return []

    def res(r, flow="ecp5"):
        return (r or {}).get("raw", {}).get(flow, {})

    def pick(kind, lanes):
        return next((r for r in units if r["kind"] == kind and r.get("lanes") == lanes), None)

    lines = ["", "## ECP5: DFSQ's statistics, thresholds and quantizer (contract 2) beside the engine", "",
             "The units of the integer-only network (docs/datapath.md \"Contract 2\"; `hw.generate --top "
             "stats-unit|threshold-unit|quantizer|post-unit`, 16-bit feature maps, 64 channels; bit-exact under "
             "Icarus on every layer of an EDSR and an RDN-S export: `python -m sim.verify_int`) and the static "
             "uniform requantizer (`--top uniform-requant`: one multiplier, shift and zero point per tensor, no "
             "statistics: what a Min-Max or Uniform-MSE design needs between layers). Columns as above; MULT18X18D "
             "with DSPs allowed.", "",
             "| unit | LUT4 | carry | DPR16X4 | LUT4-eq | FF | BRAM | with DSPs: LUT4-eq | MULT18X18D |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in units:
        e, d = res(r), res(r, "ecp5-dsp")
        lines.append(f"| {r['name']} | {_fmt(e.get('lut4'))} | {_fmt(e.get('carry'))} | {_fmt(e.get('dpram'))} "
                     f"| {_fmt(e.get('lut_eq'))} | {_fmt(e.get('ffs'))} | {_fmt(e.get('bram'))} "
                     f"| {_fmt(d.get('lut_eq'))} | {_fmt(d.get('mult18'))} |")
    engine = next((r for r in rows if r["group"] == "ecp5" and r.get("denorm") == "split" and not r.get("codes_in")
                   and (r.get("sigma_bits"), r.get("shift_bits")) == SPLIT_DEFAULT and r.get("lanes") == ECP5_LANES),
                  None)
    mean = next((r for r in rows if r["group"] == "ecp5" and r["kind"] == "mean-unit"), None)
    if not engine or not res(engine).get("lut_eq"):
        return lines
    eng = res(engine)["lut_eq"]
    lines += ["", f"Share of a DFSQ layer pipeline (LUT4-eq without DSPs; the engine: {engine['name']}, "
                  f"{_fmt(eng)}; its mean unit: {_fmt(res(mean).get('lut_eq'))}):", "",
              "| pipeline | engine + mean unit | statistics | thresholds | quantizer | post unit | DFSQ's own "
              "units (statistics + thresholds + quantizer) | their share of the pipeline | static uniform "
              "requantizer (lanes of the post unit) | DFSQ's activation units (own + post) / static requantizer |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label, ls, lq, lp in (("every unit at 16 lanes", ECP5_LANES, ECP5_LANES, ECP5_LANES),
                              ("rate-matched: quantizer 16 lanes, statistics and post unit 1 lane", 1, ECP5_LANES,
                               1)):
        st, th, qu, po = (res(pick(k, lanes)).get("lut_eq") for k, lanes in
                          (("stats", ls), ("thresholds", None), ("quantizer", lq), ("post", lp)))
        un = res(pick("uniform-requant", lp)).get("lut_eq")
        if None in (st, th, qu, po):
            continue
        base = eng + (res(mean).get("lut_eq") or 0)
        own = st + th + qu
        total = base + own + po
        lines.append(f"| {label} | {_fmt(base)} | {_fmt(st)} | {_fmt(th)} | {_fmt(qu)} | {_fmt(po)} | {_fmt(own)} "
                     f"| {100 * own / total:.1f}% | {_fmt(un)} | {_fmt(_ratio(own + po, un), 1)} |")
    lines += ["", "One engine emits at most one accumulator per cycle (64 input channels on 16 lanes: one per 4 "
                  "cycles), so one post-unit lane and one statistics lane keep up with it; the quantizer feeds the "
                  "engine's lanes and keeps 16. A static uniform design replaces statistics, thresholds, quantizer "
                  "and post unit by the static requantizer (it still needs the engine, its point-free datapath "
                  "and, for residual adds, a second requantization of the skip path, not counted here)."]
    return lines


def _split_fmax(rows: list[dict]):
    """The measured fmax (MHz) of the 16-lane split 6:0 DFSQ engine (nextpnr-ecp5), or None."""
    split = next((r for r in rows if r["group"] == "ecp5" and r.get("denorm") == "split" and not r.get("codes_in")
                  and (r.get("sigma_bits"), r.get("shift_bits")) == SPLIT_DEFAULT and r.get("lanes") == ECP5_LANES),
                 None)
    return (split or {}).get("raw", {}).get("ecp5-fmax", {}).get("fmax_mhz") if split else None


def _throughput_section(rows: list[dict]) -> list[str]:
    """Cycles and frames per second of whole quantized bodies on the 16-lane split engine at its measured fmax
    (hw.throughput's model, checked against the cycles sim.verify simulates: tests/test_throughput.py)."""
    from .throughput import _model_layers, body_cycles, summary

    fmax = _split_fmax(rows)
    if not fmax:
        return []
    H, W = 360, 640
    lines = ["", "## Throughput: whole quantized bodies on the 16-lane engine", "",
             f"`python -m hw.throughput --model M --lanes {ECP5_LANES} --denorm split --fmax-mhz {fmax:g}`: a "
             f"{W}x{H} input at x2, the quantized body only (head, upsampler and tail are full precision and not "
             f"counted), one beat per cycle, ceil(C / {ECP5_LANES}) beats per output, point-table loads and the "
             f"pipeline drain included, at the split {SPLIT_DEFAULT[0]}:{SPLIT_DEFAULT[1]} engine's measured fmax "
             f"({fmax:g} MHz, nextpnr-ecp5 above). The model's stream cycles equal the cycles `sim.verify` "
             "simulates (tests/test_throughput.py).", "",
             "| network | quantized convs | MACs per frame | cycles per frame | multiplier utilization | "
             "s per frame | frames per s |", "|---|---:|---:|---:|---:|---:|---:|"]
    for model, cfg, label in (("edsr", "B", "EDSR-baseline"), ("rdn", "S", "RDN config S (embedded)"),
                              ("rdn", "B", "RDN config B (paper)")):
        sm = summary(body_cycles(_model_layers(model, cfg, 2), H, W, ECP5_LANES, 4, True), ECP5_LANES, fmax)
        lines.append(f"| {label} | {sm['layers']} | {sm['macs']:,} | {sm['cycles']:,} | "
                     f"{100 * sm['utilization']:.1f}% | {sm['seconds_per_frame']:.2f} | {sm['fps']:.3f} |")
    return lines


def _system_section(rows: list[dict]) -> list[str]:
    """The whole accelerator against static uniform designs of equal PSNR: area, memory, DRAM, fps, per-tile
    statistics (hw.system_cost)."""
    from .system_cost import section

    fmax = _split_fmax(rows)
    if not fmax:
        return []
    return section(rows, [ROOT / "bench" / "results" / "psnr_table.json"],
                   ROOT / "bench" / "results" / "tile_stats.json", fmax)


GEOMETRY_SECTION = """## Layers of any geometry (RDN): 1x1 kernels and up to 1024 input channels

The engine is generated for the widest layer it must run: `spec.channels` input channels (point-table rows, 1024
for RDN config B) with 3x3 lanes, and its accumulator is `spec.acc_bits` of that geometry (53 bits for 1024 inputs
at the default configuration, against 49 for EDSR's 64), so every layer it can run is overflow-free by the same
bounds as before (docs/datapath.md, "Per-layer widths"). A layer with C <= channels input channels takes
ceil(C / L) beats per output (`in_first` / `in_last` frame them, `in_group` selects the table rows); the lanes of a
last, partly used group get weight 0.

**1x1 mapping: the centre tap.** A 1x1 conv runs on the same lanes with `in_mask` = bit 4 only: lane l of group g
serves input channel g L + l, its index and weight sit in tap 4 and the other 8 taps are masked (weight 0), so
A = w' P and B = w', exactly the golden 1x1 accumulator. Nothing in the RTL changes (EDSR's engine is the same
Verilog); the host (`sim.stimulus`, `hw.stream.engine_beats`) drives the mode.

Why not let the 9 multipliers of a lane serve 9 input channels of a 1x1 conv: sigma_m and mu_m are per input
channel, so each of the 9 products would need its own `sigma_m x A` and `mu_m x B` multipliers (scale_bits x
a_bits and scale_bits x b_bits, the largest blocks of a lane without DSPs), 9 times the lane's fixed-point
multipliers for layers that hold 3% of RDN's MACs. With the centre tap the fixed-point multipliers are busy on
every beat of every layer; only the shift-add multipliers idle during 1x1 layers.

Utilization of the shift-add multipliers (L = 64 lanes, 576 multipliers; beats per output pixel and output
channel):

| layers (RDN config B) | count | C | beats each | MACs each | multiplier utilization |
|---|---:|---|---:|---:|---:|
| RDB 3x3 convs | 128 | 64 .. 512 | C / 64 = 1 .. 8 | 9 C | 100% |
| LFF 1x1 | 16 | 576 | 9 | 576 | 11.1% (1/9) |
| GFF.0 1x1 | 1 | 1024 | 16 | 1024 | 11.1% |
| GFF.1 3x3 | 1 | 64 | 1 | 576 | 100% |
| whole network | 146 | | 737 | 342,592 | 80.7% (342,592 / (737 x 576)) |

The 1x1 layers take 160 of the 737 beats (21.7% of the time) for 3.0% of the MACs. The 9-channel mapping would
cut them to 18 beats (the whole network 1.24x faster) at the cost above. EDSR (32 layers of 64 -> 64, 3x3) keeps
100% and exactly the same engine.

Area: the EDSR configurations above are unchanged (same generated Verilog). The 1024-channel engine's lanes are
the same except for 4 more bits in the accumulator, output register and bias path (53 instead of 49) and
16-row point tables per lane (1024 / 64) instead of 1; it was not synthesized here (it does not fit an iCE40,
and the 64-lane EDSR engine was not synthesized either).
"""


def _write(path: Path, text: str) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(text)


def build_parser() -> Parser:
    p = Parser(prog="python -m hw.report", description=__doc__.split("\n\n")[0])
    p.choice("--sweep", ("none", "words4", "all"), default="all",
             help="MAC trade-off sweep over words x bits (default all)")
    p.choice("--engine-sweep", ("none", "words4", "all"), default="words4",
             help="engine sweep (iCE40 only; default words4)")
    p.choice("--ecp5", ("none", "engines"), default="engines",
             help="ECP5 (LFE5U-85F) synthesis and P&R of the engines at a real size (default engines)")
    p.cache_dir("--cache", "synth-entry", default=str(ROOT / "build" / "hw_report"),
                help="synthesis cache folder (an entry that fails its check is synthesized again)")
    p.input_path("--results", "psnr-results", default=str(ROOT / "bench" / "results"),
                 help="PSNR result JSON file, or a folder of them")
    p.output_file("--out", default=str(ROOT / "docs" / "hardware.md"), help="Markdown output")
    p.output_file("--json", default=str(ROOT / "docs" / "hardware.json"), help="raw numbers (JSON)")
    p.input_file("--reuse", "hw-report", default=None, metavar="JSON",
                 help="take each design's results from this earlier report's JSON (same group and name) instead of "
                      "synthesizing it again: a rerender that adds new designs without the synthesis cache (only "
                      "valid while the designs in that file are unchanged)")
    p.flag("--accelerator", help="also synthesize the whole accelerator (hw.units.accelerator) and its engine on ECP5 "
                                 "for the system-cost section")
    return p


def reused_results(path) -> dict:
    """(group, name) -> raw results of an earlier report's JSON (``--reuse``; format ``hw-report``), each row
    checked: a list ``rows`` of objects with text ``group`` and ``name`` and ``raw``: {flow: {measure: value}}."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"--reuse {path}: not a hw.report JSON ({type(exc).__name__}: {str(exc)[:80]})") from None
    rows = data.get("rows") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        raise UserError(f"--reuse {path}: not a hw.report JSON (no list 'rows')")
    out = {}
    for i, r in enumerate(rows):
        ok = (isinstance(r, dict) and isinstance(r.get("group"), str) and isinstance(r.get("name"), str)
              and isinstance(r.get("raw"), dict) and all(isinstance(v, dict) for v in r["raw"].values()))
        if not ok:
            raise UserError(f"--reuse {path}: rows[{i}] needs text 'group' and 'name' and an object 'raw' of "
                            f"per-flow objects")
        out[(r["group"], r["name"])] = r["raw"]
    return out


@cli_main
def main(argv=None):
    args = build_parser().parse_args(argv)
    # every output and input is checked (at parse time and here) before minutes of synthesis
    psnr, sources = load_psnr(Path(args.results))
    tools = Tools()
    versions = tools.versions()
    jobs = plan(args.sweep, args.engine_sweep, args.ecp5) + (accelerator_plan() if args.accelerator else [])
    reuse = reused_results(args.reuse) if args.reuse else {}
    results = []
    for job in tqdm(jobs, desc="synthesis", unit="design"):
        old = reuse.get((job["group"], job["name"]))
        results.append(old if old is not None and all(f in old for f in job["flows"]) else
                       measure(job, Path(args.cache), tools))
    summary = summarize(jobs, results)
    argv_line = "python -m hw.report" + (" " + " ".join(argv) if argv else "")
    text = render(summary, psnr, sources, versions, argv_line)
    _write(Path(args.out), text)
    raw = {"format": "dfsq-hw-report", "version": 1, "tools": versions,
           "device": {"family": "iCE40", "device": ICE40_DEVICE[0].lstrip("-"), "package": ICE40_DEVICE[1]},
           "ecp5_device": {"family": "ECP5", "device": "LFE5U-85F", "package": ECP5_DEVICE[1], "speed": 6,
                           "capacity": ECP5_CAPACITY, "target_mhz": ECP5_TARGET_MHZ},
           "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "psnr_sources": sources, "rows": summary["rows"]}
    _write(Path(args.json), json.dumps(raw, indent=1) + "\n")
    print(f"wrote {args.out} and {args.json}")
    return 0


if __name__ == "__main__":
    main()
