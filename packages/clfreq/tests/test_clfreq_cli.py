"""``clfreq train`` end to end on tiny streams: rehearsal + plugin and PrePrompt, results, progress bars, refusing a
used --out, named best-args configs, and resuming an interrupted run to the same result as an uninterrupted one."""

import json

import pytest
import torch

import clfreq.prompt
import clfreq.rehearsal
import commons.io
from clfreq.cli import main


@pytest.fixture
def tiny_streams(monkeypatch):
    """The CLI's split-digits loaders cut to 2 tasks of a few dozen images (same code path, seconds on a CPU)."""
    full_rehearsal, full_prompt = clfreq.rehearsal.split_digits, clfreq.prompt.split_digits_tasks

    def digits(classes_per_task=2, **kw):
        b = full_rehearsal(image_size=8, classes_per_task=classes_per_task, **kw)
        b.train = [(x[:40], y[:40]) for x, y in b.train[:2]]
        b.test = b.test[:2]
        return b

    def digits_tasks(classes_per_task=2, **kw):
        train, test = full_prompt(classes_per_task=classes_per_task, **kw)
        for t in train[:2]:
            t.images, t.labels = t.images[:30], t.labels[:30]
        return train[:2], test[:2]

    monkeypatch.setattr(clfreq.rehearsal, "split_digits", digits)
    monkeypatch.setattr(clfreq.prompt, "split_digits_tasks", digits_tasks)


class _Crash(Exception):
    pass


def _count_saves(monkeypatch, crash_after: int | None = None) -> list:
    """Record every checkpoint write; with ``crash_after`` kill the run right after that many writes succeeded."""
    real = commons.io.save_training_state
    calls: list = []

    def save(path, state):
        real(path, state)
        calls.append(path)
        if crash_after is not None and len(calls) == crash_after:
            raise _Crash

    monkeypatch.setattr(commons.io, "save_training_state", save)
    return calls


REHEARSAL = ["train", "--method", "der++", "--plugin", "clfd", "--benchmark", "split-digits", "--epochs", "2",
             "--nf", "2", "--buffer-size", "8"]


def test_rehearsal_cli_trains_writes_and_refuses_a_used_out(tmp_path, tiny_streams, capsys):
    out = tmp_path / "run"
    assert main(REHEARSAL + ["--out", str(out)]) == 0  # progress bars on (the default)
    captured = capsys.readouterr()
    assert "clfd-der++ task 1/2 ep 1" in captured.err  # tqdm bar per task and epoch
    r = json.loads((out / "results.json").read_text())
    assert r["method"] == "clfd-der++" and r["benchmark"] == "split-digits" and len(r["cil_matrix"]) == 2
    assert r["buffer_capacity"] == 32  # CLFD: 4x encoded maps
    assert r["hparams"]["lr"] == 0.03 and r["params"] > 0 and r["train_seconds"] > 0
    assert (out / "state.pt").exists() and (out / "accuracy.png").exists()
    with pytest.raises(SystemExit, match="not empty"):
        main(REHEARSAL + ["--out", str(out), "--no-progress"])


def test_rehearsal_cli_resume_after_a_crash_equals_an_uninterrupted_run(tmp_path, tiny_streams, monkeypatch):
    ref = tmp_path / "ref"
    main(REHEARSAL + ["--out", str(ref), "--no-progress"])
    run = tmp_path / "run"
    _count_saves(monkeypatch, crash_after=1)
    with pytest.raises(_Crash):  # dies after task 0, epoch 1
        main(REHEARSAL + ["--out", str(run), "--no-progress"])
    assert not (run / "results.json").exists()
    saves = _count_saves(monkeypatch)
    main(REHEARSAL + ["--out", str(run), "--no-progress", "--resume"])
    assert len(saves) == 3  # 2 tasks x 2 epochs, minus the one finished before the crash: it did not start over
    a, b = (json.loads((d / "results.json").read_text()) for d in (ref, run))
    assert a["cil_matrix"] == b["cil_matrix"] and a["til_matrix"] == b["til_matrix"]
    sa, sb = (torch.load(d / "state.pt", weights_only=False)["method"]["net"] for d in (ref, run))
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k])


