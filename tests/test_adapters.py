"""Model adapters (dfsq.adapters) and RDN end to end: layer lists, a tiny random RDN through calibration,
fake-quant, hardware mode and export, the ``--model rdn`` CLIs, and official config-B checkpoints. That the
adapters changed nothing for EDSR is tests/test_edsr_reference.py."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from dfsq.adapters import QLayer, adapters, get_module, quantized_layers
from dfsq.model import EDSR, build_model, load_model, quantized_convs
from dfsq.rdn import CONFIGS, RDN, RDNConfig

TINY = RDNConfig(2, 2, 8, 16)
FAST = {"bins": 512}


def _arrays_equal(a, b) -> bool:
    if isinstance(a, list) or isinstance(b, list):
        return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
    return np.array_equal(a, b)


# --- layer lists ------------------------------------------------------------------------------------------------
def test_registry():
    assert set(adapters()) == {"edsr", "rdn"}
    assert adapters()["edsr"].model_class is EDSR and adapters()["rdn"].model_class is RDN


def test_edsr_layers():
    layers = quantized_layers(EDSR(2))
    assert len(layers) == 32
    for i, q in enumerate(layers):
        assert q.name == f"body.{i // 2}.body.{2 * (i % 2)}"
        assert (q.kernel, q.in_channels, q.out_channels) == (3, 64, 64)
        assert q.relu_input == (i % 2 == 1) and q.input_prefix_of is None


def test_rdn_config_b_layers():
    """146 convs: per block 8 3x3 convs with 64..512 inputs (growth 64) and the 1x1 LFF 576 -> 64; then
    GFF.0 (1x1, 1024 -> 64) and GFF.1 (3x3, 64 -> 64); none post-ReLU (as the official rdn_setq.py)."""
    model = build_model("rdn", 2, CONFIGS["B"])
    layers = quantized_layers(model)
    assert len(layers) == 146 == 16 * (8 + 1) + 2
    for i in range(16):
        block = layers[9 * i:9 * i + 9]
        for j, q in enumerate(block[:8]):
            assert q == QLayer(f"RDBs.{i}.convs.{j}.conv.0", 3, 64 + 64 * j, 64, False, f"RDBs.{i}.LFF")
        assert block[8] == QLayer(f"RDBs.{i}.LFF", 1, 576, 64, False)
    assert layers[-2] == QLayer("GFF.0", 1, 1024, 64, False)
    assert layers[-1] == QLayer("GFF.1", 3, 64, 64, False)
    for q in layers:
        conv = get_module(model, q.name)
        assert conv.weight.shape == (q.out_channels, q.in_channels, q.kernel, q.kernel)
    assert [n for n, _ in quantized_convs(model)] == [q.name for q in layers]


# --- a tiny random RDN end to end ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_rdn():
    torch.manual_seed(0)
    return build_model("rdn", 2, TINY).eval()


@pytest.fixture(scope="module")
def tiny_params(tiny_rdn, calib_crops):
    from dfsq.calibrate import calibrate

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return calibrate(tiny_rdn, calib_crops, act_bits=4, weight_bits=4, words=4, seed=0, **FAST)
    finally:
        torch.set_num_threads(threads)


def test_rdn_calibration_artifact(tiny_rdn, tiny_params, tmp_path):
    from dfsq.calibrate import ARRAY_KEYS, load_params, save_params

    p = tiny_params
    assert p.config["model"] == "rdn" and p.config["rdn_config"] == [2, 2, 8, 16]
    assert p.layers == ["RDBs.0.convs.0.conv.0", "RDBs.0.convs.1.conv.0", "RDBs.0.LFF", "RDBs.1.convs.0.conv.0",
                        "RDBs.1.convs.1.conv.0", "RDBs.1.LFF", "GFF.0", "GFF.1"]
    assert [q["in_channels"] for q in p.layer_info] == [16, 24, 32, 16, 24, 32, 32, 16]
    assert [q["kernel"] for q in p.layer_info] == [3, 3, 1, 3, 3, 1, 1, 3]
    for i, q in enumerate(p.layer_info):
        assert p.arrays["point_ints"][i].shape == (q["in_channels"], 16)
        assert p.arrays["weight_q"][i].shape == (q["out_channels"], q["in_channels"], q["kernel"], q["kernel"])
    assert p.arrays["act_min"].shape == (8,)
    path = save_params(p, tmp_path / "rdn.npz")
    q = load_params(path)
    assert q.config == p.config and q.layers == p.layers and q.layer_info == p.layer_info
    for k in ARRAY_KEYS:
        assert _arrays_equal(p.arrays[k], q.arrays[k]), k
        assert type(q.arrays[k]) is type(p.arrays[k]), k


def test_shared_statistics_are_exact(tiny_rdn, tiny_params, calib_crops, monkeypatch, one_thread):
    """Reading an RDB conv's statistics from its block's LFF input (input_prefix_of) gives the same
    calibration as hooking every conv."""
    import dfsq.adapters as ad
    from dfsq.calibrate import ARRAY_KEYS, calibrate

    orig = ad.adapters()["rdn"]
    plain = dataclasses.replace(orig, layers=lambda m: [dataclasses.replace(q, input_prefix_of=None)
                                                        for q in orig.layers(m)])
    monkeypatch.setitem(ad.REGISTRY, "rdn", plain)
    q = calibrate(tiny_rdn, calib_crops, act_bits=4, weight_bits=4, words=4, seed=0, **FAST)
    for k in ARRAY_KEYS:
        assert _arrays_equal(tiny_params.arrays[k], q.arrays[k]), k


def test_rdn_fake_quant_and_hw_mode(tiny_rdn, tiny_params, one_thread):
    """Fake-quant replaces all 8 convs (1x1 ones with padding 0); hardware mode (1x1 as a centre-tap 3x3 until
    golden takes 1x1) agrees with fake-quant layer by layer to the datapath's rounding."""
    from dfsq.hw_mode import apply_hw_mode
    from dfsq.quantize import QuantConv, quant_convs, quantize_model

    q = quantize_model(tiny_rdn, tiny_params, "dfsq")
    qcs = quant_convs(q)
    assert [m.name for m in qcs] == tiny_params.layers and [m.kernel for m in qcs] == [3, 3, 1, 3, 3, 1, 1, 3]
    assert not any(isinstance(m, QuantConv) for m in (q.SFENet1, q.SFENet2, *q.UPNet))
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (1, 3, 12, 10)).astype(np.float32))
    with torch.no_grad():
        y_fp, y_q = tiny_rdn(x), q(x)
        assert y_q.shape == y_fp.shape == (1, 3, 24, 20)
        assert 0 < float((y_q - y_fp).abs().max()) < 0.2 * float(y_fp.abs().max())
        inputs = {}
        hooks = [m.register_forward_pre_hook(lambda m, a: inputs.__setitem__(m.name, a[0])) for m in qcs]
        q(x)
        for h in hooks:
            h.remove()
        ref = {m.name: m(inputs[m.name]) for m in qcs}
        apply_hw_mode(q)
        for m in qcs:
            y_hw = m(inputs[m.name])
            err = float((y_hw - ref[m.name]).abs().max()) / float(ref[m.name].abs().max())
            assert err < 1e-3, (m.name, err)
    mm = quantize_model(tiny_rdn, tiny_params, "minmax")
    with torch.no_grad():
        assert mm(x).shape == (1, 3, 24, 20)


