"""The normalized uniform baseline's datapath (golden.spec.UniformPointSet, ``DatapathSpec(point_set="uniform")``):
DFSQ's normalization and de-normalization with 2^b evenly spaced points per channel and one integer multiply per
product. The golden model, the per-pixel reference and the export checks run unchanged on it."""
import numpy as np
import pytest

from golden import mean_unit as mu
from golden.check import main as check_main
from golden.datapath import pixel_reference, pixel_reference_split, product
from golden.export_io import load_manifest, spec_from_manifest, write_export
from golden.layer import accumulate, error_bound, layer_spec, operands, run_layer
from golden.spec import DatapathSpec, SpecError, UniformPointSet
from golden.synthetic import synthetic_layer

UNI = dict(point_set="uniform")


@pytest.mark.parametrize("bits", [2, 3, 4, 6, 8])
def test_point_set(bits):
    u = UniformPointSet(bits)
    D = (1 << bits) - 1
    assert u.denom == u.p_max == D and u.code_bits == bits + 1 and len(u) == 2 * D + 1
    codes = u.int_to_code(u.ints)
    assert np.array_equal(u.code_to_int(codes), u.ints) and len(set(codes.tolist())) == len(u)
    assert codes.max() < (1 << u.code_bits)
    for relu in (False, True):                    # the 2^b points of dfsq-uniform: evenly spaced, in the set
        p = u.channel_ints(relu)
        assert len(p) == 1 << bits and np.all(np.diff(p) == (1 if relu else 2))
        assert p[-1] == D and p[0] == (0 if relu else -D)
    v = np.array([-2.0, -1.0, 0.49 / D, 0.5 / D, 0.51 / D, 1.0, 3.0])
    assert u.snap(v).tolist() == [-D, -D, 0, 0, 1, D, D]
    with pytest.raises(SpecError):
        u.int_to_code([D + 1])
    with pytest.raises(SpecError):
        u.code_to_int([1 << u.code_bits])
    for w in (-5, 0, 7):
        for p in (-D, -1, 0, D):
            assert product(w, int(u.int_to_code(p)), u) == w * p


def test_spec():
    s = DatapathSpec(**UNI, act_bits=6, weight_bits=6, denorm="split")
    assert s.uniform_points and isinstance(s.wordset, UniformPointSet) and s.wordset.bits == 6
    assert s.code_bits == 7 and s.product_max == 63 * 63   # |w'| <= 2^wb - 1, |P| <= 2^b - 1
    w = s.widths()
    assert w["point_set"] == "uniform" and "words" not in w and "K" not in w
    assert "point_set" not in DatapathSpec().widths()        # universal-set manifests are unchanged
    with pytest.raises(SpecError):
        DatapathSpec(point_set="log")


@pytest.mark.parametrize("fmt", [dict(denorm="split", sigma_bits=6), dict(denorm="fused")], ids=["split", "fused"])
@pytest.mark.parametrize("kernel,relu", [(3, False), (3, True), (1, False)])
def test_accumulate_matches_the_pixel_reference(fmt, kernel, relu):
    spec = DatapathSpec(**UNI, act_bits=4, weight_bits=4, **fmt)
    rng = np.random.default_rng(kernel + 10 * relu)
    lay = synthetic_layer(rng, spec, N=2, C=8, O=3, H=4, W=5, kernel=kernel, relu_input=relu)
    assert np.array_equal(np.unique(lay.point_ints), spec.wordset.channel_ints(relu))
    ops = operands(lay, spec)
    lspec = layer_spec(spec, 8, kernel)
    acc = accumulate(ops, lspec)
    ref = pixel_reference_split if spec.split else pixel_reference
    for o in range(3):
        for h in range(4):
            for x in range(5):
                assert ref(ops, spec.wordset, 1, o, h, x, lspec) == acc[1, o, h, x]
    if spec.split:
        assert np.array_equal(acc, mu.start_map(mu.starts(ops, lspec), 4, 5) + mu.lane_sum(ops))
    _, _, y_hw = run_layer(lay, spec)
    assert np.all(np.abs(y_hw - lay.y) <= error_bound(lay, ops, spec, y_hw)["total"])


def test_export_round_trip_and_check(tmp_path, capsys):
    spec = DatapathSpec(**UNI, act_bits=3, weight_bits=3, denorm="split", sigma_bits=6)
    rng = np.random.default_rng(0)
    layers = [synthetic_layer(rng, spec, C=8, O=4, H=5, W=5, index=i, relu_input=bool(i % 2)) for i in range(2)]
    out = write_export(tmp_path / "exp", layers, spec)
    assert spec_from_manifest(load_manifest(out)).point_set == "uniform"
    assert check_main(["--export", str(out), "--denorm", "split", "--sigma-bits", "6"]) == 0
    assert "PASS" in capsys.readouterr().out.upper()
