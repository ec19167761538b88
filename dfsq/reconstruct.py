"""Block reconstruction: BRECQ and QDROP (the DFSQ paper's other two methods) and AdaRound on DFSQ's weights.

    python -m dfsq.reconstruct --method brecq|qdrop|dfsq-adaround [--model edsr|rdn] [--weights default] \
        --scale 2 --act-bits 4 --weight-bits 4 --budget cpu|paper --out FILE.npz \
        [--images 32] [--calib DIR] [--seed 0] [--device cpu|cuda] [--threads N] [--restart] \
        [--params DFSQ.npz | --words 4]   (dfsq-adaround)

One engine serves the three methods. The model's adapter (:func:`dfsq.adapters.model_blocks`) splits the quantized
convs into blocks (EDSR: each residual block; RDN: each dense block with its LFF, and the GFF pair); the blocks are
reconstructed one after the other, in network order: the weights' rounding and/or the activation step sizes of a
block are optimized so that the block's output, computed from the block input *of the quantized network so far*,
matches the output of the full-precision network (mean over pixels of the squared error summed over channels).
Each block's inputs and targets are computed once over all calibration patches and kept (not recomputed per step).
Quantizers sit where DFSQ's do (the inputs of the quantized convs; head, upsampler and tail in float):

* ``brecq`` (Li et al. 2021; yhhhli/BRECQ): pass 1, per block, AdaRound of the weights (activations in float),
  rounding loss 0.01 sum(1 - |2h - 1|^b), b annealed 20 -> 2 after a 20% warm-up, Adam 1e-3 on alpha; pass 2, per
  block, the activation steps (one static uniform step and zero point per tensor) learned with the weights fixed,
  Adam 4e-4 with cosine decay, loss |.|^2.4 as BRECQ's ``--p``.
* ``qdrop`` (Wei et al. 2022): one pass, weights' rounding and activation steps together (steps: Adam 4e-5, cosine,
  LSQ gradient scale); while a block is reconstructed, every quantized activation inside it, and its input, is
  replaced by its float value with probability 0.5 (off afterwards).
* ``dfsq-adaround``: AdaRound of DFSQ's weights with DFSQ's activation quantizers (its points, from ``--params`` or
  calibrated now) in place: the result is a DFSQ params file (``dfsq.calibrate``'s format) whose ``weight_q`` holds
  the learned rounding, so ``dfsq.evaluate --method dfsq|dfsq-hw``, ``dfsq.export`` and the DFSQ engine take it as is.

Weights keep DFSQ's format (per-output-channel asymmetric uniform, ``dfsq.quantize.quantize_weight``'s scale and
zero point); only the rounding of each weight changes. Activations of brecq/qdrop are the static uniform engine's
format (``hw.uniform_engine``). The results of brecq/qdrop are a reconstruction file (:mod:`dfsq.recon_file`).

Budgets (recorded in every result): ``paper``, the settings of BRECQ's and QDROP's code (1,024 calibration patches
of 48 x 48 LR pixels, batch 32, 20,000 iterations per block, BRECQ's activation pass 5,000; for a GPU, ``--device
cuda``), and ``cpu`` (:data:`BUDGETS`: fewer patches, iterations and a smaller batch and patch; warm-up, annealing
and the cosine decay are fractions of the iteration count, so they scale with it) that reconstructs EDSR x2 W4A4 in
under 30 minutes on 2 cores. Calibration data: patches cut (at seeded random positions) from the LR versions of the
same calibration images DFSQ uses (:func:`dfsq.calibrate.calibration_images`). Seeded and deterministic on one
machine: every block draws its batches and drop masks from its own generator (seed, pass, block).

Interrupted runs resume: after every block its result (the weight integers, the steps) is saved to
``FILE.npz.partial/`` (``torch.load(..., weights_only=True)`` on reading); a rerun with the same arguments continues
after the last finished block and gives the same result as an uninterrupted run; ``--restart`` discards the
checkpoints. The output file is written atomically at the end and the checkpoints removed.
"""
from __future__ import annotations

import copy
import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from golden.errors import UserError, cli_main
from golden.files import atomic_output, check_output_dir, check_output_file

from .adapters import get_module, model_blocks, model_config, quantized_layers, set_module
from .recon_quant import DFSQActQuant, ReconConv, StaticActQuant

