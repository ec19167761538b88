"""A whole DFSQ network through the RTL: the quantized body on the accelerator under Verilator, bit for bit.

    python -m sim.network --model edsr|rdn --weights W --params P --image I [--crop Y,X,H,W] --out DIR
        [--hr HR.png] [--lanes 64] [--max-pixels 16384] [--work-dir build/sim_network] [--json FILE]

Steps: the model and its DFSQ params give the integer network (dfsq.int_mode.IntNetwork: the adapter's integer
graph, every conv's integer parameters, the feature-map format); the FP prologue runs in PyTorch on the image (the
LR network input, cropped: Y,X,H,W as dfsq.export's ``--crop``), its output enters the feature-map format, and the
golden integer network (golden.int_network.run_body) computes every tensor of the body. The layer program is
compiled from the same graph (hw.program), the accelerator generated for the model's sizes (hw.generate --top
accelerator: cached) and built once with its C++ driver under Verilator (sim.native, sim.accel_harness: cached);
the driver loads the program, the parameter memories and the entry, runs the body with no Python on the cycle path
and writes every value the post unit wrote. Each step's output is compared with the golden tensor bit for bit
(``np.array_equal``); the first mismatch is named by step, layer, output channel and pixel, in hex and decimal. The
RTL's exit tensor goes through the FP epilogue in PyTorch: ``DIR/sr_rtl.png`` beside the golden integer network's
``DIR/sr_golden.png`` (byte-identical when bit-exact), ``DIR/report.json``; with ``--hr`` the PSNR-Y of the SR crop.

Prints ``bit-exact: YES`` or the first mismatch; exit 0 only when every layer matched (1 otherwise, 2 on bad input:
a crop larger than ``--max-pixels``, a params file of another model, a missing Verilator). Ctrl-C stops the
simulator and leaves no output folder. Simulated MAC/s count the quantized convs' real multiply-accumulates
(H W O C k^2 per layer) over the simulator's own wall time, with the lanes of the simulated engine.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from golden.args import Parser
from golden.errors import UserError, cli_main
from golden.files import atomic_output, atomic_output_dir

from .native import OPT_FAST

__all__ = ["run_network", "prebuild", "build_accel", "build_parser", "main", "DEFAULT_LANES", "DEFAULT_MAX_PIXELS",
           "DEFAULT_WORK"]

DEFAULT_LANES = 64
DEFAULT_MAX_PIXELS = 128 * 128
#: generated RTL, Verilator builds (cached) and runs: under the repository's build/, whatever the working folder
DEFAULT_WORK = Path(__file__).resolve().parent.parent / "build" / "sim_network"
#: gcc's level for the Verilated model's per-cycle code (sim.native.OPT_FAST without its dash); the others for
#: comparisons (docs/accelerator.md, "Measured").
CXX_OPTS = ("Os", "O1", "O2", "O3")
DEFAULT_CXX_OPT = OPT_FAST.lstrip("-")
TOOL = "sim.network"


def _say(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def _hexdec(v: int, bits: int) -> str:
    return f"0x{int(v) & ((1 << bits) - 1):0{(bits + 3) // 4}x} ({int(v)})"


def integer_network(model: str, weights: str, params_path: str, rdn_config=None, threads=None):
    """(float model, DFSQ-quantized model, IntNetwork, params) for ``params_path``."""
    from dfsq.calibrate import load_params
    from dfsq.int_mode import IntNetwork
    from dfsq.model import load_model
    from dfsq.quantize import quantize_model

    params = load_params(params_path)
    cfg = params.config
    if cfg.get("model", "edsr") != model:
        raise UserError(f"{params_path} was made for {cfg.get('model', 'edsr')}, not {model}: pass --model "
                        f"{cfg.get('model', 'edsr')}")
    fp = load_model(model, weights, int(cfg["scale"]))
    qmodel = quantize_model(fp, params, "dfsq")
    return fp, qmodel, IntNetwork(qmodel, threads=threads), params


class _BodyModel:
    """``forward_body`` with a fixed body callable, as a model for dfsq.evaluate.upscale."""

    def __init__(self, net, body):
        self.net, self.body = net, body

    def __call__(self, x):
        return self.net.adapter.forward_body(self.net.qmodel, x, self.body)

    def parameters(self):
        return self.net.qmodel.parameters()


def _upscale(net, lr: np.ndarray, body) -> np.ndarray:
    import torch

    x = torch.from_numpy(np.array(lr, order="C")).permute(2, 0, 1)[None].float()   # a copy: lr may be read-only
    with torch.no_grad():
        y = _BodyModel(net, body)(x)[0].clamp(0, 255).round().byte().permute(1, 2, 0)
    return y.numpy()


def golden_run(net, lr: np.ndarray):
    """(SR uint8 image, entry X0 (C, H, W), golden.int_network.BodyResult with every tensor) of the LR image."""
    import torch

    from golden.int_network import run_body

    got = {}
    fmt = net.ispec.fmap

    def body(h):
        X0, sat = fmt.to_fixed(h.detach().float().numpy())
        res = run_body(net.graph, net.convs, X0, net.ispec, keep=True, entry_saturations=sat,
                       post_params=net.post_params, threads=torch.get_num_threads())
        got.update(X0=X0, res=res)
        return torch.from_numpy(fmt.to_float(res.exit))

    sr = _upscale(net, lr, body)
    return sr, got["X0"][0], got["res"]


def accel_sizes(net, model: str, rdn_config, lanes: int, max_pixels: int):
    """The accelerator this network runs on: hw.generate --top accelerator --model M with the same sizes."""
    from hw.program import model_sizes

    dp = net.ispec.datapath
    return model_sizes(model, rdn_config=rdn_config or "S", lanes=lanes, max_pixels=max_pixels, words=dp.words,
                       act_bits=dp.act_bits, weight_bits=dp.weight_bits, scale_bits=dp.scale_bits,
                       fmap_bits=net.ispec.fmap.bits)


def generate_accel(spec, fault, out_dir: Path, quiet: bool, flat: bool = True):
    """(Verilog path, sidecar) of the accelerator (``flat``: one flattened module, which Verilator runs faster),
    reused while hw's sources and the sizes are unchanged."""
    from hw.generate import generate, stem

    from .verify import _generator_digest

    out_dir.mkdir(parents=True, exist_ok=True)
    name = stem("accelerator", spec, spec.lanes, fault) + ("_flat" if flat else "")
    v_path, j_path, stamp = out_dir / f"{name}.v", out_dir / f"{name}.json", out_dir / f"{name}.digest"
    digest = _generator_digest("accelerator", spec, spec.lanes, fault, flat=flat)
    if not (v_path.is_file() and j_path.is_file() and stamp.is_file() and stamp.read_text() == digest):
        _say(f"generating the accelerator's Verilog ({spec.lanes} lanes{', flattened' if flat else ''}) ...", quiet)
        v_path, j_path = generate("accelerator", spec, spec.lanes, fault, out_dir, flat=flat)
        with atomic_output(stamp) as tmp:
            tmp.write_text(digest)
    return Path(v_path), json.loads(Path(j_path).read_text())


