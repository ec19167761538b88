"""System cost of per-sample statistics: on-chip buffers, DRAM traffic and frame rate of a whole quantized body.

    python -m hw.system_cost [--models edsr,rdn-S,rdn-B] [--frames 640x360,1920x1080] [--lanes 16]
        [--fmax-mhz 75.6] [--json PATH]

DFSQ normalizes a conv's input with statistics over the whole feature map, so no layer can quantize its input
before the previous one has written all of it; a static uniform design (Min-Max, Uniform-MSE) knows its scales in
advance, quantizes at the producer and can fuse layers with line buffers (eCNN, MICRO 2019). This module puts numbers
on that, from a model's integer graph (its adapter's :class:`golden.int_graph.IntGraph`: which conv reads which
tensors, residual adds, concatenations), for an LR frame of H x W pixels. The designs, all at the same MACs per
cycle:

``dfsq``
    DFSQ, statistics per feature map, layer by layer: every tensor is kept raw (``fmap_bits``, golden.int_spec) in
    DRAM; each step reads its inputs and residual and writes its output once (the statistics are gathered while it
    writes, so its reader quantizes as it reads: no extra pass). On chip: the window's line buffer of codes
    (k rows x W x C x b bits), the thresholds and the statistics of one step.
``dfsq-band R``
    DFSQ with statistics per band of R rows (:mod:`dfsq.tile_stats`), fused: every layer on chip at once; a step
    quantizes a band once its R rows (plus the window's halo) are written, so each step holds R + k - 1 raw rows of
    each input and delays the pipeline by R rows; a tensor read again later (residual, concatenation) is held raw for
    the rows between. DRAM: the body's entry and exit only (and the weights).
``static``
    Static uniform (one scale per tensor), layer by layer: tensors that only convs read are stored as b-bit codes
    (quantized at the producer), tensors a residual add or the exit reads stay raw.
``static-fused``
    Static uniform, fused with line buffers: each step holds k rows of its inputs at their storage width and delays
    the pipeline by (k - 1) / 2 rows; later readers' tensors held for the rows between. DRAM: entry and exit.

Weights, point tables and per-channel constants are read once per frame in every design (their bits are listed).
Frames per second come from :func:`hw.throughput.body_cycles` (the engine's cycles, ``lanes`` lanes) at
``--fmax-mhz``. The on-chip bits are compared with the LFE5U-85F's 208 x 18 kbit EBR (3.74 Mbit). Every figure is
computed from the graph and the formats: a model, not a measurement of a device; docs/hardware.md quotes it with the
commands.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

from golden.args import Parser
from golden.errors import UserError, cli_main
from golden.files import atomic_output

__all__ = ["DesignCost", "design_costs", "model_graph", "ECP5_EBR_BITS", "DESIGNS"]

ECP5_EBR_BITS = 208 * 18 * 1024     # LFE5U-85F: 208 EBR blocks of 18 kbit
DESIGNS = ("dfsq", "dfsq-band", "static", "static-fused")
#: rows per statistics band of the dfsq-band design (and the tile of bench.tile_stats its PSNR comes from)
BAND_ROWS = 16


@dataclass
class DesignCost:
    model: str
    design: str
    bits: int                 # activation bits of the quantized convs (codes)
    height: int
    width: int
    onchip_bits: int          # activation buffers on chip (peak over steps, or their sum when fused)
    dram_bytes: int           # activation bytes moved to and from DRAM per frame
    weight_bits: int          # weights, point tables and per-channel constants, read once per frame
    note: str = ""

    def bandwidth(self, fps: float) -> float:
        """Bytes per second of DRAM traffic at ``fps`` frames per second (activations and weights)."""
        return (self.dram_bytes + self.weight_bits / 8) * fps

    @property
    def fits_ecp5(self) -> bool:
        return self.onchip_bits <= ECP5_EBR_BITS


def model_graph(name: str, scale: int = 2):
    """(graph with channels, quantized layers) of 'edsr', 'rdn-S', 'rdn-B' (any RDN config after the dash)."""
    from dfsq.adapters import int_body, quantized_layers
    from dfsq.model import build_model

    config = None
    arch = name
    if name.startswith("rdn"):
        from dfsq.rdn import parse_config

        arch = "rdn"
        config = parse_config(name.split("-", 1)[1] if "-" in name else "B")
    net = build_model(arch, scale, config)
    layers = quantized_layers(net)
    _, graph = int_body(net)
    return graph, layers


def _readers(graph):
    """tensor -> list of (step index, role) with role 'conv' or 'residual'; the exit gets ('exit')."""
    out = {}
    for i, s in enumerate(graph.steps):
        for t in s.inputs:
            out.setdefault(t, []).append((i, "conv"))
        if s.residual:
            out.setdefault(s.residual, []).append((i, "residual"))
    out.setdefault(graph.exit, []).append((len(graph.steps), "exit"))
    return out


def _writer(graph):
    w = {graph.entry: -1}
    for i, s in enumerate(graph.steps):
        w[s.output] = i
    return w


def design_costs(name: str, graph, layers, height: int, width: int, *, bits: int, fmap_bits: int = 16,
                 weight_bits: int | None = None, code_bits: int = 9, band: int = BAND_ROWS) -> dict[str, DesignCost]:
    """The four designs' costs for one model and frame (see the module docstring)."""
    chans = graph.channels
    HW = height * width
    wb = bits if weight_bits is None else weight_bits
    readers, writer = _readers(graph), _writer(graph)
    kern = [layers[s.layer].kernel for s in graph.steps]
    # weights + per-output-channel constants (bias, scale: 2 x 32) + DFSQ point tables (C x 2^b codes)
    w_common = sum(q.out_channels * q.in_channels * q.kernel ** 2 * wb + q.out_channels * 64 for q in layers)
    w_dfsq = w_common + sum(q.in_channels * (1 << bits) * code_bits for q in layers)

    def static_width(t):
        return bits if all(role == "conv" for _, role in readers.get(t, [])) else fmap_bits

    def traffic(width_of):
        total = chans[graph.entry] * HW * width_of(graph.entry)   # the entry is written by the FP head
        for s in graph.steps:
            total += sum(chans[t] * HW * width_of(t) for t in s.inputs)
            if s.residual:
                total += chans[s.residual] * HW * fmap_bits
            total += chans[s.output] * HW * width_of(s.output)
        total += chans[graph.exit] * HW * width_of(graph.exit)   # read by the FP tail
        return total // 8

    def line_buffers(act_bits):
        return max(k * width * sum(chans[t] for t in s.inputs) * act_bits for s, k in zip(graph.steps, kern))

    per_step_dfsq = max(sum(chans[t] for t in s.inputs) * ((1 << bits) - 1) * fmap_bits for s in graph.steps)
    costs = {
        "dfsq": DesignCost(name, "dfsq", bits, height, width, line_buffers(bits) + per_step_dfsq,
                           traffic(lambda t: fmap_bits), w_dfsq,
                           "raw tensors in DRAM; line buffer of codes, thresholds on chip"),
        "static": DesignCost(name, "static", bits, height, width, line_buffers(bits),
                             traffic(static_width), w_common,
                             "codes in DRAM for tensors only convs read, raw otherwise"),
    }

    def fused(step_rows, in_rows, width_of):
        """On-chip bits of a fused pipeline: each step's window (or band) rows of its inputs, plus every tensor held
        for the rows between its writer and its last reader (a residual add or a later concatenation)."""
        tout, acc = {-1: 0}, 0
        for i, k in enumerate(kern):
            acc += step_rows(k)
            tout[i] = acc                      # rows the step's output lags behind the entry
        total = sum(chans[t] * min(height, in_rows(kern[i])) * width * width_of(t)
                    for i, s in enumerate(graph.steps) for t in s.inputs)
        for t, rs in readers.items():
            w0 = writer[t]
            delay = max([tout[r - 1] - tout[w0] if role == "conv" else tout[r] - tout[w0] if role == "residual"
                         else 0 for r, role in rs] + [0])
            total += chans[t] * min(height, delay) * width * width_of(t)
        return total

    costs["static-fused"] = DesignCost(
        name, "static-fused", bits, height, width,
        fused(lambda k: (k - 1) // 2, lambda k: k, static_width),
        (chans[graph.entry] * HW * static_width(graph.entry) + chans[graph.exit] * HW * fmap_bits) // 8, w_common,
        "all layers on chip, line buffers; DRAM: entry and exit")
    costs["dfsq-band"] = DesignCost(
        name, f"dfsq-band{band}", bits, height, width,
        fused(lambda k: band + (k - 1) // 2, lambda k: band + k - 1, lambda t: fmap_bits)
        + sum(sum(chans[t] for t in s.inputs) * ((1 << bits) - 1) * fmap_bits for s in graph.steps),
        (chans[graph.entry] * HW + chans[graph.exit] * HW) * fmap_bits // 8, w_dfsq,
        f"statistics per band of {band} rows; all layers on chip; DRAM: entry and exit")
    return costs


def frames_per_second(layers, height: int, width: int, lanes: int, fmax_mhz: float, bits: int) -> float:
    from .throughput import body_cycles, summary

    return summary(body_cycles(layers, height, width, lanes, bits), lanes, fmax_mhz)["fps"]


def _frame(text: str) -> tuple[int, int]:
    """``"640x360"`` -> (640, 360): an LR frame W x H, each side 1..16384 pixels."""
    parts = text.strip().lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and 1 <= int(p) <= 16384 for p in parts):
        raise ValueError(f"a frame is WxH with sides in 1..16384 (e.g. 640x360), got {text!r}")
    return int(parts[0]), int(parts[1])


def build_parser() -> Parser:
    ap = Parser(prog="python -m hw.system_cost", description=__doc__.split("\n\n")[0])
    from dfsq.rdn import CONFIGS

    ap.choice_list("--models", ("edsr",) + tuple(f"rdn-{c}" for c in CONFIGS), default=["edsr", "rdn-S", "rdn-B"],
                   help="edsr, rdn-S, rdn-B (default all three; rdn-A too)")
    ap.item_list("--frames", _frame, "LR frames WxH", example="640x360", default=[(640, 360), (1920, 1080)],
                 help="LR frames WxH (default 640x360,1920x1080)")
    ap.integer("--bits", 2, 8, default=4, help="DFSQ activation bits (default 4)")
    ap.integer("--static-bits", 2, 8, default=6, help="static uniform activation bits of equal PSNR (default 6)")
    ap.integer("--band", 1, 4096, default=BAND_ROWS,
               help=f"rows per statistics band of dfsq-band (default {BAND_ROWS})")
    ap.integer("--lanes", 1, 1024, default=16)
    ap.real("--fmax-mhz", 0, 10_000, lo_open=True, default=75.6, help="engine clock (default 75.6: hw.report)")
    ap.output_file("--json", default=None)
    return ap


@cli_main
def main(argv=None):
    args = build_parser().parse_args(argv)
    rows = []
    for name in args.models:
        graph, layers = model_graph(name)
        for (w, h) in args.frames:
            fps = frames_per_second(layers, h, w, args.lanes, args.fmax_mhz, args.bits)
            dfsq = design_costs(name, graph, layers, h, w, bits=args.bits, band=args.band)
            static = design_costs(name, graph, layers, h, w, bits=args.static_bits, band=args.band)
            for key, c in (("dfsq", dfsq["dfsq"]), ("dfsq-band", dfsq["dfsq-band"]), ("static", static["static"]),
                           ("static-fused", static["static-fused"])):
                r = asdict(c)
                r.update(fps=fps, dram_gbps_30fps=c.bandwidth(30) / 1e9, fits_ecp5=c.fits_ecp5)
                rows.append(r)
                print(f"{name:>6} {w}x{h} {c.design:>14} W{c.bits}: on chip {c.onchip_bits / 1e6:9.2f} Mbit "
                      f"({'fits' if c.fits_ecp5 else 'exceeds'} LFE5U-85F EBR), DRAM {c.dram_bytes / 1e6:9.1f} MB/frame "
                      f"= {c.bandwidth(30) / 1e9:6.2f} GB/s at 30 fps; {fps:.4f} fps at {args.fmax_mhz:g} MHz")
    if args.json:
        with atomic_output(args.json) as tmp:
            tmp.write_text(json.dumps({"config": {k: v for k, v in vars(args).items() if k != "json"},
                                       "rows": rows}, indent=1, default=list) + "\n")
    return 0


if __name__ == "__main__":
    main()


# --- docs/hardware.md -------------------------------------------------------------------------------------------

MODELS = (("edsr", "EDSR-baseline"), ("rdn-S", "RDN config S"), ("rdn-B", "RDN config B"))
FRAMES = ((640, 360), (1920, 1080))
DFSQ_BITS = 4


def _lut(row, flow="ecp5"):
    return (row or {}).get("raw", {}).get(flow, {}).get("lut_eq") if row else None


def _res(row, flow, key):
    return (row or {}).get("raw", {}).get(flow, {}).get(key) if row else None


def _reached(method: str, bits, note) -> str:
    """'reached by M at WbAb' (naming the sets not compared), or why not (hw.iso_psnr.fewest_bits's reason)."""
    from .iso_psnr import _bits_text

    return f"reached by {method} at {_bits_text(bits, note)}" if bits else f"not reached by {method} ({note})"


def section(hw_rows: list[dict], psnr_paths, tile_path, fmax_mhz: float | None) -> list[str]:
    """The "System cost" section of docs/hardware.md from the measured rows, PSNR files and tile statistics."""
    from .iso_psnr import DATASETS, _psnr_row, fewest_bits, load_cells

    cells = load_cells(psnr_paths)
    target = _psnr_row(cells, "dfsq", 4, DFSQ_BITS)
    mm_bits, mm_note = fewest_bits(cells, "minmax", target)
    un_bits, un_note = fewest_bits(cells, "uniform", target)
    acc = next((r for r in hw_rows if r.get("kind") == "accelerator"), None)
    acc_eng = next((r for r in hw_rows if r.get("group") == "ecp5-accel" and r.get("kind") == "dfsq"), None)

    def uniform_row(b):
        return next((r for r in hw_rows if r.get("group") == "ecp5" and r.get("kind") == "uniform"
                     and r.get("bits") == b and r.get("lanes") == 16), None)

    lines = ["", "## System cost: per-sample statistics in a whole accelerator", "",
             "DFSQ normalizes each conv's input with statistics over the whole feature map, so a layer cannot "
             "quantize any of its input before the previous layer has written all of it. This section compares the "
             "whole DFSQ accelerator (`hw.units.accelerator`, the design `sim.network` proves bit-exact) with the "
             "static uniform designs of equal PSNR, at equal MACs per cycle (16 lanes, 144 multipliers).", ""]
    ps = " / ".join("…" if target.get(d) is None else f"{target[d]:.2f}" for d in DATASETS)
    lines += [f"**Equal PSNR** (x2 EDSR, `bench/results/psnr_table.json`, within 0.01 dB on every set measured): "
              f"DFSQ W{DFSQ_BITS}A{DFSQ_BITS} {ps} dB (Set5 / Set14 / B100 / Urban100): "
              f"{_reached('Min-Max', mm_bits, mm_note)}; "
              f"{_reached('Uniform-MSE (per-channel MSE-clipped ranges)', un_bits, un_note)}.", ""]
    # --- area ---
    lines += ["### Area (ECP5 LFE5U-85F, `synth_ecp5`)", ""]
    ratios = {}                                  # static design -> DFSQ / static LUT4-eq (a lower bound)
    if acc:
        a_lut, e_lut = _lut(acc), _lut(acc_eng)
        rest = a_lut - e_lut if a_lut and e_lut else None
        lines += ["| design | LUT4-eq (no DSP) | FF | BRAM (DP16KD) | with DSPs: LUT4-eq + MULT18 |",
                  "|---|---:|---:|---:|---:|",
                  f"| DFSQ accelerator W4A4, 16 lanes (whole: engine, sequencer, parameter unit, statistics, "
                  f"thresholds, quantizer, post unit, memories) | {_f(a_lut)} | {_f(_res(acc, 'ecp5', 'ffs'))} | "
                  f"{_f(_res(acc, 'ecp5', 'bram'))} | {_f(_lut(acc, 'ecp5-dsp'))} + {_f(_res(acc, 'ecp5-dsp', 'mult18'))} |",
                  f"| its engine (fused de-normalization, codes in) | {_f(e_lut)} | {_f(_res(acc_eng, 'ecp5', 'ffs'))} | "
                  f"{_f(_res(acc_eng, 'ecp5', 'bram'))} | |",
                  f"| the rest (everything but the engine) | {_f(rest)} | | | |"]
        for label, b in (("Min-Max", mm_bits), ("Uniform-MSE", un_bits)):
            u = uniform_row(b) if b else None
            if u is None:
                lines.append(f"| static uniform ({label}): its engine | not measured | | | |")
                continue
            u_lut = _lut(u)
            bound = u_lut + rest if rest else None
            ratio = a_lut / bound if bound else None
            if ratio:
                ratios[f"{label} W{b}A{b}"] = ratio
            lines.append(f"| static uniform {label} W{b}A{b}: its engine (`--top uniform-engine`) | {_f(u_lut)} | "
                         f"{_f(_res(u, 'ecp5', 'ffs'))} | {_f(_res(u, 'ecp5', 'bram'))} | "
                         f"{_f(_lut(u, 'ecp5-dsp'))} + {_f(_res(u, 'ecp5-dsp', 'mult18'))} |")
            lines.append(f"| static uniform {label} W{b}A{b} accelerator, at most its engine + the rest | {_f(bound)} | "
                         f"| | DFSQ / static >= **{ratio:.2f}** |" if ratio else "| | | | | |")
        lines += ["", "The static accelerator is bounded from above by its engine plus everything the DFSQ accelerator "
                  "has besides its engine (a static design needs no statistics unit, threshold computation, parameter "
                  "unit or dividers: it has less), so DFSQ / static is **at least** the ratio shown. The accelerator "
                  "rows: `python -m hw.report --reuse docs/hardware.json --accelerator` (memories sized as a "
                  "device would hold them on chip: one 16 x 16 tile per feature-map group, two layers of weights)."]
    else:
        lines += ["The accelerator's synthesis is not in this report yet (`python -m hw.report --reuse "
                  "docs/hardware.json --accelerator`)."]
    # --- memory and DRAM ---
    lines += ["", "### Memory and DRAM traffic per frame (`python -m hw.system_cost`)", "",
              "Activation buffers on chip and activation bytes to and from DRAM per LR frame, from each model's "
              f"integer graph; DFSQ W{DFSQ_BITS}A{DFSQ_BITS} with 16-bit raw feature maps (golden.int_spec); static "
              f"uniform at Min-Max's bits of equal PSNR (W{mm_bits or 6}A{mm_bits or 6}); `dfsq-band{BAND_ROWS}`: DFSQ "
              f"with statistics per band of {BAND_ROWS} rows, fused. Weights (and DFSQ's point tables) are read once "
              "per frame in "
              "every design and listed apart. fps: the 16-lane engine's cycles (hw.throughput) at "
              f"{fmax_mhz:g} MHz (nextpnr-ecp5 above). EBR: the LFE5U-85F's 3.74 Mbit of block RAM.", "",
              "| model | LR frame | design | on chip (Mbit) | fits EBR | DRAM (MB/frame) | GB/s at 30 fps | "
              "weights (Mbit/frame) | fps (16 lanes) | GB/s at that fps |",
              "|---|---|---|---:|---|---:|---:|---:|---:|---:|"]
    for name, label in MODELS:
        graph, layers = model_graph(name)
        for w, h in FRAMES:
            fps = frames_per_second(layers, h, w, 16, fmax_mhz, DFSQ_BITS)
            d = design_costs(name, graph, layers, h, w, bits=DFSQ_BITS)
            st = design_costs(name, graph, layers, h, w, bits=mm_bits or 6)
            for c in (d["dfsq"], d["dfsq-band"], st["static"], st["static-fused"]):
                lines.append(f"| {label} | {w}x{h} | {c.design} W{c.bits} | {c.onchip_bits / 1e6:,.2f} | "
                             f"{'yes' if c.fits_ecp5 else 'no'} | {c.dram_bytes / 1e6:,.1f} | "
                             f"{c.bandwidth(30) / 1e9:,.2f} | {c.weight_bits / 1e6:.2f} | {fps:.4f} | "
                             f"{c.bandwidth(fps) / 1e9:.3f} |")
    # --- per-tile statistics ---
    lines += ["", "### Beyond the paper: statistics per tile (`python -m bench.tile_stats`)", ""]
    tiles = _tile_table(tile_path)
    lines += tiles or ["Not measured yet."]
    # --- verdict ---
    g, lay = model_graph("edsr")
    e = design_costs("edsr", g, lay, 360, 640, bits=DFSQ_BITS)
    st = design_costs("edsr", g, lay, 360, 640, bits=mm_bits or 6)
    fused = next((r for r in hw_rows if r.get("group") == "ecp5" and r.get("kind") == "dfsq" and r.get("lanes") == 16
                  and not r.get("denorm") and not r.get("codes_in")), None)
    split = next((r for r in hw_rows if r.get("group") == "ecp5" and r.get("kind") == "dfsq" and r.get("lanes") == 16
                  and r.get("denorm") == "split" and (r.get("sigma_bits"), r.get("shift_bits")) == (6, 0)
                  and not r.get("codes_in")), None)
    lines += ["", "### Verdict", "",
              "Goal: a DFSQ configuration within 0.8x the static uniform accelerator's LUTs and at most its DRAM bytes "
              "per frame, at equal PSNR. What the tables above measure:", "",
              f"- DRAM, layer by layer (the only way either design fits the LFE5U-85F's block RAM at these frames): "
              f"EDSR at 640x360 moves {e['dfsq'].dram_bytes / 1e6:,.0f} MB per frame with DFSQ against "
              f"{st['static'].dram_bytes / 1e6:,.0f} MB static "
              f"({e['dfsq'].dram_bytes / st['static'].dram_bytes:.2f}x). Every tensor a DFSQ conv reads is stored raw "
              "(16 bits): its statistics are complete only once it is written, so it cannot be quantized at the "
              "producer, where a static design stores the post-ReLU tensors as b-bit codes.",
              f"- Fused (statistics per band of {BAND_ROWS} rows): the band design moves only the body's entry and "
              "exit, as "
              f"the static fused design does, but holds {e['dfsq-band'].onchip_bits / 1e6:,.0f} Mbit on chip "
              f"against {st['static-fused'].onchip_bits / 1e6:,.0f} Mbit "
              f"({e['dfsq-band'].onchip_bits / st['static-fused'].onchip_bits:.1f}x): each layer keeps its whole band "
              "raw before it can quantize it; neither fits the device's 3.74 Mbit.",
              ]
    band = _band_psnr(tile_path, cells, BAND_ROWS)
    if band:
        lines.append(f"- PSNR of the band design (statistics per band of {BAND_ROWS} rows, calibrated the same way): "
                     + "; ".join(band) + ". Where every set is at least per-image DFSQ's minus 0.01 dB, the fused "
                     "band design is at equal PSNR and its DRAM bytes equal the static fused design's: what stands "
                     "in the way of the goal is then its on-chip memory (above) and its LUTs (below), not DRAM.")
    else:
        lines.append(f"- PSNR of the band design (statistics per band of {BAND_ROWS} rows): not measured yet "
                     f"(`python -m bench.tile_stats --tiles rows{BAND_ROWS}`).")
    if fused and split:
        lines.append(f"- LUTs: the accelerator's engine uses the fused de-normalization; the 16-lane DFSQ engine is "
                     f"{_lut(fused):,} LUT4-eq fused against {_lut(split):,} with the split format 6:0 "
                     "(docs/datapath.md), which the accelerator does not implement (it would also need the mean unit "
                     "per layer).")
    if ratios:
        worst = min(ratios.values())
        lines.append(f"- **Result: the goal is {'met' if worst <= 0.8 else 'not met'}.** At equal PSNR the DFSQ "
                     "accelerator's LUTs are at least "
                     + ", ".join(f"{r:.2f}x the {k} design's" for k, r in ratios.items())
                     + " (goal: at most 0.8x); its DRAM bytes reach the static design's only fused, by statistics "
                       "per band, which no device of this size holds on chip.")
    return lines + [""]


def _f(v, digits=0):
    if v is None:
        return ""
    return f"{v:,.{digits}f}" if isinstance(v, float) else f"{v:,}"


def _band_psnr(path, cells, rows: int) -> list[str]:
    """Per bit width: the band design's PSNR change against per-image DFSQ on each measured set (bench.tile_stats'
    cache beside bench.psnr_table's cells); empty when nothing is measured."""
    from pathlib import Path

    from bench.tile_stats import cell_key
    from golden.formats import read_json

    from .iso_psnr import DATASETS, _psnr_row

    p = Path(path)
    if not p.is_file():
        return []
    res = read_json(p, "tile_stats cache").get("results", {})
    out = []
    for bits in (4, 3):
        ref = _psnr_row(cells, "dfsq", 4, bits)
        parts = []
        for d in DATASETS:
            r = res.get(cell_key(2, f"rows{rows}", bits, d))
            if r is not None and ref.get(d) is not None:
                parts.append(f"{d} {r['psnr'] - ref[d]:+.3f}")
        if parts:
            missing = [d for d in DATASETS if cell_key(2, f"rows{rows}", bits, d) not in res]
            out.append(f"W{bits}A{bits} " + ", ".join(parts) + " dB against per-image statistics"
                       + (f" ({', '.join(missing)} not measured)" if missing else ""))
    return out


def _tile_table(path) -> list[str]:
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        return []
    md = p.with_suffix(".md")
    if md.is_file():
        text = md.read_text().strip().splitlines()[1:]   # below its title; blank lines kept (a table needs one)
        while text and not text[0].strip():
            text.pop(0)
        return text
    return []
