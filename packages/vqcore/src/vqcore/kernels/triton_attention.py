"""Triton kernel of the SageAttention-style int8 attention (:func:`vqcore.kernels.attention.int8_attention`).

Imported lazily (it imports ``triton``); runs in Triton's CPU interpreter under ``TRITON_INTERPRET=1``.

Inputs are what :func:`vqcore.kernels.attention.quantize_qk` produced: int8 query codes ``[BH, Sq, D]`` with one fp32
scale per query row (the scale of its block of queries, times ``softmax_scale·log2(e)``), int8 codes of the smoothed
keys ``[BH, Sk, D]`` with one fp32 scale per key row (its block's scale), and the values ``[B, H, Sk, D]`` in the
model's dtype. One program computes ``BLOCK_M`` query rows of one (batch, head): for each tile of ``BLOCK_N`` keys the
exact int32 ``Q_int·K_intᵀ`` (int8 tensor cores) is rescaled to fp32 log2-domain scores, the online softmax
(FlashAttention-2 recurrence, ``exp2``) updates the running max / sum, and ``P`` (cast to the value dtype) times
``V`` accumulates in fp32 on the bf16/fp16 tensor cores. Keys past ``Sk`` are masked to ``−inf``.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


@triton.jit
def _attn_tile(
    q, qs, k_base, ks_row, v_base, start, Sk, stride_kn, stride_vn, offs_n, offs_d, m_i, l_i, acc,
    MASK: tl.constexpr, DOT_F32: tl.constexpr,
):  # fmt: skip
    """One ``BLOCK_N``-key tile of the online softmax (``MASK``: the partial last tile, keys ≥ ``Sk`` → −inf)."""
    n = start + offs_n
    if MASK:
        nmask = n < Sk
        kt = tl.load(k_base + n.to(tl.int64)[None, :] * stride_kn + offs_d[:, None], mask=nmask[None, :], other=0)
        ks = tl.load(ks_row + n, mask=nmask, other=0.0)
        v = tl.load(v_base + n.to(tl.int64)[:, None] * stride_vn + offs_d[None, :], mask=nmask[:, None], other=0.0)
    else:
        kt = tl.load(k_base + n.to(tl.int64)[None, :] * stride_kn + offs_d[:, None])  # [D, BLOCK_N]
        ks = tl.load(ks_row + n)
        v = tl.load(v_base + n.to(tl.int64)[:, None] * stride_vn + offs_d[None, :])
    # scores s = (Q_int·K_intᵀ)·qs·ks; qs > 0 per row, so max_j s = qs·max_j(t) with t = dot·ks, and the exponent
    # t·qs − m is one FMA per element (one multiply fewer than forming s)
    t = tl.dot(q, kt, out_dtype=tl.int32).to(tl.float32) * ks[None, :]
    if MASK:
        t = tl.where(nmask[None, :], t, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(t, axis=1) * qs)
    alpha = tl.math.exp2(m_i - m_new)
    p = tl.math.exp2(t * qs[:, None] - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, axis=1)
    if DOT_F32:  # fp32 values (IEEE, not tf32), or the interpreter's bf16 (not emulated): same P rounding
        pv = tl.dot(p.to(v.dtype).to(tl.float32), v.to(tl.float32), input_precision="ieee", out_dtype=tl.float32)
    else:
        pv = tl.dot(p.to(v.dtype), v, out_dtype=tl.float32)
    acc = acc * alpha[:, None] + pv
    return m_new, l_i, acc


@triton.jit
def _int8_attn_kernel(
    q_ptr, qs_ptr, k_ptr, ks_ptr, v_ptr, o_ptr,
    Sq, Sk, H,
    stride_qb, stride_qm, stride_kb, stride_kn,
    stride_vb, stride_vh, stride_vn, stride_ob, stride_oh, stride_om,
    D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, DOT_F32: tl.constexpr,
):  # fmt: skip
    """Full key tiles without masks, then the partial last tile (if any) with them."""
    pid_m = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    b = bh // H
    h = bh % H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D)
    mmask = offs_m < Sq
    q = tl.load(q_ptr + bh * stride_qb + offs_m.to(tl.int64)[:, None] * stride_qm + offs_d[None, :],
                mask=mmask[:, None], other=0)  # fmt: skip
    qs = tl.load(qs_ptr + bh * Sq + offs_m, mask=mmask, other=0.0)
    m_i = tl.zeros((BLOCK_M,), dtype=tl.float32) - float("inf")
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_M, D), dtype=tl.float32)
    offs_n = tl.arange(0, BLOCK_N)
    k_base = k_ptr + bh * stride_kb
    ks_row = ks_ptr + bh * Sk
    v_base = v_ptr + b * stride_vb + h * stride_vh
    n_full = (Sk // BLOCK_N) * BLOCK_N
    for start in range(0, n_full, BLOCK_N):
        m_i, l_i, acc = _attn_tile(q, qs, k_base, ks_row, v_base, start, Sk, stride_kn, stride_vn, offs_n, offs_d,
                                   m_i, l_i, acc, False, DOT_F32)  # fmt: skip
    if n_full < Sk:
        m_i, l_i, acc = _attn_tile(q, qs, k_base, ks_row, v_base, n_full, Sk, stride_kn, stride_vn, offs_n, offs_d,
                                   m_i, l_i, acc, True, DOT_F32)  # fmt: skip
    o = acc / l_i[:, None]
    o_ptrs = o_ptr + b * stride_ob + h * stride_oh + offs_m.to(tl.int64)[:, None] * stride_om + offs_d[None, :]
    tl.store(o_ptrs, o.to(o_ptr.dtype.element_ty), mask=mmask[:, None])


@triton.jit
def _rne(v):
    return (v + 12582912.0) - 12582912.0


@triton.jit
def _block_quant_kernel(
    x_ptr, mean_ptr, c_ptr, s_ptr, S, H, MULT,
    stride_xb, stride_xh, stride_xs, stride_cb, stride_cs,
    D: tl.constexpr, BLOCK: tl.constexpr, HAS_MEAN: tl.constexpr,
):  # fmt: skip
    """One block of ``BLOCK`` rows of one (batch, head) of ``x [B, H, S, D]``: subtract the per-channel ``mean``
    (``HAS_MEAN``: fp32 ``[BH, D]``), ``scale = max(amax, 1e-8) / 127`` over the whole block, int8 codes
    ``clamp(rne(x / scale), −127, 127)`` (IEEE divisions: the codes of ``attention._block_quant``), and the per-row
    scale ``scale·MULT`` for every row of the block."""
    pid = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    rows = pid * BLOCK + tl.arange(0, BLOCK)
    offs_d = tl.arange(0, D)
    rmask = rows < S
    x = tl.load(x_ptr + (bh // H) * stride_xb + (bh % H) * stride_xh + rows.to(tl.int64)[:, None] * stride_xs
                + offs_d[None, :], mask=rmask[:, None], other=0.0).to(tl.float32)  # fmt: skip
    if HAS_MEAN:
        x = x - tl.load(mean_ptr + bh * D + offs_d)[None, :]
        x = tl.where(rmask[:, None], x, 0.0)
    amax = tl.max(tl.max(tl.abs(x), axis=1), axis=0)
    scale = tl.math.div_rn(tl.maximum(amax, 1e-8), 127.0)
    q = tl.minimum(tl.maximum(_rne(tl.math.div_rn(x, scale)), -127.0), 127.0)
    tl.store(c_ptr + bh * stride_cb + rows.to(tl.int64)[:, None] * stride_cs + offs_d[None, :], q.to(tl.int8),
             mask=rmask[:, None])  # fmt: skip
    tl.store(s_ptr + bh * S + rows, tl.zeros((BLOCK,), dtype=tl.float32) + scale * MULT, mask=rmask)


def block_quant(x: torch.Tensor, block: int, mean: torch.Tensor | None, mult: float) -> tuple[torch.Tensor, ...]:
    """Triton version of ``attention._block_quant`` on ``x [B, H, S, D]`` (last dim contiguous; ``mean`` fp32
    ``[BH, D]`` subtracted first): int8 codes ``[BH, S, D]`` and per-row scales ``[BH, S]`` (times ``mult``)."""
    b, h, s, d = x.shape
    codes = torch.empty((b * h, s, d), dtype=torch.int8, device=x.device)
    scales = torch.empty((b * h, s), dtype=torch.float32, device=x.device)
    if s and b * h:
        _block_quant_kernel[(triton.cdiv(s, block), b * h)](
            x, mean if mean is not None else scales, codes, scales, s, h, mult,
            x.stride(0), x.stride(1), x.stride(2), codes.stride(0), codes.stride(1),
            D=d, BLOCK=block, HAS_MEAN=mean is not None, num_warps=4,
        )  # fmt: skip
    return codes, scales


#: Launch of the attention kernel on a GPU (``BLOCK_M``, ``BLOCK_N``, warps, stages); the benchmark times others.
ATTN_TILE = {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 4, "num_stages": 3}
_INTERP_ATTN = {"BLOCK_M": 16, "BLOCK_N": 16}


def int8_attention(
    qc: torch.Tensor, qs: torch.Tensor, kc: torch.Tensor, ks: torch.Tensor, v: torch.Tensor, out_dtype: torch.dtype,
    config: dict | None = None,
) -> torch.Tensor:  # fmt: skip
    """``qc [BH, Sq, D]`` int8, ``qs [BH, Sq]`` fp32, ``kc [BH, Sk, D]`` int8, ``ks [BH, Sk]`` fp32 (row-contiguous),
    ``v [B, H, Sk, D]`` (last dim contiguous) → output ``[B, H, Sq, D]`` in ``out_dtype``."""
    bsz, heads, sk, d = v.shape
    bh, sq, _ = qc.shape
    out = torch.empty((bsz, heads, sq, d), dtype=out_dtype, device=v.device)
    if sq == 0 or bh == 0:
        return out
    tile = dict(_INTERP_ATTN if INTERPRET else ATTN_TILE)
    tile.update(config or {})
    launch = {kk: tile.pop(kk) for kk in ("num_warps", "num_stages") if kk in tile}
    grid = (triton.cdiv(sq, tile["BLOCK_M"]), bh)
    dot_f32 = v.dtype == torch.float32 or (INTERPRET and v.dtype == torch.bfloat16)
    _int8_attn_kernel[grid](
        qc, qs, kc, ks, v, out, sq, sk, heads,
        qc.stride(0), qc.stride(1), kc.stride(0), kc.stride(1),
        v.stride(0), v.stride(1), v.stride(2), out.stride(0), out.stride(1), out.stride(2),
        D=d, DOT_F32=dot_f32, **tile, **launch,
    )  # fmt: skip
    return out
