"""Verify the contract-2 units' RTL against the golden integer network on an export, bit for bit, under cocotb.

    python -m sim.verify_int --export DIR --top stats-unit|threshold-unit|quantizer|post-unit [--layers all|0,5]
        [--tiles N|all] [--tile-size 8] [--lanes 16] [--simulator icarus|verilator] [--fault NAME] [--jobs J]
        [--json FILE] [--work-dir build/sim_verify_int]

The export's integer body (its manifest's ``integer`` section and entry tensor: golden.int_export) is rerun in
golden, keeping every layer's integer input, statistics, thresholds, codes, accumulator and output. For each
chosen layer (and sample) the unit gets real data:

* ``stats-unit``: tiles of the layer's input (``--tile-size`` squares, the four corners first, or the whole map
  with ``--tiles all``), every channel; each tile is one map: per channel S, xmin, xmax, mu, M of the tile;
* ``threshold-unit``: the layer's point table and every channel's (mu, M) of the whole map; all 2^b - 1
  thresholds of every channel;
* ``quantizer``: the layer's thresholds, and the values of the tiles' pixels: their codes;
* ``post-unit``: the accumulators of the tiles' pixels (every output channel), the layer's multipliers and
  shifts, the residual, the ReLU and add flags: the layer's output values and saturation flags.

The RTL is generated for the export's widest layer (``hw.generate --top ...``; lane l of group g is channel
g L + l), built once per configuration (cached under ``--work-dir``) and driven by :mod:`sim.tb_stream`. The
report lists layers, outputs compared, mismatches and cycles; the first mismatch is named by layer, sample,
channel and pixel (or threshold) with expected and actual values in hex and decimal, and that layer is re-run with
waves on. Exit 0 bit-exact, 1 any mismatch, 2 bad input (an export without the integer fields among it).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from golden.args import Parser, When
from golden.errors import UserError, cli_main
from golden.int_layer import post_shift, post_values
from golden.int_network import step_post_params
from golden.int_spec import MULT_BITS, FmapFormat, IntSpec
from golden.spec import MAX_CHANNELS, SpecError, add_denorm_args, denorm_format
from sim import runner as simrun
from sim import stimulus as st
from sim.tb_stream import STREAM_FORMAT, pack_word, word_bytes
from sim.verify import (_generator_digest, _hexdec, _run_dir, _say, _simulate, _simulate_shards, _write_json,
                        parse_layers, shard_layers)

#: RTL, builds and runs: under the repository's build/, whatever the working folder
DEFAULT_WORK = Path(__file__).resolve().parent.parent / "build" / "sim_verify_int"
TOPS = ("stats-unit", "threshold-unit", "quantizer", "post-unit")
DEFAULT_TILES = 2
DEFAULT_TILE_SIZE = 8
DEFAULT_LANES = 16


def tile_origins(n: int, h: int, w: int, tiles, size: int, seed: int, rotate: int = 0) -> list[tuple]:
    """(sample, y0, x0, th, tw) of the tiles: the whole map of every sample for ``"all"``, else ``tiles`` squares
    of ``size`` (clipped to the map): the four corners first (from corner ``rotate % 4``), then random positions,
    tile i in sample i % n."""
    if tiles == "all":
        return [(s, 0, 0, h, w) for s in range(n)]
    th, tw = min(size, h), min(size, w)
    corners = [(0, 0), (h - th, w - tw), (0, w - tw), (h - th, 0)]
    corners = corners[rotate % 4:] + corners[:rotate % 4]
    rng = np.random.default_rng(seed)
    out = []
    for i in range(int(tiles)):
        y0, x0 = corners[i] if i < 4 else (int(rng.integers(0, h - th + 1)), int(rng.integers(0, w - tw + 1)))
        out.append((i % n, y0, x0, th, tw))
    return out


def _pixels(origins) -> np.ndarray:
    """(K, 3) (sample, y, x) of every pixel of the tiles, tile by tile, row-major."""
    return np.array([(s, y, x) for s, y0, x0, th, tw in origins for y in range(y0, y0 + th)
                     for x in range(x0, x0 + tw)], dtype=np.int64).reshape(-1, 3)


def _packed(rows, width: int) -> np.ndarray:
    """Port values (rows of element values, or scalars) packed as st.pack_fields does (two's complement)."""
    a = np.asarray(rows, dtype=np.int64)
    return st.pack_fields(a if a.ndim == 2 else a[:, None], width)


def _lanes_of(a: np.ndarray, lanes: int) -> np.ndarray:
    """(C, ...) -> (G, lanes, ...) with the channels past C zero (lane l of group g: channel g lanes + l)."""
    C = a.shape[0]
    G = -(-C // lanes)
    out = np.zeros((G * lanes,) + a.shape[1:], dtype=a.dtype)
    out[:C] = a
    return out.reshape((G, lanes) + a.shape[1:])


class Words:
    """Output words: the out ports' values concatenated (port 0 lowest), as tb_stream.OutputMonitor forms them."""

    def __init__(self, widths: list[int]):
        self.widths = widths
        self.bits = sum(widths)

    def pack(self, cols) -> np.ndarray:
        """cols: per port, a list of non-negative port values (the raw bits), all of one length."""
        words = []
        for vals in zip(*cols):
            w, off = 0, 0
            for v, width in zip(vals, self.widths):
                w |= (int(v) & ((1 << width) - 1)) << off
                off += width
            words.append(pack_word(w, self.bits))
        return np.stack(words) if words else np.zeros((0, word_bytes(self.bits)), np.uint8)

    def split(self, row) -> list[int]:
        w = int.from_bytes(np.asarray(row, np.uint8).tobytes(), "little")
        out = []
        for width in self.widths:
            out.append(w & ((1 << width) - 1))
            w >>= width
        return out


# --- stimulus of each unit ---------------------------------------------------------------------------------------
class Prep:
    """Per-unit stimulus builder: ``write_ports``, ``beat_ports``, ``out_ports`` (with ``out_widths``), the strobe
    of the writes, and ``layer(i, ...)`` -> (arrays, meta) for one step of the graph."""

    def __init__(self, unit, spec: IntSpec, body, res, lanes: int):
        self.unit, self.spec, self.body, self.res, self.lanes = unit, spec, body, res, lanes
        self.words = Words([_port_width(unit, p) for p in self.out_ports])

    def raw(self, port: str, rows) -> list[int]:
        """The raw bits of ``port`` for each row (an element per lane, or a scalar), as the port reads them."""
        return st.unpack_ints(_packed(rows, _element_width(self.unit, port)))

    def arrays(self, writes: dict, beats: dict, expected: dict, where: np.ndarray) -> dict:
        """``writes``/``beats``: port -> rows; ``expected``: out port -> rows (element values)."""
        ew = lambda p: _element_width(self.unit, p)  # noqa: E731
        d = {f"w_{p}": _packed(v, ew(p)) if len(v) else np.zeros((0, 1), np.uint8) for p, v in writes.items()}
        d.update({f"b_{p}": _packed(v, ew(p)) for p, v in beats.items()})
        d["expected"] = self.words.pack([self.raw(p, expected[p]) for p in self.out_ports])
        d["where"] = np.asarray(where, np.int64).reshape(len(d["expected"]), -1)
        return d

    def input_of(self, step):
        t = self.res.tensors
        return t[step.inputs[0]] if len(step.inputs) == 1 else np.concatenate([t[n] for n in step.inputs], axis=1)


class StatsPrep(Prep):
    write_ports, strobe = [], None
    beat_ports = ["cfg_channels", "cfg_pixels", "cfg_relu", "in_last", "in_group", "in_data"]
    out_ports = ["out_chan", "out_sum", "out_min", "out_max", "out_mu", "out_m"]
    where_cols = ["sample", "tile y", "tile x", "channel"]

    def layer(self, i, step, tiles, tile_size, seed):
        from golden.int_layer import channel_stats, mean_range

        X = self.input_of(step).astype(np.int64)
        conv = self.body.convs[step.layer]
        N, C, H, W = X.shape
        L = self.lanes
        beats = {p: [] for p in self.beat_ports}
        exp = [[] for _ in self.out_ports]
        where = []
        for s, y0, x0, th, tw in tile_origins(N, H, W, tiles, tile_size, seed + i, rotate=i):
            tile = X[s:s + 1, :, y0:y0 + th, x0:x0 + tw]
            lanes = _lanes_of(tile[0].reshape(C, -1), L)          # (G, L, pixels)
            G, npix = lanes.shape[0], th * tw
            for p in range(npix):
                for g in range(G):
                    for port, v in zip(self.beat_ports, (C, npix, int(conv.relu_input), int(p == npix - 1 and
                                                                                            g == G - 1), g)):
                        beats[port].append(v)
                    beats["in_data"].append(lanes[g, :, p])
            S, lo, hi = channel_stats(tile)
            mu, M = mean_range(S, lo, hi, npix, conv.relu_input)
            for col, v in zip(exp, (np.arange(C), S[0], lo[0], hi[0], mu[0], M[0])):
                col.extend(v.tolist())
            where += [(s, y0, x0, c) for c in range(C)]
        return self.arrays({}, beats, dict(zip(self.out_ports, exp)), np.array(where)), 0


class ThresholdPrep(Prep):
    write_ports, strobe = ["tbl_chan", "tbl_idx", "tbl_code"], "tbl_we"
    beat_ports = ["in_chan", "in_mu", "in_m"]
    out_ports = ["out_chan", "out_k", "out_t"]
    where_cols = ["sample", "channel", "threshold"]

    def layer(self, i, step, tiles, tile_size, seed):
        conv = self.body.convs[step.layer]
        rec = self.res.records[i]
        C, K = conv.point_codes.shape
        writes = {"tbl_chan": np.repeat(np.arange(C), K).tolist(), "tbl_idx": np.tile(np.arange(K), C).tolist(),
                  "tbl_code": np.asarray(conv.point_codes, np.int64).ravel().tolist()}
        beats = {p: [] for p in self.beat_ports}
        exp = [[], [], []]
        where = []
        for s in range(rec.mu.shape[0]):
            beats["in_chan"] += list(range(C))
            beats["in_mu"] += rec.mu[s].tolist()
            beats["in_m"] += rec.M[s].tolist()
            T = rec.T[s].astype(np.int64)                        # (C, K - 1)
            exp[0] += np.repeat(np.arange(C), K - 1).tolist()
            exp[1] += np.tile(np.arange(K - 1), C).tolist()
            exp[2] += T.ravel().tolist()
            where += [(s, c, k) for c in range(C) for k in range(K - 1)]
        return self.arrays(writes, beats, dict(zip(self.out_ports, exp)), np.array(where)), C * K


class QuantizerPrep(Prep):
    write_ports, strobe = ["thr_chan", "thr_k", "thr_value"], "thr_we"
    beat_ports = ["in_group", "in_data"]
    out_ports = ["out_code"]
    where_cols = ["sample", "y", "x", "group"]

    def layer(self, i, step, tiles, tile_size, seed):
        X = self.input_of(step)
        rec = self.res.records[i]
        N, C, H, W = X.shape
        L = self.lanes
        pix = _pixels(tile_origins(N, H, W, tiles, tile_size, seed + i, rotate=i))
        K1 = rec.T.shape[2]
        out = []
        for s in sorted(set(pix[:, 0].tolist())):   # thresholds per sample: one stimulus "layer" each
            sp = pix[pix[:, 0] == s]
            writes = {"thr_chan": np.repeat(np.arange(C), K1).tolist(), "thr_k": np.tile(np.arange(K1), C).tolist(),
                      "thr_value": rec.T[s].astype(np.int64).ravel().tolist()}
            vals = _lanes_of(X[s][:, sp[:, 1], sp[:, 2]].astype(np.int64), L)        # (G, L, pixels)
            codes = _lanes_of(rec.codes[s][:, sp[:, 1], sp[:, 2]].astype(np.int64), L)
            G = vals.shape[0]
            beats = {"in_group": [g for _ in range(len(sp)) for g in range(G)],
                     "in_data": [vals[g, :, p] for p in range(len(sp)) for g in range(G)]}
            exp = {"out_code": [codes[g, :, p] for p in range(len(sp)) for g in range(G)]}
            where = [(s, int(y), int(x), g) for _, y, x in sp for g in range(G)]
            out.append(self.arrays(writes, beats, exp, np.array(where)))
        return out, C * K1


class PostPrep(Prep):
    write_ports, strobe = [], None
    beat_ports = ["in_relu", "in_add", "in_acc", "in_mult", "in_shift", "in_skip"]
    out_ports = ["out_y", "out_sat"]
    where_cols = ["sample", "y", "x", "group"]

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.post = step_post_params(self.body.graph, self.body.convs)

    def layer(self, i, step, tiles, tile_size, seed):
        rec = self.res.records[i]
        ispec = self.body.ispec
        acc = rec.acc
        N, O, H, W = acc.shape
        L = self.lanes
        mult, r = self.post[i]
        sh = post_shift(rec.ops.E, r, ispec.fmap.frac, ispec)
        skip = None if step.residual is None else self.res.tensors[step.residual]
        y, _, flags = post_values(acc, mult, sh, ispec, step.relu, skip, flags=True)
        if not np.array_equal(y, self.res.tensors[step.output]):   # pragma: no cover - golden against itself
            raise AssertionError(f"{step.output}: post_values differs from the network's run")
        pix = _pixels(tile_origins(N, H, W, tiles, tile_size, seed + i, rotate=i))
        A = _lanes_of(acc[pix[:, 0], :, pix[:, 1], pix[:, 2]].T, L)                 # (G, L, pixels)
        Y = _lanes_of(y[pix[:, 0], :, pix[:, 1], pix[:, 2]].T.astype(np.int64), L)
        F = _lanes_of(flags[pix[:, 0], :, pix[:, 1], pix[:, 2]].T.astype(np.int64), L)
        Sk = _lanes_of((skip[pix[:, 0], :, pix[:, 1], pix[:, 2]].T.astype(np.int64) if skip is not None else
                        np.zeros((O, len(pix)), np.int64)), L)
        mu_ = _lanes_of(np.asarray(mult, np.int64), L)                                 # (G, L)
        mu_[mu_ == 0] = 1 << (MULT_BITS - 1)
        shp = _lanes_of(sh.T, L)                                                       # (G, L, N)
        shp[shp == 0] = 1
        G = A.shape[0]
        beats = {p: [] for p in self.beat_ports}
        exp_y, exp_f, where = [], [], []
        for k, (s, yy, xx) in enumerate(pix):
            for g in range(G):
                for port, v in (("in_relu", int(step.relu)), ("in_add", int(skip is not None)),
                                ("in_acc", A[g, :, k]), ("in_mult", mu_[g]), ("in_shift", shp[g, :, s]),
                                ("in_skip", Sk[g, :, k])):
                    beats[port].append(v)
                exp_y.append(Y[g, :, k])
                exp_f.append(F[g, :, k])
                where.append((int(s), int(yy), int(xx), g))
        return self.arrays({}, beats, {"out_y": exp_y, "out_sat": exp_f}, np.array(where)), 0


PREPS = {"stats-unit": StatsPrep, "threshold-unit": ThresholdPrep, "quantizer": QuantizerPrep, "post-unit": PostPrep}


def rtl_spec(body) -> IntSpec:
    """The units' spec for an export: its widest layer's datapath on a 3x3 engine (the post unit's accumulator is
    the engine's), the export's feature-map width (the fraction bits are no hardware parameter) and max_pixels."""
    dp = body.ispec.datapath
    return IntSpec(datapath=dp.for_layer(dp.channels, 3), fmap=FmapFormat(body.ispec.fmap.bits, 0),
                   max_pixels=body.ispec.max_pixels)


def _generate(top: str, spec: IntSpec, lanes: int, fault, out_dir: Path):
    """hw.generate for this configuration, reused while hw's sources and the arguments are unchanged."""
    import json

    from golden.files import atomic_output
    from hw.generate import generate, stem

    out_dir.mkdir(parents=True, exist_ok=True)
    name = stem(top, spec, lanes, fault)
    v_path, j_path, stamp = out_dir / f"{name}.v", out_dir / f"{name}.json", out_dir / f"{name}.digest"
    digest = _generator_digest(top, spec, lanes, fault)
    if not (v_path.is_file() and j_path.is_file() and stamp.is_file() and stamp.read_text() == digest):
        v_path, j_path = (Path(p) for p in generate(top=top, spec=spec, lanes=lanes, fault=fault, out_dir=str(out_dir)))
        with atomic_output(stamp) as tmp:
            tmp.write_text(digest)
    return v_path, json.loads(j_path.read_text())


def verify_int(export_dir, top: str, layers="all", tiles=DEFAULT_TILES, tile_size: int = DEFAULT_TILE_SIZE,
               simulator: str = "icarus", lanes: int = DEFAULT_LANES, fault=None, seed: int = 0, work_dir=None,
               json_path=None, jobs: int = 1, waves_on_mismatch: bool = True, quiet: bool = False,
               denorm=None, sigma_bits=None, shift_bits=None) -> dict:
    """Verify ``top``'s RTL on the export's integer body; returns the report (what ``--json`` writes)."""
    from golden.int_export import load_int_body
    from hw.tops import lookup

    t_start = time.perf_counter()
    if top not in TOPS:
        raise UserError(f"top must be one of {', '.join(TOPS)}, got {top!r}")
    simrun.check_simulator(simulator)
    try:
        fmt = denorm_format(denorm, sigma_bits, shift_bits)
    except SpecError as exc:
        raise UserError(str(exc)) from None
    body = load_int_body(export_dir, **fmt)
    spec = rtl_spec(body)
    if spec.datapath.channels % lanes and top != "threshold-unit":
        raise UserError(f"--lanes must divide the export's channel count {spec.datapath.channels}, got {lanes}")
    chosen = parse_layers(layers, list(range(len(body.graph.steps))))
    work = Path(work_dir or DEFAULT_WORK).resolve()
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    res = body.run()
    prep_lanes = 1 if top == "threshold-unit" else lanes
    from hw.generate import _quiet_unused_elaboratables, build

    _quiet_unused_elaboratables()
    unit = build(top, spec, prep_lanes, fault)   # for its signature only (the RTL comes from hw.generate)
    unit._MustUse__silence = True                # never elaborated on purpose: no "unused" warning at exit
    prep = PREPS[top](unit, spec, body, res, prep_lanes)
    arrays, meta = [], []
    steps = body.graph.steps
    for i in chosen:
        s = steps[i]
        conv = body.convs[s.layer]
        out, writes = prep.layer(i, s, tiles, tile_size, seed)
        for d in (out if isinstance(out, list) else [out]):
            arrays.append(d)
            meta.append({"index": conv.index, "name": conv.name, "outputs": int(len(d["expected"])),
                         "in_channels": conv.in_channels, "kernel": conv.kernel, "macs": 0, "writes": writes})
    prep_seconds = time.perf_counter() - t0
    v_path, sidecar = _generate(top, spec, prep_lanes, fault, work / "rtl")
    toplevel = sidecar["module"]
    bld = simrun.build(v_path, toplevel=toplevel, simulator=simulator,
                       build_dir=work / "build" / f"{v_path.stem}-{simulator}")
    _say(f"RTL {v_path} ({'cached build' if bld.cached else f'built in {bld.seconds:.1f} s'})", quiet)
    testbench = lookup(top, spec).testbench
    stim_meta = {"write_ports": prep.write_ports, "beat_ports": prep.beat_ports, "out_ports": prep.out_ports,
                 "out_widths": prep.words.widths, "strobe": prep.strobe, "where_cols": prep.where_cols,
                 "layer_meta": meta, "latency": sidecar.get("latency"),
                 "drain_limit": 200 + 40 * spec.datapath.channels * spec.fmap.bits}
    run_dir = _run_dir(work, f"{Path(export_dir).resolve().name}-{v_path.stem}-{simulator}")
    shards = shard_layers([m["outputs"] for m in meta], jobs)
    n_out = sum(m["outputs"] for m in meta)
    _say(f"simulating {n_out} outputs of {len(meta)} layer stimuli under {simulator}"
         f"{f' in {len(shards)} processes' if len(shards) > 1 else ''}", quiet)
    info, sres = _simulate_shards(bld, testbench, run_dir, STREAM_FORMAT, stim_meta, arrays, shards)
    expected = np.concatenate([d["expected"] for d in arrays])
    actual = sres["actual"] if len(sres["actual"]) else np.zeros((0, expected.shape[1]), np.uint8)
    compared = min(len(actual), len(expected))
    diff = np.nonzero(np.any(actual[:compared] != expected[:compared], axis=1))[0]
    missing = len(expected) - compared
    mismatches = int(len(diff) + missing + max(0, len(actual) - len(expected)))
    if mismatches == 0 and not info["passed"]:
        raise simrun.SimulationFailed(f"the {simulator} testbench failed without a mismatch; see {info['log']}")
    bounds = np.cumsum([0] + [len(d["expected"]) for d in arrays])
    rows = []
    for j, m in enumerate(meta):
        lo, hi = bounds[j], bounds[j + 1]
        got = actual[lo:min(hi, len(actual))]
        bad = int(np.count_nonzero(np.any(got != expected[lo:lo + len(got)], axis=1))) + int(hi - lo - len(got))
        row = dict(m, mismatches=bad)
        if "layer_cycles" in sres and j < len(sres["layer_cycles"]):
            row["cycles"] = int(sres["layer_cycles"][j])
        rows.append(row)
    report = {"tool": "sim.verify_int", "export": str(export_dir), "top": toplevel, "unit": top,
              "simulator": simulator, "lanes": prep_lanes, "fault": fault, "tiles": tiles, "tile_size": tile_size,
              "spec": spec.widths(), "rtl": str(v_path), "latency": sidecar.get("latency"), "layers": rows,
              "outputs": int(len(expected)), "compared": int(compared), "mismatches": mismatches,
              "bit_exact": mismatches == 0, "cycles": int(sres["cycles"]), "sim_seconds": round(info["seconds"], 3),
              "prepare_seconds": round(prep_seconds, 3), "build_seconds": round(bld.seconds, 3),
              "log": info["log"], "first_mismatch": None}
    if mismatches:
        k = int(diff[0]) if len(diff) else compared
        j = int(np.searchsorted(bounds, k, side="right") - 1)
        where = dict(zip(prep.where_cols, (int(v) for v in arrays[j]["where"][k - bounds[j]])))
        first = {"layer": meta[j]["index"], "name": meta[j]["name"], "output_number": k, **where}
        want = prep.words.split(expected[k])
        got = prep.words.split(actual[k]) if k < len(actual) else None
        for port, w, a in zip(prep.out_ports, prep.words.widths, got or [None] * len(want)):
            e = want[prep.out_ports.index(port)]
            if a != e:
                elem = _element_width(unit, port)
                lane = next((li for li in range(max(1, w // elem))
                             if a is None or (a >> (li * elem)) & ((1 << elem) - 1) != (e >> (li * elem)) & ((1 << elem) - 1)), 0)
                ev = _signed((e >> (lane * elem)) & ((1 << elem) - 1), elem, _is_signed(unit, port))
                first.update(port=port, lane=lane, expected=_hexdec(ev, elem),
                             actual=None if a is None else _hexdec(_signed((a >> (lane * elem)) & ((1 << elem) - 1),
                                                                          elem, _is_signed(unit, port)), elem))
                if "group" in where:
                    first["channel"] = where["group"] * prep_lanes + lane
                break
        first["waveform"] = None
        if waves_on_mismatch and bld.waves:
            wdir = _run_dir(work, f"waves-{v_path.stem}-{simulator}")
            stim_path = wdir / "stimulus.npz"
            st.write_stimulus(stim_path, STREAM_FORMAT, dict(stim_meta, layer_meta=[meta[j]]), [arrays[j]])
            winfo, _ = _simulate(bld, testbench, wdir, stim_path, waves=True)
            first["waveform"] = winfo.get("waves")
        report["first_mismatch"] = first
    report["wall_seconds"] = round(time.perf_counter() - t_start, 3)
    if json_path:
        _write_json(json_path, report)
    return report


def _member(unit, port):
    return unit.signature.members[port].shape


def _port_width(unit, port) -> int:
    from amaranth.hdl import Shape
    from amaranth.lib import data

    s = _member(unit, port)
    return s.size if isinstance(s, data.Layout) else Shape.cast(s).width


def _element_width(unit, port) -> int:
    from amaranth.hdl import Shape
    from amaranth.lib import data

    s = _member(unit, port)
    return Shape.cast(s.elem_shape).width if isinstance(s, data.ArrayLayout) else Shape.cast(s).width


def _is_signed(unit, port) -> bool:
    from amaranth.hdl import Shape
    from amaranth.lib import data

    s = _member(unit, port)
    return Shape.cast(s.elem_shape if isinstance(s, data.ArrayLayout) else s).signed


def _signed(v: int, bits: int, signed: bool) -> int:
    return v - (1 << bits) if signed and v >> (bits - 1) else v


def format_report(r: dict) -> str:
    lines = [f"{r['unit']} ({r['top']}) under {r['simulator']}, {r['lanes']} lanes"
             f"{', fault ' + r['fault'] if r['fault'] else ''}, RTL {r['rtl']}"]
    nw = max([16] + [len(row["name"]) for row in r["layers"]])
    lines.append(f"{'layer':>5}  {'name':<{nw}} {'C':>4} {'outputs':>8} {'mismatches':>10} {'cycles':>8}")
    for row in r["layers"]:
        lines.append(f"{row['index']:>5}  {row['name']:<{nw}} {row['in_channels']:>4} {row['outputs']:>8} "
                     f"{row['mismatches']:>10} {row.get('cycles', ''):>8}")
    lines.append(f"layer stimuli: {len(r['layers'])}, outputs compared: {r['compared']} of {r['outputs']}, "
                 f"mismatches: {r['mismatches']}; {r['cycles']} cycles in {r['sim_seconds']:.1f} s of simulation")
    fm = r.get("first_mismatch")
    if fm:
        loc = ", ".join(f"{k} {fm[k]}" for k in ("sample", "channel", "y", "x", "tile y", "tile x", "threshold")
                        if k in fm)
        exp, act = fm.get("expected"), fm.get("actual")
        shown = (f", port {fm.get('port')} lane {fm.get('lane')}: expected {exp['hex']} ({exp['dec']}), actual "
                 + (f"{act['hex']} ({act['dec']})" if act else "no output")) if exp else ""
        lines.append(f"FIRST MISMATCH: layer {fm['layer']} ({fm['name']}), {loc}{shown}")
        lines.append(f"waveform: {fm['waveform'] or 'not recorded'}; log: {r['log']}")
    lines.append("BIT-EXACT" if r["bit_exact"] else f"NOT BIT-EXACT: {r['mismatches']} mismatches")
    return "\n".join(lines)


def build_parser() -> Parser:
    from hw import tops

    ap = Parser(prog="python -m sim.verify_int", description=__doc__.split("\n\n")[0])
    ap.input_dir("--export", "export", required=True, help="export folder (python -m dfsq.export, every layer)")
    ap.choice("--top", TOPS, required=True, help="the unit to verify")
    ap.indices("--layers", help="'all' (the default) or comma-separated layer indices")
    ap.integer("--tiles", 1, 1_000_000, special=("all",), default=DEFAULT_TILES,
               help=f"tiles per layer, corners first, or 'all' for whole maps (default {DEFAULT_TILES}; "
                    f"threshold-unit: every channel always)")
    ap.integer("--tile-size", 1, 4096, default=DEFAULT_TILE_SIZE, help=f"tile edge (default {DEFAULT_TILE_SIZE})")
    ap.choice("--simulator", simrun.SIMULATORS, default="icarus")
    ap.integer("--lanes", 1, MAX_CHANNELS, default=DEFAULT_LANES,
               when=When("top", "stats-unit", "quantizer", "post-unit"),
               help=f"lanes (default {DEFAULT_LANES}; divides the export's channels)")
    ap.choice("--fault", sorted(f for t in TOPS for f in tops.by_name(t).faults), default=None,
              help="generate a deliberately broken unit (mutation testing)")
    add_denorm_args(ap, " of the golden datapath (the post unit's accumulator)", when=When("top", "post-unit"))
    ap.seed(help="seed of the random tile positions")
    ap.work_dir("--work-dir", default=str(DEFAULT_WORK), help="RTL, builds and runs (default build/sim_verify_int/)")
    ap.jobs(help="simulator processes in parallel, each on a run of the layers (default 1)")
    ap.flag("--no-waves", help="do not re-run a mismatching layer with waves on")
    ap.output_file("--json", help="write the report as JSON to this file")
    return ap


@cli_main
def main(argv=None):
    args = build_parser().parse_args(argv)
    from hw import tops

    if args.fault is not None and args.fault not in tops.by_name(args.top).faults:
        raise UserError(f"--fault {args.fault} belongs to another unit; {args.top}'s: "
                        f"{', '.join(sorted(tops.by_name(args.top).faults))}")
    report = verify_int(args.export, args.top, layers="all" if args.layers is None else args.layers,
                        tiles=args.tiles, tile_size=args.tile_size, simulator=args.simulator, lanes=args.lanes,
                        fault=args.fault, seed=args.seed, work_dir=args.work_dir, json_path=args.json, jobs=args.jobs,
                        waves_on_mismatch=not args.no_waves, denorm=args.denorm, sigma_bits=args.sigma_bits,
                        shift_bits=args.shift_bits)
    print(format_report(report))
    return 0 if report["bit_exact"] else 1


if __name__ == "__main__":
    sys.exit(main())
