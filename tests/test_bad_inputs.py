"""Bad-input fuzz table: every CLI, fed missing, folder, empty, truncated, wrong-dtype, NaN, out-of-range and
unwritable inputs/outputs, must exit 2 (1 for a failed check) with one line on stderr, no traceback, and leave no
new file or folder behind (in its inputs, its output location or the repository).

The CLIs run in-process through their ``main(argv)``; every case fails before any long work, so the table runs in
seconds. Cases that need the embedded weights/params or Icarus skip with the reason when those are absent. Signals
(SIGTERM during an export, Ctrl-C during a parallel simulation) run in subprocesses below the table.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from dfsq.data import save_rgb

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = ROOT / "weights" / "edsr_baseline_x2.pt"
PARAMS = ROOT / "weights" / "dfsq_x2_a4w4_words4.npz"
HAVE_ICARUS = shutil.which("iverilog") is not None and shutil.which("vvp") is not None
SYNTH = dict(N=1, C=16, O=8, H=6, W=7)   # synthetic export layers: 6x7 pixels, 16 -> 8 channels


# --- the library of bad files ---------------------------------------------------------------------------------
def _huge_npy() -> bytes:
    """A .npy whose header claims 10^12 float64 values (8 TB) over 16 bytes of data."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": (10 ** 12,)})
    return buf.getvalue() + b"\0" * 16


def _replace_npz(src: Path, dst: Path, **changes) -> Path:
    with np.load(src, allow_pickle=False) as z:
        d = {k: z[k] for k in z.files}
    for k, f in changes.items():
        d[k] = f(d[k]) if callable(f) else f
    with open(dst, "wb") as f:
        np.savez(f, **d)
    return dst


def _params_meta(fn):
    def change(meta):
        m = json.loads(str(meta))
        m = fn(m)
        return np.array(json.dumps(m))
    return change


def _manifest(src: Path, dst: Path, fn) -> Path:
    shutil.copytree(src, dst)
    m = json.loads((dst / "manifest.json").read_text())
    fn(m)
    (dst / "manifest.json").write_text(json.dumps(m))
    return dst


@pytest.fixture(scope="module")
def lib(tmp_path_factory) -> SimpleNamespace:
    from golden.export_io import write_export
    from golden.spec import DatapathSpec
    from golden.synthetic import synthetic_layers

    d = tmp_path_factory.mktemp("badlib")
    L = SimpleNamespace(dir=d)
    L.missing = d / "does-not-exist"
    L.folder = d / "a-folder"
    L.folder.mkdir()
    L.png_folder = d / "a-folder.png"
    L.png_folder.mkdir()
    L.empty = d / "empty.bin"
    L.empty.write_bytes(b"")
    L.text = d / "text.txt"
    L.text.write_text("not a data file\n")
    L.unwritable = d / "text.txt" / "sub" / "x.out"        # parent is a regular file (works as root, too)
    L.proc = Path("/proc/dfsq-no-such-dir/x.out")
    L.empty_pt = d / "empty.pt"
    L.empty_pt.write_bytes(b"")
    L.weights = str(WEIGHTS) if WEIGHTS.is_file() else None
    if WEIGHTS.is_file():
        L.trunc_pt = d / "trunc.pt"
        L.trunc_pt.write_bytes(WEIGHTS.read_bytes()[:5000])
    # images
    L.imgdir = d / "imgs"
    L.imgdir.mkdir()
    rng = np.random.default_rng(0)
    save_rgb(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8), L.imgdir / "a.png")
    L.bad_img = d / "bad.png"
    L.bad_img.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    L.bench = d / "bench"
    (L.bench / "Set5" / "HR").mkdir(parents=True)
    save_rgb(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8), L.bench / "Set5" / "HR" / "b.png")
    # params (mutated copies of the embedded calibration)
    if PARAMS.is_file():
        P = PARAMS
        L.params = str(P)
        L.p_trunc = d / "p_trunc.npz"
        L.p_trunc.write_bytes(P.read_bytes()[:4000])
        L.p_zp = _replace_npz(P, d / "p_zp.npz", zero_point=lambda a: np.full_like(a, 99))
        L.p_zp_neg = _replace_npz(P, d / "p_zp_neg.npz", zero_point=lambda a: np.full_like(a, -1))
        L.p_ws = _replace_npz(P, d / "p_ws.npz", weight_scale=lambda a: np.where(np.arange(a.size).reshape(a.shape)
                                                                                  == 3, 0, a).astype(a.dtype))
        L.p_nan = _replace_npz(P, d / "p_nan.npz", points=lambda a: np.full_like(a, np.nan))
        L.p_gap = _replace_npz(P, d / "p_gap.npz", meta=_params_meta(lambda m: {**m, "config": {**m["config"],
                                                                                                 "gap": 99}}))
        L.p_metalist = _replace_npz(P, d / "p_metalist.npz", meta=np.array(json.dumps([1, 2])))
        L.p_noconfig = _replace_npz(P, d / "p_noconfig.npz",
                                    meta=_params_meta(lambda m: {k: v for k, v in m.items() if k != "config"}))
        L.p_wq = _replace_npz(P, d / "p_wq.npz", weight_q=lambda a: a[:, :, :, :2, :2])
        L.p_dtype = _replace_npz(P, d / "p_dtype.npz", point_ints=lambda a: a.astype(np.float64))
        L.p_layers = _replace_npz(P, d / "p_layers.npz", loss=lambda a: a[:5])
        L.p_huge = d / "p_huge.npz"
        shutil.copyfile(P, L.p_huge)
        with zipfile.ZipFile(L.p_huge, "a") as z:
            z.writestr("zzz.npy", _huge_npy())
        with zipfile.ZipFile(L.p_huge) as z:   # make the huge member one that load_params reads
            members = {n: z.read(n) for n in z.namelist()}
        members["weight_scale.npy"] = members.pop("zzz.npy")
        with zipfile.ZipFile(L.p_huge, "w") as z:
            for n, b in members.items():
                z.writestr(n, b)
    # a synthetic export and mutated copies
    spec = DatapathSpec()
    L.exp = write_export(d / "exp", synthetic_layers(np.random.default_rng(0), spec, 3, **SYNTH), spec)
    L.exp_trim = _manifest(L.exp, d / "exp_trim", lambda m: m.update(layers=m["layers"][:1]))
    L.exp_relu = _manifest(L.exp, d / "exp_relu", lambda m: m["layers"][1].update(
        relu_input=not m["layers"][1]["relu_input"]))
    L.exp_dup = _manifest(L.exp, d / "exp_dup", lambda m: m["layers"].append(dict(m["layers"][2])))
    L.exp_shape = _manifest(L.exp, d / "exp_shape", lambda m: m["layers"][0].update(input_shape=[1, 16, 7, 6],
                                                                                     output_shape=[1, 8, 7, 6]))
    L.exp_nullspec = _manifest(L.exp, d / "exp_nullspec", lambda m: m.update(spec=None))
    L.exp_nullcfg = _manifest(L.exp, d / "exp_nullcfg", lambda m: m.update(config=None))
    L.exp_noname = _manifest(L.exp, d / "exp_noname", lambda m: m["layers"][0].pop("name"))
    L.exp_badjson = _manifest(L.exp, d / "exp_badjson", lambda m: None)
    (L.exp_badjson / "manifest.json").write_text('{"format": "dfsq-export", "layers": [')
    L.exp_trunc = _manifest(L.exp, d / "exp_trunc", lambda m: None)
    first = sorted(L.exp_trunc.glob("00_*.npz"))[0]
    first.write_bytes(first.read_bytes()[:300])
    L.exp_huge = _manifest(L.exp, d / "exp_huge", lambda m: None)
    first = sorted(L.exp_huge.glob("00_*.npz"))[0]
    with zipfile.ZipFile(first) as z:
        members = {n: z.read(n) for n in z.namelist()}
    members["x.npy"] = _huge_npy()
    with zipfile.ZipFile(first, "w") as z:
        for n, b in members.items():
            z.writestr(n, b)
    L.exp_nan = _manifest(L.exp, d / "exp_nan", lambda m: None)
    _replace_npz(sorted(L.exp_nan.glob("01_*.npz"))[0], sorted(L.exp_nan.glob("01_*.npz"))[0],
                 y=lambda a: np.full_like(a, np.nan))
    L.exp_dtype = _manifest(L.exp, d / "exp_dtype", lambda m: None)
    _replace_npz(sorted(L.exp_dtype.glob("02_*.npz"))[0], sorted(L.exp_dtype.glob("02_*.npz"))[0],
                 weight_q=lambda a: a.astype(np.int64))
    L.exp_badcode = _manifest(L.exp, d / "exp_badcode", lambda m: None)

    def flip(c):
        c = c.copy()
        c[0, 1, 2, 3] = (int(c[0, 1, 2, 3]) + 1) % 16
        return c
    _replace_npz(sorted(L.exp_badcode.glob("01_*.npz"))[0], sorted(L.exp_badcode.glob("01_*.npz"))[0], codes=flip)
    # PSNR result inputs of hw.report
    L.results_bad = d / "results_bad.json"
    L.results_bad.write_text("{ not json")
    L.results_empty = d / "results_empty"
    L.results_empty.mkdir()
    return L


