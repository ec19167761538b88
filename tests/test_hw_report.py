"""hw.report: the plan and the Markdown rendering, on made-up measurements (no synthesis here)."""
from __future__ import annotations

import json

import pytest

from golden.spec import DatapathSpec
from hw import report
from hw.units.baselines import equal_precision_name
from hw.generate import DEFAULT_VARIANTS
from hw.units.shift_add import VARIANTS

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")

VERSIONS = {"yosys": "Yosys 0.test", "nextpnr-ice40": "nextpnr-ice40 test"}


def _fake_results(jobs):
    """Distinct, recognisable numbers per job: DFSQ MACs 100 + index, baselines 400 + 10 x weight bits."""
    out = []
    for k, job in enumerate(jobs):
        lut = 400 + 10 * job["bits"] if job.get("kind") == "baseline" else 100 + k
        out.append({"ice40": {"lut4": lut, "carry": 50, "ffs": 60, "bram": 0, "lc": lut + 30},
                    "xilinx": {"luts": lut // 2, "lutram": 0, "ffs": 60},
                    "generic": {"gates": lut * 3, "ffs": 60},
                    "fmax": {"fmax_mhz": 123.456}})
    return out


def _render(sweep="none"):
    jobs = report.plan(sweep, "none")
    return jobs, report.render(report.summarize(jobs, _fake_results(jobs)), {}, [], VERSIONS, "python -m hw.report")


def test_plan_compares_every_variant_and_the_baseline_at_4_and_8_bit_weights():
    jobs = report.plan("none", "none")
    for wb in report.COMPARE_WEIGHT_BITS:
        group = [j for j in jobs if j["group"] == report.mac_group(wb)]
        assert {j["variant"] for j in group if j["kind"] == "dfsq"} == set(VARIANTS)
        eq = equal_precision_name(DatapathSpec(weight_bits=wb))
        assert eq in {j.get("baseline") for j in group}
        assert all("fmax" in j["flows"] for j in group)
    assert report.COMPARE_WEIGHT_BITS == (4, 8)


def test_render_has_both_widths_fmax_and_the_verdict():
    jobs, text = _render()
    assert "### Summary: the default DFSQ MAC" in text
    assert "### Every variant at 4-bit weights" in text and "### Every variant at 8-bit weights" in text
    # the default DFSQ MAC's row and its baseline at each width, with fmax
    for wb in (4, 8):
        d = next(k for k, j in enumerate(jobs) if j["group"] == report.mac_group(wb)
                 and j.get("variant") == DEFAULT_VARIANTS["mac"])
        lut, base = 100 + d, 400 + 10 * wb
        ratio = round(lut / base, 2)
        verdict = "met" if ratio <= report.GOAL else "not met"
        assert f"{wb}-bit weights: {lut} against {base} LUT4, **{ratio:.2f}x** (goal {verdict})" in text
    assert "123.5" in text
    assert f"{report.ISSUE_NAIVE} LUT4 for a naive shift-add MAC" in text


def test_verdict_boundaries():
    assert report._verdict(report.GOAL) == "met"
    assert report._verdict(report.GOAL + 0.01) == "not met"
    assert report._verdict(None) == "not measured"


@pytest.mark.parametrize("sweep", ["words4"])
def test_render_sweep_rows(sweep):
    jobs, text = _render(sweep)
    assert "## Trade-off: words x bits" in text
    assert text.count("(int") >= len(report.BITS)


def test_a_design_too_large_for_the_device_has_no_fmax(monkeypatch):
    from golden.errors import UserError

    def fake_run_flow(flow, text, top, cache, tools, timeout=None):
        if flow == "fmax":
            raise UserError("nextpnr-ice40 (harness) failed: ERROR: Unable to place cell 'x', no BELs remaining")
        return {"lut4": 1}

    monkeypatch.setattr(report, "run_flow", fake_run_flow)
    job = next(j for j in report.plan("none", "none") if j["kind"] == "baseline")
    out = report.measure(dict(job, flows=("ice40", "fmax")), cache=None, tools=None)
    assert out["fmax"]["fits"] is False and out["fmax"]["fmax_mhz"] is None

    def broken(flow, text, top, cache, tools):
        raise UserError("yosys (fmax, harness) failed: something else")

    monkeypatch.setattr(report, "run_flow", broken)
    with pytest.raises(UserError, match="something else"):
        report.measure(dict(job, flows=("fmax",)), cache=None, tools=None)


def test_engine_that_does_not_fit_is_rendered_as_such():
    jobs = report.plan("none", "none")
    results = _fake_results(jobs)
    for job, res in zip(jobs, results):
        if job["group"] == "engine":
            res["fmax"] = {"fmax_mhz": None, "fits": False}
    text = report.render(report.summarize(jobs, results), {}, [], VERSIONS, "python -m hw.report")
    assert "| does not fit |" in text and "could not place the design" in text


def _fake_ecp5(jobs):
    """Fake ECP5 figures: DFSQ engines 3x the uniform ones; the 16-lane DFSQ engine over the device without DSPs."""
    out = _fake_results(jobs)
    for job, res in zip(jobs, out):
        if job["group"] != "ecp5":
            continue
        big = job["lanes"] in (report.ECP5_LANES, None)
        split = job.get("denorm") == "split"
        factor = (0.6 if job.get("sigma_bits", 8) > 1 else 0.5) if split else 3 if job["kind"] == "dfsq" else 1
        lut = int((30000 if big else 3000) * factor) + job["bits"]
        cells = dict(lut4=lut, carry=1000, ffs=5000, dpram=100 if job["kind"] == "dfsq" else 0, bram=0, alu54=0,
                     synth_seconds=12.0)
        res["ecp5"] = dict(cells, mult18=0, lut_eq=lut + 2000 + 6 * cells["dpram"])
        res["ecp5-dsp"] = dict(cells, lut4=lut // 4, mult18=96 if job["kind"] == "dfsq" else 144,
                               lut_eq=lut // 4 + 2000 + 6 * cells["dpram"])
        if "ecp5-fmax" in job["flows"]:
            res["ecp5-fmax"] = {"fmax_mhz": 77.7, "comb": 1234, "pnr_seconds": 99.0}
        if job["kind"] == "uniform" and not big:
            res["ecp5"]["mapper"] = "abc (abc9 failed)"
    return out


def test_ecp5_plan_measures_the_16_lane_engines():
    jobs = [j for j in report.plan("none", "none", "engines") if j["group"] == "ecp5"]
    dfsq = {j["lanes"]: j for j in jobs if j["kind"] == "dfsq" and j.get("denorm", "fused") == "fused"}
    assert set(dfsq) == {report.ENGINE_LANES, report.ECP5_LANES}
    assert dfsq[16]["channels"] == 64 and dfsq[16]["flows"] == ("ecp5", "ecp5-dsp", "ecp5-fmax")
    assert dfsq[16]["fmax_lanes"] == report.ECP5_DFSQ_FMAX_LANES and dfsq[16]["fmax_make"]().lanes == 4
    assert dfsq[16]["make"]().lanes == 16
    uniform = {j["bits"]: j for j in jobs if j["kind"] == "uniform" and j["lanes"] == 16}
    assert set(uniform) == set(report.UNIFORM_BITS) and report.UNIFORM_COMPARE_BITS in uniform
    eng = uniform[6]["make"]()
    assert (eng.spec.act_bits, eng.spec.weight_bits, eng.spec.channels, eng.lanes) == (6, 6, 64, 16)
    assert all(set(j["flows"]) >= {"ecp5", "ecp5-dsp"} for j in jobs if j["kind"] == "uniform" or
               (j["kind"] == "dfsq" and j.get("denorm", "fused") == "fused"))
    split = {(j["sigma_bits"], j["shift_bits"]): j for j in jobs if j.get("denorm") == "split"
             and not j.get("codes_in")}
    assert report.SPLIT_DEFAULT == (DatapathSpec().sigma_bits, DatapathSpec().shift_bits)   # the spec's default
    assert set(split) == {report.SPLIT_DEFAULT, (8, 0), (1, 0)} and split[report.SPLIT_DEFAULT]["make"]().spec.split
    assert split[report.SPLIT_DEFAULT]["flows"] == ("ecp5", "ecp5-dsp", "ecp5-fmax")   # placed at all 16 lanes
    assert "fmax_make" not in split[report.SPLIT_DEFAULT]
    codes = [j for j in jobs if j.get("codes_in") and j["kind"] == "dfsq"]
    assert len(codes) == 1 and codes[0]["make"]().tables is False
    dec = next(j for j in jobs if j["kind"] == "decoder")
    assert dec["count"] == 16 and dec["make"]().signature.members["r_code"].shape.size == DatapathSpec().code_bits
    assert dec["make"]().channels == 64 // 16     # one lane's share of the channels
    norm = {j["bits"]: j for j in jobs if j["kind"] == "normalized"}
    assert set(norm) == set(report.NORMALIZED_BITS)
    eng = norm[6]["make"]()
    assert eng.spec.uniform_points and eng.spec.split and eng.tables is False and eng.lanes == 16
    assert [j["make"]().spec.split for j in jobs if j["kind"] == "mean-unit"] == [True]
    assert not [j for j in report.plan("none", "none") if j["group"] == "ecp5"]  # --ecp5 none


def test_ecp5_render_tables_ratio_and_fit():
    jobs = report.plan("none", "none", "engines")
    summary = report.summarize(jobs, _fake_ecp5(jobs))
    text = report.render(summary, {}, [], dict(VERSIONS, **{"nextpnr-ecp5": "nextpnr-ecp5 test"}),
                         "python -m hw.report")
    assert "## ECP5 (LFE5U-85F): the engines at a real size" in text and "nextpnr-ecp5 test" in text
    assert "### Without DSPs (`synth_ecp5 -nodsp`)" in text and "### With DSPs" in text
    # the comparison takes the split engine (8:0) as the DFSQ engine; the fused one is shown beside it
    d_eq, u_eq = 18004 + 2000 + 600, 30006 + 2000
    assert f"takes {d_eq} LUT4 sites against {u_eq} for the uniform W6A6 engine, **{d_eq / u_eq:.2f}x**" in text
    lo_eq = 15004 + 2000 + 600
    assert f"**{100 * (d_eq - lo_eq) / d_eq:.1f}%** of the engine" in text  # the de-normalization share
    assert "## Iso-PSNR" in text
    iso = text[text.index("## Iso-PSNR"):]
    assert "not synthesized" not in next(line for line in iso.splitlines() if line.startswith("| words 4 W4A4"))
    assert "**Without point tables in the lanes**" in text and "Verified under Icarus by `sim.verify --codes-in`" in text
    assert "| normalized uniform engine W6A6 c64 l16 split 6:0 codes-in |" in text
    assert "## Throughput: whole quantized bodies" in text and "--fmax-mhz 77.7" in text
    assert "| EDSR-baseline | 32 | 271,790,899,200 |" in text and "| RDN config B (paper) | 146 |" in text
    # 92,604 LUT4 sites exceed the LFE5U-85F's 83,640 without DSPs; with DSPs the engine fits
    row = next(line for line in text.splitlines() if line.startswith("| DFSQ engine w4 a4 b4 c64 l16 | 90004"))
    assert "**no** (LUT4 sites)" in row
    dsp_row = next(line for line in text.splitlines() if line.startswith("| DFSQ engine w4 a4 b4 c64 l16 | 22501"))
    assert "| yes |" in dsp_row and "77.7 (4-lane instance)" in dsp_row
    assert "| 3006 † |" in text and "ABC9 crashed" in text  # the classic-ABC fallback is flagged
    assert "| 77.7 |" in next(line for line in text.splitlines()
                              if line.startswith("| uniform engine W6A6 c64 l16 | 7501"))


def test_ecp5_design_that_does_not_fit_has_no_fmax(monkeypatch):
    from golden.errors import UserError

    def fake_run_flow(flow, text, top, cache, tools, timeout=None):
        if flow == "ecp5-fmax":
            raise UserError("nextpnr-ecp5 (harness) failed: ERROR: Unable to place cell 'x', no BELs remaining")
        return {"lut4": 1}

    monkeypatch.setattr(report, "run_flow", fake_run_flow)
    job = next(j for j in report.plan("none", "none", "engines") if j["group"] == "ecp5")
    out = report.measure(dict(job, flows=("ecp5", "ecp5-fmax")), cache=None, tools=None)
    assert out["ecp5-fmax"] == {"fmax_mhz": None, "fits": False, "error": out["ecp5-fmax"]["error"]}


def test_ecp5_cell_counts_and_cache_keys():
    from hw import synth

    cells = {"LUT4": 100, "CCU2C": 10, "TRELLIS_DPR16X4": 3, "TRELLIS_FF": 40, "PFUMX": 7, "MULT18X18D": 2,
             "DP16KD": 1}
    assert synth.ecp5_lut_equivalents(cells) == 100 + 20 + 18
    s = synth._summarize("ecp5-dsp", cells)
    assert (s["lut4"], s["carry"], s["ffs"], s["lut_eq"], s["mult18"], s["bram"], s["dpram"]) == \
        (100, 10, 40, 138, 2, 1, 3)
    v = {"yosys": "y", "nextpnr-ice40": "i", "nextpnr-ecp5": "e"}
    # the iCE40 flows' keys do not depend on nextpnr-ecp5 (caches written before ECP5 stay valid) ...
    assert synth._key("ice40", "v", "t", v) == synth._key("ice40", "v", "t", dict(v, **{"nextpnr-ecp5": "f"}))
    # ... and the ECP5 flows' keys do, and differ from each other
    assert synth._key("ecp5", "v", "t", v) != synth._key("ecp5", "v", "t", dict(v, **{"nextpnr-ecp5": "f"}))
    assert len({synth._key(f, "v", "t", v) for f in synth.FLOWS}) == len(synth.FLOWS)
    assert synth.place_failure("ERROR: Unable to place cell 'x'") and not synth.place_failure("ERROR: syntax")


def test_iso_psnr_fewest_bits():
    from hw.iso_psnr import DATASETS, fewest_bits

    target = dict(zip(DATASETS, (37.14, 32.75, 31.59, 30.00)))
    cells = {}
    for b, ps in ((4, (36.9, 32.5, 31.4, 29.5)), (5, (37.2, 32.8, 31.6, None)), (6, (37.25, 32.8, 31.64, 30.1))):
        for d, p in zip(DATASETS, ps):
            if p is not None:
                cells[("dfsq-uniform", 4, b, d)] = p
    assert fewest_bits(cells, "dfsq-uniform", target) == (5, ["Urban100"])      # compared on the three it has
    cells[("dfsq-uniform", 4, 5, "Urban100")] = 29.95                              # 0.05 dB short on Urban100
    assert fewest_bits(cells, "dfsq-uniform", target) == (6, [])
    assert fewest_bits(cells, "minmax", target)[0] is None
    only_two = {("minmax", 4, 8, "Set5"): 40.0, ("minmax", 4, 8, "Set14"): 40.0}
    assert "not measured" in fewest_bits(only_two, "minmax", target)[1]


def test_system_cost_equal_psnr_sentence():
    from hw.system_cost import _reached

    assert _reached("Min-Max", 6, []) == "reached by Min-Max at W6A6"
    assert _reached("Uniform-MSE", 6, ["Urban100"]) == "reached by Uniform-MSE at W6A6 (Urban100 not measured)"
    assert _reached("Uniform-MSE", None, "none of [3, 4] bits reaches it") == \
        "not reached by Uniform-MSE (none of [3, 4] bits reaches it)"


def test_band_psnr_and_tile_table(tmp_path):
    """The verdict's band-design line: each measured set's PSNR change against per-image DFSQ, the sets not
    measured named; the per-tile table keeps the blank line a Markdown table needs after its paragraph."""
    from hw.iso_psnr import DATASETS
    from hw.system_cost import _band_psnr, _tile_table

    cells = {("dfsq", 4, 4, d): p for d, p in zip(DATASETS, (37.14, 32.75, 31.59, 30.00))}
    cache = tmp_path / "tile_stats.json"
    assert _band_psnr(cache, cells, 16) == [] and _tile_table(cache) == []
    cache.write_text(json.dumps({"format": "dfsq-tile-stats-cache", "version": 1, "results": {
        "x2/rows16/W4A4/Set5": {"psnr": 37.15}, "x2/rows16/W4A4/B100": {"psnr": 31.58},
        "x2/rows64/W4A4/Set14": {"psnr": 1.0}}}))
    line, = _band_psnr(cache, cells, 16)
    assert line.startswith("W4A4 Set5 +0.010, B100 -0.010 dB") and "(Set14, Urban100 not measured)" in line
    cache.with_suffix(".md").write_text("# title\n\nA paragraph.\n\n| a |\n|---|\n| 1 |\n")
    assert _tile_table(cache) == ["A paragraph.", "", "| a |", "|---|", "| 1 |"]
