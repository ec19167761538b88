"""The registry of file formats: one validator per format, each living with the format's owner module.

Every file or folder a command reads is of one of these formats. Its validator takes the path, reads it safely
(``np.load(..., allow_pickle=False)``, ``torch.load(..., weights_only=True)``, ``json.loads``) and either returns
the checked contents or raises :class:`golden.errors.UserError` in one line that names the file and the field. A
command runs the validator (through its format's loader) before it uses the contents; a cache that fails its
validator is refused or rebuilt, never half-used.

Options declare their format (:meth:`golden.args.Parser.input_file` ``fmt=``), so tests/test_cli_fuzz.py feeds
every input option a missing, empty, truncated and garbled file of its format, and tests/test_formats.py garbles a
valid sample of every format here and checks the validator refuses each variant in one line.

Validators are named ``"module:function"`` and imported on use (golden stays free of torch).
"""
from __future__ import annotations

import importlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError

__all__ = ["Format", "FORMATS", "validator", "validate", "read_npz", "read_json", "need", "INT", "NUMBER", "TEXT", "FLAG"]


@dataclass(frozen=True)
class Format:
    """``kind``: ``file`` or ``folder``; ``validator``: ``module:function`` (path -> contents, or UserError);
    ``text``: what it is (for messages and docs)."""

    kind: str
    validator: str
    text: str


FORMATS: dict[str, Format] = {
    "checkpoint": Format("file", "dfsq.model:validate_checkpoint", "network weights (.pt, a state_dict)"),
    "train-state": Format("file", "dfsq.train:validate_state", "dfsq.train's resume file (.pt.state)"),
    "params": Format("file", "dfsq.calibrate:load_params", "calibration params (.npz, dfsq.calibrate)"),
    "export": Format("folder", "golden.export_io:validate_export", "export folder (manifest.json + layer .npz)"),
    "image": Format("file", "dfsq.data:load_rgb", "an image (PNG, BMP, JPEG, TIFF, WebP)"),
    "images": Format("folder", "dfsq.data:validate_image_folder", "a folder of images"),
    "benchmarks": Format("folder", "dfsq.data:validate_benchmark_root", "benchmark root (SET/HR/*.png)"),
    "psnr-cache": Format("file", "bench.psnr_table:load_cache", "bench.psnr_table's result cache (JSON)"),
    "minmax-cache": Format("file", "bench.minmax_study:load_study_cache", "bench.minmax_study's cache (JSON)"),
    "tile-stats-cache": Format("file", "bench.tile_stats:load_cache", "bench.tile_stats's cache (JSON)"),
    "psnr-results": Format("file", "hw.report:load_psnr", "PSNR result JSON (a file or a folder of them)"),
    "hw-report": Format("file", "hw.report:reused_results", "an earlier hw.report --json (docs/hardware.json)"),
    "synth-entry": Format("file", "hw.synth:validate_entry", "one hw.report synthesis cache entry (JSON)"),
    "calib-rows": Format("file", "bench.calib_scale:load_rows", "bench.calib_scale's measured rows (JSON lines)"),
    "sidecar": Format("file", "hw.generate:load_sidecar", "hw.generate's Verilog sidecar (JSON)"),
    "uniform-stats": Format("file", "dfsq.uniform:load_stats", "cached calibration statistics (.npz)"),
    "selection-speed": Format("file", "bench.selection_speed:load_result", "bench.selection_speed's JSON"),
    "recon": Format("file", "dfsq.recon_file:load_recon", "a reconstruction file (.npz, dfsq.reconstruct)"),
}


def validator(fmt: str):
    """The validator function of format ``fmt``."""
    module, func = FORMATS[fmt].validator.split(":")
    return getattr(importlib.import_module(module), func)


def validate(fmt: str, path):
    """Run format ``fmt``'s validator on ``path``: its contents, or a one-line UserError."""
    return validator(fmt)(path)


# --- helpers for validators -------------------------------------------------------------------------------------
def read_npz(path, what: str) -> dict:
    """Every array of the ``.npz`` file ``path`` (a ``what``), read with ``allow_pickle=False``; a one-line UserError
    naming the file when it is missing, not a zip of .npy files, truncated, or claims more memory than there is."""
    import zipfile

    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise UserError(f"{what} not found: {path}") from None
    except MemoryError:
        raise UserError(f"{path}: an array claims more memory than there is (a corrupt header?)") from None
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, KeyError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"{path}: not a readable .npz file ({first[:120]})") from None


# --- helpers for JSON validators -------------------------------------------------------------------------------
def read_json(path, what: str):
    """The parsed JSON of ``path`` (a ``what``), or a one-line UserError naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{what} not found: {path}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a {what} (not UTF-8 text)") from None
    except OSError as exc:
        raise UserError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise UserError(f"{path}: not valid JSON ({str(exc).splitlines()[0][:80]}); expected a {what}") from None


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


#: field types for :func:`need`: (test, name)
INT = (_is_int, "an integer")
NUMBER = (_is_number, "a finite number")
TEXT = (lambda v: isinstance(v, str), "a string")
FLAG = (lambda v: isinstance(v, bool), "true or false")
OBJECT = (lambda v: isinstance(v, dict), "an object")
LIST = (lambda v: isinstance(v, list), "a list")


def need(obj, key: str, kind, where: str, *, optional: bool = False, null: bool = False, check=None,
         expect: str = ""):
    """``obj[key]`` if it is of ``kind`` (:data:`INT`, :data:`NUMBER`, ...; ``null``: None allowed) and passes
    ``check``; else a one-line UserError naming ``where`` and the field. ``optional``: a missing key gives None."""
    if not isinstance(obj, dict):
        raise UserError(f"{where}: expected an object, got {type(obj).__name__}")
    if key not in obj:
        if optional:
            return None
        raise UserError(f"{where}: field {key!r} is missing")
    v = obj[key]
    if v is None and null:
        return None
    test, name = kind
    if not test(v) or (check is not None and not check(v)):
        raise UserError(f"{where}: field {key!r} must be {expect or name}, got {json.dumps(v)[:60]}")
    return v
