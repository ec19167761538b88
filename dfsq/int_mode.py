"""The integer-only network (contract 2): a quantized model whose whole quantized body runs on integers.

``IntNetwork(qmodel, fmap_bits=16)`` wraps a DFSQ-quantized model (:func:`dfsq.quantize.quantize_model`); its
forward is the adapter's ``forward_body``: the FP prologue in torch, the body in :func:`golden.int_network.run_body`
(entry to the feature-map format, every conv's statistics, thresholds, codes, engine accumulator and post unit in
integers, exit back to float), the FP epilogue in torch. ``python -m dfsq.evaluate --method dfsq-int`` uses it.

The feature-map format: ``fmap_bits`` wide, fraction bits from the calibration (golden.int_spec.fmap_frac_for on
the largest |activation| the calibration saw at any quantized conv's input, QuantConv.act_absmax, with the margin
FMAP_MARGIN) unless ``fmap_frac`` is given. Saturations are counted per tensor over every image run
(:attr:`IntNetwork.saturations`, :attr:`IntNetwork.values`).
"""
from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from golden.errors import UserError
from golden.int_graph import IntGraph
from golden.int_layer import IntConvParams
from golden.int_network import run_body, step_post_params
from golden.int_spec import DEFAULT_FMAP_BITS, FMAP_MARGIN, FmapFormat, IntSpec, fmap_frac_for
from golden.spec import DEFAULT_CHANNELS, DEFAULT_SCALE_BITS, DatapathSpec, SpecError

from .adapters import int_body
from .quantize import QuantConv, quant_convs


def conv_params(qc: QuantConv) -> IntConvParams:
    """The integer parameters of a DFSQ QuantConv (the same as its export's)."""
    from golden.spec import WordSet

    pi = qc.point_ints.numpy().astype(np.int64)
    w = qc.weight_q.numpy().astype(np.int64) - qc.zero_point.numpy().astype(np.int64)[:, None, None, None]
    return IntConvParams(name=qc.name, index=qc.index, kernel=qc.kernel, relu_input=qc.relu_input, w=w,
                         point_ints=pi, point_codes=WordSet(qc.words, qc.gap).int_to_code(pi),
                         weight_scale=qc.weight_scale.numpy().astype(np.float32),
                         bias=qc.bias.numpy().astype(np.float32))


def float_body(model: nn.Module, graph: IntGraph):
    """The body of ``graph`` in torch with ``model``'s own convs (float or fake-quant): a callable entry -> exit.

    ``adapter.forward_body(model, x, float_body(model, graph))`` is ``model(x)``, bit for bit: the graph says no
    more and no less than the network's forward (tests/test_int_network.py)."""
    from .adapters import get_module, quantized_layers

    names = [q.name for q in quantized_layers(model)] if not quant_convs(model) else [q.name for q in
                                                                                    quant_convs(model)]

    def body(h):
        t = {graph.entry: h}
        for s in graph.steps:
            x = t[s.inputs[0]] if len(s.inputs) == 1 else torch.cat([t[n] for n in s.inputs], 1)
            y = get_module(model, names[s.layer])(x)
            if s.relu:
                y = torch.relu(y)
            if s.residual is not None:
                y = y * s.res_scale + t[s.residual]
            t[s.output] = y
        return t[graph.exit]

    return body


def calibrated_range(convs: list[QuantConv]) -> float:
    """The largest |activation| the calibration recorded at any quantized conv's input."""
    vals = [getattr(qc, "act_absmax", None) for qc in convs]
    if any(v is None for v in vals):
        raise UserError("the quantized model carries no calibrated activation range (act_absmax): build it with "
                        "dfsq.quantize.quantize_model from a params file")
    return float(max(vals))


