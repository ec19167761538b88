"""Train EDSR-baseline or RDN: L1 loss, Adam, random LR/HR patches (MATLAB-bicubic LR), flips and 90-degree rotations.

    python -m dfsq.train [--model edsr|rdn] --scale 2 --data DIR[,DIR...] --minutes M --out PATH [--init PATH]

The learning rate follows a cosine from ``--lr`` down to 1% over the wall-clock budget, so a run of any
length ends annealed. Model, optimizer, RNG state and elapsed time are saved to ``PATH.state`` every
``--save-every`` minutes; rerunning the same command resumes from there. The snapshot holds only tensors,
numbers and JSON text, so it loads with ``weights_only=True``; one written for another model, scale or structure
is refused. The final weights go to ``PATH``
(fp16 with ``--fp16``). ``--device cuda`` trains on an accelerator when one is at hand (snapshots and weights are
stored as CPU tensors, so a run can resume on either). Set5 is evaluated every ``--val-every`` minutes when the
shared data is present.
"""
from __future__ import annotations

import json
import math
import warnings
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .data import BENCHMARK_ROOT, list_images, load_rgb, make_lr, modcrop
from golden.args import Parser, When
from golden.errors import UserError, cli_main
from golden.files import atomic_output, check_output_file
from .device import DEVICES, resolve_device
from .model import ARCHS, build_model, check_state_dict, load_state, model_from_state


def load_training_set(dirs: list[str], scale: int, patch: int):
    """(lr, hr) uint8 pairs for every image whose LR side is at least ``patch``; the rest are skipped."""
    pairs, skipped = [], 0
    paths = [p for d in dirs for p in list_images(d)]
    if not paths:
        raise UserError(f"no images in {','.join(dirs)}")
    for p in tqdm(paths, desc="preparing LR images", leave=False):
        hr = modcrop(load_rgb(p), scale)
        if min(hr.shape[:2]) < patch * scale:
            skipped += 1
            continue
        pairs.append((make_lr(hr, scale), hr))
    if not pairs:
        raise UserError(f"every image is smaller than a {patch * scale}px patch")
    return pairs, skipped


def sample_batch(pairs, rng: np.random.Generator, batch: int, patch: int, scale: int):
    lrs, hrs = [], []
    for _ in range(batch):
        lr, hr = pairs[rng.integers(len(pairs))]
        y = rng.integers(lr.shape[0] - patch + 1)
        x = rng.integers(lr.shape[1] - patch + 1)
        a = lr[y:y + patch, x:x + patch]
        b = hr[y * scale:(y + patch) * scale, x * scale:(x + patch) * scale]
        if rng.random() < 0.5:
            a, b = a[:, ::-1], b[:, ::-1]
        if rng.random() < 0.5:
            a, b = a[::-1], b[::-1]
        if rng.random() < 0.5:
            a, b = a.transpose(1, 0, 2), b.transpose(1, 0, 2)
        lrs.append(np.ascontiguousarray(a))
        hrs.append(np.ascontiguousarray(b))
    to_t = lambda xs: torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).float()  # noqa: E731
    return to_t(lrs), to_t(hrs)


def validate_set5(model: torch.nn.Module, scale: int) -> float | None:
    from .evaluate import evaluate_dataset

    if not (BENCHMARK_ROOT / "Set5" / "HR").is_dir():
        return None
    return evaluate_dataset(model, "Set5", scale, progress=False)["psnr"]


def _atomic_save(obj, path: Path) -> None:
    with atomic_output(path) as tmp:
        torch.save(obj, tmp)


STATE_FORMAT = 1


def _meta(arch: str, scale: int, model: torch.nn.Module) -> dict:
    config = getattr(model, "config", None)
    return {"format": STATE_FORMAT, "model": arch, "scale": scale, "config": list(config) if config else None}


def save_state(path: Path, meta: dict, model, opt, rng: np.random.Generator, elapsed: float, step: int,
               history: list) -> None:
    """The resumable snapshot: tensors, numbers and JSON strings only (loads with ``weights_only=True``)."""
    weights = {k: v.cpu() for k, v in model.state_dict().items()}
    _atomic_save({"meta": json.dumps(meta), "model": weights, "opt": opt.state_dict(),
                  "rng": json.dumps(rng.bit_generator.state), "torch_rng": torch.get_rng_state(),
                  "elapsed": float(elapsed), "step": int(step), "history": json.dumps(history)}, path)


