"""Fake-quantized forward time with the fused C kernels (dfsq.fastquant) against the torch path, and proof that the
two give the same bits.

    python -m bench.fakequant_speed [--model rdn] [--scale 2] [--bits 4] [--methods fp,minmax,dfsq] \
        [--image Urban100/img001 | PATH] [--repeat 1] [--threads 1] [--params PARAMS] [--out STEM]

One LR image (default: the first Urban100 image, 322 x 512 at x2, the largest inputs of the tables; the
scikit-image astronaut when ../shared is absent) goes through the network once per path: ``DFSQ_FASTQUANT=0``
(torch) and the kernel; best of ``--repeat`` runs. The outputs must be ``torch.equal`` (the JSON says so and the
command exits 1 otherwise). Params: ``bench.psnr_table``'s cached file for this model, scale and bits (as
``bench.sensitivity``), or ``--params``. Writes ``STEM.json``, ``STEM.md`` and ``STEM.png`` (default
build/bench/fakequant_speed_MODEL_xS_wBaB; the documented run's is in bench/results/).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from bench import ROOT, SCRATCH
from bench.psnr_table import DEFAULT_PARAMS, params_path
from dfsq.data import BENCHMARK_ROOT, DATASETS
from dfsq.quantize import check_params_fit
from golden.args import Parser
from dfsq.weights import weights_option
from golden.errors import UserError, cli_main
from golden.files import check_output_file, write_outputs
METHODS = ("fp", "minmax", "dfsq")


def load_lr(image: str | None, scale: int, root) -> tuple[str, np.ndarray]:
    """(name, uint8 LR image): ``SET/STEM`` of a benchmark set, an image file (used as the LR input), or None
    for the first Urban100 image (the astronaut when the set is absent)."""
    from dfsq.data import benchmark_pairs, load_rgb, make_lr, modcrop, sample_image

    if image is None:
        if (Path(root) / "Urban100" / "HR").is_dir():
            stem, _, lr = next(iter(benchmark_pairs("Urban100", scale, root)))
            return f"Urban100/{stem}", lr
        return "astronaut (LR of)", make_lr(modcrop(sample_image(), scale), scale)
    path = Path(image)
    if path.is_file():
        return path.name, load_rgb(path)
    name, _, stem = image.partition("/")
    if name in DATASETS and stem and "/" not in stem:
        for s, _, lr in benchmark_pairs(name, scale, root):
            if s == stem:
                return image, lr
    raise UserError(f"--image {image!r} is neither a file nor SET/STEM of a benchmark set under {root}")


def _time(net, x, repeat: int) -> tuple[float, torch.Tensor]:
    best, y = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        with torch.no_grad():
            y = net(x)
        best = min(best, time.perf_counter() - t0)
    return best, y


def _forward(net, x, repeat: int, kernel: bool) -> tuple[float, torch.Tensor]:
    old = os.environ.get("DFSQ_FASTQUANT")
    os.environ["DFSQ_FASTQUANT"] = "1" if kernel else "0"
    try:
        return _time(net, x, repeat)
    finally:
        if old is None:
            os.environ.pop("DFSQ_FASTQUANT", None)
        else:
            os.environ["DFSQ_FASTQUANT"] = old


def render(res: dict) -> str:
    lines = [f"# Fake-quant forward time: {res['model']} x{res['scale']} W{res['bits']}A{res['bits']} "
             f"(`python -m bench.fakequant_speed`)", "",
             f"Input: {res['image']} (LR {res['lr_shape'][0]} x {res['lr_shape'][1]}), {res['threads']} torch "
             f"thread(s), best of {res['repeat']}; CPU: {res['cpu']}. Kernel: {res['kernel']}."
             + (" With one run the first row also pays the process's warm-up (fresh memory, oneDNN's first "
                "calls): compare rows of one method, or use --repeat 2." if res["repeat"] == 1 else ""), "",
             "| method | torch path (s) | fused kernel (s) | speed-up | outputs bit-identical |", "|---|---:|---:|---:|---|"]
    for m, r in res["rows"].items():
        if m == "fp":
            lines.append(f"| FP | {r['torch']:.2f} | | | |")
        else:
            k, t = r.get("kernel"), r["torch"]
            kernel = "" if k is None else f"{k:.2f}"
            speed = "" if k is None else f"{t / k:.2f}x"
            equal = "" if r.get("equal") is None else ("yes" if r["equal"] else "NO")
            lines.append(f"| {m} | {t:.2f} | {kernel} | {speed} | {equal} |")
    return "\n".join(lines) + "\n"


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, vals, colors = [], [], []
    for m, r in res["rows"].items():
        for kind, c in (("torch", "tab:gray"), ("kernel", "tab:blue")):
            if r.get(kind) is not None:
                labels.append("FP" if m == "fp" else f"{m}, {'torch path' if kind == 'torch' else 'fused kernel'}")
                vals.append(r[kind])
                colors.append("tab:green" if m == "fp" else c)
    fig, ax = plt.subplots(figsize=(6.4, 0.45 * len(vals) + 1.2))
    ax.barh(range(len(vals)), vals, color=colors)
    ax.set_yticks(range(len(vals)), labels)
    ax.invert_yaxis()
    ax.set_xlabel("seconds per forward")
    ax.set_title(f"{res['model']} x{res['scale']} W{res['bits']}A{res['bits']}, {res['image']}", fontsize=9)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=110, format="png")
    finally:
        plt.close(fig)


def _set_stem(text: str) -> bool:
    """``SET/STEM`` of a benchmark set (and not an existing path)."""
    name, _, stem = text.partition("/")
    return name in DATASETS and bool(stem) and "/" not in stem and not Path(text).exists()


def build_parser() -> Parser:
    from golden.spec import ACT_BITS_RANGE, WORDS_RANGE

    ap = Parser(prog="python -m bench.fakequant_speed", description=__doc__.split("\n")[0])
    ap.choice("--model", ("edsr", "rdn"), default="rdn")
    weights_option(ap)
    ap.choice("--scale", (2, 4), default=2)
    ap.integer("--bits", *ACT_BITS_RANGE, default=4)
    ap.integer("--words", *WORDS_RANGE, default=4)
    ap.choice_list("--methods", METHODS, default=list(METHODS), help="default fp,minmax,dfsq")
    ap.input_file("--image", "image", special=_set_stem,
                  help="SET/STEM of a benchmark set, or an LR image file (default: first Urban100)")
    ap.input_dir("--data-root", "benchmarks", default=str(BENCHMARK_ROOT))
    ap.input_file("--params", "params", help="calibration artifact (default: bench.psnr_table's cached one)")
    ap.integer("--repeat", 1, 1000, default=1)
    ap.threads(default=1, help="torch threads (default 1)")
    ap.output_stem("--out", (".json", ".md", ".png"),
                   help=f"output stem (default {SCRATCH.relative_to(ROOT)}/fakequant_speed_MODEL_xS_wBaB)")
    return ap


@cli_main
def main(argv=None):
    args = build_parser().parse_args(argv)
    methods = args.methods
    params = Path(args.params) if args.params else params_path(DEFAULT_PARAMS, args.model, args.scale, args.bits,
                                                               args.words)
    if set(methods) - {"fp"} and not params.is_file():
        raise UserError(f"params not found: {params} (run bench.psnr_table for this cell, or pass --params)")
    stem = args.out or str(SCRATCH / f"fakequant_speed_{args.model}_x{args.scale}_w{args.bits}a{args.bits}")
    outs = [check_output_file(f"{stem}{s}", "--out") for s in (".json", ".md", ".png")]
    torch.set_num_threads(args.threads)

    from dfsq import fastquant
    from dfsq.calibrate import cpu_label, load_params
    from dfsq.model import load_model
    from dfsq.quantize import quantize_model

    name, lr = load_lr(args.image, args.scale, args.data_root)
    model = load_model(args.model, args.weights, args.scale).eval()
    x = torch.from_numpy(np.array(lr, copy=True)).permute(2, 0, 1)[None].float()
    p = load_params(params) if set(methods) - {"fp"} else None
    if p is not None:
        check_params_fit(p, model, str(params), act_bits=args.bits, weight_bits=args.bits, words=args.words)
    rows, ok = {}, True
    for m in methods:
        if m == "fp":
            rows[m] = {"torch": _time(model, x, args.repeat)[0]}
        else:
            net = quantize_model(model, p, m)
            t_torch, y_torch = _forward(net, x, args.repeat, kernel=False)
            row = {"torch": t_torch}
            if fastquant.library() is not None:
                t_kernel, y_kernel = _forward(net, x, args.repeat, kernel=True)
                row.update(kernel=t_kernel, equal=bool(torch.equal(y_torch, y_kernel)))
                ok &= row["equal"]
            rows[m] = row
        print(f"{m}: " + ", ".join(f"{k} {v:.2f} s" if isinstance(v, float) else f"{k} {v}" for k, v in rows[m].items()))
    res = {"model": args.model, "scale": args.scale, "bits": args.bits, "words": args.words, "image": name,
           "lr_shape": list(lr.shape[:2]), "threads": args.threads, "repeat": args.repeat, "rows": rows,
           "cpu": cpu_label(),
           "kernel": "loaded" if fastquant.library() is not None else f"unavailable ({fastquant.why_unavailable()})",
           "params": None if p is None else str(params)}
    write_outputs({outs[0]: json.dumps(res, indent=1) + "\n", outs[1]: render(res),
                   outs[2]: lambda tmp: plot(res, tmp)})
    print(render(res))
    print(f"wrote {outs[1]}")
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
