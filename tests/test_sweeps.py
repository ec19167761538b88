"""The sweeps on Dask (bench.cluster): bench.psnr_table on a LocalCluster of 2 worker processes on loopback, a worker
killed mid-task, bad --scheduler values and caches; the results equal a single-process run's, bit for bit."""
from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time

import numpy as np
import pytest
import torch

from golden.errors import UserError

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::ResourceWarning")


@pytest.fixture(scope="module")
def local_cluster():
    """A LocalCluster of 2 worker processes (one thread each) on loopback, shared by this module's tests."""
    import logging

    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        yield cluster, client


def _tiny_set(root, n: int, size: int):
    from dfsq.data import sample_images, save_rgb

    (root / "Set5" / "HR").mkdir(parents=True)
    imgs = [img for _, img in sample_images(2)]
    for i in range(n):
        img = imgs[i % 2]
        save_rgb(img[3 * i:3 * i + size, 5 * i:5 * i + size + 4], root / "Set5" / "HR" / f"{i}.png")


def _single_process(model, name, root, threads=1) -> dict:
    """What one process measures: dfsq.evaluate.evaluate_dataset with the workers' thread count."""
    from dfsq.evaluate import evaluate_dataset

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return evaluate_dataset(model, name, 2, root, progress=False)
    finally:
        torch.set_num_threads(before)


def test_table_on_a_local_cluster(local_cluster, default_export, test_weights, tmp_path, monkeypatch):
    """FP, Min-Max and DFSQ cells of a 4-image set, each set split into 3 tasks; Min-Max and DFSQ wait for one
    shared calibration task; every cell equals a single-process evaluation exactly."""
    import bench.psnr_table as pt
    from dfsq.calibrate import load_params
    from dfsq.model import load_model
    from dfsq.quantize import quantize_model

    cluster, _ = local_cluster
    root = tmp_path / "bench"
    _tiny_set(root, 4, 40)
    params_dir = tmp_path / "p"
    params_dir.mkdir()
    ppath = pt.params_path(params_dir, "edsr", 2, 4, 4, 2, 0)
    shutil.copy(default_export.parent / "params.npz", ppath)   # a calibration made for these weights (conftest)
    monkeypatch.setattr(pt.cluster, "TASK_PIXELS", 2 * 40 * 44)   # 2 images a task: 2 tasks a cell
    cache = tmp_path / "cache.json"
    pt.main(["--data-root", str(root), "--weights", test_weights, "--scales", "2", "--methods", "fp,minmax,dfsq",
             "--bits", "4", "--datasets", "Set5", "--images", "2", "--params-dir", str(params_dir), "--cache",
             str(cache), "--no-render", "--scheduler", cluster.scheduler_address])
    got = json.loads(cache.read_text())
    assert got["version"] == pt.CACHE_VERSION and sorted(got["results"]) == [
        "x2/dfsq/W4A4/words4/Set5", "x2/fp/-/Set5", "x2/minmax/W4A4/words4/Set5"]
    model = load_model("edsr", test_weights, 2)
    params = load_params(ppath)
    nets = {"fp": model, "minmax": quantize_model(model, params, "minmax"), "dfsq": quantize_model(model, params, "dfsq")}
    for m, net in nets.items():
        r = got["results"][pt.key(2, m, None if m == "fp" else 4, 4, "Set5")]
        ref = _single_process(net, "Set5", root)
        assert (r["psnr"], r["ssim"], r["images"]) == (ref["psnr"], ref["ssim"], 4), m
        assert r["tasks"] == 2 and r["threads"] == 1
        assert m == "fp" or (r["params"] == str(ppath) and r["calib"] == 2 and len(r["params_sha256"]) == 16)
    again = pt.main  # a rerun finds every cell cached and starts no cluster
    monkeypatch.setattr(pt.cluster, "connect", lambda *a, **k: pytest.fail("a cached table started a cluster"))
    again(["--data-root", str(root), "--weights", test_weights, "--scales", "2", "--methods", "fp,minmax,dfsq",
           "--bits", "4", "--datasets", "Set5", "--images", "2", "--params-dir", str(params_dir), "--cache",
           str(cache), "--no-render"])


