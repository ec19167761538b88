"""Speed of the golden integer layer against PyTorch's float32 conv of the same layer on the same input.

    python -m bench.golden_speed [--export DIR] [--layer 0] [--sizes 48,128] [--repeat 7] [--threads 2]
        [--out bench/results]

"golden" = ``operands`` (point integers from the codes, fixed-point scales, bias) + ``accumulate`` (the exact
accumulator) + ``to_float``; "golden+codes" adds ``derive_codes`` from the float input. "torch" =
``F.conv2d(x, w, bias, padding=1)`` in float32 with the layer's dequantized weights. Times are the best of
``--repeat`` runs after a warm-up; the goal is golden / torch <= 1.5. Inputs: the export's layer (when
``--export`` is given) and synthetic 64-channel layers of the given sizes. Writes <name>.json / .md (default
golden_speed). ``--threads k`` gives torch k intra-op threads and the golden layer k worker threads over blocks of
tile rows (``accumulate(..., threads=k)``); numpy's BLAS threads follow OPENBLAS_NUM_THREADS: set it to 1 (the
workers supply the parallelism; a multi-threaded BLAS inside each worker only oversubscribes the cores).
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bench import RESULTS
from golden.args import Parser, When, plain_name
from golden.errors import UserError, cli_main
from golden.files import check_output_file, write_outputs
from golden.export_io import load_export
from golden.layer import accumulate, derive_codes, operands, to_float
from golden.spec import DatapathSpec
from golden.synthetic import synthetic_layer

GOAL = 1.5


def time_layer(layer, spec: DatapathSpec, repeat: int, threads: int = 1) -> dict:
    x = torch.from_numpy(layer.x)
    w = torch.from_numpy((layer.weight_q.astype(np.int32) - layer.zero_point[:, None, None, None])
                         .astype(np.float32) * layer.weight_scale[:, None, None, None])
    b = torch.from_numpy(layer.bias)

    def torch_conv():
        with torch.no_grad():
            return F.conv2d(x, w, b, padding=1)

    def golden():
        ops = operands(layer, spec)
        return to_float(accumulate(ops, spec, threads=threads), ops, layer.weight_scale)

    def golden_codes():
        codes = derive_codes(layer.x, layer.mean, layer.scale, layer.points)
        ops = operands(layer, spec, codes)
        return to_float(accumulate(ops, spec, threads=threads), ops, layer.weight_scale)

    def codes_only():
        return derive_codes(layer.x, layer.mean, layer.scale, layer.points)

    ops = operands(layer, spec)
    acc = accumulate(ops, spec)

    # interleave the measurements, so that load from other processes hits all of them alike: in every round each
    # function runs twice in a row and the second run is timed (warm caches, as in a loop over layers of one size)
    fns = (("torch", torch_conv), ("golden", golden), ("golden+codes", golden_codes), ("codes", codes_only),
           ("operands", lambda: operands(layer, spec)), ("accumulate", lambda: accumulate(ops, spec, threads=threads)),
           ("to_float", lambda: to_float(acc, ops, layer.weight_scale)))
    times = {name: [] for name, _ in fns}
    for name, fn in fns:  # warm-up
        fn()
    for _ in range(repeat):
        for name, fn in fns:
            fn()
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    res = {name: {"best": min(ts), "median": statistics.median(ts)} for name, ts in times.items()}
    n, c, o, h, wd = layer.shape
    return {"layer": layer.name, "shape": {"N": n, "C": c, "O": o, "H": h, "W": wd},
            "seconds": res, "ratio": res["golden"]["best"] / res["torch"]["best"],
            "ratio_median": res["golden"]["median"] / res["torch"]["median"],
            "ratio_with_codes": res["golden+codes"]["best"] / res["torch"]["best"]}


def markdown(res: dict) -> str:
    load = ", ".join(f"{v:.1f}" for v in res["load_average"])
    out = ["# Golden integer layer vs PyTorch float32 conv", "",
           f"{res['machine']}; torch threads {res['torch_threads']}, golden worker threads "
           f"{res.get('golden_threads', 1)}, numpy BLAS: {res['blas']} (threads: {res['blas_threads']}, kernels: "
           f"{res.get('blas_core', 'unknown')}). Best (and median) of "
           f"{res['repeat']} runs, the functions in turn (each run twice, the second timed). golden = operands + "
           f"accumulate + to_float (exact int64 result); golden+codes "
           f"also derives the codes from the float input. Goal: golden / torch <= {GOAL}. Load average at the end "
           f"(1, 5, 15 min): {load} (other jobs share the machine; every column is measured interleaved, so the "
           f"ratio compares both under the same load).", "",
           "| input | N x C -> O x H x W | torch conv (ms) | golden (ms) | golden / torch | golden+codes (ms) | "
           "(golden+codes) / torch | operands / accumulate / to_float (ms) | golden / torch of the medians |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in res["runs"]:
        s, sh = r["seconds"], r["shape"]
        parts = " / ".join(f"{1e3 * s[k]['best']:.2f}" for k in ("operands", "accumulate", "to_float"))
        out.append(f"| {r['source']} {r['layer']} | {sh['N']} x {sh['C']} -> {sh['O']} x {sh['H']} x {sh['W']} | "
                   f"{1e3 * s['torch']['best']:.2f} | {1e3 * s['golden']['best']:.2f} | {r['ratio']:.2f} | "
                   f"{1e3 * s['golden+codes']['best']:.2f} | {r['ratio_with_codes']:.2f} | {parts} | "
                   f"{r['ratio_median']:.2f} |")
    env = f"OPENBLAS_NUM_THREADS={res['blas_threads']} " if res["blas_threads"].isdigit() else ""
    if res.get("openblas_coretype_env"):
        env = f"OPENBLAS_CORETYPE={res['openblas_coretype_env']} " + env
    out += ["", f"Reproduce: `{env}python -m bench.golden_speed {res['argv']}`", ""]
    return "\n".join(out)


def _blas() -> str:
    try:
        cfg = np.show_config(mode="dicts")
        b = cfg["Build Dependencies"]["blas"]
        return f"{b.get('name')} {b.get('version')}"
    except Exception:  # noqa: BLE001 - informative only
        return "unknown"


def _blas_core() -> str:
    """The kernel family numpy's OpenBLAS runs (its CPU detection, or OPENBLAS_CORETYPE); informative only."""
    try:
        import ctypes
        import glob
        for lib in glob.glob(os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs", "*openblas*")):
            dll = ctypes.CDLL(lib)
            for name in ("scipy_openblas_get_corename64_", "openblas_get_corename64_", "openblas_get_corename"):
                fn = getattr(dll, name, None)
                if fn is not None:
                    fn.restype = ctypes.c_char_p
                    return fn().decode()
    except Exception:  # noqa: BLE001 - informative only
        pass
    return "unknown"


def build_parser() -> Parser:
    ap = Parser(prog="python -m bench.golden_speed", description=__doc__.split("\n")[0])
    ap.input_dir("--export", "export", help="export folder: time its layer --layer")
    ap.integer("--layer", 0, 100_000, default=0, when=When.given("export"),
               help="layer index of --export to time (default 0)")
    ap.int_list("--sizes", 1, 4096, special=("none",), default=[48, 128],
                help="synthetic 64->64-channel layers of these H = W (default 48,128; 'none' for none)")
    ap.integer("--repeat", 1, 10_000, default=7)
    ap.threads(help="torch threads and golden worker threads (default: torch's default, golden 1); run with "
                    "OPENBLAS_NUM_THREADS=1 so that the golden workers' BLAS calls do not oversubscribe")
    ap.output_dir("--out", default=str(RESULTS), help="output folder (default bench/results/, the documented "
                                                     "result)")
    ap.text("--name", plain_name, default="golden_speed", help="output file stem")
    return ap


@cli_main
def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.export is None and args.sizes == "none":
        raise UserError("nothing to time: give --export or --sizes")
    for suffix in (".json", ".md"):
        check_output_file(Path(args.out) / f"{args.name}{suffix}", "--out/--name")
    if args.threads:
        torch.set_num_threads(args.threads)
    golden_threads = args.threads or 1
    runs = []
    exported = load_export(args.export, layers=[args.layer]) if args.export else None   # checked before any work
    # Warm-up, so that every layer is timed in the steady state of a long-running process: BLAS buffers, oneDNN
    # kernels, and glibc's dynamic mmap threshold (it rises after a large block is freed; before that every
    # array above 128 KiB is a fresh mmap whose pages fault on first touch, which doubled the time of the first
    # layer measured in a fresh process on this VM).
    time_layer(synthetic_layer(np.random.default_rng(0), DatapathSpec(), N=1, C=64, O=64, H=96, W=96),
               DatapathSpec(), 3, golden_threads)
    if exported:
        manifest, layers = exported
        from golden.export_io import spec_from_manifest
        r = time_layer(layers[0], spec_from_manifest(manifest), args.repeat, golden_threads)
        r["source"] = "export"
        runs.append(r)
    sizes = [] if args.sizes == "none" else args.sizes
    spec = DatapathSpec()
    for s in sizes:
        lay = synthetic_layer(np.random.default_rng(s), spec, N=1, C=64, O=64, H=s, W=s)
        r = time_layer(lay, spec, args.repeat, golden_threads)
        r["source"] = "synthetic"
        runs.append(r)
    if not runs:
        raise UserError("nothing to time: give --export or --sizes")
    res = {"runs": runs, "repeat": args.repeat, "torch_threads": torch.get_num_threads(),
           "golden_threads": golden_threads, "blas": _blas(), "blas_core": _blas_core(),
           "openblas_coretype_env": os.environ.get("OPENBLAS_CORETYPE"),
           "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS", f"default ({os.cpu_count()} cores)"),
           "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
           "goal": GOAL, "argv": " ".join(argv) if argv is not None else " ".join(os.sys.argv[1:]),
           "load_average": os.getloadavg()}
    out = Path(args.out)
    write_outputs({out / f"{args.name}.json": json.dumps(res, indent=2) + "\n",
                   out / f"{args.name}.md": markdown(res)})
    print(markdown(res))


if __name__ == "__main__":
    main()
