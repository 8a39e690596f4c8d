"""Non-learned weighting rules, all in the same framework (same losses, adaptors and schedule as MTKD-RL), so that
only the weighting differs. Each rule follows its official code (``Rorozhl/CA-MKD``: ``helper/loops.py``
``train_distill_multi_teacher``, ``helper/optimization.py``, ``distiller_zoo/CAMKD.py``, ``models/util.py``), including
the scale of the weights: the official losses are ``sum_{b,m} w_{b,m} L_{b,m} / (B M)``, so the per-sample weights
returned here carry that ``1/M`` (the distiller's loss is ``mean_b sum_m w L``).

- :class:`NoKD` — the student trained alone (cross-entropy only; teachers are not even run).
- :class:`Average` (AVER, official MTKD-RL ``train_student_avg.py`` and CA-MKD ``AVERAGE_LOSS``): ``w = 1/M``.
- :class:`EntropyBased` (EBKD, Kwon et al., ICASSP 2020; official ``ensemble_method == 'EBKD'``): per sample
  ``w_m = (1 - H_m / sum_j H_j) / M`` with ``H_m`` the entropy of ``softmax(z_t^m)`` at temperature 1. The weights sum
  to ``(M - 1)/M``; with confident teachers (all ``H`` small and alike) they are close to uniform.
- :class:`GradientSpace` (AEKD, Du et al., NeurIPS 2020, "Agree to Disagree"; official ``find_optimal_svm``): per
  batch, ``g_m`` = the batch mean of the gradient of teacher ``m``'s batch-mean KD loss with respect to the student
  logits (``T (p_s - p_t) / B`` per sample, no extra backward pass needed); the weights are the one-class SVM dual
  with the precomputed kernel ``G = [g_m . g_j]`` and ``nu = 1 / (C M)``, i.e. the minimiser of ``a^T G a`` on the
  simplex with every ``a_m <= C`` (default ``C = 0.6``; ``nu`` clipped to ``[1/M, 1]`` as in the code, so the cap is
  ``clip(C, 1/M, 1)``). Solved exactly here (active-set enumeration; see :func:`min_norm_capped_simplex`) instead of
  with libsvm; ``normalize=True`` reproduces ``--svm_norm``.
- :class:`ConfidenceAware` (CA-MKD, Zhang, Chen & Wang, ICASSP 2022; official ``CAMKD`` + ``CalWeight``):
  logit KD ``w^l_m = (1 - softmax_m(CE(z_t^m, y))) / ((M - 1) M)``; feature KD
  ``w^f_m = (1 - softmax_m(CE(h_t^m(adaptor_m(f_s)), y))) / ((M - 1) M)``, where ``h_t^m`` is teacher ``m``'s own
  classifier head (pooling + fc) applied to the *adapted student feature*: the feature weight says how well the
  student's feature, read by that teacher's classifier, already predicts the label. As in the code the feature
  weights keep their gradient (it flows through the adaptors) and the feature term is off in the first epoch.

Deviations (README "Baselines"): the official EBKD and AEKD runs use logit KD only (``--distill kd -b 0``); in the
common framework their logit weights are reused for the feature term. CA-MKD's official feature weight is β = 50;
here every strategy uses the distiller's ``feat_weight`` (MTKD-RL's β = 5). CA-MKD's official ``Embed`` has a conv
bias (cancelled by BatchNorm). With a single teacher the official script falls back to AVER, and so do these rules.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
import torch.nn.functional as F

from .base import DistillContext, WeightingStrategy

__all__ = ["NoKD", "Average", "ConfidenceAware", "EntropyBased", "GradientSpace", "confidence_weights",
           "entropy_weights", "camkd_weights", "aekd_gradients", "min_norm_capped_simplex"]


def confidence_weights(teacher_ce: torch.Tensor) -> torch.Tensor:
    """The confidence rule ``(1 - softmax(CE_t over teachers)) / (M - 1)`` (sums to 1 per sample; all ones for a
    single teacher). MTKD-RL's fusion uses it as is; CA-MKD divides it by ``M`` (:func:`camkd_weights`)."""
    m = teacher_ce.shape[1]
    if m == 1:
        return torch.ones_like(teacher_ce)
    return (1.0 - F.softmax(teacher_ce, dim=1)) / (m - 1)


