"""sim.uniform: the generated uniform baseline engine under cocotb/Icarus against golden.uniform_layer, bit for bit.

Random layers (the uniform engine has no export format yet), masked taps carrying random activations; a 3x3 and a
1x1 layer, a layer narrower than the engine, and both deliberate faults caught by the same path.
"""
from __future__ import annotations

import shutil

import pytest

from sim.uniform import main, verify_uniform

needs_icarus = pytest.mark.skipif(shutil.which("iverilog") is None or shutil.which("vvp") is None,
                                  reason="Icarus Verilog is not installed (sudo apt-get install iverilog)")


@needs_icarus
@pytest.mark.parametrize("bits,channels,lanes,layers", [
    ((6, 6), 16, 4, ((3, 16), (1, 16), (3, 7))),   # W6A6, G = 4; 1x1 on the centre tap; a narrower layer
    ((8, 2), 8, 8, ((3, 8),)),                      # G = 1, the extremes of the widths
])
def test_icarus_uniform_engine_bit_exact(bits, channels, lanes, layers, tmp_path):
    r = verify_uniform(act_bits=bits[0], weight_bits=bits[1], channels=channels, lanes=lanes, layers=layers,
                       size=(4, 5), samples=2, out_channels=2, seed=1, work=tmp_path)
    assert r["passed"] and r["mismatches"] == 0 and "first_mismatch" not in r, r
    assert r["received"] == r["outputs"] == sum(2 * 2 * 4 * 5 for _ in layers)


@needs_icarus
@pytest.mark.parametrize("fault", ["mask", "unsigned"])
def test_icarus_uniform_fault_is_caught(fault, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        import sys
        sys.exit(main(["--channels", "8", "--lanes", "4", "--layers", "3x3:8", "--size", "4x4", "--fault", fault,
                       "--work", str(tmp_path)]))
    assert exc.value.code == 1
    out = capsys.readouterr().out
    assert '"passed": false' in out and '"first_mismatch"' in out and '"output_channel"' in out


@pytest.mark.parametrize("argv,message", [
    (["--layers", "3x3:17"], "does not run on an engine of 16"),
    (["--layers", "3x3"], "is not KxK:C"),
    (["--lanes", "5"], "lanes (5) must divide channels (16)"),
    (["--act-bits", "1"], "--act-bits: must be an integer in 2..8"),
    (["--size", "0x3"], "H and W must be in 1..1024"),
])
def test_bad_arguments_are_one_line(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv + ["--work", str(tmp_path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
