"""Export directory (contract 2): fields, dtypes, shapes, recomputation from the exported fields alone, atomicity."""
from __future__ import annotations

import json
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from golden.spec import EPS, WordSet

FIELDS = {  # name: (dtype, ndim)
    "x": (np.float32, 4), "mean": (np.float32, 2), "maxabs": (np.float32, 2), "scale": (np.float32, 2),
    "codes": (np.uint8, 4), "points": (np.float32, 2), "point_ints": (np.int32, 2), "point_codes": (np.uint16, 2),
    "weight_q": (np.uint8, 4), "zero_point": (np.int32, 1), "weight_scale": (np.float32, 1),
    "bias": (np.float32, 1), "y": (np.float32, 4), "relu_input": (np.bool_, 0), "index": (np.int64, 0),
}


def load(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def layers_of(export_dir):
    manifest = json.loads((export_dir / "manifest.json").read_text())
    return manifest, [load(export_dir / e["file"]) for e in manifest["layers"]]


def test_manifest(default_export):
    m, layers = layers_of(default_export)
    assert m["format"] == "dfsq-export" and m["version"] == 1
    c = m["config"]
    assert (c["act_bits"], c["weight_bits"], c["words"], c["method"]) == (4, 4, 4, "dfsq")
    assert {"scale", "gap", "seed", "weights", "params", "image", "crop"} <= set(c)
    assert m["spec"]["universal_set_size"] == 377 and m["spec"]["denom"] == 1024
    assert len(m["layers"]) == 32
    names = [e["name"] for e in m["layers"]]
    assert names[:3] == ["body.0.body.0", "body.0.body.2", "body.1.body.0"] and names[-1] == "body.15.body.2"
    for i, e in enumerate(m["layers"]):
        assert e["index"] == i and e["file"] == f"{i:02d}_{e['name']}.npz"
        assert e["relu_input"] == e["name"].endswith(".2")
        assert e["input_shape"] == [1, 64, 16, 16] == e["output_shape"]
    assert sorted(p.name for p in default_export.iterdir()) == sorted([e["file"] for e in m["layers"]] +
                                                                       ["manifest.json", m["integer"]["entry_file"]])


@pytest.mark.parametrize("which", ["default_export", "alt_export"])
def test_fields(which, request):
    export_dir = request.getfixturevalue(which)
    m, layers = layers_of(export_dir)
    c = m["config"]
    ws = WordSet(c["words"], c["gap"])
    k = 1 << c["act_bits"]
    for i, f in enumerate(layers):
        for name, (dtype, ndim) in FIELDS.items():
            assert f[name].dtype == dtype, (i, name, f[name].dtype)
            assert f[name].ndim == ndim, (i, name)
        assert f["name"].dtype.kind == "U" and str(f["name"]) == m["layers"][i]["name"]
        n, C, h, w = f["x"].shape
        assert f["points"].shape == (C, k) and f["codes"].shape == (n, C, h, w)
        assert f["weight_q"].shape == (64, C, 3, 3) and f["y"].shape == (n, 64, h, w)
        assert int(f["codes"].max()) < k and int(f["weight_q"].max()) <= (1 << c["weight_bits"]) - 1
        assert np.all(np.diff(f["points"], axis=1) >= 0)
        assert np.all(np.isin(f["point_ints"], ws.ints))
        assert np.array_equal(f["points"], (f["point_ints"].astype(np.float64) / ws.denom).astype(np.float32))
        assert np.array_equal(ws.code_to_int(f["point_codes"]), f["point_ints"])
        assert np.all((f["zero_point"] >= 0) & (f["zero_point"] <= (1 << c["weight_bits"]) - 1))
        if f["relu_input"]:
            assert np.all(f["mean"] == 0) and np.all(f["x"] >= 0)
        x = f["x"].astype(np.float32)
        assert np.array_equal(f["maxabs"], np.abs(x - f["mean"][:, :, None, None]).max((2, 3)))
        assert np.array_equal(f["scale"], f["maxabs"] + np.float32(EPS))


@pytest.mark.parametrize("which", ["default_export", "alt_export"])
def test_recompute_from_fields(which, request):
    """Codes (NumPy float32 ops) and the fake-quant output (torch) recomputed from the exported fields alone
    reproduce the stored ones bit for bit, for every layer."""
    _, layers = layers_of(request.getfixturevalue(which))
    for f in layers:
        xn = (f["x"] - f["mean"][:, :, None, None]) / f["scale"][:, :, None, None]
        assert xn.dtype == np.float32
        mid = (f["points"][:, :-1] + f["points"][:, 1:]) / np.float32(2)
        codes = np.stack([np.searchsorted(mid[c], xn[:, c], side="left") for c in range(xn.shape[1])], 1)
        assert np.array_equal(codes, f["codes"]), str(f["name"])
        pts = torch.from_numpy(f["points"])
        xq = torch.stack([pts[c][torch.from_numpy(f["codes"][:, c].astype(np.int64))] for c in range(pts.shape[0])], 1)
        xq = xq * torch.from_numpy(f["scale"])[:, :, None, None] + torch.from_numpy(f["mean"])[:, :, None, None]
        w = torch.from_numpy(f["weight_q"].astype(np.int32) - f["zero_point"][:, None, None, None]).float()
        w = w * torch.from_numpy(f["weight_scale"])[:, None, None, None]
        y = F.conv2d(xq, w, torch.from_numpy(f["bias"]), padding=1)
        assert np.array_equal(y.numpy(), f["y"]), str(f["name"])


def test_layer_chaining(default_export):
    """Each block's second conv input is ReLU(first conv output); the next block's input is x + y."""
    _, layers = layers_of(default_export)
    for b in range(16):
        first, second = layers[2 * b], layers[2 * b + 1]
        assert np.array_equal(second["x"], np.maximum(first["y"], 0))
        if b < 15:
            assert np.array_equal(layers[2 * b + 2]["x"], second["y"] + first["x"])


def _cli(argv, capsys):
    from dfsq.export import main

    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def test_cli_export_and_errors(default_export, test_weights, tmp_path, capsys, one_thread):
    params = default_export.parent / "params.npz"
    out = tmp_path / "exp"
    cmd = ["--weights", test_weights, "--params", str(params), "--image", "sample", "--crop", "200,220,16,16",
           "--out", str(out)]
    code, err = _cli(cmd, capsys)
    assert code == 0, err
    for e in json.loads((out / "manifest.json").read_text())["layers"]:
        a, b = load(out / e["file"]), load(default_export / e["file"])
        assert all(np.array_equal(a[k], b[k]) for k in FIELDS)
    # re-export over an existing export works; over a foreign folder it refuses
    code, err = _cli(cmd, capsys)
    assert code == 0, err
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("x")
    code, err = _cli([*cmd[:-1], str(foreign)], capsys)
    assert code == 2 and err.count("\n") == 1 and "not an export directory" in err
    assert (foreign / "keep.txt").exists()
    nan_params = tmp_path / "nan.npz"
    with np.load(params, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["weight_scale"] = arrays["weight_scale"].copy()
    arrays["weight_scale"][3, 1] = np.nan
    np.savez(nan_params, **arrays)
    for args, msg in ((["--crop", "1,2,3"], "Y,X,H,W"), (["--crop", "500,500,64,64"], "does not fit"),
                      (["--params", str(tmp_path / "nope.npz")], "not found"),
                      (["--params", str(nan_params)], "NaN"),
                      (["--image", str(tmp_path / "missing.png")], "not found")):
        argv = list(cmd)
        i = argv.index(args[0])
        argv[i + 1] = args[1]
        argv[argv.index("--out") + 1] = str(tmp_path / "never")
        code, err = _cli(argv, capsys)
        assert code == 2 and err.count("\n") == 1 and msg in err, err
        assert not (tmp_path / "never").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_interrupted_export_leaves_nothing(default_export, x2_model, tmp_path, monkeypatch, one_thread):
    """A failure while writing layer files leaves neither the output dir nor a temp dir behind."""
    from dfsq import export as ex
    from dfsq.calibrate import load_params

    params = load_params(default_export.parent / "params.npz")
    calls = {"n": 0}
    real = ex._write_npz

    def flaky(path, fields):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        real(path, fields)

    monkeypatch.setattr(ex, "_write_npz", flaky)
    img = ex.apply_crop(np.zeros((32, 32, 3), np.uint8) + 100, (0, 0, 8, 8))
    with pytest.raises(KeyboardInterrupt):
        ex.export(x2_model, params, img, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []
