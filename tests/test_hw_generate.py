"""hw.generate: Verilog that Icarus compiles, reproducible bytes, the JSON sidecar, clear errors."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from golden.spec import DatapathSpec
from hw.generate import TIMESCALE, generate, main, stem

IVERILOG = shutil.which("iverilog")
needs_iverilog = pytest.mark.skipif(IVERILOG is None, reason="iverilog (Icarus Verilog 11, apt) is not installed")


def _iverilog(path, tmp_path):
    out = subprocess.run([IVERILOG, "-g2012", "-o", str(tmp_path / "a.vvp"), str(path)], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "error" not in out.stderr.lower(), out.stderr[-2000:]


@needs_iverilog
@pytest.mark.parametrize("act_bits", range(3, 9))
@pytest.mark.parametrize("words", range(2, 6))
def test_engine_verilog_compiles(words, act_bits, tmp_path):
    """Every word count 2..5 x activation bits 3..8 (small channels/lanes keep it fast)."""
    spec = DatapathSpec(words=words, act_bits=act_bits, channels=2)
    v_path, j_path = generate("engine", spec, lanes=1, out_dir=tmp_path)
    assert v_path.name == f"dfsq_engine_w{words}_a{act_bits}_b4_s{spec.scale_bits}_c2_l1.v"
    assert v_path.read_text().splitlines()[0] == TIMESCALE
    assert "module dfsq_engine(" in v_path.read_text()
    meta = json.loads(j_path.read_text())
    assert meta["config"]["act_bits"] == act_bits and meta["spec"] == spec.widths()
    _iverilog(v_path, tmp_path)


@needs_iverilog
@pytest.mark.parametrize("words", range(2, 6))
def test_mac_verilog_compiles(words, tmp_path):
    v_path, _ = generate("mac", DatapathSpec(words=words), out_dir=tmp_path)
    assert "module dfsq_mac(" in v_path.read_text()
    _iverilog(v_path, tmp_path)


@needs_iverilog
def test_default_cli_writes_rtl_out(tmp_path, capsys):
    """``python -m hw.generate --words 4`` with the contract's defaults (64 channels, 16 lanes) into rtl_out/."""
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert main(["--words", "4"]) == 0
    finally:
        os.chdir(cwd)
    name = f"dfsq_engine_w4_a4_b4_s{DatapathSpec().scale_bits}_c64_l16"
    assert capsys.readouterr().out.split() == [f"rtl_out/{name}.v", f"rtl_out/{name}.json"]
    v_path = tmp_path / "rtl_out" / f"{name}.v"
    _iverilog(v_path, tmp_path)
    meta = json.loads((tmp_path / "rtl_out" / f"{name}.json").read_text())
    ports = {p["name"]: p for p in meta["ports"]}
    assert meta["module"] == "dfsq_engine" and meta["latency"] == 6
    assert ports["in_idx"]["width"] == 16 * 9 * 4 and ports["in_weight"]["element_signed"] is True
    assert ports["out_acc"]["width"] == DatapathSpec().acc_bits and ports["out_acc"]["signed"] is True
    assert ports["in_ready"]["direction"] == "out" and ports["tbl_chan"]["width"] == 6


def test_same_arguments_same_bytes(tmp_path):
    """Two processes with different hash seeds write identical files."""
    outs = []
    for seed in ("1", "2"):
        out = tmp_path / seed
        env = dict(os.environ, PYTHONHASHSEED=seed)
        subprocess.run([sys.executable, "-m", "hw.generate", "--top", "mac", "--words", "3", "--out", str(out)],
                       check=True, env=env, capture_output=True)
        subprocess.run([sys.executable, "-m", "hw.generate", "--channels", "4", "--lanes", "2", "--fault", "shift",
                        "--out", str(out)], check=True, env=env, capture_output=True)
        outs.append({p.name: p.read_bytes() for p in sorted(out.iterdir())})
    assert outs[0] == outs[1]
    s = DatapathSpec().scale_bits
    assert set(outs[0]) == {f"dfsq_mac_w3_a4_b4_s{s}_c64.v", f"dfsq_mac_w3_a4_b4_s{s}_c64.json",
                            f"dfsq_engine_w4_a4_b4_s{s}_c4_l2_fault-shift.v",
                            f"dfsq_engine_w4_a4_b4_s{s}_c4_l2_fault-shift.json"}


