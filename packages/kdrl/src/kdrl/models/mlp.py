"""A multi-layer perceptron on flattened images: the non-convolutional member of the embedded teacher pool.

Its "feature map" is the last hidden vector viewed as ``[B, D, 1, 1]``, so feature KD towards it goes through the
same adaptor as for CNN teachers (the student map is average-pooled to 1×1 first).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..features import ClassifierOutput


@dataclass
class MLPConfig:
    in_features: int = 64
    num_classes: int = 10
    hidden: list[int] = field(default_factory=lambda: [256, 128])
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.in_features, int) or self.in_features < 1:
            raise ValueError(f"MLPConfig.in_features must be a positive int, got {self.in_features!r}")
        if not isinstance(self.num_classes, int) or self.num_classes < 2:
            raise ValueError(f"MLPConfig.num_classes must be an int >= 2, got {self.num_classes!r}")
        self.hidden = list(self.hidden)
        if not self.hidden or any(not isinstance(h, int) or h < 1 for h in self.hidden):
            raise ValueError(f"MLPConfig.hidden must be a non-empty list of positive ints, got {self.hidden!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"MLPConfig.dropout must be in [0, 1), got {self.dropout}")


class MLP(nn.Module):
    def __init__(self, config: MLPConfig | None = None, **kwargs):
        super().__init__()
        self.config = config = config or MLPConfig(**kwargs)
        layers: list[nn.Module] = [nn.Flatten()]
        d = config.in_features
        for h in config.hidden:
            layers += [nn.Linear(d, h), nn.BatchNorm1d(h), nn.ReLU(inplace=True)]
            if config.dropout:
                layers.append(nn.Dropout(config.dropout))
            d = h
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(d, config.num_classes)
        self.embed_dim = d

    def forward_with_features(self, x: torch.Tensor) -> ClassifierOutput:
        if x.flatten(1).shape[1] != self.config.in_features:
            raise ValueError(
                f"MLP expects inputs with {self.config.in_features} values per sample, got {tuple(x.shape[1:])}"
            )
        emb = self.body(x)
        return ClassifierOutput(self.fc(emb), emb[:, :, None, None], emb)

    def forward_head(self, fmap: torch.Tensor) -> torch.Tensor:
        """The classifier on a ``[B, D, 1, 1]`` "map" (spatially averaged if larger)."""
        return self.fc(fmap.mean(dim=(2, 3)) if fmap.dim() == 4 else fmap)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_features(x).logits