class IntNetwork(nn.Module):
    """A DFSQ-quantized model on the integer datapath of contract 2 (see the module docstring)."""

    def __init__(self, qmodel: nn.Module, *, fmap_bits: int = DEFAULT_FMAP_BITS, fmap_frac: int | None = None,
                 scale_bits: int = DEFAULT_SCALE_BITS, denorm: str = "fused", sigma_bits: int = 6,
                 shift_bits: int = 0, threads: int | None = None):
        super().__init__()
        self.qmodel = qmodel
        qconvs = quant_convs(qmodel)
        self.adapter, self.graph = int_body(qmodel, [(q.in_channels, q.out_channels, q.relu_input) for q in qconvs])
        for qc in qconvs:
            if qc.method != "dfsq" or not qc.norm:
                raise UserError(f"{qc.name}: the integer network needs DFSQ with per-sample normalization "
                                f"(method {qc.method!r}, norm {qc.norm})")
        if [qc.index for qc in qconvs] != list(range(len(qconvs))):
            raise UserError("the quantized convs are not in the adapter's order")
        self.convs = [conv_params(qc) for qc in qconvs]
        self.range = calibrated_range(qconvs)
        q0 = qconvs[0]
        try:
            frac = fmap_frac_for(self.range, fmap_bits) if fmap_frac is None else fmap_frac
            dp = DatapathSpec(words=q0.words, gap=q0.gap, act_bits=q0.act_bits, weight_bits=q0.weight_bits,
                              scale_bits=int(scale_bits), channels=max([DEFAULT_CHANNELS] +
                                                                        [c.in_channels for c in self.convs]),
                              kernel=max(c.kernel for c in self.convs), denorm=denorm, sigma_bits=int(sigma_bits),
                              shift_bits=int(shift_bits))
            self.ispec = IntSpec(datapath=dp, fmap=FmapFormat(fmap_bits, frac))
        except SpecError as exc:
            raise UserError(f"integer network: {exc}") from None
        self.post_params = step_post_params(self.graph, self.convs)
        self.bound = self.adapter.entry_bound(qmodel) if self.adapter.entry_bound else None
        self.threads = threads
        self.reset()

    def reset(self) -> None:
        """Forget the saturation counts and times (a new set of images)."""
        self.saturations, self.values = {}, {}
        self.seconds = {"prologue+epilogue": 0.0, "body": 0.0}

    @property
    def entry_cannot_saturate(self) -> bool:
        """The adapter's bound of the entry fits the format (with 1e-4 relative slack for float32 rounding)."""
        return self.bound is not None and self.bound * (1 + 1e-4) <= self.ispec.fmap.max_value

    def body(self, h: torch.Tensor) -> torch.Tensor:
        """Entry -> integer body -> exit, for a float32 (N, C, H, W) tensor on the CPU."""
        t0 = time.perf_counter()
        fmt = self.ispec.fmap
        try:
            X0, sat0 = fmt.to_fixed(h.detach().float().cpu().numpy())
        except SpecError as exc:
            raise UserError(f"integer network entry: {exc}") from None
        self.last_entry = X0          # the body's integer input of the last run (dfsq.export stores it)
        threads = self.threads if self.threads is not None else torch.get_num_threads()
        res = run_body(self.graph, self.convs, X0, self.ispec, threads=threads, entry_saturations=sat0,
                       post_params=self.post_params)
        for name, n in res.saturations.items():
            self.saturations[name] = self.saturations.get(name, 0) + n
        per = h.shape[0] * h.shape[2] * h.shape[3]
        for name, c in self.graph.channels.items():
            self.values[name] = self.values.get(name, 0) + per * c
        self.seconds["body"] += time.perf_counter() - t0
        return torch.from_numpy(fmt.to_float(res.exit)).to(h.device)

    @torch.no_grad()
    def forward(self, x):
        t0 = time.perf_counter()
        body0 = self.seconds["body"]
        y = self.adapter.forward_body(self.qmodel, x, self.body)
        self.seconds["prologue+epilogue"] += time.perf_counter() - t0 - (self.seconds["body"] - body0)
        return y

    def manifest_entry(self, entry_file: str, entry_saturations: int) -> dict:
        """The ``integer`` section of an export manifest (docs/export-format.md): what golden needs to rerun the
        body from its entry tensor."""
        r = self.report()
        return {"version": 1, "fmap_bits": r["fmap_bits"], "fmap_frac": r["fmap_frac"],
                "max_pixels": self.ispec.max_pixels, "calibrated_range": r["calibrated_range"],
                "margin": r["margin"], "entry_bound": r["entry_bound"], "entry_file": entry_file,
                "entry_saturations": int(entry_saturations), "graph": self.graph.to_json(),
                "widths": self.ispec.widths()}

    def report(self) -> dict:
        """Saturation counts and the formats, JSON-able."""
        fmt = self.ispec.fmap
        return {"fmap_bits": fmt.bits, "fmap_frac": fmt.frac, "fmap": fmt.describe(),
                "calibrated_range": self.range, "margin": FMAP_MARGIN, "entry_bound": self.bound,
                "entry_cannot_saturate": self.entry_cannot_saturate,
                "saturated": int(sum(self.saturations.values())), "values": int(sum(self.values.values())),
                "saturations": {k: int(v) for k, v in self.saturations.items() if v},
                "seconds": {k: round(v, 3) for k, v in self.seconds.items()}}

    def summary(self) -> str:
        r = self.report()
        where = ", ".join(f"{k} {v}" for k, v in sorted(r["saturations"].items(), key=lambda kv: -kv[1])[:6])
        bound = ("entry bound {:.1f}: cannot saturate".format(r["entry_bound"]) if r["entry_cannot_saturate"] else
                 f"entry bound {r['entry_bound']:.1f} exceeds the format" if r["entry_bound"] is not None else
                 "no entry bound")
        return (f"feature maps {r['fmap']} (calibrated range {r['calibrated_range']:.1f} x margin {r['margin']:g}; "
                f"{bound}); saturated {r['saturated']} of {r['values']} values" + (f" ({where})" if where else ""))


__all__ = ["IntNetwork", "conv_params", "calibrated_range", "float_body"]
