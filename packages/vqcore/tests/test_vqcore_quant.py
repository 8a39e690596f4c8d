import pytest
import torch
from torch import nn

from vqcore.quant import (
    LowRankBranch,
    QConv2d,
    QLinear,
    QMatMul,
    QuantConfig,
    QuantSpec,
    UniformQuantizer,
    plan_layers,
    prepare,
    preset,
    quantized_layers,
)


@pytest.mark.parametrize("bits", [2, 3, 4, 6, 8])
@pytest.mark.parametrize("symmetric", [False, True])
def test_error_is_at_most_half_a_step_inside_the_range_and_clipped_outside(bits, symmetric):
    torch.manual_seed(bits)
    x = torch.randn(4096) * 3
    q = UniformQuantizer(bits=bits, symmetric=symmetric, granularity="per_tensor")
    q.calibrate(x[:2048])
    scale, zp = q.current_qparams()
    lo, hi = ((q.spec.qmin - zp) * scale).item(), ((q.spec.qmax - zp) * scale).item()
    inside = (x >= lo) & (x <= hi)
    err = (q(x) - x).abs()
    assert err[inside].max().item() <= scale.item() / 2 + 1e-6
    out = q(x)[~inside]
    assert torch.all((out >= lo - 1e-6) & (out <= hi + 1e-6))  # clipped to the representable range
    assert len(torch.unique(q(x))) <= 2**bits


def test_asymmetric_definition_matches_the_official_formula():
    x = torch.tensor([-0.7, 0.1, 2.9, 1.3])
    q = UniformQuantizer(bits=4, granularity="per_tensor")
    q.calibrate(x)
    delta = (2.9 - (-0.7)) / 15
    zp = round(0.7 / delta)
    expected = (torch.clamp(torch.round(x / delta) + zp, 0, 15) - zp) * delta
    assert torch.allclose(q(x), expected, atol=1e-6)
    pos = torch.tensor([0.5, 1.0, 2.0])  # all positive: the range is extended to include 0
    q2 = UniformQuantizer(bits=4)
    q2.calibrate(pos)
    assert q2.current_qparams()[1].item() == 0


def test_ste_passes_gradients_inside_the_range_only_and_lsq_scale_learns():
    q = UniformQuantizer(bits=3, learn="lsq")
    q.calibrate(torch.linspace(-1, 1, 101))
    x = torch.tensor([-0.5, 0.0, 0.3, 0.7, 5.0, -5.0], requires_grad=True)
    q(x).sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 1.0, 1.0, 0.0, 0.0]  # straight-through inside, zero where clipped
    assert isinstance(q.scale, nn.Parameter) and q.scale.grad is not None and q.scale.grad.abs().sum() > 0


@pytest.mark.parametrize("gran,shape,expected", [
    ("per_tensor", (8, 16), (1, 1)),
    ("per_channel", (8, 16), (8, 1)),
    ("per_group", (8, 16), (8, 4, 1)),
    ("per_token", (2, 5, 16), (2, 5, 1)),
    ("per_token_shared", (2, 5, 16), (1, 5, 1)),
])
def test_scale_shape_per_granularity(gran, shape, expected):
    q = UniformQuantizer(bits=4, granularity=gran, group_size=4 if gran == "per_group" else 0)
    scale, _ = q.compute_qparams(torch.randn(shape))
    assert tuple(scale.shape) == expected


def test_per_token_shared_uses_one_range_per_position_across_the_batch():
    x = torch.randn(3, 4, 8)
    x[1, 2] *= 100  # an outlier token in one sample widens the range of that position for every sample
    shared = UniformQuantizer(bits=4, granularity="per_token_shared")
    per_row = UniformQuantizer(bits=4, granularity="per_token")
    assert (shared(x)[0, 2] - x[0, 2]).abs().mean() > 5 * (per_row(x)[0, 2] - x[0, 2]).abs().mean()


@pytest.mark.parametrize("init", ["minmax", "percentile", "mse", "grid_lp"])
def test_range_searches_do_not_lose_to_minmax_with_outliers(init):
    torch.manual_seed(0)
    w = torch.randn(16, 64)
    w[:, 0] = 12.0  # outliers
    base = UniformQuantizer(bits=3, granularity="per_channel", init="minmax")
    other = UniformQuantizer(bits=3, granularity="per_channel", init=init)
    err_base = (base(w) - w).pow(2).mean()
    err = (other(w) - w).pow(2).mean()
    if init in ("mse", "grid_lp"):
        assert err <= err_base + 1e-7
    assert torch.isfinite(err)


