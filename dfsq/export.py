"""Export the per-layer tensors of a DFSQ-quantized EDSR or RDN run (contract 2; docs/export-format.md).

    python -m dfsq.export [--model edsr|rdn] --weights default --params PARAMS.npz --image PATH|sample \
        [--crop Y,X,H,W] [--layers all|0,5,...] [--scale-bits 24] --out DIR
    python -m dfsq.export --method dfsq-uniform --bits 6 --scale 2 [--model ...] --image PATH|sample ... --out DIR

``--method dfsq-uniform`` exports the normalized uniform baseline (DFSQ's normalization, 2^b evenly spaced points;
no calibration) with the uniform point set in the manifest's spec, for ``sim.verify`` of its engine.
``--method minmax`` (``--params`` a DFSQ calibration: its Min-Max ranges) and ``--method brecq|qdrop``
(``--params`` a reconstruction file of ``dfsq.reconstruct``) export static activations (one step and zero point
per conv input) for the static uniform engine (``hw.uniform_engine``): the layer files hold
golden.export_io.STATIC_FIELDS and the manifest's spec is the UniformSpec with ``"datapath": "static-uniform"``.

The image (``sample`` = scikit-image's astronaut) is the network input (an LR image), optionally cropped first.
The quantized network runs once; for each quantized conv (the model's adapter lists them; ``--layers`` keeps a
subset), in network order, ``NN_<name>.npz`` holds its
input, normalization, codes, point table, weight integers and fake-quant output, and ``manifest.json`` lists the
configuration and layers. The directory is written under a temporary name and renamed at the end, so an
interrupted export leaves no half-written output.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from golden.args import Parser, When
from golden.errors import UserError, cli_main
from golden.files import atomic_output_dir, check_output_dir
from golden.int_spec import DEFAULT_FMAP_BITS, FMAP_BITS_RANGE
from golden.spec import ACT_BITS_RANGE, DEFAULT_CHANNELS, DEFAULT_SCALE_BITS, SCALE_BITS_RANGE, DatapathSpec, SpecError

#: What can be exported: DFSQ (a calibration's points), the normalized uniform baseline (fixed uniform points), and
#: the methods with static activations (Min-Max from a calibration, BRECQ and QDROP from a reconstruction file).
EXPORT_METHODS = ("dfsq", "dfsq-uniform", "minmax", "brecq", "qdrop")
STATIC_EXPORT_METHODS = ("minmax", "brecq", "qdrop")

from .adapters import check_model_matches, model_config
from .calibrate import load_params, versions, weights_fingerprint
from .model import ARCHS
from .data import load_rgb, sample_image
from .quantize import QuantConv, quant_convs, quantize_model
from .weights import weights_option

FORMAT = "dfsq-export"
VERSION = 1


def parse_crop(text: str | None):
    if text is None:
        return None
    try:
        crop = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"--crop must be Y,X,H,W (integers), got {text!r}") from None
    if len(crop) != 4:
        raise UserError(f"--crop must be Y,X,H,W (4 integers), got {text!r}")
    return crop


def apply_crop(img: np.ndarray, crop) -> np.ndarray:
    if crop is None:
        return img
    y, x, h, w = crop
    H, W = img.shape[:2]
    if y < 0 or x < 0 or h < 1 or w < 1 or y + h > H or x + w > W:
        raise UserError(f"crop {y},{x},{h},{w} does not fit in the {H}x{W} image")
    return np.ascontiguousarray(img[y:y + h, x:x + w])


def check_layers(wanted: list[int] | None, count: int) -> list[int] | None:
    """``wanted`` (None: all) sorted, each an index in 0..count-1."""
    if wanted is None:
        return None
    bad = [i for i in wanted if not 0 <= i < count]
    if bad:
        raise UserError(f"--layers: the network has layers 0..{count - 1}, not {bad[0]}")
    return sorted(wanted)


@torch.no_grad()
def collect_layers(qmodel, img: np.ndarray, layers=None) -> list[dict]:
    """Run ``qmodel`` once on uint8 (H, W, 3) ``img``; the export fields of every QuantConv (or of the indices in
    ``layers``), in network order. Checks that each layer's recomputed output equals the output of the network's
    own forward pass."""
    convs = quant_convs(qmodel)
    if not convs:
        raise UserError("the model has no quantized convs")
    if layers is not None:
        keep = set(int(i) for i in layers)
        convs = [m for m in convs if m.index in keep]
    seen: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def hook(module: QuantConv, inputs, output):
        seen[module.index] = (inputs[0].detach().clone(), output.detach().clone())

    handles = [m.register_forward_hook(hook) for m in convs]
    try:
        x = torch.from_numpy(np.array(img, order="C")).permute(2, 0, 1)[None].float()  # a writable copy
        qmodel(x)
    finally:
        for h in handles:
            h.remove()
    out = []
    for m in convs:
        xin, y = seen[m.index]
        f = m.quant_fields(xin)
        if not np.array_equal(f["y"], y.numpy()):
            raise RuntimeError(f"{m.name}: recomputed output differs from the network's forward pass")
        out.append(f)
    return out


def layer_file(index: int, name: str, count: int = 100) -> str:
    """``NN_<name>.npz``, the index zero-padded to the digits of ``count - 1`` (at least 2: EDSR's 00..31, RDN
    config B's 000..145), so the files sort in network order."""
    return f"{index:0{max(2, len(str(count - 1)))}d}_{name}.npz"


def _write_npz(path: Path, fields: dict) -> None:
    with open(path, "wb") as f:
        np.savez(f, **fields)


def _write_npz_compressed(path: Path, fields: dict) -> None:
    with open(path, "wb") as f:
        np.savez_compressed(f, **fields)


def _is_export_dir(path: Path) -> bool:
    if not path.is_dir():
        return False
    if not any(path.iterdir()):
        return True
    try:
        return json.loads((path / "manifest.json").read_text()).get("format") == FORMAT
    except (OSError, ValueError):
        return False


def write_export(layers: list[dict], manifest: dict, out: str | Path, compress: bool = False,
                 extra: dict | None = None) -> Path:
    """Write the layer files, the ``extra`` files (name -> fields: the integer body's entry) and the manifest into a
    temporary sibling of ``out``, then rename it to ``out`` (replacing a previous export there; refusing anything
    else). Nothing is left behind on failure or signal."""
    out = check_export_out(out)
    with atomic_output_dir(out, replace=_is_export_dir) as tmp:
        for f, entry in zip(layers, manifest["layers"]):
            (_write_npz_compressed if compress else _write_npz)(tmp / entry["file"], f)
        for name, f in (extra or {}).items():
            (_write_npz_compressed if compress else _write_npz)(tmp / name, f)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return out


def check_export_out(out: str | Path) -> Path:
    """``out`` as a Path if an export can be written there (creates nothing); a one-line UserError otherwise."""
    out = check_output_dir(out, "--out")
    if out.exists() and not _is_export_dir(out):
        raise UserError(f"{out} exists and is not an export directory; choose another --out")
    return out


def export(model, params, img: np.ndarray, out: str | Path, *, scale_bits: int = DEFAULT_SCALE_BITS,
           weights: str = "", params_path: str = "", image: str = "", crop=None, layers=None,
           compress: bool = False, method: str = "dfsq", bits: int | None = None,
           fmap_bits: int = DEFAULT_FMAP_BITS) -> dict:
    """Quantize ``model`` (full-precision EDSR or RDN) with ``params``, run it on ``img`` (network input, uint8
    HWC, already cropped) and write the export directory ``out`` (all quantized layers, or the indices in
    ``layers``; ``compress``: zip-deflate the layer files, which ``np.load`` reads unchanged). Returns the
    manifest. ``method="dfsq-uniform"``: the normalized uniform baseline at ``bits`` (weights and activations; no
    ``params``: its points are fixed), exported with the uniform point set (``spec.point_set = "uniform"``), for
    the normalized uniform engine.

    A DFSQ export of every layer also carries the integer network (contract 2, docs/datapath.md): the manifest's
    ``integer`` section (feature-map format of ``fmap_bits``, the adapter's graph) and the body's integer entry tensor
    (``INTEGER_ENTRY_FILE``), from which golden recomputes every layer's integer input."""
    if method not in EXPORT_METHODS:
        raise UserError(f"--method must be one of {', '.join(EXPORT_METHODS)}, got {method!r}")
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise UserError(f"the image must be uint8 (H, W, 3), got {img.dtype} {img.shape}")
    if method == "dfsq-uniform":
        from .uniform import quantize_dfsq_uniform

        if params is not None:
            raise UserError("--method dfsq-uniform takes no --params (its points are fixed); pass --bits")
        if not isinstance(bits, int) or isinstance(bits, bool) or not ACT_BITS_RANGE[0] <= bits <= ACT_BITS_RANGE[1]:
            raise UserError(f"--bits must be an integer in {ACT_BITS_RANGE[0]}..{ACT_BITS_RANGE[1]}, got {bits!r}")
        qmodel = quantize_dfsq_uniform(model, bits, str(weights))
        cfg = {"scale": int(model.scale), "act_bits": bits, "weight_bits": bits, "words": None, "gap": None,
               "seed": None, "weights": str(weights)}
        spec_kw = {"point_set": "uniform"}
    elif method in ("brecq", "qdrop"):
        from .recon_file import ReconResult, check_recon, quantize_static

        if not isinstance(params, ReconResult):
            raise UserError(f"--method {method} needs --params: a reconstruction file (python -m dfsq.reconstruct)")
        if bits is not None:
            raise UserError(f"--bits applies to --method dfsq-uniform only ({method} takes its bits from --params)")
        where = str(params_path or "the reconstruction file")
        check_recon(params, model, where, method=method)
        qmodel = quantize_static(model, params, where)
        cfg = {**params.config, "words": None, "gap": None}
    else:
        if params is None:
            raise UserError(f"--method {method} needs --params (python -m dfsq.calibrate)")
        if bits is not None:
            raise UserError(f"--bits applies to --method dfsq-uniform only ({method} takes its bits from --params)")
        cfg = params.config
        check_model_matches(cfg, model, str(params_path or "the params file"))
        if not cfg.get("norm", True):
            raise UserError("export needs a normalized dfsq calibration (this one was made with --no-norm)")
        if params.config["weights_fingerprint"] != weights_fingerprint(model):
            raise UserError(f"params were calibrated for other weights ({cfg['weights']})")
        qmodel = quantize_model(model, params, method)
        spec_kw = {"words": cfg["words"], "gap": cfg["gap"]}
        if method == "minmax":
            cfg = {**cfg, "words": None, "gap": None}
    qconvs = quant_convs(qmodel)
    count = len(qconvs)
    if layers is not None and (not layers or min(layers) < 0 or max(layers) >= count):
        raise UserError(f"layers must be indices in 0..{count - 1}, got {layers}")
    channels = max([DEFAULT_CHANNELS] + [m.in_channels for m in qconvs])
    try:  # one spec for the widest layer; each layer runs with its own geometry (golden.layer.layer_spec)
        if method in STATIC_EXPORT_METHODS:
            from golden.uniform_spec import STATIC_DATAPATH, UniformSpec

            spec = UniformSpec(act_bits=cfg["act_bits"], weight_bits=cfg["weight_bits"], channels=channels,
                               kernel=max(m.kernel for m in qconvs))
            spec_widths = {**spec.widths(), "datapath": STATIC_DATAPATH}
        else:
            spec = DatapathSpec(act_bits=cfg["act_bits"], weight_bits=cfg["weight_bits"], scale_bits=scale_bits,
                                channels=channels, **spec_kw)
            spec_widths = spec.widths()
    except SpecError as exc:
        raise UserError(str(exc)) from None
    fields = collect_layers(qmodel, img, layers)
    entries = [{"index": int(f["index"]), "name": str(f["name"]),
                "file": layer_file(int(f["index"]), str(f["name"]), count),
                "input_shape": list(f["x"].shape), "output_shape": list(f["y"].shape),
                "relu_input": bool(f["relu_input"]), "kernel": int(f["weight_q"].shape[-1]),
                "in_channels": int(f["x"].shape[1]), "out_channels": int(f["y"].shape[1])} for f in fields]
    manifest = {
        "format": FORMAT, "version": VERSION,
        "config": {**model_config(model),
                   "scale": cfg["scale"], "act_bits": cfg["act_bits"], "weight_bits": cfg["weight_bits"],
                   "words": cfg["words"], "gap": cfg["gap"], "method": method, "seed": cfg["seed"],
                   "weights": str(weights or cfg["weights"]), "params": str(params_path), "image": str(image),
                   "crop": list(crop) if crop is not None else None},
        "spec": spec_widths,
        "layers": entries,
        "versions": versions(),
    }
    extra = {}
    if method == "dfsq" and layers is None:
        manifest["integer"], extra = integer_fields(qmodel, img, fmap_bits)
    write_export(fields, manifest, out, compress, extra)
    return manifest


#: The integer body's entry tensor of an export (golden.int_export reads it).
INTEGER_ENTRY_FILE = "body_input.npz"


@torch.no_grad()
def integer_fields(qmodel, img: np.ndarray, fmap_bits: int) -> tuple[dict, dict]:
    """(manifest ``integer`` section, {file: fields}) of the integer network on ``img``: the body's entry as
    ``x`` (N, C, H, W) in the feature-map format's integer type."""
    from .int_mode import IntNetwork

    net = IntNetwork(qmodel, fmap_bits=fmap_bits)
    net(torch.from_numpy(np.array(img, order="C")).permute(2, 0, 1)[None].float())
    sat = net.saturations.get(net.graph.entry, 0)
    return net.manifest_entry(INTEGER_ENTRY_FILE, sat), {INTEGER_ENTRY_FILE: {"x": net.last_entry}}


def crop_option(text: str):
    crop = parse_crop(text)
    y, x, h, w = crop
    if y < 0 or x < 0 or h < 1 or w < 1:
        raise UserError(f"--crop needs Y, X >= 0 and H, W >= 1, got {text!r}")
    return crop


def build_parser() -> Parser:
    ap = Parser(prog="python -m dfsq.export", description=__doc__.split("\n")[0])
    uniform = When("method", "dfsq-uniform")
    ap.choice("--model", ARCHS, default="edsr", help="network (default edsr)")
    weights_option(ap, help="checkpoint path, or 'default' for the embedded one")
    ap.input_file("--params", "params", when=When("method", *(m for m in EXPORT_METHODS if m != "dfsq-uniform")),
                  help="params file from python -m dfsq.calibrate (--method dfsq, minmax), or a reconstruction file "
                       "from python -m dfsq.reconstruct (brecq, qdrop)")
    ap.choice("--method", EXPORT_METHODS, default="dfsq",
              help="dfsq (default); dfsq-uniform: the normalized uniform baseline (no --params; --bits); minmax, "
                   "brecq, qdrop: static activations, for the static uniform engine")
    ap.integer("--bits", *ACT_BITS_RANGE, default=None, when=uniform, help="dfsq-uniform: weight and activation bits")
    ap.choice("--scale", (2, 3, 4), default=None, when=uniform,
              help="dfsq-uniform: the network's scale (dfsq takes it from --params)")
    ap.input_file("--image", "image", special=("sample",), required=True, help="network input image (LR), or 'sample'")
    ap.text("--crop", crop_option, help="Y,X,H,W crop of the image before running the network")
    ap.indices("--layers", help="'all' (default) or comma-separated layer indices to export")
    ap.flag("--compress", help="deflate the layer files (smaller, slower to write)")
    ap.integer("--scale-bits", *SCALE_BITS_RANGE, default=DEFAULT_SCALE_BITS, help="for the manifest's spec widths")
    ap.integer("--fmap-bits", *FMAP_BITS_RANGE, default=DEFAULT_FMAP_BITS, when=When("method", "dfsq"),
               help=f"width of the integer network's feature maps (default {DEFAULT_FMAP_BITS}; dfsq, all layers)")
    ap.threads()
    ap.output_dir("--out", replaces=True, required=True, help="export directory to write (a previous export is "
                                                              "replaced)")
    return ap


@cli_main
def main(argv=None):
    args = build_parser().parse_args(argv)
    check_export_out(args.out)
    if args.threads:
        torch.set_num_threads(args.threads)
    from .adapters import describe_model
    from .model import load_model

    t0, c0 = time.perf_counter(), time.process_time()
    crop = args.crop
    if args.method == "dfsq-uniform":
        if args.bits is None or args.scale is None:
            raise UserError("--method dfsq-uniform needs --bits and --scale")
        params, scale, count = None, args.scale, None
    else:
        if args.params is None:
            raise UserError(f"--method {args.method} needs --params (python -m "
                            f"{'dfsq.reconstruct' if args.method in ('brecq', 'qdrop') else 'dfsq.calibrate'})")
        if args.method in ("brecq", "qdrop"):
            from .recon_file import load_recon

            params = load_recon(args.params)
        else:
            params = load_params(args.params)
        if params.config.get("model", "edsr") != args.model:
            raise UserError(f"{args.params} was made for {describe_model(params.config)}, not {args.model}: "
                            f"pass --model {params.config.get('model', 'edsr')}")
        scale, count = params.config["scale"], len(params.layers)
    layers = check_layers(args.layers, count) if count is not None else None  # bad --layers fails before any work
    img = sample_image() if args.image == "sample" else load_rgb(args.image)
    img = apply_crop(img, crop)
    model = load_model(args.model, args.weights, scale)
    if count is None:
        from .adapters import quantized_layers

        layers = check_layers(args.layers, len(quantized_layers(model)))
    manifest = export(model, params, img, args.out, scale_bits=args.scale_bits, weights=args.weights,
                      params_path=args.params or "", image=args.image, crop=crop, layers=layers,
                      compress=args.compress, method=args.method, bits=args.bits, fmap_bits=args.fmap_bits)
    n = len(manifest["layers"])
    print(f"exported {n} layers of a {img.shape[0]}x{img.shape[1]} input to {args.out} "
          f"in {time.perf_counter() - t0:.1f} s wall ({time.process_time() - c0:.1f} s CPU)")


if __name__ == "__main__":
    main()
