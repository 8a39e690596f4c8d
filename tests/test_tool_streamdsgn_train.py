"""tools/streamdsgn_train.py (issue 25 item 1, the script that trains the shipped weights) runs end to end on a CPU.

It drives its own time-budgeted loop through ``streamdsgn.training.train_step``; a refactor of the package's fit loop
once left it calling a removed method, which only the GPU run would have found. Here: a tiny budget on one rendered
sequence, a slim model, no loader workers. It must train (at least one step, finite losses), evaluate, and write the
weights with their model card and the ``commons.results`` JSON; the weights must load through
``StreamDSGN.pretrained`` with the card's config and give the saved tensors back.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("streamdsgn")

ROOT = Path(__file__).resolve().parents[1]
SLIM = {"base_width": 8, "up_dims": [8, 4], "slice_channels": 4, "volume_channels": 4, "num_planes": 12,
        "van_stem": 12, "van_dim": 16, "bev_out": 16, "head_channels": 16}


def _tool():
    spec = importlib.util.spec_from_file_location("streamdsgn_train_tool", ROOT / "tools" / "streamdsgn_train.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_training_script_trains_evaluates_and_writes_loadable_weights(tmp_path):
    from safetensors.torch import load_file

    from streamdsgn import StreamDSGN

    out = tmp_path / "out"
    rc = _tool().main(["--out", str(out), "--budget-s", "18", "--eval-reserve-s", "6", "--train-sequences", "1",
                       "--val-sequences", "1", "--frames", "8", "--batch-size", "1", "--workers", "0",
                       "--device", "cpu", "--log-every", "1", "--config-kw", json.dumps(SLIM),
                       "--data", str(tmp_path / "data")])
    assert rc == 0
    card = json.loads((out / "streamdsgn.json").read_text())
    assert card["training"]["steps"] >= 1 and card["model_config"]["num_planes"] == 12
    assert card["training_curve"] and all(math.isfinite(r["total"]) for r in card["training_curve"])
    assert {r["mode"] for r in card["evaluation"]["rows"]} == {"offline", "forecast", "streaming"}
    results = json.loads((out / "streamdsgn" / "streamdsgn_train.json").read_text())
    assert results["rows"] == card["evaluation"]["rows"]
    det = StreamDSGN.pretrained(out / "streamdsgn.safetensors", device="cpu")
    saved = load_file(str(out / "streamdsgn.safetensors"))
    state = det.model.state_dict()
    assert saved.keys() <= state.keys() and all(torch.equal(state[k], v) for k, v in saved.items())


def test_bench_resume_file_skips_cut_lines_and_refuses_other_settings(tmp_path):
    """tools/bench/streamdsgn.py appends one line per finished job to jobs.jsonl; ``--resume-from`` reads it back:
    the jobs and their common training time, a line cut by a killed call skipped, a line written with another
    setting refused with a message naming it."""
    spec = importlib.util.spec_from_file_location("streamdsgn_bench_tool", ROOT / "tools" / "bench" / "streamdsgn.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    settings = {"batch_size": 8, "lr": 2e-3, "train_sequences": 48, "val_sequences": 2, "frames": 80,
                "device": "cuda"}
    lines = [json.dumps({"variant": v, "seed": s, "settings": {**settings, "train_s": 300.5}, "job": {"v": v, "s": s}})
             for v, s in (("streamdsgn", 0), ("baseline", 0), ("streamdsgn", 1))]
    path = tmp_path / "jobs.jsonl"
    path.write_text(lines[0] + "\n" + lines[1] + "\n" + lines[2][:40])
    jobs, train_s = bench.read_jobs(path, settings)
    assert jobs == {("streamdsgn", 0): {"v": "streamdsgn", "s": 0}, ("baseline", 0): {"v": "baseline", "s": 0}}
    assert train_s == 300.5
    with pytest.raises(SystemExit, match="lr=0.002"):
        bench.read_jobs(path, {**settings, "lr": 1e-3})