def _tree(*roots: Path) -> set[str]:
    out = set()
    for r in roots:
        if r.exists():
            out |= {str(p) for p in r.rglob("*")}
    return out


def _repo_top() -> set[str]:
    return {p.name for p in ROOT.iterdir()} | {f"rtl_out/{p.name}" for p in (ROOT / "rtl_out").glob("*")}


# --- the table ----------------------------------------------------------------------------------------------------
# (id, module, argv(L, O) -> list, exit code, needs) ; needs: "weights", "params", "icarus"
E_BASE = lambda L, O, **kw: (["--weights", L.weights or "default", "--params", kw.get("params", L.params),  # noqa: E731
                              "--image", kw.get("image", "sample"), "--crop", kw.get("crop", "0,0,8,8"),
                              "--out", kw.get("out", str(O / "exp"))] + kw.get("extra", []))
C_BASE = lambda L, O, **kw: (["--weights", kw.get("weights", L.weights or "default"), "--calib",  # noqa: E731
                              kw.get("calib", str(L.imgdir)), "--images", "1", "--restarts", "1", "--bins", "64",
                              "--out", kw.get("out", str(O / "p.npz"))] + kw.get("extra", []))
T_BASE = lambda L, O, **kw: (["--data", str(L.imgdir), "--minutes", kw.get("minutes", "0.01"),  # noqa: E731
                              "--out", kw.get("out", str(O / "m.pt")), "--patch", kw.get("patch", "8"),
                              "--batch", kw.get("batch", "1"), "--val-every", "0"] + kw.get("extra", []))
V_BASE = lambda L, O, **kw: (["--weights", kw.get("weights", L.weights or "default"), "--data-root",  # noqa: E731
                              str(L.bench), "--datasets", kw.get("datasets", "Set5"), "--method",
                              kw.get("method", "fp"), "--json", kw.get("json", str(O / "r.json"))]
                             + kw.get("extra", []))
P_BASE = lambda L, O, **kw: (["--weights", L.weights or "default", "--calib", str(L.imgdir), "--images",  # noqa: E731
                              "1", "--out", kw.get("out", str(O / "f.png"))] + kw.get("extra", []))
G_BASE = lambda L, O, **kw: (["--export", str(kw.get("export", L.exp)), "--quiet"] + kw.get("extra", []))  # noqa: E731
H_BASE = lambda L, O, **kw: (["--out", kw.get("out", str(O / "rtl"))] + kw.get("extra", []))  # noqa: E731
R_BASE = lambda L, O, **kw: (["--sweep", "none", "--engine-sweep", "none", "--out",  # noqa: E731
                              kw.get("out", str(O / "h.md")), "--json", kw.get("json", str(O / "h.json")), "--cache",
                              kw.get("cache", str(O / "cache")), "--results", str(kw.get("results", ROOT / "bench" /
                                                                                               "results"))])
S_BASE = lambda L, O, **kw: (["--export", str(kw.get("export", L.exp)), "--tiles", "1", "--work-dir",  # noqa: E731
                              kw.get("work", str(O / "sim")), "--no-waves"] + kw.get("extra", []))
D_BASE = lambda L, O, **kw: (["--weights", L.weights or "default", "--out", kw.get("out", str(O / "demo"))]  # noqa: E731
                             + kw.get("extra", []))

