"""Training recipes as validated dataclasses.

:func:`cifar100_recipe` (the defaults of :class:`DistillConfig`) is the official MTKD-RL CIFAR-100 student recipe
(``train_student_rl.py`` defaults): 240 epochs, batch 64, SGD momentum 0.9 Nesterov, lr 0.05 decayed ×0.1 at epochs
150/180/210, weight decay 1e-4, KD temperature 4, feature weight β = 5, agent SGD lr 0.1. Teachers:
``train_baseline.py`` — the same schedule with weight decay 5e-4. :func:`digits_recipe` shrinks the schedule
(same proportions) for the embedded scikit-learn digits default.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["DistillConfig", "TeacherTrainConfig", "cifar100_recipe", "digits_recipe", "scaled_milestones"]


def scaled_milestones(epochs: int, reference_epochs: int = 240,
                      reference: tuple[int, ...] = (150, 180, 210)) -> list[int]:
    """The CIFAR schedule's decay points at the same fractions of a shorter run."""
    scaled = (m * epochs / reference_epochs for m in reference)
    return sorted({max(1, round(s)) for s in scaled if s < epochs})


def _check_positive(obj: Any, names: tuple[str, ...], integer: bool = False) -> None:
    for name in names:
        value = getattr(obj, name)
        ok = isinstance(value, int) and not isinstance(value, bool) if integer else isinstance(value, (int, float))
        if not ok or value <= 0:
            kind = "a positive int" if integer else "a positive number"
            raise ValueError(f"{type(obj).__name__}.{name} must be {kind}, got {value!r}")


@dataclass
class DistillConfig:
    epochs: int = 240
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    milestones: list[int] = field(default_factory=lambda: [150, 180, 210])
    lr_decay: float = 0.1
    temperature: float = 4.0
    kd_weight: float = 1.0  # the official code parses --kd-weight but never reads it: KD enters with coefficient 1
    feat_weight: float = 5.0
    seed: int = 0

    def __post_init__(self) -> None:
        _check_positive(self, ("epochs", "batch_size"), integer=True)
        _check_positive(self, ("lr", "temperature"))
        for name in ("momentum", "weight_decay", "kd_weight", "feat_weight"):
            if not isinstance(getattr(self, name), (int, float)) or getattr(self, name) < 0:
                raise ValueError(f"DistillConfig.{name} must be a number >= 0, got {getattr(self, name)!r}")
        if not 0 < self.lr_decay <= 1:
            raise ValueError(f"DistillConfig.lr_decay must be in (0, 1], got {self.lr_decay}")
        self.milestones = sorted(int(m) for m in self.milestones)
        if any(m <= 0 for m in self.milestones):
            raise ValueError(f"DistillConfig.milestones must be positive epochs, got {self.milestones}")

    def lr_at(self, epoch: int) -> float:
        return self.lr * self.lr_decay ** sum(epoch >= m for m in self.milestones)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TeacherTrainConfig:
    epochs: int = 240
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    milestones: list[int] = field(default_factory=lambda: [150, 180, 210])
    lr_decay: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        _check_positive(self, ("epochs", "batch_size"), integer=True)
        _check_positive(self, ("lr",))
        self.milestones = sorted(int(m) for m in self.milestones)

    def lr_at(self, epoch: int) -> float:
        return self.lr * self.lr_decay ** sum(epoch >= m for m in self.milestones)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cifar100_recipe(**overrides: Any) -> DistillConfig:
    return DistillConfig(**overrides)


def digits_recipe(epochs: int = 30, **overrides: Any) -> DistillConfig:
    return DistillConfig(**{"epochs": epochs, "milestones": scaled_milestones(epochs), **overrides})
