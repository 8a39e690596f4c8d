"""Stage 2 of C2L and the baselines: BC, the simulator-based double-sampling IV learner and the offline min-max one.

* :class:`BC` — behavioural cloning by MSE regression (Swamy/C2L code ``learners/bc.py``: deterministic MLP,
  Adam lr 3e-4, weight decay 1e-3, batch 128, 5e4 steps). Not ``imitation``'s Gaussian-NLL BC.
* :class:`DoubleSamplingIV` — DoubIL (Swamy et al. 2022) / **C2L** (simulator; official ``learners/ccil.py``).
  For the instrument ``z_t = s_{t−hop}`` it draws ``nsamp`` independent states ``s̃ ~ P(s_t | z_t)`` with the real
  simulator, reset at ``z_t`` and driven by ``π_BC(s) + σ ε``, and minimises the double-sampling loss
  ``mean[(mean_{half 1} π(s̃) − a_t)ᵀ_detached (mean_{half 2} π(s̃) − a_t)]`` — an unbiased gradient of
  ``E_z ‖E[π(s_t)|z] − E[a_t|z]‖²``.

  *One-step vs hop-step pairing (decision).* The official code simulates ONE step from ``s_{t−hop}`` but pairs the
  result with ``a_t`` (``dynamics(X[:-hop], U_BC)`` against ``U[hop:]``), so for ``hop > 1`` the sampled state is
  ``s̃_{t−hop+1}``, not a draw of ``s_t``. Default ``pairing="rollout"`` instead rolls the simulator ``hop`` steps
  forward from ``s_{t−hop}`` with ``π_BC + σ ε`` actions, which samples ``P(s_t | s_{t−hop})`` (up to the
  BC/noise model) as the conditional moment ``E[a_t − π(s_t) | s_{t−hop}] = 0`` requires. ``pairing="official"``
  reproduces the code. For ``hop = 1`` both are identical (= DoubIL).
  ``sigma="auto"`` sets σ per action dimension to the std of the BC residuals ``a − π_BC(s)`` (the code hard-codes σ to
  match its data generator: 4.05/5 LunarLander, 6 MuJoCo).
* :class:`ResidualGameIV` — ResiduIL (Swamy et al.) / **C2L*** (offline; official ``learners/ccil2.py``):
  ``min_π max_f E[2(a_t − π(s_t)) f(z_t) − f(z_t)²] + bc_reg·E‖a_t − π(s_t)‖²`` with adversary penalty
  ``f_norm_penalty·‖f(Z)‖_F``, both players updated alternately by optimistic Adam (betas (0, 0.01)).

Baselines with a *fixed* lag (the temporally-correlated-noise methods of Swamy et al. that C2L compares with) are the
same classes with ``hop=1``: ``create_learner("doubil")`` and ``create_learner("residuil")``.
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .data import TrajectoryDataset, as_trajectories
from .models import MLPConfig, MLPPolicy
from .oadam import OAdam, split_weight_decay

__all__ = ["BCConfig", "DoubleSamplingConfig", "ResidualGameConfig", "BC", "DoubleSamplingIV", "ResidualGameIV",
           "create_learner", "list_learners", "load_policy"]

logger = logging.getLogger(__name__)


def _check_pos_int(name: str, v) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ValueError(f"{name} must be a positive int, got {v!r}")


def _check_nonneg(name: str, v) -> None:
    if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
        raise ValueError(f"{name} must be a number >= 0, got {v!r}")


@dataclass
class BCConfig:
    """Behavioural cloning (official defaults: 5e4 steps, batch 128, Adam lr 3e-4, wd 1e-3, 256×256 MLP)."""

    steps: int = 50_000
    batch_size: int = 128
    lr: float = 3e-4
    weight_decay: float = 1e-3
    hidden: int = 256
    normalize_obs: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        for n in ("steps", "batch_size", "hidden"):
            _check_pos_int(n, getattr(self, n))
        for n in ("lr", "weight_decay"):
            _check_nonneg(n, getattr(self, n))


@dataclass
class DoubleSamplingConfig:
    """C2L (simulator) / DoubIL. Official C2L LunarLander: lr 3e-5, wd 1e-4, σ 5, nsamp 4, 5e4 steps, batch 128.

    Divergence guard (not in the official code): every ``guard_every`` steps the plug-in objective
    ``mean‖mean_j π(s̃_j) − a‖²`` is measured on a fixed subset of up to 1024 rows; if it is non-finite or exceeds
    ``divergence_factor × max(best so far, action variance)``, training stops with a warning and the weights with the
    best objective are kept (``diverged_at``, ``best_step`` on the learner). ``divergence_factor=0`` turns it off.
    """

    hop: int = 1
    steps: int = 50_000
    batch_size: int = 128
    lr: float = 3e-5
    weight_decay: float = 1e-4
    nsamp: int = 4
    sigma: float | str = "auto"
    pairing: str = "rollout"
    init: str = "scratch"
    hidden: int = 256
    normalize_obs: bool = True
    seed: int = 0
    divergence_factor: float = 10.0
    guard_every: int = 100
    bc: BCConfig = field(default_factory=BCConfig)

    def __post_init__(self) -> None:
        _check_nonneg("divergence_factor", self.divergence_factor)
        for n in ("hop", "steps", "batch_size", "hidden", "nsamp", "guard_every"):
            _check_pos_int(n, getattr(self, n))
        if self.nsamp < 2 or self.nsamp % 2:
            raise ValueError(f"nsamp must be an even int >= 2 (two independent halves), got {self.nsamp!r}")
        for n in ("lr", "weight_decay"):
            _check_nonneg(n, getattr(self, n))
        if self.sigma != "auto":
            _check_nonneg("sigma", self.sigma)
        if self.pairing not in ("rollout", "official"):
            raise ValueError("pairing must be 'rollout' (hop-step simulation) or 'official' (one step), "
                             f"got {self.pairing!r}")
        if self.init not in ("scratch", "bc"):
            raise ValueError(f"init must be 'scratch' (official) or 'bc', got {self.init!r}")
        if isinstance(self.bc, dict):
            self.bc = BCConfig(**self.bc)


@dataclass
class ResidualGameConfig:
    """C2L* (offline) / ResiduIL. Official C2L*: lr 9e-6, wd 1e-3, bc_reg 5e-2, f penalty 1e-3, OAdam (0, 0.01)."""

    hop: int = 1
    steps: int = 50_000
    batch_size: int = 128
    lr: float = 9e-6
    weight_decay: float = 1e-3
    bc_reg: float = 5e-2
    f_norm_penalty: float = 1e-3
    betas: tuple[float, float] = (0.0, 0.01)
    init: str = "scratch"
    hidden: int = 256
    normalize_obs: bool = True
    seed: int = 0
    bc: BCConfig = field(default_factory=BCConfig)

    def __post_init__(self) -> None:
        for n in ("hop", "steps", "batch_size", "hidden"):
            _check_pos_int(n, getattr(self, n))
        for n in ("lr", "weight_decay", "bc_reg", "f_norm_penalty"):
            _check_nonneg(n, getattr(self, n))
        self.betas = tuple(float(b) for b in self.betas)
        if self.init not in ("scratch", "bc"):
            raise ValueError(f"init must be 'scratch' (official) or 'bc', got {self.init!r}")
        if isinstance(self.bc, dict):
            self.bc = BCConfig(**self.bc)


def _new_policy(ds: int, da: int, hidden: int, obs: np.ndarray | None) -> MLPPolicy:
    pi = MLPPolicy(MLPConfig(in_dim=ds, out_dim=da, hidden=hidden))
    if obs is not None:
        pi.set_normalization(obs=obs)
    return pi


def _tensor(x: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x), dtype=torch.float32)


class _Checkpointer:
    """Atomic, resumable training state (modules, optimisers, step, NumPy RNG, loss history) in one file."""

    def __init__(self, path: str | os.PathLike | None, every: int, fingerprint: dict | None = None):
        _check_pos_int("checkpoint_every", every)
        self.path = Path(path) if path is not None else None
        self.every = every
        self.fingerprint = fingerprint or {}

    def _check_fingerprint(self, saved: dict | None) -> None:
        """Refuse a checkpoint written for another config or data set (``steps`` may differ: training extends)."""
        if saved is None:
            logger.warning("checkpoint %s has no config/data fingerprint (older c2l); resuming unchecked", self.path)
            return
        mine = self.fingerprint
        if saved.get("data") != mine.get("data"):
            raise ValueError(f"checkpoint {self.path} was written for a different data set (fingerprint "
                             f"{str(saved.get('data'))[:12]} vs {str(mine.get('data'))[:12]}); pass another "
                             "checkpoint path or delete it")
        old, new = saved.get("config", {}), mine.get("config", {})
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if diff:
            detail = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff[:4])
            raise ValueError(f"checkpoint {self.path} was written for a different config ({detail}); pass another "
                             "checkpoint path or delete it")

    def restore(self, learner, modules: dict, optimizers: dict, rng: np.random.Generator) -> int:
        if self.path is None:
            return 0
        from commons.io import load_training_state

        state = load_training_state(self.path)
        if state is None:
            return 0
        self._check_fingerprint(state.get("fingerprint"))
        for k, m in modules.items():
            m.load_state_dict(state["modules"][k])
        for k, o in optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        rng.bit_generator.state = state["rng"]
        learner.history = list(state["history"])
        if hasattr(learner, "adversary_history"):
            learner.adversary_history = list(state.get("adversary_history", []))
        logger.info("resumed %s from %s at step %d", type(learner).__name__, self.path, state["step"])
        learner.resumed_step = int(state["step"])
        return int(state["step"])

    def save(self, step: int, learner, modules: dict, optimizers: dict, rng: np.random.Generator,
             force: bool = False) -> None:
        if self.path is None or (not force and step % self.every):
            return
        from commons.io import save_training_state

        save_training_state(self.path, {
            "step": step, "rng": rng.bit_generator.state, "history": learner.history, "fingerprint": self.fingerprint,
            "adversary_history": getattr(learner, "adversary_history", []),
            "modules": {k: m.state_dict() for k, m in modules.items()},
            "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
        })


def _fingerprint(config, data: TrajectoryDataset, **extra) -> dict:
    """What a checkpoint must match to be resumed: the config without ``steps`` and a hash of the data's arrays."""
    import hashlib
    import json

    cfg = {k: v for k, v in asdict(config).items() if k != "steps"}
    if isinstance(cfg.get("bc"), dict):
        cfg["bc"] = {k: v for k, v in cfg["bc"].items() if k != "steps"}
    cfg = json.loads(json.dumps({**cfg, **extra}, default=str))
    h = hashlib.sha256()
    for t in data:
        h.update(np.asarray(t.obs.shape, np.int64).tobytes())
        h.update(np.ascontiguousarray(t.obs).tobytes())
        h.update(np.ascontiguousarray(t.acts).tobytes())
    return {"config": cfg, "data": h.hexdigest()}


