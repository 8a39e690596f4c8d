"""MPQ-DM (method "mpq-dm"): OMQ mixed-width quantizer, k search, LoRA, TRD with/without gradients, end to end."""

import pytest
import torch
from torch import nn

import vqcore
from vqcore.calib import Capture
from vqcore.functional import channel_kurtosis, omq_bit_allocation, spatial_relation_kl
from vqcore.methods import get_method, list_methods
from vqcore.methods.mpqdm import TRDTerm, apply_omq, select_omq_k, trd_features
from vqcore.methods.mpqdm_layers import MPQLoRA, OMQQuantizer
from vqcore.quant import QuantSpec
from vqcore.quant.modules import QConv2d, QLinear, QuantModule
from vqcore.quant.quantizer import UniformQuantizer


def heavy_tailed_weight(out=20, inp=64, heavy=(3, 7, 11, 15), seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out, inp, generator=g) * 0.1
    for c in heavy:  # a few large outliers: high kurtosis
        w[c, :3] = torch.tensor([2.0, -1.8, 2.2])
    return w, list(heavy)


def test_omq_forward_is_sum_of_three_masked_groups_and_budget_is_exact():
    w, heavy = heavy_tailed_weight()
    bits = omq_bit_allocation(channel_kurtosis(w), 4, 4)
    q = OMQQuantizer(QuantSpec(bits=4, granularity="per_channel", init="minmax"), bits)
    q.calibrate(w)
    assert float(q.channel_bits.float().mean()) == 4.0  # the average bit budget holds exactly
    assert sorted(torch.nonzero(q.channel_bits == 5).flatten().tolist()) == heavy  # outlier channels get n+1
    manual = torch.zeros_like(w)
    for b in (3, 4, 5):
        uq = UniformQuantizer(QuantSpec(bits=b, granularity="per_channel", init="minmax"))
        mask = (bits == b).float().unsqueeze(1)
        manual += mask * uq(w)
    torch.testing.assert_close(q(w), manual)
    # integer form: codes within each channel's own width, (codes - zp) * scale reproduces the forward
    codes, scale, zp = q.quantize_codes(w)
    assert q.bits == 5
    assert bool((codes <= (2 ** q.channel_bits.unsqueeze(1) - 1)).all()) and bool((codes >= 0).all())
    torch.testing.assert_close((codes - zp) * scale, q(w))
    st = q.storage_bits(w.shape[1])
    assert st["packed"] == 4 * w.numel() and st["padded"] == 5 * w.numel()


def test_omq_one_bit_group_at_w2():
    w, _ = heavy_tailed_weight()
    q = OMQQuantizer(QuantSpec(bits=2, granularity="per_channel", init="minmax"),
                     omq_bit_allocation(channel_kurtosis(w), 2, 4))
    out = q(w)
    low = q.channel_bits == 1
    assert int(low.sum()) == 4
    assert all(torch.unique(out[c]).numel() <= 2 for c in torch.nonzero(low).flatten().tolist())


def test_k_selection_picks_lower_error_candidate():
    torch.manual_seed(0)
    w, _ = heavy_tailed_weight(out=20, inp=64)
    lin = nn.Linear(64, 20)
    lin.weight.data.copy_(w)
    layer = QLinear.from_float(lin, QuantSpec(bits=3, granularity="per_channel"), None)
    x = torch.randn(32, 64)
    best, errors = select_omq_k(layer, x, 3, [0, 2, 4])
    assert set(errors) == {0, 2, 4} and errors[best] == min(errors.values())
    # recompute the errors independently: masked per-channel min-max quantizers at n-1/n/n+1
    kurt = channel_kurtosis(w)
    for k, err in errors.items():
        bits = omq_bit_allocation(kurt, 3, k)
        wq = sum((bits == b).float().unsqueeze(1) * UniformQuantizer(bits=b, granularity="per_channel")(w)
                 for b in (2, 3, 4))
        with torch.no_grad():
            ref = nn.functional.mse_loss(nn.functional.linear(x, wq, lin.bias), lin(x))
        assert err == pytest.approx(float(ref), rel=1e-5)
    assert len(set(errors.values())) == 3  # the candidates really differ


