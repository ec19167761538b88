"""dfsq.hw_mode: QuantConv forwards replaced by the golden integer datapath."""
import numpy as np
import pytest
import torch
from torch import nn

from dfsq.hw_mode import apply_hw_mode, remove_hw_mode
from dfsq.quantize import QuantConv, quantize_weight
from golden.errors import UserError
from golden.export_io import layer_from_fields
from golden.layer import run_layer
from golden.spec import DatapathSpec
from golden.synthetic import random_points


def make_qconv(seed=0, C=8, O=6, relu=False, words=4, act_bits=4):
    torch.manual_seed(seed)
    conv = nn.Conv2d(C, O, 3, padding=1)
    q, z, s = quantize_weight(conv.weight, 4)
    spec = DatapathSpec(words=words, act_bits=act_bits)
    P = random_points(np.random.default_rng(seed), spec, C)
    return QuantConv(conv, name="body.0.body.2" if relu else "body.0.body.0", index=int(relu), relu_input=relu,
                     method="dfsq", act_bits=act_bits, weight_bits=4, words=words, gap=4, weight_q=q, zero_point=z,
                     weight_scale=s, point_ints=P)


class Wrap(nn.Module):
    def __init__(self, qc):
        super().__init__()
        self.qc = qc

    def forward(self, x):
        return self.qc(x)


@pytest.mark.parametrize("relu,words,act_bits", [(False, 4, 4), (True, 4, 4), (False, 3, 5)])
def test_hw_forward_is_the_golden_layer(relu, words, act_bits):
    qc = make_qconv(relu=relu, words=words, act_bits=act_bits)
    x = torch.randn(2, 8, 7, 9) * 3 + 1
    if relu:
        x = x.clamp(min=0)
    model = Wrap(qc)
    y_fq = model(x)
    fields = qc.quant_fields(x)
    apply_hw_mode(model, 16)
    y_hw = model(x)
    assert y_hw.dtype == torch.float32 and y_hw.shape == y_fq.shape
    spec = DatapathSpec(words=words, act_bits=act_bits, scale_bits=16)
    lay = layer_from_fields(fields, "qc", spec)
    _, _, ref = run_layer(lay, spec)
    assert np.array_equal(y_hw.numpy(), ref.astype(np.float32))
    rel = (y_hw - y_fq).abs().max() / y_fq.abs().max()
    assert 0 < rel < 1e-2
    remove_hw_mode(model)
    assert torch.equal(model(x), y_fq)


def test_more_scale_bits_closer_to_fake_quant():
    qc = make_qconv(seed=3)
    model = Wrap(qc)
    x = torch.randn(1, 8, 10, 10) * 2 - 3
    y_fq = model(x)
    errs = []
    for sb in (8, 16, 24):
        apply_hw_mode(model, sb)
        errs.append(float((model(x) - y_fq).abs().max()))
    assert errs[0] > errs[1] > errs[2]


def test_refuses_models_without_dfsq_layers():
    with pytest.raises(UserError):
        apply_hw_mode(nn.Sequential(nn.Conv2d(3, 3, 3)), 16)
    with pytest.raises(UserError):
        apply_hw_mode(Wrap(make_qconv()), 3)
