"""Layer roles from the diffusers module structure (``vqcore.quant.roles``) on tiny configs of the transformer classes
of the installed diffusers, and the ``dit`` preset built on them: at W4A6 no attention/MLP linear inside a block is
left in floating point, every MLP linear gets the MLP bits (W8A8, Q-VDiT's preset), modulation (adaLN), embedders
and the output head stay floating point as the recipe says."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from vqcore.quant import plan_layers, preset
from vqcore.quant.roles import linear_roles

H = dict(num_attention_heads=2, attention_head_dim=8)
CASES = {
    "CogVideoXTransformer3DModel": dict(**H, in_channels=4, out_channels=4, time_embed_dim=8, text_embed_dim=16,
                                        num_layers=1, sample_width=8, sample_height=8, sample_frames=9, patch_size=2,
                                        temporal_compression_ratio=4, max_text_seq_length=4),
    "LatteTransformer3DModel": dict(**H, in_channels=4, out_channels=4, num_layers=1, sample_size=8, patch_size=2,
                                    num_embeds_ada_norm=1000, caption_channels=16, video_length=2,
                                    norm_type="ada_norm_single", cross_attention_dim=16),
    "HunyuanVideoTransformer3DModel": dict(**H, in_channels=4, out_channels=4, num_layers=1, num_single_layers=1,
                                           num_refiner_layers=1, patch_size=1, patch_size_t=1, text_embed_dim=16,
                                           pooled_projection_dim=8, rope_axes_dim=(2, 2, 4)),
    "WanTransformer3DModel": dict(**H, patch_size=(1, 2, 2), in_channels=4, out_channels=4, text_dim=16, freq_dim=16,
                                  ffn_dim=32, num_layers=1, rope_max_seq_len=32),
    "MochiTransformer3DModel": dict(**H, patch_size=2, num_layers=1, pooled_projection_dim=16, in_channels=4,
                                    text_embed_dim=16, time_embed_dim=4, activation_fn="swiglu",
                                    max_sequence_length=16),
    "LTXVideoTransformer3DModel": dict(**H, in_channels=8, out_channels=8, patch_size=1, patch_size_t=1,
                                       cross_attention_dim=16, num_layers=1, caption_channels=16),
    "AllegroTransformer3DModel": dict(**H, in_channels=4, out_channels=4, num_layers=1, cross_attention_dim=16,
                                      sample_height=8, sample_width=8, sample_frames=8, caption_channels=16),
    "PixArtTransformer2DModel": dict(**H, in_channels=4, out_channels=8, num_layers=1, cross_attention_dim=16,
                                     sample_size=8, patch_size=2, caption_channels=16),
    "SD3Transformer2DModel": dict(sample_size=8, patch_size=2, in_channels=4, num_layers=2, attention_head_dim=8,
                                  num_attention_heads=2, joint_attention_dim=16, caption_projection_dim=16,
                                  pooled_projection_dim=16, out_channels=4),
    "FluxTransformer2DModel": dict(patch_size=1, in_channels=4, num_layers=1, num_single_layers=1,
                                   attention_head_dim=16, num_attention_heads=2, joint_attention_dim=16,
                                   pooled_projection_dim=16, axes_dims_rope=(4, 4, 8)),
    "DiTTransformer2DModel": dict(**H, in_channels=4, num_layers=1, sample_size=8, patch_size=2,
                                  norm_type="ada_norm_zero", num_embeds_ada_norm=1000),
    "UNet2DConditionModel": dict(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16),
                                 layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
                                 attention_head_dim=4, norm_num_groups=4),
    "UNet2DModel": dict(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                        up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4),
}
IN_BLOCK = {"attn_qkv", "attn_out", "mlp_in", "mlp_out"}


def _build(name: str) -> nn.Module:
    import diffusers

    cls = getattr(diffusers, name, None)
    if cls is None:
        pytest.skip(f"the installed diffusers has no {name}")
    torch.manual_seed(0)
    return cls(**CASES[name])


@pytest.mark.parametrize("name", list(CASES))
def test_roles_and_the_dit_preset_on_every_diffusers_transformer(name, caplog):
    model = _build(name)
    roles = linear_roles(model)
    linears = {n for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    assert roles is not None and set(roles) == linears
    assert "other" not in roles.values(), {n: r for n, r in roles.items() if r == "other"}
    assert {"attn_qkv", "attn_out"} <= set(roles.values())
    if not name.startswith("UNet2DModel"):
        assert {"mlp_in", "mlp_out"} <= set(roles.values())
    with caplog.at_level(logging.WARNING):
        plans = {p.name: p for p in plan_layers(model, preset("dit", 4, 6))}
    assert "no recognised" not in caplog.text
    for n, role in roles.items():
        if role in IN_BLOCK:
            assert n in plans, f"{n} ({role}) left in floating point"
            bits = (8, 8) if role.startswith("mlp") else (4, 6)
            assert (plans[n].w_bits, plans[n].a_bits) == bits, (n, role, plans[n])
        else:  # modulation, embedders, the output head: floating point in the recipe
            assert n not in plans, f"{n} ({role}) should stay floating point"


def test_single_stream_and_context_mlps_are_mlps():
    """What the name globs got wrong: Flux/HunyuanVideo single-block proj_mlp/proj_out, MMDiT ff_context, Wan ffn."""
    flux = linear_roles(_build("FluxTransformer2DModel"))
    assert flux["single_transformer_blocks.0.proj_mlp"] == "mlp_in"
    assert flux["single_transformer_blocks.0.proj_out"] == "mlp_out"
    assert flux["transformer_blocks.0.ff_context.net.2"] == "mlp_out" and flux["proj_out"] == "final"
    wan = linear_roles(_build("WanTransformer3DModel"))
    assert wan["blocks.0.ffn.net.0.proj"] == "mlp_in" and wan["blocks.0.ffn.net.2"] == "mlp_out"


def test_a_model_without_recognised_blocks_is_named_in_a_warning(caplog):
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 4))
    assert linear_roles(model) is None
    with caplog.at_level(logging.WARNING):
        plans = plan_layers(model, preset("dit", 4, 8))
    assert "Sequential has no recognised block list" in caplog.text and len(plans) == 2  # name-pattern fallback
