"""golden.check and golden.export_io on synthetic exports (and on real exports when the fixtures provide them)."""
import json

import numpy as np
import pytest

from golden.check import main
from golden.export_io import load_export, load_layer, save_layer, write_export
from golden.spec import DatapathSpec
from golden.synthetic import synthetic_layers


@pytest.fixture(scope="module")
def synth_export(tmp_path_factory):
    spec = DatapathSpec()
    d = tmp_path_factory.mktemp("synth")
    write_export(d, synthetic_layers(np.random.default_rng(0), spec, 3, N=2, C=16, O=8, H=6, W=7), spec)
    return d


@pytest.fixture()
def export_copy(synth_export, tmp_path):
    import shutil
    d = tmp_path / "exp"
    shutil.copytree(synth_export, d)
    return d


def run(argv, capsys):
    try:
        rc = main(argv)
    except SystemExit as exc:
        rc = exc.code
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_synthetic_export_passes(synth_export, tmp_path, capsys):
    rc, out, err = run(["--export", str(synth_export), "--json", str(tmp_path / "r.json"), "--quiet"], capsys)
    assert rc == 0, err
    assert "3/3 layers pass" in out
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["passed"] and len(rep["layers"]) == 3
    for r in rep["layers"]:
        assert r["codes_equal"] and r["code_diffs"] == 0 and r["within_bound"]
        assert 0 < r["max_abs_err"] <= r["bound_max"] and r["worst_err_over_bound"] <= 1


def test_words3_act5_export_passes(tmp_path, capsys):
    spec = DatapathSpec(words=3, act_bits=5)
    write_export(tmp_path, synthetic_layers(np.random.default_rng(1), spec, 2, N=1, C=8, O=4, H=5, W=5), spec)
    rc, out, err = run(["--export", str(tmp_path), "--quiet"], capsys)
    assert rc == 0, err


def _mutate(path, **changes):
    lay = load_layer(path)
    for k, f in changes.items():
        setattr(lay, k, f(getattr(lay, k)))
    save_layer(path, lay)


def test_a_wrong_code_is_reported(export_copy, tmp_path, capsys):
    path = sorted(export_copy.glob("01_*.npz"))[0]

    def flip(c):
        c = c.copy()
        c[1, 2, 3, 4] = (int(c[1, 2, 3, 4]) + 1) % 16
        return c
    _mutate(path, codes=flip)
    rc, out, err = run(["--export", str(export_copy), "--json", str(tmp_path / "r.json"), "--quiet"], capsys)
    assert rc == 1
    rep = json.loads((tmp_path / "r.json").read_text())
    bad = rep["layers"][1]
    assert bad["code_diffs"] == 1 and bad["first_code_diff"] == {"n": 1, "c": 2, "h": 3, "w": 4,
                                                               "exported": bad["first_code_diff"]["exported"],
                                                               "derived": bad["first_code_diff"]["derived"]}
    assert rep["layers"][0]["passed"] and not bad["passed"]
    assert "FAIL layer 1" in err and "1 codes differ" in err


def test_an_error_beyond_the_bound_is_reported(export_copy, capsys):
    path = sorted(export_copy.glob("00_*.npz"))[0]

    def shift(y):
        y = y.copy()
        y[0, 3, 2, 2] += 0.5 * np.abs(y).max()
        return y
    _mutate(path, y=shift)
    rc, out, err = run(["--export", str(export_copy), "--quiet"], capsys)
    assert rc == 1 and "exceeds the bound" in err


def test_inconsistent_statistics_are_reported(export_copy, capsys):
    path = sorted(export_copy.glob("02_*.npz"))[0]
    _mutate(path, maxabs=lambda m: np.nextafter(m, np.float32(np.inf)).astype(np.float32))
    rc, out, err = run(["--export", str(export_copy), "--quiet", "--layers", "2"], capsys)
    assert rc == 1 and "maxabs" in err


