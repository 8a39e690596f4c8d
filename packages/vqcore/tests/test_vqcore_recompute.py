"""Training memory (issue 17, item 4): quantized layers that recompute their fake-quantized weight in the backward pass
(``QuantModule.recompute``) and block activation checkpointing give the plain autograd path's gradients exactly, and
keep no float32 weight-sized tensor for the backward pass.

Why exact equality (no tolerance): the recompute runs the same operations, on the same device and thread count, on the
same stored inputs (the layer's input, its own weight, Δ, zp, adapters), so every recomputed tensor equals the one the
plain forward kept, and the backward pass then runs the same kernels on equal operands.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from torch import nn

import vqcore
from vqcore.calib import Capture
from vqcore.methods.qvdit import FrameMaskedRank1, LoRAWeightAdapter
from vqcore.quant import LowRankBranch, QConv2d, QLinear, QuantSpec
from vqcore.quant.modules import QuantModule
from vqcore.recon.engine import ReconConfig, optimize, recompute_layers

_spec = importlib.util.spec_from_file_location("vq_quant_tests_rc", Path(__file__).with_name("test_vqcore_quant.py"))
_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_mod)
tiny_cogvideox, tiny_unet = _mod.tiny_cogvideox, _mod.tiny_unet


def _stack(dtype: torch.dtype) -> nn.Sequential:
    """Two Q-VDiT-style linears (smoothing, learnable Δ, rank-4 LoRA inside the quantizer, rank-1 side branch; the
    second with the per-frame mask) and a conv with a static LSQ activation step and AdaRound weights — every
    trainable the methods use. The second layer's input requires grad (it depends on the first layer's trainables)."""
    torch.manual_seed(0)
    layers = []
    for i, k in enumerate((24, 32)):
        q = QLinear.from_float(nn.Linear(k, 32).to(dtype), QuantSpec(bits=4, granularity="per_channel", init="grid_lp"),
                               QuantSpec(bits=6, granularity="per_token"))
        q.set_smooth_scale(torch.rand(k) + 0.5)
        q.weight_quantizer.calibrate(q.effective_weight().detach())
        q.weight_quantizer.make_learnable()
        q.weight_adapter = LoRAWeightAdapter(k, 32, rank=4)
        q.side_branch = LowRankBranch(k, 32, 1) if i == 0 else FrameMaskedRank1(k, 32, 1, frames=3)
        for p in (q.weight_adapter.lora_B, q.side_branch.up.weight):  # non-zero: gradients reach every factor
            nn.init.normal_(p, std=0.05)
        layers.append(q)
    conv = QConv2d.from_float(nn.Conv2d(1, 4, 3, padding=1).to(dtype),
                              QuantSpec(bits=4, granularity="per_channel", init="mse"),
                              QuantSpec(bits=8, init="minmax", learn="lsq"))
    conv.weight_quantizer.init_adaround(conv.effective_weight().detach())
    conv.input_quantizer.calibrate(torch.randn(2, 1, 4, 8).to(dtype))
    for m in (*layers, conv):
        m.weight.requires_grad_(False)
        m.bias.requires_grad_(False)
    return nn.ModuleList([*layers, conv])


def _loss_and_grads(mods: nn.ModuleList, x: torch.Tensor, recompute: bool):
    with recompute_layers(mods, recompute):
        h = mods[1](mods[0](x))  # [2, 3 frames, 32]
        y = mods[2](h.reshape(2, 1, 4, 24))
        loss = (y.float() ** 2).mean() + (h.float() ** 2).mean()
        params = [p for p in mods.parameters() if p.requires_grad]
        grads = torch.autograd.grad(loss, params)
    return loss.detach(), grads


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_recompute_gives_the_plain_autograd_gradients_exactly(dtype):
    mods = _stack(dtype)
    mods.train()  # AdaRound's soft rounding (the training-mode path)
    x = torch.randn(2, 3, 24, generator=torch.Generator().manual_seed(1)).to(dtype)
    loss0, g0 = _loss_and_grads(mods, x, recompute=False)
    loss1, g1 = _loss_and_grads(mods, x, recompute=True)
    assert len(g0) == 3 * 2 + 2 + 1 + 2 + 2  # per linear Δ, A, B, down, up (+ mask); conv Δ_w, V, Δ_a
    assert torch.equal(loss0, loss1)
    assert all(a.abs().sum() > 0 for a in g0)  # every trainable gets a gradient: the comparison means something
    assert all(torch.equal(a, b) for a, b in zip(g0, g1))


def _saved_float32_weight_sized(mods: nn.ModuleList, x: torch.Tensor, recompute: bool) -> int:
    sizes = {m.weight.numel() for m in mods}
    found = []

    def pack(t):
        if t.dtype == torch.float32 and t.numel() in sizes:
            found.append(t.numel())
        return t

    with recompute_layers(mods, recompute), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        h = mods[1](mods[0](x))
        h.float().sum().backward()
    return len(found)


def test_recompute_keeps_no_float32_weight_for_the_backward_pass():
    mods = _stack(torch.bfloat16)
    x = torch.randn(2, 3, 24, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    # without recompute each layer keeps W·s + BA for its fake-quant backward (the autograd graph kept three copies)
    assert _saved_float32_weight_sized(mods, x, recompute=False) == 2
    assert _saved_float32_weight_sized(mods, x, recompute=True) == 0


def test_plain_float_forward_needs_no_weight_copy_and_equals_the_general_path():
    """Both quantizers off, no smoothing/adapters: ``F.linear(x, W, b)`` on the layer's own weight, equal to the
    general path (``x.float()``/``W.float()`` cast back to bf16 are the same values)."""
    mods = _stack(torch.bfloat16)
    q = QLinear.from_float(nn.Linear(24, 8).to(torch.bfloat16), QuantSpec(bits=4, granularity="per_channel"),
                           QuantSpec(bits=8, granularity="per_token"))
    q.quant_weight = q.quant_input = False
    x = torch.randn(5, 24).to(torch.bfloat16)
    assert q._plain(x) and not mods[0]._plain(x)
    with torch.no_grad():
        assert torch.equal(q(x), q._quant_forward(x))


def test_optimize_switches_recompute_on_while_training_only(monkeypatch):
    import vqcore.recon.engine as engine

    mods = _stack(torch.float32)
    x = torch.randn(2, 3, 24)
    seen = []
    params = [p for p in mods[0].parameters() if p.requires_grad]

    def step(i, rng):
        seen.append([m.recompute for m in mods if isinstance(m, QuantModule)])
        return mods[0](x).pow(2).mean()

    groups = [{"name": "all", "params": params, "lr": 1e-3}]
    optimize(mods, groups, step, ReconConfig(iters=2, progress=False, recompute=True))
    optimize(mods, groups, step, ReconConfig(iters=1, progress=False, recompute=False))
    optimize(mods, groups, step, ReconConfig(iters=1, progress=False))  # auto: a small module keeps the plain path
    monkeypatch.setattr(engine, "RECOMPUTE_MIN_PARAMS", 1000)
    optimize(mods, groups, step, ReconConfig(iters=1, progress=False))  # auto: a large one recomputes
    assert seen == [[True] * 3, [True] * 3, [False] * 3, [False] * 3, [True] * 3]
    assert not any(m.recompute for m in mods)


def _cog_calib(model, dtype):
    g = torch.Generator().manual_seed(3)
    with torch.no_grad(), Capture(model, targets="blocks") as cap:
        for t in (900, 500):
            model(hidden_states=torch.randn(2, 3, 4, 8, 8, generator=g).to(dtype),
                  encoder_hidden_states=torch.randn(2, 4, 16, generator=g).to(dtype), timestep=torch.full((2,), t))
    return cap.result


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_q_vdit_trains_the_same_model_with_recompute_and_block_checkpointing(dtype):
    """Whole-model distillation: plain autograd vs layer recompute + activation checkpointing of every block gives
    the same trained parameters bit for bit (TMD loss on, 4 AdamW steps)."""
    model = tiny_cogvideox().to(dtype)
    calib = _cog_calib(model, dtype)
    opts = dict(w_bits=4, a_bits=8, calib=calib, iters=4, progress=False, tmd=True)
    plain = vqcore.quantize(model, "q-vdit", recompute=False, grad_checkpointing=False, **opts)
    lean = vqcore.quantize(model, "q-vdit", recompute=True, grad_checkpointing=True, **opts)
    assert plain.vqcore_report.details["checkpointed_blocks"] == 0
    assert lean.vqcore_report.details["checkpointed_blocks"] == 2
    a, b = plain.state_dict(), lean.state_dict()
    trained = [k for k in a if "lora_B" in k]
    assert trained and all(a[k].abs().sum() > 0 for k in trained)  # the adapters moved
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_mpq_dm_rollouts_train_the_same_model_with_recompute(monkeypatch):
    from diffusers import DDIMScheduler

    import vqcore.recon.engine as engine

    model = tiny_unet()
    with torch.no_grad(), Capture(model, targets="blocks") as cap:
        for t in (800, 300):
            model(torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(t)), t)
    opts = dict(w_bits=4, a_bits=8, calib=cap.result, iters=2, num_steps=2, scheduler=DDIMScheduler(),
                progress=False)
    plain = vqcore.quantize(model, "mpq-dm", **opts)  # a tiny UNet: recompute="auto" leaves it off
    monkeypatch.setattr(engine, "RECOMPUTE_MIN_PARAMS", 0)
    seen = []
    monkeypatch.setattr(QuantModule, "_run", lambda self, fn, x, run=QuantModule._run: seen.append(
        self._recompute_active(x)) or run(self, fn, x))
    lean = vqcore.quantize(model, "mpq-dm", **opts)
    assert any(seen)  # the layers did recompute
    a, b = plain.state_dict(), lean.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _autograd_fake(x, scale, zp, qmin, qmax):
    """The graph ``UniformQuantizer._fake`` built before ``_FakeQuantSTE`` (round_ste, clamp, dequantize)."""
    from vqcore.quant import round_ste

    q = torch.clamp(round_ste(x / scale) + zp, qmin, qmax)
    return (q - zp) * scale


@pytest.mark.parametrize("case", ["per_channel", "per_group", "per_token", "weight_only_scale"])
def test_fake_quant_function_has_the_autograd_graph_gradients_exactly(case, monkeypatch):
    """``_FakeQuantSTE`` (keeps only x; backward on row chunks) against the autograd graph it replaces: the same
    values and the same gradients for x and Δ, bit for bit — clipped ranges so that the clamp mask matters."""
    import vqcore.quant.quantizer as qz

    monkeypatch.setattr(qz, "CHUNK_ELEMENTS", 256)  # many chunks
    g = torch.Generator().manual_seed(0)
    shape = {"per_channel": (70, 96), "per_group": (40, 6, 16), "per_token": (3, 10, 48),
             "weight_only_scale": (33, 50)}[case]
    x0 = torch.randn(*shape, generator=g) * (torch.rand(shape[0], *([1] * (len(shape) - 1)), generator=g) + 0.3)
    dims = tuple(range(1, len(shape))) if case != "per_group" and case != "per_token" else (len(shape) - 1,)
    hi, lo = x0.amax(dims, keepdim=True) * 0.6, x0.amin(dims, keepdim=True) * 0.6  # clipped: codes saturate
    s0 = ((hi - lo) / 15).clamp_min(1e-8)
    zp = torch.round(-lo / s0)
    w_out = torch.randn(shape, generator=g)
    results = []
    for fn in (_autograd_fake, qz._FakeQuantSTE.apply):
        x = x0.clone().requires_grad_(case != "weight_only_scale")
        s = s0.clone().requires_grad_(case != "per_token")  # dynamic per-token ranges are not trained
        y = fn(x, s, zp, 0, 15)
        wanted = [t for t in (x, s) if t.requires_grad]
        results.append((y.detach(), torch.autograd.grad((y * w_out).sum(), wanted)))
    (y_ref, g_ref), (y_new, g_new) = results
    assert torch.equal(y_ref, y_new)
    assert len(g_ref) == len(g_new) >= 1
    assert all(a.abs().sum() > 0 and torch.equal(a, b) for a, b in zip(g_ref, g_new))
    saturated = (torch.round(x0 / s0) + zp < 0) | (torch.round(x0 / s0) + zp > 15)
    assert saturated.any() and (~saturated).any()
