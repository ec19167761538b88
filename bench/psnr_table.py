"""PSNR/SSIM table: FP, Min-Max and DFSQ at 8/6/4/3 bits (weights and activations) on the four benchmark sets,
next to the paper's numbers, written to docs/results.md.

    python -m bench.psnr_table [--scales 2,4] [--datasets Set5,Set14,B100,Urban100] [--bits 8,6,4,3] \
        [--methods fp,minmax,dfsq] [--weights default] [--words 4] [--images 32] [--seed 0] \
        [--scheduler local|tcp://HOST:PORT] [--workers N] [--threads 1] \
        [--cache bench/results/psnr_table.json] [--params-dir out/params] [--out docs/results.md] [--render-only] \
        [--models edsr,rdn] [--device cpu|cuda] [--no-render]

A full run is hours of CPU, so the cells (model, scale, method, bits, words, dataset) run as Dask tasks
(:mod:`bench.cluster`): on a LocalCluster of this machine's cores by default, or on a cluster with
``--scheduler tcp://HOST:PORT``. A long set is split into tasks of about ``cluster.TASK_PIXELS`` HR pixels; a calibration
is one task that the cells using it wait for (its params file goes to --params-dir, where the next run finds it).
Each cell goes into the JSON cache as soon as its last task finishes (atomic rewrite under a lock, by this process
only), keyed by the weights' fingerprint; a rerun skips what is cached, any subset can be run with
--datasets/--bits/--scales/--methods, and a worker lost mid-task is replaced and its task rerun. docs/results.md is
rendered from the whole cache after every cell, marking what is missing. Scale 4 is skipped when its weights are
absent.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import torch
from tqdm import tqdm

from golden.args import Parser, When
from golden.errors import UserError, cli_main
from golden.files import atomic_output
from dfsq.calibrate import (calibrate, calibration_images, cpu_label, load_params, save_params,
                            weights_fingerprint)
from bench import cluster
from dfsq.data import BENCHMARK_ROOT, DATASETS, benchmark_paths
from dfsq.device import DEVICES, resolve_device
from dfsq.evaluate import evaluate_images, summarize
from dfsq.model import load_model
from dfsq.quantize import quantize_model
from dfsq.weights import resolve_weights

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = ROOT / "bench" / "results" / "psnr_table.json"
DEFAULT_OUT = ROOT / "docs" / "results.md"
DEFAULT_PARAMS = ROOT / "out" / "params"
BITS = (8, 6, 4, 3)
DEFAULT_WORDS = 4   # the main tables' universal set; other word counts are the Appendix C ablation

def key(scale: int, method: str, bits: int | None, words: int, dataset: str, model: str = "edsr") -> str:
    """The cache key of one result. EDSR keys have no model prefix (the cache predates RDN); other models'
    keys start with the model name, e.g. ``rdn/x2/dfsq/W4A4/words4/Set5``."""
    b = "-" if bits is None else f"W{bits}A{bits}"
    w = "" if method == "fp" else f"/words{words}"
    return ("" if model == "edsr" else f"{model}/") + f"x{scale}/{method}/{b}{w}/{dataset}"


CACHE_FORMAT = "dfsq-psnr-cache"
CACHE_VERSION = 2   # 1: could hold "<cell>#partKofN" entries of the retired --part option


def load_cache(path: Path, records: tuple[str, ...] = ()) -> dict:
    """The results cache at ``path`` (a new one if absent); the format validator of ``psnr-cache``
    (:mod:`golden.formats`). A version-1 cache is upgraded in memory (its --part entries dropped: every one of them
    was merged into its cell, which stays) and says so; a garbled cache or one of another version is refused in one
    line naming the entry and the field, never merged into. Every entry is a result (:func:`check_result`) except
    those whose key starts with one of ``records`` (other tables' own records, e.g. bench.minmax_study's outlier
    rows: ``{"rows": [...]}``)."""
    from golden.formats import LIST, OBJECT, need, read_json

    path = Path(path)
    if not path.exists():
        return {"format": CACHE_FORMAT, "version": CACHE_VERSION, "results": {}}
    data = read_json(path, "psnr_table cache")
    if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
        raise UserError(f"{path} is not a psnr_table cache (no 'format': {CACHE_FORMAT!r}); move it away to start a "
                        f"new one")
    try:
        results = need(data, "results", OBJECT, str(path))
        for k, r in results.items():
            at = f"{path}: results[{k!r}]"
            if not isinstance(r, dict):
                raise UserError(f"{at}: expected an object, got {type(r).__name__}")
            if records and k.startswith(records):
                need(r, "rows", LIST, at, check=lambda v: all(isinstance(x, dict) for x in v),
                     expect="a list of objects")
            else:
                check_result(r, at)
    except UserError as exc:
        raise UserError(f"{exc}: the cache is garbled (restore it from git or move it away)") from None
    version = data.get("version")
    if version == 1:
        parts = [k for k in results if "#part" in k]
        for k in parts:
            del results[k]
        data["version"] = CACHE_VERSION
        print(f"{path}: upgraded from cache version 1 to {CACHE_VERSION} (dropped {len(parts)} --part entries, "
              "whose cells are kept); written back with the next result")
    elif version != CACHE_VERSION:
        raise UserError(f"{path} is a cache of version {version!r}; this psnr_table reads version {CACHE_VERSION}")
    return data


def check_result(r: dict, at: str) -> None:
    """One cached result: psnr, ssim, images, seconds and when, and the optional fields' types (one line naming the
    field otherwise)."""
    from golden.formats import INT, NUMBER, TEXT, need

    need(r, "psnr", NUMBER, at, check=lambda v: 0 < v < 200, expect="a PSNR in dB")
    need(r, "ssim", NUMBER, at, check=lambda v: -1 <= v <= 1, expect="an SSIM in -1..1")
    need(r, "images", INT, at, check=lambda v: v >= 1, expect="an image count >= 1")
    need(r, "seconds", NUMBER, at, optional=True, check=lambda v: v >= 0, expect="seconds >= 0")
    need(r, "calib", INT, at, optional=True, check=lambda v: v >= 1, expect="an image count >= 1")
    need(r, "seed", INT, at, optional=True, check=lambda v: v >= 0, expect="a seed >= 0")
    need(r, "threads", INT, at, optional=True, check=lambda v: v >= 1, expect="a thread count >= 1")
    need(r, "parts", INT, at, optional=True, check=lambda v: v >= 2, expect="a part count >= 2")
    need(r, "params", TEXT, at, optional=True, null=True)
    for f in ("when", "weights", "weights_fingerprint", "cpu", "params_sha256", "device", "points", "clip",
              "granularity"):
        need(r, f, TEXT, at, optional=True)


def save_json(path: Path, data: dict) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


def store_result(path: Path, k: str, result: dict, records: tuple[str, ...] = ()) -> dict:
    """Add one result to the cache file under an exclusive lock (re-reading it first), so several runs with
    different --datasets/--bits can share one cache. Returns the merged cache (``records``: :func:`load_cache`)."""
    import fcntl
    import hashlib
    import tempfile

    tag = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"psnr_table-{tag}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        cache = load_cache(path, records)
        cache["results"][k] = result
        save_json(path, cache)
    return cache


def params_path(params_dir, arch: str, scale: int, bits: int, words: int, images: int = 32, seed: int = 0,
                variant: str = "") -> Path:
    """Where the table caches a calibration (bench.sensitivity and bench.fakequant_speed read it from there)."""
    prefix = "" if arch == "edsr" else f"{arch}_"
    return Path(params_dir) / f"{prefix}x{scale}_w{bits}a{bits}_words{words}_n{images}_seed{seed}{variant}.npz"


def params_variant(norm: bool = True, layerwise: bool = False, fill: bool = False) -> str:
    return ("" if norm else "_nonorm") + ("_layerwise" if layerwise else "") + ("_fill" if fill else "")


def get_params(model, scale: int, bits: int, words: int, images: int, seed: int, params_dir: Path, weights: str,
               norm: bool = True, layerwise: bool = False, arch: str = "edsr", fill: bool = False):
    variant = params_variant(norm, layerwise, fill)
    path = params_path(params_dir, arch, scale, bits, words, images, seed, variant)
    fp = weights_fingerprint(model)
    if path.is_file():
        p = load_params(path)
        if p.config["weights_fingerprint"] == fp:
            return p, path
    params_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    p = calibrate(model, calibration_images(None, images, scale), act_bits=bits, weight_bits=bits, words=words,
                  seed=seed, weights=weights, norm=norm, layerwise=layerwise, fill=fill, progress=True)
    p.info["seconds_total"] = round(time.perf_counter() - t0, 3)
    save_params(p, path)
    print(f"  calibrated x{scale} W{bits}A{bits} words{words}{variant} in {p.info['seconds_total']:.0f} s -> {path}")
    return p, path


_COLLECTED: dict = {}
_COLLECTED_ATTRS = ("hist", "pixels", "chan_min", "chan_max")  # the statistics dfsq.calibrate._Collector gathers


def _copy_stats(values: list) -> list:
    """A per-layer list of tensors (or None / counts) copied, so that point selection can free its own copy."""
    return [v.clone() if torch.is_tensor(v) else v for v in values]


@contextlib.contextmanager
def shared_collection():
    """Within this block, :func:`dfsq.calibrate.calibrate` runs its (per-sample normalized) collection pass once
    per weights, images and bins, and reuses the statistics for every other bit width and word count: they do not
    depend on either, so the params are identical to separate runs, and a calibration after the first costs only
    the point selection (seconds instead of minutes)."""
    import dfsq.calibrate as cal

    orig = cal._run

    def run(model, inputs, collector, progress, desc):
        if not (collector.norm and collector.collect_hist and collector.static_scale is None):
            return orig(model, inputs, collector, progress, desc)
        k = (weights_fingerprint(model), tuple(n for n, _ in inputs), collector.bins)
        if k not in _COLLECTED:
            orig(model, inputs, collector, progress, desc)
            _COLLECTED[k] = {a: _copy_stats(getattr(collector, a)) for a in _COLLECTED_ATTRS}
        else:
            for a, v in _COLLECTED[k].items():
                setattr(collector, a, _copy_stats(v))

    cal._run = run
    try:
        yield
    finally:
        cal._run = orig


# Methods this bench measures: the network for each is built by build_net. The block reconstructions (brecq, qdrop,
# dfsq-adaround: dfsq.reconstruct) run with the cpu budget; their "-paper" names with the paper budget (a GPU's).
RECON = ("brecq", "qdrop", "dfsq-adaround")
METHODS = ("fp", "minmax", "uniform", "dfsq-uniform", "dfsq", "dfsq-nonorm", "dfsq-layerwise", "dfsq-fill", "dfsq-hw",
           "dfsq-int", *RECON, *(f"{m}-paper" for m in RECON))
UNIFORM = ("channel", "mse")   # the uniform baseline's range rule (dfsq.uniform): per-channel, MSE-optimal clip


def build_net(model, m: str, scale: int, bits: int | None, args, weights: str, arch: str, stats: dict):
    """(network, params path or None, extra result fields) for method ``m``."""
    if m == "fp":
        return model, None, {}
    if m == "uniform":
        from dfsq.uniform import cached_stats, minmax_params, quantize_uniform, uniform_ranges

        if "stats" not in stats:
            prefix = "" if arch == "edsr" else f"{arch}_"
            stats["stats"] = cached_stats(
                model, lambda: calibration_images(None, args.images, scale),
                Path(args.params_dir) / f"{prefix}stats_x{scale}_n{args.images}_seed{args.seed}.npz", seed=args.seed)
        st = stats["stats"]
        lo, hi = uniform_ranges(st, bits, *UNIFORM)
        net = quantize_uniform(model, minmax_params(model, bits, st, weights), lo, hi)
        return net, None, {"granularity": UNIFORM[0], "clip": UNIFORM[1]}
    if m == "dfsq-uniform":
        from dfsq.uniform import quantize_dfsq_uniform

        return quantize_dfsq_uniform(model, bits, weights), None, {"points": "uniform"}
    if m.removesuffix("-paper") in RECON:
        return recon_net(model, m, scale, bits, args, weights, arch)
    norm, layerwise, fill = m != "dfsq-nonorm", m == "dfsq-layerwise", m == "dfsq-fill"
    params, ppath = get_params(model, scale, bits, args.words, args.images, args.seed, Path(args.params_dir),
                               weights, norm=norm, layerwise=layerwise, arch=arch, fill=fill)
    net = quantize_model(model, params, "minmax" if m == "minmax" else "dfsq")
    return integer_net(net, m), ppath, {}


def integer_net(net, m: str):
    """``dfsq-hw``: the quantized convs on the golden datapath (contract 1); ``dfsq-int``: the whole body on
    integers (contract 2, dfsq.int_mode), with the toolkit's default formats; else ``net`` itself."""
    if m == "dfsq-hw":
        from dfsq.hw_mode import apply_hw_mode

        return apply_hw_mode(net)
    if m == "dfsq-int":
        from dfsq.int_mode import IntNetwork

        return IntNetwork(net)
    return net