RECON_METHODS = ("brecq", "qdrop", "dfsq-adaround")
STATIC_METHODS = ("brecq", "qdrop")   # static uniform activations: a reconstruction file, the static uniform engine
CHECKPOINT_VERSION = 1


@dataclass(frozen=True)
class Budget:
    """How much reconstruction: ``patches`` LR calibration patches of ``patch`` x ``patch`` pixels, ``batch`` per
    iteration, ``iters`` iterations per block (AdaRound; QDROP's joint pass), ``act_iters`` for BRECQ's activation
    pass."""

    name: str
    patches: int
    patch: int
    batch: int
    iters: int
    act_iters: int


BUDGETS = {
    # BRECQ's main_imagenet.py defaults (1,024 samples, batch 32, 20,000 + 5,000 iterations) on the DFSQ paper's
    # calibration patch (HR 96 at x2 is LR 48; the paper's x4 LR patch is 48)
    "paper": Budget("paper", patches=1024, patch=48, batch=32, iters=20000, act_iters=5000),
    # EDSR x2 W4A4 BRECQ in under 30 minutes on 2 cores (measured: docs/results.md "Block reconstruction")
    "cpu": Budget("cpu", patches=256, patch=32, batch=8, iters=500, act_iters=125),
}


@dataclass(frozen=True)
class Phase:
    """One pass over the blocks: what is learned (``learn_weights``: AdaRound's alpha; ``learn_acts``: the
    activation steps), whether activations are quantized (``act_on``), QDROP's ``drop`` probability, the loss
    exponent ``p``, the steps' learning rate ``act_lr`` (cosine to 0), ``iters``: the budget field giving the
    iteration count, ``init_p``: the exponent of the steps' MSE initialisation, ``lsq_grad_scale``."""

    name: str
    learn_weights: bool
    learn_acts: bool
    act_on: bool
    drop: float = 0.0
    p: float = 2.0
    act_lr: float = 0.0
    iters: str = "iters"
    init_p: float = 2.0
    lsq_grad_scale: bool = False


ROUND_WEIGHT = 0.01      # weight of AdaRound's rounding loss
B_RANGE = (20.0, 2.0)    # its temperature, annealed linearly after the warm-up
WARMUP = 0.2             # fraction of the iterations without rounding loss
ALPHA_LR = 1e-3          # Adam on alpha (BRECQ's default Adam learning rate)

PHASES = {
    "brecq": (Phase("weights", learn_weights=True, learn_acts=False, act_on=False),
              Phase("acts", learn_weights=False, learn_acts=True, act_on=True, p=2.4, act_lr=4e-4, iters="act_iters",
                    init_p=2.4)),
    "qdrop": (Phase("joint", learn_weights=True, learn_acts=True, act_on=True, drop=0.5, act_lr=4e-5,
                    lsq_grad_scale=True),),
    "dfsq-adaround": (Phase("weights", learn_weights=True, learn_acts=False, act_on=True),),
}


def get_budget(name: str) -> Budget:
    if name not in BUDGETS:
        raise UserError(f"--budget must be one of {', '.join(BUDGETS)}, got {name!r}")
    return BUDGETS[name]


def method_settings(method: str, budget: Budget) -> dict:
    """The method's hyperparameters (recorded in every result)."""
    return {"phases": [asdict(p) for p in PHASES[method]], "round_weight": ROUND_WEIGHT, "b_range": list(B_RANGE),
            "warmup": WARMUP, "alpha_lr": ALPHA_LR,
            "lr_factor": {p.name: lr_factor(budget, p) for p in PHASES[method]}}