def test_fault_and_variant_stems():
    spec = DatapathSpec(scale_bits=16)
    assert stem("engine", spec, 16) == "dfsq_engine_w4_a4_b4_s16_c64_l16"
    assert stem("engine", spec, 16, fault="shift") == "dfsq_engine_w4_a4_b4_s16_c64_l16_fault-shift"
    assert stem("mac", spec, variant="fold") == "dfsq_mac_w4_a4_b4_s16_c64_v-fold"
    assert stem("mac", spec, variant="registered") == stem("mac", spec)  # the MAC's default
    assert stem("engine", DatapathSpec(gap=3, channels=8), 2) == \
        f"dfsq_engine_w4_a4_b4_s{DatapathSpec().scale_bits}_c8_g3_l2"


@pytest.mark.parametrize("argv,message", [
    (["--lanes", "3"], "lanes (3) must divide channels (64)"),
    (["--words", "7"], "--words: must be an integer in 2..5"),
    (["--act-bits", "9"], "--act-bits: must be an integer in 2..8"),
    (["--channels", "4096", "--scale-bits", "32", "--weight-bits", "8"], "accumulator needs"),
    (["--gap", "0"], "--gap: must be an integer in 1..8"),
    (["--lanes", "0", "--channels", "4"], "--lanes: must be an integer in 1..4096"),
    (["--variant", "registered"], "unknown multiplier variant 'registered' for --top engine"),
    (["--top", "uniform-engine", "--words", "4"], "--words applies only with --top engine or mac or mean-unit"),
    (["--top", "uniform-engine", "--scale-bits", "8", "--variant", "naive"], "--variant applies only with --top engine or mac"),
    (["--top", "uniform-engine", "--act-bits", "9"], "--act-bits: must be an integer in 2..8"),
    (["--top", "uniform-engine", "--lanes", "5"], "lanes (5) must divide channels (64)"),
    (["--top", "uniform-engine", "--fault", "shift"], "unknown fault 'shift' for --top uniform-engine"),
    (["--top", "engine", "--fault", "mask"], "unknown fault 'mask'"),
    (["--top", "mac", "--lanes", "2"], "--lanes applies only with --top engine or uniform-engine"),
])
def test_invalid_combinations_fail_cleanly(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv + ["--out", str(tmp_path / "out")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_unknown_fault_is_rejected_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--fault", "bogus"])
    assert exc.value.code == 2


@needs_iverilog
@pytest.mark.parametrize("bits,channels,lanes", [((6, 6), 64, 16), ((2, 8), 4, 1), ((8, 3), 8, 2)])
def test_uniform_engine_cli_writes_verilog_and_sidecar(bits, channels, lanes, tmp_path, capsys):
    """``--top uniform-engine``: stem, Verilog Icarus compiles, sidecar widths from golden.uniform_spec."""
    from golden.uniform_spec import UniformSpec

    ab, wb = bits
    assert main(["--top", "uniform-engine", "--act-bits", str(ab), "--weight-bits", str(wb), "--channels",
                 str(channels), "--lanes", str(lanes), "--out", str(tmp_path)]) == 0
    name = f"uniform_engine_a{ab}_b{wb}_c{channels}_l{lanes}"
    assert capsys.readouterr().out.split() == [str(tmp_path / f"{name}.v"), str(tmp_path / f"{name}.json")]
    v_path = tmp_path / f"{name}.v"
    assert v_path.read_text().splitlines()[0] == TIMESCALE and "module uniform_engine(" in v_path.read_text()
    _iverilog(v_path, tmp_path)
    meta = json.loads((tmp_path / f"{name}.json").read_text())
    spec = UniformSpec(act_bits=ab, weight_bits=wb, channels=channels)
    assert meta["spec"] == spec.widths() and meta["latency"] == 6 and meta["config"]["groups"] == channels // lanes
    ports = {p["name"]: p for p in meta["ports"]}
    assert ports["in_act"]["width"] == lanes * 9 * (ab + 1) and ports["in_act"]["element_signed"] is True
    assert ports["in_weight"]["element_width"] == wb + 1
    assert ports["out_acc"]["width"] == spec.acc_bits and "tbl_we" not in ports and "in_sigma" not in ports


def test_uniform_engine_defaults_and_stem():
    from golden.uniform_spec import UniformSpec

    assert stem("uniform-engine", UniformSpec(), 16) == "uniform_engine_a6_b6_c64_l16"
    assert stem("uniform-engine", UniformSpec(act_bits=4, channels=8), 2, fault="mask") == \
        "uniform_engine_a4_b6_c8_l2_fault-mask"


def test_generate_mean_unit(tmp_path):
    """--top mean-unit writes the split de-normalization's mean unit (a split spec is required)."""
    from hw.generate import main

    assert main(["--top", "mean-unit", "--denorm", "split", "--sigma-bits", "8", "--shift-bits", "0",
                 "--out", str(tmp_path)]) == 0
    (v,) = tmp_path.glob("dfsq_mean_unit_*.v")
    meta = json.loads(v.with_suffix(".json").read_text())
    assert meta["module"] == "dfsq_mean_unit" and meta["latency"] == 10 and meta["config"]["denorm"] == "split"
    assert "module dfsq_mean_unit" in v.read_text()
    with pytest.raises(SystemExit):
        main(["--top", "mean-unit", "--out", str(tmp_path)])       # fused: no mean unit
    with pytest.raises(SystemExit):
        main(["--top", "mean-unit", "--denorm", "split", "--lanes", "4", "--out", str(tmp_path)])


def test_generate_engine_codes_in(tmp_path):
    assert main(["--lanes", "2", "--channels", "4", "--denorm", "split", "--codes-in", "--out", str(tmp_path)]) == 0
    (v,) = tmp_path.glob("dfsq_engine_*_codes-in.v")
    meta = json.loads(v.with_suffix(".json").read_text())
    assert meta["config"]["tables"] is False and "in_code" in str(meta["ports"]) and "tbl_we" not in str(meta["ports"])
    with pytest.raises(SystemExit):
        main(["--top", "mac", "--codes-in", "--out", str(tmp_path)])


@needs_iverilog
def test_generate_normalized_uniform_engine(tmp_path, capsys):
    """``--top uniform-engine --normalized``: the DFSQ engine's ports and pipeline with the uniform point set and
    integer multipliers (no shift-add multiplier in the Verilog), Icarus compiles it, sidecar from the spec."""
    from golden.spec import DatapathSpec

    assert main(["--top", "uniform-engine", "--normalized", "--act-bits", "5", "--weight-bits", "5", "--channels",
                 "8", "--lanes", "2", "--denorm", "split", "--codes-in", "--out", str(tmp_path)]) == 0
    name = "uniform_engine_normalized_a5_b5_s24_c8_split-m6s0_l2_codes-in"
    assert capsys.readouterr().out.split() == [str(tmp_path / f"{name}.v"), str(tmp_path / f"{name}.json")]
    text = (tmp_path / f"{name}.v").read_text()
    assert "module uniform_engine(" in text and "shift_add" not in text and "mul0_0" not in text
    _iverilog(tmp_path / f"{name}.v", tmp_path)
    meta = json.loads((tmp_path / f"{name}.json").read_text())
    spec = DatapathSpec(point_set="uniform", act_bits=5, weight_bits=5, channels=8, denorm="split")
    assert meta["spec"] == spec.widths() and meta["config"]["point_set"] == "uniform" and meta["latency"] == 6
    ports = {p["name"]: p for p in meta["ports"]}
    assert ports["in_code"]["element_width"] == 6 and ports["in_code"]["width"] == 2 * 9 * 6
    assert "in_start" in ports and "in_mu" not in ports and "tbl_we" not in ports
    assert stem("uniform-engine", DatapathSpec(point_set="uniform"), 16) == \
        "uniform_engine_normalized_a4_b4_s24_c64_l16"
