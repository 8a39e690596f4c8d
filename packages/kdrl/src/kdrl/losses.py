"""Knowledge-distillation losses, per sample, so that any weighting strategy can weight them sample by sample.

MTKD-RL (Yang et al., AAAI 2025, arXiv 2502.18510) uses two per-sample terms for every teacher ``m``:

- logit KD: ``KL_{b,m} = T^2 * sum_c p_t(c) [log p_t(c) - log p_s(c)]`` with ``p = softmax(z / T)`` (Hinton KD; the
  official code's ``DistillKL(..., unreduce=True)``), default ``T = 4``;
- feature KD: ``F_{b,m} = mean_{C,H,W} (adaptor_m(f_s) - f_t)^2`` (FitNet-style MSE through a per-teacher adaptor).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["kd_kl_per_sample", "kd_kl", "feature_mse_per_sample", "teacher_cross_entropy", "cosine_per_sample"]


def _check_logits(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> None:
    for name, t in (("student_logits", student_logits), ("teacher_logits", teacher_logits)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 2:
            raise ValueError(f"{name} must have shape [batch, classes], got {tuple(t.shape)}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student_logits {tuple(student_logits.shape)} and teacher_logits {tuple(teacher_logits.shape)} must have"
            " the same shape (same batch, same number of classes)"
        )


def kd_kl_per_sample(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                     temperature: float = 4.0) -> torch.Tensor:
    """``T^2 * KL(softmax(z_t/T) || softmax(z_s/T))`` for every sample: shape ``[batch]``.

    The teacher distribution is the target (gradients flow only into the student when the teacher is detached).
    """
    _check_logits(student_logits, teacher_logits)
    if not float(temperature) > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    t = float(temperature)
    log_ps = F.log_softmax(student_logits.float() / t, dim=1)
    log_pt = F.log_softmax(teacher_logits.float() / t, dim=1)
    return (log_pt.exp() * (log_pt - log_ps)).sum(dim=1) * (t * t)


def kd_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """Batch mean of :func:`kd_kl_per_sample` (torchdistill's ``KDLoss`` KD term with ``reduction='batchmean'``)."""
    return kd_kl_per_sample(student_logits, teacher_logits, temperature).mean()


def feature_mse_per_sample(student_map: torch.Tensor, teacher_map: torch.Tensor) -> torch.Tensor:
    """Mean squared error over all non-batch dimensions: shape ``[batch]``."""
    if student_map.shape != teacher_map.shape:
        raise ValueError(
            f"adapted student feature {tuple(student_map.shape)} and teacher feature {tuple(teacher_map.shape)} must"
            " have the same shape; the per-teacher adaptor should map one onto the other"
        )
    diff = (student_map.float() - teacher_map.float()) ** 2
    return diff.flatten(1).mean(dim=1)


def teacher_cross_entropy(teacher_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy of a teacher against the labels (MTKD-RL's teacher-performance signal)."""
    return F.cross_entropy(teacher_logits.float(), targets, reduction="none")


def cosine_per_sample(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of two ``[batch, dim]`` embeddings: shape ``[batch]``."""
    if a.shape != b.shape:
        raise ValueError(f"embeddings must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    return F.cosine_similarity(a.float(), b.float(), dim=1)
