import json

import pytest
import torch

from commons.io import (
    CheckpointError,
    RunDir,
    atomic_write,
    load_checkpoint,
    load_json,
    load_training_state,
    save_checkpoint,
    save_json,
    save_training_state,
)


def test_checkpoint_round_trip(tmp_path):
    state = {"w": torch.randn(3, 4), "b": torch.arange(5, dtype=torch.int32)}
    save_checkpoint(tmp_path / "ck", state, {"arch": "mlp", "width": 4})
    loaded, config = load_checkpoint(tmp_path / "ck", expected_keys={"w", "b"})
    assert torch.equal(loaded["w"], state["w"]) and torch.equal(loaded["b"], state["b"])
    assert config["arch"] == "mlp" and config["format_version"] == 1
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["config.json", "model.safetensors"]


def test_checkpoint_refuses_overwrite_without_flag(tmp_path):
    save_checkpoint(tmp_path, {"w": torch.zeros(1)})
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_checkpoint(tmp_path, {"w": torch.ones(1)})
    save_checkpoint(tmp_path, {"w": torch.ones(1)}, overwrite=True)
    assert load_checkpoint(tmp_path)[0]["w"].item() == 1.0


def test_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        load_checkpoint(tmp_path / "empty")
    save_checkpoint(tmp_path / "ok", {"w": torch.randn(100, 100)})
    weights = tmp_path / "ok" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncate
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(tmp_path / "ok")
    save_checkpoint(tmp_path / "ok2", {"w": torch.randn(2)})
    with pytest.raises(CheckpointError, match=r"missing keys \['v'\]"):
        load_checkpoint(tmp_path / "ok2", expected_keys={"v"})
    with pytest.raises(TypeError, match="str -> Tensor"):
        save_checkpoint(tmp_path / "bad", {"w": [1, 2]})
    with pytest.raises(TypeError, match="directory"):
        save_checkpoint(42, {})


def test_atomic_write_keeps_old_content_on_failure(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(target, "w") as handle:
        handle.write("new, half written")
        raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]  # no temp file left behind
    with pytest.raises(ValueError, match="mode"), atomic_write(target, "a"):
        pass


def test_json_helpers(tmp_path):
    save_json(tmp_path / "a.json", {"x": [1, 2], "p": tmp_path})
    assert load_json(tmp_path / "a.json")["x"] == [1, 2]
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_json(tmp_path / "bad.json")
    assert json.loads((tmp_path / "a.json").read_text())["p"] == str(tmp_path)


def test_training_state_and_rundir_resume(tmp_path):
    run = RunDir(tmp_path, name="exp")
    assert not run.resumed and run.load_state() is None
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(3, 2)).sum().backward()
    opt.step()
    run.save_state({"model": model.state_dict(), "opt": opt.state_dict(), "step": 7})
    with pytest.raises(FileExistsError, match="resume=True"):
        RunDir(tmp_path, name="exp")
    again = RunDir(tmp_path, name="exp", resume=True)
    assert again.resumed
    state = again.load_state()
    assert state["step"] == 7 and torch.equal(state["model"]["weight"], model.weight.detach())
    assert load_training_state(tmp_path / "nothing.pt") is None
    (tmp_path / "broken.pt").write_bytes(b"\x80\x04garbage")
    with pytest.raises(CheckpointError):
        load_training_state(tmp_path / "broken.pt")
    with pytest.raises(TypeError):
        save_training_state(tmp_path / "x.pt", [1])
    with pytest.raises(ValueError, match="folder name"):
        RunDir(tmp_path, name="a/b")



class _Exploit:
    """Unpickling this runs ``os.system("touch <marker>")``: what a hostile state file does (harmless here)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os
        import shlex

        return (os.system, (f"touch {shlex.quote(self.marker)}",))


def test_training_state_that_would_run_code_is_refused_and_nothing_runs(tmp_path):
    import random

    import numpy as np

    bad, marker = tmp_path / "state.pt", tmp_path / "code-ran"
    torch.save({"step": 3, "payload": _Exploit(marker)}, bad)  # written as a hostile resume file would be
    with pytest.raises(CheckpointError, match=r"system.*refusing to unpickle"):
        load_training_state(bad)
    with pytest.raises(CheckpointError, match="refusing"):
        load_training_state(str(bad))
    assert not marker.exists()  # refused before anything ran
    # what the packages' states hold still loads: numpy RandomState arrays and scalars, Python/torch RNG states
    good = {"gen": np.random.RandomState(0).get_state(), "loss": np.float64(0.5), "n": np.int64(2),
            "arr": np.arange(4, dtype=np.uint32), "py": random.Random(0).getstate(), "torch": torch.get_rng_state(),
            "pcg": np.random.default_rng(0).bit_generator.state}
    save_training_state(tmp_path / "ok.pt", good)
    back = load_training_state(tmp_path / "ok.pt")
    assert back["gen"][0] == "MT19937" and np.array_equal(back["gen"][1], good["gen"][1])
    assert back["loss"] == 0.5 and back["n"] == 2 and back["py"] == good["py"] and back["pcg"] == good["pcg"]
    assert torch.equal(back["torch"], good["torch"]) and back["arr"].dtype == np.uint32


def test_garbage_training_state_is_a_checkpoint_error(tmp_path):
    for i, blob in enumerate((b"plain text, not a pickle\n", b"\x80\x04", b"")):
        (tmp_path / f"s{i}.pt").write_bytes(blob)
        with pytest.raises(CheckpointError, match="could not be read"):
            load_training_state(tmp_path / f"s{i}.pt")


def test_rundir_restore_loads_model_and_optimizer(tmp_path):
    run = RunDir(tmp_path, name="exp")
    fresh = torch.nn.Linear(2, 2)
    assert run.restore(fresh) is None  # no state yet: nothing loaded
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(3, 2)).sum().backward()
    opt.step()
    run.save_state({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": 3})
    opt2 = torch.optim.Adam(fresh.parameters())
    state = run.restore(fresh, opt2)
    assert state["step"] == 3 and torch.equal(fresh.weight, model.weight)
    assert opt2.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]


def test_config_differences_compares_as_json_stores_and_honours_ignore_and_common_only():
    from commons.io import config_differences

    saved = {"lr": 1e-3, "crop": (64, 64), "workers": 2, "old": 1}
    now = {"lr": 2e-3, "crop": [64, 64], "workers": 4, "new": 5}
    # tuples equal lists (a state read back holds either); a key only one side has differs unless common_only
    assert config_differences(saved, now) == [("lr", 1e-3, 2e-3), ("new", None, 5), ("old", 1, None),
                                              ("workers", 2, 4)]
    assert config_differences(saved, now, ignore={"workers"}, common_only=True) == [("lr", 1e-3, 2e-3)]
    assert config_differences(saved, dict(saved)) == []
