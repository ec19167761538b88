"""EDSR-baseline (Lim et al. 2017) with the EDSR-PyTorch ``state_dict`` key layout.

16 residual blocks of 64 features, res_scale 1, 3x3 convs with bias, MeanShift with the DIV2K RGB mean,
rgb_range 255. Keys: ``head.0.*``, ``body.N.body.0.*`` / ``body.N.body.2.*`` (N = 0..15), ``body.16.*``,
``tail.0.0.*`` (and ``tail.0.2.*`` at x4), ``tail.1.*``. ``sub_mean.*`` / ``add_mean.*`` (the official
checkpoints' fixed 1x1 MeanShift convs) are accepted and ignored: the mean is a constant here.

The 32 convs inside the residual blocks are the ones DFSQ quantizes; :func:`quantized_convs` lists them in
network order.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from golden.errors import UserError

RGB_MEAN = (0.4488, 0.4371, 0.4040)
RGB_RANGE = 255.0
N_RESBLOCKS = 16
N_FEATS = 64
SCALES = (2, 4)


def _conv(cin: int, cout: int, k: int = 3) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=k // 2, bias=True)


class ResBlock(nn.Module):
    """conv - ReLU - conv, plus the identity. ``body.0`` and ``body.2`` are the quantized convs."""

    def __init__(self, n_feats: int, res_scale: float = 1.0):
        super().__init__()
        self.body = nn.Sequential(_conv(n_feats, n_feats), nn.ReLU(inplace=True), _conv(n_feats, n_feats))
        self.res_scale = res_scale

    def forward(self, x):
        return self.body(x) * self.res_scale + x


class Upsampler(nn.Sequential):
    """conv(n, 4n) + PixelShuffle(2), once per factor 2 (keys ``tail.0.0``, ``tail.0.2``)."""

    def __init__(self, scale: int, n_feats: int):
        layers: list[nn.Module] = []
        for _ in range({2: 1, 4: 2}[scale]):
            layers += [_conv(n_feats, 4 * n_feats), nn.PixelShuffle(2)]
        super().__init__(*layers)


class EDSR(nn.Module):
    """EDSR-baseline. Input and output are RGB in [0, 255], shape (B, 3, H, W)."""

    def __init__(self, scale: int = 2, n_resblocks: int = N_RESBLOCKS, n_feats: int = N_FEATS,
                 res_scale: float = 1.0):
        super().__init__()
        if scale not in SCALES:
            raise UserError(f"scale must be one of {SCALES}, got {scale}")
        self.scale = scale
        self.register_buffer("rgb_mean", torch.tensor(RGB_MEAN).view(1, 3, 1, 1) * RGB_RANGE, persistent=False)
        self.head = nn.Sequential(_conv(3, n_feats))
        self.body = nn.Sequential(*[ResBlock(n_feats, res_scale) for _ in range(n_resblocks)],
                                  _conv(n_feats, n_feats))
        self.tail = nn.Sequential(Upsampler(scale, n_feats), _conv(n_feats, 3))

    def forward(self, x):
        x = self.head(x - self.rgb_mean)
        x = self.body(x) + x
        return self.tail(x) + self.rgb_mean

    @property
    def label(self) -> str:
        return f"EDSR-baseline x{self.scale}"


def quantized_convs(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """The convs DFSQ quantizes, in network order, as (name, conv): for EDSR (``body.N.body.0``, conv),
    (``body.N.body.2``, conv), ...; the list comes from the model's adapter (:mod:`dfsq.adapters`)."""
    from .adapters import get_module, quantized_layers

    return [(q.name, get_module(model, q.name)) for q in quantized_layers(model)]


_IGNORED_PREFIXES = ("sub_mean.", "add_mean.")