def test_rdn_export(tiny_rdn, tiny_params, tmp_path, one_thread):
    """Manifest fields (kernel, channels, model, rdn_config), 1x1 weight_q (O, C, 1, 1), outputs recomputed from the
    fields alone bit for bit, the dense-block chaining, and golden.check on the 3x3 layers."""
    from dfsq.export import export
    from golden.check import check_layer
    from golden.export_io import load_export, spec_from_manifest

    img = np.random.default_rng(1).integers(0, 255, (10, 12, 3), dtype=np.uint8)
    man = export(tiny_rdn, tiny_params, img, tmp_path / "exp")
    assert man["config"]["model"] == "rdn" and man["config"]["rdn_config"] == [2, 2, 8, 16]
    assert man["spec"]["channels"] == 64  # TODO(merge golden1x1): per-layer spec
    ents = man["layers"]
    assert [(e["kernel"], e["in_channels"], e["out_channels"]) for e in ents] == [
        (3, 16, 8), (3, 24, 8), (1, 32, 16), (3, 16, 8), (3, 24, 8), (1, 32, 16), (1, 32, 16), (3, 16, 16)]
    assert all(e["relu_input"] is False for e in ents)
    f = []
    for e in ents:
        with np.load(tmp_path / "exp" / e["file"], allow_pickle=False) as z:
            f.append({k: z[k] for k in z.files})
    for e, d in zip(ents, f):
        k = e["kernel"]
        assert d["weight_q"].shape == (e["out_channels"], e["in_channels"], k, k)
        assert list(d["x"].shape) == e["input_shape"] and list(d["y"].shape) == e["output_shape"]
        pts = torch.from_numpy(d["points"])
        codes = torch.from_numpy(d["codes"].astype(np.int64))
        xq = torch.stack([pts[c][codes[:, c]] for c in range(pts.shape[0])], 1)
        xq = xq * torch.from_numpy(d["scale"])[:, :, None, None] + torch.from_numpy(d["mean"])[:, :, None, None]
        w = torch.from_numpy(d["weight_q"].astype(np.int32) - d["zero_point"][:, None, None, None]).float()
        w = w * torch.from_numpy(d["weight_scale"])[:, None, None, None]
        y = F.conv2d(xq, w, torch.from_numpy(d["bias"]), padding=k // 2)
        assert np.array_equal(y.numpy(), d["y"]), e["name"]
    # dense connections: conv 1's input is conv 0's input followed by ReLU(conv 0's output); LFF sees all of it
    assert np.array_equal(f[1]["x"], np.concatenate([f[0]["x"], np.maximum(f[0]["y"], 0)], 1))
    assert np.array_equal(f[2]["x"], np.concatenate([f[1]["x"], np.maximum(f[1]["y"], 0)], 1))
    assert np.array_equal(f[3]["x"], f[2]["y"] + f[0]["x"])  # block 1's input: LFF + the identity
    spec = spec_from_manifest(man)
    three = [e["index"] for e in ents if e["kernel"] == 3]
    results = [check_layer(lay, spec) for lay in load_export(tmp_path / "exp", spec, three)[1]]
    assert len(results) == 5 and all(r["passed"] for r in results)
    sub = export(tiny_rdn, tiny_params, img, tmp_path / "sub", layers=[2, 6])
    assert [e["index"] for e in sub["layers"]] == [2, 6]
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["02_RDBs.0.LFF.npz", "06_GFF.0.npz",
                                                                    "manifest.json"]
    for e in sub["layers"]:  # a subset, compressed: the same arrays
        with np.load(tmp_path / "sub" / e["file"], allow_pickle=False) as z:
            assert all(np.array_equal(z[k], f[e["index"]][k]) for k in f[e["index"]])
    comp = export(tiny_rdn, tiny_params, img, tmp_path / "comp", layers=[6], compress=True)
    with np.load(tmp_path / "comp" / comp["layers"][0]["file"], allow_pickle=False) as z:
        assert all(np.array_equal(z[k], f[6][k]) for k in f[6])
    assert (tmp_path / "comp" / "06_GFF.0.npz").stat().st_size < (tmp_path / "sub" / "06_GFF.0.npz").stat().st_size


def test_export_file_names_sort():
    from dfsq.export import layer_file

    assert layer_file(5, "body.2.body.2", 32) == "05_body.2.body.2.npz"
    assert layer_file(5, "GFF.0", 146) == "005_GFF.0.npz" and layer_file(145, "GFF.1", 146) == "145_GFF.1.npz"


# --- CLIs -------------------------------------------------------------------------------------------------------
def _cli(main, argv, capsys):
    try:
        code = main(argv) or 0
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr()


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory, tiny_rdn):
    root = tmp_path_factory.mktemp("rdn_cli")
    torch.save(tiny_rdn.state_dict(), root / "rdn.pt")
    rng = np.random.default_rng(0)
    (root / "calib").mkdir()
    (root / "data" / "Tiny" / "HR").mkdir(parents=True)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (40, 36, 3), dtype=np.uint8)).save(root / "calib" / f"{i}.png")
    Image.fromarray(rng.integers(0, 255, (24, 20, 3), dtype=np.uint8)).save(root / "data" / "Tiny" / "HR" / "a.png")
    return root


