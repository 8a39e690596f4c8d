"""vqcore.kernels.weight_only_linear: the small-M path (16-bit activations × int8/int4 weights dequantized in
registers), Triton kernel in the interpreter on odd shapes vs its reference, and the opt-in dispatch of QLinearInt.

Tolerance: the kernel and the reference both accumulate exact products (16-bit activation × integer code) in fp32, in
a different order, then round once to the output dtype: relative L2 error < 2^-10 for fp16 outputs, < 1e-5 for fp32.
"""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from vqcore import kernels  # noqa: E402
from vqcore.convert import QLinearInt  # noqa: E402
from vqcore.kernels import packing  # noqa: E402
from vqcore.kernels import reference as ref  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def _weights(n, k, w4, group, seed):
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(-8, 8, (n, k), generator=g) if w4 else torch.randint(-128, 128, (n, k), generator=g)
    codes = codes.to(torch.int8)
    sw = torch.rand(n, -(-k // group), generator=g) + 0.5 if group else torch.rand(n, generator=g) + 0.5
    return codes, (packing.pack_int4(codes) if w4 else codes), sw * 0.01


@pytest.mark.parametrize(("w4", "group"), [(False, 0), (True, 0), (True, 64), (True, 128), (False, 128)])
@pytest.mark.parametrize(("m", "dtype"), [(5, torch.float16), (37, torch.bfloat16)])
def test_weight_only_kernel_matches_reference(w4, group, m, dtype):
    from vqcore.kernels import triton_kernels as tk

    n, k = 40, 200 if not group else 320  # K not a multiple of the 128-wide chunk; N not of the tile
    codes, w, sw = _weights(n, k, w4, group, seed=m + group)
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(1)).to(dtype)
    bias = torch.randn(n).to(dtype)
    y = tk.weight_only_linear(x.to(DEV), w.to(DEV), sw.to(DEV), group, w4, k, bias.to(DEV), dtype).cpu()
    want = ref.weight_only_linear_ref(x, codes, sw, group, bias, torch.float32)
    assert y.dtype == dtype and y.shape == (m, n)
    assert _rel(y, want) < (2**-10 if dtype == torch.float16 else 2**-7)
    y32 = tk.weight_only_linear(x.float().to(DEV), w.to(DEV), sw.to(DEV), group, w4, k, None, torch.float32) \
        if DEV == "cpu" else None  # the interpreter also runs fp32 (the exact values of the bf16 case)
    if y32 is not None:
        assert _rel(y32, ref.weight_only_linear_ref(x, codes, sw, group, None, torch.float32)) < 1e-5


def test_public_weight_only_and_qlinearint_dispatch(monkeypatch):
    """With the policy on, a converted layer at small M computes ``x·ŵᵀ + b`` from unquantized activations (the
    weights' quantization only); off (the default), the activations are quantized as before."""
    torch.manual_seed(0)
    lin = nn.Linear(256, 96)
    q = QLinearInt.from_linear(lin, w_bits=4, a_bits=8)
    x = torch.randn(3, 7, 256)
    y_a8 = q(x)
    want = F.linear(x, q.dequantized_weight(), lin.bias.detach())
    assert _rel(y_a8, want) > 1e-4  # A8 quantization error is visible
    y = kernels.weight_only_linear(x.reshape(-1, 256), q.qweight, q.weight_scale, in_features=256, w4=True,
                                   bias=q.bias, out_dtype=torch.float32)  # fmt: skip
    assert _rel(y, want.reshape(-1, 96)) < 1e-6
    assert not kernels.weight_only_enabled(21, torch.device("cpu"))
    monkeypatch.setattr(kernels, "weight_only_enabled", lambda m, device: m <= 64)
    assert _rel(q(x), want) < 1e-6
    big = torch.randn(10, 7, 256)  # 70 tokens > 64: quantized activations again
    assert _rel(q(big), F.linear(big, q.dequantized_weight(), lin.bias.detach())) > 1e-4
    with pytest.raises(ValueError, match=r"x must be \[M, 256\]"):
        kernels.weight_only_linear(x, q.qweight, q.weight_scale, in_features=256, w4=True)


@pytest.mark.gpu
@pytest.mark.parametrize(("w4", "group"), [(False, 0), (True, 0), (True, 128)])
def test_gpu_weight_only_kernel_and_dispatch(w4, group):
    n, k = 1920, 1920
    codes, w, sw = _weights(n, k, w4, group, seed=3)
    for m in (16, 64, 256):
        x = torch.randn(m, k, dtype=torch.bfloat16)
        y = kernels.weight_only_linear(x.cuda(), w.cuda(), sw.cuda(), in_features=k, w4=w4, group_size=group)
        assert _rel(y.cpu(), ref.weight_only_linear_ref(x, codes, sw, group, None, torch.float32)) < 2**-7
    lin = nn.Linear(k, n).cuda().bfloat16()
    q = QLinearInt.from_linear(lin, w_bits=4 if w4 else 8, a_bits=8, group_size=group)
    x = torch.randn(64, k, device="cuda", dtype=torch.bfloat16)
    old = kernels.WEIGHT_ONLY_MAX_M
    try:
        kernels.WEIGHT_ONLY_MAX_M = 256
        y = q(x)
    finally:
        kernels.WEIGHT_ONLY_MAX_M = old
    want = F.linear(x.float(), q.dequantized_weight(), lin.bias.float())
    assert _rel(y, want) < 2**-7
