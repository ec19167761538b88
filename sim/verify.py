"""Verify generated RTL against the golden model on exported layers, bit for bit, under cocotb.

    python -m sim.verify --export DIR [--layers all|0,5,...] [--tiles N|all] [--simulator icarus|verilator]
                         [--lanes L] [--jobs J] [--json FILE]

Steps: load the export (golden.export_io) and its DatapathSpec; generate the RTL of that configuration
(hw.generate.generate); build it once per configuration and simulator (cached under ``--work-dir``); compute the
stimulus and the golden accumulators in batch (sim.stimulus, golden.layer); run the cocotb testbench
(sim.tb_engine, or sim.tb_mac with ``--top mac``); compare every output. The report lists the layers, outputs
compared, mismatches, simulated cycles and MAC/s; on a mismatch it names the first one as (layer, sample, output
channel, y, x) with expected and actual values in hex and decimal, and re-runs that single output with waves on to
give the path of a waveform file. Exit code: 0 bit-exact, 1 any mismatch, 2 bad input or a missing simulator.

Layers of any geometry (RDN): the engine is generated for the export's widest layer (``spec.channels`` inputs,
3x3 lanes: ``engine_spec``); each layer streams its own ``ceil(C / lanes)`` beats per output, a 1x1 layer on the
centre tap, and is compared with the golden model run on its own geometry.

Exports with static activations (``dfsq.export --method minmax|brecq|qdrop``: one step and zero point per conv
input) run on the static uniform engine (``hw.uniform_engine``, testbench ``sim.tb_uniform_engine``): operands
``w' = q_w - zp_w`` and ``a' = q_a - zp_a`` of the exported codes, ``bias_int`` of golden.uniform_spec, the same
tiles and output channels; masked (padding) taps carry random activations, which the engine must ignore.

Python API: :func:`verify` returns the report dict (what ``--json`` writes).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from golden.args import Parser, When
from golden.errors import UserError, cli_main
from golden.files import atomic_output, check_output_dir, check_output_file, remove_dir_on_failure
from golden.spec import MAX_CHANNELS, TAPS, DatapathSpec, add_denorm_args
from sim import runner as simrun
from sim import stimulus as st

DEFAULT_TILES = 2
DEFAULT_TILE_SIZE = 2
MAC_OUTPUTS_PER_LAYER = 2
NETLISTS = ("generated", "flat")
#: where RTL, builds and runs go by default (outside the tracked tree, ignored by git; absolute, so the testbench
#: finds its files whatever the current folder)
DEFAULT_WORK = Path(__file__).resolve().parent.parent / "build" / "sim_verify"


def _say(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def parse_layers(arg, available: list[int]) -> list[int]:
    """'all' / None -> every layer; '0,5,7' or an iterable of ints -> those (each must exist)."""
    if arg is None or (isinstance(arg, str) and arg.strip().lower() == "all"):
        return list(available)
    if isinstance(arg, str):
        try:
            wanted = [int(v) for v in arg.split(",") if v.strip()]
        except ValueError:
            raise UserError(f"--layers must be 'all' or comma-separated indices, got {arg!r}") from None
    else:
        wanted = [int(v) for v in arg]
    if not wanted:
        raise UserError("no layers selected")
    missing = sorted(set(wanted) - set(available))
    if missing:
        raise UserError(f"the export has no layer {missing[0]} (it has {min(available)}..{max(available)})")
    return sorted(set(wanted))


def parse_tiles(arg):
    if arg is None:
        return DEFAULT_TILES
    if isinstance(arg, str):
        if arg.strip().lower() == "all":
            return "all"
        try:
            arg = int(arg)
        except ValueError:
            raise UserError(f"--tiles must be a positive integer or 'all', got {arg!r}") from None
    if int(arg) < 1:
        raise UserError(f"--tiles must be >= 1, got {arg}")
    return int(arg)


MAX_DEFAULT_LANES = 64


def engine_spec(spec: DatapathSpec) -> DatapathSpec:
    """The engine's spec for an export's spec: the same configuration and channels, 3x3 lanes (a 1x1 layer runs on
    the centre tap), so its accumulator covers every layer of the export."""
    return spec.for_layer(spec.channels, 3)


def choose_lanes(spec: DatapathSpec, lanes) -> int:
    """Default: lanes = channels up to 64 (EDSR: one beat per output, the most MACs per simulated cycle), else the
    largest divisor of channels not above 64 (RDN, 1024 channels: 64 lanes, 1 to 16 beats per output)."""
    if lanes is None:
        return max(d for d in range(1, min(spec.channels, MAX_DEFAULT_LANES) + 1) if spec.channels % d == 0)
    lanes = int(lanes)
    if lanes < 1 or spec.channels % lanes:
        raise UserError(f"--lanes must divide the channel count {spec.channels}, got {lanes}")
    return lanes


def expected_ports(spec: DatapathSpec, lanes: int, top: str, codes_in: bool = False) -> dict:
    """Contract 4's port widths (``codes_in``: the engine without point tables, beats carry point codes; a
    :class:`golden.uniform_spec.UniformSpec`: the static uniform engine's)."""
    from golden.export_io import is_static_spec

    if is_static_spec(spec):
        return {"in_valid": 1, "in_ready": 1, "in_first": 1, "in_last": 1, "in_mask": TAPS,
                "in_act": lanes * TAPS * spec.a_bits, "in_weight": lanes * TAPS * spec.w_bits,
                "in_bias": spec.bias_bits, "out_valid": 1, "out_ready": 1, "out_acc": spec.acc_bits}
    if top == "mac":
        return {"in_valid": 1, "in_first": 1, "in_weight": spec.w_bits, "in_code": spec.code_bits, "out_valid": 1}
    if top == "mean-unit":
        return {"in_valid": 1, "in_ready": 1, "in_first": 1, "in_last": 1, "in_mu": spec.scale_bits,
                "in_weight": TAPS * spec.w_bits, "in_bias": spec.bias_bits, "out_valid": 1, "out_ready": 1,
                "out_class": 4, "out_start": spec.start_bits}
    groups = spec.channels // lanes
    tables = {} if codes_in else {"tbl_we": 1, "tbl_chan": st.clog2(spec.channels), "tbl_idx": spec.act_bits,
                                  "tbl_code": spec.code_bits}
    beat = {"in_code": lanes * TAPS * spec.code_bits} if codes_in else {"in_idx": lanes * TAPS * spec.act_bits}
    return {**tables,
            "in_valid": 1, "in_ready": 1, "in_first": 1, "in_last": 1, "in_group": st.clog2(groups), "in_mask": TAPS,
            **beat, "in_weight": lanes * TAPS * spec.w_bits,
            **({"in_sigma": lanes * spec.sigma_bits, "in_start": spec.start_bits,
                **({"in_shift": lanes * spec.shift_bits} if spec.shift_bits else {})} if spec.split else
               {"in_sigma": lanes * spec.scale_bits, "in_mu": lanes * spec.scale_bits, "in_bias": spec.bias_bits}),
            "out_valid": 1, "out_ready": 1, "out_acc": spec.acc_bits}


