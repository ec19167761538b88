"""The iso-PSNR comparison: each DFSQ configuration against the uniform engines that reach its PSNR.

For each DFSQ configuration (words, bits) measured by ``bench.psnr_table`` at x2, the uniform engine with the fewest
bits whose PSNR is at least DFSQ's (minus ``TOLERANCE_DB``) on every one of the four sets: the static engine
(Min-Max: one scale per tensor) and the normalized one (``dfsq-uniform``: DFSQ's per-(sample, channel)
normalization with uniform points). Beside them: LUT4 sites and DSPs of the 16-lane ECP5 engines where
``hw.report`` synthesized them (equal MACs per cycle: 144 multipliers), MACs per cycle per 1,000 LUT4 sites, and
the memory each design moves per layer (weights, input activations, point tables, per-sample statistics) for a
64 -> 64 3x3 layer at 640 x 360. Blank: not measured yet. ``hw.report`` appends :func:`section` to
docs/hardware.md.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from golden.spec import DatapathSpec

DATASETS = ("Set5", "Set14", "B100", "Urban100")
TOLERANCE_DB = 0.01
MIN_SETS = 3   # a comparison needs at least this many of the four sets measured on both sides (named when not all)
LANES, TAPS = 16, 9
LAYER = dict(C=64, O=64, k=3, H=360, W=640)   # the layer whose memory traffic is tabulated
_KEY = re.compile(r"^x(?P<scale>\d+)/(?P<method>[a-z-]+)/W(?P<wb>\d+)A(?P<ab>\d+)/words(?P<words>\d+)/(?P<ds>\w+)$")


def load_cells(paths) -> dict:
    """{(method, words, bits, dataset): psnr} of x2 cells with equal weight and activation bits (edsr only)."""
    out = {}
    for path in paths:
        p = Path(path)
        if not p.is_file():
            continue
        data = json.loads(p.read_text())
        for key, rec in (data.get("results") or {}).items():
            m = _KEY.match(key)
            if m and m["scale"] == "2" and m["wb"] == m["ab"] and isinstance(rec.get("psnr"), (int, float)):
                out[(m["method"], int(m["words"]), int(m["wb"]), m["ds"])] = float(rec["psnr"])
    return out


def _psnr_row(cells, method, words, bits) -> dict:
    """{dataset: psnr or None} of one (method, words, bits)."""
    return {d: cells.get((method, words, bits, d)) for d in DATASETS}


def fewest_bits(cells, method: str, target: dict):
    """The fewest-bit ``method`` cell whose PSNR reaches ``target`` ({dataset: psnr}) minus TOLERANCE_DB on every
    set both have measured (at least MIN_SETS of them): (bits, [sets not compared]), or (None, reason)."""
    measured = sorted({b for (m, w, b, d) in cells if m == method})
    tried = []
    for b in measured:
        row = _psnr_row(cells, method, 4, b)
        common = [d for d in DATASETS if row[d] is not None and target.get(d) is not None]
        if len(common) < MIN_SETS:
            continue
        tried.append(b)
        if all(row[d] >= target[d] - TOLERANCE_DB for d in common):
            return b, [d for d in DATASETS if d not in common]
    if not tried:
        return None, f"not measured on {MIN_SETS} of the sets"
    return None, f"none of {tried} bits reaches it"


def _bits_text(b, extra) -> str:
    if not b:
        return extra
    return f"W{b}A{b}" + (f" ({', '.join(extra)} not measured)" if extra else "")


def memory_bits(kind: str, bits: int, spec: DatapathSpec | None = None) -> dict:
    """Bits moved per layer (LAYER) by each design: weights, input activations, point tables, statistics."""
    C, O, k, H, W = (LAYER[x] for x in "COkHW")
    out = {"weights": O * C * k * k * bits + O * (bits + 32), "activations": H * W * C * bits}
    if kind in ("dfsq", "normalized"):   # normalized: uniform points need no table (P follows from the index)
        out["tables"] = C * (1 << bits) * spec.code_bits if kind == "dfsq" else 0
        out["statistics"] = C * (spec.sigma_bits + spec.shift_bits + spec.scale_bits) if spec.split else \
            C * 2 * spec.scale_bits
    else:
        out["tables"] = 0
        out["statistics"] = 64   # one scale and zero point per tensor
    out["total"] = sum(out.values())
    return out


def _hw_row(rows, kind, bits, denorm=None, split_format=None, codes_in=False):
    for r in rows:
        if r.get("group") != "ecp5" or r.get("lanes") != LANES or r.get("kind") != kind or r.get("bits") != bits:
            continue
        if kind == "dfsq" and r.get("denorm", "fused") != (denorm or "fused"):
            continue
        if kind == "dfsq" and split_format and (r.get("sigma_bits"), r.get("shift_bits")) != tuple(split_format):
            continue
        if bool(r.get("codes_in")) != codes_in:
            continue
        return r
    return None


def _decoders(rows, bits):
    """LUT4-eq of the input decoders a codes-in DFSQ engine needs (one per lane), or None."""
    for r in rows:
        if r.get("group") == "ecp5" and r.get("kind") == "decoder" and r.get("bits") == bits:
            e = r["raw"].get("ecp5", {})
            return e["lut_eq"] * int(r.get("count", 1)) if e.get("lut_eq") else None
    return None


def _cost(r) -> str:
    if not r:
        return "not synthesized"
    e, d = r["raw"].get("ecp5", {}), r["raw"].get("ecp5-dsp", {})
    f = r["raw"].get("ecp5-fmax", {})
    parts = [f"{e['lut_eq']:,} LUT4-eq" if e.get("lut_eq") else "",
             f"DSP build {d['lut_eq']:,} + {d.get('mult18', 0)} MULT18" if d.get("lut_eq") else "",
             f"{f['fmax_mhz']:.0f} MHz" if f.get("fmax_mhz") else "",
             f"{1000 * LANES * TAPS / e['lut_eq']:.2f} MAC/cycle/kLUT" if e.get("lut_eq") else ""]
    return "; ".join(p for p in parts if p)


def section(hw_rows: list[dict], psnr_paths, split_format=(6, 0)) -> list[str]:
    cells = load_cells(psnr_paths)
    m, s = split_format
    lines = ["", "## Iso-PSNR: each DFSQ configuration against the uniform engines that reach its PSNR", "",
             f"x2 EDSR (ours), PSNR-Y from `bench/results/psnr_table.json`; a uniform engine qualifies when its PSNR is "
             f"at least DFSQ's minus {TOLERANCE_DB} dB on **every set both have measured** (all four, or at least "
             f"{MIN_SETS}: the sets not compared are named); the fewest such bits is shown. Static = "
             "Min-Max (one scale per tensor); normalized = `dfsq-uniform` (DFSQ's per-(sample, channel) "
             f"normalization, uniform points; its engine: `--top uniform-engine --normalized --codes-in`, split {m}:{s}). "
             f"Hardware: the 16-lane ECP5 engines of the section above (DFSQ: split {m}:{s}, with point tables, "
             "and codes-in plus its input decoders), LUT4-eq without DSPs, equal MACs per cycle (144). Memory: kbit moved per 64 -> 64 3x3 layer "
             "at 640 x 360 (weights + input activations + point tables + per-sample statistics). Generated by "
             "`hw.iso_psnr` from the measured files; blank or 'not ...' where a measurement is missing.", "",
             "| DFSQ | DFSQ PSNR (Set5 / Set14 / B100 / Urban100) | DFSQ engine | static uniform | its engine | "
             "normalized uniform | its engine | memory kbit (DFSQ / static / normalized) |",
             "|---|---|---|---|---|---|---|---|"]
    for words in (3, 4):
        for bits in (3, 4, 6):
            target = _psnr_row(cells, "dfsq", words, bits)
            if sum(v is not None for v in target.values()) < MIN_SETS:
                target = None
            ps = " / ".join("…" if cells.get(("dfsq", words, bits, d)) is None else
                            f"{cells[('dfsq', words, bits, d)]:.2f}" for d in DATASETS)
            if target is None:
                lines.append(f"| words {words} W{bits}A{bits} | {ps} | | fewer than {MIN_SETS} sets measured | | | | |")
                continue
            spec = DatapathSpec(words=words, act_bits=bits, weight_bits=bits, denorm="split", sigma_bits=m,
                                shift_bits=s)
            dfsq_hw = _hw_row(hw_rows, "dfsq", bits, "split", split_format) if words == 4 else None
            codes = _hw_row(hw_rows, "dfsq", bits, "split", split_format, codes_in=True) if words == 4 else None
            dec = _decoders(hw_rows, bits)
            dfsq_cost = _cost(dfsq_hw)
            if codes and codes["raw"].get("ecp5", {}).get("lut_eq") and dec:
                total = codes["raw"]["ecp5"]["lut_eq"] + dec
                dfsq_cost += (f"; codes-in + {LANES} input decoders {total:,} LUT4-eq, "
                              f"{1000 * LANES * TAPS / total:.2f} MAC/cycle/kLUT")
            sb, srow = fewest_bits(cells, "minmax", target)
            nb, nrow = fewest_bits(cells, "dfsq-uniform", target)
            mem = [memory_bits("dfsq", bits, spec)["total"]]
            mem.append(memory_bits("static", sb)["total"] if sb else None)
            nspec = DatapathSpec(point_set="uniform", act_bits=nb, weight_bits=nb, denorm="split", sigma_bits=m,
                                 shift_bits=s) if nb else None
            mem.append(memory_bits("normalized", nb, nspec)["total"] if nb else None)
            memtxt = " / ".join("" if v is None else f"{v / 1000:,.0f}" for v in mem)
            lines.append(
                f"| words {words} W{bits}A{bits} | {ps} | {dfsq_cost} | "
                f"{_bits_text(sb, srow)} | {_cost(_hw_row(hw_rows, 'uniform', sb)) if sb else ''} | "
                f"{_bits_text(nb, nrow)} | {_cost(_hw_row(hw_rows, 'normalized', nb, codes_in=True)) if nb else ''} "
                f"| {memtxt} |")
    return lines + [""]
