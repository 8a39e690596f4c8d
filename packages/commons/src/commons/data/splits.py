"""Class-incremental task splits (Split CIFAR, Split Digits, ...): tasks of N classes, class order seeded."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["TaskSplit", "split_by_classes"]


@dataclass(frozen=True)
class TaskSplit:
    """One task of a class-incremental stream: its classes and the dataset indices that belong to it."""

    task_id: int
    classes: tuple[int, ...]
    indices: np.ndarray


def split_by_classes(targets: Sequence[int] | np.ndarray | torch.Tensor, classes_per_task: int, seed: int | None = 0,
                     class_order: Sequence[int] | None = None) -> list[TaskSplit]:
    """Partition a labelled dataset into tasks of ``classes_per_task`` classes each.

    The class order is ``class_order`` if given, the sorted classes if ``seed is None`` (the mammoth convention), or
    a permutation drawn from ``seed``. The number of classes must be divisible by ``classes_per_task``.
    """
    targets = np.asarray(targets.cpu() if isinstance(targets, torch.Tensor) else targets)
    if targets.ndim != 1 or targets.size == 0:
        raise ValueError(f"targets must be a non-empty 1-D sequence of labels, got shape {targets.shape}")
    if not isinstance(classes_per_task, int) or classes_per_task < 1:
        raise ValueError(f"classes_per_task must be a positive int, got {classes_per_task!r}")
    present = np.unique(targets)
    if class_order is not None:
        order = [int(c) for c in class_order]
        if sorted(order) != sorted(present.tolist()):
            raise ValueError(f"class_order must be a permutation of the classes present {present.tolist()}, "
                             f"got {order}")
    elif seed is None:
        order = present.tolist()
    else:
        order = np.random.default_rng(seed).permutation(present).tolist()
    if len(order) % classes_per_task:
        raise ValueError(f"{len(order)} classes cannot be split into tasks of classes_per_task={classes_per_task}")
    tasks = []
    for t in range(len(order) // classes_per_task):
        classes = tuple(int(c) for c in order[t * classes_per_task:(t + 1) * classes_per_task])
        tasks.append(TaskSplit(t, classes, np.flatnonzero(np.isin(targets, classes))))
    return tasks