W, P, I = "weights", "params", "icarus"
CASES = [
    # dfsq.export
    ("export-params-missing", "dfsq.export", lambda L, O: E_BASE(L, O, params=str(L.missing)), 2, ()),
    ("export-params-folder", "dfsq.export", lambda L, O: E_BASE(L, O, params=str(L.folder)), 2, ()),
    ("export-params-empty", "dfsq.export", lambda L, O: E_BASE(L, O, params=str(L.empty)), 2, ()),
    ("export-params-text", "dfsq.export", lambda L, O: E_BASE(L, O, params=str(L.text)), 2, ()),
    ("export-params-truncated", "dfsq.export", lambda L, O: E_BASE(L, O, params=str(L.p_trunc)), 2, (P,)),
    ("export-params-zero-point-high", "dfsq.export", lambda L, O: E_BASE(L, O, params=str(L.p_zp)), 2, (P,)),
    ("export-params-zero-point-negative", "dfsq.export", lambda L, O: E_BASE(L, O, params=str(L.p_zp_neg)), 2, (P,)),
    ("export-params-weight-scale-0", "dfsq.export", lambda L, O: E_BASE(L, O, params=str(L.p_ws)), 2, (P,)),
    ("export-params-nan", "dfsq.export", lambda L, O: E_BASE(L, O, params=str(L.p_nan)), 2, (P,)),
    ("export-params-gap-99", "dfsq.export", lambda L, O: E_BASE(L, O, params=str(L.p_gap)), 2, (P,)),
    ("export-params-meta-list", "dfsq.export", lambda L, O: E_BASE(L, O, params=str(L.p_metalist)), 2, (P,)),
    ("export-params-meta-no-config", "dfsq.export", lambda L, O: E_BASE(L, O, params=str(L.p_noconfig)), 2, (P,)),
    ("export-params-weight-q-shape", "dfsq.export", lambda L, O: E_BASE(L, O, params=str(L.p_wq)), 2, (P,)),
    ("export-params-wrong-dtype", "dfsq.export", lambda L, O: E_BASE(L, O, params=str(L.p_dtype)), 2, (P,)),
    ("export-params-layer-count", "dfsq.export", lambda L, O: E_BASE(L, O, params=str(L.p_layers)), 2, (P,)),
    ("export-params-huge-header", "dfsq.export", lambda L, O: E_BASE(L, O, params=str(L.p_huge)), 2, (P,)),
    ("export-image-missing", "dfsq.export", lambda L, O: E_BASE(L, O, image=str(L.missing)), 2, (P,)),
    ("export-image-folder", "dfsq.export", lambda L, O: E_BASE(L, O, image=str(L.folder)), 2, (P,)),
    ("export-image-empty", "dfsq.export", lambda L, O: E_BASE(L, O, image=str(L.empty)), 2, (P,)),
    ("export-image-truncated", "dfsq.export", lambda L, O: E_BASE(L, O, image=str(L.bad_img)), 2, (P,)),
    ("export-crop-malformed", "dfsq.export", lambda L, O: E_BASE(L, O, crop="1,2"), 2, (P,)),
    ("export-crop-out-of-range", "dfsq.export", lambda L, O: E_BASE(L, O, crop="0,0,9999,8"), 2, (P,)),
    ("export-threads-negative", "dfsq.export", lambda L, O: E_BASE(L, O, extra=["--threads", "-3"]), 2, (P,)),
    ("export-out-parent-is-file", "dfsq.export", lambda L, O: E_BASE(L, O, out=str(L.unwritable)), 2, (P,)),
    ("export-out-in-proc", "dfsq.export", lambda L, O: E_BASE(L, O, out=str(L.proc)), 2, (P,)),
    ("export-out-is-file", "dfsq.export", lambda L, O: E_BASE(L, O, out=str(L.text)), 2, (P,)),
    ("export-out-is-other-folder", "dfsq.export", lambda L, O: E_BASE(L, O, out=str(L.folder.parent / "imgs")),
     2, (P,)),
    ("export-weights-empty-pt", "dfsq.export",
     lambda L, O: ["--weights", str(L.empty_pt)] + E_BASE(L, O)[2:], 2, (P,)),
    # dfsq.calibrate
    ("calibrate-out-parent-is-file", "dfsq.calibrate", lambda L, O: C_BASE(L, O, out=str(L.unwritable)), 2, ()),
    ("calibrate-out-in-proc", "dfsq.calibrate", lambda L, O: C_BASE(L, O, out=str(L.proc)), 2, ()),
    ("calibrate-out-is-folder", "dfsq.calibrate", lambda L, O: C_BASE(L, O, out=str(O)), 2, ()),
    ("calibrate-threads-negative", "dfsq.calibrate", lambda L, O: C_BASE(L, O, extra=["--threads", "-3"]), 2, ()),
    ("calibrate-act-bits-99", "dfsq.calibrate", lambda L, O: C_BASE(L, O, extra=["--act-bits", "99"]), 2, ()),
    ("calibrate-weights-empty-pt", "dfsq.calibrate", lambda L, O: C_BASE(L, O, weights=str(L.empty_pt)), 2, ()),
    ("calibrate-weights-missing", "dfsq.calibrate", lambda L, O: C_BASE(L, O, weights=str(L.missing)), 2, ()),
    ("calibrate-weights-folder", "dfsq.calibrate", lambda L, O: C_BASE(L, O, weights=str(L.folder)), 2, ()),
    ("calibrate-weights-truncated", "dfsq.calibrate", lambda L, O: C_BASE(L, O, weights=str(L.trunc_pt)), 2, (W,)),
    ("calibrate-calib-missing", "dfsq.calibrate", lambda L, O: C_BASE(L, O, calib=str(L.missing)), 2, (W,)),
    # dfsq.train
    ("train-minutes-nan", "dfsq.train", lambda L, O: T_BASE(L, O, minutes="nan"), 2, ()),
    ("train-minutes-negative", "dfsq.train", lambda L, O: T_BASE(L, O, minutes="-1"), 2, ()),
    ("train-patch-0", "dfsq.train", lambda L, O: T_BASE(L, O, patch="0"), 2, ()),
    ("train-patch-negative", "dfsq.train", lambda L, O: T_BASE(L, O, patch="-4"), 2, ()),
    ("train-batch-0", "dfsq.train", lambda L, O: T_BASE(L, O, batch="0"), 2, ()),
    ("train-lr-nan", "dfsq.train", lambda L, O: T_BASE(L, O, extra=["--lr", "nan"]), 2, ()),
    ("train-threads-negative", "dfsq.train", lambda L, O: T_BASE(L, O, extra=["--threads", "-3"]), 2, ()),
    ("train-out-parent-is-file", "dfsq.train", lambda L, O: T_BASE(L, O, out=str(L.unwritable)), 2, ()),
    ("train-out-in-proc", "dfsq.train", lambda L, O: T_BASE(L, O, out=str(L.proc)), 2, ()),
    ("train-out-is-folder", "dfsq.train", lambda L, O: T_BASE(L, O, out=str(O)), 2, ()),
    ("train-init-empty-pt", "dfsq.train", lambda L, O: T_BASE(L, O, extra=["--init", str(L.empty_pt)]), 2, ()),
    ("train-data-missing", "dfsq.train", lambda L, O: ["--data", str(L.missing)] + T_BASE(L, O)[2:], 2, ()),
    # dfsq.evaluate
    ("evaluate-datasets-empty", "dfsq.evaluate", lambda L, O: V_BASE(L, O, datasets=","), 2, ()),
    ("evaluate-datasets-unknown", "dfsq.evaluate", lambda L, O: V_BASE(L, O, datasets="Nope"), 2, ()),
    ("evaluate-scale-bits-0-dfsq", "dfsq.evaluate",
     lambda L, O: V_BASE(L, O, method="dfsq", extra=["--scale-bits", "0"]), 2, ()),
    ("evaluate-scale-bits-99-dfsq", "dfsq.evaluate",
     lambda L, O: V_BASE(L, O, method="dfsq", extra=["--scale-bits", "99"]), 2, ()),
    ("evaluate-scale-bits-99-dfsq-hw", "dfsq.evaluate",
     lambda L, O: V_BASE(L, O, method="dfsq-hw", extra=["--scale-bits", "99"]), 2, ()),
    ("evaluate-denorm-with-dfsq", "dfsq.evaluate",
     lambda L, O: V_BASE(L, O, method="dfsq", extra=["--denorm", "split"]), 2, ()),
    ("evaluate-sigma-bits-with-fused", "dfsq.evaluate",
     lambda L, O: V_BASE(L, O, method="dfsq-hw", extra=["--sigma-bits", "4"]), 2, ()),
    ("evaluate-sigma-bits-0", "dfsq.evaluate",
     lambda L, O: V_BASE(L, O, method="dfsq-hw", extra=["--denorm", "split", "--sigma-bits", "0"]), 2, ()),
    ("evaluate-shift-bits-9", "dfsq.evaluate",
     lambda L, O: V_BASE(L, O, method="dfsq-hw", extra=["--denorm", "split", "--shift-bits", "9"]), 2, ()),
    ("evaluate-dfsq-uniform-mixed-bits", "dfsq.evaluate",
     lambda L, O: V_BASE(L, O, method="dfsq-uniform", extra=["--act-bits", "3"]), 2, ()),
    ("evaluate-json-parent-is-file", "dfsq.evaluate", lambda L, O: V_BASE(L, O, json=str(L.unwritable)), 2, ()),
    ("evaluate-json-in-proc", "dfsq.evaluate", lambda L, O: V_BASE(L, O, json=str(L.proc)), 2, ()),
    ("evaluate-json-is-folder", "dfsq.evaluate", lambda L, O: V_BASE(L, O, json=str(O)), 2, ()),
    ("evaluate-weights-empty-pt", "dfsq.evaluate", lambda L, O: V_BASE(L, O, weights=str(L.empty_pt)), 2, ()),
    ("evaluate-params-nan", "dfsq.evaluate",
     lambda L, O: V_BASE(L, O, method="dfsq", extra=["--params", str(L.p_nan)]), 2, (W, P)),
    # dfsq.plot_distributions
    ("plot-out-not-png", "dfsq.plot_distributions", lambda L, O: P_BASE(L, O, out=str(O / "f.txt")), 2, ()),
    ("plot-out-parent-is-file", "dfsq.plot_distributions", lambda L, O: P_BASE(L, O, out=str(L.dir / "text.txt" /
                                                                                          "f.png")), 2, ()),
    ("plot-out-is-folder", "dfsq.plot_distributions", lambda L, O: P_BASE(L, O, out=str(L.png_folder)), 2, ()),
    ("plot-channels-0", "dfsq.plot_distributions", lambda L, O: P_BASE(L, O, extra=["--channels", "0"]), 2, ()),
    ("plot-channels-1000", "dfsq.plot_distributions", lambda L, O: P_BASE(L, O, extra=["--channels", "1000"]),
     2, (W,)),
    ("plot-layer-99", "dfsq.plot_distributions", lambda L, O: P_BASE(L, O, extra=["--layer", "99"]), 2, (W,)),
    # golden.check
    ("check-export-missing", "golden.check", lambda L, O: G_BASE(L, O, export=L.missing), 2, ()),
    ("check-export-is-file", "golden.check", lambda L, O: G_BASE(L, O, export=L.text), 2, ()),
    ("check-export-empty-folder", "golden.check", lambda L, O: G_BASE(L, O, export=L.folder), 2, ()),
    ("check-layers-empty", "golden.check", lambda L, O: G_BASE(L, O, extra=["--layers", ""]), 2, ()),
    ("check-layers-commas", "golden.check", lambda L, O: G_BASE(L, O, extra=["--layers", ",,"]), 2, ()),
    ("check-layers-unknown", "golden.check", lambda L, O: G_BASE(L, O, extra=["--layers", "99"]), 2, ()),
    ("check-scale-bits-99", "golden.check", lambda L, O: G_BASE(L, O, extra=["--scale-bits", "99"]), 2, ()),
    ("check-manifest-trimmed", "golden.check", lambda L, O: G_BASE(L, O, export=L.exp_trim), 2, ()),
    ("check-manifest-relu-flipped", "golden.check", lambda L, O: G_BASE(L, O, export=L.exp_relu), 2, ()),
    ("check-manifest-duplicate-entry", "golden.check", lambda L, O: G_BASE(L, O, export=L.exp_dup), 2, ()),
    ("check-manifest-input-shape", "golden.check", lambda L, O: G_BASE(L, O, export=L.exp_shape), 2, ()),
    ("check-manifest-null-spec", "golden.check", lambda L, O: G_BASE(L, O, export=L.exp_nullspec), 2, ()),
    ("check-manifest-null-config", "golden.check", lambda L, O: G_BASE(L, O, export=L.exp_nullcfg), 2, ()),
    ("check-manifest-entry-without-name", "golden.check", lambda L, O: G_BASE(L, O, export=L.exp_noname), 2, ()),
    ("check-manifest-truncated-json", "golden.check", lambda L, O: G_BASE(L, O, export=L.exp_badjson), 2, ()),
    ("check-layer-truncated", "golden.check", lambda L, O: G_BASE(L, O, export=L.exp_trunc), 2, ()),
    ("check-layer-huge-header", "golden.check", lambda L, O: G_BASE(L, O, export=L.exp_huge), 2, ()),
    ("check-layer-nan", "golden.check", lambda L, O: G_BASE(L, O, export=L.exp_nan), 2, ()),
    ("check-layer-wrong-dtype", "golden.check", lambda L, O: G_BASE(L, O, export=L.exp_dtype), 2, ()),
    ("check-json-parent-is-file", "golden.check",
     lambda L, O: G_BASE(L, O, extra=["--json", str(L.unwritable)]), 2, ()),
    ("check-json-in-proc", "golden.check", lambda L, O: G_BASE(L, O, extra=["--json", str(L.proc)]), 2, ()),
    ("check-json-is-folder", "golden.check", lambda L, O: G_BASE(L, O, extra=["--json", str(O)]), 2, ()),
    ("check-wrong-code-fails", "golden.check", lambda L, O: G_BASE(L, O, export=L.exp_badcode), 1, ()),
    # hw.generate
    ("generate-mac-with-lanes", "hw.generate", lambda L, O: H_BASE(L, O, extra=["--top", "mac", "--lanes", "3"]),
     2, ()),
    ("generate-lanes-not-dividing", "hw.generate", lambda L, O: H_BASE(L, O, extra=["--lanes", "3"]), 2, ()),
    ("generate-words-9", "hw.generate", lambda L, O: H_BASE(L, O, extra=["--words", "9"]), 2, ()),
    ("generate-shift-bits-fused", "hw.generate", lambda L, O: H_BASE(L, O, extra=["--shift-bits", "2"]), 2, ()),
    ("generate-split-too-wide", "hw.generate",
     lambda L, O: H_BASE(L, O, extra=["--denorm", "split", "--sigma-bits", "24", "--shift-bits", "5"]), 2, ()),
    ("generate-split-fault-on-fused", "hw.generate", lambda L, O: H_BASE(L, O, extra=["--fault", "sigma_shift"]),
     2, ()),
    ("generate-normalized-engine-top", "hw.generate", lambda L, O: H_BASE(L, O, extra=["--normalized"]), 2, ()),
    ("generate-normalized-words", "hw.generate",
     lambda L, O: H_BASE(L, O, extra=["--top", "uniform-engine", "--normalized", "--words", "3"]), 2, ()),
    ("generate-normalized-variant", "hw.generate",
     lambda L, O: H_BASE(L, O, extra=["--top", "uniform-engine", "--normalized", "--variant", "fold"]), 2, ()),
    ("generate-normalized-mult-fault", "hw.generate",
     lambda L, O: H_BASE(L, O, extra=["--top", "uniform-engine", "--normalized", "--fault", "shift"]), 2, ()),
    ("generate-normalized-bits-9", "hw.generate",
     lambda L, O: H_BASE(L, O, extra=["--top", "uniform-engine", "--normalized", "--act-bits", "9"]), 2, ()),
    ("export-uniform-no-bits", "dfsq.export",
     lambda L, O: ["--method", "dfsq-uniform", "--scale", "2", "--image", "sample", "--out", str(O / "exp")], 2, ()),
    ("export-uniform-with-params", "dfsq.export",
     lambda L, O: E_BASE(L, O, extra=["--method", "dfsq-uniform", "--bits", "4", "--scale", "2"]), 2, ()),
    ("export-uniform-bits-9", "dfsq.export",
     lambda L, O: ["--method", "dfsq-uniform", "--bits", "9", "--scale", "2", "--image", "sample", "--out",
                   str(O / "exp")], 2, (P,)),
    ("export-dfsq-no-params", "dfsq.export",
     lambda L, O: ["--image", "sample", "--out", str(O / "exp")], 2, ()),
    ("export-dfsq-with-bits", "dfsq.export", lambda L, O: E_BASE(L, O, extra=["--bits", "4"]), 2, ()),
    ("evaluate-denorm-on-uniform", "dfsq.evaluate",
     lambda L, O: V_BASE(L, O, method="dfsq-uniform", extra=["--denorm", "split"]), 2, ()),
    ("throughput-lanes-0", "hw.throughput", lambda L, O: ["--lanes", "0"], 2, ()),
    ("throughput-json-in-proc", "hw.throughput", lambda L, O: ["--json", str(L.proc)], 2, ()),
    ("denorm-format-bad-format", "bench.denorm_format", lambda L, O: ["--formats", "4-3", "--out", str(O)], 2, ()),
    ("denorm-format-too-wide", "bench.denorm_format",
     lambda L, O: ["--formats", "24:5", "--out", str(O), "--params", str(L.missing)], 2, ()),
    ("generate-scale-bits-99", "hw.generate", lambda L, O: H_BASE(L, O, extra=["--scale-bits", "99"]), 2, ()),
    ("generate-out-parent-is-file", "hw.generate", lambda L, O: H_BASE(L, O, out=str(L.unwritable)), 2, ()),
    ("generate-out-in-proc", "hw.generate", lambda L, O: H_BASE(L, O, out=str(L.proc)), 2, ()),
    ("generate-out-is-file", "hw.generate", lambda L, O: H_BASE(L, O, out=str(L.text)), 2, ()),
    # hw.report
    ("report-results-missing", "hw.report", lambda L, O: R_BASE(L, O, results=L.missing), 2, ()),
    ("report-results-not-a-file", "hw.report", lambda L, O: R_BASE(L, O, results="/dev/null"), 2, ()),
    ("report-results-invalid-json", "hw.report", lambda L, O: R_BASE(L, O, results=L.results_bad), 2, ()),
    ("report-results-no-psnr", "hw.report", lambda L, O: R_BASE(L, O, results=L.results_empty), 2, ()),
    ("report-results-text", "hw.report", lambda L, O: R_BASE(L, O, results=L.text), 2, ()),
    ("report-out-parent-is-file", "hw.report", lambda L, O: R_BASE(L, O, out=str(L.unwritable)), 2, ()),
    ("report-out-is-folder", "hw.report", lambda L, O: R_BASE(L, O, out=str(O)), 2, ()),
    ("report-json-in-proc", "hw.report", lambda L, O: R_BASE(L, O, json=str(L.proc)), 2, ()),
    ("report-cache-is-file", "hw.report", lambda L, O: R_BASE(L, O, cache=str(L.text)), 2, ()),
    ("report-cache-parent-is-file", "hw.report", lambda L, O: R_BASE(L, O, cache=str(L.unwritable)), 2, ()),
    # sim.verify
    ("verify-export-missing", "sim.verify", lambda L, O: S_BASE(L, O, export=L.missing), 2, (I,)),
    ("verify-mean-unit-fused", "sim.verify", lambda L, O: S_BASE(L, O, extra=["--top", "mean-unit"]), 2, (I,)),
    ("verify-codes-in-mac", "sim.verify", lambda L, O: S_BASE(L, O, extra=["--top", "mac", "--codes-in"]), 2, (I,)),
    ("verify-export-trimmed", "sim.verify", lambda L, O: S_BASE(L, O, export=L.exp_trim), 2, (I,)),
    ("verify-layers-empty", "sim.verify", lambda L, O: S_BASE(L, O, extra=["--layers", ""]), 2, (I,)),
    ("verify-tiles-0", "sim.verify", lambda L, O: S_BASE(L, O, extra=["--tiles", "0"]), 2, (I,)),
    ("verify-tile-size-9", "sim.verify", lambda L, O: S_BASE(L, O, extra=["--tile-size", "9"]), 2, (I,)),
    ("verify-out-channels-65", "sim.verify", lambda L, O: S_BASE(L, O, extra=["--out-channels", "65"]), 2, (I,)),
    ("verify-out-channels-0", "sim.verify", lambda L, O: S_BASE(L, O, extra=["--out-channels", "0"]), 2, (I,)),
    ("verify-seed-negative", "sim.verify", lambda L, O: S_BASE(L, O, extra=["--seed=-1"]), 2, (I,)),
    ("verify-jobs-0", "sim.verify", lambda L, O: S_BASE(L, O, extra=["--jobs", "0"]), 2, (I,)),
    ("verify-lanes-3", "sim.verify", lambda L, O: S_BASE(L, O, extra=["--lanes", "3"]), 2, (I,)),
    ("verify-json-parent-is-file", "sim.verify",
     lambda L, O: S_BASE(L, O, extra=["--json", str(L.unwritable)]), 2, (I,)),
    ("verify-json-is-folder", "sim.verify", lambda L, O: S_BASE(L, O, extra=["--json", str(O)]), 2, (I,)),
    ("verify-work-dir-is-file", "sim.verify", lambda L, O: S_BASE(L, O, work=str(L.text)), 2, (I,)),
    ("verify-work-dir-in-proc", "sim.verify", lambda L, O: S_BASE(L, O, work=str(L.proc)), 2, (I,)),
    # demo
    ("demo-out-parent-is-file", "demo", lambda L, O: D_BASE(L, O, out=str(L.unwritable)), 2, ()),
    ("demo-out-in-proc", "demo", lambda L, O: D_BASE(L, O, out=str(L.proc)), 2, ()),
    ("demo-out-is-file", "demo", lambda L, O: D_BASE(L, O, out=str(L.text)), 2, ()),
    ("demo-params-missing", "demo", lambda L, O: D_BASE(L, O, extra=["--params", str(L.missing)]), 2, (W, I)),
    ("demo-params-nan", "demo", lambda L, O: D_BASE(L, O, extra=["--params", str(L.p_nan)]), 2, (W, P, I)),
    ("demo-jobs-0", "demo", lambda L, O: D_BASE(L, O, extra=["--jobs", "0"]), 2, (I,)),
    # bench (benchmark CLIs: they check their outputs before minutes of measuring)
    ("golden-speed-out-parent-is-file", "bench.golden_speed", lambda L, O: ["--out", str(L.unwritable)], 2, ()),
    ("golden-speed-out-is-file", "bench.golden_speed", lambda L, O: ["--out", str(L.text)], 2, ()),
    ("golden-speed-threads-negative", "bench.golden_speed",
     lambda L, O: ["--out", str(O), "--threads", "-3"], 2, ()),
    ("golden-speed-repeat-0", "bench.golden_speed", lambda L, O: ["--out", str(O), "--repeat", "0"], 2, ()),
    ("psnr-table-out-is-folder", "bench.psnr_table",
     lambda L, O: ["--out", str(O), "--cache", str(O / "c.json"), "--params-dir", str(O / "p")], 2, ()),
    ("psnr-table-cache-parent-is-file", "bench.psnr_table",
     lambda L, O: ["--out", str(O / "t.md"), "--cache", str(L.unwritable), "--params-dir", str(O / "p")], 2, ()),
    ("psnr-table-params-dir-is-file", "bench.psnr_table",
     lambda L, O: ["--out", str(O / "t.md"), "--cache", str(O / "c.json"), "--params-dir", str(L.text)], 2, ()),
    ("psnr-table-bits-99", "bench.psnr_table",
     lambda L, O: ["--bits", "99", "--out", str(O / "t.md"), "--cache", str(O / "c.json")], 2, ()),
    ("scale-bits-out-is-file", "bench.scale_bits", lambda L, O: ["--out", str(L.text)], 2, ()),
    ("scale-bits-out-in-proc", "bench.scale_bits", lambda L, O: ["--out", str(L.proc)], 2, ()),
    ("selection-speed-out-parent-is-file", "bench.selection_speed",
     lambda L, O: ["--out", str(L.unwritable)], 2, ()),
    ("selection-speed-threads-negative", "bench.selection_speed",
     lambda L, O: ["--out", str(O / "s"), "--threads", "-3"], 2, ()),
    ("sim-speed-out-is-file", "bench.sim_speed", lambda L, O: ["--out", str(L.text)], 2, ()),
    ("sim-speed-work-dir-is-file", "bench.sim_speed",
     lambda L, O: ["--out", str(O), "--work-dir", str(L.text)], 2, ()),
    ("fakequant-speed-out-parent-is-file", "bench.fakequant_speed",
     lambda L, O: ["--methods", "fp", "--out", str(L.unwritable / "s")], 2, ()),
    ("fakequant-speed-params-missing", "bench.fakequant_speed",
     lambda L, O: ["--params", str(L.missing), "--out", str(O / "s")], 2, ()),
    ("fakequant-speed-image-missing", "bench.fakequant_speed",
     lambda L, O: ["--model", "edsr", "--methods", "fp", "--image", str(L.missing), "--out", str(O / "s")], 2, (W,)),
    ("fakequant-speed-image-text", "bench.fakequant_speed",
     lambda L, O: ["--model", "edsr", "--methods", "fp", "--image", str(L.text), "--out", str(O / "s")], 2, (W,)),
    ("fakequant-speed-repeat-0", "bench.fakequant_speed",
     lambda L, O: ["--methods", "fp", "--repeat", "0", "--out", str(O / "s")], 2, ()),
    ("fakequant-speed-method-bogus", "bench.fakequant_speed",
     lambda L, O: ["--methods", "fp,bogus", "--out", str(O / "s")], 2, ()),
    # hw.system_cost: --models and --frames were free text (a repeated model or a 0x0 frame ran and printed rows)
    ("system-cost-frame-0x0", "hw.system_cost", lambda L, O: ["--models", "edsr", "--frames", "0x0"], 2, ()),
    ("system-cost-frame-negative", "hw.system_cost", lambda L, O: ["--models", "edsr", "--frames=-64x36"], 2, ()),
    ("system-cost-frame-three-sides", "hw.system_cost", lambda L, O: ["--frames", "64x36x2"], 2, ()),
    ("system-cost-frames-repeated", "hw.system_cost", lambda L, O: ["--frames", "64x36,64x36"], 2, ()),
    ("system-cost-models-repeated", "hw.system_cost", lambda L, O: ["--models", "edsr,edsr"], 2, ()),
    ("system-cost-model-unknown-rdn-config", "hw.system_cost", lambda L, O: ["--models", "rdn-Z"], 2, ()),
    # bench.tile_stats: a repeated tile; an option of the measurement given with --render-only (was ignored)
    ("tile-stats-tiles-repeated", "bench.tile_stats",
     lambda L, O: ["--render-only", "--tiles", "rows16,rows16", "--cache", str(O / "c.json"), "--out", str(O / "t")],
     2, ()),
    ("tile-stats-images-with-render-only", "bench.tile_stats",
     lambda L, O: ["--render-only", "--images", "4", "--cache", str(O / "c.json"), "--out", str(O / "t")], 2, ()),
]


