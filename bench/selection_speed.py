"""Point selection: fast k-means + snap versus exhaustive subset search, and the 107- versus 377-value universal set.

    python -m bench.selection_speed [--weights default] [--layer body.4.body.0] [--channels 8] [--images 4] \
        [--skip-psnr] [--psnr-images 32] [--threads N] [--out bench/results/selection_speed]

Part 1 (seconds): real normalized activations of ``--channels`` channels of one layer (x2 model, first
``--images`` calibration images) as histograms. For small settings (universal set of 2 words = 29 values or 3
words = 107 values; 2, 4, 8 points) it times, per channel, the exhaustive search over all C(n, K) subsets and the
fast selection (weighted k-means, 4 restarts, snap, refine), and reports the loss of each (the exhaustive loss is
the optimum). It also times the fast selection at the real settings (377 and 1065 values, 16 and 256 points) and
extrapolates the exhaustive time there from the measured time per subset.

Part 2 (minutes, skip with --skip-psnr): Set5 PSNR of DFSQ at 4 and 3 bits with words 3 (107 values) and words 4
(377 values), calibrated on ``--psnr-images`` images.

Times are CPU seconds of this process (``time.process_time``), so other jobs on the machine distort them little.
Writes ``<out>.json``, ``<out>.md`` and ``<out>.png`` (time per channel versus number of subsets).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from golden.args import Parser, When
from dfsq.weights import weights_option
from golden.errors import UserError, cli_main
from golden.files import write_outputs
from golden.spec import WordSet
from dfsq.calibrate import calibrate, calibration_images, collect_histograms
from dfsq.model import load_edsr, quantized_convs
from dfsq.select import exhaustive_select, histogram_values, kmeans_select

ROOT = Path(__file__).resolve().parent.parent
SMALL = [(2, 1), (2, 2), (2, 3), (3, 1), (3, 2)]  # (words, act_bits): 29/107 values, 2..8 points
LARGE = [(2, 4), (3, 4), (4, 4), (5, 4), (4, 8)]  # the n sweep at K = 16, and 8 bits
BINS = 1024


def time_call(fn, repeat: int = 1):
    best = math.inf
    out = None
    for _ in range(repeat):
        t0 = time.process_time()  # CPU time: robust to other jobs on a shared machine
        out = fn()
        best = min(best, time.process_time() - t0)
    return best, out


def part1(hist: np.ndarray, values: np.ndarray) -> list[dict]:
    rows = []
    C = hist.shape[0]
    for words, b in SMALL + LARGE:
        ws = WordSet(words)
        k = 1 << b
        n = len(ws)
        subsets = math.comb(n, k)
        t_fast, fast = time_call(lambda: kmeans_select(values, hist, b, ws, seed=0), repeat=2)
        row = {"words": words, "universal_set": n, "points": k, "subsets": subsets,
               "fast_s_per_channel": t_fast / C, "fast_loss": float(fast["loss"].mean())}
        if subsets <= 6_000_000:
            t_ex, losses = 0.0, []
            for c in range(C):
                t, ex = time_call(lambda: exhaustive_select(values, hist[c], b, ws))
                t_ex += t
                losses.append(ex["loss"])
            row.update(exhaustive_s_per_channel=t_ex / C, exhaustive_loss=float(np.mean(losses)),
                       s_per_subset=t_ex / C / subsets)
        rows.append(row)
        print(f"words {words} ({n} values), {k:3d} points: C(n,K) = {subsets:.3g}; fast {t_fast / C * 1e3:8.2f} ms/ch "
              f"loss {row['fast_loss']:.3e}" + (f"; exhaustive {row['exhaustive_s_per_channel']:8.3f} s/ch loss "
                                                f"{row['exhaustive_loss']:.3e}" if "exhaustive_loss" in row else ""))
    per_subset = [r["s_per_subset"] for r in rows if "s_per_subset" in r and r["subsets"] > 10_000]
    rate = float(np.median(per_subset)) if per_subset else None
    for r in rows:
        if "exhaustive_loss" not in r and rate:
            r["exhaustive_s_per_channel_extrapolated"] = r["subsets"] * rate
    return rows


def part2(weights: str, images: int, threads_note: str) -> list[dict]:
    from dfsq.evaluate import evaluate_dataset
    from dfsq.quantize import quantize_model

    model = load_edsr(weights, 2)
    calib = calibration_images(None, images, 2)
    out = []
    for words in (3, 4):
        for b in (4, 3):
            t0 = time.perf_counter()
            p = calibrate(model, calib, act_bits=b, weight_bits=b, words=words, seed=0, weights=weights,
                          progress=True)
            t_cal = time.perf_counter() - t0
            r = evaluate_dataset(quantize_model(model, p, "dfsq"), "Set5", 2)
            out.append({"words": words, "universal_set": len(WordSet(words)), "bits": b, "psnr": r["psnr"],
                        "ssim": r["ssim"], "calib_images": images, "calib_s": round(t_cal, 1),
                        "calib_cpu_s": p.info["cpu_seconds"],
                        "mean_loss": p.info["mean_loss"]})
            print(f"words {words} ({len(WordSet(words))} values) W{b}A{b}: Set5 {r['psnr']:.3f} / {r['ssim']:.4f} "
                  f"(mean loss {p.info['mean_loss']:.3e}, calibration {t_cal:.0f} s)")
    return out


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2))
    ex = sorted((r for r in rows if "exhaustive_s_per_channel" in r), key=lambda r: r["subsets"])
    ax.loglog([r["subsets"] for r in ex], [r["exhaustive_s_per_channel"] for r in ex], "o", label="exhaustive")
    ax.loglog([r["subsets"] for r in ex], [r["fast_s_per_channel"] for r in ex], "s", label="k-means + snap")
    for r in ex:
        ax.annotate(f"n={r['universal_set']}, K={r['points']}", (r["subsets"], r["exhaustive_s_per_channel"]),
                    fontsize=7, xytext=(4, -10), textcoords="offset points")
    ax.set_xlabel("subsets C(n, K)")
    ax.set_ylabel("CPU seconds per channel")
    ax.set_title("Measured at small sizes")
    ax.legend(loc="upper left")
    sweep = sorted((r for r in rows if r["points"] == 16), key=lambda r: r["universal_set"])
    bx.plot([r["universal_set"] for r in sweep], [r["fast_s_per_channel"] * 1e3 for r in sweep], "s-", color="C1",
            label="k-means + snap (measured)")
    note = "\n".join(f"n={r['universal_set']}: exhaustive ~{r['exhaustive_s_per_channel_extrapolated']:.0e} s"
                      for r in sweep if r.get("exhaustive_s_per_channel_extrapolated"))
    if note:
        bx.text(0.03, 0.05, "extrapolated, K = 16:\n" + note, transform=bx.transAxes, fontsize=7, va="bottom")
    bx.set_xscale("log")
    bx.set_ylim(0, 1.4 * max(r["fast_s_per_channel"] * 1e3 for r in sweep))
    bx.set_xlabel("universal set size n (K = 16 points)")
    bx.set_ylabel("CPU ms per channel")
    bx.set_title("Fast selection versus set size")
    bx.legend(loc="upper left")
    for a_ in (ax, bx):
        a_.grid(alpha=0.3, which="both")
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=120, format="png")
    finally:
        plt.close(fig)


def markdown(res: dict) -> str:
    L = ["# Point selection: k-means + snap versus exhaustive search", "",
         f"Command: `{res['command']}`", "",
         f"Data: normalized inputs of {res['layer']}, {res['channels']} channels, {res['images']} calibration "
         f"images of the x2 model, {BINS}-bin histograms. Times are CPU seconds per channel; loss = mean squared quantization "
         "error of the normalized activations (exhaustive = the optimum).", "",
         "| words | set size n | points K | subsets C(n,K) | k-means ms/ch | k-means loss | exhaustive s/ch | "
         "exhaustive loss | loss ratio |", "|---|---|---|---|---|---|---|---|---|"]
    for r in res["selection"]:
        if "exhaustive_loss" in r:
            ex = f"{r['exhaustive_s_per_channel']:.3f}"
            el = f"{r['exhaustive_loss']:.3e}"
            ratio = f"{r['fast_loss'] / r['exhaustive_loss']:.3f}" if r["exhaustive_loss"] > 0 else "-"
        else:
            e = r.get("exhaustive_s_per_channel_extrapolated")
            ex = f"~{e:.2e} (extrapolated)" if e else "-"
            el, ratio = "-", "-"
        L.append(f"| {r['words']} | {r['universal_set']} | {r['points']} | {r['subsets']:.3g} | "
                 f"{r['fast_s_per_channel'] * 1e3:.2f} | {r['fast_loss']:.3e} | {ex} | {el} | {ratio} |")
    if res.get("universal_set_psnr"):
        L += ["", "## Universal set: 107 values (3 words) versus 377 values (4 words), Set5 x2", "",
              "| words | set size | W/A bits | PSNR | SSIM | mean selection loss | whole-model calibration "
              "(32 layers, wall / CPU s) |", "|---|---|---|---|---|---|---|"]
        for r in res["universal_set_psnr"]:
            L.append(f"| {r['words']} | {r['universal_set']} | {r['bits']} | {r['psnr']:.3f} | {r['ssim']:.4f} | "
                     f"{r['mean_loss']:.3e} | {r['calib_s']:.0f} / {r.get('calib_cpu_s', float('nan')):.0f} |")
    return "\n".join(L) + "\n"


def load_result(path) -> dict:
    """The format validator of this benchmark's JSON (``selection-speed`` in :mod:`golden.formats`, read by
    ``--replot``): the header fields and every row's numbers; a one-line UserError naming the field otherwise."""
    from golden.formats import INT, LIST, NUMBER, TEXT, need, read_json

    res = read_json(path, "selection_speed result")
    where = str(path)
    for f in ("command", "layer"):
        need(res, f, TEXT, where)
    for f in ("channels", "images", "bins", "torch_threads"):
        need(res, f, INT, where, check=lambda v: v >= 1, expect="a count >= 1")
    for i, r in enumerate(need(res, "selection", LIST, where, check=bool, expect="a non-empty list")):
        at = f"{where}: selection[{i}]"
        for f in ("words", "universal_set", "points", "subsets"):
            need(r, f, INT, at, check=lambda v: v >= 1, expect="a count >= 1")
        for f in ("fast_s_per_channel", "fast_loss"):
            need(r, f, NUMBER, at, check=lambda v: v >= 0, expect="a number >= 0")
        for f in ("exhaustive_s_per_channel", "exhaustive_loss", "exhaustive_s_per_channel_extrapolated",
                  "s_per_subset"):
            need(r, f, NUMBER, at, optional=True, check=lambda v: v >= 0, expect="a number >= 0")
    if not any(r["points"] == 16 for r in res["selection"]):
        raise UserError(f"{where}: selection has no 16-point rows (the plot's sweep)")
    for i, r in enumerate(need(res, "universal_set_psnr", LIST, where, optional=True) or []):
        at = f"{where}: universal_set_psnr[{i}]"
        for f in ("words", "universal_set", "bits"):
            need(r, f, INT, at, check=lambda v: v >= 1, expect="a count >= 1")
        for f in ("psnr", "ssim", "mean_loss", "calib_s"):
            need(r, f, NUMBER, at)
        need(r, "calib_cpu_s", NUMBER, at, optional=True)
    return res


