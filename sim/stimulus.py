"""Stimulus for the cocotb testbenches, computed in NumPy in batch: tiles of exported layers -> packed beats.

The testbench does no arithmetic: every port value of every beat is packed here (contract 4's bit layout), the
expected accumulators come from the golden model (:func:`golden.layer.accumulate`, in batch), and both reach the
simulator through one ``.npz`` file whose path is passed in an environment variable.

Engine stimulus (``dfsq_engine``)
---------------------------------
Per layer: the point-table writes, the selected output pixels (n, y, x), and per output (pixel, output channel)
``G = ceil(C / lanes)`` beats (``groups``, per layer: C is the layer's input channel count, at most the engine's
``channels``; the channels past C in the last group get weight, sigma, mu and index 0). A 1x1 layer drives the
centre tap only (mask bit 4; index and weight in tap 4, the other taps index 0 and weight 0). Port values are stored factored, so a full 48x48 layer stays small:

* per (pixel, group): ``in_idx`` (lane l, tap t at bits ``[(l*9+t)*act_bits, ...)``) and ``in_mask`` (per pixel);
* per (output channel, group): ``in_weight`` (``w' = q - zero_point``, two's complement ``w_bits``);
* per (sample, group): ``in_sigma`` / ``in_mu`` (two's complement ``scale_bits`` per lane);
* per (sample, output channel): ``in_bias``.
* "split" de-normalization (golden.spec): ``in_sigma`` holds the sigma mantissas (``sigma_bits`` per lane),
  ``in_shift`` the alignment shifts (``shift_bits`` per lane, when > 0), and ``in_start`` the start value of
  the output's border class: ``start`` (sample, output channel, class) and ``pix_class`` (per pixel); no
  ``in_mu`` / ``in_bias``.

Outputs are scheduled sample-major, then output channel, then pixel, then group, so with ``lanes = channels`` only
``in_idx`` and ``in_mask`` change from one beat to the next (the testbench writes a port only when it changes).
Padding taps get ``mask = 0`` and index 0.
The table writes cover every (channel, index) any selected tap reads, plus index 0 of every channel.

MAC stimulus (``dfsq_mac``)
---------------------------
One beat per valid tap (input channel major, then tap) of selected outputs: ``in_weight = w'``, ``in_code`` =
the point's spec code; ``in_first`` on the first beat of each output. Every beat's running sum is expected
(``cumsum(w' * P)`` per output, from the golden operands).
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from golden.errors import UserError
from golden.files import atomic_output
from golden.spec import CENTRE_TAP, TAPS, DatapathSpec

ENGINE_FORMAT = "dfsq-sim-engine-stimulus-1"
MAC_FORMAT = "dfsq-sim-mac-stimulus-1"
MEAN_UNIT_FORMAT = "dfsq-sim-mean-unit-stimulus-1"
UNIFORM_FORMAT = "dfsq-sim-uniform-stimulus-1"   # the static uniform engine's (sim.uniform, sim.tb_uniform_engine)
STIMULUS_ENV = "DFSQ_SIM_STIMULUS"   # path of the stimulus .npz, read by the testbench
RESULT_ENV = "DFSQ_SIM_RESULT"       # path of the result .npz, written by the testbench

# tap t = 3 * (dy + 1) + (dx + 1): kernel row ky = dy + 1, column kx = dx + 1
TAP_DY = np.repeat(np.arange(-1, 2), 3)
TAP_DX = np.tile(np.arange(-1, 2), 3)


def clog2(n: int) -> int:
    """Width of an index into n things (at least 1 bit), as contract 4 sizes tbl_chan and in_group."""
    return max(1, (int(n) - 1).bit_length())


# --- bit packing --------------------------------------------------------------------------------------------------
def pack_fields(values, width: int) -> np.ndarray:
    """Pack the last axis of ``values`` (E elements, two's complement, ``width`` bits each) little-endian.

    Element e occupies bits [e*width, (e+1)*width) of the packed word. Returns uint8 (..., ceil(E*width/8));
    ``int.from_bytes(row.tobytes(), "little")`` is the port value.
    """
    v = np.asarray(values, dtype=np.int64)
    if not 1 <= width <= 63:
        raise ValueError(f"field width {width} outside 1..63")
    lo, hi = -(1 << (width - 1)), (1 << width) - 1
    if v.size and (v.min() < lo or v.max() > hi):
        raise ValueError(f"a value does not fit {width} bits")
    u = v & ((1 << width) - 1)
    bits = ((u[..., None] >> np.arange(width, dtype=np.int64)) & 1).astype(np.uint8)
    bits = bits.reshape(*v.shape[:-1], v.shape[-1] * width)
    return np.packbits(bits, axis=-1, bitorder="little")


def unpack_ints(packed: np.ndarray) -> list[int]:
    """Python ints of packed rows (the last axis is the little-endian byte string of one port value)."""
    rows = np.ascontiguousarray(packed).reshape(-1, packed.shape[-1])
    return [int.from_bytes(r.tobytes(), "little") for r in rows]


def to_unsigned(values, width: int) -> np.ndarray:
    """Two's complement of int64 values as non-negative int64 (width <= 63)."""
    return np.asarray(values, dtype=np.int64) & ((1 << width) - 1)


def from_unsigned(values, width: int) -> np.ndarray:
    """Inverse of :func:`to_unsigned`."""
    v = np.asarray(values, dtype=np.int64)
    return np.where(v >> (width - 1) & 1, v - (1 << width), v)


# --- tiles --------------------------------------------------------------------------------------------------------
def select_pixels(n: int, h: int, w: int, tiles, tile_size: int = 2, seed: int = 0, rotate: int = 0) -> np.ndarray:
    """Output pixels (K, 3) = (sample, y, x), sorted and unique.

    ``tiles`` = "all" (or None): every pixel of every sample. Otherwise that many ``tile_size`` x ``tile_size``
    tiles: the four corners first (top-left, bottom-right, top-right, bottom-left, starting at corner
    ``rotate % 4``), then random positions; tile i uses sample ``i % n``. A corner tile holds a corner, two edge
    pixels and (tile_size >= 2) an interior one, so four corner tiles cover every mask pattern of padded taps; with
    one tile per layer, rotating by the layer index covers them all over four layers.
    """
    if tiles is None or tiles == "all":
        nn, yy, xx = np.meshgrid(np.arange(n), np.arange(h), np.arange(w), indexing="ij")
        return np.stack([nn.ravel(), yy.ravel(), xx.ravel()], axis=1).astype(np.int64)
    tiles = int(tiles)
    if tiles < 1:
        raise UserError(f"tiles must be >= 1 or 'all', got {tiles}")
    th, tw = min(tile_size, h), min(tile_size, w)
    corners = [(0, 0), (h - th, w - tw), (0, w - tw), (h - th, 0)]
    corners = corners[rotate % 4:] + corners[:rotate % 4]
    rng = np.random.default_rng(seed)
    out = []
    for i in range(tiles):
        y0, x0 = corners[i] if i < len(corners) else (int(rng.integers(0, h - th + 1)),
                                                       int(rng.integers(0, w - tw + 1)))
        yy, xx = np.meshgrid(np.arange(y0, y0 + th), np.arange(x0, x0 + tw), indexing="ij")
        out.append(np.stack([np.full(yy.size, i % n), yy.ravel(), xx.ravel()], axis=1))
    pix = np.unique(np.concatenate(out).astype(np.int64), axis=0)
    return pix


def gather_taps(codes: np.ndarray, pixels: np.ndarray, kernel: int = 3):
    """Point indices (K, C, 9) of the 3x3 windows around ``pixels`` (padding -> 0) and the mask (K, 9) bool.

    ``kernel = 1``: only the centre tap is set (index of the pixel itself, mask bit 4)."""
    n_, c_, h, w = codes.shape
    pn, py, px = pixels[:, 0], pixels[:, 1], pixels[:, 2]
    if kernel == 1:
        idx = np.zeros((len(pixels), c_, TAPS), np.int64)
        idx[:, :, CENTRE_TAP] = codes[pn[:, None], np.arange(c_)[None, :], py[:, None], px[:, None]]
        mask = np.zeros((len(pixels), TAPS), bool)
        mask[:, CENTRE_TAP] = True
        return idx, mask
    if kernel != 3:
        raise UserError(f"kernel {kernel}x{kernel} is not supported")
    ty = py[:, None] + TAP_DY[None, :]
    tx = px[:, None] + TAP_DX[None, :]
    mask = (ty >= 0) & (ty < h) & (tx >= 0) & (tx < w)
    cy, cx = np.clip(ty, 0, h - 1), np.clip(tx, 0, w - 1)
    idx = codes[pn[:, None, None], np.arange(c_)[None, :, None], cy[:, None, :], cx[:, None, :]].astype(np.int64)
    idx = np.where(mask[:, None, :], idx, 0)
    return idx, mask


def mask_bits(mask: np.ndarray) -> np.ndarray:
    """Pack (K, 9) bool to the in_mask port value (bit t = tap t)."""
    return (mask.astype(np.int64) << np.arange(TAPS)).sum(axis=1)


# --- engine -------------------------------------------------------------------------------------------------------
def _pad_channels(a: np.ndarray, axis: int, channels: int) -> np.ndarray:
    extra = channels - a.shape[axis]
    if extra <= 0:
        return a
    pad = [(0, 0)] * a.ndim
    pad[axis] = (0, extra)
    return np.pad(a, pad)


def select_out_channels(o: int, count, offset: int = 0) -> np.ndarray:
    """``count`` output channels (all when None/'all' or >= o): a contiguous run starting at ``offset * count``
    (mod o), so rotating ``offset`` by layer covers every output channel over ``o / count`` layers."""
    if count is None or count == "all" or int(count) >= o:
        return np.arange(o)
    count = int(count)
    if count < 1:
        raise UserError(f"output channels per tile must be >= 1, got {count}")
    return np.sort((offset * count + np.arange(count)) % o)


def engine_layer_stimulus(layer, ops, acc: np.ndarray, spec: DatapathSpec, lanes: int, pixels: np.ndarray,
                          out_channels=None, codes_in: bool = False) -> dict:
    """Arrays of one layer's engine stimulus (see the module docstring). ``acc``: golden accumulators (N,O,H,W);
    ``out_channels``: the output channels to compute (default all). ``codes_in``: for the engine without point
    tables (``hw.generate --codes-in``): ``pix_code`` (each tap's point code, looked up here as the input decoder
    in front of the engine would) replaces ``pix_idx``, and there are no table writes."""
    from hw.stream import kernel_taps

    if spec.channels % lanes:
        raise UserError(f"lanes ({lanes}) must divide channels ({spec.channels})")
    n_, c_, o_, h, w = layer.shape
    if c_ > spec.channels:
        raise UserError(f"layer {layer.index} has {c_} input channels, the engine has {spec.channels}")
    groups = -(-c_ // lanes)                   # beats per output of this layer
    ch = groups * lanes                        # the layer's channels, padded to whole groups
    idx, mask = gather_taps(np.asarray(ops.codes), pixels, layer.kernel)       # (K, C, 9)
    idx = _pad_channels(idx, 1, ch)                                              # (K, ch, 9)
    k = len(pixels)
    wq = _pad_channels(kernel_taps(ops.w), 1, ch).reshape(o_, groups, lanes * TAPS)
    sigma = _pad_channels(np.asarray(ops.sigma_m, np.int64), 1, ch).reshape(n_, groups, lanes)
    mu = _pad_channels(np.asarray(ops.mu_m, np.int64), 1, ch).reshape(n_, groups, lanes)
    # point-table writes: every (channel, index) a selected tap reads; index 0 is read by padded taps
    used = np.zeros((ch, spec.points), dtype=bool)
    used[:, 0] = True
    used[np.broadcast_to(np.arange(ch)[None, :, None], idx.shape).ravel(), idx.ravel()] = True
    table = _pad_channels(np.asarray(ops.point_codes, np.int64), 0, ch)
    tc, ti = np.nonzero(used)
    if codes_in:
        tc, ti = tc[:0], ti[:0]
    # schedule: sample, output channel, pixel (pixels are sorted, so each sample's pixels are contiguous)
    ochs = np.arange(o_) if out_channels is None else np.asarray(out_channels, dtype=np.int64)
    out_pix, out_o = [], []
    for n in np.unique(pixels[:, 0]):
        pix_n = np.nonzero(pixels[:, 0] == n)[0]
        out_pix.append(np.tile(pix_n, len(ochs)))
        out_o.append(np.repeat(ochs, len(pix_n)))
    out_pix = np.concatenate(out_pix)
    out_o = np.concatenate(out_o)
    pn, py, px = pixels[out_pix, 0], pixels[out_pix, 1], pixels[out_pix, 2]
    expected = np.asarray(acc, dtype=np.int64)[pn, out_o, py, px]
    bias = np.asarray(ops.bias_int, np.int64)
    d = {
        "groups": np.int64(groups), "kernel": np.int64(layer.kernel),
        "table_chan": tc.astype(np.int64), "table_idx": ti.astype(np.int64), "table_code": table[tc, ti],
        "pixels": pixels.astype(np.int64),
        **({"pix_code": pack_fields(table[np.arange(ch)[None, :, None], idx].reshape(k, groups, lanes * TAPS),
                                    spec.code_bits)} if codes_in else
           {"pix_idx": pack_fields(idx.reshape(k, groups, lanes * TAPS), spec.act_bits)}),
        "pix_mask": mask_bits(mask),
        "weight": pack_fields(wq, spec.w_bits),
        "out_pix": out_pix.astype(np.int64), "out_o": out_o.astype(np.int64),
        "expected": expected,
    }
    if spec.split:  # sigma mantissas and shifts per lane; the start value per (sample, output channel, class)
        from golden.mean_unit import border_classes, starts

        if ops.sigma_s is None or ops.sigma_d is None:
            raise UserError("a split spec needs operands computed with it (sigma_s, sigma_d)")
        s_ = _pad_channels(np.asarray(ops.sigma_s, np.int64), 1, ch).reshape(n_, groups, lanes)
        d_ = _pad_channels(np.asarray(ops.sigma_d, np.int64), 1, ch).reshape(n_, groups, lanes)
        cls = border_classes(h, w) if layer.kernel == 3 else np.zeros((h, w), np.int64)
        d.update(sigma=pack_fields(s_, spec.sigma_bits),
                 start=to_unsigned(starts(ops, spec.for_layer(c_, layer.kernel)), spec.start_bits),
                 pix_class=cls[pixels[:, 1], pixels[:, 2]].astype(np.int64))
        if spec.shift_bits:
            d["shift"] = pack_fields(d_, spec.shift_bits)
    else:
        d.update(sigma=pack_fields(sigma, spec.scale_bits), mu=pack_fields(mu, spec.scale_bits),
                 bias=to_unsigned(bias, spec.bias_bits))
    return d


def _atomic_savez(path, arrays: dict) -> None:
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def write_stimulus(path, fmt: str, meta: dict, layer_arrays: list[dict]) -> None:
    """One .npz: ``meta`` (JSON string) + arrays of layer j prefixed ``L{j}_``."""
    arrays = {"meta": np.str_(json.dumps(dict(meta, format=fmt, layers=len(layer_arrays))))}
    for j, d in enumerate(layer_arrays):
        for key, a in d.items():
            arrays[f"L{j}_{key}"] = np.asarray(a)
    _atomic_savez(path, arrays)


@dataclass
class Stimulus:
    """A loaded stimulus file: ``meta`` dict and a list of per-layer array dicts."""

    meta: dict
    layers: list[dict]


def load_stimulus(path, fmt: str | None = None) -> Stimulus:
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        if fmt is not None and meta.get("format") != fmt:
            raise UserError(f"{path}: stimulus format {meta.get('format')!r}, expected {fmt!r}")
        layers = [{} for _ in range(int(meta["layers"]))]
        for key in z.files:
            if key.startswith("L"):
                j, name = key[1:].split("_", 1)
                layers[int(j)][name] = z[key]
    return Stimulus(meta, layers)


def engine_meta(spec: DatapathSpec, lanes: int, latency: int | None, layer_meta: list[dict]) -> dict:
    """``groups``: the engine's largest beat count per output (channels / lanes); each layer's own is its
    ``groups`` array."""
    return {"spec": spec.widths(), "lanes": lanes, "groups": spec.channels // lanes, "latency": latency,
            "layer_meta": layer_meta}


# --- MAC ----------------------------------------------------------------------------------------------------------
def mac_layer_stimulus(layer, ops, spec: DatapathSpec, outputs: np.ndarray) -> dict:
    """Beats of the MAC top for ``outputs`` (M, 4) = (n, o, y, x): every valid tap, channel-major."""
    codes = np.asarray(ops.codes)
    P = np.asarray(ops.P, np.int64)
    from hw.stream import kernel_taps

    wq = kernel_taps(ops.w)
    kernel = np.asarray(ops.w).shape[-1]
    table = np.asarray(ops.point_codes, np.int64)
    n_, c_, h, w = codes.shape
    weights, cods, prods, first, out_id = [], [], [], [], []
    for m, (n, o, y, x) in enumerate(np.asarray(outputs, np.int64)):
        ty, tx = y + TAP_DY, x + TAP_DX
        valid = (ty >= 0) & (ty < h) & (tx >= 0) & (tx < w)
        if kernel == 1:  # a 1x1 kernel: the centre tap only
            valid &= np.arange(TAPS) == CENTRE_TAP
        t = np.nonzero(valid)[0]
        cc, tt = np.meshgrid(np.arange(c_), t, indexing="ij")
        cc, tt = cc.ravel(), tt.ravel()
        yy, xx = ty[tt], tx[tt]
        wv = wq[o, cc, tt]
        weights.append(wv)
        cods.append(table[cc, codes[n, cc, yy, xx]])
        prods.append(wv * P[n, cc, yy, xx])
        f = np.zeros(len(cc), dtype=np.int64)
        f[0] = 1
        first.append(f)
        out_id.append(np.full(len(cc), m))
    prods_a = np.concatenate(prods)
    out_id_a = np.concatenate(out_id)
    csum = np.cumsum(prods_a)
    starts = np.concatenate([[0], np.cumsum([len(p) for p in prods])[:-1]])
    base = np.concatenate([[0], csum])[starts]
    expected = csum - base[out_id_a]
    return {"weight": to_unsigned(np.concatenate(weights), spec.w_bits), "code": np.concatenate(cods),
            "first": np.concatenate(first), "beat_output": out_id_a, "outputs": np.asarray(outputs, np.int64),
            "expected": expected}


# --- mean unit ----------------------------------------------------------------------------------------------------
def mean_unit_layer_stimulus(layer, ops, spec: DatapathSpec, out_channels=None) -> dict:
    """Beats and expected start values of the mean unit (``dfsq_mean_unit``) for one layer of a "split" spec: for
    every sample n and output channel o (``out_channels``, default all), one beat per input channel c (mu_m[n, c],
    the 9 weights w'[o, c, :] packed, first/last flags, bias_int[n, o]); then 16 start values, one per border class
    (golden.mean_unit.starts: the transaction-level model). ``expected`` is in output order (n, o, class)."""
    from golden.mean_unit import CLASSES, starts
    from hw.stream import kernel_taps

    n_, c_, o_, h, w = layer.shape
    lspec = spec.for_layer(c_, layer.kernel)
    st_ = starts(ops, lspec)                                               # (N, O, 16)
    ochs = np.arange(o_) if out_channels is None else np.asarray(out_channels, dtype=np.int64)
    wq = kernel_taps(ops.w)                                                # (O, C, 9)
    pairs = np.array([(n, o) for n in range(n_) for o in ochs], np.int64)  # output order: sample, channel
    return {
        "pairs": pairs,
        "mu": to_unsigned(np.asarray(ops.mu_m, np.int64), spec.scale_bits),                 # (N, C)
        "weight": pack_fields(wq[ochs], spec.w_bits),                                      # (O', C)
        "bias": to_unsigned(np.asarray(ops.bias_int, np.int64), spec.bias_bits),           # (N, O)
        "out_index": np.searchsorted(ochs, pairs[:, 1]) if len(ochs) else np.zeros(0, np.int64),
        "expected": st_[pairs[:, 0], pairs[:, 1]].reshape(-1),                             # (pairs x 16)
        "classes": np.tile(np.arange(CLASSES, dtype=np.int64), len(pairs)),
    }
