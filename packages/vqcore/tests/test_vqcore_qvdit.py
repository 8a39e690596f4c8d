"""Q-VDiT recipe (issue 6): TQE modules, the TMD loss term, the registered method, integer export of the TQE terms."""

import pytest
import torch
from torch import nn

import vqcore
from vqcore.calib import Capture
from vqcore.convert import QLinearInt, convert
from vqcore.functional import tmd_loss
from vqcore.methods import get_method, list_methods
from vqcore.methods.qvdit import FrameMaskedRank1, LoRAWeightAdapter, TMDTerm, attach_tqe, official_settings
from vqcore.quant import LowRankBranch, QLinear, QuantSpec
from vqcore.recon.engine import parameter_groups


def _layer(k=64, n=48, w_bits=3, a_bits=6, seed=0):
    torch.manual_seed(seed)
    lin = nn.Linear(k, n)
    q = QLinear.from_float(lin, QuantSpec(bits=w_bits, granularity="per_channel", init="grid_lp"),
                           QuantSpec(bits=a_bits, granularity="per_token"))
    q.weight.requires_grad_(False)
    q.bias.requires_grad_(False)
    q.weight_quantizer.calibrate(q.effective_weight().detach())
    return q


def _inputs(n_rows, k=64, seed=1, frames=None):
    g = torch.Generator().manual_seed(seed)
    scale = torch.ones(k)
    scale[:4] = 6.0  # a few outlier channels, as in DiT activations
    x = torch.randn(n_rows, k, generator=g) * scale + 0.5
    return x if frames is None else x.view(-1, frames, k)


