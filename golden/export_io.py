"""Read (and, for synthetic tests, write) export directories: one ``NN_<name>.npz`` per quantized conv + manifest.

The format is contract 2 of the project (docs/export-format.md): every array is loaded with
``allow_pickle=False`` and validated (dtype, shape, range, NaN) before the golden model sees it. Bad files raise
:class:`golden.errors.UserError` with one line naming the file and the field.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from .errors import UserError
from .files import atomic_output
from .spec import ACT_BITS_RANGE, KERNELS, DatapathSpec, SpecError, denorm_format

EXPORT_FORMAT = "dfsq-export"
EXPORT_VERSION = 1

# field -> (dtype, number of dimensions); dtype None = any of the listed kinds (checked by hand below)
FIELDS = {
    "x": (np.float32, 4), "mean": (np.float32, 2), "maxabs": (np.float32, 2), "scale": (np.float32, 2),
    "codes": (np.uint8, 4), "points": (np.float32, 2), "point_ints": (np.int32, 2),
    "point_codes": (np.uint16, 2), "weight_q": (np.uint8, 4), "zero_point": (np.int32, 1),
    "weight_scale": (np.float32, 1), "bias": (np.float32, 1), "y": (np.float32, 4), "relu_input": (np.bool_, 0),
    "name": (np.str_, 0), "index": (np.int64, 0),
}
FLOAT_FIELDS = ("x", "mean", "maxabs", "scale", "points", "weight_scale", "bias", "y")
# layers with one static activation step per tensor (dfsq.export --method minmax|brecq|qdrop; the manifest's spec
# has "datapath": golden.uniform_spec.STATIC_DATAPATH): codes are q = clamp(round(x / act_step) + act_zero, 0, 2^b - 1)
STATIC_FIELDS = {
    "x": (np.float32, 4), "codes": (np.uint8, 4), "act_step": (np.float32, 0), "act_zero": (np.int32, 0),
    "weight_q": (np.uint8, 4), "zero_point": (np.int32, 1), "weight_scale": (np.float32, 1), "bias": (np.float32, 1),
    "y": (np.float32, 4), "relu_input": (np.bool_, 0), "name": (np.str_, 0), "index": (np.int64, 0),
}


@dataclass
class LayerData:
    """One quantized conv of an export (contract 2). Arrays keep the file's dtypes."""

    x: np.ndarray
    mean: np.ndarray
    maxabs: np.ndarray
    scale: np.ndarray
    codes: np.ndarray
    points: np.ndarray
    point_ints: np.ndarray
    point_codes: np.ndarray
    weight_q: np.ndarray
    zero_point: np.ndarray
    weight_scale: np.ndarray
    bias: np.ndarray
    y: np.ndarray | None
    relu_input: bool
    name: str
    index: int
    path: str = ""

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        """(N, C, O, H, W)."""
        n, c, h, w = self.x.shape
        return n, c, self.weight_q.shape[0], h, w

    @property
    def kernel(self) -> int:
        """k of the k x k kernel (3, or 1 for RDN's fusion convs), from ``weight_q``'s shape (O, C, k, k)."""
        return int(self.weight_q.shape[-1])

    @property
    def act_bits(self) -> int:
        return int(self.points.shape[1]).bit_length() - 1

    def arrays(self) -> dict:
        """The contract-2 fields as a dict of NumPy values (what :func:`save_layer` writes)."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "path"}
        d["relu_input"] = np.bool_(self.relu_input)
        d["name"] = np.str_(self.name)
        d["index"] = np.int64(self.index)
        return d


@dataclass
class StaticLayerData:
    """One quantized conv of an export with static activations (STATIC_FIELDS): the static uniform engine's
    layer. ``act_bits`` comes from the spec it is loaded with (the codes alone do not tell it)."""

    x: np.ndarray
    codes: np.ndarray
    act_step: np.ndarray
    act_zero: np.ndarray
    weight_q: np.ndarray
    zero_point: np.ndarray
    weight_scale: np.ndarray
    bias: np.ndarray
    y: np.ndarray | None
    relu_input: bool
    name: str
    index: int
    path: str = ""

    shape = LayerData.shape
    kernel = LayerData.kernel
    arrays = LayerData.arrays


def _fail(where: str, msg: str):
    raise UserError(f"{where}: {msg}")


def _typed_fields(d: dict, table: dict, where: str, require_y: bool) -> dict:
    """The fields of ``table`` (name -> (dtype, ndim)) from ``d`` as NumPy arrays, each of its dtype and rank."""
    vals = {}
    for key, (dtype, ndim) in table.items():
        if key not in d or d[key] is None:
            if key == "y" and not require_y:
                vals[key] = None
                continue
            _fail(where, f"missing field {key!r}")
        a = np.asarray(d[key])
        if dtype is np.str_:
            if a.dtype.kind != "U" or a.ndim != 0:
                _fail(where, f"field {key!r} must be a unicode scalar, got {a.dtype} shape {a.shape}")
        elif a.dtype != np.dtype(dtype):
            _fail(where, f"field {key!r} has dtype {a.dtype}, expected {np.dtype(dtype)}")
        if a.ndim != ndim:
            _fail(where, f"field {key!r} has shape {a.shape}, expected {ndim} dimensions")
        vals[key] = a
    return vals


def _check_conv_shapes(vals: dict, where: str, extra: dict) -> tuple[int, int, int, int, int, int]:
    """Shapes of x, weights, bias, y (and ``extra``: name -> shape) consistent; (n, c, h, w, o, k)."""
    x = vals["x"]
    n, c, h, w = x.shape
    if min(x.shape) < 1:
        _fail(where, f"x has an empty dimension: {x.shape}")
    o, k = vals["weight_q"].shape[0], vals["weight_q"].shape[-1]
    if k not in KERNELS:
        _fail(where, f"field 'weight_q' has shape {vals['weight_q'].shape}: kernels {KERNELS} are supported")
    expect = {"codes": (n, c, h, w), "weight_q": (o, c, k, k), "zero_point": (o,), "weight_scale": (o,),
              "bias": (o,), **extra}
    if vals["y"] is not None:
        expect["y"] = (n, o, h, w)
    for key, shp in expect.items():
        if vals[key].shape != shp:
            _fail(where, f"field {key!r} has shape {vals[key].shape}, expected {shp}")
    return n, c, h, w, o, k


def static_layer_from_fields(d: dict, where: str = "layer", spec=None, require_y: bool = True) -> StaticLayerData:
    """Validate the fields of a static layer (STATIC_FIELDS): dtypes, shapes, finite floats, act_step > 0,
    act_zero in [0, 2^b - 1] (0 after a ReLU), codes within 2^b levels, weights within [0, 255]; with ``spec``
    (a :class:`golden.uniform_spec.UniformSpec`): b = spec.act_bits, the weight range, the channels and kernel."""
    vals = _typed_fields(d, STATIC_FIELDS, where, require_y)
    n, c, h, w, o, k = _check_conv_shapes(vals, where, {})
    for key in ("x", "act_step", "weight_scale", "bias", "y"):
        if vals[key] is not None and not np.all(np.isfinite(vals[key])):
            _fail(where, f"field {key!r} holds NaN or infinite values")
    qmax = (1 << spec.act_bits) - 1 if spec is not None else 255
    if not float(vals["act_step"]) > 0:
        _fail(where, "act_step must be > 0")
    if not 0 <= int(vals["act_zero"]) <= qmax:
        _fail(where, f"act_zero {int(vals['act_zero'])} outside [0, {qmax}]")
    if int(vals["codes"].max(initial=0)) > qmax:
        _fail(where, f"codes reach {int(vals['codes'].max())}, above {qmax} ({qmax + 1} levels)")
    if np.any(vals["weight_scale"] <= 0):
        _fail(where, "weight_scale must be > 0")
    wmax = spec.w_max if spec is not None else 255
    if int(vals["weight_q"].max(initial=0)) > wmax or np.any(vals["zero_point"] < 0) \
            or int(vals["zero_point"].max(initial=0)) > wmax:
        _fail(where, f"weight_q or zero_point outside [0, {wmax}]")
    relu = bool(vals["relu_input"])
    if relu and int(vals["act_zero"]) != 0:
        _fail(where, "relu_input is set but act_zero is not zero")
    if spec is not None and not spec.covers(c, k):
        _fail(where, f"a {k}x{k} layer of {c} input channels exceeds the spec ({spec.kernel}x{spec.kernel}, "
                     f"{spec.channels} channels)")
    return StaticLayerData(**{key: vals[key] for key in STATIC_FIELDS if key not in ("relu_input", "name", "index")},
                           relu_input=relu, name=str(vals["name"]), index=int(vals["index"]), path=str(where))


def layer_from_fields(d: dict, where: str = "layer", spec: DatapathSpec | None = None,
                      require_y: bool = True) -> LayerData:
    """Validate a mapping of contract-2 fields (NumPy arrays, or anything ``np.asarray`` takes) into LayerData.

    Checks dtypes, shapes against each other, value ranges, NaN/inf, points ascending and on the universal set
    (when ``spec`` is given: also act_bits, weight range and the universal set of ``spec.words``).
    """
    vals = _typed_fields(d, FIELDS, where, require_y)
    n, c = vals["x"].shape[:2]
    npts = vals["points"].shape[1] if vals["points"].ndim == 2 else -1
    _check_conv_shapes(vals, where, {"mean": (n, c), "maxabs": (n, c), "scale": (n, c),
                                     **{key: (c, npts) for key in ("points", "point_ints", "point_codes")}})
    bits = npts.bit_length() - 1
    if npts < 1 or (1 << bits) != npts or not ACT_BITS_RANGE[0] <= bits <= ACT_BITS_RANGE[1]:
        _fail(where, f"points per channel must be 2^b with b in {ACT_BITS_RANGE}, got {npts}")
    for key in FLOAT_FIELDS:
        if vals[key] is not None and not np.all(np.isfinite(vals[key])):
            _fail(where, f"field {key!r} holds NaN or infinite values")
    if int(vals["codes"].max(initial=0)) >= npts:
        _fail(where, f"codes reach {int(vals['codes'].max())}, but there are only {npts} points per channel")
    pts = vals["points"]
    if np.any(np.diff(pts, axis=1) < 0):
        _fail(where, "points are not ascending within each channel")
    if np.any(np.abs(pts) > 1):
        _fail(where, "points outside [-1, 1]")
    if np.any(vals["scale"] <= 0) or np.any(vals["maxabs"] < 0):
        _fail(where, "scale must be > 0 and maxabs >= 0")
    if np.any(vals["weight_scale"] <= 0):
        _fail(where, "weight_scale must be > 0")
    if np.any(vals["zero_point"] < 0) or np.any(vals["zero_point"] > 255):
        _fail(where, "zero_point outside [0, 255]")
    relu = bool(vals["relu_input"])
    if relu and np.any(vals["mean"] != 0):
        _fail(where, "relu_input is set but mean is not zero")
    layer = LayerData(**{k: vals[k] for k in FIELDS if k not in ("relu_input", "name", "index")},
                      relu_input=relu, name=str(vals["name"]), index=int(vals["index"]), path=str(where))
    if spec is not None:
        check_layer_spec(layer, spec, where)
    return layer


def check_layer_spec(layer: LayerData, spec: DatapathSpec, where: str = "layer") -> None:
    """UserError if ``layer`` does not fit ``spec`` (act/weight bits, channels, universal set, point codes)."""
    if layer.points.shape[1] != spec.points:
        _fail(where, f"{layer.points.shape[1]} points per channel, but act_bits = {spec.act_bits}")
    if layer.x.shape[1] > spec.channels:
        _fail(where, f"{layer.x.shape[1]} input channels, spec allows at most {spec.channels}")
    if not spec.covers(layer.x.shape[1], layer.kernel):
        _fail(where, f"{layer.kernel}x{layer.kernel} kernel, spec allows at most {spec.kernel}x{spec.kernel}")
    wmax = spec.w_max
    if int(layer.weight_q.max(initial=0)) > wmax or int(layer.zero_point.max(initial=0)) > wmax:
        _fail(where, f"weight_q or zero_point exceed {wmax} (weight_bits = {spec.weight_bits})")
    ws = spec.wordset
    p = layer.point_ints.astype(np.int64)
    try:
        codes = ws.int_to_code(p)
    except SpecError as exc:
        _fail(where, f"point_ints: {exc}")
    if not np.array_equal(codes, layer.point_codes):
        bad = int(np.count_nonzero(codes != layer.point_codes))
        _fail(where, f"point_codes disagree with point_ints in {bad} entries (words = {spec.words})")
    # the float32 points are the universal-set values rounded to float32 (exact when denom is a power of two)
    ref = p / ws.denom
    if np.any(np.abs(layer.points.astype(np.float64) - ref) > np.abs(ref) * 2.0 ** -23):
        _fail(where, f"points are not point_ints / {ws.denom}")


def load_layer(path, spec: DatapathSpec | None = None) -> LayerData:
    """Load and validate one layer file (``allow_pickle=False``)."""
    from .formats import read_npz

    path = Path(path)
    d = read_npz(path, "layer file")
    static = is_static_spec(spec) if spec is not None else "act_step" in d
    unknown = sorted(set(d) - set(STATIC_FIELDS if static else FIELDS))
    if unknown:
        _fail(str(path), f"unknown fields {unknown}" + (" (a static-activation layer in a normalized export?)"
                                                        if "act_step" in unknown else ""))
    if static:
        return static_layer_from_fields(d, str(path), spec)
    return layer_from_fields(d, str(path), spec)


def is_static_spec(spec) -> bool:
    """``spec`` is the static uniform datapath's (a :class:`golden.uniform_spec.UniformSpec`)."""
    from .uniform_spec import UniformSpec

    return isinstance(spec, UniformSpec)


