"""Valid samples and garbled variants of every file format in :mod:`golden.formats` (the fuzzers' library).

``sample(fmt, folder)`` writes a small valid file (or folder) of format ``fmt`` and returns its path;
``garbles(fmt, valid, folder)`` returns ``{name: path}`` of variants that format's validator must refuse in one line:
the generic ones (missing, empty, truncated, text, a folder for a file / a file for a folder) and the format's own
(a JSON list, a missing field, a field of the wrong type, NaN, min above max, ...). A format added to the registry
without a sample here fails tests/test_formats.py.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = ROOT / "weights" / "edsr_baseline_x2.pt"
PARAMS = ROOT / "weights" / "dfsq_x2_a4w4_words4.npz"


# --- helpers ------------------------------------------------------------------------------------------------------
def _npz(src: Path, dst: Path, **changes) -> Path:
    with np.load(src, allow_pickle=False) as z:
        d = {k: z[k] for k in z.files}
    for k, f in changes.items():
        if f is None:
            d.pop(k, None)
        else:
            d[k] = f(d[k]) if callable(f) else f
    with open(dst, "wb") as fh:
        np.savez(fh, **d)
    return dst


def _json(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path


def _mutate_json(valid: Path, folder: Path, name: str, fn) -> Path:
    data = json.loads(valid.read_text())
    out = fn(data)
    return _json(folder / name, data if out is None else out)


def _png(path: Path, shape=(24, 24, 3), seed=0) -> Path:
    from dfsq.data import save_rgb

    save_rgb(np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8), path)
    return path


# --- samples ------------------------------------------------------------------------------------------------------
def _sample_checkpoint(folder: Path) -> Path:
    import torch

    from dfsq.model import EDSR

    path = folder / "w.pt"
    if WEIGHTS.is_file():
        shutil.copyfile(WEIGHTS, path)
    else:
        torch.manual_seed(0)
        torch.save(EDSR(2).state_dict(), path)
    return path


def _sample_train_state(folder: Path) -> Path:
    import torch

    from dfsq.model import EDSR
    from dfsq.train import _meta, save_state

    torch.manual_seed(0)
    model = EDSR(2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    path = folder / "m.pt.state"
    save_state(path, _meta("edsr", 2, model), model, opt, np.random.default_rng(0), 1.0, 1, [])
    return path


def _sample_params(folder: Path) -> Path:
    path = folder / "p.npz"
    shutil.copyfile(PARAMS, path)
    return path


def _sample_export(folder: Path) -> Path:
    from golden.export_io import write_export
    from golden.spec import DatapathSpec
    from golden.synthetic import synthetic_layers

    spec = DatapathSpec()
    return write_export(folder / "exp", synthetic_layers(np.random.default_rng(0), spec, 3, N=1, C=16, O=8, H=6, W=7),
                        spec)


def _sample_image(folder: Path) -> Path:
    return _png(folder / "img.png")


def _sample_images(folder: Path) -> Path:
    d = folder / "imgs"
    d.mkdir()
    _png(d / "a.png", (32, 32, 3))
    return d


def _sample_benchmarks(folder: Path) -> Path:
    d = folder / "bench"
    (d / "Set5" / "HR").mkdir(parents=True)
    _png(d / "Set5" / "HR" / "b.png", (24, 24, 3), 1)
    return d


def _sample_psnr_cache(folder: Path) -> Path:
    cell = {"psnr": 37.1, "ssim": 0.95, "images": 5, "seconds": 1.0, "when": "2025-01-01 00:00 UTC",
            "weights": "default", "weights_fingerprint": "ab" * 32}
    return _json(folder / "cache.json", {"format": "dfsq-psnr-cache", "version": 2, "results": {
        "x2/fp/-/Set5": cell, "x2/dfsq/W4A4/words4/Set5": dict(cell, psnr=36.9, calib=32, seed=0, params=None)}})


def _sample_minmax_cache(folder: Path) -> Path:
    cell = {"psnr": 37.1, "ssim": 0.95, "images": 5, "seconds": 1.0, "when": "2025-01-01 00:00 UTC"}
    return _json(folder / "minmax.json", {"format": "dfsq-psnr-cache", "version": 2, "results": {
        "x2/W4A4/images/Set5": cell, "outliers/x2": {"rows": [{"layer": 0}]}}})


def _sample_tile_stats_cache(folder: Path) -> Path:
    cell = {"psnr": 36.8, "ssim": 0.95, "images": 5, "seconds": 1.0, "weights_fingerprint": "ab" * 32,
            "tile": "rows16", "bits": 4, "images_calibration": 32, "seed": 0}
    return _json(folder / "tile_stats.json", {"format": "dfsq-tile-stats-cache", "version": 1, "results": {
        "x2/rows16/W4A4/Set5": cell, "x2/64x64/W3A3/Set5": dict(cell, tile="64x64", bits=3, psnr=35.2)}})


def _sample_psnr_results(folder: Path) -> Path:
    return _json(folder / "results.json", {"format": "dfsq-psnr-cache", "version": 1, "results": {
        "x2/dfsq/W4A4/words4/Set5": {"psnr": 37.0, "ssim": 0.95}}})


def _sample_calib_rows(folder: Path) -> Path:
    rows = json.loads((ROOT / "bench" / "results" / "calib_scale.json").read_text())["rows"]
    path = folder / "rows.jsonl"
    path.write_text("case S ...\n" + "\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def _sample_sidecar(folder: Path) -> Path:
    from golden.spec import DatapathSpec
    from hw.generate import generate

    return Path(generate("mac", DatapathSpec(), out_dir=folder / "rtl")[1])


def _sample_synth_entry(folder: Path) -> Path:
    return _json(folder / "entry.json", {"flow": "ice40", "top": "design", "tools": {"yosys": "0.4"},
                                         "mapper": "abc9", "synth_seconds": 1.5, "lut4": 84, "carry": 10, "ffs": 20,
                                         "bram": 0, "lc": 90, "by_type": {"SB_LUT4": 84}})


def _sample_hw_report(folder: Path) -> Path:
    return _json(folder / "hardware.json", {"tools": {"yosys": "0.4"}, "rows": [
        {"group": "ecp5", "name": "engine", "raw": {"ecp5": {"lut4": 84, "ffs": 20}}}]})


def _sample_uniform_stats(folder: Path) -> Path:
    path = folder / "stats.npz"
    rng = np.random.default_rng(0)
    lo = -rng.random((2, 4)).astype(np.float32)
    np.savez(path, tag=np.array("fp/1024/0"), names=np.array(["a", "b"]), min=lo, max=lo + 1,
             sample=rng.random((2, 4, 8)).astype(np.float32))
    return path


def _sample_selection_speed(folder: Path) -> Path:
    path = folder / "ss.json"
    shutil.copyfile(ROOT / "bench" / "results" / "selection_speed.json", path)
    return path


def _sample_recon(folder: Path) -> Path:
    """A reconstruction file of a tiny EDSR (its weights rounded, its activation steps set, not trained)."""
    import torch

    import dfsq.reconstruct as R
    from dfsq.model import EDSR
    from dfsq.recon_file import save_recon

    torch.manual_seed(0)
    m = EDSR(2, n_resblocks=2, n_feats=8).eval()
    r = R.build_recon_model(m, "brecq", 4, 4)
    for c in R.recon_convs(r):
        c.weight.freeze()
        c.act.set(0.5, 0 if c.act.relu_input else 5)
    R.set_modes(R.recon_convs(r), "hard", True)
    from dfsq.calibrate import weights_fingerprint

    config = {"method": "brecq", "model": "edsr", "scale": 2, "act_bits": 4, "weight_bits": 4, "seed": 0,
              "images": 1, "weights": "random", "weights_fingerprint": weights_fingerprint(m),
              "budget": {"name": "cpu"}, "settings": {}}
    return save_recon(R.static_result(m, r, config, {}), folder / "recon.npz")


SAMPLES = {
    "checkpoint": _sample_checkpoint, "train-state": _sample_train_state, "params": _sample_params,
    "export": _sample_export, "image": _sample_image, "images": _sample_images, "benchmarks": _sample_benchmarks,
    "psnr-cache": _sample_psnr_cache, "minmax-cache": _sample_minmax_cache, "psnr-results": _sample_psnr_results,
    "synth-entry": _sample_synth_entry, "calib-rows": _sample_calib_rows, "sidecar": _sample_sidecar,
    "uniform-stats": _sample_uniform_stats, "selection-speed": _sample_selection_speed, "recon": _sample_recon,
    "hw-report": _sample_hw_report, "tile-stats-cache": _sample_tile_stats_cache,
}
#: formats whose sample needs the embedded params file
NEEDS_PARAMS = {"params"}
#: caches: a missing file is a new, empty cache (valid); every other garble is refused
CACHES = {"psnr-cache", "minmax-cache", "tile-stats-cache"}


def sample(fmt: str, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return SAMPLES[fmt](folder)


# --- garbles ------------------------------------------------------------------------------------------------------
def _generic_file(valid: Path, folder: Path) -> dict:
    data = valid.read_bytes()
    out = {"missing": folder / "missing.bin", "empty": folder / f"empty{valid.suffix}",
           "truncated": folder / f"truncated{valid.suffix}", "text": folder / f"text{valid.suffix}",
           "folder": folder / f"folder{valid.suffix}"}
    out["empty"].write_bytes(b"")
    out["truncated"].write_bytes(data[: max(1, len(data) // 2)])
    out["text"].write_text("not a data file\n")
    out["folder"].mkdir()
    return out


def _generic_folder(valid: Path, folder: Path) -> dict:
    out = {"missing": folder / "missing-dir", "empty-folder": folder / "empty-dir", "a-file": folder / "a-file"}
    out["empty-folder"].mkdir()
    out["a-file"].write_text("a file, not a folder\n")
    return out


def _garble_checkpoint(valid: Path, folder: Path) -> dict:
    import torch

    out = {}
    torch.save([1, 2, 3], folder / "list.pt")
    out["a-list"] = folder / "list.pt"
    torch.save({"w": torch.tensor([float("nan")])}, folder / "nan.pt")
    out["nan"] = folder / "nan.pt"
    torch.save({"w": 3}, folder / "nontensor.pt")
    out["non-tensor"] = folder / "nontensor.pt"
    return out


def _garble_params(valid: Path, folder: Path) -> dict:
    def meta(fn):
        def change(m):
            d = json.loads(str(m))
            r = fn(d)
            return np.array(json.dumps(d if r is None else r))
        return change

    return {
        "nan-points": _npz(valid, folder / "nan.npz", points=lambda a: np.full_like(a, np.nan)),
        "act-min-above-max": _npz(valid, folder / "minmax.npz", act_min=lambda a: a + 1e6),
        "zero-width-range": _npz(valid, folder / "zero.npz", act_max=lambda a: a.copy(), act_min=None) and
        _npz(valid, folder / "zero.npz", act_min=lambda a: a * 0, act_max=lambda a: a * 0),
        "weight-scale-0": _npz(valid, folder / "ws.npz", weight_scale=lambda a: a * 0),
        "no-meta": _npz(valid, folder / "nometa.npz", meta=None),
        "meta-list": _npz(valid, folder / "metalist.npz", meta=np.array("[1, 2]")),
        "float-act-bits": _npz(valid, folder / "fab.npz", meta=meta(lambda d: d["config"].update(act_bits=4.5))),
        "missing-array": _npz(valid, folder / "noloss.npz", loss=None),
        "wrong-dtype": _npz(valid, folder / "dtype.npz", point_ints=lambda a: a.astype(np.float64)),
    }


def _manifest_variant(valid: Path, folder: Path, name: str, fn) -> Path:
    dst = folder / name
    shutil.copytree(valid, dst)
    m = json.loads((dst / "manifest.json").read_text())
    r = fn(m)
    (dst / "manifest.json").write_text(json.dumps(m if r is None else r))
    return dst


def _garble_export(valid: Path, folder: Path) -> dict:
    out = {
        "manifest-list": _manifest_variant(valid, folder, "e_list", lambda m: [m]),
        "no-layers": _manifest_variant(valid, folder, "e_nolayers", lambda m: m.pop("layers") and None),
        "float-act-bits": _manifest_variant(valid, folder, "e_float",
                                            lambda m: m["spec"].update(act_bits=4.5)),
        "trimmed": _manifest_variant(valid, folder, "e_trim", lambda m: m.update(layers=m["layers"][:1])),
        "null-spec": _manifest_variant(valid, folder, "e_nullspec", lambda m: m.update(spec=None)),
    }
    d = _manifest_variant(valid, folder, "e_badjson", lambda m: None)
    (d / "manifest.json").write_text('{"format": "dfsq-export", "layers": [')
    out["truncated-manifest"] = d
    d = _manifest_variant(valid, folder, "e_nomanifest", lambda m: None)
    (d / "manifest.json").unlink()
    out["no-manifest"] = d
    d = _manifest_variant(valid, folder, "e_trunclayer", lambda m: None)
    first = sorted(d.glob("00_*.npz"))[0]
    first.write_bytes(first.read_bytes()[:300])
    out["truncated-layer"] = d
    d = _manifest_variant(valid, folder, "e_nan", lambda m: None)
    f = sorted(d.glob("00_*.npz"))[0]
    _npz(f, f, y=lambda a: np.full_like(a, np.nan))
    out["nan-layer"] = d
    return out


def _garble_image(valid: Path, folder: Path) -> dict:
    from PIL import Image

    Image.fromarray(np.zeros((8, 8), np.int32)).save(folder / "i32.tif")
    return {"32-bit": folder / "i32.tif"}


def _garble_images(valid: Path, folder: Path) -> dict:
    d = folder / "imgs_text"
    d.mkdir()
    (d / "notes.txt").write_text("no images here\n")
    bad = folder / "imgs_bad"
    bad.mkdir()
    (bad / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    return {"no-images": d, "truncated-png": bad}


def _garble_benchmarks(valid: Path, folder: Path) -> dict:
    no_hr = folder / "b_nohr"
    (no_hr / "Set5").mkdir(parents=True)
    bad = folder / "b_bad"
    (bad / "Set5" / "HR").mkdir(parents=True)
    (bad / "Set5" / "HR" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    empty = folder / "b_emptyset"
    (empty / "Set5" / "HR").mkdir(parents=True)
    return {"no-HR": no_hr, "truncated-png": bad, "empty-set": empty}


def _entry(key: str, fn):
    """A change of a cache's JSON: ``fn`` applied to its entry ``results[key]``."""
    def change(d):
        fn(d["results"][key])
    return change


