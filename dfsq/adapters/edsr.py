"""EDSR-baseline: the 32 convs of the 16 residual blocks. ``body.N.body.0`` takes the block input (mean
subtracted); ``body.N.body.2`` takes the ReLU output (no mean subtraction). Head, ``body.16``, upsampler and tail
stay in float.

Integer body (contract 2): the entry is the head's output ``x0``; block i reads ``x{i}``, writes the ReLU output
``t{i}`` (conv ``body.i.body.0`` + ReLU) and ``x{i+1} = res_scale * body.i.body.2(t{i}) + x{i}``; the exit is the
last block's output, which ``body.16``, the global skip (+ head output, in float) and the tail take.

Reconstruction blocks: the residual blocks ``body.N`` (conv, ReLU, conv, plus the identity)."""
from __future__ import annotations

from torch import nn

from golden.errors import UserError
from golden.int_graph import IntGraph, IntStep

from ..model import EDSR, ResBlock
from . import Adapter, Block, QLayer, conv_layer, interval_conv


def _blocks(model: EDSR) -> list[int]:
    return [i for i, block in enumerate(model.body) if isinstance(block, ResBlock)]


def layers(model: EDSR) -> list[QLayer]:
    out = []
    for i in _blocks(model):
        out.append(conv_layer(model, f"body.{i}.body.0", relu_input=False))
        out.append(conv_layer(model, f"body.{i}.body.2", relu_input=True))
    return out


def graph(model: EDSR) -> IntGraph:
    blocks = _blocks(model)
    if blocks != list(range(len(blocks))):
        raise UserError("EDSR: the residual blocks must come first in the body")
    steps, x = [], "x0"
    for q, i in enumerate(blocks):
        block = model.body[i]
        if not isinstance(block.body[1], nn.ReLU):
            raise UserError(f"EDSR: body.{i}.body.1 is a {type(block.body[1]).__name__}, not a ReLU")
        steps.append(IntStep(2 * q, (x,), f"t{i}", relu=True))
        steps.append(IntStep(2 * q + 1, (f"t{i}",), f"x{i + 1}", residual=x, res_scale=float(block.res_scale)))
        x = f"x{i + 1}"
    return IntGraph(entry="x0", entry_channels=int(model.head[0].out_channels), steps=tuple(steps), exit=x)


def forward_body(model: EDSR, x, body):
    """EDSR.forward with the residual blocks replaced by ``body`` (the rest of model.body, the global skip and the
    tail in float, in EDSR.forward's order)."""
    h = model.head(x - model.rgb_mean)
    y = body(h)
    for m in list(model.body)[len(_blocks(model)):]:
        y = m(y)
    return model.tail(y + h) + model.rgb_mean


def entry_bound(model: EDSR) -> float:
    """|head(x - rgb_mean)| for any image x in [0, 255]: interval arithmetic through the head conv."""
    mean = model.rgb_mean.view(-1).double()
    lo, hi = interval_conv(model.head[0], -mean, 255.0 - mean)
    return float(max(-lo.min(), hi.max()))


def blocks(model: EDSR) -> list[Block]:
    return [Block(f"body.{i}", (f"body.{i}.body.0", f"body.{i}.body.2")) for i in _blocks(model)]


ADAPTER = Adapter(arch="edsr", model_class=EDSR, layers=layers, config=lambda model: {}, graph=graph,
                  forward_body=forward_body, entry_bound=entry_bound, blocks=blocks)
