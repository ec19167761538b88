"""The results page beside the paper (bench.paper, bench.results_md, bench.plots), the uniform baseline
(dfsq.uniform), the demo's comparison picture (dfsq.compare) and ``dfsq.evaluate --save-images``."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from bench.paper import appendix_c, load_paper, paper_cell, paper_drop, table1
from bench.psnr_table import key
from golden.errors import UserError

PAPER = {
    "source": "test", "setting": "test setting",
    "tables": {
        "EDSRx2": {"Set5": {"FP": {"psnr": 38.0, "ssim": 0.96},
                            "Min-Max": {"4": {"psnr": 37.5, "ssim": 0.955}},
                            "DFSQ": {"4": {"psnr": 37.9, "ssim": 0.959}},
                            "BRECQ": {"4": {"psnr": 37.61, "ssim": 0.956}},
                            "QDROP": {"4": {"psnr": 37.42, "ssim": 0.957}}},
                   "BSD100": {"FP": {"psnr": 32.0, "ssim": 0.9}, "DFSQ": {"4": {"psnr": 31.9, "ssim": 0.89}}}},
        "RDNx2": {"Set5": {"FP": {"psnr": 38.2, "ssim": 0.961}, "DFSQ": {"4": {"psnr": 38.0, "ssim": 0.96}}}},
    },
    "ablation_table1": {"layerwise_with_norm": {"Set5": [31.5, 0.88]}, "channelwise_with_norm": {"Set5": [31.7, 0.88]}},
    "universal_set_ablation_appendix_c": {"note": "x", "2x4_to_3x4_dB": 0.34, "3x4_to_4x4_dB": 0.002,
                                          "4x4_to_5x4_dB": -0.051},
}


def _r(p, s=0.95):
    return {"psnr": p, "ssim": s, "seconds": 1.0, "when": "now"}


def _cache(rdn: bool = False) -> dict:
    res = {key(2, "fp", None, 4, "Set5"): _r(37.26), key(2, "minmax", 4, 4, "Set5"): _r(35.50),
           key(2, "dfsq", 4, 4, "Set5"): _r(37.14), key(2, "uniform", 4, 4, "Set5"): _r(36.90),
           key(2, "dfsq", 4, 3, "Set5"): _r(37.10), key(2, "dfsq", 4, 2, "Set5"): _r(36.95)}
    if rdn:
        res[key(2, "fp", None, 4, "Set5", "rdn")] = _r(37.50)
        res[key(2, "dfsq", 4, 4, "Set5", "rdn")] = _r(37.30)
    return {"format": "dfsq-psnr-cache", "version": 1, "results": res}


def test_cache_keys_keep_edsr_format_and_prefix_other_models():
    assert key(2, "dfsq", 4, 4, "Set5") == "x2/dfsq/W4A4/words4/Set5"
    assert key(2, "fp", None, 4, "Set5") == "x2/fp/-/Set5"
    assert key(4, "dfsq", 3, 4, "B100", "rdn") == "rdn/x4/dfsq/W3A3/words4/B100"


def test_paper_lookup(tmp_path):
    p = tmp_path / "paper.json"
    p.write_text(json.dumps(PAPER))
    paper = load_paper(p)
    assert paper_cell(paper, "edsr", 2, "Set5", "dfsq", 4) == (37.9, 0.959)
    assert paper_cell(paper, "edsr", 2, "B100", "fp", None) == (32.0, 0.9)  # B100 is the paper's BSD100
    assert paper_cell(paper, "edsr", 4, "Set5", "dfsq", 4) is None
    assert paper_drop(paper, "edsr", 2, "Set5", "minmax", 4) == pytest.approx(-0.5)
    assert table1(paper, "channelwise_with_norm", "Set5") == (31.7, 0.88)
    assert appendix_c(paper) == {(2, 3): 0.34, (3, 4): 0.002, (4, 5): -0.051}
    assert load_paper(tmp_path / "absent.json") is None
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(UserError):
        load_paper(tmp_path / "bad.json")


def test_render_shows_paper_beside_ours_with_both_drops():
    from bench.results_md import render

    md = render(_cache(), 4, (2, 4), ["Set5", "B100"], [8, 6, 4, 3], paper=PAPER)
    row = next(line for line in md.splitlines() if line.startswith("| Set5 | DFSQ | 4 |"))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells[3] == "37.140 / 0.9500" and cells[4] == "-0.120"           # ours and our drop from our FP
    assert cells[5] == "37.900 / 0.9590" and cells[6] == "-0.100"           # the paper's and its drop
    assert cells[7] == "-0.020"
    assert "| Set5 | BRECQ | 4 | not run by us |  | 37.610 / 0.9560 | -0.390 |" in md
    assert "n/a" not in md
    assert "within 0.05 dB of the paper's drop from its FP in 1 of 1 cells" in md
    assert "| Set5 | Uniform-MSE (ours) | 4 | 36.900 / 0.9500 | -0.360 |" in md
    # Appendix C: our word-count deltas beside the paper's stated ones, the missing cells with their command
    assert "| Set5 | W4A4 | 36.950 | 37.100 | 37.140 | … | +0.150 (+0.340) | +0.040 (+0.002) | … (-0.051) |" in md
    assert "python -m bench.psnr_table --scales 2 --methods dfsq --bits 4 --words 5 --datasets Set5" in md
    assert "## RDN" not in md


def test_render_adds_rdn_rows_when_the_cache_has_them():
    from bench.results_md import render

    md = render(_cache(rdn=True), 4, (2, 4), ["Set5"], [4], paper=PAPER)
    assert "## RDN x2" in md
    assert "| Set5 | DFSQ | 4 | 37.300 / 0.9500 | -0.200 | 38.000 / 0.9600 | -0.200 | +0.000 |" in md
    # the checks cover RDN too; Min-Max RDN is missing here
    assert "- RDN x2 Set5 4-bit: DFSQ beats Min-Max: not measured" in md
    assert "- x2 Set5 4-bit: DFSQ beats Min-Max: yes (37.140 vs 35.500 dB)" in md


def test_timing_table_names_the_device():
    from bench.results_md import render

    cache = _cache(rdn=True)
    cache["results"][key(2, "dfsq", 4, 4, "Set5", "rdn")].update(device="cuda", seconds=3)
    md = render(cache, 4, (2, 4), ["Set5"], [4], paper=PAPER)
    assert "| rdn/x2/dfsq/W4A4/words4/Set5 | 3 | cuda |" in md
    assert "| x2/fp/-/Set5 | " in md and "| x2/fp/-/Set5 | 0 | cuda |" not in md


def test_no_render_fills_only_the_cache(tmp_path, test_weights, one_thread):
    """``--no-render`` adds results to the cache and leaves --out alone (how the lent-GPU runs filled it); a bad
    ``--device`` is one line and writes nothing."""
    from bench.psnr_table import main
    from dfsq.data import sample_images, save_rgb

    root = tmp_path / "bench"
    (root / "Set5" / "HR").mkdir(parents=True)
    save_rgb(sample_images(1)[0][1][:32, :32], root / "Set5" / "HR" / "a.png")
    out, cache = tmp_path / "r.md", tmp_path / "c.json"
    common = ["--out", str(out), "--cache", str(cache), "--data-root", str(root), "--weights", test_weights,
              "--scales", "2", "--methods", "fp", "--datasets", "Set5", "--params-dir", str(tmp_path / "p")]
    with pytest.raises(SystemExit) as exc:
        main(common + ["--device", "tpu"])
    assert exc.value.code == 2 and not out.exists() and not cache.exists()
    main(common[2:] + ["--no-render"])
    got = json.loads(cache.read_text())["results"]
    assert list(got) == ["x2/fp/-/Set5"] and got["x2/fp/-/Set5"]["images"] == 1
    assert "device" not in got["x2/fp/-/Set5"] and not out.exists()
    main(["--out", str(out), "--cache", str(cache), "--render-only"])
    assert out.is_file()



def test_render_without_paper():
    from bench.results_md import render

    md = render(_cache(), 4, (2,), ["Set5"], [4], paper={"tables": {}})
    assert "| Set5 | DFSQ | 4 | 37.140 / 0.9500 | -0.120 | — | — |  |" in md


def test_plots_are_written(tmp_path):
    from bench.plots import write_plots

    out = write_plots(_cache(), PAPER, 4, (2, 4), ["Set5"], [8, 6, 4, 3], tmp_path / "results.md")
    assert set(out.values()) == {"results_drops_edsr_x2.png", "results_words.png"}
    for name in out.values():
        with Image.open(tmp_path / name) as im:
            assert im.format == "PNG" and im.size[0] > 300
    assert not list(tmp_path.glob(".*tmp*"))


# --- the uniform baseline ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_edsr():
    from dfsq.model import EDSR

    torch.manual_seed(0)
    return EDSR(2).eval()


def test_uniform_layer_minmax_is_the_papers_minmax(tiny_edsr, one_thread):
    from dfsq.quantize import quantize_model
    from dfsq.uniform import collect_stats, minmax_params, quantize_uniform, uniform_ranges

    rng = np.random.default_rng(0)
    imgs = [("a", rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)),
            ("b", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))]
    stats = collect_stats(tiny_edsr, imgs, samples_per_image=64)
    params = minmax_params(tiny_edsr, 4, stats)
    x = torch.from_numpy(rng.uniform(0, 255, (1, 3, 12, 12)).astype(np.float32))
    with torch.no_grad():
        ref = quantize_model(tiny_edsr, params, "minmax")(x)
        lo, hi = uniform_ranges(stats, 4, "layer", "minmax")
        got = quantize_uniform(tiny_edsr, params, lo, hi)(x)
        assert torch.equal(ref, got)
        lo_c, hi_c = uniform_ranges(stats, 4, "channel", "minmax")
        assert np.all(hi_c <= hi + 1e-6) and np.any(hi_c < hi)
        lo_m, hi_m = uniform_ranges(stats, 4, "channel", "mse")
        assert np.all(hi_m <= hi_c + 1e-6)
        assert not torch.equal(quantize_uniform(tiny_edsr, params, lo_m, hi_m)(x), ref)


def test_uniform_baselines_take_any_adapter(one_thread):
    """Both uniform baselines read the conv list and the ReLU flags from the model adapter: an RDN (per-layer
    channel counts 16..64 in, 1x1 fusion convs, no post-ReLU input) runs through them."""
    from dfsq.adapters import quantized_layers
    from dfsq.rdn import RDN, RDNConfig
    from dfsq.uniform import collect_stats, minmax_params, quantize_dfsq_uniform, quantize_uniform, uniform_ranges

    torch.manual_seed(0)
    model = RDN(2, RDNConfig(D=2, C=2, G=8, G0=16)).eval()
    layers = quantized_layers(model)
    rng = np.random.default_rng(0)
    stats = collect_stats(model, [("a", rng.integers(0, 256, (12, 14, 3), dtype=np.uint8))], samples_per_image=32)
    assert [s["relu_input"] for s in stats] == [q.relu_input for q in layers]
    assert [s["sample"].shape[1] for s in stats] == [q.in_channels for q in layers]
    lo, hi = uniform_ranges(stats, 4, "channel", "mse")
    assert [len(h) for h in hi] == [q.in_channels for q in layers]
    params = minmax_params(model, 4, stats)
    assert params.config["model"] == "rdn"
    x = torch.from_numpy(rng.uniform(0, 255, (1, 3, 8, 8)).astype(np.float32))
    with torch.no_grad():
        fp = model(x)
        for q in (quantize_uniform(model, params, lo, hi), quantize_dfsq_uniform(model, 4)):
            y = q(x)
            assert y.shape == fp.shape and torch.isfinite(y).all() and not torch.equal(y, fp)


def test_mse_clip_never_worse_than_minmax_on_its_sample():
    from dfsq.uniform import _fake_quant, _mse_scale

    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(0, 1, (4000, 3)), [[40.0, -30.0, 5.0]]])   # one outlier per channel
    lo, hi = x.min(0), x.max(0)
    a = _mse_scale(x, lo, hi, 4)
    err = lambda l, h: ((_fake_quant(x, l, h, 4) - x) ** 2).mean(0)  # noqa: E731
    assert np.all(err(a * lo, a * hi) <= err(lo, hi) + 1e-12)
    assert a[0] < 0.5                                                          # the outlier is clipped


# --- pictures ------------------------------------------------------------------------------------------------------
class _Nearest(nn.Module):
    scale = 2

    def forward(self, x):
        return nn.functional.interpolate(x, scale_factor=2, mode="nearest")


def test_comparison_png_has_five_labelled_panels(tmp_path):
    from dfsq.compare import PANELS, comparison_png, panel_size
    from dfsq.data import make_lr, modcrop, sample_image

    hr = modcrop(sample_image()[:96, :96], 2)
    lr = make_lr(hr, 2)
    net = _Nearest()
    psnrs = comparison_png(hr, lr, 2, {"FP": net, "DFSQ fake-quant": net, "DFSQ hardware-exact": net},
                           (8, 8, 16, 20), tmp_path / "c.png", margin=4, zoom=2)
    assert list(psnrs) == list(PANELS) and all(np.isfinite(v) for k, v in psnrs.items() if k != "HR")
    with Image.open(tmp_path / "c.png") as im:
        assert im.size == panel_size((32, 40), 2) == (5 * 80 + 4 * 4, 64 + 34)
    with pytest.raises(UserError):
        comparison_png(hr, lr, 2, {"FP": net}, (40, 40, 16, 16), tmp_path / "d.png")


def test_demo_comparison_png(tmp_path, x2_model, one_thread):
    """The picture ``make demo`` writes: the embedded DFSQ calibration, the real model, fake-quant and the
    hardware-exact datapath, on a small crop of the demo image."""
    import demo
    from dfsq.calibrate import load_params
    from dfsq.compare import panel_size
    from dfsq.data import make_lr, modcrop, sample_image
    from dfsq.quantize import quantize_model

    if not demo.DEFAULT_PARAMS.is_file():
        pytest.skip(f"{demo.DEFAULT_PARAMS} is absent")
    params = load_params(demo.DEFAULT_PARAMS)
    from dfsq.calibrate import weights_fingerprint

    if params.config["weights_fingerprint"] != weights_fingerprint(x2_model):
        pytest.skip("the embedded params belong to the default weights, not DFSQ_TEST_WEIGHTS")
    hr = modcrop(sample_image()[160:288, 160:288], 2)
    lr = make_lr(hr, 2)
    qmodel = quantize_model(x2_model, params, "dfsq")
    path = demo.write_comparison(x2_model, qmodel, hr, lr, (24, 24, 12, 14), tmp_path / "cmp" / "comparison.png")
    with Image.open(path) as im:
        assert im.size == panel_size((24, 28), 3)
        arr = np.asarray(im)
    w = 28 * 3
    panels = [arr[34:, i * (w + 4):i * (w + 4) + w] for i in range(5)]
    assert not np.array_equal(panels[0], panels[1])            # HR vs bicubic differ
    assert np.any(arr[:34] < 128)                              # the label strip holds text


def test_save_images(tmp_path, one_thread):
    from dfsq.data import sample_image
    from dfsq.evaluate import main

    root = tmp_path / "data"
    (root / "Tiny" / "HR").mkdir(parents=True)
    img = sample_image()
    Image.fromarray(img[:40, :44]).save(root / "Tiny" / "HR" / "a.png")
    Image.fromarray(img[100:131, 200:250]).save(root / "Tiny" / "HR" / "b.png")
    out = tmp_path / "sr"
    main(["--method", "bicubic", "--scale", "2", "--datasets", "Tiny", "--data-root", str(root),
          "--save-images", str(out)])
    files = sorted(p.name for p in (out / "Tiny").iterdir())
    assert files == ["a.png", "b.png"]
    with Image.open(out / "Tiny" / "b.png") as im:
        assert im.size == (50, 30)   # modcropped to the scale
    (tmp_path / "file").write_text("x")
    with pytest.raises(SystemExit) as exc:
        main(["--method", "bicubic", "--datasets", "Tiny", "--data-root", str(root), "--save-images",
              str(tmp_path / "file")])
    assert exc.value.code == 2


def test_evaluate_uniform_method(tmp_path, test_weights, one_thread, capsys):
    from dfsq.data import sample_image
    from dfsq.evaluate import main

    img = sample_image()
    calib, root = tmp_path / "calib", tmp_path / "data"
    calib.mkdir()
    (root / "Tiny" / "HR").mkdir(parents=True)
    Image.fromarray(img[:48, :48]).save(calib / "c1.png")
    Image.fromarray(img[200:248, 200:248]).save(calib / "c2.png")
    Image.fromarray(img[100:140, 300:340]).save(root / "Tiny" / "HR" / "t.png")
    main(["--weights", test_weights, "--method", "uniform", "--act-bits", "4", "--weight-bits", "4", "--calib",
          str(calib), "--images", "2", "--datasets", "Tiny", "--data-root", str(root), "--json",
          str(tmp_path / "r.json")])
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["method"] == "uniform" and 10 < r["results"]["Tiny"]["psnr"] < 60
    with pytest.raises(SystemExit):
        main(["--weights", test_weights, "--method", "uniform", "--act-bits", "4", "--weight-bits", "3",
              "--calib", str(calib), "--images", "2", "--datasets", "Tiny", "--data-root", str(root)])
    assert "act-bits equal" in capsys.readouterr().err


def test_dfsq_uniform_hw_matches_its_fake_quant(tiny_edsr, one_thread):
    """``dfsq-uniform-hw`` (the normalized uniform engine's integer datapath, golden model) tracks ``dfsq-uniform``
    fake-quant, and its QuantConvs carry the uniform point integers of golden.spec.UniformPointSet."""
    from dfsq.hw_mode import apply_hw_mode
    from dfsq.quantize import quant_convs
    from dfsq.uniform import quantize_dfsq_uniform
    from golden.spec import UniformPointSet

    x = torch.from_numpy(np.random.default_rng(2).uniform(0, 255, (1, 3, 10, 12)).astype(np.float32))
    fq = quantize_dfsq_uniform(tiny_edsr, 4)
    ps = UniformPointSet(4)
    for qc in quant_convs(fq):
        assert np.array_equal(qc.point_ints[0].numpy(), ps.channel_ints(qc.relu_input))
        assert torch.equal(qc.points, qc.point_ints.float() / ps.denom)
    with torch.no_grad():
        ref = fq(x)
        hw = apply_hw_mode(quantize_dfsq_uniform(tiny_edsr, 4), point_set="uniform", scale_bits=24)
        assert all(qc.hw_spec.uniform_points for qc in quant_convs(hw))
        y = hw(x)
        assert not torch.equal(y, ref) and float((y - ref).abs().max()) < 1e-3     # 24-bit fused: near fake-quant
    # the split datapath (low-bit sigma) per layer: the hardware forward is the golden layer of the uniform spec
    from golden.export_io import layer_from_fields
    from golden.layer import run_layer
    from golden.spec import DatapathSpec

    qc = quant_convs(quantize_dfsq_uniform(tiny_edsr, 3))[0]
    xin = torch.randn(1, qc.in_channels, 6, 7) * 3 + 1
    fields = qc.quant_fields(xin)
    fmt = dict(denorm="split", sigma_bits=6, shift_bits=0)
    apply_hw_mode(nn.Sequential(qc), point_set="uniform", **fmt)
    spec = DatapathSpec(point_set="uniform", act_bits=3, weight_bits=3, **fmt)
    _, _, y_ref = run_layer(layer_from_fields(fields, "qc", spec), spec)
    with torch.no_grad():
        assert np.array_equal(qc(xin).numpy(), y_ref.astype(np.float32))
    with pytest.raises(UserError, match="dfsq-uniform"):
        apply_hw_mode(quantize_dfsq_uniform(tiny_edsr, 4))          # a universal-set datapath for uniform points


def test_shared_collection_gives_the_same_params(tiny_edsr, one_thread):
    from bench.psnr_table import shared_collection
    from dfsq.calibrate import calibrate

    rng = np.random.default_rng(3)
    imgs = [("a", rng.integers(0, 256, (16, 20, 3), dtype=np.uint8)),
            ("b", rng.integers(0, 256, (12, 12, 3), dtype=np.uint8))]
    ref = {(b, w): calibrate(tiny_edsr, imgs, act_bits=b, weight_bits=b, words=w) for b, w in ((4, 4), (3, 2))}
    with shared_collection():
        got = {(b, w): calibrate(tiny_edsr, imgs, act_bits=b, weight_bits=b, words=w) for b, w in ((4, 4), (3, 2))}
    for k in ref:
        for a in ref[k].arrays:
            assert np.array_equal(ref[k].arrays[a], got[k].arrays[a]), (k, a)


def test_sensitivity_bench(tmp_path, tiny_edsr, one_thread):
    """bench.sensitivity: its 'full' row is the quantized network as dfsq.evaluate runs it, the per-layer rows
    quantize one layer's activations each, and the outputs are written; bad input is one line."""
    from bench.sensitivity import main
    from dfsq.calibrate import calibrate, load_params, save_params
    from dfsq.data import save_rgb
    from dfsq.evaluate import evaluate_dataset
    from dfsq.quantize import quantize_model

    rng = np.random.default_rng(0)
    imgs = [("a", rng.integers(0, 256, (20, 24, 3), dtype=np.uint8))]
    params = save_params(calibrate(tiny_edsr, imgs, act_bits=3, weight_bits=3, words=4, bins=256), tmp_path / "p.npz")
    weights = tmp_path / "w.pt"
    torch.save(tiny_edsr.state_dict(), weights)
    root = tmp_path / "bench"
    (root / "Set5" / "HR").mkdir(parents=True)
    save_rgb(rng.integers(0, 256, (24, 28, 3), dtype=np.uint8), root / "Set5" / "HR" / "x.png")
    out = tmp_path / "s"
    common = ["--model", "edsr", "--weights", str(weights), "--scale", "2", "--bits", "3", "--params", str(params),
              "--data-root", str(root), "--out", str(out)]
    with pytest.raises(SystemExit) as exc:
        main(common[:-2] + ["--bits", "4", "--out", str(out)])     # params are W3A3
    assert exc.value.code == 2 and not list(tmp_path.glob("s.*"))
    main(common)
    res = json.loads((tmp_path / "s.json").read_text())
    direct = evaluate_dataset(quantize_model(tiny_edsr, load_params(params), "dfsq"), "Set5", 2, root,
                              progress=False)["psnr"]
    assert res["rows"]["full"]["Set5"] == direct
    assert len(res["layers"]) == 32 and res["rows"]["fp"]["Set5"] != res["rows"]["acts_only"]["Set5"]
    assert (tmp_path / "s.md").is_file() and (tmp_path / "s.png").stat().st_size > 1000


def test_fill_section_and_check():
    from bench.results_md import render

    c = _cache(rdn=True)
    res = c["results"]
    res[key(2, "dfsq", 8, 4, "Set5", "rdn")] = _r(37.46)
    res[key(2, "dfsq-fill", 8, 4, "Set5", "rdn")] = _r(37.49)
    res[key(2, "dfsq", 6, 4, "Set5", "rdn")] = _r(37.40)
    md = render(c, 4, (2,), ["Set5"], [8, 6, 4, 3], paper=PAPER)
    assert "| RDN x2 | Set5 | 37.500 | 37.460 (-0.040) | 37.490 (-0.010) | 37.400 (-0.100) | … |" in md
    assert ("RDN x2 Set5 8-bit DFSQ within 0.02 dB of FP: NO (-0.040 dB); with `--fill`: yes (-0.010 dB)"
            in md)
    assert "Filling repeated points" not in render(_cache(rdn=True), 4, (2,), ["Set5"], [8, 6, 4, 3], paper=PAPER)


def test_render_reconstructions_beside_the_paper():
    """Our BRECQ and QDROP (cpu budget) get columns beside the paper's, an ordering table that says where ours and
    the paper's agree, checks, the DFSQ + AdaRound rows and the reconstruction cost."""
    from bench.results_md import render

    cache = _cache()
    res = cache["results"]
    res[key(2, "brecq", 4, 4, "Set5")] = dict(_r(37.00), budget="cpu", params="x.npz",
                                              reconstruction={"seconds": 600, "cpu_seconds": 540, "torch_threads": 1})
    res[key(2, "qdrop", 4, 4, "Set5")] = dict(_r(37.20), budget="cpu")
    res[key(2, "dfsq-adaround", 4, 4, "Set5")] = dict(_r(37.20), budget="cpu")
    md = render(cache, 4, (2,), ["Set5"], [8, 6, 4, 3], paper=PAPER)
    assert "| Set5 | BRECQ (cpu budget) | 4 | 37.000 / 0.9500 | -0.260 | 37.610 / 0.9560 | -0.390 | +0.130 |" in md
    assert "| Set5 | BRECQ | 8 |" not in md          # no paper cell, not measured: no row
    # ours: QDROP -0.06 > DFSQ -0.12 > BRECQ -0.26; paper: DFSQ -0.10 > BRECQ -0.39 > QDROP -0.58
    assert ("| Set5 | 4 | -0.120 | -0.260 | -0.060 | QDROP > DFSQ > BRECQ | -0.100 | -0.390 | -0.580 | "
            "DFSQ > BRECQ > QDROP | ours no, paper yes |") in md
    assert "ours and the paper's agree in 0 of 1 cells" in md
    assert "- x2 Set5 4-bit: DFSQ beats QDROP (cpu budget): NO (37.140 vs 37.200 dB)" in md
    assert "- x2 Set5 4-bit: DFSQ beats BRECQ (cpu budget): yes (37.140 vs 37.000 dB)" in md
    assert "| EDSR-baseline x2 | Set5 | 4 | 37.260 / 0.9500 | 37.140 / 0.9500 | 37.200 / 0.9500 | +0.060 | 50% |" in md
    assert "| x2/brecq/W4A4/words4 | cpu | 10.0 | 9.0 | 1 |  |" in md