def test_a_worker_killed_mid_task_is_replaced(local_cluster, test_weights, tmp_path, monkeypatch):
    """SIGKILL the worker process running a cell's task: Dask reruns the task on a new worker and the table ends
    with the numbers of a single-process run."""
    import bench.psnr_table as pt
    from dfsq.model import load_model

    cluster, client = local_cluster
    root = tmp_path / "bench"
    _tiny_set(root, 6, 96)
    monkeypatch.setattr(pt.cluster, "TASK_PIXELS", 2 * 96 * 100)
    killed = {}

    def killer():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed.get("suspicious"):
            busy = [(w, k) for w, keys in client.processing().items() for k in keys if "Set5-" in str(k)]
            if not busy:
                time.sleep(0.02)
                continue
            worker, task = busy[0]
            pid = client.run(os.getpid, workers=[worker])[worker]
            os.kill(pid, signal.SIGKILL)
            # the scheduler counts the task 'suspicious' when it learns that its worker died while running it
            for _ in range(250):
                n = client.run_on_scheduler(lambda dask_scheduler, k=task: getattr(dask_scheduler.tasks.get(k),
                                                                                   "suspicious", 0))
                if n:
                    break
                time.sleep(0.02)
            killed.update(task=task, pid=pid, suspicious=n)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    cache = tmp_path / "cache.json"
    pt.main(["--data-root", str(root), "--weights", test_weights, "--scales", "2", "--methods", "fp",
             "--datasets", "Set5", "--cache", str(cache), "--no-render",
             "--params-dir", str(tmp_path / "p"), "--scheduler", cluster.scheduler_address])
    thread.join(5)
    assert killed.get("suspicious", 0) >= 1, f"no task was killed mid-run: {killed}"
    r = json.loads(cache.read_text())["results"]["x2/fp/-/Set5"]
    ref = _single_process(load_model("edsr", test_weights, 2), "Set5", root)
    assert (r["psnr"], r["ssim"], r["images"], r["tasks"]) == (ref["psnr"], ref["ssim"], 6, 3)


@pytest.mark.parametrize("value", ["tcp://127.0.0.1", "http://127.0.0.1:8786", "tcp://:8786", "local2",
                                   "tcp://127.0.0.1:99999", ""])
