"""Block reconstruction (dfsq.reconstruct): BRECQ, QDROP and DFSQ + AdaRound on tiny networks; the reconstruction
file (dfsq.recon_file) and its bad forms; resume; the CLIs around it."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import dfsq.reconstruct as R
from dfsq.adapters import get_module, model_blocks
from dfsq.model import EDSR, build_model
from dfsq.rdn import CONFIGS, RDNConfig
from dfsq.recon_file import load_recon, quantize_static, save_recon
from golden.errors import UserError
from tests.test_adapters import _cli

TINY_RDN = RDNConfig(2, 2, 8, 16)
TINY = R.Budget("cpu", patches=16, patch=12, batch=4, iters=40, act_iters=10)
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny tensors: one torch thread."""


@pytest.fixture
def tiny_budget(monkeypatch):
    """The 'cpu' budget shrunk to seconds (what the CLI and the file validation read)."""
    monkeypatch.setitem(R.BUDGETS, "cpu", TINY)
    return TINY


def tiny_edsr() -> EDSR:
    """2 residual blocks of 8 features; the head scaled down so that the blocks' errors are small against AdaRound's
    rounding loss, as in the real EDSR (block error 10 against a rounding loss of up to 737), not the reverse."""
    torch.manual_seed(0)
    m = EDSR(2, n_resblocks=2, n_feats=8).eval()
    with torch.no_grad():
        m.head[0].weight.mul_(0.04)
        m.head[0].bias.mul_(0.04)
    return m


def tiny_rdn(scale=2, config=TINY_RDN):
    torch.manual_seed(0)
    return build_model("rdn", scale, config).eval()


def images(n=2, size=24, seed=0):
    rng = np.random.default_rng(seed)
    return [(f"img{i}", rng.integers(0, 255, (size, size, 3), dtype=np.uint8)) for i in range(n)]


def block_data(model, name, patches):
    x = R.capture_input(model, name, patches, 16, CPU, {})
    return x, R.run_chunks(get_module(model, name), x, 16)


# --- the adapters' blocks -----------------------------------------------------------------------------------------
def test_blocks_cover_every_quantized_conv():
    assert [b.name for b in model_blocks(EDSR(2))] == [f"body.{i}" for i in range(16)]
    blocks = model_blocks(build_model("rdn", 2, CONFIGS["B"]))
    assert len(blocks) == 17 and blocks[-1].layers == ("GFF.0", "GFF.1")
    assert blocks[0].layers[-1] == "RDBs.0.LFF" and len(blocks[0].layers) == 9


# --- one block -----------------------------------------------------------------------------------------------------
def test_adaround_block_loss_falls_and_rounding_hardens():
    """BRECQ's weight pass on one block: every h ends at 0 or 1 (the rounding loss wins), and the block's error
    with the learned hard rounding is below its error with nearest rounding; then its activation pass lowers the
    error of the quantized activations."""
    m = tiny_edsr()
    patches = R.calibration_patches(images(), 8, 12, 0)
    x, y = block_data(m, "body.0", patches)
    r = R.build_recon_model(m, "brecq", 3, 3)
    blk = get_module(r, "body.0")
    convs = [blk.body[0], blk.body[2]]
    R.set_modes(convs, "hard", False)
    with torch.no_grad():
        nearest = float(R.lp_loss(blk(x), y, 2))
    budget = R.Budget("cpu", 8, 12, 4, iters=250, act_iters=60)
    st = R.reconstruct_block(blk, convs, R.PHASES["brecq"][0], x, y, None, budget, 1, CPU)
    assert st["hard_fraction"] == [1.0, 1.0]
    for c in convs:
        assert c.weight.frozen and not c.weight.alpha.requires_grad
        h = c.weight.soft_h()
        assert torch.equal(c.weight.weight_q, c.weight.hard_q())
        assert torch.equal((h >= 0.5).to(torch.int32), (c.weight.alpha >= 0).to(torch.int32))
    with torch.no_grad():
        learned = float(R.lp_loss(blk(x), y, 2))
    assert learned < 0.8 * nearest, (learned, nearest)
    # pass 2: the activation steps
    st2 = R.reconstruct_block(blk, convs, R.PHASES["brecq"][1], x, y, None, budget, 2, CPU)
    assert all(c.act.inited and c.act_on for c in convs)
    assert st2["loss_last"] < st2["loss_first"]


