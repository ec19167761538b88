"""The reconstruction file of BRECQ and QDROP (``python -m dfsq.reconstruct``) and the network it describes.

One ``.npz`` (``np.load(..., allow_pickle=False)``) with a ``meta`` JSON string and, for L quantized convs in
network order (O outputs, C inputs, k x k kernel; when the layers' shapes differ, as in RDN, each per-layer array is
stored flattened and concatenated with the shapes in ``meta["packed"]``, as in a params file):

==============  ====================  ===========================================================================
array           dtype, shape          meaning
==============  ====================  ===========================================================================
``weight_q``    uint8 (L, O, C, k, k)  weight integers q in [0, 2^wb - 1], the rounding chosen by AdaRound
``zero_point``  int32 (L, O)           per output channel, as DFSQ's weights (``dfsq.quantize.quantize_weight``)
``weight_scale`` float32 (L, O)        per output channel; ``w_hat = (q - zero_point) * weight_scale``
``act_step``    float32 (L,)           one activation step per conv input (learned)
``act_zero``    int32 (L,)             its zero point in [0, 2^ab - 1] (0 after a ReLU)
==============  ====================  ===========================================================================

``meta``: ``format`` ``dfsq-recon``, ``version``, ``config`` (``method`` brecq|qdrop, ``model`` (+ ``rdn_config``),
``scale``, ``act_bits``, ``weight_bits``, ``budget`` (its name and settings), ``settings`` (the method's
hyperparameters), ``seed``, ``images``, ``weights``, ``weights_fingerprint``), ``layers`` (names), ``layer_info``
(the adapter's description of each conv) and ``info`` (timings, losses per block, versions: informative). A
``.json`` sidecar holds the same meta for people.

The activations: ``q = clamp(round(x / act_step) + act_zero, 0, 2^ab - 1)``, ``x_hat = (q - act_zero) act_step``:
the static uniform engine's format (``hw.uniform_engine``), the same quantizer as the paper's Min-Max with a learned
range. :func:`quantize_static` builds the fake-quantized network (``dfsq.evaluate --method brecq|qdrop``).
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from golden.errors import UserError
from golden.files import atomic_output, check_output_file

FORMAT = "dfsq-recon"
VERSION = 1
ARRAY_KEYS = ("weight_q", "zero_point", "weight_scale", "act_step", "act_zero")
RECON_ARRAYS = {"weight_q": ("u", ("L", "O", "C", "k", "k")), "zero_point": ("i", ("L", "O")),
                "weight_scale": ("f", ("L", "O")), "act_step": ("f", ("L",)), "act_zero": ("i", ("L",))}


@dataclass
class ReconResult:
    """A reconstruction (module docstring): ``config``, ``layers`` (names in network order), ``arrays``
    (``arrays[key][i]`` is layer i's array, stacked or a per-layer list), ``info``, ``layer_info``."""

    config: dict
    layers: list[str]
    arrays: dict
    info: dict = field(default_factory=dict)
    layer_info: list[dict] = field(default_factory=list)

    @property
    def method(self) -> str:
        return self.config["method"]

    def meta(self) -> dict:
        m = {"format": FORMAT, "version": VERSION, "config": self.config, "layers": self.layers, "info": self.info,
             "layer_info": self.layer_info}
        packed = {k: [list(a.shape) for a in v] for k, v in self.arrays.items() if isinstance(v, list)}
        if packed:
            m["packed"] = packed
        return m


def save_recon(result: ReconResult, path) -> Path:
    """Write the npz (with ``meta``) and its JSON sidecar, each atomically."""
    from .calibrate import _pack, sidecar_path

    path = check_output_file(path, "reconstruction file")
    side = check_output_file(sidecar_path(path), "sidecar")
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, meta=np.array(json.dumps(result.meta(), sort_keys=True)),
                     **{k: _pack(result.arrays[k]) for k in ARRAY_KEYS})
    with atomic_output(side) as tmp:
        tmp.write_text(json.dumps(result.meta(), indent=2, sort_keys=True) + "\n")
    return path


