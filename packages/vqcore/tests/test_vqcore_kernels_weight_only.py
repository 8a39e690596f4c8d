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


# ---- split-K (opt-in: WONLY_SPLIT_K / config={"SPLIT_K": s}) ---------------------------------------------------------
U = 2.0**-24  # fp32 unit roundoff


def _wonly_bound(x, codes, sw, group, bias, k, gpu=False):
    """Elementwise bound on |kernel − reference| for fp32 outputs, from the arithmetic:

    * every product ``x_i·c_i`` is exact in fp32 (fp16 ``x``: 11 significant bits, bf16: 8; ``|c| ≤ 128``: 8 bits;
      ≤ 19 bits < 24), so the kernel only rounds in its sums: any summation tree of ``n`` terms — per chunk, chunks in
      order, then (split-K) the splits in split order — errs by ≤ ``(n−1)·u·Σ|a_i|`` (Higham, Accuracy and Stability,
      §4.2); masked / zero-padded terms add exactly, so ``n ≤ Kp`` (K padded to 128); the group scales (one rounding
      per slice product), the per-channel scale and the bias add one rounding each: ``≤ (Kp + 2)·u·(Σ|x||ŵ| + |b|)``;
    * the reference rounds ``ŵ = c·s``, each ``x·ŵ`` and its ``K − 1`` additions, then the bias:
      ``≤ (K + 2)·u·(Σ|x||ŵ| + |b|)``;
    * together ``(2·Kp + 4)·u·(|x|·|ŵ|ᵀ + |b|)`` to first order; ``2·Kp + 8`` covers the ``O(u²)`` terms. On the GPU
      the tensor cores' fp32 accumulation may truncate rather than round (≤ 2u per addition), so the kernel's share
      doubles: ``3·Kp + 8``.

    A split that dropped or repeated a 128-chunk, or scaled a partial twice, errs by whole products, ~10^4× this."""
    kp = -(-k // 128) * 128
    mag = x.float().abs() @ ref.dequantize_weight(codes, sw, group).abs().t()
    if bias is not None:
        mag = mag + bias.float().abs()
    return ((3 if gpu else 2) * kp + 8) * U * mag


def _wonly(x, w, sw, group, w4, k, bias, out_dtype=torch.float32, **cfg):
    from vqcore.kernels import triton_kernels as tk

    dev = lambda t: None if t is None else t.to(DEV)  # noqa: E731
    return tk.weight_only_linear(dev(x), dev(w), dev(sw), group, w4, k, dev(bias), out_dtype,
                                 config=cfg or None).cpu()  # fmt: skip


# (M, N, K, w4, group, split, bias): M in {1, 5, 17}; N = 40, 70 (not multiples of the 32-wide tile); K < 128, not a
# multiple of 128, a multiple (EVEN_K); splits that do not divide the chunk count and splits larger than it
SPLIT_CASES = [
    (1, 40, 100, False, 0, 2, True),  # one chunk, K < 128: the second split is empty
    (5, 40, 200, False, 0, 2, False),
    (17, 70, 640, False, 0, 3, True),  # 5 chunks over 3 splits: 2 + 2 + 1
    (5, 40, 640, False, 0, 7, False),  # 7 splits > 5 chunks: two empty
    (17, 40, 384, False, 0, 2, True),  # EVEN_K, 3 chunks over 2 splits
    (5, 70, 640, False, 128, 3, True),
    (1, 40, 384, False, 256, 2, False),  # group of two chunks split across programs
    (5, 40, 100, True, 0, 3, True),
    (17, 70, 640, True, 0, 4, False),
    (1, 40, 200, True, 64, 2, True),  # two scales per chunk (group 64)
    (5, 40, 640, True, 64, 7, False),
    (17, 40, 384, True, 128, 2, True),
    (5, 70, 640, True, 192, 3, True),  # group not a multiple of 128 (three half-chunks)
    (5, 40, 640, True, 128, "auto", True),  # auto: 2 on the interpreter's 4 "SMs"
    (17, 70, 640, False, 0, "auto", False),
]


@pytest.mark.parametrize(("m", "n", "k", "w4", "group", "split", "bias"), SPLIT_CASES)
def test_split_k_matches_reference_and_single_pass(m, n, k, w4, group, split, bias):
    codes, w, sw = _weights(n, k, w4, group, seed=m + k + group)
    g = torch.Generator().manual_seed(k)
    x = torch.randn(m, k, generator=g).half()
    b = torch.randn(n, generator=g).half() if bias else None
    y = _wonly(x, w, sw, group, w4, k, b, SPLIT_K=split)
    assert y.dtype == torch.float32 and y.shape == (m, n)
    tol = _wonly_bound(x, codes, sw, group, b, k, gpu=DEV == "cuda")
    want = ref.weight_only_linear_ref(x, codes, sw, group, b, torch.float32)
    assert ((y - want).abs() <= tol).all(), float(((y - want).abs() / tol).max())
    one = _wonly(x, w, sw, group, w4, k, b, SPLIT_K=1)
    assert ((y - one).abs() <= tol).all()
    assert torch.equal(y, _wonly(x, w, sw, group, w4, k, b, SPLIT_K=split))  # fixed reduction order: same bits
    y16 = _wonly(x, w, sw, group, w4, k, b, torch.float16, SPLIT_K=split)  # the cast happens in the reduction
    assert y16.dtype == torch.float16 and torch.equal(y16, y.half())  # the same fp32 sum, rounded once


def test_split_k_bf16_activations():
    """bf16 ``x`` (the interpreter runs it as its exact fp32 values; on the GPU the bf16 tensor cores)."""
    m, n, k = 5, 40, 640
    codes, w, sw = _weights(n, k, True, 128, seed=11)
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(2)).bfloat16()
    y = _wonly(x, w, sw, 128, True, k, None, SPLIT_K=3)
    want = ref.weight_only_linear_ref(x, codes, sw, 128, None, torch.float32)
    assert ((y - want).abs() <= _wonly_bound(x, codes, sw, 128, None, k, gpu=DEV == "cuda")).all()


