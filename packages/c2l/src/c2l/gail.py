"""GAIL baseline (Ho & Ermon 2016) from the ``imitation`` library, as the C2L paper uses it — not re-implemented.

:class:`GAIL` wraps ``imitation.algorithms.adversarial.gail.GAIL`` with a stable-baselines3 PPO generator and
``imitation``'s ``BasicRewardNet`` discriminator (inputs normalised by ``RunningNorm``), with the settings of
``imitation``'s documented GAIL example (PPO batch 64, lr 4e-4, γ 0.95, 5 epochs, ent 0; demo batch 1024, replay
buffer 512, 8 discriminator updates per round). The demonstrations are the confounded ``(s_t, a_t)`` pairs turned
into ``imitation`` transitions (``next_obs`` from the trajectory, the last step's from ``final_obs`` when present);
actions are clipped to the action space, since that is what the environment executed. GAIL needs environment
interaction (it is an online method), so ``fit`` takes an environment name like the simulator-based learners.

Install: ``pip install 'c2l[gail]'``. ``imitation`` 1.0.1 (the latest release) pins ``gymnasium~=0.29`` and
``stable-baselines3~=2.2.1``, older than this package's environments (``LunarLander-v3``, MuJoCo ``-v5`` need
gymnasium ≥ 1.0); it runs with gymnasium 1.x / SB3 2.x when installed next to them with
``pip install --no-deps imitation`` plus ``tensorboard`` (tested here with gymnasium 1.4 and SB3 2.9). The import is
lazy: the rest of ``c2l`` never needs it, and a missing install raises one clear ``ImportError``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .data import as_trajectories

__all__ = ["GAILConfig", "GAIL"]


def _imitation():
    try:
        from imitation.algorithms.adversarial.gail import GAIL as _GAIL
        from imitation.data import types
        from imitation.rewards.reward_nets import BasicRewardNet
        from imitation.util.networks import RunningNorm
    except ImportError as err:
        raise ImportError(
            "the GAIL baseline needs the `imitation` library and stable-baselines3: pip install 'c2l[gail]' "
            "(imitation 1.0.1 pins gymnasium~=0.29; next to gymnasium 1.x use `pip install --no-deps imitation "
            f"tensorboard`) — {err}") from err
    return _GAIL, types, BasicRewardNet, RunningNorm


@dataclass
class GAILConfig:
    """``total_timesteps`` of generator (PPO) interaction; the rest as ``imitation``'s GAIL example."""

    total_timesteps: int = 200_000
    n_envs: int = 8
    demo_batch_size: int = 1024
    gen_replay_buffer_capacity: int = 512
    n_disc_updates_per_round: int = 8
    ppo_batch_size: int = 64
    ppo_lr: float = 4e-4
    ppo_gamma: float = 0.95
    ppo_n_epochs: int = 5
    ppo_n_steps: int = 2048
    max_steps: int | None = None
    seed: int = 0
    verbose: bool = False  # False: imitation's per-round statistics tables are not printed

    def __post_init__(self) -> None:
        for n in ("total_timesteps", "n_envs", "demo_batch_size", "gen_replay_buffer_capacity",
                  "n_disc_updates_per_round", "ppo_batch_size", "ppo_n_epochs", "ppo_n_steps"):
            v = getattr(self, n)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{n} must be a positive int, got {v!r}")
        if not self.ppo_lr > 0:
            raise ValueError(f"ppo_lr must be > 0, got {self.ppo_lr!r}")


class _SB3Policy:
    """The trained generator as ``act(obs)`` / SB3 ``predict`` (deterministic), like :class:`c2l.MLPPolicy`."""

    def __init__(self, model):
        self.model = model

    def act(self, obs: np.ndarray) -> np.ndarray:
        arr = np.asarray(obs, dtype=np.float32)
        out, _ = self.model.predict(arr, deterministic=True)
        return np.asarray(out, dtype=np.float64)

    def predict(self, observation, state=None, episode_start=None, deterministic: bool = True):
        return self.act(observation), state