def _cache_garbles(valid: Path, folder: Path, key: str) -> dict:
    def entry(fn):
        return _entry(key, fn)
    return {
        "a-list": _mutate_json(valid, folder, "list.json", lambda d: [d]),
        "no-results": _mutate_json(valid, folder, "nores.json", lambda d: d.pop("results") and None),
        "results-list": _mutate_json(valid, folder, "reslist.json", lambda d: d.update(results=[])),
        "null-entry": _mutate_json(valid, folder, "null.json", lambda d: d["results"].update({key: None})),
        "psnr-text": _mutate_json(valid, folder, "ptext.json", entry(lambda r: r.update(psnr="37.1"))),
        "psnr-nan": _mutate_json(valid, folder, "pnan.json", entry(lambda r: r.update(psnr=float("nan")))),
        "no-ssim": _mutate_json(valid, folder, "nossim.json", entry(lambda r: r.pop("ssim"))),
        "images-0": _mutate_json(valid, folder, "img0.json", entry(lambda r: r.update(images=0))),
        "wrong-format": _mutate_json(valid, folder, "fmt.json", lambda d: d.update(format="other")),
    }


def _garble_psnr_cache(valid: Path, folder: Path) -> dict:
    out = _cache_garbles(valid, folder, "x2/fp/-/Set5")
    out["fingerprint-number"] = _mutate_json(valid, folder, "fpnum.json",
                                             lambda d: d["results"]["x2/fp/-/Set5"].update(weights_fingerprint=7))
    out["version-99"] = _mutate_json(valid, folder, "v99.json", lambda d: d.update(version=99))
    return out


