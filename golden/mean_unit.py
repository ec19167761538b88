"""The mean unit of the "split" de-normalization (golden.spec, docs/datapath.md "Split de-normalization").

With the mean term out of the lanes, the accumulator of output (n, o, pixel p) is

    acc = start[n, o, class(p)] + sum_c (s_c A_c) << d_c
    start[n, o, k] = bias_int[n, o] + sum over the taps t valid in border class k of K[n, o, t]
    K[n, o, t]     = sum_c mu_m[n, c] w'[o, c, t]                         (the tap constants)

because B_c = sum over the valid taps of w', and which taps are valid depends only on whether the pixel is in the
first / last row and column (the zero padding). The 16 border classes k = 4 r + q, with r (rows) and q (columns)
each one of ``INTERIOR`` (every tap row inside), ``FIRST`` (the row above is padding), ``LAST`` (the row below is
padding) and ``BOTH`` (a one-pixel-high image); an image at least 2 x 2 uses 9 of them. A 1x1 kernel has one tap
(always valid): all 16 classes hold bias_int + K[centre].

The hardware computes these once per (layer, sample, output channel) in a sequential unit with one
mu_m x w' multiplier (``hw.units.mean_unit``): C x taps products, then one start value per class. NumPy only.
"""
from __future__ import annotations

import numpy as np

from .spec import DatapathSpec

INTERIOR, FIRST, LAST, BOTH = 0, 1, 2, 3
EDGE_CLASSES = (INTERIOR, FIRST, LAST, BOTH)
CLASSES = 16
# tap rows (dy + 1) valid in each edge class of a 3x3 kernel (the same table serves columns)
VALID_ROWS = {INTERIOR: (0, 1, 2), FIRST: (1, 2), LAST: (0, 1), BOTH: (1,)}


def class_taps(k: int, kernel: int = 3) -> tuple[int, ...]:
    """The taps t = kernel * row + col valid in border class k (all of them for a 1x1 kernel)."""
    if not 0 <= k < CLASSES:
        raise ValueError(f"border class must be in 0..{CLASSES - 1}, got {k}")
    if kernel == 1:
        return (0,)
    rows, cols = VALID_ROWS[k // 4], VALID_ROWS[k % 4]
    return tuple(3 * r + c for r in rows for c in cols)


def edge_class(i: np.ndarray, n: int) -> np.ndarray:
    """Edge class of rows (or columns) ``i`` of an image ``n`` long."""
    i = np.asarray(i)
    return np.where(i == 0, FIRST, INTERIOR) + np.where(i == n - 1, LAST, INTERIOR) * 1


def border_classes(H: int, W: int) -> np.ndarray:
    """(H, W) int64: the border class 4 r + q of every pixel."""
    r = edge_class(np.arange(H), H)
    q = edge_class(np.arange(W), W)
    return (4 * r[:, None] + q[None, :]).astype(np.int64)


def tap_constants(w: np.ndarray, mu_m: np.ndarray) -> np.ndarray:
    """(N, O, taps) int64: K[n, o, t] = sum_c mu_m[n, c] w'[o, c, t], exact (w' (O, C, k, k), mu_m (N, C))."""
    w = np.asarray(w, dtype=np.int64)
    O, C = w.shape[:2]
    return np.einsum("oct,nc->not", w.reshape(O, C, -1), np.asarray(mu_m, dtype=np.int64))


def class_starts(K: np.ndarray, bias_int: np.ndarray, kernel: int = 3) -> np.ndarray:
    """(N, O, 16) int64: start[n, o, k] = bias_int[n, o] + sum of K[n, o, t] over the taps valid in class k."""
    K = np.asarray(K, dtype=np.int64)
    sel = np.zeros((K.shape[-1], CLASSES), dtype=np.int64)
    for k in range(CLASSES):
        sel[list(class_taps(k, kernel)), k] = 1
    return np.asarray(bias_int, dtype=np.int64)[:, :, None] + K @ sel


def starts(ops, spec: DatapathSpec | None = None) -> np.ndarray:
    """(N, O, 16) start values of :class:`golden.layer.Operands` ``ops`` (what the mean unit outputs).

    With ``spec``, every tap constant and start value is checked against its bound (SpecError)."""
    from .spec import SpecError

    k = ops.w.shape[-1]
    K = tap_constants(ops.w, ops.mu_m)
    st = class_starts(K, ops.bias_int, k)
    if spec is not None:
        for what, v, lim in (("tap constant", K, spec.tap_const_max), ("start", st, spec.start_max)):
            if v.size and int(np.abs(v).max()) > lim:
                raise SpecError(f"{what} {int(np.abs(v).max())} exceeds its bound {lim}")
    return st


def start_map(st: np.ndarray, H: int, W: int) -> np.ndarray:
    """(N, O, H, W): the start value of every output pixel (its border class's)."""
    return st[:, :, border_classes(H, W)]


def lane_sum(ops) -> np.ndarray:
    """(N, O, H, W) int64: sum_c sigma_m[n, c] A_c, the lanes' part (A_c = sum over taps of w' P, zero padded);
    exact int64 (a direct loop over taps: for tests and the engine's checks, not for speed)."""
    N, C, H, W = ops.P.shape
    O, k = ops.w.shape[0], ops.w.shape[-1]
    pad = k // 2
    Pp = np.zeros((N, C, H + 2 * pad, W + 2 * pad), dtype=np.int64)
    Pp[:, :, pad:pad + H, pad:pad + W] = ops.P
    Z = Pp * np.asarray(ops.sigma_m, dtype=np.int64)[:, :, None, None]
    out = np.zeros((N, O, H, W), dtype=np.int64)
    for dy in range(k):
        for dx in range(k):
            out += np.einsum("oc,nchw->nohw", ops.w[:, :, dy, dx], Z[:, :, dy:dy + H, dx:dx + W])
    return out
