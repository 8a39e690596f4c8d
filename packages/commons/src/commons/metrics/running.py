"""Running averages for training logs."""

from __future__ import annotations

import math

import torch

__all__ = ["RunningAverage"]


class RunningAverage:
    """Weighted running mean (``update(value, n)``), e.g. a loss averaged over batches of different sizes."""

    def __init__(self) -> None:
        self.total = 0.0
        self.count = 0

    def update(self, value: float | torch.Tensor, n: int = 1) -> None:
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                raise ValueError(f"value must be a scalar, got a tensor of shape {tuple(value.shape)}")
            value = value.item()
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        if not math.isfinite(float(value)):
            raise ValueError(f"value must be finite, got {value}")
        self.total += float(value) * n
        self.count += n

    @property
    def value(self) -> float:
        """The mean so far (NaN before the first update)."""
        return self.total / self.count if self.count else float("nan")

    def reset(self) -> None:
        self.total, self.count = 0.0, 0

    def __repr__(self) -> str:
        return f"RunningAverage(value={self.value:.6g}, count={self.count})"
