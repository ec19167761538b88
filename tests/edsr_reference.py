"""The EDSR reference of ``tests/test_adapters.py::test_edsr_*``: what the code before the model adapters produced
for a small, fully determined EDSR x2 run, so the adapter refactor is proven to change nothing for EDSR on any CPU.

``tests/data/edsr_reference.json`` (digests and the manifest) and ``tests/data/edsr_reference.npz`` (compressed
arrays) were written by :func:`generate` running on the pre-adapter code, commit 7c12f02 (where calibrate, quantize
and export chose EDSR's layers by name), checked out in a temporary ``git worktree``, on an AMD EPYC (AVX512):

    git worktree add --detach /tmp/old 7c12f02 && cp tests/edsr_reference.py /tmp/old/tests/
    (cd /tmp/old && python -m tests.edsr_reference --out $PWD/tests/data)     # only to re-baseline, deliberately

The file holds, for the seeded network of :func:`seeded_edsr` (weights from NumPy integers, so identical on every
CPU: ``torch.manual_seed`` + PyTorch's init is not, its DEFAULT and AVX2 kernels give other weights):

* digests of the exact stages: the weights, their quantization, the layer list, the manifest, every export field
  that does not depend on an activation, the point selection (computed from the histograms stored here), and, per
  layer and with that layer's stored input and normalization, the DFSQ codes, the Min-Max activations and the
  golden integer (hardware-mode) output;
* the inputs of those stages that come out of float32 convolutions (calibration histograms, the per-layer inputs
  ``x`` and statistics ``mean``/``maxabs``/``scale``, the DFSQ, Min-Max and hardware-mode codes of the whole-network runs), so the
  test can fix them and recompute only exact stages;
* the float32 results themselves (``act_min``, ``act_max``, ``static_scale``, per-layer outputs ``y``, the
  whole-network outputs), which the test compares with tolerances derived from float32 error (see its docstring).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

EXPORT_CROP = (200, 220, 8, 8)   # LR crop of the sample image for the export and the whole-network outputs
CALIB_CROP = 48                  # two centre crops of scikit-image pictures calibrate
CALIB = {"act_bits": 4, "weight_bits": 4, "words": 4, "seed": 0, "bins": 256}
FEATS = 16                       # EDSR-baseline's 16 blocks (32 quantized convs), 16 features to keep the file small
MANIFEST_KEYS = ("index", "name", "file", "input_shape", "output_shape", "relu_input")
#: export fields that do not depend on the activations: exact on any CPU, compared by digest
STATIC_FIELDS = ("bias", "index", "name", "point_codes", "point_ints", "points", "relu_input", "weight_q",
                 "weight_scale", "zero_point")
#: export fields of one layer that come out of float32 convs: stored, fixed or compared with a tolerance
LAYER_FIELDS = ("x", "mean", "maxabs", "scale", "codes", "y")
DATA = Path(__file__).parent / "data"


def digest(a) -> str:
    a = np.ascontiguousarray(np.asarray(a))
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()[:24]


def seeded_edsr():
    """EDSR x2 (16 blocks, :data:`FEATS` features) with weights from NumPy's PCG64: every value is an integer in
    [-2^12, 2^12] times a power of two (2^-12 times about 1/sqrt(fan-in), as PyTorch's default init bound), so
    the float32 weights are exact and the same on every CPU."""
    from dfsq.model import EDSR

    model = EDSR(2, n_feats=FEATS).eval()
    rng = np.random.default_rng(20240531)
    with torch.no_grad():
        for name, p in model.named_parameters():
            fan_in = int(np.prod(p.shape[1:])) if p.ndim > 1 else FEATS * 9
            step = 2.0 ** (-12 - round(np.log2(np.sqrt(fan_in))))
            ints = rng.integers(-(1 << 12), (1 << 12) + 1, size=tuple(p.shape))
            p.copy_(torch.from_numpy((ints * step).astype(np.float32)))
    return model


def calibration_crops() -> list[tuple[str, np.ndarray]]:
    from dfsq.data import sample_images

    out = []
    for name, img in sample_images(2):
        h, w = img.shape[:2]
        y, x = (h - CALIB_CROP) // 2, (w - CALIB_CROP) // 2
        out.append((name, np.ascontiguousarray(img[y:y + CALIB_CROP, x:x + CALIB_CROP])))
    return out


def export_image() -> np.ndarray:
    from dfsq.data import sample_image
    from dfsq.export import apply_crop

    return apply_crop(sample_image(), EXPORT_CROP)


def weights_digest(model) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().contiguous().numpy().tobytes())
    return h.hexdigest()[:24]


def minmax_codes(qc, xq: torch.Tensor) -> np.ndarray:
    """The integer levels q of Min-Max activations ``xq = (q - zero) * step`` (exact: |q - zero| < 2^8)."""
    q = torch.round(xq / qc.act_step) + qc.act_zero
    return q.numpy().astype(np.uint8)


@torch.no_grad()
def generate() -> tuple[dict, dict]:
    """(JSON-able digests, arrays) of the reference run; see the module docstring. Runs on the pre-adapter code
    (7c12f02) as on today's: only interfaces both have."""
    from dfsq.calibrate import ARRAY_KEYS, calibrate, collect_histograms
    from dfsq.export import export
    from dfsq.hw_mode import apply_hw_mode
    from dfsq.quantize import quant_convs, quantize_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = seeded_edsr()
        crops = calibration_crops()
        params = calibrate(model, crops, **CALIB)
        hist = np.asarray(collect_histograms(model, crops, bins=CALIB["bins"]))
        ref = {"weights": weights_digest(model), "layers": params.layers,
               "params": {k: digest(params.arrays[k]) for k in ARRAY_KEYS}}
        arrays = {"hist": hist.astype(np.uint16), **{k: params.arrays[k] for k in ("act_min", "act_max",
                                                                                    "static_scale")}}
        assert np.array_equal(arrays["hist"], hist)
        img = export_image()
        with tempfile.TemporaryDirectory() as tmp:
            man = export(model, params, img, Path(tmp) / "exp", crop=EXPORT_CROP)
            files, layer = {}, {k: [] for k in LAYER_FIELDS}
            for e in man["layers"]:
                with np.load(Path(tmp) / "exp" / e["file"], allow_pickle=False) as z:
                    files[e["file"]] = {k: digest(z[k]) for k in STATIC_FIELDS}
                    for k in LAYER_FIELDS:
                        layer[k].append(z[k])
        ref["export"] = files
        ref["manifest_layers"] = [{k: e[k] for k in MANIFEST_KEYS} for e in man["layers"]]
        ref["manifest_spec"] = man["spec"]
        arrays.update({k: np.stack(v) for k, v in layer.items()})

        # whole-network outputs; the Min-Max codes of that run; per layer, exact stages on the stored inputs
        x = torch.from_numpy(np.array(img, order="C")).permute(2, 0, 1)[None].float()
        q = quantize_model(model, params, "dfsq")
        mm = quantize_model(model, params, "minmax")
        seen = {}
        hooks = [m.register_forward_hook(lambda m, i, o: seen.__setitem__(m.index, i[0].clone()))
                 for m in quant_convs(mm)]
        arrays["out_fake_quant"] = q(x).numpy()
        arrays["out_minmax"] = mm(x).numpy()
        for h in hooks:
            h.remove()
        arrays["minmax_codes"] = np.stack([minmax_codes(m, m.quantize_act(seen[m.index])) for m in quant_convs(mm)])
        ref["minmax_act"] = [digest(m.quantize_act(torch.from_numpy(xi)).numpy())
                             for m, xi in zip(quant_convs(mm), arrays["x"])]
        import dfsq.hw_mode as hwm

        derive, hw_codes = hwm.derive_codes, []
        hwm.derive_codes = lambda *a: hw_codes.append(derive(*a)) or hw_codes[-1]
        try:
            apply_hw_mode(q)
            arrays["out_hw"] = q(x).numpy()
        finally:
            hwm.derive_codes = derive
        arrays["hw_codes"] = np.stack(hw_codes)
        ref["hw_layer"] = [digest(m(torch.from_numpy(xi)).numpy()) for m, xi in zip(quant_convs(q), arrays["x"])]
    finally:
        torch.set_num_threads(threads)
    return ref, arrays


def main(argv=None):
    ap = argparse.ArgumentParser(description="write tests/data/edsr_reference.{json,npz} (deliberate re-baseline)")
    ap.add_argument("--out", type=Path, default=DATA)
    args = ap.parse_args(argv)
    import subprocess

    ref, arrays = generate()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    ref["written_by"] = {"commit": commit, "torch": torch.__version__, "numpy": np.__version__,
                         "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "edsr_reference.json").write_text(json.dumps(ref, indent=1, sort_keys=True) + "\n")
    with open(args.out / "edsr_reference.npz", "wb") as f:
        np.savez_compressed(f, **arrays)


if __name__ == "__main__":
    main()
