"""CIFAR VGG with BatchNorm and RepDistiller's layer names (``HobbitLong/RepDistiller`` ``models/vgg.py``): five
blocks ``block0..4`` of conv(bias)-BN-ReLU (the last ReLU of each block applied in ``forward``), max-pools between
them (``pool3`` only at 64×64 inputs), global average pooling and ``classifier`` (a single ``Linear(512, K)``).
``vgg8`` = configuration ``S`` ([64], [128], [256], [512], [512]); ``vgg11/13/16/19`` = ``A/B/D/E``.

Features (MTKD-RL's ``feat[-2]`` / ``feat[-1]``): the map is ReLU(``block4``) (4×4 at 32×32 input), the embedding
its global average. ``in_channels`` (default 3) is an addition. Initialisation as in the code.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..features import ClassifierOutput

__all__ = ["VGG", "VGG_CFGS"]

VGG_CFGS: dict[str, list[list[int]]] = {
    "A": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "B": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    "D": [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    "E": [[64, 64], [128, 128], [256, 256, 256, 256], [512, 512, 512, 512], [512, 512, 512, 512]],
    "S": [[64], [128], [256], [512], [512]],
}


def _make_block(cfg: list[int], in_channels: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for v in cfg:
        layers += [nn.Conv2d(in_channels, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
        in_channels = v
    return nn.Sequential(*layers[:-1])  # the code drops each block's last ReLU (applied in forward)


class VGG(nn.Module):
    def __init__(self, cfg: str = "S", num_classes: int = 100, in_channels: int = 3):
        super().__init__()
        if cfg not in VGG_CFGS:
            raise ValueError(f"cfg must be one of {sorted(VGG_CFGS)}, got {cfg!r}")
        c = VGG_CFGS[cfg]
        self.block0 = _make_block(c[0], in_channels)
        self.block1 = _make_block(c[1], c[0][-1])
        self.block2 = _make_block(c[2], c[1][-1])
        self.block3 = _make_block(c[3], c[2][-1])
        self.block4 = _make_block(c[4], c[3][-1])
        self.pool0 = nn.MaxPool2d(2, 2)
        self.pool1 = nn.MaxPool2d(2, 2)
        self.pool2 = nn.MaxPool2d(2, 2)
        self.pool3 = nn.MaxPool2d(2, 2)
        self.classifier = nn.Linear(512, num_classes)
        self.embed_dim = 512
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.data.normal_(0, math.sqrt(2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels)))
                m.bias.data.zero_()
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.data.fill_(1)
                m.bias.data.zero_()
            elif isinstance(m, nn.Linear):
                m.weight.data.normal_(0, 0.01)
                m.bias.data.zero_()

    def forward_with_features(self, x: torch.Tensor) -> ClassifierOutput:
        h = x.shape[2]
        x = self.pool0(F.relu(self.block0(x)))
        x = self.pool1(F.relu(self.block1(x)))
        x = self.pool2(F.relu(self.block2(x)))
        x = F.relu(self.block3(x))
        if h == 64:
            x = self.pool3(x)
        fmap = F.relu(self.block4(x))
        emb = fmap.mean(dim=(2, 3))
        return ClassifierOutput(self.classifier(emb), fmap, emb)

    def forward_head(self, fmap: torch.Tensor) -> torch.Tensor:
        return self.classifier(fmap.mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_features(x).logits