def validate_recon(meta, data: dict, where: str = "reconstruction file") -> ReconResult:
    """Check a reconstruction file's meta and arrays against each other; the ReconResult or a one-line UserError."""
    from .calibrate import check_bits, layer_arrays
    from .reconstruct import BUDGETS, STATIC_METHODS

    def fail(msg):
        raise UserError(f"{where}: {msg}")

    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        fail(f"not a reconstruction file (format {meta.get('format') if isinstance(meta, dict) else None!r}); "
             f"brecq and qdrop read the files of python -m dfsq.reconstruct")
    if meta.get("version") != VERSION:
        fail(f"version {meta.get('version')!r}, this tool reads version {VERSION}")
    cfg, layers = meta.get("config"), meta.get("layers")
    if not isinstance(cfg, dict):
        fail("meta has no 'config' object")
    if not isinstance(layers, list) or not layers or not all(isinstance(n, str) for n in layers) \
            or len(set(layers)) != len(layers):
        fail("meta 'layers' must be a non-empty list of distinct layer names")
    if cfg.get("method") not in STATIC_METHODS:
        fail(f"config method must be one of {', '.join(STATIC_METHODS)}, got {cfg.get('method')!r}")
    for k in ("scale", "act_bits", "weight_bits", "seed"):
        if not isinstance(cfg.get(k), int) or isinstance(cfg.get(k), bool):
            fail(f"config {k!r} must be an integer, got {cfg.get(k)!r}")
    if cfg["scale"] not in (2, 3, 4):
        fail(f"config scale must be 2, 3 or 4, got {cfg['scale']}")
    try:
        check_bits(cfg["act_bits"], cfg["weight_bits"], 4)
    except UserError as exc:
        fail(f"config: {str(exc).removeprefix('--')}")
    for k in ("weights", "weights_fingerprint", "model"):
        if not isinstance(cfg.get(k), str):
            fail(f"config {k!r} must be a string, got {cfg.get(k)!r}")
    budget = cfg.get("budget")
    if not isinstance(budget, dict) or budget.get("name") not in BUDGETS:
        fail(f"config budget must name one of {', '.join(BUDGETS)}")
    missing = [k for k in ARRAY_KEYS if k not in data]
    if missing:
        fail(f"lacks arrays {missing}")
    L = len(layers)
    packed = meta.get("packed") or {}
    if not isinstance(packed, dict) or any(k not in ARRAY_KEYS or not isinstance(v, list) or len(v) != L
                                           for k, v in packed.items()):
        fail(f"'packed' in meta must give {L} shapes per packed array")
    arrays = layer_arrays(RECON_ARRAYS, data, packed, layers, [{} for _ in range(L)], where)
    layer_info = meta.get("layer_info") or []
    if not isinstance(layer_info, list) or len(layer_info) != L or not all(isinstance(d, dict) for d in layer_info):
        fail(f"'layer_info' in meta must describe all {L} layers")
    wmax, amax = (1 << cfg["weight_bits"]) - 1, (1 << cfg["act_bits"]) - 1
    for k, hi in (("weight_q", wmax), ("zero_point", wmax), ("act_zero", amax)):
        a = data[k]
        if a.min(initial=0) < 0 or a.max(initial=0) > hi:
            fail(f"{k} outside [0, {hi}]")
    for k in ("weight_scale", "act_step"):
        if np.any(data[k] <= 0):
            fail(f"{k} must be > 0")
    for i, d in enumerate(layer_info):
        k = arrays["weight_q"][i].shape[-1]
        if k not in (1, 3) or d.get("kernel", k) != k or d.get("name", layers[i]) != layers[i]:
            fail(f"'layer_info' of layer {i} ({layers[i]}) does not match its weights")
        if d.get("relu_input") and int(data["act_zero"][i]) != 0:
            fail(f"act_zero of layer {i} ({layers[i]}) must be 0 (its input follows a ReLU)")
    info = meta.get("info", {})
    return ReconResult(cfg, list(layers), arrays, info if isinstance(info, dict) else {}, list(layer_info))


