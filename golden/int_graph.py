"""The integer body of a network as data: which quantized conv reads which tensors and writes which (contract 2).

A model's adapter (``dfsq/adapters``) describes its quantized body once as an :class:`IntGraph`: the entry tensor
(the FP prologue's output, converted to the feature-map format), an ordered list of :class:`IntStep` s, and the exit
tensor (converted back to float for the FP epilogue). A step is one quantized conv plus its post unit:

    output = sat(sat(relu?(requantize(conv(concat(inputs)))) * res_scale) + residual)

``inputs`` are concatenated along channels in the order given (RDN's dense connections; EDSR: one tensor);
``relu`` applies the ReLU that follows the conv in the network; ``residual`` names a tensor added after it (EDSR's
block skip, RDN's local residual), ``res_scale`` scales the conv's output before the add (folded into the
requantization multiplier). Every tensor is written once (by the entry or one step), before it is read.

Nothing here is network-specific: golden runs any graph (:mod:`golden.int_network`), an export carries it in its
manifest, and an accelerator's layer program can be compiled from it. JSON round trip: :meth:`IntGraph.to_json`,
:meth:`IntGraph.from_json` (validated; bad input is a one-line :class:`golden.errors.UserError`). NumPy-free.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from .errors import UserError

GRAPH_VERSION = 1
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")


@dataclass(frozen=True)
class IntStep:
    """One quantized conv of the body: ``layer`` indexes the adapter's quantized layers (network order)."""

    layer: int
    inputs: tuple[str, ...]
    output: str
    relu: bool = False
    residual: str | None = None
    res_scale: float = 1.0

    def to_json(self) -> dict:
        d = {"layer": self.layer, "inputs": list(self.inputs), "output": self.output, "relu": self.relu}
        if self.residual is not None:
            d.update(residual=self.residual, res_scale=self.res_scale)
        return d


@dataclass(frozen=True)
class IntGraph:
    """``entry`` (with ``entry_channels``), ``steps`` in execution order, ``exit``. See the module docstring."""

    entry: str
    entry_channels: int
    steps: tuple[IntStep, ...]
    exit: str
    channels: dict = field(default_factory=dict, compare=False)   # filled by :meth:`check`

    def check(self, layers) -> dict[str, int]:
        """Validate against the quantized layers' ``(in_channels, out_channels, relu_input)`` (network order);
        returns the channel count of every tensor. UserError (one line) on any inconsistency."""
        layers = [tuple(x) for x in layers]

        def bad(msg):
            raise UserError(f"integer graph: {msg}")

        if not isinstance(self.entry, str) or not _NAME.fullmatch(self.entry):
            bad(f"entry must be a tensor name, got {self.entry!r}")
        if not isinstance(self.entry_channels, int) or self.entry_channels < 1:
            bad(f"entry_channels must be a positive integer, got {self.entry_channels!r}")
        chans = {self.entry: self.entry_channels}
        relu_out = {self.entry: False}
        used = set()
        for i, s in enumerate(self.steps):
            where = f"step {i} (layer {s.layer})"
            if not isinstance(s.layer, int) or isinstance(s.layer, bool) or not 0 <= s.layer < len(layers):
                bad(f"step {i}: layer must be an index in 0..{len(layers) - 1}, got {s.layer!r}")
            if s.layer in used:
                bad(f"{where}: the layer is used twice")
            used.add(s.layer)
            cin, cout, relu_input = layers[s.layer]
            if not s.inputs or not all(isinstance(t, str) for t in s.inputs):
                bad(f"{where}: inputs must be a non-empty list of tensor names")
            for t in list(s.inputs) + ([s.residual] if s.residual is not None else []):
                if t not in chans:
                    bad(f"{where}: tensor {t!r} is read before it is written")
            if sum(chans[t] for t in s.inputs) != cin:
                bad(f"{where}: inputs {list(s.inputs)} have {sum(chans[t] for t in s.inputs)} channels, the conv "
                    f"takes {cin}")
            if relu_input and not all(relu_out[t] for t in s.inputs):
                bad(f"{where}: the layer is normalized as a ReLU output (no mean), but an input is not one")
            if not isinstance(s.output, str) or not _NAME.fullmatch(s.output) or s.output in chans:
                bad(f"{where}: output must be a new tensor name, got {s.output!r}")
            if s.residual is not None and chans[s.residual] != cout:
                bad(f"{where}: residual {s.residual!r} has {chans[s.residual]} channels, the conv gives {cout}")
            if not (isinstance(s.res_scale, (int, float)) and math.isfinite(s.res_scale) and s.res_scale > 0):
                bad(f"{where}: res_scale must be a positive number, got {s.res_scale!r}")
            if not isinstance(s.relu, bool):
                bad(f"{where}: relu must be true or false")
            chans[s.output] = cout
            relu_out[s.output] = s.relu and s.residual is None
        if len(used) != len(layers):
            missing = sorted(set(range(len(layers))) - used)
            bad(f"quantized layer {missing[0]} is not in the graph ({len(missing)} missing)")
        if self.exit not in chans:
            bad(f"exit tensor {self.exit!r} is never written")
        object.__setattr__(self, "channels", chans)
        return chans

    def last_reads(self) -> dict[str, int]:
        """Per tensor, the index of the last step that reads it (the exit: len(steps)); a tensor no step reads is
        absent. A runner may free a tensor after that step."""
        last = {self.exit: len(self.steps)}
        for i, s in enumerate(self.steps):
            for t in list(s.inputs) + ([s.residual] if s.residual else []):
                last[t] = max(last.get(t, -1), i)
        return last

    def to_json(self) -> dict:
        return {"version": GRAPH_VERSION, "entry": self.entry, "entry_channels": self.entry_channels,
                "exit": self.exit, "steps": [s.to_json() for s in self.steps]}

    @classmethod
    def from_json(cls, d) -> IntGraph:
        """Parse (not yet :meth:`check` ed against layers); UserError on a malformed description."""
        if not isinstance(d, dict) or d.get("version") != GRAPH_VERSION:
            raise UserError(f"integer graph: expected an object with version {GRAPH_VERSION}")
        try:
            steps = tuple(IntStep(layer=s["layer"], inputs=tuple(s["inputs"]), output=s["output"],
                                  relu=s.get("relu", False), residual=s.get("residual"),
                                  res_scale=s.get("res_scale", 1.0)) for s in d["steps"])
            return cls(entry=d["entry"], entry_channels=d["entry_channels"], steps=steps, exit=d["exit"])
        except (KeyError, TypeError) as exc:
            raise UserError(f"integer graph: malformed description ({exc})") from None


__all__ = ["GRAPH_VERSION", "IntStep", "IntGraph"]
