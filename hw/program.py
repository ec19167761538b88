"""The layer program: a model's integer body compiled for the accelerator (:mod:`hw.units.accelerator`).

    sizes = size_for(graph, convs, ispec, lanes=64, max_pixels=128 * 128)    # an AccelSpec for this network
    prog = compile_program(graph, convs, ispec, post_params, sizes)           # instructions + memory images
    prog.images["wmem"]                                                       # uint8 (depth, bytes) rows

Input: the integer graph a model's adapter describes (golden.int_graph.IntGraph: which conv reads which tensors,
ReLUs, residual adds, concatenations), the convs' integer parameters (golden.int_layer.IntConvParams, in the
adapter's order), the integer spec and the post units' multipliers (golden.int_network.step_post_params). Nothing
network-specific: a new adapter compiles with no new RTL.

What the compiler decides:

* **Feature-map allocation**: every tensor gets ``ceil(C / L)`` groups (L channels per word) of the feature-map
  memory, first fit, from the step that writes it until the last step that reads it (the exit is kept); a step's
  output never overlaps what it reads. The peak is the memory the network needs (``fm_groups``).
* **Quantize pieces**: a step's input is the concatenation of its tensors (RDN); each piece moves up to L channels of
  one feature-map word to their lanes of the step's input (a word of a tensor whose concatenation offset is not a
  multiple of L splits in two pieces).
* **Per input channel** (tmem): the feature-map channel whose statistics it uses, its 2^b point integers (thresholds)
  and point codes (the engine's decoder table). **Per output channel** (omem): the bias over the weight scale as
  bm 2^jb / sm exactly (golden.int_layer.bias_int divides by sm at run time once E is known), the requantization
  multiplier mult 2^-r. **Weights** (wmem): one engine beat per (output channel, group), w' = q - zero point, a 1x1
  kernel on the centre tap. Per step, the bias cap of E (golden.int_layer.bias_cap).

:func:`check_program` refuses a program that does not match the graph or the sizes (one line, exit 2 through the
CLIs); :func:`mutate` makes deliberately wrong programs for the mutation tests.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

import numpy as np

from golden.errors import UserError
from golden.spec import CENTRE_TAP, TAPS

from .stream import kernel_taps
from .units.accel_spec import CFG_FIELDS, MEMS, AccelSpec, record_width

__all__ = ["Step", "Program", "size_for", "allocate", "compile_program", "pack_record", "config_image",
           "entry_image", "load_records", "model_sizes",
           "check_program", "mutate", "MUTATIONS", "PROGRAM_VERSION"]

PROGRAM_VERSION = 1
#: Deliberately wrong layer programs (mutation tests): what each changes.
MUTATIONS = {
    "residual": "the last step with a residual reads it from the wrong feature-map group",
    "relu": "the first step with a ReLU loses it",
}


def pack_record(layout, rows: dict, n: int) -> np.ndarray:
    """uint8 (n, ceil(width / 8)): ``rows[name]`` (n values, or (n, 1)) of every field, packed LSB first (the first
    field at bit 0), two's complement for signed fields; a value that does not fit its field is a ValueError."""
    bits = []
    for name, width, sgn in layout:
        v = np.asarray(rows.get(name, 0), dtype=object if width > 62 else np.int64)
        v = np.broadcast_to(v.reshape(-1) if v.ndim else v, (n,))
        if width > 62:
            raise ValueError(f"field {name} is wider than 62 bits")
        lo, hi = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if sgn else (0, (1 << width) - 1)
        if n and (v.min() < lo or v.max() > hi):
            bad = int(np.nonzero((v < lo) | (v > hi))[0][0])
            raise ValueError(f"field {name}: {int(v[bad])} (row {bad}) does not fit {width} "
                             f"{'signed' if sgn else 'unsigned'} bits")
        u = v.astype(np.int64) & ((1 << width) - 1)
        bits.append(((u[:, None] >> np.arange(width, dtype=np.int64)) & 1).astype(np.uint8))
    allbits = np.concatenate(bits, axis=1) if bits else np.zeros((n, 0), np.uint8)
    return np.packbits(allbits, axis=1, bitorder="little")