def is_static(manifest: dict) -> bool:
    """The export's activations have one static step per tensor (its spec names the static uniform datapath)."""
    from .uniform_spec import STATIC_DATAPATH

    return isinstance(manifest.get("spec"), dict) and manifest["spec"].get("datapath") == STATIC_DATAPATH


def static_spec_from_manifest(manifest: dict):
    """The :class:`golden.uniform_spec.UniformSpec` of a static export: its act/weight bits, widened to the widest
    layer geometry the manifest lists (each layer runs with its own: ``for_layer``)."""
    from .uniform_spec import UniformSpec

    try:
        sp, cfg = dict(manifest.get("spec") or {}), manifest.get("config") or {}
        kw = {k: int(sp[k]) for k in ("act_bits", "weight_bits", "channels", "kernel") if k in sp}
        for k in ("act_bits", "weight_bits"):
            if k in cfg and cfg[k] is not None and k in kw and int(cfg[k]) != kw[k]:
                raise UserError(f"manifest: config {k} = {cfg[k]} but spec {k} = {kw[k]}")
        geometry = manifest_geometry(manifest)
        if geometry:
            kw["channels"] = max([kw.get("channels", 0)] + [c for c, _ in geometry])
            kw["kernel"] = max([kw.get("kernel", 1)] + [k for _, k in geometry])
        return UniformSpec(**kw)
    except SpecError as exc:
        raise UserError(f"manifest: {exc}") from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise UserError(f"manifest: bad spec/config entry ({exc})") from None


