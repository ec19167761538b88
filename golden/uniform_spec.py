"""The uniform (Min-Max, static scale) integer conv datapath: parameters and every width, derived from bounds.

The baseline engine of docs/hardware.md (``hw.units.uniform_engine``) is what a designer builds without DFSQ: integer
weights times integer activations, per-tensor static activation scale, requantization outside the engine. Per
output (pixel p, output channel o), over the input channels c and the k x k taps t (zero padding):

    acc = bias_int[o] + sum_c sum_t w'[o,c,t] * a'[c, p+t]        (a' = 0 on padding)

``w' = q_w - zp_w`` with q_w, zp_w in [0, 2^wb - 1] (per output channel, as for DFSQ), and ``a' = q_a - zp_a`` with
q_a, zp_a in [0, 2^ab - 1] (one zero point per tensor: Min-Max). So |w'| <= 2^wb - 1 and |a'| <= 2^ab - 1, and
every width below holds every value those bounds allow: the accumulator cannot overflow by construction. The
output is ``y = s_w[o] * s_a * acc``; the scales never enter the engine. NumPy only; the model is
:func:`golden.uniform_layer.accumulate`.

Exported networks with static activations (``dfsq.export --method minmax|brecq|qdrop``: one step ``s_a`` and zero
point per conv input) run on this datapath: ``bias_int[o] = round_half_up(bias[o] / (s_w[o] s_a))``
(:meth:`UniformSpec.bias_int`), the datapath's one rounding rule; the manifest's spec carries
``"datapath": STATIC_DATAPATH``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .spec import (ACT_BITS_RANGE, DEFAULT_CHANNELS, DEFAULT_KERNEL, LayerGeometry, SpecError, check_int_ranges,
                   round_half_up, signed_bits)

__all__ = ["UniformSpec", "UNIFORM_SPEC_VERSION", "STATIC_DATAPATH"]

#: ``spec["datapath"]`` of an export whose activations have one static step per tensor (this datapath).
STATIC_DATAPATH = "static-uniform"

UNIFORM_SPEC_VERSION = 1
DEFAULT_UNIFORM_BITS = 6   # the uniform W6A6 engine the issue compares with DFSQ W4A4 (about the same PSNR)


@dataclass(frozen=True)
class UniformSpec(LayerGeometry):
    """Widths of the uniform datapath for ``act_bits`` x ``weight_bits`` and a geometry (``channels``, ``kernel``).

    Parameters are validated (integers in :data:`golden.spec.ACT_BITS_RANGE` / ``WEIGHT_BITS_RANGE``, 1..4096
    channels, kernel 1 or 3); a bad one raises :class:`golden.spec.SpecError` (one line).
    """

    act_bits: int = DEFAULT_UNIFORM_BITS
    weight_bits: int = DEFAULT_UNIFORM_BITS
    channels: int = DEFAULT_CHANNELS
    kernel: int = DEFAULT_KERNEL

    def __post_init__(self):
        check_int_ranges(self, (("act_bits", ACT_BITS_RANGE),))
        self._check_geometry()

    # geometry (taps, terms, for_layer, covers) and w_max / w_bits: golden.spec.LayerGeometry

    @property
    def a_max(self) -> int:
        """Largest |a'|, a' = q_a - zp_a."""
        return (1 << self.act_bits) - 1

    @property
    def a_bits(self) -> int:
        """Signed width of a' (act_bits + 1)."""
        return signed_bits(self.a_max)

    # --- sums ------------------------------------------------------------------------------------------------
    @property
    def product_max(self) -> int:
        return self.w_max * self.a_max

    @property
    def product_bits(self) -> int:
        return signed_bits(self.product_max)

    @property
    def tap_sum_max(self) -> int:
        """Bound of one input channel's sum over the kernel's taps (a lane's 9-input tree)."""
        return self.taps * self.product_max

    @property
    def tap_sum_bits(self) -> int:
        return signed_bits(self.tap_sum_max)

    @property
    def sum_max(self) -> int:
        """Bound of the sum over every input channel and tap (before the bias)."""
        return self.channels * self.tap_sum_max

    @property
    def sum_bits(self) -> int:
        return signed_bits(self.sum_max)

    @property
    def bias_max(self) -> int:
        """Largest |bias_int| accepted (the same magnitude as the sum, as for DFSQ)."""
        return self.sum_max

    @property
    def bias_bits(self) -> int:
        return signed_bits(self.bias_max)

    @property
    def acc_max(self) -> int:
        return self.sum_max + self.bias_max

    @property
    def acc_bits(self) -> int:
        """Width of the output accumulator: cannot overflow for any operands within the bounds above."""
        return signed_bits(self.acc_max)

    def bias_int(self, bias, weight_scale, act_step) -> np.ndarray:
        """The bias in accumulator units ``s_w[o] s_a``: ``round_half_up(bias / (s_w s_a))`` in float64, int64 (O,);
        SpecError when it is not finite or exceeds ``bias_max``."""
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            v = np.asarray(bias, np.float64) / (np.asarray(weight_scale, np.float64) * float(act_step))
        if not np.all(np.isfinite(v)):
            raise SpecError("bias / (weight_scale * act_step) is not finite")
        if np.any(np.abs(v) > self.bias_max):
            raise SpecError(f"bias does not fit in {self.bias_bits} bits in accumulator units")
        return round_half_up(v)

    def widths(self) -> dict:
        """All widths and bounds, for sidecars and reports."""
        keys = ("act_bits", "weight_bits", "channels", "kernel", "w_bits", "a_bits", "product_bits",
                "tap_sum_bits", "sum_bits", "bias_bits", "acc_bits")
        d = {k: getattr(self, k) for k in keys}
        d.update(w_max=self.w_max, a_max=self.a_max, acc_max=self.acc_max)
        return d