def recon_path(params_dir, arch: str, scale: int, bits: int, method: str, budget: str, images: int = 32,
               seed: int = 0) -> Path:
    """Where the table caches a block reconstruction (``python -m dfsq.reconstruct --out`` writes the same file)."""
    prefix = "" if arch == "edsr" else f"{arch}_"
    return Path(params_dir) / f"{prefix}x{scale}_w{bits}a{bits}_{method}_{budget}_n{images}_seed{seed}.npz"


def recon_net(model, m: str, scale: int, bits: int, args, weights: str, arch: str):
    """(network, file, extra fields) of a block reconstruction: read from the params folder when made for these
    weights, else reconstructed now (on ``args.device``; minutes to hours; resumable) and saved there; one
    reconstruction task per file (:func:`prep_key`) that the cell's evaluation tasks wait for."""
    from dfsq.reconstruct import reconstruct

    method = m.removesuffix("-paper")
    budget = "paper" if m.endswith("-paper") else "cpu"
    path = recon_path(args.params_dir, arch, scale, bits, method, budget, args.images, args.seed)
    fp = weights_fingerprint(model)
    result = None
    if path.is_file():
        if method == "dfsq-adaround":
            result = load_params(path)
            ok = result.config["weights_fingerprint"] == fp and "reconstruction" in result.config
        else:
            from dfsq.recon_file import load_recon

            result = load_recon(path)
            ok = result.config["weights_fingerprint"] == fp and result.config["method"] == method
        if not ok:
            result = None
    if result is None:
        dfsq = None
        if method == "dfsq-adaround":
            dfsq, _ = get_params(model, scale, bits, args.words, args.images, args.seed, Path(args.params_dir),
                                 weights, arch=arch)
        device = torch.device(getattr(args, "device", "cpu"))   # a reconstruction runs where the table runs
        result = reconstruct(model, method, act_bits=bits, weight_bits=bits, budget=budget,
                             images=calibration_images(None, args.images, scale), seed=args.seed, device=device,
                             dfsq_params=dfsq, weights=weights, checkpoints=Path(str(path) + ".partial"),
                             progress=True)
        if method == "dfsq-adaround":
            save_params(result, path)
        else:
            from dfsq.recon_file import save_recon

            save_recon(result, path)
        import shutil

        shutil.rmtree(Path(str(path) + ".partial"), ignore_errors=True)
        print(f"  reconstructed {arch} x{scale} W{bits}A{bits} {method} ({budget} budget) -> {path}")
    if method == "dfsq-adaround":
        net = quantize_model(model, result, "dfsq")
    else:
        from dfsq.recon_file import quantize_static

        net = quantize_static(model, result, str(path))
    info = result.info.get("reconstruction", result.info) if method == "dfsq-adaround" else result.info
    cost = {k: info[k] for k in ("seconds", "cpu_seconds", "torch_threads", "device", "max_rss_mb") if k in info}
    return net, path, {"budget": budget, "reconstruction": cost}


