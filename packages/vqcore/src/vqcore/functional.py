"""The method-specific objectives and scores of Q-VDiT, S²Q-VDiT and MPQ-DM as plain tensor functions.

The method recipes (``vqcore.methods``) wrap these into loss terms, calibration selectors and bit allocators; keeping
the mathematics here makes each one testable on constructed inputs.

Q-VDiT (Feng et al., ICML 2025, arXiv 2505.22167; official code ``wlfeng0509/Q-VDiT``)
    :func:`frame_relation_kl`, :func:`tmd_loss` — Temporal Maintenance Distillation (paper §3.3, Eq. "TMD"):
    ``MSE(ŷ, y) + λ · Σ_i KL(D_i^FP ‖ D_i^Q)`` where ``D_i`` is the row-softmax of frame i's cosine similarities to all
    frames (λ = 100 in the code). The released code reshapes ``[b, c, t, h, w]`` to ``[b, t, −1]`` without permuting,
    so its "frames" are channel chunks; ``mode="per_frame"`` (default) implements the paper, ``mode="code"`` the
    released behaviour.

S²Q-VDiT (Feng et al., NeurIPS 2025, arXiv 2508.04016; no public code — the paper and README figures are the spec)
    :func:`diffusion_salience`, :func:`hessian_salience`, :func:`select_salient` — Hessian-aware Salient Data
    Selection: ``C = norm(‖x_t − x_{t−1}‖² / ‖x_t‖²) · norm(‖x_tᵀ x_t‖₂)``, Top-K. The Hessian of a linear layer's
    reconstruction loss is ∝ XᵀX, so its spectral norm is σ_max(X)², computed from the smaller Gram matrix.
    Normalisation (not given in the paper): ``"max"`` divides each score by its maximum over the pool (default, keeps
    ratios), ``"minmax"`` rescales to [0, 1], ``"rank"`` uses ranks.
    :func:`attention_token_weights`, :func:`sparsify_token_weights`, :func:`token_weighted_mse` — Attention-guided
    Sparse Token Distillation: ``L = (1/n) Σ_j λ_j ‖θ^f(x_j) − θ^q(x_j)‖²`` with λ_j the attention token j *receives*
    in the full-precision block (mean over heads and queries of the softmax attention column), scaled to mean 1 so
    uniform attention gives the plain per-token MSE; sparsified by keeping the tokens holding the top ``keep`` share of
    attention mass (our reading of "sparse": the figure shows a per-token bar chart with most bars near zero).

MPQ-DM (Feng et al., AAAI 2025, arXiv 2412.11549; official code ``cantbebetter2/MPQ-DM``)
    :func:`smoothquant_scales` — SmoothQuant channel balancing ``s_j = a_j^α / w_j^(1−α)`` (α = 0.5 in MPQ-DM).
    :func:`channel_kurtosis`, :func:`omq_bit_allocation` — Outlier-Driven Mixed Quantization: kurtosis per output
    channel of the smoothed weight (code: ``mean((w−μ)⁴) / std(w)⁴`` with the unbiased std), top-k channels at n+1
    bits, bottom-k at n−1, the rest at n (the average stays exactly n).
    :func:`spatial_relation_kl` — Time-Smoothed Relation Distillation's relation term: L2-normalise features over
    channels, ``S = Fᵀ F`` (HW×HW) per sample, row softmax, ``KL(p_FP ‖ p_Q)`` (code: sum reduction, weight 100).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

__all__ = [
    "frame_relation_kl",
    "tmd_loss",
    "diffusion_salience",
    "hessian_salience",
    "select_salient",
    "attention_token_weights",
    "sparsify_token_weights",
    "token_weighted_mse",
    "smoothquant_scales",
    "channel_kurtosis",
    "omq_bit_allocation",
    "spatial_relation_kl",
]


# -- Q-VDiT: Temporal Maintenance Distillation --------------------------------------------------------------------
def _frames(x: torch.Tensor, layout: str, mode: str) -> torch.Tensor:
    if x.ndim != 5:
        raise ValueError(f"video outputs must be 5-D ({layout}), got shape {tuple(x.shape)}")
    if layout == "bcthw":
        b, _, t = x.shape[:3]
        if mode == "code":
            return x.reshape(b, t, -1)  # the released code: no permute, rows are channel chunks
        return x.permute(0, 2, 1, 3, 4).reshape(b, t, -1)
    if layout == "btchw":
        b, t = x.shape[:2]
        if mode == "code":
            raise ValueError("mode='code' reproduces the official [b, c, t, h, w] reshape; use layout='bcthw'")
        return x.reshape(b, t, -1)
    raise ValueError(f"layout must be 'bcthw' or 'btchw', got {layout!r}")


def frame_relation_kl(pred: torch.Tensor, target: torch.Tensor, layout: str = "bcthw",
                      mode: Literal["per_frame", "code"] = "per_frame") -> torch.Tensor:
    """KL between the row-softmaxed frame-to-frame cosine-similarity matrices of ``target`` (FP) and ``pred`` (Q).

    ``KL(p_FP ‖ p_Q)`` averaged over all ``b·t·t`` entries, as ``F.kl_div(log p_Q, p_FP, reduction="mean")`` in the
    official code. Zero iff both outputs have the same inter-frame similarity structure.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} and "
                         f"{tuple(target.shape)}")
    if mode not in ("per_frame", "code"):
        raise ValueError(f"mode must be 'per_frame' or 'code', got {mode!r}")
    fq = F.normalize(_frames(pred.float(), layout, mode), dim=-1)
    ff = F.normalize(_frames(target.float(), layout, mode), dim=-1)
    log_q = torch.log_softmax(fq @ fq.transpose(1, 2), dim=-1)
    log_p = torch.log_softmax(ff @ ff.transpose(1, 2), dim=-1)
    # the code's F.kl_div(..., reduction="mean"): the sum divided by every entry (b·t·t), written out explicitly
    return (log_p.exp() * (log_p - log_q)).sum() / log_p.numel()


