"""sim.verify_int: the contract-2 units' generated RTL under Icarus against the golden integer network of real
exports, bit for bit, and a mutation of each unit caught on the same data.

Routine: one post-ReLU layer of the default export, one corner tile, each unit. Behind ``-m slow``: a mutation of
each unit caught (with a waveform), and every layer of a 48x48 EDSR x2 export and of an RDN-S x2 export (the
embedded weights and params), two tiles each (whole maps for the threshold unit), each unit.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sim.verify_int import format_report, main, tile_origins, verify_int

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
needs_icarus = pytest.mark.skipif(shutil.which("iverilog") is None or shutil.which("vvp") is None,
                                  reason="Icarus Verilog is not installed (sudo apt-get install iverilog)")
UNITS = {"stats-unit": "dropped_min", "threshold-unit": "off_by_one", "quantizer": "stale_prefix",
         "post-unit": "truncate"}


def test_tile_origins():
    assert tile_origins(1, 16, 16, "all", 8, 0) == [(0, 0, 0, 16, 16)]
    assert tile_origins(2, 16, 12, 5, 8, 0)[:4] == [(0, 0, 0, 8, 8), (1, 8, 4, 8, 8), (0, 0, 4, 8, 8), (1, 8, 0, 8, 8)]
    assert tile_origins(1, 4, 4, 1, 8, 0, rotate=1) == [(0, 0, 0, 4, 4)]


@needs_icarus
@pytest.mark.parametrize("top", sorted(UNITS))
def test_unit_bit_exact(top, default_export, sim_work):
    r = verify_int(default_export, top, layers=[3], tiles=1, tile_size=4, work_dir=sim_work, quiet=True)
    assert r["bit_exact"] and r["mismatches"] == 0 and r["compared"] == r["outputs"] > 0, format_report(r)
    assert [row["index"] for row in r["layers"]] == [3]


@pytest.mark.slow
@needs_icarus
@pytest.mark.parametrize("top", sorted(UNITS))
def test_unit_fault_caught(top, default_export, sim_work):
    """A mutation of each unit (the Amaranth-simulator tests catch every fault in seconds:
    tests/test_hw_int_units.py) is caught under Icarus on real data, named, and recorded in a waveform."""
    bad = verify_int(default_export, top, layers=[2, 3], tiles=1, tile_size=4, fault=UNITS[top], work_dir=sim_work,
                     quiet=True)
    assert not bad["bit_exact"] and bad["mismatches"] > 0
    fm = bad["first_mismatch"]
    assert fm["layer"] in (2, 3) and fm["expected"] != fm["actual"] and "sample" in fm
    assert fm["waveform"] and Path(fm["waveform"]).is_file()
    assert "FIRST MISMATCH" in format_report(bad)


def test_bad_input_is_one_line(tmp_path, capsys):
    (tmp_path / "e").mkdir()
    with pytest.raises(SystemExit) as exc:
        main(["--export", str(tmp_path / "e"), "--top", "quantizer"])
    assert exc.value.code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as exc:
        main(["--export", str(tmp_path / "e"), "--top", "quantizer", "--fault", "truncate"])
    assert exc.value.code == 2 and "belongs to another unit" in capsys.readouterr().err


def test_export_without_integer_fields_is_refused(default_export, tmp_path, capsys):
    import json

    bad = tmp_path / "old"
    shutil.copytree(default_export, bad)
    m = json.loads((bad / "manifest.json").read_text())
    del m["integer"]
    (bad / "manifest.json").write_text(json.dumps(m))
    (bad / "body_input.npz").unlink()
    with pytest.raises(SystemExit) as exc:
        main(["--export", str(bad), "--top", "stats-unit", "--work-dir", str(tmp_path / "w")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "no integer network" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "w").exists() or not any((tmp_path / "w").iterdir())


# --- whole exports (slow) -----------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def big_exports(tmp_path_factory):
    """48x48 crops of the sample image through the embedded EDSR x2 and RDN-S x2 (their embedded params)."""
    from dfsq.calibrate import load_params
    from dfsq.data import sample_image
    from dfsq.export import apply_crop, export
    from dfsq.model import load_model
    from dfsq.weights import default_weights

    root = default_weights(2).parent
    out = {}
    for arch, params in (("edsr", "dfsq_x2_a4w4_words4.npz"), ("rdn", "dfsq_rdn_s_x2_a4w4_words4.npz")):
        if not (root / params).is_file():
            pytest.skip(f"{root / params} is missing")
        d = tmp_path_factory.mktemp(f"export_{arch}") / "export"
        export(load_model(arch, "default", 2), load_params(root / params), apply_crop(sample_image(), (96, 96, 48, 48)),
               d, weights="default", params_path=str(root / params), image="sample", crop=(96, 96, 48, 48))
        out[arch] = d
    return out


@pytest.mark.slow
@needs_icarus
@pytest.mark.parametrize("arch", ["edsr", "rdn"])
@pytest.mark.parametrize("top", sorted(UNITS))
def test_every_layer_of_real_exports(arch, top, big_exports, sim_work):
    r = verify_int(big_exports[arch], top, layers="all", tiles=2, tile_size=8, work_dir=sim_work, quiet=True,
                   jobs=2)
    assert r["bit_exact"], format_report(r)
    assert len({row["index"] for row in r["layers"]}) == (32 if arch == "edsr" else 42)
    print(f"\n{arch} {top}: {r['outputs']} outputs, {r['cycles']} cycles, {r['sim_seconds']:.0f} s")