def _garble_minmax_cache(valid: Path, folder: Path) -> dict:
    out = _cache_garbles(valid, folder, "x2/W4A4/images/Set5")
    out["rows-not-list"] = _mutate_json(valid, folder, "rows.json",
                                        lambda d: d["results"]["outliers/x2"].update(rows="x"))
    return out


def _garble_tile_stats_cache(valid: Path, folder: Path) -> dict:
    key = "x2/rows16/W4A4/Set5"

    def entry(fn):
        return _entry(key, fn)
    out = _cache_garbles(valid, folder, key)
    out.update({
        "tile-bad": _mutate_json(valid, folder, "tile.json", entry(lambda r: r.update(tile="rows0"))),
        "bits-9": _mutate_json(valid, folder, "bits9.json", entry(lambda r: r.update(bits=9))),
        "key-mismatch": _mutate_json(valid, folder, "key.json", entry(lambda r: r.update(bits=3))),
        "no-fingerprint": _mutate_json(valid, folder, "nofp.json", entry(lambda r: r.pop("weights_fingerprint"))),
        "version-99": _mutate_json(valid, folder, "v99.json", lambda d: d.update(version=99)),
    })
    return out


def _garble_psnr_results(valid: Path, folder: Path) -> dict:
    key = "x2/dfsq/W4A4/words4/Set5"
    return {
        "psnr-text": _mutate_json(valid, folder, "ptext.json", lambda d: d["results"][key].update(psnr="x")),
        "null-entry": _mutate_json(valid, folder, "null.json", lambda d: d["results"].update({key: None})),
        "no-psnr-at-all": _json(folder / "nothing.json", {"rows": []}),
        "bad-record": _json(folder / "badrec.json", [{"psnr": 37.0, "method": "dfsq"}]),
    }


