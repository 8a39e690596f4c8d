"""Image fidelity: PSNR and SSIM with explicit, standard definitions.

SSIM follows Wang et al. (2004): Gaussian window 11×11, σ = 1.5, K1 = 0.01, K2 = 0.03, computed per channel on the
"valid" region (no padding) and averaged — the same as ``skimage.metrics.structural_similarity(...,
gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=...)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["psnr", "ssim"]


def _check_pair(x: torch.Tensor, y: torch.Tensor, data_range: float) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError("x and y must be torch tensors")
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.ndim not in (2, 3, 4):
        raise ValueError(f"x must be [H,W], [C,H,W] or [N,C,H,W], got {x.ndim} dims")
    if not data_range > 0:
        raise ValueError(f"data_range must be positive, got {data_range}")
    return x.double(), y.double()


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB over all elements (``inf`` for identical inputs)."""
    x, y = _check_pair(x, y, data_range)
    mse = torch.mean((x - y) ** 2).item()
    if mse == 0:
        return float("inf")
    return 10.0 * math.log10(data_range**2 / mse)


def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g)


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, win_size: int = 11, sigma: float = 1.5) -> float:
    """Mean structural similarity over the batch and channels (see module docstring for the exact definition)."""
    x, y = _check_pair(x, y, data_range)
    while x.ndim < 4:
        x, y = x.unsqueeze(0), y.unsqueeze(0)
    if min(x.shape[-2:]) < win_size:
        raise ValueError(f"images must be at least {win_size}×{win_size} for SSIM, got {tuple(x.shape[-2:])}")
    n, c = x.shape[:2]
    window = _gaussian_window(win_size, sigma).to(x.device).expand(c, 1, win_size, win_size)

    def filt(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, window, groups=c)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = filt(x), filt(y)
    sxx = filt(x * x) - mu_x**2
    syy = filt(y * y) - mu_y**2
    sxy = filt(x * y) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * sxy + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2)
    return (num / den).mean().item()
