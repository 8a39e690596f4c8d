"""A small CIFAR-style ResNet for the embedded digits pool (``digits_resnet14``): a 3×3 stem (``stem``), three stages
of basic blocks with strides 1/2/2 (``layers``), global pooling, linear head; ``depth = 6n + 2``, ``width`` = the
first stage's channels. The paper's CIFAR networks with RepDistiller's layer names (loadable from official
checkpoints) are in :mod:`.cifar_resnet`, :mod:`.cifar_vgg` and :mod:`.cifar_mobile`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..features import ClassifierOutput


@dataclass
class ResNetConfig:
    in_channels: int = 3
    num_classes: int = 100
    depth: int = 8
    width: int = 16

    def __post_init__(self) -> None:
        for name in ("in_channels", "num_classes", "depth", "width"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"ResNetConfig.{name} must be a positive int, got {value!r}")
        if (self.depth - 2) % 6 != 0 or self.depth < 8:
            raise ValueError(f"ResNetConfig.depth must be 6n+2 with n >= 1 (8, 14, 20, 32, 56, 110), got {self.depth}")


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, config: ResNetConfig | None = None, **kwargs):
        super().__init__()
        self.config = config = config or ResNetConfig(**kwargs)
        n = (config.depth - 2) // 6
        w = config.width
        self.stem = nn.Sequential(nn.Conv2d(config.in_channels, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU())
        blocks: list[nn.Module] = []
        c_in = w
        for stage, c_out in enumerate((w, 2 * w, 4 * w)):
            for i in range(n):
                blocks.append(BasicBlock(c_in, c_out, 2 if (stage > 0 and i == 0) else 1))
                c_in = c_out
        self.layers = nn.Sequential(*blocks)
        self.fc = nn.Linear(c_in, config.num_classes)
        self.embed_dim = c_in

    def forward_with_features(self, x: torch.Tensor) -> ClassifierOutput:
        fmap = self.layers(self.stem(x))
        emb = fmap.mean(dim=(2, 3))
        return ClassifierOutput(self.fc(emb), fmap, emb)

    def forward_head(self, fmap: torch.Tensor) -> torch.Tensor:
        """Global average pooling and the classifier on a ``[B, C, H, W]`` map."""
        return self.fc(fmap.mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_features(x).logits