def _port_widths(sidecar: dict) -> dict:
    ports = sidecar.get("ports")
    out = {}
    if isinstance(ports, dict):
        for name, p in ports.items():
            if isinstance(p, dict) and "width" in p:
                out[name] = int(p["width"])
            elif isinstance(p, int):
                out[name] = p
    elif isinstance(ports, list):
        for p in ports:
            if isinstance(p, dict) and "name" in p and "width" in p:
                out[str(p["name"])] = int(p["width"])
    return out


def _generator_digest(top, spec, lanes, fault, tables=True, flat=False) -> str:
    """What the generated bytes depend on: hw's and the spec's sources, amaranth's version and the arguments."""
    import amaranth

    import golden.spec
    import hw

    h = hashlib.sha256()
    root = Path(hw.__file__).parent
    for path in sorted(root.rglob("*.py")) + [Path(golden.spec.__file__)]:
        h.update(str(path.relative_to(root) if path.is_relative_to(root) else path.name).encode())
        h.update(path.read_bytes())
    h.update(json.dumps([top, spec.widths(), lanes, fault, tables, amaranth.__version__]
                        + ([flat] if flat else [])).encode())
    return h.hexdigest()


def generate_rtl(spec: DatapathSpec, lanes: int, top: str, fault, out_dir: Path,
                 codes_in: bool = False) -> tuple[Path, dict]:
    """hw.generate for this configuration (reused when hw's sources and the arguments are unchanged: the generator
    is deterministic, and a 64-lane engine takes a while); checks the sidecar's ports against contract 4."""
    try:
        from hw.generate import generate, load_sidecar, stem
    except ImportError as exc:
        raise UserError(f"cannot import hw.generate ({exc}): the RTL generator is not installed") from None
    out_dir.mkdir(parents=True, exist_ok=True)
    name = stem(top, spec, lanes, fault, tables=not codes_in)
    v_path, json_path = out_dir / f"{name}.v", out_dir / f"{name}.json"
    stamp = out_dir / f"{name}.digest"
    digest = _generator_digest(top, spec, lanes, fault, not codes_in)
    with simrun._locked(out_dir / f"{name}.lock"):   # processes sharing a work dir generate each file once
        sidecar = None
        if v_path.is_file() and json_path.is_file() and stamp.is_file() and \
                stamp.read_text(errors="replace") == digest:
            try:
                sidecar = load_sidecar(json_path)
            except UserError:   # a damaged cached sidecar: generate again, never use it
                sidecar = None
        if sidecar is None:
            v_path, json_path = generate(top=top, spec=spec, lanes=lanes, fault=fault, out_dir=str(out_dir),
                                         tables=not codes_in)
            v_path, json_path = Path(v_path), Path(json_path)
            with atomic_output(stamp) as tmp:
                tmp.write_text(digest)
            sidecar = load_sidecar(json_path)
    widths = _port_widths(sidecar)
    for pname, width in expected_ports(spec, lanes, top, codes_in).items():
        if pname in widths and widths[pname] != width:
            raise UserError(f"{json_path}: port {pname} is {widths[pname]} bits wide, contract 4 says {width}")
    return v_path, sidecar


def check_selection(layers, tiles, tile_size: int, out_channels, top: str = "engine") -> None:
    """UserError when a tile or output-channel count does not fit a chosen layer (instead of clamping it)."""
    if top != "engine" or tiles == "all":
        return
    for lay in layers:
        n, c, o, h, w = lay.shape
        if tile_size > min(h, w):
            raise UserError(f"--tile-size {tile_size} does not fit layer {lay.index} ({h}x{w} pixels)")
        if out_channels is not None and out_channels > o:
            raise UserError(f"--out-channels {out_channels} exceeds the {o} output channels of layer {lay.index}")


def _layer_macs(layer, outputs: int) -> int:
    """Weight x activation products of ``outputs`` outputs: C x k x k each (padding taps counted, as before)."""
    return int(outputs) * int(layer.shape[1]) * int(layer.kernel) ** 2


def _operands(layer, spec):
    """Golden operands and accumulators of ``layer`` on its own geometry."""
    from golden.layer import accumulate, layer_spec, operands

    ops = operands(layer, spec)
    return ops, accumulate(ops, layer_spec(spec, layer.shape[1], layer.kernel))