def build_parser() -> Parser:
    measuring = When("replot", False)
    ap = Parser(prog="python -m bench.selection_speed", description=__doc__.split("\n")[0])
    weights_option(ap, when=measuring)
    ap.text("--layer", str, default="body.4.body.0", when=measuring, help="quantized layer (default body.4.body.0)")
    ap.integer("--channels", 1, 4096, default=8, when=measuring)
    ap.integer("--images", 1, 100_000, default=4, when=measuring)
    ap.flag("--skip-psnr", when=measuring)
    ap.integer("--psnr-images", 1, 100_000, default=32, when=(measuring, When("skip_psnr", False)))
    ap.threads(when=measuring)
    ap.output_stem("--out", (".json", ".md", ".png"), default=str(ROOT / "bench" / "results" / "selection_speed"),
                   help="writes OUT.json, OUT.md and OUT.png (default bench/results/selection_speed, the "
                        "documented result)")
    ap.flag("--replot", help="only redraw <out>.md and <out>.png from <out>.json")
    return ap


@cli_main
def main(argv=None):
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    if args.replot:
        res = load_result(f"{out}.json")
        write_outputs({f"{out}.md": markdown(res), f"{out}.png": lambda tmp: plot(res["selection"], tmp)})
        print(f"redrew {out}.md and .png")
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_edsr(args.weights, 2)
    names = [n for n, _ in quantized_convs(model)]
    if args.layer not in names:
        raise UserError(f"--layer: unknown layer {args.layer!r} (e.g. body.4.body.0)")
    hist = collect_histograms(model, calibration_images(None, args.images, 2), BINS)[names.index(args.layer)]
    hist = hist[: args.channels]
    res = {"command": "python -m bench.selection_speed " + " ".join(argv if argv is not None else
                                                                       __import__("sys").argv[1:]),
           "layer": args.layer, "channels": int(hist.shape[0]), "images": args.images, "bins": BINS,
           "torch_threads": torch.get_num_threads()}
    res["selection"] = part1(hist, histogram_values(BINS))
    if not args.skip_psnr:
        res["universal_set_psnr"] = part2(args.weights, args.psnr_images, "")
    write_outputs({f"{out}.json": json.dumps(res, indent=1) + "\n", f"{out}.md": markdown(res),
                   f"{out}.png": lambda tmp: plot(res["selection"], tmp)})
    print(f"wrote {out}.md, .json, .png")


if __name__ == "__main__":
    main()
