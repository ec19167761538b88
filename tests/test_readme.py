"""README.md is tested: every command of every ```bash block runs as written, in a fresh copy of the repository.

Each command line in README.md states its measured time in its comment ("# 12 s", "# ...; 3.5 min": CPU time,
which a loaded machine changes far less than wall time). The quick
ones (stated 15 s or less, naming no path under out/) run in ``make test``; the others run
in order, in one copy, behind ``slow``; a command stated at an hour or more runs only with DFSQ_README_HOURS=1
(``python -m hw.report`` synthesizes and places every design). Two lines are not commands to run:
``. .venv/bin/activate`` (the test puts .venv/bin first on PATH) and ``make test`` (this suite). A command added to
README.md without a stated time fails ``test_every_readme_command_states_its_time``.

The copy holds the tracked files of this working tree (``git ls-files``), the virtual environment linked in, and
``DFSQ_SHARED_DATA`` pointing at this checkout's data, so commands that default to paths inside the repository
(``rtl_out/``, ``docs/hardware.md``, ``build/``) write into the copy, never into this tree. The slow chain prints
each command's measured time and writes them to ``build/readme_times.json`` of this tree.
"""
from __future__ import annotations

import json
import os
import re
import resource
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOT_RUN = {". .venv/bin/activate": "shell set-up: the test puts .venv/bin first on PATH",
           "make test": "the test suite itself"}
QUICK_SECONDS = 15
HOURS = 3600
_TIME = re.compile(r"(\d+(?:\.\d+)?)\s*(s|min|h)\b")


def readme_commands(text: str | None = None) -> list[dict]:
    """Every command line of README.md's ```bash blocks: {"line", "command", "comment", "seconds"} (seconds: the
    time stated in the comment, the last one when several are given, None when none)."""
    text = (ROOT / "README.md").read_text() if text is None else text
    out, inside = [], False
    for n, raw in enumerate(text.splitlines(), 1):
        if raw.startswith("```"):
            inside = raw.strip() == "```bash" if not inside else False
            continue
        line = raw.strip()
        if not inside or not line or line.startswith("#"):
            continue
        command, _, comment = line.partition("#")
        command = command.strip()
        if not command:
            continue
        stated = None
        for value, unit in _TIME.findall(comment):
            stated = float(value) * {"s": 1, "min": 60, "h": 3600}[unit]
        out.append({"line": n, "command": command, "comment": comment.strip(), "seconds": stated})
    return out


def _kind(c: dict) -> str:
    if c["command"] in NOT_RUN:
        return "not-run"
    if c["seconds"] is None:
        return "unstated"
    if c["seconds"] >= HOURS:
        return "hours"
    if c["seconds"] <= QUICK_SECONDS and not any("out/" in t for t in shlex.split(c["command"])):
        return "quick"   # (a command naming out/ reads or writes what the chain's other commands use)
    return "slow"


def _copy_tree(dst: Path) -> Path:
    """The tracked files of this working tree under ``dst``, with .venv linked in (never rebuilt by make)."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for rel in filter(None, files.decode().split("\0")):
        src = ROOT / rel
        if not src.is_file():
            continue   # deleted in the working tree
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
    (dst / ".venv").symlink_to(ROOT / ".venv")
    old = (ROOT / ".venv" / ".installed").stat().st_mtime - 1 if (ROOT / ".venv" / ".installed").exists() else 0
    os.utime(dst / "pyproject.toml", (old, old))   # make sees the environment as up to date
    return dst


def _env(copy: Path) -> dict:
    from dfsq.data import SHARED_DATA

    env = dict(os.environ)
    env["PATH"] = f"{ROOT / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(copy)
    env["DFSQ_SHARED_DATA"] = str(SHARED_DATA)
    env.pop("PYTEST_CURRENT_TEST", None)
    return env


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _run(cmd: str, copy: Path) -> tuple[int, float, str, float]:
    """(exit code, wall seconds, the output's tail, CPU seconds of the command and its children)."""
    t0, c0 = time.perf_counter(), _cpu()
    p = subprocess.run(cmd, shell=True, cwd=copy, env=_env(copy), capture_output=True, text=True,
                       executable="/bin/bash")
    return p.returncode, time.perf_counter() - t0, (p.stdout + p.stderr)[-3000:], _cpu() - c0


@pytest.fixture(scope="module")
def copy(tmp_path_factory) -> Path:
    return _copy_tree(tmp_path_factory.mktemp("readme") / "dfsq-hw")


def test_every_readme_command_states_its_time():
    cmds = readme_commands()
    assert len(cmds) >= 30
    unstated = [f"line {c['line']}: {c['command']}" for c in cmds if _kind(c) == "unstated"]
    assert not unstated, "README commands without a measured time in their comment:\n" + "\n".join(unstated)


def test_the_copy_runs_its_own_code(copy):
    code, _, out, _ = _run(f"{sys.executable} -c 'import dfsq, sys; print(dfsq.__file__)'", copy)
    assert code == 0 and out.strip().startswith(str(copy)), out


QUICK = [c for c in readme_commands() if _kind(c) == "quick"]


@pytest.mark.parametrize("c", QUICK, ids=[f"line{c['line']}" for c in QUICK])
def test_quick_readme_command(c, copy):
    code, seconds, out, _ = _run(c["command"], copy)
    assert code == 0, f"README line {c['line']}: {c['command']}\nexit {code} after {seconds:.0f} s\n{out}"


@pytest.mark.slow
def test_readme_commands_in_order(tmp_path):
    """Every README command that is not quick, in README order (later ones read what earlier ones wrote), in one
    fresh copy; the measured times go to build/readme_times.json."""
    from golden.files import atomic_output

    copy = _copy_tree(tmp_path / "dfsq-hw")
    hours = os.environ.get("DFSQ_README_HOURS") == "1"
    times, failures = [], []
    for c in readme_commands():
        kind = _kind(c)
        if kind in ("not-run", "quick") or (kind == "hours" and not hours):
            continue
        print(f"README line {c['line']}: {c['command']}", flush=True)
        code, seconds, out, cpu = _run(c["command"], copy)
        print(f"  exit {code}, {seconds:.1f} s wall, {cpu:.1f} s CPU (stated {c['seconds']} s)", flush=True)
        times.append({"line": c["line"], "command": c["command"], "exit": code, "seconds": round(seconds, 1),
                      "cpu_seconds": round(cpu, 1), "stated": c["seconds"]})
        if code != 0:
            failures.append(f"line {c['line']}: {c['command']}: exit {code}\n{out}")
    with atomic_output(ROOT / "build" / "readme_times.json") as tmp:
        tmp.write_text(json.dumps(times, indent=1) + "\n")
    assert not failures, "\n\n".join(failures)
