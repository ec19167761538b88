"""PSNR cost of the de-normalization format: hardware-exact DFSQ (golden integer datapath) vs fake-quant DFSQ.

    python -m bench.scale_bits [--weights default] [--scale 2] [--params PARAMS] [--datasets Set5] \
        [--scale-bits 8,10,12,16,20,24] [--act-bits 4 --weight-bits 4 --words 4] [--out build/bench]

For each ``scale_bits`` the 32 quantized convs run on the golden datapath (dfsq.hw_mode) and the PSNR-Y / SSIM-Y
of every image is compared with fake-quant DFSQ (the same params). Writes ``<out>/scale_bits.json``,
``scale_bits.md`` and ``scale_bits.png`` (PSNR drop against scale_bits; ``--name`` changes the stem).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from tqdm import tqdm

from bench import ROOT, SCRATCH, cluster
from dfsq.weights import weights_option
from golden.args import Parser, When, plain_name
from golden.errors import UserError, cli_main
from golden.files import check_output_file, write_outputs
from golden.spec import DEFAULT_SCALE_BITS, SCALE_BITS_RANGE, DatapathSpec


def parse_bits(text: str) -> list[int]:
    try:
        bits = sorted({int(t) for t in text.split(",") if t.strip()})
    except ValueError:
        raise UserError(f"--scale-bits must be comma-separated integers, got {text!r}") from None
    lo, hi = SCALE_BITS_RANGE
    if not bits or any(not lo <= b <= hi for b in bits):
        raise UserError(f"--scale-bits values must lie in {lo}..{hi}")
    return bits


def image_tasks(datasets, data_root, limit: int = 0) -> list[tuple[str, list[int]]]:
    """(dataset, image indices) of the tasks covering the first ``limit`` images (0: all) of each of ``datasets``
    (a list, or comma-separated), cut by :func:`bench.cluster.chunks_by_pixels`."""
    from dfsq.data import benchmark_paths

    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
        raise UserError(f"--limit must be 0 (all) or a positive image count, got {limit!r}")
    out = []
    for name in (datasets.split(",") if isinstance(datasets, str) else datasets):
        paths = benchmark_paths(name, data_root)
        paths = paths[:limit] if limit else paths
        if not paths:
            raise UserError(f"benchmark set {name} has no images under {data_root}")
        out += [(name, chunk) for chunk in cluster.chunks_by_pixels(paths)]
    return out


def image_rows_task(arch: str, weights: str, scale: int, params, dataset: str, data_root: str, indices: list[int],
                    configs: list, noise_floor: bool = False) -> dict:
    """A worker's task: for each image ``indices`` of ``dataset``, PSNR-Y / SSIM-Y of fake-quant DFSQ (``params``),
    optionally of fake-quant with float64 convs (``fq64``), and of the golden datapath in each of ``configs``
    ((label, dfsq.hw_mode.apply_hw_mode keyword arguments)); with the seconds each pass took."""
    from dfsq.data import benchmark_pairs
    from dfsq.evaluate import upscale
    from dfsq.hw_mode import apply_hw_mode, remove_hw_mode
    from dfsq.metrics import psnr_y, ssim_y
    from dfsq.model import load_model
    from dfsq.quantize import quantize_model

    qmodel = quantize_model(load_model(arch, weights, scale), params, "dfsq")
    images = list(benchmark_pairs(dataset, scale, data_root, indices))
    seconds = {}

    def measure(label):
        t0 = time.perf_counter()
        out = []
        for _, hr, lr in images:
            sr = upscale(qmodel, lr)
            out.append({"psnr": psnr_y(sr, hr, scale), "ssim": ssim_y(sr, hr, scale)})
        seconds[label] = time.perf_counter() - t0
        return out

    fq = measure("fake_quant")
    rows = [{"dataset": dataset, "image": stem, "psnr_fq": m["psnr"], "ssim_fq": m["ssim"], "hw": {}}
            for (stem, _, _), m in zip(images, fq)]
    if noise_floor:
        # the same fake-quant network with its convs in float64: a perturbation at float32 rounding level, which
        # shows how much PSNR moves when nothing but rounding changes (codes near a midpoint flip and propagate)
        convs = [m for m in qmodel.modules() if hasattr(m, "weight_fq") and hasattr(m, "conv")]
        for qc in convs:
            qc.conv = (lambda m: lambda xq: torch.nn.functional.conv2d(
                xq.double(), m.weight_fq.double(), m.bias.double(), padding=m.kernel // 2).float())(qc)
        for row, m in zip(rows, measure("fq64")):
            row["fq64"] = m
        for qc in convs:
            del qc.conv
    for label, kwargs in configs:
        apply_hw_mode(qmodel, **kwargs)
        for row, m in zip(rows, measure(label)):
            row["hw"][label] = m
        remove_hw_mode(qmodel)
    return {"rows": rows, "seconds": seconds, "threads": torch.get_num_threads()}


def sweep_images(args, configs: list, noise_floor: bool = False, arch: str = "edsr") -> dict:
    """Every image of ``args.datasets`` through fake-quant and the ``configs`` of :func:`image_rows_task`, as Dask
    tasks (:mod:`bench.cluster`: ``args.scheduler``, ``args.workers``, ``args.threads``); the params are
    ``args.params`` or one calibration task the others wait for. Returns the rows in dataset and image order,
    the seconds of each pass summed over the tasks, and the tasks' torch threads."""
    ns = SimpleNamespace(act_bits=args.act_bits, weight_bits=args.weight_bits, words=args.words, params=args.params,
                         calib=args.calib, images=args.images, seed=0, weights=args.weights)
    tasks = image_tasks(args.datasets, args.data_root, args.limit)
    with cluster.connect(args.scheduler, args.workers, args.threads) as client:
        params = cluster.submit(client, args.threads, "params", _params_task, arch, args.weights, args.scale, ns)
        futs = [cluster.submit(client, args.threads, f"{ds}-{i}", image_rows_task, arch, args.weights, args.scale,
                               params, ds, str(args.data_root), idx, configs, noise_floor)
                for i, (ds, idx) in enumerate(tasks)]
        order = {f.key: i for i, f in enumerate(futs)}
        parts = {}
        with tqdm(total=sum(len(idx) for _, idx in tasks), desc="images", unit="image") as bar:
            for fut, res in cluster.finished(client, futs):
                parts[order[fut.key]] = res
                bar.update(len(res["rows"]))
    results = [parts[i] for i in range(len(futs))]
    seconds = {}
    for r in results:
        for k, v in r["seconds"].items():
            seconds[k] = seconds.get(k, 0.0) + v
    return {"rows": [row for r in results for row in r["rows"]], "seconds": seconds,
            "threads": results[0]["threads"] if results else args.threads}


