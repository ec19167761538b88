"""PSNR/SSIM (Y, shave = scale) of EDSR or RDN, quantized or not, or bicubic on the benchmark sets.

    python -m dfsq.evaluate [--model edsr|rdn] --weights PATH|default --scale 2 --datasets Set5,Set14,B100,Urban100 \
        --method fp|bicubic|minmax|dfsq|dfsq-hw|dfsq-int|uniform|dfsq-uniform|dfsq-uniform-hw|brecq|qdrop|dfsq-adaround \
        [--act-bits B --weight-bits B --words N --params PARAMS] [--data-root DIR] [--json FILE] [--save-images DIR] \
        [--device cpu|cuda] [--fmap-bits 16 [--fmap-frac F]]

``dfsq-int`` runs the whole quantized body on integers (contract 2, dfsq.int_mode): feature maps in fixed point
(``--fmap-bits``, fraction bits from the calibration unless ``--fmap-frac``), integer statistics, threshold codes,
the engine's accumulator, requantization, ReLU and residual adds; it prints the feature-map format and how many
values saturated.

``brecq``, ``qdrop`` and ``dfsq-adaround`` evaluate a reconstruction (``python -m dfsq.reconstruct``) given as
``--params``: a reconstruction file (brecq, qdrop: static uniform activations, AdaRound weights) or a DFSQ params
file with reconstructed weight rounding (dfsq-adaround; ``--method dfsq`` and ``dfsq-hw`` read it too).
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .data import BENCHMARK_ROOT, DATASETS, benchmark_pairs
from .device import DEVICES, module_device, resolve_device
from golden.args import Parser, When
from golden.errors import UserError, cli_main
from golden.files import atomic_output, remove_dir_on_failure
from .imresize import imresize
from .model import ARCHS
from .metrics import psnr_y, ssim_y
from .weights import weights_option

METHODS = ("fp", "bicubic", "minmax", "dfsq", "dfsq-hw", "dfsq-int", "uniform", "dfsq-uniform", "dfsq-uniform-hw",
           "brecq", "qdrop", "dfsq-adaround")
#: Methods that run a network (they take --weights; bicubic does not).
NETWORK_METHODS = tuple(m for m in METHODS if m != "bicubic")
#: Quantized methods (they take --act-bits and --weight-bits).
QUANT_METHODS = tuple(m for m in METHODS if m not in ("fp", "bicubic"))
#: Methods that read a dfsq.calibrate params file, or calibrate when none is given (--params, --words).
PARAMS_METHODS = ("minmax", "dfsq", "dfsq-hw", "dfsq-int")
#: Methods that calibrate on images (--calib, --images, --seed; not when --params is given).
CALIB_METHODS = ("minmax", "dfsq", "dfsq-hw", "dfsq-int", "uniform")
#: Methods whose network is a block reconstruction read from --params (python -m dfsq.reconstruct).
RECON_METHODS = ("brecq", "qdrop", "dfsq-adaround")
#: Methods that run the golden integer datapath (they take --scale-bits, --denorm, --sigma-bits, --shift-bits).
HW_METHODS = ("dfsq-hw", "dfsq-int", "dfsq-uniform-hw")


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


def evaluate_images(model, name: str, scale: int, root=BENCHMARK_ROOT, progress: bool = True, save_dir=None,
                    indices=None) -> tuple[list[float], list[float]]:
    """Per-image PSNR-Y and SSIM-Y of a benchmark set, in its sorted order (``indices``: only those images, as
    :func:`dfsq.data.benchmark_pairs`); ``model`` None means bicubic upscaling. With ``save_dir``, every
    super-resolved image is also written to ``save_dir/<set>/<stem>.png``."""
    ps, ss = [], []
    items = list(benchmark_pairs(name, scale, root, indices))
    for stem, hr, lr in tqdm(items, desc=f"{name} x{scale}", disable=not progress, leave=False):
        sr = imresize(lr, scale) if model is None else upscale(model, lr)
        if save_dir is not None:
            save_sr(sr, save_dir, name, stem)
        ps.append(psnr_y(sr, hr, scale))
        ss.append(ssim_y(sr, hr, scale))
    return ps, ss


def summarize(ps: list[float], ss: list[float]) -> dict:
    """A set's result from its per-image values in the set's order (the means of :func:`evaluate_dataset`, also
    when a sweep measured the images in several tasks)."""
    return {"psnr": float(np.mean(ps)), "ssim": float(np.mean(ss)), "images": len(ps)}


def evaluate_dataset(model, name: str, scale: int, root=BENCHMARK_ROOT, progress: bool = True,
                     save_dir=None) -> dict:
    """Mean PSNR-Y and SSIM-Y over a benchmark set (:func:`evaluate_images`, :func:`summarize`)."""
    return summarize(*evaluate_images(model, name, scale, root, progress, save_dir))


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
    if args.method in RECON_METHODS:
        return build_reconstructed(model, args)
    from .quantize import build_quantized  # noqa: PLC0415 - quantization is optional here

    qmodel = build_quantized(model, args)
    if args.method == "dfsq-hw":
        from .hw_mode import apply_hw_mode  # noqa: PLC0415

        apply_hw_mode(qmodel, scale_bits=args.scale_bits, denorm=args.denorm, sigma_bits=args.sigma_bits,
                      shift_bits=args.shift_bits)
    if args.method == "dfsq-int":
        from .int_mode import IntNetwork  # noqa: PLC0415

        return IntNetwork(qmodel, fmap_bits=args.fmap_bits, fmap_frac=args.fmap_frac, scale_bits=args.scale_bits,
                          denorm=args.denorm, sigma_bits=args.sigma_bits, shift_bits=args.shift_bits)
    return qmodel


def build_reconstructed(model, args):
    """The network of a reconstruction file (``--method brecq|qdrop``) or of a DFSQ params file with
    reconstructed weight rounding (``dfsq-adaround``), checked against the model, scale, method and bits."""
    if not getattr(args, "params", None):
        raise UserError(f"--method {args.method} needs --params: a file of python -m dfsq.reconstruct --method "
                        f"{args.method}")
    if args.method == "dfsq-adaround":
        from .calibrate import load_params  # noqa: PLC0415
        from .quantize import build_quantized  # noqa: PLC0415

        if "reconstruction" not in load_params(args.params).config:
            raise UserError(f"{args.params} is a DFSQ calibration without reconstructed weights: evaluate it with "
                            "--method dfsq, or make one with python -m dfsq.reconstruct --method dfsq-adaround")
        from argparse import Namespace  # noqa: PLC0415

        return build_quantized(model, Namespace(**{**vars(args), "method": "dfsq"}))
    from .recon_file import check_recon, load_recon, quantize_static  # noqa: PLC0415

    result = load_recon(args.params)
    check_recon(result, model, str(args.params), method=args.method, act_bits=args.act_bits,
                weight_bits=args.weight_bits)
    return quantize_static(model, result, str(args.params))


def add_quant_args(ap) -> None:
    """The quantization options of ``dfsq.evaluate`` (each applies to the methods that use it)."""
    from golden.spec import (ACT_BITS_RANGE, DEFAULT_SCALE_BITS, SCALE_BITS_RANGE, WEIGHT_BITS_RANGE,  # noqa: PLC0415
                             WORDS_RANGE, add_denorm_args)

    quant, hw = When("method", *QUANT_METHODS), When("method", *HW_METHODS)
    ap.integer("--act-bits", *ACT_BITS_RANGE, default=4, when=quant)
    ap.integer("--weight-bits", *WEIGHT_BITS_RANGE, default=4, when=quant)
    ap.integer("--words", *WORDS_RANGE, default=4, when=When("method", *PARAMS_METHODS),
               help="DFSQ universal-set words (2..5)")
    ap.input_file("--params", "params", when=When("method", *PARAMS_METHODS, *RECON_METHODS),
                  help=f"calibration artifact from dfsq.calibrate ({', '.join(PARAMS_METHODS)}), or a reconstruction "
                       f"from dfsq.reconstruct ({', '.join(RECON_METHODS)}; required)")
    calibrating = (When("method", *CALIB_METHODS), When("params", None))
    ap.input_dir("--calib", "images", when=calibrating,
                 help="calibration image folder when --params is not given")
    ap.integer("--images", 1, 100_000, default=32, when=calibrating,
               help="calibration images when --params is not given")
    ap.seed(when=calibrating, help="seed of the calibration (k-means restarts)")
    ap.integer("--scale-bits", *SCALE_BITS_RANGE, default=None, when=hw,
               help=f"fixed-point width of sigma/mu in the integer datapath ({', '.join(HW_METHODS)}; default "
                    f"{DEFAULT_SCALE_BITS})")
    add_denorm_args(ap, f" of the integer datapath ({', '.join(HW_METHODS)})", when=hw)
    from golden.int_spec import DEFAULT_FMAP_BITS, FMAP_BITS_RANGE  # noqa: PLC0415

    ints = When("method", "dfsq-int")
    ap.integer("--fmap-bits", *FMAP_BITS_RANGE, default=DEFAULT_FMAP_BITS, when=ints,
               help=f"dfsq-int: width of the fixed-point feature maps between layers (default {DEFAULT_FMAP_BITS})")
    ap.integer("--fmap-frac", 0, FMAP_BITS_RANGE[1] - 1, default=None, when=ints,
               help="dfsq-int: fraction bits of the feature maps (default: from the calibrated range, "
                    "golden.int_spec.fmap_frac_for)")


def check_quant_args(args) -> None:
    """Fill the defaults of the integer datapath's options and check their combination."""
    from golden.spec import DEFAULT_SCALE_BITS, denorm_format  # noqa: PLC0415

    if args.scale_bits is None:
        args.scale_bits = DEFAULT_SCALE_BITS
    fmt = denorm_format(args.denorm, args.sigma_bits, args.shift_bits)
    args.denorm, args.sigma_bits, args.shift_bits = fmt["denorm"], fmt["sigma_bits"], fmt["shift_bits"]
    if getattr(args, "fmap_frac", None) is not None and args.fmap_frac >= args.fmap_bits:
        raise UserError(f"--fmap-frac must be below --fmap-bits ({args.fmap_bits}), got {args.fmap_frac}")