def build_accel(spec, work: Path, *, fault=None, netlist: str = "flat", cxx_opt: str = DEFAULT_CXX_OPT,
                quiet: bool = True, jobs: int = 2):
    """(Verilog path, sidecar, sim.native.NativeBuild) of the accelerator ``spec`` with its C++ driver, generated
    under ``work``/rtl and built under ``work``/build (both cached: a second call with the same sizes reuses them)."""
    from sim import native
    from sim.accel_harness import harness_cpp

    v_path, sidecar = generate_accel(spec, fault, work / "rtl", quiet, flat=netlist == "flat")
    suffix = "" if cxx_opt == DEFAULT_CXX_OPT else f"-{cxx_opt}"
    bld = native.build(v_path, top=sidecar["module"], cpp=harness_cpp(sidecar), opt_fast=f"-{cxx_opt}", jobs=jobs,
                       build_dir=work / "build" / f"{v_path.stem}-native{suffix}", log=None if quiet else
                       (lambda msg: _say(msg + " (once per configuration; minutes for 64 lanes)", quiet)))
    _say(f"Verilator model {bld.exe} ({'cached' if bld.cached else f'built in {bld.seconds:.0f} s'})", quiet)
    return v_path, sidecar, bld


def prebuild(*, model: str, weights: str, params: str, lanes: int = DEFAULT_LANES,
             max_pixels: int = DEFAULT_MAX_PIXELS, work_dir=DEFAULT_WORK, jobs: int = 1) -> float:
    """Generate and build the accelerator that :func:`run_network` with the same arguments will use, so that a
    later run finds it cached (make demo builds it beside its other steps); returns the build's seconds (0 when
    cached)."""
    _, _, net, p = integer_network(model, weights, params, threads=1)
    rdn_config = ",".join(str(v) for v in p.config["rdn_config"]) if model == "rdn" else None
    spec = accel_sizes(net, model, rdn_config, lanes, max_pixels)
    return build_accel(spec, Path(work_dir).resolve(), jobs=jobs)[2].seconds


