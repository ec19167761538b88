"""RDN: every conv of every residual dense block (3x3, inputs G0 + j*G channels), each block's local feature
fusion ``LFF`` (1x1, G0 + C*G -> G0), and the global feature fusion ``GFF.0`` (1x1, D*G0 -> G0) and ``GFF.1``
(3x3, G0 -> G0): D*(C+1) + 2 convs (146 for config B). ``SFENet1/2`` and ``UPNet`` stay in float.

All inputs are normalized with mean subtraction, as in the official DFSQ code (``model/setq/rdn_setq.py``): the
input of an RDB conv is a concatenation of the block input with earlier ReLU outputs, so none is purely
post-ReLU. Because an RDB conv's input is the first channels of the block's LFF input, calibration reads its
statistics from the LFF's (``input_prefix_of``): 5x fewer histogram updates for config B.

Integer body (contract 2): the entry is SFENet2's output ``b0``; in block i, conv j reads the concatenation
``b{i}, c{i}_0 .. c{i}_{j-1}`` and writes its ReLU output ``c{i}_j``; the LFF reads all of them and writes
``b{i+1} = LFF(...) + b{i}``; GFF.0 reads ``b1 .. bD`` and writes ``g0``, GFF.1 writes the exit ``g1``, to which
the FP epilogue adds SFENet1's output (in float) before UPNet.

Reconstruction blocks: each RDB ``RDBs.i`` (its convs, its LFF and the identity) and the global fusion ``GFF``
(GFF.0 and GFF.1, on the concatenated RDB outputs)."""
from __future__ import annotations

from torch import nn

from golden.errors import UserError
from golden.int_graph import IntGraph, IntStep

from ..rdn import RDN
from . import Adapter, Block, QLayer, conv_layer, interval_conv


def layers(model: RDN) -> list[QLayer]:
    out = []
    for i, rdb in enumerate(model.RDBs):
        for j in range(len(rdb.convs)):
            out.append(conv_layer(model, f"RDBs.{i}.convs.{j}.conv.0", relu_input=False,
                                  input_prefix_of=f"RDBs.{i}.LFF"))
        out.append(conv_layer(model, f"RDBs.{i}.LFF", relu_input=False))
    out.append(conv_layer(model, "GFF.0", relu_input=False))
    out.append(conv_layer(model, "GFF.1", relu_input=False))
    return out


def graph(model: RDN) -> IntGraph:
    steps, q, b, outs = [], 0, "b0", []
    for i, rdb in enumerate(model.RDBs):
        feats = [b]
        for j, rc in enumerate(rdb.convs):
            if len(rc.conv) != 2 or not isinstance(rc.conv[1], nn.ReLU):
                raise UserError(f"RDN: RDBs.{i}.convs.{j}.conv is not conv + ReLU")
            steps.append(IntStep(q, tuple(feats), f"c{i}_{j}", relu=True))
            feats.append(f"c{i}_{j}")
            q += 1
        steps.append(IntStep(q, tuple(feats), f"b{i + 1}", residual=b))
        q += 1
        b = f"b{i + 1}"
        outs.append(b)
    steps.append(IntStep(q, tuple(outs), "g0"))
    steps.append(IntStep(q + 1, ("g0",), "g1"))
    return IntGraph(entry="b0", entry_channels=int(model.config.G0), steps=tuple(steps), exit="g1")


def forward_body(model: RDN, x, body):
    """RDN.forward with the RDBs and GFF replaced by ``body`` (SFENet1/2 before, + f1 and UPNet after, in float)."""
    f1 = model.SFENet1(x)
    return model.UPNet(body(model.SFENet2(f1)) + f1)


def entry_bound(model: RDN) -> float:
    """|SFENet2(SFENet1(x))| for any image x in [0, 255]: interval arithmetic through both convs (loose: about
    20x the largest entry seen on real images, so the format is calibrated instead; docs/datapath.md)."""
    lo, hi = interval_conv(model.SFENet1, [0.0] * 3, [255.0] * 3)
    lo, hi = interval_conv(model.SFENet2, lo, hi)
    return float(max(-lo.min(), hi.max()))


def blocks(model: RDN) -> list[Block]:
    out = [Block(f"RDBs.{i}", (*(f"RDBs.{i}.convs.{j}.conv.0" for j in range(len(rdb.convs))), f"RDBs.{i}.LFF"))
           for i, rdb in enumerate(model.RDBs)]
    return out + [Block("GFF", ("GFF.0", "GFF.1"))]


ADAPTER = Adapter(arch="rdn", model_class=RDN, layers=layers,
                  config=lambda model: {"rdn_config": [int(v) for v in model.config]}, graph=graph,
                  forward_body=forward_body, entry_bound=entry_bound, blocks=blocks)
