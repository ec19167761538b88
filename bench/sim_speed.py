"""Simulation speed of the verification flow: MAC/s of the generated conv engine under Icarus and Verilator.

    python -m bench.sim_speed [--export DIR] [--layers 0] [--simulators icarus,verilator] [--lanes 64]
        [--icarus-tiles 4] [--verilator-tiles all] [--jobs 1] [--work-dir build/sim_speed] [--out bench/results]

Each run is ``sim.verify`` (cocotb testbench, every output compared with the golden model, bit for bit) on one
layer: ``--export`` (a real export) or, without it, a synthetic 64 -> 64 channel layer of ``--size`` pixels
square (golden.synthetic). A MAC is one weight x activation product of the 3x3 x C window of one output,
counted for every compared output (outputs x C x 9). Figures per run:

* ``MAC/s``: MACs / wall time of the whole simulator run (start-up, table loads and drain included);
* ``stream MAC/s``: MACs / wall time of the beat streaming only;
* ``MAC/CPU-s``: MACs / CPU time of the simulator process (cocotb runs in it), i.e. the figure on an idle core;
  on a shared machine the wall figures depend on the load, so both are reported.

``--jobs 1,2`` repeats each Icarus run with that many simulator processes in parallel (``sim.verify --jobs``: each
process takes a contiguous run of ``--layers``, so give at least as many layers as jobs); its ``MAC/s`` is then the
aggregate of the processes over the wall time.

Build times (RTL generation is cached; the simulator build is not when ``--rebuild``) are listed too. Writes
``sim_speed.json`` and ``sim_speed.md`` to ``--out``.
"""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from bench import RESULTS, ROOT
from golden.args import Parser, When
from golden.errors import UserError, cli_main
from golden.files import remove_dir_on_failure, write_outputs
from golden.spec import DatapathSpec
from sim import runner as simrun
from sim.verify import verify

GOALS = {"icarus": 100_000, "verilator": 1_000_000}


def synthetic_export(directory: Path, size: int, seed: int = 0) -> Path:
    from golden.export_io import write_export
    from golden.synthetic import synthetic_layer

    spec = DatapathSpec()
    layer = synthetic_layer(np.random.default_rng(seed), spec, N=1, C=64, O=64, H=size, W=size, index=0)
    return write_export(directory, [layer], spec, {"image": f"synthetic {size}x{size}"})


def _num(v) -> str:
    """A rate, or 'n/a' (e.g. the streaming rate of parallel processes, which has no single wall time)."""
    return "n/a" if not v else f"{v:,.0f}"


