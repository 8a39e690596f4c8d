"""vqcore.kernels.attention: the SageAttention-style int8 attention (quantizer, reference, Triton kernel in the
interpreter on odd shapes, the SDPA drop-in and ``convert(attention="int8")``), and the quantizer's fused low-rank
side branch.

Tolerances: the kernel vs its reference on the *same* int8 codes differs by float32 summation order and the online
softmax (~1e-6 relative in fp32) plus, for 16-bit values, one rounding of P to the value dtype and of the output
(2^-11 for fp16, 2^-8 for bf16 per element; relative L2 errors stay below 4× that). Against float SDPA the error is
the int8 quantization of Q and K (a few 1e-3 relative on Gaussian inputs, measured by the reference itself).
"""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from vqcore import kernels  # noqa: E402
from vqcore.kernels import attention as attn  # noqa: E402
from vqcore.kernels import reference as ref  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def _qkv(b, h, sq, sk, d, dtype, seed=0, k_bias=0.0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, sq, d, generator=g).to(dtype)
    k = (torch.randn(b, h, sk, d, generator=g) + k_bias * torch.randn(1, h, 1, d, generator=g)).to(dtype)
    v = torch.randn(b, h, sk, d, generator=g).to(dtype)
    return q, k, v


def test_quantize_qk_codes_scales_and_smoothing():
    q, k, _ = _qkv(2, 3, 37, 45, 16, torch.float32, k_bias=5.0)
    qc, qs, kc, ks = attn.quantize_qk(q, k, 0.25, q_block=16, k_block=8)
    assert qc.dtype == kc.dtype == torch.int8 and qc.shape == (6, 37, 16) and ks.shape == (6, 45)
    # independent per-block computation (block 2 of Q: rows 16..31; last K block: rows 40..44, a partial block)
    qf = q.reshape(6, 37, 16)
    s = qf[:, 16:32].abs().amax(dim=(1, 2)) / 127
    assert torch.equal(qc[:, 16:32], torch.round(qf[:, 16:32] / s[:, None, None]).clamp(-127, 127).to(torch.int8))
    torch.testing.assert_close(qs[:, 16], s * 0.25 * attn.LOG2E, rtol=0, atol=0)
    kf = k.reshape(6, 45, 16)
    ksm = kf - kf.mean(dim=1, keepdim=True)
    sk = ksm[:, 40:].abs().amax(dim=(1, 2)) / 127
    assert torch.equal(kc[:, 40:], torch.round(ksm[:, 40:] / sk[:, None, None]).clamp(-127, 127).to(torch.int8))
    assert torch.equal(ks[:, 44], sk)
    assert int(qc.abs().max()) == 127 and int(kc.abs().max()) == 127  # each block's amax maps to ±127


@pytest.mark.parametrize(("s", "block", "dtype"), [(45, 8, torch.float32), (200, 64, torch.bfloat16),
                                                  (130, 128, torch.float16)])  # fmt: skip
def test_block_quant_kernel_codes_equal_the_torch_quantizer(s, block, dtype):
    """The Triton Q/K quantization pass (GPU path of ``quantize_qk``) vs the torch one: identical int8 codes and
    scales for a given token mean (IEEE divisions, round-half-even), on a strided [B, S, H, D] layout and partial
    blocks."""
    from vqcore.kernels import triton_attention as ta

    g = torch.Generator().manual_seed(s)
    x = (torch.randn(2, s, 3, 64, generator=g) * 3 + 1).to(dtype).transpose(1, 2)  # [B, H, S, D], strided
    mean = x.float().mean(dim=2).reshape(6, 64).contiguous()
    xf = x.reshape(6, s, 64).float()
    for m, mult in ((None, 0.125 * attn.LOG2E), (mean, 1.0)):
        codes, scales = ta.block_quant(x.to(DEV), block, None if m is None else m.to(DEV), mult)
        want_c, want_s = attn._block_quant(xf if m is None else xf - m[:, None, :], block)
        assert torch.equal(codes.cpu(), want_c)
        assert torch.equal(scales.cpu(), want_s * mult)


