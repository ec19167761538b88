"""Layers of any geometry (RDN): per-layer widths at the extremes (1024-input 1x1, 512-input 3x3) for every
configuration, the 1x1 and wide-input golden paths against an int64 direct conv, per-layer geometry in exports
(manifests with and without the new fields), and golden.check on RDN-shaped synthetic exports."""
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from golden.check import main as check_main
from golden.errors import UserError
from golden.export_io import load_export, load_manifest, spec_from_manifest, write_export
from golden.layer import Operands, accumulate, layer_spec, operands, run_layer
from golden.spec import DatapathSpec, SpecError, signed_bits
from golden.synthetic import rdn_geometry, synthetic_layer, write_rdn_export

RDN_EXTREMES = ((1024, 1), (576, 1), (512, 3), (64, 3))


def test_default_widths_unchanged():
    """EDSR's default (64 inputs, 3x3) keeps every width of docs/datapath.md."""
    s = DatapathSpec()
    assert (s.channels, s.kernel, s.taps, s.terms) == (64, 3, 9, 576)
    assert (s.product_bits, s.a_bits, s.b_bits, s.term_bits, s.sum_bits, s.bias_bits, s.acc_bits) == \
        (15, 19, 9, 42, 48, 48, 49)
    assert s.acc_max == 148_579_007_184_000
    assert s.for_layer(64, 3) is s


def test_rdn_extreme_widths():
    """The figures docs/datapath.md quotes for RDN's widest layers (default configuration)."""
    got = {(c, k): DatapathSpec().for_layer(c, k) for c, k in RDN_EXTREMES}
    assert (got[1024, 1].a_bits, got[1024, 1].b_bits, got[1024, 1].term_bits, got[1024, 1].acc_bits) == (15, 5, 38, 49)
    assert (got[512, 3].a_bits, got[512, 3].term_bits, got[512, 3].acc_bits) == (19, 42, 52)
    assert got[576, 1].acc_bits == 49 and got[576, 1].acc_max == DatapathSpec().acc_max
    assert DatapathSpec(channels=1024).acc_bits == 53    # the engine's accumulator (any layer up to 1024 inputs)
    for c, k in RDN_EXTREMES:
        assert DatapathSpec(channels=1024).covers(c, k)
    assert not DatapathSpec(channels=1024, kernel=1).covers(64, 3)


@pytest.mark.parametrize("words", [2, 3, 4, 5])
@pytest.mark.parametrize("geometry", RDN_EXTREMES)
def test_worst_case_reaches_each_bound_and_fits(words, geometry):
    """Exhaustive over act / weight bits 2..8 and scale_bits 4, 16, 24, 32: the worst case of every stage (all
    operands at their bounds, signs aligned, every tap valid) equals the derived bound and fits its width; a
    configuration that would need more than 63 accumulator bits is refused."""
    C, k = geometry
    for act in range(2, 9):
        for wb in range(2, 9):
            for sb in (4, 16, 24, 32):
                try:
                    s = DatapathSpec(words=words, act_bits=act, weight_bits=wb, scale_bits=sb, channels=C, kernel=k)
                except SpecError:
                    assert signed_bits(2 * C * k * k * ((1 << (sb - 1)) - 1) * ((1 << wb) - 1)
                                       * ((words << (words + 4)) + 1)) > 63
                    continue
                w, p, m = s.w_max, s.wordset.p_max, s.mant_max
                a = sum(w * p for _ in range(k * k))
                b = sum(w for _ in range(k * k))
                term = m * a + m * b
                acc = s.bias_max + C * term
                assert (a, b, term, C * term, acc) == (s.a_max, s.b_max, s.term_max, s.sum_max, s.acc_max)
                for v, bits in ((a, s.a_bits), (b, s.b_bits), (term, s.term_bits), (C * term, s.sum_bits),
                                (acc, s.acc_bits)):
                    assert -(1 << (bits - 1)) <= -v and v <= (1 << (bits - 1)) - 1
                    assert v >= 1 << (bits - 3)  # no bit wasted beyond the sign
                assert s.acc_bits <= 63


