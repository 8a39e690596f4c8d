"""Training engine (loss, schedule, resumable checkpoints), evaluation definitions, CLI and smoke entry point."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from commons.data.lol import SyntheticLowLightDataset
from commons.metrics import psnr
from walmafa import Enhancer, TrainConfig, WalMaFaLoss, evaluate_pairs, pad_to_multiple, tv_loss
from walmafa.cli import main as cli_main

TINY = {"dim": 8, "num_blocks": (1, 1, 1), "d_state": 4}


@pytest.fixture(scope="module")
def data():
    return (SyntheticLowLightDataset("train", size=32, variants=1, seed=0),
            SyntheticLowLightDataset("test", size=32, variants=1, seed=0))


def test_loss_terms():
    x = torch.rand(2, 3, 24, 24)
    assert WalMaFaLoss()(x, x).item() == pytest.approx(0.05 * tv_loss(x).item(), abs=1e-5)
    flat = torch.full((1, 3, 8, 8), 0.3)
    assert tv_loss(flat).item() == 0.0
    ramp = torch.arange(8.0).repeat(1, 3, 8, 1)  # +1 per column: Σ Δw² / N_w = 1, Δh = 0
    assert tv_loss(ramp).item() == pytest.approx(2.0)
    y = torch.rand(2, 3, 24, 24, requires_grad=True)
    WalMaFaLoss()(y, x).backward()
    assert y.grad.abs().sum() > 0


def test_training_ssim_matches_skimage():
    """The differentiable SSIM of the loss equals scikit-image's Gaussian-window SSIM (σ 1.5, population
    covariance, valid region), i.e. what the released ``pytorch_msssim.ssim(data_range=1)`` computes."""
    metrics = pytest.importorskip("skimage.metrics")
    from walmafa.losses import ssim_torch

    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 40, 36, generator=g, dtype=torch.float64)
    y = (x * 0.6 + 0.3 * torch.rand(1, 3, 40, 36, generator=g, dtype=torch.float64)).clamp(0, 1)
    ref = metrics.structural_similarity(x[0].numpy(), y[0].numpy(), data_range=1.0, channel_axis=0,
                                        gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    assert ssim_torch(x, y).item() == pytest.approx(ref, abs=1e-9)
    assert ssim_torch(x, x).item() == pytest.approx(1.0)

def test_schedule_warmup_then_cosine():
    cfg = TrainConfig(steps=100, warmup_steps=10, lr=1e-3, lr_min=1e-5)
    lrs = [cfg.lr_at(s) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert lrs[-1] == pytest.approx(1e-5, rel=0.05)
    with pytest.raises(ValueError, match="patch_size"):
        TrainConfig(patch_size=30)


def test_padding_and_evaluation_definitions(data):
    _, test = data
    x = torch.rand(1, 3, 37, 50)
    xp, (h, w) = pad_to_multiple(x, 16)
    assert xp.shape[-2:] == (48, 64) and (h, w) == (37, 50) and torch.equal(xp[..., :37, :50], x)

    class Identity(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(1))

        def forward(self, img):
            assert img.shape[-1] % 16 == 0 and img.shape[-2] % 16 == 0
            return img + self.p

    res = evaluate_pairs(Identity(), test)
    expected = np.mean([psnr(lo, hi) for lo, hi in (test[i] for i in range(len(test)))])
    assert res["psnr"] == pytest.approx(expected) and res["n"] == len(test)
    # GT-mean rescales brightness before scoring: a uniformly darkened target is then matched exactly
    class Dark(Identity):
        def forward(self, img):
            return img * 0 + 0.1 + self.p

    flat = [(torch.zeros(3, 16, 16), torch.full((3, 16, 16), 0.4))]
    assert evaluate_pairs(Dark(), flat, gt_mean=True)["psnr"] == math.inf
    assert evaluate_pairs(Dark(), flat)["psnr"] == pytest.approx(10 * math.log10(1 / 0.09))


def test_training_checkpoints_and_resume_is_exact(tmp_path, data):
    train, _ = data
    cfg = TrainConfig(steps=6, batch_size=2, patch_size=32, warmup_steps=1, log_every=1, checkpoint_every=3, seed=5)
    full = Enhancer("walmafa", device="cpu", seed=1, **TINY)
    hist = full.fit(train, cfg, run_dir=tmp_path / "full", progress=False)
    assert len(hist["loss"]) == 6 and all(math.isfinite(v) for v in hist["loss"])
    assert (tmp_path / "full" / "state.pt").exists() and (tmp_path / "full" / "final" / "model.safetensors").exists()

    part = Enhancer("walmafa", device="cpu", seed=1, **TINY)
    part.fit(train, cfg, run_dir=tmp_path / "part", progress=False, stop_after=4)  # "interrupted" after 4 steps
    assert not (tmp_path / "part" / "final").exists()
    resumed = Enhancer("walmafa", device="cpu", seed=99, **TINY)  # different init: everything must come from state
    resumed.fit(train, cfg, run_dir=tmp_path / "part", resume=True, progress=False)
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=k)
    with pytest.raises(FileExistsError):
        Enhancer("walmafa", device="cpu", **TINY).fit(train, cfg, run_dir=tmp_path / "full", progress=False)


def test_process_shares_of_the_batch_stream():
    """With W processes, step k of process r is global batch start + k·W + r of the single-process stream, every
    process makes the same number of steps, and a resumed stream continues the same batches."""
    from walmafa.training import _StepBatches

    single = list(_StepBatches(7, 3, seed=4, start=0, steps=9))
    assert len(single) == 9 and len({i for b in single for i, _ in b}) == 7  # epochs cover the dataset
    shares = [list(_StepBatches(7, 3, seed=4, start=2, steps=9, rank=r, world=2)) for r in range(2)]
    assert [len(x) for x in shares] == [4, 4]  # 7 global steps on 2 processes: 4 each (the last one reads batch 9)
    for k in range(3):
        assert shares[0][k] == single[2 + 2 * k] and shares[1][k] == single[3 + 2 * k]
    assert shares[0][3] == single[8]
    with pytest.raises(ValueError, match="rank"):
        _StepBatches(7, 3, seed=4, start=0, steps=9, rank=2, world=2)

def test_baseline_learns_on_synthetic_default(data):
    train, test = data
    enh = Enhancer("retinex_unet", device="cpu", seed=0, width=8)
    before = enh.evaluate(test)["psnr"]
    enh.fit(train, TrainConfig(steps=40, batch_size=4, patch_size=32, warmup_steps=2, lr=2e-3), progress=False)
    assert enh.evaluate(test)["psnr"] > before + 1.0


def test_cli_train_eval_enhance(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli_main(["train", "--data", "synthetic", "--size", "32", "--steps", "2", "--batch-size", "2",
                     "--patch-size", "32", "--warmup-steps", "1", "--model-kw", '{"dim": 8, "num_blocks": [1,1,1], '
                     '"d_state": 4}', "--out", str(out), "--no-progress", "--device", "cpu"]) == 0
    ck = out / "final"
    assert cli_main(["eval", "--checkpoint", str(ck), "--data", "synthetic", "--size", "32", "--device", "cpu",
                     "--json", str(tmp_path / "res.json")]) == 0
    assert "PSNR" in capsys.readouterr().out
    img = (np.random.default_rng(0).random((21, 30, 3)) * 60).astype(np.uint8)  # odd size: padded and cropped
    Image.fromarray(img).save(tmp_path / "in.png")
    assert cli_main(["enhance", str(tmp_path / "in.png"), str(tmp_path / "out.png"), "--checkpoint", str(ck),
                     "--device", "cpu"]) == 0
    with Image.open(tmp_path / "out.png") as im:
        assert im.size == (30, 21)


def test_smoke_entry_point():
    from walmafa.smoke import main

    main()


def test_validation_keeps_the_best_checkpoint_and_logs(tmp_path, data):
    train, test = data
    cfg = TrainConfig(steps=4, batch_size=2, patch_size=32, warmup_steps=1, log_every=1, val_every=2, grad_clip=0.5,
                      seed=3)
    enh = Enhancer("retinex_unet", device="cpu", seed=0, width=8)
    hist = enh.fit(train, cfg, run_dir=tmp_path / "run", val_set=test, progress=False)
    assert hist["val_step"] == [2, 4] and len(hist["val_psnr"]) == len(hist["val_ssim"]) == 2
    best = hist["best"]
    assert best["psnr"] == max(hist["val_psnr"])
    assert best["step"] == hist["val_step"][hist["val_psnr"].index(best["psnr"])]
    reloaded = Enhancer.load(tmp_path / "run" / "best", device="cpu")
    assert reloaded.evaluate(test)["psnr"] == pytest.approx(best["psnr"], abs=1e-9)  # the kept weights are the best
    lines = [json.loads(s) for s in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "val_psnr" in r] == [2, 4] and sum("loss" in r for r in lines) == 4
    with pytest.raises(ValueError, match="grad_clip"):
        TrainConfig(grad_clip=0.0)


def test_resume_refuses_a_different_setup(tmp_path, data):
    """A resumed run continues one trajectory: another batch size, schedule, model or width is refused with one line
    naming the difference; bookkeeping fields (checkpoint/log/validation intervals, loader workers) may change."""
    train, _ = data
    cfg = dict(steps=3, batch_size=2, patch_size=32, warmup_steps=1, checkpoint_every=1, seed=2)
    run = tmp_path / "run"
    Enhancer("retinex_unet", device="cpu", seed=0, width=8).fit(train, TrainConfig(**cfg), run_dir=run,
                                                                  progress=False, stop_after=1)
    for kw, changed, match in ((dict(width=8), dict(batch_size=4), "batch_size 2 != 4"),
                               (dict(width=8), dict(steps=5), "steps 3 != 5"),
                               (dict(width=16), {}, "model width 8 != 16")):
        with pytest.raises(ValueError, match=match):
            Enhancer("retinex_unet", device="cpu", **kw).fit(train, TrainConfig(**{**cfg, **changed}), run_dir=run,
                                                               resume=True, progress=False)
    with pytest.raises(ValueError, match="model 'retinex_unet' != 'walmafa'"):
        Enhancer("walmafa", device="cpu", **TINY).fit(train, TrainConfig(**cfg), run_dir=run, resume=True,
                                                      progress=False)
    hist = Enhancer("retinex_unet", device="cpu", width=8).fit(
        train, TrainConfig(**{**cfg, "checkpoint_every": 5, "log_every": 2}), run_dir=run, resume=True,
        progress=False)
    assert hist["step"][-1] == 3 and (run / "final" / "model.safetensors").exists()


def test_grad_clip_bounds_the_update(data):
    """One Adam step moves a weight by lr·g/(|g| + eps) ≈ lr where |g| >> eps (5e-5). Clipping the global norm to
    1e-12 makes every |g| <= 1e-12, so no weight moves by more than lr·1e-12/5e-5 = 2e-8·lr; unclipped, some weight
    moves by more than lr/2 (any gradient entry above eps)."""
    train, _ = data
    lr = 1e-3
    moved = {}
    for clip in (None, 1e-12):
        enh = Enhancer("retinex_unet", device="cpu", seed=0, width=8)
        before = [p.detach().clone() for p in enh.model.parameters()]
        enh.fit(train, TrainConfig(steps=1, batch_size=2, patch_size=32, warmup_steps=0, lr=lr, lr_min=lr,
                                   grad_clip=clip), progress=False)
        moved[clip] = max((p.detach() - b).abs().max().item() for p, b in zip(enh.model.parameters(), before))
    assert moved[None] > 0.5 * lr
    assert moved[1e-12] <= 2e-8 * lr * 1.01 + 1e-12


def test_best_checkpoint_is_the_best_validation_not_the_last(tmp_path, data, monkeypatch):
    """Scripted validation scores (step 2 better than step 4): best/ must hold the step-2 weights, which an
    interrupted run of the same schedule saved at step 2."""
    import walmafa.engine as engine
    from commons.io import load_checkpoint, load_training_state

    train, test = data
    scores = iter([20.0, 10.0])
    monkeypatch.setattr(engine, "evaluate_pairs", lambda *a, **k: {"psnr": next(scores), "ssim": 0.5})
    cfg = TrainConfig(steps=4, batch_size=2, patch_size=32, warmup_steps=1, val_every=2, seed=3)
    hist = Enhancer("retinex_unet", device="cpu", seed=0, width=8).fit(train, cfg, run_dir=tmp_path / "run",
                                                                         val_set=test, progress=False)
    assert hist["val_step"] == [2, 4] and hist["best"]["step"] == 2
    Enhancer("retinex_unet", device="cpu", seed=0, width=8).fit(train, cfg, run_dir=tmp_path / "half",
                                                                 progress=False, stop_after=2)
    at2 = load_training_state(tmp_path / "half" / "state.pt")["model"]
    best, _ = load_checkpoint(tmp_path / "run" / "best")
    final, _ = load_checkpoint(tmp_path / "run" / "final")
    for k, v in at2.items():
        torch.testing.assert_close(best[k], v, atol=0, rtol=0, msg=k)
    assert any(not torch.equal(final[k], v) for k, v in at2.items() if v.is_floating_point())
