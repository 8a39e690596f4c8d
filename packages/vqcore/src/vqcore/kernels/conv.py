"""im2col of integer activation codes: a 2-D convolution as one GEMM of the integer kernels.

``conv_patches(codes [B, H, W, C], kernel, stride, padding, dilation, pad_value)`` returns the patch matrix
``[B·Ho·Wo, C·kh·kw]`` whose column order ``c·kh·kw + i·kw + j`` is that of a conv weight ``[O, C, kh, kw]`` flattened
to ``[O, C·kh·kw]``, so ``y = patches @ Wᵀ`` is the convolution. Built from strided views (``Tensor.unfold``), so it
works for int8 codes on any device (``F.unfold`` is float-only).

Padding: a float convolution pads its (dequantized) input with 0.0. In code space 0.0 is the zero point, so the border
is filled with ``pad_value = zp`` (``(zp − zp)·Δ = 0``): the integer result equals the fake-quant ``F.conv2d`` on
``x̂`` exactly (up to float summation order).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["conv_output_size", "conv_patches"]


def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def conv_patches(
    codes: torch.Tensor,
    kernel: tuple[int, int],
    stride: tuple[int, int] = (1, 1),
    padding: tuple[int, int] = (0, 0),
    dilation: tuple[int, int] = (1, 1),
    pad_value: int = 0,
) -> torch.Tensor:
    """Patches ``[B·Ho·Wo, C·kh·kw]`` of channels-last ``codes [B, H, W, C]`` (see module docstring)."""
    if codes.dim() != 4:
        raise ValueError(f"codes must be [B, H, W, C], got {tuple(codes.shape)}")
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    b, h, w, c = codes.shape
    ho, wo = conv_output_size(h, kh, sh, ph, dh), conv_output_size(w, kw, sw, pw, dw)
    if ho < 1 or wo < 1:
        raise ValueError(f"input {h}x{w} is too small for kernel {kh}x{kw} with padding {ph}x{pw}")
    xp = F.pad(codes, (0, 0, pw, pw, ph, ph), value=pad_value) if ph or pw else codes
    eh, ew = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    p = xp.unfold(1, eh, sh)[..., ::dh]  # [B, Ho, W', C, kh]
    p = p.unfold(2, ew, sw)[..., ::dw]  # [B, Ho, Wo, C, kh, kw]
    return p.reshape(b * ho * wo, c * kh * kw)