finite = st.floats(min_value=1e-6, max_value=1e4, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(geometry=st.sampled_from(RDN_EXTREMES), sb=st.sampled_from([4, 16, 24]),
       scale=st.lists(finite, min_size=1, max_size=8), mean=st.floats(-1e4, 1e4),
       bias=st.floats(-1e3, 1e3, width=32), ws=st.floats(2.0 ** -20, 1.0, width=32))
def test_exponent_limits_per_layer(geometry, sb, scale, mean, bias, ws):
    """E of a layer's own spec keeps sigma_m, mu_m within mant_max and bias_int within that layer's bias_max."""
    s = DatapathSpec(scale_bits=sb).for_layer(*geometry)
    bias_a, ws_a = np.array([bias]), np.array([ws])
    cap = s.bias_exponent_limit(bias_a, ws_a)
    sig, mu, e = s.fixed_point(np.array(scale, np.float32), np.full(len(scale), mean, np.float32), cap)
    assert np.abs(sig).max() <= s.mant_max and np.abs(mu).max() <= s.mant_max
    assert np.abs(s.bias_int(bias_a, ws_a, e)).max() <= s.bias_max


def direct_int64(ops) -> np.ndarray:
    """acc = bias_int + sum over c and taps of w' Z (Z = sigma_m P + mu_m, 0 on the padding), exact int64, any k."""
    N, C, H, W = ops.P.shape
    k = ops.w.shape[-1]
    r = k // 2
    Z = ops.P * ops.sigma_m[:, :, None, None] + ops.mu_m[:, :, None, None]
    Zp = np.zeros((N, C, H + 2 * r, W + 2 * r), np.int64)
    Zp[:, :, r:H + r, r:W + r] = Z
    acc = np.broadcast_to(ops.bias_int[:, :, None, None], (N, ops.w.shape[0], H, W)).copy()
    for dy in range(k):
        for dx in range(k):
            acc += np.einsum("oc,nchw->nohw", ops.w[:, :, dy, dx], Zp[:, :, dy:dy + H, dx:dx + W])
    return acc


def random_operands(spec, rng, N, C, O, H, W, extreme):
    ws, mm, k = spec.wordset, spec.mant_max, spec.kernel
    pick = (lambda vals, shape: rng.choice(vals, shape)) if extreme else None
    if extreme:
        P = pick([-ws.p_max, ws.p_max, 0, 1], (N, C, H, W))
        w = pick([-spec.w_max, spec.w_max, 0], (O, C, k, k))
        sig, mu = (pick([-mm, mm, 0], (N, C)) for _ in range(2))
        bias = pick([-spec.bias_max, spec.bias_max], (N, O))
    else:
        P = rng.integers(-ws.p_max, ws.p_max + 1, (N, C, H, W))
        w = rng.integers(-spec.w_max, spec.w_max + 1, (O, C, k, k))
        sig, mu = (rng.integers(-mm, mm + 1, (N, C)) for _ in range(2))
        bias = rng.integers(-spec.bias_max, spec.bias_max + 1, (N, O))
    i64 = lambda a: np.asarray(a, np.int64)  # noqa: E731
    return Operands(w=i64(w), P=i64(P), sigma_m=i64(sig), mu_m=i64(mu), E=np.zeros(N, np.int64), bias_int=i64(bias),
                    codes=np.zeros((N, C, H, W), np.uint8), point_codes=np.zeros((C, spec.points), np.uint16))


@pytest.mark.parametrize("extreme", [False, True])
@pytest.mark.parametrize("shape", [(1, 1024, 5, 3, 4, 1), (2, 576, 3, 2, 3, 1), (1, 9, 4, 1, 1, 1),
                                   (1, 512, 4, 5, 3, 3), (1, 128, 3, 3, 4, 3), (2, 1024, 2, 2, 2, 3)])
def test_wide_and_1x1_equal_int64_direct_conv(shape, extreme, monkeypatch):
    """1x1 and wide-input layers: the golden accumulator (1x1 GEMM, im2col for 3x3 inputs beyond the Winograd
    bound, and the int64 digits path) equals an int64 direct conv; with every operand at its bound and the signs
    aligned it reaches the layer's acc_max exactly (1x1: every pixel; 3x3: interior pixels)."""
    N, C, O, H, W, k = shape
    spec = DatapathSpec(channels=1024).for_layer(C, k)
    rng = np.random.default_rng(C + k + extreme)
    ops = random_operands(spec, rng, N, C, O, H, W, extreme)
    ref = direct_int64(ops)
    assert np.array_equal(accumulate(ops, spec), ref)
    assert np.array_equal(accumulate(ops, DatapathSpec(channels=1024)), ref)  # the export's (widest) spec
    monkeypatch.setattr(DatapathSpec, "float64_exact", property(lambda self: False))
    assert np.array_equal(accumulate(ops, spec), ref)
    monkeypatch.undo()
    if extreme:
        ops.P[:] = spec.wordset.p_max
        ops.w[:] = spec.w_max
        ops.sigma_m[:] = ops.mu_m[:] = spec.mant_max
        ops.bias_int[:] = spec.bias_max
        acc = accumulate(ops, spec)
        assert np.array_equal(acc, direct_int64(ops))
        if k == 1 or min(H, W) >= 3:
            assert acc.max() == spec.acc_max and spec.acc_max < 1 << (spec.acc_bits - 1)


def test_geometry_is_checked():
    spec = DatapathSpec(channels=64, kernel=1)
    lay = synthetic_layer(np.random.default_rng(0), DatapathSpec(), C=4, O=2, H=3, W=3, kernel=3)
    with pytest.raises(UserError, match="kernel"):
        operands(lay, spec)
    ops = operands(lay, DatapathSpec())
    with pytest.raises(SpecError, match="taps"):
        accumulate(ops, spec)
    with pytest.raises(SpecError):
        layer_spec(DatapathSpec(), 65, 3)


@pytest.mark.parametrize("kernel,C", [(1, 1024), (1, 576), (3, 512), (1, 3)])
def test_synthetic_any_geometry_within_bound(kernel, C):
    spec = DatapathSpec(channels=1024)
    lay = synthetic_layer(np.random.default_rng(C), spec, N=2, C=C, O=6, H=5, W=4, kernel=kernel)
    assert lay.kernel == kernel and lay.weight_q.shape == (6, C, kernel, kernel)
    ops, acc, y = run_layer(lay, spec)
    assert np.array_equal(acc, direct_int64(ops))
    from golden.check import check_layer
    r = check_layer(lay, spec)
    assert r["passed"] and r["kernel"] == kernel and r["acc_bits"] == spec.for_layer(C, kernel).acc_bits


def test_rdn_geometry():
    g = rdn_geometry()
    assert len(g) == 146
    assert sum(1 for _, _, k, _ in g if k == 1) == 17
    assert {c for _, c, k, _ in g if k == 3} == {64, 128, 192, 256, 320, 384, 448, 512}
    assert {c for _, c, k, _ in g if k == 1} == {576, 1024}
    assert g[8] == ("RDBs.0.LFF", 576, 1, 64) and g[-2] == ("GFF.0", 1024, 1, 64) and g[-1] == ("GFF.1", 64, 3, 64)


SMALL_RDN = [("RDBs.0.convs.0.conv.0", 64, 3, 64), ("RDBs.0.convs.7.conv.0", 512, 3, 64), ("RDBs.0.LFF", 576, 1, 64),
             ("GFF.0", 1024, 1, 64), ("GFF.1", 64, 3, 64)]


def test_rdn_shaped_export_checks(tmp_path, capsys):
    """An RDN-shaped export (widest layers of each kind) carries per-layer geometry in its manifest, its spec entry
    is the widest layer's, and golden.check passes it."""
    d = write_rdn_export(tmp_path / "rdn", H=5, W=6, geometry=SMALL_RDN)
    m = load_manifest(d)
    assert m["config"]["model"] == "rdn" and m["spec"]["channels"] == 1024 and m["spec"]["kernel"] == 3
    assert [(e["in_channels"], e["kernel"], e["out_channels"]) for e in m["layers"]] == \
        [(c, k, o) for _, c, k, o in SMALL_RDN]
    assert check_main(["--export", str(d), "--quiet", "--json", str(tmp_path / "r.json")]) == 0
    rep = json.loads((tmp_path / "r.json").read_text())
    assert [r["acc_bits"] for r in rep["layers"]] == [49, 52, 49, 49, 49]
    assert "5/5 layers pass" in capsys.readouterr().out


def test_old_manifest_without_geometry_fields(tmp_path):
    """A manifest without kernel / in_channels (older EDSR exports): k from weight_q, C from input_shape; the spec
    entry of a narrower export is widened to its layers; a manifest field that disagrees is refused."""
    spec = DatapathSpec()
    lays = [synthetic_layer(np.random.default_rng(1), spec, C=8, O=4, H=3, W=3, index=0),
            synthetic_layer(np.random.default_rng(2), spec, C=96, O=4, H=3, W=3, index=1, kernel=1, name="fuse")]
    d = write_export(tmp_path / "e", lays, spec)
    mpath = d / "manifest.json"
    m = json.loads(mpath.read_text())
    for e in m["layers"]:
        for key in ("kernel", "in_channels", "out_channels"):
            del e[key]
    m["spec"] = DatapathSpec().widths()
    del m["spec"]["kernel"]
    mpath.write_text(json.dumps(m))
    assert spec_from_manifest(m) == DatapathSpec(channels=96)
    _, loaded = load_export(d)
    assert [lay.kernel for lay in loaded] == [3, 1]
    m["layers"][1]["kernel"] = 3
    mpath.write_text(json.dumps(m))
    with pytest.raises(UserError, match="kernel"):
        load_export(d)


def test_1x1_per_pixel_shift_add_reference():
    """golden.datapath's per-pixel shift-add reference (every intermediate checked against the 1x1 layer's own
    widths) agrees with the vectorized 1x1 path, at random and at extreme operands."""
    from golden.datapath import pixel_reference
    spec = DatapathSpec(channels=1024).for_layer(37, 1)
    rng = np.random.default_rng(3)
    for extreme in (False, True):
        ops = random_operands(spec, rng, 1, 37, 3, 2, 3, extreme)
        ws = spec.wordset
        ops.point_codes = np.asarray(ws.int_to_code(rng.choice(ws.ints, (37, spec.points))), np.uint16)
        if extreme:
            ops.point_codes[:] = ws.int_to_code(np.full(spec.points, ws.p_max))
            ops.w[:] = spec.w_max
            ops.sigma_m[:] = ops.mu_m[:] = spec.mant_max
            ops.bias_int[:] = spec.bias_max
        ops.codes = rng.integers(0, spec.points, ops.codes.shape).astype(np.uint8)
        ops.P = ws.code_to_int(ops.point_codes)[np.arange(37)[None, :, None, None], ops.codes]
        acc = accumulate(ops, spec)
        for o in range(3):
            for h in range(2):
                for w in range(3):
                    assert pixel_reference(ops, ws, 0, o, h, w, spec) == acc[0, o, h, w]
        if extreme:
            assert acc.max() == spec.acc_max
