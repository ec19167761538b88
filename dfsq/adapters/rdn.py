"""RDN: every conv of every residual dense block (3x3, inputs G0 + j*G channels), each block's local feature
fusion ``LFF`` (1x1, G0 + C*G -> G0), and the global feature fusion ``GFF.0`` (1x1, D*G0 -> G0) and ``GFF.1``
(3x3, G0 -> G0): D*(C+1) + 2 convs (146 for config B). ``SFENet1/2`` and ``UPNet`` stay in float.

All inputs are normalized with mean subtraction, as in the official DFSQ code (``model/setq/rdn_setq.py``): the
input of an RDB conv is a concatenation of the block input with earlier ReLU outputs, so none is purely
post-ReLU. Because an RDB conv's input is the first channels of the block's LFF input, calibration reads its
statistics from the LFF's (``input_prefix_of``): 5x fewer histogram updates for config B."""
from __future__ import annotations

from ..rdn import RDN
from . import Adapter, QLayer, conv_layer


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


ADAPTER = Adapter(arch="rdn", model_class=RDN, layers=layers,
                  config=lambda model: {"rdn_config": [int(v) for v in model.config]})
