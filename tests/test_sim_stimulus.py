"""sim.stimulus: tile selection, bit packing, and that the packed beats mean what contract 4 says.

No simulator here: the packed port values are unpacked again and fed to the scalar golden reference
(golden.datapath.mac_reference), which must reproduce the expected accumulators computed in batch.
"""
from __future__ import annotations

import numpy as np
import pytest

from golden.datapath import mac_reference
from golden.layer import accumulate, operands
from golden.spec import TAPS, DatapathSpec
from golden.synthetic import synthetic_layer
from sim import stimulus as st


def test_pack_fields_roundtrip_twos_complement():
    rng = np.random.default_rng(1)
    for width in (1, 4, 5, 9, 16, 40):
        lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
        v = rng.integers(lo, hi + 1, size=(3, 2, 37))
        packed = st.pack_fields(v, width)
        ints = st.unpack_ints(packed)
        assert len(ints) == 6
        for row, value in zip(v.reshape(6, 37), ints):
            got = [(value >> (e * width)) & ((1 << width) - 1) for e in range(37)]
            assert got == [int(x) & ((1 << width) - 1) for x in row]
            assert value < (1 << (37 * width))
    with pytest.raises(ValueError):
        st.pack_fields([[16]], 4)
    with pytest.raises(ValueError):
        st.pack_fields([[-9]], 4)


def test_twos_complement_helpers():
    v = np.array([-5, 0, 7, -(1 << 39)])
    assert np.array_equal(st.from_unsigned(st.to_unsigned(v, 40), 40), v)
    assert st.to_unsigned([-1], 9)[0] == 511


def test_select_pixels_corners_cover_every_mask_pattern():
    pix = st.select_pixels(2, 6, 7, tiles=4, tile_size=2)
    assert len(pix) == 16 and len(np.unique(pix, axis=0)) == 16
    assert set(pix[:, 0]) == {0, 1}
    _, mask = st.gather_taps(np.zeros((2, 1, 6, 7), np.uint8), pix)
    # corners (4), edges (4) and the interior are all present: 9 distinct mask patterns
    assert len({tuple(m) for m in mask.astype(int)}) == 9
    allp = st.select_pixels(2, 3, 4, tiles="all")
    assert len(allp) == 24
    with pytest.raises(Exception):
        st.select_pixels(1, 4, 4, tiles=0)


