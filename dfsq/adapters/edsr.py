"""EDSR-baseline: the 32 convs of the 16 residual blocks. ``body.N.body.0`` takes the block input (mean
subtracted); ``body.N.body.2`` takes the ReLU output (no mean subtraction). Head, ``body.16``, upsampler and tail
stay in float."""
from __future__ import annotations

from ..model import EDSR, ResBlock
from . import Adapter, QLayer, conv_layer


def layers(model: EDSR) -> list[QLayer]:
    out = []
    for i, block in enumerate(model.body):
        if isinstance(block, ResBlock):
            out.append(conv_layer(model, f"body.{i}.body.0", relu_input=False))
            out.append(conv_layer(model, f"body.{i}.body.2", relu_input=True))
    return out


ADAPTER = Adapter(arch="edsr", model_class=EDSR, layers=layers, config=lambda model: {})