def test_apply_omq_smooths_and_installs_mixed_quantizer():
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 20, 3, padding=1)
    layer = QConv2d.from_float(conv, QuantSpec(bits=4, granularity="per_channel", init="mse"), None)
    x = torch.randn(4, 8, 6, 6) * torch.linspace(0.1, 5, 8).view(1, -1, 1, 1)
    absmax = x.abs().transpose(0, 1).flatten(1).amax(1)
    info = apply_omq(layer, x, absmax, alpha=0.5, k_fractions=(0.0, 0.1, 0.2))
    assert info["smoothed"] and layer.smooth_scale is not None
    assert isinstance(layer.weight_quantizer, OMQQuantizer)
    assert info["k"] == min(info["errors"], key=info["errors"].get)
    assert float(layer.weight_quantizer.channel_bits.float().mean()) == 4.0
    ref = conv(x)
    assert nn.functional.mse_loss(layer(x), ref) < 0.1 * ref.pow(2).mean()  # W4, smoothing folded back exactly
    codes, scale, zp = layer.integer_weight()
    torch.testing.assert_close(((codes - zp.view(-1, 1)) * scale.view(-1, 1)).view_as(conv.weight),
                               layer.quantized_weight())


def test_conv_lora_merges_per_kernel_position_and_starts_at_zero():
    lora = MPQLoRA((6, 4, 3, 3), rank=2)
    assert float(lora().abs().sum()) == 0.0
    with torch.no_grad():
        lora.lora_B.normal_()
    d = lora()
    for i in range(3):
        for j in range(3):
            torch.testing.assert_close(d[:, :, i, j], lora.lora_B[:, :, i, j] @ lora.lora_A[:, :, i, j])
    lin = MPQLoRA((5, 7), rank=3)
    assert lin().shape == (5, 7)


def _feature_model():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, 3, padding=1)
    layer = QConv2d.from_float(conv, QuantSpec(bits=4, granularity="per_channel"), None)
    layer.weight_adapter = MPQLoRA(conv.weight.shape, rank=4)
    with torch.no_grad():
        layer.weight_adapter.lora_B.normal_(std=0.05)
    for p in layer.parameters():
        p.requires_grad_(False)
    for p in layer.weight_adapter.parameters():
        p.requires_grad_(True)
    return conv, layer


def test_trd_has_gradients_on_quantized_parameters_and_detached_ablation_has_none():
    conv, layer = _feature_model()
    x0, x1 = torch.randn(2, 3, 6, 6), torch.randn(2, 3, 6, 6)
    for grad in (True, False):
        term = TRDTerm(weight=100.0, grad=grad)
        layer.zero_grad(set_to_none=True)
        with torch.no_grad():
            first = term(None, None, {"feat_q": layer(x0), "feat_fp": conv(x0), "step": 0})
        assert float(first) == 0.0  # needs two consecutive steps
        loss = term(None, None, {"feat_q": layer(x1), "feat_fp": conv(x1), "step": 1})
        assert float(loss) > 0
        if grad:
            loss.backward()
            g = layer.weight_adapter.lora_A.grad
            assert g is not None and float(g.abs().sum()) > 0
        else:
            assert not loss.requires_grad  # the released code's TRD trains nothing


def test_trd_zero_when_features_match_and_time_smoothing():
    f0, f1 = torch.randn(2, 4, 5, 5), torch.randn(2, 4, 5, 5)
    term = TRDTerm()
    term(None, None, {"feat_q": f0, "feat_fp": f0, "step": 0})
    assert float(term(None, None, {"feat_q": f1, "feat_fp": f1, "step": 1})) == pytest.approx(0.0, abs=1e-5)
    g0 = torch.randn(2, 4, 5, 5)
    term(None, None, {"feat_q": g0, "feat_fp": f0, "step": 0})
    val = term(None, None, {"feat_q": f1, "feat_fp": f1, "step": 1})
    ref = 100 * spatial_relation_kl((f1 + g0) / 2, (f1 + f0) / 2)
    assert float(val) == pytest.approx(float(ref), rel=1e-5)
    assert trd_features(torch.randn(2, 9, 4)).shape == (2, 4, 9, 1)


