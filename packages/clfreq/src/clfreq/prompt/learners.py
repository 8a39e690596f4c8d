"""Shared pieces of the prompt-based class-incremental learners: the task protocol, batching, masked losses."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["TaskData", "IncrementalLearner", "masked_logits", "iterate_batches", "step_lr"]

logger = logging.getLogger(__name__)


@dataclass
class TaskData:
    """The images of one task of a class-incremental stream (already normalised, ``[N, 3, H, W]``)."""

    task_id: int
    classes: tuple[int, ...]
    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.shape[0] != self.labels.shape[0]:
            raise ValueError(f"images must be [N, C, H, W] with one label each, got {tuple(self.images.shape)} "
                             f"and {tuple(self.labels.shape)} labels")
        extra = set(self.labels.unique().tolist()) - set(self.classes)
        if extra:
            raise ValueError(f"task {self.task_id}: labels {sorted(extra)} are not among its classes {self.classes}")


def masked_logits(logits: torch.Tensor, allowed: Sequence[int]) -> torch.Tensor:
    """Set the logits of every class outside ``allowed`` to −inf (PrePrompt/L2P ``train_mask``)."""
    mask = torch.full((logits.shape[1],), float("-inf"), device=logits.device, dtype=logits.dtype)
    mask[list(allowed)] = 0.0
    return logits + mask


def iterate_batches(n: int, batch_size: int, generator: torch.Generator, shuffle: bool = True
                    ) -> Iterator[torch.Tensor]:
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


def step_lr(base: float, epoch: int, epochs: int, schedule: str) -> float:
    """Learning rate at ``epoch`` for the schedules the official scripts use (step: ×0.1 at 60% of the epochs)."""
    if schedule == "constant":
        return base
    if schedule == "step":
        return base * (0.1 if epoch >= int(0.6 * epochs) else 1.0)
    if schedule == "cosine":
        return base * 0.5 * (1 + math.cos(math.pi * epoch / max(epochs, 1)))
    raise ValueError(f"lr_schedule must be 'constant', 'step' or 'cosine', got {schedule!r}")


class IncrementalLearner(nn.Module):
    """Bookkeeping common to the learners: which classes were seen and which task each class belongs to."""

    def __init__(self, num_classes: int):
        super().__init__()
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
        self.num_classes = num_classes
        self.class_to_task: dict[int, int] = {}
        self.seen_classes: list[int] = []

    def _register_task(self, task: TaskData) -> None:
        if task.task_id != len({t for t in self.class_to_task.values()}):
            raise ValueError(f"tasks must arrive in order 0, 1, 2, ...; got task {task.task_id} after "
                             f"{len(set(self.class_to_task.values()))} tasks")
        bad = [c for c in task.classes if not 0 <= c < self.num_classes or c in self.class_to_task]
        if bad:
            raise ValueError(f"task {task.task_id}: classes {bad} are out of range or already seen")
        for c in task.classes:
            self.class_to_task[c] = task.task_id
        self.seen_classes.extend(task.classes)

    def fit_task(self, task: TaskData) -> dict[str, float]:  # pragma: no cover - interface
        raise NotImplementedError

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    # -- resumable state ---------------------------------------------------------------------------------------------
    _EXTRA_STATE = ("class_to_task", "seen_classes", "class_means", "history")

    def training_state(self) -> dict:
        """Everything needed to resume after a task: parameters, bookkeeping and the data-order generator."""
        extra = {k: getattr(self, k) for k in self._EXTRA_STATE if hasattr(self, k)}
        gen = getattr(self, "generator", None)
        return {"state_dict": self.state_dict(), "extra": extra,
                "generator": gen.get_state() if gen is not None else None}

    def load_training_state(self, state: dict) -> None:
        self.load_state_dict(state["state_dict"])
        for k, v in state["extra"].items():
            setattr(self, k, v)
        if state.get("generator") is not None and getattr(self, "generator", None) is not None:
            self.generator.set_state(state["generator"])

    @torch.no_grad()
    def accuracy(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        if len(labels) == 0:
            raise ValueError("labels must not be empty")
        return (self.predict(images).cpu() == labels.cpu()).float().mean().item()


def clip_and_step(optimizer: torch.optim.Optimizer, params: list[nn.Parameter], clip: float) -> None:
    if clip > 0:
        torch.nn.utils.clip_grad_norm_(params, clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def cross_entropy_masked(logits: torch.Tensor, labels: torch.Tensor, allowed: Sequence[int]) -> torch.Tensor:
    return F.cross_entropy(masked_logits(logits, allowed), labels)