def tmd_loss(pred: torch.Tensor, target: torch.Tensor, weight: float = 100.0, layout: str = "bcthw",
             mode: Literal["per_frame", "code"] = "per_frame") -> torch.Tensor:
    """Q-VDiT's distillation loss: ``mean((ŷ − y)²) + weight · frame_relation_kl(ŷ, y)``."""
    return F.mse_loss(pred.float(), target.float()) + weight * frame_relation_kl(pred, target, layout, mode)


# -- S²Q-VDiT: salient data selection ------------------------------------------------------------------------------
def diffusion_salience(x_t: torch.Tensor, x_prev: torch.Tensor) -> torch.Tensor:
    """``‖x_t − x_{t−1}‖² / ‖x_t‖²`` per item (dim 0 indexes items; all other dims are flattened)."""
    if x_t.shape != x_prev.shape:
        raise ValueError(f"x_t and x_prev must have the same shape, got {tuple(x_t.shape)} and {tuple(x_prev.shape)}")
    a, b = x_t.flatten(1).double(), x_prev.flatten(1).double()
    return ((a - b).pow(2).sum(1) / a.pow(2).sum(1).clamp_min(1e-12)).float()


def hessian_salience(x: torch.Tensor) -> torch.Tensor:
    """``‖XᵀX‖₂ = σ_max(X)²`` per item for token matrices ``x`` of shape ``[items, tokens, channels]``.

    Uses the smaller of the two Gram matrices (tokens×tokens or channels×channels), never a dense Hessian.
    """
    if x.ndim != 3:
        raise ValueError(f"x must be [items, tokens, channels], got shape {tuple(x.shape)}")
    x = x.double()
    gram = x.transpose(1, 2) @ x if x.shape[2] <= x.shape[1] else x @ x.transpose(1, 2)
    return torch.linalg.eigvalsh(gram)[:, -1].clamp_min(0).float()


