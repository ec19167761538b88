"""The argument layer of every command: typed options that check themselves, one error line, exit 2.

Every CLI builds its parser in a ``build_parser()`` function (so tests can enumerate its options without running
it) from :class:`Parser` and its typed option builders, and runs ``build_parser().parse_args(argv)`` inside
:func:`golden.errors.cli_main`::

    from golden.args import Parser, When

    def build_parser() -> Parser:
        ap = Parser(prog="python -m hw.throughput", description="...")
        ap.choice("--model", ("edsr", "rdn"), default="edsr")
        ap.integer("--lanes", 1, 64, default=16, help="engine lanes")
        ap.real("--fmax-mhz", 0, 10_000, default=100.0, lo_open=True)
        ap.int_list("--bits", 2, 8, default="8,6,4,3")
        ap.threads()                                    # --threads, a positive count (default: torch's choice)
        ap.seed()                                       # --seed, 0 .. 2^32-1
        ap.input_file("--params", fmt="params")         # must exist and be a file; validated by its format's loader
        ap.input_dir("--export", fmt="export")
        ap.output_file("--json")                        # non-empty, not an input, writable: checked at parse time
        ap.output_dir("--out", replaces=True)
        ap.integer("--sigma-bits", 1, 24, when=When("denorm", "split"))   # given without --denorm split: exit 2
        return ap

Builders (each a :class:`Parser` method; ``help``, ``default``, ``dest``, ``metavar`` and ``required`` pass
through to argparse; every builder takes ``when``):

- ``integer(name, lo, hi, special=())`` (``special``: words such as ``all`` that pass as they are),
  ``real(name, lo, hi, lo_open=False, hi_open=False)``, ``fraction(name)`` (a real in 0..1): numbers in a closed
  (or half-open) range; NaN, infinities, ``4.5`` for an integer and text are refused.
- ``int_list``, ``real_list``, ``choice_list``: comma-separated lists of those (no empty items, no duplicates);
  the parsed value is a Python list (``int_list(..., special=("none",))``: words that pass as they are).
- ``name_list(name)``: comma-separated names (dataset folders), no paths.
- ``item_list(name, parse, what, example=...)``: comma-separated items of any other syntax (``640x360`` frames,
  ``rows16`` tiles), each ``parse(str)`` -> value or ``ValueError``/``UserError``; no empty items, no duplicates
  (``example``: one valid item, for the fuzzer's repeated and empty-item cases).
- ``indices(name)``: ``all`` (None) or a list of indices (layers, samples).
- ``choice(name, choices)``: an enumeration. ``flag(name)``: store_true (``store_false`` with ``negate=True``).
- ``text(name, parse)``: anything else (a crop, a ``K/N`` part, a structure string): ``parse(str)`` returns the
  value or raises ``ValueError``/``UserError`` with the reason; the empty string is always refused.
- ``threads()``, ``seed()``, ``jobs()``: the common counts.
- ``input_file(name, fmt, special=())``, ``input_dir(name, fmt)``, ``input_dirs(name, fmt)`` (comma-separated),
  ``input_path(name, fmt)`` (a file or a folder): the path must exist and be of that kind; ``special`` values
  (``default``, ``sample``) pass unchecked. ``fmt`` names the file format in :mod:`golden.formats`, whose
  validator the command's loader runs before using the contents.
- ``output_file(name, suffixes=())``, ``output_dir(name, replaces=False)``, ``output_stem(name, suffixes)``
  (``STEM.json``, ``STEM.md``, ...), ``work_dir(name)`` (scratch), ``cache_file(name, fmt)`` and
  ``cache_dir(name, fmt)`` (read when valid, rewritten): the path must be non-empty, must not equal or lie inside
  any input path (nor another output), and must be writable (:mod:`golden.files`); a replaced output folder must
  not hold an input either. Nothing is created at parse time. An input or output whose option does not apply in
  the chosen mode is not checked.

Rules: ``when=When("method", "dfsq-hw", "dfsq-uniform-hw")`` declares that an option has an effect only when the
option ``method`` has one of those values (several :class:`When` in a tuple: all must hold); an option given on
the command line in any other mode is refused ("--scale-bits applies only with --method dfsq-hw or ..."), never
silently ignored. ``ap.given()`` is the set of dests the command line set.

Errors: argparse's own errors (unknown option, missing value, bad choice) and every check above print one line,
``error: ...``, on stderr and exit 2; ``--help`` prints the help and exits 0.

Declarations: every option a builder adds carries ``action.decl`` (:class:`Decl`: ``kind``, ``role``, bounds,
choices, ``fmt``, ``when``); ``Parser.declared()`` lists them, so tests/test_cli_fuzz.py derives bad values for
every option of every command and fails on an option added without a declaration.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError
from .files import check_output_dir, check_output_file

__all__ = ["Parser", "When", "Decl", "plain_name", "SEED_MAX", "THREADS_MAX", "JOBS_MAX"]

SEED_MAX = 2 ** 32 - 1
THREADS_MAX = 1024
JOBS_MAX = 256

#: kinds of option and the role each plays (tests/test_cli_fuzz.py derives its bad values from these)
KINDS = {"int": "param", "real": "param", "int_list": "param", "real_list": "param", "choice": "mode",
         "choice_list": "param", "name_list": "param", "item_list": "param", "indices": "param",
         "flag": "switch", "text": "param",
         "input_file": "input", "input_dir": "input", "input_dirs": "input", "input_path": "input",
         "output_file": "output", "output_dir": "output", "output_stem": "output", "work_dir": "work",
         "cache_file": "cache", "cache_dir": "cache"}
PATH_ROLES = ("input", "output", "work", "cache")


class When:
    """The option has an effect only when option ``dest`` has one of ``values`` (its parsed value, default
    included); ``When.given(dest)``: only when option ``dest`` is set (not None)."""

    def __init__(self, dest: str, *values, negate: bool = False):
        if not values:
            raise ValueError("When needs at least one value")
        self.dest = dest.lstrip("-").replace("-", "_")
        self.values = tuple(values)
        self.negate = negate

    @classmethod
    def given(cls, dest: str) -> "When":
        return cls(dest, None, negate=True)

    def holds(self, args) -> bool:
        return (getattr(args, self.dest) in self.values) != self.negate

    def describe(self) -> str:
        opt = "--" + self.dest.replace("_", "-")
        if self.negate and self.values == (None,):
            return opt
        if self.values in ((True,), (False,), (None,)):
            return opt if self.values[0] else f"no {opt}"
        shown = " or ".join(str(v) for v in self.values)
        return f"{opt} other than {shown}" if self.negate else f"{opt} {shown}"

    def __repr__(self) -> str:
        return f"When({self.dest!r}, {', '.join(map(repr, self.values))}{', negate=True' if self.negate else ''})"


@dataclass
class Decl:
    """What an option is: its ``kind`` (a key of :data:`KINDS`), ``role`` (param, mode, switch, input, output,
    work, cache), numeric bounds, choices, file format and the modes it applies in."""

    kind: str
    role: str
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    choices: tuple = ()
    fmt: str | None = None
    special: tuple = ()
    suffixes: tuple = ()
    resolve: object = None
    replaces: bool = False
    when: tuple = ()
    extra: dict = field(default_factory=dict)


# --- value parsers (argparse ``type=`` callables: ArgumentTypeError becomes "argument --x: <message>") --------------
def _int(text: str) -> int:
    s = text.strip()
    if not s or not (s.lstrip("+-").isdigit()):
        raise ValueError
    return int(s)


def _range_text(lo, hi, lo_open=False, hi_open=False) -> str:
    if lo is not None and hi is not None:
        if not lo_open and not hi_open:
            return f"in {lo:g}..{hi:g}" if isinstance(lo, float) or isinstance(hi, float) else f"in {lo}..{hi}"
        return f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo:g}"
    return f"{'<' if hi_open else '<='} {hi:g}"


def _int_type(lo: int, hi: int, special: tuple = ()):
    def parse(text: str) -> int:
        if text in special:
            return text
        try:
            v = _int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer {_range_text(lo, hi)}, got {text!r}") from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"must be an integer {_range_text(lo, hi)}, got {text!r}")
        return v
    parse.__name__ = "integer"
    return parse


def _real_type(lo: float, hi: float, lo_open: bool, hi_open: bool):
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            v = math.nan
        ok = math.isfinite(v) and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
        if not ok:
            raise argparse.ArgumentTypeError(f"must be a number {_range_text(lo, hi, lo_open, hi_open)}, "
                                             f"got {text!r}")
        return v
    parse.__name__ = "number"
    return parse


def _list_type(item, what: str, special: tuple = ()):
    def parse(text: str) -> list:
        if text in special:
            return text
        items = text.split(",")
        if not text.strip() or any(not s.strip() for s in items):
            raise argparse.ArgumentTypeError(f"must be a comma-separated list of {what}, got {text!r}")
        out = []
        for s in items:
            try:
                v = item(s.strip())
            except argparse.ArgumentTypeError as exc:
                raise argparse.ArgumentTypeError(f"{exc} (in the list {text!r})") from None
            if v in out:
                raise argparse.ArgumentTypeError(f"lists {s.strip()!r} twice in {text!r}")
            out.append(v)
        return out
    parse.__name__ = "list"
    return parse


def _choice_type(choices):
    def parse(text: str):
        for c in choices:
            if text == str(c):
                return c
        raise argparse.ArgumentTypeError(f"invalid choice {text!r} (choose from {', '.join(map(str, choices))})")
    parse.__name__ = "choice"
    return parse


def _text_type(fn):
    def parse(text: str):
        if not text.strip():
            raise argparse.ArgumentTypeError("must not be empty")
        try:
            return fn(text)
        except (ValueError, UserError) as exc:
            raise argparse.ArgumentTypeError(str(exc).strip().splitlines()[0] if str(exc).strip()
                                             else f"invalid value {text!r}") from None
    parse.__name__ = getattr(fn, "__name__", "value")
    return parse


def _special(special, text) -> bool:
    """``text`` is one of the option's special words (a tuple), or passes its special test (a callable)."""
    return special(text) if callable(special) else text in special