def test_cli_model_rdn(tiny_files, tmp_path, capsys, one_thread):
    from dfsq import calibrate, evaluate, export, plot_distributions

    w = str(tiny_files / "rdn.pt")
    params = tmp_path / "p.npz"
    code, out = _cli(calibrate.main, ["--model", "rdn", "--weights", w, "--calib", str(tiny_files / "calib"),
                                      "--images", "2", "--bins", "256", "--out", str(params)], capsys)
    assert code == 0, out.err
    assert "calibrated rdn x2" in out.out and "(8 layers)" in out.out
    assert json.loads(params.with_suffix(".json").read_text())["config"]["model"] == "rdn"
    code, out = _cli(export.main, ["--model", "rdn", "--weights", w, "--params", str(params), "--image",
                                   str(tiny_files / "calib" / "0.png"), "--crop", "0,0,8,8", "--out",
                                   str(tmp_path / "exp")], capsys)
    assert code == 0, out.err
    assert len(json.loads((tmp_path / "exp" / "manifest.json").read_text())["layers"]) == 8
    for method in ("dfsq", "dfsq-hw"):
        code, out = _cli(evaluate.main, ["--model", "rdn", "--weights", w, "--method", method, "--params",
                                         str(params), "--data-root", str(tiny_files / "data"), "--datasets", "Tiny",
                                         "--json", str(tmp_path / f"{method}.json")], capsys)
        assert code == 0, out.err
        r = json.loads((tmp_path / f"{method}.json").read_text())
        assert r["model"] == "rdn" and 0 < r["results"]["Tiny"]["psnr"] < 100
    code, out = _cli(plot_distributions.main, ["--model", "rdn", "--weights", w, "--calib",
                                               str(tiny_files / "calib"), "--images", "2", "--layer", "GFF.0",
                                               "--out", str(tmp_path / "fig.png")], capsys)
    assert code == 0, out.err
    assert (tmp_path / "fig.png").stat().st_size > 1000 and "GFF.0" in out.out
    # an RDN params file with the EDSR tools (or the other way round) is refused with one line
    for main, argv in ((export.main, ["--params", str(params), "--image", "sample", "--out", str(tmp_path / "no")]),
                       (evaluate.main, ["--method", "dfsq", "--params", str(params), "--data-root",
                                        str(tiny_files / "data"), "--datasets", "Tiny"])):
        code, out = _cli(main, argv, capsys)
        assert code == 2 and out.err.count("\n") == 1 and "rdn" in out.err and "--model" in out.err, out.err
    assert not (tmp_path / "no").exists()