def manifest_geometry(manifest: dict) -> list[tuple[int, int]]:
    """(input channels C, kernel k) of every layer entry of a manifest: ``in_channels`` / ``kernel`` when present
    (exports with per-layer geometry), else C from ``input_shape`` and k = 3 (older EDSR exports). Entries without
    either are skipped (the layer file's own shape is checked when it is loaded)."""
    out = []
    for entry in manifest.get("layers") or []:
        if not isinstance(entry, dict):
            continue
        try:
            if entry.get("in_channels") is not None:
                c = int(entry["in_channels"])
            elif isinstance(entry.get("input_shape"), list) and len(entry["input_shape"]) == 4:
                c = int(entry["input_shape"][1])
            else:
                continue
            k = int(entry["kernel"]) if entry.get("kernel") is not None else 3
        except (TypeError, ValueError):
            raise UserError(f"manifest: bad geometry in layer entry {entry!r}") from None
        out.append((c, k))
    return out


def spec_from_manifest(manifest: dict, **overrides) -> DatapathSpec:
    """The DatapathSpec of an export: its ``spec`` entry (``config`` fills words/gap/bits if absent), widened when
    needed to the widest layer geometry the manifest lists (the largest input channel count and kernel), so that
    it covers every layer; each layer then runs with its own geometry (``golden.layer.layer_spec``). A static
    export (:func:`is_static`) has no DatapathSpec: see :func:`static_spec_from_manifest`."""
    if is_static(manifest):
        raise UserError("this export has static activations (the static uniform engine's datapath), not DFSQ's "
                        "normalized datapath")
    try:
        sp = dict(manifest.get("spec") or {})
        cfg = manifest.get("config") or {}
        kw = {}
        for key in ("words", "gap", "act_bits", "weight_bits", "scale_bits", "channels", "kernel", "sigma_bits",
                    "shift_bits"):
            if key in sp:
                kw[key] = _int_field(sp[key], f"spec {key}")
            elif key in cfg and cfg[key] is not None:
                kw[key] = _int_field(cfg[key], f"config {key}")
        for key in ("denorm", "point_set"):
            if key in sp:
                if not isinstance(sp[key], str):
                    raise UserError(f"manifest: spec {key} must be a string, got {sp[key]!r}")
                kw[key] = sp[key]
        for key in ("words", "gap", "act_bits", "weight_bits"):
            if key in sp and key in cfg and cfg[key] is not None and int(cfg[key]) != int(sp[key]):
                raise UserError(f"manifest: config {key} = {cfg[key]} but spec {key} = {sp[key]}")
        geometry = manifest_geometry(manifest)
        if geometry:
            kw["channels"] = max([kw.get("channels", 0)] + [c for c, _ in geometry])
            kw["kernel"] = max([kw.get("kernel", 1)] + [k for _, k in geometry])
        kw.update(overrides)
        return DatapathSpec(**kw)
    except SpecError as exc:
        raise UserError(f"manifest: {exc}") from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise UserError(f"manifest: bad spec/config entry ({exc})") from None


