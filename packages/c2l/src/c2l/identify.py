"""Stage 1 of C2L: identify a valid instrumental variable among past states with a pseudo-variable test.

Follows the official code (``src/TCN_AIT_test.py::TCN_test`` and ``src/AIT_condition.py``; notes B3), which applies the
AIT criterion of Guo et al. (arXiv 2411.12184) to every candidate lag:

1. For a trajectory and a candidate lag ``j``: treatment ``X = s_{j:T}``, outcome ``Y = a_{j:T}``, candidate
   ``Z = s_{0:T-j}`` (so ``Z_t = s_{t-j}``).
2. Just-identified linear IV estimate per action dimension ``B̂ = (ZᵀX)⁻¹ZᵀY`` (pseudo-inverse fallback, no intercept)
   and pseudo-variable ``A_Z = Y − X B̂``. ``relation="poly2"`` (not in the official code, whose non-linear option
   needs R) uses features ``[X, X∘X]`` instrumented by ``[Z, Z∘Z]``.
3. HSIC test of ``A_Z ⟂ Z`` (:func:`c2l.hsic.hsic_test`, 40 RFF, 1000 null simulations); the candidate is declared
   valid iff ``p ≥ α`` with ``α = 10 / n`` (n = number of rows tested), the official threshold.
4. Lags are scanned from ``max_lag`` down to 1; the trajectory's lag is the smallest ``j`` such that ``j`` is
   accepted and ``j-1`` is rejected (validity "switches off" below ``j``). Lag 1 can never be chosen by this rule
   (lag 0 is not tested), exactly as in the official code. Trajectories without such a switch get a random lag in
   ``[1, max_lag + 1]`` (the official ``random.randint(1, 21)``) in :attr:`IVIdentification.per_trajectory_lags`,
   but only trajectories with a switch vote, as in ``TCN_test``.
5. Majority vote over trajectories; ties go to the larger lag. No switch anywhere → the random lag.

``identification_accuracy(lags, k)`` is the paper's accuracy: the fraction of per-trajectory lags ``≥ k−1``
(the official ``acc_calculate(data, pace=k-2)`` counts ``lag > k-2``).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from .data import as_trajectories
from .hsic import hsic_test

__all__ = ["IVIdentification", "linear_iv_pseudo_variable", "iv_candidate_test", "identify_iv",
           "identification_accuracy"]

logger = logging.getLogger(__name__)


def _features(x: np.ndarray, relation: str) -> np.ndarray:
    if relation == "linear":
        return x
    if relation == "poly2":
        return np.concatenate([x, x * x], axis=1)
    raise ValueError(f"relation must be 'linear' or 'poly2', got {relation!r}")


def linear_iv_pseudo_variable(x: np.ndarray, y: np.ndarray, z: np.ndarray, relation: str = "linear",
                              center: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(A, B̂)``: the pseudo-variable ``A = y − φ(x) B̂`` with ``B̂ = (ψ(z)ᵀφ(x))⁻¹ ψ(z)ᵀ y``.

    ``x [n, ds]`` treatment, ``y [n, da]`` outcome, ``z [n, ds]`` candidate instrument (same dimension as ``x``:
    just-identified, as in the official code). ``φ = ψ = identity`` for ``relation="linear"``. ``center=True``
    (not in the official code) adds an intercept by centring ``φ(x)``, ``ψ(z)`` and ``y``; without it a non-zero mean
    of the states or of the noise biases ``B̂`` and leaks ``z`` into the pseudo-variable even for a valid instrument.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    z = np.asarray(z, dtype=np.float64)
    if y.ndim == 1:
        y = y[:, None]
    if x.ndim != 2 or z.ndim != 2:
        raise ValueError(f"x and z must be [n, d] arrays, got shapes {x.shape} and {z.shape}")
    if not (len(x) == len(y) == len(z)):
        raise ValueError(f"x, y, z must have the same number of rows, got {len(x)}, {len(y)}, {len(z)}")
    if x.shape[1] != z.shape[1]:
        raise ValueError("x and z must have the same dimension (just-identified IV), "
                         f"got {x.shape[1]} and {z.shape[1]}")
    fx, fz = _features(x, relation), _features(z, relation)
    if center:
        fx, fz, y = fx - fx.mean(0), fz - fz.mean(0), y - y.mean(0)
    ztx = fz.T @ fx
    zty = fz.T @ y
    try:
        beta = np.linalg.solve(ztx, zty)
        if not np.all(np.isfinite(beta)):
            raise np.linalg.LinAlgError("non-finite solution")
    except np.linalg.LinAlgError:
        beta = np.linalg.pinv(ztx) @ zty
    return y - fx @ beta, beta


@dataclass
class CandidateTest:
    trajectory: int
    lag: int
    statistic: float
    pvalue: float
    alpha: float
    valid: bool
    num_samples: int


def iv_candidate_test(obs: np.ndarray, acts: np.ndarray, lag: int, *, alpha: float | None = None,
                      relation: str = "linear", num_rff: int = 40, num_nullsims: int = 1000,
                      kernel_width: float | str = 1.0, seed=0, trajectory: int = 0,
                      null: str = "spectral", center: bool = False) -> CandidateTest:
    """Test whether ``s_{t-lag}`` is a valid instrument for the effect of ``s_t`` on ``a_t`` in one trajectory."""
    n = len(obs) - lag
    if n < 5:
        raise ValueError(f"trajectory of length {len(obs)} is too short to test lag {lag}")
    x, y, z = obs[lag:], acts[lag:], obs[: len(obs) - lag]
    a, _ = linear_iv_pseudo_variable(x, y, z, relation, center)
    thr = 10.0 / n if alpha is None else float(alpha)
    res = hsic_test(a, z, num_rff=num_rff, num_nullsims=num_nullsims, width=kernel_width, seed=seed, null=null,
                    min_shift=min(20, max(1, n // 5)))
    return CandidateTest(trajectory, lag, res.statistic, res.pvalue, thr, bool(res.pvalue >= thr), n)


@dataclass
class IVIdentification:
    """Result of :func:`identify_iv`. ``lag`` is the chosen instrument lag (use ``s_{t-lag}``)."""

    lag: int
    per_trajectory_lags: list[int]
    switched: list[bool]
    votes: dict[int, int]
    tests: list[CandidateTest] = field(default_factory=list)
    used_random_fallback: bool = False
    max_lag: int = 20

    def table(self) -> list[dict]:
        """Every candidate test as a row (trajectory, lag, statistic, p-value, alpha, valid)."""
        return [vars(t).copy() for t in self.tests]

    def pvalue_matrix(self) -> np.ndarray:
        """``[num_trajectories, max_lag]`` p-values (column ``j-1`` is lag ``j``; NaN where not tested)."""
        n_traj = len(self.per_trajectory_lags)
        out = np.full((n_traj, self.max_lag), np.nan)
        for t in self.tests:
            out[t.trajectory, t.lag - 1] = t.pvalue
        return out

    def to_dict(self) -> dict:
        return {"lag": self.lag, "per_trajectory_lags": self.per_trajectory_lags, "switched": self.switched,
                "votes": {str(k): v for k, v in self.votes.items()}, "used_random_fallback": self.used_random_fallback,
                "max_lag": self.max_lag, "tests": self.table()}


def identify_iv(dataset, *, max_lag: int = 20, alpha: float | None = None, relation: str = "linear",
                num_rff: int = 40, num_nullsims: int = 1000, kernel_width: float | str = 1.0, seed: int = 0,
                null: str = "spectral", center: bool = False, progress: bool = False) -> IVIdentification:
    """Stage 1 of C2L on ``dataset`` (a :class:`~c2l.data.TrajectoryDataset`, an ``.npz`` path or ``(obs, acts)``
    pairs): per-trajectory lag search over ``max_lag, …, 1`` with the pseudo-variable HSIC test, then majority vote.
    ``alpha=None`` uses the official ``10 / n``. ``null="spectral"`` is the official i.i.d. null of the HSIC test;
    ``null="shift"`` uses circular time shifts (see :func:`c2l.hsic.hsic_test`); ``center=True`` fits the IV with an
    intercept (see :func:`linear_iv_pseudo_variable`). Defaults reproduce the official code. See the module docstring.
    """
    from tqdm.auto import tqdm

    data = as_trajectories(dataset)
    if not isinstance(max_lag, int) or isinstance(max_lag, bool) or max_lag < 1:
        raise ValueError(f"max_lag must be an int >= 1, got {max_lag!r}")
    if alpha is not None and not (0 < alpha < 1):
        raise ValueError(f"alpha must be None (official 10/n) or in (0, 1), got {alpha!r}")
    _features(np.zeros((1, 1)), relation)  # validates relation early
    if null not in ("spectral", "shift"):
        raise ValueError(f"null must be 'spectral' (official) or 'shift', got {null!r}")
    usable = [i for i, t in enumerate(data) if len(t) - max_lag >= 10]
    if not usable:
        raise ValueError(f"no trajectory is long enough for max_lag={max_lag} (need length >= max_lag + 10; "
                         f"longest is {max(len(t) for t in data)})")
    rng = np.random.default_rng(seed)
    random_lag = int(rng.integers(1, max_lag + 2))
    per_traj, switched, tests, voters = [], [], [], []
    for i in tqdm(range(len(data)), desc="identify IV", disable=not progress):
        traj = data[i]
        if i not in usable:
            per_traj.append(random_lag)
            switched.append(False)
            continue
        valid = {}
        for lag in range(max_lag, 0, -1):
            res = iv_candidate_test(traj.obs, traj.acts, lag, alpha=alpha, relation=relation, num_rff=num_rff,
                                    num_nullsims=num_nullsims, kernel_width=kernel_width, seed=rng, trajectory=i,
                                    null=null, center=center)
            tests.append(res)
            valid[lag] = res.valid
        switches = [j for j in range(2, max_lag + 1) if valid[j] and not valid[j - 1]]
        if switches:
            lag_i = min(switches)
            voters.append(lag_i)
            switched.append(True)
        else:
            lag_i = random_lag
            switched.append(False)
        per_traj.append(lag_i)
    votes = Counter(voters)
    if votes:
        top = max(votes.values())
        lag = max(j for j, c in votes.items() if c == top)
        fallback = False
    else:
        lag, fallback = random_lag, True
        logger.warning("no trajectory showed a valid→invalid switch; using the random lag %d (official fallback)", lag)
    return IVIdentification(lag=lag, per_trajectory_lags=per_traj, switched=switched, votes=dict(votes),
                            tests=tests, used_random_fallback=fallback, max_lag=max_lag)


def identification_accuracy(lags, k: int) -> float:
    """Fraction of identified lags that give a valid instrument under a k-step confounder (``lag ≥ k−1``)."""
    lags = list(lags)
    if not lags:
        return 0.0
    return float(np.mean([lag >= max(k - 1, 1) for lag in lags]))