def load_recon(path) -> ReconResult:
    """Read and validate a reconstruction file; UserError (one line) for anything wrong."""
    from .calibrate import read_meta_npz

    meta, data = read_meta_npz(path, "reconstruction file")
    return validate_recon(meta, data, str(path))


def check_recon(result: ReconResult, model, where: str, *, method: str | None = None, act_bits=None,
                weight_bits=None) -> None:
    """UserError (one line) unless ``result`` was made for ``model`` (network, scale, weights) and, where given,
    this method and these bit widths."""
    from .adapters import check_model_matches
    from .calibrate import weights_fingerprint

    cfg = result.config
    check_model_matches(cfg, model, where)
    if cfg["scale"] != int(model.scale):
        raise UserError(f"{where} was made for scale {cfg['scale']}, not {model.scale}: pass --scale {cfg['scale']}")
    if method is not None and cfg["method"] != method:
        raise UserError(f"{where} holds a {cfg['method']} reconstruction, not {method}: pass --method {cfg['method']}")
    for k, v in (("act_bits", act_bits), ("weight_bits", weight_bits)):
        if v is not None and cfg[k] != int(v):
            raise UserError(f"{where} was made with {k}={cfg[k]}, not {v}: pass --{k.replace('_', '-')} {cfg[k]}")
    fp = weights_fingerprint(model)
    if cfg["weights_fingerprint"] != fp:
        raise UserError(f"{where} was made for other weights ({cfg['weights']}, fingerprint "
                        f"{cfg['weights_fingerprint'][:12]} != {fp[:12]})")


def set_static_step(qc, step: float, zero: float) -> None:
    """Give a ``minmax`` :class:`dfsq.quantize.QuantConv` the static step and zero point of one tensor, exactly."""
    from .quantize import midpoints

    qmax = (1 << qc.act_bits) - 1
    qc.act_step, qc.act_zero = float(np.float32(step)), float(zero)
    levels = (torch.arange(qmax + 1, dtype=torch.float32) - qc.act_zero) * qc.act_step
    qc.act_range = torch.stack([levels[0], levels[-1]])
    qc.points = levels.expand(qc.in_channels, -1).contiguous()
    qc.mid = midpoints(qc.points)


def quantize_static(model, result: ReconResult, where: str = "the reconstruction file", check: bool = True):
    """A copy of ``model`` with the quantized convs fake-quantized as ``result`` says (weights from its integers,
    one static activation step per conv input): :class:`dfsq.quantize.QuantConv` with method ``minmax``.
    ``check``: first check that ``result`` was made for ``model`` (:func:`check_recon`)."""
    from golden.spec import DEFAULT_GAP

    from .adapters import get_module, quantized_layers, set_module
    from .quantize import QuantConv

    if check:
        check_recon(result, model, where)
    qmodel = copy.deepcopy(model).eval()
    qlayers = quantized_layers(qmodel)
    if [q.name for q in qlayers] != result.layers:
        raise UserError(f"{where} lists {len(result.layers)} layers that are not the model's {len(qlayers)}")
    cfg, a = result.config, result.arrays
    for i, q in enumerate(qlayers):
        conv = get_module(qmodel, q.name)
        step, zero = float(a["act_step"][i]), float(a["act_zero"][i])
        qmax = (1 << cfg["act_bits"]) - 1
        qc = QuantConv(conv, name=q.name, index=i, relu_input=q.relu_input, method="minmax",
                       act_bits=cfg["act_bits"], weight_bits=cfg["weight_bits"], words=4, gap=DEFAULT_GAP,
                       weight_q=a["weight_q"][i], zero_point=a["zero_point"][i], weight_scale=a["weight_scale"][i],
                       act_range=(-zero * step, (qmax - zero) * step))
        set_static_step(qc, step, zero)
        set_module(qmodel, q.name, qc)
    return qmodel


__all__ = ["ReconResult", "save_recon", "load_recon", "validate_recon", "check_recon", "quantize_static",
           "set_static_step", "FORMAT", "VERSION"]
