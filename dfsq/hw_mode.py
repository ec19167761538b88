"""Hardware-exact mode: run the quantized layers with the golden integer datapath in place of fake-quant.

``apply_hw_mode(qmodel, scale_bits)`` replaces the forward of every :class:`dfsq.quantize.QuantConv` (DFSQ with
per-sample normalization) of ``qmodel`` in place: the statistics (mean, max-abs, scale) and the codes are those
of contract 1 (the module's own float32 ``normalize``, then :func:`golden.layer.derive_codes`, bit-identical to
``searchsorted``), and the output is the golden model's ``to_float(accumulate(operands))``:
``s_w[o] * 2^-E * (bias_int + sum_c sigma_m A_c + mu_m B_c)`` with the fixed-point format of
``DatapathSpec(scale_bits=...)``, returned as a float32 tensor. ``python -m dfsq.evaluate --method dfsq-hw``
uses it. ``remove_hw_mode`` restores fake-quant.
"""
from __future__ import annotations

import numpy as np
import torch

from golden.errors import UserError
from golden.layer import Operands, accumulate, derive_codes, fixed_point_params, gather_points, layer_spec, to_float
from golden.spec import (DEFAULT_CHANNELS, DEFAULT_DENORM, DEFAULT_POINT_SET, DEFAULT_SCALE_BITS, DEFAULT_SHIFT_BITS, DEFAULT_SIGMA_BITS,
                         DatapathSpec, SpecError)


class _HwForward:
    """The replacement forward of one QuantConv (a callable attribute, so ``remove_hw_mode`` can drop it)."""

    def __init__(self, qc, spec: DatapathSpec):
        self.qc = qc
        # the layer's own geometry (C inputs, k x k kernel): the golden model's per-layer widths and bias cap of E
        try:
            self.spec = spec = layer_spec(spec, int(qc.in_channels), int(qc.weight_q.shape[-1]))
        except SpecError as exc:
            raise UserError(f"{qc.name}: {exc}") from None
        self.table = spec.wordset.code_to_int(spec.wordset.int_to_code(qc.point_ints.numpy().astype(np.int64)))
        if not np.array_equal(self.table, qc.point_ints.numpy()):
            raise UserError(f"{qc.name}: point codes do not decode to the layer's points")
        self.point_codes = spec.wordset.int_to_code(self.table)
        self.w = qc.weight_q.numpy().astype(np.int64) - qc.zero_point.numpy().astype(np.int64)[:, None, None, None]
        self.points = qc.points.numpy()
        self.bias = qc.bias.numpy()
        self.weight_scale = qc.weight_scale.numpy()

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        mean, _, scale, _ = self.qc.normalize(x)
        xn = x.detach().float().contiguous().numpy()
        mean, scale = mean.numpy(), scale.numpy()
        codes = derive_codes(xn, mean, scale, self.points)
        sig, mu, E, bias_int = fixed_point_params(scale, mean, self.bias, self.weight_scale, self.spec)
        ops = Operands(w=self.w, P=gather_points(self.table, codes), sigma_m=sig, mu_m=mu, E=E, bias_int=bias_int,
                       codes=codes, point_codes=self.point_codes)
        try:
            acc = accumulate(ops, self.spec)
        except SpecError as exc:
            raise UserError(f"{self.qc.name}: {exc}") from None
        y = to_float(acc, ops, self.weight_scale)
        return torch.from_numpy(y.astype(np.float32))


def _quant_convs(qmodel):
    from .quantize import QuantConv

    return [m for m in qmodel.modules() if isinstance(m, QuantConv)]


def apply_hw_mode(qmodel, scale_bits: int = DEFAULT_SCALE_BITS, denorm: str = DEFAULT_DENORM,
                  sigma_bits: int = DEFAULT_SIGMA_BITS, shift_bits: int = DEFAULT_SHIFT_BITS,
                  point_set: str = DEFAULT_POINT_SET):
    """Switch every DFSQ QuantConv of ``qmodel`` to the golden integer datapath (in place); returns ``qmodel``.

    ``denorm``, ``sigma_bits``, ``shift_bits``: the de-normalization format (golden.spec; the last two are used by
    ``denorm="split"`` only). ``point_set="uniform"``: the normalized uniform baseline (a ``dfsq-uniform`` model,
    :func:`dfsq.uniform.quantize_dfsq_uniform`) on its engine's datapath."""
    convs = _quant_convs(qmodel)
    if not convs:
        raise UserError("the model has no QuantConv layers: quantize it first (dfsq.quantize.quantize_model)")
    method = "dfsq-uniform" if point_set == "uniform" else "dfsq"
    for qc in convs:
        if qc.method != method or not getattr(qc, "norm", True):
            raise UserError(f"{qc.name}: hardware mode with the {point_set} point set needs {method} with "
                            f"per-sample normalization (method {qc.method!r}, norm {getattr(qc, 'norm', True)})")
        try:
            spec = DatapathSpec(words=qc.words, gap=qc.gap, act_bits=qc.act_bits, weight_bits=qc.weight_bits,
                                scale_bits=int(scale_bits), channels=max(qc.in_channels, DEFAULT_CHANNELS),
                                denorm=denorm, sigma_bits=int(sigma_bits), shift_bits=int(shift_bits),
                                point_set=point_set)
        except SpecError as exc:
            raise UserError(f"hardware mode: {exc}") from None
        qc.forward = _HwForward(qc, spec)
        qc.hw_spec = spec
    return qmodel


def remove_hw_mode(qmodel):
    """Back to fake-quant forwards."""
    for qc in _quant_convs(qmodel):
        if isinstance(qc.__dict__.get("forward"), _HwForward):
            del qc.forward
            del qc.hw_spec
    return qmodel
