"""Row maths of the weight storage: which integer container a (mixed-width) layer uses and how its codes become the
GEMM's rows — signed container codes, and for channels one bit wider than the container a second row holding the high
digit (``c = 2h + l``; see :mod:`vqcore.convert`, "mixed-width weights")."""

from __future__ import annotations

import torch

from .spec import MIXED_LAYOUTS

__all__ = ["mixed_width_container", "weight_rows"]


def mixed_width_container(channel_bits: torch.Tensor, layout: str = "split") -> tuple[int, torch.Tensor]:
    """Container width and split mask of a mixed-width layer (see module docstring): returns ``(W, split [N] bool)``;
    ``W ≤ 4`` means packed int4. Raises ``ValueError`` for widths the kernels cannot hold (> 9 bits, or < 1)."""
    if layout not in MIXED_LAYOUTS:
        raise ValueError(f"mixed_layout must be one of {MIXED_LAYOUTS}, got {layout!r}")
    cb = torch.as_tensor(channel_bits).long().reshape(-1)
    if cb.numel() == 0:
        raise ValueError("channel_bits is empty")
    lo, hi = int(cb.min()), int(cb.max())
    if lo < 1 or hi > 9:
        raise ValueError(f"channel widths must be in [1, 9] bits for the integer kernels, got [{lo}, {hi}]")
    none = torch.zeros_like(cb, dtype=torch.bool)
    if hi == 9:  # no 9-bit container: always two int8 rows
        return 8, cb == 9
    if hi <= 4:
        return max(hi, 2), none
    if hi == 5 and layout == "split" and int((cb == 5).sum()) < cb.numel():
        return 4, cb == 5
    return hi, none


def weight_rows(
    codes: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor | None,
    w_bits: int,
    group_size: int,
    channel_bits: torch.Tensor | None,
    layout: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None, int]:
    """Signed container codes of the GEMM rows ``[N + k, K]`` (int8 values), their scales, signed zero points (``None``
    when symmetric), the split channel indices (``None`` without split rows) and the container width."""
    n, k = codes.shape
    cb = torch.full((n,), int(w_bits), dtype=torch.long, device=codes.device)
    if channel_bits is not None:
        cb = torch.as_tensor(channel_bits).long().reshape(-1).to(codes.device)
        if cb.numel() != n:
            raise ValueError(f"channel_bits must have {n} entries, got {cb.numel()}")
        width, split = mixed_width_container(cb, layout)
    else:
        width, split = int(w_bits), torch.zeros(n, dtype=torch.bool, device=codes.device)
    zp = None
    if zero_point is not None:
        zp = zero_point.detach().float().reshape(n, -1)
        if not bool((zp == 0).all()) and group_size:
            raise ValueError("asymmetric per-group weights (non-zero zero points) are not supported by the "
                             "integer kernels; quantize weights symmetrically or per channel")  # fmt: skip
    half_c = (2 ** (cb - 1)).float()[:, None]
    # asymmetric (unsigned codes in [0, 2^b − 1]) if a zero point is non-zero, or codes exceed the signed range
    asym = zp is not None and (bool((zp != 0).any()) or bool((codes > half_c - 1).any()))
    lo, hi = (torch.zeros_like(half_c), 2 * half_c - 1) if asym else (-half_c, half_c - 1)
    if codes.numel() and (bool((codes < lo).any()) or bool((codes > hi).any())):
        raise ValueError(f"codes outside the range of their channel width ({'asymmetric' if asym else 'symmetric'}, "
                         f"widths {sorted(set(cb.tolist()))})")  # fmt: skip
    scale = scale.detach().float().reshape(n, -1)
    zps = None
    if asym:  # unsigned → signed container; the zero point moves with the codes ((c − z) is unchanged)
        shift = torch.where(split, 2.0**width, 2.0 ** (width - 1)).to(codes.device)
        signed = codes - shift[:, None]
        zps = zp.reshape(n) - shift
    else:
        signed = codes.clone()
    idx = torch.nonzero(split).flatten()
    if not idx.numel():
        return signed, scale, zps, None, width
    high = torch.floor(signed[idx] / 2)
    signed[idx] = signed[idx] - 2 * high  # low digit l ∈ {0, 1}, keeps the channel's zero point and Δ
    rows = torch.cat([signed, high])
    scales = torch.cat([scale, 2 * scale[idx]])
    if zps is not None:
        zps = torch.cat([zps, torch.zeros(idx.numel(), device=zps.device)])
    return rows, scales, zps, idx, width