def _skip_reason(needs) -> str | None:
    if "weights" in needs and not WEIGHTS.is_file():
        return f"needs {WEIGHTS}"
    if "params" in needs and not PARAMS.is_file():
        return f"needs {PARAMS}"
    if "icarus" in needs and not HAVE_ICARUS:
        return "needs Icarus Verilog"
    return None


def run_cli(module: str, argv: list[str], capsys) -> tuple[int, str, str]:
    import importlib

    main = importlib.import_module(module).main
    try:
        rc = main(argv)
    except SystemExit as exc:
        rc = exc.code
    out = capsys.readouterr()
    return (0 if rc is None else rc), out.out, out.err


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case, lib, tmp_path, capsys, one_thread):
    name, module, make_argv, code, needs = case
    reason = _skip_reason(needs)
    if reason:
        pytest.skip(reason)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    argv = [str(a) for a in make_argv(lib, out_dir)]
    before, repo_before = _tree(lib.dir, out_dir), _repo_top()
    rc, out, err = run_cli(module, argv, capsys)
    assert rc == code, f"{module} {argv}: exit {rc}\n{out}\n{err}"
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err, err
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert lines[0].startswith("error: " if code == 2 else "FAIL "), lines[0]
    assert _tree(lib.dir, out_dir) == before, f"{name} left files: {sorted(_tree(lib.dir, out_dir) - before)}"
    assert _repo_top() == repo_before, f"{name} left files in the repository: {_repo_top() - repo_before}"