def prepare_engine(layers, spec, lanes, tiles, tile_size, seed, quiet=True, only=None, out_channels=None,
                   codes_in=False):
    """Stimulus arrays + metadata for each layer. ``only`` = (pixel (n,y,x), output channel) restricts the stimulus
    to that single output (used for the waveform re-run)."""
    from tqdm import tqdm

    arrays, meta = [], []
    for layer in tqdm(layers, desc="stimulus", unit="layer", disable=quiet or len(layers) < 2, file=sys.stderr):
        ops, acc = _operands(layer, spec)
        n, c, o, h, w = layer.shape
        if only is None:
            pixels = st.select_pixels(n, h, w, tiles, tile_size=tile_size, seed=seed + layer.index,
                                      rotate=layer.index)
            ochs = None if tiles == "all" else st.select_out_channels(o, out_channels, layer.index)
        else:
            pixels = np.asarray([only[0]], dtype=np.int64)
            ochs = np.asarray([only[1]])
        d = st.engine_layer_stimulus(layer, ops, acc, spec, lanes, pixels, ochs, codes_in=codes_in)
        arrays.append(d)
        meta.append({"index": layer.index, "name": layer.name, "outputs": int(len(d["expected"])),
                     "kernel": int(layer.kernel), "in_channels": int(layer.shape[1]), "groups": int(d["groups"]),
                     "pixels": int(len(pixels)), "macs": _layer_macs(layer, len(d["expected"])),
                     "table_writes": int(len(d["table_chan"]))})
    return arrays, meta


def tile_outputs(layer, tiles, tile_size, seed, out_channels=None, only=None) -> list[tuple[int, int, int, int]]:
    """The outputs (n, o, y, x) of ``layer`` that a run checks, in stream order (sample, output channel, pixel):
    the tiles of :func:`sim.stimulus.select_pixels` and the output channels of ``select_out_channels``, as for the
    DFSQ engine (``only`` = (pixel (n, y, x), output channel): that single output)."""
    n, c, o, h, w = layer.shape
    if only is not None:
        return [(int(only[0][0]), int(only[1]), int(only[0][1]), int(only[0][2]))]
    pixels = st.select_pixels(n, h, w, tiles, tile_size=tile_size, seed=seed + layer.index, rotate=layer.index)
    ochs = np.arange(o) if tiles == "all" else st.select_out_channels(o, out_channels, layer.index)
    return [(int(pn), int(oc), int(py), int(px)) for s_ in range(n) for oc in ochs
            for pn, py, px in pixels if pn == s_]


