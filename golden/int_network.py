"""A network's quantized body on integers only (contract 2): entry, every conv and post unit of an IntGraph, exit.

    X0, sat = ispec.fmap.to_fixed(h)                          # the FP prologue's output, float32 -> fixed point
    res = run_body(graph, convs, X0, ispec)                    # every step in integers
    h_out = ispec.fmap.to_float(res.exit)                      # -> the FP epilogue

Per step (golden.int_graph.IntStep): the input is the concatenation of the step's tensors; the conv runs
:func:`golden.int_layer.run_conv` (statistics, thresholds, codes, the engine's exact accumulator); the post unit
:func:`golden.int_layer.post` requantizes to the feature-map format, applies the ReLU, saturates and adds the
residual. Per-channel statistics of a concatenation are the concatenation of its tensors' statistics, so each
tensor's are computed once, when it is written (the hardware gathers them from the producing layer's output
stream). Saturations are counted per tensor (the entry's too). NumPy only.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .errors import UserError
from .int_graph import IntGraph
from .int_layer import IntConvParams, channel_stats, conv_operands, post, post_multiplier
from .int_spec import IntSpec
from .layer import accumulate
from .spec import SpecError


@dataclass
class BodyResult:
    """What :func:`run_body` computed: the exit tensor, saturation counts and (``keep``) every tensor and record."""

    exit: np.ndarray
    saturations: dict = field(default_factory=dict)      # tensor name -> clamped elements
    tensors: dict | None = None                          # name -> int array (keep=True)
    records: dict | None = None                          # step index -> ConvRecord (keep=True)
    seconds: dict = field(default_factory=dict)          # "conv" / "post" / "stats": time spent

    @property
    def saturated(self) -> int:
        return int(sum(self.saturations.values()))


def check_convs(graph: IntGraph, convs: list[IntConvParams]) -> dict[str, int]:
    """Validate ``graph`` against the convs (channel counts, ReLU inputs); returns every tensor's channels."""
    return graph.check([(c.in_channels, c.out_channels, c.relu_input) for c in convs])


def step_post_params(graph: IntGraph, convs: list[IntConvParams]):
    """Per step: (mult (O,), r (O,)) of its post unit (weight scale x res_scale as a fixed-point multiplier)."""
    out = []
    for s in graph.steps:
        try:
            out.append(post_multiplier(convs[s.layer].weight_scale, s.res_scale))
        except SpecError as exc:
            raise UserError(f"{convs[s.layer].name}: {exc}") from None
    return out


def run_body(graph: IntGraph, convs: list[IntConvParams], X0, ispec: IntSpec, *, threads: int = 1,
             keep: bool = False, entry_saturations: int = 0, post_params=None) -> BodyResult:
    """Run every step of ``graph`` on the integer entry tensor X0 (N, entry_channels, H, W).

    ``keep``: return every tensor and every conv's :class:`ConvRecord` (for the RTL checks); otherwise a tensor is
    dropped after its last reader. ``entry_saturations`` is recorded under the entry's name. ``post_params``: the
    result of :func:`step_post_params` (recomputed when None)."""
    chans = check_convs(graph, convs)
    X0 = np.asarray(X0)
    if X0.ndim != 4 or X0.shape[1] != chans[graph.entry]:
        raise UserError(f"integer body: the entry must be (N, {chans[graph.entry]}, H, W), got {X0.shape}")
    if X0.dtype.kind not in "iu" or int(np.abs(X0.astype(np.int64)).max(initial=0)) > ispec.x_max:
        raise UserError(f"integer body: the entry is not in the feature-map format {ispec.fmap.describe()}")
    X0 = X0.astype(ispec.fmap.dtype, copy=False)
    post_params = step_post_params(graph, convs) if post_params is None else post_params
    last = graph.last_reads()
    tensors = {graph.entry: X0}
    t0 = time.perf_counter()
    stats = {graph.entry: channel_stats(X0)}
    secs = {"stats": time.perf_counter() - t0, "conv": 0.0, "post": 0.0}
    sats = {graph.entry: int(entry_saturations)}
    records = {} if keep else None
    for i, s in enumerate(graph.steps):
        p = convs[s.layer]
        t0 = time.perf_counter()
        X = tensors[s.inputs[0]] if len(s.inputs) == 1 else np.concatenate([tensors[t] for t in s.inputs], axis=1)
        st = tuple(np.concatenate([stats[t][j] for t in s.inputs], axis=1) for j in range(3))
        rec, lspec = conv_operands(X, p, ispec, st)
        del X
        try:
            rec.acc = accumulate(rec.ops, lspec, threads)
        except SpecError as exc:
            raise UserError(f"{p.name}: {exc}") from None
        t1 = time.perf_counter()
        mult, r = post_params[i]
        try:
            res = post(rec.acc, rec.ops.E, mult, r, ispec.fmap.frac, ispec, relu=s.relu,
                       skip=None if s.residual is None else tensors[s.residual])
        except SpecError as exc:
            raise UserError(f"{p.name}: {exc}") from None
        tensors[s.output] = res.y
        stats[s.output] = channel_stats(res.y)
        t2 = time.perf_counter()
        secs["conv"] += t1 - t0
        secs["post"] += t2 - t1
        sats[s.output] = res.saturated
        if keep:
            records[i] = rec
        else:
            for t in set(s.inputs) | ({s.residual} if s.residual else set()):
                if last.get(t, -1) <= i and t != graph.exit:
                    tensors.pop(t, None)
                    stats.pop(t, None)
    return BodyResult(exit=tensors[graph.exit], saturations=sats, tensors=tensors if keep else None,
                      records=records, seconds=secs)


__all__ = ["BodyResult", "check_convs", "step_post_params", "run_body"]