def _normalise(scores: torch.Tensor, how: str) -> torch.Tensor:
    if how == "max":
        return scores / scores.max().clamp_min(1e-12)
    if how == "minmax":
        lo, hi = scores.min(), scores.max()
        return (scores - lo) / (hi - lo).clamp_min(1e-12)
    if how == "rank":
        return scores.argsort().argsort().float() / max(len(scores) - 1, 1)
    raise ValueError(f"normalize must be 'max', 'minmax' or 'rank', got {how!r}")


def select_salient(diff_scores: torch.Tensor, quant_scores: torch.Tensor, k: int, normalize: str = "max"
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` items by ``norm(diff) · norm(quant)``; returns ``(indices sorted by score, all scores)``.

    Ties are broken by the lower index, so the selection is deterministic.
    """
    if diff_scores.ndim != 1 or diff_scores.shape != quant_scores.shape:
        raise ValueError("diff_scores and quant_scores must be 1-D tensors of the same length")
    if not isinstance(k, int) or not 1 <= k <= len(diff_scores):
        raise ValueError(f"k must be an int in [1, {len(diff_scores)}], got {k!r}")
    if (diff_scores < 0).any() or (quant_scores < 0).any():
        raise ValueError("salience scores must be non-negative")
    score = _normalise(diff_scores.double(), normalize) * _normalise(quant_scores.double(), normalize)
    order = sorted(range(len(score)), key=lambda i: (-float(score[i]), i))
    return torch.tensor(order[:k]), score.float()


# -- S²Q-VDiT: attention-guided sparse token distillation ----------------------------------------------------------
def attention_token_weights(attn: torch.Tensor) -> torch.Tensor:
    """λ per key token from softmax attention ``[B, heads, queries, keys]``: the mean attention each token receives,
    scaled so that λ has mean 1 over the tokens of each sample (uniform attention → λ ≡ 1)."""
    if attn.ndim != 4:
        raise ValueError(f"attn must be [batch, heads, queries, keys], got shape {tuple(attn.shape)}")
    received = attn.float().mean(dim=(1, 2))  # [B, keys]
    return received / received.mean(dim=1, keepdim=True).clamp_min(1e-12)


def sparsify_token_weights(weights: torch.Tensor, keep: float = 0.5) -> torch.Tensor:
    """Keep the fewest tokens that hold at least a ``keep`` share of the attention mass (at least one); zero the rest;
    rescale so λ again has mean 1 over all tokens (the loss magnitude stays comparable to the dense one)."""
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    if weights.ndim != 2:
        raise ValueError(f"weights must be [batch, tokens], got shape {tuple(weights.shape)}")
    if keep == 1.0:
        return weights
    sorted_w, order = weights.sort(dim=1, descending=True)
    mass = sorted_w.cumsum(1) / sorted_w.sum(1, keepdim=True).clamp_min(1e-12)
    keep_sorted = (mass - sorted_w / sorted_w.sum(1, keepdim=True).clamp_min(1e-12)) < keep  # first reaches keep
    mask = torch.zeros_like(weights, dtype=torch.bool).scatter(1, order, keep_sorted)
    sparse = torch.where(mask, weights, torch.zeros_like(weights))
    return sparse * weights.shape[1] / sparse.sum(1, keepdim=True).clamp_min(1e-12)


def token_weighted_mse(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """``(1/n) Σ_j λ_j · mean_c (pred_j − target_j)²`` for ``[B, tokens, channels]`` outputs and ``[B, tokens]`` λ."""
    if pred.shape != target.shape or pred.ndim != 3:
        raise ValueError(f"pred and target must both be [batch, tokens, channels], got {tuple(pred.shape)} and "
                         f"{tuple(target.shape)}")
    per_token = (pred.float() - target.float()).pow(2).mean(-1)
    if weights is None:
        return per_token.mean()
    if weights.shape != per_token.shape:
        raise ValueError(f"weights must be [batch, tokens] = {tuple(per_token.shape)}, got {tuple(weights.shape)}")
    return (weights.to(per_token) * per_token).mean()


# -- MPQ-DM: outlier-driven mixed quantization ---------------------------------------------------------------------
def smoothquant_scales(act_absmax: torch.Tensor, weight_absmax: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """Per-input-channel ``s = a^α / w^(1−α)``; quantize ``X / s`` and ``W · s`` (SmoothQuant, Xiao et al. 2023)."""
    if act_absmax.shape != weight_absmax.shape or act_absmax.ndim != 1:
        raise ValueError("act_absmax and weight_absmax must be 1-D tensors of the same length (input channels)")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    a, w = act_absmax.float().clamp_min(1e-5), weight_absmax.float().clamp_min(1e-5)
    return (a.pow(alpha) / w.pow(1 - alpha)).clamp_min(1e-5)


def channel_kurtosis(weight: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Kurtosis ``mean((w − μ)⁴) / std(w)⁴`` of each output channel (dim 0; other dims flattened).

    ``unbiased=True`` uses ``torch.std``'s unbiased estimate as MPQ-DM's code does; ``False`` gives Pearson's
    (``scipy.stats.kurtosis(fisher=False, bias=True)``).
    """
    w = weight.flatten(1).double()
    if w.shape[1] < 2:
        raise ValueError("each channel needs at least 2 weights for a kurtosis")
    centred = w - w.mean(1, keepdim=True)
    std = w.std(1, unbiased=unbiased, keepdim=True)
    return (centred.pow(4).mean(1, keepdim=True) / std.pow(4).clamp_min(1e-24)).squeeze(1).float()


def omq_bit_allocation(kurtosis: torch.Tensor, n_bits: int, k: int) -> torch.Tensor:
    """Bits per output channel: the ``k`` highest-kurtosis channels get ``n+1``, the ``k`` lowest ``n−1``, the rest
    ``n``. The mean is exactly ``n``. Ties broken by channel index (deterministic)."""
    c = kurtosis.numel()
    if not isinstance(n_bits, int) or not 2 <= n_bits <= 8:
        raise ValueError(f"n_bits must be an int in [2, 8], got {n_bits!r}")
    if not isinstance(k, int) or not 0 <= 2 * k <= c:
        raise ValueError(f"k must be an int with 0 <= 2k <= channels ({c}), got {k!r}")
    if n_bits - 1 < 1 and k > 0:
        raise ValueError("n_bits - 1 must be at least 1 bit")
    order = sorted(range(c), key=lambda i: (-float(kurtosis[i]), i))
    bits = torch.full((c,), n_bits, dtype=torch.long)
    if k:
        bits[order[:k]] = n_bits + 1
        bits[order[-k:]] = n_bits - 1
    return bits


# -- MPQ-DM: time-smoothed relation distillation -------------------------------------------------------------------
def spatial_relation_kl(feat_q: torch.Tensor, feat_fp: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    """``KL(softmax(S_fp) ‖ softmax(S_q))`` row-wise, ``S = Fᵀ F`` over spatial positions of channel-normalised
    ``[B, C, H, W]`` features. ``reduction="sum"`` as the code (``size_average=False``), or ``"mean"`` over rows."""
    if feat_q.shape != feat_fp.shape or feat_q.ndim != 4:
        raise ValueError(f"features must both be [B, C, H, W], got {tuple(feat_q.shape)} and {tuple(feat_fp.shape)}")
    fq = F.normalize(feat_q.float().flatten(2), dim=1)
    ff = F.normalize(feat_fp.float().flatten(2), dim=1)
    log_q = torch.log_softmax(fq.transpose(1, 2) @ fq, dim=-1)
    log_p = torch.log_softmax(ff.transpose(1, 2) @ ff, dim=-1)
    kl_rows = (log_p.exp() * (log_p - log_q)).sum(-1)
    if reduction == "sum":
        return kl_rows.sum()
    if reduction == "mean":
        return kl_rows.mean()
    raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
