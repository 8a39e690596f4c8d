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


def test_cached_teachers_are_reloaded_not_retrained(digits_setup):
    train, test, names, teachers, cache = digits_setup
    again = load_or_train_teachers(names, train, cache, TeacherTrainConfig(epochs=3, milestones=[]), progress=False)
    for a, b in zip(teachers, again):
        for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
            assert ka == kb and torch.equal(va, vb)


def _toy(n=128, k=3, d=6):
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, k, (n,), generator=g)
    x = torch.randn(n, d, generator=g) + 2.0 * nn.functional.one_hot(y, d).float()
    return DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True)


class _Interrupt(Exception):
    pass


class _StopAfter:
    """An eval 'loader' that interrupts training during the evaluation of epoch ``n`` (state of epoch n-1 saved)."""

    def __init__(self, loader, n):
        self.loader, self.n, self.calls = loader, n, 0

    def __iter__(self):
        self.calls += 1
        if self.calls > self.n:
            raise _Interrupt
        return iter(self.loader)


@pytest.mark.parametrize("strategy", ["mtkd_rl", "camkd"])
def test_resume_reproduces_an_uninterrupted_run_exactly(tmp_path, strategy):
    loader = _toy()
    teachers = [create_model("digits_mlp", in_features=6, num_classes=3, hidden=[16]).eval() for _ in range(2)]

    def make():
        torch.manual_seed(0)
        student = create_model("digits_mlp", in_features=6, num_classes=3, hidden=[8])
        return MultiTeacherDistiller(student, teachers, strategy, DistillConfig(epochs=4, milestones=[2]))

    full = make()
    full.fit(loader, eval_loader=loader, run_dir=tmp_path / "full", progress=False)
    interrupted = make()
    with pytest.raises(_Interrupt):
        interrupted.fit(loader, eval_loader=_StopAfter(loader, 2), run_dir=tmp_path / "cut", progress=False)
    resumed = make()
    hist = resumed.fit(loader, eval_loader=loader, run_dir=tmp_path / "cut", resume=True, progress=False)
    assert [e["epoch"] for e in hist["epochs"]] == [0, 1, 2, 3]
    for (k, a), (k2, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k  # student, adaptors and BN statistics bit for bit
    for key in ("train_loss", "test_top1", "logit_weights", "feat_weights"):
        assert [e[key] for e in hist["epochs"]] == [e[key] for e in full.history["epochs"]], key
    if strategy == "mtkd_rl":
        for (k, a), (_, b) in zip(full.strategy.agent.state_dict().items(),
                                  resumed.strategy.agent.state_dict().items()):
            assert torch.equal(a, b), k
        assert resumed.strategy.updates == full.strategy.updates
    saved = json.loads((tmp_path / "cut" / "history.json").read_text())
    assert len(saved["epochs"]) == 4


def test_resume_refuses_a_different_configuration_unless_forced(tmp_path):
    loader = _toy()
    teachers = [create_model("digits_mlp", in_features=6, num_classes=3, hidden=[16]).eval() for _ in range(2)]

    def make(epochs, strategy="mtkd_rl"):
        torch.manual_seed(0)
        student = create_model("digits_mlp", in_features=6, num_classes=3, hidden=[8])
        return MultiTeacherDistiller(student, teachers, strategy, DistillConfig(epochs=epochs, milestones=[]))

    make(2).fit(loader, run_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="epochs: saved 2, now 3"):
        make(3).fit(loader, run_dir=tmp_path, resume=True, progress=False)
    with pytest.raises(ValueError, match="strategy_name"):
        make(2, "aver").fit(loader, run_dir=tmp_path, resume=True, progress=False)
    hist = make(3).fit(loader, run_dir=tmp_path, resume=True, progress=False, force=True)
    assert [e["epoch"] for e in hist["epochs"]] == [0, 1, 2]


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
