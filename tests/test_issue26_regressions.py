"""Regressions of the bad-input audit of issue 26: each failure it listed, as found (tracebacks, silent wrong
results, leftovers, README tour failures), now a one-line exit 2 or the right result."""
from __future__ import annotations

import importlib
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from golden.errors import UserError

from .fuzz_formats import PARAMS, ROOT, WEIGHTS, sample

needs_weights = pytest.mark.skipif(not (WEIGHTS.is_file() and PARAMS.is_file()),
                                   reason="needs the embedded weights and params")
needs_icarus = pytest.mark.skipif(shutil.which("iverilog") is None, reason="needs Icarus Verilog")


PROGRESS = re.compile(r"\d+%\|")


def run(module: str, argv, capsys, code: int = 2, needle: str = "") -> str:
    main = importlib.import_module(module).main
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:
        rc = exc.code
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip() and not PROGRESS.search(ln)]   # tqdm bars of a run
    assert rc == code, f"{module} {argv}: exit {rc}\n{err}"
    assert "Traceback" not in err
    if code == 2:
        assert len(lines) == 1 and lines[0].startswith("error: "), err
        assert needle in lines[0], lines[0]
    return err


def _tree(p: Path) -> set:
    return {str(q) for q in p.rglob("*")}


# --- sim.verify --top mac ----------------------------------------------------------------------------------------
def test_mac_report_formats_rows_without_channels():
    from sim.verify import format_report

    r = {"top": "dfsq_mac", "simulator": "icarus", "lanes": 1, "fault": None, "rtl": "x.v", "netlist": "generated",
         "layers": [{"index": 0, "name": "body.0", "kernel": 3, "in_channels": None, "groups": None, "outputs": 2,
                     "mismatches": 0, "cycles": None}], "compared": 2, "outputs": 2, "mismatches": 0, "cycles": 10,
         "macs": 1152, "sim_seconds": 1.0, "mac_per_s": 1152.0, "bit_exact": True}
    assert "BIT-EXACT" in format_report(r)


def test_lanes_with_the_mac_is_refused(tmp_path, capsys):
    exp = sample("export", tmp_path)
    run("sim.verify", ["--export", exp, "--top", "mac", "--lanes", "4", "--work-dir", tmp_path / "w"], capsys,
        needle="--lanes applies only with --top")
    assert not (tmp_path / "w").exists()


# --- dfsq.evaluate: bits, params, words out of place ------------------------------------------------------------
@pytest.mark.parametrize("argv", [["--method", "dfsq-uniform-hw", "--act-bits", "9"],
                                  ["--method", "dfsq-uniform-hw", "--act-bits", "1"],
                                  ["--method", "dfsq-uniform", "--act-bits", "0"],
                                  ["--method", "uniform", "--act-bits", "9"]])
def test_evaluate_bits_out_of_range(argv, capsys):
    run("dfsq.evaluate", argv, capsys, needle="--act-bits: must be an integer in 2..8")


@pytest.mark.parametrize("argv,needle", [
    (["--method", "dfsq-uniform-hw", "--params", "MISSING.npz"], "--params"),
    (["--method", "dfsq-uniform-hw", "--words", "9"], "--words: must be an integer in 2..5"),
    (["--method", "dfsq-uniform-hw", "--words", "3"], "--words applies only with --method"),
    (["--method", "fp", "--params", "MISSING"], "--params"),
])
def test_evaluate_flags_without_effect_are_refused(argv, needle, capsys):
    run("dfsq.evaluate", argv, capsys, needle=needle)


@needs_weights
def test_evaluate_refuses_params_where_they_do_nothing(capsys):
    rdn = ROOT / "weights" / "dfsq_rdn_s_x2_a4w4_words4.npz"
    run("dfsq.evaluate", ["--method", "dfsq-uniform-hw", "--params", rdn], capsys,
        needle="--params applies only with --method")


@needs_weights
@pytest.mark.parametrize("change", ["reversed", "zero-width"])
def test_params_with_empty_minmax_ranges_are_refused(change, tmp_path):
    from dfsq.calibrate import load_params

    from .fuzz_formats import _npz

    if change == "reversed":
        path = _npz(PARAMS, tmp_path / "p.npz", act_min=lambda a: a + 1e6)
    else:
        path = _npz(PARAMS, tmp_path / "p.npz", act_min=lambda a: a * 0, act_max=lambda a: a * 0)
    with pytest.raises(UserError, match="act_min must be below act_max"):
        load_params(path)


