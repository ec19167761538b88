"""PSNR of DFSQ with statistics per tile instead of per feature map (:mod:`dfsq.tile_stats`), beside per-image DFSQ.

    python -m bench.tile_stats [--tiles 64x64,rows16,rows64] [--bits 4,3] [--datasets Set5,Set14,B100,Urban100]
        [--scale 2] [--images 32] [--seed 0] [--threads N] [--cache bench/results/tile_stats.json]
        [--params-dir out/params] [--out bench/results/tile_stats]

For each tile and bit width: calibrate EDSR with per-tile normalization (the points are chosen on per-tile
normalized activations; cached in --params-dir), evaluate PSNR-Y on each set with per-tile statistics at inference,
and cache every (tile, bits, set) cell in the JSON as soon as it is measured (a rerun skips what is cached). The
per-image DFSQ cells come from bench.psnr_table's cache (bench/results/psnr_table.json), measured with the same
weights, calibration images and seed. Writes <out>.json, <out>.md and <out>.png (PSNR change against per-image
statistics per set). docs/hardware.md ("System cost") quotes the table.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from golden.args import Parser, When
from golden.errors import UserError, cli_main
from golden.files import atomic_output

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = ROOT / "bench" / "results" / "tile_stats.json"
DEFAULT_OUT = ROOT / "bench" / "results" / "tile_stats"
PSNR_TABLE = ROOT / "bench" / "results" / "psnr_table.json"
DEFAULT_TILES = ("64x64", "rows16", "rows64")
WORDS = 4


def cell_key(scale: int, tile: str, bits: int, dataset: str) -> str:
    return f"x{scale}/{tile}/W{bits}A{bits}/{dataset}"


CACHE_FORMAT = "dfsq-tile-stats-cache"
CACHE_VERSION = 1


def load_cache(path) -> dict:
    """The cache at ``path`` (a new one if absent); the validator of format ``tile-stats-cache``
    (:mod:`golden.formats`). Every entry is a result (bench.psnr_table's fields) of the tile, bit width and set its
    key names; a garbled cache is refused in one line naming the entry and the field, never merged into."""
    from bench.psnr_table import check_result
    from dfsq.tile_stats import tile_name
    from golden.formats import INT, OBJECT, TEXT, need, read_json

    path = Path(path)
    if not path.exists():
        return {"format": CACHE_FORMAT, "version": CACHE_VERSION, "results": {}}
    data = read_json(path, "tile_stats cache")
    if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
        raise UserError(f"{path} is not a tile_stats cache (no 'format': {CACHE_FORMAT!r}); move it away to start "
                        f"a new one")
    if data.get("version") != CACHE_VERSION:
        raise UserError(f"{path} is a tile_stats cache of version {data.get('version')!r}; this bench.tile_stats "
                        f"reads version {CACHE_VERSION}")

    def is_tile(v):
        try:
            return tile_name(v) == v
        except (ValueError, UserError):
            return False
    try:
        for k, r in need(data, "results", OBJECT, str(path)).items():
            at = f"{path}: results[{k!r}]"
            if not isinstance(r, dict):
                raise UserError(f"{at}: expected an object, got {type(r).__name__}")
            check_result(r, at)
            tile = need(r, "tile", TEXT, at, check=is_tile, expect="a tile (HxW or rowsN)")
            bits = need(r, "bits", INT, at, check=lambda v: 2 <= v <= 8, expect="a bit width in 2..8")
            need(r, "images_calibration", INT, at, check=lambda v: v >= 1, expect="an image count >= 1")
            need(r, "weights_fingerprint", TEXT, at)
            parts = k.split("/")
            if len(parts) != 4 or parts[1:3] != [tile, f"W{bits}A{bits}"]:
                raise UserError(f"{at}: the key does not name the entry's tile {tile} and bits {bits} "
                                f"(expected x<scale>/{tile}/W{bits}A{bits}/<set>)")
    except UserError as exc:
        raise UserError(f"{exc}: the cache is garbled (move it away to start a new one)") from None
    return data


def _write(path: Path, text: str) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(text)


def tile_params(model, scale: int, bits: int, tile: str, images: int, seed: int, params_dir: Path, weights: str):
    """Calibration with per-tile normalization, cached beside bench.psnr_table's (variant ``_tile<name>``)."""
    from bench.psnr_table import params_path
    from dfsq.calibrate import calibrate, calibration_images, load_params, save_params, weights_fingerprint

    path = params_path(params_dir, "edsr", scale, bits, WORDS, images, seed, f"_tile{tile}")
    if path.is_file():
        p = load_params(path)
        if p.config.get("weights_fingerprint") == weights_fingerprint(model) and p.config.get("stats_tile") == tile:
            return p
    params_dir.mkdir(parents=True, exist_ok=True)
    p = calibrate(model, calibration_images(None, images, scale), act_bits=bits, weight_bits=bits, words=WORDS,
                  seed=seed, weights=weights, stats_tile=tile, progress=True)
    save_params(p, path)
    return p


def baseline(scale: int, bits: int, dataset: str):
    """Per-image DFSQ PSNR from bench.psnr_table's cache (None when not measured)."""
    if not PSNR_TABLE.is_file():
        return None
    rec = json.loads(PSNR_TABLE.read_text()).get("results", {}).get(f"x{scale}/dfsq/W{bits}A{bits}/words{WORDS}/{dataset}")
    return rec.get("psnr") if isinstance(rec, dict) else None


def render(cache: dict, tiles, bits_list, datasets, scale: int) -> str:
    res = cache["results"]
    lines = [f"# DFSQ with per-tile statistics (EDSR x{scale}, {WORDS} words)", "",
             "PSNR-Y (dB, 3 decimals as in docs/results.md); in brackets the change against DFSQ with statistics "
             "over the whole feature map (bench/results/psnr_table.json). Tile `HxW`: statistics per H x W block; "
             "`rowsN`: per band of N full rows. Points calibrated with the same per-tile normalization (32 images, seed 0). Reproduce: "
             "`python -m bench.tile_stats`.", "",
             "| statistics | bits | " + " | ".join(datasets) + " |", "|---|---|" + "---|" * len(datasets)]
    for b in bits_list:
        row = ["per feature map (the paper's method, ours)", f"W{b}A{b}"]
        for d in datasets:
            v = baseline(scale, b, d)
            row.append(f"{v:.3f}" if v is not None else "…")
        lines.append("| " + " | ".join(row) + " |")
        for t in tiles:
            row = [f"per tile {t}", f"W{b}A{b}"]
            for d in datasets:
                rec = res.get(cell_key(scale, t, b, d))
                base = baseline(scale, b, d)
                if rec is None:
                    row.append("…")
                else:
                    delta = f" ({rec['psnr'] - base:+.3f})" if base is not None else ""
                    row.append(f"{rec['psnr']:.3f}{delta}")
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def plot(cache: dict, tiles, bits_list, datasets, scale: int, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = cache["results"]
    fig, axes = plt.subplots(1, len(bits_list), figsize=(5 * len(bits_list), 3.5), squeeze=False)
    drawn = False
    for ax, b in zip(axes[0], bits_list):
        for t in tiles:
            xs, ys = [], []
            for i, d in enumerate(datasets):
                rec, base = res.get(cell_key(scale, t, b, d)), baseline(scale, b, d)
                if rec is not None and base is not None:
                    xs.append(i)
                    ys.append(rec["psnr"] - base)
            if xs:
                ax.plot(xs, ys, marker="o", label=t)
                drawn = True
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xticks(range(len(datasets)), datasets)
        ax.set_title(f"W{b}A{b}")
        ax.set_ylabel("PSNR change vs per-image statistics (dB)")
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    if drawn:
        with atomic_output(path, ".png") as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return drawn


def _tile(text: str) -> str:
    from dfsq.tile_stats import tile_name

    return tile_name(text)


def build_parser() -> Parser:
    from dfsq.data import DATASETS

    ap = Parser(prog="python -m bench.tile_stats", description=__doc__.split("\n\n")[0])
    measuring = When("render_only", False)   # --render-only only redraws --out from --cache
    ap.item_list("--tiles", _tile, "tiles (HxW or rowsN)", example="64x64", default=list(DEFAULT_TILES),
                 help="HxW tiles or rowsN bands, comma-separated (default 64x64,rows16,rows64)")
    ap.int_list("--bits", 2, 8, default=[4, 3])
    ap.choice_list("--datasets", DATASETS, default=list(DATASETS))
    ap.choice("--scale", (2, 4), default=2)
    ap.input_file("--weights", fmt="checkpoint", special=("default",), default="default", when=measuring)
    ap.integer("--images", 1, 10_000, default=32, when=measuring, help="calibration images")
    ap.seed(when=measuring)
    ap.threads(when=measuring)
    ap.cache_file("--cache", "tile-stats-cache", default=str(DEFAULT_CACHE))
    ap.work_dir("--params-dir", default=str(ROOT / "out" / "params"), when=measuring,
                help="where calibrations are cached")
    ap.output_stem("--out", (".md", ".png"), default=str(DEFAULT_OUT), help="writes OUT.md and OUT.png")
    ap.flag("--render-only", help="only rewrite OUT.md and OUT.png from the cache")
    return ap


@cli_main
def main(argv=None):
    args = build_parser().parse_args(argv)
    from dfsq.data import BENCHMARK_ROOT

    tiles, bits_list, datasets = args.tiles, args.bits, args.datasets
    cache_path, out = Path(args.cache), Path(args.out)
    cache = load_cache(cache_path)

    def publish():
        _write(out.with_suffix(".md"), render(cache, tiles, bits_list, datasets, args.scale))
        plot(cache, tiles, bits_list, datasets, args.scale, out.with_suffix(".png"))

    if not args.render_only:
        for d in datasets:
            if not (BENCHMARK_ROOT / d / "HR").is_dir():
                raise UserError(f"dataset {d} not found under {BENCHMARK_ROOT}")
        if args.threads:
            torch.set_num_threads(args.threads)
        from dfsq.calibrate import weights_fingerprint
        from dfsq.evaluate import evaluate_dataset
        from dfsq.model import load_model
        from dfsq.quantize import quantize_model
        from dfsq.tile_stats import apply_tile_stats

        model = load_model("edsr", args.weights, args.scale)
        fp = weights_fingerprint(model)
        for b in bits_list:          # every tile at the first bit width first: the main comparison
            for t in tiles:
                todo = [d for d in datasets if (cache["results"].get(cell_key(args.scale, t, b, d)) or {})
                        .get("weights_fingerprint") != fp]
                if not todo:
                    continue
                params = tile_params(model, args.scale, b, t, args.images, args.seed, Path(args.params_dir),
                                     args.weights)
                net = apply_tile_stats(quantize_model(model, params, "dfsq"), t)
                for d in todo:
                    t0 = time.perf_counter()
                    r = evaluate_dataset(net, d, args.scale)
                    r.update(weights_fingerprint=fp, seconds=round(time.perf_counter() - t0, 1), tile=t, bits=b,
                             images_calibration=args.images, seed=args.seed)
                    cache["results"][cell_key(args.scale, t, b, d)] = r
                    _write(cache_path, json.dumps(cache, indent=1, sort_keys=True) + "\n")
                    print(f"{t} W{b}A{b} {d}: {r['psnr']:.3f} dB ({r['seconds']:.0f} s)", flush=True)
                    publish()
    publish()
    print(f"wrote {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    main()
