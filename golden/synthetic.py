"""Synthetic quantized conv layers in NumPy (float32, the ops of contract 1), for tests and benchmarks.

A synthetic layer has random per-channel points on the universal set, a random float input, the statistics,
codes, quantized weights and the fake-quant float32 output computed as contract 1 says (the conv itself as a
float32 im2col matrix product, so summation order differs from PyTorch's like any other float32 conv would).
Any geometry: 3x3 or 1x1 kernels, any input channel count (``synthetic_layer(..., C=1024, kernel=1)``), and
:func:`rdn_layers` / :func:`write_rdn_export`: the 146 quantized convs of an RDN (config B) at a small size.
"""
from __future__ import annotations

import numpy as np

from pathlib import Path

from .export_io import LayerData, write_export
from .layer import conv_kxk, derive_codes
from .spec import EPS, DatapathSpec


def random_points(rng: np.random.Generator, spec: DatapathSpec, channels: int) -> np.ndarray:
    """(C, 2^b) ascending point integers P drawn from the universal set (distinct when the set is large enough)."""
    ints = spec.wordset.ints
    replace = spec.points > len(ints)
    return np.stack([np.sort(rng.choice(ints, size=spec.points, replace=replace)) for _ in range(channels)])


def fake_quant_output(x, mean, scale, codes, points, weight_q, zero_point, weight_scale, bias) -> np.ndarray:
    """y of contract 1 in float32: xq = points[c, code] * scale + mean; w = (q - zp) * s_w; conv + bias."""
    C = points.shape[0]
    k = weight_q.shape[-1]
    xq = np.take(points.ravel(), codes.astype(np.intp) + (np.arange(C) * points.shape[1])[None, :, None, None])
    xq = xq * scale[:, :, None, None] + mean[:, :, None, None]
    w = (weight_q.astype(np.int32) - zero_point[:, None, None, None]).astype(np.float32) \
        * weight_scale[:, None, None, None]
    y = conv_kxk(xq.astype(np.float32), w.reshape(w.shape[0], C * k * k), k, dtype=np.float32)
    return (y + bias[None, :, None, None]).astype(np.float32)


def synthetic_layer(rng: np.random.Generator, spec: DatapathSpec, N=1, C=8, O=8, H=6, W=7, relu_input=False,
                    index=0, name=None, x=None, kernel=3) -> LayerData:
    """A random layer that satisfies contract 2 for ``spec`` (a ``kernel`` x ``kernel`` conv, 3 or 1). With a
    uniform point set (``spec.point_set == "uniform"``) every channel has the evenly spaced points of
    ``--method dfsq-uniform`` (golden.spec.UniformPointSet.channel_ints)."""
    if spec.uniform_points:
        P = np.broadcast_to(spec.wordset.channel_ints(relu_input), (C, spec.points)).copy()
    else:
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
    weight_q = rng.integers(0, hi, (O, C, kernel, kernel)).astype(np.uint8)
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


# --- RDN (config B: D = 16 residual dense blocks, C = 8 convs each, G = G0 = 64) ----------------------------------
RDN_BLOCKS, RDN_CONVS, RDN_G0, RDN_G = 16, 8, 64, 64


def rdn_geometry(blocks: int = RDN_BLOCKS, convs: int = RDN_CONVS, g0: int = RDN_G0, g: int = RDN_G):
    """(name, input channels, kernel) of every quantized conv of an RDN, in network order (EDSR-PyTorch keys):
    per block ``RDBs.d.convs.c.conv.0`` (3x3, g0 + c g -> g) then ``RDBs.d.LFF`` (1x1, g0 + convs g -> g0); then
    ``GFF.0`` (1x1, blocks g0 -> g0) and ``GFF.1`` (3x3, g0 -> g0). Config B: 16 x 9 + 2 = 146 layers, inputs 64
    to 1024 channels. Every one is mean-subtracted (no ReLU directly before a conv's input)."""
    out = []
    for d in range(blocks):
        for c in range(convs):
            out.append((f"RDBs.{d}.convs.{c}.conv.0", g0 + c * g, 3, g))
        out.append((f"RDBs.{d}.LFF", g0 + convs * g, 1, g0))
    out.append(("GFF.0", blocks * g0, 1, g0))
    out.append(("GFF.1", g0, 3, g0))
    return out