# --- hw.throughput ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv,needle", [(["--act-bits", "-1"], "--act-bits"), (["--act-bits", "99"], "--act-bits"),
                                         (["--act-bits", "0"], "--act-bits"), (["--lanes", "3"], "--lanes"),
                                         (["--model", "rdn", "--rdn-config", "100,100,100"], "up to 4096")])
def test_throughput_bad_values(argv, needle, capsys):
    run("hw.throughput", argv, capsys, needle=needle)


def test_throughput_default_clock_is_the_measured_fmax(capsys):
    """README's command gives docs/hardware.md's 575 s per frame (the split engine's measured 75.6 MHz)."""
    assert importlib.import_module("hw.throughput").main(["--model", "rdn", "--rdn-config", "B", "--lanes", "16",
                                                          "--denorm", "split"]) == 0
    out = capsys.readouterr().out
    assert "75.6 MHz" in out and "575.010 s per frame" in out


# --- hw.report's synthesis cache -------------------------------------------------------------------------------
def test_truncated_synthesis_cache_entry_is_synthesized_again(tmp_path):
    from hw.synth import _key, Tools, run_flow, validate_entry

    verilog = "module design(input a, output b); assign b = ~a; endmodule\n"
    tools = Tools()
    first = run_flow("generic", verilog, "design", tmp_path, tools)
    entry = tmp_path / f"{_key('generic', verilog, 'design', tools.versions())}.json"
    assert validate_entry(entry, "generic", "design") == first
    entry.write_text(entry.read_text()[:40])
    with pytest.raises(UserError, match=entry.name):
        validate_entry(entry)
    assert run_flow("generic", verilog, "design", tmp_path, tools)["gates"] == first["gates"]
    assert validate_entry(entry, "generic", "design")["gates"] == first["gates"]


# --- bench.psnr_table's cache ------------------------------------------------------------------------------------
@pytest.mark.parametrize("garble", ["a-list", "no-results", "null-entry", "psnr-text", "no-ssim"])
def test_render_only_refuses_a_malformed_cache_and_writes_nothing(garble, tmp_path, capsys):
    from .fuzz_formats import garbles

    valid = sample("psnr-cache", tmp_path / "v")
    bad = garbles("psnr-cache", valid, tmp_path / "bad")[garble]
    out = tmp_path / "o" / "t.md"
    run("bench.psnr_table", ["--render-only", "--cache", bad, "--out", out], capsys)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("argv", [["--scales", "a"], ["--bits", "4.5"], ["--words", "x"]])
def test_psnr_table_list_options(argv, tmp_path, capsys):
    run("bench.psnr_table", argv + ["--cache", tmp_path / "c.json", "--out", tmp_path / "t.md"], capsys)


def test_an_empty_set_is_refused(tmp_path):
    """(--part K/N, whose empty parts cached NaN, is gone: psnr_table's sweeps cut sets into tasks themselves.)"""
    from dfsq.data import benchmark_pairs

    root = sample("benchmarks", tmp_path)
    (root / "Set14" / "HR").mkdir(parents=True)
    with pytest.raises(UserError, match="has no images"):
        list(benchmark_pairs("Set14", 2, root))


# --- outputs that are inputs, empty output paths -----------------------------------------------------------------
@needs_weights
def test_outputs_equal_to_inputs_are_refused(tmp_path, capsys):
    params = shutil.copyfile(PARAMS, tmp_path / "p.npz")
    weights = shutil.copyfile(WEIGHTS, tmp_path / "w.pt")
    exp = sample("export", tmp_path)
    before = {p: p.read_bytes() for p in (params, weights, exp / "manifest.json")}
    run("dfsq.evaluate", ["--method", "dfsq", "--params", params, "--json", params], capsys, needle="is the input")
    run("dfsq.calibrate", ["--weights", weights, "--out", weights], capsys, needle="is the input")
    run("sim.verify", ["--export", exp, "--json", exp / "manifest.json"], capsys, needle="lies inside the input")
    run("bench.psnr_table", ["--render-only", "--cache", tmp_path / "c.json", "--out", tmp_path / "c.json"], capsys,
        needle="collides")
    assert all(p.read_bytes() == b for p, b in before.items())


@pytest.mark.parametrize("module,argv", [("hw.generate", ["--out", ""]), ("hw.report", ["--cache", ""]),
                                         ("bench.fakequant_speed", ["--out", ""])])