class GAIL:
    """GAIL through ``imitation`` (see the module docstring): ``GAIL(total_timesteps=...).fit(data, "lunarlander")``."""

    name = "gail"

    def __init__(self, config: GAILConfig | None = None, **kwargs):
        self.config = config or GAILConfig(**kwargs)
        self.policy: _SB3Policy | None = None
        self.trainer = None

    def _transitions(self, data, space, types):
        obs, acts, nxt, dones = [], [], [], []
        for t in data:
            if t.final_obs is not None:
                o, a, n = t.obs, t.acts, np.concatenate([t.obs[1:], t.final_obs[None]])
            else:  # official files: no observation after the last action; drop that step
                o, a, n = t.obs[:-1], t.acts[:-1], t.obs[1:]
            if len(o) == 0:
                continue
            d = np.zeros(len(o), dtype=bool)
            d[-1] = True
            obs.append(o)
            acts.append(np.clip(a, space.low, space.high))
            nxt.append(n)
            dones.append(d)
        if not obs:
            raise ValueError("no usable transitions (every trajectory has one step and no final_obs)")
        cat = np.concatenate
        return types.Transitions(obs=cat(obs).astype(np.float32), acts=cat(acts).astype(np.float32),
                                 infos=np.array([{}] * sum(len(o) for o in obs)), next_obs=cat(nxt).astype(np.float32),
                                 dones=cat(dones))

    def fit(self, dataset, env: str, progress: bool = False) -> GAIL:
        """Train the PPO generator against the discriminator on ``env`` (a :data:`c2l.ENVIRONMENTS` name)."""
        from .envs import _spec, make_env

        cfg = self.config
        _spec(env)  # clear error for an unknown env before the heavy imports
        data = as_trajectories(dataset)
        gail_cls, types, reward_net_cls, running_norm = _imitation()
        from stable_baselines3 import PPO
        from stable_baselines3.common.vec_env import DummyVecEnv

        venv = DummyVecEnv([lambda: make_env(env, max_steps=cfg.max_steps) for _ in range(cfg.n_envs)])
        venv.seed(cfg.seed)
        if venv.observation_space.shape != (data.obs_dim,):
            raise ValueError(f"env {env!r} has observations of shape {venv.observation_space.shape}, the data "
                             f"{data.obs_dim} dims")
        demos = self._transitions(data, venv.action_space, types)
        gen = PPO("MlpPolicy", venv, batch_size=cfg.ppo_batch_size, ent_coef=0.0, learning_rate=cfg.ppo_lr,
                  gamma=cfg.ppo_gamma, n_epochs=cfg.ppo_n_epochs, n_steps=max(cfg.ppo_n_steps // cfg.n_envs, 8),
                  seed=cfg.seed, device="cpu", verbose=0)
        reward_net = reward_net_cls(venv.observation_space, venv.action_space, normalize_input_layer=running_norm)
        from imitation.util import logger as imit_logger

        quiet = {} if cfg.verbose else {"custom_logger": imit_logger.configure(format_strs=[])}
        self.trainer = gail_cls(**quiet, demonstrations=demos, demo_batch_size=min(cfg.demo_batch_size, len(demos)),
                                gen_replay_buffer_capacity=cfg.gen_replay_buffer_capacity,
                                n_disc_updates_per_round=cfg.n_disc_updates_per_round, venv=venv, gen_algo=gen,
                                reward_net=reward_net, allow_variable_horizon=True)
        self.trainer.train(cfg.total_timesteps)
        self.policy = _SB3Policy(gen)
        return self

    def predict(self, observation, state=None, episode_start=None, deterministic: bool = True):
        if self.policy is None:
            raise RuntimeError("GAIL is not fitted; call fit(dataset, env) first")
        return self.policy.predict(observation, state, episode_start, deterministic)

    def save(self, directory: str | os.PathLike):
        raise NotImplementedError("GAIL's policy is an SB3 PPO policy: save it with learner.policy.model.save(path) "
                                  "(SB3's zip format)")