# --- calibration patches --------------------------------------------------------------------------------------------
def calibration_patches(images, count: int, size: int, seed: int) -> torch.Tensor:
    """``count`` LR patches (float32 (count, 3, size, size), values 0..255) at seeded random positions, spread evenly
    over ``images`` ((name, uint8 (H, W, 3)) pairs, the network inputs)."""
    if not images:
        raise UserError("no calibration images")
    small = [n for n, img in images if min(img.shape[:2]) < size]
    if small:
        raise UserError(f"calibration image {small[0]} is smaller than the {size}-pixel patch")
    rng = np.random.default_rng(seed)
    per = -(-count // len(images))
    out = []
    for _, img in images:
        h, w = img.shape[:2]
        for _ in range(per):
            y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
            out.append(np.ascontiguousarray(img[y:y + size, x:x + size]))
    order = rng.permutation(len(out))[:count]   # an even spread when count is not a multiple of the images
    batch = np.stack([out[i] for i in sorted(order)])
    return torch.from_numpy(batch).permute(0, 3, 1, 2).float().contiguous()


# --- the network under reconstruction -------------------------------------------------------------------------------
def build_recon_model(model, method: str, act_bits: int, weight_bits: int, dfsq_params=None):
    """A copy of ``model`` with every quantized conv replaced by a :class:`ReconConv` (float modes to start)."""
    rmodel = copy.deepcopy(model).eval()
    for p in rmodel.parameters():
        p.requires_grad_(False)
    dfsq_convs = None
    if method == "dfsq-adaround":
        from .quantize import quant_convs, quantize_model

        dfsq_convs = quant_convs(quantize_model(model, dfsq_params, "dfsq"))
    for idx, q in enumerate(quantized_layers(rmodel)):
        conv = get_module(rmodel, q.name)
        act = DFSQActQuant(dfsq_convs[idx]) if dfsq_convs is not None else StaticActQuant(act_bits, q.relu_input)
        set_module(rmodel, q.name, ReconConv(conv, name=q.name, weight_bits=weight_bits, act=act))
    return rmodel


def recon_convs(rmodel) -> list[ReconConv]:
    return [m for m in rmodel.modules() if isinstance(m, ReconConv)]


class _Stop(Exception):
    """Raised by the capture hook: the rest of the network is not needed."""


class _Replay(torch.nn.Module):
    """Stands in for a finished block while an input is captured: returns the block's cached outputs, chunk after
    chunk (the capture runs the patches in the same chunks every time), so the blocks before the one captured cost
    nothing and capturing every block's input is linear, not quadratic, in the number of blocks."""

    def __init__(self, outputs: torch.Tensor, chunk: int):
        super().__init__()
        self.outputs, self.chunk, self.k = outputs, chunk, 0

    def forward(self, x):
        out = self.outputs[self.k * self.chunk:(self.k + 1) * self.chunk]
        self.k += 1
        return out


@torch.no_grad()
def capture_input(model, name: str, patches: torch.Tensor, chunk: int, device, replay: dict) -> torch.Tensor:
    """The input of the module ``name`` when ``model`` runs on ``patches`` in chunks of ``chunk`` (on ``device``);
    the modules named in ``replay`` return their cached outputs instead of computing, and the forward pass stops at
    ``name``."""
    ins = []

    def hook(mod, args):
        ins.append(args[0].detach())
        raise _Stop

    module = get_module(model, name)
    originals = {n: get_module(model, n) for n in replay}
    replays = {n: _Replay(out, chunk) for n, out in replay.items()}
    handle = module.register_forward_pre_hook(hook)
    try:
        for n, r in replays.items():
            set_module(model, n, r)
        for i in range(0, len(patches), chunk):
            try:
                model(patches[i:i + chunk].to(device))
            except _Stop:
                pass
    finally:
        handle.remove()
        for n, m in originals.items():
            set_module(model, n, m)
    return torch.cat(ins)


@torch.no_grad()
def run_chunks(module, inputs: torch.Tensor, chunk: int) -> torch.Tensor:
    """``module`` on ``inputs`` in chunks of ``chunk`` (exactly what the network computes on those chunks)."""
    return torch.cat([module(inputs[i:i + chunk]) for i in range(0, len(inputs), chunk)])


def lp_loss(pred: torch.Tensor, tgt: torch.Tensor, p: float) -> torch.Tensor:
    """BRECQ's reconstruction loss: |pred - tgt|^p summed over channels, averaged over samples and pixels."""
    return (pred - tgt).abs().pow(p).sum(1).mean()


def temperature(count: int, iters: int) -> float:
    """AdaRound's b after ``count`` steps (1-based): B_RANGE[0] during the warm-up, then linear to B_RANGE[1]."""
    start = WARMUP * iters
    if count < start:
        return B_RANGE[0]
    rel = (count - start) / max(iters - start, 1)
    return B_RANGE[1] + (B_RANGE[0] - B_RANGE[1]) * max(0.0, 1 - rel)


def lr_factor(budget: Budget, phase: Phase) -> float:
    """The learning rates' factor: the paper budget's iterations of this pass over the budget's, so that the
    distance Adam can move a parameter (about lr per step) is the paper budget's. Measured on EDSR x2 W4A4 block 5
    at 500 iterations: with the paper's lr 1e-3 only 14% of the h reach 0 or 1 and the block's error after hard
    rounding is 4.76 (nearest rounding 10.70); with 0.04 (= 1e-3 x 20000 / 500) 99% do and it is 2.30."""
    return getattr(BUDGETS["paper"], phase.iters) / getattr(budget, phase.iters)


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def set_modes(convs, weight_mode: str, act_on: bool, drop: float = 0.0) -> None:
    for c in convs:
        c.weight_mode, c.act_on = weight_mode, act_on
        c.act.drop = drop


def reconstruct_block(block, convs, phase: Phase, inputs, targets, fp_inputs, budget: Budget, seed: int,
                      device, bar=None, what: str = "") -> dict:
    """Optimize one block in place (``convs``: its ReconConvs) for ``phase``; returns loss statistics."""
    iters = getattr(budget, phase.iters)
    n = len(inputs)
    gen_cpu = torch.Generator().manual_seed(seed)
    gen_dev = gen_cpu if device.type == "cpu" else torch.Generator(device=device).manual_seed(seed)
    # activation steps: initialised on the first batch of cached inputs (earlier convs of the block quantized)
    if phase.act_on and phase.learn_acts:
        set_modes(convs, "soft" if phase.learn_weights else "hard", True)
        pending = [c for c in convs if not c.act.inited]
        hooks = []
        for j, c in enumerate(pending):
            def pre(mod, args, j=j):
                if not mod.act.inited:
                    mod.act.init_from(args[0], phase.init_p, seed=_seed(seed, j))
            hooks.append(c.register_forward_pre_hook(pre))
        try:
            with torch.no_grad():
                block(inputs[:min(n, max(budget.batch, 64))])
        finally:
            for h in hooks:
                h.remove()
    set_modes(convs, "soft" if phase.learn_weights else "hard", phase.act_on, phase.drop)
    alphas = [c.weight.alpha for c in convs] if phase.learn_weights else []
    steps = [c.act.step for c in convs] if phase.learn_acts else []
    for a in alphas:
        a.requires_grad_(True)
    for s in steps:
        s.requires_grad_(True)
    for c in convs:
        if isinstance(c.act, StaticActQuant):
            c.act.lsq_grad_scale = phase.lsq_grad_scale
            c.act.generator = gen_dev
    lr_scale = lr_factor(budget, phase)
    opt_w = torch.optim.Adam(alphas, lr=ALPHA_LR * lr_scale) if alphas else None
    opt_a = torch.optim.Adam(steps, lr=phase.act_lr * lr_scale) if steps else None
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt_a, T_max=iters, eta_min=0.0) if opt_a else None
    rec_hist = []
    bs = min(budget.batch, n)
    try:
        for it in range(1, iters + 1):
            idx = torch.randperm(n, generator=gen_cpu)[:bs].to(inputs.device)
            x = inputs[idx]
            if phase.drop > 0:
                keep_fp = torch.rand(x.shape, generator=gen_dev, device=x.device) < phase.drop
                x = torch.where(keep_fp, fp_inputs[idx], x)
            for o in (opt_w, opt_a):
                if o is not None:
                    o.zero_grad(set_to_none=True)
            rec = lp_loss(block(x), targets[idx], phase.p)
            loss = rec
            if phase.learn_weights and it >= WARMUP * iters:
                b = temperature(it, iters)
                loss = loss + ROUND_WEIGHT * sum(c.weight.round_loss(b) for c in convs)
            if not torch.isfinite(loss):
                raise UserError(f"{what}: the reconstruction loss became {float(loss)} at iteration {it}")
            loss.backward()
            for o in (opt_w, opt_a):
                if o is not None:
                    o.step()
            if sched is not None:
                sched.step()
            rec_hist.append(float(rec.detach()))
            if bar is not None:
                bar.update(1)
                if it % 10 == 0 or it == iters:
                    bar.set_postfix_str(f"{what} it {it}/{iters} loss {rec_hist[-1]:.4g}", refresh=False)
    finally:
        for a in alphas:
            a.requires_grad_(False)
        for s in steps:
            s.requires_grad_(False)
        set_modes(convs, "hard", phase.act_on, 0.0)
        for c in convs:
            if isinstance(c.act, StaticActQuant):
                c.act.generator = None
    if phase.learn_weights:
        for c in convs:
            c.weight.freeze()
    k = max(1, iters // 20)
    hard = [float(c.weight.soft_h().detach().sub(0.5).abs().eq(0.5).float().mean()) for c in convs] \
        if phase.learn_weights else None
    return {"iters": iters, "loss_first": float(np.mean(rec_hist[:k])) if rec_hist else None,
            "loss_last": float(np.mean(rec_hist[-k:])) if rec_hist else None,
            **({"hard_fraction": hard} if hard is not None else {})}


# --- checkpoints ---------------------------------------------------------------------------------------------------
def checkpoint_dir(out: Path) -> Path:
    return Path(str(out) + ".partial")


def _ckpt_path(ckdir: Path, phase: int, block: int) -> Path:
    return ckdir / f"phase{phase}_block{block:03d}.pt"


def save_checkpoint(path: Path, convs, stats: dict, seconds: float) -> None:
    state = {"version": CHECKPOINT_VERSION, "layers": [c.name for c in convs],
             "weight_q": [c.weight.hard_q().to(torch.uint8).cpu() for c in convs],
             "stats": json.dumps(stats), "seconds": float(seconds)}
    if all(isinstance(c.act, StaticActQuant) and c.act.inited for c in convs):
        state["act_step"] = torch.stack([c.act.step.detach().float().cpu() for c in convs])
        state["act_zero"] = torch.stack([c.act.zero.detach().float().cpu() for c in convs])
    with atomic_output(path, ".pt") as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path, convs, act_bits: int) -> dict:
    """Restore a finished block (its hard rounding and steps) from ``path``; UserError when it does not fit."""
    def bad(msg):
        raise UserError(f"{path}: {msg}; remove it or rerun with --restart")

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint
        bad(f"unreadable checkpoint ({(str(exc).strip().splitlines() or [type(exc).__name__])[0][:100]})")
    if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
        bad("not a reconstruction checkpoint of this version")
    if state.get("layers") != [c.name for c in convs]:
        bad("it holds other layers")
    wq = state.get("weight_q")
    if not isinstance(wq, list) or len(wq) != len(convs):
        bad("weight_q is missing")
    for c, q in zip(convs, wq):
        if not torch.is_tensor(q) or q.dtype != torch.uint8 or tuple(q.shape) != tuple(c.weight.w_floor.shape) \
                or int(q.max()) > c.weight.qmax:
            bad(f"weight_q of {c.name} has the wrong type, shape or range")
    steps = state.get("act_step")
    if steps is not None:
        zeros = state.get("act_zero")
        qmax = (1 << act_bits) - 1
        if not (torch.is_tensor(steps) and torch.is_tensor(zeros) and steps.shape == zeros.shape == (len(convs),)
                and torch.isfinite(steps).all() and (steps > 0).all() and (zeros >= 0).all() and (zeros <= qmax).all()
                and torch.equal(zeros, zeros.round())):
            bad("act_step/act_zero are not positive finite steps and integer zero points")
    for i, c in enumerate(convs):
        if not c.weight.frozen:
            c.weight.freeze(wq[i].to(torch.int32))
        if steps is not None:
            c.act.set(float(steps[i]), float(state["act_zero"][i]))
    try:
        stats = json.loads(state.get("stats", "{}"))
    except (TypeError, ValueError):
        bad("its statistics are not JSON")
    return {**stats, "seconds": float(state.get("seconds", 0.0)), "resumed": True}