def validate_state(path) -> dict:
    """The format validator of a resume file (:mod:`golden.formats` ``train-state``): the snapshot's fields and
    metadata, read with ``weights_only=True``; the parts that must fit a run are checked by
    :func:`load_resume_state`."""
    st, _, _, _, _, _ = _read_state(Path(path))
    return st


def _read_state(path: Path):
    try:
        with warnings.catch_warnings():  # a refused file is one line, not a warning and a line
            warnings.simplefilter("ignore")
            st = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated, corrupted or planted: never unpickle code
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"cannot read resume file {path}: {first[:160]} (delete it to start afresh)") from None
    keys = {"meta", "model", "opt", "rng", "torch_rng", "elapsed", "step", "history"}
    if not isinstance(st, dict) or not keys <= set(st):
        raise UserError(f"resume file {path} is not a snapshot of dfsq.train (delete it to start afresh)")
    try:
        saved = json.loads(st["meta"])
        rng_state = json.loads(st["rng"])
        history = json.loads(st["history"])
        elapsed, step = float(st["elapsed"]), int(st["step"])
    except (TypeError, ValueError):
        raise UserError(f"resume file {path} has malformed metadata (delete it to start afresh)") from None
    if not (isinstance(saved, dict) and isinstance(rng_state, dict) and isinstance(history, list)):
        raise UserError(f"resume file {path} has malformed metadata (delete it to start afresh)")
    if not (math.isfinite(elapsed) and elapsed >= 0 and step >= 0):
        raise UserError(f"resume file {path} has out-of-range progress fields")
    return st, saved, rng_state, history, elapsed, step


def load_resume_state(path: Path, meta: dict, model, opt, rng: np.random.Generator):
    """Restore a snapshot written by :func:`save_state` for the same run; (elapsed, step, history)."""
    st, saved, rng_state, history, elapsed, step = _read_state(path)
    if saved != meta:
        diff = ", ".join(f"{k} {saved.get(k)!r} (this run: {meta[k]!r})" for k in meta if saved.get(k) != meta[k])
        raise UserError(f"resume file {path} was written by another run: {diff}; use another --out or delete it")
    model.load_state_dict({k: v.float() for k, v in check_state_dict(model, st["model"]).items()})
    try:
        opt.load_state_dict(st["opt"])
        rng.bit_generator.state = rng_state
        torch.set_rng_state(st["torch_rng"])
    except (TypeError, ValueError, KeyError, RuntimeError) as exc:
        raise UserError(f"resume file {path} does not fit this run: {str(exc)[:160]}") from None
    return elapsed, step, history