def _sub_checkpoint(path, suffix: str):
    return None if path is None else Path(str(path) + suffix)


class _Learner:
    """Common surface: ``fit`` → self, ``policy``, ``predict`` (SB3), ``save``/``load``, ``history``."""

    name = "learner"

    def __init__(self, config):
        self.config = config
        self.policy: MLPPolicy | None = None
        self.history: list[float] = []
        self.resumed_step: int | None = None  # set when fit resumed from a checkpoint

    def predict(self, observation, state=None, episode_start=None, deterministic: bool = True):
        if self.policy is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit(dataset) first")
        return self.policy.predict(observation, state, episode_start, deterministic)

    def __call__(self, obs):
        return self.predict(obs)[0]

    def save(self, directory: str | os.PathLike) -> Path:
        if self.policy is None:
            raise RuntimeError("nothing to save: the learner is not fitted")
        return self.policy.save(directory, extra={"learner": self.name, "learner_config": asdict(self.config)})

    def _check_data(self, dataset, hop: int = 0) -> TrajectoryDataset:
        data = as_trajectories(dataset)
        if not any(len(t) > hop for t in data):
            raise ValueError(f"no trajectory is longer than hop={hop}; cannot build (state, action, instrument) rows")
        return data


class BC(_Learner):
    """Behavioural cloning: ``min_π E‖a − π(s)‖²`` on the (confounded) demonstrations."""

    name = "bc"

    def __init__(self, config: BCConfig | None = None, **kwargs):
        super().__init__(config or BCConfig(**kwargs))

    def fit(self, dataset, progress: bool = False, checkpoint: str | os.PathLike | None = None,
            checkpoint_every: int = 1000) -> BC:
        """Train; with ``checkpoint`` (a file path) the state is saved atomically every ``checkpoint_every`` steps and
        an interrupted run resumes from it (same data, config and seed)."""
        from tqdm.auto import tqdm

        cfg = self.config
        data = self._check_data(dataset)
        x = np.concatenate([t.obs for t in data])
        u = np.concatenate([t.acts for t in data])
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        pi = _new_policy(data.obs_dim, data.act_dim, cfg.hidden, x if cfg.normalize_obs else None)
        opt = torch.optim.Adam(pi.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        xt, ut = _tensor(x), _tensor(u)
        self.history = []
        ckpt = _Checkpointer(checkpoint, checkpoint_every, _fingerprint(cfg, data))
        mods, opts = {"pi": pi}, {"pi": opt}
        start = ckpt.restore(self, mods, opts, rng)
        for step in tqdm(range(start, cfg.steps), desc="BC", disable=not progress, initial=start, total=cfg.steps):
            idx = torch.as_tensor(rng.integers(0, len(x), cfg.batch_size))
            loss = torch.mean((pi(xt[idx]) - ut[idx]) ** 2)
            opt.zero_grad()
            loss.backward()
            opt.step()
            self.history.append(float(loss.detach()))
            ckpt.save(step + 1, self, mods, opts, rng)
        ckpt.save(cfg.steps, self, mods, opts, rng, force=True)
        pi.eval()
        self.policy = pi
        return self


def _sample_conditional_states(sim, pi_bc: MLPPolicy, z: np.ndarray, hop: int, sigma: np.ndarray, steps: int,
                               rng: np.random.Generator) -> np.ndarray:
    """Draw one state per row of ``z`` by simulating ``steps`` steps from it with ``π_BC + σ ε`` actions.

    A simulated episode that terminates inside the ``steps`` steps (e.g. a LunarLander crash) is stepped on from its
    terminal state (every step resets the simulator to the current observation); termination is not modelled."""
    s = z.copy()
    for _ in range(steps):
        a = pi_bc.act(s) + sigma * rng.standard_normal((len(s), len(sigma)))
        s = np.stack([sim.step_from(s[i], a[i])[0] for i in range(len(s))])
    return s


class _DivergenceGuard:
    """Watches C2L's plug-in objective on fixed rows; on a blow-up restores the best weights (see the config doc)."""

    def __init__(self, pi: MLPPolicy, x_iv: list, ut: torch.Tensor, cfg: DoubleSamplingConfig, start: int):
        self.pi, self.cfg = pi, cfg
        rows = np.random.default_rng(cfg.seed + 1).permutation(len(ut))[:1024]  # own RNG: training stream unchanged
        self.x = [x[rows] for x in x_iv]
        self.u = ut[rows]
        self.scale = float(torch.mean(torch.sum((self.u - self.u.mean(0)) ** 2, -1)))
        self.diverged_at: int | None = None
        self.best_step = start
        self.best = self._objective()
        self.best_state = copy.deepcopy(pi.state_dict())

    @torch.no_grad()
    def _objective(self) -> float:
        mean = sum(self.pi(x) for x in self.x) / len(self.x)
        return float(torch.mean(torch.sum((mean - self.u) ** 2, -1)))

    def check(self, step: int) -> bool:
        """True when training must stop (diverged; best weights restored)."""
        cfg = self.cfg
        if cfg.divergence_factor == 0 or step % cfg.guard_every:
            return False
        obj = self._objective()
        if np.isfinite(obj) and obj <= cfg.divergence_factor * max(self.best, self.scale):
            if obj < self.best:
                self.best, self.best_step, self.best_state = obj, step, copy.deepcopy(self.pi.state_dict())
            return False
        self.diverged_at = step
        self.pi.load_state_dict(self.best_state)
        logger.warning("C2L (hop=%d) diverged at step %d: IV objective %.3g vs best %.3g at step %d; stopped and "
                       "kept the best weights (lower lr, pairing='official' or a smaller sigma avoid this)",
                       cfg.hop, step, obj, self.best, self.best_step)
        return True


class DoubleSamplingIV(_Learner):
    """C2L with a simulator (``hop`` = identified lag) or DoubIL (``hop=1``); see the module docstring."""

    name = "double_sampling"

    def __init__(self, config: DoubleSamplingConfig | None = None, **kwargs):
        super().__init__(config or DoubleSamplingConfig(**kwargs))
        self.bc: BC | None = None
        self.sigma_used: np.ndarray | None = None
        self.diverged_at: int | None = None  # step at which the divergence guard stopped training
        self.best_step: int | None = None

    def fit(self, dataset, simulator, pi_bc: BC | None = None, progress: bool = False,
            checkpoint: str | os.PathLike | None = None, checkpoint_every: int = 1000) -> DoubleSamplingIV:
        """``simulator``: a :class:`c2l.envs.Simulator` or an environment name; ``pi_bc``: an already fitted BC;
        ``checkpoint``: resumable training-state file (see :meth:`BC.fit`)."""
        from tqdm.auto import tqdm

        from .envs import Simulator

        cfg = self.config
        data = self._check_data(dataset, cfg.hop)
        if isinstance(simulator, str):
            simulator = Simulator(simulator, seed=cfg.seed)
        if not hasattr(simulator, "step_from"):
            raise TypeError("simulator must be an env name or an object with step_from(obs, action) -> (obs, done)")
        space = getattr(getattr(simulator, "env", None), "observation_space", None)
        if space is not None and space.shape is not None and tuple(space.shape) != (data.obs_dim,):
            raise ValueError(f"simulator observations have shape {tuple(space.shape)} but the dataset's states have "
                             f"{data.obs_dim} dims (official LunarLander files come from a 6-D custom env)")
        self.bc = pi_bc if pi_bc is not None else BC(copy.deepcopy(cfg.bc)).fit(
            data, progress=progress, checkpoint=_sub_checkpoint(checkpoint, ".bc"), checkpoint_every=checkpoint_every)
        bc_pi = self.bc.policy
        x_all = np.concatenate([t.obs for t in data])
        u_all = np.concatenate([t.acts for t in data])
        if cfg.sigma == "auto":
            sigma = np.std(u_all - bc_pi.act(x_all), axis=0)
        else:
            sigma = np.full(data.act_dim, float(cfg.sigma))
        self.sigma_used = sigma
        _, u_iv, z = data.lagged_arrays(cfg.hop)
        rng = np.random.default_rng(cfg.seed)
        sim_steps = cfg.hop if cfg.pairing == "rollout" else 1
        samples = [_sample_conditional_states(simulator, bc_pi, z, cfg.hop, sigma, sim_steps, rng)
                   for _ in tqdm(range(cfg.nsamp), desc="simulate P(s|z)", disable=not progress)]
        torch.manual_seed(cfg.seed)
        if cfg.init == "bc":
            pi = copy.deepcopy(bc_pi)
        else:
            pi = _new_policy(data.obs_dim, data.act_dim, cfg.hidden, x_all if cfg.normalize_obs else None)
        pi.train()
        opt = torch.optim.Adam(pi.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        x_iv = [_tensor(s) for s in samples]
        ut = _tensor(u_iv)
        half = cfg.nsamp // 2
        self.history = []
        ckpt = _Checkpointer(checkpoint, checkpoint_every,
                             _fingerprint(cfg, data, simulator=getattr(simulator, "name", type(simulator).__name__)))
        mods, opts = {"pi": pi}, {"pi": opt}
        start = ckpt.restore(self, mods, opts, rng)
        guard = _DivergenceGuard(pi, x_iv, ut, cfg, start)
        for step in tqdm(range(start, cfg.steps), desc=f"DoubleSampling hop={cfg.hop}", disable=not progress,
                         initial=start, total=cfg.steps):
            idx = torch.as_tensor(rng.integers(0, len(ut), cfg.batch_size))
            order = rng.permutation(cfg.nsamp)
            with torch.no_grad():
                out1 = sum(pi(x_iv[j][idx]) for j in order[:half]) / half
            out2 = sum(pi(x_iv[j][idx]) for j in order[half:]) / half
            target = ut[idx]
            loss = torch.mean((out1 - target).detach() * (out2 - target))
            opt.zero_grad()
            loss.backward()
            opt.step()
            self.history.append(float(loss.detach()))
            if guard.check(step + 1):
                break
            ckpt.save(step + 1, self, mods, opts, rng)
        self.diverged_at, self.best_step = guard.diverged_at, guard.best_step
        ckpt.save(cfg.steps, self, mods, opts, rng, force=True)
        pi.eval()
        self.policy = pi
        return self


class ResidualGameIV(_Learner):
    """C2L* offline (``hop`` = identified lag) or ResiduIL (``hop=1``); see the module docstring."""

    name = "residual_game"

    def __init__(self, config: ResidualGameConfig | None = None, **kwargs):
        super().__init__(config or ResidualGameConfig(**kwargs))
        self.adversary: MLPPolicy | None = None
        self.adversary_history: list[float] = []

    def fit(self, dataset, pi_bc: BC | None = None, progress: bool = False,
            checkpoint: str | os.PathLike | None = None, checkpoint_every: int = 1000) -> ResidualGameIV:
        """Offline min-max training; ``checkpoint``: resumable training-state file (see :meth:`BC.fit`)."""
        from tqdm.auto import tqdm

        cfg = self.config
        data = self._check_data(dataset, cfg.hop)
        x, u, z = data.lagged_arrays(cfg.hop)
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        if cfg.init == "bc":
            bc = pi_bc if pi_bc is not None else BC(copy.deepcopy(cfg.bc)).fit(
                data, progress=progress, checkpoint=_sub_checkpoint(checkpoint, ".bc"),
                checkpoint_every=checkpoint_every)
            pi = copy.deepcopy(bc.policy)
        else:
            pi = _new_policy(data.obs_dim, data.act_dim, cfg.hidden, x if cfg.normalize_obs else None)
        f = _new_policy(data.obs_dim, data.act_dim, cfg.hidden, z if cfg.normalize_obs else None)
        pi.train()
        f.train()
        opt_pi = OAdam(split_weight_decay(pi, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas)
        opt_f = OAdam(split_weight_decay(f, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas)
        xt, ut, zt = _tensor(x), _tensor(u), _tensor(z)
        self.history, self.adversary_history = [], []
        ckpt = _Checkpointer(checkpoint, checkpoint_every, _fingerprint(cfg, data))
        mods, opts = {"pi": pi, "f": f}, {"pi": opt_pi, "f": opt_f}
        start = ckpt.restore(self, mods, opts, rng)
        for step in tqdm(range(start, cfg.steps), desc=f"ResidualGame hop={cfg.hop}", disable=not progress,
                         initial=start, total=cfg.steps):
            idx = torch.as_tensor(rng.integers(0, len(xt), cfg.batch_size))
            xb, ub, zb = xt[idx], ut[idx], zt[idx]
            # policy player
            resid = ub - pi(xb)
            with torch.no_grad():
                fz = f(zb)
            loss_pi = torch.mean(2.0 * resid * fz) + cfg.bc_reg * torch.mean(resid**2)
            opt_pi.zero_grad()
            loss_pi.backward()
            opt_pi.step()
            # adversary player
            with torch.no_grad():
                resid = ub - pi(xb)
            fz = f(zb)
            loss_f = -torch.mean(2.0 * resid * fz - fz * fz) + cfg.f_norm_penalty * torch.linalg.norm(fz)
            opt_f.zero_grad()
            loss_f.backward()
            opt_f.step()
            self.history.append(float(loss_pi.detach()))
            self.adversary_history.append(float(loss_f.detach()))
            ckpt.save(step + 1, self, mods, opts, rng)
        ckpt.save(cfg.steps, self, mods, opts, rng, force=True)
        pi.eval()
        f.eval()
        self.policy, self.adversary = pi, f
        return self


_LEARNERS = {
    "bc": ("BC", {}),
    "doubil": ("DoubleSamplingIV", {"hop": 1}),
    "residuil": ("ResidualGameIV", {"hop": 1}),
    "c2l": ("DoubleSamplingIV", {}),
    "c2l_star": ("ResidualGameIV", {}),
}
# optimiser defaults of the baselines in gkswamy98/causal_il (``learners/doubil.py``: Adam 3e-4, wd 1e-3;
# ``learners/residuil.py``: OAdam 5e-5, wd 1e-3); c2l/c2l_star keep the C2L code's (config class defaults)
_DEFAULTS = {
    "doubil": {"lr": 3e-4, "weight_decay": 1e-3},
    "residuil": {"lr": 5e-5, "weight_decay": 1e-3},
}


def list_learners() -> list[str]:
    return sorted([*_LEARNERS, "gail"])


def create_learner(name: str, **kwargs):
    """``create_learner("c2l", hop=2, steps=3000, lr=1e-4)``. ``doubil``/``residuil`` fix ``hop=1`` (Swamy et al.)
    and default to Swamy's optimiser settings (DoubIL Adam lr 3e-4, wd 1e-3; ResiduIL OAdam lr 5e-5, wd 1e-3);
    ``c2l``/``c2l_star`` need ``hop`` (the lag from :func:`c2l.identify_iv`) and default to the C2L code's (3e-5,
    wd 1e-4; 9e-6, wd 1e-3). Keyword arguments override every default. DoubIL's σ stays ``"auto"`` (the std of the
    BC residuals): Swamy's 4.05 is the std of his LunarLander noise ``0.1·u_t + 8·u_{t−1}``, ``u ~ N(0, 0.5²)``
    (≈ 4.0), i.e. the quantity ``"auto"`` estimates; pass ``sigma=4.05`` for the literal value."""
    if name == "gail":  # imitation's GAIL (optional extra, imported lazily)
        from .gail import GAIL

        return GAIL(**kwargs)
    if name not in _LEARNERS:
        raise ValueError(f"unknown learner {name!r}; available: {list_learners()}")
    cls_name, fixed = _LEARNERS[name]
    if name in ("doubil", "residuil") and kwargs.get("hop", 1) != 1:
        raise ValueError(f"{name} uses the fixed lag hop=1 (Swamy et al.); use 'c2l'/'c2l_star' for another lag")
    if name in ("c2l", "c2l_star") and "hop" not in kwargs:
        raise ValueError(f"{name} needs hop=<identified lag> (see c2l.identify_iv)")
    cls = {"BC": (BC, BCConfig), "DoubleSamplingIV": (DoubleSamplingIV, DoubleSamplingConfig),
           "ResidualGameIV": (ResidualGameIV, ResidualGameConfig)}[cls_name]
    learner = cls[0](cls[1](**{**_DEFAULTS.get(name, {}), **kwargs, **fixed}))
    learner.name = name
    return learner


def load_policy(directory: str | os.PathLike) -> MLPPolicy:
    """Load a policy saved by any learner's ``save`` (an :class:`~c2l.models.MLPPolicy`)."""
    return MLPPolicy.load(directory)
