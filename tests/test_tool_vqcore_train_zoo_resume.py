"""tools/vqcore_train_zoo.py --only large across calls: a run split by --resume-from equals one uninterrupted run.

CPU, a tiny DiT (patch 8, width 16, one Latte layer pair) on the real 16 x 32 x 32 moving-digits data: run A trains
k steps (writing a checkpoint after every step, which must not disturb the run), run B resumes A for k more, run C
trains 2k steps at once. B's weights, EMA, Adam moments and data-sampler RNG state must equal C's bit for bit (same
process, same CPU kernels: no tolerance is needed). A resume with another learning rate, batch or model width is
refused with one line naming the key, before any data is generated.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("vqcore")
from safetensors.torch import load_file  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY = {"patch_size": 8, "num_heads": 2, "head_dim": 8, "num_layers": 1, "caption_channels": 8}
K = 3


def _tool():
    spec = importlib.util.spec_from_file_location("vqcore_train_zoo", ROOT / "tools" / "vqcore_train_zoo.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _args(out: Path, steps: int, *extra: str, dit: dict | None = None) -> list[str]:
    return ["--only", "large", "--device", "cpu", "--out", str(out), "--dit-config", json.dumps(dit or TINY),
            "--num-videos", "24", "--heldout-videos", "8", "--eval-samples", "2", "--video-batch", "4",
            "--video-seconds", "1e9", "--video-steps", str(steps), *extra]


def _tensors(folder: Path) -> dict:
    state = json.loads((folder / "ckpt_state.json").read_text())
    out = {}
    for name in state["shards"]:
        out.update(load_file(str(folder / name)))
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    torch.set_num_threads(1)
    tool, base = _tool(), tmp_path_factory.mktemp("zoo_resume")
    tool.main(_args(base / "A", K, "--ckpt-minutes", "0"))
    tool.main(_args(base / "B", 2 * K, "--resume-from", str(base / "A")))
    tool.main(_args(base / "C", 2 * K))
    return tool, base


def test_resumed_run_is_bit_identical_to_one_run(runs):
    _, base = runs
    a, b, c = (json.loads((base / r / "ckpt_state.json").read_text()) for r in "ABC")
    assert (a["step"], b["step"], c["step"]) == (K, 2 * K, 2 * K)
    assert a["moments_dtype"] == "float32"  # the tiny model fits --ckpt-max-mib: exact moments
    tb, tc, ta = _tensors(base / "B"), _tensors(base / "C"), _tensors(base / "A")
    keys = [k for k in tc if not k.startswith("rng.cuda")]
    assert sorted(tb) == sorted(tc)
    assert any(k.startswith("optim.") and k.endswith("exp_avg_sq") for k in keys)
    for key in keys:
        assert torch.equal(tb[key], tc[key]), key
    # and the run did move: A (k steps) differs from C (2k steps) in weights and EMA
    assert not torch.equal(ta["model.class_embedding.weight"], tc["model.class_embedding.weight"])
    assert not torch.equal(ta["ema.class_embedding.weight"], tc["ema.class_embedding.weight"])
    assert b["losses"] == c["losses"]


def test_history_is_carried_and_appended(runs):
    _, base = runs
    hist = [json.loads(ln) for ln in (base / "B" / "history.jsonl").read_text().splitlines()]
    assert [h["call"] for h in hist] == [1, 2]
    assert [h["step"] for h in hist] == [K, 2 * K]
    assert hist[1]["steps_this_call"] == K
    for h in hist:
        assert set(h["sample_accuracy"]) == {"steps20_cfg1.0", "steps20_cfg2.0", "steps20_cfg4.0"}
        assert h["wall_seconds"] >= h["train_seconds"] > 0


@pytest.mark.parametrize("extra, dit, key", [
    (["--video-lr", "1e-3"], None, "lr"),
    (["--video-batch", "8"], None, "batch"),
    ([], {**TINY, "num_heads": 4}, "dit.num_heads"),
    (["--num-videos", "30"], None, "num_videos"),
])
def test_mismatched_resume_is_refused(runs, tmp_path, extra, dit, key):
    tool, base = runs
    args = _args(tmp_path / "D", 2 * K, "--resume-from", str(base / "A"), dit=dit)
    # later flags win in argparse: the override replaces the default given in _args
    with pytest.raises(SystemExit) as exc:
        tool.main(args + extra)
    msg = str(exc.value)
    assert "\n" not in msg and f" {key}=" in msg and "--resume-from" in msg
    assert not (tmp_path / "D" / "ckpt_state.json").exists()


def test_export_writes_loadable_weights_from_the_ema(runs, tmp_path):
    tool, base = runs
    path = tool.export_large(base / "B", tmp_path)
    from vqcore import zoo

    model = zoo.load("moving-digits-dit-l", path=path)
    ema = _tensors(base / "B")["ema.class_embedding.weight"]
    assert torch.equal(model.class_embedding.weight, ema.half().float())
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["train"]["steps"] == 2 * K and card["evaluator"] == "moving-digits-classifier-l"
    assert set(card["fp_reference"]["sample_accuracy"]) == {"steps20_cfg1.0", "steps20_cfg2.0", "steps20_cfg4.0"}


def test_bfloat16_moments_restore_as_their_rounding_and_the_rest_exactly(runs, tmp_path):
    """The dit-l default (checkpoint over --ckpt-max-mib): moments stored as bfloat16 come back as exactly the
    bfloat16 rounding of the saved ones, in float32; weights, EMA, steps and every RNG stream come back unchanged."""
    import copy

    tool, _ = runs
    from vqcore import zoo

    torch.manual_seed(0)
    model = zoo.build("moving-digits-dit-l", **TINY)
    ema = copy.deepcopy(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99))
    for _ in range(2):
        for p in model.parameters():
            p.grad = torch.randn_like(p)
        opt.step()
    g = torch.Generator().manual_seed(3)
    torch.randint(0, 10, (7,), generator=g)  # a state other than a fresh seed's
    progress = {"step": 2, "losses": [0.5, 0.25], "seconds_total": 1.5}
    tool.save_checkpoint(tmp_path, model, ema, opt, g, progress, config={"k": 1}, moments_dtype=torch.bfloat16)
    want_rng, want_data = torch.get_rng_state(), g.get_state()
    torch.manual_seed(99)
    model2 = zoo.build("moving-digits-dit-l", **TINY)
    ema2 = copy.deepcopy(model2)
    opt2 = torch.optim.AdamW(model2.parameters(), lr=1e-3, betas=(0.9, 0.99))
    g2 = torch.Generator()
    got = tool.Checkpoint(tmp_path).restore(model2, ema2, opt2, g2)
    assert got == progress
    assert torch.equal(torch.get_rng_state(), want_rng) and torch.equal(g2.get_state(), want_data)
    for p, q in zip(model.parameters(), model2.parameters()):
        assert torch.equal(p, q)
        s, s2 = opt.state[p], opt2.state[q]
        assert s2["exp_avg"].dtype == torch.float32 and torch.equal(s2["step"], s["step"])
        assert torch.equal(s2["exp_avg"], s["exp_avg"].bfloat16().float())
        assert torch.equal(s2["exp_avg_sq"], s["exp_avg_sq"].bfloat16().float())
    assert opt2.param_groups[0]["betas"] == (0.9, 0.99)
