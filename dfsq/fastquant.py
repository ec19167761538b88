"""A fused CPU kernel for DFSQ's activation fake-quantization, bit-identical to the torch reference.

:meth:`dfsq.quantize.QuantConv.quantize_act` normalizes, looks up codes and rescales in about twenty torch
passes over each activation; on large images (Urban100 at x2: 160 channels of 322 x 512 per RDN layer) those
memory-bound passes took 80 % of an RDN forward. ``fastquant.c`` does the same arithmetic in two passes over
the activation (max |x - mean|, then normalize, code and rescale), one correctly rounded float32 operation at
a time in the reference's order, compiled without FMA contraction or fast-math: the outputs are bit-identical
(tests/test_fastquant.py checks ``torch.equal`` against the torch path on edge values, real layers and NaN).
The per-channel mean stays with torch, whose summation order it must match.

The C file is compiled once with the system C compiler (``$CC``, else ``cc`` or ``gcc``) into
``$DFSQ_CACHE_DIR`` (default ``~/.cache/dfsq-hw``, or the temp folder when that is not writable), named by a
hash of source and flags, and loaded with ctypes; calls release the GIL, so planes are split over
``torch.get_num_threads()`` Python threads. Without a compiler, or with ``DFSQ_FASTQUANT=0``, or for tensors not
on the CPU, :func:`dfsq_fake_quant` returns None and the caller uses the torch path: the same numbers, slower.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("fastquant.c")
FLAGS = ["-O3", "-fPIC", "-shared", "-ffp-contract=off", "-fno-fast-math", "-std=c99"]
_lib = None       # the loaded library, False once building failed
_why = ""         # why the kernel is unavailable (python -m dfsq.fastquant prints it)


def _compiler() -> str | None:
    for cand in (os.environ.get("CC"), "cc", "gcc"):
        if cand and shutil.which(cand):
            return shutil.which(cand)
    return None


def _cache_dirs() -> list[Path]:
    env = os.environ.get("DFSQ_CACHE_DIR")
    dirs = [Path(env)] if env else [Path.home() / ".cache" / "dfsq-hw"]
    return dirs + [Path(tempfile.gettempdir()) / f"dfsq-hw-{os.getuid() if hasattr(os, 'getuid') else 'user'}"]


def _build() -> ctypes.CDLL | None:
    """Compile (once per source and flags) and load the kernel; None with :data:`_why` set when impossible."""
    global _why
    cc = _compiler()
    if cc is None:
        _why = "no C compiler (set CC, or install gcc)"
        return None
    src = SOURCE.read_bytes()
    tag = hashlib.sha256(src + " ".join(FLAGS).encode() + cc.encode()).hexdigest()[:16]
    for folder in _cache_dirs():
        lib = folder / f"fastquant-{tag}.so"
        try:
            if not lib.is_file():
                folder.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=folder, prefix=".fastquant-", suffix=".so")
                os.close(fd)
                try:
                    res = subprocess.run([cc, *FLAGS, "-o", tmp, str(SOURCE), "-lm"], capture_output=True,
                                         text=True, timeout=120)
                    if res.returncode != 0:
                        last = (res.stderr.strip().splitlines() or [f"exit status {res.returncode}"])[-1]
                        _why = f"{Path(cc).name} failed: {last}"
                        return None
                    os.replace(tmp, lib)
                finally:
                    if os.path.exists(tmp):
                        os.unlink(tmp)
            dll = ctypes.CDLL(str(lib))
        except (OSError, subprocess.SubprocessError) as exc:
            _why = f"cannot build or load the kernel in {folder}: {exc}"
            continue
        i64, f32p = ctypes.c_int64, ctypes.POINTER(ctypes.c_float)
        dll.dfsq_maxabs.argtypes = [f32p, f32p, f32p, i64, i64, i64]
        dll.dfsq_maxabs.restype = None
        dll.dfsq_fake_quant.argtypes = [f32p, f32p, f32p, f32p, f32p, f32p, i64, i64, i64, i64, ctypes.c_int]
        dll.dfsq_fake_quant.restype = None
        dll.dfsq_uniform_fake_quant.argtypes = [f32p, f32p, f32p, f32p, i64, i64, i64, i64, ctypes.c_float]
        dll.dfsq_uniform_fake_quant.restype = None
        _why = ""
        return dll
    return None


_OFF, _ON = ("0", "off", "false", "no"), ("", "1", "on", "true", "yes")


def fastquant_enabled() -> bool:
    """``DFSQ_FASTQUANT``: unset, 1, on, true or yes uses the kernel; 0, off, false or no the torch path (any case);
    anything else is a one-line UserError, never silently read as "on"."""
    value = os.environ.get("DFSQ_FASTQUANT", "1").strip().lower()
    if value in _OFF:
        return False
    if value in _ON:
        return True
    from golden.errors import UserError

    raise UserError(f"DFSQ_FASTQUANT must be 1/on/true/yes or 0/off/false/no, got {os.environ['DFSQ_FASTQUANT']!r}")


def library():
    """The loaded kernel, or None (see :func:`why_unavailable`)."""
    global _lib, _why
    if not fastquant_enabled():
        _why = f"disabled by DFSQ_FASTQUANT={os.environ['DFSQ_FASTQUANT']}"
        return None
    if _lib is None:
        _lib = _build() or False
    if _lib:
        _why = ""
    return _lib or None


def why_unavailable() -> str:
    library()
    return _why


def _ptr(t: torch.Tensor):
    return ctypes.cast(t.data_ptr(), ctypes.POINTER(ctypes.c_float))


def _split(planes: int, threads: int) -> list[tuple[int, int]]:
    threads = max(1, min(threads, planes))
    step = -(-planes // threads)
    return [(p, min(p + step, planes)) for p in range(0, planes, step)]


def _run(fn, planes: int, threads: int) -> None:
    chunks = _split(planes, threads)
    if len(chunks) == 1:
        fn(*chunks[0])
        return
    with ThreadPoolExecutor(len(chunks)) as pool:
        list(pool.map(lambda c: fn(*c), chunks))


_scratch = threading.local()


def scratch(shape) -> torch.Tensor:
    """A float32 tensor of ``shape`` in this thread's reusable buffer (grown when too small). Fresh 100-MB
    tensors cost more in page faults than the kernel itself; the buffer is overwritten by the next call."""
    numel = 1
    for d in shape:
        numel *= int(d)
    buf = getattr(_scratch, "buf", None)
    if buf is None or buf.numel() < numel:
        buf = _scratch.buf = None   # free the old one first
        buf = _scratch.buf = torch.empty(numel, dtype=torch.float32)
    return buf[:numel].view(*shape)


def dfsq_fake_quant(x: torch.Tensor, mean: torch.Tensor, eps: float, mid: torch.Tensor,
                    points: torch.Tensor, reuse: bool = False) -> torch.Tensor | None:
    """``xq`` of :meth:`dfsq.quantize.QuantConv.quantize_act` (normalized dfsq) for float32 ``x`` (N, C, H, W)
    given its per-(n, c) ``mean`` (N, C) as torch computed it; ``scale = maxabs + eps`` is formed by torch as in
    the reference. ``reuse``: the result lives in :func:`scratch` (valid until the next reusing call). None when
    the kernel cannot run here (the caller then uses the torch path)."""
    lib = library()
    k = points.shape[1]
    if (lib is None or x.device.type != "cpu" or x.dtype != torch.float32 or x.ndim != 4 or k < 2
            or k & (k - 1) or mid.shape != (points.shape[0], k - 1) or points.shape[0] != x.shape[1]):
        return None
    n, c, h, w = x.shape
    x = x.contiguous()
    mean = mean.to(torch.float32).contiguous()
    mid = mid.to(torch.float32).contiguous()
    points = points.to(torch.float32).contiguous()
    planes, hw, threads = n * c, h * w, torch.get_num_threads()
    maxabs = torch.empty(n, c, dtype=torch.float32)
    _run(lambda p0, p1: lib.dfsq_maxabs(_ptr(x), _ptr(mean), _ptr(maxabs), p0, p1, hw), planes, threads)
    scale = (maxabs + eps).contiguous()
    out = scratch(x.shape) if reuse else torch.empty_like(x)
    bits = k.bit_length() - 1
    _run(lambda p0, p1: lib.dfsq_fake_quant(_ptr(x), _ptr(mean), _ptr(scale), _ptr(mid), _ptr(points), _ptr(out),
                                            p0, p1, c, hw, bits), planes, threads)
    return out


def uniform_fake_quant(x: torch.Tensor, step: torch.Tensor, zero: torch.Tensor, qmax: int,
                       reuse: bool = False) -> torch.Tensor | None:
    """``(clamp(round(x / step) + zero, 0, qmax) - zero) * step`` for float32 ``x`` (N, C, H, W) with float32
    per-channel ``step`` and ``zero`` (C,), as the ``minmax`` path of :meth:`dfsq.quantize.QuantConv.quantize_act`
    computes it; ``reuse`` and None as for :func:`dfsq_fake_quant`."""
    lib = library()
    if lib is None or x.device.type != "cpu" or x.dtype != torch.float32 or x.ndim != 4:
        return None
    n, c, h, w = x.shape
    step = step.to(torch.float32).reshape(-1).contiguous()
    zero = zero.to(torch.float32).reshape(-1).contiguous()
    if step.numel() != c or zero.numel() != c:
        return None
    x = x.contiguous()
    out = scratch(x.shape) if reuse else torch.empty_like(x)
    _run(lambda p0, p1: lib.dfsq_uniform_fake_quant(_ptr(x), _ptr(step), _ptr(zero), _ptr(out), p0, p1, c, h * w,
                                                    float(qmax)), n * c, torch.get_num_threads())
    return out


if __name__ == "__main__":   # python -m dfsq.fastquant: build the kernel now and say where it is or why not
    lib = library()
    print(f"fastquant: {'ready' if lib else 'unavailable: ' + _why}", file=sys.stdout if lib else sys.stderr)
    sys.exit(0 if lib else 1)