def build_parser() -> Parser:
    ap = Parser(prog="python -m dfsq.evaluate", description=__doc__.split("\n")[0])
    ap.choice("--model", ARCHS, default="edsr", help="network (default edsr)")
    weights_option(ap, when=When("method", *NETWORK_METHODS))
    ap.choice("--scale", (2, 4), default=2)
    ap.name_list("--datasets", default=list(DATASETS), help=f"sets under --data-root (default {','.join(DATASETS)})")
    ap.choice("--method", METHODS, default="fp")
    ap.input_dir("--data-root", "benchmarks", default=str(BENCHMARK_ROOT),
                 help="folder holding Set5/, Set14/, B100/, Urban100/")
    ap.output_file("--json", help="write the results here")
    ap.output_dir("--save-images", metavar="DIR", help="also write every super-resolved image to DIR/<set>/<name>.png")
    ap.choice("--device", DEVICES, default="cpu",
              help="where the network runs (cuda: full float32; not the hardware-exact methods)")
    add_quant_args(ap)
    return ap


@cli_main
def main(argv=None):
    args = build_parser().parse_args(argv)
    check_quant_args(args)
    if args.device != "cpu" and args.method in HW_METHODS:
        raise UserError(f"--method {args.method} runs the NumPy golden datapath on the CPU; "
                        f"drop --device {args.device}")
    device = resolve_device(args.device)
    names = args.datasets
    for n in names:
        if not (Path(args.data_root) / n / "HR").is_dir():
            raise UserError(f"dataset {n} not found: expected {Path(args.data_root) / n / 'HR'}")
    model = build_model(args)
    if model is not None:
        model = model.to(device)
    results = {}
    saving = remove_dir_on_failure(args.save_images, "--save-images") if args.save_images else \
        contextlib.nullcontext()
    with saving:   # a run that fails removes the images it wrote (of every set)
        for n in names:
            results[n] = evaluate_dataset(model, n, args.scale, args.data_root, save_dir=args.save_images)
    label = args.method if args.method in ("fp", "bicubic") else f"{args.method} W{args.weight_bits}A{args.act_bits}"
    print(f"{'dataset':<10} {'PSNR-Y':>8} {'SSIM-Y':>8}   {args.model} x{args.scale} {label}")
    for n, r in results.items():
        print(f"{n:<10} {r['psnr']:8.3f} {r['ssim']:8.4f}")
    integer = model.report() if hasattr(model, "report") else None
    if integer is not None:
        print(model.summary())
    if args.json:
        out = {"model": args.model, "scale": args.scale, "method": args.method, "weights": str(args.weights),
               "results": results}
        if args.method not in ("fp", "bicubic"):
            out.update(act_bits=args.act_bits, weight_bits=args.weight_bits, words=args.words)
        if device.type != "cpu":
            out["device"] = device.type
        if integer is not None:
            out["integer"] = integer
        with atomic_output(args.json) as tmp:
            tmp.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