def test_rehearsal_cli_best_args(tmp_path, tiny_streams):
    out = tmp_path / "best"
    main(["train", "--method", "er-ace", "--benchmark", "split-digits", "--best-args", "--epochs", "1", "--nf", "2",
          "--out", str(out), "--no-progress"])
    assert json.loads((out / "results.json").read_text())["hparams"]["lr"] == 0.1  # QUICK_ARGS for Split Digits
    with pytest.raises(SystemExit, match="no best args.*buffer 80"):
        main(["train", "--method", "er", "--benchmark", "split-digits", "--best-args", "--buffer-size", "80",
              "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="--data-root"):
        main(["train", "--method", "er", "--benchmark", "split-cifar10", "--out", str(tmp_path / "y")])
    with pytest.raises(SystemExit, match="--plugin applies"):
        main(["train", "--method", "preprompt", "--plugin", "clfd", "--out", str(tmp_path / "z")])


PREPROMPT = ["train", "--method", "preprompt", "--benchmark", "split-digits", "--classes-per-task", "2", "--epochs",
             "1", "--batch-size", "10"]


def test_preprompt_cli_resume_after_a_crash_equals_an_uninterrupted_run(tmp_path, tiny_streams, monkeypatch, capsys):
    ref = tmp_path / "ref"
    assert main(PREPROMPT + ["--out", str(ref), "--no-progress"]) == 0
    r = json.loads((ref / "results.json").read_text())
    assert r["method"] == "preprompt" and len(r["accuracy_matrix"]) == 2 and r["task_id_accuracy"] is not None
    assert (ref / "accuracy.png").exists()
    run = tmp_path / "run"
    _count_saves(monkeypatch, crash_after=1)
    with pytest.raises(_Crash):  # dies right after the checkpoint of task 0
        main(PREPROMPT + ["--out", str(run), "--no-progress"])
    capsys.readouterr()
    saves = _count_saves(monkeypatch)
    main(PREPROMPT + ["--out", str(run), "--no-progress", "--resume"])
    assert "resuming after task 0" in capsys.readouterr().out
    assert len(saves) == 1  # only task 1 was trained again
    s = json.loads((run / "results.json").read_text())
    assert s["accuracy_matrix"] == r["accuracy_matrix"] and s["final_accuracy"] == r["final_accuracy"]


@pytest.mark.parametrize("argv, message", [
    (["--method", "er", "--benchmark", "split-cifar10"], "--data-root is required"),
    (["--method", "er", "--benchmark", "split-tinyimagenet", "--data-root", "/no/such/dir"], "is not a directory"),
    (["--method", "l2p", "--benchmark", "split-cifar100", "--data-root", "/no/such/dir"], "is not a directory"),
    (["--method", "er", "--benchmark", "imagefolder"], "not available for rehearsal"),
    (["--method", "preprompt", "--benchmark", "split-cifar10"], "not available for prompt methods"),
    (["--method", "preprompt", "--benchmark", "split-tinyimagenet"], "not available for prompt methods"),
    (["--method", "preprompt", "--plugin", "clfd"], "--plugin applies"),
    (["--method", "preprompt", "--backbone", "/no/such/vit.safetensors"], "does not exist"),
    (["--method", "preprompt", "--backbone", "no-such-backbone"], "neither a shipped backbone"),
])
def test_cli_user_errors_are_one_line(tmp_path, argv, message):
    with pytest.raises(SystemExit, match=message) as err:
        main(["train", *argv, "--out", str(tmp_path / "run")])
    assert "\n" not in str(err.value)


def test_cli_weights_file_needs_a_timm_name_or_a_model_card(tmp_path, capsys):
    from clfreq.prompt import SHIPPED_BACKBONES

    shipped = SHIPPED_BACKBONES["vit-fractal-tiny32"]
    weights = tmp_path / "vit.safetensors"
    weights.write_bytes(shipped.with_suffix(".safetensors").read_bytes())
    with pytest.raises(SystemExit, match="needs --timm-name"):
        main(["train", "--method", "preprompt", "--backbone", str(weights), "--out", str(tmp_path / "a")])
    # with --timm-name but the wrong architecture: the loader's mismatch, as one line (exit 2), no traceback
    rc = main(["train", "--method", "preprompt", "--backbone", str(weights), "--timm-name", "vit_tiny_patch16_224",
               "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("clfreq: error:") and "do not match" in err and "\n" not in err
    with pytest.raises(ValueError, match="do not match"):  # -v shows the traceback
        main(["-v", "train", "--method", "preprompt", "--backbone", str(weights), "--timm-name",
              "vit_tiny_patch16_224", "--out", str(tmp_path / "c")])


def test_cli_backbone_flag_loads_a_weights_file_with_timm_name_or_model_card(tmp_path):
    import argparse

    from safetensors.torch import save_file

    from clfreq.cli import _load_backbone
    from clfreq.prompt import SHIPPED_BACKBONES
    from clfreq.prompt.vit import create_vit

    vit = create_vit("vit_tiny_patch16_224", pretrained=False, depth=2)
    path = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(path))
    args = argparse.Namespace(backbone=str(path), hub=False, timm_name="vit_tiny_patch16_224")
    with pytest.raises(ValueError, match="do not match"):  # depth 12 by default: the file holds 2 blocks
        _load_backbone(args)
    shipped = SHIPPED_BACKBONES["vit-fractal-tiny32"]
    copy = tmp_path / "fractal.safetensors"
    copy.write_bytes(shipped.with_suffix(".safetensors").read_bytes())
    copy.with_suffix(".json").write_text(shipped.with_suffix(".json").read_text())
    model = _load_backbone(argparse.Namespace(backbone=str(copy), hub=False, timm_name=None))
    assert model.patch_embed.img_size == (32, 32) and len(model.blocks) == 6


def test_cli_prompt_lr_reaches_the_learner(tmp_path, monkeypatch):
    import argparse

    from clfreq.cli import _learner
    from clfreq.prompt import load_pretrained_vit

    ns = dict(method="preprompt", epochs=1, batch_size=None, seed=0, prompt_length=5, no_feature_translation=False,
              no_budget_scaling=True, lr=0.5, head_lr=0.01, route_lr=None, ca_lr=0.2, crct_epochs=4,
              lr_schedule="cosine", ca_schedule="constant", device="cpu")
    learner = _learner(argparse.Namespace(**ns), load_pretrained_vit(), 10, 5)
    cfg = learner.config
    assert (cfg.lr, cfg.head_lr, cfg.ca_lr, cfg.crct_epochs, cfg.lr_schedule, cfg.ca_schedule) == (
        0.5, 0.01, 0.2, 4, "cosine", "constant")
    assert not cfg.budget_lr_scaling
    l2p = _learner(argparse.Namespace(**{**ns, "method": "l2p"}), load_pretrained_vit(), 10, 5)
    assert l2p.config.lr == 0.5
    ft = _learner(argparse.Namespace(**{**ns, "method": "finetune"}), load_pretrained_vit(), 10, 5)
    assert ft.lr == 0.5