def compare(prog, res, trace: np.ndarray, height: int, width: int, fb: int):
    """Per step: (rows of the report, first mismatch or None, RTL tensors by name)."""
    hw = height * width
    rows, first, tensors = [], None, {}
    pos = 0
    for s in prog.steps:
        n = hw * s.out_channels
        got = trace[pos:pos + n]
        pos += n
        want = np.asarray(res.tensors[s.output][0], np.int64).reshape(s.out_channels, hw).T.reshape(-1)
        if len(got) < n:
            bad = int(np.count_nonzero(got != want[:len(got)])) + (n - len(got))
        else:
            bad = int(np.count_nonzero(got != want))
        if len(got) == n:
            tensors[s.output] = got.reshape(hw, s.out_channels).T.reshape(s.out_channels, height, width)
        rows.append({"step": s.index, "layer": s.layer, "name": s.name, "kernel": s.kernel,
                     "in_channels": s.in_channels, "out_channels": s.out_channels, "output": s.output,
                     "values": n, "compared": int(min(len(got), n)), "mismatches": bad,
                     "macs": hw * s.out_channels * s.in_channels * s.kernel ** 2})
        if bad and first is None:
            k = int(np.nonzero(got != want[:len(got)])[0][0]) if np.any(got != want[:len(got)]) else len(got)
            p, o = divmod(k, s.out_channels)
            y, x = divmod(p, width)
            first = {"step": s.index, "layer": s.layer, "name": s.name, "output_channel": o, "y": y, "x": x,
                     "expected": int(want[k]), "actual": int(got[k]) if k < len(got) else None,
                     "expected_hex": _hexdec(want[k], fb),
                     "actual_hex": _hexdec(got[k], fb) if k < len(got) else "no value"}
    return rows, first, tensors


def _hr_crop(hr: np.ndarray, crop, scale: int, height: int, width: int) -> np.ndarray:
    """The part of the HR image that the SR crop (``height`` x ``width`` LR pixels) is compared with; checked
    before any long work."""
    if crop is not None:
        y, x, h, w = crop
        hr = hr[y * scale:(y + h) * scale, x * scale:(x + w) * scale]
    out = hr[:height * scale, :width * scale]
    if out.shape[:2] != (height * scale, width * scale):
        raise UserError(f"--hr: the HR image ({hr.shape[1]}x{hr.shape[0]} after the crop) does not cover the SR "
                        f"image ({width * scale}x{height * scale})")
    return out


