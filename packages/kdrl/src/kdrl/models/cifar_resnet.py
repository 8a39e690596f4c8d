"""CIFAR ResNets and Wide ResNets with RepDistiller's layer names and widths (``HobbitLong/RepDistiller``
``models/resnet.py``, ``models/wrn.py``; the same files are used by CRD, CA-MKD and MTKD-RL), so that a
RepDistiller-format state dict loads strictly (:func:`kdrl.teachers.load_official`).

- :class:`CifarResNet` (He et al. 2016, CIFAR variant): ``conv1``-``bn1`` stem, ``layer1..3`` of basic blocks
  (``conv1/bn1/conv2/bn2`` + ``downsample`` = 1×1 conv + BN), ``fc``. ``resnet8…110``: widths ``[16, 16, 32, 64]``;
  ``resnet8x4`` / ``resnet32x4``: ``[32, 64, 128, 256]`` (a 32-channel stem).
- :class:`WideResNet` (Zagoruyko & Komodakis 2016): pre-activation blocks ``block1..3.layer.i`` with
  ``bn1/conv1/bn2/conv2`` (+ ``convShortcut``), final ``bn1`` and ``fc``; ``wrn_<depth>_<k>``, depth ``6n + 4``.

Features (the MTKD-RL code's ``feat[-2]`` / ``feat[-1]``): the map is the last stage's output (ResNet: after the
final ReLU, 8×8 at 32×32 input; WRN: ``block3``'s output before the final BN-ReLU), the embedding the pooled vector
before ``fc``; :meth:`forward_head` maps the map to logits (what CA-MKD's ``distill_seq()[-1]`` does). Pooling is a
global mean, identical to the code's ``AvgPool2d(8)`` on 32×32 inputs and usable at other sizes. ``in_channels``
(default 3) is an addition for greyscale data. Initialisation as in the code.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..features import ClassifierOutput

__all__ = ["CifarResNet", "WideResNet"]


class BasicBlock(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        residual = x if self.downsample is None else self.downsample(x)
        return F.relu(out + residual)


class CifarResNet(nn.Module):
    """RepDistiller ``ResNet(depth, num_filters, 'basicblock')``."""

    def __init__(self, depth: int = 32, num_filters: tuple[int, int, int, int] = (16, 16, 32, 64),
                 num_classes: int = 100, in_channels: int = 3):
        super().__init__()
        if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
            raise ValueError(f"depth must be 6n+2 (8, 14, 20, 32, 44, 56, 110), got {depth!r}")
        if len(num_filters) != 4:
            raise ValueError(f"num_filters must have 4 entries (stem, stage 1-3), got {num_filters!r}")
        n = (depth - 2) // 6
        self.inplanes = num_filters[0]
        self.conv1 = nn.Conv2d(in_channels, num_filters[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(num_filters[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(num_filters[1], n)
        self.layer2 = self._make_layer(num_filters[2], n, stride=2)
        self.layer3 = self._make_layer(num_filters[3], n, stride=2)
        self.fc = nn.Linear(num_filters[3], num_classes)
        self.embed_dim = num_filters[3]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward_with_features(self, x: torch.Tensor) -> ClassifierOutput:
        fmap = self.layer3(self.layer2(self.layer1(self.relu(self.bn1(self.conv1(x))))))
        emb = fmap.mean(dim=(2, 3))
        return ClassifierOutput(self.fc(emb), fmap, emb)

    def forward_head(self, fmap: torch.Tensor) -> torch.Tensor:
        return self.fc(fmap.mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_features(x).logits


class WRNBlock(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, 1, 1, bias=False)
        self.droprate = drop_rate
        self.equal_in_out = in_planes == out_planes
        self.convShortcut = (None if self.equal_in_out  # noqa: N815 (RepDistiller's parameter name)
                             else nn.Conv2d(in_planes, out_planes, 1, stride, 0, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.equal_in_out:
            out = self.relu1(self.bn1(x))
            out = self.relu2(self.bn2(self.conv1(out)))
        else:
            x = self.relu1(self.bn1(x))
            out = self.relu2(self.bn2(self.conv1(x)))
        if self.droprate > 0:
            out = F.dropout(out, p=self.droprate, training=self.training)
        out = self.conv2(out)
        return out + (x if self.equal_in_out else self.convShortcut(x))


class NetworkBlock(nn.Module):
    def __init__(self, nb_layers: int, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0):
        super().__init__()
        self.layer = nn.Sequential(*[WRNBlock(in_planes if i == 0 else out_planes, out_planes,
                                              stride if i == 0 else 1, drop_rate) for i in range(nb_layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """RepDistiller ``WideResNet(depth, num_classes, widen_factor)``."""

    def __init__(self, depth: int = 40, widen_factor: int = 2, num_classes: int = 100, drop_rate: float = 0.0,
                 in_channels: int = 3):
        super().__init__()
        if not isinstance(depth, int) or depth < 10 or (depth - 4) % 6:
            raise ValueError(f"depth must be 6n+4 (10, 16, 28, 40), got {depth!r}")
        ch = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        n = (depth - 4) // 6
        self.conv1 = nn.Conv2d(in_channels, ch[0], 3, 1, 1, bias=False)
        self.block1 = NetworkBlock(n, ch[0], ch[1], 1, drop_rate)
        self.block2 = NetworkBlock(n, ch[1], ch[2], 2, drop_rate)
        self.block3 = NetworkBlock(n, ch[2], ch[3], 2, drop_rate)
        self.bn1 = nn.BatchNorm2d(ch[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(ch[3], num_classes)
        self.nChannels = self.embed_dim = ch[3]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.data.normal_(0, math.sqrt(2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels)))
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.data.fill_(1)
                m.bias.data.zero_()
            elif isinstance(m, nn.Linear):
                m.bias.data.zero_()

    def _pool(self, fmap: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn1(fmap)).mean(dim=(2, 3))

    def forward_with_features(self, x: torch.Tensor) -> ClassifierOutput:
        fmap = self.block3(self.block2(self.block1(self.conv1(x))))
        emb = self._pool(fmap)
        return ClassifierOutput(self.fc(emb), fmap, emb)

    def forward_head(self, fmap: torch.Tensor) -> torch.Tensor:
        return self.fc(self._pool(fmap))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_features(x).logits
