"""Non-learned weighting rules, all in the same framework (same losses, adaptors and schedule as MTKD-RL), so that
only the weighting differs:

- :class:`NoKD` — the student trained alone (cross-entropy only; teachers are not even run).
- :class:`Average` (AVER, official MTKD-RL ``train_student_avg.py``): ``w = 1/M`` for both terms.
- :class:`ConfidenceAware` (CA-MKD, Zhang, Chen & Wang, ICASSP 2022): per sample
  ``w_m = (1 - softmax_m(CE(z_t^m, y))) / (M - 1)`` for both terms. The original also distils from a
  confidence-weighted ensemble of logits and uses an intermediate-layer hint; here only its weighting rule is kept.
- :class:`EntropyBased` (EBKD, Kwon et al., ICASSP 2020): per sample ``w_m = softmax_m(-H(p_t^m))`` (confident
  teachers weigh more).
- :class:`GradientSpace` (AEKD, Du et al., NeurIPS 2020, "Agree to Disagree"): per batch, the weights on the simplex
  that minimise the norm of the combined KD gradient in the student's logit space (a min-norm multi-objective point,
  solved by Frank-Wolfe), optionally capped at ``max_weight``. The gradient of ``T^2 KL(p_t || p_s)`` with respect to
  ``z_s`` is ``T (p_s - p_t)``, so no extra backward pass is needed. The same weights are used for feature KD.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import DistillContext, WeightingStrategy

__all__ = ["NoKD", "Average", "ConfidenceAware", "EntropyBased", "GradientSpace", "confidence_weights"]


def confidence_weights(teacher_ce: torch.Tensor) -> torch.Tensor:
    """CA-MKD's rule: ``(1 - softmax(CE_t over teachers)) / (M - 1)``; all ones for a single teacher."""
    m = teacher_ce.shape[1]
    if m == 1:
        return torch.ones_like(teacher_ce)
    return (1.0 - F.softmax(teacher_ce, dim=1)) / (m - 1)


class NoKD(WeightingStrategy):
    name = "student"
    uses_teachers = False

    def weights(self, ctx: DistillContext) -> tuple[torch.Tensor, torch.Tensor]:
        z = torch.zeros(ctx.batch_size, ctx.num_teachers, device=ctx.targets.device)
        return z, z


class Average(WeightingStrategy):
    """AVER. ``warmup_epochs > 0`` reproduces MTKD-RL's warm-up (all weights 1, i.e. a plain sum over teachers, in
    the first epochs) so that an ablation can separate the warm-up's effect from the agent's (``"aver_warmup"``)."""

    name = "aver"

    def __init__(self, warmup_epochs: int = 0):
        if not isinstance(warmup_epochs, int) or warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be an int >= 0, got {warmup_epochs!r}")
        self.warmup_epochs = warmup_epochs
        if warmup_epochs:
            self.name = "aver_warmup"

    def weights(self, ctx: DistillContext) -> tuple[torch.Tensor, torch.Tensor]:
        value = 1.0 if ctx.epoch < self.warmup_epochs else 1.0 / ctx.num_teachers
        w = torch.full((ctx.batch_size, ctx.num_teachers), value, device=ctx.targets.device)
        return w, w


class ConfidenceAware(WeightingStrategy):
    name = "camkd"

    def weights(self, ctx: DistillContext) -> tuple[torch.Tensor, torch.Tensor]:
        w = confidence_weights(ctx.teacher_ce)
        return w, w


class EntropyBased(WeightingStrategy):
    name = "ebkd"

    def weights(self, ctx: DistillContext) -> tuple[torch.Tensor, torch.Tensor]:
        ents = []
        for z in ctx.teacher_logits:
            logp = F.log_softmax(z.float(), dim=1)
            ents.append(-(logp.exp() * logp).sum(dim=1))
        w = F.softmax(-torch.stack(ents, dim=1), dim=1)
        return w, w


def min_norm_simplex(gram: torch.Tensor, iters: int = 50, max_weight: float | None = None) -> torch.Tensor:
    """Frank-Wolfe for ``min_{a in simplex} a^T G a`` (Sener & Koltun 2018 style); then optional capping at
    ``max_weight`` with the excess spread over the uncapped entries."""
    m = gram.shape[0]
    a = torch.full((m,), 1.0 / m, dtype=gram.dtype, device=gram.device)
    for _ in range(iters):
        grad = gram @ a
        j = int(torch.argmin(grad))
        e = torch.zeros_like(a)
        e[j] = 1.0
        d = e - a
        denom = d @ gram @ d
        if denom <= 1e-12:
            break
        step = float(torch.clamp(-(a @ gram @ d) / denom, 0.0, 1.0))
        if step <= 1e-8:
            break
        a = a + step * d
    if max_weight is not None:
        for _ in range(m):
            over = a > max_weight
            if not bool(over.any()):
                break
            excess = float((a[over] - max_weight).sum())
            a[over] = max_weight
            free = ~over & (a < max_weight)
            if not bool(free.any()):
                break
            a[free] += excess / int(free.sum())
    return a


class GradientSpace(WeightingStrategy):
    name = "aekd"

    def __init__(self, max_weight: float | None = None, iters: int = 50):
        if max_weight is not None and not 0.0 < max_weight <= 1.0:
            raise ValueError(f"max_weight must be in (0, 1] or None, got {max_weight}")
        self.max_weight = max_weight
        self.iters = iters

    def setup(self, num_teachers, teacher_embed_dims, num_classes, device) -> None:
        super().setup(num_teachers, teacher_embed_dims, num_classes, device)
        if self.max_weight is not None and self.max_weight * num_teachers < 1.0:
            raise ValueError(f"max_weight={self.max_weight} is infeasible for {num_teachers} teachers (needs >= 1/M)")

    def weights(self, ctx: DistillContext) -> tuple[torch.Tensor, torch.Tensor]:
        t = ctx.temperature
        ps = F.softmax(ctx.student_logits.float() / t, dim=1)
        grads = torch.stack([(t * (ps - F.softmax(z.float() / t, dim=1))).flatten() for z in ctx.teacher_logits])
        grads = grads / max(ctx.batch_size, 1)
        a = min_norm_simplex(grads @ grads.T, self.iters, self.max_weight)
        w = a.to(ctx.targets.device).unsqueeze(0).expand(ctx.batch_size, -1).contiguous()
        return w, w
