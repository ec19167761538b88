"""Beats of the conv engine's input stream (contract 4), built from golden operands, and port packing.

Shared by the Amaranth tests and anyone driving ``dfsq_engine``: :func:`engine_beats` walks the outputs of a
layer in order (sample, output channel, pixel) and yields the G beats of each; :func:`pack` packs a sequence of
integers into one flat port value (element e at bits ``[e * width, (e + 1) * width)``, two's complement).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from golden.spec import CENTRE_TAP, TAPS, DatapathSpec

__all__ = ["Beat", "UniformBeat", "pack", "window", "engine_beats", "uniform_beats", "table_writes", "kernel_taps"]


def kernel_taps(w: np.ndarray) -> np.ndarray:
    """(O, C, 9): the weights of (O, C, k, k) in the engine's 3x3 tap order; a 1x1 kernel sits in the centre tap
    (:data:`golden.spec.CENTRE_TAP`), the other 8 taps 0."""
    w = np.asarray(w, np.int64)
    O, C, k = w.shape[0], w.shape[1], w.shape[-1]
    if k == 3:
        return w.reshape(O, C, TAPS)
    if k != 1:
        raise ValueError(f"kernel {k}x{k} is not supported")
    out = np.zeros((O, C, TAPS), np.int64)
    out[:, :, CENTRE_TAP] = w[:, :, 0, 0]
    return out


def pack(values, width: int) -> int:
    """Pack integers (two's complement, ``width`` bits each) LSB-first into one integer."""
    mask = (1 << width) - 1
    out = 0
    for e, v in enumerate(np.asarray(values, dtype=np.int64).ravel().tolist()):
        v = int(v)
        if not -(1 << (width - 1)) <= v < (1 << width):
            raise ValueError(f"element {e} = {v} does not fit {width} bits")
        out |= (v & mask) << (e * width)
    return out


@dataclass(frozen=True)
class Beat:
    """One engine beat, as plain integers / int64 arrays (lanes x 9 for idx and weight)."""

    first: bool
    last: bool
    group: int
    mask: int
    idx: np.ndarray
    weight: np.ndarray
    sigma: np.ndarray
    mu: np.ndarray
    bias: int
    shift: np.ndarray | None = None   # "split": alignment shifts d_c (sigma holds the mantissas s_c)
    code: np.ndarray | None = None    # point codes of idx (lanes x 9), for an engine without tables
    start: int | None = None          # "split": the output's start value (bias + mean term of its border class)


def window(codes_c: np.ndarray, h: int, w: int):
    """(idx (C, 9), mask bits) of the 3x3 window at (h, w) of codes (C, H, W); outside taps: index 0, masked."""
    C, H, W = codes_c.shape
    idx = np.zeros((C, TAPS), np.int64)
    mask = 0
    for t, (dy, dx) in enumerate((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)):
        y, x = h + dy, w + dx
        if 0 <= y < H and 0 <= x < W:
            idx[:, t] = codes_c[:, y, x]
            mask |= 1 << t
    return idx, mask


def engine_beats(ops, spec: DatapathSpec, lanes: int, outputs):
    """Yield ``(key, beats)`` for each ``key = (n, o, h, w)`` in ``outputs``: the G beats of that output.

    ``ops`` is a :class:`golden.layer.Operands` with ``C <= spec.channels`` input channels and a 3x3 or 1x1 kernel:
    G = ceil(C / lanes) beats, the channels past C in the last group with weight 0 (sigma, mu and index 0); a 1x1
    layer uses only the centre tap (mask bit 4, weight and index in tap 4).
    """
    N, C, H, W = ops.codes.shape
    if C > spec.channels:
        raise ValueError(f"the layer has {C} input channels, the engine at most {spec.channels}")
    k = ops.w.shape[-1]
    G = -(-C // lanes)
    pad = G * lanes - C
    w = np.pad(kernel_taps(ops.w), ((0, 0), (0, pad), (0, 0)))
    split = spec.split
    if split and (ops.sigma_s is None or ops.sigma_d is None):
        raise ValueError("a split spec needs operands with sigma_s and sigma_d (golden.layer.operands of that spec)")
    sig = np.pad(np.asarray(ops.sigma_s if split else ops.sigma_m, np.int64), ((0, 0), (0, pad)))
    shift = np.pad(np.asarray(ops.sigma_d, np.int64), ((0, 0), (0, pad))) if split else None
    mu = np.pad(np.asarray(ops.mu_m, np.int64), ((0, 0), (0, pad)))
    table = np.pad(np.asarray(ops.point_codes, np.int64), ((0, pad), (0, 0)))   # padded channels: code 0
    if split:
        from golden.mean_unit import border_classes, starts

        st = starts(ops)
        cls = border_classes(H, W) if k == 3 else np.zeros((H, W), np.int64)
    for n, o, h, x in outputs:
        if k == 3:
            idx, mask = window(ops.codes[n], h, x)
        else:
            idx = np.zeros((C, TAPS), np.int64)
            idx[:, CENTRE_TAP] = ops.codes[n, :, h, x]
            mask = 1 << CENTRE_TAP
        idx = np.pad(idx, ((0, pad), (0, 0)))
        code = table[np.arange(G * lanes)[:, None], idx]   # the point code of every (channel, tap)
        beats = []
        for g in range(G):
            ch = slice(g * lanes, (g + 1) * lanes)
            beats.append(Beat(first=g == 0, last=g == G - 1, group=g, mask=mask, idx=idx[ch], weight=w[o, ch],
                              sigma=sig[n, ch], mu=mu[n, ch], bias=int(ops.bias_int[n, o]),
                              shift=shift[n, ch] if split else None,
                              start=int(st[n, o, cls[h, x]]) if split else None, code=code[ch]))
        yield (n, o, h, x), beats


def table_writes(point_codes: np.ndarray):
    """``(chan, idx, code)`` writes that load a (C, 2^b) point-code table."""
    C, npts = point_codes.shape
    for c in range(C):
        for i in range(npts):
            yield c, i, int(point_codes[c, i])


@dataclass(frozen=True)
class UniformBeat:
    """One beat of the uniform engine (:mod:`hw.units.uniform_engine`): lanes x 9 activations a' and weights w'."""

    first: bool
    last: bool
    mask: int
    act: np.ndarray
    weight: np.ndarray
    bias: int


def uniform_beats(ops, lanes: int, outputs):
    """Yield ``(key, beats)`` for each ``key = (n, o, h, w)`` in ``outputs``: the G beats of one output of the
    uniform engine, for :class:`golden.uniform_layer.UniformOperands` ``ops`` (3x3 or 1x1 kernel).

    The same schedule as :func:`engine_beats`: G = ceil(C / lanes) beats, lanes past C with weight 0, a 1x1 layer
    on the centre tap; taps outside the image carry a' = 0 and a clear mask bit.
    """
    a = np.asarray(ops.a, np.int64)
    N, C, H, W = a.shape
    k = ops.w.shape[-1]
    G = -(-C // lanes)
    pad = G * lanes - C
    w = np.pad(kernel_taps(ops.w), ((0, 0), (0, pad), (0, 0)))
    for n, o, h, x in outputs:
        if k == 3:
            act, mask = window(a[n], h, x)
        else:
            act = np.zeros((C, TAPS), np.int64)
            act[:, CENTRE_TAP] = a[n, :, h, x]
            mask = 1 << CENTRE_TAP
        act = np.pad(act, ((0, pad), (0, 0)))
        beats = []
        for g in range(G):
            ch = slice(g * lanes, (g + 1) * lanes)
            beats.append(UniformBeat(first=g == 0, last=g == G - 1, mask=mask, act=act[ch], weight=w[o, ch],
                                     bias=int(ops.bias[o])))
        yield (n, o, h, x), beats
