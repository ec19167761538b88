"""golden.args: typed options, the "applies only when" rule, path roles, one error line with exit 2."""
from __future__ import annotations

import pytest

from golden.args import KINDS, Parser, When


def _parser(tmp_path) -> Parser:
    ap = Parser(prog="t")
    ap.choice("--method", ("fp", "dfsq", "dfsq-hw"), default="fp")
    ap.integer("--bits", 2, 8, default=4)
    ap.integer("--tiles", 1, 10, special=("all",), default=2)
    ap.real("--mhz", 0.0, 1000.0, lo_open=True, default=100.0)
    ap.fraction("--frac", default=0.5)
    ap.int_list("--scales", 2, 4, default=[2])
    ap.choice_list("--sets", ("Set5", "Set14"), default=["Set5"])
    ap.indices("--layers")
    ap.threads()
    ap.seed()
    ap.flag("--fast")
    ap.integer("--scale-bits", 4, 32, default=None, when=When("method", "dfsq-hw"))
    ap.input_file("--params", "params", when=When("method", "dfsq", "dfsq-hw"))
    ap.input_dir("--export", "export")
    ap.input_file("--weights", "checkpoint", special=("default",), default="default")
    ap.output_file("--json")
    ap.output_dir("--out", replaces=True)
    ap.output_stem("--stem", (".json", ".md"))
    ap.work_dir("--work")
    return ap


def _run(ap, argv, capsys):
    try:
        ns = ap.parse_args(argv)
    except SystemExit as exc:
        err = capsys.readouterr().err
        return exc.code, err
    return 0, ns