from bench.results_md import fmt, render  # noqa: E402  (the Markdown lives in its own module)


def write_text(path: Path, text: str) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(text)


def parse_list(text: str, cast, allowed, flag):
    vals = [cast(v) for v in text.split(",") if v]
    bad = [v for v in vals if v not in allowed]
    if bad or not vals:
        raise UserError(f"--{flag}: {bad or text!r} not in {list(allowed)}")
    return vals


def _weights_pattern(text: str) -> str:
    """``default``, or a checkpoint path (``{scale}`` stands for the scale) of which at least one scale exists."""
    if text == "default" or any(Path(text.replace("{scale}", str(s))).is_file() for s in (2, 4)):
        return text
    raise ValueError(f"no checkpoint at {text!r} (for any scale; {{scale}} stands for 2 or 4)")


def build_parser() -> Parser:
    ap = Parser(prog="python -m bench.psnr_table", description=__doc__.split("\n")[0])
    measuring = When("render_only", False)   # --render-only only redraws --out from --cache (with --bits)
    ap.choice_list("--scales", (2, 4), when=measuring, default=[2, 4], help="default 2,4")
    ap.choice_list("--datasets", DATASETS, when=measuring, default=list(DATASETS),
                   help=f"default {','.join(DATASETS)}")
    ap.int_list("--bits", 2, 8, default=list(BITS), help=f"default {','.join(map(str, BITS))}")
    ap.choice_list("--methods", METHODS, when=measuring, default=["fp", "minmax", "dfsq"],
                   help="default fp,minmax,dfsq")
    ap.text("--weights", _weights_pattern, when=measuring, default="default",
            help="'default' or a checkpoint path containing {scale}")
    ap.int_list("--words", 2, 5, when=measuring, default=[DEFAULT_WORDS],
                help="universal-set words, or a list (2,3,5) to run each in turn")
    ap.integer("--images", 1, 100_000, when=measuring, default=32, help="calibration images")
    ap.seed(when=measuring)
    cluster.add_arguments(ap, when=measuring)
    ap.input_dir("--data-root", "benchmarks", when=measuring, default=str(BENCHMARK_ROOT))
    ap.cache_file("--cache", "psnr-cache", default=str(DEFAULT_CACHE))
    ap.work_dir("--params-dir", when=measuring, default=str(DEFAULT_PARAMS), help="where calibrations are cached")
    ap.output_file("--out", default=str(DEFAULT_OUT), when=When("no_render", False))
    ap.flag("--render-only", help="only rewrite --out from the cache")
    ap.choice_list("--models", ("edsr", "rdn"), when=measuring, default=["edsr"],
                   help="edsr and/or rdn (cache keys of rdn start with 'rdn/')")
    ap.choice("--device", DEVICES, when=measuring, default="cpu",
              help="where the networks run (calibration stays on the CPU); cuda results are marked in the cache")
    ap.flag("--no-render", when=measuring,
            help="only fill the cache; render docs later with --render-only")
    return ap


