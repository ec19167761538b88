"""PSNR/SSIM (Y, shave = scale) of EDSR or RDN, quantized or not, or bicubic on the benchmark sets.

    python -m dfsq.evaluate [--model edsr|rdn] --weights PATH|default --scale 2 --datasets Set5,Set14,B100,Urban100 \
        --method fp|bicubic|minmax|dfsq|dfsq-hw|uniform|dfsq-uniform|dfsq-uniform-hw \
        [--act-bits B --weight-bits B --words N --params PARAMS] [--data-root DIR] [--json FILE] [--save-images DIR] \
        [--device cpu|cuda]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .data import BENCHMARK_ROOT, DATASETS, benchmark_pairs
from .device import DEVICES, module_device, resolve_device
from golden.errors import UserError, cli_main
from golden.files import atomic_output, check_output_file
from .imresize import imresize
from .model import ARCHS
from .metrics import psnr_y, ssim_y

METHODS = ("fp", "bicubic", "minmax", "dfsq", "dfsq-hw", "uniform", "dfsq-uniform", "dfsq-uniform-hw")
#: Methods that run the golden integer datapath (they take --scale-bits, --denorm, --sigma-bits, --shift-bits).
HW_METHODS = ("dfsq-hw", "dfsq-uniform-hw")


@torch.no_grad()
def upscale(model, lr: np.ndarray) -> np.ndarray:
    """Run ``model`` on a uint8 (H, W, 3) LR image (on the model's device); the output is rounded and clipped to
    uint8, as EDSR does."""
    x = torch.from_numpy(np.ascontiguousarray(lr)).permute(2, 0, 1)[None].float().to(module_device(model))
    y = model(x)[0].clamp(0, 255).round().byte().permute(1, 2, 0)
    return y.cpu().numpy()


def save_sr(sr: np.ndarray, save_dir, dataset: str, stem: str) -> Path:
    """Write a super-resolved uint8 image to ``save_dir/dataset/stem.png`` atomically."""
    from PIL import Image

    from golden.files import atomic_output

    path = Path(save_dir) / dataset / f"{stem}.png"
    with atomic_output(path, ".png") as tmp:
        Image.fromarray(np.ascontiguousarray(sr)).save(tmp, format="PNG")
    return path


def evaluate_dataset(model, name: str, scale: int, root=BENCHMARK_ROOT, progress: bool = True,
                     save_dir=None, part: tuple[int, int] | None = None) -> dict:
    """Mean PSNR-Y and SSIM-Y over a benchmark set; ``model`` None means bicubic upscaling. With ``save_dir``,
    every super-resolved image is also written to ``save_dir/<set>/<stem>.png``; ``part=(k, n)``: only that part
    of the set (see :func:`dfsq.data.benchmark_pairs`)."""
    ps, ss = [], []
    items = list(benchmark_pairs(name, scale, root, part))
    for stem, hr, lr in tqdm(items, desc=f"{name} x{scale}", disable=not progress, leave=False):
        sr = imresize(lr, scale) if model is None else upscale(model, lr)
        if save_dir is not None:
            save_sr(sr, save_dir, name, stem)
        ps.append(psnr_y(sr, hr, scale))
        ss.append(ssim_y(sr, hr, scale))
    return {"psnr": float(np.mean(ps)), "ssim": float(np.mean(ss)), "images": len(items)}


def build_model(args):
    """The network for ``args.method`` (None for bicubic)."""
    if args.method == "bicubic":
        return None
    from .model import load_model

    model = load_model(getattr(args, "model", "edsr"), args.weights, args.scale)
    if args.method == "fp":
        return model
    if args.method in ("dfsq-uniform", "dfsq-uniform-hw"):
        from .uniform import build_dfsq_uniform  # noqa: PLC0415 - DFSQ normalization, uniform points

        return build_dfsq_uniform(model, args)
    if args.method == "uniform":
        from .uniform import build_uniform  # noqa: PLC0415 - per-channel MSE-clipped uniform baseline

        return build_uniform(model, args)
    from .quantize import build_quantized  # noqa: PLC0415 - quantization is optional here

    qmodel = build_quantized(model, args)
    if args.method == "dfsq-hw":
        from .hw_mode import apply_hw_mode  # noqa: PLC0415

        apply_hw_mode(qmodel, scale_bits=args.scale_bits, denorm=args.denorm, sigma_bits=args.sigma_bits,
                      shift_bits=args.shift_bits)
    return qmodel


def add_quant_args(ap: argparse.ArgumentParser) -> None:
    from golden.spec import DEFAULT_SCALE_BITS, add_denorm_args  # noqa: PLC0415

    ap.add_argument("--act-bits", type=int, default=4)
    ap.add_argument("--weight-bits", type=int, default=4)
    ap.add_argument("--words", type=int, default=4, help="DFSQ universal-set words (2..5)")
    ap.add_argument("--params", help="calibration artifact from dfsq.calibrate (dfsq, dfsq-hw)")
    ap.add_argument("--calib", help="calibration image folder when --params is not given")
    ap.add_argument("--images", type=int, default=32, help="calibration images when --params is not given")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scale-bits", type=int, default=None,
                    help=f"fixed-point width of sigma/mu in the integer datapath (dfsq-hw, dfsq-uniform-hw; default "
                         f"{DEFAULT_SCALE_BITS})")
    add_denorm_args(ap, " of the integer datapath (dfsq-hw, dfsq-uniform-hw)")


def check_quant_args(args) -> None:
    """Reject flags the chosen ``--method`` would ignore or clamp (``--scale-bits`` is for dfsq-hw only)."""
    from golden.spec import DEFAULT_SCALE_BITS, SCALE_BITS_RANGE, SpecError, denorm_format  # noqa: PLC0415

    if args.scale_bits is None:
        args.scale_bits = DEFAULT_SCALE_BITS
    elif getattr(args, "method", "dfsq-hw") not in HW_METHODS:
        raise UserError(f"--scale-bits applies to --method {' and '.join(HW_METHODS)} only, not {args.method}")
    elif not SCALE_BITS_RANGE[0] <= args.scale_bits <= SCALE_BITS_RANGE[1]:
        raise UserError(f"--scale-bits must be in {SCALE_BITS_RANGE[0]}..{SCALE_BITS_RANGE[1]}, got {args.scale_bits}")
    method = getattr(args, "method", "dfsq-hw")
    given = [getattr(args, k, None) for k in ("denorm", "sigma_bits", "shift_bits")]
    if any(v is not None for v in given) and method not in HW_METHODS:
        raise UserError(f"--denorm, --sigma-bits and --shift-bits apply to --method {' and '.join(HW_METHODS)} "
                        f"only, not {method}")
    try:
        fmt = denorm_format(*given)
    except SpecError as exc:
        raise UserError(str(exc)) from None
    args.denorm, args.sigma_bits, args.shift_bits = fmt["denorm"], fmt["sigma_bits"], fmt["shift_bits"]


@cli_main
def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m dfsq.evaluate", description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="edsr", choices=ARCHS, help="network (default edsr)")
    ap.add_argument("--weights", default="default", help="checkpoint path, or 'default' for the embedded one")
    ap.add_argument("--scale", type=int, default=2, choices=(2, 4))
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--method", default="fp", choices=METHODS)
    ap.add_argument("--data-root", default=str(BENCHMARK_ROOT), help="folder holding Set5/, Set14/, B100/, Urban100/")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--save-images", metavar="DIR",
                    help="also write every super-resolved image to DIR/<set>/<name>.png")
    ap.add_argument("--device", default="cpu", choices=DEVICES,
                    help="where the network runs (cuda: full float32; not the hardware-exact methods)")
    add_quant_args(ap)
    args = ap.parse_args(argv)
    check_quant_args(args)
    if args.device != "cpu" and args.method in HW_METHODS:
        raise UserError(f"--method {args.method} runs the NumPy golden datapath on the CPU; "
                        f"drop --device {args.device}")
    device = resolve_device(args.device)
    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    if not names:
        raise UserError(f"--datasets selects no dataset: {args.datasets!r}")
    if args.json:
        check_output_file(args.json, "--json")
    for n in names:
        if not (Path(args.data_root) / n / "HR").is_dir():
            raise UserError(f"dataset {n} not found: expected {Path(args.data_root) / n / 'HR'}")
    if args.save_images:
        from golden.files import check_output_dir

        check_output_dir(args.save_images, "--save-images folder")
    model = build_model(args)
    if model is not None:
        model = model.to(device)
    results = {}
    for n in names:
        results[n] = evaluate_dataset(model, n, args.scale, args.data_root, save_dir=args.save_images)
    label = args.method if args.method in ("fp", "bicubic") else f"{args.method} W{args.weight_bits}A{args.act_bits}"
    print(f"{'dataset':<10} {'PSNR-Y':>8} {'SSIM-Y':>8}   {args.model} x{args.scale} {label}")
    for n, r in results.items():
        print(f"{n:<10} {r['psnr']:8.3f} {r['ssim']:8.4f}")
    if args.json:
        out = {"model": args.model, "scale": args.scale, "method": args.method, "weights": str(args.weights),
               "results": results}
        if args.method not in ("fp", "bicubic"):
            out.update(act_bits=args.act_bits, weight_bits=args.weight_bits, words=args.words)
        if device.type != "cpu":
            out["device"] = device.type
        with atomic_output(args.json) as tmp:
            tmp.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
