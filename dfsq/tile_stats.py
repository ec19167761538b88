"""DFSQ with statistics per tile instead of per feature map (beyond the paper: docs/hardware.md, "System cost").

DFSQ normalizes a conv's input per (sample, channel) with the mean and max-abs over the **whole** feature map, so a
layer cannot quantize any of its input before the previous layer has written all of it: a DFSQ accelerator keeps
whole raw feature maps (docs/hardware.md). With statistics per tile, the same normalization runs per (sample,
channel, tile): a tile of ``th x tw`` pixels (the last row/column of tiles may be smaller), or a band of ``th``
full rows (``tw = None``). A tile's statistics are complete once the tile is written, so layers can be fused over
tiles (a band of rows is what a line-buffered, fused design sees), at the PSNR cost :mod:`bench.tile_stats`
measures. Everything else is contract 1 unchanged, applied to each tile: mean (zero after a ReLU), max |x - mean|
+ EPS, codes by the channel's midpoints, the same points. Calibration normalizes the same way (the points are
selected on per-tile normalized activations: :func:`dfsq.calibrate.calibrate` ``stats_tile``).

    parse_tile("64x64") -> (64, 64); parse_tile("rows16") -> (16, None)
"""
from __future__ import annotations

import re

import torch

from golden.errors import UserError
from golden.spec import EPS

from . import fastquant

__all__ = ["parse_tile", "tile_name", "tile_slices", "tile_normalize", "apply_tile_stats", "remove_tile_stats"]

_TILE = re.compile(r"^(?:(?P<h>\d+)x(?P<w>\d+)|rows(?P<rows>\d+))$")


def parse_tile(text) -> tuple[int, int | None]:
    """``"64x64"`` -> (64, 64); ``"rows16"`` -> (16, None) (a band of 16 full rows); a (th, tw) tuple passes."""
    if isinstance(text, tuple):
        th, tw = text
    else:
        m = _TILE.match(str(text).strip().lower())
        if not m:
            raise UserError(f"a statistics tile is HxW (e.g. 64x64) or rowsN (a band of N rows), got {text!r}")
        th, tw = (int(m["h"]), int(m["w"])) if m["h"] else (int(m["rows"]), None)
    if not (isinstance(th, int) and th >= 1 and (tw is None or (isinstance(tw, int) and tw >= 1))):
        raise UserError(f"a statistics tile needs positive sizes, got {text!r}")
    return th, tw


def tile_name(tile) -> str:
    th, tw = parse_tile(tile)
    return f"rows{th}" if tw is None else f"{th}x{tw}"


def tile_slices(h: int, w: int, tile):
    """(row slice, column slice) of every tile of an h x w map, row-major."""
    th, tw = parse_tile(tile)
    tw = w if tw is None else tw
    for y0 in range(0, h, th):
        for x0 in range(0, w, tw):
            yield slice(y0, min(h, y0 + th)), slice(x0, min(w, x0 + tw))


def tile_normalize(x: torch.Tensor, relu_input: bool, tile) -> torch.Tensor:
    """xn = (x - mean) / (max |x - mean| + EPS) per (sample, channel, tile), float32 ops as contract 1's (mean 0
    after a ReLU)."""
    x = x.float()
    out = torch.empty_like(x)
    for ys, xs in tile_slices(x.shape[2], x.shape[3], tile):
        t = x[:, :, ys, xs]
        mean = torch.zeros(t.shape[:2]) if relu_input else t.mean((2, 3))
        d = t - mean[:, :, None, None]
        maxabs = torch.maximum(d.amax((2, 3)), -d.amin((2, 3)))   # == d.abs().amax((2, 3)), exactly
        out[:, :, ys, xs] = d / (maxabs + EPS)[:, :, None, None]
    return out


class _TileQuantizeAct:
    """A QuantConv's ``quantize_act`` with per-tile statistics (an instance attribute: ``forward`` honours it)."""

    def __init__(self, qc, tile):
        self.qc, self.tile = qc, parse_tile(tile)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        from .quantize import gather_points

        qc = self.qc
        x = x.float()
        out = torch.empty_like(x)
        for ys, xs in tile_slices(x.shape[2], x.shape[3], self.tile):
            t = x[:, :, ys, xs].contiguous()
            mean = torch.zeros(t.shape[:2]) if qc.relu_input else t.mean((2, 3))
            xq = fastquant.dfsq_fake_quant(t, mean, EPS, qc.mid, qc.points)
            if xq is None:   # the torch path of contract 1, on the tile
                d = t - mean[:, :, None, None]
                scale = d.abs().amax((2, 3)) + EPS
                codes = qc.table.codes(d / scale[:, :, None, None])
                xq = gather_points(qc.points, codes) * scale[:, :, None, None] + mean[:, :, None, None]
            out[:, :, ys, xs] = xq
        return out


def apply_tile_stats(qmodel, tile):
    """Switch every normalized DFSQ QuantConv of ``qmodel`` to per-tile statistics (in place); returns it."""
    from .quantize import quant_convs

    convs = [qc for qc in quant_convs(qmodel) if qc.method == "dfsq" and qc.norm]
    if not convs:
        raise UserError("per-tile statistics need a model quantized with normalized dfsq")
    for qc in convs:
        qc.quantize_act = _TileQuantizeAct(qc, tile)
    return qmodel


def remove_tile_stats(qmodel):
    from .quantize import quant_convs

    for qc in quant_convs(qmodel):
        vars(qc).pop("quantize_act", None)
    return qmodel
