"""The CIFAR model family against the official RepDistiller code (``tests/data/repdistiller_manifest.json``, made by
``tests/data/make_repdistiller_manifest.py`` from ``HobbitLong/RepDistiller``): same state-dict layout for every
architecture, same logits for the same weights, and strict loading of RepDistiller-format checkpoints."""

import hashlib
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from kdrl.models import create_model
from kdrl.teachers import OFFICIAL_ARCHS, load_official

DATA = Path(__file__).parent / "data"
MANIFEST = json.loads((DATA / "repdistiller_manifest.json").read_text())["archs"]
_spec = importlib.util.spec_from_file_location("_repd_manifest", DATA / "make_repdistiller_manifest.py")
_gen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_gen)


def _digest(state):
    text = "\n".join(f"{k}:{tuple(v.shape)}" for k, v in sorted(state.items()))
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize("arch", sorted(MANIFEST))
def test_state_dict_layout_is_repdistillers(arch):
    name = OFFICIAL_ARCHS[arch]
    if arch == "MobileNetV2":
        name = "mobilenetv2_half"
    state = create_model(name, num_classes=100).state_dict()
    assert len(state) == MANIFEST[arch]["entries"]
    assert _digest(state) == MANIFEST[arch]["sha256"], arch  # every key and every shape


def _official_checkpoint(arch, tmp_path, prefix=""):
    keys = MANIFEST[arch]["keys"]
    dtypes = {k: (torch.long if k.endswith("num_batches_tracked") else torch.float32) for k, _ in keys}
    state = _gen.fill_deterministic({k: torch.zeros(shape, dtype=dtypes[k]) for k, shape in keys})
    path = tmp_path / f"{arch}_best.pth"
    momentum = {"state": {0: {"momentum_buffer": torch.zeros(3)}}, "param_groups": [{"lr": 0.05, "params": [0]}]}
    torch.save({"epoch": 240, "model": {prefix + k: v for k, v in state.items()}, "best_acc": torch.tensor(75.0),
                "optimizer": momentum}, path)
    return path


@pytest.mark.parametrize("arch", [a for a in sorted(MANIFEST) if "keys" in MANIFEST[a]])
def test_load_official_reproduces_the_official_logits(arch, tmp_path):
    model = load_official(_official_checkpoint(arch, tmp_path), arch)
    assert not model.training
    with torch.no_grad():
        logits = model(_gen.fixed_input()).double()
    expected = torch.tensor(MANIFEST[arch]["logits"], dtype=torch.float64)
    # float32 networks of <= 40 layers, sums in another order: relative error ~1e-6 per layer, far below 1e-3
    scale = float(expected.abs().max())
    assert scale > 0
    torch.testing.assert_close(logits, expected, rtol=1e-3, atol=1e-3 * scale)


def test_load_official_strips_dataparallel_and_reads_safetensors(tmp_path):
    from safetensors.torch import save_file

    model = load_official(_official_checkpoint("resnet8x4", tmp_path, prefix="module."), "resnet8x4")
    assert model.conv1.weight.shape == (32, 3, 3, 3)  # RepDistiller's resnet8x4 / 32x4 stem has 32 channels
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "t.safetensors"))
    again = load_official(tmp_path / "t.safetensors", "resnet8x4")
    for (k, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), k


def test_mobilenetv2_width_is_told_apart_and_class_count_read_from_the_head(tmp_path):
    half = load_official(_official_checkpoint("MobileNetV2", tmp_path), "MobileNetV2")
    assert half.conv1[0].weight.shape[0] == 16 and half.classifier[0].out_features == 100
    full = create_model("mobilenetv2", num_classes=10)
    torch.save({"model": full.state_dict()}, tmp_path / "w1.pth")
    loaded = load_official(tmp_path / "w1.pth", "MobileNetV2")
    assert loaded.conv1[0].weight.shape[0] == 32 and loaded.classifier[0].out_features == 10


def test_load_official_refuses_mismatches_and_pickled_objects(tmp_path):
    path = _official_checkpoint("resnet8", tmp_path)
    with pytest.raises(ValueError, match=r"wrong shape .*conv1.weight \(16, 3, 3, 3\) != \(32, 3, 3, 3\)"):
        load_official(path, "resnet8x4")
    with pytest.raises(ValueError, match="missing layer1.1"):
        load_official(path, "resnet20")
    with pytest.raises(ValueError, match="not an official CIFAR architecture"):
        load_official(path, "digits_mlp")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_official(tmp_path / "nope.pth", "resnet8")
    torch.save({"model": {"fc.weight": torch.zeros(2, 2)}, "extra": _Unsafe()}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="weights_only"):
        load_official(tmp_path / "evil.pth", "resnet8")


class _Unsafe:
    pass
