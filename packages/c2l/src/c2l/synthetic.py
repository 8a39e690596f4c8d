"""Small synthetic structural models with a known valid instrument (for tests, the smoke run and quick benches).

``LinearSystemEnv`` is a gymnasium environment ``s_{t+1} = A s_t + B a_t + g(s_t) + w_t`` (``g = 0`` for the linear
model, ``g(s) = 0.15 sin(2 s)`` for the nonlinear one) with an exact ``reset_to(obs)`` (the observation is the full
state), so the simulator-based C2L learner runs on it in seconds. Its expert is ``π_E(s) = −K s`` (linear) or
``π_E(s) = 1.5 tanh(−K s / 1.5)`` (nonlinear). With a k-step confounder the valid instruments are
``s_{t-j}, j ≥ k−1`` (notes B2).

Stage-1 identification needs non-Gaussianity or nonlinearity (for a jointly Gaussian linear model the linear IV
residual is uncorrelated with — hence independent of — every candidate by construction; AIT paper, notes B3), so the
tests use heavy-tailed (Student-t) noise or the nonlinear model.
"""

from __future__ import annotations

import numpy as np

__all__ = ["LinearSystemEnv", "linear_expert"]

_A = np.array([[0.98, 0.20], [-0.05, 0.95]])
_B = np.array([[0.0], [1.0]])
_K = np.array([[0.3, 0.7]])


def _gym():
    try:
        import gymnasium
    except ImportError as err:  # pragma: no cover - gymnasium is a declared dependency
        raise ImportError("c2l environments need gymnasium: pip install gymnasium") from err
    return gymnasium


class LinearSystemEnv(_gym().Env):
    """2-D stable linear (or mildly nonlinear) system with a 1-D action; reward ``−(‖s‖² + 0.1 a²)``."""

    metadata = {"render_modes": []}

    def __init__(self, nonlinear: bool = False, horizon: int = 200, process_noise: float = 0.1):
        gym = _gym()
        if not isinstance(horizon, int) or horizon < 2:
            raise ValueError(f"horizon must be an int >= 2, got {horizon!r}")
        if process_noise < 0:
            raise ValueError(f"process_noise must be >= 0, got {process_noise!r}")
        self.nonlinear = bool(nonlinear)
        self.horizon = horizon
        self.process_noise = float(process_noise)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float64)
        self.action_space = gym.spaces.Box(-20.0, 20.0, shape=(1,), dtype=np.float64)
        self.state = np.zeros(2)
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.state = self.np_random.normal(0.0, 1.0, size=2)
        self.t = 0
        return self.state.copy(), {}

    def reset_to(self, obs: np.ndarray) -> None:
        """Put the system in the state ``obs`` (exact: the observation is the state)."""
        self.state = np.asarray(obs, dtype=np.float64).reshape(2).copy()
        self.t = 0

    def step(self, action):
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(1), self.action_space.low, self.action_space.high)
        s = self.state
        reward = -float(s @ s + 0.1 * a @ a)
        nxt = _A @ s + _B @ a + self.process_noise * self.np_random.normal(size=2)
        if self.nonlinear:
            nxt = nxt + 0.15 * np.sin(2.0 * s)
        self.state = nxt
        self.t += 1
        truncated = self.t >= self.horizon
        return nxt.copy(), reward, False, truncated, {}


def linear_expert(nonlinear: bool = False):
    """The expert of :class:`LinearSystemEnv`: ``−K s`` or ``1.5 tanh(−K s / 1.5)``, on ``[ds]`` or ``[n, ds]``."""

    def expert(obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float64)
        out = -(obs @ _K.T) if obs.ndim > 1 else -(_K @ obs)
        return 1.5 * np.tanh(out / 1.5) if nonlinear else out

    return expert