def test_split_k_off_and_one_are_the_single_pass_launch(monkeypatch):
    """``off`` (the default), ``1`` and an ``auto`` that finds nothing to split launch only the single-pass kernel
    (no workspace, no reduction) and give the same bits; a split > 1 launches the reduction once."""
    from vqcore.kernels import triton_weight_only as tw

    launches = []
    real = tw._wonly_splitk_reduce_kernel

    class Counting:
        def __getitem__(self, grid):
            launches.append(grid)
            return real[grid]

    monkeypatch.setattr(tw, "_wonly_splitk_reduce_kernel", Counting())
    codes, w, sw = _weights(40, 200, False, 0, seed=5)  # 2 chunks: auto keeps 1 (fewer than 2 chunks per split)
    x = torch.randn(5, 200, generator=torch.Generator().manual_seed(3)).half()
    base = _wonly(x, w, sw, 0, False, 200, None)
    assert tw.WONLY_SPLIT_K == "off" or "VQCORE_WONLY_SPLIT_K" in os.environ
    for flag in ("off", "1", 1, "auto", "AUTO"):
        monkeypatch.setattr(tw, "WONLY_SPLIT_K", flag)
        assert torch.equal(_wonly(x, w, sw, 0, False, 200, None), base), flag
    assert torch.equal(_wonly(x, w, sw, 0, False, 200, None, SPLIT_K=1), base)
    assert not launches
    monkeypatch.setattr(tw, "WONLY_SPLIT_K", 2)
    _wonly(x, w, sw, 0, False, 200, None)
    assert len(launches) == 1


def test_split_k_flag_errors(monkeypatch):
    from vqcore.kernels import triton_weight_only as tw

    codes, w, sw = _weights(40, 200, False, 0, seed=5)
    x = torch.randn(5, 200).half()
    for bad in (0, -2, "two", 1.5, True):
        with pytest.raises(ValueError, match=r"SPLIT_K .*'off', 'auto' or a positive integer"):
            _wonly(x, w, sw, 0, False, 200, None, SPLIT_K=bad)
    monkeypatch.setattr(tw, "WONLY_SPLIT_K", "on")
    with pytest.raises(ValueError, match=r"WONLY_SPLIT_K must be"):
        _wonly(x, w, sw, 0, False, 200, None)


