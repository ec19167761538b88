#!/usr/bin/env python3
"""An audit as a new user would run it: commands with bad input nobody listed, on a fresh clone, one process each.

    python scripts/audit_bad_inputs.py CLONE [--venv PATH]

Each case is a command line run in CLONE (the clone's own code) with its expected exit code (2: bad input; 0: a
valid run that must finish). Checked for each: the exit code, one line on stderr for a refusal (progress bars
aside), no traceback, and no new file in the clone (``git status --porcelain --ignored``) or in the scratch folder
beside it unless the case writes there on purpose. Prints one line per case and a summary with the counts of
tracebacks, wrong exit codes (silent wrong results), extra stderr lines and leftovers; exit 1 if any.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

P = "weights/dfsq_x2_a4w4_words4.npz"
PR = "weights/dfsq_rdn_s_x2_a4w4_words4.npz"
# (command, expected exit, files it may create under the scratch folder S)
CASES = [
    ("python -m dfsq.evaluate --scale 3", 2, ()),
    ("python -m dfsq.evaluate --datasets Set5 --data-root /etc", 2, ()),
    (f"python -m dfsq.evaluate --method minmax --act-bits 3 --weight-bits 5 --params {P} --datasets Set5", 2, ()),
    ("python -m dfsq.evaluate --method dfsq-hw --scale-bits 3", 2, ()),
    ("python -m dfsq.evaluate --method dfsq-hw --denorm fused --sigma-bits 6", 2, ()),
    (f"python -m dfsq.evaluate --model rdn --method dfsq --params {P} --datasets Set5", 2, ()),
    ("python -m dfsq.evaluate --method bicubic --datasets Set5 --json /dev/null", 2, ()),
    ("python -m dfsq.evaluate --json S", 2, ()),
    ("python -m dfsq.evaluate --save-images README.md", 2, ()),
    ("python -m dfsq.evaluate --device tpu", 2, ()),
    ("python -m dfsq.evaluate --method bicubic --datasets Set5,Set5", 2, ()),
    ("python -m dfsq.evaluate --method fp --weights weights/README.md --datasets Set5", 2, ()),
    (f"DFSQ_FASTQUANT=maybe python -m dfsq.evaluate --method dfsq --params {P} --datasets Set5", 2, ()),
    ("python -m dfsq.evaluate --method bicubic --datasets Set5 --json S/b.json", 0, ("b.json",)),
    ("python -m dfsq.calibrate --images 0 --out S/p.npz", 2, ()),
    ("python -m dfsq.calibrate --calib /etc --images 1 --out S/p.npz", 2, ()),
    ("python -m dfsq.calibrate --bins 10 --out S/p.npz", 2, ()),
    ("python -m dfsq.calibrate --restarts 2 --out S/p.npz", 2, ()),
    ("python -m dfsq.calibrate --model rdn --weights weights/edsr_baseline_x2.pt --images 1 --out S/p.npz", 2, ()),
    (f"python -m dfsq.export --params {P} --image sample --crop 0,0,0,0 --out S/e", 2, ()),
    (f"python -m dfsq.export --params {P} --image sample --crop 0,0,8,8 --layers 40 --out S/e", 2, ()),
    ("python -m dfsq.export --method dfsq-uniform --bits 6 --image sample --out S/u", 2, ()),
    (f"python -m dfsq.export --params {P} --image sample --out README.md", 2, ()),
    (f"python -m dfsq.export --params {P} --image weights/README.md --out S/e", 2, ()),
    (f"python -m dfsq.export --params {PR} --image sample --crop 0,0,8,8 --out S/e", 2, ()),
    (f"python -m dfsq.export --params {P} --image sample --crop 0,0,8,8 --out S/exp", 0, ("exp",)),
    ("python -m golden.check --export S/exp --layers 99", 2, ()),
    ("python -m golden.check --export weights", 2, ()),
    ("python -m golden.check --export S/exp --scale-bits 3", 2, ()),
    ("python -m golden.check --export S/exp --json S/exp/report.json", 2, ()),
    ("python -m golden.check --export S/exp --quiet", 0, ()),
    ("python -m hw.generate --channels 0 --out S/r", 2, ()),
    ("python -m hw.generate --channels 6 --lanes 4 --out S/r", 2, ()),
    ("python -m hw.generate --top engine --normalized --out S/r", 2, ()),
    ("python -m hw.generate --top uniform-engine --gap 3 --out S/r", 2, ()),
    ("python -m hw.generate --top mean-unit --denorm split --variant fold --out S/r", 2, ()),
    ("python -m hw.generate --top mac --codes-in --out S/r", 2, ()),
    ("python -m hw.generate --out /dev/null/x", 2, ()),
    ("python -m hw.throughput --height 0", 2, ()),
    ("python -m hw.throughput --fmax-mhz -5", 2, ()),
    ("python -m hw.throughput --json hw/", 2, ()),
    ("python -m hw.throughput --model edsr --rdn-config S", 2, ()),
    ("python -m hw.throughput --model rdn --rdn-config 4,4", 2, ()),
    ("python -m hw.throughput --model edsr --scale 3 --json S/t.json", 0, ("t.json",)),
    ("python -m hw.report --results /etc/passwd --sweep none --engine-sweep none --ecp5 none --out S/h.md "
     "--json S/h.json --cache S/hc", 2, ()),
    ("python -m hw.report --out docs", 2, ()),
    ("python -m hw.report --json S/h.md --out S/h.md", 2, ()),
    ("python -m sim.verify --export S/exp --tiles 0", 2, ()),
    ("python -m sim.verify --export S/exp --tile-size 100 --work-dir S/w", 2, ()),
    ("python -m sim.verify --export S/exp --out-channels 999 --work-dir S/w", 2, ()),
    ("python -m sim.verify --export S/exp --simulator vcs", 2, ()),
    ("python -m sim.verify --export S/exp --top mean-unit --work-dir S/w", 2, ()),
    ("python -m sim.verify --export S/exp --layers 0 --work-dir README.md", 2, ()),
    ("python -m sim.verify --export S/exp --layers 0 --jobs 0", 2, ()),
    ("python -m sim.uniform --channels 4 --lanes 4 --layers 3x3:6 --work S/su", 2, ()),
    ("python -m sim.uniform --size 3x --work S/su", 2, ()),
    ("python -m sim.uniform --fault nope --work S/su", 2, ()),
    ("python -m dfsq.train --data /etc --minutes 0.01 --out S/t.pt", 2, ()),
    ("python -m dfsq.train --data weights --init README.md --minutes 0.01 --out S/t.pt", 2, ()),
    ("python -m dfsq.train --data weights --minutes 0 --out S/t.pt", 2, ()),
    ("python -m dfsq.train --data weights,weights --minutes 1 --out S/t.pt", 2, ()),
    ("python -m dfsq.plot_distributions --layer 99 --images 1 --out S/f.png", 2, ()),
    ("python -m dfsq.plot_distributions --sample 8 --images 8 --out S/f.png", 2, ()),
    ("python -m dfsq.plot_distributions --out S/f.jpg", 2, ()),
    ("python -m bench.psnr_table --models vgg", 2, ()),
    ("python -m bench.psnr_table --scheduler udp://x", 2, ()),
    ("python -m bench.psnr_table --render-only --no-render", 2, ()),
    ("python -m bench.psnr_table --render-only --cache README.md --out S/r.md", 2, ()),
    ("python -m bench.psnr_table --methods dfsq --bits 9", 2, ()),
    ("python -m bench.minmax_study --configs nope", 2, ()),
    ("python -m bench.minmax_study --render-only --cache weights/README.md --md S/m.md --doc S/d.md", 2, ()),
    ("python -m bench.golden_speed --export /etc", 2, ()),
    ("python -m bench.golden_speed --repeat 0", 2, ()),
    ("python -m bench.golden_speed --sizes none", 2, ()),
    ("python -m bench.sim_speed --simulators icarus --export S/exp --layers 99 --work-dir S/ss --out S", 2, ()),
    ("python -m bench.selection_speed --replot --out S/nothing", 2, ()),
    ("python -m bench.sensitivity --datasets Nope", 2, ()),
    ("python -m bench.calib_scale --cases S,S", 2, ()),
    ("python -m bench.fakequant_speed --repeat -2", 2, ()),
    ("python -m bench.fakequant_speed --model edsr --methods fp --image Set5/nope --out S/fq", 2, ()),
    ("python -m bench.scale_bits --scale-bits 2", 2, ()),
    ("python -m bench.denorm_format --formats 6:9", 2, ()),
    ("python -m demo --tiles 0", 2, ()),
    ("python -m demo --jobs 300", 2, ()),
    ("python -m demo --compare-crop 250,250,32,32 --out S/demo", 2, ()),
    ("python -m demo --model rdn --params weights/dfsq_x2_a4w4_words4.npz --out S/demo", 2, ()),
    ("python -m dfsq.fastquant", 0, ()),
    ("python -m hw.generate --help", 0, ()),
]
PROGRESS = re.compile(r"\d+%\|")


def state(clone: Path) -> set:
    out = subprocess.run(["git", "status", "--porcelain", "--ignored", "--untracked-files=all"], cwd=clone,
                         capture_output=True, text=True, check=True).stdout
    return set(out.splitlines())


def tree(p: Path) -> set:
    return {str(q.relative_to(p)) for q in p.rglob("*")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("clone")
    ap.add_argument("--venv", default=None, help="virtual environment (default CLONE/.venv)")
    args = ap.parse_args()
    clone = Path(args.clone).resolve()
    venv = Path(args.venv or clone / ".venv").resolve()
    scratch = Path(tempfile.mkdtemp(prefix="audit-"))
    env = dict(os.environ, PATH=f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", PYTHONPATH=str(clone))
    counts = {"cases": 0, "tracebacks": 0, "wrong_exit": 0, "extra_stderr_lines": 0, "leftovers": 0}
    failures = []
    for cmd, want, creates in CASES:
        cmd = cmd.replace("S/", f"{scratch}/").replace(" S ", f" {scratch} ")
        cmd = cmd[:-2] + f" {scratch}" if cmd.endswith(" S") else cmd
        before, scratch_before = state(clone), tree(scratch)
        t0 = time.perf_counter()
        p = subprocess.run(cmd, shell=True, cwd=clone, env=env, capture_output=True, text=True, timeout=900)
        seconds = time.perf_counter() - t0
        lines = [ln for ln in p.stderr.splitlines() if ln.strip() and not PROGRESS.search(ln)]
        new = sorted((state(clone) - before) | {f"scratch/{x}" for x in tree(scratch) - scratch_before
                                                 if not any(x == c or x.startswith(c + "/") for c in creates)})
        problems = []
        counts["cases"] += 1
        if "Traceback" in p.stderr:
            counts["tracebacks"] += 1
            problems.append("traceback")
        if p.returncode != want:
            counts["wrong_exit"] += 1
            problems.append(f"exit {p.returncode}, expected {want}")
        if want == 2 and not (len(lines) == 1 and lines[0].startswith("error: ")):
            counts["extra_stderr_lines"] += 1
            problems.append(f"{len(lines)} stderr lines")
        if new:
            counts["leftovers"] += 1
            problems.append(f"left {new[:3]}")
        shown = lines[-1][:110] if lines else p.stdout.strip().splitlines()[-1][:110] if p.stdout.strip() else ""
        print(f"{'FAIL' if problems else 'ok  '} {p.returncode} {seconds:5.1f}s {cmd.replace(str(scratch), 'S')}"
              f"\n      {shown}{'  <-- ' + '; '.join(problems) if problems else ''}", flush=True)
        if problems:
            failures.append(cmd)
    shutil.rmtree(scratch, ignore_errors=True)
    print(" ".join(f"{k}={v}" for k, v in counts.items()))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