def _int_field(value, what: str) -> int:
    """An integer field of a manifest (not a bool, not a float such as 4.5 that ``int`` would truncate)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise UserError(f"manifest: {what} must be an integer, got {value!r}")
    return value


def denorm_overrides(denorm=None, sigma_bits=None, shift_bits=None) -> dict:
    """The spec overrides of a command's ``--denorm/--sigma-bits/--shift-bits``: none when none is given (the
    export's own format is used, never silently replaced by the default), else the format they give."""
    if denorm is None and sigma_bits is None and shift_bits is None:
        return {}
    return denorm_format(denorm, sigma_bits, shift_bits)


def validate_export(directory):
    """The format validator of an export folder (:mod:`golden.formats`): its manifest and every layer file."""
    return load_export(directory)


def load_manifest(directory) -> dict:
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"export folder not found: {directory}")
    mpath = directory / "manifest.json"
    if not mpath.is_file():
        raise UserError(f"{directory} has no manifest.json: is it an export folder (python -m dfsq.export)?")
    try:
        manifest = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{mpath}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != EXPORT_FORMAT:
        raise UserError(f"{mpath}: format is not {EXPORT_FORMAT!r}")
    if manifest.get("version") != EXPORT_VERSION:
        raise UserError(f"{mpath}: version {manifest.get('version')!r}, this reader knows {EXPORT_VERSION}")
    if not isinstance(manifest.get("layers"), list) or not manifest["layers"]:
        raise UserError(f"{mpath}: no layers listed")
    validate_manifest(manifest, directory)
    return manifest