@cli_main
def main(argv=None):
    args = build_parser().parse_args(argv)
    scales, datasets, bits_list, methods = args.scales, args.datasets, args.bits, args.methods
    words_list, models = args.words, args.models
    args.device = resolve_device(args.device)
    cache_path, out = Path(args.cache), Path(args.out)
    cache = load_cache(cache_path)
    all_bits = sorted(set(BITS) | set(bits_list), reverse=True)

    from bench.paper import load_paper
    from bench.plots import write_plots

    paper = load_paper()

    def publish(cache):
        if args.no_render and not args.render_only:
            return
        plots = write_plots(cache, paper, DEFAULT_WORDS, (2, 4), list(DATASETS), all_bits, out)
        write_text(out, render(cache, DEFAULT_WORDS, (2, 4), list(DATASETS), all_bits, paper=paper, plots=plots))

    if args.render_only:
        publish(cache)
        print(f"wrote {out}")
        return
    for d in datasets:
        if not (Path(args.data_root) / d / "HR").is_dir():
            raise UserError(f"dataset {d} not found under {args.data_root}")
    cells = plan(args, cache, models, scales, datasets, bits_list, methods, words_list)
    if cells:
        with cluster.connect(args.scheduler, args.workers, args.threads) as client:
            cache = run_cells(client, args, cells, cache_path, publish)
    publish(cache)
    print(f"updated {cache_path}" if args.no_render else f"wrote {out}")