def _path_type(kind: str, special):
    """Syntax only (existence and writability are checked after parsing, when the mode is known)."""
    def parse(text: str) -> str:
        if _special(special, text):
            return text
        if not text:
            raise argparse.ArgumentTypeError("the path is empty")
        if "\0" in text:
            raise argparse.ArgumentTypeError(f"{text!r} is not a path")
        p = Path(text)
        if kind == "output_stem":
            if text.endswith(("/", os.sep)) or p.is_dir():
                raise argparse.ArgumentTypeError(f"{text} is a folder; give a file stem (STEM.json, STEM.md ...)")
            if p.name in ("", ".", ".."):
                raise argparse.ArgumentTypeError(f"{text!r} is not a file stem")
        elif kind in ("output_file", "cache_file"):
            if text.endswith(("/", os.sep)) or p.name in ("", ".", ".."):
                raise argparse.ArgumentTypeError(f"{text!r} is not a file name")
        return text
    parse.__name__ = "path"
    return parse


def _input_problem(kind: str, text: str) -> str | None:
    p = Path(text)
    if kind == "input_file":
        if not p.exists():
            return f"file not found: {text}"
        if not p.is_file():
            return f"{text} is {'a folder' if p.is_dir() else 'not a regular file'}, expected a file"
        if not os.access(p, os.R_OK):
            return f"{text} is not readable"
    elif kind == "input_path":
        if not p.exists():
            return f"not found: {text}"
        if not (p.is_file() or p.is_dir()):
            return f"{text} is neither a file nor a folder"
    elif kind == "input_dir":
        if not p.exists():
            return f"folder not found: {text}"
        if not p.is_dir():
            return f"{text} is not a folder"
        if not os.access(p, os.R_OK | os.X_OK):
            return f"{text} is not readable"
    return None


