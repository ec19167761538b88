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

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from golden.args import Parser, When
from golden.errors import UserError, cli_main
from golden.files import write_outputs

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


ROW_FIELDS = {"case": "text", "model": "text", "weights": "text", "layers": "int", "channels": "int",
              "max_in_channels": "int", "images": "int", "pixels": "int", "seconds_wall": "number",
              "seconds_cpu": "number", "seconds_collect": "number", "seconds_select": "number",
              "peak_rss_gb": "number"}


def load_rows(path) -> list[dict]:
    """The format validator of measured rows (:mod:`golden.formats` ``calib-rows``): one JSON object per line
    (lines not starting with ``{`` are skipped: the progress lines of a run), each with the fields the Markdown
    shows; a one-line UserError naming the file, the line and the field otherwise."""
    from golden.formats import INT, LIST, NUMBER, TEXT, need

    kinds = {"text": TEXT, "int": INT, "number": NUMBER}
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise UserError(f"{path}: not JSON lines (not UTF-8 text)") from None
    except OSError as exc:
        raise UserError(f"cannot read rows file {path}: {exc.strerror or exc}") from None
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.startswith("{"):
            continue
        where = f"{path}: line {n}"
        try:
            row = json.loads(line)
        except ValueError:
            raise UserError(f"{where}: not valid JSON") from None
        for key, kind in ROW_FIELDS.items():
            need(row, key, kinds[kind], where)
        if row["case"] not in GOALS:
            raise UserError(f"{where}: field 'case' must be one of {', '.join(GOALS)}, got {row['case']!r}")
        need(row, "config", LIST, where, null=True)
        need(row, "seconds_forward_only", NUMBER, where, null=True)
        for key in ("loadavg_before", "loadavg_after"):
            need(row, key, LIST, where, check=lambda v: len(v) >= 1 and all(isinstance(x, (int, float)) for x in v),
                 expect="a list of load averages")
        for key in ("cpu_seconds_collect", "cpu_seconds_select", "cpu_seconds_32_extrapolated"):
            need(row, key, NUMBER, where, optional=True, null=True)
        need(row, "note", TEXT, where, optional=True)
        rows.append(row)
    if not rows:
        raise UserError(f"{path}: no rows (JSON objects, one per line)")
    return rows


def build_parser() -> Parser:
    ap = Parser(prog="python -m bench.calib_scale", description=__doc__.split("\n")[0])
    measuring = (When("from_rows", None), When("one", None))
    ap.choice_list("--cases", tuple(GOALS), default=["S", "B"], when=measuring,
                   help="comma-separated: S, B, edsr (default S,B)")
    ap.threads(when=When("from_rows", None))
    ap.output_stem("--out", (".json", ".md"), default=str(ROOT / "bench" / "results" / "calib_scale"),
                   when=When("one", None),
                   help="writes OUT.json and OUT.md (default bench/results/calib_scale, the documented result)")
    ap.flag("--skip-forward", when=When("from_rows", None), help="do not time the bare forward passes")
    ap.integer("--images", 1, 100_000, default=32, when=When("from_rows", None),
               help="calibration images per case (default 32; fewer: the CPU time is also extrapolated to 32)")
    ap.input_file("--from-rows", "calib-rows", when=When("one", None),
                  help="only write <out>.json/.md from the JSON rows (one per line) in this file, e.g. cases run "
                       "separately with --one")
    ap.choice("--one", tuple(GOALS), when=When("from_rows", None),
              help="run one case in this process and print its JSON row")
    return ap


@cli_main
def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.one:
        print(json.dumps(run_case(args.one, args.threads, not args.skip_forward, args.images)))
        return 0
    rows, cases = (load_rows(args.from_rows), []) if args.from_rows else ([], args.cases)
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
    text = markdown(rows)   # rendered before anything is written: a bad row writes nothing
    write_outputs({f"{args.out}.json": json.dumps({"rows": rows}, indent=2) + "\n", f"{args.out}.md": text})
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
