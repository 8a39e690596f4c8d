"""Optimistic Adam (Daskalakis, Ilyas, Syrgkanis, Zeng, *Training GANs with Optimism*, ICLR 2018).

Used by ResiduIL / C2L* for both players of the min-max game with ``betas=(0, 0.01)`` (Swamy et al. and C2L code).
Update, with ``d_t = m̂_t / (sqrt(v̂_t) + eps)`` the ordinary Adam direction::

    θ_{t+1} = θ_t − lr · (2 d_t − d_{t−1})

i.e. take a double step along the current direction and undo the previous one (the "optimistic" extrapolation).
Weight decay is an L2 term added to the gradient, applied only to parameter groups that ask for it (the official
``add_weight_decay`` exempts biases and other 1-D parameters; :func:`split_weight_decay` does the same).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim import Optimizer

__all__ = ["OAdam", "split_weight_decay"]


class OAdam(Optimizer):
    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.0, 0.01), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        if lr < 0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"betas must lie in [0, 1), got {betas}")
        if eps < 0 or weight_decay < 0:
            raise ValueError(f"eps and weight_decay must be >= 0, got {eps}, {weight_decay}")
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if group["weight_decay"]:
                    grad = grad.add(p, alpha=group["weight_decay"])
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["m"] = torch.zeros_like(p)
                    state["v"] = torch.zeros_like(p)
                    state["prev"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"]
                state["m"].mul_(b1).add_(grad, alpha=1 - b1)
                state["v"].mul_(b2).addcmul_(grad, grad, value=1 - b2)
                m_hat = state["m"] / (1 - b1**t)
                v_hat = state["v"] / (1 - b2**t)
                direction = m_hat / (v_hat.sqrt() + group["eps"])
                p.add_(2.0 * direction - state["prev"], alpha=-group["lr"])
                state["prev"] = direction
        return loss


def split_weight_decay(module: nn.Module, weight_decay: float) -> list[dict]:
    """Parameter groups: weight decay on matrices, none on biases / 1-D parameters."""
    decay, no_decay = [], []
    for p in module.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
