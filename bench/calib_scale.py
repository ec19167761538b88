"""Calibration at RDN scale: wall time, CPU time and peak memory of a whole DFSQ calibration.

    python -m bench.calib_scale [--cases S,B] [--threads N] [--out bench/results/calib_scale]

Cases (each runs in its own Python process, so its peak RSS is its own; ``resource.getrusage``):

* ``S``: the embedded RDN (config S: D=8, C=4, G=32, G0=64; 42 quantized convs, inputs up to 512 channels),
  x2, W4A4, 4 words, on the default 32 calibration images (BSD200 LR, as ``python -m dfsq.calibrate``). The
  trained weights/rdn_s_x2.pt when present, else random weights (same cost).
* ``B``: a config-B RDN (D=16, C=8, G=64, G0=64; 146 quantized convs, inputs up to 1024 channels) with random
  weights, x2, W4A4, on 32 LR patches of 96x96 (the paper's setting: the centre 96x96 of each of the 32 BSD200
  LR images).
* ``edsr``: EDSR-baseline x2 on the 32 images, for reference.

Goals (issue 12): S in at most 5 minutes on 2 cores; B in at most 10 minutes and 4 GB. Each case also reports the
time of the same forward passes without the calibration hooks, so the hooks' share (histograms) and the point
selection's share are visible. The machine is shared: the load average before and after each case is recorded.
Writes ``<out>.json`` and ``<out>.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from golden.errors import UserError, cli_main

ROOT = Path(__file__).resolve().parent.parent
GOALS = {"S": {"seconds": 300, "rss_gb": None}, "B": {"seconds": 600, "rss_gb": 4.0}, "edsr": {}}


def _images(case: str, n: int = 32):
    from dfsq.calibrate import calibration_images

    imgs = calibration_images(None, n, 2)
    if case == "B":
        out = []
        for name, im in imgs:
            h, w = im.shape[:2]
            if min(h, w) < 96:
                raise UserError(f"{name} is smaller than 96x96")
            y, x = (h - 96) // 2, (w - 96) // 2
            out.append((name, np.ascontiguousarray(im[y:y + 96, x:x + 96])))
        imgs = out
    return imgs


def _model(case: str):
    import torch

    from dfsq.model import build_model, load_model
    from dfsq.rdn import CONFIGS
    from dfsq.weights import default_weights

    if case == "edsr":
        return load_model("edsr", "default", 2), "default"
    if case == "S" and default_weights(2, "rdn").is_file():
        return load_model("rdn", "default", 2), "default"
    torch.manual_seed(0)
    return build_model("rdn", 2, CONFIGS[case]).eval(), "random"


def run_case(case: str, threads: int | None, forward: bool = True, images: int = 32) -> dict:
    """One case in this process: calibrate, then time the bare forward passes."""
    import torch

    from dfsq.calibrate import calibrate
    from dfsq.evaluate import upscale

    if threads:
        torch.set_num_threads(threads)
    load0 = os.getloadavg()
    model, weights = _model(case)
    imgs = _images(case, images)
    t0, c0 = time.perf_counter(), time.process_time()
    p = calibrate(model, imgs, act_bits=4, weight_bits=4, words=4, seed=0, weights=weights)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    fwd = None
    if forward:
        t1 = time.perf_counter()
        for _, im in imgs:
            upscale(model, im)
        fwd = round(time.perf_counter() - t1, 1)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    cfg = getattr(model, "config", None)
    return {
        "case": case, "model": p.config["model"], "config": list(cfg) if cfg is not None else None,
        "weights": weights, "layers": len(p.layers), "channels": int(sum(q["in_channels"] for q in p.layer_info)),
        "max_in_channels": int(max(q["in_channels"] for q in p.layer_info)), "images": len(imgs),
        "pixels": p.info["pixels"], "seconds_wall": round(wall, 1), "seconds_cpu": round(cpu, 1),
        "seconds_collect": p.info["seconds_collect"], "seconds_select": p.info["seconds_select"],
        "cpu_seconds_collect": p.info.get("cpu_seconds_collect"),
        "cpu_seconds_select": p.info.get("cpu_seconds_select"),
        "seconds_forward_only": fwd, "peak_rss_gb": round(rss, 3), "torch_threads": torch.get_num_threads(),
        "loadavg_before": [round(v, 2) for v in load0], "loadavg_after": [round(v, 2) for v in os.getloadavg()],
        "mean_loss": p.info["mean_loss"],
    } | extrapolate(p.info, len(imgs))


def extrapolate(info: dict, n: int) -> dict:
    """CPU seconds for 32 images from a run on ``n``: the collection scales with the images, the selection not."""
    cc, cs = info.get("cpu_seconds_collect"), info.get("cpu_seconds_select")
    if n >= 32 or cc is None or cs is None:
        return {}
    return {"cpu_seconds_32_extrapolated": round(cc * 32 / n + cs, 1)}


def markdown(rows: list[dict]) -> str:
    lines = ["# Calibration at RDN scale (`python -m bench.calib_scale`)", "",
             "x2, W4A4, 4 words (377 values), 4096 bins, 4 restarts + refinement; wall and CPU seconds of the whole "
             "calibration (forward passes with the histogram hooks, then the point selection), the bare forward "
             "passes alone, and the process's peak RSS. The machine (2 cores) is shared: load averages are "
             "recorded before/after.", "",
             "| case | layers | channels (max) | images | wall s | CPU s (collect + select) | collect s | select s "
             "| forward only s | peak RSS GB | goal | load before/after |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        g = GOALS.get(r["case"], {})
        goal = []
        cpu = r.get("cpu_seconds_32_extrapolated") or r["seconds_cpu"]
        if g.get("seconds"):
            goal.append(f"<= {g['seconds']} s: wall {'met' if r['seconds_wall'] <= g['seconds'] else 'missed'}, "
                        f"CPU{' (extrapolated to 32 images)' if r.get('cpu_seconds_32_extrapolated') else ''} "
                        f"{cpu} s {'met' if cpu <= g['seconds'] else 'MISSED'}")
        if g.get("rss_gb"):
            goal.append(f"<= {g['rss_gb']} GB: {'met' if r['peak_rss_gb'] <= g['rss_gb'] else 'MISSED'}")
        name = f"{r['case']} ({r['model']}{' ' + ','.join(map(str, r['config'])) if r['config'] else ''}, " \
               f"{r['weights']} weights)"
        split = (f" ({r['cpu_seconds_collect']} + {r['cpu_seconds_select']})"
                 if r.get("cpu_seconds_collect") is not None else "")
        lines.append(f"| {name} | {r['layers']} | {r['channels']} ({r['max_in_channels']}) | {r['images']} "
                     f"({r['pixels']:,} px) | {r['seconds_wall']} | {r['seconds_cpu']}{split} | "
                     f"{r['seconds_collect']} | "
                     f"{r['seconds_select']} | {r['seconds_forward_only'] or '-'} | {r['peak_rss_gb']} | "
                     f"{'; '.join(goal) or '-'} | {r['loadavg_before'][0]} / {r['loadavg_after'][0]} |")
    notes = [f"* {r['case']}: {r['note']}" for r in rows if r.get("note")]
    if notes:
        lines += ["", "Notes:", ""] + notes
    return "\n".join(lines) + "\n"


@cli_main
def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.calib_scale", description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default="S,B", help="comma-separated: S, B, edsr (default S,B)")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "calib_scale"))
    ap.add_argument("--skip-forward", action="store_true", help="do not time the bare forward passes")
    ap.add_argument("--images", type=int, default=32,
                    help="calibration images per case (default 32; fewer: the CPU time is also extrapolated to 32)")
    ap.add_argument("--from-rows", help="only write <out>.json/.md from the JSON rows (one per line) in this file, "
                                        "e.g. cases run separately with --one")
    ap.add_argument("--one", help="run one case in this process and print its JSON row")
    args = ap.parse_args(argv)
    if args.one:
        if args.one not in GOALS:
            raise UserError(f"--one must be one of {', '.join(GOALS)}, got {args.one!r}")
        print(json.dumps(run_case(args.one, args.threads, not args.skip_forward, args.images)))
        return 0
    rows = []
    if args.from_rows:
        rows = [json.loads(line) for line in Path(args.from_rows).read_text().splitlines()
                if line.startswith("{")]
        cases = []
    else:
        cases = [c for c in args.cases.split(",") if c]
        bad = [c for c in cases if c not in GOALS]
        if bad or not cases:
            raise UserError(f"--cases must be a comma-separated subset of {', '.join(GOALS)}, got {args.cases!r}")
    for c in cases:
        cmd = [sys.executable, "-m", "bench.calib_scale", "--one", c]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        if args.skip_forward:
            cmd += ["--skip-forward"]
        cmd += ["--images", str(args.images)]
        print(f"case {c} ...", flush=True)
        res = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        if res.returncode != 0:
            raise UserError(f"case {c} failed (exit {res.returncode})")
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"rows": rows}, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(rows))
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
