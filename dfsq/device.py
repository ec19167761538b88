"""Where the PyTorch stages run: ``--device cpu`` (the default, what every figure in docs/ was measured on unless
it says otherwise) or ``cuda`` (an accelerator, when one is at hand; the project never needs one)."""
from __future__ import annotations

import torch

from golden.errors import UserError

DEVICES = ("cpu", "cuda")


def resolve_device(name: str, exact: bool = True) -> torch.device:
    """The torch device for ``--device name``; a missing accelerator is a one-line error. With ``exact``, CUDA
    convolutions and matmuls run in full float32 (TF32 off), as evaluation needs; training may leave TF32 on."""
    if name not in DEVICES:
        raise UserError(f"--device must be one of {', '.join(DEVICES)}, got {name!r}")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise UserError("--device cuda: no CUDA device is available to this PyTorch (use --device cpu)")
        torch.backends.cudnn.allow_tf32 = not exact
        torch.backends.cuda.matmul.allow_tf32 = not exact
        torch.backends.cudnn.benchmark = True
    return torch.device(name)


def module_device(module: torch.nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (CPU for a module with neither)."""
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")
