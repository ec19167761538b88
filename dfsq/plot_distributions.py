"""Draw the paper's Fig. 1 for one quantized conv: its input activation distributions across channels of one
sample, and across samples of one channel (box plots of the raw full-precision activations), as a PNG.

    python -m dfsq.plot_distributions [--model edsr|rdn] --weights default --scale 2 --layer body.4.body.0 \
        [--sample 0] [--channel 0] [--channels 16] [--images 8] [--calib DIR] --out fig1.png

``--layer`` is a quantized conv's name (EDSR ``body.N.body.0|2``, RDN ``RDBs.i.convs.j.conv.0``, ``RDBs.i.LFF``,
``GFF.0``, ``GFF.1``) or its index in network order (the model's adapter, :mod:`dfsq.adapters`, lists them);
the default is ``body.4.body.0`` for EDSR and ``RDBs.4.convs.0.conv.0`` (or the last block's) for RDN. The
samples are the LR versions of the first
``--images`` calibration images (default ../shared/data/train/BSD200, else scikit-image's pictures).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from golden.args import Parser
from golden.errors import UserError, cli_main
from golden.files import atomic_output

from .calibrate import calibration_images
from .model import ARCHS, load_model, quantized_convs
from .weights import weights_option


def default_layer(model) -> str:
    """``body.4.body.0`` (EDSR, the paper's Fig. 1), else the first conv of block 4 (or of the last block)."""
    names = [n for n, _ in quantized_convs(model)]
    for want in ("body.4.body.0", "RDBs.4.convs.0.conv.0"):
        if want in names:
            return want
    return next((n for n in reversed(names) if n.endswith("convs.0.conv.0")), names[0])


def layer_inputs(model, images, layer: str | int) -> tuple[str, list[np.ndarray]]:
    """Full-precision input activations (C, H, W) of one quantized conv, one array per image."""
    convs = quantized_convs(model)
    names = [n for n, _ in convs]
    if isinstance(layer, str) and layer.isdigit():
        layer = int(layer)
    if isinstance(layer, int):
        if not 0 <= layer < len(convs):
            raise UserError(f"--layer index must be in 0..{len(convs) - 1}, got {layer}")
        name, conv = convs[layer]
    elif layer in names:
        name, conv = convs[names.index(layer)]
    else:
        raise UserError(f"--layer: unknown layer {layer!r}: use an index 0..{len(convs) - 1} or a name like {names[0]}")
    acts = []
    h = conv.register_forward_pre_hook(lambda m, inp: acts.append(inp[0][0].detach().numpy().copy()))
    try:
        with torch.no_grad():
            for _, img in images:
                model(torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float())
    finally:
        h.remove()
    return name, acts


def plot(name: str, acts: list[np.ndarray], sample: int, channel: int, channels: int, out: str | Path,
         labels: list[str] | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n, c = len(acts), acts[0].shape[0]
    if not 0 <= sample < n:
        raise UserError(f"--sample must be in 0..{n - 1}, got {sample}")
    if not 0 <= channel < c:
        raise UserError(f"--channel must be in 0..{c - 1}, got {channel}")
    if not 1 <= channels <= c:
        raise UserError(f"--channels must be in 1..{c} (the layer has {c} input channels), got {channels}")
    chans = list(range(channels))
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.2))
    a.boxplot([acts[sample][i].ravel() for i in chans], whis=(0, 100), showfliers=False)
    a.set_xticks(range(1, len(chans) + 1), [str(i) for i in chans], fontsize=7)
    a.set_xlabel("channel")
    a.set_ylabel("activation")
    a.set_title(f"{name}: channels of sample {labels[sample] if labels else sample}")
    b.boxplot([x[channel].ravel() for x in acts], whis=(0, 100), showfliers=False)
    b.set_xticks(range(1, n + 1), [str(i) for i in range(n)], fontsize=7)
    b.set_xlabel("sample")
    b.set_title(f"{name}: channel {channel} across samples")
    for ax in (a, b):
        ax.grid(alpha=0.3)
    fig.suptitle("Input activation ranges (whiskers: min..max, box: quartiles)")
    fig.tight_layout()
    out = Path(out)
    try:
        with atomic_output(out, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=120)
    finally:
        plt.close(fig)
    return out


def build_parser() -> Parser:
    ap = Parser(prog="python -m dfsq.plot_distributions", description=__doc__.split("\n")[0])
    ap.choice("--model", ARCHS, default="edsr", help="network (default edsr)")
    weights_option(ap, help="checkpoint path, or 'default' for the embedded one")
    ap.choice("--scale", (2, 4), default=2)
    ap.text("--layer", str, help="quantized layer name or index (default body.4.body.0 for EDSR, "
                                 "RDBs.4.convs.0.conv.0 for RDN)")
    ap.integer("--sample", 0, 100_000, default=0, help="sample for the across-channels panel")
    ap.integer("--channel", 0, 100_000, default=0, help="channel for the across-samples panel")
    ap.integer("--channels", 1, 100_000, default=16, help="how many channels to show")
    ap.integer("--images", 1, 100_000, default=8)
    ap.input_dir("--calib", "images", help="image folder (default: the calibration set)")
    ap.output_file("--out", suffixes=(".png",), required=True, help="PNG to write")
    return ap


@cli_main
def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.sample >= args.images:
        raise UserError(f"--sample must be below --images ({args.images}), got {args.sample}")
    model = load_model(args.model, args.weights, args.scale)
    layer = args.layer if args.layer is not None else default_layer(model)
    images = calibration_images(args.calib, args.images, args.scale)
    name, acts = layer_inputs(model, images, layer)
    plot(name, acts, args.sample, args.channel, args.channels, args.out, [n for n, _ in images])
    print(f"wrote {args.out} ({name}, {len(acts)} samples)")


if __name__ == "__main__":
    main()