def _garble_calib_rows(valid: Path, folder: Path) -> dict:
    rows = [json.loads(line) for line in valid.read_text().splitlines() if line.startswith("{")]

    def write(name, rs, extra=""):
        p = folder / name
        p.write_text(extra + "\n".join(json.dumps(r) for r in rs) + "\n")
        return p
    return {
        "no-rows": write("none.jsonl", [], "progress only\n"),
        "missing-field": write("nofield.jsonl", [{k: v for k, v in rows[0].items() if k != "seconds_wall"}]),
        "bad-case": write("case.jsonl", [dict(rows[0], case="Z")]),
        "text-number": write("text.jsonl", [dict(rows[0], layers="42")]),
        "broken-json": write("broken.jsonl", [], '{"case": "S",\n'),
    }


def _garble_sidecar(valid: Path, folder: Path) -> dict:
    return {
        "a-list": _mutate_json(valid, folder, "list.json", lambda d: [d]),
        "wrong-format": _mutate_json(valid, folder, "fmt.json", lambda d: d.update(format="x")),
        "no-ports": _mutate_json(valid, folder, "noports.json", lambda d: d.pop("ports") and None),
        "port-width-0": _mutate_json(valid, folder, "w0.json", lambda d: d["ports"][0].update(width=0)),
        "latency-text": _mutate_json(valid, folder, "lat.json", lambda d: d.update(latency="3")),
    }