def _open_checkpoints(ckdir: Path, run_config: dict, restart: bool) -> None:
    """Create ``ckdir`` for this run, or check that the one there belongs to it (else a one-line error)."""
    cfg_path = ckdir / "run.json"
    if restart and ckdir.exists():
        shutil.rmtree(ckdir)
    if ckdir.exists():
        try:
            have = json.loads(cfg_path.read_text())
        except (OSError, ValueError):
            raise UserError(f"{ckdir} holds no readable run.json; remove it or rerun with --restart") from None
        if have != run_config:
            diff = sorted(k for k in set(have) | set(run_config) if have.get(k) != run_config.get(k))
            raise UserError(f"{ckdir} holds the checkpoints of another reconstruction (differs in {', '.join(diff)});"
                            " remove it or rerun with --restart")
        return
    ckdir.mkdir(parents=True)
    with atomic_output(cfg_path) as tmp:
        tmp.write_text(json.dumps(run_config, indent=1, sort_keys=True) + "\n")


# --- the engine ----------------------------------------------------------------------------------------------------
def reconstruct(model, method: str, *, act_bits: int, weight_bits: int, budget: Budget | str, images,
                seed: int = 0, device="cpu", dfsq_params=None, weights: str = "", checkpoints: Path | None = None,
                restart: bool = False, progress: bool = False, run_info: dict | None = None):
    """Reconstruct ``model`` (full precision, left unchanged) with ``method``; returns the result: a
    :class:`dfsq.recon_file.ReconResult` (brecq, qdrop) or a :class:`dfsq.calibrate.CalibParams` (dfsq-adaround,
    ``dfsq_params`` with the learned weight rounding). ``images``: calibration images ((name, uint8 HWC) pairs);
    ``checkpoints``: a folder for per-block checkpoints (resumed when it belongs to the same run)."""
    from .calibrate import check_bits, stack_if_uniform, versions, weights_fingerprint

    if method not in RECON_METHODS:
        raise UserError(f"--method must be one of {', '.join(RECON_METHODS)}, got {method!r}")
    budget = get_budget(budget) if isinstance(budget, str) else budget
    check_bits(act_bits, weight_bits, 4)
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise UserError(f"--seed must be a non-negative integer, got {seed!r}")
    device = torch.device(device)
    fingerprint = weights_fingerprint(model)
    if method == "dfsq-adaround":
        if dfsq_params is None:
            raise UserError("dfsq-adaround needs DFSQ params (python -m dfsq.calibrate)")
        cfg = dfsq_params.config
        if (cfg["act_bits"], cfg["weight_bits"]) != (act_bits, weight_bits) or cfg["scale"] != int(model.scale) \
                or cfg["weights_fingerprint"] != fingerprint or not cfg.get("norm", True):
            raise UserError("the DFSQ params were made for other bits, scale or weights (or without normalization)")
    elif dfsq_params is not None:
        raise UserError(f"--params applies to --method dfsq-adaround only, not {method}")
    t0, c0 = time.perf_counter(), time.process_time()
    model = model.eval()
    blocks = model_blocks(model)
    patches = calibration_patches(images, budget.patches, budget.patch, seed)
    fp_model = copy.deepcopy(model).to(device).eval()
    rmodel = build_recon_model(model, method, act_bits, weight_bits, dfsq_params).to(device)
    by_name = {c.name: c for c in recon_convs(rmodel)}
    phases = PHASES[method]
    run_config = {"method": method, **model_config(model), "scale": int(model.scale), "act_bits": int(act_bits),
                  "weight_bits": int(weight_bits), "budget": asdict(budget), "seed": int(seed),
                  "weights_fingerprint": fingerprint, "images": [n for n, _ in images],
                  **(run_info or {})}
    if method == "dfsq-adaround":
        run_config["dfsq_points_sha256"] = _points_digest(dfsq_params)
    if checkpoints is not None:
        _open_checkpoints(Path(checkpoints), run_config, restart)
    total = sum(getattr(budget, ph.iters) for ph in phases) * len(blocks)
    stats: dict[str, list] = {ph.name: [] for ph in phases}
    chunk = 4 * budget.batch
    fp_out: dict[str, torch.Tensor] = {}   # the float network's output of every block, over all patches
    bar = tqdm(total=total, desc=f"{method} {model_config(model)['model']} x{model.scale} W{weight_bits}A{act_bits}",
               disable=not progress, unit="it", dynamic_ncols=True)
    try:
        for pi, phase in enumerate(phases):
            q_out: dict[str, torch.Tensor] = {}   # the quantized network's output of every finished block
            for bi, blk in enumerate(blocks):
                convs = [by_name[n] for n in blk.layers]
                module = get_module(rmodel, blk.name)
                what = f"{phase.name} block {bi + 1}/{len(blocks)}"
                tb = time.perf_counter()
                # inputs from the quantized network so far (earlier blocks hard, activations as this pass uses
                # them), targets from the float network
                inputs = capture_input(rmodel, blk.name, patches, chunk, device, q_out)
                fp_in = None
                if blk.name not in fp_out or phase.drop > 0:
                    fp_in = capture_input(fp_model, blk.name, patches, chunk, device, fp_out)
                if blk.name not in fp_out:
                    fp_out[blk.name] = run_chunks(get_module(fp_model, blk.name), fp_in, chunk)
                ck = _ckpt_path(Path(checkpoints), pi, bi) if checkpoints is not None else None
                if ck is not None and ck.is_file():
                    stats[phase.name].append(load_checkpoint(ck, convs, act_bits))
                    bar.update(getattr(budget, phase.iters))
                else:
                    bar.set_postfix_str(what, refresh=True)
                    st = reconstruct_block(module, convs, phase, inputs, fp_out[blk.name],
                                           fp_in if phase.drop > 0 else None, budget, _seed(seed, pi, bi), device,
                                           bar, what)
                    st["seconds"] = round(time.perf_counter() - tb, 2)
                    stats[phase.name].append(st)
                    if ck is not None:
                        save_checkpoint(ck, convs, st, st["seconds"])
                set_modes(convs, "hard", phase.act_on)
                q_out[blk.name] = run_chunks(module, inputs, chunk)
                del inputs, fp_in
            del q_out
    finally:
        bar.close()
    convs = recon_convs(rmodel)
    import resource

    info = {"seconds": round(time.perf_counter() - t0, 2), "cpu_seconds": round(time.process_time() - c0, 2),
            "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "torch_threads": torch.get_num_threads(), "device": device.type, "blocks": [b.name for b in blocks],
            "patches": int(len(patches)), "stats": stats, "versions": versions()}
    recon_cfg = {"method": method, "budget": asdict(budget), "settings": method_settings(method, budget),
                 "seed": int(seed), "images": len(images)}
    if method == "dfsq-adaround":
        out = copy.deepcopy(dfsq_params)
        out.arrays["weight_q"] = stack_if_uniform([c.weight.hard_q().cpu().numpy().astype(np.uint8) for c in convs])
        out.config = {**out.config, "reconstruction": {**recon_cfg, "points_sha256": run_config["dfsq_points_sha256"]}}
        out.info = {**out.info, "reconstruction": info}
        return out
    config = {**model_config(model), "scale": int(model.scale), "act_bits": int(act_bits),
              "weight_bits": int(weight_bits), **recon_cfg, "weights": str(weights), "weights_fingerprint": fingerprint}
    return static_result(model, rmodel, config, info)