def _shape4(v) -> bool:
    return (isinstance(v, list) and len(v) == 4 and all(isinstance(d, int) and not isinstance(d, bool) and d >= 1
                                                        for d in v))


def validate_manifest(manifest: dict, directory=None) -> None:
    """Check a manifest against itself and, with ``directory``, against the layer files there; UserError if not.

    ``config`` and ``spec`` must be objects; each layer entry needs an integer ``index`` (strictly increasing),
    a plain ``.npz`` file name, a ``name``, 4-element ``input_shape``/``output_shape`` that agree on N, H, W, and a
    boolean ``relu_input``; no index, file or name twice. In ``directory`` every listed file must exist and every
    ``.npz`` file must be listed (a trimmed manifest would silently check fewer layers). The contents of each file
    are compared with its entry when it is loaded (:func:`check_entry`)."""
    where = f"{Path(directory) / 'manifest.json'}" if directory is not None else "manifest"
    for key in ("config", "spec"):
        if not isinstance(manifest.get(key), dict):
            raise UserError(f"{where}: {key!r} must be an object, got {type(manifest.get(key)).__name__}")
    seen: dict[str, set] = {"index": set(), "file": set(), "name": set()}
    last = None
    for i, e in enumerate(manifest["layers"]):
        def bad(msg):
            raise UserError(f"{where}: layer entry {i}: {msg}")
        if not isinstance(e, dict):
            bad(f"must be an object, got {type(e).__name__}")
        idx, fname, name = e.get("index"), e.get("file"), e.get("name")
        if not isinstance(idx, int) or isinstance(idx, bool) or idx < 0:
            bad(f"index must be a non-negative integer, got {idx!r}")
        if not isinstance(fname, str) or Path(fname).name != fname or not fname.endswith(".npz"):
            bad(f"file must be a plain .npz file name, got {fname!r}")
        if not isinstance(name, str) or not name:
            bad(f"name must be a non-empty string, got {name!r}")
        for key, val in (("index", idx), ("file", fname), ("name", name)):
            if val in seen[key]:
                bad(f"{key} {val!r} is listed twice")
            seen[key].add(val)
        if last is not None and idx <= last:
            bad(f"index {idx} after {last}: layers must be listed in increasing index order")
        last = idx
        ins, outs = e.get("input_shape"), e.get("output_shape")
        if not _shape4(ins) or not _shape4(outs):
            bad(f"input_shape/output_shape must be 4 positive integers, got {ins!r} / {outs!r}")
        if (ins[0], ins[2], ins[3]) != (outs[0], outs[2], outs[3]):
            bad(f"input_shape {ins} and output_shape {outs} disagree on N, H, W")
        if not isinstance(e.get("relu_input"), bool):
            bad(f"relu_input must be true or false, got {e.get('relu_input')!r}")
    if directory is None:
        return
    directory = Path(directory)
    absent = [f for f in sorted(seen["file"]) if not (directory / f).is_file()]
    if absent:
        raise UserError(f"{where}: listed layer file {absent[0]} is missing" +
                        (f" (and {len(absent) - 1} more)" if len(absent) > 1 else ""))
    integer = manifest.get("integer")
    other = {integer.get("entry_file")} if isinstance(integer, dict) else set()   # the integer body's entry
    unlisted = sorted(p.name for p in directory.glob("*.npz") if p.name not in seen["file"] | other)
    if unlisted:
        raise UserError(f"{where}: lists {len(seen['file'])} layers, but {len(unlisted)} more layer files are in "
                        f"the folder ({unlisted[0]}{', ...' if len(unlisted) > 1 else ''}): a trimmed manifest?")