@dataclass(frozen=True)
class Cell:
    """One result of the table: what :func:`key` names, plus the weights it is measured with."""

    arch: str
    scale: int
    method: str
    bits: int | None
    words: int
    dataset: str
    weights: str
    fingerprint: str

    @property
    def key(self) -> str:
        return key(self.scale, self.method, self.bits, self.words, self.dataset, self.arch)


def plan(args, cache, models, scales, datasets, bits_list, methods, words_list) -> list[Cell]:
    """The requested cells that the cache does not hold for these weights (and calibration size)."""
    cells = []
    for arch, scale in [(a, s) for a in models for s in scales]:
        weights = args.weights.replace("{scale}", str(scale))
        try:
            resolve_weights(weights, scale, arch).resolve(strict=True)
        except (UserError, FileNotFoundError):
            print(f"{arch} x{scale}: no weights ({weights}), skipped")
            continue
        fp = weights_fingerprint(load_model(arch, weights, scale))
        for words in words_list:
            configs = [("fp", None)] if "fp" in methods else []
            configs += [(m, b) for b in bits_list for m in METHODS[1:] if m in methods]
            for m, b in configs:
                for d in datasets:
                    cell = Cell(arch, scale, m, b, words, d, weights, fp)
                    hit = cache["results"].get(cell.key)
                    if hit and hit.get("weights_fingerprint") == fp and (m == "fp" or hit.get("calib") == args.images):
                        print(f"{cell.key}: cached {fmt(hit)}")
                    elif cell not in cells:
                        cells.append(cell)
    return cells