def static_result(model, rmodel, config: dict, info: dict):
    """The :class:`dfsq.recon_file.ReconResult` of a reconstructed network ``rmodel`` (its hard weight integers and
    activation steps) for the float ``model``."""
    from .calibrate import stack_if_uniform
    from .recon_file import ReconResult

    convs = recon_convs(rmodel)
    arrays = {"weight_q": stack_if_uniform([c.weight.hard_q().cpu().numpy().astype(np.uint8) for c in convs]),
              "zero_point": stack_if_uniform([c.weight.zero_point.cpu().numpy().astype(np.int32) for c in convs]),
              "weight_scale": stack_if_uniform([c.weight.weight_scale.cpu().numpy().astype(np.float32)
                                                for c in convs]),
              "act_step": np.array([float(c.act.step.detach()) for c in convs], np.float32),
              "act_zero": np.array([float(c.act.zero) for c in convs], np.int32)}
    return ReconResult(config, [c.name for c in convs], arrays, info, [q.describe() for q in quantized_layers(model)])


def _points_digest(params) -> str:
    """sha256 of a DFSQ calibration's points (ties a dfsq-adaround checkpoint to the points it was made with)."""
    import hashlib

    h = hashlib.sha256()
    for a in params.arrays["point_ints"]:
        h.update(np.ascontiguousarray(a, dtype=np.int32).tobytes())
    return h.hexdigest()