def camkd_weights(ce: torch.Tensor) -> torch.Tensor:
    """CA-MKD's per-sample weights from a ``[B, M]`` cross-entropy matrix, with the official ``1/M`` of
    ``loss /= (bsz * num_teacher)``: ``(1 - softmax_m(ce)) / ((M - 1) M)``."""
    m = ce.shape[1]
    return confidence_weights(ce) / m


def entropy_weights(teacher_logits: list[torch.Tensor]) -> torch.Tensor:
    """EBKD's ``[B, M]`` weights ``(1 - H_m / sum_j H_j) / M`` (entropies of ``softmax(z)`` at T = 1). The code
    computes ``-p log p`` from ``softmax`` then ``log`` (NaN when a probability underflows to 0); ``log_softmax`` is
    used here, identical otherwise. A sample where every teacher is one-hot (``sum H = 0``) gets uniform ``1/M``."""
    m = len(teacher_logits)
    ents = []
    for z in teacher_logits:
        logp = F.log_softmax(z.float(), dim=1)
        ents.append(-(logp.exp() * logp).sum(dim=1))
    h = torch.stack(ents, dim=1)
    if m == 1:
        return torch.ones_like(h)
    total = h.sum(dim=1, keepdim=True)
    frac = torch.where(total > 0, h / total.clamp_min(torch.finfo(h.dtype).tiny), torch.full_like(h, 1.0 / m))
    return (1.0 - frac) / m


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
    """CA-MKD (module docstring). Needs every teacher's classifier head (``forward_head(feature_map)``: all
    :mod:`kdrl.models` and timm models have it); the distiller fills ``ctx.head_ce`` with gradient."""

    name = "camkd"
    needs_teacher_heads = True
    differentiable_feature_weights = True

    def weights(self, ctx: DistillContext) -> tuple[torch.Tensor, torch.Tensor]:
        if ctx.num_teachers == 1:
            w = torch.ones_like(ctx.teacher_ce)
            return w, w
        w_l = camkd_weights(ctx.teacher_ce)
        if ctx.head_ce is None:
            raise ValueError("camkd needs ctx.head_ce (teacher heads on the adapted student features)")
        w_f = camkd_weights(ctx.head_ce)
        if ctx.epoch == 0:  # official: `if epoch == 1: loss = gamma*cls + alpha*div` (epochs count from 1)
            w_f = torch.zeros_like(w_f)
        return w_l, w_f


class EntropyBased(WeightingStrategy):
    name = "ebkd"

    def weights(self, ctx: DistillContext) -> tuple[torch.Tensor, torch.Tensor]:
        w = entropy_weights(ctx.teacher_logits).to(ctx.targets.device)
        return w, w


def aekd_gradients(student_logits: torch.Tensor, teacher_logits: list[torch.Tensor],
                   temperature: float) -> torch.Tensor:
    """``[M, K]``: per teacher, the batch mean of ``d/dz_s`` of the batch-mean KD loss ``T^2 KL(p_t || p_s)`` —
    what the official hook on ``logit_s`` records (``T (p_s - p_t) / B`` per sample), averaged over the batch as
    ``find_optimal_svm`` does (``vec_mean``)."""
    t = float(temperature)
    b = student_logits.shape[0]
    ps = F.softmax(student_logits.double() / t, dim=1)
    return torch.stack([(t * (ps - F.softmax(z.double() / t, dim=1)) / b).mean(dim=0) for z in teacher_logits])


