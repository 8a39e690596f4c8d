"""The CIFAR-100 path on a tiny fake copy in the python layout, and the CLI's teacher loading and resume."""

import json
import pickle

import numpy as np
import pytest
import torch

from commons.io import load_training_state
from kdrl.data import CIFAR100_MEAN, CIFAR100_STD, cifar100_loaders


@pytest.fixture
def fake_cifar100(tmp_path, monkeypatch):
    """20 train / 10 test constant-colour 32×32 images in torchvision's ``cifar-100-python`` layout. The real files
    are checked by md5; the check is switched off for these fake ones."""
    pytest.importorskip("torchvision")
    import torchvision.datasets.cifar as tv_cifar

    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 20), ("test", 10)):
        colours = rng.integers(0, 256, size=(n, 3), dtype=np.uint8)
        data = np.repeat(colours[:, :, None], 32 * 32, axis=2).reshape(n, 3 * 32 * 32)
        labels = [int(v) for v in rng.integers(0, 100, size=n)]
        with open(folder / split, "wb") as f:
            pickle.dump({"data": data, "fine_labels": labels, "coarse_labels": [0] * n}, f)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"c{i}" for i in range(100)]}, f)
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)
    return tmp_path


def test_cifar100_loader_reads_the_python_layout_with_the_official_normalisation(fake_cifar100):
    train, test = cifar100_loaders(fake_cifar100, batch_size=8, num_workers=0)
    assert len(train.dataset) == 20 and len(test.dataset) == 10
    x, y = next(iter(test))
    assert x.shape == (10, 3, 32, 32) and y.dtype == torch.long and int(y.max()) < 100
    with open(fake_cifar100 / "cifar-100-python" / "test", "rb") as f:
        raw = pickle.load(f)
    colour = torch.tensor(raw["data"][0].reshape(3, -1)[:, 0], dtype=torch.float32) / 255.0
    expected = (colour - torch.tensor(CIFAR100_MEAN)) / torch.tensor(CIFAR100_STD)
    torch.testing.assert_close(x[0].mean(dim=(1, 2)), expected, rtol=1e-5, atol=1e-5)  # test: no augmentation
    assert int(y[0]) == raw["fine_labels"][0]
    xb, _ = next(iter(train))
    assert xb.shape == (8, 3, 32, 32)
    # RandomCrop(32, padding=4) pads with zeros: some training images show the normalised black border
    black = -torch.tensor(CIFAR100_MEAN) / torch.tensor(CIFAR100_STD)
    xs = torch.cat([b for b, _ in train])
    border = (xs - black[None, :, None, None]).abs().amax(dim=1) < 1e-5
    assert bool(border.any())


