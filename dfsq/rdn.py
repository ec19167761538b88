"""RDN (Zhang et al. 2018) with the EDSR-PyTorch ``state_dict`` key layout.

Keys: ``SFENet1.*``, ``SFENet2.*``, ``RDBs.{i}.convs.{j}.conv.0.*`` (i < D, j < C), ``RDBs.{i}.LFF.*``,
``GFF.0.*`` (1x1, D*G0 -> G0), ``GFF.1.*`` (3x3), ``UPNet.0.*``, ``UPNet.2.*`` (and ``UPNet.4.*`` at x4).
No MeanShift: the official RDN works on RGB in [0, 255] directly. An official config-B checkpoint
(D=16, C=8, G=64, G0=64) loads unchanged; D, C, G and G0 are read from a checkpoint's shapes
(:func:`config_from_state`), so the embedded small model and config B share one class.
"""
from __future__ import annotations

import re
from typing import NamedTuple

import torch
from torch import nn

from golden.errors import UserError

SCALES = (2, 3, 4)


class RDNConfig(NamedTuple):
    """D residual dense blocks of C convs each, growth rate G, G0 features between blocks."""
    D: int
    C: int
    G: int
    G0: int = 64

    def __str__(self) -> str:
        return f"D={self.D}, C={self.C}, G={self.G}, G0={self.G0}"


CONFIGS = {
    "A": RDNConfig(20, 6, 32, 64),   # the RDN paper's config A
    "B": RDNConfig(16, 8, 64, 64),   # the RDN paper's config B (the DFSQ paper's RDN, about 22.1 M parameters)
    "S": RDNConfig(8, 4, 32, 64),    # this project's embedded default: the cost of EDSR-baseline (~1.3 M)
}


def parse_config(text: str) -> RDNConfig:
    """``A``, ``B``, ``S`` or ``D,C,G[,G0]`` (positive integers)."""
    if text in CONFIGS:
        return CONFIGS[text]
    try:
        vals = [int(v) for v in text.split(",")]
    except ValueError:
        vals = []
    if len(vals) not in (3, 4) or min(vals) < 1:
        raise UserError(f"RDN config must be one of {', '.join(CONFIGS)} or D,C,G[,G0] with positive integers, "
                        f"got {text!r}")
    return RDNConfig(*vals)


def _conv(cin: int, cout: int, k: int = 3) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=k // 2, bias=True)


class RDBConv(nn.Module):
    """conv(Cin -> G) + ReLU, its output concatenated to its input (key ``conv.0``)."""

    def __init__(self, cin: int, growth: int):
        super().__init__()
        self.conv = nn.Sequential(_conv(cin, growth), nn.ReLU())

    def forward(self, x):
        return torch.cat((x, self.conv(x)), 1)


class RDB(nn.Module):
    """C densely connected convs, a 1x1 local feature fusion (``LFF``) back to G0, plus the identity."""

    def __init__(self, g0: int, growth: int, n_convs: int):
        super().__init__()
        self.convs = nn.Sequential(*[RDBConv(g0 + c * growth, growth) for c in range(n_convs)])
        self.LFF = _conv(g0 + n_convs * growth, g0, 1)

    def forward(self, x):
        return self.LFF(self.convs(x)) + x


class RDN(nn.Module):
    """RDN. Input and output are RGB in [0, 255], shape (B, 3, H, W)."""

    def __init__(self, scale: int = 2, config: RDNConfig = CONFIGS["S"]):
        super().__init__()
        if scale not in SCALES:
            raise UserError(f"RDN scale must be one of {SCALES}, got {scale}")
        self.scale = scale
        self.config = config = RDNConfig(*config)
        D, C, G, G0 = config
        self.SFENet1 = _conv(3, G0)
        self.SFENet2 = _conv(G0, G0)
        self.RDBs = nn.ModuleList([RDB(G0, G, C) for _ in range(D)])
        self.GFF = nn.Sequential(_conv(D * G0, G0, 1), _conv(G0, G0))
        if scale in (2, 3):
            up = [_conv(G0, G * scale * scale), nn.PixelShuffle(scale), _conv(G, 3)]
        else:
            up = [_conv(G0, G * 4), nn.PixelShuffle(2), _conv(G, G * 4), nn.PixelShuffle(2), _conv(G, 3)]
        self.UPNet = nn.Sequential(*up)

    def forward(self, x):
        f1 = self.SFENet1(x)
        x = self.SFENet2(f1)
        outs = []
        for rdb in self.RDBs:
            x = rdb(x)
            outs.append(x)
        x = self.GFF(torch.cat(outs, 1)) + f1
        return self.UPNet(x)

    @property
    def label(self) -> str:
        return f"RDN x{self.scale} ({self.config})"


_RDB_CONV = re.compile(r"RDBs\.(\d+)\.convs\.(\d+)\.conv\.0\.weight")


def config_from_state(state: dict) -> RDNConfig:
    """D, C, G and G0 from an RDN state_dict's keys and shapes; a UserError names the first key that is off."""
    if not isinstance(state, dict):
        raise UserError("checkpoint is not a state_dict (a mapping of parameter names to tensors)")
    w = state.get("SFENet1.weight")
    if not torch.is_tensor(w) or w.dim() != 4:
        raise UserError("checkpoint is not an RDN: key 'SFENet1.weight' is missing or not a conv weight")
    g0 = int(w.shape[0])
    blocks, convs = set(), set()
    for k in state:
        m = _RDB_CONV.fullmatch(k)
        if m:
            blocks.add(int(m.group(1)))
            convs.add(int(m.group(2)))
    if not blocks:
        raise UserError("checkpoint is not an RDN: no key 'RDBs.0.convs.0.conv.0.weight'")
    d, c = max(blocks) + 1, max(convs) + 1
    g = state.get("RDBs.0.convs.0.conv.0.weight")
    if not torch.is_tensor(g) or g.dim() != 4:
        raise UserError("checkpoint entry 'RDBs.0.convs.0.conv.0.weight' is missing or not a conv weight")
    return RDNConfig(d, c, int(g.shape[0]), g0)