# --- CLI -----------------------------------------------------------------------------------------------------------
def build_parser():
    from golden.args import Parser, When
    from golden.spec import ACT_BITS_RANGE, WEIGHT_BITS_RANGE, WORDS_RANGE

    from .device import DEVICES
    from .model import ARCHS
    from .weights import weights_option

    adaround = When("method", "dfsq-adaround")
    ap = Parser(prog="python -m dfsq.reconstruct", description=__doc__.split("\n")[0])
    ap.choice("--method", RECON_METHODS, required=True)
    ap.choice("--model", ARCHS, default="edsr", help="network (default edsr)")
    weights_option(ap)
    ap.choice("--scale", (2, 4), default=2)
    ap.integer("--act-bits", *ACT_BITS_RANGE, default=4)
    ap.integer("--weight-bits", *WEIGHT_BITS_RANGE, default=4)
    ap.choice("--budget", tuple(BUDGETS), default="cpu",
              help="cpu (default: minutes on 2 cores) or paper (the methods' own settings; for a GPU)")
    ap.output_file("--out", required=True, help="file to write (.npz; a .json sidecar is written too)")
    ap.integer("--images", 1, 100_000, default=32, help="calibration images the patches are cut from")
    ap.input_dir("--calib", "images", help="calibration image folder (default: DFSQ's, dfsq.calibrate)")
    ap.seed()
    ap.choice("--device", DEVICES, default="cpu")
    ap.threads()
    ap.flag("--restart", help="discard the checkpoints of an interrupted run")
    ap.input_file("--params", "params", when=adaround,
                  help="the DFSQ calibration whose points are kept (default: calibrate now)")
    ap.integer("--words", *WORDS_RANGE, default=None, when=(adaround, When("params", None)),
               help="universal-set words when calibrating now (default 4)")
    return ap


