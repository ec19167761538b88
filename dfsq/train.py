"""Train EDSR-baseline: L1 loss, Adam, random LR/HR patches (MATLAB-bicubic LR), flips and 90-degree rotations.

    python -m dfsq.train --scale 2 --data DIR[,DIR...] --minutes M --out PATH [--init PATH] [--seed S]

The learning rate follows a cosine from ``--lr`` down to 1% over the wall-clock budget, so a run of any
length ends annealed. Model, optimizer, RNG state and elapsed time are saved to ``PATH.state`` every
``--save-every`` minutes; rerunning the same command resumes from there. The final weights go to ``PATH``
(fp16 with ``--fp16``). Set5 is evaluated every ``--val-every`` minutes when the shared data is present.
"""
from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .data import BENCHMARK_ROOT, list_images, load_rgb, make_lr, modcrop
from golden.errors import UserError, cli_main
from .model import EDSR, check_state_dict, load_state


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


def validate_set5(model: EDSR, scale: int) -> float | None:
    from .evaluate import evaluate_dataset

    if not (BENCHMARK_ROOT / "Set5" / "HR").is_dir():
        return None
    return evaluate_dataset(model, "Set5", scale, progress=False)["psnr"]


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


@cli_main
def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m dfsq.train", description=__doc__.split("\n")[0])
    ap.add_argument("--scale", type=int, default=2, choices=(2, 4))
    ap.add_argument("--data", required=True, help="comma-separated image folders")
    ap.add_argument("--minutes", type=float, required=True, help="wall-clock training budget")
    ap.add_argument("--out", required=True, help="final weights (.pt)")
    ap.add_argument("--init", help="initial weights; at x4 the x2 body and head are reused")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--patch", type=int, default=48, help="LR patch size")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=4e-4)
    ap.add_argument("--save-every", type=float, default=5.0, help="minutes between resumable snapshots")
    ap.add_argument("--val-every", type=float, default=10.0, help="minutes between Set5 validations (0: none)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    ap.add_argument("--fp16", action="store_true", help="store the final weights in fp16")
    args = ap.parse_args(argv)
    if args.minutes <= 0:
        raise UserError("--minutes must be positive")
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    state_path = out.with_name(out.name + ".state")

    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model = EDSR(args.scale)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.999), eps=1e-8)
    elapsed, step, history = 0.0, 0, []
    if state_path.is_file():
        st = torch.load(state_path, map_location="cpu", weights_only=False)  # our own snapshot
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        rng.bit_generator.state = st["rng"]
        torch.set_rng_state(st["torch_rng"])
        elapsed, step, history = st["elapsed"], st["step"], st["history"]
        print(f"resumed from {state_path}: step {step}, {elapsed / 60:.1f} min done")
    elif args.init:
        init = load_state(args.init)
        own = model.state_dict()
        reuse = {k: v.float() for k, v in init.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
        if args.scale == 2 or "tail.0.0.weight" not in reuse:
            check_state_dict(EDSR(2 if "tail.0.2.weight" not in init else 4), init)
        own.update(reuse)
        model.load_state_dict(own)
        print(f"initialised {len(reuse)}/{len(own)} tensors from {args.init}")

    pairs, skipped = load_training_set(args.data.split(","), args.scale, args.patch)
    print(f"training on {len(pairs)} images ({skipped} skipped: smaller than the patch)")
    budget = args.minutes * 60
    model.train()
    t0 = time.time() - elapsed
    last_save = last_val = time.time()
    bar = tqdm(total=int(budget), initial=int(elapsed), unit="s", desc=f"train x{args.scale}", mininterval=30)
    loss_avg = None
    while True:
        elapsed = time.time() - t0
        if elapsed >= budget:
            break
        frac = elapsed / budget
        for g in opt.param_groups:
            g["lr"] = args.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * frac)))
        lr_t, hr_t = sample_batch(pairs, rng, args.batch, args.patch, args.scale)
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
            _atomic_save({"model": model.state_dict(), "opt": opt.state_dict(), "rng": rng.bit_generator.state,
                          "torch_rng": torch.get_rng_state(), "elapsed": time.time() - t0, "step": step,
                          "history": history}, state_path)
            last_save = time.time()
    bar.close()
    model.eval()
    sd = {k: (v.half() if args.fp16 else v) for k, v in model.state_dict().items()}
    _atomic_save(sd, out)
    _atomic_save({"model": model.state_dict(), "opt": opt.state_dict(), "rng": rng.bit_generator.state,
                  "torch_rng": torch.get_rng_state(), "elapsed": budget, "step": step, "history": history},
                 state_path)
    with torch.no_grad():
        p = validate_set5(model, args.scale) if args.val_every > 0 else None
    print(f"done: {step} steps in {budget / 60:.1f} min -> {out}" + (f"; Set5 PSNR-Y {p:.3f} dB" if p else ""))


if __name__ == "__main__":
    main()