def rdn_layers(rng: np.random.Generator, spec: DatapathSpec, N=1, H=8, W=8, geometry=None) -> list[LayerData]:
    """Synthetic layers with the shapes of an RDN's quantized convs (:func:`rdn_geometry`), at H x W."""
    geometry = rdn_geometry() if geometry is None else geometry
    return [synthetic_layer(rng, spec, N=N, C=c, O=o, H=H, W=W, kernel=k, index=i, name=name, relu_input=False)
            for i, (name, c, k, o) in enumerate(geometry)]


def write_rdn_export(directory, spec: DatapathSpec | None = None, seed=0, N=1, H=8, W=8, geometry=None) -> Path:
    """An export folder with the 146 layer shapes of an RDN (random synthetic data, H x W), for golden.check and
    sim.verify without the PyTorch side. The layers are written one at a time (memory stays small)."""
    spec = spec or DatapathSpec()
    rng = np.random.default_rng(seed)
    layers = rdn_layers(rng, spec, N=N, H=H, W=W, geometry=geometry)
    return write_export(directory, layers, spec, config={"model": "rdn", "seed": seed, "image": "synthetic"})


def synthetic_int_network(rng: np.random.Generator, H: int = 5, W: int = 6, fmap_frac: int = 8):
    """A small integer body that exercises every feature of an IntGraph: a 3x3 conv with a ReLU, a post-ReLU conv
    with a residual add, a 1x1 conv on a concatenation, and a 3x3 conv on a concatenation whose second tensor starts
    at a channel offset that is no multiple of 4 (6 + 8 channels). Returns (graph, convs, ispec, post_params, X0 (1,
    8, H, W), golden.int_network.BodyResult with every tensor)."""
    from .int_graph import IntGraph, IntStep
    from .int_layer import IntConvParams
    from .int_network import run_body, step_post_params
    from .int_spec import FmapFormat, IntSpec

    spec = DatapathSpec(channels=16)

    def conv(name, idx, k, C, O, relu_input):
        pi = random_points(rng, spec, C)
        if relu_input:
            pi = np.sort(np.abs(pi), axis=1)
        return IntConvParams(name=name, index=idx, kernel=k, relu_input=relu_input,
                             w=rng.integers(-7, 9, size=(O, C, k, k)), point_ints=pi,
                             point_codes=spec.wordset.int_to_code(pi),
                             weight_scale=(rng.uniform(0.5, 2, O) * 1e-2).astype(np.float32),
                             bias=rng.normal(0, 0.5, O).astype(np.float32))

    convs = [conv("c0", 0, 3, 8, 8, False), conv("c1", 1, 3, 8, 8, True), conv("c2", 2, 1, 16, 6, False),
             conv("c3", 3, 3, 14, 4, False)]
    graph = IntGraph(entry="x0", entry_channels=8, exit="z", steps=(
        IntStep(0, ("x0",), "t0", relu=True), IntStep(1, ("t0",), "x1", residual="x0"),
        IntStep(2, ("x1", "t0"), "y"), IntStep(3, ("y", "x1"), "z")))
    graph.check([(c.in_channels, c.out_channels, c.relu_input) for c in convs])
    ispec = IntSpec(datapath=spec, fmap=FmapFormat(16, fmap_frac))
    X0 = rng.integers(-3000, 3001, size=(1, 8, H, W)).astype(np.int16)
    post = step_post_params(graph, convs)
    return graph, convs, ispec, post, X0, run_body(graph, convs, X0, ispec, keep=True, post_params=post)