def check_entry(layer: "LayerData", entry: dict, where: str) -> None:
    """UserError if a loaded layer differs from its manifest entry (index, name, shapes, relu_input)."""
    n, c, o, h, w = layer.shape
    got = {"index": layer.index, "name": layer.name, "input_shape": [n, c, h, w], "output_shape": [n, o, h, w],
           "relu_input": layer.relu_input}
    for key, val in got.items():
        if key in entry and entry[key] != val:
            raise UserError(f"{where}: {key} is {val!r} in the file but {entry[key]!r} in the manifest")


def load_export(directory, spec=None, layers=None):
    """(manifest, [LayerData, ...]) of an export folder, in manifest order, each validated against the spec (a
    DatapathSpec; for a static export a UniformSpec, and StaticLayerData).

    ``layers``: optional iterable of layer indices to load (default: all).
    """
    directory = Path(directory)
    manifest = load_manifest(directory)
    if spec is None:
        try:
            spec = static_spec_from_manifest(manifest) if is_static(manifest) else spec_from_manifest(manifest)
        except UserError as exc:
            raise UserError(f"{directory / 'manifest.json'}: {str(exc).removeprefix('manifest: ')}") from None
    elif is_static_spec(spec) != is_static(manifest):
        raise UserError(f"{directory}: the export's datapath is {'static' if is_static(manifest) else 'normalized'}, "
                        f"the spec given is not")
    wanted = None if layers is None else set(int(i) for i in layers)
    out = []
    for entry in manifest["layers"]:
        try:
            idx, fname = int(entry["index"]), str(entry["file"])
        except (KeyError, TypeError, ValueError):
            raise UserError(f"{directory}/manifest.json: bad layer entry {entry!r}") from None
        if wanted is not None and idx not in wanted:
            continue
        if Path(fname).name != fname:
            raise UserError(f"{directory}/manifest.json: layer file {fname!r} must be a plain file name")
        layer = load_layer(directory / fname, spec)
        if layer.index != idx or layer.name != entry.get("name", layer.name):
            raise UserError(f"{directory / fname}: index/name {layer.index}/{layer.name} differ from the manifest "
                            f"({idx}/{entry.get('name')})")
        check_entry(layer, entry, str(directory / fname))
        _check_entry_geometry(entry, layer, directory / fname)
        out.append(layer)
    if wanted is not None and len(out) != len(wanted):
        missing = sorted(wanted - {lay.index for lay in out})
        raise UserError(f"{directory}: no layer with index {missing}")
    return manifest, out


