"""Packing of 4-bit integer weights, two codes per byte.

Layout (``INT4_CHUNK = 128``): the reduction axis K is padded with zero codes to a multiple of 128 and cut into
chunks of 128. Inside chunk ``c``, byte ``j`` (``0 <= j < 64``) of a row holds the code of column ``128·c + j`` in its
low nibble and the code of column ``128·c + 64 + j`` in its high nibble, both as two's-complement int4 in [-8, 7].

Why this and not adjacent pairs (2k, 2k+1): the GEMM kernel unpacks a byte tile into two *contiguous* K-slices
(low nibbles = first half of the chunk, high nibbles = second half) and multiplies each with a contiguous slice of
the activation tile, so no register interleave (``tl.join`` + reshape) is needed inside the inner loop. The layout does
not depend on the kernel's tile sizes. Per-group scales need ``group_size % 64 == 0``.
"""

from __future__ import annotations

import torch

INT4_CHUNK = 128
_HALF = INT4_CHUNK // 2


def padded_k(k: int) -> int:
    """K rounded up to a multiple of :data:`INT4_CHUNK`."""
    return (k + INT4_CHUNK - 1) // INT4_CHUNK * INT4_CHUNK


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """Pack signed 4-bit codes ``[N, K]`` (any integer dtype, values in [-8, 7]) into int8 ``[N, padded_k(K) // 2]``."""
    if not isinstance(codes, torch.Tensor) or codes.dim() != 2:
        raise ValueError(f"codes must be a 2-D integer tensor [N, K], got {getattr(codes, 'shape', type(codes))}")
    if codes.dtype.is_floating_point or codes.dtype == torch.bool:
        raise TypeError(f"codes must have an integer dtype, got {codes.dtype}")
    if codes.numel() and (int(codes.min()) < -8 or int(codes.max()) > 7):
        raise ValueError("codes must lie in [-8, 7] for signed int4 packing")
    n, k = codes.shape
    kp = padded_k(k)
    full = torch.zeros(n, kp, dtype=torch.int16, device=codes.device)
    full[:, :k] = codes.to(torch.int16)
    full = full.view(n, kp // INT4_CHUNK, 2, _HALF)
    lo = full[:, :, 0, :] & 0xF
    hi = (full[:, :, 1, :] & 0xF) << 4
    packed = (lo | hi).to(torch.uint8).reshape(n, kp // 2)
    return packed.view(torch.int8).contiguous()


def unpack_int4(packed: torch.Tensor, k: int) -> torch.Tensor:
    """Inverse of :func:`pack_int4`: int8 ``[N, padded_k(k)//2]`` → int8 codes ``[N, k]`` in [-8, 7]."""
    if packed.dtype not in (torch.int8, torch.uint8) or packed.dim() != 2:
        raise ValueError(f"packed must be a 2-D int8 tensor, got {packed.dtype} {tuple(packed.shape)}")
    n, kh = packed.shape
    kp = padded_k(k)
    if kh * 2 != kp:
        raise ValueError(f"packed has {kh} bytes per row but k={k} needs {kp // 2}")
    p = packed.view(torch.uint8).to(torch.int16).view(n, kp // INT4_CHUNK, _HALF)
    lo = p & 0xF
    hi = (p >> 4) & 0xF
    lo = torch.where(lo >= 8, lo - 16, lo)
    hi = torch.where(hi >= 8, hi - 16, hi)
    full = torch.stack([lo, hi], dim=2).reshape(n, kp)
    return full[:, :k].to(torch.int8).contiguous()