def test_cli_other_rdn_config_refused(tiny_files, tmp_path, capsys, one_thread):
    """A params file made for one RDN config is refused for another (one line, exit 2)."""
    from dfsq import calibrate, evaluate

    params = tmp_path / "p.npz"
    code, out = _cli(calibrate.main, ["--model", "rdn", "--weights", str(tiny_files / "rdn.pt"), "--calib",
                                      str(tiny_files / "calib"), "--images", "1", "--bins", "256", "--out",
                                      str(params)], capsys)
    assert code == 0, out.err
    torch.manual_seed(1)
    other = tmp_path / "other.pt"
    torch.save(build_model("rdn", 2, RDNConfig(2, 3, 8, 16)).state_dict(), other)
    code, out = _cli(evaluate.main, ["--model", "rdn", "--weights", str(other), "--method", "dfsq", "--params",
                                     str(params), "--data-root", str(tiny_files / "data"), "--datasets", "Tiny"],
                     capsys)
    assert code == 2 and out.err.count("\n") == 1 and "D=2, C=2" in out.err and "D=2, C=3" in out.err, out.err


# --- official config-B checkpoints --------------------------------------------------------------------------------
@pytest.mark.parametrize("scale", [2, 4])
def test_config_b_state_dict(scale, tmp_path, capsys, one_thread):
    """A state_dict with the official RDN (config B) key names and shapes loads and runs at x2 and x4; with a
    missing key, an unknown key or a wrong shape the CLI refuses it with one line, exit 2."""
    from dfsq import calibrate

    torch.manual_seed(0)
    state = build_model("rdn", scale, CONFIGS["B"]).state_dict()
    assert "RDBs.15.convs.7.conv.0.weight" in state and state["GFF.0.weight"].shape == (64, 1024, 1, 1)
    assert ("UPNet.4.weight" in state) == (scale == 4)
    good = tmp_path / "b.pt"
    torch.save(state, good)
    model = load_model("rdn", good, scale)
    assert model.config == CONFIGS["B"] and len(quantized_layers(model)) == 146
    with torch.no_grad():
        y = model(torch.rand(1, 3, 4, 5) * 255)
    assert y.shape == (1, 3, 4 * scale, 5 * scale) and torch.isfinite(y).all()
    if scale != 2:
        return  # the refusals below do not depend on the scale: once is enough (88 MB files)
    bad = {"missing": {k: v for k, v in state.items() if k != "RDBs.3.LFF.bias"},
           "extra": {**state, "RDBs.0.convs.0.conv.1.weight": torch.zeros(1)},
           "shape": {**state, "GFF.1.weight": torch.zeros(64, 64, 1, 1)}}
    for what, sd in bad.items():
        path = tmp_path / f"{what}.pt"
        torch.save(sd, path)
        code, out = _cli(calibrate.main, ["--model", "rdn", "--scale", str(scale), "--weights", str(path),
                                          "--out", str(tmp_path / "never.npz")], capsys)
        assert code == 2 and out.err.count("\n") == 1, (what, out.err)
        assert {"missing": "missing keys", "extra": "unknown keys", "shape": "shape"}[what] in out.err, out.err
        assert "Traceback" not in out.err
    assert not (tmp_path / "never.npz").exists()


