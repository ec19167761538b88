"""Throughput model of the conv engine: cycles per layer and frames per second for a whole quantized body.

    python -m hw.throughput [--model edsr|rdn] [--rdn-config B] [--height 360 --width 640] [--lanes 16]
                            [--fmax-mhz MHZ] [--denorm split] [--json PATH]

The default clock is the 16-lane engine's measured fmax in docs/hardware.md (nextpnr-ecp5): 75.6 MHz with the
split 6:0 de-normalization, 63.7 MHz fused (a 4-lane instance, an optimistic estimate).

The engine takes one beat per cycle (no stalls when its consumer is ready): an output (pixel, output channel) of a
layer with C input channels is G = ceil(C / L) beats, so a layer of H x W pixels and O output channels streams
``H W O G`` beats, plus the pipeline's ``latency`` to drain, plus the point-table load (one write per (channel,
index): ``C 2^b`` cycles, before the layer). The split datapath's mean unit needs ``O (9 C + 16)`` cycles per
(layer, sample); it works on the next layer's start values while the engine streams this one, so it only adds
time when it is the longer of the two (``max``). ``check_stream_cycles`` compares the model with the cycles
``sim.verify`` measures under a simulator (tests/test_throughput.py). The body's convs come from the model's
adapter (no layer names or counts here); the full-precision head, upsampler and tail are not counted.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from golden.args import Parser, When
from golden.errors import UserError, cli_main
from golden.files import atomic_output
from golden.mean_unit import CLASSES
from golden.spec import ACT_BITS_RANGE, MAX_CHANNELS, TAPS

from .units.engine import LATENCY as ENGINE_LATENCY

__all__ = ["LayerCycles", "layer_cycles", "body_cycles", "stream_cycles", "ENGINE_LATENCY"]

#: the 16-lane engine's measured fmax (docs/hardware.md, "With DSPs and place and route"): the default clock
MEASURED_FMAX_MHZ = {"fused": 63.7, "split": 75.6}
#: lane counts hw.generate builds for the 64-channel engine (lanes divide the channels)
LANES = (1, 2, 4, 8, 16, 32, 64)


@dataclass(frozen=True)
class LayerCycles:
    name: str
    kernel: int
    in_channels: int
    out_channels: int
    groups: int
    beats: int          # H W O G
    table: int          # point-table writes, C 2^b
    stream: int         # beats + latency
    mean_unit: int      # split only: O (9 C + 16), overlapped with the previous layer's stream
    macs: int           # H W O C k^2 (the layer's real multiply-accumulates)

    @property
    def total(self) -> int:
        """Cycles of this layer when the mean unit overlaps the engine (it only adds when it is longer)."""
        return self.table + max(self.stream, self.mean_unit)


def stream_cycles(outputs: int, groups: int, latency: int = ENGINE_LATENCY) -> int:
    """Cycles to stream ``outputs`` outputs of ``groups`` beats each and drain the pipeline, with no stalls."""
    return outputs * groups + latency


def layer_cycles(name: str, H: int, W: int, C: int, O: int, kernel: int, lanes: int, act_bits: int = 4,
                 split: bool = False, latency: int = ENGINE_LATENCY) -> LayerCycles:
    if lanes < 1:
        raise UserError(f"lanes must be >= 1, got {lanes}")
    G = -(-C // lanes)
    beats = H * W * O * G
    return LayerCycles(name=name, kernel=kernel, in_channels=C, out_channels=O, groups=G, beats=beats,
                       table=C * (1 << act_bits), stream=stream_cycles(H * W * O, G, latency),
                       mean_unit=O * (TAPS * C + CLASSES) if split else 0, macs=H * W * O * C * kernel * kernel)


def body_cycles(qlayers, H: int, W: int, lanes: int, act_bits: int = 4, split: bool = False) -> list[LayerCycles]:
    """Per quantized layer (adapter :class:`dfsq.adapters.QLayer` entries), at an H x W body resolution."""
    return [layer_cycles(q.name, H, W, q.in_channels, q.out_channels, q.kernel, lanes, act_bits, split)
            for q in qlayers]


def summary(rows: list[LayerCycles], lanes: int, fmax_mhz: float) -> dict:
    cycles = sum(r.total for r in rows)
    macs = sum(r.macs for r in rows)
    seconds = cycles / (fmax_mhz * 1e6)
    return {"layers": len(rows), "cycles": cycles, "macs": macs, "multipliers": lanes * TAPS,
            "utilization": macs / (cycles * lanes * TAPS), "seconds_per_frame": seconds, "fps": 1.0 / seconds,
            "table_cycles": sum(r.table for r in rows),
            "mean_unit_bound_layers": sum(1 for r in rows if r.mean_unit > r.stream)}


def _model_layers(model: str, rdn_config: str, scale: int):
    """The quantized layers of ``model``, built on torch's meta device (shapes only: no weights allocated)."""
    import torch

    from dfsq.adapters import quantized_layers
    from dfsq.model import build_model

    config = None
    if model == "rdn":
        from dfsq.rdn import parse_config

        config = parse_config(rdn_config)
    with torch.device("meta"):
        layers = quantized_layers(build_model(model, scale, config))
    widest = max(layers, key=lambda q: q.in_channels)
    if widest.in_channels > MAX_CHANNELS:
        raise UserError(f"RDN config {rdn_config}: layer {widest.name} has {widest.in_channels} input channels; the "
                        f"datapath supports up to {MAX_CHANNELS}")
    return layers