def test_table_size():
    """The closing note of the hardening issue quotes this count."""
    assert len(CASES) == len({c[0] for c in CASES}) >= 100


# --- focused regressions ------------------------------------------------------------------------------------------
def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    from PIL import Image

    from dfsq.data import load_rgb

    a = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)
    Image.fromarray(a).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I;16")
    img = load_rgb(tmp_path / "g16.png")
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    assert np.array_equal(img[..., 0], np.round(a / 257).astype(np.uint8))
    assert (img == 255).mean() < 0.01   # 99.5% were 255 when 16 bits were clipped to 8


def test_32bit_image_is_refused(tmp_path):
    from PIL import Image

    from dfsq.data import load_rgb
    from golden.errors import UserError

    Image.fromarray(np.full((8, 8), 70000, np.int32)).save(tmp_path / "i32.tif")
    with pytest.raises(UserError, match="32-bit"):
        load_rgb(tmp_path / "i32.tif")


@pytest.mark.skipif(not PARAMS.is_file(), reason=f"needs {PARAMS}")
def test_validate_params_accepts_the_embedded_params_and_checks_ranges(tmp_path):
    from dfsq.calibrate import load_params
    from golden.errors import UserError

    p = load_params(PARAMS)
    assert p.arrays["zero_point"].max() <= 15 and p.arrays["weight_scale"].min() > 0
    bad = _replace_npz(PARAMS, tmp_path / "zp16.npz", zero_point=lambda a: np.where(
        np.arange(a.size).reshape(a.shape) == 7, 16, a).astype(a.dtype))
    with pytest.raises(UserError, match=r"zero_point outside \[0, 15\]"):
        load_params(bad)


