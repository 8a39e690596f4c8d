"""Continual-learning metrics over the accuracy matrix (Lopez-Paz & Ranzato 2017; Chaudhry et al. 2018).

``R[i, j]`` is the accuracy on task ``j`` after training on tasks ``0..i``. With ``T`` tasks:

- average accuracy (final) = mean_j R[T-1, j]
- backward transfer (BWT) = mean_{j<T-1} (R[T-1, j] − R[j, j])
- forgetting (mammoth, ``utils/metrics.py::forgetting``, the default)
  = mean_{j<T-1} (max_{i<=T-1} R[i, j] − R[T-1, j]): the maximum runs over *every* row, the final one included
  (mammoth pads the missing entries of earlier rows with 0 and takes the column maximum), so it is never negative;
- forgetting (Chaudhry et al. 2018, ``kind="chaudhry"``) = mean_{j<T-1} (max_{i<T-1} R[i, j] − R[T-1, j]): the
  final row is excluded from the maximum, so a task that improves at the end has negative forgetting.

Example: ``R = [[.5], [.7, .9]]`` gives mammoth 0.0 (max(.5, .7) − .7) and Chaudhry −0.2 (.5 − .7).
"""

from __future__ import annotations

import numpy as np

__all__ = ["AccuracyMatrix"]


class AccuracyMatrix:
    """Accuracy of every task after training each task; unset entries are NaN."""

    def __init__(self, num_tasks: int):
        if not isinstance(num_tasks, int) or num_tasks < 1:
            raise ValueError(f"num_tasks must be a positive int, got {num_tasks!r}")
        self.num_tasks = num_tasks
        self.matrix = np.full((num_tasks, num_tasks), np.nan)

    def set(self, trained_task: int, eval_task: int, accuracy: float) -> None:
        for name, t in (("trained_task", trained_task), ("eval_task", eval_task)):
            if not isinstance(t, (int, np.integer)) or not 0 <= t < self.num_tasks:
                raise ValueError(f"{name} must be an int in [0, {self.num_tasks}), got {t!r}")
        if not 0.0 <= float(accuracy) <= 1.0:
            raise ValueError(f"accuracy must be a fraction in [0, 1], got {accuracy}")
        self.matrix[trained_task, eval_task] = float(accuracy)

    def _last_row(self) -> int:
        rows = [i for i in range(self.num_tasks) if not np.isnan(self.matrix[i, : i + 1]).any()]
        if not rows:
            raise ValueError("no complete row yet: set R[i, 0..i] after training task i")
        return rows[-1]

    def average_accuracy(self, after_task: int | None = None) -> float:
        """Mean accuracy over tasks ``0..i`` after training task ``i`` (default: the last complete row)."""
        i = self._last_row() if after_task is None else after_task
        return float(np.mean(self.matrix[i, : i + 1]))

    def backward_transfer(self) -> float:
        i = self._last_row()
        if i == 0:
            return 0.0
        return float(np.mean([self.matrix[i, j] - self.matrix[j, j] for j in range(i)]))

    def forgetting(self, kind: str = "mammoth") -> float:
        """Average forgetting over tasks ``0..i-1`` after the last complete row ``i`` (see the module docstring).

        ``kind="mammoth"`` (default): the maximum over rows ``0..i`` (mammoth ``utils/metrics.py``); ``"chaudhry"``:
        over rows ``0..i-1`` (Chaudhry et al. 2018, "Riemannian Walk", Eq. 9).
        """
        if kind not in ("mammoth", "chaudhry"):
            raise ValueError(f"kind must be 'mammoth' or 'chaudhry', got {kind!r}")
        i = self._last_row()
        if i == 0:
            return 0.0
        last = i + 1 if kind == "mammoth" else i
        return float(np.mean([np.nanmax(self.matrix[:last, j]) - self.matrix[i, j] for j in range(i)]))

    def to_list(self) -> list[list[float | None]]:
        return [[None if np.isnan(v) else float(v) for v in row] for row in self.matrix]
