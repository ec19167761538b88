"""hw.throughput: the cycle model against the engine's real latency and the cycles sim.verify measures."""
from __future__ import annotations

import shutil

import pytest

from golden.spec import DatapathSpec
from hw.units.engine import ConvEngine
from hw.throughput import ENGINE_LATENCY, body_cycles, layer_cycles, main, stream_cycles, summary
from sim.verify import verify

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
needs_icarus = pytest.mark.skipif(shutil.which("iverilog") is None, reason="Icarus Verilog is not installed")

# cycles sim.verify's testbench adds to a layer's stream besides beats + latency (measured: 1): it presents beats on falling
# edges and counts drain cycles on falling edges after the last result (tb_engine.EngineDriver)
TESTBENCH_OVERHEAD = 1


def test_latency_matches_the_engine():
    assert ConvEngine(spec=DatapathSpec(channels=4), lanes=2).latency == ENGINE_LATENCY
    assert ConvEngine(spec=DatapathSpec(channels=4, denorm="split"), lanes=2).latency == ENGINE_LATENCY


def test_layer_model():
    r = layer_cycles("x", 360, 640, 64, 64, 3, 16, split=True)
    assert r.groups == 4 and r.beats == 360 * 640 * 64 * 4 and r.table == 64 * 16
    assert r.stream == r.beats + ENGINE_LATENCY and r.mean_unit == 64 * (9 * 64 + 16) and r.total == r.table + r.stream
    one = layer_cycles("1x1", 8, 8, 576, 64, 1, 64)
    assert one.groups == 9 and one.macs == 64 * 64 * 576
    s = summary([r], 16, 100.0)
    assert s["utilization"] == pytest.approx(r.macs / (r.total * 144)) and s["fps"] == pytest.approx(1e8 / r.total)


def test_cli(capsys, tmp_path):
    assert main(["--model", "edsr", "--height", "36", "--width", "64", "--json", str(tmp_path / "t.json")]) == 0
    out = capsys.readouterr().out
    assert "32 quantized layers" in out and (tmp_path / "t.json").is_file()
    with pytest.raises(SystemExit):
        main(["--lanes", "0"])


@needs_icarus
@pytest.mark.parametrize("lanes,denorm", [(16, "fused"), (32, "split")])
def test_model_matches_simulated_cycles(default_export, sim_work, lanes, denorm):
    """The stream cycles of each simulated layer = outputs x G + latency (+ the testbench's fixed overhead). The
    engines are those of tests/test_sim_verify.py (16 lanes fused; 32 lanes split with 8-bit sigma), reused."""
    split = {"sigma_bits": 8, "shift_bits": 0} if denorm == "split" else {}
    r = verify(default_export, layers=[0, 5], tiles=1, out_channels=4, lanes=lanes, simulator="icarus",
               work_dir=sim_work, quiet=True, denorm=denorm, **split)
    assert r["bit_exact"]
    for row in r["layers"]:
        G = -(-64 // lanes)
        measured = row["cycles"] - row["table_cycles"]
        assert measured == stream_cycles(row["outputs"], G) + TESTBENCH_OVERHEAD, row
