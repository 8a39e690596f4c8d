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


def test_load_refuses_a_same_class_model_of_another_size_before_touching_it(tmp_path):
    vqcore.save(_q(), tmp_path / "q")
    torch.manual_seed(0)
    wider = nn.Sequential(nn.Linear(16, 32), nn.Linear(32, 16)).eval()  # same class and layer names, other shapes
    with pytest.raises(ValueError, match=r"architecture \(3 tensors differ in shape: 0.weight: model \(32, 16\)"):
        vqcore.load(tmp_path / "q", wider)
    assert not any(isinstance(m, vqcore.quant.QuantModule) for m in wider.modules())  # the model was not prepared
    with pytest.raises(ValueError, match="no model.safetensors"):
        (tmp_path / "empty").mkdir()
        (tmp_path / "empty" / "config.json").write_text((tmp_path / "q" / "config.json").read_text())
        vqcore.load(tmp_path / "empty", _mlp())


def test_failed_overwrite_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    q = _q()
    vqcore.save(q, tmp_path / "q")
    before = {p.name: p.read_bytes() for p in (tmp_path / "q").iterdir()}

    def broken(directory, *a, **k):
        (directory / "model.safetensors").write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(api, "save_checkpoint", broken)
    with pytest.raises(OSError, match="disk full"):
        vqcore.save(_q(depth=3), tmp_path / "q", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q"]  # no temporary directory left behind
    assert {p.name: p.read_bytes() for p in (tmp_path / "q").iterdir()} == before
    monkeypatch.undo()
    x = torch.randn(3, 16)
    with torch.no_grad():
        assert torch.equal(vqcore.load(tmp_path / "q", _mlp())(x), q(x))
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not a directory"):
        vqcore.save(q, tmp_path / "file", overwrite=True)