def test_k_smoothing_is_what_makes_int8_keys_accurate():
    """SageAttention §3.2: a channel bias shared by all keys (here 8σ) leaves the softmax unchanged but wrecks
    per-block int8 K; subtracting the token mean removes it. The reference measures both against float SDPA."""
    q, k, v = _qkv(1, 4, 96, 96, 64, torch.float32, seed=1, k_bias=8.0)
    want = F.scaled_dot_product_attention(q, k, v)
    err = {}
    for smooth in (True, False):
        qc, qs, kc, ks = attn.quantize_qk(q, k, 64**-0.5, smooth_k=smooth)
        err[smooth] = _rel(attn.int8_attention_ref(qc, qs, kc, ks, v, torch.float32), want)
    assert err[True] < 2e-2  # 1.1–1.3e-2 over seeds: int8 Q/K with unit-variance scores (D = 64, scale 1/8)
    assert err[False] > 3 * err[True]  # 4–5× over seeds


@pytest.mark.parametrize(("b", "h", "sq", "sk", "d", "dtype"), [
    (1, 2, 37, 45, 64, torch.float32),  # odd lengths, partial Q and K tiles
    (2, 3, 16, 60, 32, torch.bfloat16),  # cross-attention-like Sk != Sq
    (1, 1, 50, 19, 32, torch.float16),  # fewer keys than queries, one partial K tile
    (1, 2, 33, 64, 128, torch.bfloat16),  # even K tiles (EVEN_N), large head
])  # fmt: skip
def test_kernel_matches_reference_on_odd_shapes(b, h, sq, sk, d, dtype):
    from vqcore.kernels import triton_attention as ta

    q, k, v = _qkv(b, h, sq, sk, d, dtype, seed=sq)
    qc, qs, kc, ks = attn.quantize_qk(q, k, d**-0.5)
    v_strided = v.transpose(1, 2).contiguous().transpose(1, 2)  # [B, S, H, D] memory, as a projection produces
    y = ta.int8_attention(qc.to(DEV), qs.to(DEV), kc.to(DEV), ks.to(DEV), v_strided.to(DEV), dtype).cpu()
    want = attn.int8_attention_ref(qc, qs, kc, ks, v, torch.float32)
    tol = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}[dtype]
    assert y.dtype == dtype and y.shape == (b, h, sq, d)
    assert _rel(y, want) < tol
    assert _rel(want, F.scaled_dot_product_attention(q.float(), k.float(), v.float())) < 2e-2