def test_malformed_scheduler_is_one_line(value, capsys, tmp_path):
    from bench.psnr_table import main

    with pytest.raises(SystemExit) as exc:
        main(["--scheduler", value, "--cache", str(tmp_path / "c.json"), "--out", str(tmp_path / "r.md")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and "--scheduler" in err, err
    assert not list(tmp_path.iterdir())


def test_unreachable_scheduler_is_one_line_within_seconds(test_weights, tmp_path, capsys):
    from bench.psnr_table import main

    root = tmp_path / "bench"
    _tiny_set(root, 1, 24)
    t0 = time.monotonic()
    with pytest.raises(SystemExit) as exc:
        main(["--scheduler", "tcp://127.0.0.1:9", "--data-root", str(root), "--weights", test_weights, "--scales",
              "2", "--methods", "fp", "--datasets", "Set5", "--cache", str(tmp_path / "c.json"), "--no-render",
              "--params-dir", str(tmp_path / "p")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and "no Dask scheduler answers at tcp://127.0.0.1:9" in err
    assert time.monotonic() - t0 < 30 and not (tmp_path / "c.json").exists()


def test_old_and_garbled_caches(tmp_path, capsys):
    """A version-1 cache is upgraded with a message (its --part entries dropped, the cells kept); garbled ones and
    unknown versions are refused in one line; nothing is merged into them."""
    from bench.psnr_table import CACHE_VERSION, load_cache

    cell = {"psnr": 30.0, "ssim": 0.9, "images": 5}
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"format": "dfsq-psnr-cache", "version": 1,
                               "results": {"x2/fp/-/Set5": cell, "x2/fp/-/Set5#part0of2": {**cell, "images": 3}}}))
    data = load_cache(old)
    assert data["version"] == CACHE_VERSION and list(data["results"]) == ["x2/fp/-/Set5"]
    assert "upgraded from cache version 1" in capsys.readouterr().out
    for text, msg in [("{", "not valid JSON"), (json.dumps([1]), "not a psnr_table cache"),
                      (json.dumps({"format": "dfsq-psnr-cache", "version": 7, "results": {}}), "version 7"),
                      (json.dumps({"format": "dfsq-psnr-cache", "version": 2, "results": {"k": {"psnr": "x"}}}),
                       "garbled"),
                      (json.dumps({"format": "dfsq-psnr-cache", "version": 2, "results": []}), "garbled")]:
        bad = tmp_path / "bad.json"
        bad.write_text(text)
        with pytest.raises(UserError, match=msg):
            load_cache(bad)
    assert bad.read_text() == text


def test_chunks_by_pixels_cover_the_set_in_order(tmp_path):
    from bench.cluster import chunks_by_pixels
    from dfsq.data import benchmark_paths

    _tiny_set(tmp_path, 5, 30)
    paths = benchmark_paths("Set5", tmp_path)
    assert chunks_by_pixels(paths, 2 * 30 * 34) == [[0, 1], [2, 3], [4]]
    assert chunks_by_pixels(paths, 1) == [[0], [1], [2], [3], [4]]
    assert chunks_by_pixels(paths, 10 ** 9) == [[0, 1, 2, 3, 4]] and chunks_by_pixels([], 5) == []


def test_denorm_format_and_scale_bits_on_a_local_cluster(local_cluster, default_export, test_weights, tmp_path,
                                                          monkeypatch):
    """bench.denorm_format and bench.scale_bits run their images as tasks (one image each here): the fake-quant
    PSNR of every image is a single process's, and the fused 24-bit datapath gives the same numbers in both."""
    import bench.cluster
    from bench.denorm_format import main as denorm_main
    from bench.scale_bits import main as scale_bits_main
    from dfsq.calibrate import load_params
    from dfsq.evaluate import evaluate_images
    from dfsq.model import load_model
    from dfsq.quantize import quantize_model

    cluster, _ = local_cluster
    root = tmp_path / "bench"
    _tiny_set(root, 3, 24)
    monkeypatch.setattr(bench.cluster, "TASK_PIXELS", 1)
    params = str(default_export.parent / "params.npz")
    common = ["--weights", test_weights, "--params", params, "--datasets", "Set5", "--data-root", str(root),
              "--scheduler", cluster.scheduler_address, "--out", str(tmp_path)]
    denorm_main(common + ["--formats", "fused,4:3"])
    scale_bits_main(common + ["--scale-bits", "16,24", "--no-noise-floor"])
    den = json.loads((tmp_path / "denorm_format.json").read_text())
    sb = json.loads((tmp_path / "scale_bits.json").read_text())
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ps, _ = evaluate_images(quantize_model(load_model("edsr", test_weights, 2), load_params(params), "dfsq"),
                                "Set5", 2, root, progress=False)
    finally:
        torch.set_num_threads(before)
    for res in (den, sb):
        assert [r["image"] for r in res["images"]] == ["0", "1", "2"]
        assert [r["psnr_fq"] for r in res["images"]] == ps
    assert [r["hw"]["fused"] for r in den["images"]] == [r["hw"]["24"] for r in sb["images"]]
    assert all(abs(r["hw"]["4:3"]["psnr"] - r["psnr_fq"]) < 1 for r in den["images"])
    assert den["torch_threads"] == sb["torch_threads"] == 1
