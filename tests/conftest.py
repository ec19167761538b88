"""Shared fixtures: small DFSQ exports of the x2 model, and the shared-data guard.

Weights: ``default`` (weights/edsr_baseline_x2.pt) when it exists. The environment variable DFSQ_TEST_WEIGHTS
overrides it: a state_dict / checkpoint path, or ``random`` for a seeded randomly initialised EDSR (format tests
only). With neither, the fixtures skip with the reason.

``default_export``: act 4 / weight 4 / words 4; ``alt_export``: act 5 / weight 4 / words 3. Both are calibrated on
two 48x48 crops of scikit-image pictures (seed 0) and export a 16x16 crop of ``dfsq.data.sample_image()``; built
once per session in a tmp_path_factory folder, next to their params file (``<dir>/../params.npz``).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from dfsq.data import SHARED_DATA, sample_image, sample_images
from dfsq.weights import default_weights

EXPORT_CROP = (200, 220, 16, 16)
CALIB_CROP = 48


def _resolve_weights(tmp_path_factory) -> str:
    env = os.environ.get("DFSQ_TEST_WEIGHTS")
    if env == "random":
        from dfsq.model import EDSR

        torch.manual_seed(0)
        path = tmp_path_factory.mktemp("weights") / "edsr_random_x2.pt"
        torch.save(EDSR(2).state_dict(), path)
        return str(path)
    if env:
        if not Path(env).is_file():
            pytest.skip(f"DFSQ_TEST_WEIGHTS={env} is not a file")
        return env
    if default_weights(2).is_file():
        return "default"
    pytest.skip(f"no x2 weights: {default_weights(2)} is missing (set DFSQ_TEST_WEIGHTS=PATH or 'random')")


@pytest.fixture(scope="session")
def test_weights(tmp_path_factory) -> str:
    """``--weights`` value for the x2 model used by the fixtures."""
    return _resolve_weights(tmp_path_factory)


@pytest.fixture(scope="session")
def x2_model(test_weights):
    from dfsq.model import load_edsr

    return load_edsr(test_weights, 2)


@pytest.fixture(scope="session")
def calib_crops():
    """Two small deterministic calibration inputs (network inputs, uint8 HWC)."""
    out = []
    for name, img in sample_images(2):
        h, w = img.shape[:2]
        y, x = (h - CALIB_CROP) // 2, (w - CALIB_CROP) // 2
        out.append((name, np.ascontiguousarray(img[y:y + CALIB_CROP, x:x + CALIB_CROP])))
    return out


def make_export(tmp_path_factory, model, weights, images, *, act_bits, weight_bits, words, tag) -> Path:
    from dfsq.calibrate import calibrate, save_params
    from dfsq.export import apply_crop, export

    root = tmp_path_factory.mktemp(tag)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is much faster on a busy 2-core machine
    try:
        params = calibrate(model, images, act_bits=act_bits, weight_bits=weight_bits, words=words, seed=0,
                           weights=weights)
        ppath = save_params(params, root / "params.npz")
        out = root / "export"
        img = apply_crop(sample_image(), EXPORT_CROP)
        export(model, params, img, out, weights=weights, params_path=str(ppath), image="sample",
               crop=EXPORT_CROP)
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="session")
def default_export(tmp_path_factory, x2_model, test_weights, calib_crops) -> Path:
    """Export dir of all 32 layers: x2, act 4 / weight 4 / words 4, 16x16 crop of the sample image."""
    return make_export(tmp_path_factory, x2_model, test_weights, calib_crops, act_bits=4, weight_bits=4, words=4,
                       tag="default_export")


@pytest.fixture(scope="session")
def alt_export(tmp_path_factory, x2_model, test_weights, calib_crops) -> Path:
    """Export dir of all 32 layers: x2, act 5 / weight 4 / words 3 (the 107-value set)."""
    return make_export(tmp_path_factory, x2_model, test_weights, calib_crops, act_bits=5, weight_bits=4, words=3,
                       tag="alt_export")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (or $DFSQ_SHARED_DATA); skips when it is absent."""
    if not (SHARED_DATA / "benchmark").is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (benchmark/ missing); set DFSQ_SHARED_DATA")
    return SHARED_DATA


@pytest.fixture
def one_thread():
    """Run the test with one torch thread (small tensors on a busy 2-core machine), restoring the count after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