def test_evaluate_keeps_an_unrelated_tmp_file_and_leaves_no_temporary(lib, tmp_path, capsys):
    """evaluate --json X.json used to write (and on failure leave) X.tmp, clobbering a user's file of that name."""
    out = tmp_path / "res"
    out.mkdir()
    (out / "X.tmp").write_text("mine")
    rc, _, err = run_cli("dfsq.evaluate", ["--method", "bicubic", "--data-root", str(lib.bench), "--datasets",
                                           "Set5", "--json", str(out / "X.json")], capsys)
    assert rc == 0, err
    assert (out / "X.tmp").read_text() == "mine"
    assert sorted(p.name for p in out.iterdir()) == ["X.json", "X.tmp"]
    assert json.loads((out / "X.json").read_text())["results"]["Set5"]["images"] == 1


def test_atomic_output_removes_temporary_and_created_parents(tmp_path):
    from golden.files import atomic_output

    target = tmp_path / "a" / "b" / "out.json"
    with pytest.raises(KeyboardInterrupt):
        with atomic_output(target) as tmp:
            tmp.write_text("half")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
    with atomic_output(target) as tmp:
        tmp.write_text("whole")
    assert target.read_text() == "whole" and sorted(p.name for p in target.parent.iterdir()) == ["out.json"]