def test_per_timestep_tables_select_rows():
    q = UniformQuantizer(bits=8, timesteps=3)
    q.calibrate(torch.randn(100))
    q.calibrate(torch.randn(100) * 10, timestep=2)
    assert q.scale.shape[0] == 3
    q.set_timestep(0)
    s0 = q.current_qparams()[0].item()
    q.set_timestep(2)
    assert q.current_qparams()[0].item() > 5 * s0
    with pytest.raises(ValueError, match="timestep index"):
        q.set_timestep(3)


def test_adaround_learns_rounding_and_hardens_in_eval():
    torch.manual_seed(0)
    w = torch.randn(4, 8)
    q = UniformQuantizer(bits=2, granularity="per_channel")
    q.init_adaround(w)
    opt = torch.optim.Adam([q.alpha], lr=0.1)
    target = w.clone()
    for _ in range(50):
        loss = (q(w) - target).pow(2).sum() + 1e-3 * q.rounding_loss(10.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert q.alpha.grad is not None
    q.eval()
    hard = q(w)
    scale, zp = q.current_qparams()
    codes = hard / scale + zp
    assert torch.allclose(codes, codes.round(), atol=1e-4)  # hard rounding on the grid after training


def test_spec_validation():
    with pytest.raises(ValueError, match="bits"):
        QuantSpec(bits=9)
    with pytest.raises(ValueError, match="granularity"):
        QuantSpec(granularity="per_row")
    with pytest.raises(ValueError, match="group_size"):
        QuantSpec(granularity="per_group")
    with pytest.raises(ValueError, match="dynamic"):
        QuantSpec(granularity="per_token", learn="lsq")


def test_qlinear_integer_weight_reproduces_quantized_weight_and_side_branch():
    torch.manual_seed(0)
    lin = nn.Linear(16, 8)
    q = QLinear.from_float(lin, QuantSpec(bits=4, granularity="per_channel"),
                           QuantSpec(bits=8, granularity="per_token"))
    q.set_smooth_scale(torch.rand(16) + 0.5)
    codes, scale, zp = q.integer_weight()
    assert codes.shape == (8, 16) and scale.shape == (8,) and zp.shape == (8,)
    assert torch.allclose((codes - zp[:, None]) * scale[:, None], q.quantized_weight(), atol=1e-6)
    x = torch.randn(3, 16)
    before = q(x)
    q.side_branch = LowRankBranch(16, 8, rank=2)
    assert torch.allclose(q(x), before)  # zero-initialised up projection
    q.quant_weight = q.quant_input = False
    assert torch.allclose(q(x), lin(x), atol=1e-5)  # FP path (smoothing cancels exactly)
    with pytest.raises(ValueError, match="positive"):
        q.set_smooth_scale(-torch.ones(16))


def test_qconv_and_qmatmul():
    conv = nn.Conv2d(3, 4, 3, padding=1)
    qc = QConv2d.from_float(conv, QuantSpec(bits=8, granularity="per_channel"), QuantSpec(bits=8))
    x = torch.randn(2, 3, 8, 8)
    assert torch.allclose(qc(x), conv(x), atol=0.05)
    a, b = torch.randn(2, 4, 8), torch.randn(2, 8, 5)
    assert torch.allclose(QMatMul()(a, b), a @ b, atol=0.1)


def tiny_cogvideox():
    from diffusers import CogVideoXTransformer3DModel

    torch.manual_seed(0)
    return CogVideoXTransformer3DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4,
                                       time_embed_dim=8, text_embed_dim=16, num_layers=2, sample_width=8,
                                       sample_height=8, sample_frames=9, patch_size=2, temporal_compression_ratio=4,
                                       max_text_seq_length=4).eval()


def tiny_latte():
    from diffusers import LatteTransformer3DModel

    torch.manual_seed(0)
    return LatteTransformer3DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4,
                                   num_layers=1, sample_size=8, patch_size=2, num_embeds_ada_norm=1000,
                                   caption_channels=16, video_length=2, norm_type="ada_norm_single",
                                   cross_attention_dim=16).eval()


def tiny_unet():
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    return UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4).eval()


@pytest.mark.parametrize("factory,kind", [(tiny_cogvideox, "dit"), (tiny_latte, "dit"), (tiny_unet, "unet")])
def test_prepare_on_real_diffusers_classes(factory, kind):
    model = factory()
    cfg = preset(kind, 4, 6)
    plans = plan_layers(model, cfg)
    names = [p.name for p in plans]
    assert names and not any("proj_out" in n or "patch_embed" in n or "time_embedding" in n for n in names)
    if kind == "dit":
        mlp = [p for p in plans if ".ff." in p.name]
        assert mlp and all(p.w_bits == 8 and p.a_bits == 8 for p in mlp)  # Q-VDiT's W8A8 MLPs at W4A6
        assert any(p.w_bits == 4 and p.a_bits == 6 for p in plans)
    else:
        assert not any("conv_shortcut" in n or "downsamplers" in n for n in names)
        assert plans[0].w_bits == plans[-1].w_bits == 8  # first/last layers at W8A8
    prepare(model, cfg)
    assert set(quantized_layers(model)) == set(names)


