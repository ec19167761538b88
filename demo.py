"""`make demo`: the whole flow on the embedded defaults, from a fresh clone, in a few minutes.

    python -m demo [--model edsr|rdn] [--weights default] [--params PATH] [--crop Y,X,H,W]
        [--compare-crop Y,X,H,W] [--check-layers N|all] [--tiles N] [--no-rtl]
        [--out out/demo (out/demo-rdn with --model rdn)]

1. the embedded x2 checkpoint: EDSR-baseline (weights/edsr_baseline_x2.pt, the default) or, with
   ``--model rdn``, the embedded RDN (config S, weights/rdn_s_x2.pt);
2. the embedded DFSQ calibration (weights/dfsq_x2_a4w4_words4.npz for EDSR, weights/dfsq_rdn_s_x2_a4w4_words4.npz
   for RDN: 4-bit activations and weights, 4 words), or, when it is absent, a quick calibration on images that
   ship with scikit-image;
3. PSNR/SSIM (Y) of bicubic, FP and DFSQ on scikit-image's 'astronaut' (HR 512x512, x2);
4. an export of all quantized layers (EDSR 32, RDN-S 42) for an LR crop of that image, checked by the golden
   model;
5. Verilog of the conv engine and the MAC for that configuration (in <out>/rtl);
6. Icarus simulation of tiles of 4 layers spread over the body (first and last included; ``--check-layers all``:
   every layer), every output compared bit for bit with the golden model;
7. the MAC's area from Yosys;
8. the whole quantized body of a 16x16 LR crop through the accelerator (hw.units.accelerator, 16 lanes) under
   Verilator (sim.network: every layer bit for bit against the golden integer network; its model is built once, in
   a background process that starts after step 2 and runs beside steps 3 to 7), and <out>/comparison.png: one crop
   (the astronaut's eye and smile) as HR, bicubic, FP, DFSQ
   fake-quant, DFSQ hardware-exact and, in its centre, the accelerator's, each labelled with its PSNR-Y;
9. a summary: bit-exact yes/no with counts, the PSNR figures, the RTL crop, the MAC's area.
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

from golden.args import Parser
from dfsq.weights import weights_option
from golden.errors import UserError, cli_main
from golden.files import atomic_output, remove_dir_on_failure

ROOT = Path(__file__).resolve().parent
DEFAULT_PARAMS = ROOT / "weights" / "dfsq_x2_a4w4_words4.npz"
DEFAULT_OUT = {"edsr": "out/demo", "rdn": "out/demo-rdn"}
DEFAULT_PARAMS_BY_MODEL = {"edsr": DEFAULT_PARAMS, "rdn": ROOT / "weights" / "dfsq_rdn_s_x2_a4w4_words4.npz"}


DEFAULT_CROP = (96, 96, 48, 48)   # LR pixels: the astronaut's face and helmet edge
COMPARE_CROP = (170, 68, 32, 32)   # LR pixels of the comparison picture: the embroidered mission patch, the most
                                   # textured 32x32 of the image (the differences between methods show there); the
                                   # hardware-exact model runs the golden datapath, about 15 ms of CPU per LR pixel
RTL_CROP = (178, 76, 16, 16)       # its centre, through the whole accelerator under Verilator (sim.network)
RTL_LANES = 16


def rtl_model(args, params_path: Path) -> dict:
    """The accelerator the RTL panel runs on (sim.network's model, params, lanes, memory and work folder): what the
    background build (:func:`start_rtl_build`) builds and step 8 (:func:`rtl_panel`) reuses."""
    from sim.network import DEFAULT_WORK

    return dict(model=args.model, weights=str(args.weights), params=str(params_path), lanes=RTL_LANES,
                max_pixels=RTL_CROP[2] * RTL_CROP[3], work_dir=DEFAULT_WORK)
CHECK_LAYERS = 4                   # step 6 (Icarus, about 2 s of CPU per layer at 64 lanes): layers spread over the
                                   # body; step 8 runs every layer through the whole accelerator


def spread_layers(n: int, k) -> list[int]:
    """``k`` layer indices of ``0..n-1`` spread evenly, first and last included (every layer when ``k`` is 'all'
    or at least ``n``)."""
    if k == "all" or k >= n:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)}) if k > 1 else [0]


def _step(n: int, text: str) -> float:
    print(f"\n[{n}/8] {text}", flush=True)
    return time.perf_counter()


def _done(t0: float, text: str = "") -> None:
    print(f"      {text}{' ' if text else ''}({time.perf_counter() - t0:.1f} s)", flush=True)


def write_comparison(model, qmodel, hr, lr, crop, path: Path, extra=None) -> Path:
    """The picture of ``crop`` (LR y, x, h, w): HR, bicubic, FP, DFSQ fake-quant, DFSQ hardware-exact (the golden
    integer datapath) and the ``extra`` panels (the RTL's crop), each labelled with its PSNR-Y (:mod:`dfsq.compare`)."""
    import copy

    from dfsq.compare import comparison_png
    from dfsq.hw_mode import apply_hw_mode

    hw = apply_hw_mode(copy.deepcopy(qmodel))
    comparison_png(hr, lr, 2, {"FP": model, "DFSQ fake-quant": qmodel, "DFSQ hardware-exact": hw}, crop, path,
                   margin=6, zoom=3, extra=extra)
    return path


def _build_in_background(kwargs: dict) -> None:
    """The body of :func:`start_rtl_build`'s process: sim.network.prebuild; SIGTERM stops its compilers (sim.native
    kills the make process group when the exception passes); a failed build is left to step 8 to redo and report."""
    import signal
    import sys

    from sim.network import prebuild

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with contextlib.suppress(Exception):
        prebuild(**kwargs)


def start_rtl_build(args, params_path: Path):
    """A process that generates and builds the RTL panel's Verilator model (sim.network.prebuild, one compiler job)
    while steps 3 to 7 run on the other core; None with --no-rtl or without Verilator (step 8 says why). Stop it with
    :func:`stop_rtl_build`."""
    if args.no_rtl:
        return None
    from sim.runner import SimulatorNotFound, check_simulator

    try:
        check_simulator("verilator")
    except SimulatorNotFound:
        return None
    import multiprocessing

    kwargs = dict(rtl_model(args, params_path), jobs=1)
    proc = multiprocessing.get_context("spawn").Process(target=_build_in_background, args=(kwargs,), daemon=True)
    proc.start()
    return proc


def stop_rtl_build(proc) -> None:
    """Stop the build of :func:`start_rtl_build` if it still runs (a demo that failed before step 8)."""
    if proc is not None and proc.is_alive():
        proc.terminate()
        proc.join()


def rtl_panel(args, params_path: Path, lr, out: Path, build=None):
    """(report, panel) of the quantized body on ``RTL_CROP`` through the whole accelerator under Verilator
    (sim.network: every layer compared with the golden integer network); (None, None) without Verilator.
    ``build``: the process of :func:`start_rtl_build` (waited for; a failed build is redone, and reported, by
    sim.network)."""
    import numpy as np
    from PIL import Image

    from sim.runner import SimulatorNotFound, check_simulator

    try:
        check_simulator("verilator")
    except SimulatorNotFound as exc:
        print(f"      RTL panel skipped: {exc}")
        return None, None
    from sim.network import run_network

    if build is not None:
        build.join()
    rep = run_network(image=lr, crop=RTL_CROP, out=out / "rtl_crop", quiet=True, **rtl_model(args, params_path))
    sr = np.asarray(Image.open(out / "rtl_crop" / "sr_rtl.png").convert("RGB"))
    return rep, ("DFSQ RTL (accelerator)\ncentre crop", sr, RTL_CROP)


def build_parser() -> Parser:
    from dfsq.export import crop_option
    from sim.runner import SIMULATORS

    ap = Parser(prog="python -m demo", description=__doc__.split("\n")[0])
    ap.choice("--model", ("edsr", "rdn"), default="edsr", help="network (default edsr)")
    weights_option(ap, help="checkpoint path, or 'default' for the embedded one")
    ap.input_file("--params", "params", default=None, help="calibration artifact (default: the embedded one of "
                                                         f"--model, {DEFAULT_PARAMS.name} for EDSR)")
    ap.text("--crop", crop_option, default=DEFAULT_CROP, help="LR crop Y,X,H,W to export (default "
                                                       f"{','.join(map(str, DEFAULT_CROP))})")
    ap.text("--compare-crop", crop_option, default=COMPARE_CROP,
            help=f"LR crop Y,X,H,W of the comparison picture (default {','.join(map(str, COMPARE_CROP))})")
    ap.integer("--check-layers", 1, 1_000_000, special=("all",), default=CHECK_LAYERS,
               help=f"layers whose tiles step 6 simulates: N spread over the body, first and last included "
                    f"(default {CHECK_LAYERS}; step 8 runs every layer), or 'all'")
    ap.integer("--tiles", 1, 1_000_000, special=("all",), default=1, help="tiles per layer to simulate (or 'all')")
    ap.integer("--out-channels", 1, 4096, default=16, help="output channels simulated per tile")
    ap.choice("--simulator", SIMULATORS, default="icarus")
    ap.jobs(default=min(2, os.cpu_count() or 1), help="simulator processes in parallel (default: up to 2)")
    ap.flag("--no-rtl", help="skip the RTL panel (the whole accelerator under Verilator)")
    ap.output_dir("--out", default=None, help="output folder (default out/demo, out/demo-rdn with --model rdn)")
    return ap


@cli_main
def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.out is None:   # each network's demo has its own folder: an RDN run never overwrites the EDSR demo
        args.out = DEFAULT_OUT[args.model]
    with remove_dir_on_failure(args.out, "--out") as out:  # a failed demo leaves no (half-filled) --out folder behind
        return _run(args, out)


def _run(args, out: Path):
    t_all = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)

    from dfsq.calibrate import calibrate, load_params, save_params
    from dfsq.data import make_lr, modcrop, sample_images
    from dfsq.model import load_model
    from sim.runner import check_simulator

    check_simulator(args.simulator)  # fail before the heavy work when the simulator is missing

    t = _step(1, f"{'EDSR-baseline' if args.model == 'edsr' else 'RDN'} x2, weights {args.weights}")
    model = load_model(args.model, args.weights, 2)
    _done(t, f"{model.label}, {sum(p.numel() for p in model.parameters()):,} parameters")

    t = _step(2, "DFSQ calibration (4-bit activations, 4-bit weights, 4 words)")
    params_path = Path(args.params) if args.params else DEFAULT_PARAMS_BY_MODEL[args.model]
    if params_path.is_file():
        params = load_params(params_path)
        how = f"loaded {params_path.relative_to(ROOT) if params_path.is_relative_to(ROOT) else params_path}"
    elif args.params:
        raise UserError(f"params file not found: {params_path}")
    else:
        imgs = [(n, make_lr(modcrop(im[:192, :192], 2), 2)) for n, im in sample_images(4)]
        params = calibrate(model, imgs, act_bits=4, weight_bits=4, words=4, seed=0, weights=str(args.weights))
        params_path = out / "params.npz"
        save_params(params, params_path)
        how = f"calibrated on {len(imgs)} scikit-image crops -> {params_path}"
    _done(t, how)
    rtl_build = start_rtl_build(args, params_path)  # step 8's Verilator model, built beside steps 3 to 7
    try:
        return _steps_3_to_9(args, out, t_all, model, params, params_path, rtl_build)
    finally:
        stop_rtl_build(rtl_build)


def _steps_3_to_9(args, out: Path, t_all: float, model, params, params_path: Path, rtl_build):
    from dfsq.data import make_lr, modcrop, sample_image
    from dfsq.evaluate import upscale
    from dfsq.export import apply_crop, export
    from dfsq.imresize import imresize
    from dfsq.metrics import psnr_y, ssim_y
    from dfsq.model import load_model
    from dfsq.quantize import quantize_model

    t = _step(3, "PSNR/SSIM on scikit-image's 'astronaut' (x2, Y channel, shave 2)")
    hr = modcrop(sample_image(), 2)
    lr = make_lr(hr, 2)
    qmodel = quantize_model(load_model(args.model, args.weights, 2), params, "dfsq")
    rows = {}
    for name, sr in (("bicubic", imresize(lr, 2)), ("fp", upscale(model, lr)), ("dfsq W4A4", upscale(qmodel, lr))):
        rows[name] = {"psnr": psnr_y(sr, hr, 2), "ssim": ssim_y(sr, hr, 2)}
        print(f"      {name:<10} PSNR-Y {rows[name]['psnr']:6.2f} dB   SSIM-Y {rows[name]['ssim']:.4f}")
    _done(t)

    t = _step(4, f"export of all {len(params.layers)} quantized layers + golden check")
    crop = tuple(args.crop)
    export_dir = out / "export"
    manifest = export(model, params, apply_crop(lr, crop), export_dir, weights=str(args.weights),
                      params_path=str(params_path), image="skimage:astronaut (LR x2)", crop=crop)
    from golden.check import check_layer
    from golden.export_io import load_export, spec_from_manifest

    spec = spec_from_manifest(manifest)
    gold = [check_layer(layer, spec) for layer in load_export(export_dir, spec)[1]]
    codes_ok = all(r["codes_equal"] for r in gold)
    within = all(r["within_bound"] for r in gold)
    _done(t, f"{len(manifest['layers'])} layers -> {export_dir}; golden ({len(gold)} layers): codes identical "
             f"{codes_ok}, errors within bounds {within}")

    t = _step(5, "Verilog generation (conv engine and MAC)")
    from hw.generate import generate

    paths = [generate(top=top, spec=spec, lanes=16, out_dir=out / "rtl")[0] for top in ("engine", "mac")]
    _done(t, ", ".join(str(p) for p in paths))

    checked = spread_layers(len(manifest["layers"]), args.check_layers)
    t = _step(6, f"{args.simulator} simulation of tiles of "
                 f"{'all' if len(checked) == len(manifest['layers']) else f'{len(checked)} of the'} "
                 f"{len(manifest['layers'])} layers against the golden model")
    from sim.verify import verify

    rep = verify(export_dir, layers=checked, tiles=args.tiles,
                 simulator=args.simulator, out_channels=args.out_channels,
                 lanes=None if args.model == "edsr" else 64,  # RDN: the spec is 512+ channels wide
                 work_dir=out / "sim", quiet=True, jobs=args.jobs)
    _done(t)

    t = _step(7, "MAC area (Yosys synth_ice40)")
    from hw.report import mac_area

    area = mac_area(spec)
    _done(t)

    t = _step(8, f"the quantized body of a {RTL_CROP[2]}x{RTL_CROP[3]} crop through the whole accelerator "
                 f"({RTL_LANES} lanes, Verilator; its model is built once, into build/sim_network/) + comparison "
                 f"picture")
    rtl, panel = (None, None) if args.no_rtl else rtl_panel(args, params_path, lr, out, rtl_build)
    if rtl is not None:
        print(f"      {len(rtl['steps'])} layers, {rtl['cycles']:,} cycles, {rtl['macs']:,} MACs in "
              f"{rtl['sim_seconds']:.1f} s of simulation ({rtl['mac_per_s'] / 1e6:.1f}M MAC/s); bit-exact with the "
              f"golden integer network: {'YES' if rtl['bit_exact'] else 'NO'}")
    comparison = write_comparison(model, qmodel, hr, lr, tuple(args.compare_crop), out / "comparison.png",
                                  extra=[panel] if panel else None)
    print(f"      comparison of the crop (HR, bicubic, FP, DFSQ fake-quant, DFSQ hardware-exact"
          f"{', DFSQ RTL' if panel else ''}) -> {comparison}")
    _done(t)

    exact = rep["mismatches"] == 0 and codes_ok and within and (rtl is None or rtl["bit_exact"])
    summary = {
        "bit_exact": exact, "outputs_compared": rep["compared"], "mismatches": rep["mismatches"],
        "model": args.model, "layers": len(rep["layers"]), "simulated_cycles": rep.get("cycles"),
        "mac_per_s": rep.get("mac_per_s"), "psnr": rows, "mac_area": area, "seconds": time.perf_counter() - t_all,
        "comparison_png": str(comparison),
        "rtl_crop": None if rtl is None else {"crop": list(RTL_CROP), "bit_exact": rtl["bit_exact"],
                                              "cycles": rtl["cycles"], "mac_per_s": rtl["mac_per_s"],
                                              "lanes": rtl["lanes"], "sim_seconds": rtl["sim_seconds"],
                                              "build_seconds": rtl["build_seconds"]},
    }
    with atomic_output(out / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2, default=float) + "\n")
    print("\n" + "=" * 72)
    print(f"bit-exact: {'YES' if exact else 'NO'}  ({rep['compared']:,} outputs of {len(rep['layers'])} "
          f"layers compared, {rep['mismatches']} mismatches; golden codes identical: {codes_ok})")
    print(f"PSNR-Y on astronaut x2 ({model.label}): bicubic {rows['bicubic']['psnr']:.2f} dB, "
          f"FP {rows['fp']['psnr']:.2f} dB, "
          f"DFSQ W4A4 {rows['dfsq W4A4']['psnr']:.2f} dB")
    print(f"MAC area (iCE40 LUT4): DFSQ shift-add {area['dfsq_lut4']} vs equal-precision multiplier "
          f"{area['baseline_lut4']} ({area['dfsq_lut4'] / area['baseline_lut4']:.2f}x)")
    if rtl is not None:
        print(f"RTL crop ({RTL_CROP[2]}x{RTL_CROP[3]} LR, all {len(rtl['steps'])} layers of the body through the "
              f"accelerator under Verilator): bit-exact {'YES' if rtl['bit_exact'] else 'NO'}, "
              f"{rtl['mac_per_s'] / 1e6:.1f}M MAC/s on {rtl['lanes']} lanes")
    print(f"comparison picture (same crop, {'six' if rtl else 'five'} panels, PSNR-Y of each): {comparison}")
    print(f"total {summary['seconds']:.0f} s; details in {out / 'summary.json'}")
    if not exact:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
