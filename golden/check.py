"""Check an export against the golden integer datapath, layer by layer.

    python -m golden.check --export DIR [--json FILE] [--layers all|0,5,...] [--scale-bits B]

For every layer: re-derive the codes from the float input (contract 1's float32 ops) and compare them with the
exported codes; check the statistics (maxabs = max|x - mean| bit for bit, scale = maxabs + 1e-8); run the
integer datapath (golden.layer) on the derived codes; compare y_hw with the exported fake-quant output y: max
absolute error, max relative error (to the layer's max |y|), and the elementwise bound the spec predicts
(fixed-point rounding + float32 rounding of the reference, golden.layer.error_bound). Exit status 0 when every
layer passes, 1 when codes differ, statistics disagree or an error exceeds its bound, 2 on unusable input.

Exports with static activations (``dfsq.export --method minmax|brecq|qdrop``; the manifest's spec names the static
uniform datapath) are checked on that datapath (golden.uniform_layer): the codes re-derived from ``x``, ``act_step``
and ``act_zero``, the exact integer accumulator ``bias_int + sum w' a'``, and ``s_w s_a acc`` against ``y`` within
the bias rounding plus the float rounding bound.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .args import Parser
from .errors import UserError, cli_main
from .files import atomic_output
from .export_io import (LayerData, denorm_overrides, is_static, load_export, load_manifest, spec_from_manifest,
                        static_spec_from_manifest)
from .layer import derive_codes, error_bound, layer_spec, run_layer
from .spec import EPS, SCALE_BITS_RANGE, DatapathSpec, add_denorm_args


def code_diff(derived: np.ndarray, exported: np.ndarray) -> tuple[int, dict | None]:
    """(number of codes that differ, the first of them as n, c, h, w with both values, or None)."""
    diff = derived != exported
    n_diff = int(np.count_nonzero(diff))
    if not n_diff:
        return 0, None
    n, c, h, w = (int(v) for v in np.argwhere(diff)[0])
    return n_diff, {"n": n, "c": c, "h": h, "w": w, "exported": int(exported[n, c, h, w]),
                    "derived": int(derived[n, c, h, w])}


def error_report(y_hw: np.ndarray, y: np.ndarray, bound: dict) -> dict:
    """The error fields of a layer's report: |y_hw - y| against the elementwise ``bound`` (its ``total``)."""
    err = np.abs(y_hw - y.astype(np.float64))
    total = bound["total"]
    ratio = err / total
    i = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
    ymax = float(np.max(np.abs(y)))
    return {"max_abs_err": float(err.max()), "max_rel_err": float(err.max()) / ymax if ymax else 0.0,
            "y_max_abs": ymax, "bound_max": float(total.max()),
            "rel_bound_max": float(total.max()) / ymax if ymax else 0.0,
            "bound_fixed_max": float(bound["fixed"].max()), "bound_float32_max": float(bound["float32"].max()),
            "worst_err_over_bound": float(ratio[i]), "worst_at": [int(v) for v in i],
            "within_bound": bool(np.all(err <= total))}


def check_layer(layer: LayerData, spec: DatapathSpec) -> dict:
    """The per-layer report (a JSON-able dict); ``passed`` is the verdict."""
    codes = derive_codes(layer.x, layer.mean, layer.scale, layer.points)
    n_diff, first = code_diff(codes, layer.codes)
    maxabs = np.abs(layer.x - layer.mean[:, :, None, None]).max((2, 3))
    maxabs_ok = bool(np.array_equal(maxabs, layer.maxabs))
    scale_ref = layer.maxabs + np.float32(EPS)
    scale_ok = bool(np.all(np.abs(layer.scale - scale_ref) <= np.spacing(scale_ref)))
    ops, acc, y_hw = run_layer(layer, spec, codes)
    lspec = layer_spec(spec, layer.x.shape[1], layer.kernel)
    errors = error_report(y_hw, layer.y, error_bound(layer, ops, spec, y_hw))
    return {
        "index": layer.index, "name": layer.name, "shape": list(layer.shape), "kernel": layer.kernel,
        "relu_input": layer.relu_input,
        "codes_equal": n_diff == 0, "code_diffs": n_diff, "codes_total": int(codes.size), "first_code_diff": first,
        "maxabs_exact": maxabs_ok, "scale_ok": scale_ok,
        "E": [int(e) for e in ops.E], "acc_max_abs": int(np.max(np.abs(acc))), "acc_bits": lspec.acc_bits,
        "acc_bound": lspec.acc_max, **errors,
        "passed": n_diff == 0 and maxabs_ok and scale_ok and errors["within_bound"],
    }