@pytest.mark.parametrize("argv,needle", [
    (["--bits", "9"], "--bits: must be an integer in 2..8, got '9'"),
    (["--bits", "-1"], "in 2..8"),
    (["--bits", "4.5"], "in 2..8"),
    (["--bits", "x"], "in 2..8"),
    (["--bits", ""], "in 2..8"),
    (["--bits", str(10 ** 30)], "in 2..8"),
    (["--tiles", "0"], "in 1..10"),
    (["--mhz", "nan"], "must be a number"),
    (["--mhz", "inf"], "must be a number"),
    (["--mhz", "0"], "must be a number in (0, 1000]"),
    (["--frac", "1.5"], "in 0..1"),
    (["--scales", "2,,4"], "comma-separated"),
    (["--scales", "2,2"], "twice"),
    (["--scales", "2,5"], "in 2..4"),
    (["--scales", ""], "comma-separated"),
    (["--sets", "Set5,Urban"], "invalid choice 'Urban'"),
    (["--layers", "-1"], "indices"),
    (["--layers", "x"], "indices"),
    (["--threads", "0"], "--threads"),
    (["--threads", "-3"], "--threads"),
    (["--seed=-1"], "--seed"),
    (["--method", "bogus"], "invalid choice"),
    (["--scale-bits", "8"], "--scale-bits applies only with --method dfsq-hw (here --method fp)"),
    (["--params", "x"], "--params applies only with --method dfsq or dfsq-hw"),
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--bits"], "expected one argument"),
    (["--meth", "fp"], "unrecognized arguments"),   # no abbreviations: a new option never breaks an old command
])
def test_bad_values_are_one_line_exit_2(tmp_path, capsys, argv, needle):
    code, err = _run(_parser(tmp_path), argv, capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    assert needle in err, err


def test_good_values_parse(tmp_path, capsys):
    (tmp_path / "p.npz").write_bytes(b"x")
    ap = _parser(tmp_path)
    code, ns = _run(ap, ["--method", "dfsq-hw", "--scale-bits", "8", "--params", str(tmp_path / "p.npz"),
                         "--scales", "2,4", "--sets", "Set14,Set5", "--layers", "0,3", "--tiles", "all",
                         "--mhz", "75.6", "--seed", "0", "--threads", "2", "--json", str(tmp_path / "r.json")],
                    capsys)
    assert code == 0, ns
    assert (ns.scale_bits, ns.scales, ns.sets, ns.layers, ns.tiles, ns.mhz) == (8, [2, 4], ["Set14", "Set5"], [0, 3],
                                                                              "all", 75.6)
    assert ap.given() == {"method", "scale_bits", "params", "scales", "sets", "layers", "tiles", "mhz", "seed",
                          "threads", "json"}
    assert _run(_parser(tmp_path), [], capsys)[1].layers is None


def test_help_exits_0(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        _parser(tmp_path).parse_args(["--help"])
    assert exc.value.code == 0
    assert "--scale-bits" in capsys.readouterr().out


def test_input_paths(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    for argv, needle in ((["--export", str(tmp_path / "nope")], "folder not found"),
                         (["--export", str(tmp_path / "f")], "is not a folder"),
                         (["--weights", str(tmp_path)], "is a folder, expected a file"),
                         (["--weights", str(tmp_path / "nope")], "file not found"),
                         (["--weights", ""], "the path is empty")):
        code, err = _run(_parser(tmp_path), argv, capsys)
        assert code == 2 and needle in err, (argv, err)
    assert _run(_parser(tmp_path), ["--weights", "default"], capsys)[0] == 0


def test_a_default_input_is_checked_only_where_it_applies(tmp_path, capsys):
    ap = Parser(prog="t")
    ap.flag("--render-only")
    ap.input_dir("--data", "benchmarks", default=str(tmp_path / "absent"), when=When("render_only", False))
    assert _run(ap, ["--render-only"], capsys)[0] == 0
    code, err = _run(ap, [], capsys)
    assert code == 2 and "folder not found" in err


def test_outputs(tmp_path, capsys):
    exp = tmp_path / "exp"
    exp.mkdir()
    (tmp_path / "file").write_text("x")
    (tmp_path / "w.pt").write_text("x")
    cases = [
        (["--json", ""], "the path is empty"),
        (["--json", str(tmp_path / "file" / "x.json")], "not a folder"),
        (["--json", str(tmp_path)], "is a folder"),
        (["--json", str(tmp_path) + "/"], "is not a file name"),
        (["--export", str(exp), "--json", str(exp / "manifest.json")], "lies inside the input --export"),
        (["--weights", str(tmp_path / "w.pt"), "--json", str(tmp_path / "w.pt")], "is the input --weights"),
        (["--export", str(exp), "--out", str(tmp_path)], "would replace the folder holding the input --export"),
        (["--export", str(exp), "--out", str(exp)], "is the input --export"),
        (["--json", str(tmp_path / "o" / "a.json"), "--out", str(tmp_path / "o")], "collides with --out"),
        (["--stem", str(tmp_path) + "/"], "give a file stem"),
        (["--stem", str(exp)], "give a file stem"),
        (["--work", str(tmp_path / "file")], "is not a folder"),
        (["--out", ""], "the path is empty"),
    ]
    for argv, needle in cases:
        before = set(tmp_path.rglob("*"))
        code, err = _run(_parser(tmp_path), argv, capsys)
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, (argv, err)
        assert set(tmp_path.rglob("*")) == before   # nothing is created at parse time
    code, ns = _run(_parser(tmp_path), ["--export", str(exp), "--json", str(tmp_path / "new" / "r.json"),
                                        "--out", str(tmp_path / "o2"), "--stem", str(tmp_path / "s")], capsys)
    assert code == 0 and not (tmp_path / "new").exists()


def test_every_builder_declares_its_kind_and_role(tmp_path):
    ap = _parser(tmp_path)
    for a in ap.declared():
        assert a.decl.kind in KINDS and a.decl.role == KINDS[a.decl.kind], a.dest


def test_when_describes_itself():
    assert When("method", "a", "b").describe() == "--method a or b"
    assert When("render_only", False).describe() == "no --render-only"
    assert When("params", None).describe() == "no --params"
