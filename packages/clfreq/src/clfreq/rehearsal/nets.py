"""Backbones for rehearsal continual learning: mammoth's reduced ResNet-18, CLFD's frequency encoder, FDINet.

* :func:`haar_dwt` — one-level 2-D Haar DWT (CLFD ``DWT_IDWT_layer.DWT_2D``; notes §1.2), per channel, sub-band order
  LL, LH, HL, HH with LH = low along rows (height) / high along columns (width). Orthonormal: energy preserving.
* :class:`ResNet18` — mammoth's CIFAR ResNet-18 (3×3 stem, stride 1, no max-pool, BasicBlocks [2,2,2,2], widths
  nf·(1,2,4,8)); the "reduced" ResNet-18 of the rehearsal papers is ``nf=20``.
* :class:`CLFDNet` — CLFD's ``DWT_ResNet``: 1×1-conv fusion of the four sub-bands into a 3-channel half-resolution
  map (conv1_l: LL→1, conv1_m: all 12→1, conv1_h: LH/HL/HH→1, no bias), ResNet on that map, k-WTA (keep 60 %) and a
  class-wise stochastic feature mask during training (notes §1.3; one uniform draw per unit shared by the batch, as
  the official code), linear head.
* :class:`FDINet` — FDINet-style two-branch net (arXiv 2503.22175 has no public code; design from the abstract and
  notes §2.2, every choice documented in the README): a low-frequency ResNet on LL (3 ch) and a high-frequency ResNet
  on LH/HL/HH (9 ch), both at half resolution with their own (small) ``nf``; "integration" = concatenation of the two
  pooled feature vectors plus a learned sigmoid gate of each branch by the other ("mutual"), then a linear head.

All nets share the interface used by the rehearsal methods: ``encode(x)`` gives what the buffer stores, ``classify(z,
y=None)`` maps stored/encoded inputs to logits (``y`` enables the CLFD class mask in training), ``forward(x)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def haar_dwt(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One-level Haar DWT of ``x`` (N, C, H, W), H and W even → (LL, LH, HL, HH), each (N, C, H/2, W/2).

    Per 2×2 block (a b / c d): LL=(a+b+c+d)/2, LH=(a−b+c−d)/2, HL=(a+b−c−d)/2, HH=(a−b−c+d)/2 (notes §1.2).
    With ``cA, (cH, cV, cD) = pywt.dwt2(x, "haar")`` this is LL = cA, LH = cV, HL = cH, HH = cD (tested to 1e-12).
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"x must be a 4-D tensor (N, C, H, W), got {getattr(x, 'shape', type(x))}")
    if x.shape[-1] % 2 or x.shape[-2] % 2:
        raise ValueError(f"haar_dwt needs even height and width, got {tuple(x.shape[-2:])}")
    a, b = x[..., 0::2, 0::2], x[..., 0::2, 1::2]
    c, d = x[..., 1::2, 0::2], x[..., 1::2, 1::2]
    return (a + b + c + d) / 2, (a - b + c - d) / 2, (a + b - c - d) / 2, (a - b - c + d) / 2


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.short = nn.Sequential()
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.b1(self.c1(x)))
        return F.relu(self.b2(self.c2(out)) + self.short(x))


class ResNet18Features(nn.Module):
    """mammoth CIFAR ResNet-18 trunk → pooled features of size ``8 * nf``."""

    def __init__(self, in_channels: int = 3, nf: int = 20):
        super().__init__()
        if not isinstance(nf, int) or nf < 1:
            raise ValueError(f"nf must be a positive int, got {nf!r}")
        self.dim = 8 * nf
        self.stem = nn.Sequential(nn.Conv2d(in_channels, nf, 3, 1, 1, bias=False), nn.BatchNorm2d(nf), nn.ReLU())
        layers, cin = [], nf
        for i, mult in enumerate((1, 2, 4, 8)):
            for j in range(2):
                layers.append(_Block(cin, nf * mult, 2 if (i > 0 and j == 0) else 1))
                cin = nf * mult
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return F.adaptive_avg_pool2d(self.layers(self.stem(x)), 1).flatten(1)


class ResNet18(nn.Module):
    """Plain reduced ResNet-18 classifier (the host methods' backbone). Buffer stores raw (normalised) images."""

    def __init__(self, num_classes: int, in_channels: int = 3, nf: int = 20):
        super().__init__()
        self.features = ResNet18Features(in_channels, nf)
        self.classifier = nn.Linear(self.features.dim, num_classes)

    def encode(self, x):
        return x

    def classify(self, z, y=None):
        return self.classifier(self.features(z))

    def forward(self, x):
        return self.classify(self.encode(x))


class FrequencyEncoder(nn.Module):
    """CLFD frequency-domain feature encoder: Haar DWT + three bias-free 1×1 convs (24 weights in total)."""

    def __init__(self, in_channels: int = 3):
        super().__init__()
        c = in_channels
        self.conv1_l = nn.Conv2d(c, 1, 1, bias=False)
        self.conv1_m = nn.Conv2d(4 * c, 1, 1, bias=False)
        self.conv1_h = nn.Conv2d(3 * c, 1, 1, bias=False)

    def forward(self, x):
        ll, lh, hl, hh = haar_dwt(x)
        high = torch.cat([lh, hl, hh], 1)
        z = torch.cat([self.conv1_l(ll), self.conv1_m(torch.cat([ll, high], 1)), self.conv1_h(high)], 1)
        return z, ll


def kwta(h: torch.Tensor, keep: float) -> torch.Tensor:
    """k-winners-take-all per sample: keep the ``int(keep·D)`` largest-|h| units, zero the rest (CLFD get_kvalue)."""
    k = int(keep * h.shape[1])
    if k >= h.shape[1]:
        return h
    thr = h.abs().kthvalue(h.shape[1] - k, dim=1, keepdim=True).values
    return h * (h.abs() > thr)


class CLFDNet(nn.Module):
    """CLFD's DWT network (notes §1.2–1.4): encoder → ResNet-18 on 3×H/2×W/2 → (class mask) → k-WTA → linear."""

    def __init__(self, num_classes: int, in_channels: int = 3, nf: int = 20, kwta_keep: float = 0.6):
        super().__init__()
        if not 0 < kwta_keep <= 1:
            raise ValueError(f"kwta_keep must be in (0, 1], got {kwta_keep}")
        self.encoder = FrequencyEncoder(in_channels)
        self.features = ResNet18Features(3, nf)
        self.classifier = nn.Linear(self.features.dim, num_classes)
        self.kwta_keep = kwta_keep
        self.dim = self.features.dim
        # class-wise selection state (notes §1.4); buffers so they follow .to() and the state dict
        self.register_buffer("select_probs", torch.ones(num_classes, self.dim))
        self.register_buffer("select_counts", torch.zeros(num_classes, self.dim))
        self.use_class_mask = True

    def encode(self, x):
        return self.encoder(x)[0]

    def classify(self, z, y=None):
        h = self.features(z)
        if self.training and y is not None and self.use_class_mask:
            # official DWT_ResNet.forward: ONE uniform draw per unit for the whole batch (torch.rand(D) on the CPU
            # generator), compared with each sample's class row, so samples of one class share their mask
            u = torch.rand(h.shape[1]).to(h.device)
            h = h * (u[None, :] < self.select_probs[y])
        h = kwta(h, self.kwta_keep)
        if self.training and y is not None:
            self.select_counts.index_add_(0, y, (h != 0).to(self.select_counts.dtype).detach())
        return self.classifier(h)

    def forward(self, x):
        return self.classify(self.encode(x))


class FDINet(nn.Module):
    """FDINet-style frequency decomposition and integration network (design proposal; no official code exists).

    Low branch: ResNet-18 trunk (``nf_low``) on LL; high branch: ResNet-18 trunk (``nf_high``) on LH/HL/HH; both at
    half resolution. Integration: each branch's pooled vector is gated by a sigmoid of a linear map of the other
    (mutual gating), then concatenated and classified. The buffer stores the raw (normalised) image and the DWT runs
    inside :meth:`classify`: the 4 sub-bands hold exactly as many values as the image (no byte saving to claim), and
    keeping images lets replay use the benchmark's image augmentation unchanged (a horizontal flip is not a plain
    flip of the sub-bands: LH and HH change sign).
    """

    def __init__(self, num_classes: int, in_channels: int = 3, nf_low: int = 6, nf_high: int = 6):
        super().__init__()
        self.in_channels = in_channels
        self.low = ResNet18Features(in_channels, nf_low)
        self.high = ResNet18Features(3 * in_channels, nf_high)
        self.gate_low = nn.Linear(self.high.dim, self.low.dim)
        self.gate_high = nn.Linear(self.low.dim, self.high.dim)
        self.classifier = nn.Linear(self.low.dim + self.high.dim, num_classes)

    def encode(self, x):
        return x

    def classify(self, z, y=None):
        ll, lh, hl, hh = haar_dwt(z)
        fl, fh = self.low(ll), self.high(torch.cat([lh, hl, hh], 1))
        fl2 = fl * torch.sigmoid(self.gate_low(fh))
        fh2 = fh * torch.sigmoid(self.gate_high(fl))
        return self.classifier(torch.cat([fl2, fh2], 1))

    def forward(self, x):
        return self.classify(self.encode(x))


def resnet_params(nf: int, num_classes: int = 10, in_channels: int = 3) -> int:
    return sum(p.numel() for p in ResNet18(num_classes, in_channels, nf).parameters())


def fdinet_nf_for_budget(nf_host: int, fraction: float = 0.22) -> int:
    """Branch width so that two branches have about ``fraction`` of a ResNet-18(nf_host) (−78 % → 0.22)."""
    return max(2, round(nf_host * math.sqrt(fraction / 2)))
