"""Memory: ``quantize(..., inplace=True)`` quantizes the given model without a copy, and the FP teacher of MPQ-DM and
S²Q-VDiT is the quantized model's own modules in full-precision mode (no deep copy) — bit-identical to the separate
FP model it replaces."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import pytest
import torch

import vqcore
import vqcore.api
from vqcore.calib import Capture
from vqcore.quant import FullPrecisionView, full_precision

_spec = importlib.util.spec_from_file_location("vq_quant_tests_mem", Path(__file__).with_name("test_vqcore_quant.py"))
_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_mod)
tiny_cogvideox, tiny_unet = _mod.tiny_cogvideox, _mod.tiny_unet


def _cog_inputs(t, seed):
    g = torch.Generator().manual_seed(seed)
    return dict(hidden_states=torch.randn(2, 3, 4, 8, 8, generator=g),
                encoder_hidden_states=torch.randn(2, 4, 16, generator=g), timestep=torch.full((2,), t))


def _cog_calib(model):
    with torch.no_grad(), Capture(model, targets="blocks") as cap:
        for i, t in enumerate((900, 500)):
            model(**_cog_inputs(t, i))
    return cap.result


def test_full_precision_mode_is_the_original_model_bit_for_bit():
    model = tiny_cogvideox()
    q = vqcore.quantize(model, "q-vdit", w_bits=4, a_bits=6, calib=_cog_calib(model), iters=3, progress=False)
    assert any(m.weight_adapter is not None and m.side_branch is not None for m in vqcore.quant.quantized_layers(q)
               .values())  # smoothing, LoRA and side branches are all there  # fmt: skip
    x = _cog_inputs(300, 9)
    with torch.no_grad():
        ref = model(**x).sample
        quantized = q(**x).sample
        with full_precision(q):
            fp = q(**x).sample
        assert torch.equal(fp, ref) and not torch.equal(quantized, ref)
        assert torch.equal(q(**x).sample, quantized)  # restored on exit
        q.train()
        assert torch.equal(FullPrecisionView(q)(**x).sample, ref) and q.training  # eval inside, mode restored
        block = FullPrecisionView(q).get_submodule("transformer_blocks.0")
        assert block.norm1 is q.transformer_blocks[0].norm1


def test_inplace_quantizes_the_given_model_without_a_copy():
    model = tiny_cogvideox()
    calib = _cog_calib(model)
    ptrs = {n: p.data_ptr() for n, p in model.named_parameters()}
    copied = vqcore.quantize(model, "vidit-q", w_bits=4, a_bits=8, calib=calib)
    q = vqcore.quantize(model, "vidit-q", w_bits=4, a_bits=8, calib=calib, inplace=True)
    assert q is model
    assert all(p.data_ptr() == ptrs[n] for n, p in q.named_parameters() if n in ptrs)  # the same weight storage
    x = _cog_inputs(300, 9)
    with torch.no_grad():
        assert torch.equal(q(**x).sample, copied(**x).sample)


@pytest.mark.parametrize("method", ["mpq-dm", "s2q-vdit"])
def test_teacher_from_the_same_modules_equals_a_deep_copied_teacher(method, monkeypatch):
    """The methods that need the FP teacher give exactly the model they gave with a separate FP copy."""
    from diffusers import DDIMScheduler

    opts = {"iters": 2, "progress": False}
    if method == "mpq-dm":
        model = tiny_unet()
        with torch.no_grad(), Capture(model, targets="blocks") as cap:
            for t in (800, 300):
                model(torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(t)), t)
        opts.update(num_steps=2, scheduler=DDIMScheduler())
        x = (torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1)), 500)

        def run(m):
            return m(*x).sample
    else:
        model = tiny_cogvideox()
        cap = type("C", (), {"result": _cog_calib(model)})
        x = _cog_inputs(300, 9)

        def run(m):
            return m(**x).sample
    shared = vqcore.quantize(model, method, w_bits=4, a_bits=8, calib=cap.result, **opts)
    monkeypatch.setattr(vqcore.api, "FullPrecisionView", lambda q: copy.deepcopy(model).eval())
    separate = vqcore.quantize(model, method, w_bits=4, a_bits=8, calib=cap.result, **opts)
    with torch.no_grad():
        assert torch.equal(run(shared), run(separate))


@pytest.mark.parametrize("init,granularity", [("minmax", "per_channel"), ("grid_lp", "per_channel"),
                                              ("minmax", "per_group"), ("percentile", "per_channel")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunked_weight_range_search_gives_the_whole_tensor_codes(init, granularity, dtype, monkeypatch):
    """``calibrate_weight`` searches row-separable ranges on row chunks of ``W · s`` (no float32 copy of the whole
    weight): Δ, zp and the integer codes equal the search on the whole smoothed weight, exactly."""
    import vqcore.quant.quantizer as qz
    from vqcore.quant import QLinear, QuantSpec
    from vqcore.quant.quantizer import UniformQuantizer

    torch.manual_seed(0)
    spec = QuantSpec(bits=4, granularity=granularity, group_size=16 if granularity == "per_group" else 0, init=init)
    lin = torch.nn.Linear(96, 70).to(dtype)
    q = QLinear.from_float(lin, spec, None)
    q.set_smooth_scale(torch.rand(96) + 0.5)
    ref = UniformQuantizer(spec)
    xg, dims = ref._reduce_dims(q.effective_weight())
    ref_scale, ref_zp = ref._search_range(xg, dims)  # the whole tensor at once (the previous code path)
    monkeypatch.setattr(qz, "CHUNK_ELEMENTS", 96 * 8)  # 9 chunks of 8 rows (the last of 6)
    assert q.weight_quantizer.row_separable
    q.calibrate_weight()
    assert torch.equal(q.weight_quantizer.scale, ref_scale) and torch.equal(q.weight_quantizer.zero_point, ref_zp)
    ref.scale, ref.zero_point, ref.initialized = ref_scale, ref_zp, True
    assert torch.equal(q.integer_weight()[0], ref.quantize_codes(q.effective_weight())[0].reshape(70, 96))


def test_smoothing_weight_maxima_without_an_abs_copy_equal_the_abs_max():
    from vqcore.calib.stats import apply_smoothing
    from vqcore.quant import QLinear, QuantSpec

    torch.manual_seed(0)
    q = QLinear.from_float(torch.nn.Linear(64, 40).to(torch.bfloat16), QuantSpec(bits=4, granularity="per_channel"),
                           None)
    a = torch.rand(64) * 5
    apply_smoothing({q: a}, 0.11)
    expected = vqcore.functional.smoothquant_scales(a, q.weight.detach().abs().amax(0), 0.11)
    assert torch.equal(q.smooth_scale, expected)
