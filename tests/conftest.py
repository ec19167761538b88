"""Shared fixtures: small DFSQ exports of the x2 model, and the shared-data guard.

Weights: ``default`` (weights/edsr_baseline_x2.pt) when it exists. The environment variable DFSQ_TEST_WEIGHTS
overrides it: a state_dict / checkpoint path, or ``random`` for a seeded randomly initialised EDSR (format tests
only). With neither, the fixtures skip with the reason.

``default_export``: act 4 / weight 4 / words 4; ``alt_export``: act 5 / weight 4 / words 3. Both are calibrated on
two 48x48 crops of scikit-image pictures (seed 0) and export a 16x16 crop of ``dfsq.data.sample_image()``, next to
their params file (``<dir>/../params.npz``).

Expensive session fixtures (the exports, the simulator work folder with its generated RTL and builds) are made
once per run, not once per pytest-xdist worker: :func:`build_once` makes them in :func:`shared_tmp`, a folder the
workers of one run share, under a file lock (pytest-xdist's recipe for session fixtures).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from filelock import FileLock

from dfsq.data import SHARED_DATA, sample_image
from dfsq.weights import default_weights

EXPORT_CROP = (200, 220, 16, 16)
#: Test files whose tests generate and simulate RTL, the longest ones: they run first, so that the workers of
#: ``make test`` (pytest-xdist, ``--maxschedchunk 1``: one shared queue) finish together instead of one of them
#: starting a minute-long simulation when the rest of the queue is empty.
LONG_FIRST = ("test_sim_verify.py", "test_throughput.py", "test_sim_rdn.py", "test_sim_uniform.py",
              "test_hw_generate.py", "test_sim_int_units.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONG_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))   # stable: file order kept otherwise


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
    """Two small deterministic calibration inputs (network inputs, uint8 HWC): 48x48 centre crops of scikit-image
    pictures (tests.edsr_reference.calibration_crops)."""
    from tests.edsr_reference import calibration_crops

    return calibration_crops()


@pytest.fixture(scope="session")
def shared_tmp(tmp_path_factory) -> Path:
    """A folder that every pytest-xdist worker of this run sees (the parent of the workers' base temp folders);
    without xdist, this session's base temp folder."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def build_once(shared: Path, name: str, build) -> Path:
    """``shared/name``: a folder made by ``build(folder)`` by the first worker that asks, while the others wait on
    its lock and then reuse it. The folder counts as made only once ``build`` returns (a marker file written last),
    so a failed or interrupted build is redone by the next worker, which then reports its own error."""
    target = shared / name
    done = shared / f"{name}.done"
    with FileLock(str(shared / f"{name}.lock")):
        if not done.exists():
            if target.exists():
                shutil.rmtree(target)
            target.mkdir(parents=True)
            build(target)
            done.touch()
    return target


def make_export(root: Path, model, weights, images, *, act_bits, weight_bits, words) -> Path:
    """Calibrate ``model`` on ``images`` and export all its layers into ``root`` (``params.npz``, ``export/``)."""
    from dfsq.calibrate import calibrate, save_params
    from dfsq.export import apply_crop, export

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
def default_export(shared_tmp, x2_model, test_weights, calib_crops) -> Path:
    """Export dir of all 32 layers: x2, act 4 / weight 4 / words 4, 16x16 crop of the sample image."""
    return build_once(shared_tmp, "default_export", lambda root: make_export(
        root, x2_model, test_weights, calib_crops, act_bits=4, weight_bits=4, words=4)) / "export"


@pytest.fixture(scope="session")
def alt_export(shared_tmp, x2_model, test_weights, calib_crops) -> Path:
    """Export dir of all 32 layers: x2, act 5 / weight 4 / words 3 (the 107-value set)."""
    return build_once(shared_tmp, "alt_export", lambda root: make_export(
        root, x2_model, test_weights, calib_crops, act_bits=5, weight_bits=4, words=3)) / "export"


@pytest.fixture(scope="session")
def sim_work(shared_tmp) -> Path:
    """Simulator work folder (generated RTL and builds, each reused and built under its own lock by sim.verify):
    ``$DFSQ_SIM_WORK`` to keep them across runs, else one folder shared by this run's workers."""
    env = os.environ.get("DFSQ_SIM_WORK")
    if env:
        return Path(env)
    path = shared_tmp / "sim_work"
    path.mkdir(exist_ok=True)
    return path


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
