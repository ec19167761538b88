"""Digests of what the EDSR flow produces on a fixed small input: calibration arrays, fake-quant output,
hardware-mode output and export arrays of a seeded random EDSR x2. ``tests/data/edsr_reference.json`` holds the
digests computed by the code before the model adapters existed (commit 7c12f02, where calibrate/quantize/export
chose EDSR's layers by name); ``tests/test_adapters.py`` recomputes them and compares, so the adapter refactor is
proven not to change a single bit for EDSR.

    python -m tests.edsr_reference > tests/data/edsr_reference.json    # only to re-baseline, deliberately
"""
from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

EXPORT_CROP = (200, 220, 16, 16)
MANIFEST_KEYS = ("index", "name", "file", "input_shape", "output_shape", "relu_input")


def digest(a) -> str:
    a = np.ascontiguousarray(np.asarray(a))
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()[:24]


def compute() -> dict:
    from dfsq.calibrate import ARRAY_KEYS, calibrate
    from dfsq.data import sample_image, sample_images
    from dfsq.evaluate import upscale
    from dfsq.export import apply_crop, export
    from dfsq.hw_mode import apply_hw_mode
    from dfsq.model import EDSR
    from dfsq.quantize import quantize_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = EDSR(2).eval()
        crops = []
        for name, img in sample_images(2):
            h, w = img.shape[:2]
            y, x = (h - 48) // 2, (w - 48) // 2
            crops.append((name, np.ascontiguousarray(img[y:y + 48, x:x + 48])))
        params = calibrate(model, crops, act_bits=4, weight_bits=4, words=4, seed=0, bins=512)
        out = {"params": {k: digest(params.arrays[k]) for k in ARRAY_KEYS}, "layers": params.layers}
        img = apply_crop(sample_image(), EXPORT_CROP)
        q = quantize_model(model, params, "dfsq")
        out["fake_quant"] = digest(upscale(q, img))
        out["minmax"] = digest(upscale(quantize_model(model, params, "minmax"), img))
        out["hw"] = digest(upscale(apply_hw_mode(q), img))
        with tempfile.TemporaryDirectory() as tmp:
            man = export(model, params, img, Path(tmp) / "exp", crop=EXPORT_CROP)
            files = {}
            for e in man["layers"]:
                with np.load(Path(tmp) / "exp" / e["file"], allow_pickle=False) as z:
                    files[e["file"]] = {k: digest(z[k]) for k in sorted(z.files)}
        out["export"] = files
        out["manifest_layers"] = [{k: e[k] for k in MANIFEST_KEYS} for e in man["layers"]]
        out["manifest_spec"] = man["spec"]
    finally:
        torch.set_num_threads(threads)
    return out


if __name__ == "__main__":
    print(json.dumps(compute(), indent=1, sort_keys=True))