def _garble_synth_entry(valid: Path, folder: Path) -> dict:
    return {
        "a-list": _mutate_json(valid, folder, "list.json", lambda d: [d]),
        "unknown-flow": _mutate_json(valid, folder, "flow.json", lambda d: d.update(flow="asic")),
        "lut4-text": _mutate_json(valid, folder, "lut.json", lambda d: d.update(lut4="84")),
        "lut4-negative": _mutate_json(valid, folder, "neg.json", lambda d: d.update(lut4=-1)),
        "no-tools": _mutate_json(valid, folder, "notools.json", lambda d: d.pop("tools") and None),
    }


def _garble_hw_report(valid: Path, folder: Path) -> dict:
    return {
        "a-list": _mutate_json(valid, folder, "list.json", lambda d: [d]),
        "no-rows": _mutate_json(valid, folder, "norows.json", lambda d: d.pop("rows") and None),
        "row-text": _mutate_json(valid, folder, "rowtext.json", lambda d: d.update(rows=["engine"])),
        "raw-list": _mutate_json(valid, folder, "rawlist.json", lambda d: d["rows"][0].update(raw=[1])),
        "no-name": _mutate_json(valid, folder, "noname.json", lambda d: d["rows"][0].pop("name") and None),
    }


def _garble_uniform_stats(valid: Path, folder: Path) -> dict:
    return {
        "min-above-max": _npz(valid, folder / "mm.npz", min=lambda a: a + 5),
        "nan": _npz(valid, folder / "nan.npz", sample=lambda a: np.full_like(a, np.nan)),
        "no-tag": _npz(valid, folder / "notag.npz", tag=None),
        "short-max": _npz(valid, folder / "short.npz", max=lambda a: a[:1]),
    }