def test_two_atomic_outputs_of_one_path_use_distinct_temporaries(tmp_path):
    from golden.files import atomic_output

    with atomic_output(tmp_path / "x.json") as a, atomic_output(tmp_path / "x.json") as b:
        assert a != b
        a.write_text("a")
        b.write_text("b")
    assert (tmp_path / "x.json").read_text() in ("a", "b") and len(list(tmp_path.iterdir())) == 1


_SIGTERM_SCRIPT = """
import sys, time
from golden.errors import cli_main
from golden.files import atomic_output_dir

@cli_main
def main(argv):
    with atomic_output_dir(argv[0]) as tmp:
        (tmp / "big.npz").write_bytes(b"x" * 1000)
        print("ready", flush=True)
        time.sleep(60)

main(sys.argv[1:])
"""


def _wait_for(proc, text: str, timeout: float = 60) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        line = proc.stdout.readline()
        if text in line:
            return
        if not line and proc.poll() is not None:
            break
    raise AssertionError(f"the child never printed {text!r}")


def test_sigterm_removes_a_half_written_output_folder(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    target = tmp_path / "out" / "export"
    proc = subprocess.Popen([sys.executable, "-c", _SIGTERM_SCRIPT, str(target)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    _wait_for(proc, "ready")
    assert len(list((tmp_path / "out").iterdir())) == 1   # the temporary folder exists while it writes
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143 and err.strip() == "terminated", err
    assert list(tmp_path.iterdir()) == []   # no temporary, and no parent folder it created


@pytest.mark.slow
@pytest.mark.skipif(not (WEIGHTS.is_file() and PARAMS.is_file()), reason="needs the embedded weights and params")
def test_sigterm_during_a_real_export_leaves_nothing(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = tmp_path / "exp"
    proc = subprocess.Popen([sys.executable, "-m", "dfsq.export", "--params", str(PARAMS), "--image", "sample",
                             "--crop", "0,0,96,96", "--threads", "1", "--out", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    t0 = time.time()
    while time.time() - t0 < 120 and not any(p.name.endswith(".tmp") for p in tmp_path.iterdir()):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert list(tmp_path.iterdir()) == []


def test_kill_children_stops_a_running_child_at_once():
    from sim.runner import kill_children

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.2)
        t0 = time.time()
        kill_children(grace=0.5)
        child.wait(timeout=5)
        assert time.time() - t0 < 3
    finally:
        if child.poll() is None:
            child.kill()


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_ICARUS, reason="needs Icarus Verilog")
def test_ctrl_c_during_parallel_simulation_returns_promptly(default_export, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "sim.verify", "--export", str(default_export), "--tiles", "4",
                             "--jobs", "2", "--work-dir", str(tmp_path / "sim"), "--no-waves"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
                            start_new_session=True)
    t0 = time.time()
    while time.time() - t0 < 300:
        logs = list((tmp_path / "sim" / "runs").glob("*/shard*/sim.log"))
        if len(logs) == 2:
            break
        time.sleep(0.2)
    time.sleep(2)
    os.killpg(proc.pid, signal.SIGINT)   # as a terminal's Ctrl-C: the whole process group
    t1 = time.time()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert time.time() - t1 < 10, f"took {time.time() - t1:.1f} s to stop"


def test_interrupted_generate_prints_no_unused_elaboratable_warnings(tmp_path):
    script = ("import sys, hw.generate as g\n"
              "def stop(*a, **k):\n    raise KeyboardInterrupt\n"
              "g.to_verilog = stop\n"
              f"g.main(['--out', {str(tmp_path / 'rtl')!r}])\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=300)
    assert proc.returncode == 130
    assert proc.stderr.strip() == "interrupted", proc.stderr[:2000]
    assert not (tmp_path / "rtl").exists()


def test_scale_bits_default_is_documented_as_it_is():
    from golden.spec import DEFAULT_SCALE_BITS
    from hw.generate import build_parser

    assert f"default {DEFAULT_SCALE_BITS}" in build_parser().format_help()
    text = (ROOT / "docs" / "export-format.md").read_text()
    assert "--scale-bits 16" not in text and "scale_bits=16" not in text


@pytest.mark.skipif(not (WEIGHTS.is_file() and PARAMS.is_file()), reason="needs the embedded weights and params")
def test_export_of_a_read_only_image_gives_no_writable_warning(tmp_path):
    import warnings

    from dfsq.calibrate import load_params
    from dfsq.export import collect_layers
    from dfsq.model import load_edsr
    from dfsq.quantize import quantize_model

    img = np.random.default_rng(0).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    img.flags.writeable = False      # as np.asarray(PIL image) gives for an uncropped export
    qmodel = quantize_model(load_edsr(str(WEIGHTS), 2), load_params(PARAMS), "dfsq")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layers = collect_layers(qmodel, img)
    assert len(layers) == 32


def test_no_unsafe_loads_outside_tests():
    """Files from other people are never unpickled: no weights_only=False, no allow_pickle=True in the sources."""
    offenders = []
    for path in sorted(ROOT.glob("*.py")) + sorted(p for d in ("dfsq", "golden", "hw", "sim", "bench", "scripts")
                                                   for p in (ROOT / d).rglob("*.py")):
        text = path.read_text().replace(" ", "")
        if "weights_only=False" in text or "allow_pickle=True" in text:
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


@pytest.mark.slow
@pytest.mark.skipif(not (WEIGHTS.is_file() and PARAMS.is_file() and HAVE_ICARUS),
                    reason="needs the embedded weights and params and Icarus")
def test_demo_writes_rtl_under_out_and_a_failed_demo_leaves_no_out_folder(tmp_path, monkeypatch, capsys):
    import hw.generate
    from golden.errors import UserError

    seen = []

    def stop(*args, out_dir=None, **kw):
        seen.append(Path(out_dir))
        raise UserError("stopped by the test")

    monkeypatch.setattr(hw.generate, "generate", stop)
    out = tmp_path / "new" / "demo"
    repo_before = _repo_top()
    rc, _, err = run_cli("demo", ["--out", str(out), "--crop", "0,0,8,8"], capsys)
    assert rc == 2 and err.strip() == "error: stopped by the test"
    assert seen and seen[0] == out / "rtl"          # not the repository's rtl_out/
    assert list(tmp_path.iterdir()) == []            # the half-filled --out (and its new parent) are gone
    assert _repo_top() == repo_before