def plain_name(text: str) -> str:
    """A ``text`` parser for a file name without a folder (an output stem such as ``--name``)."""
    if ("/" in text or os.sep in text or text in (".", "..") or text != text.strip()
            or any(ord(c) < 32 for c in text)):
        raise ValueError(f"{text!r} is not a plain file name")
    return text


# --- the parser -----------------------------------------------------------------------------------------------
_RECORDING: dict = {}


def _recording(cls):
    """A subclass of the action class ``cls`` that notes its dest in the parser's ``given`` set when it runs."""
    if cls not in _RECORDING:
        def __call__(self, parser, namespace, values, option_string=None):
            getattr(parser, "_given", set()).add(self.dest)
            return cls.__call__(self, parser, namespace, values, option_string)
        _RECORDING[cls] = type(cls.__name__, (cls,), {"__call__": __call__})
    return _RECORDING[cls]


def _same_or_inside(a: Path, b: Path) -> bool:
    """``a`` is ``b`` or lies inside the folder ``b`` (both resolved; symlinks followed)."""
    return a == b or b in a.parents


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (exit 2), with the typed builders of this module."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self._given: set = set()

    # -- one line, exit 2 ------------------------------------------------------------------------------------
    def error(self, message: str):
        lines = str(message).strip().splitlines()
        print(f"error: {lines[0] if lines else 'bad arguments'}", file=sys.stderr)
        raise SystemExit(2)

    def exit(self, status: int = 0, message: str | None = None):
        if message:
            lines = message.strip().splitlines()
            print(lines[0] if lines else "", file=sys.stderr)
        raise SystemExit(status)

    def add_argument(self, *args, **kwargs):
        action = super().add_argument(*args, **kwargs)
        action.__class__ = _recording(action.__class__)
        return action

    def parse_known_args(self, args=None, namespace=None):
        self._given = set()
        ns, rest = super().parse_known_args(args, namespace)
        self._check(ns)
        return ns, rest

    def given(self) -> set:
        """The dests that the last command line set explicitly."""
        return set(self._given)

    def declared(self) -> list:
        """Every option's action except --help (each should carry ``decl``)."""
        return [a for a in self._actions if not isinstance(a, argparse._HelpAction)]

    # -- checks after parsing -------------------------------------------------------------------------------
    def _check(self, ns) -> None:
        for a in self.declared():
            d = getattr(a, "decl", None)
            if d is None or not d.when or a.dest not in self._given:
                continue
            failed = [w for w in d.when if not w.holds(ns)]
            if failed:
                self.error(f"{self._name(a)} applies only with {' and '.join(w.describe() for w in d.when)} "
                           f"(here {', '.join(self._shown(ns, w.dest) for w in failed)})")
        self._check_paths(ns)

    def _in_effect(self, action, ns) -> bool:
        """The option was given, or its default is used in this mode."""
        d = action.decl
        return action.dest in self._given or all(w.holds(ns) for w in d.when)

    def _name(self, action) -> str:
        return action.option_strings[-1] if action.option_strings else action.dest

    def _shown(self, ns, dest: str) -> str:
        v = getattr(ns, dest)
        opt = "--" + dest.replace("_", "-")
        if isinstance(v, bool) or v is None:
            return opt if v else f"no {opt}"
        return f"{opt} {v}"

    def _check_paths(self, ns) -> None:
        inputs, outputs = [], []
        for a in self.declared():
            d = getattr(a, "decl", None)
            v = getattr(ns, a.dest, None)
            if d is None or d.role not in PATH_ROLES or v is None or not self._in_effect(a, ns):
                continue
            if not isinstance(v, list) and _special(d.special, v):
                stands_for = d.resolve(ns, v) if d.resolve is not None else None
                if stands_for is not None:
                    inputs.append((a, Path(stands_for).resolve()))
                continue
            if d.role == "input":
                for one in (v if isinstance(v, list) else [v]):
                    problem = _input_problem("input_dir" if d.kind == "input_dirs" else d.kind, one)
                    if problem:
                        self.error(f"argument {self._name(a)}: {problem}")
                    inputs.append((a, Path(one).resolve()))
            else:
                paths = [Path(f"{v}{s}") for s in d.suffixes] if d.kind == "output_stem" else [Path(v)]
                outputs.append((a, d, paths))
        for a, d, paths in outputs:
            name = self._name(a)
            for p in paths:
                r = p.resolve()
                for ia, ip in inputs:
                    if _same_or_inside(r, ip):
                        self.error(f"{name} {p} {'is' if r == ip else 'lies inside'} the input "
                                   f"{self._name(ia)} {getattr(ns, ia.dest)}; choose another output")
                    if d.replaces and r in ip.parents:
                        self.error(f"{name} {p} would replace the folder holding the input {self._name(ia)} "
                                   f"{getattr(ns, ia.dest)}; choose another output")
                for oa, od, opaths in outputs:
                    if oa is a:
                        continue
                    for q in opaths:
                        rq = q.resolve()
                        if rq == r or (od.replaces and rq in r.parents):
                            self.error(f"{name} {p} collides with {self._name(oa)} {getattr(ns, oa.dest)}")
                try:
                    if d.kind in ("output_dir", "work_dir", "cache_dir"):
                        check_output_dir(p, name)
                    else:
                        check_output_file(p, name)
                except UserError as exc:
                    self.error(str(exc))

    # -- builders -------------------------------------------------------------------------------------------
    def _declare(self, name, decl: Decl, when=None, **kwargs):
        if when is not None:
            decl.when = (when,) if isinstance(when, When) else tuple(when)
        action = self.add_argument(name, **kwargs)
        action.decl = decl
        return action

    def integer(self, name, lo: int, hi: int, *, special=(), when=None, **kw):
        special = tuple(special)
        return self._declare(name, Decl("int", "param", lo=lo, hi=hi, special=special), when,
                             type=_int_type(lo, hi, special), **kw)

    def real(self, name, lo: float, hi: float, *, lo_open=False, hi_open=False, when=None, **kw):
        return self._declare(name, Decl("real", "param", lo=lo, hi=hi, lo_open=lo_open, hi_open=hi_open), when,
                             type=_real_type(lo, hi, lo_open, hi_open), **kw)

    def fraction(self, name, *, when=None, **kw):
        return self.real(name, 0.0, 1.0, when=when, **kw)

    def int_list(self, name, lo: int, hi: int, *, special=(), when=None, **kw):
        special = tuple(special)
        return self._declare(name, Decl("int_list", "param", lo=lo, hi=hi, special=special), when,
                             type=_list_type(_int_type(lo, hi), f"integers {_range_text(lo, hi)}", special), **kw)

    def real_list(self, name, lo: float, hi: float, *, lo_open=False, hi_open=False, when=None, **kw):
        return self._declare(name, Decl("real_list", "param", lo=lo, hi=hi, lo_open=lo_open, hi_open=hi_open),
                             when, type=_list_type(_real_type(lo, hi, lo_open, hi_open), "numbers"), **kw)

    def name_list(self, name, *, when=None, **kw):
        """Comma-separated names (folders, sets): no empty item, no duplicate, no path separator."""
        def item(text: str) -> str:
            if "/" in text or os.sep in text or text in (".", ".."):
                raise argparse.ArgumentTypeError(f"{text!r} is not a name")
            return text
        return self._declare(name, Decl("name_list", "param"), when, type=_list_type(item, "names"), **kw)

    def item_list(self, name, parse, what: str, *, example: str, when=None, **kw):
        """Comma-separated items, each ``parse(str)`` -> value (``ValueError``/``UserError``: refused with its
        reason); no empty item, no duplicate (of the parsed value). ``what``: the items, for messages."""
        def item(text: str):
            try:
                return parse(text)
            except (ValueError, UserError) as exc:
                first = str(exc).strip().splitlines()
                raise argparse.ArgumentTypeError(first[0] if first else f"invalid item {text!r}") from None
        item(example)   # the declared example must be valid
        return self._declare(name, Decl("item_list", "param", extra={"example": example}), when,
                             type=_list_type(item, what), **kw)

    def indices(self, name, *, hi: int = 100_000, when=None, **kw):
        """``all`` (parsed as None) or comma-separated indices 0..hi (layers, samples)."""
        items = _list_type(_int_type(0, hi), f"indices in 0..{hi}")

        def parse(text: str):
            if text == "all":
                return None
            try:
                return items(text)
            except argparse.ArgumentTypeError:
                raise argparse.ArgumentTypeError(f"must be 'all' or distinct comma-separated indices in 0..{hi}, "
                                                 f"got {text!r}") from None
        parse.__name__ = "indices"
        kw.setdefault("default", None)
        return self._declare(name, Decl("indices", "param", lo=0, hi=hi), when, type=parse, **kw)

    def choice(self, name, choices, *, when=None, **kw):
        choices = tuple(choices)
        return self._declare(name, Decl("choice", "mode", choices=choices), when, type=_choice_type(choices),
                             metavar=kw.pop("metavar", "{" + ",".join(map(str, choices)) + "}"), **kw)

    def choice_list(self, name, choices, *, when=None, **kw):
        choices = tuple(choices)
        return self._declare(name, Decl("choice_list", "param", choices=choices), when,
                             type=_list_type(_choice_type(choices), ", ".join(map(str, choices))), **kw)

    def flag(self, name, *, negate: bool = False, when=None, **kw):
        return self._declare(name, Decl("flag", "switch"), when,
                             action="store_false" if negate else "store_true", **kw)

    def text(self, name, parse, *, when=None, **kw):
        return self._declare(name, Decl("text", "param"), when, type=_text_type(parse), **kw)

    def threads(self, name="--threads", *, when=None, help="torch threads (default: torch's choice)", **kw):
        return self.integer(name, 1, THREADS_MAX, when=when, help=help, **kw)

    def seed(self, name="--seed", *, default=0, when=None, help="random seed", **kw):
        return self.integer(name, 0, SEED_MAX, default=default, when=when, help=help, **kw)

    def jobs(self, name="--jobs", *, default=1, when=None, help="parallel processes", **kw):
        return self.integer(name, 1, JOBS_MAX, default=default, when=when, help=help, **kw)

    def input_file(self, name, fmt: str, *, special=(), resolve=None, when=None, **kw):
        """``special``: words that pass unchecked (``("default",)``), or a test of such values (a callable);
        ``resolve(args, word)``: the file a special word stands for (so no output may overwrite it either)."""
        special = special if callable(special) else tuple(special)
        return self._declare(name, Decl("input_file", "input", fmt=fmt, special=special, resolve=resolve), when,
                             type=_path_type("input_file", special), **kw)

    def input_dir(self, name, fmt: str, *, special=(), when=None, **kw):
        special = tuple(special)
        return self._declare(name, Decl("input_dir", "input", fmt=fmt, special=special), when,
                             type=_path_type("input_dir", special), **kw)

    def input_dirs(self, name, fmt: str, *, when=None, **kw):
        """Comma-separated folders, each of which must exist."""
        def item(text: str) -> str:
            return _path_type("input_dir", ())(text)
        return self._declare(name, Decl("input_dirs", "input", fmt=fmt), when, type=_list_type(item, "folders"),
                             **kw)

    def input_path(self, name, fmt: str, *, when=None, **kw):
        """A file or a folder of files of format ``fmt``."""
        return self._declare(name, Decl("input_path", "input", fmt=fmt), when, type=_path_type("input_path", ()),
                             **kw)

    def output_file(self, name, *, suffixes=(), when=None, **kw):
        """``suffixes``: the file types allowed (``(".png",)``); any when empty."""
        syntax = _path_type("output_file", ())

        def parse(text: str) -> str:
            text = syntax(text)
            if suffixes and not text.lower().endswith(tuple(suffixes)):
                raise argparse.ArgumentTypeError(f"must be a {' or '.join(suffixes)} file, got {text!r}")
            return text
        return self._declare(name, Decl("output_file", "output", suffixes=tuple(suffixes)), when, type=parse, **kw)

    def output_dir(self, name, *, replaces: bool = False, when=None, **kw):
        return self._declare(name, Decl("output_dir", "output", replaces=replaces), when,
                             type=_path_type("output_dir", ()), **kw)

    def output_stem(self, name, suffixes=(".json", ".md"), *, when=None, **kw):
        return self._declare(name, Decl("output_stem", "output", suffixes=tuple(suffixes)), when,
                             type=_path_type("output_stem", ()), **kw)

    def work_dir(self, name, *, when=None, **kw):
        return self._declare(name, Decl("work_dir", "work"), when, type=_path_type("work_dir", ()), **kw)

    def cache_dir(self, name, fmt: str, *, when=None, **kw):
        """A folder of cache entries of format ``fmt`` (an entry that fails its validator is rebuilt)."""
        return self._declare(name, Decl("cache_dir", "cache", fmt=fmt), when, type=_path_type("cache_dir", ()),
                             **kw)

    def cache_file(self, name, fmt: str, *, when=None, **kw):
        return self._declare(name, Decl("cache_file", "cache", fmt=fmt), when, type=_path_type("cache_file", ()),
                             **kw)