def test_demo_rdn_without_weights(tmp_path, capsys, monkeypatch):
    """`python -m demo --model rdn` without the embedded RDN file fails with one clear line (exit 2)."""
    import demo
    from dfsq import weights

    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path / "no-weights")
    monkeypatch.setattr("sim.runner.check_simulator", lambda name: None)
    code, out = _cli(demo.main, ["--model", "rdn", "--out", str(tmp_path / "demo")], capsys)
    assert code == 2 and out.err.count("\n") == 1 and "no embedded default rdn checkpoint" in out.err, out.err
    assert "rdn_s_x2.pt" in out.err


def test_uniform_stats_cache_round_trip_for_rdn(tiny_rdn, calib_crops, tmp_path):
    """bench.psnr_table --models rdn --methods uniform caches per-layer statistics of layers of different widths
    (one array per layer) and reads back exactly what it computed; the Uniform-MSE network then runs."""
    from dfsq.uniform import cached_stats, minmax_params, quantize_uniform, uniform_ranges

    path = tmp_path / "stats.npz"
    first = cached_stats(tiny_rdn, calib_crops[:2], path, samples_per_image=64)
    with np.load(path, allow_pickle=False) as z:
        assert "min" not in z.files and "min_0" in z.files
    again = cached_stats(tiny_rdn, lambda: pytest.fail("the cache was not used"), path, samples_per_image=64)
    assert [s["name"] for s in again] == [s["name"] for s in first]
    for a, b in zip(first, again):
        for k in ("min", "max", "sample"):
            assert np.array_equal(a[k], b[k]), (a["name"], k)
    lo, hi = uniform_ranges(again, 4, "channel", "mse")
    net = quantize_uniform(tiny_rdn, minmax_params(tiny_rdn, 4, again), lo, hi)
    with torch.no_grad():
        y = net(torch.rand(1, 3, 12, 12) * 255)
    assert y.shape == (1, 3, 24, 24) and bool(torch.isfinite(y).all())
