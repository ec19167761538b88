"""The embedded default checkpoints (trained by this project, see weights/README.md)."""
from __future__ import annotations

from pathlib import Path

from golden.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS_DIR = ROOT / "weights"


def default_weights(scale: int) -> Path:
    return WEIGHTS_DIR / f"edsr_baseline_x{scale}.pt"


def resolve_weights(weights: str | Path, scale: int) -> Path:
    """``default`` means the embedded checkpoint for ``scale``; anything else is a path."""
    if str(weights) == "default":
        path = default_weights(scale)
        if not path.is_file():
            raise UserError(f"no embedded default checkpoint for x{scale} at {path}")
        return path
    return Path(weights)
