"""Environments, experts, resettable simulators and confounded rollouts.

Environments (``ENVIRONMENTS``):

* ``"lunarlander"`` — gymnasium ``LunarLander-v3(continuous=True)`` (8-D obs incl. leg contacts; the paper used
  Swamy's custom 6-D Box2D copy with fixed terrain and no engine dispersion, so numbers are not comparable). Needs
  ``box2d`` (+ ``pygame``, which gymnasium's box2d package imports). Default expert: gymnasium's built-in
  ``heuristic`` controller (a loaded expert, no training; returns ≈ 250–300).
* ``"halfcheetah"`` / ``"ant"`` — MuJoCo ``HalfCheetah-v5`` / ``Ant-v5`` (``mujoco`` package). HalfCheetah's
  default expert is the one shipped with the package (``"shipped"``: a TD3 actor exported as safetensors + JSON by
  ``tools/c2l_expert_td3.py``; a clear error names the recipe when none is shipped). Other experts: exported actors
  (``file:path.safetensors``), stable-baselines3 models (``sb3:path.zip``) or the SB3 zoo recipe trained and cached
  (``sb3-train:SAC:1000000``, :mod:`c2l.experts`; CPU hours).
* ``"pendulum"`` — classic-control ``Pendulum-v1`` (SB3 expert as above).
* ``"linear"`` / ``"nonlinear"`` — :class:`c2l.synthetic.LinearSystemEnv` with its analytic expert.

Simulator reset (needed by the simulator-based learners, notes B4): ``reset_to(env, obs)`` puts an environment in
the state an observation describes. Exact for the synthetic systems, Pendulum and MuJoCo (the excluded root
coordinates — x for HalfCheetah, x/y for Ant — do not affect the dynamics). For LunarLander the lander's pose and
velocities are set from the observation and the legs are moved rigidly with it (as the official ``set_state`` does for
the lander body); the terrain of the simulator episode is fixed by its seed and may differ from the data episode away
from the flat helipad — an approximation, as in the official code.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .confounding import ConfoundingConfig, ConfoundingNoise
from .data import Trajectory, TrajectoryDataset

__all__ = ["ENVIRONMENTS", "EnvSpec", "make_env", "reset_to", "make_expert", "Simulator", "rollout",
           "generate_dataset", "evaluate_return", "PolicyFn"]

logger = logging.getLogger(__name__)

PolicyFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class EnvSpec:
    name: str
    gym_id: str | None
    kwargs: dict
    default_expert: str
    max_steps: int
    requires: str


ENVIRONMENTS: dict[str, EnvSpec] = {
    "lunarlander": EnvSpec("lunarlander", "LunarLander-v3", {"continuous": True}, "heuristic", 1000, "box2d, pygame"),
    "halfcheetah": EnvSpec("halfcheetah", "HalfCheetah-v5", {}, "shipped", 1000, "mujoco"),
    "ant": EnvSpec("ant", "Ant-v5", {"include_cfrc_ext_in_observation": False}, "sb3-train:SAC:1000000", 1000,
                   "mujoco"),
    "pendulum": EnvSpec("pendulum", "Pendulum-v1", {}, "sb3-train:SAC:20000", 200, ""),
    "linear": EnvSpec("linear", None, {"nonlinear": False}, "analytic", 200, ""),
    "nonlinear": EnvSpec("nonlinear", None, {"nonlinear": True}, "analytic", 200, ""),
}


def _spec(name: str) -> EnvSpec:
    if name not in ENVIRONMENTS:
        raise ValueError(f"env must be one of {sorted(ENVIRONMENTS)}, got {name!r}")
    return ENVIRONMENTS[name]


def make_env(name: str, max_steps: int | None = None, **kwargs):
    """Create the gymnasium environment ``name`` (see module docstring); ``max_steps`` caps the episode length."""
    spec = _spec(name)
    if max_steps is not None and (not isinstance(max_steps, int) or max_steps < 2):
        raise ValueError(f"max_steps must be None or an int >= 2, got {max_steps!r}")
    if spec.gym_id is None:
        from .synthetic import LinearSystemEnv

        return LinearSystemEnv(horizon=max_steps or spec.max_steps, **{**spec.kwargs, **kwargs})
    import gymnasium as gym

    try:
        return gym.make(spec.gym_id, max_episode_steps=max_steps or spec.max_steps, **{**spec.kwargs, **kwargs})
    except (ImportError, gym.error.DependencyNotInstalled) as err:
        raise ImportError(f"environment {name!r} ({spec.gym_id}) needs {spec.requires}: "
                          f"pip install 'c2l[{'box2d' if name == 'lunarlander' else 'mujoco'}]' ({err})") from err


# ---------------------------------------------------------------------------------------------- simulator reset
def _ll_reset_to(env, obs: np.ndarray) -> None:
    from gymnasium.envs.box2d import lunar_lander as ll

    u = env.unwrapped
    if getattr(u, "lander", None) is None:
        u.reset(seed=0)
    if not hasattr(u, "_c2l_leg_frames"):
        u._c2l_leg_frames = [(tuple(u.lander.GetLocalPoint(leg.position)), leg.angle - u.lander.angle)
                             for leg in u.legs]
    half_w = ll.VIEWPORT_W / ll.SCALE / 2
    half_h = ll.VIEWPORT_H / ll.SCALE / 2
    x = obs[0] * half_w + half_w
    y = obs[1] * half_h + (u.helipad_y + ll.LEG_DOWN / ll.SCALE)
    vx = obs[2] / (half_w / ll.FPS)
    vy = obs[3] / (half_h / ll.FPS)
    angle = float(obs[4])
    omega = float(obs[5]) * ll.FPS / 20.0
    lander = u.lander
    lander.position = (float(x), float(y))
    lander.angle = angle
    lander.linearVelocity = (float(vx), float(vy))
    lander.angularVelocity = omega
    lander.awake = True
    for leg, (local, dangle), contact in zip(u.legs, u._c2l_leg_frames, obs[6:8]):
        leg.position = lander.GetWorldPoint(local)
        leg.angle = angle + dangle
        leg.linearVelocity = lander.GetLinearVelocityFromLocalPoint(local)
        leg.angularVelocity = omega
        leg.awake = True
        leg.ground_contact = bool(contact > 0.5)
    u.game_over = False


def _mujoco_reset_to(env, obs: np.ndarray) -> None:
    u = env.unwrapped
    nq, nv = u.model.nq, u.model.nv
    # observation = qpos[excluded:] followed by qvel (contact forces disabled for Ant); the excluded root x (and y)
    # coordinates do not affect the dynamics, so zero is as good as any value.
    n_pos = min(nq, len(obs) - nv)
    qpos = np.zeros(nq)
    qpos[nq - n_pos:] = obs[:n_pos]
    qvel = np.asarray(obs[n_pos:n_pos + nv], dtype=np.float64)
    u.set_state(qpos, qvel)


def _pendulum_reset_to(env, obs: np.ndarray) -> None:
    u = env.unwrapped
    if getattr(u, "state", None) is None:
        u.reset(seed=0)
    u.state = np.array([math.atan2(float(obs[1]), float(obs[0])), float(obs[2])])


def reset_to(env, name: str, obs: np.ndarray) -> None:
    """Put ``env`` (made by :func:`make_env` for ``name``) into the state described by ``obs``."""
    obs = np.asarray(obs, dtype=np.float64)
    if name in ("linear", "nonlinear"):
        env.reset_to(obs)
    elif name == "lunarlander":
        _ll_reset_to(env, obs)
    elif name in ("halfcheetah", "ant"):
        _mujoco_reset_to(env, obs)
    elif name == "pendulum":
        _pendulum_reset_to(env, obs)
    else:
        raise ValueError(f"reset_to is not available for env {name!r}")


class Simulator:
    """A resettable simulator for the simulator-based learners: ``step_from(obs, action) -> next_obs``."""

    def __init__(self, name: str, seed: int = 0):
        self.name = name
        self.env = make_env(name)
        self.env.reset(seed=seed)
        space = self.env.action_space
        self.low, self.high = np.asarray(space.low, dtype=np.float64), np.asarray(space.high, dtype=np.float64)

    def step_from(self, obs: np.ndarray, action: np.ndarray) -> tuple[np.ndarray, bool]:
        """Reset to ``obs``, apply ``action`` (clipped to the action space), return ``(next_obs, terminated)``."""
        reset_to(self.env, self.name, obs)
        return self.step(action)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, bool]:
        a = np.clip(np.asarray(action, dtype=np.float64), self.low, self.high)
        nxt, _, terminated, _, _ = self.env.step(a.astype(self.env.action_space.dtype))
        return np.asarray(nxt, dtype=np.float64), bool(terminated)


# ---------------------------------------------------------------------------------------------- experts
def _batched(fn: Callable[[np.ndarray], np.ndarray]) -> PolicyFn:
    def policy(obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float64)
        if obs.ndim == 1:
            return np.asarray(fn(obs), dtype=np.float64)
        return np.stack([np.asarray(fn(o), dtype=np.float64) for o in obs])

    return policy


def _sb3():
    try:
        import stable_baselines3 as sb3
    except ImportError as err:
        raise ImportError("SB3 experts need stable-baselines3: pip install 'c2l[sb3]'") from err
    return sb3


def _sb3_policy(model) -> PolicyFn:
    def policy(obs: np.ndarray) -> np.ndarray:
        act, _ = model.predict(np.asarray(obs, dtype=np.float32), deterministic=True)
        return np.asarray(act, dtype=np.float64)

    return policy


def make_expert(env_name: str, expert: str | None = None, *, seed: int = 0,
                cache_dir: str | os.PathLike = "runs/c2l/experts", progress: bool = False) -> PolicyFn:
    """Return a deterministic expert ``obs -> action`` (single ``[ds]`` or batch ``[n, ds]``).

    ``expert``: ``None`` (the env's default), ``"heuristic"`` (LunarLander's built-in controller), ``"analytic"``
    (synthetic systems), ``"shipped"`` (the exported expert packaged with c2l for ``env_name``),
    ``"file:<path.safetensors>"`` (an actor exported by :func:`c2l.experts.export_actor`; no SB3, no pickle),
    ``"sb3:<path.zip>"`` (load any SB3 model: SAC, TD3, PPO, A2C, DDPG tried in turn) or
    ``"sb3-train:<ALGO>:<steps>"`` (train with the RL Zoo hyper-parameters of :mod:`c2l.experts` and cache under
    ``cache_dir``; reused when present). A failed ``sb3:`` load names why each algorithm class refused the file.
    SB3 zips contain pickled objects: load only files you trust.
    """
    spec = _spec(env_name)
    expert = expert or spec.default_expert
    if expert == "analytic":
        if env_name not in ("linear", "nonlinear"):
            raise ValueError(f"the analytic expert exists only for the synthetic envs, not {env_name!r}")
        from .synthetic import linear_expert

        return linear_expert(nonlinear=env_name == "nonlinear")
    if expert == "heuristic":
        if env_name != "lunarlander":
            raise ValueError(f"the heuristic expert exists only for lunarlander, not {env_name!r}")
        from gymnasium.envs.box2d.lunar_lander import heuristic

        class _Cont:  # the heuristic only reads env.unwrapped.continuous
            continuous = True

        _Cont.unwrapped = _Cont
        return _batched(lambda s: np.clip(heuristic(_Cont, s), -1.0, 1.0))
    if expert.startswith("file:") or expert == "shipped":
        from .experts import ExportedActor, shipped_expert_path

        path = shipped_expert_path(env_name) if expert == "shipped" else Path(expert[5:])
        if path is None:
            raise FileNotFoundError(f"no expert for {env_name!r} is shipped with c2l; train one with "
                                    f"`python -m c2l.experts --env {env_name}` (SB3 zoo recipe) or "
                                    "`tools/c2l_expert_td3.py` and pass 'file:<its .safetensors>'")
        actor = ExportedActor(path)
        n_obs = make_env(env_name).observation_space.shape[0]
        if actor.obs_dim != n_obs:
            raise ValueError(f"expert {path} takes {actor.obs_dim}-D observations, env {env_name!r} has {n_obs}")
        return actor
    if expert.startswith("sb3:"):
        path = expert[4:]
        if not Path(path).is_file() and not Path(path + ".zip").is_file():
            raise FileNotFoundError(f"no SB3 model file at {path!r}")
        sb3 = _sb3()
        failures = []
        for algo in ("SAC", "TD3", "PPO", "A2C", "DDPG"):
            try:
                return _sb3_policy(getattr(sb3, algo).load(path, device="cpu"))
            except Exception as err:  # noqa: BLE001 - SB3 raises many types; each is reported below
                failures.append(f"{algo}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
                logger.debug("loading %s as %s failed", path, algo, exc_info=True)
        raise ValueError(f"could not load {path!r} as an SB3 model; tried " + "; ".join(failures))
    if expert.startswith("sb3-train:"):
        parts = expert.split(":")
        if len(parts) != 3 or not parts[2].isdigit():
            raise ValueError(f"expert must look like 'sb3-train:SAC:20000', got {expert!r}")
        algo, steps = parts[1], int(parts[2])
        sb3 = _sb3()
        if not hasattr(sb3, algo):
            raise ValueError(f"unknown SB3 algorithm {algo!r}")
        path = Path(cache_dir) / f"{env_name}_{algo}_{steps}_seed{seed}.zip"
        cls = getattr(sb3, algo)
        if path.is_file():
            logger.info("loading cached expert %s", path)
            return _sb3_policy(cls.load(str(path), device="cpu"))
        logger.info("training %s expert on %s for %d steps", algo, env_name, steps)
        from .experts import _sb3_kwargs, zoo_kwargs

        env = make_env(env_name)  # RL Baselines3 Zoo hyper-parameters (see c2l.experts)
        kwargs = _sb3_kwargs(zoo_kwargs(env_name, algo), env.action_space.shape[0], steps)
        model = cls("MlpPolicy", env, seed=seed, device="cpu", verbose=0, **kwargs)
        model.learn(total_timesteps=steps, progress_bar=False)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.zip")
        model.save(str(tmp))
        os.replace(tmp, path)
        return _sb3_policy(model)
    raise ValueError("expert must be 'heuristic', 'analytic', 'shipped', 'file:<path.safetensors>', 'sb3:<path>' or "
                     "'sb3-train:<ALGO>:<steps>', "
                     f"got {expert!r}")


# ---------------------------------------------------------------------------------------------- rollouts
def rollout(env, policy: PolicyFn, *, noise: ConfoundingNoise | None = None, expert: PolicyFn | None = None,
            seed: int | None = None) -> Trajectory:
    """One episode. The action taken is ``policy(s)`` passed through ``noise`` (if any) and then clipped to the action
    space; the *unclipped* confounded action is recorded (as the official code does). ``expert`` labels each state
    with the clean expert action (defaults to ``policy`` when there is no noise)."""
    obs, _ = env.reset(seed=seed)
    low = np.asarray(env.action_space.low, dtype=np.float64)
    high = np.asarray(env.action_space.high, dtype=np.float64)
    if noise is not None:
        noise.reset()
    states, acts, rews = [], [], []
    done = False
    while not done:
        s = np.asarray(obs, dtype=np.float64).reshape(-1)
        a = np.asarray(policy(s), dtype=np.float64).reshape(-1)
        if noise is not None:
            a = noise.apply(a)
        states.append(s)
        acts.append(a)
        obs, r, terminated, truncated, _ = env.step(np.clip(a, low, high).astype(env.action_space.dtype))
        rews.append(float(r))
        done = terminated or truncated
    states_arr = np.stack(states)
    labels = expert(states_arr) if expert is not None else None
    return Trajectory(states_arr, np.stack(acts), expert_acts=labels, rews=np.array(rews),
                      final_obs=np.asarray(obs, dtype=np.float64).reshape(-1))


def generate_dataset(env_name: str, n_trajectories: int, confounding: ConfoundingConfig | None = None, *,
                     expert: str | PolicyFn | None = None, seed: int = 0, max_steps: int | None = None,
                     expert_seed: int = 0, progress: bool = False) -> TrajectoryDataset:
    """Roll out the expert ``n_trajectories`` times with the confounding noise (``None`` = clean demonstrations);
    each state is labelled with the clean expert action. ``expert_seed`` selects a trained SB3 expert (one expert
    is shared by every data seed)."""
    from tqdm.auto import tqdm

    if not isinstance(n_trajectories, int) or n_trajectories < 1:
        raise ValueError(f"n_trajectories must be a positive int, got {n_trajectories!r}")
    if confounding is not None and not isinstance(confounding, ConfoundingConfig):
        raise TypeError(f"confounding must be a ConfoundingConfig or None, got {type(confounding).__name__}")
    expert_name = expert if isinstance(expert, str) or expert is None else getattr(expert, "__name__", "callable")
    pi_e = make_expert(env_name, expert, seed=expert_seed) if not callable(expert) else expert
    env = make_env(env_name, max_steps=max_steps)
    rng = np.random.default_rng(seed)
    noise = ConfoundingNoise(confounding, rng) if confounding is not None else None
    trajs = []
    for i in tqdm(range(n_trajectories), desc=f"rollouts {env_name}", disable=not progress):
        trajs.append(rollout(env, pi_e, noise=noise, expert=pi_e, seed=seed * 100_003 + i))
    env.close()
    meta = {"env": env_name, "expert": expert_name, "expert_seed": expert_seed, "seed": seed, "max_steps": max_steps,
            "confounding": confounding.to_dict() if confounding is not None else None}
    return TrajectoryDataset(trajs, meta)


def evaluate_return(policy: PolicyFn, env_name: str, *, n_episodes: int = 10,
                    confounding: ConfoundingConfig | None = None, seed: int = 10_000,
                    max_steps: int | None = None) -> dict:
    """Mean/std undiscounted return of ``policy`` over ``n_episodes``, in the clean env or with the confounding noise
    applied to the policy's actions (the paper's "noisy" evaluation)."""
    if not isinstance(n_episodes, int) or n_episodes < 1:
        raise ValueError(f"n_episodes must be a positive int, got {n_episodes!r}")
    env = make_env(env_name, max_steps=max_steps)
    noise = ConfoundingNoise(confounding, np.random.default_rng(seed)) if confounding is not None else None
    rets = [rollout(env, policy, noise=noise, seed=seed + i).ret for i in range(n_episodes)]
    env.close()
    return {"mean": float(np.mean(rets)), "std": float(np.std(rets)), "returns": rets}
