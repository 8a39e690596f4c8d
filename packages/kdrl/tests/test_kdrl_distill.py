"""End-to-end: distillation on digits beats chance, resume works, features are found in foreign models, the CLI runs."""

import json

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from kdrl import (
    DistillConfig,
    MultiTeacherDistiller,
    TeacherPool,
    TeacherTrainConfig,
    as_feature_classifier,
    create_model,
    create_strategy,
    list_strategies,
)
from kdrl.data import digits_loaders
from kdrl.training import load_or_train_teachers


@pytest.fixture(scope="module")
def digits_setup(tmp_path_factory):
    train, test = digits_loaders(64, seed=0)
    names = ["digits_convnet_wide", "digits_mlp"]
    cache = tmp_path_factory.mktemp("teachers")
    teachers = load_or_train_teachers(names, train, cache, TeacherTrainConfig(epochs=3, milestones=[]),
                                      progress=False)
    return train, test, names, teachers, cache


def test_short_distillation_beats_chance_for_every_strategy(digits_setup):
    train, test, names, teachers, cache = digits_setup
    pool = TeacherPool(teachers, names=names)
    for strategy in list_strategies():
        d = MultiTeacherDistiller("digits_convnet_tiny", pool, create_strategy(strategy),
                                  DistillConfig(epochs=4, milestones=[], seed=0))
        hist = d.fit(train, progress=False)
        acc = d.evaluate(test)["top1"]
        assert acc > 40.0, (strategy, acc)  # chance is 10 %
        w = hist["epochs"][-1]["logit_weights"]
        assert all(v >= 0 for v in w)
    # cached teachers are reloaded, not retrained: same weights
    again = load_or_train_teachers(names, train, cache, TeacherTrainConfig(epochs=3, milestones=[]), progress=False)
    for a, b in zip(teachers, again):
        for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
            assert ka == kb and torch.equal(va, vb)


def _toy(n=128, k=3, d=6):
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, k, (n,), generator=g)
    x = torch.randn(n, d, generator=g) + 2.0 * nn.functional.one_hot(y, d).float()
    return DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True)


def test_resume_continues_from_checkpoint(tmp_path):
    loader = _toy()
    teachers = [create_model("digits_mlp", in_features=6, num_classes=3, hidden=[16]).eval() for _ in range(2)]

    def make(epochs):
        torch.manual_seed(0)
        student = create_model("digits_mlp", in_features=6, num_classes=3, hidden=[8])
        return MultiTeacherDistiller(student, teachers, "mtkd_rl", DistillConfig(epochs=epochs, milestones=[]))

    first = make(2)
    first.fit(loader, run_dir=tmp_path, progress=False)
    assert (tmp_path / "state.pt").is_file() and (tmp_path / "student" / "model.safetensors").is_file()
    updates_after_two = first.strategy.updates
    resumed = make(3)
    hist = resumed.fit(loader, run_dir=tmp_path, resume=True, progress=False)
    assert [e["epoch"] for e in hist["epochs"]] == [0, 1, 2]
    assert resumed.strategy.updates == updates_after_two + len(loader)  # the agent state came back too
    saved = json.loads((tmp_path / "history.json").read_text())
    assert len(saved["epochs"]) == 3


def test_feature_tap_on_timm_and_hooked_modules():
    timm = pytest.importorskip("timm")
    model = timm.create_model("resnet10t", pretrained=False, num_classes=5)
    out = as_feature_classifier(model)(torch.randn(2, 3, 32, 32))
    assert out.logits.shape == (2, 5) and out.feature_map.dim() == 4 and out.embedding.shape == (2, 512)
    seq = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 3))
    tap = as_feature_classifier(seq, feature_layer="1")
    out = tap(torch.randn(2, 1, 8, 8))
    assert out.feature_map.shape == (2, 4, 8, 8) and torch.allclose(out.embedding, out.feature_map.mean((2, 3)))
    # a timm teacher and a hooked teacher distil into a kdrl student (adaptor resizes 4x4/8x8 maps)
    loader = DataLoader(TensorDataset(torch.randn(16, 3, 16, 16), torch.randint(0, 3, (16,))), batch_size=8)
    teachers = [timm.create_model("resnet10t", pretrained=False, num_classes=3),
                nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                              nn.Linear(4, 3))]
    pool = TeacherPool(teachers, feature_layers=[None, "1"])
    student = create_model("digits_convnet_tiny", in_channels=3, num_classes=3)
    d = MultiTeacherDistiller(student, pool, "mtkd_rl", DistillConfig(epochs=1, milestones=[]))
    hist = d.fit(loader, progress=False)
    assert len(hist["epochs"]) == 1 and torch.isfinite(torch.tensor(hist["epochs"][0]["train_loss"]))


def test_cli_train_on_digits(tmp_path, capsys):
    from kdrl.cli import main

    rc = main(["train", "--epochs", "1", "--teacher-epochs", "1", "--teachers", "digits_mlp", "--strategy", "aver",
               "--out", str(tmp_path), "--no-progress", "--device", "cpu"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["student_top1"] > 15.0 and "digits_mlp" in report["teachers"]
    assert (tmp_path / "aver_seed0" / "student" / "model.safetensors").is_file()
    assert main(["evaluate", str(tmp_path / "aver_seed0" / "student")]) == 0


def test_teacher_training_is_reproducible_whatever_ran_before():
    train, _ = digits_loaders(64, seed=0)
    cfg = TeacherTrainConfig(epochs=1, milestones=[], seed=3)
    torch.manual_seed(123)
    a = load_or_train_teachers(["digits_mlp"], train, None, cfg, progress=False)[0]
    torch.randn(1000)  # a different global RNG state must not change the result
    b = load_or_train_teachers(["digits_mlp"], train, None, cfg, progress=False)[0]
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka
