"""Verify the generated uniform baseline engine (``uniform_engine``) under cocotb, bit for bit, on random layers.

    python -m sim.uniform [--act-bits 6] [--weight-bits 6] [--channels 16] [--lanes 4] [--layers 3x3:16,1x1:16]
        [--size 5x6] [--samples 1] [--out-channels 3] [--seed 0] [--simulator icarus] [--fault NAME]
        [--work build/sim_uniform]

Here the layers are random operands within the spec's bounds (:func:`golden.uniform_layer.random_operands`); exported
layers with static activations (``dfsq.export --method minmax|brecq|qdrop``) run on the same engine through
``python -m sim.verify``. The transaction-level model is :func:`golden.uniform_layer.accumulate`. Masked (padding)
taps carry random activations, which the engine must ignore. Every output of every layer is checked (sample, output
channel, pixel), in order, by ``sim/tb_uniform_engine.py``. Exit 0 when every output matches, 1 on a mismatch, 2 on
bad input.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from golden.args import Parser
from golden.errors import UserError, cli_main
from golden.files import check_output_dir, remove_dir_on_failure
from golden.spec import SpecError
from golden.uniform_layer import accumulate, random_operands
from golden.uniform_spec import UniformSpec
from hw.generate import generate
from hw.tops import UNIFORM_ENGINE
from hw.stream import uniform_beats
from hw.units.uniform_engine import UNIFORM_FAULTS, check_uniform_lanes

from . import runner as simrun
from .stimulus import RESULT_ENV, STIMULUS_ENV, UNIFORM_FORMAT, pack_fields, write_stimulus

__all__ = ["UNIFORM_FORMAT", "layer_stimulus", "verify_uniform", "main"]

TOP = "uniform_engine"
#: the default work folder (outside the tracked tree, ignored by git)
DEFAULT_WORK = Path(__file__).resolve().parent.parent / "build" / "sim_uniform"


def layer_stimulus(ops, spec: UniformSpec, lanes: int, rng: np.random.Generator, junk: bool = True,
                   outputs=None) -> dict:
    """Packed beats, expected accumulators and output keys of the outputs ``(n, o, y, x)`` of one layer (default
    every output, in schedule order: sample, output channel, pixel). ``junk``: masked taps carry random activations
    instead of 0 (the engine must ignore them)."""
    acc = accumulate(ops, spec.for_layer(ops.w.shape[1], ops.w.shape[-1]))
    N, O, H, W = acc.shape
    if outputs is None:
        outputs = [(n, o, y, x) for n in range(N) for o in range(O) for y in range(H) for x in range(W)]
    outputs = [tuple(int(v) for v in k) for k in outputs]
    acts, weights, masks, biases, firsts, lasts = [], [], [], [], [], []
    for _, beats in uniform_beats(ops, lanes, outputs):
        for b in beats:
            act = b.act.copy()
            if junk:
                masked = [(b.mask >> t) & 1 == 0 for t in range(act.shape[1])]
                act[:, masked] = rng.integers(-spec.a_max, spec.a_max + 1, (act.shape[0], sum(masked)))
            acts.append(act.ravel())
            weights.append(b.weight.ravel())
            masks.append(b.mask)
            biases.append(b.bias)
            firsts.append(b.first)
            lasts.append(b.last)
    return {"act": pack_fields(np.array(acts), spec.a_bits), "weight": pack_fields(np.array(weights), spec.w_bits),
            "mask": np.array(masks, np.int64), "bias": np.array(biases, np.int64),
            "first": np.array(firsts, np.int8), "last": np.array(lasts, np.int8),
            "expected": np.array([acc[k] for k in outputs], np.int64), "keys": np.array(outputs, np.int64)}


def _parse_layers(arg: str) -> list[tuple[int, int]]:
    """``3x3:16,1x1:8`` -> [(3, 16), (1, 8)] (kernel, input channels)."""
    out = []
    for part in str(arg).split(","):
        try:
            k, c = part.split(":")
            kk = k.split("x")
            if len(kk) != 2 or kk[0] != kk[1] or not (k + c).replace("x", "").isdigit():
                raise ValueError
            out.append((int(kk[0]), int(c)))
        except ValueError:
            raise UserError(f"{part!r} is not KxK:C (e.g. 3x3:16 or 1x1:16)") from None
        if out[-1][0] not in (1, 3) or not 1 <= out[-1][1] <= 4096:
            raise UserError(f"{part!r}: the kernel must be 1x1 or 3x3 and C in 1..4096")
    return out


def _parse_size(arg: str) -> tuple[int, int]:
    parts = str(arg).split("x")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise UserError(f"{arg!r} is not HxW (e.g. 5x6)")
    h, w = (int(v) for v in parts)
    if not (1 <= h <= 1024 and 1 <= w <= 1024):
        raise UserError(f"{arg!r}: H and W must be in 1..1024")
    return h, w


def verify_uniform(*, act_bits=6, weight_bits=6, channels=16, lanes=4, layers=((3, 16), (1, 16)), size=(5, 6),
                   samples=1, out_channels=3, seed=0, simulator="icarus", fault=None, work=None) -> dict:
    """Generate the engine, write a stimulus of random layers, simulate, and return a report dict (``passed``,
    ``outputs``, ``mismatches``, ``first_mismatch`` with its location and values, ``cycles``, seconds)."""
    try:
        spec = UniformSpec(act_bits=act_bits, weight_bits=weight_bits, channels=channels)
        for k, c in layers:
            if not spec.covers(c, k) or c < 1:
                raise UserError(f"a {k}x{k} layer of {c} input channels does not run on an engine of {channels}")
    except SpecError as exc:
        raise UserError(str(exc)) from None
    for name, v in (("samples", samples), ("out_channels", out_channels)):
        if not isinstance(v, int) or v < 1:
            raise UserError(f"{name} must be a positive integer, not {v!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise UserError(f"seed must be a non-negative integer, not {seed!r}")
    try:
        check_uniform_lanes(spec, lanes)
    except (TypeError, ValueError) as exc:
        raise UserError(str(exc)) from None
    simrun.check_simulator(simulator)
    work = check_output_dir(work or DEFAULT_WORK, "--work").resolve()   # absolute: the testbench runs in another folder
    print(f"generating the uniform engine ({spec.act_bits}-bit activations, {lanes} lanes) in {work}",
          file=sys.stderr, flush=True)
    v_path, _ = generate("uniform-engine", spec, lanes, fault, work / "rtl")
    rng = np.random.default_rng(seed)
    arrays, meta_layers = [], []
    for j, (k, c) in enumerate(layers):
        ops = random_operands(rng, spec.for_layer(c, k), N=samples, O=out_channels, H=size[0], W=size[1])
        arrays.append(dict(layer_stimulus(ops, spec, lanes, rng), groups=np.int64(-(-c // lanes))))
        meta_layers.append({"index": j, "name": f"random {k}x{k}, {c} inputs"})
    stim_path = work / f"{v_path.stem}.stimulus.npz"
    write_stimulus(stim_path, UNIFORM_FORMAT, {"spec": spec.widths(), "lanes": lanes, "latency": 6,
                                               "layer_meta": meta_layers}, arrays)
    print(f"building under {simulator}, then simulating {sum(len(a['expected']) for a in arrays)} outputs of "
          f"{len(arrays)} random layers", file=sys.stderr, flush=True)
    bld = simrun.build(v_path, toplevel=TOP, simulator=simulator, build_dir=work / f"build-{simulator}-{v_path.stem}")
    run_dir = work / "run"
    result_path = run_dir / "result.npz"
    run_dir.mkdir(parents=True, exist_ok=True)
    result_path.unlink(missing_ok=True)
    info = simrun.run(bld, test_module=UNIFORM_ENGINE.testbench, test_dir=run_dir,
                      extra_env={STIMULUS_ENV: str(stim_path), RESULT_ENV: str(result_path)})
    if not result_path.is_file():
        raise simrun.SimulationFailed(f"the testbench wrote no result file; see {info['log']}")
    with np.load(result_path, allow_pickle=False) as z:
        res = {k: z[k] for k in z.files}
    expected = np.concatenate([a["expected"] for a in arrays])
    keys = np.concatenate([a["keys"] for a in arrays])
    layer_of = np.concatenate([np.full(len(a["expected"]), j) for j, a in enumerate(arrays)])
    report = {"verilog": str(v_path), "simulator": simulator, "fault": fault, "outputs": int(len(expected)),
              "received": int(res["received"]), "mismatches": int(res["mismatches"]),
              "cycles": int(res["cycles"]), "sim_seconds": round(float(info["seconds"]), 2),
              "build_seconds": round(bld.seconds, 2), "passed": bool(info["passed"]) and int(res["mismatches"]) == 0}
    k = int(res["first_mismatch"])
    if k >= 0:
        got = int(res["actual"][k]) if k < len(res["actual"]) else None
        n, o, y, x = (int(v) for v in keys[k])
        report["first_mismatch"] = {"output": k, "layer": meta_layers[int(layer_of[k])]["name"], "sample": n,
                                    "output_channel": o, "y": y, "x": x, "expected": int(expected[k]), "got": got}
    return report


def build_parser() -> Parser:
    from golden.spec import ACT_BITS_RANGE, MAX_CHANNELS, WEIGHT_BITS_RANGE

    p = Parser(prog="python -m sim.uniform", description=__doc__.split("\n\n")[0])
    p.integer("--act-bits", *ACT_BITS_RANGE, default=6)
    p.integer("--weight-bits", *WEIGHT_BITS_RANGE, default=6)
    p.integer("--channels", 1, MAX_CHANNELS, default=16, help="input channels of the engine (default 16)")
    p.integer("--lanes", 1, MAX_CHANNELS, default=4, help="lanes, divides channels (default 4)")
    p.text("--layers", _parse_layers, default=[(3, 16), (1, 16)],
           help="kernel:inputs of each random layer (default 3x3:16,1x1:16)")
    p.text("--size", _parse_size, default=(5, 6), help="HxW of each layer (default 5x6)")
    p.integer("--samples", 1, 1024, default=1)
    p.integer("--out-channels", 1, MAX_CHANNELS, default=3)
    p.seed()
    p.choice("--simulator", simrun.SIMULATORS, default="icarus")
    p.choice("--fault", sorted(UNIFORM_FAULTS), default=None, help="mutation test only")
    p.work_dir("--work", default=str(DEFAULT_WORK), help="work folder (default build/sim_uniform; a run that fails "
                                                         "before its verdict removes it when it created it)")
    return p


@cli_main
def main(argv=None):
    args = build_parser().parse_args(argv)
    with remove_dir_on_failure(args.work, "--work"):
        report = verify_uniform(act_bits=args.act_bits, weight_bits=args.weight_bits, channels=args.channels,
                                lanes=args.lanes, layers=args.layers, size=args.size, samples=args.samples,
                                out_channels=args.out_channels, seed=args.seed, simulator=args.simulator,
                                fault=args.fault, work=args.work)
    print(json.dumps(report, indent=1))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
