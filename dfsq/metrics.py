"""PSNR and SSIM on the Y channel (BT.601), with a border shave of ``scale`` pixels, as EDSR-PyTorch and the
usual MATLAB evaluation script compute them. Images are uint8 (or float in [0, 255]) RGB, shape (H, W, 3)."""
from __future__ import annotations

import numpy as np
from scipy.ndimage import correlate1d


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """BT.601 luma, in [16, 235] for RGB in [0, 255]; float64."""
    img = img.astype(np.float64)
    return 16.0 + (65.481 * img[..., 0] + 128.553 * img[..., 1] + 24.966 * img[..., 2]) / 255.0


def _shave(y: np.ndarray, border: int) -> np.ndarray:
    return y[border:-border, border:-border] if border > 0 else y


def psnr_y(sr: np.ndarray, hr: np.ndarray, shave: int) -> float:
    """PSNR of the Y channel, peak 255, after removing ``shave`` pixels on each border."""
    if sr.shape != hr.shape:
        raise ValueError(f"shape mismatch: {sr.shape} vs {hr.shape}")
    d = _shave(rgb_to_y(sr) - rgb_to_y(hr), shave)
    mse = float(np.mean(d * d))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0 ** 2 / mse)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x * x) / (2 * sigma * sigma))
    return g / g.sum()


def _filter_valid(img: np.ndarray, g: np.ndarray) -> np.ndarray:
    r = len(g) // 2
    out = correlate1d(correlate1d(img, g, axis=0, mode="constant"), g, axis=1, mode="constant")
    return out[r:-r, r:-r]


def ssim_y(sr: np.ndarray, hr: np.ndarray, shave: int) -> float:
    """SSIM (Wang et al. 2004: 11x11 Gaussian, sigma 1.5, K1 0.01, K2 0.03, L 255) of the Y channel."""
    if sr.shape != hr.shape:
        raise ValueError(f"shape mismatch: {sr.shape} vs {hr.shape}")
    a, b = _shave(rgb_to_y(sr), shave), _shave(rgb_to_y(hr), shave)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    g = _gaussian_window()
    mu_a, mu_b = _filter_valid(a, g), _filter_valid(b, g)
    saa = _filter_valid(a * a, g) - mu_a ** 2
    sbb = _filter_valid(b * b, g) - mu_b ** 2
    sab = _filter_valid(a * b, g) - mu_a * mu_b
    m = ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (saa + sbb + c2))
    return float(m.mean())
