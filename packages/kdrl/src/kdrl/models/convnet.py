"""A plain VGG-style CNN (conv-BN-ReLU stages with max-pool between them).

Used as a teacher and as the default small student on the embedded digits data. Not from the MTKD-RL paper (whose
CIFAR-100 networks are RegNets, ResNets, WRNs, MobileNetV2 and ShuffleNetV2); it is one of the deliberately different
architectures of the embedded teacher pool.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..features import ClassifierOutput


@dataclass
class ConvNetConfig:
    in_channels: int = 1
    num_classes: int = 10
    width: int = 16
    stages: int = 2
    convs_per_stage: int = 1

    def __post_init__(self) -> None:
        for name in ("in_channels", "num_classes", "width", "stages", "convs_per_stage"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"ConvNetConfig.{name} must be a positive int, got {value!r}")
        if self.num_classes < 2:
            raise ValueError(f"ConvNetConfig.num_classes must be >= 2, got {self.num_classes}")


class ConvNet(nn.Module):
    """``stages`` stages of ``convs_per_stage`` 3×3 conv-BN-ReLU (channels ``width·2^i``), 2×2 max-pool between
    stages, global average pooling and a linear classifier. The feature map is the last stage's output."""

    def __init__(self, config: ConvNetConfig | None = None, **kwargs):
        super().__init__()
        self.config = config = config or ConvNetConfig(**kwargs)
        layers: list[nn.Module] = []
        c_in = config.in_channels
        for stage in range(config.stages):
            if stage > 0:
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            c_out = config.width * 2**stage
            for _ in range(config.convs_per_stage):
                layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                           nn.ReLU(inplace=True)]
                c_in = c_out
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c_in, config.num_classes)
        self.embed_dim = c_in

    def forward_with_features(self, x: torch.Tensor) -> ClassifierOutput:
        fmap = self.features(x)
        emb = fmap.mean(dim=(2, 3))
        return ClassifierOutput(self.fc(emb), fmap, emb)

    def forward_head(self, fmap: torch.Tensor) -> torch.Tensor:
        """Global average pooling and the classifier on a ``[B, C, H, W]`` map."""
        return self.fc(fmap.mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_features(x).logits