def markdown(rows: list[dict], meta: dict) -> str:
    lines = ["# Simulation speed (sim.verify, every output checked against the golden model)", "",
             f"{meta['when']}, {meta['machine']}; input: {meta['input']}; load average at start "
             f"{meta['loadavg']}.", "",
             "| simulator | netlist | lanes | processes | outputs | cycles | MACs | sim s | MAC/s | stream MAC/s | "
             "MAC/CPU-s | build s | goal | bit-exact |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        goal = GOALS.get(r["simulator"])
        lines.append(f"| {r['simulator']} | {r['netlist']} | {r['lanes']} | {r.get('jobs', 1)} | {r['outputs']} | "
                     f"{r['cycles']} | {r['macs']:,} | "
                     f"{r['sim_seconds']:.1f} | {r['mac_per_s']:,.0f} | {_num(r['stream_mac_per_s'])} | "
                     f"{r['mac_per_cpu_s'] or 0:,.0f} | {r['build_seconds']:.1f}{' (cached)' if r['build_cached'] else ''}"
                     f" | {goal:,} | {'yes' if r['bit_exact'] else 'NO'} |")
    lines += ["", f"Command: `{meta['command']}`", ""]
    return "\n".join(lines)


def build_parser() -> Parser:
    from golden.spec import MAX_CHANNELS
    from sim.verify import NETLISTS

    ap = Parser(prog="python -m bench.sim_speed", description=__doc__.split("\n\n")[0])
    ap.input_dir("--export", "export", default=None, help="export folder (default: a synthetic 64->64 layer)")
    ap.int_list("--layers", 0, 100_000, default=[0], help="comma-separated layer indices of the export (default 0)")
    ap.int_list("--jobs", 1, 256, default=[1], help="comma-separated parallel simulator process counts for Icarus "
                                                   "(default 1)")
    ap.integer("--size", 4, 4096, default=48, when=When("export", None),
               help="synthetic layer size in pixels (default 48)")
    ap.choice_list("--simulators", simrun.SIMULATORS, default=list(simrun.SIMULATORS),
                   help="comma-separated (default both)")
    ap.int_list("--lanes", 1, MAX_CHANNELS, default=[64],
                help="comma-separated lane counts (default 64: one beat per output)")
    ap.choice_list("--netlists", NETLISTS, default=list(NETLISTS),
                   help="Icarus netlists: generated file and/or the Yosys-flattened copy (default both)")
    ap.integer("--icarus-tiles", 1, 1_000_000, special=("all",), default=4,
               help="2x2 tiles of the layer under Icarus (default 4)")
    ap.integer("--verilator-tiles", 1, 1_000_000, special=("all",), default="all",
               help="tiles under Verilator (default all: the full layer)")
    ap.work_dir("--work-dir", default=str(ROOT / "build" / "sim_speed"),
                help="RTL, builds and runs (default build/sim_speed/)")
    ap.output_dir("--out", default=str(RESULTS), help="folder for sim_speed.json / .md (default bench/results/, "
                                                     "the documented result)")
    return ap


@cli_main
def main(argv=None):
    args = build_parser().parse_args(argv)
    with remove_dir_on_failure(args.work_dir, "--work-dir"):   # a failed run leaves no work folder it created
        return _run(args, argv)


def _run(args, argv):
    sims = args.simulators
    for s in sims:
        simrun.check_simulator(s)
    lanes_list, layers, jobs_list = args.lanes, args.layers, args.jobs
    work = Path(args.work_dir)
    if args.export:
        export_dir, what = Path(args.export), f"layers {','.join(map(str, layers))} of {args.export}"
    else:
        if layers != [0]:
            raise UserError("the synthetic layer has only layer 0: give --export for other layers")
        if max(jobs_list) > 1:
            raise UserError("--jobs above 1 needs several layers: give --export and --layers")
        export_dir = synthetic_export(work / "bench_export", args.size)
        what = f"synthetic layer {args.size}x{args.size}, 64 -> 64 channels"
    meta = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine":
            f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores", "input": what,
            "loadavg": " ".join(f"{v:.1f}" for v in os.getloadavg()),
            "command": "python -m bench.sim_speed " + " ".join(argv if argv is not None else os.sys.argv[1:])}
    netlists = [v.strip() for v in args.netlists.split(",") if v.strip()]
    rows = []
    for sim in sims:
        for lanes in lanes_list:
            for netlist, jobs in [(n, j) for n in (netlists if sim == "icarus" else ["generated"])
                                  for j in (jobs_list if sim == "icarus" else [1])]:
                tiles = args.icarus_tiles if sim == "icarus" else args.verilator_tiles
                lay = layers if sim == "icarus" else layers[:1]
                r = verify(export_dir, layers=lay, tiles=tiles, simulator=sim, lanes=lanes, work_dir=work,
                           netlist=netlist, quiet=False, jobs=jobs)
                row = {k: r[k] for k in ("simulator", "lanes", "outputs", "cycles", "macs", "sim_seconds",
                                         "mac_per_s", "stream_mac_per_s", "mac_per_cpu_s", "stream_mac_per_cpu_s",
                                         "cycles_per_s", "build_seconds", "build_cached", "bit_exact", "mismatches",
                                         "tiles")}
                row["netlist"] = netlist
                row["jobs"] = r.get("jobs", 1)
                row["layers"] = lay
                rows.append(row)
                goal = GOALS.get(sim, 0)
                print(f"{sim:9s} {netlist:9s} lanes {lanes:3d} x{row['jobs']}: {r['outputs']} outputs, {r['cycles']} cycles, "
                      f"{r['macs']:,} MACs in {r['sim_seconds']:.1f} s: {r['mac_per_s']:,.0f} MAC/s (stream "
                      f"{_num(r['stream_mac_per_s'])}; {r['mac_per_cpu_s'] or 0:,.0f} per CPU s; goal {goal:,}); "
                      f"bit-exact: {r['bit_exact']}")
    out = Path(args.out)
    write_outputs({out / "sim_speed.json": json.dumps({"meta": meta, "runs": rows}, indent=2) + "\n",
                   out / "sim_speed.md": markdown(rows, meta)})
    print(f"wrote {out / 'sim_speed.json'} and {out / 'sim_speed.md'}")
    return 0 if all(r["bit_exact"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
