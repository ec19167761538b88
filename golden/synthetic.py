"""Synthetic quantized conv layers in NumPy (float32, the ops of contract 1), for tests and benchmarks.

A synthetic layer has random per-channel points on the universal set, a random float input, the statistics,
codes, quantized weights and the fake-quant float32 output computed as contract 1 says (the conv itself as a
float32 im2col matrix product, so summation order differs from PyTorch's like any other float32 conv would).
"""
from __future__ import annotations

import numpy as np

from .export_io import LayerData
from .layer import conv3x3, derive_codes
from .spec import EPS, TAPS, DatapathSpec


def random_points(rng: np.random.Generator, spec: DatapathSpec, channels: int) -> np.ndarray:
    """(C, 2^b) ascending point integers P drawn from the universal set (distinct when the set is large enough)."""
    ints = spec.wordset.ints
    replace = spec.points > len(ints)
    return np.stack([np.sort(rng.choice(ints, size=spec.points, replace=replace)) for _ in range(channels)])


def fake_quant_output(x, mean, scale, codes, points, weight_q, zero_point, weight_scale, bias) -> np.ndarray:
    """y of contract 1 in float32: xq = points[c, code] * scale + mean; w = (q - zp) * s_w; conv + bias."""
    C = points.shape[0]
    xq = np.take(points.ravel(), codes.astype(np.intp) + (np.arange(C) * points.shape[1])[None, :, None, None])
    xq = xq * scale[:, :, None, None] + mean[:, :, None, None]
    w = (weight_q.astype(np.int32) - zero_point[:, None, None, None]).astype(np.float32) \
        * weight_scale[:, None, None, None]
    y = conv3x3(xq.astype(np.float32), w.reshape(w.shape[0], C * TAPS), dtype=np.float32)
    return (y + bias[None, :, None, None]).astype(np.float32)


def synthetic_layer(rng: np.random.Generator, spec: DatapathSpec, N=1, C=8, O=8, H=6, W=7, relu_input=False,
                    index=0, name=None, x=None) -> LayerData:
    """A random layer that satisfies contract 2 for ``spec``."""
    P = random_points(rng, spec, C)
    points = (P / spec.wordset.denom).astype(np.float32)
    if x is None:
        x = (rng.standard_normal((N, C, H, W)) * rng.uniform(0.1, 30, (1, C, 1, 1))
             + rng.normal(0, 5, (1, C, 1, 1))).astype(np.float32)
        if relu_input:
            x = np.maximum(x, 0)
    x = np.asarray(x, dtype=np.float32)
    N, C, H, W = x.shape
    mean = np.zeros((N, C), np.float32) if relu_input else x.mean((2, 3), dtype=np.float32)
    maxabs = np.abs(x - mean[:, :, None, None]).max((2, 3))
    scale = (maxabs + np.float32(EPS)).astype(np.float32)
    codes = derive_codes(x, mean, scale, points)
    hi = 1 << spec.weight_bits
    weight_q = rng.integers(0, hi, (O, C, 3, 3)).astype(np.uint8)
    zero_point = rng.integers(0, hi, O).astype(np.int32)
    weight_scale = rng.uniform(1e-3, 5e-2, O).astype(np.float32)
    bias = rng.normal(0, 0.2, O).astype(np.float32)
    y = fake_quant_output(x, mean, scale, codes, points, weight_q, zero_point, weight_scale, bias)
    return LayerData(x=x, mean=mean, maxabs=maxabs, scale=scale, codes=codes, points=points,
                     point_ints=P.astype(np.int32), point_codes=spec.wordset.int_to_code(P), weight_q=weight_q,
                     zero_point=zero_point, weight_scale=weight_scale, bias=bias, y=y, relu_input=bool(relu_input),
                     name=name or f"body.{index // 2}.body.{2 * (index % 2)}", index=index)


def synthetic_layers(rng, spec: DatapathSpec, count=2, **kw) -> list[LayerData]:
    """``count`` layers in network order, alternating mean-subtracted / ReLU inputs."""
    return [synthetic_layer(rng, spec, index=i, relu_input=bool(i % 2), **kw) for i in range(count)]