def _init_from(arch: str, model, path: str) -> None:
    """Copy every tensor of ``path`` whose name and shape match (at x4 the x2 body and head are reused)."""
    from .rdn import SCALES as RDN_SCALES
    from .model import SCALES as EDSR_SCALES

    init = load_state(path)
    errors = []
    for s in (RDN_SCALES if arch == "rdn" else EDSR_SCALES):
        try:
            model_from_state(arch, init, s)
            break
        except UserError as exc:
            errors.append(str(exc))
    else:
        raise UserError(f"--init {path}: {errors[0]}")
    own = model.state_dict()
    reuse = {k: v.float() for k, v in init.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    own.update(reuse)
    model.load_state_dict(own)
    print(f"initialised {len(reuse)}/{len(own)} tensors from {path}")


def _rdn_config(text: str) -> str:
    from .rdn import parse_config

    parse_config(text)
    return text


def build_parser() -> Parser:
    ap = Parser(prog="python -m dfsq.train", description=__doc__.split("\n")[0])
    ap.choice("--model", ARCHS, default="edsr")
    ap.text("--rdn-config", _rdn_config, default="S", when=(When("model", "rdn"), When("init", None)),
            help="RDN structure: S (D=8, C=4, G=32: the embedded default), A, B, or D,C,G[,G0]; "
                 "with --init the structure comes from that checkpoint")
    ap.choice("--scale", (2, 3, 4), default=2)
    ap.input_dirs("--data", "images", required=True, help="comma-separated image folders")
    ap.real("--minutes", 0.0, 1e6, lo_open=True, required=True, help="wall-clock training budget")
    ap.output_file("--out", required=True, help="final weights (.pt)")
    ap.input_file("--init", "checkpoint",
                  help="initial weights; tensors whose name and shape match are reused (x2 -> x4)")
    ap.seed()
    ap.integer("--patch", 4, 4096, default=48, help="LR patch size")
    ap.integer("--batch", 1, 65536, default=16)
    ap.real("--lr", 0.0, 1.0, lo_open=True, default=4e-4)
    ap.real("--save-every", 0.0, 1e6, lo_open=True, default=5.0, help="minutes between resumable snapshots")
    ap.real("--val-every", 0.0, 1e6, default=10.0, help="minutes between Set5 validations (0: none)")
    ap.threads(help="torch threads (default: torch's choice)")
    ap.flag("--fp16", help="store the final weights in fp16")
    ap.choice("--device", DEVICES, default="cpu",
              help="where to train (default cpu; cuda when an accelerator is at hand: TF32 allowed)")
    return ap


@cli_main
def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device, exact=False)
    out = check_output_file(args.out, "--out")
    state_path = check_output_file(out.with_name(out.name + ".state"), "resume file")
    if state_path.exists() and not state_path.is_file():
        raise UserError(f"resume file {state_path} is not a file")

    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    config = None
    if args.model == "rdn":
        from .rdn import config_from_state, parse_config

        config = config_from_state(load_state(args.init)) if args.init else parse_config(args.rdn_config)
    model = build_model(args.model, args.scale, config).to(device)
    meta = _meta(args.model, args.scale, model)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.999), eps=1e-8)
    elapsed, step, history = 0.0, 0, []
    if state_path.is_file():
        elapsed, step, history = load_resume_state(state_path, meta, model, opt, rng)
        print(f"resumed from {state_path}: step {step}, {elapsed / 60:.1f} min done")
    elif args.init:
        _init_from(args.model, model, args.init)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{model.label}: {n_params:,} parameters")

    pairs, skipped = load_training_set(args.data, args.scale, args.patch)
    print(f"training on {len(pairs)} images ({skipped} skipped: smaller than the patch)")
    budget = args.minutes * 60
    model.train()
    t0 = time.time() - elapsed
    last_save = last_val = time.time()
    bar = tqdm(total=int(budget), initial=int(min(elapsed, budget)), unit="s", desc=f"train {args.model} x{args.scale}",
               mininterval=30)
    loss_avg = None
    while True:
        elapsed = time.time() - t0
        if elapsed >= budget:
            break
        frac = elapsed / budget
        for g in opt.param_groups:
            g["lr"] = args.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * frac)))
        lr_t, hr_t = (t.to(device, non_blocking=True) for t in sample_batch(pairs, rng, args.batch, args.patch,
                                                                           args.scale))
        loss = F.l1_loss(model(lr_t), hr_t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        loss_avg = loss.item() if loss_avg is None else 0.98 * loss_avg + 0.02 * loss.item()
        bar.n = int(min(elapsed, budget))
        bar.set_postfix(step=step, l1=f"{loss_avg:.3f}", lr=f"{opt.param_groups[0]['lr']:.1e}", refresh=False)
        if step % 50 == 0:
            bar.refresh()
        now = time.time()
        if args.val_every > 0 and now - last_val >= args.val_every * 60:
            model.eval()
            with torch.no_grad():
                p = validate_set5(model, args.scale)
            model.train()
            if p is not None:
                history.append({"step": step, "minutes": elapsed / 60, "set5_psnr": p})
                tqdm.write(f"step {step} ({elapsed / 60:.1f} min): Set5 PSNR-Y {p:.3f} dB")
            last_val = time.time()
        if now - last_save >= args.save_every * 60:
            save_state(state_path, meta, model, opt, rng, time.time() - t0, step, history)
            last_save = time.time()
    bar.close()
    model.eval()
    sd = {k: (v.half() if args.fp16 else v).cpu() for k, v in model.state_dict().items()}
    _atomic_save(sd, out)
    save_state(state_path, meta, model, opt, rng, budget, step, history)
    with torch.no_grad():
        p = validate_set5(model, args.scale) if args.val_every > 0 else None
    print(f"done: {step} steps in {budget / 60:.1f} min -> {out}" + (f"; Set5 PSNR-Y {p:.3f} dB" if p else ""))


if __name__ == "__main__":
    main()
