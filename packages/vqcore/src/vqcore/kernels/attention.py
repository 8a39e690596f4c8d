"""SageAttention-style int8 attention (Zhang et al., "SageAttention: Accurate 8-bit attention for plug-and-play
inference acceleration", ICLR 2025, §3–4; the per-block "SageAttn-B" variant of its Table/Alg. 1).

``o = softmax(Q·Kᵀ·scale)·V`` with

1. **K smoothing** (§3.2): ``K ← K − mean_tokens(K)`` per (batch, head, channel). Every query's scores change by the
   same constant ``q·mean`` across keys, so the softmax is unchanged, while the channel-wise outliers of K (a shared
   bias, the reason plain int8 K fails) are removed before quantization.
2. **per-block int8 quantization of Q and K** (§3.3): symmetric, one scale per block of ``q_block`` (128) query rows
   and of ``k_block`` (64) key rows of each (batch, head): ``scale = max|x_block| / 127``, codes
   ``clamp(round(x / scale), −127, 127)`` (IEEE division, round-half-even: the codes of every backend are identical).
   ``softmax_scale·log2(e)`` is folded into the per-row query scale (the kernel's softmax uses ``exp2``).
3. ``S = (Q_int·K_intᵀ)·s_q·s_k``: exact int32 products on the int8 tensor cores, rescaled in fp32.
4. the online softmax in fp32; ``P`` cast to the values' dtype (bf16/fp16) and ``P·V`` on the bf16/fp16 tensor cores
   with fp32 accumulation (SageAttention keeps ``P·V`` in 16 bit: quantizing P and V costs accuracy for little speed).

Deviations from the paper's kernels: P·V accumulates in fp32 (the paper's fp16-accumulator option is Ada-specific);
Q/K quantization and the smoothing mean run as separate passes in torch ops (one read of Q and K, ~1–2 % of the
attention time at video lengths) instead of inside a fused kernel.

What the fake-quant attention of :mod:`vqcore.quant.attention` (``QuantConfig.attention_bits``) quantizes differs: it
fake-quantizes *both* products' operands per token (asymmetric, Q, K, P and V). :func:`int8_attention_ref` is the
exact numerics of this kernel (the quantized quantities are Q and smoothed K only, per block, symmetric), so a model
converted with ``convert(attention="int8")`` is compared against this reference, not against ``attention_bits``.

Public: :func:`quantize_qk` (the shared quantizer), :func:`int8_attention` (Triton on CUDA, the reference elsewhere),
:func:`int8_attention_ref`, :class:`Int8SDPA` (an ``F.scaled_dot_product_attention`` drop-in that falls back to the
float SDPA for masks, causal attention, dropout and unsupported head sizes) and :func:`use_int8_attention`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Int8SDPA", "int8_attention", "int8_attention_ref", "quantize_qk", "use_int8_attention"]

LOG2E = 1.4426950408889634
EPS = 1e-8
_SDPA = F.scaled_dot_product_attention  # the float attention, captured before any wrapper replaces it


def _block_quant(x: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 codes of ``x [BH, S, D]`` (fp32) with one scale per block of ``block`` rows; returns the codes
    ``[BH, S, D]`` and the per-row scale ``[BH, S]`` (each row carries its block's scale)."""
    bh, s, d = x.shape
    nb = -(-s // block)
    xp = x if nb * block == s else F.pad(x, (0, 0, 0, nb * block - s))
    amax = xp.view(bh, nb, block * d).abs().amax(-1)
    scale = amax.clamp_min(EPS) / 127.0
    rows = scale.repeat_interleave(block, dim=1)[:, :s]
    codes = torch.round(x / rows[:, :, None]).clamp_(-127, 127).to(torch.int8)
    return codes, rows.contiguous()


def quantize_qk(
    q: torch.Tensor, k: torch.Tensor, scale: float, q_block: int = 128, k_block: int = 64, smooth_k: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Int8 codes and per-row scales of ``q [B, H, Sq, D]`` and (smoothed) ``k [B, H, Sk, D]`` (module docstring,
    steps 1–2): returns ``qc [BH, Sq, D]``, ``qs [BH, Sq]`` (block scale × ``scale``·log2 e), ``kc [BH, Sk, D]``,
    ``ks [BH, Sk]``."""
    b, h, sq, d = q.shape
    if q.is_cuda and q.stride(-1) == 1 and k.stride(-1) == 1 and not _compiling():  # one Triton pass per tensor
        from . import triton_attention as ta

        mean = k.mean(dim=2, dtype=torch.float32).reshape(b * h, d).contiguous() if smooth_k else None  # no fp32 K
        qc, qs = ta.block_quant(q, q_block, None, scale * LOG2E)
        kc, ks = ta.block_quant(k, k_block, mean, 1.0)
        return qc, qs, kc, ks
    kf = k.reshape(b * h, k.shape[2], d).float()
    if smooth_k:
        kf = kf - kf.mean(dim=1, keepdim=True)
    qc, qs = _block_quant(q.reshape(b * h, sq, d).float(), q_block)
    kc, ks = _block_quant(kf, k_block)
    return qc, qs * (scale * LOG2E), kc, ks


def _compiling() -> bool:
    is_compiling = getattr(torch.compiler, "is_compiling", None)
    return is_compiling is not None and is_compiling()


def int8_attention_ref(
    qc: torch.Tensor, qs: torch.Tensor, kc: torch.Tensor, ks: torch.Tensor, v: torch.Tensor, out_dtype: torch.dtype
) -> torch.Tensor:
    """Reference of the kernel on quantized inputs (fp32 throughout, exact softmax instead of the online one, P not
    rounded to 16 bit): ``softmax₂((qc·kcᵀ)·qs·ks)·v`` → ``[B, H, Sq, D]``."""
    b, h, sk, d = v.shape
    s = (qc.double() @ kc.double().transpose(1, 2)).float() * qs[:, :, None] * ks[:, None, :]  # exact int sums
    p = torch.softmax(s * math.log(2.0), dim=-1)  # exp2(s) / Σ exp2(s)
    o = p @ v.reshape(b * h, sk, d).float()
    return o.view(b, h, -1, d).to(out_dtype)


def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"q, k, v must be [B, H, S, D], got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if k.shape != v.shape or q.shape[:2] != k.shape[:2] or q.shape[3] != k.shape[3]:
        raise ValueError(f"q [B, H, Sq, D], k and v [B, H, Sk, D] expected, got {tuple(q.shape)}, {tuple(k.shape)}, "
                         f"{tuple(v.shape)}")  # fmt: skip
    if not q.dtype.is_floating_point:
        raise TypeError(f"q, k, v must be floating tensors, got {q.dtype}")


def int8_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None, *, q_block: int = 128,
    k_block: int = 64, smooth_k: bool = True,
) -> torch.Tensor:  # fmt: skip
    """SageAttention-style attention of ``q [B, H, Sq, D]``, ``k, v [B, H, Sk, D]`` (module docstring); ``scale``
    defaults to ``1/√D``. Output ``[B, H, Sq, D]`` in ``q``'s dtype. CUDA: the Triton kernel (``D`` a power of two
    in [32, 256]); elsewhere, and for other head sizes, the reference."""
    _check(q, k, v)
    d = q.shape[-1]
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    qc, qs, kc, ks = quantize_qk(q, k, scale, q_block, k_block, smooth_k)
    if not kernel_supports(q, k, v):  # e.g. D = 16 (the int8 MMA needs a reduction of ≥ 32): the reference
        return int8_attention_ref(qc, qs, kc, ks, v, q.dtype)
    if q.is_cuda and not _compiling():
        from . import triton_attention

        vv = v if v.stride(-1) == 1 else v.contiguous()
        return triton_attention.int8_attention(qc, qs, kc, ks, vv, q.dtype)
    from .ops import int8_attention_op  # CPU reference / the CUDA kernel as an opaque op under torch.compile

    return int8_attention_op(qc, qs, kc, ks, v, q.dtype)


def kernel_supports(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
    """Shapes the kernel runs: 4-D ``[B, H, S, D]``, equal heads, ``D`` a power of two in [32, 256] (the int8 MMA
    reduces over ≥ 32), float dtype."""
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4 or k.shape != v.shape:
        return False
    d = q.shape[-1]
    return (q.shape[:2] == k.shape[:2] and k.shape[-1] == d and 32 <= d <= 256 and d & (d - 1) == 0
            and q.dtype in (torch.float16, torch.bfloat16, torch.float32))  # fmt: skip


class Int8SDPA(nn.Module):
    """Drop-in for ``F.scaled_dot_product_attention`` running :func:`int8_attention`; masks, causal attention,
    dropout in training, GQA and unsupported shapes go to the float SDPA (counted in ``fallbacks``)."""

    def __init__(self, q_block: int = 128, k_block: int = 64, smooth_k: bool = True) -> None:
        super().__init__()
        self.q_block, self.k_block, self.smooth_k = q_block, k_block, smooth_k
        self.calls = 0
        self.fallbacks = 0

    def forward(self, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                enable_gqa=False):  # fmt: skip
        self.calls += 1
        if (attn_mask is not None or is_causal or (dropout_p > 0 and self.training)
                or not kernel_supports(query, key, value)):  # fmt: skip
            self.fallbacks += 1
            kw = {"enable_gqa": True} if enable_gqa else {}
            return _SDPA(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p if self.training else 0.0,
                         is_causal=is_causal, scale=scale, **kw)  # fmt: skip
        return int8_attention(query, key, value, scale, q_block=self.q_block, k_block=self.k_block,
                              smooth_k=self.smooth_k)  # fmt: skip

    def extra_repr(self) -> str:
        return f"q_block={self.q_block}, k_block={self.k_block}, smooth_k={self.smooth_k}"


def use_int8_attention(model: nn.Module, **kw) -> int:
    """Route the attention of every diffusers-style attention module of ``model`` (a module with a ``processor``)
    through :class:`Int8SDPA`, the way :func:`vqcore.quant.attention.quantize_attention` installs its fake-quant
    products (the processor is wrapped; while it runs ``F.scaled_dot_product_attention`` is the int8 one). A module
    already wrapped by ``quantize_attention`` gets its fake-quant products replaced. Returns the number of modules."""
    from ..quant.attention import _QuantAttnProcessor, _wrapper_class

    n = 0
    for mod in list(model.modules()):
        proc = getattr(mod, "processor", None)
        if proc is None or not callable(proc):
            continue
        sdpa = Int8SDPA(**kw)
        if isinstance(proc, _QuantAttnProcessor):
            proc.sdpa = sdpa
        else:
            mod.processor = _wrapper_class(type(proc))(proc, sdpa)
        mod.add_module("vq_attention", sdpa)
        n += 1
    return n