def _params_task(arch: str, weights: str, scale: int, ns):
    from dfsq.model import load_model
    from dfsq.quantize import quant_params

    return quant_params(load_model(arch, weights, scale), ns)


def run(args) -> dict:
    bits = parse_bits(args.scale_bits) if isinstance(args.scale_bits, str) else sorted(args.scale_bits)
    done = sweep_images(args, [(sb, {"scale_bits": sb}) for sb in bits], noise_floor=args.noise_floor)
    rows = done["rows"]
    summary = []
    for sb in (["fq64"] if args.noise_floor else []) + bits:
        for ds in dict.fromkeys(r["dataset"] for r in rows):
            rs = [r for r in rows if r["dataset"] == ds]
            get = (lambda r: r["fq64"]) if sb == "fq64" else (lambda r: r["hw"][sb])
            d = np.array([get(r)["psnr"] - r["psnr_fq"] for r in rs])
            summary.append({"scale_bits": sb, "dataset": ds, "images": len(rs),
                            "psnr_fq": float(np.mean([r["psnr_fq"] for r in rs])),
                            "psnr_hw": float(np.mean([get(r)["psnr"] for r in rs])),
                            "delta_mean": float(d.mean()), "delta_max_abs_image": float(np.abs(d).max()),
                            "ssim_fq": float(np.mean([r["ssim_fq"] for r in rs])),
                            "ssim_hw": float(np.mean([get(r)["ssim"] for r in rs])),
                            "acc_bits": None if sb == "fq64" else DatapathSpec(
                                words=args.words, act_bits=args.act_bits, weight_bits=args.weight_bits,
                                scale_bits=sb).acc_bits})
    return {"config": {"weights": str(args.weights), "scale": args.scale, "params": args.params,
                       "act_bits": args.act_bits, "weight_bits": args.weight_bits, "words": args.words,
                       "datasets": ",".join(args.datasets), "limit": args.limit,
                       "default_scale_bits": DEFAULT_SCALE_BITS},
            "summary": summary, "images": rows, "seconds": {str(k): v for k, v in done["seconds"].items()},
            "torch_threads": done["threads"]}