def check_static_layer(layer, spec) -> dict:
    """The per-layer report of a static-activation layer on the static uniform datapath."""
    from .spec import SpecError
    from .uniform_layer import accumulate, static_codes, static_error_bound, static_operands, static_to_float

    codes = static_codes(layer.x, layer.act_step, layer.act_zero, spec.act_bits)
    n_diff, first = code_diff(codes, layer.codes)
    lspec = spec.for_layer(layer.x.shape[1], layer.kernel)
    try:
        ops = static_operands(layer, lspec, codes)
        acc = accumulate(ops, lspec)
    except SpecError as exc:
        raise UserError(f"{layer.name}: {exc}") from None
    y_hw = static_to_float(acc, layer)
    errors = error_report(y_hw, layer.y, static_error_bound(layer, ops, y_hw))
    return {
        "index": layer.index, "name": layer.name, "shape": list(layer.shape), "kernel": layer.kernel,
        "relu_input": layer.relu_input, "act_step": float(layer.act_step), "act_zero": int(layer.act_zero),
        "codes_equal": n_diff == 0, "code_diffs": n_diff, "codes_total": int(codes.size), "first_code_diff": first,
        "acc_max_abs": int(np.max(np.abs(acc))), "acc_bits": lspec.acc_bits, "acc_bound": lspec.acc_max, **errors,
        "passed": n_diff == 0 and errors["within_bound"],
    }


