"""bf16 / fp16 models: every method quantizes, saves, loads and converts them; fake quant runs in the model's dtype
while ranges, codes and trainable adapters stay float32; results are bounded against the same method in float32.

Error bounds (relative L2 of the model output). Let ``ε`` be what the dtype alone does to the model: the FP model in
bf16/fp16 against the FP model in float32 (measured here: bf16 ~7e-3 on the tiny CogVideoX, 1.3e-2 on the tiny UNet;
fp16 ~8e-4). A perturbation of relative size ε at a quantizer's input moves a fraction ~ε|x|/Δ of its codes by one
step Δ, so its mean-square effect is ~ε|x|·Δ, i.e. an rms change of ~√(ε·e_q) with ``e_q`` the quantization error
itself (relative L2 of quantized vs FP). Hence, for the same method run in float32 and in the low dtype:

    ‖q_low − q_fp32‖ ≤ ε + 2·√(ε · e_q)

and the same bound for the integer model (``convert``) against the fake-quant model in the low dtype: the fake path
rounds x̂, Ŵ and y to the dtype as the FP model rounds its activations and weights, the integer path only y. Measured
ratios to the bound are 0.3–0.7 (q-diffusion/mpq-dm on the UNet, whose reconstruction moves with the perturbation,
are the largest).
"""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import pytest
import torch
from torch import nn

import vqcore
from vqcore.calib import Capture
from vqcore.quant import QLinear, QuantSpec
from vqcore.quant.modules import QuantModule

_spec = importlib.util.spec_from_file_location("vq_quant_tests_dt", Path(__file__).with_name("test_vqcore_quant.py"))
_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_mod)
tiny_cogvideox, tiny_unet = _mod.tiny_cogvideox, _mod.tiny_unet

METHODS = ["rtn", "vidit-q", "q-diffusion", "q-vdit", "s2q-vdit", "mpq-dm"]
UNET_METHODS = ["rtn", "vidit-q", "q-diffusion", "q-vdit", "mpq-dm"]  # s2q-vdit needs [B, N, C] (token) blocks


def _options(method: str, kind: str) -> dict:
    from diffusers import DDIMScheduler

    fast = {"iters": 2, "progress": False}
    return {"rtn": {}, "vidit-q": {}, "q-diffusion": fast, "s2q-vdit": fast,
            "q-vdit": {**fast, **({"tmd": False} if kind == "unet" else {})},
            "mpq-dm": {**fast, "num_steps": 2, "scheduler": DDIMScheduler()}}[method]  # fmt: skip


def _cast(d: dict, dtype: torch.dtype) -> dict:
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in d.items()}


def _case(kind: str):
    g = torch.Generator().manual_seed(7)
    if kind == "cog":
        def inp(t):
            return dict(hidden_states=torch.randn(2, 3, 4, 8, 8, generator=g),
                        encoder_hidden_states=torch.randn(2, 4, 16, generator=g), timestep=torch.full((2,), t))

        return tiny_cogvideox, [inp(900), inp(500)], inp(300)
    def inp(t):  # noqa: E306
        return dict(sample=torch.randn(2, 1, 8, 8, generator=g), timestep=torch.full((2,), t))

    return tiny_unet, [inp(800), inp(300)], inp(500)


_FP32: dict = {}


def _run(kind: str, method: str, dtype: torch.dtype, tmp_path: Path | None = None):
    """(FP output, fake-quant output, quantized model, calibration model) of ``method`` on the tiny ``kind`` model in
    ``dtype`` (float32 results cached per method)."""
    key = (kind, method, dtype)
    if key in _FP32:
        return _FP32[key]
    factory, calib_in, x = _case(kind)
    model = factory().to(dtype)
    with torch.no_grad(), Capture(model, targets="blocks") as cap:
        for c in calib_in:
            model(**_cast(c, dtype))
    q = vqcore.quantize(model, method, w_bits=4, a_bits=8, calib=cap.result, **_options(method, kind))
    with torch.no_grad():
        out = (model(**_cast(x, dtype)).sample, q(**_cast(x, dtype)).sample, q, model)
    if dtype == torch.float32:
        _FP32[key] = out
    return out


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def _bound(eps: float, e_q: float) -> float:
    return eps + 2 * (eps * e_q) ** 0.5


def _check(kind: str, method: str, dtype: torch.dtype, tmp_path: Path) -> None:
    fp32, q32, _, _ = _run(kind, method, torch.float32)
    fp_low, q_low, q, model = _run(kind, method, dtype)
    assert q_low.dtype == dtype and torch.isfinite(q_low).all()
    for m in q.modules():  # ranges, smoothing vectors and trainable adapters stay float32
        if isinstance(m, QuantModule):
            assert m.weight.dtype == dtype
            for quant in (m.weight_quantizer, m.input_quantizer):
                if quant is not None and quant.initialized:
                    assert quant.scale.dtype == torch.float32, quant
            assert m.smooth_scale is None or m.smooth_scale.dtype == torch.float32
            for sub in (m.weight_adapter, m.side_branch):
                assert sub is None or all(p.dtype == torch.float32 for p in sub.parameters())
    eps, e_q = _rel(fp_low, fp32), _rel(q32, fp32)
    assert 0 < eps < 0.05
    assert _rel(q_low, q32) <= _bound(eps, e_q), (_rel(q_low, q32), eps, e_q)
    # save / load on a fresh model of the same dtype: bit-identical; convert: within the same bound
    _, _, x = _case(kind)
    x = _cast(x, dtype)
    vqcore.save(q, tmp_path / "q")
    loaded = vqcore.load(tmp_path / "q", copy.deepcopy(model))
    with torch.no_grad():
        assert torch.equal(loaded(**x).sample, q_low)
        integer = vqcore.convert(loaded)(**x).sample
    assert integer.dtype == dtype and _rel(integer, q_low) <= _bound(eps, _rel(q_low, fp32))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("method", METHODS)
def test_every_method_on_a_low_precision_cogvideox(method, dtype, tmp_path):
    _check("cog", method, dtype, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("method", UNET_METHODS)
def test_every_unet_method_on_a_bf16_unet(method, tmp_path):
    _check("unet", method, torch.bfloat16, tmp_path)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_low_precision_qlinear_quantizes_in_float32_and_multiplies_in_the_model_dtype(dtype):
    """x̂ and Ŵ are the float32 fake-quant values (same codes) rounded once to the model's dtype."""
    torch.manual_seed(0)
    lin = nn.Linear(64, 24)
    lin.weight.data = lin.weight.data.to(dtype).float()  # bf16-representable weights: both layers see the same W
    lin.bias.data = lin.bias.data.to(dtype).float()
    q32 = QLinear.from_float(lin, QuantSpec(bits=4, granularity="per_channel"), QuantSpec(bits=8,
                                                                                          granularity="per_token"))
    q32.set_smooth_scale(torch.rand(64) + 0.5)
    low = copy.deepcopy(q32).to(dtype)
    low.set_smooth_scale(q32.smooth_scale)
    x = (torch.randn(3, 5, 64) * 2).to(dtype)
    with torch.no_grad():
        y = low(x)
        x_hat = q32.input_quantizer(x.float() / q32.smooth_scale)
        ref = nn.functional.linear(x_hat.to(dtype), q32.quantized_weight().to(dtype), low.bias)
    assert y.dtype == dtype and torch.equal(y, ref)
    assert low.weight_quantizer.scale.dtype == torch.float32
    codes, _, _ = low.integer_weight()
    assert torch.equal(codes, q32.integer_weight()[0])
