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