def test_layers_and_scale_bits_options(synth_export, tmp_path, capsys):
    rc, out, err = run(["--export", str(synth_export), "--quiet", "--layers", "0,2", "--scale-bits", "20",
                        "--json", str(tmp_path / "r.json")], capsys)
    assert rc == 0, err
    rep = json.loads((tmp_path / "r.json").read_text())
    assert [r["index"] for r in rep["layers"]] == [0, 2] and rep["spec"]["scale_bits"] == 20


@pytest.mark.parametrize("case", ["missing", "no_manifest", "bad_json", "truncated", "nan", "dtype", "bad_layers",
                                  "codes_range", "wrong_words"])
def test_bad_input_is_one_line_exit_2(export_copy, capsys, case):
    target = export_copy
    first = sorted(export_copy.glob("00_*.npz"))[0]
    man = export_copy / "manifest.json"
    if case == "missing":
        target = export_copy / "nope"
    elif case == "no_manifest":
        man.unlink()
    elif case == "bad_json":
        man.write_text("{")
    elif case == "truncated":
        first.write_bytes(first.read_bytes()[:100])
    elif case == "nan":
        _mutate(first, x=lambda x: np.where(np.arange(x.size).reshape(x.shape) == 5, np.nan, x).astype(np.float32))
    elif case == "dtype":
        _mutate(first, codes=lambda c: c.astype(np.int64))
    elif case == "bad_layers":
        m = json.loads(man.read_text())
        m["layers"][0]["file"] = "../../etc/passwd"
        man.write_text(json.dumps(m))
    elif case == "codes_range":
        _mutate(first, codes=lambda c: np.full_like(c, 200))
    elif case == "wrong_words":
        m = json.loads(man.read_text())
        m["spec"]["words"] = m["config"]["words"] = 3
        man.write_text(json.dumps(m))
    rc, out, err = run(["--export", str(target), "--quiet"], capsys)
    assert rc == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err


def test_load_export_round_trip(synth_export):
    manifest, layers = load_export(synth_export)
    assert [lay.index for lay in layers] == [0, 1, 2] and manifest["spec"]["words"] == 4
    assert layers[1].relu_input and not layers[0].relu_input
    assert layers[0].x.dtype == np.float32 and layers[0].codes.dtype == np.uint8


@pytest.mark.parametrize("fixture", ["default_export", "alt_export"])
def test_real_export_passes(request, fixture, tmp_path, capsys):
    """Every layer of a real export (tests/conftest.py): codes identical to PyTorch's, errors within the bound."""
    export_dir = request.getfixturevalue(fixture)
    rc, out, err = run(["--export", str(export_dir), "--json", str(tmp_path / "r.json"), "--quiet"], capsys)
    assert rc == 0, err + out
    rep = json.loads((tmp_path / "r.json").read_text())
    assert len(rep["layers"]) == 32 and all(r["codes_equal"] and r["within_bound"] for r in rep["layers"])
    assert all(r["max_abs_err"] > 0 for r in rep["layers"])  # a real comparison, not a copy


@pytest.mark.parametrize("fixture", ["default_export", "alt_export"])
def test_real_layer_matches_per_pixel_reference(request, fixture):
    """accumulate() on real layers equals the shift-add per-pixel reference at corners, edges and inside."""
    from golden.datapath import pixel_reference
    from golden.export_io import spec_from_manifest
    from golden.layer import accumulate, operands

    manifest, layers = load_export(request.getfixturevalue(fixture), layers=[0, 1, 31])
    spec = spec_from_manifest(manifest)
    rng = np.random.default_rng(0)
    for lay in layers:
        ops = operands(lay, spec)
        acc = accumulate(ops, spec)
        n_, c_, o_, h_, w_ = lay.shape
        pix = [(0, 0), (0, w_ - 1), (h_ - 1, 0), (h_ - 1, w_ - 1), (0, w_ // 2), (h_ // 2, w_ // 2)]
        for h, w in pix:
            for o in rng.choice(o_, 3, replace=False):
                assert acc[0, o, h, w] == pixel_reference(ops, spec.wordset, 0, int(o), h, w, spec)
