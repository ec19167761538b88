"""PSNR/SSIM table: FP, Min-Max and DFSQ at 8/6/4/3 bits (weights and activations) on the four benchmark sets,
next to the paper's numbers, written to docs/results.md.

    python -m bench.psnr_table [--scales 2,4] [--datasets Set5,Set14,B100,Urban100] [--bits 8,6,4,3] \
        [--methods fp,minmax,dfsq] [--weights default] [--words 4] [--images 32] [--seed 0] [--threads N] \
        [--cache bench/results/psnr_table.json] [--params-dir out/params] [--out docs/results.md] [--render-only] \
        [--models edsr,rdn] [--device cpu|cuda] [--no-render] [--part K/N]

A full run is hours of CPU, so every (scale, method, bits, dataset) result goes into the JSON cache as soon as it is
measured (atomic rewrite), keyed by the weights' fingerprint; a rerun skips what is cached, and any subset can be run
with --datasets/--bits/--scales/--methods, and one set can be split over runs or machines with --part K/N (the
parts merge into the cell once all are cached). Calibrations are cached in --params-dir. docs/results.md is
rendered from the whole cache after every result, marking what is missing. Scale 4 is skipped when its weights are
absent.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from golden.args import Parser, When
from golden.errors import UserError, cli_main
from golden.files import atomic_output
from dfsq.calibrate import (calibrate, calibration_images, cpu_label, load_params, save_params,
                            weights_fingerprint)
from dfsq.data import BENCHMARK_ROOT, DATASETS
from dfsq.device import DEVICES, resolve_device
from dfsq.evaluate import evaluate_dataset
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


def load_cache(path: Path) -> dict:
    if not path.is_file():
        return {"format": "dfsq-psnr-cache", "version": 1, "results": {}}
    try:
        data = json.loads(path.read_text())
    except ValueError:
        raise UserError(f"{path} is not valid JSON; move it away to start a new cache") from None
    if data.get("format") != "dfsq-psnr-cache":
        raise UserError(f"{path} is not a psnr_table cache")
    return data


def save_json(path: Path, data: dict) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


def store_result(path: Path, k: str, result: dict) -> dict:
    """Add one result to the cache file under an exclusive lock (re-reading it first), so several runs with
    different --datasets/--bits can share one cache. Returns the merged cache."""
    import fcntl
    import hashlib
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    tag = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"psnr_table-{tag}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        cache = load_cache(path)
        cache["results"][k] = result
        save_json(path, cache)
    return cache


def params_path(params_dir, arch: str, scale: int, bits: int, words: int, images: int = 32, seed: int = 0,
                variant: str = "") -> Path:
    """Where the table caches a calibration (bench.sensitivity and bench.fakequant_speed read it from there)."""
    prefix = "" if arch == "edsr" else f"{arch}_"
    return Path(params_dir) / f"{prefix}x{scale}_w{bits}a{bits}_words{words}_n{images}_seed{seed}{variant}.npz"


def get_params(model, scale: int, bits: int, words: int, images: int, seed: int, params_dir: Path, weights: str,
               norm: bool = True, layerwise: bool = False, arch: str = "edsr", fill: bool = False):
    variant = ("" if norm else "_nonorm") + ("_layerwise" if layerwise else "") + ("_fill" if fill else "")
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


# Methods this bench measures: the network for each is built by build_net.
METHODS = ("fp", "minmax", "uniform", "dfsq-uniform", "dfsq", "dfsq-nonorm", "dfsq-layerwise", "dfsq-fill", "dfsq-hw",
           "dfsq-int")
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


from bench.results_md import fmt, render  # noqa: E402  (the Markdown lives in its own module)


def write_text(path: Path, text: str) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(text)


def parse_part(text: str | None) -> tuple[int, int] | None:
    """``--part K/N`` as (K, N), 0 <= K < N, N >= 2."""
    if text is None:
        return None
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise UserError(f"--part must be K/N (two integers), got {text!r}") from None
    if not (n >= 2 and 0 <= k < n):
        raise UserError(f"--part K/N needs N >= 2 and 0 <= K < N, got {text!r}")
    return k, n


def part_key(k: str, part: tuple[int, int]) -> str:
    return f"{k}#part{part[0]}of{part[1]}"


def merge_parts(cache: dict, k: str, n: int) -> dict | None:
    """The whole-set result of cell ``k`` from its ``n`` cached parts, or None while a part is missing or the
    parts disagree on the weights or the calibration."""
    parts = [cache["results"].get(part_key(k, (i, n))) for i in range(n)]
    if any(p is None for p in parts):
        return None
    same = ("weights_fingerprint", "calib", "seed", "params")
    if any(p.get(f) != parts[0].get(f) for p in parts for f in same):
        return None
    if len({p.get("params_sha256") for p in parts} - {None}) > 1:   # recalibrated between parts
        return None
    images = sum(p["images"] for p in parts)
    merged = dict(parts[0])
    merged.update(psnr=sum(p["psnr"] * p["images"] for p in parts) / images,
                  ssim=sum(p["ssim"] * p["images"] for p in parts) / images, images=images,
                  seconds=round(sum(p["seconds"] for p in parts), 1), when=max(p["when"] for p in parts), parts=n)
    devices = sorted({p.get("device", "cpu") for p in parts})
    merged.pop("device", None)
    if devices != ["cpu"]:
        merged["device"] = "+".join(devices)
    return merged


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
    ap.threads(when=measuring)
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
    ap.text("--part", parse_part, when=measuring, metavar="K/N",
            help="evaluate only part K (0-based) of N disjoint parts of each set (images K, K+N, ... in "
                 "sorted order), cached as such; when all N parts of a cell are cached they are merged into "
                 "the cell (means weighted by image count): a slow set spread over runs or machines")
    return ap


@cli_main
def main(argv=None):
    args = build_parser().parse_args(argv)
    scales, datasets, bits_list, methods = args.scales, args.datasets, args.bits, args.methods
    words_list, models = args.words, args.models
    if args.threads:
        torch.set_num_threads(args.threads)
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
    with shared_collection():
        for words in words_list:
            args.words = words
            cache = run_all(args, cache, cache_path, models, scales, datasets, bits_list, methods, publish)
    publish(cache)
    print(f"updated {cache_path}" if args.no_render else f"wrote {out}")


def run_all(args, cache, cache_path, models, scales, datasets, bits_list, methods, publish) -> dict:
    """Measure every requested cell not in the cache (for ``args.words``); returns the updated cache."""
    for arch, scale in [(a, s) for a in models for s in scales]:
        weights = args.weights.replace("{scale}", str(scale))
        try:
            resolve_weights(weights, scale, arch).resolve(strict=True)
        except (UserError, FileNotFoundError):
            print(f"{arch} x{scale}: no weights ({weights}), skipped")
            continue
        model = load_model(arch, weights, scale)
        fp = weights_fingerprint(model)
        configs = [("fp", None)] if "fp" in methods else []
        configs += [(m, b) for b in bits_list for m in METHODS[1:] if m in methods]
        stats: dict = {}
        for m, b in configs:
            todo = []
            for d in datasets:
                k = key(scale, m, b, args.words, d, arch)
                hits = [(k, cache["results"].get(k))]
                if args.part:
                    hits.append((part_key(k, args.part), cache["results"].get(part_key(k, args.part))))
                for kk, hit in hits:
                    if hit and hit.get("weights_fingerprint") == fp and (m == "fp" or hit.get("calib") == args.images):
                        print(f"{kk}: cached {fmt(hit)}")
                        break
                else:
                    todo.append(d)
            if not todo:
                continue
            net, ppath, extra = build_net(model, m, scale, b, args, weights, arch, stats)
            # the params file's identity: a later recalibration to the same path shows
            params_sha = None if ppath is None else hashlib.sha256(Path(ppath).read_bytes()).hexdigest()[:16]
            if args.device.type != "cpu":   # calibration and the model it reads stay on the CPU
                net, extra = copy.deepcopy(net).to(args.device), {**extra, "device": args.device.type}
            for d in todo:
                t0 = time.perf_counter()
                r = evaluate_dataset(net, d, scale, args.data_root, part=args.part)
                if hasattr(net, "report"):   # dfsq-int: the feature-map format and its saturations, per set
                    r["integer"] = net.report()
                    net.reset()
                r.update(seconds=round(time.perf_counter() - t0, 1), weights=weights, weights_fingerprint=fp,
                         when=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), **extra)
                # float summation order, hence the last digits, follows the CPU's vector unit and the thread count
                r.update(threads=torch.get_num_threads(), cpu=cpu_label())
                if m != "fp":
                    r.update(calib=args.images, seed=args.seed, params=None if ppath is None else str(ppath))
                    if params_sha:
                        r["params_sha256"] = params_sha
                k = key(scale, m, b, args.words, d, arch)
                if args.part:
                    cache = store_result(cache_path, part_key(k, args.part), r)
                    print(f"{part_key(k, args.part)}: {fmt(r)} ({r['seconds']:.0f} s)")
                    whole = merge_parts(cache, k, args.part[1])
                    if whole is None:
                        continue
                    r = whole
                cache = store_result(cache_path, k, r)
                publish(cache)
                print(f"{k}: {fmt(r)} ({r['seconds']:.0f} s)")
    return cache


if __name__ == "__main__":
    main()
