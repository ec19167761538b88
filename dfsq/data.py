"""Image files: loading (greyscale made 3-channel), modcrop, LR generation, benchmark sets and shared data paths."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from golden.errors import UserError
from .imresize import imresize

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("DFSQ_SHARED_DATA", ROOT.parent / "shared" / "data"))
BENCHMARK_ROOT = SHARED_DATA / "benchmark"
TRAIN_ROOT = SHARED_DATA / "train"
DATASETS = ("Set5", "Set14", "B100", "Urban100")
IMAGE_EXTS = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff", ".webp")


def load_rgb(path: str | Path) -> np.ndarray:
    """An image file as uint8 (H, W, 3); greyscale is replicated to 3 channels, alpha is dropped.

    16-bit greyscale is scaled to 8 bits (v / 257, rounded); 32-bit integer and float images are refused."""
    try:
        with Image.open(path) as im:
            if im.mode.startswith("I;16"):
                a = np.asarray(im).astype(np.uint32)
                grey = ((a * 255 + 32767) // 65535).astype(np.uint8)
                return np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=2))
            if im.mode in ("I", "F"):
                raise UserError(f"cannot read image {path}: {'32-bit integer' if im.mode == 'I' else 'float'} "
                                f"pixels (mode {im.mode}); convert it to 8 or 16 bits per channel")
            im = im.convert("RGB") if im.mode != "RGB" else im.copy()
    except UserError:
        raise
    except FileNotFoundError:
        raise UserError(f"image not found: {path}") from None
    except Exception as exc:  # noqa: BLE001
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"cannot read image {path}: {first[:160]}") from None
    return np.asarray(im, dtype=np.uint8)


def save_rgb(img: np.ndarray, path: str | Path) -> None:
    Image.fromarray(img).save(path)


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


def make_lr(hr: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB-bicubic LR of an already modcropped uint8 HR image."""
    return imresize(hr, 1.0 / scale)


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"not a folder: {folder}")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS)


def validate_image_folder(folder) -> list[Path]:
    """The format validator of an image folder (:mod:`golden.formats` ``images``): its image files, at least one
    (each image is checked by :func:`load_rgb` when it is read)."""
    paths = list_images(folder)
    if not paths:
        raise UserError(f"no images in {folder} (looked for {', '.join(IMAGE_EXTS)})")
    return paths


def validate_benchmark_root(root) -> list[str]:
    """The format validator of a benchmark root (``benchmarks``): the sets under it, each ``SET/HR/`` with images."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"not a folder: {root}")
    sets = sorted(p.parent.name for p in root.glob("*/HR") if p.is_dir() and list_images(p))
    if not sets:
        raise UserError(f"{root} holds no benchmark set (expected SET/HR/ with images, e.g. Set5/HR/)")
    return sets


def benchmark_paths(name: str, root: str | Path = BENCHMARK_ROOT) -> list[Path]:
    """The HR images of a benchmark set, in sorted order (an image's index in a set is its place here)."""
    folder = Path(root) / name / "HR"
    if not folder.is_dir():
        raise UserError(f"benchmark set {name} not found under {root} (expected {folder})")
    return list_images(folder)


def benchmark_pairs(name: str, scale: int, root: str | Path = BENCHMARK_ROOT, indices=None):
    """Yield (stem, hr, lr) for a benchmark set: HR modcropped to ``scale``; LR by MATLAB-bicubic imresize.
    ``indices``: only the images at these places of :func:`benchmark_paths` (a sweep's task)."""
    paths = benchmark_paths(name, root)
    if indices is not None:
        paths = [paths[i] for i in indices]
    if not paths:
        raise UserError(f"benchmark set {name} has no images in {Path(root) / name / 'HR'}")
    for path in paths:
        hr = modcrop(load_rgb(path), scale)
        yield path.stem, hr, make_lr(hr, scale)


def sample_image() -> np.ndarray:
    """An image that ships with a dependency (scikit-image's 'astronaut', 512x512 RGB): the demo's default."""
    from skimage import data as skdata

    return np.ascontiguousarray(skdata.astronaut()[:, :, :3])


def sample_images(n: int) -> list[tuple[str, np.ndarray]]:
    """Up to ``n`` colour images that ship with scikit-image (the calibration fallback when no data is at hand)."""
    from skimage import data as skdata

    names = ["astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field",
             "retina", "colorwheel", "cat", "motorcycle_left"]
    out = []
    for name in names:
        if len(out) >= n:
            break
        try:
            img = getattr(skdata, name)()
        except Exception:  # noqa: BLE001 - some need pooch downloads; skip those
            continue
        img = np.asarray(img)
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        out.append((name, np.ascontiguousarray(img[..., :3]).astype(np.uint8)))
    return out
