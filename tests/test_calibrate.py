"""Calibration: determinism, the artifact (npz + JSON), ablations, words 2..5, CLI errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from golden.errors import UserError
from golden.spec import WordSet
from dfsq.calibrate import ARRAY_KEYS, calibrate, load_params, main, save_params, sidecar_path

FAST = {"bins": 512}


def test_deterministic_for_a_seed(x2_model, calib_crops, one_thread):
    a = calibrate(x2_model, calib_crops, act_bits=3, seed=11, **FAST)
    b = calibrate(x2_model, calib_crops, act_bits=3, seed=11, **FAST)
    for k in ARRAY_KEYS:
        assert np.array_equal(a.arrays[k], b.arrays[k]), k
    assert a.config == b.config


def test_artifact_roundtrip(default_export, tmp_path):
    p = load_params(default_export.parent / "params.npz")
    assert p.config["act_bits"] == 4 and p.config["words"] == 4 and p.config["norm"] is True
    assert len(p.layers) == 32 and p.layers[0] == "body.0.body.0"
    a = p.arrays
    assert a["point_ints"].shape == (32, 64, 16) and a["point_ints"].dtype == np.int32
    assert a["weight_q"].shape == (32, 64, 64, 3, 3) and a["weight_q"].dtype == np.uint8
    assert a["loss"].shape == (32, 64) and np.all(a["loss"] >= 0)
    assert np.array_equal(a["points"], (a["point_ints"] / 1024).astype(np.float32))
    assert np.all(a["act_min"][1::2] >= 0)  # inputs of body.N.body.2 follow a ReLU
    out = save_params(p, tmp_path / "copy.npz")
    q = load_params(out)
    assert all(np.array_equal(p.arrays[k], q.arrays[k]) for k in ARRAY_KEYS) and q.config == p.config
    meta = json.loads(sidecar_path(out).read_text())
    assert meta["format"] == "dfsq-params" and meta["version"] == 1 and meta["config"] == p.config
    assert meta["info"]["n_images"] == 2


def _resave(src, dst, **changes):
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["meta"]))
    for k, v in changes.items():
        if k in arrays:
            arrays[k] = v
        else:
            meta[k] = v
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(dst, **arrays)
    return dst


def test_bad_params_files(default_export, tmp_path):
    src = default_export.parent / "params.npz"
    with pytest.raises(UserError, match="not found"):
        load_params(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="cannot read"):
        load_params(tmp_path / "junk.npz")
    with pytest.raises(UserError, match="version"):
        load_params(_resave(src, tmp_path / "v9.npz", version=9))
    with pytest.raises(UserError, match="not a dfsq params"):
        load_params(_resave(src, tmp_path / "fmt.npz", format="other"))
    pts = load_params(src).arrays["point_ints"].copy()
    pts[0, 0, 0] = min(set(range(-1024, 1025)) - set(WordSet().ints.tolist()))  # an integer off the set
    with pytest.raises(UserError, match="universal set"):
        load_params(_resave(src, tmp_path / "off.npz", point_ints=pts))
    ws = load_params(src).arrays["act_max"].copy()
    ws[2] = np.nan
    with pytest.raises(UserError, match="NaN"):
        load_params(_resave(src, tmp_path / "nan.npz", act_max=ws))


@pytest.mark.parametrize("words", [2, 3, 4, 5])
def test_words_2_to_5_calibrate(x2_model, calib_crops, words, one_thread):
    p = calibrate(x2_model, calib_crops[:1], act_bits=2, words=words, **FAST)
    ws = WordSet(words)
    assert np.all(np.isin(p.arrays["point_ints"], ws.ints))
    assert p.info["universal_set_size"] == len(ws)


def test_ablations(x2_model, calib_crops, one_thread):
    lw = calibrate(x2_model, calib_crops[:1], act_bits=3, layerwise=True, **FAST)
    pi = lw.arrays["point_ints"]
    assert np.all(pi == pi[:, :1, :])  # one point set per layer
    nn_ = calibrate(x2_model, calib_crops[:1], act_bits=3, norm=False, **FAST)
    assert nn_.config["norm"] is False and np.all(nn_.arrays["static_scale"] > 0)
    from dfsq.quantize import quant_convs, quantize_model

    q = quantize_model(x2_model, nn_, "dfsq")
    assert all(not m.norm and m.static_scale is not None for m in quant_convs(q))


def test_fill_option(x2_model, calib_crops, tmp_path, one_thread):
    plain = calibrate(x2_model, calib_crops[:1], act_bits=6, **FAST)
    filled = calibrate(x2_model, calib_crops[:1], act_bits=6, fill=True, **FAST)
    assert "fill" not in plain.config and filled.config["fill"] is True  # default files keep their old config
    rows = lambda p: p.arrays["point_ints"].reshape(-1, 64)  # noqa: E731
    assert sum(np.unique(r).size < 64 for r in rows(plain)) > 0
    assert all(np.unique(r).size == 64 for r in rows(filled))
    assert np.all(filled.arrays["loss"] <= plain.arrays["loss"] + 1e-18)
    assert np.array_equal(filled.arrays["weight_q"], plain.arrays["weight_q"])
    out = save_params(filled, tmp_path / "fill.npz")
    assert load_params(out).config["fill"] is True
    meta = json.loads(str(np.load(out, allow_pickle=False)["meta"]))
    meta["config"]["fill"] = "yes"
    with pytest.raises(UserError, match="'fill' must be true or false"):
        load_params(_resave(out, tmp_path / "badfill.npz", config=meta["config"]))


def test_cli(tmp_path, test_weights, capsys, one_thread):
    calib = tmp_path / "calib"
    calib.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 36, 3), dtype=np.uint8)).save(calib / f"{i}.png")
    out = tmp_path / "p.npz"
    main(["--weights", test_weights, "--calib", str(calib), "--images", "2", "--act-bits", "3", "--bins", "256",
          "--out", str(out)])
    p = load_params(out)
    assert p.info["images"] == ["0.png", "1.png"] and p.config["act_bits"] == 3 and "fill" not in p.config
    main(["--weights", test_weights, "--calib", str(calib), "--images", "1", "--act-bits", "6", "--bins", "256",
          "--fill", "--out", str(tmp_path / "f.npz")])
    assert load_params(tmp_path / "f.npz").config["fill"] is True
    assert sidecar_path(out).is_file()
    for argv, msg in ((["--act-bits", "9"], "act-bits"), (["--weight-bits", "1"], "weight-bits"),
                      (["--words", "6"], "words"), (["--calib", str(tmp_path / "none")], "folder not found"),
                      (["--weights", str(tmp_path / "w.pt")], "not found"), (["--seed", "-1"], "seed")):
        with pytest.raises(SystemExit) as exc:
            main(["--weights", test_weights, "--calib", str(calib), "--images", "1", "--out",
                  str(tmp_path / "never.npz"), *argv])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and err.count("\n") == 1 and msg in err, err
    assert not (tmp_path / "never.npz").exists()
