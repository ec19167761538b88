"""The integer network of an export (contract 2): its manifest's ``integer`` section and entry tensor, loaded and
validated, and every layer's integer input recomputed by golden (docs/export-format.md, "Integer network").

    body = load_int_body("out/export")               # IntSpec, IntGraph, IntConvParams per layer, the entry X0
    res = body.run()                                 # golden.int_network.run_body(keep=True): every tensor, record

An export carries the entry tensor only: each layer's integer input, statistics, thresholds, codes, accumulator and
post-unit output follow from it and the layer files (the RTL checks of sim.verify_int read them from here).
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import UserError
from .export_io import LayerData, load_export
from .int_graph import IntGraph
from .int_layer import IntConvParams
from .int_network import BodyResult, run_body
from .int_spec import INT_SPEC_VERSION, FmapFormat, IntSpec

INTEGER_SECTION_VERSION = 1


def conv_params(layer: LayerData) -> IntConvParams:
    """A layer file's integer parameters (what dfsq.int_mode.conv_params takes from a QuantConv)."""
    w = layer.weight_q.astype(np.int64) - layer.zero_point.astype(np.int64)[:, None, None, None]
    return IntConvParams(name=layer.name, index=layer.index, kernel=layer.kernel, relu_input=layer.relu_input, w=w,
                         point_ints=layer.point_ints.astype(np.int64), point_codes=layer.point_codes,
                         weight_scale=layer.weight_scale.astype(np.float32), bias=layer.bias.astype(np.float32))


@dataclass
class IntBody:
    """An export's integer body: ``ispec``, ``graph``, ``convs`` (network order), the entry ``x0``, and the loaded
    ``manifest`` and ``layers``."""

    ispec: IntSpec
    graph: IntGraph
    convs: list
    x0: np.ndarray
    manifest: dict
    layers: list

    def run(self, threads: int = 1) -> BodyResult:
        """Every step in golden, keeping every tensor and conv record."""
        return run_body(self.graph, self.convs, self.x0, self.ispec, threads=threads, keep=True,
                        entry_saturations=int(self.manifest["integer"].get("entry_saturations", 0)))


def load_int_body(directory, **spec_overrides) -> IntBody:
    """The integer body of the export in ``directory`` (every layer must be in it); ``spec_overrides`` change the
    datapath spec (``denorm``, ``sigma_bits``, ``shift_bits``). One-line UserError for an export without the
    integer fields or with inconsistent ones."""
    from .export_io import spec_from_manifest

    directory = Path(directory)
    manifest, layers = load_export(directory)
    integer = manifest.get("integer")
    if not isinstance(integer, dict):
        raise UserError(f"{directory}: the export has no integer network (manifest 'integer'): export every layer "
                        f"of a dfsq calibration with a current python -m dfsq.export")
    where = f"{directory / 'manifest.json'}: integer"
    if integer.get("version") != INTEGER_SECTION_VERSION:
        raise UserError(f"{where}: version {integer.get('version')!r}, this reader knows {INTEGER_SECTION_VERSION}")
    try:
        fmap = FmapFormat(int(integer["fmap_bits"]), int(integer["fmap_frac"]))
        ispec = IntSpec(datapath=spec_from_manifest(manifest, **spec_overrides), fmap=fmap,
                        max_pixels=int(integer["max_pixels"]))
        widths = integer.get("widths") or {}
        if widths.get("int_spec_version", INT_SPEC_VERSION) != INT_SPEC_VERSION:
            raise UserError(f"{where}: written for int_spec version {widths.get('int_spec_version')}")
        graph = IntGraph.from_json(integer["graph"])
        entry_file = str(integer["entry_file"])
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{where}: malformed ({type(exc).__name__}: {exc})") from None
    if [lay.index for lay in layers] != list(range(len(layers))):
        raise UserError(f"{directory}: the integer network needs every layer; this export has "
                        f"{[lay.index for lay in layers][:8]}...")
    convs = [conv_params(lay) for lay in layers]
    graph.check([(c.in_channels, c.out_channels, c.relu_input) for c in convs])
    if Path(entry_file).name != entry_file:
        raise UserError(f"{where}: entry_file must be a plain file name, got {entry_file!r}")
    x0 = _load_entry(directory / entry_file, fmap, graph, layers)
    return IntBody(ispec, graph, convs, x0, manifest, layers)


def _load_entry(path: Path, fmap: FmapFormat, graph: IntGraph, layers) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as z:
            if set(z.files) != {"x"}:
                raise UserError(f"{path}: expected one field 'x', got {sorted(z.files)}")
            x = z["x"]
    except FileNotFoundError:
        raise UserError(f"integer entry file not found: {path}") from None
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise UserError(f"{path}: not a readable .npz file ({str(exc)[:100]})") from None
    n, _, h, w = layers[0].x.shape
    if x.dtype != np.dtype(fmap.dtype) or x.shape != (n, graph.channels[graph.entry], h, w):
        raise UserError(f"{path}: x must be {np.dtype(fmap.dtype)} {(n, graph.channels[graph.entry], h, w)}, got "
                        f"{x.dtype} {x.shape}")
    if x.size and int(np.abs(x.astype(np.int64)).max()) > fmap.x_max:
        raise UserError(f"{path}: x exceeds the feature-map format {fmap.describe()}")
    return x


__all__ = ["INTEGER_SECTION_VERSION", "IntBody", "conv_params", "load_int_body"]