def test_hard_state_is_the_evaluated_network():
    """A reconstructed network in its hard state computes, bit for bit, what quantize_static builds from its file."""
    m = tiny_rdn()
    r = R.build_recon_model(m, "qdrop", 4, 4)
    g = torch.Generator().manual_seed(0)
    for c in R.recon_convs(r):
        with torch.no_grad():
            c.weight.alpha.copy_(torch.randn(c.weight.alpha.shape, generator=g))
        c.weight.freeze()
        c.act.set(float(torch.rand(1, generator=g)) + 0.5, 0 if c.act.relu_input else 5)
    R.set_modes(R.recon_convs(r), "hard", True)
    res = R.static_result(m, r, {"act_bits": 4, "weight_bits": 4}, {})
    x = torch.from_numpy(images(1, 20)[0][1]).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        assert torch.equal(r(x), quantize_static(m, res, check=False)(x))


# --- whole reconstructions, the file -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_results():
    """brecq and qdrop reconstructions of the tiny RDN (3 blocks) with the TINY budget, on one thread (as the tests
    that compare with them: float sums follow the thread count)."""
    m = tiny_rdn()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {meth: R.reconstruct(m, meth, act_bits=4, weight_bits=4, budget=TINY, images=images(), seed=0)
                for meth in R.STATIC_METHODS}
    finally:
        torch.set_num_threads(threads)


def test_file_round_trip(tiny_results, tmp_path):
    m = tiny_rdn()
    for meth, res in tiny_results.items():
        assert res.layers == [q for b in model_blocks(m) for q in b.layers]
        assert res.config["budget"]["name"] == "cpu" and res.config["method"] == meth
        assert len(res.info["stats"][R.PHASES[meth][0].name]) == 3
        path = save_recon(res, tmp_path / f"{meth}.npz")
        back = load_recon(path)
        assert back.config == res.config and back.layers == res.layers
        for k, v in res.arrays.items():
            assert all(np.array_equal(a, b) for a, b in zip(v, back.arrays[k])), k
        assert json.loads(path.with_suffix(".json").read_text())["config"]["method"] == meth
        x = torch.from_numpy(images(1, 20)[0][1]).permute(2, 0, 1)[None].float()
        with torch.no_grad():
            assert torch.equal(quantize_static(m, res)(x), quantize_static(m, back)(x))


def _rewrite(src, dst, **changes):
    """Copy a reconstruction file with some arrays (or, with ``meta=f``, its meta) changed."""
    with np.load(src, allow_pickle=False) as z:
        d = {k: z[k] for k in z.files}
    meta = json.loads(str(d["meta"]))
    if "meta" in changes:
        changes.pop("meta")(meta)
    d["meta"] = np.array(json.dumps(meta))
    d.update(changes)
    with open(dst, "wb") as f:
        np.savez(f, **d)
    return dst