def test_public_api_sdpa_dropin_and_fallbacks():
    q, k, v = _qkv(1, 2, 24, 24, 32, torch.float32, seed=3)
    y = kernels.int8_attention(q, k, v)
    assert _rel(y, F.scaled_dot_product_attention(q, k, v)) < 2e-2
    assert _rel(kernels.int8_attention(q, k, v, scale=0.3), F.scaled_dot_product_attention(q, k, v, scale=0.3)) < 2e-2
    sdpa = kernels.Int8SDPA()
    assert torch.equal(sdpa(q, k, v), y)
    mask = torch.rand(24, 24) > 0.3
    mask[:, 0] = True
    assert torch.equal(sdpa(q, k, v, attn_mask=mask), F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
    assert torch.equal(sdpa(q, k, v, is_causal=True), F.scaled_dot_product_attention(q, k, v, is_causal=True))
    for d in (20, 16):  # head size not a power of two / below the int8 MMA's reduction width
        q5 = torch.randn(1, 2, 24, d)
        assert torch.equal(sdpa(q5, q5, q5), F.scaled_dot_product_attention(q5, q5, q5))
    q16, k16, v16 = _qkv(1, 2, 24, 24, 16, torch.float32, seed=5)  # the public function: reference for D = 16
    assert _rel(kernels.int8_attention(q16, k16, v16), F.scaled_dot_product_attention(q16, k16, v16)) < 2e-2
    assert (sdpa.calls, sdpa.fallbacks) == (5, 4)
    with pytest.raises(ValueError, match=r"\[B, H, S, D\]"):
        kernels.int8_attention(q[0], k[0], v[0])
    with pytest.raises(ValueError, match="Sk"):
        kernels.int8_attention(q, k[:, :, :5], v)


def test_int8_attention_op_opcheck_and_compile():
    q, k, v = _qkv(1, 2, 20, 28, 16, torch.float32, seed=4)
    args = (*attn.quantize_qk(q, k, 0.25), v, torch.float32)
    torch.library.opcheck(kernels.ops.int8_attention_op, args)
    f = torch.compile(lambda a, b, c: kernels.int8_attention(a, b, c), backend="aot_eager", fullgraph=True)
    assert _rel(f(q, k, v), kernels.int8_attention(q, k, v)) < 1e-6


def test_convert_attention_int8_on_the_zoo_video_dit(tmp_path):
    """``convert(attention="int8")`` on the zoo's diffusers Latte DiT (a tiny random one): every attention module is
    routed through the int8 kernel (reference path on CPU), the output stays close to the float model's, and
    save/load re-installs it."""
    pytest.importorskip("diffusers")
    from vqcore import zoo
    from vqcore.convert import convert, load_converted, save_converted
    from vqcore.quant import QuantConfig, prepare

    torch.manual_seed(0)
    small = dict(num_heads=2, head_dim=32, num_layers=1, caption_channels=8, num_frames=4, size=8)
    fp = zoo.build("moving-digits-dit", **small).eval()
    x, t, lab = torch.randn(2, 1, 4, 8, 8), torch.tensor([10, 700]), torch.tensor([3, 10])
    with torch.no_grad():
        y_fp = fp(x, t, lab)
    with pytest.raises(ValueError, match="attention must be one of"):
        convert(torch.nn.Sequential(), attention="fp8")
    qm = zoo.build("moving-digits-dit", **small).eval()
    qm.load_state_dict(fp.state_dict())
    prepare(qm, QuantConfig(w_bits=8, a_bits=8))
    with torch.no_grad():
        y_fq = qm(x, t, lab)  # fake-quant forward (initialises the weight ranges)
    convert(qm, attention="int8", strict=False)
    sdpas = [m for m in qm.modules() if isinstance(m, kernels.Int8SDPA)]
    assert sdpas
    with torch.no_grad():
        y = qm(x, t, lab)
    assert sum(s.calls for s in sdpas) > sum(s.fallbacks for s in sdpas)
    assert _rel(y, y_fp) < 0.05 and _rel(y, y_fq) < 0.05
    save_converted(qm, tmp_path)
    re = load_converted(zoo.build("moving-digits-dit", **small).eval(), tmp_path)
    assert any(isinstance(m, kernels.Int8SDPA) for m in re.modules())
    with torch.no_grad():
        assert torch.allclose(re(x, t, lab), y, atol=1e-5)


@pytest.mark.parametrize(("symmetric", "rank"), [(True, 1), (False, 3)])
def test_quantizer_fused_lowrank_side_branch(symmetric, rank):
    """The per-token quantizer's fused ``t = x̂·downᵀ`` (Q-VDiT's rank-1 term on x̂): codes identical to the plain
    quantizer's, ``t`` equal to the chunked reference up to fp32 summation order."""
    from vqcore.kernels import triton_kernels as tk

    g = torch.Generator().manual_seed(rank)
    x = torch.randn(37, 300, generator=g) * 3
    down = torch.randn(rank, 300, generator=g)
    smooth = torch.rand(300, generator=g) + 0.5
    got = tk.quantize_per_token(x.to(DEV), smooth.to(DEV), 8, symmetric, down=down.to(DEV))
    want = ref.quantize_per_token_ref(x, smooth, 8, symmetric)
    for a, b in zip(got[:4], want):
        assert torch.equal(a.cpu(), b)
    t_ref = ref.lowrank_on_dequantized_ref(want[0], want[1], want[2], down, chunk=8)
    xhat = (want[0].double() - want[2].double()[:, None]) * want[1].double()[:, None]
    assert torch.allclose(t_ref.double(), xhat @ down.double().t(), rtol=1e-5, atol=1e-4)
    assert torch.allclose(got[4].cpu(), t_ref, rtol=1e-5, atol=1e-4)
    act, t = kernels.quantize_per_token_lowrank(x, 8, symmetric, smooth, down)  # CPU path of the public function
    assert torch.equal(act.codes, want[0]) and torch.equal(t, t_ref.new_tensor(t)) and t.shape == (37, rank)
    with pytest.raises(ValueError, match="down must be"):
        kernels.quantize_per_token_lowrank(x, 8, symmetric, smooth, down[:, :10])


@pytest.mark.gpu
def test_gpu_int8_attention_matches_reference():
    """The compiled kernel at a real odd shape (CogVideoX heads, 1000 queries/keys) vs the CPU reference."""
    q, k, v = _qkv(1, 30, 1000, 1000, 64, torch.bfloat16, seed=7)
    qc, qs, kc, ks = attn.quantize_qk(q, k, 0.125)
    y = kernels.int8_attention(q.cuda(), k.cuda(), v.cuda()).cpu()
    want = attn.int8_attention_ref(qc, qs, kc, ks, v, torch.float32)
    assert _rel(y, want) < 1.6e-2
    assert _rel(want, F.scaled_dot_product_attention(q.float(), k.float(), v.float())) < 2e-2


@pytest.mark.parametrize(("symmetric", "bits", "smooth"), [(True, 8, False), (False, 8, True), (True, 4, True)])
def test_reciprocal_quantizer_codes_equal_the_ieee_division(symmetric, bits, smooth):
    """``RECIP``: the per-token quantizer multiplies by one reciprocal per row and falls back to IEEE divisions in
    blocks with an element near a rounding tie. Rows built around exact and nearly exact ties (x/s = k + ½ and the
    fp32 neighbours of x) and plain random rows: codes bit-identical to the reference; both the multiply-only path
    and the fallback are exercised (checked with the kernel's own near-tie rule)."""
    from vqcore.kernels import triton_kernels as tk

    g = torch.Generator().manual_seed(bits + 2 * symmetric)
    k = 96
    rows = [torch.randn(k, generator=g) * 2 for _ in range(6)]  # random rows: usually no near-tie
    for base in range(3):  # tie rows: x = (j + 1/2)·s and its fp32 neighbours, s the row's own scale
        lo, hi = -(2.0 + base), 3.0 + base  # the row's min and max (so also its amax) fix its scale s
        ends = torch.tensor([lo, hi])
        s = ref.quantize_per_token_ref(ends[None], None, bits, symmetric)[1]
        j = torch.arange(-300, 300, dtype=torch.float32)
        x = (j + 0.5) * s
        x = x[(x > lo) & (x < hi)]
        x = torch.cat([x, torch.nextafter(x, x + 1), torch.nextafter(x, x - 1)])
        x = x[torch.randperm(x.numel(), generator=g)[: k - 2]]
        fill = lo + (hi - lo) * torch.rand(k - 2 - x.numel(), generator=g)  # 4 bit: fewer ties than columns
        rows.append(torch.cat([x, fill, ends]))
    x = torch.stack(rows)
    sm = torch.ones(k) if smooth else None  # smoothing by 1: the ties survive the (IEEE) division
    want = ref.quantize_per_token_ref(x, sm, bits, symmetric)
    got = tk.quantize_per_token(x.to(DEV), None if sm is None else sm.to(DEV), bits, symmetric,
                                config={"RECIP": True, "ROWS": 1})  # fmt: skip
    for a, b in zip(got, want):
        assert torch.equal(a.cpu(), b)
    # the kernel's near-tie rule, per row (ROWS = 1: one block per row)
    xs = x if sm is None else x / sm
    v = xs * (1.0 / want[1])[:, None]
    near = ((0.5 - (v - torch.round(v)).abs()) < 2**-13).any(dim=1)
    assert near.any() and not near.all()
    assert (torch.round(v) != torch.round(xs / want[1][:, None])).any()  # multiplies alone would change codes
