"""Model adapters: which convs of a network DFSQ quantizes, declared once per architecture.

Each architecture has one small module here (``edsr.py``, ``rdn.py``) defining an :class:`Adapter`: the model
class it handles and a ``layers(model)`` function listing the quantized convs **in network order** as
:class:`QLayer` entries (module name, kernel size, input/output channels, whether the input follows a ReLU, i.e.
is normalized without mean subtraction). Calibration, fake quantization, hardware mode, export and the plotting
tool read the layer description from here; none of them matches layer names. Adding a network is one new module
with its ``ADAPTER`` and one line in :data:`REGISTRY` (docs/quantization.md, "Adding a network").

The integer-only network (contract 2, ``dfsq.evaluate --method dfsq-int``, exports) also comes from here: an
adapter may describe its quantized body as a :class:`golden.int_graph.IntGraph` (``graph``: which conv reads which
tensors, ReLUs, residual adds, concatenations) and say how the FP prologue and epilogue wrap it (``forward_body``);
``entry_bound`` optionally bounds the body's entry from the prologue's weights (docs/datapath.md, "Contract 2").

``blocks(model)`` groups the quantized convs into the units that block reconstruction (:mod:`dfsq.reconstruct`:
BRECQ, QDROP) optimizes one at a time: each :class:`Block` is one module of the network, called on one tensor,
whose output is reconstructed (EDSR: a residual block, its two convs; RDN: a residual dense block, its convs and
LFF; the global fusion ``GFF``, its two convs). Every quantized conv belongs to exactly one block.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

from torch import nn

from golden.errors import UserError
from golden.int_graph import IntGraph


@dataclass(frozen=True)
class QLayer:
    """One quantized conv: ``name`` is its module path in the model (``get_module(model, name)``).

    ``input_prefix_of`` (optional) names another quantized layer whose input starts with this layer's whole input
    (RDN: an RDB conv's input is the first channels of the block's LFF input, a concatenation). Normalization is
    per channel, so this layer's calibration statistics are that layer's first ``in_channels`` channels:
    calibration hooks only the other layer. Purely an optimization; leaving it None is always correct."""

    name: str
    kernel: int
    in_channels: int
    out_channels: int
    relu_input: bool
    input_prefix_of: str | None = None

    def describe(self) -> dict:
        d = asdict(self)
        if d["input_prefix_of"] is None:
            del d["input_prefix_of"]
        return d


@dataclass(frozen=True)
class Block:
    """A unit of block reconstruction: ``name`` is a module of the network called on one tensor (its input is the
    block's input, its output the block's output), ``layers`` the names of the quantized convs inside it, in
    network order."""

    name: str
    layers: tuple[str, ...]


@dataclass(frozen=True)
class Adapter:
    """``arch``: the ``--model`` name; ``model_class``: the nn.Module it describes; ``layers(model)``: the quantized
    convs in network order; ``config(model)``: extra JSON-able facts recorded in params files and manifests
    (e.g. RDN's D, C, G, G0) so that a file made for one variant is refused for another.

    The integer body (optional; without it the network has no integer entry/exit and ``dfsq-int`` refuses it):
    ``graph(model)``: the quantized body as an :class:`IntGraph` whose step ``layer`` s index ``layers(model)``;
    ``forward_body(model, x, body)``: the model's forward pass with its quantized body replaced by ``body``, a
    callable from the entry tensor (float, N x entry_channels x H x W) to the exit tensor; it must equal
    ``model(x)`` when ``body`` runs the graph in float (tests/test_int_network.py); ``entry_bound(model)``: a bound
    of |entry| that holds for every input image (interval arithmetic through the prologue), or None.

    ``blocks(model)`` (optional; block reconstruction needs it): the reconstruction blocks in network order
    (:class:`Block`)."""

    arch: str
    model_class: type
    layers: Callable[[nn.Module], list[QLayer]]
    config: Callable[[nn.Module], dict]
    graph: Callable[[nn.Module], IntGraph] | None = None
    forward_body: Callable | None = None
    entry_bound: Callable[[nn.Module], float | None] | None = None
    blocks: Callable[[nn.Module], list[Block]] | None = None


def conv_layer(model: nn.Module, name: str, relu_input: bool, input_prefix_of: str | None = None) -> QLayer:
    """The :class:`QLayer` of the ``nn.Conv2d`` at ``name`` (square kernel, 'same' padding, no groups)."""
    conv = get_module(model, name)
    if not isinstance(conv, nn.Conv2d):
        raise UserError(f"{name} is a {type(conv).__name__}, not a Conv2d")
    k = conv.kernel_size[0]
    if conv.kernel_size != (k, k) or k not in (1, 3) or conv.padding != (k // 2, k // 2) or conv.groups != 1 \
            or conv.stride != (1, 1) or conv.dilation != (1, 1):
        raise UserError(f"{name}: only 1x1 and 3x3 'same' convs can be quantized, got {conv}")
    return QLayer(name, k, conv.in_channels, conv.out_channels, bool(relu_input), input_prefix_of)


def get_module(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise UserError(f"the model has no module {name!r}") from None


def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    """Replace the submodule at dotted path ``name`` (works for Sequential/ModuleList children too)."""
    parent, _, child = name.rpartition(".")
    setattr(get_module(model, parent) if parent else model, child, module)


def _registry() -> dict[str, Adapter]:
    from . import edsr, rdn

    return {a.arch: a for a in (edsr.ADAPTER, rdn.ADAPTER)}


REGISTRY: dict[str, Adapter] = {}


def adapters() -> dict[str, Adapter]:
    if not REGISTRY:
        REGISTRY.update(_registry())
    return REGISTRY


def get_adapter(arch: str) -> Adapter:
    reg = adapters()
    if arch not in reg:
        raise UserError(f"model must be one of {', '.join(reg)}, got {arch!r}")
    return reg[arch]


def adapter_for(model: nn.Module) -> Adapter:
    """The adapter of ``model`` (also of a quantized copy: its class is unchanged)."""
    for a in adapters().values():
        if isinstance(model, a.model_class):
            return a
    raise UserError(f"no model adapter for {type(model).__name__} (known: {', '.join(adapters())})")


def int_body(model: nn.Module, layers=None) -> tuple[Adapter, IntGraph]:
    """(adapter, checked graph) of ``model``'s integer body; UserError when its adapter has no integer entry/exit.

    ``layers``: the quantized layers' ``(in_channels, out_channels, relu_input)`` to check the graph against
    (default: the adapter's list, which needs the model's convs unquantized)."""
    a = adapter_for(model)
    if a.graph is None or a.forward_body is None:
        raise UserError(f"the {a.arch} adapter describes no integer body (graph / forward_body): the integer network "
                        f"needs its entry and exit (dfsq/adapters/{a.arch}.py)")
    g = a.graph(model)
    g.check(layers if layers is not None else [(q.in_channels, q.out_channels, q.relu_input) for q in a.layers(model)])
    return a, g


def interval_conv(conv: nn.Conv2d, lo, hi):
    """Per output channel (lo, hi) bounds of ``conv(x)`` for any x with lo_c <= x_c <= hi_c per input channel
    (float64 interval arithmetic; padding zeros lie inside any interval containing 0, which lo <= 0 <= hi ensures)."""
    import torch

    w = conv.weight.detach().double()
    b = conv.bias.detach().double() if conv.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
    lo = torch.minimum(torch.as_tensor(lo, dtype=torch.float64), torch.zeros(())).view(1, -1, 1, 1)
    hi = torch.maximum(torch.as_tensor(hi, dtype=torch.float64), torch.zeros(())).view(1, -1, 1, 1)
    return (torch.minimum(w * lo, w * hi).sum((1, 2, 3)) + b), (torch.maximum(w * lo, w * hi).sum((1, 2, 3)) + b)


def quantized_layers(model: nn.Module) -> list[QLayer]:
    """The convs DFSQ quantizes in ``model``, in network order."""
    return adapter_for(model).layers(model)


def model_blocks(model: nn.Module) -> list[Block]:
    """The reconstruction blocks of ``model`` in network order, checked: every quantized conv lies in exactly one
    block, inside that block's module, and the blocks list them in network order."""
    adapter = adapter_for(model)
    if adapter.blocks is None:
        raise UserError(f"the {adapter.arch} adapter describes no reconstruction blocks (Adapter.blocks)")
    blocks = adapter.blocks(model)
    names = [q.name for q in quantized_layers(model)]
    listed = [n for b in blocks for n in b.layers]
    if listed != names:
        raise UserError(f"the adapter's blocks list {len(listed)} convs, its layers {len(names)} (or in another order)")
    for b in blocks:
        get_module(model, b.name)
        if not b.layers or any(not n.startswith(b.name + ".") for n in b.layers):
            raise UserError(f"block {b.name}: its convs {b.layers} must lie inside it")
    return blocks


def model_config(model: nn.Module) -> dict:
    """``{"model": arch, ...}``: what params files and export manifests record about the network."""
    a = adapter_for(model)
    return {"model": a.arch, **a.config(model)}


def describe_model(cfg: dict) -> str:
    """'edsr' or 'rdn (D=8, C=4, G=32, G0=64)' from a params/manifest config."""
    arch = cfg.get("model", "edsr")
    if cfg.get("rdn_config"):
        d, c, g, g0 = cfg["rdn_config"]
        return f"{arch} (D={d}, C={c}, G={g}, G0={g0})"
    return str(arch)


def check_model_matches(cfg: dict, model: nn.Module, what: str) -> None:
    """UserError (one line) when ``cfg`` (a params or manifest config; files from before the adapters hold no
    ``model`` and are EDSR) was made for another network than ``model``."""
    have = model_config(model)
    want = {"model": cfg.get("model", "edsr")}
    if "rdn_config" in cfg:
        want["rdn_config"] = list(cfg["rdn_config"])
    if want != have:
        raise UserError(f"{what} was made for {describe_model(want)}, not {describe_model(have)}: "
                        f"pass --model {want['model']} (and its weights) or recalibrate")


__all__ = ["QLayer", "Block", "Adapter", "model_blocks", "conv_layer", "get_module", "set_module", "adapters",
           "get_adapter", "adapter_for", "quantized_layers", "int_body", "interval_conv", "model_config",
           "describe_model", "check_model_matches"]