def min_norm_capped_simplex(gram: np.ndarray | torch.Tensor, cap: float = 1.0) -> np.ndarray:
    """Exact minimiser of ``a^T G a`` over ``{a : sum a = 1, 0 <= a_m <= cap}`` (``G`` symmetric PSD, ``M x M``).

    This is the one-class SVM dual that AEKD solves with libsvm (``dual_coef_ / (M nu)``, ``cap = 1/(M nu)``).
    Every face of the feasible polytope (which weights are 0, which at the cap, which free) is visited; on a face the
    stationary point of the equality-constrained quadratic is a linear solve, and the best feasible one is the
    global minimum (a minimiser lies in the relative interior of some face and is stationary there). ``3^M`` faces:
    exact and fast for the few teachers multi-teacher KD uses; ``M > 8`` is refused.
    """
    g = np.asarray(gram.detach().cpu().double() if isinstance(gram, torch.Tensor) else gram, dtype=np.float64)
    m = g.shape[0]
    if g.shape != (m, m):
        raise ValueError(f"gram must be a square matrix, got shape {g.shape}")
    if m > 8:
        raise ValueError(f"min_norm_capped_simplex enumerates 3^M faces; M={m} teachers is too many (max 8)")
    if not cap * m >= 1.0 - 1e-12:
        raise ValueError(f"cap={cap} is infeasible for {m} teachers (needs cap >= 1/M)")
    g = 0.5 * (g + g.T)
    scale = max(float(np.abs(g).max()), 1e-300)
    gs = g / scale
    tol = 1e-9
    best, best_val = None, np.inf
    for labels in itertools.product((0, 1, 2), repeat=m):  # 0: at zero, 1: free, 2: at cap
        free = [i for i in range(m) if labels[i] == 1]
        capped = [i for i in range(m) if labels[i] == 2]
        rest = 1.0 - cap * len(capped)
        a = np.zeros(m)
        a[capped] = cap
        if not free:
            if abs(rest) > 1e-9:
                continue
        else:
            k = len(free)
            kkt = np.zeros((k + 1, k + 1))
            kkt[:k, :k] = 2.0 * gs[np.ix_(free, free)]
            kkt[:k, k] = -1.0
            kkt[k, :k] = 1.0
            rhs = np.zeros(k + 1)
            rhs[:k] = -2.0 * gs[np.ix_(free, capped)].sum(axis=1) * cap if capped else 0.0
            rhs[k] = rest
            sol = np.linalg.lstsq(kkt, rhs, rcond=None)[0]
            a[free] = sol[:k]
            if abs(a.sum() - 1.0) > 1e-7:
                continue
        if (a < -tol).any() or (a > cap + tol).any():
            continue
        val = float(a @ gs @ a)
        if val < best_val - 1e-12:
            best, best_val = np.clip(a, 0.0, cap), val
    assert best is not None  # the uniform point is feasible, so some face always yields a point
    return best / best.sum()


class GradientSpace(WeightingStrategy):
    """AEKD (module docstring). ``C`` is the official ``-C`` (default 0.6): no teacher gets more than ``C`` of the
    weight; ``C >= 1`` is no cap; ``C < 1/M`` forces uniform weights (the code clips ``nu`` to 1)."""

    name = "aekd"

    def __init__(self, C: float = 0.6, normalize: bool = False):
        if not isinstance(C, (int, float)) or isinstance(C, bool) or not C > 0:
            raise ValueError(f"C (the AEKD weight cap) must be a number > 0, got {C!r}")
        self.C = float(C)
        self.normalize = bool(normalize)

    def __repr__(self) -> str:
        return f"GradientSpace(C={self.C}, normalize={self.normalize})"

    def cap(self, num_teachers: int) -> float:
        """``1 / (M nu)`` with the code's ``nu = 1/(C M)`` clipped to ``[1/M, 1]``."""
        nu = min(max(1.0 / (self.C * num_teachers), 1.0 / num_teachers), 1.0)
        return 1.0 / (num_teachers * nu)

    def batch_weights(self, student_logits: torch.Tensor, teacher_logits: list[torch.Tensor],
                      temperature: float) -> torch.Tensor:
        """The ``[M]`` weights of one batch."""
        m = len(teacher_logits)
        if m == 1:
            return torch.ones(1)
        vec = aekd_gradients(student_logits, teacher_logits, temperature)
        norms = vec.norm(dim=1)
        if self.normalize:
            vec = vec / norms.clamp_min(1e-300)[:, None]
        a = torch.from_numpy(min_norm_capped_simplex(vec @ vec.T, self.cap(m)))
        if self.normalize:  # official: ret * (1 / vec_norm), renormalised
            a = a / norms.clamp_min(1e-300)
            a = a / a.sum()
        return a.float()

    def weights(self, ctx: DistillContext) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.batch_weights(ctx.student_logits, ctx.teacher_logits, ctx.temperature)
        w = a.to(ctx.targets.device).unsqueeze(0).expand(ctx.batch_size, -1).contiguous()
        return w, w
