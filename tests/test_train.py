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
