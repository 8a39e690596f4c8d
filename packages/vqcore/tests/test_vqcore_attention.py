"""Optional attention-product quantization (QuantConfig.attention_bits) on the real diffusers classes."""

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import vqcore
from vqcore.quant import QuantSDPA, prepare, preset

_spec = importlib.util.spec_from_file_location("vq_quant_tests_attn", Path(__file__).with_name("test_vqcore_quant.py"))
_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_mod)
tiny_cogvideox, tiny_latte = _mod.tiny_cogvideox, _mod.tiny_latte


def test_quant_sdpa_matches_sdpa_at_8_bits_with_masks_and_degrades_at_low_bits():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 12, 16, generator=g) for _ in range(3))
    mask = torch.rand(12, 12, generator=g) > 0.3
    mask |= torch.eye(12, dtype=torch.bool)
    for kw in ({}, {"attn_mask": mask}, {"is_causal": True}, {"scale": 0.5}):
        ref = F.scaled_dot_product_attention(q, k, v, **kw)
        err8 = (QuantSDPA(8)(q, k, v, **kw) - ref).abs().max()
        err3 = (QuantSDPA(3)(q, k, v, **kw) - ref).abs().max()
        assert err8 < 0.05 and err3 > err8


def _cog_inputs():
    g = torch.Generator().manual_seed(1)
    return dict(hidden_states=torch.randn(2, 3, 4, 8, 8, generator=g),
                encoder_hidden_states=torch.randn(2, 4, 16, generator=g), timestep=torch.tensor([500, 500]))


def test_attention_bits_quantize_the_products_of_every_attention_and_restore_sdpa(tmp_path):
    model = tiny_cogvideox()
    x = _cog_inputs()
    cfg = preset("dit", 8, 8)
    with torch.no_grad():
        ref = prepare(_copy(model), cfg)(**x).sample
    outs = {}
    for bits in (8, 3):
        qm = prepare(_copy(model), preset("dit", 8, 8, attention_bits=bits))
        calls = []
        for m in qm.modules():
            if isinstance(m, QuantSDPA):
                m.qk.register_forward_hook(lambda *a, calls=calls: calls.append(1))
        original = F.scaled_dot_product_attention
        with torch.no_grad():
            outs[bits] = qm(**x).sample
        assert F.scaled_dot_product_attention is original  # patched only while a processor runs
        assert len(calls) == 2  # one attention per block, two blocks
    err8, err3 = ((outs[b] - ref).pow(2).mean().item() for b in (8, 3))
    assert 0 < err8 < err3
    # the setting survives save/load (the config re-creates the wrappers)
    q = vqcore.quantize(model, "rtn", config=preset("dit", 4, 8, attention_bits=4), calib=[x])
    vqcore.save(q, tmp_path / "q")
    loaded = vqcore.load(tmp_path / "q", _copy(model))
    with torch.no_grad():
        assert torch.equal(loaded(**x).sample, q(**x).sample)
    assert sum(isinstance(m, QuantSDPA) for m in loaded.modules()) == 2


def test_attention_bits_on_latte_and_bad_values():
    model = tiny_latte()
    qm = prepare(_copy(model), preset("dit", 8, 8, attention_bits=6))
    assert sum(isinstance(m, QuantSDPA) for m in qm.modules()) >= 2
    with pytest.raises(ValueError, match="attention_bits"):
        preset("dit", 8, 8, attention_bits=9)
    with pytest.raises(ValueError, match="attention"):
        prepare(torch.nn.Sequential(torch.nn.Linear(4, 4)), preset("dit", 8, 8, attention_bits=8))


def _copy(model):
    import copy

    return copy.deepcopy(model)