class _Box(nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        return self.layer(x)


def test_lora_and_rank1_start_as_plain_quantization_and_init_like_the_code():
    q = _layer()
    x = _inputs(32)
    y0 = q(x)
    attach_tqe(_Box(q), lora_rank=32, side_rank=1)
    assert isinstance(q.weight_adapter, LoRAWeightAdapter) and type(q.side_branch) is LowRankBranch
    assert q.weight_adapter.lora_A.shape == (32, 64) and q.weight_adapter.lora_B.shape == (48, 32)
    assert q.side_branch.down.weight.shape == (1, 64) and q.side_branch.up.weight.shape == (48, 1)
    bound = 1 / 64**0.5  # kaiming_uniform(a=√5) on fan_in 64
    assert q.weight_adapter.lora_A.abs().max() <= bound and q.weight_adapter.lora_A.std() > bound / 4
    assert q.weight_adapter.lora_B.abs().sum() == 0 and q.side_branch.up.weight.abs().sum() == 0
    assert torch.equal(q(x), y0)


def _fit_layer(fp, train, y_train, tqe: dict | None, lrs: dict, steps=300):
    q = QLinear.from_float(fp, QuantSpec(bits=3, granularity="per_channel", init="grid_lp"),
                           QuantSpec(bits=8, granularity="per_token"))
    q.weight_quantizer.calibrate(q.effective_weight().detach())
    box = _Box(q)
    if tqe is not None:
        attach_tqe(box, **tqe)
    opt = torch.optim.AdamW(parameter_groups(box, lrs))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(0, len(train), (64,), generator=g)
        loss = (box(train[idx]) - y_train[idx]).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return box


def _held_out_errors(seed: int) -> dict[str, tuple[float, float]]:
    """(held-out, train) output MSE of one W3A8 layer after Δ-only training and after each TQE variant, all with the
    same 300 AdamW steps, batch, cosine schedule and weight-Δ lr (1e-4); adapters at 10× the Δ lr, the official
    ratio (1e-5 vs 1e-6). Inputs have a mean and outlier channels; train and held-out rows are independent."""
    fp = nn.Linear(64, 48)
    torch.manual_seed(seed)
    fp.weight.data = torch.randn(48, 64) * 0.1
    train, held = _inputs(512, seed=1 + 10 * seed), _inputs(512, seed=2 + 10 * seed)
    with torch.no_grad():
        y_train, y_held = fp(train), fp(held)

    def errs(box):
        with torch.no_grad():
            return float((box(held) - y_held).pow(2).mean()), float((box(train) - y_train).pow(2).mean())

    lrs = {"weight_scale": 1e-4, "adapters": 1e-3}
    return {"untrained": errs(_fit_layer(fp, train, y_train, None, {"weight_scale": 1e-4}, steps=0)),
            "delta_only": errs(_fit_layer(fp, train, y_train, None, {"weight_scale": 1e-4})),
            "rank1": errs(_fit_layer(fp, train, y_train, {"lora_rank": 0}, lrs)),
            "full": errs(_fit_layer(fp, train, y_train, {}, lrs))}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tqe_against_delta_only_training_on_held_out_rows(seed):
    """TQE versus training the weight step Δ alone, same budget, held-out rows (issue 20 item 2).

    Measured (docs/q-vdit.md, "Does TQE help?"): the rank-1 estimator outside the quantizer beats Δ-only training
    clearly on every seed (held-out MSE 0.048/0.053/0.051 vs 0.061/0.064/0.061); the full TQE (rank-32 LoRA *inside*
    the 3-bit quantizer + rank-1) does not: 0.072/0.071/0.071, worse than Δ-only, and worse on the *training* rows
    too, so it is an optimisation failure, not over-fitting: through the straight-through estimator the LoRA keeps
    flipping integer codes (1.2 % of codes per step over the last 100 steps, vs 0.01 % for Δ-only). The test pins
    both relations, so a change that makes the in-quantizer LoRA help (or the rank-1 term stop helping) shows here."""
    e = _held_out_errors(seed)
    held = {k: v[0] for k, v in e.items()}
    assert held["delta_only"] < 0.95 * held["untrained"], held  # Δ training itself works
    assert held["rank1"] < 0.9 * held["delta_only"], held
    # the in-quantizer LoRA costs more than the rank-1 term gains: full TQE is not better than Δ-only ...
    assert held["full"] > held["delta_only"], held
    # ... on the training rows as well (optimisation, not generalisation)
    assert e["full"][1] > e["delta_only"][1], e


def test_gradients_reach_only_the_tqe_parameters_and_weight_step():
    q = _layer()
    box = _Box(q)
    attach_tqe(box)
    with torch.no_grad():  # non-zero B so that A gets gradient too
        q.weight_adapter.lora_B.normal_(0, 0.01)
        q.side_branch.up.weight.normal_(0, 0.01)
    groups = parameter_groups(box, {"weight_scale": 1e-6, "adapters": 1e-5})
    assert {g["name"] for g in groups} == {"weight_scale", "adapters"}
    box(_inputs(16)).pow(2).sum().backward()
    named = dict(box.named_parameters())
    want = {"layer.weight_quantizer.scale", "layer.weight_adapter.lora_A", "layer.weight_adapter.lora_B",
            "layer.side_branch.down.weight", "layer.side_branch.up.weight"}
    got = {n for n, p in named.items() if p.grad is not None and p.grad.abs().sum() > 0}
    assert got == want
    assert not isinstance(q.weight_quantizer.zero_point, nn.Parameter)  # zero points stay frozen
    assert named["layer.weight"].grad is None and named["layer.bias"].grad is None


def test_lora_merges_exactly_into_the_integer_weight():
    q = _layer(w_bits=4)
    attach_tqe(_Box(q))
    with torch.no_grad():
        q.weight_adapter.lora_B.normal_(0, 0.05)
    codes, scale, zp = q.integer_weight()
    deq = (codes - zp[:, None]) * scale[:, None]
    assert torch.equal(deq, q.quantized_weight().detach())
    base = QLinear.from_float(nn.Linear(64, 48), None, None)
    base.weight.data = q.weight.data.clone()
    assert not torch.equal(deq, q.weight_quantizer(base.weight).detach())  # the adapter really changed the codes


def test_frame_mask_scales_the_rank1_term_per_frame():
    br = FrameMaskedRank1(64, 48, rank=1, frames=4)
    with torch.no_grad():
        br.up.weight.normal_()
        br.frame_mask.copy_(torch.tensor([0.0, 1.0, -1.0, 2.0]))
    x = _inputs(24, frames=4)  # [B·S=6, T=4, C]
    plain = br.up(br.down(x))
    out = br(x)
    for f, gain in enumerate([1.0, 2.0, 0.0, 3.0]):
        torch.testing.assert_close(out[:, f], gain * plain[:, f])
    with pytest.raises(ValueError, match="T=4"):
        br(_inputs(24, frames=3))


@pytest.mark.parametrize("temporal", [False, True])
def test_converted_layer_keeps_the_rank1_gain(temporal):
    frames = 4
    q = _layer(k=128, n=64, w_bits=4, a_bits=8)
    box = _Box(q)
    attach_tqe(box, frames=frames, temporal_patterns=("layer",) if temporal else ())
    assert isinstance(q.side_branch, FrameMaskedRank1) == temporal
    with torch.no_grad():
        q.weight_adapter.lora_B.normal_(0, 0.02)
        q.side_branch.up.weight.normal_(0, 0.5)
        if temporal:
            q.side_branch.frame_mask.copy_(torch.tensor([0.5, 1.0, 2.0, -0.5]))
    x = _inputs(8 * frames, k=128).view(8, frames, 128)
    with torch.no_grad():
        y_fake = box(x)
        side = q.side_branch(q.input_quantizer(x))
    convert(box)
    assert isinstance(box.layer, QLinearInt) and box.layer.spec.rank == 1
    assert box.layer.spec.side_row_period == (frames if temporal else 0)
    with torch.no_grad():
        y_int = box(x)
    err = (y_int - y_fake).norm() / y_fake.norm()
    assert err < 1e-4
    assert (y_int - (y_fake - side)).norm() / side.norm() > 0.99  # dropping the rank-1 term would be visible


def test_tmd_term_wraps_functional_with_lambda_and_mode():
    g = torch.Generator().manual_seed(0)
    y = torch.randn(2, 3, 5, 4, 4, generator=g)
    yq = y + 0.3 * torch.randn(y.shape, generator=g)
    for mode in ("per_frame", "code"):
        torch.testing.assert_close(TMDTerm(mode=mode)(yq, y, {}), tmd_loss(yq, y, 100.0, "bcthw", mode))
    assert not torch.allclose(TMDTerm(mode="code")(yq, y, {}), TMDTerm(mode="per_frame")(yq, y, {}))
    assert TMDTerm(lam=0.0)(yq, y, {}).item() == pytest.approx(((yq - y) ** 2).mean().item(), rel=1e-5)
    with pytest.raises(ValueError, match="mode"):
        TMDTerm(mode="frames")


def test_official_settings_table():
    assert official_settings(3, 6) == {**official_settings(3, 8), "config": "W3A6"}
    w4a6 = official_settings(4, 6)
    assert (w4a6["iters"], w4a6["tmd"], w4a6["alpha"], w4a6["step_fraction"]) == (10000, False, 0.0, 0.2)
    assert official_settings(6, 6)["alpha"] == 0.5 and official_settings(8, 8)["iters"] == 5000
    assert official_settings(3, 8)["passes"] == pytest.approx(30.0)


@pytest.fixture(scope="module")
def tiny_latte():
    from vqcore.zoo import build

    torch.manual_seed(0)
    model = build("moving-digits-dit", num_layers=1, num_heads=2, head_dim=16, num_frames=4, size=8,
                  caption_channels=16).eval()
    model.requires_grad_(False)
    x = torch.randn(2, 1, 4, 8, 8)
    with torch.no_grad(), Capture(model, targets=None) as cap:
        for t in (900, 500, 100):
            model(x, torch.full((2,), t), torch.tensor([1, 10]))
    return model, cap.result


def test_q_vdit_method_end_to_end_save_load_and_convert(tiny_latte, tmp_path):
    model, calib = tiny_latte
    assert "q-vdit" in list_methods() and get_method("q-vdit").kinds == ("dit",)
    q = vqcore.quantize(model, method="q-vdit", w_bits=3, a_bits=6, calib=calib, iters=4, progress=False)
    d = q.vqcore_report.details
    assert d["tmd"] and d["smoothing_alpha"] == 0.11 and d["official"]["config"] == "W3A6"
    assert d["temporal_masked_layers"] == 4 and d["frames"] == [4]  # Latte temporal attn1 q/k/v/out
    assert d["tqe_layers"] == 16 and d["iters"] == 4
    layers = {n: m for n, m in q.named_modules() if isinstance(m, QLinear)}
    temporal = [n for n, m in layers.items() if isinstance(m.side_branch, FrameMaskedRank1)]
    assert temporal and all("temporal_transformer_blocks" in n and ".attn1." in n for n in temporal)
    assert all(m.weight_adapter is not None for m in layers.values() if m.quant_weight)
    assert all(m.weight_quantizer.spec.init == "grid_lp" for m in layers.values())
    assert any(m.side_branch.up.weight.abs().sum() > 0 for m in layers.values())  # the branches trained
    x = calib.items["__model__"][0]
    args = x.args
    with torch.no_grad():
        y = q(*args)
    vqcore.save(q, tmp_path / "q")
    from vqcore.zoo import build

    fresh = build("moving-digits-dit", num_layers=1, num_heads=2, head_dim=16, num_frames=4, size=8,
                  caption_channels=16).eval()
    q2 = vqcore.load(tmp_path / "q", fresh)
    with torch.no_grad():
        torch.testing.assert_close(q2(*args), y)
        convert(q2)
        assert sum(isinstance(m, QLinearInt) and m.spec.side_row_period == 4 for m in q2.modules()) == 4
        y_int = q2(*args)
    assert (y_int - y).norm() / y.norm() < 1e-3
    from vqcore.convert import load_converted, save_converted

    save_converted(q2, tmp_path / "int")
    q3 = load_converted(build("moving-digits-dit", num_layers=1, num_heads=2, head_dim=16, num_frames=4, size=8,
                              caption_channels=16).eval(), tmp_path / "int")
    with torch.no_grad():
        torch.testing.assert_close(q3(*args), y_int)  # the frame gains travel with the integer checkpoint


def test_q_vdit_w4a6_defaults_and_ablation_switches(tiny_latte):
    model, calib = tiny_latte
    q = vqcore.quantize(model, method="q-vdit", w_bits=4, a_bits=6, calib=calib, iters=2, tqe=False,
                        progress=False)
    d = q.vqcore_report.details
    assert d["tmd"] is False and d["smoothing_alpha"] == 0.0 and d["tqe_layers"] == 0
    assert d["calibration_items_used"] == 2  # every 5th step of 3 → one timestep × 2 samples
    assert set(d["lrs"]) == {"weight_scale"}
    assert all(m.side_branch is None for m in q.modules() if isinstance(m, QLinear))
    with pytest.raises(TypeError, match="unknown options"):
        vqcore.quantize(model, method="q-vdit", w_bits=4, a_bits=8, calib=calib, itres=3)


def test_q_vdit_scaling_rule_sets_iterations_and_learning_rates(tiny_latte):
    """``iters=None``: the official number of passes over the calibration set (W8A8: 5000·4/2000 = 10) over *our*
    set (3 timesteps × 2 samples = 6 items, batch 4) → ceil(10·6/4) = 15 iterations; learning rates × min(5000/15,
    100, 15) = ×15 (the Adam step budget rule with its caps)."""
    model, calib = tiny_latte
    q = vqcore.quantize(model, method="q-vdit", w_bits=8, a_bits=8, calib=calib, progress=False)
    d = q.vqcore_report.details
    assert d["official"]["passes"] == pytest.approx(10.0) and d["calibration_items_used"] == 6
    assert d["iters"] == 15
    assert d["lrs"] == pytest.approx({"weight_scale": 1e-6 * 15, "adapters": 1e-5 * 15})
    q1 = vqcore.quantize(model, method="q-vdit", w_bits=8, a_bits=8, calib=calib, iters=3, lr_scale=1.0,
                         progress=False)
    assert q1.vqcore_report.details["lrs"] == pytest.approx({"weight_scale": 1e-6, "adapters": 1e-5})
