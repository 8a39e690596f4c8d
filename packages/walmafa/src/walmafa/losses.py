"""The released training loss: ``L = 0.95 · (L1(ŷ, y) + (1 − SSIM(ŷ, y))) + 0.05 · TV(ŷ)`` (WalMaFa ``train.py``).

SSIM is the differentiable Gaussian-window SSIM (11×11, σ = 1.5, K1 = 0.01, K2 = 0.03, valid region, mean over
channels and pixels; what ``pytorch_msssim.ssim(data_range=1)`` computes). TV is the released squared-difference
total variation ``2 · (Σ Δh² / N_h + Σ Δw² / N_w) / B`` with ``N`` the per-image element counts. The paper's extra
wavelet/Fourier loss terms are not in the released code (issue WalMaFa#3) and are not implemented here.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["ssim_torch", "tv_loss", "WalMaFaLoss"]


def _gauss(win: int, sigma: float, device, dtype) -> torch.Tensor:
    c = torch.arange(win, dtype=dtype, device=device) - (win - 1) / 2
    g = torch.exp(-(c**2) / (2 * sigma**2))
    return g / g.sum()


def ssim_torch(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, win: int = 11,
               sigma: float = 1.5) -> torch.Tensor:
    """Differentiable mean SSIM of ``[B, C, H, W]`` tensors (separable Gaussian window, valid region)."""
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(f"x and y must be [B, C, H, W] of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    c = x.shape[1]
    win = min(win, x.shape[-1], x.shape[-2])
    g = _gauss(win, sigma, x.device, x.dtype)
    kh, kw = g.view(1, 1, win, 1).expand(c, 1, win, 1), g.view(1, 1, 1, win).expand(c, 1, 1, win)

    def filt(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, kh, groups=c), kw, groups=c)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = filt(x), filt(y)
    sxx, syy, sxy = filt(x * x) - mx**2, filt(y * y) - my**2, filt(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return s.mean()


def tv_loss(x: torch.Tensor) -> torch.Tensor:
    """Released TV: ``2 · (Σ(x[h+1]−x[h])² / N_h + Σ(x[w+1]−x[w])² / N_w) / B``."""
    b, c, h, w = x.shape
    dh = (x[:, :, 1:, :] - x[:, :, :-1, :]).pow(2).sum()
    dw = (x[:, :, :, 1:] - x[:, :, :, :-1]).pow(2).sum()
    return 2 * (dh / max(c * (h - 1) * w, 1) + dw / max(c * h * (w - 1), 1)) / b


class WalMaFaLoss(nn.Module):
    """``w_main · (L1 + (1 − SSIM)) + w_tv · TV(prediction)``; defaults 0.95 / 0.05 as released."""

    def __init__(self, w_main: float = 0.95, w_tv: float = 0.05):
        super().__init__()
        if w_main < 0 or w_tv < 0:
            raise ValueError(f"loss weights must be non-negative, got w_main={w_main}, w_tv={w_tv}")
        self.w_main, self.w_tv = w_main, w_tv

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pred, target = pred.float(), target.float()
        main = F.l1_loss(pred, target) + (1 - ssim_torch(pred, target))
        return self.w_main * main + self.w_tv * tv_loss(pred)
