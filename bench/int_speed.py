"""Speed of the integer-only network (``dfsq-int``, contract 2) against fake-quant (``dfsq``, the fused C kernel)
and the contract-1 hardware datapath (``dfsq-hw``), on the same images in one process.

    python -m bench.int_speed [--model edsr] [--scale 2] [--bits 4] [--datasets Set5,Set14] [--limit N]
        [--params PARAMS] [--threads 1] [--out STEM]

Every image goes through each method in turn (the order rotates from image to image, so no method always runs on a
warmer or quieter machine); one forward each, timed with ``time.perf_counter``. A shared, loaded machine moves
every time, so only the ratios of one run mean anything: the JSON keeps per-image times, PSNR-Y and the summed
times. Params: ``bench.psnr_table``'s cached file for the cell, or ``--params``. Writes ``STEM.json``, ``STEM.md``
and ``STEM.png`` (default bench/results/int_speed_MODEL_xS_wBaB).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from golden.args import Parser
from golden.errors import UserError, cli_main
from golden.files import atomic_output

ROOT = Path(__file__).resolve().parent.parent
METHODS = ("dfsq", "dfsq-hw", "dfsq-int")


def build_nets(model, params) -> dict:
    """The three networks from one quantized model (hardware mode and the integer network wrap copies)."""
    import copy

    from dfsq.hw_mode import apply_hw_mode
    from dfsq.int_mode import IntNetwork
    from dfsq.quantize import quantize_model

    q = quantize_model(model, params, "dfsq")
    return {"dfsq": q, "dfsq-hw": apply_hw_mode(copy.deepcopy(q)), "dfsq-int": IntNetwork(copy.deepcopy(q))}


def measure(nets: dict, pairs, scale: int, progress: bool = True) -> dict:
    """Per image and method: seconds of one forward and PSNR-Y."""
    from tqdm import tqdm

    from dfsq.evaluate import upscale
    from dfsq.metrics import psnr_y

    names = list(nets)
    rows = []
    for i, (name, hr, lr) in enumerate(tqdm(pairs, desc="images", disable=not progress)):
        row = {"image": name, "lr_shape": list(lr.shape[:2]), "seconds": {}, "psnr": {}}
        order = names[i % len(names):] + names[:i % len(names)]
        for m in order:
            t0 = time.perf_counter()
            sr = upscale(nets[m], lr)
            row["seconds"][m] = time.perf_counter() - t0
            row["psnr"][m] = float(psnr_y(sr, hr, scale))
        rows.append(row)
    return {"rows": rows, "total_seconds": {m: sum(r["seconds"][m] for r in rows) for m in names}}


def render(res: dict) -> str:
    tot = res["total_seconds"]
    ref = tot["dfsq"]
    lines = [f"# Integer network speed: {res['model']} x{res['scale']} W{res['bits']}A{res['bits']} "
             f"(`python -m bench.int_speed`)", "",
             f"{len(res['rows'])} images of {', '.join(res['datasets'])}, {res['threads']} torch thread(s) (the "
             f"golden datapath's worker threads likewise), one forward per image and method, order rotating; CPU: "
             f"{res['cpu']}; {res['note']}", "",
             "| method | seconds (sum) | / fake-quant | PSNR-Y mean | - fake-quant (dB) | largest on one image |",
             "|---|---:|---:|---:|---:|---:|"]
    for m, t in tot.items():
        ps = np.array([r["psnr"][m] for r in res["rows"]])
        d = ps - np.array([r["psnr"]["dfsq"] for r in res["rows"]])
        lines.append(f"| {m} | {t:.1f} | {t / ref:.2f}x | {ps.mean():.4f} | {d.mean():+.4f} | {np.abs(d).max():.4f} |")
    return "\n".join(lines) + "\n"


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    px = [r["lr_shape"][0] * r["lr_shape"][1] for r in res["rows"]]
    for m, c in (("dfsq-hw", "tab:orange"), ("dfsq-int", "tab:blue")):
        ax.scatter(px, [r["seconds"][m] / r["seconds"]["dfsq"] for r in res["rows"]], s=12, color=c, label=m)
    ax.axhline(2.0, color="gray", ls="--", lw=1, label="goal: 2x")
    ax.axhline(1.0, color="black", lw=0.5)
    ax.set_xscale("log")
    ax.set_xlabel("LR pixels")
    ax.set_ylabel("time / fake-quant time")
    ax.set_title(f"{res['model']} x{res['scale']} W{res['bits']}A{res['bits']}, {res['threads']} thread(s)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_output(path, ".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def build_parser() -> Parser:
    from dfsq.data import BENCHMARK_ROOT, DATASETS

    ap = Parser(prog="python -m bench.int_speed", description=__doc__.split("\n")[0])
    ap.choice("--model", ("edsr", "rdn"), default="edsr")
    ap.choice("--scale", (2, 4), default=2)
    ap.integer("--bits", 2, 8, default=4)
    ap.integer("--words", 2, 5, default=4)
    ap.choice_list("--datasets", DATASETS, default="Set5,Set14")
    ap.integer("--limit", 1, 100_000, default=None, help="the first N images of each set")
    ap.input_dir("--data-root", "benchmarks", default=str(BENCHMARK_ROOT))
    ap.input_file("--params", "params", help="calibration artifact (default: bench.psnr_table's cached one)")
    ap.threads(default=1, help="torch threads (default 1)")
    ap.output_stem("--out", (".json", ".md", ".png"),
                   help="output stem (default bench/results/int_speed_MODEL_xS_wBaB)")
    return ap


@cli_main
def main(argv=None):
    args = build_parser().parse_args(argv)
    from bench.psnr_table import DEFAULT_PARAMS, params_path
    from dfsq.calibrate import cpu_label, load_params
    from dfsq.data import benchmark_pairs
    from dfsq.model import load_model

    params = Path(args.params) if args.params else params_path(DEFAULT_PARAMS, args.model, args.scale, args.bits,
                                                               args.words)
    if not params.is_file():
        raise UserError(f"params not found: {params} (run bench.psnr_table for this cell, or pass --params)")
    stem = Path(args.out) if args.out else (
        ROOT / "bench" / "results" / f"int_speed_{args.model}_x{args.scale}_w{args.bits}a{args.bits}")
    torch.set_num_threads(args.threads)
    nets = build_nets(load_model(args.model, "default", args.scale), load_params(params))
    pairs = [p for d in args.datasets for p in list(benchmark_pairs(d, args.scale, args.data_root))[:args.limit]]
    res = measure(nets, pairs, args.scale)
    res.update(model=args.model, scale=args.scale, bits=args.bits, datasets=list(args.datasets), threads=args.threads,
               cpu=cpu_label(), params=str(params),
               note="a shared 2-core machine: other jobs ran beside this one, so times are noisy; ratios are what "
                    "one run compares")
    with atomic_output(stem.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(res, indent=1) + "\n")
    with atomic_output(stem.with_suffix(".md")) as tmp:
        tmp.write_text(render(res))
    plot(res, stem.with_suffix(".png"))
    print(render(res))


if __name__ == "__main__":
    main()