def _garble_train_state(valid: Path, folder: Path) -> dict:
    import torch

    torch.save({"meta": "{}"}, folder / "partial.state")
    st = torch.load(valid, weights_only=True)
    st["history"] = "{not json"
    torch.save(st, folder / "badhist.state")
    st["history"], st["elapsed"] = "[]", -5.0
    torch.save(st, folder / "negative.state")
    return {"missing-fields": folder / "partial.state", "bad-history": folder / "badhist.state",
            "negative-elapsed": folder / "negative.state"}


def _garble_selection_speed(valid: Path, folder: Path) -> dict:
    return {
        "a-list": _mutate_json(valid, folder, "list.json", lambda d: [d]),
        "no-selection": _mutate_json(valid, folder, "nosel.json", lambda d: d.pop("selection") and None),
        "row-text": _mutate_json(valid, folder, "rowtext.json", lambda d: d["selection"][0].update(points="2")),
    }


def _garble_recon(valid: Path, folder: Path) -> dict:
    def meta(fn):
        def change(m):
            d = json.loads(str(m))
            fn(d)
            return np.array(json.dumps(d))
        return change

    return {
        "act-step-0": _npz(valid, folder / "step0.npz", act_step=lambda a: a * 0),
        "weight-q-high": _npz(valid, folder / "wq.npz", weight_q=lambda a: np.full_like(a, 255)),
        "no-meta": _npz(valid, folder / "nometa.npz", meta=None),
        "method-dfsq": _npz(valid, folder / "method.npz", meta=meta(lambda d: d["config"].update(method="dfsq"))),
        "missing-array": _npz(valid, folder / "noact.npz", act_zero=None),
    }


GARBLES = {
    "checkpoint": _garble_checkpoint, "train-state": _garble_train_state, "params": _garble_params,
    "export": _garble_export, "image": _garble_image, "images": _garble_images, "benchmarks": _garble_benchmarks,
    "psnr-cache": _garble_psnr_cache, "minmax-cache": _garble_minmax_cache, "psnr-results": _garble_psnr_results,
    "synth-entry": _garble_synth_entry, "calib-rows": _garble_calib_rows, "sidecar": _garble_sidecar,
    "uniform-stats": _garble_uniform_stats, "selection-speed": _garble_selection_speed, "recon": _garble_recon,
    "hw-report": _garble_hw_report, "tile-stats-cache": _garble_tile_stats_cache,
}


def garbles(fmt: str, valid: Path, folder: Path) -> dict:
    """``{name: path}``: the generic and the format's own garbled variants of ``valid`` (format ``fmt``)."""
    from golden.formats import FORMATS

    folder.mkdir(parents=True, exist_ok=True)
    generic = _generic_folder if FORMATS[fmt].kind == "folder" else _generic_file
    return {**generic(valid, folder), **GARBLES[fmt](valid, folder)}
