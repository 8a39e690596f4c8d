"""Triton W4 unpack: the chunked packed-int4 layout of :mod:`vqcore.kernels.packing` to an int8 copy, for the
unpack-then-int8-GEMM path at large M."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _unpack_int4_kernel(p_ptr, w_ptr, N, stride_pn, stride_wn, BLOCK_R: tl.constexpr):
    """Packed int4 ``[N, Kp/2]`` → int8 codes ``[N, Kp]``; program (i, c) unpacks chunk ``c`` of ``BLOCK_R`` rows."""
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    c = tl.program_id(1)
    j = tl.arange(0, 64)
    rmask = (rows < N)[:, None]
    r64 = rows.to(tl.int64)[:, None]
    p = tl.load(p_ptr + r64 * stride_pn + c * 64 + j[None, :], mask=rmask, other=0)
    base = w_ptr + r64 * stride_wn + c * 128 + j[None, :]
    tl.store(base, (p << 4) >> 4, mask=rmask)
    tl.store(base + 64, p >> 4, mask=rmask)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """Triton unpack of the chunked int4 layout: int8 ``[N, Kp/2]`` → int8 ``[N, Kp]`` (zero codes in the K padding).
    W4A8 at large M runs as this (one pass over the packed weights, ~N·K·1.5 bytes of traffic) + the int8 GEMM: the
    GEMM is compute-bound there and Hopper has no 4-bit MMA, so unpacking inside the K loop only costs issue slots."""
    n, kh = packed.shape
    out = torch.empty((n, 2 * kh), dtype=torch.int8, device=packed.device)
    if n:
        br = 32
        _unpack_int4_kernel[(triton.cdiv(n, br), kh // 64)](packed, out, n, packed.stride(0), out.stride(0),
                                                            BLOCK_R=br, num_warps=4)  # fmt: skip
    return out
