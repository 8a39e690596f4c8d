"""save/load failure modes: nothing half-written on disk, checkpoints of a different architecture refused."""

import pytest
import torch
from torch import nn

import vqcore
import vqcore.api as api


def _mlp(depth: int = 2) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(*[nn.Linear(16, 16) for _ in range(depth)]).eval()


def _q(depth: int = 2):
    return vqcore.quantize(_mlp(depth), "rtn", w_bits=4, a_bits=8, calib=[{"input": torch.randn(4, 16)}], kind="dit")


def test_failed_save_leaves_nothing_on_disk(tmp_path, monkeypatch):
    def broken(directory, *a, **k):
        (directory / "model.safetensors").write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(api, "save_checkpoint", broken)
    with pytest.raises(OSError, match="disk full"):
        vqcore.save(_q(), tmp_path / "q")
    assert list(tmp_path.iterdir()) == []  # neither the target nor the temporary directory remains


def test_overwrite_replaces_and_load_refuses_a_different_architecture(tmp_path):
    q = _q()
    vqcore.save(q, tmp_path / "q")
    q3 = _q(depth=3)
    vqcore.save(q3, tmp_path / "q", overwrite=True)
    x = torch.randn(3, 16)
    with torch.no_grad():
        assert torch.equal(vqcore.load(tmp_path / "q", _mlp(3))(x), q3(x))
    with pytest.raises(ValueError, match="does not match this model's architecture"):
        vqcore.load(tmp_path / "q", _mlp(2))  # same class, other architecture
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q"]