def test_bad_files(tiny_results, tmp_path):
    good = save_recon(tiny_results["brecq"], tmp_path / "good.npz")
    raw = good.read_bytes()
    (tmp_path / "trunc.npz").write_bytes(raw[:len(raw) // 2])
    with np.load(good) as z:
        step, zero, wq = z["act_step"], z["act_zero"], z["weight_q"]
    cases = {
        "trunc.npz": "cannot read",
        "nan.npz": _rewrite(good, tmp_path / "nan.npz", act_step=np.where(np.arange(len(step)) == 1, np.nan, step)
                            .astype(np.float32)),
        "neg.npz": _rewrite(good, tmp_path / "neg.npz", act_step=-step),
        "zero.npz": _rewrite(good, tmp_path / "zero.npz", act_zero=zero + 16),
        "wq.npz": _rewrite(good, tmp_path / "wq.npz", weight_q=np.full_like(wq, 16)),
        "short.npz": _rewrite(good, tmp_path / "short.npz", act_step=step[:2]),
        "budget.npz": _rewrite(good, tmp_path / "budget.npz", meta=lambda m: m["config"].update(budget={"name": "x"})),
        "format.npz": _rewrite(good, tmp_path / "format.npz", meta=lambda m: m.update(format="dfsq-params")),
        "method.npz": _rewrite(good, tmp_path / "method.npz", meta=lambda m: m["config"].update(method="dfsq")),
    }
    expect = {"nan.npz": "NaN", "neg.npz": "act_step must be > 0", "zero.npz": "act_zero outside",
              "wq.npz": "weight_q outside", "short.npz": "act_step", "budget.npz": "budget",
              "format.npz": "not a reconstruction file", "method.npz": "method", "trunc.npz": "cannot read"}
    for name in cases:
        with pytest.raises(UserError) as exc:
            load_recon(tmp_path / name)
        msg = str(exc.value)
        assert "\n" not in msg and expect[name] in msg, (name, msg)
    with pytest.raises(UserError, match="not found"):
        load_recon(tmp_path / "absent.npz")


def test_qdrop_drop_only_while_reconstructing(monkeypatch):
    """QDROP's drop: inside a block under reconstruction the same input gives different outputs (drawn drops on
    the block input and its quantizers); afterwards every drop is off and the network is deterministic."""
    m = tiny_rdn()
    seen = []
    real = R.lp_loss

    def spy(pred, tgt, p):
        drops = [c.act.drop for c in R.recon_convs(rmodel)]
        seen.append(max(drops))
        return real(pred, tgt, p)

    rmodel = None
    build = R.build_recon_model

    def keep(*a, **k):
        nonlocal rmodel
        rmodel = build(*a, **k)
        return rmodel

    monkeypatch.setattr(R, "build_recon_model", keep)
    monkeypatch.setattr(R, "lp_loss", spy)
    res = R.reconstruct(m, "qdrop", act_bits=4, weight_bits=4, budget=TINY, images=images(), seed=0)
    assert seen and min(seen) == 0.5
    convs = R.recon_convs(rmodel)
    assert all(c.act.drop == 0 and c.act_on and c.weight_mode == "hard" for c in convs)
    x = torch.from_numpy(images(1, 20)[0][1]).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        assert torch.equal(rmodel(x), rmodel(x))
        assert torch.equal(rmodel(x), quantize_static(m, res)(x))
    # during reconstruction: with the drop on, two passes differ
    blk = get_module(rmodel, "GFF")
    c = blk[0]
    c.act.drop = 0.5
    c.act.generator = torch.Generator().manual_seed(0)
    c.act.step.requires_grad_(True)
    inp = torch.randn(2, c.in_channels, 6, 6)
    assert not torch.equal(c(inp), c(inp))
    c.act.step.requires_grad_(False)
    c.act.drop = 0.0
    assert torch.equal(c(inp), c(inp))


def test_resume_gives_the_uninterrupted_result(tmp_path, monkeypatch, tiny_results):
    """Interrupted after two blocks, a rerun with the same arguments resumes from the checkpoints (loaded with
    weights_only=True) and gives the uninterrupted result exactly; checkpoints of another run are refused."""
    m = tiny_rdn()
    ck = tmp_path / "ck"
    real = R.reconstruct_block
    calls = []

    def interrupt(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(R, "reconstruct_block", interrupt)
    with pytest.raises(KeyboardInterrupt):
        R.reconstruct(m, "brecq", act_bits=4, weight_bits=4, budget=TINY, images=images(), seed=0, checkpoints=ck)
    assert sorted(p.name for p in ck.iterdir()) == ["phase0_block000.pt", "phase0_block001.pt", "run.json"]
    calls.clear()
    monkeypatch.setattr(R, "reconstruct_block", lambda *a, **k: calls.append(1) or real(*a, **k))
    res = R.reconstruct(m, "brecq", act_bits=4, weight_bits=4, budget=TINY, images=images(), seed=0, checkpoints=ck)
    assert len(calls) == 4   # phase 0: block 2; phase 1: blocks 0, 1, 2
    for k, v in tiny_results["brecq"].arrays.items():
        assert all(np.array_equal(a, b) for a, b in zip(v, res.arrays[k])), k
    with pytest.raises(UserError, match="another reconstruction.*seed"):
        R.reconstruct(m, "brecq", act_bits=4, weight_bits=4, budget=TINY, images=images(), seed=1, checkpoints=ck)
    (ck / "phase0_block000.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="phase0_block000.pt: unreadable checkpoint.*--restart"):
        R.reconstruct(m, "brecq", act_bits=4, weight_bits=4, budget=TINY, images=images(), seed=0, checkpoints=ck)
    res2 = R.reconstruct(m, "brecq", act_bits=4, weight_bits=4, budget=TINY, images=images(), seed=0,
                         checkpoints=ck, restart=True)
    assert all(np.array_equal(a, b) for a, b in zip(res.arrays["weight_q"], res2.arrays["weight_q"]))


def test_paper_budget_is_wired(monkeypatch):
    """--budget paper: 1,024 patches of 48 x 48, batches of 32, 20,000 iterations per block (only the first few
    iterations run here)."""
    m = tiny_rdn()
    shapes = []
    real = R.lp_loss

    def stop(pred, tgt, p):
        shapes.append(tuple(pred.shape))
        if len(shapes) == 3:
            raise KeyboardInterrupt
        return real(pred, tgt, p)

    monkeypatch.setattr(R, "lp_loss", stop)
    seen = {}
    cap = R.capture_input
    monkeypatch.setattr(R, "capture_input", lambda *a, **k: seen.setdefault("x", cap(*a, **k)))
    with pytest.raises(KeyboardInterrupt):
        R.reconstruct(m, "qdrop", act_bits=4, weight_bits=4, budget="paper", images=images(2, 64), seed=0)
    assert seen["x"].shape == (1024, 16, 48, 48)
    assert shapes == [(32, 16, 48, 48)] * 3
    assert R.lr_factor(R.BUDGETS["paper"], R.PHASES["qdrop"][0]) == 1.0


# --- CLIs ------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rdn_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("recon_cli")
    torch.save(tiny_rdn().state_dict(), root / "rdn.pt")
    torch.save(tiny_rdn(4).state_dict(), root / "rdn_x4.pt")
    (root / "calib").mkdir()
    (root / "data" / "Tiny" / "HR").mkdir(parents=True)
    for name, img in images(2, 40):
        Image.fromarray(img).save(root / "calib" / f"{name}.png")
    Image.fromarray(images(1, 24, seed=3)[0][1]).save(root / "data" / "Tiny" / "HR" / "a.png")
    return root


def test_cli_reconstruct_evaluate_export_check(rdn_files, tmp_path, capsys, tiny_budget):
    from dfsq import evaluate, export
    from dfsq import reconstruct as rc
    from golden import check

    w = str(rdn_files / "rdn.pt")
    common = ["--model", "rdn", "--weights", w, "--calib", str(rdn_files / "calib"), "--images", "2"]
    out = tmp_path / "q.npz"
    code, io = _cli(rc.main, ["--method", "qdrop", *common, "--out", str(out)], capsys)
    assert code == 0, io.err
    assert "qdrop rdn x2 W4A4, budget cpu: 3 blocks" in io.out
    assert out.is_file() and out.with_suffix(".json").is_file() and not R.checkpoint_dir(out).exists()
    data = ["--data-root", str(rdn_files / "data"), "--datasets", "Tiny"]
    code, io = _cli(evaluate.main, ["--model", "rdn", "--weights", w, "--method", "qdrop", "--params", str(out),
                                    *data, "--json", str(tmp_path / "e.json")], capsys)
    assert code == 0, io.err
    assert 0 < json.loads((tmp_path / "e.json").read_text())["results"]["Tiny"]["psnr"] < 100
    bad = [(["--method", "brecq"], "holds a qdrop reconstruction"), (["--act-bits", "3"], "act_bits=4"),
           (["--weight-bits", "5"], "weight_bits=4"),
           (["--scale", "4", "--weights", str(rdn_files / "rdn_x4.pt")], "scale 2"),
           (["--model", "edsr", "--weights", "default"], "rdn")]
    for extra, msg in bad:
        argv = ["--model", "rdn", "--weights", w, "--method", "qdrop", "--params", str(out), *data]
        for key, val in zip(extra[::2], extra[1::2]):
            if key in argv:
                argv[argv.index(key) + 1] = val
            else:
                argv += [key, val]
        code, io = _cli(evaluate.main, argv, capsys)
        assert code == 2 and io.err.count("\n") == 1 and msg in io.err, (extra, io.err)
    code, io = _cli(evaluate.main, ["--model", "rdn", "--weights", w, "--method", "brecq", *data], capsys)
    assert code == 2 and "needs --params" in io.err
    exp = tmp_path / "exp"
    code, io = _cli(export.main, ["--model", "rdn", "--weights", w, "--method", "qdrop", "--params", str(out),
                                  "--image", str(rdn_files / "calib" / "img0.png"), "--crop", "0,0,8,8",
                                  "--out", str(exp)], capsys)
    assert code == 0, io.err
    code, io = _cli(check.main, ["--export", str(exp), "--quiet"], capsys)
    assert code == 0, io.out + io.err
    assert "8/8 layers pass" in io.out


def test_cli_bad_input(rdn_files, tmp_path, capsys, tiny_budget):
    from dfsq import reconstruct as rc

    w = str(rdn_files / "rdn.pt")
    base = ["--method", "brecq", "--model", "rdn", "--weights", w, "--calib", str(rdn_files / "calib"),
            "--images", "2", "--out", str(tmp_path / "r.npz")]
    code, io = _cli(rc.main, [*base, "--budget", "week"], capsys)
    assert code == 2 and "--budget" in io.err
    if not torch.cuda.is_available():
        code, io = _cli(rc.main, [*base, "--device", "cuda"], capsys)
        assert code == 2 and io.err.count("\n") == 1 and "cuda" in io.err, io.err
    code, io = _cli(rc.main, [*base[:-1], str(tmp_path)], capsys)
    assert code == 2 and io.err.count("\n") == 1 and "folder" in io.err
    code, io = _cli(rc.main, [*base, "--params", str(tmp_path / "p.npz")], capsys)
    assert code == 2 and io.err.count("\n") == 1 and "--method dfsq-adaround" in io.err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_cli_dfsq_adaround(rdn_files, tmp_path, capsys, tiny_budget):
    """DFSQ + AdaRound: a DFSQ params file with the same points and other weight integers, evaluated as DFSQ."""
    from dfsq import calibrate, evaluate
    from dfsq import reconstruct as rc
    from dfsq.calibrate import load_params

    w = str(rdn_files / "rdn.pt")
    common = ["--model", "rdn", "--weights", w, "--calib", str(rdn_files / "calib"), "--images", "2"]
    p = tmp_path / "p.npz"
    code, io = _cli(calibrate.main, [*common, "--bins", "256", "--out", str(p)], capsys)
    assert code == 0, io.err
    out = tmp_path / "a.npz"
    code, io = _cli(rc.main, ["--method", "dfsq-adaround", *common, "--params", str(p), "--out", str(out)], capsys)
    assert code == 0, io.err
    a, b = load_params(p), load_params(out)
    assert b.config["reconstruction"]["method"] == "dfsq-adaround"
    assert all(np.array_equal(x, y) for x, y in zip(a.arrays["point_ints"], b.arrays["point_ints"]))
    assert not all(np.array_equal(x, y) for x, y in zip(a.arrays["weight_q"], b.arrays["weight_q"]))
    data = ["--data-root", str(rdn_files / "data"), "--datasets", "Tiny"]
    for meth, params, ok in (("dfsq-adaround", out, True), ("dfsq-hw", out, True), ("dfsq-adaround", p, False)):
        code, io = _cli(evaluate.main, ["--model", "rdn", "--weights", w, "--method", meth, "--params", str(params),
                                        *data], capsys)
        assert (code == 0) == ok, io.err
    assert "without reconstructed weights" in io.err


# --- the static uniform engine ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def static_export(tiny_results, tmp_path_factory):
    """The brecq reconstruction of the tiny RDN exported on a 12 x 12 input (8 layers, static activations)."""
    from dfsq.export import export

    out = tmp_path_factory.mktemp("static") / "exp"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        export(tiny_rdn(), tiny_results["brecq"], images(1, 12)[0][1], out, method="brecq")
    finally:
        torch.set_num_threads(threads)
    return out


def test_static_export_golden_check(static_export, tmp_path):
    """golden.check on the static datapath: every layer's codes re-derived bit for bit, the integer accumulator
    within the bound; a changed code, step or weight is caught."""
    import shutil

    from golden.check import check_static_layer
    from golden.export_io import is_static, load_export, load_manifest, static_spec_from_manifest

    man = load_manifest(static_export)
    assert is_static(man) and man["config"]["method"] == "brecq" and man["spec"]["datapath"] == "static-uniform"
    spec = static_spec_from_manifest(man)
    _, layers = load_export(static_export, spec)
    results = [check_static_layer(lay, spec) for lay in layers]
    assert all(r["passed"] and r["codes_equal"] for r in results)
    assert max(r["worst_err_over_bound"] for r in results) < 1
    bad = tmp_path / "bad"
    shutil.copytree(static_export, bad)
    f = bad / man["layers"][3]["file"]
    with np.load(f) as z:
        d = {k: z[k] for k in z.files}
    d["codes"] = d["codes"].copy()
    d["codes"][0, 0, 0, 0] ^= 1
    np.savez(f, **d)
    r = check_static_layer(load_export(bad, spec, [3])[1][0], spec)
    assert not r["passed"] and r["code_diffs"] == 1
    d["codes"][0, 0, 0, 0] ^= 1
    d["y"] = d["y"] * np.float32(1.001)
    np.savez(f, **d)
    r = check_static_layer(load_export(bad, spec, [3])[1][0], spec)
    assert r["codes_equal"] and not r["within_bound"]
    d["act_zero"] = np.array(99, np.int32)
    np.savez(f, **d)
    with pytest.raises(UserError, match="act_zero 99 outside"):
        load_export(bad, spec, [3])


@pytest.mark.slow
@pytest.mark.skipif(__import__("shutil").which("iverilog") is None, reason="Icarus Verilog (iverilog) not installed")
def test_static_export_on_the_uniform_engine_icarus(static_export, tmp_path):
    """sim.verify runs a static export on the static uniform engine under Icarus: a tile of every layer bit-exact;
    a broken engine (fault 'unsigned') is caught with the layer, sample, channel and pixel and a waveform."""
    from sim.verify import verify

    r = verify(static_export, tiles=1, lanes=8, work_dir=tmp_path / "w", quiet=True)
    assert r["bit_exact"] and r["compared"] == r["outputs"] > 0 and len(r["layers"]) == 8
    assert r["top"] == "uniform_engine"
    bad = verify(static_export, tiles=1, lanes=8, work_dir=tmp_path / "w", quiet=True, fault="unsigned")
    fm = bad["first_mismatch"]
    assert not bad["bit_exact"] and fm["layer"] == 0 and fm["waveform"]
    with pytest.raises(UserError, match="static activations"):
        verify(static_export, tiles=1, lanes=8, work_dir=tmp_path / "w", denorm="split")