def test_choose_split_k_fills_the_grid_within_its_bounds():
    """``auto`` on an H100 (132 SMs) at the benchmark's small-M shapes: enough programs (≥ 3 per SM) unless a bound
    stops it — ≥ 2 chunks per split, fp32 partials ≤ the weight bytes — and no empty split."""
    from vqcore.kernels import triton_weight_only as tw

    tiles = tw.WONLY_TILES
    for m, key in ((16, "16"), (64, "64"), (256, "256")):
        bm, bn = tiles[key]["BLOCK_M"], tiles[key]["BLOCK_N"]
        for k, n in ((1152, 1152), (1152, 4608), (4608, 1152), (1920, 1920), (1920, 7680), (7680, 1920)):
            for w4 in (False, True):
                s = tw.choose_split_k(m, n, k, w4, bm, bn, 132)
                chunks = -(-k // 128)
                grid = -(-n // bn) * -(-m // bm)
                wbytes = n * (k // 2 if w4 else k)
                cap = min(chunks // 2, wbytes // (4 * m * n))  # the two bounds
                per = -(-chunks // s)
                assert s >= 1 and (s == 1 or per >= 2) and (s - 1) * per < chunks  # ≥ 2 chunks each, none empty
                assert s == 1 or s * 4 * m * n <= wbytes
                # enough programs, or the largest split within the bounds that leaves no split empty
                assert grid * s >= 3 * 132 or s == max(1, -(-chunks // -(-chunks // max(cap, 1)))), (m, n, k, w4, s)
    assert tw.choose_split_k(16, 1152, 4608, False, 16, 32, 132) == 12  # 36 tiles → 432 programs of 3 chunks
    assert tw.choose_split_k(16, 1920, 1920, True, 16, 32, 132) == 5  # 60 tiles → 300 programs of 3 chunks (cap 7)
    assert tw.choose_split_k(16, 7680, 1920, False, 16, 32, 132) == 3  # 240 tiles → 720 programs of 5 chunks
    assert tw.choose_split_k(256, 1920, 1920, False, 64, 64, 132) == 1  # partials would outweigh the weights
    assert tw.choose_split_k(16, 1152, 200, False, 16, 32, 132) == 1  # 2 chunks: nothing to split


@pytest.mark.gpu
@pytest.mark.parametrize(("w4", "group"), [(False, 0), (True, 0), (True, 128)])
def test_gpu_split_k_matches_reference(w4, group):
    """M = 16, N = K = 3072: split-K (auto and fixed) against the reference within the derived bound, bit-identical
    run to run, and ``SPLIT_K=1`` bit-identical to the default (off) launch."""
    m, n, k = 16, 3072, 3072
    codes, w, sw = _weights(n, k, w4, group, seed=7)
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(4)).bfloat16()
    bias = torch.randn(n).bfloat16()
    want = ref.weight_only_linear_ref(x, codes, sw, group, bias, torch.float32)
    tol = _wonly_bound(x, codes, sw, group, bias, k, gpu=True)
    base = _wonly(x, w, sw, group, w4, k, bias)
    assert torch.equal(_wonly(x, w, sw, group, w4, k, bias, SPLIT_K=1), base)
    for split in ("auto", 2, 4, 8):
        y = _wonly(x, w, sw, group, w4, k, bias, SPLIT_K=split)
        assert ((y - want).abs() <= tol).all(), (split, float(((y - want).abs() / tol).max()))
        assert torch.equal(y, _wonly(x, w, sw, group, w4, k, bias, SPLIT_K=split)), split
        yb = _wonly(x, w, sw, group, w4, k, bias, torch.bfloat16, SPLIT_K=split)
        assert torch.equal(yb, y.bfloat16()), split  # the reduction's cast rounds the same fp32 sum