def task_args(args, words: int) -> SimpleNamespace:
    """What :func:`build_net` reads from the command line, for a worker."""
    return SimpleNamespace(words=words, images=args.images, seed=args.seed, params_dir=str(args.params_dir),
                           device=args.device.type if args.device.type != "cuda" else str(args.device))


def prep_key(cell: Cell, args) -> str | None:
    """The calibration (or statistics) a cell's network needs, named by the file it lives in; None for methods
    without one. Cells with the same key share one calibration task."""
    if cell.method in ("fp", "dfsq-uniform"):
        return None
    prefix = "" if cell.arch == "edsr" else f"{cell.arch}_"
    if cell.method == "uniform":
        return f"{prefix}stats_x{cell.scale}_n{args.images}_seed{args.seed}"
    if cell.method in ("minmax", "dfsq", "dfsq-nonorm", "dfsq-layerwise", "dfsq-fill"):
        variant = params_variant(norm=cell.method != "dfsq-nonorm", layerwise=cell.method == "dfsq-layerwise",
                                 fill=cell.method == "dfsq-fill")
        return params_path("", cell.arch, cell.scale, cell.bits, cell.words, args.images, args.seed, variant).stem
    if cell.method.removesuffix("-paper") in RECON:   # one reconstruction task per file
        return recon_path("", cell.arch, cell.scale, cell.bits, cell.method.removesuffix("-paper"),
                          "paper" if cell.method.endswith("-paper") else "cpu", args.images, args.seed).stem
    return f"{prefix}{cell.method}_x{cell.scale}_w{cell.bits}_words{cell.words}"   # its own, to be safe


@functools.lru_cache(maxsize=2)
def _model(arch: str, weights: str, scale: int):
    return load_model(arch, weights, scale)


_NETS: dict = {}


def _net(cell: Cell, ns: SimpleNamespace, device: str):
    """The cell's network on a worker (kept for the worker's next task of the same configuration)."""
    k = (cell.arch, cell.weights, cell.scale, cell.method, cell.bits, cell.words, device)
    if k not in _NETS:
        model = _model(cell.arch, cell.weights, cell.scale)
        with shared_collection():
            net, ppath, extra = build_net(model, cell.method, cell.scale, cell.bits, ns, cell.weights, cell.arch, {})
        params_sha = None if ppath is None else hashlib.sha256(Path(ppath).read_bytes()).hexdigest()[:16]
        if device != "cpu":   # calibration and the model it reads stay on the CPU
            net, extra = copy.deepcopy(net).to(device), {**extra, "device": torch.device(device).type}
        _NETS.clear()
        _NETS[k] = net, ppath, params_sha, extra
    return _NETS[k]


def prepare_task(cell: Cell, ns: SimpleNamespace) -> str | None:
    """A worker's calibration task: builds the cell's network once, which writes its params (or statistics) file to
    --params-dir (collection shared with this worker's other calibrations); the file's digest."""
    return _net(cell, ns, "cpu")[2]


