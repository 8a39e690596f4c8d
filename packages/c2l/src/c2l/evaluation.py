"""Evaluation as in the paper: action error against the clean expert, and return in clean and noisy environments.

``action_error`` default ``reduction="traj_norm"`` is the official metric (``mse`` in the drivers): the mean over test
trajectories of the Frobenius norm ``‖π(S_traj) − π_E(S_traj)‖_F`` (not a per-step mean — it grows with episode
length). ``reduction="mse"`` gives the per-step mean squared error instead.
"""

from __future__ import annotations

import numpy as np

from .data import as_trajectories

__all__ = ["action_error", "as_policy_fn"]


def as_policy_fn(policy):
    """Accept an object with SB3 ``predict`` or a plain callable ``obs -> action``."""
    if hasattr(policy, "predict"):
        return lambda obs: np.asarray(policy.predict(obs, deterministic=True)[0], dtype=np.float64)
    if callable(policy):
        return lambda obs: np.asarray(policy(obs), dtype=np.float64)
    raise TypeError(f"policy must have predict(obs) or be callable, got {type(policy).__name__}")


def action_error(policy, dataset, reduction: str = "traj_norm") -> float:
    """Error of ``policy`` against the clean expert labels (``expert_acts``) of ``dataset``."""
    data = as_trajectories(dataset)
    if not data.has_expert_labels:
        raise ValueError("dataset has no expert_acts labels; generate it with c2l.generate_dataset")
    if reduction not in ("traj_norm", "mse"):
        raise ValueError(f"reduction must be 'traj_norm' (official) or 'mse', got {reduction!r}")
    fn = as_policy_fn(policy)
    if reduction == "traj_norm":
        return float(np.mean([np.linalg.norm(fn(t.obs) - t.expert_acts) for t in data]))
    err = np.concatenate([((fn(t.obs) - t.expert_acts) ** 2).sum(-1) for t in data])
    return float(np.mean(err))
