"""Triton weight-only GEMM for small M: 16-bit activations times int8 / packed int4 weight codes on the 16-bit
tensor cores."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .triton_policy import CHUNK, INTERPRET


@triton.jit
def _wonly_gemm_kernel(
    x_ptr, w_ptr, sw_ptr, bias_ptr, c_ptr,
    M, N, K, G, stride_xm, stride_wn, stride_cm,
    W4: tl.constexpr, GROUP_SIZE: tl.constexpr, HAS_BIAS: tl.constexpr, EVEN_K: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """Weight-only ``y = x·(w·s)ᵀ + b``: 16-bit activations ``x [M, K]`` (not quantized), int8 or packed int4 weight
    codes converted to the activation dtype in registers (exact: |code| ≤ 128) and multiplied on the 16-bit tensor
    cores with fp32 accumulation; per-channel scales in the epilogue, per-group scales per K slice. For small M the
    GEMM is bound by the weight bytes, which int8/int4 halve/quarter relative to bf16."""
    CH: tl.constexpr = 128
    HALF: tl.constexpr = 64
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rm = (offs_m % M).to(tl.int64)
    rn = (offs_n % N).to(tl.int64)
    KW: tl.constexpr = HALF if W4 else CH
    offs_k = tl.arange(0, KW)
    x_ptrs = x_ptr + rm[:, None] * stride_xm + offs_k[None, :]
    w_ptrs = w_ptr + rn[None, :] * stride_wn + offs_k[:, None]  # [KW, BLOCK_N]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for kc in range(0, tl.cdiv(K, CH)):
        k0 = kc * CH
        if EVEN_K:
            a0 = tl.load(x_ptrs)
            if W4:
                a1 = tl.load(x_ptrs + HALF)
        else:
            a0 = tl.load(x_ptrs, mask=(k0 + offs_k)[None, :] < K, other=0.0)
            if W4:
                a1 = tl.load(x_ptrs + HALF, mask=(k0 + HALF + offs_k)[None, :] < K, other=0.0)
        if W4:
            p = tl.load(w_ptrs)  # packed rows are zero-padded to a multiple of CH
            w0 = ((p << 4) >> 4).to(a0.dtype)
            w1 = (p >> 4).to(a0.dtype)
        elif EVEN_K:
            w0 = tl.load(w_ptrs).to(a0.dtype)
        else:
            w0 = tl.load(w_ptrs, mask=(k0 + offs_k)[:, None] < K, other=0).to(a0.dtype)
        if GROUP_SIZE > 0:
            s0 = tl.load(sw_ptr + rn * G + k0 // GROUP_SIZE)
            d = tl.dot(a0, w0, out_dtype=tl.float32)
            if W4:
                if GROUP_SIZE % CH == 0:
                    d = tl.dot(a1, w1, d, out_dtype=tl.float32)
                else:
                    g1 = (k0 + HALF) // GROUP_SIZE
                    s1 = tl.load(sw_ptr + rn * G + g1, mask=(rn * 0 + g1) < G, other=0.0)
                    acc += tl.dot(a1, w1, out_dtype=tl.float32) * s1[None, :]
            acc += d * s0[None, :]
        else:
            acc = tl.dot(a0, w0, acc, out_dtype=tl.float32)
            if W4:
                acc = tl.dot(a1, w1, acc, out_dtype=tl.float32)
        x_ptrs += CH
        w_ptrs += CH // 2 if W4 else CH
    if GROUP_SIZE == 0:
        acc = acc * tl.load(sw_ptr + rn)[None, :]
    if HAS_BIAS:
        acc = acc + tl.load(bias_ptr + rn).to(tl.float32)[None, :]
    c_ptrs = c_ptr + offs_m.to(tl.int64)[:, None] * stride_cm + offs_n[None, :]
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))


#: weight-only tiles by M (≤ 16, ≤ 64, larger); BLOCK_N small so that a 1152–1920-wide layer still spreads over many SMs
WONLY_TILES = {
    "16": {"BLOCK_M": 16, "BLOCK_N": 32, "num_warps": 4, "num_stages": 4},
    "64": {"BLOCK_M": 64, "BLOCK_N": 32, "num_warps": 4, "num_stages": 4},
    "256": {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 4, "num_stages": 4},
}
_INTERP_WONLY = {"BLOCK_M": 16, "BLOCK_N": 32}


def weight_only_linear(
    x: torch.Tensor, w: torch.Tensor, w_scale: torch.Tensor, group_size: int, w4: bool, k: int,
    bias: torch.Tensor | None, out_dtype: torch.dtype, config: dict | None = None,
) -> torch.Tensor:  # fmt: skip
    """Launch :func:`_wonly_gemm_kernel`: ``x [M, K]`` bf16/fp16, ``w`` int8 ``[N, K]`` or packed
    ``[N, padded_k(K)/2]``, ``w_scale`` fp32 ``[N]`` or ``[N, G]``. (The interpreter does not emulate bf16 dots:
    there bf16 inputs run as their exact fp32 values.)"""
    if x.dtype not in (torch.bfloat16, torch.float16) and not INTERPRET:
        raise ValueError(f"the weight-only kernel takes bf16/fp16 activations, got {x.dtype}")
    if INTERPRET and x.dtype == torch.bfloat16:
        return weight_only_linear(x.float(), w, w_scale, group_size, w4, k, bias, torch.float32, config).to(out_dtype)
    m = x.shape[0]
    n = w.shape[0]
    out = torch.empty((m, n), dtype=out_dtype, device=x.device)
    if m == 0 or n == 0:
        return out
    if x.stride(1) != 1:
        x = x.contiguous()
    g = w_scale.shape[1] if group_size > 0 else 1
    w_scale = w_scale.contiguous().float()
    key = "16" if m <= 16 else ("64" if m <= 64 else "256")
    tile = {**(_INTERP_WONLY if INTERPRET else WONLY_TILES[key]), **(config or {})}
    launch = {kk: tile.pop(kk) for kk in ("num_warps", "num_stages") if kk in tile}
    grid = (triton.cdiv(n, tile["BLOCK_N"]), triton.cdiv(m, tile["BLOCK_M"]))
    _wonly_gemm_kernel[grid](
        x, w, w_scale, bias if bias is not None else w_scale, out, m, n, k, g, x.stride(0), w.stride(0), out.stride(0),
        W4=bool(w4), GROUP_SIZE=int(group_size), HAS_BIAS=bias is not None, EVEN_K=k % CHUNK == 0, **tile, **launch,
    )  # fmt: skip
    return out
