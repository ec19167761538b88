"""PSNR cost of the "split" de-normalization formats (low-bit sigma, mean term out of the lanes) against fake-quant.

    python -m bench.denorm_format [--weights default] [--scale 2] [--params P] [--datasets Set5,Set14] \
        [--formats fused,1:0,2:0,4:0,1:4,2:3,4:3,8:3] [--act-bits 4 --weight-bits 4 --words 4] [--name N]

A format ``m:s`` is ``DatapathSpec(denorm="split", sigma_bits=m, shift_bits=s)``: an m-bit sigma mantissa per
(sample, channel) and an s-bit alignment shift (s = 0: one exponent per (layer, sample)); ``fused`` is the
datapath with 24-bit sigma_m and mu_m in every lane. Every image of every dataset runs through fake-quant DFSQ and
through the golden integer datapath (``dfsq.hw_mode``) in each format; the table gives the mean PSNR-Y difference
per dataset, the plot the PSNR loss against m. Also times fake-quant against hardware-exact (the same images, one
after the other, in each task; the images run as Dask tasks, :mod:`bench.cluster`). Writes ``<out>/<name>.json``, ``.md`` and ``.png`` (default ``build/bench/``).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from bench import ROOT, SCRATCH
from golden.args import Parser, plain_name
from golden.errors import UserError, cli_main
from golden.files import check_output_file, write_outputs
from golden.spec import SHIFT_BITS_RANGE, SIGMA_BITS_RANGE, DatapathSpec, SpecError
TOLERANCE_DB = 0.01


def parse_formats(text: str) -> list[str]:
    """``fused`` and ``m:s`` items, validated (UserError)."""
    out = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        if item == "fused":
            out.append(item)
            continue
        try:
            m, s = (int(v) for v in item.split(":"))
        except ValueError:
            raise UserError(f"{item!r} is neither 'fused' nor 'm:s' (for example 4:3)") from None
        if not (SIGMA_BITS_RANGE[0] <= m <= SIGMA_BITS_RANGE[1] and SHIFT_BITS_RANGE[0] <= s <= SHIFT_BITS_RANGE[1]):
            raise UserError(f"{item!r}: sigma bits must be in {SIGMA_BITS_RANGE[0]}..{SIGMA_BITS_RANGE[1]}"
                            f", shift bits in {SHIFT_BITS_RANGE[0]}..{SHIFT_BITS_RANGE[1]}")
        out.append(f"{m}:{s}")
    if not out:
        raise UserError("selects no format")
    return list(dict.fromkeys(out))


def format_kwargs(fmt: str) -> dict:
    if fmt == "fused":
        return {"denorm": "fused"}
    m, s = (int(v) for v in fmt.split(":"))
    return {"denorm": "split", "sigma_bits": m, "shift_bits": s}


def format_spec(fmt: str, args, channels: int = 64) -> DatapathSpec:
    return DatapathSpec(words=args.words, act_bits=args.act_bits, weight_bits=args.weight_bits, channels=channels,
                        **format_kwargs(fmt))


def run(args) -> dict:
    from bench.scale_bits import sweep_images

    formats = parse_formats(args.formats) if isinstance(args.formats, str) else args.formats
    for f in formats:
        try:
            format_spec(f, args)
        except SpecError as exc:
            raise UserError(f"--formats {f}: {exc}") from None
    done = sweep_images(args, [(f, format_kwargs(f)) for f in formats], arch=args.model)
    rows, timings = done["rows"], done["seconds"]
    summary = []
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    for f in formats:
        spec = format_spec(f, args)
        for ds in datasets:
            rs = [r for r in rows if r["dataset"] == ds]
            d = np.array([r["hw"][f]["psnr"] - r["psnr_fq"] for r in rs])
            summary.append({"format": f, **format_kwargs(f), "dataset": ds, "images": len(rs),
                            "psnr_fq": float(np.mean([r["psnr_fq"] for r in rs])),
                            "psnr_hw": float(np.mean([r["hw"][f]["psnr"] for r in rs])),
                            "delta_mean": float(d.mean()), "delta_max_abs_image": float(np.abs(d).max()),
                            "ssim_delta": float(np.mean([r["hw"][f]["ssim"] - r["ssim_fq"] for r in rs])),
                            "term_bits": spec.term_bits, "acc_bits": spec.acc_bits})
    ok = [f for f in formats if f != "fused"
          and all(abs(s["delta_mean"]) <= TOLERANCE_DB for s in summary if s["format"] == f)]
    # cheapest: fewest mantissa bits (the lane multiplier), then fewest shift bits (the barrel shifter)
    cheapest = min(ok, key=lambda f: tuple(int(v) for v in f.split(":"))) if ok else None
    return {"config": {"model": args.model, "weights": str(args.weights), "scale": args.scale, "params": args.params,
                       "act_bits": args.act_bits, "weight_bits": args.weight_bits, "words": args.words,
                       "datasets": ",".join(args.datasets), "limit": args.limit, "formats": formats},
            "summary": summary, "within_tolerance": ok, "cheapest_within_tolerance": cheapest,
            "tolerance_db": TOLERANCE_DB, "images": rows, "seconds": timings,
            "torch_threads": done["threads"]}


def markdown(res: dict) -> str:
    c = res["config"]
    out = ["# PSNR cost of the de-normalization format (split: m-bit sigma, s-bit shift)", "",
           f"{c['model']} x{c['scale']}, W{c['weight_bits']}A{c['act_bits']}, words {c['words']}, weights "
           f"`{c['weights']}`, params `{c['params']}`. Hardware-exact DFSQ (golden integer datapath) against "
           f"fake-quant DFSQ with the same points; delta = hw - fake-quant (dB, Y channel). Format `m:s` = split "
           f"de-normalization with an m-bit sigma mantissa and an s-bit per-channel alignment shift (s = 0: one "
           f"exponent per layer and sample); `fused` = 24-bit sigma and mean in every lane.", "",
           "| format | lane term bits | acc bits | dataset | images | PSNR fake-quant | PSNR hw | delta mean | "
           "max abs delta (one image) | SSIM hw - fq |",
           "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for s in res["summary"]:
        out.append(f"| {s['format']} | {s['term_bits']} | {s['acc_bits']} | {s['dataset']} | {s['images']} | "
                   f"{s['psnr_fq']:.4f} | {s['psnr_hw']:.4f} | {s['delta_mean']:+.4f} | "
                   f"{s['delta_max_abs_image']:.4f} | {s['ssim_delta']:+.5f} |")
    ch = res["cheapest_within_tolerance"]
    out += ["", f"Within {res['tolerance_db']} dB of fake-quant on every dataset measured: "
            f"{', '.join(res['within_tolerance']) or 'none'}; the cheapest (fewest mantissa bits, then shift bits): "
            f"**{ch or 'none'}**.", "",
            "Time (summed over the tasks, same images): " + ", ".join(f"{k} {v:.1f} s" for k, v in res["seconds"].items())
            + f" (torch threads {res['torch_threads']}).", "",
            "Reproduce: `python -m bench.denorm_format " + res.get("argv", "") + "`", ""]
    return "\n".join(out)


def plot(res: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    datasets = list(dict.fromkeys(s["dataset"] for s in res["summary"]))
    shifts = sorted({s["shift_bits"] for s in res["summary"] if s["denorm"] == "split"})
    styles = ["o-", "s--", "^-.", "d:", "v-", "x--"]
    for i, ds in enumerate(datasets):
        for j, sb in enumerate(shifts):
            ss = sorted((s for s in res["summary"] if s["dataset"] == ds and s["denorm"] == "split"
                         and s["shift_bits"] == sb), key=lambda s: s["sigma_bits"])
            if ss:
                ax.plot([s["sigma_bits"] for s in ss], [-s["delta_mean"] for s in ss], styles[j % len(styles)],
                        color=f"C{i}", label=f"{ds}, shift bits {sb}")
        fused = [s for s in res["summary"] if s["dataset"] == ds and s["denorm"] == "fused"]
        if fused:
            ax.axhline(-fused[0]["delta_mean"], color=f"C{i}", lw=0.8, ls=":", label=f"{ds}, fused (24-bit)")
    ax.axhline(TOLERANCE_DB, color="grey", ls="--", lw=1, label=f"{TOLERANCE_DB} dB")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_xlabel("sigma mantissa bits m")
    ax.set_ylabel("PSNR fake-quant - PSNR hw (dB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=120, format="png")
    finally:
        plt.close(fig)


def _formats(text: str) -> list[str]:
    from types import SimpleNamespace

    formats = parse_formats(text)
    for f in formats:
        try:
            format_spec(f, SimpleNamespace(words=4, act_bits=4, weight_bits=4))   # widths of the format itself
        except SpecError as exc:
            raise UserError(f"{f}: {exc}") from None
    return formats


def build_parser() -> Parser:
    from bench.scale_bits import add_run_args
    from golden.spec import ACT_BITS_RANGE, WEIGHT_BITS_RANGE, WORDS_RANGE

    ap = Parser(prog="python -m bench.denorm_format", description=__doc__.split("\n")[0])
    ap.choice("--model", ("edsr", "rdn"), default="edsr")
    add_run_args(ap)
    ap.text("--formats", _formats, default=parse_formats("fused,1:0,2:0,4:0,8:0,1:4,2:3,3:3,4:3,6:3,8:3"),
            help="fused and m:s formats (default fused,1:0,2:0,4:0,8:0,1:4,2:3,3:3,4:3,6:3,8:3)")
    ap.integer("--act-bits", *ACT_BITS_RANGE, default=4)
    ap.integer("--weight-bits", *WEIGHT_BITS_RANGE, default=4)
    ap.integer("--words", *WORDS_RANGE, default=4)
    ap.output_dir("--out", default=str(SCRATCH), help=f"output folder (default {SCRATCH.relative_to(ROOT)}/; the "
                                                     f"documented results are in bench/results/)")
    ap.text("--name", plain_name, default="denorm_format", help="output file stem")
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
