"""Where a DFSQ network loses its PSNR: weights only, activations only, and each layer's activations alone.

    python -m bench.sensitivity [--model rdn] [--weights default] --scale 4 --bits 8 [--words 4] \
        [--params PARAMS] [--datasets Set5] [--no-layers] [--threads N] [--out bench/results/sensitivity_NAME]

With the calibration ``--params`` (default: ``bench.psnr_table``'s cached file in out/params for this model,
scale, bits and words), measures on the benchmark sets: FP; DFSQ as evaluated (weights and activations);
weights quantized with FP activations; activations quantized with FP weights; and, unless ``--no-layers``, each
quantized conv's activations alone (every other layer FP, weights FP). Writes ``OUT.json``, ``OUT.md`` and
``OUT.png`` (the per-layer drops as bars). Each step is one pass over the sets, so the per-layer part costs as
many passes as the model has quantized convs (RDN-S: 42).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from tqdm import tqdm

from bench import ROOT, SCRATCH
from bench.psnr_table import DEFAULT_PARAMS, params_path
from dfsq.data import BENCHMARK_ROOT
from dfsq.quantize import check_params_fit
from golden.args import Parser
from dfsq.weights import weights_option
from golden.errors import UserError, cli_main
from golden.files import check_output_file, write_outputs


def _mean_psnr(net, datasets, scale, root) -> dict:
    from dfsq.evaluate import evaluate_dataset

    return {d: evaluate_dataset(net, d, scale, root, progress=False)["psnr"] for d in datasets}


class _Switch:
    """Per-layer switches on a quantized network: which layers quantize their activations, and FP weights."""

    def __init__(self, qnet, fp_net):
        from dfsq.quantize import QuantConv

        self.convs = [m for m in qnet.modules() if isinstance(m, QuantConv)]
        fp = dict(fp_net.named_modules())
        self.wq = {c.name: c.weight_fq for c in self.convs}
        self.wfp = {c.name: fp[c.name].weight.detach().float().clone() for c in self.convs}
        self.active: set[str] | None = None   # None: every layer quantizes its activations
        for c in self.convs:
            c.quantize_act = self._wrap(c, c.quantize_act)

    def _wrap(self, conv, orig):
        def quantize_act(x):
            return orig(x) if self.active is None or conv.name in self.active else x
        return quantize_act

    def set(self, weights_fp: bool, active: set[str] | None):
        for c in self.convs:
            c.weight_fq = self.wfp[c.name] if weights_fp else self.wq[c.name]
        self.active = active


def render(res: dict) -> str:
    ds = res["datasets"]
    lines = [f"# Sensitivity: {res['model']} x{res['scale']} W{res['bits']}A{res['bits']}, {res['words']} words "
             f"(`python -m bench.sensitivity`)", "",
             f"Params: `{res['params']}`. PSNR-Y and the drop from FP (dB) per set.", "",
             "| configuration | " + " | ".join(ds) + " |", "|---|" + "---|" * len(ds)]
    for name, label in (("fp", "FP"), ("full", "DFSQ (weights and activations)"),
                        ("weights_only", "weights quantized, activations FP"),
                        ("acts_only", "activations quantized, weights FP")):
        row = res["rows"][name]
        lines.append(f"| {label} | " + " | ".join(
            f"{row[d]:.3f}" + ("" if name == "fp" else f" ({row[d] - res['rows']['fp'][d]:+.3f})") for d in ds) + " |")
    if res.get("layers"):
        lines += ["", "Each layer's activations alone quantized (weights FP, every other layer FP), drop from FP; "
                  "sorted, worst first:", "", "| layer | " + " | ".join(ds) + " |", "|---|" + "---|" * len(ds)]
        fp = res["rows"]["fp"]
        order = sorted(res["layers"], key=lambda n: sum(res["layers"][n][d] - fp[d] for d in ds))
        for n in order:
            lines.append(f"| {n} | " + " | ".join(f"{res['layers'][n][d] - fp[d]:+.4f}" for d in ds) + " |")
        total = {d: sum(res["layers"][n][d] - fp[d] for n in res["layers"]) for d in ds}
        lines.append("| sum of the layers alone | " + " | ".join(f"{total[d]:+.4f}" for d in ds) + " |")
    return "\n".join(lines) + "\n"


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ds, fp = res["datasets"], res["rows"]["fp"]
    names = list(res["layers"])
    fig, ax = plt.subplots(figsize=(max(6, 0.22 * len(names)), 3.6))
    w = 0.8 / len(ds)
    for i, d in enumerate(ds):
        ax.bar([j + i * w for j in range(len(names))], [res["layers"][n][d] - fp[d] for n in names], w, label=d)
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
    ax.set_ylabel("PSNR drop (dB)")
    ax.set_title(f"{res['model']} x{res['scale']} W{res['bits']}A{res['bits']}: each layer's activations alone")
    ax.axhline(0, color="k", lw=0.5)
    ax.legend(fontsize=7)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=120, format="png")
    finally:
        plt.close(fig)


def build_parser() -> Parser:
    from golden.spec import ACT_BITS_RANGE, WORDS_RANGE

    ap = Parser(prog="python -m bench.sensitivity", description=__doc__.split("\n")[0])
    ap.choice("--model", ("edsr", "rdn"), default="rdn")
    weights_option(ap)
    ap.choice("--scale", (2, 4), default=4)
    ap.integer("--bits", *ACT_BITS_RANGE, default=8)
    ap.integer("--words", *WORDS_RANGE, default=4)
    ap.input_file("--params", "params", help="calibration artifact (default: bench.psnr_table's cached one)")
    ap.name_list("--datasets", default=["Set5"], help="sets under --data-root (default Set5)")
    ap.input_dir("--data-root", "benchmarks", default=str(BENCHMARK_ROOT))
    ap.flag("--no-layers", help="skip the per-layer passes")
    ap.threads()
    ap.output_stem("--out", (".json", ".md", ".png"),
                   help=f"output stem (default {SCRATCH.relative_to(ROOT)}/sensitivity_MODEL_xS_wBaB)")
    return ap


@cli_main
def main(argv=None):
    args = build_parser().parse_args(argv)
    datasets = args.datasets
    for d in datasets:
        if not (Path(args.data_root) / d / "HR").is_dir():
            raise UserError(f"dataset {d} not found under {args.data_root}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    params = Path(args.params) if args.params else params_path(DEFAULT_PARAMS, args.model, args.scale, args.bits,
                                                               args.words)
    if not params.is_file():
        raise UserError(f"params not found: {params} (run bench.psnr_table for this cell, or pass --params)")
    stem = args.out or str(SCRATCH / f"sensitivity_{args.model}_x{args.scale}_w{args.bits}a{args.bits}")
    outs = [check_output_file(f"{stem}{s}", "--out") for s in (".json", ".md", ".png")]

    from dfsq.calibrate import load_params
    from dfsq.model import load_model
    from dfsq.quantize import quantize_model

    model = load_model(args.model, args.weights, args.scale)
    p = load_params(params)
    check_params_fit(p, model, str(params), act_bits=args.bits, weight_bits=args.bits, words=args.words)
    qnet = quantize_model(model, p, "dfsq")
    sw = _Switch(qnet, model)
    t0 = time.perf_counter()
    rows = {"fp": _mean_psnr(model, datasets, args.scale, args.data_root)}
    for name, wfp, active in (("full", False, None), ("weights_only", False, set()), ("acts_only", True, None)):
        sw.set(wfp, active)
        rows[name] = _mean_psnr(qnet, datasets, args.scale, args.data_root)
        print(f"{name}: " + ", ".join(f"{d} {rows[name][d] - rows['fp'][d]:+.4f}" for d in datasets))
    layers = {}
    if not args.no_layers:
        for c in tqdm(sw.convs, desc="layers alone"):
            sw.set(True, {c.name})
            layers[c.name] = _mean_psnr(qnet, datasets, args.scale, args.data_root)
    shown = params.resolve()
    shown = shown.relative_to(ROOT) if shown.is_relative_to(ROOT) else shown
    res = {"model": args.model, "scale": args.scale, "bits": args.bits, "words": args.words,
           "params": str(shown), "datasets": datasets, "rows": rows, "layers": layers,
           "seconds": round(time.perf_counter() - t0, 1), "threads": torch.get_num_threads()}
    write_outputs({outs[0]: json.dumps(res, indent=1) + "\n", outs[1]: render(res),
                   **({outs[2]: lambda tmp: plot(res, tmp)} if layers else {})})
    print(render(res))
    print(f"wrote {outs[1]}")


if __name__ == "__main__":
    main()