def test_cli_distils_on_cifar100(fake_cifar100, tmp_path, capsys):
    from kdrl.cli import main

    out = tmp_path / "run"
    rc = main(["train", "--data", "cifar100", "--data-root", str(fake_cifar100), "--teachers", "resnet8",
               "--student", "resnet8", "--strategy", "mtkd_rl", "--epochs", "1", "--teacher-epochs", "1",
               "--num-workers", "0", "--batch-size", "10", "--out", str(out), "--no-progress", "--device", "cpu"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["teachers"]) == {"resnet8"} and 0.0 <= report["student_top1"] <= 100.0
    assert len(report["final_logit_weights"]) == 1
    assert (out / "teachers" / "resnet8_seed0" / "model.safetensors").is_file()


def test_cli_loads_teacher_checkpoints_and_resumes(tmp_path, capsys):
    from kdrl.cli import main

    base = ["train", "--teachers", "digits_mlp,digits_convnet_wide", "--strategy", "mtkd_rl", "--teacher-epochs", "1",
            "--no-progress", "--device", "cpu"]
    assert main([*base, "--epochs", "1", "--out", str(tmp_path / "a")]) == 0
    trained = json.loads(capsys.readouterr().out)["teachers"]
    cache = tmp_path / "a" / "teachers"
    ckpts = f"{cache / 'digits_mlp_seed0'},{cache / 'digits_convnet_wide_seed0'}"
    # the teachers come from the checkpoints (no teacher cache is written in the new run folder) ...
    assert main([*base, "--epochs", "1", "--teacher-ckpts", ckpts, "--out", str(tmp_path / "b")]) == 0
    loaded = json.loads(capsys.readouterr().out)["teachers"]
    assert not (tmp_path / "b" / "teachers").exists()
    assert loaded == trained and set(loaded) == {"digits_mlp", "digits_convnet_wide"}  # same weights, same accuracy
    # --resume with another --epochs (other lr milestones) is refused in one line; --force continues 1 -> 2 epochs
    assert main([*base, "--epochs", "2", "--teacher-ckpts", ckpts, "--resume", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "epochs: saved 1, now 2" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert main([*base, "--epochs", "2", "--teacher-ckpts", ckpts, "--resume", "--force",
                 "--out", str(tmp_path / "b")]) == 0
    capsys.readouterr()
    hist = json.loads((tmp_path / "b" / "mtkd_rl_seed0" / "history.json").read_text())
    assert [e["epoch"] for e in hist["epochs"]] == [0, 1]
    state = load_training_state(tmp_path / "b" / "mtkd_rl_seed0" / "state.pt")
    assert state["epoch"] == 1 and state["strategy"]["updates"] > 0
    with pytest.raises(SystemExit, match="teacher-ckpts"):
        main([*base, "--teacher-ckpts", str(cache / "digits_mlp_seed0"), "--out", str(tmp_path / "c")])


def test_cli_flags_reach_the_config_and_the_strategy(tmp_path, capsys, monkeypatch):
    from kdrl.cli import main

    base = ["train", "--teachers", "digits_mlp,digits_convnet_wide", "--teacher-epochs", "1", "--epochs", "1",
            "--no-progress", "--device", "cpu", "--out", str(tmp_path)]
    assert main([*base, "--strategy", "aekd", "--aekd-cap", "0.7", "--beta", "3", "-T", "2", "--kd-weight", "0.5"]) == 0
    state = load_training_state(tmp_path / "aekd_seed0" / "state.pt")
    assert state["config"]["temperature"] == 2.0 and state["config"]["feat_weight"] == 3.0
    assert state["config"]["kd_weight"] == 0.5 and "C=0.7" in state["strategy_spec"]
    assert main([*base, "--strategy", "mtkd_rl", "--agent-step", "3", "--agent-lr", "0.2"]) == 0
    state = load_training_state(tmp_path / "mtkd_rl_seed0" / "state.pt")
    assert "agent_step=3" in state["strategy_spec"] and "lr=0.2" in state["strategy_spec"]
    assert main([*base, "--strategy", "mmkd", "--meta-lr", "0.01", "--meta-freq", "3"]) == 0
    state = load_training_state(tmp_path / "mmkd_seed0" / "state.pt")
    assert "meta_lr=0.01" in state["strategy_spec"] and "meta_freq=3" in state["strategy_spec"]
    capsys.readouterr()
    with pytest.raises(SystemExit, match="--meta-lr does not apply"):
        main([*base, "--strategy", "aver", "--meta-lr", "0.1"])
    with pytest.raises(SystemExit, match="--agent-step does not apply"):
        main([*base, "--strategy", "aver", "--agent-step", "3"])
    assert main([*base, "--strategy", "aekd", "--aekd-cap", "-1"]) == 2
    assert "C (the AEKD weight cap)" in capsys.readouterr().err
    # --download reaches the CIFAR-100 loader
    seen = {}

    def fake_loaders(root, batch_size, num_workers=4, download=False):
        seen["download"] = download
        raise FileNotFoundError("stop here")

    monkeypatch.setattr("kdrl.data.cifar100_loaders", fake_loaders)
    assert main([*base, "--data", "cifar100", "--data-root", str(tmp_path), "--download"]) == 2
    assert seen == {"download": True}
