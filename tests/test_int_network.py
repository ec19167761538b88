"""The integer-only network (contract 2): the adapters' graphs, golden.int_network, dfsq.int_mode, dfsq-int."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from dfsq.adapters import adapter_for, int_body, quantized_layers
from dfsq.model import build_model
from dfsq.rdn import RDNConfig
from golden.errors import UserError
from golden.int_graph import IntGraph, IntStep
from golden.int_layer import channel_stats, codes_from_thresholds, mean_range, thresholds
from golden.int_network import run_body

TINY = RDNConfig(2, 2, 8, 16)


def _image(h=12, w=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(1, 3, h, w, generator=g) * 255).round()


@pytest.mark.parametrize("arch,config", [("edsr", None), ("rdn", TINY)])
def test_graph_in_float_is_the_network(arch, config):
    """Running the adapter's graph with the model's own convs reproduces model(x) bit for bit."""
    from dfsq.int_mode import float_body

    torch.manual_seed(1)
    model = build_model(arch, 2, config).eval()
    a, g = int_body(model)
    x = _image()
    with torch.no_grad():
        assert torch.equal(a.forward_body(model, x, float_body(model, g)), model(x))
    chans = g.channels
    assert chans[g.entry] == g.entry_channels and chans[g.exit] == g.entry_channels
    assert len(g.steps) == len(quantized_layers(model))
    if arch == "edsr":
        assert [s.relu for s in g.steps[:4]] == [True, False, True, False]
        assert g.steps[1].residual == g.entry and g.exit == "x16"
    else:   # dense concatenations: conv j of a block reads j + 1 tensors; the LFF all of them
        assert [len(s.inputs) for s in g.steps] == [1, 2, 3, 1, 2, 3, 2, 1]
        assert g.steps[2].residual == "b0" and g.steps[-2].inputs == ("b1", "b2")
    assert IntGraph.from_json(g.to_json()) == g


def test_graph_check_refuses_bad_graphs():
    layers = [(4, 4, False), (4, 4, True)]
    ok = IntGraph("a", 4, (IntStep(0, ("a",), "b", relu=True), IntStep(1, ("b",), "c", residual="a")), "c")
    assert ok.check(layers) == {"a": 4, "b": 4, "c": 4}
    assert ok.last_reads() == {"a": 1, "b": 1, "c": 2}
    bad = {
        "read before": dataclasses.replace(ok, steps=(IntStep(0, ("z",), "b", relu=True), ok.steps[1])),
        "channels": dataclasses.replace(ok, steps=(IntStep(0, ("a", "a"), "b", relu=True), ok.steps[1])),
        "used twice": dataclasses.replace(ok, steps=(ok.steps[0], IntStep(0, ("b",), "c"))),
        "not one": dataclasses.replace(ok, steps=(IntStep(0, ("a",), "b"), ok.steps[1])),
        "new tensor": dataclasses.replace(ok, steps=(IntStep(0, ("a",), "a", relu=True), ok.steps[1])),
        "never written": dataclasses.replace(ok, exit="q"),
        "not in the graph": dataclasses.replace(ok, steps=ok.steps[:1], exit="b"),
        "res_scale": dataclasses.replace(ok, steps=(ok.steps[0], dataclasses.replace(ok.steps[1], res_scale=-1.0))),
    }
    for what, g in bad.items():
        with pytest.raises(UserError, match=what):
            g.check(layers)
    with pytest.raises(UserError, match="version"):
        IntGraph.from_json({"entry": "a"})
    with pytest.raises(UserError, match="malformed"):
        IntGraph.from_json({"version": 1, "entry": "a"})


def test_adapter_without_integer_body_is_refused(monkeypatch):
    model = build_model("edsr", 2)
    a = adapter_for(model)
    from dfsq import adapters as ad

    monkeypatch.setitem(ad.REGISTRY, "edsr", dataclasses.replace(a, graph=None))
    with pytest.raises(UserError, match="no integer body"):
        int_body(model)


@pytest.fixture(scope="module")
def x2_quantized(x2_model):
    from dfsq.calibrate import load_params
    from dfsq.quantize import quantize_model
    from dfsq.weights import default_weights

    params = default_weights(2).parent / "dfsq_x2_a4w4_words4.npz"
    if not params.is_file():
        pytest.skip(f"{params} is missing")
    p = load_params(params)
    if p.config["weights_fingerprint"] != __import__("dfsq.calibrate").calibrate.weights_fingerprint(x2_model):
        pytest.skip("the embedded params belong to the embedded weights, not DFSQ_TEST_WEIGHTS")
    return quantize_model(x2_model, p, "dfsq")


def test_integer_network_tracks_fake_quant(x2_model, x2_quantized):
    """EDSR x2 W4A4 on a 24 x 24 crop: the integer network's output differs from fake-quant's by the noise of codes
    flipping at midpoints (as the contract-1 hardware datapath's does: mean 0.22 there, 0.25 here, max 1.5), less than
    half of what quantization itself costs (fake-quant against FP: mean 0.55, max 16); no value saturates, and every
    recorded conv's codes are its thresholds' (the records the RTL is checked with)."""
    from dfsq.data import sample_image
    from dfsq.int_mode import IntNetwork

    net = IntNetwork(x2_quantized, threads=1)
    assert net.ispec.fmap.bits == 16 and net.ispec.fmap.frac == 5 and net.entry_cannot_saturate
    img = sample_image()[200:224, 220:244]
    x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        y_int, y_fq = net(x), x2_quantized(x)
        y_fp = x2_model(x)
    err = (y_int - y_fq).abs()
    assert float(err.mean()) < 0.5 * float((y_fp - y_fq).abs().mean()) and float(err.max()) < 4
    r = net.report()
    assert r["saturated"] == 0 and r["values"] == 24 * 24 * 64 * 33
    # the records of a kept run
    with torch.no_grad():
        h = x2_quantized.head(x - x2_quantized.rgb_mean)
    X0, _ = net.ispec.fmap.to_fixed(h.numpy())
    res = run_body(net.graph, net.convs, X0, net.ispec, keep=True)
    assert np.array_equal(res.exit, net.ispec.fmap.to_fixed(net.body(h).numpy())[0])
    for i, s in enumerate(net.graph.steps[:4]):
        X = res.tensors[s.inputs[0]]
        rec = res.records[i]
        S, lo, hi = channel_stats(X)
        mu, M = mean_range(S, lo, hi, X.shape[2] * X.shape[3], net.convs[s.layer].relu_input)
        assert np.array_equal(rec.codes, codes_from_thresholds(X, thresholds(mu, M, net.convs[s.layer].point_ints,
                                                                             net.ispec)))
        if net.convs[s.layer].relu_input:
            assert not mu.any() and rec.xmin.min() >= 0


def test_integer_network_format_too_narrow_is_refused(x2_quantized):
    from dfsq.int_mode import IntNetwork

    with pytest.raises(UserError, match="too narrow"):
        IntNetwork(x2_quantized, fmap_bits=9)


def test_evaluate_dfsq_int_flags_are_checked(capsys):
    from dfsq.evaluate import main

    for args, msg in ((["--method", "dfsq", "--fmap-bits", "16"], "applies only with --method dfsq-int"),
                      (["--method", "dfsq-int", "--fmap-bits", "40"], "--fmap-bits"),
                      (["--method", "dfsq-int", "--fmap-bits", "16", "--fmap-frac", "16"], "--fmap-frac must be below")):
        with pytest.raises(SystemExit) as exc:
            main(args + ["--datasets", "Set5"])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and msg in err and len(err.strip().splitlines()) == 1


def test_export_carries_the_integer_body(default_export, tmp_path):
    """An export of every layer has the integer section and the entry tensor; golden reruns the body from it: the
    entry is the first layer's float input in the feature-map format, and every record is consistent."""
    import json
    import shutil

    from golden.int_export import load_int_body

    body = load_int_body(default_export)
    assert np.array_equal(body.x0, body.ispec.fmap.to_fixed(body.layers[0].x)[0])
    res = body.run()
    assert len(res.records) == len(body.layers) == len(body.graph.steps)
    m = json.loads((default_export / "manifest.json").read_text())
    assert m["integer"]["entry_file"] == "body_input.npz" and m["integer"]["graph"]["exit"] == "x16"
    # bad input: no integer section, a wrong entry file
    bad = tmp_path / "bad"
    shutil.copytree(default_export, bad)
    m2 = dict(m)
    del m2["integer"]
    (bad / "manifest.json").write_text(json.dumps(m2))
    (bad / "body_input.npz").unlink()
    with pytest.raises(UserError, match="no integer network"):
        load_int_body(bad)
    (bad / "manifest.json").write_text(json.dumps(m))
    np.savez(bad / "body_input.npz", x=np.zeros((1, 64, 2, 2), np.int16))
    with pytest.raises(UserError, match="x must be"):
        load_int_body(bad)


def test_results_section_shows_the_three_datapaths():
    from bench.results_md import integer_section

    rep = {"fmap": "Q10.5 (16 bits, range +-1023.97)", "saturated": 0, "values": 1000}
    res = {"x2/dfsq/W4A4/words4/Set5": {"psnr": 37.14, "ssim": 0.9},
           "x2/dfsq-hw/W4A4/words4/Set5": {"psnr": 37.136, "ssim": 0.9},
           "x2/dfsq-int/W4A4/words4/Set5": {"psnr": 37.1331, "ssim": 0.9, "integer": rep},
           "x2/dfsq-int/W3A3/words4/Set14": {"psnr": 32.5, "ssim": 0.9, "integer": rep}}
    text = "\n".join(integer_section(res, ["Set5", "Set14"]))
    assert "| EDSR-baseline x2 | W4A4 | Set5 | 37.1400 | 37.1360 | 37.1331 | -0.0040 | -0.0069 | Q10.5" in text
    assert "0 of 1,000" in text and "Within 0.01 dB of fake-quant: 1 of 1 cells" in text
    assert "--scales 2 --bits 4,3 --methods dfsq,dfsq-hw,dfsq-int" in text
    assert integer_section({}, ["Set5"]) == []
    assert "†" not in text and "Not measured (no `dfsq-int` cell): EDSR-baseline x2 W4A4 Set14" in text


def test_results_section_flags_other_calibrations_and_gaps():
    """A fake-quant neighbour from another calibration run is marked; a missing cell is named with the measured
    cost of an image (from the cells' own seconds), never left as a silent gap."""
    from bench.results_md import integer_section

    rep = {"fmap": "Q12.3", "saturated": 0, "values": 10}
    res = {"rdn/x2/dfsq/W4A4/words4/Set5": {"psnr": 37.0358, "ssim": 0.9, "device": "cuda"},
           "rdn/x2/dfsq-int/W4A4/words4/Set5": {"psnr": 37.0456, "ssim": 0.9, "integer": rep},
           "x2/dfsq/W4A4/words4/B100": {"psnr": 31.5, "ssim": 0.9, "params_sha256": "aa"},
           "x2/dfsq-int/W4A4/words4/B100": {"psnr": 31.5, "ssim": 0.9, "images": 100, "seconds": 850.0,
                                             "params_sha256": "bb", "integer": rep}}
    text = "\n".join(integer_section(res, ["Set5", "B100", "Urban100"]))
    assert "| 37.0358† |" in text and "| 31.5000† |" in text and "another calibration run" in text
    assert "RDN x2 W4A4 Urban100" in text and "EDSR-baseline x2 W4A4 Urban100" in text
    assert "per B100 image x2 8.5 s" in text
    res["x2/dfsq/W4A4/words4/B100"]["params_sha256"] = "bb"
    assert "| 31.5000 |" in "\n".join(integer_section(res, ["B100"]))


def test_int_speed_bad_input(tmp_path, capsys):
    from bench.int_speed import main

    with pytest.raises(SystemExit) as exc:
        main(["--params", str(tmp_path / "none.npz"), "--out", str(tmp_path / "s")])
    assert exc.value.code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())