def _atomic_json(path: Path, obj) -> None:
    with atomic_output(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")


def format_table(results: list[dict]) -> str:
    nw = max([14] + [len(r["name"]) for r in results])
    head = (f"{'#':>2} {'layer':<{nw}} {'k':>1} {'C':>4} {'acc':>3} {'codes':>12} {'stats':>5} {'max|err|':>9} {'rel err':>9} {'bound':>9} "
            f"{'rel bnd':>9} {'err/bnd':>7} {'E':>7}  verdict")
    lines = [head]
    for r in results:
        codes = "equal" if r["codes_equal"] else f"{r['code_diffs']} diff"
        stats = "-" if "maxabs_exact" not in r else "ok" if r["maxabs_exact"] and r["scale_ok"] else "BAD"
        es = r.get("E") or ["-"]
        e = f"{min(es)}" if min(es) == max(es) else f"{min(es)}..{max(es)}"
        lines.append(f"{r['index']:>2} {r['name']:<{nw}} {r.get('kernel', 3):>1} {r['shape'][1]:>4} "
                     f"{r['acc_bits']:>3} {codes:>12} {stats:>5} {r['max_abs_err']:9.2e} "
                     f"{r['max_rel_err']:9.2e} {r['bound_max']:9.2e} {r['rel_bound_max']:9.2e} "
                     f"{r['worst_err_over_bound']:7.3f} {e:>7}  {'PASS' if r['passed'] else 'FAIL'}")
    return "\n".join(lines)


def _format_note(spec) -> str:
    return f", split de-normalization m {spec.sigma_bits} s {spec.shift_bits}" if spec.split else ""


def build_parser() -> Parser:
    ap = Parser(prog="python -m golden.check", description=__doc__.split("\n")[0])
    ap.input_dir("--export", "export", required=True, help="export folder (python -m dfsq.export)")
    ap.output_file("--json", help="write the per-layer report here")
    ap.indices("--layers", help="'all' (the default) or comma-separated layer indices")
    ap.integer("--scale-bits", *SCALE_BITS_RANGE, help="check with this de-normalization width (default: the "
                                                       "export's)")
    add_denorm_args(ap, " to check")
    ap.flag("--quiet", help="no progress bar")
    return ap


@cli_main
def main(argv=None):
    args = build_parser().parse_args(argv)
    fmt = denorm_overrides(args.denorm, args.sigma_bits, args.shift_bits)
    wanted = args.layers
    manifest = load_manifest(args.export)
    if is_static(manifest):
        return _main_static(args, manifest, wanted)
    method = (manifest.get("config") or {}).get("method", "dfsq") or "dfsq"
    overrides = dict(fmt) if args.scale_bits is None else dict(fmt, scale_bits=args.scale_bits)
    spec = spec_from_manifest(manifest, **overrides)
    expected = "dfsq-uniform" if spec.uniform_points else "dfsq"   # the point set the datapath decodes
    if method != expected:
        raise UserError(f"export method is {method!r}, but its spec's point set is {spec.point_set!r} "
                        f"(that is method {expected!r})")
    _, layers = load_export(args.export, spec, wanted)
    results = [check_layer(lay, spec) for lay in tqdm(layers, desc="golden.check", disable=args.quiet,
                                                         leave=False)]
    print(format_table(results))
    failed = [r for r in results if not r["passed"]]
    print(f"{len(results) - len(failed)}/{len(results)} layers pass "
          f"({'uniform points' if spec.uniform_points else f'words {spec.words}'}, act_bits {spec.act_bits}, weight_bits {spec.weight_bits}, "
          f"scale_bits {spec.scale_bits}{_format_note(spec)}, acc_bits {spec.acc_bits} for the widest layer "
          f"({spec.channels} channels, {spec.kernel}x{spec.kernel}))")
    _report_failures(failed)
    if args.json:
        _atomic_json(Path(args.json), {"export": str(args.export), "spec": spec.widths(),
                                       "passed": not failed, "layers": results})
    return 1 if failed else 0


def _report_failures(failed) -> None:
    for r in failed:
        why = []
        if not r["codes_equal"]:
            f = r["first_code_diff"]
            why.append(f"{r['code_diffs']} codes differ, first at n={f['n']} c={f['c']} y={f['h']} x={f['w']}: "
                       f"exported {f['exported']}, derived {f['derived']}")
        if not (r.get("maxabs_exact", True) and r.get("scale_ok", True)):
            why.append("maxabs/scale disagree with x and mean")
        if not r["within_bound"]:
            why.append(f"error exceeds the bound by x{r['worst_err_over_bound']:.3g} at {r['worst_at']}")
        print(f"FAIL layer {r['index']} {r['name']}: " + "; ".join(why), file=sys.stderr)


def _main_static(args, manifest, wanted) -> int:
    """golden.check of an export with static activations, on the static uniform datapath."""
    if args.scale_bits is not None or any(v is not None for v in (args.denorm, args.sigma_bits, args.shift_bits)):
        raise UserError("--scale-bits, --denorm, --sigma-bits and --shift-bits belong to DFSQ's normalized datapath; "
                        "this export has static activations")
    spec = static_spec_from_manifest(manifest)
    _, layers = load_export(args.export, spec, wanted)
    results = [check_static_layer(lay, spec) for lay in tqdm(layers, desc="golden.check", disable=args.quiet,
                                                                leave=False)]
    print(format_table(results))
    failed = [r for r in results if not r["passed"]]
    method = (manifest.get("config") or {}).get("method")
    print(f"{len(results) - len(failed)}/{len(results)} layers pass (static activations, {method}: act_bits "
          f"{spec.act_bits}, weight_bits {spec.weight_bits}, acc_bits {spec.acc_bits} for the widest layer "
          f"({spec.channels} channels, {spec.kernel}x{spec.kernel}))")
    _report_failures(failed)
    if args.json:
        _atomic_json(Path(args.json), {"export": str(args.export), "spec": spec.widths(), "datapath": "static-uniform",
                                       "passed": not failed, "layers": results})
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
