"""MATLAB-compatible imresize: pixel-exact against the official Set5 LR files; bicubic baselines."""
import numpy as np
import pytest

from dfsq.data import BENCHMARK_ROOT, benchmark_pairs, load_rgb
from dfsq.imresize import imresize
from dfsq.metrics import psnr_y, ssim_y

SET5_LR = BENCHMARK_ROOT / "Set5" / "LR_bicubic"
needs_set5 = pytest.mark.skipif(not SET5_LR.is_dir(), reason=f"official Set5 LR files not found at {SET5_LR}")


@needs_set5
@pytest.mark.parametrize("scale", [2, 4])
def test_matches_official_set5_lr_pixel_for_pixel(scale):
    for stem, _hr, lr in benchmark_pairs("Set5", scale):
        official = load_rgb(SET5_LR / f"X{scale}" / f"{stem}x{scale}.png")
        assert np.array_equal(lr, official), stem


@needs_set5
@pytest.mark.parametrize("scale,published", [(2, 33.66), (4, 28.42)])
def test_bicubic_baseline_reproduced(scale, published):
    ps = [psnr_y(imresize(lr, scale), hr, scale) for _, hr, lr in benchmark_pairs("Set5", scale)]
    assert abs(np.mean(ps) - published) <= 0.02


def test_known_values_and_shapes():
    # a constant image stays constant; shapes follow MATLAB's ceil rule
    img = np.full((7, 9, 3), 77, np.uint8)
    small = imresize(img, 0.5)
    assert small.shape == (4, 5, 3) and np.all(small == 77)
    # a linear ramp is reproduced in the interior by bicubic upscaling (cubic kernels reproduce lines)
    ramp = np.tile(np.arange(16, dtype=np.float64), (16, 1))
    up = imresize(ramp, 2.0)
    centre = up[8:24, 8:24]
    expected = (np.arange(32) + 0.5) / 2 - 0.5
    assert np.allclose(centre, np.tile(expected[8:24], (16, 1)))
    with pytest.raises(ValueError):
        imresize(img)


def test_metrics_sanity():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    assert psnr_y(a, a, 2) == float("inf")
    assert ssim_y(a, a, 2) == pytest.approx(1.0)
    b = np.clip(a.astype(int) + 4, 0, 255).astype(np.uint8)
    assert 30 < psnr_y(b, a, 2) < 50
    assert ssim_y(b, a, 2) < 1.0