def test_gather_taps_raster_order_and_padding():
    codes = np.arange(1 * 2 * 4 * 5, dtype=np.uint8).reshape(1, 2, 4, 5)
    idx, mask = st.gather_taps(codes, np.array([[0, 0, 0], [0, 2, 3]]))
    # tap t = 3*(dy+1) + (dx+1)
    assert mask[0].tolist() == [0, 0, 0, 0, 1, 1, 0, 1, 1]
    assert idx[0, 1].tolist() == [0, 0, 0, 0, codes[0, 1, 0, 0], codes[0, 1, 0, 1], 0, codes[0, 1, 1, 0],
                                  codes[0, 1, 1, 1]]
    assert idx[1, 0].tolist() == [codes[0, 0, 2 + dy, 3 + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    assert mask[1].all()
    assert st.mask_bits(mask)[0] == sum(1 << t for t in (4, 5, 7, 8))


def _field(value: int, e: int, width: int) -> int:
    u = (value >> (e * width)) & ((1 << width) - 1)
    return u - (1 << width) if u >> (width - 1) else u


@pytest.mark.parametrize("words,act_bits,lanes", [(4, 4, 8), (3, 5, 2), (4, 4, 4)])
def test_engine_beats_reproduce_golden(words, act_bits, lanes):
    """Unpack every port of every beat and recompute the accumulator with the scalar reference."""
    spec = DatapathSpec(words=words, act_bits=act_bits, channels=8)
    rng = np.random.default_rng(words * 10 + act_bits)
    layer = synthetic_layer(rng, spec, N=2, C=6, O=3, H=4, W=5, relu_input=False)
    ops = operands(layer, spec)
    acc = accumulate(ops, spec)
    pixels = st.select_pixels(2, 4, 5, tiles=3, tile_size=2)
    d = st.engine_layer_stimulus(layer, ops, acc, spec, lanes, pixels)
    G = -(-6 // lanes)                                            # the layer's beats: ceil(C / lanes), C = 6
    assert int(d["groups"]) == G
    table = np.zeros((spec.channels, spec.points), np.int64)
    table[d["table_chan"], d["table_idx"]] = d["table_code"]
    assert (d["table_idx"] == 0).sum() == G * lanes               # index 0 of every channel the beats read
    pix_idx = np.array(st.unpack_ints(d["pix_idx"]), dtype=object).reshape(len(pixels), G)
    weight = np.array(st.unpack_ints(d["weight"]), dtype=object).reshape(3, G)
    sigma = np.array(st.unpack_ints(d["sigma"]), dtype=object).reshape(2, G)
    mu = np.array(st.unpack_ints(d["mu"]), dtype=object).reshape(2, G)
    assert len(d["expected"]) == len(pixels) * 3
    for k in range(len(d["expected"])):
        p, o = int(d["out_pix"][k]), int(d["out_o"][k])
        n = int(pixels[p, 0])
        mask = [(int(d["pix_mask"][p]) >> t) & 1 for t in range(TAPS)]
        W, I, S, M = [], [], [], []
        for g in range(G):
            for lane in range(lanes):
                W.append([_field(weight[o, g], lane * TAPS + t, spec.w_bits) for t in range(TAPS)])
                I.append([_field(pix_idx[p, g], lane * TAPS + t, spec.act_bits) & ((1 << spec.act_bits) - 1)
                          for t in range(TAPS)])
                S.append(_field(sigma[n, g], lane, spec.scale_bits))
                M.append(_field(mu[n, g], lane, spec.scale_bits))
        bias = int(st.from_unsigned(d["bias"][n, o], spec.bias_bits))
        ref = mac_reference(W, I, mask, table, S, M, bias, spec.wordset, spec)
        assert ref == int(d["expected"][k]) == int(acc[n, o, pixels[p, 1], pixels[p, 2]])


def test_stimulus_file_roundtrip(tmp_path):
    spec = DatapathSpec(channels=4)
    layer = synthetic_layer(np.random.default_rng(0), spec, C=4, O=2, H=3, W=3)
    ops = operands(layer, spec)
    d = st.engine_layer_stimulus(layer, ops, accumulate(ops, spec), spec, 4, st.select_pixels(1, 3, 3, "all"))
    path = tmp_path / "s.npz"
    st.write_stimulus(path, st.ENGINE_FORMAT, st.engine_meta(spec, 4, 6, [{"index": 0}]), [d])
    s = st.load_stimulus(path, st.ENGINE_FORMAT)
    assert s.meta["groups"] == 1 and s.meta["latency"] == 6
    for key, a in d.items():
        assert np.array_equal(s.layers[0][key], a), key
    with pytest.raises(Exception):
        st.load_stimulus(path, st.MAC_FORMAT)


def test_mac_beats_running_sums():
    spec = DatapathSpec(channels=4)
    layer = synthetic_layer(np.random.default_rng(3), spec, C=4, O=2, H=3, W=4)
    ops = operands(layer, spec)
    outs = np.array([[0, 1, 0, 0], [0, 0, 1, 2]])
    d = st.mac_layer_stimulus(layer, ops, spec, outs)
    assert d["first"].sum() == 2
    assert (d["beat_output"] == 0).sum() == 4 * 4 and (d["beat_output"] == 1).sum() == 4 * 9
    P = spec.wordset.code_to_int(d["code"])
    w = st.from_unsigned(d["weight"], spec.w_bits)
    for m in range(2):
        sel = d["beat_output"] == m
        assert np.array_equal(d["expected"][sel], np.cumsum(w[sel] * P[sel]))