def _check_entry_geometry(entry: dict, layer: LayerData, where) -> None:
    """UserError when the manifest entry's optional geometry fields disagree with the layer file."""
    n, c, o, h, w = layer.shape
    have = {"kernel": layer.kernel, "in_channels": c, "out_channels": o, "relu_input": layer.relu_input}
    for key, value in have.items():
        if entry.get(key) is None:
            continue
        got = entry[key]
        if (bool(got) != value) if key == "relu_input" else (not isinstance(got, int) or got != value):
            raise UserError(f"{where}: manifest says {key} = {got!r}, the layer file has {value!r}")


# --- writing (synthetic exports for tests and benches; dfsq.export writes the real ones) -------------------------
def _atomic_write(path: Path, writer) -> None:
    with atomic_output(path) as tmp:
        writer(tmp)


def save_layer(path, layer: LayerData | dict) -> None:
    """Write one layer file atomically (contract-2 fields)."""
    d = layer.arrays() if isinstance(layer, LayerData) else dict(layer)

    def writer(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **d)

    _atomic_write(Path(path), writer)


def layer_file_name(index: int, name: str) -> str:
    return f"{index:02d}_{name}.npz"


def write_export(directory, layers: list[LayerData], spec: DatapathSpec, config: dict | None = None) -> Path:
    """Write ``layers`` and a manifest as an export folder (used for synthetic exports)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    entries = []
    for lay in layers:
        fname = layer_file_name(lay.index, lay.name)
        save_layer(directory / fname, lay)
        n, c, o, h, w = lay.shape
        entries.append({"index": lay.index, "name": lay.name, "file": fname, "input_shape": [n, c, h, w],
                        "output_shape": [n, o, h, w], "relu_input": lay.relu_input, "kernel": lay.kernel,
                        "in_channels": c, "out_channels": o})
    if layers:  # the spec entry is the widest layer's geometry (each layer runs with its own: for_layer)
        spec = spec.for_layer(max([spec.channels] + [lay.shape[1] for lay in layers]),
                              max([spec.kernel] + [lay.kernel for lay in layers]))
    uni = spec.uniform_points
    cfg = {"model": None, "scale": None, "act_bits": spec.act_bits, "weight_bits": spec.weight_bits,
           "words": None if uni else spec.words, "gap": None if uni else spec.gap,
           "method": "dfsq-uniform" if uni else "dfsq", "seed": None, "weights": None, "params": None, "image": None,
           "crop": None}
    cfg.update(config or {})
    manifest = {"format": EXPORT_FORMAT, "version": EXPORT_VERSION, "config": cfg, "spec": spec.widths(),
                "layers": entries, "versions": {"numpy": np.__version__, "writer": "golden.export_io"}}
    _atomic_write(directory / "manifest.json",
                  lambda tmp: Path(tmp).write_text(json.dumps(manifest, indent=2) + "\n"))
    return directory


__all__ = ["LayerData", "load_layer", "load_export", "load_manifest", "validate_manifest", "check_entry",
           "spec_from_manifest", "layer_from_fields", "check_layer_spec", "save_layer", "write_export",
           "layer_file_name", "FIELDS", "manifest_geometry", "STATIC_FIELDS", "StaticLayerData",
           "static_layer_from_fields", "is_static", "is_static_spec", "static_spec_from_manifest"]