def test_empty_output_paths_are_refused(module, argv, capsys):
    before = {p.name for p in ROOT.iterdir()}
    run(module, argv, capsys, needle="the path is empty")
    assert {p.name for p in ROOT.iterdir()} == before


# --- failed runs leave nothing -----------------------------------------------------------------------------------
@needs_weights
def test_save_images_of_a_failed_run_are_removed(tmp_path, capsys, one_thread):
    from dfsq.data import save_rgb

    root = tmp_path / "bench"
    (root / "Set5" / "HR").mkdir(parents=True)
    (root / "Set14" / "HR").mkdir(parents=True)
    save_rgb(np.random.default_rng(0).integers(0, 256, (24, 24, 3), dtype=np.uint8), root / "Set5" / "HR" / "a.png")
    (root / "Set14" / "HR" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    out = tmp_path / "sr"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    run("dfsq.evaluate", ["--method", "fp", "--data-root", root, "--datasets", "Set5,Set14", "--save-images", out],
        capsys, needle="cannot read image")
    assert sorted(p.name for p in out.rglob("*")) == ["keep.txt"]


def test_bogus_fault_and_bad_seed_create_nothing(tmp_path, capsys):
    exp = sample("export", tmp_path)
    run("sim.verify", ["--export", exp, "--fault", "bogus", "--work-dir", tmp_path / "w"], capsys,
        needle="invalid choice")
    run("sim.uniform", ["--seed=-1", "--work", tmp_path / "u"], capsys, needle="--seed")
    assert not (tmp_path / "w").exists() and not (tmp_path / "u").exists()


@needs_icarus
def test_sim_uniform_lanes_not_dividing_leaves_no_work_folder(tmp_path, capsys):
    run("sim.uniform", ["--lanes", "3", "--work", tmp_path / "w"], capsys, needle="must divide")
    assert not (tmp_path / "w").exists()


def test_calib_scale_checks_its_output_first_and_writes_all_or_nothing(tmp_path, capsys):
    rows = sample("calib-rows", tmp_path / "v")
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "file").write_text("x")
    for argv in (["--from-rows", rows], ["--cases", "S"]):   # checked before the rows are read or a case is run
        run("bench.calib_scale", argv + ["--out", tmp_path / "f" / "file" / "cs"], capsys, needle="not a folder")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(rows.read_text().replace('"layers": ', '"layers_": '))
    run("bench.calib_scale", ["--from-rows", bad, "--out", tmp_path / "o" / "cs"], capsys, needle="'layers'")
    assert not (tmp_path / "o").exists()


# --- benchmarks' counts and threads --------------------------------------------------------------------------------
@pytest.mark.parametrize("module,argv,needle", [
    ("bench.denorm_format", ["--limit", "-1"], "--limit"), ("bench.denorm_format", ["--threads", "-1"], "--threads"),
    ("bench.calib_scale", ["--threads", "-1"], "--threads"), ("bench.fakequant_speed", ["--out", "/tmp/"], "folder"),
])
def test_benchmark_counts(module, argv, needle, capsys):
    run(module, argv, capsys, needle=needle)


def test_image_tasks_limit_keeps_every_image_or_the_first_n(tmp_path):
    from bench.scale_bits import image_tasks

    root = sample("benchmarks", tmp_path)
    count = lambda tasks: sum(len(idx) for _, idx in tasks)   # noqa: E731
    assert count(image_tasks(["Set5"], root, 0)) == 1 == count(image_tasks(["Set5"], root, 5))
    with pytest.raises(UserError):
        image_tasks(["Set5"], root, -1)
    (root / "Set14" / "HR").mkdir(parents=True)
    with pytest.raises(UserError, match="no images"):
        image_tasks(["Set14"], root, 0)


@needs_weights
def test_fakequant_speed_refuses_params_of_another_scale(tmp_path, capsys):
    run("bench.fakequant_speed", ["--model", "edsr", "--scale", "4", "--methods", "dfsq", "--params", PARAMS,
                                  "--out", tmp_path / "fq"], capsys, needle="calibrated for the x2 network, not x4")
    assert not list(tmp_path.iterdir())


def test_mac_takes_no_denormalization(tmp_path, capsys):
    run("hw.generate", ["--top", "mac", "--denorm", "split", "--sigma-bits", "3", "--out", tmp_path / "r"], capsys,
        needle="--denorm applies only with --top")
    assert not (tmp_path / "r").exists()


