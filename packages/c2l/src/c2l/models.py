"""Policy / adversary networks and the SB3-compatible policy wrapper.

The official code (Swamy et al. and C2L ``src/models.py::Model``) uses a deterministic MLP ``in → 256 → 256 → out``
with ReLU for the policy, the BC policy and the ResiduIL adversary ``f``; the same architecture is registered here as
``"mlp"``. :class:`MLPPolicy` adds optional input/output standardisation (fit on the demonstrations; off reproduces the
official network exactly) and the stable-baselines3 ``predict(obs, state, episode_start, deterministic)`` surface.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = ["MLPConfig", "MLP", "MLPPolicy", "create_model", "list_models"]


@dataclass
class MLPConfig:
    in_dim: int
    out_dim: int
    hidden: int = 256
    depth: int = 2

    def __post_init__(self) -> None:
        for name in ("in_dim", "out_dim", "hidden", "depth"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")


class MLP(nn.Module):
    """``in → hidden → … → out`` with ReLU (official: 2 hidden layers of 256)."""

    def __init__(self, config: MLPConfig):
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        d = config.in_dim
        for _ in range(config.depth):
            layers += [nn.Linear(d, config.hidden), nn.ReLU()]
            d = config.hidden
        layers.append(nn.Linear(d, config.out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MLPPolicy(nn.Module):
    """Deterministic policy ``a = π(s)``: an :class:`MLP` between fixed input/output affine normalisers.

    ``predict`` follows stable-baselines3 (``(actions, state)``; works on one observation or a batch), so it drops
    into SB3/``imitation`` evaluation helpers such as ``evaluate_policy``.
    """

    def __init__(self, config: MLPConfig):
        super().__init__()
        self.config = config
        self.mlp = MLP(config)
        self.register_buffer("obs_mean", torch.zeros(config.in_dim))
        self.register_buffer("obs_std", torch.ones(config.in_dim))
        self.register_buffer("act_mean", torch.zeros(config.out_dim))
        self.register_buffer("act_std", torch.ones(config.out_dim))

    def set_normalization(self, obs: np.ndarray | None = None, acts: np.ndarray | None = None) -> None:
        if obs is not None:
            self.obs_mean.copy_(torch.as_tensor(obs.mean(0), dtype=torch.float32))
            self.obs_std.copy_(torch.as_tensor(obs.std(0) + 1e-6, dtype=torch.float32))
        if acts is not None:
            self.act_mean.copy_(torch.as_tensor(acts.mean(0), dtype=torch.float32))
            self.act_std.copy_(torch.as_tensor(acts.std(0) + 1e-6, dtype=torch.float32))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.mlp((obs - self.obs_mean) / self.obs_std) * self.act_std + self.act_mean

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        """NumPy in, NumPy out; ``[ds]`` → ``[da]`` and ``[n, ds]`` → ``[n, da]``."""
        arr = np.asarray(obs, dtype=np.float32)
        single = arr.ndim == 1
        if arr.shape[-1] != self.config.in_dim:
            raise ValueError(f"obs must have last dimension {self.config.in_dim}, got shape {arr.shape}")
        device = self.obs_mean.device
        out = self(torch.as_tensor(arr.reshape(-1, self.config.in_dim), device=device)).cpu().numpy()
        return out[0].astype(np.float64) if single else out.astype(np.float64)

    def __call__(self, obs):  # torch tensors go through forward, numpy arrays through act
        if isinstance(obs, torch.Tensor):
            return super().__call__(obs)
        return self.act(obs)

    def predict(self, observation, state=None, episode_start=None, deterministic: bool = True):
        """stable-baselines3 signature: returns ``(actions, state)``; the policy is deterministic."""
        return self.act(observation), state

    def save(self, directory: str | os.PathLike, extra: dict | None = None, overwrite: bool = True) -> Path:
        from commons.io import save_checkpoint

        cfg = {"model": "mlp", "mlp": asdict(self.config), **(extra or {})}
        return save_checkpoint(directory, self.state_dict(), cfg, overwrite=overwrite)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> MLPPolicy:
        from commons.io import load_checkpoint

        state, cfg = load_checkpoint(directory)
        if "mlp" not in cfg:
            raise ValueError(f"{directory} is not a c2l policy checkpoint (config has no 'mlp' entry)")
        policy = cls(MLPConfig(**cfg["mlp"]))
        policy.load_state_dict(state)
        policy.eval()
        return policy


_REGISTRY = {"mlp": MLPPolicy}


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def create_model(name: str, **kwargs) -> MLPPolicy:
    """``create_model("mlp", in_dim=8, out_dim=2, hidden=256, depth=2)``."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; available: {list_models()}")
    return _REGISTRY[name](MLPConfig(**kwargs))