def test_prepare_rejects_models_without_quantizable_layers_and_bad_configs():
    with pytest.raises(ValueError, match="no quantizable layer"):
        prepare(nn.Sequential(nn.ReLU()), QuantConfig())
    with pytest.raises(ValueError, match="w_bits"):
        QuantConfig(w_bits=1)
    with pytest.raises(ValueError, match="static"):
        QuantConfig(weight=QuantSpec(granularity="per_token"))
    with pytest.raises(TypeError, match="glob"):
        QuantConfig(include="*")
    with pytest.raises(ValueError, match="kind"):
        preset("gan", 4, 8)


def test_overrides_and_config_round_trip():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    cfg = QuantConfig(w_bits=4, a_bits=8, overrides=(("2", 8, None),))
    plans = plan_layers(model, cfg)
    assert [(p.w_bits, p.a_bits) for p in plans] == [(4, 8), (8, None)]
    assert QuantConfig.from_dict(cfg.to_dict()) == cfg


def test_grid_lp_picks_the_per_channel_argmin_of_the_clipping_grid():
    """Q-VDiT's ``grid_search_lp``: each output channel independently takes the clipping ratio in {0.02, …, 0.98}
    with the lowest L2 error (checked against a brute-force search over the same grid)."""
    torch.manual_seed(0)
    w = torch.randn(6, 32)
    w[0, 0], w[3, 5] = 9.0, -7.0  # outliers in two channels make clipping worthwhile there
    q = UniformQuantizer(bits=3, granularity="per_channel", init="grid_lp")
    q.calibrate(w)
    scale, zp = q.current_qparams()
    for c in range(w.shape[0]):
        row = w[c]
        errs = []
        for r in [0.02 * i for i in range(1, 50)]:
            lo, hi = min(row.min().item(), 0) * r, max(row.max().item(), 0) * r
            d = max((hi - lo) / 7, 1e-8)
            z = round(-lo / d)
            errs.append((((torch.clamp(torch.round(row / d) + z, 0, 7) - z) * d - row) ** 2).sum().item())
        best = min(errs)
        got = (((torch.clamp(torch.round(row / scale[c]) + zp[c], 0, 7) - zp[c]) * scale[c] - row) ** 2).sum().item()
        assert got == pytest.approx(best, rel=1e-5, abs=1e-7)
    ratio = (scale.squeeze() * 7) / (w.amax(1).clamp(min=0) - w.amin(1).clamp(max=0))
    assert len(torch.unique(ratio.round(decimals=3))) > 1  # one ratio per channel, not one for the whole tensor
    assert (ratio <= 0.98 + 1e-6).all()  # 1.0 (no clipping) is not a candidate, as in the released code


@pytest.mark.parametrize("factory,kind", [(tiny_cogvideox, "dit"), (tiny_latte, "dit"), (tiny_unet, "unet")])
def test_prepared_diffusers_models_run_and_stay_close_to_fp_at_8_bit(factory, kind):
    model = factory()
    if kind == "unet":
        inputs = dict(sample=torch.randn(2, 1, 8, 8), timestep=torch.tensor(500))
    elif factory is tiny_latte:
        inputs = dict(hidden_states=torch.randn(2, 4, 2, 8, 8), timestep=torch.tensor([500, 500]),
                      encoder_hidden_states=torch.randn(2, 3, 16), enable_temporal_attentions=True)
    else:
        inputs = dict(hidden_states=torch.randn(2, 3, 4, 8, 8), encoder_hidden_states=torch.randn(2, 4, 16),
                      timestep=torch.tensor([500, 500]))
    with torch.no_grad():
        ref = model(**inputs).sample
    cfg = preset(kind, 8, 8)
    if kind == "unet":  # static activation ranges: initialise them from the inputs themselves (first forward)
        cfg = QuantConfig(**{**cfg.__dict__, "act": QuantSpec(granularity="per_tensor", init="minmax")})
    prepare(model, cfg)
    with torch.no_grad():
        out = model(**inputs).sample
        q_off = [(m, m.quant_weight, m.quant_input) for m in quantized_layers(model).values()]
        for m, _, _ in q_off:
            m.quant_weight = m.quant_input = False
        fp_again = model(**inputs).sample
    assert out.shape == ref.shape and torch.isfinite(out).all()
    assert 0 < (out - ref).pow(2).mean() < 0.05 * ref.pow(2).mean()  # W8A8: quantized, but close
    torch.testing.assert_close(fp_again, ref)  # with quantization off the swapped modules are the FP layers
