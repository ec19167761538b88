"""EDSR-baseline: official EDSR-PyTorch key layout loads; corrupted checkpoints are refused clearly."""
import subprocess
import sys

import pytest
import torch

from dfsq.model import EDSR, check_state_dict, load_edsr, quantized_convs
from golden.errors import UserError


def official_state(scale):
    """A state_dict with exactly the key layout of edsr_baseline_x{scale}-*.pt (incl. the MeanShift convs)."""
    sd = {}
    sd["sub_mean.weight"] = torch.eye(3).view(3, 3, 1, 1)
    sd["sub_mean.bias"] = torch.zeros(3)
    sd["add_mean.weight"] = torch.eye(3).view(3, 3, 1, 1)
    sd["add_mean.bias"] = torch.zeros(3)
    sd["head.0.weight"], sd["head.0.bias"] = torch.randn(64, 3, 3, 3), torch.randn(64)
    for i in range(16):
        for j in (0, 2):
            sd[f"body.{i}.body.{j}.weight"] = torch.randn(64, 64, 3, 3)
            sd[f"body.{i}.body.{j}.bias"] = torch.randn(64)
    sd["body.16.weight"], sd["body.16.bias"] = torch.randn(64, 64, 3, 3), torch.randn(64)
    for k in ([0] if scale == 2 else [0, 2]):
        sd[f"tail.0.{k}.weight"], sd[f"tail.0.{k}.bias"] = torch.randn(256, 64, 3, 3), torch.randn(256)
    sd["tail.1.weight"], sd["tail.1.bias"] = torch.randn(3, 64, 3, 3), torch.randn(3)
    return sd


@pytest.mark.parametrize("scale", [2, 4])
def test_official_layout_loads(tmp_path, scale):
    sd = official_state(scale)
    path = tmp_path / f"edsr_baseline_x{scale}.pt"
    torch.save(sd, path)
    model = load_edsr(path, scale)
    assert torch.equal(model.body[3].body[2].weight, sd["body.3.body.2.weight"])
    assert torch.equal(model.tail[1].bias, sd["tail.1.bias"])
    y = model(torch.rand(1, 3, 8, 10) * 255)
    assert y.shape == (1, 3, 8 * scale, 10 * scale)


def test_parameter_count_and_quantized_convs():
    model = EDSR(2)
    n = sum(p.numel() for p in model.parameters())
    assert n == 1_369_859  # EDSR-baseline x2 (without the MeanShift convs)
    names = [name for name, _ in quantized_convs(model)]
    assert len(names) == 32 and names[0] == "body.0.body.0" and names[-1] == "body.15.body.2"


@pytest.mark.parametrize("mutate,needle", [
    (lambda sd: sd.pop("body.5.body.2.weight"), "missing keys ['body.5.body.2.weight']"),
    (lambda sd: sd.__setitem__("body.99.weight", torch.zeros(1)), "unknown keys ['body.99.weight']"),
    (lambda sd: sd.__setitem__("head.0.weight", torch.zeros(64, 3, 5, 5)), "'head.0.weight' has shape"),
    (lambda sd: sd.__setitem__("tail.1.bias", torch.full((3,), float("nan"))), "NaN"),
])
def test_corrupted_state_refused(mutate, needle):
    sd = official_state(2)
    mutate(sd)
    with pytest.raises(UserError) as exc:
        check_state_dict(EDSR(2), sd)
    assert needle in str(exc.value)


def test_x4_checkpoint_refused_at_x2():
    with pytest.raises(UserError, match="tail.0.2.weight"):
        check_state_dict(EDSR(2), official_state(4))


def test_cli_rejects_garbage_file_in_one_line(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"this is not a checkpoint")
    r = subprocess.run([sys.executable, "-m", "dfsq.evaluate", "--weights", str(bad), "--datasets", "Set5"],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and r.stderr.startswith("error: cannot read checkpoint")
    assert "Traceback" not in r.stderr


def test_empty_checkpoint_file_is_one_line_user_error(tmp_path):
    """An empty .pt used to end in an IndexError (the empty message of torch.load's error)."""
    from dfsq.model import load_state

    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(UserError, match="cannot read checkpoint"):
        load_state(tmp_path / "empty.pt")