def evaluate_task(cell: Cell, ns: SimpleNamespace, data_root: str, indices: list[int], device: str, prepared) -> dict:
    """A worker's evaluation task: PSNR/SSIM of the images ``indices`` of the cell's set (``prepared``: the
    calibration task's result, which this task waits for)."""
    net, ppath, params_sha, extra = _net(cell, ns, device)
    if hasattr(net, "reset"):   # dfsq-int: saturation counts of these images only
        net.reset()
    t0 = time.perf_counter()
    ps, ss = evaluate_images(net, cell.dataset, cell.scale, data_root, progress=False, indices=indices)
    return {"indices": indices, "psnr": ps, "ssim": ss, "seconds": time.perf_counter() - t0,
            "threads": torch.get_num_threads(), "cpu": cpu_label(), "params": None if ppath is None else str(ppath),
            "params_sha256": params_sha, "extra": extra,
            "integer": net.report() if hasattr(net, "report") else None}


def merge_integer_reports(reports: list[dict]) -> dict:
    """dfsq-int's per-task reports (dfsq.int_mode.IntNetwork.report) as one for the set: counts and times
    summed, the formats (the same in every task) kept."""
    out = dict(reports[0])
    out["saturated"] = sum(r["saturated"] for r in reports)
    out["values"] = sum(r["values"] for r in reports)
    for k in ("saturations", "seconds"):
        total: dict = {}
        for r in reports:
            for name, v in r[k].items():
                total[name] = total.get(name, 0) + v
        out[k] = {name: (round(v, 3) if k == "seconds" else v) for name, v in total.items()}
    return out


def merge_cell(cell: Cell, parts: list[dict], args) -> dict:
    """The cache entry of a cell from its tasks' results (in image order): the set's means as one process gets."""
    r = summarize([v for p in parts for v in p["psnr"]], [v for p in parts for v in p["ssim"]])
    first = parts[0]
    if first["integer"] is not None:   # dfsq-int: the feature-map format and its saturations, per set
        r["integer"] = merge_integer_reports([p["integer"] for p in parts])
    r.update(seconds=round(sum(p["seconds"] for p in parts), 1), weights=cell.weights,
             weights_fingerprint=cell.fingerprint, when=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
             **first["extra"])
    # float summation order, hence the last digits, follows the CPU's vector unit and the thread count
    r.update(threads=first["threads"], cpu="+".join(sorted({p["cpu"] for p in parts})), tasks=len(parts))
    if cell.method != "fp":
        r.update(calib=args.images, seed=args.seed, params=first["params"])
        if first["params_sha256"]:
            r["params_sha256"] = first["params_sha256"]
    return r


def run_cells(client, args, cells: list[Cell], cache_path: Path, publish) -> dict:
    """Submit every cell's tasks (calibrations first, shared), merge each cell into the cache when its last task
    finishes; returns the cache."""
    device = args.device.type if args.device.type != "cuda" else str(args.device)
    preps, tasks = {}, {}
    for cell in cells:
        ns = task_args(args, cell.words)
        pk = prep_key(cell, args)
        if pk is not None and pk not in preps:
            preps[pk] = cluster.submit(client, args.threads, f"calibrate-{pk}", prepare_task, cell, ns)
        chunks = cluster.chunks_by_pixels(benchmark_paths(cell.dataset, args.data_root))
        tasks[cell] = [cluster.submit(client, args.threads, f"{cell.key}-{i}of{len(chunks)}", evaluate_task, cell,
                                      ns, str(args.data_root), idx, device, preps.get(pk))
                       for i, idx in enumerate(chunks)]
    state = {"cache": load_cache(cache_path)}

    def on_cell(cell, parts):
        r = merge_cell(cell, parts, args)
        state["cache"] = store_result(cache_path, cell.key, r)
        publish(state["cache"])
        tqdm.write(f"{cell.key}: {fmt(r)} ({r['seconds']:.0f} s in {r['tasks']} tasks)")

    cluster.by_cell(client, tasks, on_cell)
    return state["cache"]


if __name__ == "__main__":
    main()
