"""The embedded default checkpoints (trained by this project, see weights/README.md)."""
from __future__ import annotations

from pathlib import Path

from golden.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS_DIR = ROOT / "weights"


DEFAULT_FILES = {"edsr": "edsr_baseline_x{scale}.pt", "rdn": "rdn_s_x{scale}.pt"}


def default_weights(scale: int, arch: str = "edsr") -> Path:
    return WEIGHTS_DIR / DEFAULT_FILES[arch].format(scale=scale)


def resolve_weights(weights: str | Path, scale: int, arch: str = "edsr") -> Path:
    """``default`` means the embedded checkpoint of ``arch`` for ``scale``; anything else is a path."""
    if str(weights) == "default":
        path = default_weights(scale, arch)
        if not path.is_file():
            raise UserError(f"no embedded default {arch} checkpoint for x{scale} at {path}")
        return path
    return Path(weights)


def _default_for(args, word: str):
    """The embedded checkpoint ``--weights default`` stands for (the run's scale and network)."""
    scale, arch = getattr(args, "scale", 2), getattr(args, "model", "edsr")
    if word != "default" or not isinstance(scale, int) or arch not in DEFAULT_FILES:
        return None
    return default_weights(scale, arch)


def weights_option(ap, *, when=None, help="checkpoint path, or 'default' for the embedded one"):
    """The ``--weights`` option of a command (:class:`golden.args.Parser`): a checkpoint file, or ``default``
    (the embedded one for the run's ``--scale`` and ``--model``, which no output may overwrite either)."""
    return ap.input_file("--weights", "checkpoint", special=("default",), resolve=_default_for, default="default",
                         when=when, help=help)
