"""Scalar, MAC-level reference of the DFSQ datapath, in plain Python integers (slow, obviously right).

This is what one lane of the hardware does (golden/spec.py has the definitions):

* :func:`decode` turns a point code into a sign and one left shift per non-zero word;
* :func:`product` is ``w' * P`` computed as the hardware does it: ``sum over words of sign * (w' << shift)``;
* :func:`mac_reference` is one output pixel of one output channel: per input channel the 3x3 partial sums
  ``A_c`` (over valid taps, of ``product``) and ``B_c`` (the valid taps' weights), then
  ``acc = bias_int + sum_c sigma_m[c] * A_c + mu_m[c] * B_c``. With ``spec`` given, every intermediate is
  checked against its width in ``spec.widths()`` (an overflow raises :class:`DatapathOverflow`).
* :func:`pixel_reference` cuts that window out of :class:`golden.layer.Operands` (zero padding = masked tap).

The vectorized :mod:`golden.layer` must agree with this module bit for bit (tests/test_golden_layer.py).
"""
from __future__ import annotations

from .spec import SEL_ZERO, TAPS, DatapathSpec, SpecError, UniformPointSet, WordSet


class DatapathOverflow(ArithmeticError):
    """An intermediate value does not fit the width the spec gives it."""


def decode(code: int, wordset: WordSet) -> tuple[bool, tuple[int, ...]]:
    """(negative, shifts): the sign bit and the left shift of every word whose selector is not zero."""
    code = int(code)
    if not 0 <= code < (1 << wordset.code_bits):
        raise SpecError(f"code {code} out of range for {wordset.code_bits} bits")
    shifts = []
    for i in range(1, wordset.words + 1):
        sel = (code >> (2 * (i - 1))) & 3
        if sel != SEL_ZERO:
            shifts.append(wordset.shift(i, sel))
    return bool((code >> wordset.sign_bit) & 1), tuple(shifts)


def product(w: int, code: int, wordset: WordSet) -> int:
    """``w * P(code)`` as shift-add: ``sum over words of sign * (w << shift)`` (exact, Python ints); for the uniform
    point set (golden.spec.UniformPointSet), one integer multiply by the two's-complement P of the code."""
    if isinstance(wordset, UniformPointSet):
        return int(w) * int(wordset.code_to_int(int(code)))
    negative, shifts = decode(code, wordset)
    w = int(w)
    total = 0
    for sh in shifts:
        total += w << sh
    return -total if negative else total


def _fits(value: int, bits: int, what: str) -> int:
    lim = 1 << (bits - 1)
    if not -lim <= value < lim:
        raise DatapathOverflow(f"{what} = {value} does not fit {bits} signed bits")
    return value


def mac_reference(weights, idx, mask, table, sigma_m, mu_m, bias_int: int, wordset: WordSet,
                  spec: DatapathSpec | None = None) -> int:
    """The accumulator of one output pixel of one output channel.

    weights: C x 9 (or C x 3 x 3) integers ``w' = q - zero_point``; idx: C x 9 point indices; mask: 9 flags
    (tap inside the image); table: C x 2^b point codes; sigma_m, mu_m: C integers; bias_int: integer.
    Taps are in raster order ``t = 3 * (dy + 1) + (dx + 1)``. With ``spec``, every product, A_c, B_c, term,
    running channel sum and the final accumulator is checked against its width.
    """
    mask = _mask(mask)
    total = 0
    for c, (wc, ic) in enumerate(zip(weights, idx)):
        a, b = _channel_sums(wc, ic, mask, table[c], wordset, spec, c)
        term = int(sigma_m[c]) * a + int(mu_m[c]) * b
        total += term
        if spec is not None:
            _fits(b, spec.b_bits, f"B_{c}")
            _fits(int(sigma_m[c]), spec.scale_bits, f"sigma_m[{c}]")
            _fits(int(mu_m[c]), spec.scale_bits, f"mu_m[{c}]")
            _fits(term, spec.term_bits, f"term_{c}")
            _fits(total, spec.sum_bits, f"channel sum after channel {c}")
    return _accumulator(bias_int, total, spec, "bias_int", "bias_bits")


def _mask(mask) -> list[int]:
    mask = [int(bool(m)) for m in _flat(mask)]
    if len(mask) != TAPS:
        raise ValueError(f"mask needs {TAPS} entries")
    return mask


def _channel_sums(wc, ic, mask, table_c, wordset: WordSet, spec, c: int) -> tuple[int, int]:
    """(A_c, B_c) of one input channel: the shift-add products and the weights of the valid taps (checked)."""
    wc, ic = [int(v) for v in _flat(wc)], [int(v) for v in _flat(ic)]
    a = b = 0
    for t in range(TAPS):
        if mask[t]:
            p = product(wc[t], int(table_c[ic[t]]), wordset)
            if spec is not None:
                _fits(p, spec.product_bits, f"product (channel {c}, tap {t})")
            a += p
            b += wc[t]
    if spec is not None:
        _fits(a, spec.a_bits, f"A_{c}")
    return a, b


def _accumulator(start: int, total: int, spec, name: str, bits: str) -> int:
    """``start + total``, with the start value and the accumulator checked against their widths."""
    acc = int(start) + total
    if spec is not None:
        _fits(int(start), getattr(spec, bits), name)
        _fits(acc, spec.acc_bits, "acc")
    return acc


def _flat(a):
    """A nested sequence or array, flattened to a list."""
    try:
        return list(a.ravel())  # numpy
    except AttributeError:
        out = []
        for v in a:
            if isinstance(v, (list, tuple)):
                out.extend(_flat(v))
            else:
                out.append(v)
        return out


