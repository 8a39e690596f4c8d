"""The confounding model of C2L: a hidden noise process that affects the expert's actions over k time steps.

Two forms are provided (paper §3 / notes B2):

* ``kind="additive"`` (default) — the k-step temporally-correlated-noise model (k-TCN) that generalises Swamy et al.
  (ICML 2022): ``a_t = π_E(s_t) + σ · Σ_{i<k} c_i u_{t-i}`` with ``u`` i.i.d. and hidden. Because ``s_{t-j}`` only
  depends on noise up to ``u_{t-j-1}``, the past state ``s_{t-j}`` is a valid instrument iff ``j ≥ k-1``.
  Swamy's LunarLander setting is ``k=2, weights=(0.1, 8), σ=0.5``. IV regression is consistent under this model.
* ``kind="multiplicative"`` — what the official C2L code actually generates (``noisy_rollout`` with ``TCN=True``):
  inside a window of ``window`` steps (default 100) that starts at a random index in ``[0, window_start_max)``,
  ``a_t ← scale · a_t · Π_{i<k} (σ u_{t-i})`` (LunarLander: ``scale=0.1, σ=5, window=100``); outside the window the
  action is clean. As in the official code the noise history starts at zero, so the first ``k-1`` actions of the
  window are exactly 0 (notes B7). This model is not additive, so IV learners only estimate E[a|z] there.

The noise draw ``u`` is a scalar shared by every action dimension, as in both official codes (``np.random.normal()``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

__all__ = ["ConfoundingConfig", "ConfoundingNoise", "DISTRIBUTIONS"]

DISTRIBUTIONS = ("normal", "uniform", "exponential", "gamma", "beta", "laplace", "lognormal", "t")


def _draw(rng: np.random.Generator, distribution: str) -> float:
    """One raw draw of the distributions of the official robustness study (before multiplying by σ)."""
    if distribution == "normal":
        return float(rng.normal())
    if distribution == "uniform":
        return float(rng.uniform(0.0, 1.0))
    if distribution == "exponential":
        return float(rng.exponential(1.5))
    if distribution == "gamma":
        return float(rng.gamma(0.5, 0.1))
    if distribution == "beta":
        return float(rng.beta(5.0, 1.0))
    if distribution == "laplace":
        return float(rng.laplace(4.0, 2.0))
    if distribution == "lognormal":
        return float(rng.lognormal(0.0, 1.0))
    if distribution == "t":
        return float(rng.standard_t(2))
    raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")


@dataclass
class ConfoundingConfig:
    """Parameters of the hidden confounding noise (see the module docstring).

    ``k``: number of consecutive actions one noise draw affects (``k=1`` means no temporal correlation, so BC is
    unbiased; the nearest valid instrument is ``s_{t-(k-1)}``, i.e. lag ``max(k-1, 1)``).
    ``weights``: additive coefficients ``c_0..c_{k-1}`` on ``u_t..u_{t-k+1}`` (default all ones).
    ``sigma = 0`` turns confounding off.
    ``window``: length of the noisy window, which starts at a random step in ``[0, window_start_max)``; ``"auto"``
    (default) is the official 100 steps for ``kind="multiplicative"`` and no window (every step noisy) for the
    additive model; ``None`` makes every step noisy (an explicit choice, not the official multiplicative setting).
    """

    k: int = 3
    sigma: float = 1.0
    kind: str = "additive"
    weights: tuple[float, ...] | None = None
    distribution: str = "normal"
    window: int | None | str = "auto"
    window_start_max: int = 100
    scale: float = 0.1
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.k, int) or isinstance(self.k, bool) or self.k < 1:
            raise ValueError(f"k must be an int >= 1 (number of time steps a noise draw affects), got {self.k!r}")
        if not isinstance(self.sigma, (int, float)) or self.sigma < 0:
            raise ValueError(f"sigma must be a number >= 0, got {self.sigma!r}")
        if self.kind not in ("additive", "multiplicative"):
            raise ValueError(f"kind must be 'additive' or 'multiplicative', got {self.kind!r}")
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {self.distribution!r}")
        if self.weights is not None:
            self.weights = tuple(float(w) for w in self.weights)
            if len(self.weights) != self.k:
                raise ValueError(f"weights must have k={self.k} entries (c_0..c_k-1), got {len(self.weights)}")
        if self.window == "auto":  # the official code's random 100-step window for the multiplicative model
            self.window = 100 if self.kind == "multiplicative" else None
        if self.window is not None and (not isinstance(self.window, int) or isinstance(self.window, bool)
                                        or self.window < 1):
            raise ValueError(f"window must be 'auto', None or an int >= 1, got {self.window!r}")
        if not isinstance(self.window_start_max, int) or self.window_start_max < 1:
            raise ValueError(f"window_start_max must be an int >= 1, got {self.window_start_max!r}")

    @property
    def valid_lag(self) -> int:
        """Smallest lag j for which s_{t-j} is a valid instrument under this model (``max(k-1, 1)``)."""
        return max(self.k - 1, 1)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["weights"] = list(self.weights) if self.weights is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ConfoundingConfig:
        d = dict(d)
        if d.get("weights") is not None:
            d["weights"] = tuple(d["weights"])
        return cls(**d)


class ConfoundingNoise:
    """Stateful per-episode noise process: ``reset()`` at the start of an episode, then ``apply(a)`` every step."""

    def __init__(self, config: ConfoundingConfig, rng: np.random.Generator | int | None = None):
        if not isinstance(config, ConfoundingConfig):
            raise TypeError(f"config must be a ConfoundingConfig, got {type(config).__name__}")
        self.config = config
        self.rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        self.reset()

    def reset(self) -> None:
        c = self.config
        self.t = 0
        # history of the last k raw draws u_{t-1}, ..., u_{t-k+1} (zeros before the episode / window starts)
        self.history = np.zeros(max(c.k - 1, 0))
        if c.kind == "multiplicative":
            self.window_start = int(self.rng.integers(0, c.window_start_max))
        else:
            self.window_start = 0

    def _in_window(self) -> bool:
        c = self.config
        if c.window is None:
            return True
        return self.window_start <= self.t < self.window_start + c.window

    def _term(self) -> float:
        """Draw u_t and return the noise term of this step (added or multiplied into the action)."""
        c = self.config
        u = c.sigma * _draw(self.rng, c.distribution)
        past = self.history
        if c.kind == "additive":
            w = c.weights if c.weights is not None else (1.0,) * c.k
            term = w[0] * u + float(np.dot(w[1:], past))
        else:
            term = c.scale * u * float(np.prod(past))
        if c.k > 1:
            self.history = np.concatenate([[u], past[:-1]])
        return term

    def apply(self, action: np.ndarray) -> np.ndarray:
        """Return the confounded action for this step and advance the process by one step."""
        action = np.asarray(action, dtype=np.float64)
        active = self.config.sigma != 0 and self._in_window()
        term = self._term() if active else None
        self.t += 1
        if term is None:
            return action
        return action + term if self.config.kind == "additive" else action * term
