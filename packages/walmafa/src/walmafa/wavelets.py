"""Single-level 2-D Haar wavelet transform in torch (parameter-free, differentiable, exactly invertible).

Convention (the MWCNN-style one WalMaFa's released code uses, which the checkpoints depend on): with the four
polyphase samples divided by 2 — ``x1`` = (even row, even col), ``x2`` = (odd row, even col), ``x3`` = (even row,
odd col), ``x4`` = (odd row, odd col) —

    LL = x1 + x2 + x3 + x4      HL = −x1 − x2 + x3 + x4      LH = −x1 + x2 − x3 + x4      HH = x1 − x2 − x3 + x4

This is the orthonormal Haar transform of PyWavelets (``pywt.dwt2(x, "haar")`` → ``cA, (cH, cV, cD)``) with
``LL = cA``, ``HL = −cV``, ``LH = −cH``, ``HH = cD`` (checked in the tests). The sub-bands are stacked along the batch
axis: ``[n, c, h, w] → [4n, c, h/2, w/2]`` in the order LL, HL, LH, HH.
"""

from __future__ import annotations

import torch

__all__ = ["haar_dwt", "haar_iwt"]


def haar_dwt(x: torch.Tensor) -> torch.Tensor:
    """``[n, c, h, w]`` (h, w even) → ``[4n, c, h/2, w/2]`` stacked as LL, HL, LH, HH."""
    if x.ndim != 4:
        raise ValueError(f"x must be [n, c, h, w], got shape {tuple(x.shape)}")
    if x.shape[-2] % 2 or x.shape[-1] % 2:
        raise ValueError(f"height and width must be even for the Haar DWT, got {tuple(x.shape[-2:])}")
    x1 = x[:, :, 0::2, 0::2] / 2
    x2 = x[:, :, 1::2, 0::2] / 2
    x3 = x[:, :, 0::2, 1::2] / 2
    x4 = x[:, :, 1::2, 1::2] / 2
    ll = x1 + x2 + x3 + x4
    hl = -x1 - x2 + x3 + x4
    lh = -x1 + x2 - x3 + x4
    hh = x1 - x2 - x3 + x4
    return torch.cat((ll, hl, lh, hh), dim=0)


def haar_iwt(y: torch.Tensor) -> torch.Tensor:
    """Exact inverse of :func:`haar_dwt`: ``[4n, c, h, w] → [n, c, 2h, 2w]``."""
    if y.ndim != 4 or y.shape[0] % 4:
        raise ValueError(f"y must be [4n, c, h, w] (sub-bands stacked on the batch axis), got {tuple(y.shape)}")
    ll, hl, lh, hh = (t / 2 for t in y.chunk(4, dim=0))
    n, c, h, w = ll.shape
    # solve the 4×4 system above (it is its own inverse up to the factor 2): x1..x4
    x1 = ll - hl - lh + hh
    x2 = ll - hl + lh - hh
    x3 = ll + hl - lh - hh
    x4 = ll + hl + lh + hh
    # interleave: out[..., 2i+r, 2j+s]; x1 (r=0,s=0), x2 (1,0), x3 (0,1), x4 (1,1)
    top = torch.stack((x1, x3), dim=-1).reshape(n, c, h, 2 * w)
    bottom = torch.stack((x2, x4), dim=-1).reshape(n, c, h, 2 * w)
    return torch.stack((top, bottom), dim=-2).reshape(n, c, 2 * h, 2 * w)