def window(codes_c, h: int, w: int):
    """(idx, mask): the 3x3 point indices around (h, w) of one channel's code plane (0 and masked outside)."""
    hh, ww = len(codes_c), len(codes_c[0])
    idx, mask = [], []
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            y, x = h + dy, w + dx
            inside = 0 <= y < hh and 0 <= x < ww
            mask.append(int(inside))
            idx.append(int(codes_c[y][x]) if inside else 0)
    return idx, mask


def pixel_reference(ops, wordset: WordSet, n: int, o: int, h: int, w: int, spec: DatapathSpec | None = None) -> int:
    """acc[n, o, h, w] of :class:`golden.layer.Operands` ``ops``, computed by :func:`mac_reference`."""
    C = ops.codes.shape[1]
    k = ops.w.shape[-1]
    idx, mask = [], None
    for c in range(C):
        i, mask = window(ops.codes[n, c], h, w)
        idx.append(i)
    wo = ops.w[o].reshape(C, k * k)
    if k == 1:  # a 1x1 kernel is the centre tap of the 3x3 window, the other taps masked (as the engine runs it)
        wo = [[int(v) if t == TAPS // 2 else 0 for t in range(TAPS)] for v in wo[:, 0]]
        mask = [int(t == TAPS // 2) for t in range(TAPS)]
    return mac_reference(wo, idx, mask, ops.point_codes, ops.sigma_m[n], ops.mu_m[n],
                         int(ops.bias_int[n, o]), wordset, spec)


def mac_reference_split(weights, idx, mask, table, sigma_s, sigma_d, start: int, wordset: WordSet,
                        spec: DatapathSpec | None = None) -> int:
    """The accumulator of one output pixel of one output channel on the "split" datapath (golden.spec):
    ``acc = start + sum_c (s_c * A_c) << d_c`` with ``A_c = sum over valid taps of w' * P`` and ``start`` the
    pixel's border-class start value (golden.mean_unit). Arguments as :func:`mac_reference`, with the sigma
    mantissas ``sigma_s`` and shifts ``sigma_d`` per channel. With ``spec``, every product, A_c, s_c A_c, lane
    term, running lane sum, the start value and the accumulator are checked against their widths."""
    mask = _mask(mask)
    total = 0
    for c, (wc, ic) in enumerate(zip(weights, idx)):
        a, _ = _channel_sums(wc, ic, mask, table[c], wordset, spec, c)
        s, d = int(sigma_s[c]), int(sigma_d[c])
        if spec is not None:
            if not (0 <= s <= spec.sigma_max and 0 <= d <= spec.shift_max):
                raise DatapathOverflow(f"sigma mantissa {s} or shift {d} of channel {c} out of range")
            _fits(s * a, spec.sa_bits, f"s_{c} * A_{c}")
        term = (s * a) << d
        total += term
        if spec is not None:
            _fits(term, spec.term_bits, f"term_{c}")
            _fits(total, spec.sum_bits, f"lane sum after channel {c}")
    return _accumulator(start, total, spec, "start", "start_bits")


def mean_unit_reference(mu_m, weights, bias_int: int, kernel: int = 3, spec: DatapathSpec | None = None) -> list[int]:
    """The 16 border-class start values of one output channel, as the sequential mean unit computes them: the tap
    constants ``K_t = sum_c mu_m[c] * w'[c, t]`` (one product at a time), then ``bias_int + sum of K_t`` over
    each class's valid taps (golden.mean_unit.class_taps). ``weights``: C x taps. With ``spec``, every running
    tap constant and every start value are checked against their widths."""
    from .mean_unit import CLASSES, class_taps

    taps = kernel * kernel
    K = [0] * taps
    for c, wc in enumerate(weights):
        wc = [int(v) for v in _flat(wc)]
        if spec is not None:
            _fits(int(mu_m[c]), spec.scale_bits, f"mu_m[{c}]")
        for t in range(taps):
            K[t] += int(mu_m[c]) * wc[t]
            if spec is not None:
                _fits(K[t], spec.tap_const_bits, f"K_{t} after channel {c}")
    out = []
    for k in range(CLASSES):
        v = int(bias_int) + sum(K[t] for t in class_taps(k, kernel))
        if spec is not None:
            _fits(v, spec.start_bits, f"start of class {k}")
        out.append(v)
    return out


def pixel_reference_split(ops, wordset: WordSet, n: int, o: int, h: int, w: int,
                          spec: DatapathSpec | None = None) -> int:
    """acc[n, o, h, w] of "split" :class:`golden.layer.Operands` ``ops`` (sigma_s, sigma_d set), computed by
    :func:`mean_unit_reference` (the pixel's border class) and :func:`mac_reference_split`."""
    from .mean_unit import border_classes

    if ops.sigma_s is None or ops.sigma_d is None:
        raise SpecError("pixel_reference_split needs operands of a split spec (sigma_s, sigma_d)")
    C, H, W = ops.codes.shape[1:]
    k = ops.w.shape[-1]
    idx, mask = [], None
    for c in range(C):
        i, mask = window(ops.codes[n, c], h, w)
        idx.append(i)
    wo = ops.w[o].reshape(C, k * k)
    starts = mean_unit_reference(ops.mu_m[n], wo, int(ops.bias_int[n, o]), k, spec)
    if k == 1:
        wo = [[int(v) if t == TAPS // 2 else 0 for t in range(TAPS)] for v in wo[:, 0]]
        mask = [int(t == TAPS // 2) for t in range(TAPS)]
    start = starts[int(border_classes(H, W)[h, w])]
    return mac_reference_split(wo, idx, mask, ops.point_codes, ops.sigma_s[n], ops.sigma_d[n], start, wordset, spec)
