"""hw.report: the plan and the Markdown rendering, on made-up measurements (no synthesis here)."""
from __future__ import annotations

import pytest

from golden.spec import DatapathSpec
from hw import report
from hw.baselines import equal_precision_name
from hw.generate import DEFAULT_VARIANTS
from hw.shift_add import VARIANTS

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

    def fake_run_flow(flow, text, top, cache, tools):
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