def tiny_scheduler():
    """The schedule tiny_unet_calib samples with (diffusers' default linear betas): mpq-dm no longer guesses it."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(clip_sample=False, set_alpha_to_one=True, timestep_spacing="trailing")


TINY = {"scheduler": tiny_scheduler()}  # copied by mpq-dm, never mutated


def tiny_unet_calib():
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    model = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                        up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4).eval()
    model.requires_grad_(False)
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(clip_sample=False, timestep_spacing="trailing")
    sched.set_timesteps(4)
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad(), Capture(model, targets=None) as cap:
        for t in sched.timesteps:
            eps = model(x, t).sample
            x = sched.step(eps, t, x).prev_sample
    return model, cap.result


def test_mpq_dm_end_to_end_on_diffusers_unet():
    assert "mpq-dm" in list_methods() and get_method("mpq-dm").needs_teacher
    model, calib = tiny_unet_calib()
    q = vqcore.quantize(model, method="mpq-dm", w_bits=3, a_bits=4, calib=calib, **TINY, iters=2, batch_size=2,
                        k_fractions=(0.0, 0.25), progress=False)
    d = q.vqcore_report.details
    assert d["num_steps"] == 4 and d["optimizer_steps"] == 8 and d["trd_grad"] and d["trd_module"] == "up_blocks.1"
    layers = {n: m for n, m in q.named_modules() if isinstance(m, QuantModule)}
    special = set(d["special_w8a8_layers"])
    assert len(special) == 4 and all(layers[n].weight_quantizer.bits == 8 for n in special)
    main = [m for n, m in layers.items() if n not in special]
    assert all(m.weight_adapter is not None for m in main)
    assert any(float(m.weight_adapter.lora_B.abs().sum()) > 0 for m in main)  # LoRA trained
    omq = [m.weight_quantizer for m in main if isinstance(m.weight_quantizer, OMQQuantizer)]
    assert omq and all(float(w.channel_bits.float().mean()) == 3.0 for w in omq)
    tables = [m.input_quantizer for m in main if m.input_quantizer is not None]
    assert all(t.spec.timesteps == 4 and t.scale.shape[0] == 4 for t in tables)
    assert any(not torch.equal(t.scale[0], t.scale[-1]) for t in tables)  # the per-step rows trained apart
    x = torch.randn(1, 1, 8, 8)
    with torch.no_grad():
        y = q(x, 500).sample
    assert torch.isfinite(y).all()


def test_mpq_dm_runs_on_a_dit_and_ablation_flags():
    from vqcore.zoo import build

    torch.manual_seed(0)
    model = build("moving-digits-dit", num_layers=1, num_heads=2, head_dim=16, num_frames=4, size=8,
                  caption_channels=16).eval()
    model.requires_grad_(False)
    x = torch.randn(2, 1, 4, 8, 8)
    with torch.no_grad(), Capture(model, targets=None) as cap:
        for t in (999, 666, 333):
            model(x, torch.full((2,), t), torch.tensor([1, 10]))
    q = vqcore.quantize(model, method="mpq-dm", w_bits=4, a_bits=8, calib=cap.result, iters=1, batch_size=2,
                        omq=False, trd_grad=False, progress=False)
    d = q.vqcore_report.details
    assert d["num_steps"] == 3 and not d["omq"] and not d["trd_grad"]
    assert not any(isinstance(m.weight_quantizer, OMQQuantizer) for m in q.modules() if isinstance(m, QuantModule))
    with torch.no_grad():
        assert torch.isfinite(q(x, torch.full((2,), 500), torch.tensor([1, 10]))).all()


def test_step_table_rows_only_move_at_their_own_step_and_match_sampling(monkeypatch):
    """Regression (issue 8 collapse): AdamW kept moving every row of the per-step activation tables at every
    optimiser step (momentum of rows the loss did not use), so rows drifted away from what their own step trained.
    Between two consecutive training forwards only the row of the earlier step may change; the selector used at
    sampling picks, for each schedule timestep, the row that was trained at it."""
    model, calib = tiny_unet_calib()
    seen: list[tuple[int, torch.Tensor]] = []
    watched: list[UniformQuantizer] = []
    orig = UniformQuantizer.set_timestep

    def spy(self, index):
        if isinstance(self.scale, nn.Parameter) and self.scale.requires_grad:
            if not watched:
                watched.append(self)
            if self is watched[0]:
                seen.append((int(index), self.scale.detach().flatten().clone()))
        orig(self, index)

    monkeypatch.setattr(UniformQuantizer, "set_timestep", spy)
    q = vqcore.quantize(model, method="mpq-dm", w_bits=4, a_bits=8, calib=calib, **TINY, iters=2, batch_size=2,
                        omq=False, trd=False, lora_rank=0, lrs={"act_scale": 0.2}, progress=False)
    monkeypatch.setattr(UniformQuantizer, "set_timestep", orig)
    assert [k for k, _ in seen] == [0, 1, 2, 3] * 2
    for (k, before), (_, after) in zip(seen, seen[1:]):
        changed = torch.nonzero(before != after).flatten().tolist()
        assert changed == [k]  # the step's own row moved (lr 20 % of Δ), no other row did
    final = watched[0].scale.detach().flatten()
    assert torch.equal(final[:3], seen[-1][1][:3]) and not torch.equal(final[3], seen[-1][1][3])
    assert bool((final > 0).all())
    d = q.vqcore_report.details
    selector = q.vq_step_tables
    assert [k for k, _ in d["trained_rows"]] == [0, 1, 2, 3]
    assert all(selector.index_of(t) == k for k, t in d["trained_rows"])
    # and a DDIM sampling loop with the same schedule selects those rows in that order
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(clip_sample=False, timestep_spacing="trailing")
    sched.set_timesteps(4)
    picked = []
    x = torch.randn(1, 1, 8, 8)
    with torch.no_grad():
        for t in sched.timesteps:
            eps = q(x, t).sample
            picked.append(watched[0]._t)  # the row the selector's pre-hook chose for this call
            x = sched.step(eps, t, x).prev_sample
    assert picked == [0, 1, 2, 3]
    assert [t for _, t in d["trained_rows"]] == [float(t) for t in sched.timesteps]


def test_mpq_dm_save_load_restores_omq_layers_and_step_tables(tmp_path):
    model, calib = tiny_unet_calib()
    q = vqcore.quantize(model, method="mpq-dm", w_bits=3, a_bits=4, calib=calib, **TINY, iters=1, batch_size=2,
                        k_fractions=(0.25,), progress=False)
    omq = {n: m.weight_quantizer.channel_bits.clone() for n, m in q.named_modules()
           if isinstance(m, QuantModule) and isinstance(m.weight_quantizer, OMQQuantizer)}
    assert omq and any(len(set(b.tolist())) == 3 for b in omq.values())  # some layers really are mixed-width
    vqcore.save(q, tmp_path / "ck")
    fresh, _ = tiny_unet_calib()
    r = vqcore.load(tmp_path / "ck", fresh)
    loaded = {n: m for n, m in r.named_modules() if isinstance(m, QuantModule)}
    for n, bits in omq.items():
        assert isinstance(loaded[n].weight_quantizer, OMQQuantizer)
        assert torch.equal(loaded[n].weight_quantizer.channel_bits, bits)
        assert isinstance(loaded[n].weight_adapter, MPQLoRA)
    x = torch.randn(2, 1, 8, 8)
    model_fp, _ = tiny_unet_calib()
    with torch.no_grad():
        for t in (999, 749, 500, 1):
            out_q, out_r = q(x, t).sample, r(x, t).sample
            assert torch.equal(out_q, out_r)
        assert not torch.equal(out_q, model_fp(x, 1).sample)  # really quantized
    assert r.vq_step_tables.timesteps == q.vq_step_tables.timesteps


def _heldout_eps_error(q, fp, items):
    from vqcore.calib.stats import _batches

    err = 0.0
    with torch.no_grad():
        for _, args, kwargs in _batches(items, 8, torch.device("cpu")):
            err += float((q(*args, **kwargs) - fp(*args, **kwargs)).pow(2).sum())
    return err


def test_short_mpq_dm_run_on_zoo_unet_is_not_worse_than_its_init():
    """W4A8 on the zoo digits-unet: a few rollouts must not end worse than the initialisation on a held-out
    calibration batch (before the fix — absolute act-table lr 5e-4, every row moved at every step — it grew ~6×)."""
    from vqcore.calib.stats import root_items
    from vqcore.zoo import load
    from vqcore.zoo.bench import _calibration

    gen = load("digits-unet")
    calib = _calibration(gen, torch.tensor([1, 4]), 4, 1.0, 50_000, 2**28)
    held = root_items(_calibration(gen, torch.tensor([7, 2]), 4, 1.0, 60_000, 2**28))
    opts = dict(w_bits=4, a_bits=8, calib=calib, batch_size=2, search_items=4, trd=False, progress=False)
    init = vqcore.quantize(gen, method="mpq-dm", iters=0, **opts)
    trained = vqcore.quantize(gen, method="mpq-dm", iters=3, **opts)
    e0, e1 = _heldout_eps_error(init, gen, held), _heldout_eps_error(trained, gen, held)
    assert e1 <= e0 * 1.10, (e0, e1)


def test_mpq_dm_w8a8_has_nine_bit_outlier_channels_end_to_end(tmp_path):
    model, calib = tiny_unet_calib()
    q = vqcore.quantize(model, method="mpq-dm", w_bits=8, a_bits=8, calib=calib, **TINY, iters=1, batch_size=2,
                        k_fractions=(0.25,), progress=False)
    omq = [m for m in q.modules() if isinstance(m, QuantModule) and isinstance(m.weight_quantizer, OMQQuantizer)]
    assert omq and all(m.weight_quantizer.bits == 9 for m in omq)
    wq = omq[0].weight_quantizer
    codes, scale, zp = wq.quantize_codes(omq[0].effective_weight().detach())
    hi = wq.channel_bits == 9
    assert int(codes.flatten(1)[hi].max()) <= 511 and int(codes.flatten(1)[~hi].max()) <= 255
    vqcore.save(q, tmp_path / "w8")
    fresh, _ = tiny_unet_calib()
    r = vqcore.load(tmp_path / "w8", fresh)
    from vqcore.calib.stats import root_items

    item = root_items(calib)[2]  # an in-distribution input (the tiny random UNet is far off FP on random inputs)
    rtn = vqcore.quantize(model, method="rtn", w_bits=8, a_bits=8, calib=calib)
    with torch.no_grad():
        out = q(*item.args, **item.kwargs).sample
        assert torch.isfinite(out).all() and torch.equal(out, r(*item.args, **item.kwargs).sample)
        fp = model(*item.args, **item.kwargs).sample
        err_rtn = float((rtn(*item.args, **item.kwargs).sample - fp).pow(2).mean())
    err = float((out - fp).pow(2).mean())
    assert err < 1.5 * err_rtn, (err, err_rtn)  # W8A8 with 9-bit outlier channels is as close to FP as RTN W8A8


def test_mpq_dm_resumes_after_an_interruption_mid_rollout(tmp_path, monkeypatch):
    """A crash in the middle of a rollout resumes from the last rollout boundary and ends exactly where the
    uninterrupted run ends (checkpoints hold settled step tables, the trajectory restarts with the next rollout)."""
    model, calib = tiny_unet_calib()
    orig = UniformQuantizer.set_timestep
    calls = {"n": 0, "crash": None, "first": None}

    def spy(self, index):
        if isinstance(self.scale, nn.Parameter) and self.scale.requires_grad:
            calls["first"] = calls["first"] or self
            if self is calls["first"]:
                calls["n"] += 1
                if calls["n"] == calls["crash"]:
                    raise KeyboardInterrupt
        orig(self, index)

    monkeypatch.setattr(UniformQuantizer, "set_timestep", spy)

    def run(ckpt, crash=None):
        calls.update(n=0, crash=crash, first=None)
        q = vqcore.quantize(model, method="mpq-dm", w_bits=4, a_bits=8, calib=calib, **TINY, iters=3, batch_size=2,
                            lrs={"act_scale": 0.05}, checkpoint=ckpt, checkpoint_every=3, progress=False)
        return q.state_dict(), q.vqcore_report.details

    full, _ = run(tmp_path / "a.pt")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b.pt", crash=10)  # step 2 of the 3rd rollout (4 steps each; checkpoint_every=3 -> 4)
    resumed, details = run(tmp_path / "b.pt")
    assert details["optimizer_steps"] == 12
    assert full.keys() == resumed.keys()
    for name in full:
        assert torch.equal(full[name], resumed[name]), name


def test_mpq_dm_takes_the_schedule_from_the_scheduler_and_refuses_to_guess(tmp_path, monkeypatch):
    """No scheduler and no schedule in the model's config: a clear error before the model is copied. A pipeline,
    a scheduler, its config dict or its folder all give the same schedule (scaled_linear here: not the old guess)."""
    import copy

    from diffusers import DDIMScheduler

    from vqcore.methods.mpqdm import resolve_scheduler

    model, calib = tiny_unet_calib()
    copies = []
    monkeypatch.setattr(copy, "deepcopy", lambda *a, **k: copies.append(1))
    with pytest.raises(ValueError, match=r"noise schedule .* scheduler=pipe\.scheduler"):
        vqcore.quantize(model, method="mpq-dm", w_bits=4, a_bits=8, calib=calib, iters=1)
    assert copies == []  # refused before any copy
    monkeypatch.undo()
    sd = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False)
    sd.save_pretrained(tmp_path / "scheduler")
    pipe = type("Pipe", (), {"scheduler": sd})()
    folder = tmp_path / "scheduler"
    for form in (sd, pipe, dict(sd.config), folder, str(folder / "scheduler_config.json")):
        got = resolve_scheduler(form)
        assert got is not sd and torch.equal(got.alphas_cumprod, sd.alphas_cumprod)
    linear = DDIMScheduler()
    assert not torch.allclose(linear.alphas_cumprod, sd.alphas_cumprod)  # the guess would have been wrong
    with pytest.raises(TypeError, match="scheduler must be"):
        resolve_scheduler(42)
    with pytest.raises(ValueError, match="neither a scheduler folder"):
        resolve_scheduler(tmp_path / "nothing")
    q = vqcore.quantize(model, method="mpq-dm", w_bits=4, a_bits=8, calib=calib, iters=1, batch_size=2,
                        scheduler=pipe, progress=False)
    assert q.vqcore_report.details["num_steps"] == 4