def prepare_static(layers, spec, lanes, tiles, tile_size, seed, quiet=True, only=None, out_channels=None):
    """Static uniform engine stimulus (sim.uniform's packing) of the chosen outputs of each static layer."""
    from tqdm import tqdm

    from golden.spec import SpecError as _SpecError
    from golden.uniform_layer import static_operands
    from sim.uniform import layer_stimulus

    arrays, meta = [], []
    for layer in tqdm(layers, desc="stimulus", unit="layer", disable=quiet or len(layers) < 2, file=sys.stderr):
        n, c, o, h, w = layer.shape
        try:
            ops = static_operands(layer, spec.for_layer(c, layer.kernel))
        except _SpecError as exc:
            raise UserError(f"{layer.name}: {exc}") from None
        outputs = tile_outputs(layer, tiles, tile_size, seed, out_channels, only)
        d = layer_stimulus(ops, spec, lanes, np.random.default_rng(seed + layer.index), junk=True, outputs=outputs)
        d["groups"] = np.int64(-(-c // lanes))
        arrays.append(d)
        meta.append({"index": layer.index, "name": layer.name, "outputs": int(len(d["expected"])),
                     "kernel": int(layer.kernel), "in_channels": int(c), "groups": int(d["groups"]),
                     "pixels": len({(k[0], k[2], k[3]) for k in outputs}), "macs": _layer_macs(layer, len(outputs))})
    return arrays, meta


def _describe_static(arrays, meta, k):
    j, d, kk = _locate(arrays, k)
    n, o, y, x = (int(v) for v in d["keys"][kk])
    return j, {"layer": meta[j]["index"], "name": meta[j]["name"], "sample": n, "output_channel": o, "y": y, "x": x,
               "expected": int(d["expected"][kk])}


def prepare_mac(layers, spec, outputs_per_layer, seed):
    arrays, meta = [], []
    for layer in layers:
        ops, _ = _operands(layer, spec)
        n, c, o, h, w = layer.shape
        rng = np.random.default_rng(seed + layer.index)
        # a corner (masked taps) and a random interior output
        outs = [(0, int(rng.integers(o)), 0, 0)]
        for _ in range(outputs_per_layer - 1):
            outs.append((int(rng.integers(n)), int(rng.integers(o)), int(rng.integers(h)), int(rng.integers(w))))
        d = st.mac_layer_stimulus(layer, ops, spec, np.asarray(outs, np.int64))
        arrays.append(d)
        meta.append({"index": layer.index, "name": layer.name, "outputs": int(len(d["expected"])),
                     "macs": int(len(d["expected"]))})
    return arrays, meta


def _locate(arrays, k):
    """(layer position j, its stimulus arrays, the output's number within the layer) of stream output ``k``."""
    bounds = np.cumsum([0] + [len(d["expected"]) for d in arrays])
    j = int(np.searchsorted(bounds, k, side="right") - 1)
    return j, arrays[j], int(k - bounds[j])


def _describe_engine(arrays, meta, k):
    j, d, kk = _locate(arrays, k)
    n, y, x = (int(v) for v in d["pixels"][d["out_pix"][kk]])
    return j, {"layer": meta[j]["index"], "name": meta[j]["name"], "sample": n, "output_channel": int(d["out_o"][kk]),
               "y": y, "x": x, "expected": int(d["expected"][kk])}


def prepare_mean_unit(layers, spec, tiles, out_channels):
    """Mean-unit stimulus of each layer: every sample, all output channels (``tiles == "all"`` or no
    ``out_channels``) or a run of ``out_channels`` rotated by the layer index, as for the engine's tiles."""
    arrays, meta = [], []
    for layer in layers:
        ops, _ = _operands(layer, spec)
        n, c, o, h, w = layer.shape
        ochs = None if tiles == "all" or out_channels is None else st.select_out_channels(o, out_channels,
                                                                                          layer.index)
        d = st.mean_unit_layer_stimulus(layer, ops, spec, ochs)
        arrays.append(d)
        pairs = len(d["pairs"])
        meta.append({"index": layer.index, "name": layer.name, "outputs": int(len(d["expected"])),
                     "kernel": int(layer.kernel), "in_channels": int(c), "groups": int(c),   # beats per output
                     "macs": int(pairs * c * 9)})   # mu_m x w' products: 9 per input channel
    return arrays, meta


def _describe_mean_unit(arrays, meta, k):
    from golden.mean_unit import CLASSES

    j, d, kk = _locate(arrays, k)
    n, o = (int(v) for v in d["pairs"][kk // CLASSES])
    return j, {"layer": meta[j]["index"], "name": meta[j]["name"], "sample": n, "output_channel": o,
               "y": None, "x": None, "border_class": kk % CLASSES, "expected": int(d["expected"][kk])}


def _describe_mac(arrays, meta, k):
    j, d, kk = _locate(arrays, k)
    m = int(d["beat_output"][kk])
    n, o, y, x = (int(v) for v in d["outputs"][m])
    beat = int(kk - np.nonzero(d["beat_output"] == m)[0][0])
    return j, {"layer": meta[j]["index"], "name": meta[j]["name"], "sample": n, "output_channel": o, "y": y, "x": x,
               "beat": beat, "expected": int(d["expected"][kk])}


def _hexdec(v: int, bits: int) -> dict:
    v = int(v)
    return {"dec": v, "hex": f"0x{v & ((1 << bits) - 1):0{(bits + 3) // 4}x}"}


def _run_dir(work: Path, name: str) -> Path:
    """runs/<name>-<pid>: concurrent verify processes sharing a work dir never share a run dir."""
    d = work / "runs" / f"{name}-{os.getpid()}"
    d.mkdir(parents=True, exist_ok=True)
    return d


_LAYER_DONE = re.compile(rb"layer \S+: \d+ outputs")


@contextlib.contextmanager
def layer_progress(logs: list[Path], layers: int, quiet: bool = False, every: float = 2.0):
    """A progress bar of the simulated layers while the simulators run (each testbench logs a line per finished
    layer to its ``sim.log``; the logs are read every ``every`` seconds). Stale logs are removed first."""
    import threading

    from tqdm import tqdm

    for log in logs:
        log.unlink(missing_ok=True)
    if quiet:
        yield
        return
    bar = tqdm(total=layers, desc="simulating", unit="layer", file=sys.stderr, mininterval=every)
    stop = threading.Event()

    def done() -> int:
        n = 0
        for log in logs:
            try:
                n += len(_LAYER_DONE.findall(log.read_bytes()))
            except OSError:
                pass
        return min(n, layers)

    def poll():
        while not stop.wait(every):
            bar.update(done() - bar.n)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        bar.update(done() - bar.n)
        bar.close()


def _simulate(bld, testbench, run_dir, stim_path, waves=False):
    """Run the cocotb module ``testbench`` (the registered top's, :mod:`hw.tops`) on ``stim_path``."""
    result_path = run_dir / "result.npz"
    if result_path.exists():
        result_path.unlink()
    info = simrun.run(bld, test_module=testbench, test_dir=run_dir, waves=waves,
                      extra_env={st.STIMULUS_ENV: str(stim_path), st.RESULT_ENV: str(result_path)})
    if not result_path.is_file():
        raise simrun.SimulationFailed(f"the testbench wrote no result file; see {info['log']}")
    with np.load(result_path, allow_pickle=False) as z:
        res = {k: z[k] for k in z.files}
    return info, res


def shard_layers(outputs: list[int], jobs: int) -> list[list[int]]:
    """Split layer positions ``0..len(outputs)-1`` into at most ``jobs`` contiguous runs of similar output counts
    (in order, so concatenating the shards' outputs gives the stream order)."""
    jobs = max(1, min(int(jobs), len(outputs)))
    total = sum(outputs)
    shards, cur, done = [], [], 0
    for i, n in enumerate(outputs):
        cur.append(i)
        done += n
        left_layers = len(outputs) - i - 1
        left_shards = jobs - len(shards) - 1
        if left_shards > 0 and left_layers >= left_shards and (
                done >= total * (len(shards) + 1) / jobs or left_layers == left_shards):
            shards.append(cur)
            cur = []
    if cur:
        shards.append(cur)
    return shards


def _simulate_shards(bld, testbench, run_dir, fmt, stim_meta, arrays, shards):
    """Simulate each shard of layers in its own simulator process, in parallel, and merge the results in order.

    One shard runs in ``run_dir`` itself. Merged: ``actual`` and the per-layer arrays concatenated, ``cycles`` and
    ``cpu_seconds`` summed (simulated cycles and CPU time of all processes); ``info['seconds']`` is the wall time of
    the parallel section."""
    from concurrent.futures import ThreadPoolExecutor

    def one(j, idx):
        d = run_dir if len(shards) == 1 else run_dir / f"shard{j}"
        d.mkdir(parents=True, exist_ok=True)
        meta_j = dict(stim_meta, layer_meta=[stim_meta["layer_meta"][i] for i in idx])
        stim_path = d / "stimulus.npz"
        st.write_stimulus(stim_path, fmt, meta_j, [arrays[i] for i in idx])
        return _simulate(bld, testbench, d, stim_path)

    t0 = time.perf_counter()
    if len(shards) == 1:
        return one(0, shards[0])
    with simrun.outside_pytest(), ThreadPoolExecutor(len(shards)) as pool:
        try:
            outs = list(pool.map(lambda a: one(*a), enumerate(shards)))
        except BaseException:   # Ctrl-C / SIGTERM: stop the simulators now instead of waiting for them
            simrun.kill_children()
            raise
    seconds = time.perf_counter() - t0
    infos, results = zip(*outs)
    failed = [i for i in infos if not i["passed"]]
    info = {"passed": not failed, "log": (failed or infos)[0]["log"], "seconds": seconds, "waves": None,
            "logs": [i["log"] for i in infos]}
    res = {"actual": np.concatenate([r["actual"] for r in results]),
           "cycles": int(sum(int(r["cycles"]) for r in results))}
    if all("cpu_seconds" in r for r in results):
        res["cpu_seconds"] = float(sum(float(r["cpu_seconds"]) for r in results))
    for k in ("layer_cycles", "layer_table_cycles", "layer_seconds", "layer_stream_seconds",
              "layer_stream_cpu_seconds"):
        if all(k in r for r in results):
            res[k] = np.concatenate([r[k] for r in results])
    return info, res


@dataclass(frozen=True)
class Check:
    """How :func:`verify` checks one top: its stimulus and golden values, the stimulus format, the width of its
    compared outputs, how an output is located, and whether a mismatch is re-run with waves."""

    prepare: Callable   # (layers, spec, lanes, tiles, tile_size, seed, quiet, out_channels, codes_in, latency,
    #                      sidecar) -> (arrays, layer meta, stimulus meta)
    format: str
    out_bits: Callable  # (spec, stimulus meta) -> bits
    describe: Callable
    waves: bool


def _prepare_engine_check(lay_data, spec, lanes, tiles, tile_size, seed, quiet, out_channels, codes_in, latency,
                          sidecar):
    arrays, meta = prepare_engine(lay_data, spec, lanes, tiles, tile_size, seed, quiet, out_channels=out_channels,
                                  codes_in=codes_in)
    return arrays, meta, st.engine_meta(spec, lanes, latency, meta)


def _prepare_mean_unit_check(lay_data, spec, lanes, tiles, tile_size, seed, quiet, out_channels, codes_in, latency,
                             sidecar):
    arrays, meta = prepare_mean_unit(lay_data, spec, tiles, out_channels)
    return arrays, meta, {"spec": spec.widths(), "latency": latency, "layer_meta": meta}


def _prepare_mac_check(lay_data, spec, lanes, tiles, tile_size, seed, quiet, out_channels, codes_in, latency,
                       sidecar):
    arrays, meta = prepare_mac(lay_data, spec, MAC_OUTPUTS_PER_LAYER, seed)
    return arrays, meta, {"spec": spec.widths(), "latency": latency, "layer_meta": meta,
                          "out_bits": int(_port_widths(sidecar).get("out_acc") or 0)}


def _prepare_static_check(lay_data, spec, lanes, tiles, tile_size, seed, quiet, out_channels, codes_in, latency,
                          sidecar):
    arrays, meta = prepare_static(lay_data, spec, lanes, tiles, tile_size, seed, quiet, out_channels=out_channels)
    return arrays, meta, {"spec": spec.widths(), "lanes": lanes, "latency": latency, "layer_meta": meta}


#: How an export with static activations is checked (on the static uniform engine, whatever the top's name).
STATIC_CHECK = Check(_prepare_static_check, st.UNIFORM_FORMAT, lambda spec, m: spec.acc_bits, _describe_static, True)

#: The tops ``--top`` verifies on exported layers (their RTL and testbench come from :mod:`hw.tops`).
CHECKS = {
    "engine": Check(_prepare_engine_check, st.ENGINE_FORMAT, lambda spec, m: spec.acc_bits, _describe_engine, True),
    "mac": Check(_prepare_mac_check, st.MAC_FORMAT, lambda spec, m: m["out_bits"] or 64, _describe_mac, False),
    "mean-unit": Check(_prepare_mean_unit_check, st.MEAN_UNIT_FORMAT, lambda spec, m: spec.start_bits,
                       _describe_mean_unit, True),
}
TOPS = tuple(CHECKS)


def verify(export_dir, layers="all", tiles=DEFAULT_TILES, simulator: str = "icarus", lanes=None, *,
           top: str = "engine", fault=None, tile_size: int = DEFAULT_TILE_SIZE, out_channels=None, seed: int = 0,
           work_dir=None, json_path=None, waves_on_mismatch: bool = True, netlist: str = "generated",
           quiet: bool = False, jobs: int = 1, denorm: str | None = None, sigma_bits: int | None = None,
           shift_bits: int | None = None, codes_in: bool = False) -> dict:
    """Verify the RTL of ``export_dir``'s configuration on its layers; returns the report dict.

    ``layers``: 'all' or indices; ``tiles``: tiles per layer (int) or 'all' (whole layers); ``out_channels``: output
    channels per tile (default all; a run of that many, rotated by layer index); ``lanes``: engine lanes (default
    channels); ``top``: 'engine' or 'mac'; ``fault``: hw.generate fault name (mutation testing); ``netlist``:
    'generated' (default: simulate the generated file) or 'flat' (an equivalent Yosys-flattened copy, about 3x faster
    under Icarus; see :func:`sim.runner.flat_netlist`); ``jobs``: simulator processes run in parallel, each on a
    contiguous run of the layers (at most one per layer; ``mac_per_s`` is then the aggregate over the wall time,
    ``mac_per_cpu_s`` the figure per busy core).
    """
    from golden.export_io import (denorm_overrides, is_static, load_export, load_manifest, spec_from_manifest,
                                  static_spec_from_manifest)

    t_start = time.perf_counter()
    if top not in TOPS:
        raise UserError(f"top must be one of {TOPS}, got {top!r}")
    if netlist not in NETLISTS:
        raise UserError(f"netlist must be one of {NETLISTS}, got {netlist!r}")
    simrun.check_simulator(simulator)                     # fail fast, before any heavy work
    export_dir = Path(export_dir)
    manifest = load_manifest(export_dir)
    static = is_static(manifest)
    if static:   # one static activation step per tensor: the static uniform engine
        if top != "engine" or codes_in or any(v is not None for v in (denorm, sigma_bits, shift_bits)):
            raise UserError("this export has static activations: it runs on the static uniform engine (--top engine, "
                            "no --codes-in, --denorm, --sigma-bits or --shift-bits)")
        spec = static_spec_from_manifest(manifest).for_layer(static_spec_from_manifest(manifest).channels, 3)
    else:
        spec = engine_spec(spec_from_manifest(manifest, **denorm_overrides(denorm, sigma_bits, shift_bits)))
    if codes_in and top != "engine":
        raise UserError("--codes-in applies to --top engine only")
    if top == "mean-unit" and not spec.split:
        raise UserError("--top mean-unit belongs to the split de-normalization: pass --denorm split")
    if not static and spec.uniform_points and top == "mac":
        raise UserError(f"--top {top} needs a universal-set export; this export has the uniform point set")
    available = [int(e["index"]) for e in manifest["layers"]]
    chosen = parse_layers(layers, available)
    tiles = parse_tiles(tiles)
    lanes = choose_lanes(spec, lanes)
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise UserError(f"jobs must be a positive integer, got {jobs!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise UserError(f"seed must be a non-negative integer, got {seed!r}")
    if json_path:
        check_output_file(json_path, "--json")
    work = check_output_dir(Path(work_dir or DEFAULT_WORK), "--work-dir").resolve()
    _, lay_data = load_export(export_dir, spec, layers=chosen)
    check_selection(lay_data, tiles, tile_size, out_channels, top)

    # RTL + build (cached per configuration); an export of the uniform point set (the normalized uniform baseline,
    # golden.spec.UniformPointSet) runs on that baseline's engine: the same ports, integer multipliers
    hw_top = "uniform-engine" if static or (spec.uniform_points and top == "engine") else top
    v_path, sidecar = generate_rtl(spec, lanes, hw_top, fault, work / "rtl", codes_in=codes_in)
    toplevel = str(sidecar.get("module") or f"dfsq_{top}")
    from hw.tops import lookup

    testbench = lookup(hw_top, spec).testbench
    latency = sidecar.get("latency")
    sim_v = v_path if netlist == "generated" else simrun.flat_netlist(v_path, toplevel=toplevel, out_dir=work / "rtl")
    _say(f"building the {simulator} model of {v_path.name} (Verilator compiles C++: minutes the first time, then "
         f"cached)", quiet)
    bld = simrun.build(sim_v, toplevel=toplevel, simulator=simulator,
                       build_dir=work / "build" / f"{v_path.stem}{'' if netlist == 'generated' else '-flat'}-{simulator}")
    _say(f"RTL {v_path} ({'cached build' if bld.cached else f'built in {bld.seconds:.1f} s'})", quiet)

    # stimulus + golden model
    t0 = time.perf_counter()
    check = STATIC_CHECK if static else CHECKS[top]
    arrays, meta, stim_meta = check.prepare(lay_data, spec, lanes, tiles, tile_size, seed, quiet, out_channels,
                                            codes_in, latency, sidecar)
    prep_seconds = time.perf_counter() - t0
    run_dir = _run_dir(work, f"{export_dir.resolve().name}-{v_path.stem}-{simulator}")
    shards = shard_layers([m["outputs"] for m in meta], jobs)
    n_out = sum(m["outputs"] for m in meta)
    where = run_dir / "sim.log" if len(shards) == 1 else run_dir / "shard*" / "sim.log"
    _say(f"simulating {n_out} outputs of {len(meta)} layers under {simulator}"
         f"{f' in {len(shards)} parallel processes' if len(shards) > 1 else ''} (log: {where})", quiet)

    logs = ([run_dir / "sim.log"] if len(shards) == 1 else
            [run_dir / f"shard{j}" / "sim.log" for j in range(len(shards))])
    with layer_progress(logs, len(meta), quiet):
        info, res = _simulate_shards(bld, testbench, run_dir, check.format, stim_meta, arrays, shards)
    expected = np.concatenate([d["expected"] for d in arrays])
    actual = res["actual"]
    compared = min(len(actual), len(expected))
    diff = np.nonzero(actual[:compared] != expected[:compared])[0]
    missing = len(expected) - compared
    extra = max(0, len(actual) - len(expected))
    mismatches = int(len(diff) + missing + extra)
    if mismatches == 0 and not info["passed"]:
        raise simrun.SimulationFailed(f"the {simulator} testbench failed without a mismatch; see {info['log']}")
    bits = check.out_bits(spec, stim_meta)

    # per-layer figures
    bounds = np.cumsum([0] + [len(d["expected"]) for d in arrays])
    layer_rows = []
    for j, m in enumerate(meta):
        lo, hi = bounds[j], bounds[j + 1]
        got = actual[lo:min(hi, len(actual))]
        bad = int(np.count_nonzero(got != expected[lo:lo + len(got)])) + int(hi - lo - len(got))
        row = {"index": m["index"], "name": m["name"], "kernel": m.get("kernel", 3), "in_channels": m.get("in_channels"),
               "groups": m.get("groups"), "outputs": m["outputs"], "compared": int(len(got)),
               "mismatches": bad, "macs": m["macs"]}
        if "layer_cycles" in res and j < len(res["layer_cycles"]):
            row["cycles"] = int(res["layer_cycles"][j])
            row["table_cycles"] = int(res["layer_table_cycles"][j])
            row["seconds"] = float(res["layer_seconds"][j])
        layer_rows.append(row)
    macs = int(sum(m["macs"] for m in meta))
    sim_seconds = float(info["seconds"])
    # (with parallel shards a stream time summed over processes is no wall time: left out)
    stream_seconds = (float(res["layer_stream_seconds"].sum())
                      if "layer_stream_seconds" in res and len(shards) == 1 else None)
    cpu_seconds = float(res["cpu_seconds"]) if "cpu_seconds" in res else None
    stream_cpu = float(res["layer_stream_cpu_seconds"].sum()) if "layer_stream_cpu_seconds" in res else None
    report = {
        "tool": "sim.verify", "export": str(export_dir), "top": toplevel, "simulator": simulator, "lanes": lanes,
        "fault": fault, "codes_in": bool(codes_in), "netlist": netlist if netlist == "generated" else f"flat: {sim_v}", "tiles": tiles, "tile_size": tile_size, "out_channels": out_channels, "spec": spec.widths(), "rtl": str(v_path),
        "latency": latency, "layers": layer_rows, "outputs": int(len(expected)), "compared": int(compared),
        "mismatches": mismatches, "bit_exact": mismatches == 0, "cycles": int(res["cycles"]), "macs": macs,
        "jobs": len(shards),
        "sim_seconds": round(sim_seconds, 3), "mac_per_s": round(macs / sim_seconds, 1),
        "cycles_per_s": round(int(res["cycles"]) / sim_seconds, 1),
        "stream_mac_per_s": round(macs / stream_seconds, 1) if stream_seconds else None,
        "test_cpu_seconds": round(cpu_seconds, 3) if cpu_seconds else None,
        "mac_per_cpu_s": round(macs / cpu_seconds, 1) if cpu_seconds else None,
        "stream_mac_per_cpu_s": round(macs / stream_cpu, 1) if stream_cpu else None,
        "build_seconds": round(bld.seconds, 3), "build_cached": bld.cached, "prepare_seconds": round(prep_seconds, 3),
        "log": info["log"], "first_mismatch": None,
    }
    if mismatches:
        k = int(diff[0]) if len(diff) else compared
        j, where = check.describe(arrays, meta, k)
        first = dict(where)
        first["output_number"] = k
        first["expected"] = _hexdec(where["expected"], bits)
        first["actual"] = _hexdec(actual[k], bits) if k < len(actual) else None
        first["waveform"] = None
        if waves_on_mismatch and check.waves:
            first["waveform"] = _waveform_rerun(lay_data[j], spec, lanes, latency, where, bld, sim_v, simulator,
                                                work, quiet, codes_in, "static" if static else top, testbench)
        report["first_mismatch"] = first
    report["wall_seconds"] = round(time.perf_counter() - t_start, 3)
    if json_path:
        _write_json(json_path, report)
    return report


def _waveform_rerun(layer, spec, lanes, latency, where, bld, v_path, simulator, work, quiet, codes_in=False,
                    top="engine", testbench="sim.tb_engine"):
    """Re-run only the first mismatching output with waves on; returns the waveform path (or None).

    The re-run uses Icarus when it is installed (its image always carries the dump module and compiles in
    seconds; a traced Verilator build of a 64-lane engine takes minutes), else a traced Verilator build."""
    try:
        wbld = bld
        if not bld.waves:
            try:
                simrun.check_simulator("icarus")
                wsim = "icarus"
            except simrun.SimulatorNotFound:
                wsim = simulator
            _say(f"building a {wsim} image with waveform support", quiet)
            suffix = "" if wsim == "icarus" else "-waves"
            wbld = simrun.build(v_path, toplevel=bld.toplevel, simulator=wsim, waves=True,
                                build_dir=work / "build" / f"{v_path.stem}-{wsim}{suffix}")
        run_dir = _run_dir(work, f"waves-{v_path.stem}-{simulator}")
        stim_path = run_dir / "stimulus.npz"
        if top == "mean-unit":   # the mismatching output channel of the layer (every sample)
            arrays, meta = prepare_mean_unit([layer], spec, None, None)
            keep = np.nonzero(arrays[0]["pairs"][:, 1] == where["output_channel"])[0]
            d = arrays[0]
            d.update(pairs=d["pairs"][keep], out_index=d["out_index"][keep],
                     expected=d["expected"].reshape(len(d["pairs"]), -1)[keep].reshape(-1),
                     classes=d["classes"].reshape(len(d["pairs"]), -1)[keep].reshape(-1))
            st.write_stimulus(stim_path, st.MEAN_UNIT_FORMAT, {"spec": spec.widths(), "latency": latency,
                                                               "layer_meta": meta}, arrays)
        elif top == "static":   # a static export: the single output on the static uniform engine
            arrays, meta = prepare_static([layer], spec, lanes, None, 1, 0,
                                          only=((where["sample"], where["y"], where["x"]), where["output_channel"]))
            st.write_stimulus(stim_path, st.UNIFORM_FORMAT, {"spec": spec.widths(), "lanes": lanes,
                                                             "latency": latency, "layer_meta": meta}, arrays)
        else:
            arrays, meta = prepare_engine([layer], spec, lanes, None, 1, 0,
                                          only=((where["sample"], where["y"], where["x"]), where["output_channel"]),
                                          codes_in=codes_in)
            st.write_stimulus(stim_path, st.ENGINE_FORMAT, st.engine_meta(spec, lanes, latency, meta), arrays)
        info, _ = _simulate(wbld, testbench, run_dir, stim_path, waves=True)
        return info["waves"] if info["waves"] and Path(info["waves"]).exists() else None
    except UserError as exc:
        _say(f"warning: no waveform ({exc})", quiet)
        return None


def _write_json(path, report: dict) -> None:
    with atomic_output(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")


def format_report(r: dict) -> str:
    lines = [f"{r['top']} under {r['simulator']} ({r['lanes']} lanes{', fault ' + r['fault'] if r['fault'] else ''})"
             f", RTL {r['rtl']}" + ("" if r["netlist"] == "generated" else f" (simulated as {r['netlist']})")]
    nw = max([16] + [len(row["name"]) for row in r["layers"]])
    lines.append(f"{'layer':>5}  {'name':<{nw}} {'k':>1} {'C':>4} {'beats':>5} {'outputs':>8} {'mismatches':>10} "
                 f"{'cycles':>8}")
    def cell(row, key, default=""):
        v = row.get(key)
        return default if v is None else v   # a MAC row has no channel count nor beats

    for row in r["layers"]:
        lines.append(f"{row['index']:>5}  {row['name']:<{nw}} {cell(row, 'kernel', 3):>1} "
                     f"{cell(row, 'in_channels'):>4} {cell(row, 'groups'):>5} {row['outputs']:>8} {row['mismatches']:>10} {cell(row, 'cycles'):>8}")
    lines.append(f"layers: {len(r['layers'])}, outputs compared: {r['compared']} of {r['outputs']}, "
                 f"mismatches: {r['mismatches']}")
    stream = f", {r['stream_mac_per_s']:,.0f} MAC/s while streaming" if r.get("stream_mac_per_s") else ""
    procs = f" ({r['jobs']} simulator processes in parallel)" if r.get("jobs", 1) > 1 else ""
    lines.append(f"simulated cycles: {r['cycles']}, {r['macs']:,} MACs in {r['sim_seconds']:.1f} s of simulation"
                 f"{procs}: {r['mac_per_s']:,.0f} MAC/s{stream}")
    if r.get("mac_per_cpu_s"):
        lines.append(f"per CPU second of the simulator process: {r['mac_per_cpu_s']:,.0f} MAC/s"
                     + (f", {r['stream_mac_per_cpu_s']:,.0f} MAC/s while streaming" if r.get("stream_mac_per_cpu_s")
                        else ""))
    fm = r.get("first_mismatch")
    if fm:
        beat = f", beat {fm['beat']}" if "beat" in fm else ""
        act = fm["actual"]
        act_s = f"{act['hex']} ({act['dec']})" if act else "no output"
        where = f"border class {fm['border_class']}" if "border_class" in fm else f"y {fm['y']}, x {fm['x']}"
        lines.append(f"FIRST MISMATCH: layer {fm['layer']} ({fm['name']}), sample {fm['sample']}, output channel "
                     f"{fm['output_channel']}, {where}{beat}: expected {fm['expected']['hex']} "
                     f"({fm['expected']['dec']}), actual {act_s}")
        lines.append(f"waveform: {fm['waveform'] or 'not recorded'}; log: {r['log']}")
    lines.append("BIT-EXACT" if r["bit_exact"] else f"NOT BIT-EXACT: {r['mismatches']} mismatches")
    return "\n".join(lines)


def build_parser() -> Parser:
    from hw import tops

    with_lanes = When("top", *(t for t in TOPS if tops.by_name(t).lanes))
    ap = Parser(prog="python -m sim.verify", description=__doc__.split("\n\n")[0])
    ap.input_dir("--export", "export", required=True, help="export folder (python -m dfsq.export)")
    ap.indices("--layers", help="'all' (the default) or comma-separated layer indices")
    ap.integer("--tiles", 1, 1_000_000, special=("all",), default=DEFAULT_TILES,
               help=f"tiles per layer, corners first, or 'all' for whole layers (default {DEFAULT_TILES})")
    ap.integer("--tile-size", 1, 4096, default=DEFAULT_TILE_SIZE, help="tile edge in pixels (default 2)")
    ap.integer("--out-channels", 1, MAX_CHANNELS, special=("all",), default=None,
               help="output channels per tile: 'all' (default) or N (a run of N, rotated by layer index)")
    ap.choice("--simulator", simrun.SIMULATORS, default="icarus")
    ap.integer("--lanes", 1, MAX_CHANNELS, default=None, when=with_lanes,
               help="engine lanes (default: channels, one beat per output)")
    ap.choice("--top", TOPS, default="engine", help="RTL top to verify (default engine)")
    ap.choice("--fault", sorted(tops.all_faults()), default=None,
              help="generate a deliberately broken variant (mutation testing)")
    add_denorm_args(ap, " of the engine (the golden model runs the same format)",
                    when=When("top", *(t for t in TOPS if tops.by_name(t).denorm)))
    ap.seed(help="seed of the random tile positions")
    ap.work_dir("--work-dir", default=str(DEFAULT_WORK), help="RTL, builds and runs (default build/sim_verify/; "
                                                              "a run that fails before its verdict removes it "
                                                              "when it created it)")
    ap.choice("--netlist", NETLISTS, default="generated",
              help="simulate the generated file (default) or an equivalent Yosys-flattened copy (faster)")
    ap.jobs(help="simulator processes in parallel, each on a run of the layers (default 1)")
    ap.flag("--codes-in", when=When("top", "engine"),
            help="the engine without point tables (hw.generate --codes-in): beats carry point codes")
    ap.flag("--no-waves", help="do not re-run a mismatch with waves on")
    ap.output_file("--json", help="write the report as JSON to this file")
    return ap


@cli_main
def main(argv=None):
    args = build_parser().parse_args(argv)
    out_channels = None if args.out_channels == "all" else args.out_channels
    with remove_dir_on_failure(args.work_dir, "--work-dir"):
        report = verify(args.export, layers="all" if args.layers is None else args.layers, tiles=args.tiles,
                        simulator=args.simulator, lanes=args.lanes, top=args.top, fault=args.fault,
                        tile_size=args.tile_size, out_channels=out_channels, seed=args.seed,
                        work_dir=args.work_dir, json_path=args.json, waves_on_mismatch=not args.no_waves,
                        netlist=args.netlist, jobs=args.jobs, denorm=args.denorm, sigma_bits=args.sigma_bits,
                        shift_bits=args.shift_bits, codes_in=args.codes_in)
    print(format_report(report))
    return 0 if report["bit_exact"] else 1


if __name__ == "__main__":
    sys.exit(main())