# --- environment, manifests, messages, argparse --------------------------------------------------------------------
@pytest.mark.parametrize("value,on", [("0", False), ("off", False), ("false", False), ("No", False), ("1", True),
                                      ("on", True), ("", True)])
def test_fastquant_switch(value, on, monkeypatch):
    from dfsq.fastquant import fastquant_enabled

    monkeypatch.setenv("DFSQ_FASTQUANT", value)
    assert fastquant_enabled() is on


def test_fastquant_switch_refuses_other_words(monkeypatch):
    from dfsq.fastquant import fastquant_enabled

    monkeypatch.setenv("DFSQ_FASTQUANT", "maybe")
    with pytest.raises(UserError, match="DFSQ_FASTQUANT"):
        fastquant_enabled()


def test_the_manifest_format_is_kept_unless_flags_are_given(tmp_path):
    from golden.export_io import denorm_overrides, load_manifest, spec_from_manifest

    assert denorm_overrides() == {}
    exp = sample("export", tmp_path)
    m = json.loads((exp / "manifest.json").read_text())
    m["spec"].update(denorm="split", sigma_bits=6, shift_bits=0)
    spec = spec_from_manifest(m, **denorm_overrides())
    assert spec.split and spec.sigma_bits == 6
    assert not spec_from_manifest(m, **denorm_overrides("fused")).split
    m["config"]["act_bits"] = 4.5
    m["spec"].pop("act_bits")
    with pytest.raises(UserError, match="must be an integer, got 4.5"):
        spec_from_manifest(m)
    assert load_manifest(exp)


@needs_weights
def test_scale_mismatch_message_points_the_right_way():
    from dfsq.model import load_model
    from dfsq.calibrate import load_params
    from dfsq.quantize import check_params_fit

    with pytest.raises(UserError) as exc:
        check_params_fit(load_params(PARAMS), load_model("edsr", "default", 4), "p.npz", act_bits=4)
    assert "--scale" not in str(exc.value) and "x2 network, not x4" in str(exc.value)


@pytest.mark.parametrize("argv", [["--bogus"], ["--lanes"], ["--model", "x"]])
def test_argparse_errors_are_one_line(argv, capsys):
    run("hw.throughput", argv, capsys)


# --- the README tour ---------------------------------------------------------------------------------------------
@needs_icarus
@pytest.mark.slow
def test_sim_uniform_with_a_relative_work_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = importlib.import_module("sim.uniform").main(["--channels", "4", "--lanes", "2", "--layers", "3x3:4",
                                                        "--size", "2x2", "--out-channels", "1", "--work", "rel"])
    assert code == 0 and (tmp_path / "rel").is_dir()


def test_sim_uniform_default_work_folder_is_absolute_and_ignored():
    from sim.uniform import DEFAULT_WORK
    from sim.verify import DEFAULT_WORK as VERIFY_WORK

    for d in (DEFAULT_WORK, VERIFY_WORK):
        assert d.is_absolute() and d.relative_to(ROOT).parts[0] == "build"
    assert "build/" in (ROOT / ".gitignore").read_text().split()


def test_rdn_demo_has_its_own_output_folder():
    import demo

    assert demo.DEFAULT_OUT["rdn"] != demo.DEFAULT_OUT["edsr"]
    assert demo.build_parser().parse_args(["--model", "rdn"]).out is None   # resolved per model in main


def test_demo_comparison_crop_is_textured():
    """The comparison crop shows detail (the dark collar it showed before averaged 21 grey levels of gradient)."""
    import demo
    from dfsq.data import make_lr, modcrop, sample_image

    lr = make_lr(modcrop(sample_image(), 2), 2).astype(float).mean(2)
    y, x, h, w = demo.COMPARE_CROP
    c = lr[y:y + h, x:x + w]
    assert np.abs(np.diff(c, axis=0)).mean() + np.abs(np.diff(c, axis=1)).mean() > 35


def test_readme_step_5_generates_the_mac_it_promises():
    text = (ROOT / "README.md").read_text()
    assert "Verilog of the MAC" in text and "--top mac" in text


def test_bench_defaults_outside_the_tracked_results():
    from bench import SCRATCH
    from bench.denorm_format import build_parser as denorm
    from bench.scale_bits import build_parser as scale_bits

    assert denorm().parse_args([]).out == str(SCRATCH) == scale_bits().parse_args([]).out
    assert SCRATCH.relative_to(ROOT).parts[0] == "build"
    assert os.path.sep.join(("build", "bench")) in str(SCRATCH)
