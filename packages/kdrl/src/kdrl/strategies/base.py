"""The weighting-strategy interface every multi-teacher method implements.

The distiller computes, for a batch of ``B`` samples and ``M`` teachers, a :class:`DistillContext` with the
per-sample, per-teacher quantities every known weighting rule needs. A strategy returns two ``[B, M]`` weight
matrices (logit KD and feature KD); the student's loss is

``L = mean_b [ CE_b + sum_m w^l_{b,m} KL_{b,m} + beta * sum_m w^f_{b,m} F_{b,m} ]``.

After the optimiser step the distiller calls :meth:`WeightingStrategy.observe` with the detached per-sample loss,
then :meth:`WeightingStrategy.after_step` with a :class:`StudentStep` (the student, its optimiser, the teachers and
the batch: MMKD's meta step needs them), and :meth:`WeightingStrategy.end_epoch` at the end of every epoch:
learning strategies (MTKD-RL) train there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["DistillContext", "StudentStep", "WeightingStrategy"]


@dataclass
class DistillContext:
    """Everything a strategy may look at, all detached (except ``head_ce``, see below). Shapes: ``B`` samples,
    ``M`` teachers, ``K`` classes."""

    epoch: int
    targets: torch.Tensor  # [B]
    student_logits: torch.Tensor  # [B, K]
    teacher_logits: list[torch.Tensor]  # M x [B, K]
    teacher_embeddings: list[torch.Tensor]  # M x [B, d_m]
    student_embeddings: list[torch.Tensor]  # M x [B, d_m]: GAP of the student map after teacher m's adaptor
    kd: torch.Tensor  # [B, M] per-sample T^2 KL(p_t || p_s)
    feat: torch.Tensor  # [B, M] per-sample feature MSE
    teacher_ce: torch.Tensor  # [B, M] teacher cross-entropy against the labels
    cosine: torch.Tensor  # [B, M] cosine(student_embeddings[m], teacher_embeddings[m])
    temperature: float
    # [B, M] CE(teacher m's classifier head on adaptor_m(student map), y); only for strategies with
    # ``needs_teacher_heads`` (CA-MKD). It keeps its gradient when ``differentiable_feature_weights`` is set.
    head_ce: torch.Tensor | None = None
    # the last-stage maps before pooling (detached): teacher m's [B, C_m, H_m, W_m] and the student's own map
    # [B, C_s, H_s, W_s] (not adapted); MMKD's feature-weight network reads their Gram matrices
    teacher_maps: list[torch.Tensor] | None = None
    student_map: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return int(self.targets.shape[0])

    @property
    def num_teachers(self) -> int:
        return len(self.teacher_logits)


@dataclass
class StudentStep:
    """What :meth:`WeightingStrategy.after_step` receives after each student step."""

    context: DistillContext  # the batch's context (student logits from before the step)
    inputs: torch.Tensor  # [B, ...] on the training device
    targets: torch.Tensor  # [B]
    model: Any  # the unwrapped StudentWithAdaptors: model(x) -> (logits, student map, adapted maps)
    optimizer: torch.optim.Optimizer  # the student's (unwrapped) SGD optimiser
    teachers: Any  # the TeacherPool: teachers(x) -> one ClassifierOutput per teacher
    config: Any  # the DistillConfig (kd_weight, feat_weight, temperature)
    batch_index: int  # index of this batch in the epoch (counting skipped batches)
    num_batches: int  # len(train loader)


class WeightingStrategy:
    """Base class. Subclasses implement :meth:`weights`; learning strategies also override :meth:`observe`,
    :meth:`end_epoch`, :meth:`state_dict` and :meth:`load_state_dict`."""

    name: str = "base"
    uses_teachers: bool = True
    #: the distiller computes ``ctx.head_ce`` (each teacher's ``forward_head`` on the adapted student map)
    needs_teacher_heads: bool = False
    #: the feature weights are not detached: their gradient flows into the student/adaptors (official CA-MKD)
    differentiable_feature_weights: bool = False
    #: every batch must have the loader's batch size: shorter batches are skipped (MMKD's feature-weight network
    #: has a B-dependent input; official ``if opt.batch_size > input.size(0): continue``)
    fixed_batch_size: bool = False

    def setup(self, num_teachers: int, teacher_embed_dims: list[int], num_classes: int,
              device: torch.device) -> None:
        """Called once by the distiller before training, when the pool's shapes are known."""
        if num_teachers < 1:
            raise ValueError(f"{self.name} needs at least one teacher, got {num_teachers}")
        self.num_teachers = num_teachers

    def weights(self, ctx: DistillContext) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def observe(self, ctx: DistillContext, logit_weights: torch.Tensor, feat_weights: torch.Tensor,
                per_sample_loss: torch.Tensor) -> None:
        """Called after the student's optimiser step with the detached per-sample loss of that step."""

    def after_step(self, step: StudentStep) -> None:
        """Called after :meth:`observe` with the student, its optimiser and the batch (MMKD's meta update)."""

    def end_epoch(self, epoch: int) -> dict[str, float]:
        """Called at the end of every epoch; returns scalars to log."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            raise ValueError(f"strategy {self.name!r} has no state to load, got keys {sorted(state)}")

    def extra_history(self) -> dict[str, list[float]]:
        """Per-teacher means of internal quantities worth plotting (e.g. the agent's raw output)."""
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