@cli_main
def main(argv=None):
    from .calibrate import calibrate, calibration_images, load_params, save_params, sidecar_path, weights_fingerprint
    from .device import resolve_device
    from .model import load_model
    from .recon_file import save_recon

    args = build_parser().parse_args(argv)
    args.words = 4 if args.words is None else args.words
    budget = get_budget(args.budget)
    out = check_output_file(args.out, "--out")
    check_output_file(sidecar_path(out), "sidecar")
    check_output_dir(checkpoint_dir(out), "checkpoint folder")
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model = load_model(args.model, args.weights, args.scale)
    images = calibration_images(args.calib, args.images, args.scale)
    params = None
    if args.method == "dfsq-adaround":
        if args.params:
            params = load_params(args.params)
            from .adapters import check_model_matches

            check_model_matches(params.config, model, args.params)
            if params.config["weights_fingerprint"] != weights_fingerprint(model):
                raise UserError(f"{args.params} was calibrated for other weights ({params.config['weights']})")
            for k in ("act_bits", "weight_bits"):
                if params.config[k] != getattr(args, k):
                    raise UserError(f"{args.params} was calibrated with {k}={params.config[k]}, not "
                                    f"{getattr(args, k)}")
        else:
            params = calibrate(model, images, act_bits=args.act_bits, weight_bits=args.weight_bits,
                               words=args.words, seed=args.seed, weights=str(args.weights), progress=True)
    ckdir = checkpoint_dir(out)
    result = reconstruct(model, args.method, act_bits=args.act_bits, weight_bits=args.weight_bits, budget=budget,
                         images=images, seed=args.seed, device=device, dfsq_params=params, weights=str(args.weights),
                         checkpoints=ckdir, restart=args.restart, progress=True,
                         run_info={"params": str(args.params or "")})
    if args.method == "dfsq-adaround":
        save_params(result, out)
    else:
        save_recon(result, out)
    shutil.rmtree(ckdir, ignore_errors=True)
    info = result.info.get("reconstruction", result.info)
    print(f"{args.method} {args.model} x{args.scale} W{args.weight_bits}A{args.act_bits}, budget {budget.name}: "
          f"{len(info['blocks'])} blocks in {time.perf_counter() - t0:.0f} s wall ({info['cpu_seconds']:.0f} s CPU, "
          f"{info['torch_threads']} threads) -> {out}")


if __name__ == "__main__":
    main()