def check_state_dict(model: nn.Module, state: dict) -> dict:
    """Validate ``state`` against ``model``: every key present, no unknown key, every shape equal.

    Returns the state without the ignored MeanShift keys. Raises :class:`UserError` naming the first offenders.
    """
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise UserError("checkpoint is not a state_dict (a mapping of parameter names to tensors)")
    state = {k: v for k, v in state.items() if not k.startswith(_IGNORED_PREFIXES)}
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unknown = [k for k in state if k not in expected]
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:3]}{' ...' if len(missing) > 3 else ''}")
        if unknown:
            parts.append(f"unknown keys {unknown[:3]}{' ...' if len(unknown) > 3 else ''}")
        raise UserError("checkpoint does not match %s: %s" % (model.label, "; ".join(parts)))
    for k, v in expected.items():
        t = state[k]
        if not torch.is_tensor(t):
            raise UserError(f"checkpoint entry {k!r} is not a tensor")
        if tuple(t.shape) != tuple(v.shape):
            raise UserError(f"checkpoint entry {k!r} has shape {tuple(t.shape)}, expected {tuple(v.shape)} "
                            f"(is it a {model.label}?)")
        if not torch.isfinite(t.float()).all():
            raise UserError(f"checkpoint entry {k!r} holds NaN or infinite values")
    return state


def load_state(path: str | Path) -> dict:
    """Load a checkpoint file safely (``weights_only=True``). Accepts a bare state_dict or ``{'model': ...}``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():  # a refused file is one line, not a warning and a line
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"cannot read checkpoint {path}: {first[:200]}") from None
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    return obj


ARCHS = ("edsr", "rdn")


def build_model(arch: str, scale: int, config=None) -> nn.Module:
    """A randomly initialised network: ``edsr`` (EDSR-baseline) or ``rdn`` (``config``: an RDNConfig, default S)."""
    if arch == "edsr":
        return EDSR(scale)
    if arch == "rdn":
        from .rdn import CONFIGS, RDN

        return RDN(scale, config or CONFIGS["S"])
    raise UserError(f"model must be one of {', '.join(ARCHS)}, got {arch!r}")


def model_from_state(arch: str, state: dict, scale: int) -> nn.Module:
    """Build ``arch`` at ``scale`` with the structure ``state`` implies, check ``state`` against it and load it."""
    config = None
    if arch == "rdn":
        from .rdn import config_from_state

        config = config_from_state(state)
    model = build_model(arch, scale, config)
    state = check_state_dict(model, state)
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return model.eval()


def load_model(arch: str, weights: str | Path, scale: int) -> nn.Module:
    """Build ``arch`` at ``scale`` and load ``weights`` (a path, or ``default`` for the embedded model)."""
    from .weights import resolve_weights

    if arch not in ARCHS:
        raise UserError(f"model must be one of {', '.join(ARCHS)}, got {arch!r}")
    path = resolve_weights(weights, scale, arch)
    try:
        return model_from_state(arch, load_state(path), scale)
    except UserError as exc:
        text = str(exc)
        raise UserError(text if str(path) in text else f"{path}: {text}") from None


def validate_checkpoint(path) -> dict:
    """The format validator of a checkpoint (:mod:`golden.formats`): a state_dict of finite tensors with string
    keys, read with ``weights_only=True``. Whether it fits a network is checked when it is loaded into one."""
    state = load_state(path)
    if not isinstance(state, dict) or not state or not all(isinstance(k, str) for k in state):
        raise UserError(f"{path}: not a state_dict (a mapping of parameter names to tensors)")
    for k, t in state.items():
        if not torch.is_tensor(t):
            raise UserError(f"{path}: entry {k!r} is not a tensor")
        if t.is_floating_point() and not torch.isfinite(t.float()).all():
            raise UserError(f"{path}: entry {k!r} holds NaN or infinite values")
    return state


def load_edsr(weights: str | Path, scale: int) -> EDSR:
    """Build EDSR-baseline at ``scale`` and load ``weights`` (a path, or ``default`` for the embedded model)."""
    return load_model("edsr", weights, scale)