def _save_png(img: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(np.ascontiguousarray(img)).save(path, format="PNG")


def _is_previous(path: Path) -> bool:
    rep = path / "report.json"
    try:
        return rep.is_file() and json.loads(rep.read_text()).get("tool") == TOOL
    except (OSError, ValueError):
        return False


def run_network(*, model: str, weights: str, params: str, image: str, crop=None, out, hr=None,
                lanes: int = DEFAULT_LANES, max_pixels: int = DEFAULT_MAX_PIXELS, work_dir=DEFAULT_WORK,
                fault=None, mutation=None, quiet: bool = False, json_path=None, max_cycles=None,
                threads=None, netlist: str = "flat", cxx_opt: str = DEFAULT_CXX_OPT) -> dict:
    """Run the network's body through the RTL; returns the report (also DIR/report.json). ``image``: a path,
    'sample' or a uint8 (H, W, 3) LR array."""
    from dfsq.data import load_rgb, sample_image
    from dfsq.export import apply_crop
    from dfsq.metrics import psnr_y
    from hw.program import check_program, compile_program, load_records, mutate
    from sim import native
    from sim.accel_harness import read_report, read_trace, write_load
    from sim.runner import check_simulator

    t_start = time.perf_counter()
    if cxx_opt not in CXX_OPTS:
        raise UserError(f"cxx_opt must be one of {', '.join(CXX_OPTS)}, not {cxx_opt!r}")
    check_simulator("verilator")                            # fail fast: one line when it is missing
    if isinstance(image, np.ndarray):
        img, image = image, "(an image array)"
    else:
        img = sample_image() if image == "sample" else load_rgb(image)
    lr = apply_crop(img, crop)
    hr_img = None if hr is None else load_rgb(hr)          # a bad --hr fails here, not after the simulation
    height, width = lr.shape[:2]
    if height * width > max_pixels:
        raise UserError(f"the crop has {height}x{width} = {height * width} pixels; the simulated feature-map memory "
                        f"holds {max_pixels} (--max-pixels)")
    fp, qmodel, net, p = integer_network(model, weights, params, threads=threads)
    rdn_config = None
    if model == "rdn":
        rdn_config = ",".join(str(v) for v in p.config["rdn_config"])
    scale = int(p.config["scale"])
    if hr_img is not None:
        hr_img = _hr_crop(hr_img, crop, scale, height, width)
    with atomic_output_dir(out, replace=_is_previous) as tmp_out:
        _say(f"golden integer network on the {width}x{height} crop ...", quiet)
        t0 = time.perf_counter()
        sr_golden, x0, res = golden_run(net, lr)
        golden_s = time.perf_counter() - t0
        spec = accel_sizes(net, model, rdn_config, lanes, max_pixels)
        prog = compile_program(net.graph, net.convs, net.ispec, net.post_params, spec)
        if mutation:
            prog = mutate(prog, mutation)
        check_program(prog)
        work = Path(work_dir).resolve()
        v_path, sidecar, bld = build_accel(spec, work, fault=fault, netlist=netlist, cxx_opt=cxx_opt, quiet=quiet)
        run_dir = work / "runs" / f"network-{os.getpid()}"
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir(parents=True)
        try:
            load, trace_p, rep_p = run_dir / "load.bin", run_dir / "trace.bin", run_dir / "run.json"
            write_load(load, load_records(prog, x0, height, width))
            macs = sum(height * width * s.out_channels * s.in_channels * s.kernel ** 2 for s in prog.steps)
            _say(f"simulating {len(prog.steps)} steps, {macs:,} MACs on {spec.lanes} lanes under Verilator ...", quiet)
            limit = max_cycles or 4 * sum(height * width * s.out_channels * s.groups + 200 * (s.in_channels +
                                                                                              s.out_channels) + 64
                                          for s in prog.steps) + 1_000_000
            proc = native.run(bld.exe, [load, trace_p, rep_p, limit])
            if proc.returncode in (130, 143):
                raise KeyboardInterrupt
            if proc.returncode != 0:
                raise UserError(f"the simulator failed (exit {proc.returncode}): "
                                f"{(proc.stderr or proc.stdout).strip().splitlines()[-1:] or ['no output']}")
            run = read_report(rep_p)
            trace = read_trace(trace_p).astype(np.int64)
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)
        rows, first, rtl_tensors = compare(prog, res, trace, height, width, spec.fb)
        starts = run["step_start"]
        for i, r in enumerate(rows):
            if i < len(starts):
                r["cycles"] = int((starts[i + 1] if i + 1 < len(starts) else run["cycles"]) - starts[i])
        status_ok = run["status"] == 0 and run["done"]
        bit_exact = first is None and status_ok and len(trace) == sum(r["values"] for r in rows)
        fmt = net.ispec.fmap
        import torch

        exit_rtl = rtl_tensors.get(prog.exit)
        sr_rtl = None
        if exit_rtl is not None:
            # the same contiguous float32 tensor as golden's (PyTorch's conv may round a strided input differently)
            sr_rtl = _upscale(net, lr, lambda h: torch.from_numpy(np.ascontiguousarray(fmt.to_float(exit_rtl[None]))))
        _save_png(sr_golden, tmp_out / "sr_golden.png")
        if sr_rtl is not None:
            _save_png(sr_rtl, tmp_out / "sr_rtl.png")
        png_equal = sr_rtl is not None and (tmp_out / "sr_rtl.png").read_bytes() == (tmp_out / "sr_golden.png"
                                                                                    ).read_bytes()
        psnr = None if hr_img is None else psnr_y(sr_rtl if sr_rtl is not None else sr_golden, hr_img, scale)
        sim_s, cpu_s = float(run["seconds"]), float(run["cpu_seconds"])
        report = {
            "tool": TOOL, "model": model, "params": str(params), "image": str(image),
            "crop": list(crop) if crop else None, "height": height, "width": width, "scale": scale,
            "lanes": spec.lanes, "rtl": str(v_path), "netlist": netlist, "cxx_opt": cxx_opt,
            "accelerator": spec.describe(), "fault": fault,
            "mutation": list(getattr(prog, "mutation", ())) or None, "steps": rows, "bit_exact": bool(bit_exact),
            "first_mismatch": first, "status": run["status"], "done": run["done"], "cycles": run["cycles"],
            "sim_seconds": round(sim_s, 3), "sim_cpu_seconds": round(float(run["cpu_seconds"]), 3),
            "load_cycles": run["load_cycles"], "load_seconds": round(float(run["load_seconds"]), 3),
            "macs": macs, "mac_per_s": round(macs / sim_s, 1) if sim_s else None,
            "cycles_per_s": round(run["cycles"] / sim_s, 1) if sim_s else None,
            "mac_per_cpu_s": round(macs / cpu_s, 1) if cpu_s else None,
            "cycles_per_cpu_s": round(run["cycles"] / cpu_s, 1) if cpu_s else None,
            "build_seconds": round(bld.seconds, 1), "build_cached": bld.cached, "golden_seconds": round(golden_s, 3),
            "sr_png_identical": bool(png_equal), "psnr_y": psnr, "saturations": res.saturations,
            "wall_seconds": round(time.perf_counter() - t_start, 3)}
        (tmp_out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    if json_path:
        with atomic_output(json_path) as tmp:
            Path(tmp).write_text(json.dumps(report, indent=1) + "\n")
    return report


def format_report(r: dict) -> str:
    lines = [f"{r['model']} body: {len(r['steps'])} steps on a {r['width']}x{r['height']} crop, accelerator with "
             f"{r['lanes']} lanes ({r['lanes'] * 9} multipliers), RTL {r['rtl']}"]
    nw = max([8] + [len(s["name"]) for s in r["steps"]])
    lines.append(f"{'step':>4}  {'layer':<{nw}} {'k':>1} {'C':>4} {'O':>3} {'cycles':>9} {'mismatches':>10}")
    for s in r["steps"]:
        lines.append(f"{s['step']:>4}  {s['name']:<{nw}} {s['kernel']:>1} {s['in_channels']:>4} {s['out_channels']:>3} "
                     f"{s.get('cycles', ''):>9} {s['mismatches']:>10}")
    lines.append(f"simulated {r['cycles']:,} cycles, {r['macs']:,} MACs in {r['sim_seconds']:.1f} s: "
                 f"{r['cycles_per_s']:,.0f} cycles/s, {r['mac_per_s'] / 1e6:.1f}M MAC/s ({r['lanes']} lanes; "
                 f"Verilator, one thread; load {r['load_cycles']:,} cycles in {r['load_seconds']:.1f} s)")
    if r.get("mac_per_cpu_s"):
        lines.append(f"the simulator's CPU time: {r['sim_cpu_seconds']:.1f} s, {r['cycles_per_cpu_s']:,.0f} cycles and "
                     f"{r['mac_per_cpu_s'] / 1e6:.1f}M MAC per CPU second (wall time above also counts other "
                     f"processes on a loaded machine)")
    if r["status"]:
        lines.append(f"the accelerator stopped with status {r['status']} (a requantization shift below 1)")
    if r["psnr_y"] is not None:
        lines.append(f"PSNR-Y of the RTL's SR crop: {r['psnr_y']:.2f} dB")
    lines.append(f"SR PNG of the RTL {'byte-identical to' if r['sr_png_identical'] else 'DIFFERS from'} the golden "
                 f"integer network's")
    fm = r["first_mismatch"]
    if fm:
        lines.append(f"FIRST MISMATCH: step {fm['step']} (layer {fm['layer']}, {fm['name']}), output channel "
                     f"{fm['output_channel']}, pixel y {fm['y']} x {fm['x']}: expected {fm['expected_hex']}, "
                     f"actual {fm['actual_hex']}")
    lines.append("bit-exact: YES" if r["bit_exact"] else "bit-exact: NO")
    return "\n".join(lines)


def _crop(text: str):
    from dfsq.export import parse_crop

    return parse_crop(text)


def build_parser() -> Parser:
    from hw.program import MUTATIONS
    from hw.units.accelerator import ACCEL_FAULTS

    ap = Parser(prog="python -m sim.network", description=__doc__.split("\n\n")[0])
    ap.choice("--model", ("edsr", "rdn"), default="edsr")
    ap.input_file("--weights", "checkpoint", special=("default",), default="default")
    ap.input_file("--params", "params", required=True, help="DFSQ params (python -m dfsq.calibrate)")
    ap.input_file("--image", "image", special=("sample",), required=True,
                  help="the network input (an LR image), or 'sample'")
    ap.text("--crop", _crop, default=None, help="Y,X,H,W crop of the image (as dfsq.export)")
    ap.input_file("--hr", "image", default=None, help="the HR image, for the PSNR-Y of the SR crop")
    ap.output_dir("--out", replaces=True, required=True, help="output folder (SR PNGs and report.json)")
    ap.integer("--lanes", 1, 1024, default=DEFAULT_LANES, help=f"engine lanes (default {DEFAULT_LANES})")
    ap.integer("--max-pixels", 1, 1 << 22, default=DEFAULT_MAX_PIXELS,
               help=f"pixels per channel of the simulated feature-map memory (default {DEFAULT_MAX_PIXELS})")
    ap.work_dir("--work-dir", default=str(DEFAULT_WORK),
                help="generated RTL, Verilator builds, runs (default build/sim_network/)")
    ap.output_file("--json", default=None, help="also write the report here")
    ap.choice("--netlist", ("flat", "generated"), default="flat",
              help="simulate the accelerator generated as one flattened module (default; Verilator runs it faster)"
                   " or the generated hierarchy")
    ap.choice("--cxx-opt", CXX_OPTS, default=DEFAULT_CXX_OPT,
              help="gcc's optimization level for the model's per-cycle C++ (default Os, the fastest measured)")
    ap.choice("--fault", sorted(ACCEL_FAULTS), default=None, help="a deliberately broken accelerator (mutation tests)")
    ap.choice("--mutate", sorted(MUTATIONS), default=None, help="a deliberately wrong layer program (mutation tests)")
    ap.threads()
    return ap


@cli_main
def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    report = run_network(model=args.model, weights=args.weights, params=args.params, image=args.image,
                         crop=args.crop, out=args.out, hr=args.hr, lanes=args.lanes, max_pixels=args.max_pixels,
                         work_dir=args.work_dir, fault=args.fault, mutation=args.mutate, json_path=args.json,
                         threads=args.threads, netlist=args.netlist, cxx_opt=args.cxx_opt)
    print(format_report(report))
    return 0 if report["bit_exact"] else 1


if __name__ == "__main__":
    sys.exit(main())