def markdown(res: dict) -> str:
    c = res["config"]
    out = ["# PSNR cost of the de-normalization format (scale_bits)", "",
           f"x{c['scale']}, W{c['weight_bits']}A{c['act_bits']}, words {c['words']}, weights `{c['weights']}`, "
           f"params `{c['params']}`. Hardware-exact DFSQ (golden integer datapath, `dfsq.hw_mode`) against "
           f"fake-quant DFSQ with the same points; delta = hw - fake-quant (dB, Y channel).", "",
           "| scale_bits | acc_bits | dataset | images | PSNR fake-quant | PSNR hw | delta mean | max abs delta (one image) | SSIM hw - fq |",
           "|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for s in res["summary"]:
        label = "fake-quant, float64 conv (noise floor)" if s["scale_bits"] == "fq64" else s["scale_bits"]
        out.append(f"| {label} | {s['acc_bits'] or '-'} | {s['dataset']} | {s['images']} | {s['psnr_fq']:.4f} | "
                   f"{s['psnr_hw']:.4f} | {s['delta_mean']:+.4f} | {s['delta_max_abs_image']:.4f} | "
                   f"{s['ssim_hw'] - s['ssim_fq']:+.5f} |")
    out += ["", "Reproduce: `python -m bench.scale_bits " + res.get("argv", "") + "`", ""]
    return "\n".join(out)


def plot(res: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for ds in dict.fromkeys(s["dataset"] for s in res["summary"]):
        ss = [s for s in res["summary"] if s["dataset"] == ds and s["scale_bits"] != "fq64"]
        floor = [s for s in res["summary"] if s["dataset"] == ds and s["scale_bits"] == "fq64"]
        if floor:
            ax.axhline(max(abs(floor[0]["delta_mean"]), 1e-5), ls=":", lw=1, label=f"{ds}: fake-quant f64 vs f32")
        ax.plot([s["scale_bits"] for s in ss], [max(abs(s["delta_mean"]), 1e-5) for s in ss], "o-", label=ds)
    ax.axhline(0.01, color="grey", ls="--", lw=1, label="0.01 dB")
    ax.set_yscale("log")
    ax.set_xlabel("scale_bits (sigma_m, mu_m width)")
    ax.set_ylabel("|PSNR hw - PSNR fake-quant| (dB)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=120, format="png")
    finally:
        plt.close(fig)


def add_run_args(ap: Parser) -> None:
    """The options shared by the benchmarks that run a quantized network on benchmark images (this one and
    bench.denorm_format): weights, scale, params or a calibration, datasets, a per-set image limit and the Dask
    scheduler of the image tasks."""
    from dfsq.data import BENCHMARK_ROOT

    calibrating = When("params", None)
    weights_option(ap)
    ap.choice("--scale", (2, 4), default=2)
    ap.input_file("--params", "params", help="calibration artifact (dfsq.calibrate); calibrates now when absent")
    ap.input_dir("--calib", "images", when=calibrating, help="calibration image folder when --params is not given")
    ap.integer("--images", 1, 100_000, default=32, when=calibrating,
               help="calibration images when --params is not given")
    ap.name_list("--datasets", default=["Set5"], help="sets under --data-root (default Set5)")
    ap.input_dir("--data-root", "benchmarks", default=str(BENCHMARK_ROOT))
    ap.integer("--limit", 0, 1_000_000, default=0, help="at most this many images per dataset (0: all)")
    cluster.add_arguments(ap, "images")


def build_parser() -> Parser:
    from golden.spec import ACT_BITS_RANGE, WEIGHT_BITS_RANGE, WORDS_RANGE

    ap = Parser(prog="python -m bench.scale_bits", description=__doc__.split("\n")[0])
    add_run_args(ap)
    ap.int_list("--scale-bits", *SCALE_BITS_RANGE, default=[8, 10, 12, 16, 20, 24],
                help="sigma/mu widths to measure (default 8,10,12,16,20,24)")
    ap.integer("--act-bits", *ACT_BITS_RANGE, default=4)
    ap.integer("--weight-bits", *WEIGHT_BITS_RANGE, default=4)
    ap.integer("--words", *WORDS_RANGE, default=4)
    ap.flag("--no-noise-floor", dest="noise_floor", negate=True, help="skip the fake-quant float64-conv reference run")
    ap.output_dir("--out", default=str(SCRATCH), help=f"output folder (default {SCRATCH.relative_to(ROOT)}/; the "
                                                     f"documented results are in bench/results/)")
    ap.text("--name", plain_name, default="scale_bits", help="output file stem")
    return ap


@cli_main
def main(argv=None):
    args = build_parser().parse_args(argv)
    outputs = [Path(args.out) / f"{args.name}{suffix}" for suffix in (".json", ".md", ".png")]
    for path in outputs:
        check_output_file(path, "--out/--name")
    if args.params:
        from dfsq.calibrate import load_params

        load_params(args.params)   # a bad file is refused here, before any worker starts
    res = run(args)
    res["argv"] = " ".join(argv) if argv is not None else " ".join(os.sys.argv[1:])
    md = markdown(res)
    write_outputs({outputs[0]: json.dumps(res, indent=2) + "\n", outputs[1]: md,
                   outputs[2]: lambda tmp: plot(res, tmp)})
    print(md)


if __name__ == "__main__":
    main()