@dataclass(frozen=True)
class Step:
    """One compiled step (what :func:`compile_program` decided, for reports and checks)."""

    index: int
    layer: int
    name: str
    kernel: int
    in_channels: int
    out_channels: int
    groups: int
    inputs: tuple           # ((tensor, channels, fm group), ...) in concatenation order
    output: str
    out_group: int
    residual: str | None
    res_group: int
    relu_input: bool
    relu: bool
    pieces: tuple           # ((src_group, src_lane, dst_group, dst_lane, count), ...)
    cap: int | None


@dataclass
class Program:
    """The compiled layer program: steps, tensor allocation and the memory images (uint8 rows per memory)."""

    spec: AccelSpec
    steps: list[Step]
    tensors: dict           # name -> (fm group, channels)
    entry: str
    exit: str
    frac: int
    images: dict = field(default_factory=dict)

    def describe(self) -> dict:
        return {"version": PROGRAM_VERSION, "entry": self.entry, "exit": self.exit, "frac": self.frac,
                "tensors": {k: list(v) for k, v in self.tensors.items()},
                "steps": [{k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(s).items()}
                          for s in self.steps],
                "fm_groups_used": self.fm_groups_used, "spec": self.spec.describe()}

    @property
    def fm_groups_used(self) -> int:
        return max(g + -(-c // self.spec.lanes) for g, c in self.tensors.values())

    def json(self) -> str:
        return json.dumps(self.describe(), indent=1)


def _groups(channels: int, lanes: int) -> int:
    return -(-int(channels) // lanes)


def allocate(graph, lanes: int) -> tuple[dict, int]:
    """First-fit allocation of feature-map groups: {tensor: first group}, peak groups. A tensor lives from the step
    that writes it (the entry: before the first) to the last step that reads it (the exit: to the end)."""
    chans = graph.channels or {}
    last = graph.last_reads()
    live: dict[str, tuple[int, int]] = {}     # tensor -> (first group, groups)
    where: dict[str, int] = {}
    peak = 0

    def place(name):
        nonlocal peak
        need = _groups(chans[name], lanes)
        spans = sorted(live.values())
        start = 0
        for g0, n in spans:
            if g0 - start >= need:
                break
            start = max(start, g0 + n)
        live[name] = (start, need)
        where[name] = start
        peak = max(peak, start + need)

    place(graph.entry)
    for i, s in enumerate(graph.steps):
        place(s.output)
        for t in set(s.inputs) | ({s.residual} if s.residual else set()):
            if last.get(t, -1) <= i and t != graph.exit:
                live.pop(t, None)
    return where, peak


def _pieces(inputs, lanes: int) -> list[tuple]:
    """Quantize pieces of a concatenation ((tensor, channels, fm group), ...)."""
    out, off = [], 0
    for _, ch, g0 in inputs:
        for j in range(_groups(ch, lanes)):
            n = min(lanes, ch - j * lanes)
            src_lane = 0
            d = off + j * lanes
            while n:
                dg, dl = divmod(d, lanes)
                take = min(n, lanes - dl)
                out.append((g0 + j, src_lane, dg, dl, take))
                n -= take
                d += take
                src_lane += take
        off += ch
    return out


def size_for(graph, convs, ispec, *, lanes: int, max_pixels: int) -> AccelSpec:
    """The smallest :class:`AccelSpec` that runs ``graph`` with ``convs`` (``ispec.datapath.channels`` must cover the
    widest conv input) at up to ``max_pixels`` pixels."""
    _check_graph(graph, convs)
    _, peak = allocate(graph, lanes)
    steps = list(graph.steps)
    pieces = sum(len(_pieces([(t, graph.channels[t], 0) for t in s.inputs], lanes)) for s in steps)
    try:
        return AccelSpec(ispec=ispec, lanes=lanes, max_out=max(convs[s.layer].out_channels for s in steps),
                         max_pixels=int(max_pixels), fm_groups=peak, steps=len(steps),
                         tmem=sum(convs[s.layer].in_channels for s in steps),
                         omem=sum(convs[s.layer].out_channels for s in steps),
                         wmem=sum(convs[s.layer].out_channels * _groups(convs[s.layer].in_channels, lanes)
                                  for s in steps), pmem=pieces)
    except ValueError as exc:
        raise UserError(f"accelerator sizes: {exc}") from None


def _check_graph(graph, convs) -> None:
    graph.check([(c.in_channels, c.out_channels, c.relu_input) for c in convs])


def compile_program(graph, convs, ispec, post_params, spec: AccelSpec) -> Program:
    """Compile ``graph`` (checked against ``convs``) into a :class:`Program` with every memory image, for an
    accelerator of sizes ``spec``; a network that does not fit those sizes is a one-line UserError."""
    from golden.int_layer import bias_cap, float32_parts
    from golden.layer import layer_spec
    from golden.spec import SpecError

    _check_graph(graph, convs)
    L = spec.lanes
    where, peak = allocate(graph, L)
    if peak > spec.fm_groups:
        raise UserError(f"the network needs {peak} feature-map groups of {L} channels; the accelerator has "
                        f"{spec.fm_groups}")
    if len(graph.steps) > spec.steps:
        raise UserError(f"the network has {len(graph.steps)} steps; the accelerator's program memory holds "
                        f"{spec.steps}")
    if spec.ispec.fmap.bits != ispec.fmap.bits or spec.datapath.act_bits != ispec.datapath.act_bits \
            or spec.datapath.weight_bits != ispec.datapath.weight_bits or spec.datapath.words != ispec.datapath.words:
        raise UserError("the network's integer spec does not match the accelerator's (feature-map bits, activation "
                        "or weight bits, words)")
    chans = graph.channels
    lay = spec.layouts()
    K = spec.points
    steps, instr, trows, orows, wrows, prows = [], [], [], [], [], []
    tbase = obase = wbase = pbase = 0
    for i, s in enumerate(graph.steps):
        p = convs[s.layer]
        C, O, k = p.in_channels, p.out_channels, p.kernel
        G = _groups(C, L)
        if C > spec.channels or O > spec.max_out or k not in (1, 3):
            raise UserError(f"step {i} ({p.name}): a {k}x{k} conv {C} -> {O} does not fit the accelerator "
                            f"({spec.channels} inputs, {spec.max_out} outputs, 1x1 or 3x3)")
        inputs = tuple((t, chans[t], where[t]) for t in s.inputs)
        pieces = _pieces(inputs, L)
        try:
            lspec = layer_spec(ispec.datapath, C, k)
            cap = bias_cap(p.bias, p.weight_scale, lspec)
        except SpecError as exc:
            raise UserError(f"{p.name}: {exc}") from None
        res_group = where[s.residual] if s.residual else 0
        steps.append(Step(i, s.layer, p.name, k, C, O, G, inputs, s.output, where[s.output], s.residual, res_group,
                          bool(p.relu_input), bool(s.relu), tuple(pieces), cap))
        instr.append(dict(kernel1=int(k == 1), relu_input=int(p.relu_input), relu=int(s.relu),
                          residual=int(s.residual is not None), cap_valid=int(cap is not None),
                          cap=0 if cap is None else cap, in_channels=C, out_channels=O, groups=G,
                          out_group=where[s.output], res_group=res_group, tbase=tbase, obase=obase, wbase=wbase,
                          pbase=pbase, pieces=len(pieces)))
        # per input channel: its feature-map channel (statistics) and point codes
        fm_ch = np.concatenate([g0 * L + np.arange(ch) for _, ch, g0 in inputs])
        pc = np.asarray(p.point_codes, np.int64)
        trows.append({"fm_channel": fm_ch, **{f"c{j}": pc[:, j] for j in range(K)}})
        # per output channel: bias / s_w = bm 2^jb / sm, mult 2^-r
        bm, be = float32_parts(p.bias)
        sm, se = float32_parts(p.weight_scale)
        if any(v < (1 << (spec.bias_s_bits - 1)) for v in sm):
            raise UserError(f"{p.name}: a weight scale is zero or subnormal (its significand has no hidden bit)")
        mult, r = post_params[i]
        orows.append({"bm": np.array(bm), "jb": np.array(be) - np.array(se), "sm": np.array(sm),
                      "mult": np.asarray(mult), "r": np.asarray(r)})
        # weights: one beat per (o, g): element l * 9 + t = w'[o, g L + l, tap t]
        wt = kernel_taps(p.w)                                                 # (O, C, 9)
        wp = np.zeros((O, G * L, TAPS), np.int64)
        wp[:, :C] = wt
        beats = wp.reshape(O, G, L * TAPS).reshape(O * G, L * TAPS)
        wrows.append({f"w{e}": beats[:, e] for e in range(L * TAPS)})
        prows.append({name: np.array([pc_[j] for pc_ in pieces]) for j, (name, _, _) in enumerate(lay["pmem"])})
        tbase += C
        obase += O
        wbase += O * G
        pbase += len(pieces)
    for name, depth, total in (("tmem", spec.tmem, tbase), ("omem", spec.omem, obase), ("wmem", spec.wmem, wbase),
                               ("pmem", spec.pmem, pbase)):
        if total > depth:
            raise UserError(f"the network needs {total} words of {name}; the accelerator has {depth}")
    prog = Program(spec, steps, {t: (where[t], chans[t]) for t in where}, graph.entry, graph.exit,
                   int(ispec.fmap.frac))
    try:
        prog.images["prog"] = pack_record(lay["prog"], {f: np.array([d[f] for d in instr]) for f, _, _ in lay["prog"]},
                                          len(instr))
        for name, rows in (("tmem", trows), ("omem", orows), ("wmem", wrows), ("pmem", prows)):
            n = sum(len(next(iter(r.values()))) for r in rows)
            merged = {f: np.concatenate([np.asarray(r[f]).reshape(-1) for r in rows]) for f, _, _ in lay[name]}
            prog.images[name] = pack_record(lay[name], merged, n)
    except ValueError as exc:
        raise UserError(f"the layer program does not fit the accelerator's formats: {exc}") from None
    return prog


def config_image(prog: Program, height: int, width: int) -> np.ndarray:
    """The ``cfg`` registers for an H x W run (a UserError when the image exceeds the accelerator's memory)."""
    spec = prog.spec
    if height < 1 or width < 1 or height * width > spec.max_pixels:
        raise UserError(f"a {height}x{width} image has {height * width} pixels; the accelerator's feature-map memory "
                        f"holds {spec.max_pixels} per channel")
    g0, ch = prog.tensors[prog.entry]
    vals = {"height": height, "width": width, "steps": len(prog.steps), "frac": prog.frac, "entry_group": g0,
            "entry_channels": ch}
    return pack_record(spec.layouts()["cfg"], {"value": np.array([vals[f] for f in CFG_FIELDS])}, len(CFG_FIELDS))


def entry_image(prog: Program, x0: np.ndarray) -> tuple[int, np.ndarray]:
    """(first fm word address, uint8 rows) of the entry tensor X0 (C, H, W) in the feature-map memory."""
    spec = prog.spec
    L = spec.lanes
    g0, ch = prog.tensors[prog.entry]
    x0 = np.asarray(x0, np.int64)
    if x0.ndim != 3 or x0.shape[0] != ch:
        raise UserError(f"the entry must be ({ch}, H, W), got {x0.shape}")
    C, H, W = x0.shape
    G = -(-C // L)
    padded = np.zeros((G * L, spec.max_pixels), np.int64)
    padded[:C, :H * W] = x0.reshape(C, H * W)
    words = padded.reshape(G, L, spec.max_pixels).transpose(0, 2, 1).reshape(G * spec.max_pixels, L)
    rows = pack_record(spec.fm_layout(), {f"x{l}": words[:, l] for l in range(L)}, len(words))
    return g0 * spec.max_pixels, rows


def load_records(prog: Program, x0: np.ndarray, height: int, width: int) -> list:
    """What the host writes before a run, in order: [(memory number, first address, uint8 rows)]: the run
    configuration, the program and parameter memories, and the entry tensor X0 (C, H, W) (only its own pixels)."""
    fm_addr, fm_rows = entry_image(prog, x0)
    recs = [(MEMS.index("cfg"), 0, config_image(prog, height, width))]
    recs += [(MEMS.index(n), 0, prog.images[n]) for n in ("prog", "tmem", "omem", "wmem", "pmem")]
    mp, hw = prog.spec.max_pixels, height * width
    for g in range(len(fm_rows) // mp):
        recs.append((MEMS.index("fm"), fm_addr + g * mp, fm_rows[g * mp:g * mp + hw]))
    return recs


def check_program(prog: Program) -> None:
    """UserError unless every image fits its memory's depth and width."""
    spec = prog.spec
    lay, depths = spec.layouts(), spec.depths()
    for name, rows in prog.images.items():
        if name not in MEMS:
            raise UserError(f"layer program: unknown memory {name!r}")
        want = -(-record_width(lay[name]) // 8)
        if rows.ndim != 2 or rows.shape[1] != want:
            raise UserError(f"layer program: {name} rows are {rows.shape[1:]} bytes wide, the accelerator's "
                            f"{name} words {want}")
        if rows.shape[0] > depths[name]:
            raise UserError(f"layer program: {name} has {rows.shape[0]} words, the accelerator {depths[name]}")


def mutate(prog: Program, kind: str) -> Program:
    """A copy of ``prog`` with one deliberate error (:data:`MUTATIONS`), for the mutation tests."""
    if kind not in MUTATIONS:
        raise UserError(f"unknown mutation {kind!r}; known: {', '.join(MUTATIONS)}")
    lay = prog.spec.layouts()["prog"]
    rows = prog.images["prog"].copy()
    pick = {"residual": [s.index for s in prog.steps if s.residual],
            "relu": [s.index for s in prog.steps if s.relu]}[kind]
    if not pick:
        raise UserError(f"mutation {kind!r}: the program has no such step")
    i = pick[-1] if kind == "residual" else pick[0]
    bits = np.unpackbits(rows[i], bitorder="little")
    pos = 0
    for name, width, _ in lay:
        if (kind == "residual" and name == "res_group") or (kind == "relu" and name == "relu"):
            v = int(np.packbits(bits[pos:pos + width], bitorder="little").view(np.uint8).tolist()[0]) \
                if width <= 8 else int.from_bytes(np.packbits(bits[pos:pos + width], bitorder="little").tobytes(),
                                                  "little")
            v = (v + 1) % (1 << width) if kind == "residual" else 0
            bits[pos:pos + width] = (v >> np.arange(width)) & 1
        pos += width
    rows[i] = np.packbits(bits, bitorder="little")[:rows.shape[1]]
    out = dataclasses.replace(prog, images=dict(prog.images, prog=rows))
    out.mutation = (kind, i)
    return out


def model_sizes(model: str, *, rdn_config: str = "S", scale: int = 2, lanes: int = 16, max_pixels: int = 128 * 128,
                words: int = 4, act_bits: int = 4, weight_bits: int = 4, scale_bits: int | None = None,
                fmap_bits: int = 16) -> AccelSpec:
    """The accelerator's sizes for ``model``'s integer graph (its adapter's; no weights needed)."""
    from dfsq.adapters import int_body, quantized_layers
    from dfsq.model import build_model
    from golden.int_spec import FmapFormat, IntSpec
    from golden.spec import DEFAULT_SCALE_BITS, DatapathSpec, SpecError

    config = None
    if model == "rdn":
        from dfsq.rdn import parse_config

        config = parse_config(rdn_config)
    net = build_model(model, scale, config)
    layers = quantized_layers(net)
    _, graph = int_body(net)
    widest = max(q.in_channels for q in layers)
    try:
        dp = DatapathSpec(words=words, act_bits=act_bits, weight_bits=weight_bits,
                          scale_bits=DEFAULT_SCALE_BITS if scale_bits is None else scale_bits,
                          channels=-(-widest // lanes) * lanes, kernel=3)
        ispec = IntSpec(datapath=dp, fmap=FmapFormat(fmap_bits, 0), max_pixels=max_pixels)
    except SpecError as exc:
        raise UserError(f"accelerator sizes: {exc}") from None
    return size_for(graph, layers, ispec, lanes=lanes, max_pixels=max_pixels)
