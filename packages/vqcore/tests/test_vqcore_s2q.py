"""S²Q-VDiT: salient data selection, attention token weights, sparse token distillation, the registered method."""

import importlib.util
import math
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import vqcore
from vqcore.calib import ROOT, CalibItem, CalibrationSet, Capture
from vqcore.methods import list_methods
from vqcore.methods.s2q import (
    AttentionRecorder,
    QuantLoRA,
    TokenWeightedMSETerm,
    block_token_weights,
    salience_scores,
    select_calibration,
)
from vqcore.quant.prepare import quantized_layers

_spec = importlib.util.spec_from_file_location("vq_quant_tests_s2q", Path(__file__).with_name("test_vqcore_quant.py"))
_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_mod)
tiny_cogvideox = _mod.tiny_cogvideox


def cog_inputs(b=2, t=500, seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(hidden_states=torch.randn(b, 3, 4, 8, 8, generator=g),
                encoder_hidden_states=torch.randn(b, 4, 16, generator=g), timestep=torch.full((b,), t))


@pytest.fixture(scope="module")
def cog():
    """A tiny CogVideoX and a 2-sample × 5-step trajectory-like capture (inputs drift between steps)."""
    model = tiny_cogvideox()
    x = cog_inputs()
    with torch.no_grad(), Capture(model, targets="blocks") as cap:
        for i, t in enumerate((900, 700, 500, 300, 100)):
            model(hidden_states=x["hidden_states"] * (1 + 0.3 * i), encoder_hidden_states=x["encoder_hidden_states"],
                  timestep=torch.full((2,), t))
    return model, cap.result


# -- salient data selection -----------------------------------------------------------------------------------------
def constructed_pool(samples=3, steps=4, jump=(1, 1), loud=(1, 1), seed=0):
    """Root items x_t that change little between steps except sample ``jump[0]`` at step ``jump[1]`` (large relative
    change to the next step), and block inputs of equal norm except candidate ``loud`` (×10, a large Hessian norm)."""
    g = torch.Generator().manual_seed(seed)
    roots, block = [], []
    for s in range(samples):
        x = torch.randn(1, 2, 4, 4, generator=g)
        for k in range(steps):
            xk = x + 0.01 * k
            if (s, k) == (jump[0], jump[1] + 1) or (s == jump[0] and k > jump[1] + 1):
                xk = xk - 3.0 * x  # the big change happens between step jump[1] and jump[1] + 1
            roots.append(CalibItem((xk.clone(), torch.tensor([1000 - 100 * k])), {}, None, 1000 - 100 * k, k, s))
            h = torch.randn(1, 6, 8, generator=g)
            h = h / h.norm() * (10.0 if (s, k) == loud else 1.0)
            block.append(CalibItem((h,), {}, h.clone(), 1000 - 100 * k, k, s))
    return CalibrationSet({ROOT: roots, "blocks.0": block})


def test_salient_candidates_are_selected_and_the_budget_is_respected():
    calib = constructed_pool(jump=(1, 1), loud=(1, 1))
    scores = salience_scores(calib)
    keys = scores["keys"]
    assert keys[int(scores["diff"].argmax())] == (1, 1)
    assert keys[int(scores["quant"].argmax())] == (1, 1)
    subset, info = select_calibration(calib, k=1)
    assert info["kept"] == 1 and [(i.call_index, i.sample_index) for i in subset[ROOT]] == [(1, 1)]
    assert [(i.call_index, i.sample_index) for i in subset["blocks.0"]] == [(1, 1)]
    for k in (3, 5, 12):
        sub, info = select_calibration(calib, k=k)
        assert len(sub[ROOT]) == len(sub["blocks.0"]) == k == info["kept"]
        assert {(i.call_index, i.sample_index) for i in sub[ROOT]} == {
            (i.call_index, i.sample_index) for i in sub["blocks.0"]}
    with pytest.raises(ValueError, match="calib_size"):
        select_calibration(calib, k=13)


def test_product_needs_both_saliences():
    # diffusion salience high at (0, 2), Hessian salience high at (2, 0): neither wins alone over a candidate that
    # has both only if the product is used; here only one is high each, so the winner has the best product
    calib = constructed_pool(jump=(0, 2), loud=(2, 0))
    scores = salience_scores(calib)
    prod = (scores["diff"] / scores["diff"].max()) * (scores["quant"] / scores["quant"].max())
    sub, info = select_calibration(calib, k=2, stratify=False)  # the plain global Top-K of the product
    kept = {(i.call_index, i.sample_index) for i in sub[ROOT]}
    best = {scores["keys"][i] for i in prod.argsort(descending=True)[:2].tolist()}
    assert kept == best
    assert info["score_kept_mean"] > info["score_pool_mean"]


def shrinking_pool(samples=4, steps=8, seed=0):
    """Trajectories whose x_t shrinks towards the end (as a denoised latent's noise does): the relative change
    ‖x_t − x_{t−1}‖² / ‖x_t‖² grows with the step, so a global Top-K keeps only the last (low-noise) timesteps."""
    g = torch.Generator().manual_seed(seed)
    roots, block = [], []
    for s in range(samples):
        x = torch.randn(1, 2, 4, 4, generator=g)
        for k in range(steps):
            t = 1000 - 125 * k
            xk = x * (1.0 - 0.11 * k) + 0.01 * torch.randn(1, 2, 4, 4, generator=g)
            roots.append(CalibItem((xk, torch.tensor([t])), {}, None, t, k, s))
            h = torch.randn(1, 6, 8, generator=g)
            block.append(CalibItem((h,), {}, h.clone(), t, k, s))
    return CalibrationSet({ROOT: roots, "blocks.0": block})


def test_salient_selection_covers_the_timestep_range():
    """Issue 20: the global Top-K collapses onto the low-noise end; the stratified Top-K keeps one candidate per
    timestep group, and within each group the one with the highest salience."""
    calib = shrinking_pool()
    ts = sorted({it.timestep for it in calib[ROOT]})
    _, flat = select_calibration(calib, k=8, stratify=False)
    assert set(flat["kept_timesteps"]) <= set(ts[:3])  # the collapse the stratification prevents
    sub, info = select_calibration(calib, k=8)
    assert info["kept_timesteps"] == ts and info["stratify"] is True
    scores = salience_scores(calib)
    prod = (scores["diff"] / scores["diff"].max()) * (scores["quant"] / scores["quant"].max())
    for item in sub[ROOT]:
        same_t = [i for i, it in enumerate(calib[ROOT]) if it.timestep == item.timestep]
        best = max(same_t, key=lambda i: float(prod[i]))
        assert scores["keys"][best] == (item.call_index, item.sample_index)
    # fewer candidates than timesteps: contiguous groups, one pick each, still spanning the range
    _, info4 = select_calibration(calib, k=4)
    kept = info4["kept_timesteps"]
    assert len(kept) == 4 and [sum(t in grp for t in kept) for grp in (ts[0:2], ts[2:4], ts[4:6], ts[6:8])] == [1] * 4
    # more candidates than timesteps: every timestep twice
    sub16, _ = select_calibration(calib, k=16)
    counts = [sum(it.timestep == t for it in sub16[ROOT]) for t in ts]
    assert counts == [2] * 8


def test_smoothing_statistics_come_from_the_whole_calibration_set(cog):
    """Issue 20: the selected subset only decides what the blocks train on. With no training (iters=0, LoRA B = 0)
    a 2-candidate subset and the whole set give the same smoothed model, bit for bit."""
    model, calib = cog
    opts = dict(w_bits=4, a_bits=6, calib=calib, iters=0, progress=False)
    small = vqcore.quantize(model, "s2q-vdit", calib_size=2, **opts)
    whole = vqcore.quantize(model, "s2q-vdit", select="all", **opts)
    assert small.vqcore_report.details["kept"] == 2 and small.vqcore_report.details["smoothed_layers"] > 0
    x = cog_inputs(seed=3)
    with torch.no_grad():
        assert torch.equal(small(**x).sample, whole(**x).sample)


def test_selection_is_deterministic_and_random_control_is_seeded(cog):
    _, calib = cog
    a = select_calibration(calib, k=4)[1]["kept_keys"]
    b = select_calibration(calib, k=4)[1]["kept_keys"]
    assert a == b and len(a) == 4
    r1 = select_calibration(calib, k=4, select="random", seed=3)[1]["kept_keys"]
    r2 = select_calibration(calib, k=4, select="random", seed=3)[1]["kept_keys"]
    assert r1 == r2 and len(r1) == 4
    assert select_calibration(calib, select="all")[1]["kept"] == 10


def test_selection_on_tiny_cogvideox_is_fast(cog):
    _, calib = cog
    start = time.perf_counter()
    scores = salience_scores(calib)
    sub, info = select_calibration(calib, k=5)
    assert time.perf_counter() - start < 5.0
    assert info["pool"] == 10 and len(sub[ROOT]) == 5
    assert (scores["diff"] > 0).all() and (scores["quant"] > 0).all()


# -- attention token weights ----------------------------------------------------------------------------------------
class ToyAttention(nn.Module):
    """Single-head attention over tokens with given keys: ``q = x W_q``, ``k = fixed keys``."""

    def __init__(self, keys: torch.Tensor, q_scale: float = 1.0):
        super().__init__()
        self.register_buffer("keys", keys)
        self.q_scale = q_scale

    def forward(self, x):
        q = (x * self.q_scale)[:, None]
        k = self.keys.expand(x.shape[0], -1, -1)[:, None]
        return F.scaled_dot_product_attention(q, k, k)[:, 0]


class ToyBlock(nn.Module):
    def __init__(self, keys, q_scale=1.0, dim=4):
        super().__init__()
        self.attn1 = ToyAttention(keys, q_scale)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        return self.proj(x + self.attn1(x))


def test_tokens_receiving_more_attention_get_larger_weights():
    u = torch.tensor([1.0, 0.0, 0.0, 0.0])
    strength = torch.tensor([0.0, 1.0, 3.0, 0.5, 2.0])
    keys = strength[:, None] * u  # key j aligned with u by strength_j
    x = u.expand(1, 5, 4).clone() + 0.01 * torch.randn(1, 5, 4)
    block = ToyBlock(keys)
    item = CalibItem((x,), {}, None, 500.0, 0, 0)
    lam = block_token_weights(block, [item], distill="token")[id(item)]
    assert lam.shape == (1, 5)
    assert lam[0].argsort().tolist() == strength.argsort().tolist()
    assert torch.allclose(lam.mean(), torch.tensor(1.0))
    sparse = block_token_weights(block, [item], distill="sparse", keep=0.5)[id(item)]
    assert sparse[0, 2] > 0 and sparse[0, 0] == 0  # the most attended token kept, the least dropped
    assert torch.allclose(sparse.mean(), torch.tensor(1.0))


def test_uniform_attention_reduces_to_plain_per_token_mse():
    keys = torch.randn(6, 4)
    block = ToyBlock(keys, q_scale=0.0)  # q = 0: every query attends uniformly
    x = torch.randn(2, 6, 4)
    item = CalibItem((x,), {}, None, 500.0, 0, 0)
    lam = block_token_weights(block, [item], distill="token")[id(item)]
    assert torch.allclose(lam, torch.ones(2, 6), atol=1e-6)
    pred, target = torch.randn(2, 6, 4), torch.randn(2, 6, 4)
    term = TokenWeightedMSETerm()
    assert torch.allclose(term(pred, target, {"token_weights": lam}), F.mse_loss(pred, target), atol=1e-6)
    assert torch.allclose(term(pred, target, {}), F.mse_loss(pred, target))


def test_recorder_matches_explicit_softmax_of_a_diffusers_attention():
    from diffusers.models.attention_processor import Attention

    torch.manual_seed(0)
    attn = Attention(query_dim=16, heads=2, dim_head=8).eval()
    x = torch.randn(2, 7, 16)
    with torch.no_grad(), AttentionRecorder(attn, chunk=3) as rec:
        out = attn(x)
    q = attn.to_q(x).view(2, 7, 2, 8).transpose(1, 2)
    k = attn.to_k(x).view(2, 7, 2, 8).transpose(1, 2)
    probs = (q @ k.transpose(-1, -2) / math.sqrt(8)).softmax(-1)
    assert len(rec.received) == 1
    assert torch.allclose(rec.received[0], probs.mean(dim=(1, 2)), atol=1e-5)
    assert F.scaled_dot_product_attention is torch.nn.functional.scaled_dot_product_attention
    with torch.no_grad():
        assert torch.allclose(attn(x), out)  # the attention output itself is unchanged


def test_cogvideox_weights_cover_the_video_tokens_only(cog):
    model, calib = cog
    items = calib["transformer_blocks.0"][:2]
    lam = block_token_weights(model.transformer_blocks[0], items, distill="token")
    n_video = items[0].output[0].shape[1]
    for it in items:
        assert lam[id(it)].shape == (1, n_video)
        assert torch.allclose(lam[id(it)].mean(), torch.tensor(1.0), atol=1e-5)
        assert lam[id(it)].std() > 0  # real attention is not uniform


# -- the method ---------------------------------------------------------------------------------------------------
def block_error(q, calib, block="transformer_blocks.0"):
    with torch.no_grad():
        errs = [(q.get_submodule(block)(*it.args, **it.kwargs)[0] - it.output[0]).pow(2).mean() for it in calib[block]]
    return torch.stack(errs).mean().item()


def test_s2q_vdit_is_registered_trains_blocks_and_round_trips(cog, tmp_path):
    model, calib = cog
    assert "s2q-vdit" in list_methods()
    opts = dict(w_bits=4, a_bits=6, calib=calib, calib_size=6, progress=False)
    q0 = vqcore.quantize(model, "s2q-vdit", iters=0, **opts)
    q = vqcore.quantize(model, "s2q-vdit", iters=40, **opts)
    rep = q.vqcore_report
    assert rep.details["kept"] == 6 and rep.details["distill"] == "sparse" and rep.details["lora_adapters"] > 0
    assert 0 < rep.details["zero_weight_fraction"] < 1
    # budget rule (issue 20): the official lr x 10 000 iterations spread over 40 -> capped at x40
    assert rep.details["lr_scale"] == 40.0
    assert rep.details["lrs"] == pytest.approx({"weight_scale": 4e-5, "adapters": 4e-4}, rel=1e-12)
    assert block_error(q, calib) < block_error(q0, calib)  # the token-weighted loss trains the block
    vqcore.save(q, tmp_path / "q")
    fresh = tiny_cogvideox()
    fresh.load_state_dict(model.state_dict())
    loaded = vqcore.load(tmp_path / "q", fresh)
    x = cog_inputs(seed=7)
    with torch.no_grad():
        assert torch.allclose(loaded(**x).sample, q(**x).sample, atol=1e-6)
    assert any(isinstance(m.weight_adapter, QuantLoRA) for m in quantized_layers(loaded).values())


def test_lr_budget_rule():
    """lr x steps of the official run, capped at x100 and at xsteps (vqcore.methods.budget)."""
    from vqcore.methods.budget import lr_budget_scale

    assert lr_budget_scale(10000, 100) == 100.0  # exactly the official lr x steps
    assert lr_budget_scale(10000, 200) == 50.0
    assert lr_budget_scale(10000, 1000) == 10.0
    assert lr_budget_scale(50000, 200) == 100.0  # cap (x250 would be needed)
    assert lr_budget_scale(16000, 20) == 20.0  # short runs: at most x steps
    assert lr_budget_scale(100, 1000) == 0.1  # longer than official: the rates shrink
    with pytest.raises(ValueError, match="official_steps"):
        lr_budget_scale(0, 10)


@pytest.mark.parametrize("distill", ["plain", "token"])
def test_distillation_variants_run(cog, distill):
    model, calib = cog
    q = vqcore.quantize(model, "s2q-vdit", w_bits=4, a_bits=6, calib=calib, iters=5, distill=distill,
                        select="random", progress=False)
    assert q.vqcore_report.details["distill"] == distill
    assert q.vqcore_report.details["select"] == "random"


def test_bad_options_fail_before_work(cog):
    model, calib = cog
    with pytest.raises(ValueError, match="distill"):
        vqcore.quantize(model, "s2q-vdit", w_bits=4, a_bits=6, calib=calib, distill="dense")
    with pytest.raises(ValueError, match="keep"):
        vqcore.quantize(model, "s2q-vdit", w_bits=4, a_bits=6, calib=calib, keep=0.0)
    with pytest.raises(ValueError, match="select"):
        select_calibration(calib, select="best")
    with pytest.raises(ValueError, match="CalibrationSet"):
        vqcore.quantize(model, "s2q-vdit", w_bits=4, a_bits=6, calib=[cog_inputs()])
