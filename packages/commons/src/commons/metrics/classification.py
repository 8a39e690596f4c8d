"""Classification accuracy."""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["topk_accuracy"]


def topk_accuracy(logits: torch.Tensor, targets: torch.Tensor, topk: int | Sequence[int] = (1,)) -> list[float] | float:
    """Fraction of samples whose target is among the ``k`` highest logits, for each ``k`` in ``topk``.

    Returns a float when ``topk`` is an int, else a list in the same order.
    """
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        raise ValueError(f"logits must be a [N, C] tensor, got {getattr(logits, 'shape', type(logits).__name__)}")
    if not isinstance(targets, torch.Tensor) or targets.ndim != 1 or targets.shape[0] != logits.shape[0]:
        raise ValueError(f"targets must be a [N] tensor matching logits' N={logits.shape[0]}, "
                         f"got {getattr(targets, 'shape', type(targets).__name__)}")
    if logits.shape[0] == 0:
        raise ValueError("logits must contain at least one sample")
    single = isinstance(topk, int)
    ks = [topk] if single else list(topk)
    for k in ks:
        if not isinstance(k, int) or not 1 <= k <= logits.shape[1]:
            raise ValueError(f"each k in topk must be an int in [1, {logits.shape[1]}], got {k!r}")
    pred = logits.topk(max(ks), dim=1).indices
    hits = pred == targets.to(pred.device).unsqueeze(1)
    out = [hits[:, :k].any(dim=1).float().mean().item() for k in ks]
    return out[0] if single else out