def _rdn_config(text: str) -> str:
    from dfsq.rdn import parse_config

    parse_config(text)
    return text


def build_parser() -> Parser:
    ap = Parser(prog="python -m hw.throughput", description=__doc__.split("\n")[0])
    ap.choice("--model", ("edsr", "rdn"), default="edsr")
    ap.text("--rdn-config", _rdn_config, default="B", when=When("model", "rdn"),
            help="RDN structure (A, B, S or D,C,G[,G0]; default B, the paper's)")
    ap.choice("--scale", (2, 3, 4), default=2)
    ap.integer("--height", 1, 8192, default=360, help="input (LR) height in pixels (default 360)")
    ap.integer("--width", 1, 8192, default=640, help="input (LR) width in pixels (default 640)")
    ap.choice("--lanes", LANES, default=16, help="engine lanes (divide the engine's 64 channels; default 16)")
    ap.integer("--act-bits", *ACT_BITS_RANGE, default=4, help="activation bits (point-table size 2^b)")
    ap.real("--fmax-mhz", 0.0, 10_000.0, lo_open=True, default=None,
            help=f"engine clock in MHz (default: the measured fmax, {MEASURED_FMAX_MHZ['split']} split, "
                 f"{MEASURED_FMAX_MHZ['fused']} fused; docs/hardware.md)")
    ap.choice("--denorm", ("fused", "split"), default="fused")
    ap.output_file("--json", help="write the per-layer table and the summary here")
    return ap


@cli_main
def main(argv=None):
    args = build_parser().parse_args(argv)
    measured = args.fmax_mhz is None
    if measured:
        args.fmax_mhz = MEASURED_FMAX_MHZ[args.denorm]
    rows = body_cycles(_model_layers(args.model, args.rdn_config, args.scale), args.height, args.width, args.lanes,
                       args.act_bits, args.denorm == "split")
    s = summary(rows, args.lanes, args.fmax_mhz)
    name = args.model + (f" config {args.rdn_config}" if args.model == "rdn" else "")
    clock = f"{args.fmax_mhz:g} MHz" + (" (the measured fmax, docs/hardware.md)" if measured else "")
    print(f"{name}, {args.width}x{args.height} input (x{args.scale}), {args.lanes} lanes ({s['multipliers']} "
          f"shift-add multipliers), {args.denorm} de-normalization, {clock}")
    print(f"  {s['layers']} quantized layers, {s['macs']:,} MACs, {s['cycles']:,} cycles "
          f"({s['table_cycles']:,} table loads), utilization {100 * s['utilization']:.1f}%")
    print(f"  {s['seconds_per_frame']:.3f} s per frame, {s['fps']:.4f} frames per second")
    if args.json:
        with atomic_output(args.json) as tmp:
            tmp.write_text(json.dumps({"config": vars(args), "summary": s, "layers": [
                dict(asdict(r), total=r.total) for r in rows]}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    main()
