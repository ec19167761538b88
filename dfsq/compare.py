"""A side-by-side picture of one crop: HR, bicubic, FP, DFSQ fake-quant and DFSQ hardware-exact, each panel
labelled with its PSNR-Y on that crop (``make demo`` writes one; see :func:`comparison_png`).

Every network runs on the same LR region (the crop plus a margin of context), so the five panels differ only by
the method. The panels are nearest-neighbour zoomed by ``zoom`` and composed with Pillow, so the PNG's size is
exactly :func:`panel_size` and does not depend on fonts: ``(5 * (w * zoom) + 4 * GAP, h * zoom + LABEL_H)``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from golden.errors import UserError
from golden.files import atomic_output

PANELS = ("HR", "bicubic", "FP", "DFSQ fake-quant", "DFSQ hardware-exact")
GAP = 4
LABEL_H = 34


def panel_size(crop_hw: tuple[int, int], zoom: int, panels: int = len(PANELS)) -> tuple[int, int]:
    """(width, height) of the PNG for an HR crop of ``crop_hw`` = (h, w) pixels."""
    h, w = crop_hw
    return panels * w * zoom + (panels - 1) * GAP, h * zoom + LABEL_H


def compose(images: list[tuple[str, np.ndarray]], zoom: int = 2) -> Image.Image:
    """Panels (label, uint8 (h, w, 3)) side by side with a label strip above each. The first panel sets the size;
    a smaller panel (a crop of the crop) is centred in its place at the same zoom."""
    if not images:
        raise UserError("nothing to compose")
    h, w = images[0][1].shape[:2]
    if any(im.shape[0] > h or im.shape[1] > w for _, im in images):
        raise UserError("a panel is larger than the first one")
    W, H = panel_size((h, w), zoom, len(images))
    canvas = Image.new("RGB", (W, H), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for i, (label, im) in enumerate(images):
        x = i * (w * zoom + GAP)
        ph, pw = im.shape[:2]
        canvas.paste(Image.fromarray(np.ascontiguousarray(im)).resize((pw * zoom, ph * zoom), Image.NEAREST),
                     (x + (w - pw) * zoom // 2, LABEL_H + (h - ph) * zoom // 2))
        for j, line in enumerate(label.split("\n")[:2]):
            draw.text((x + 3, 2 + 15 * j), line, fill="black", font=font)
    return canvas


def comparison_png(hr: np.ndarray, lr: np.ndarray, scale: int, nets: dict, crop: tuple[int, int, int, int],
                   path: str | Path, margin: int = 16, zoom: int = 2, extra=None) -> dict:
    """Write the five-panel PNG for the LR crop ``crop`` = (y, x, h, w) of ``lr`` (HR: the same region times
    ``scale``). ``nets``: {"FP": model, "DFSQ fake-quant": qmodel, "DFSQ hardware-exact": hw_model}. ``extra``:
    more panels computed elsewhere, [(label, SR uint8 image of an LR sub-crop (y, x, h, w) inside ``crop``, that
    sub-crop)] (the RTL's), each labelled with its PSNR-Y against the HR of its sub-crop. Returns {panel: PSNR-Y (dB)
    on the crop, HR: inf} in panel order, and writes ``path`` atomically."""
    from .evaluate import upscale
    from .imresize import imresize
    from .metrics import psnr_y

    y, x, h, w = crop
    H, W = lr.shape[:2]
    if y < 0 or x < 0 or h < 1 or w < 1 or y + h > H or x + w > W:
        raise UserError(f"crop {crop} is outside the {W}x{H} LR image")
    y0, x0 = max(0, y - margin), max(0, x - margin)
    y1, x1 = min(H, y + h + margin), min(W, x + w + margin)
    region = np.ascontiguousarray(lr[y0:y1, x0:x1])
    oy, ox = (y - y0) * scale, (x - x0) * scale
    hs, ws = h * scale, w * scale

    def cut(img):
        return np.ascontiguousarray(img[oy:oy + hs, ox:ox + ws])

    hr_crop = np.ascontiguousarray(hr[y * scale:(y + h) * scale, x * scale:(x + w) * scale])
    outs = {"HR": hr_crop, "bicubic": cut(imresize(region, scale))}
    for name in PANELS[2:]:
        if name not in nets:
            raise UserError(f"comparison needs a network for {name!r}")
        outs[name] = cut(upscale(nets[name], region))
    psnrs = {"HR": float("inf")}
    panels = [("HR (ground truth)", hr_crop)]
    for name in PANELS[1:]:
        psnrs[name] = psnr_y(outs[name], hr_crop, 0)
        panels.append((f"{name}\nPSNR-Y {psnrs[name]:.2f} dB", outs[name]))
    for label, sr, (sy, sx, sh, sw) in extra or ():
        if sy < y or sx < x or sy + sh > y + h or sx + sw > x + w or sr.shape[:2] != (sh * scale, sw * scale):
            raise UserError(f"panel {label!r}: its crop {(sy, sx, sh, sw)} is not an SR sub-crop of {crop}")
        sub = hr[sy * scale:(sy + sh) * scale, sx * scale:(sx + sw) * scale]
        psnrs[label] = psnr_y(sr, sub, 0)
        panels.append((f"{label}\nPSNR-Y {psnrs[label]:.2f} dB", sr))
    img = compose(panels, zoom)
    with atomic_output(path, ".png") as tmp:
        img.save(tmp, format="PNG")
    return psnrs
