"""Trainer smoke test: runs, skips small images, writes weights that load, and resumes from its snapshot."""
import numpy as np
import torch

from dfsq.data import sample_images, save_rgb
from dfsq.model import EDSR, check_state_dict
from dfsq.train import main


def test_train_runs_resumes_and_skips_small(tmp_path, capsys):
    data = tmp_path / "imgs"
    data.mkdir()
    for name, img in sample_images(2):
        save_rgb(img[:120, :120], data / f"{name}.png")
    save_rgb(np.zeros((20, 20, 3), np.uint8), data / "tiny.png")
    out = tmp_path / "x2.pt"
    args = ["--scale", "2", "--data", str(data), "--minutes", "0.03", "--out", str(out), "--patch", "16",
            "--batch", "2", "--save-every", "0.001", "--val-every", "0", "--fp16"]
    main(args)
    log = capsys.readouterr().out
    assert "1 skipped" in log
    sd = torch.load(out, weights_only=True)
    assert all(v.dtype == torch.float16 for v in sd.values())
    check_state_dict(EDSR(2), sd)
    state = torch.load(str(out) + ".state", weights_only=True)
    steps = state["step"]
    assert steps > 0
    main(args[:5] + ["0.06"] + args[6:])
    assert "resumed from" in capsys.readouterr().out
    assert torch.load(str(out) + ".state", weights_only=True)["step"] > steps


# --- bad input: every case exits 2 with one line, runs no code from the resume file, and writes nothing ----------
import pickle  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


def _run(argv, capsys):
    try:
        rc = main(argv)
    except SystemExit as exc:
        rc = exc.code
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("error: "), err
    return rc, lines[0]


def _args(data, out, *extra):
    return ["--data", str(data), "--minutes", "0.01", "--out", str(out), "--patch", "8", "--batch", "1",
            "--val-every", "0", *extra]


class _Planted:
    """Unpickling this runs code: it creates the file named in ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path(self.marker).touch, ())


@pytest.fixture
def data(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    save_rgb(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8), d / "a.png")
    return d


def _snapshot(root):
    return sorted(str(p) for p in root.rglob("*"))


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_planted_pickle_in_the_resume_file_is_refused_without_running_it(tmp_path, data, capsys, writer):
    out = tmp_path / "m.pt"
    marker = tmp_path / "PWNED"
    planted = {"meta": _Planted(marker), "model": {}, "opt": {}, "rng": "", "torch_rng": "", "elapsed": 0.0,
               "step": 0, "history": "[]"}
    if writer == "pickle":
        with open(str(out) + ".state", "wb") as f:
            pickle.dump(planted, f)
    else:
        torch.save(planted, str(out) + ".state")
    before = _snapshot(tmp_path)
    rc, line = _run(_args(data, out), capsys)
    assert rc == 2 and "cannot read resume file" in line
    assert not marker.exists(), "the resume file ran code"
    assert _snapshot(tmp_path) == before


def test_stale_x2_state_is_refused_at_x4(tmp_path, data, capsys):
    from dfsq.train import _meta, save_state

    out = tmp_path / "m.pt"
    model = EDSR(2)
    opt = torch.optim.Adam(model.parameters())
    save_state(Path(str(out) + ".state"), _meta("edsr", 2, model), model, opt, np.random.default_rng(0), 1.0, 3, [])
    before = _snapshot(tmp_path)
    rc, line = _run(_args(data, out, "--scale", "4"), capsys)
    assert rc == 2 and "written by another run" in line and "scale 2" in line
    assert _snapshot(tmp_path) == before


def test_truncated_state_is_refused(tmp_path, data, capsys):
    from dfsq.train import _meta, save_state

    out = tmp_path / "m.pt"
    model = EDSR(2)
    state = Path(str(out) + ".state")
    save_state(state, _meta("edsr", 2, model), model, torch.optim.Adam(model.parameters()),
               np.random.default_rng(0), 1.0, 3, [])
    state.write_bytes(state.read_bytes()[:20000])
    before = _snapshot(tmp_path)
    rc, line = _run(_args(data, out), capsys)
    assert rc == 2 and "cannot read resume file" in line
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("extra, needle", [
    (["--minutes", "nan"], "--minutes"), (["--patch", "0"], "--patch"), (["--patch", "-4"], "--patch"),
    (["--batch", "0"], "--batch"), (["--lr", "nan"], "--lr"), (["--threads", "-3"], "--threads"),
    (["--save-every", "inf"], "--save-every"),
])
def test_bad_flags_are_refused(tmp_path, data, capsys, extra, needle):
    before = _snapshot(tmp_path)
    rc, line = _run(_args(data, tmp_path / "m.pt", *extra), capsys)
    assert rc == 2 and needle in line
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("where", ["parent_is_file", "proc", "folder"])
def test_unwritable_out_is_refused_before_training(tmp_path, data, capsys, where):
    (tmp_path / "file").write_text("x")
    out = {"parent_is_file": tmp_path / "file" / "m.pt", "proc": Path("/proc/no-such/m.pt"),
           "folder": tmp_path}[where]
    before = _snapshot(tmp_path)
    rc, line = _run(_args(data, out), capsys)
    assert rc == 2 and ("--out" in line or "resume file" in line)
    assert _snapshot(tmp_path) == before


def test_lossless_webp_images_are_read_like_png(tmp_path):
    """Training and benchmark folders may hold lossless WebP (how this project carried its data to a lent GPU)."""
    from PIL import Image

    from dfsq.data import list_images, load_rgb

    img = sample_images(1)[0][1][:40, :48]
    save_rgb(img, tmp_path / "a.png")
    Image.fromarray(img).save(tmp_path / "b.webp", format="WEBP", lossless=True)
    assert [p.name for p in list_images(tmp_path)] == ["a.png", "b.webp"]
    assert np.array_equal(load_rgb(tmp_path / "b.webp"), load_rgb(tmp_path / "a.png"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the refusal cannot be shown")
def test_device_cuda_without_an_accelerator_is_one_line(tmp_path, capsys):
    data = tmp_path / "imgs"
    data.mkdir()
    save_rgb(sample_images(1)[0][1][:40, :40], data / "a.png")
    out = tmp_path / "w.pt"
    rc, line = _run(_args(data, out, "--device", "cuda"), capsys)
    assert rc == 2 and "no CUDA device" in line
    assert list(tmp_path.iterdir()) == [data]
