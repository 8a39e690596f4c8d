"""Baseline: a small U-Net with a Retinex-style illumination branch (the benchmark's comparison model).

Retinex decomposition ``I = R ⊙ L`` (Land & McCann 1971; the "decompose, then adjust" idea of RetinexNet,
Wei et al. 2018, BMVC): a 3-layer convolutional branch predicts an illumination map ``L ∈ (ε, 1]`` per pixel and
channel, the image is brightened to ``I / L``, and a 2-level U-Net predicts a residual correction (denoising and colour)
from ``[I, I / L]``. Trained end to end with the same loss and budget as WalMaFa in ``tools/bench/walmafa.py``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["RetinexUNetConfig", "RetinexUNet"]


@dataclass
class RetinexUNetConfig:
    width: int = 24
    min_illumination: float = 0.05

    def __post_init__(self) -> None:
        if not isinstance(self.width, int) or self.width < 4:
            raise ValueError(f"width must be an int >= 4, got {self.width!r}")
        if not 0 < self.min_illumination < 1:
            raise ValueError(f"min_illumination must be in (0, 1), got {self.min_illumination}")

    def to_dict(self) -> dict:
        return asdict(self)


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.LeakyReLU(0.2),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.LeakyReLU(0.2))


class RetinexUNet(nn.Module):
    """Input ``[B, 3, H, W]`` in [0, 1], H and W multiples of 4; output unclamped."""

    def __init__(self, config: RetinexUNetConfig | None = None, **overrides):
        super().__init__()
        self.config = cfg = config if config is not None else RetinexUNetConfig(**overrides)
        w = cfg.width
        self.illumination = nn.Sequential(nn.Conv2d(4, w, 3, padding=1), nn.LeakyReLU(0.2),
                                          nn.Conv2d(w, w, 3, padding=1), nn.LeakyReLU(0.2),
                                          nn.Conv2d(w, 3, 3, padding=1))
        self.enc1 = _block(6, w)
        self.enc2 = _block(w, 2 * w)
        self.mid = _block(2 * w, 4 * w)
        self.up2 = nn.ConvTranspose2d(4 * w, 2 * w, 2, stride=2)
        self.dec2 = _block(4 * w, 2 * w)
        self.up1 = nn.ConvTranspose2d(2 * w, w, 2, stride=2)
        self.dec1 = _block(2 * w, w)
        self.out = nn.Conv2d(w, 3, 1)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if img.ndim != 4 or img.shape[1] != 3:
            raise ValueError(f"input must be [B, 3, H, W], got {tuple(img.shape)}")
        eps = self.config.min_illumination
        illum = eps + (1 - eps) * torch.sigmoid(self.illumination(torch.cat([img, img.amax(1, keepdim=True)], 1)))
        lit = img / illum
        e1 = self.enc1(torch.cat([img, lit], 1))
        e2 = self.enc2(F.avg_pool2d(e1, 2))
        m = self.mid(F.avg_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([self.up2(m), e2], 1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], 1))
        return lit + self.out(d1)
