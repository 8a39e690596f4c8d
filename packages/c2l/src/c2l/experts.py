"""Expert recipe: stable-baselines3 SAC with the RL Baselines3 Zoo hyper-parameters, evaluated like the zoo.

``python -m c2l.experts --env halfcheetah --out runs/c2l/experts`` trains the expert ``make_expert`` uses for that
environment, evaluates it over ``--eval-episodes`` deterministic episodes and writes ``<env>_SAC_<steps>_seed<s>.zip``
(the cache name ``sb3-train:SAC:<steps>`` looks up) and a model card ``<env>_SAC_<steps>_seed<s>.json`` (recipe,
steps, seed, wall time, mean ± std return, the zoo's reference return). Hyper-parameters are DLR-RM/rl-baselines3-zoo
``hyperparams/sac.yml`` (MuJoCo: ``learning_starts=10000`` on SB3 defaults, 1e6 steps; Pendulum: ``lr=1e-3``,
2e4 steps); the zoo's ``benchmark.md`` reports SAC returns of 9535 ± 100 (HalfCheetah-v3), 4616 ± 1354 (Ant-v3) and
−157 ± 89 (Pendulum-v1). The -v5 MuJoCo tasks here have the same observation and reward structure as -v3.

Budget: 1e6 SAC steps are CPU hours (≈ 100–200 env+gradient steps/s per process; SAC does not parallelise over
cores); a 20k-step run, the old default, scores far below the zoo (−64 on HalfCheetah in this package's README).
``--steps`` trades quality for time; the model card records what was run. Loading a ``.zip`` goes through SB3, which
unpickles parts of the file: load only experts you trained or trust.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["ZOO", "train_expert", "main"]

# env -> (algorithm, steps, SB3 keyword arguments, zoo reference return "mean ± std" of that algorithm)
ZOO: dict[str, tuple[str, int, dict, str]] = {
    "halfcheetah": ("SAC", 1_000_000, {"learning_starts": 10_000}, "9535 ± 100 (HalfCheetah-v3)"),
    "ant": ("SAC", 1_000_000, {"learning_starts": 10_000}, "4616 ± 1354 (Ant-v3)"),
    "pendulum": ("SAC", 20_000, {"learning_rate": 1e-3}, "-157 ± 89 (Pendulum-v1)"),
}


def zoo_kwargs(env_name: str, algo: str) -> dict:
    """The zoo's keyword arguments for ``algo`` on ``env_name`` (empty when the zoo has none for that pair)."""
    spec = ZOO.get(env_name)
    return dict(spec[2]) if spec is not None and spec[0] == algo else {}


def train_expert(env_name: str, out_dir: str | os.PathLike, *, algo: str = "SAC", steps: int | None = None,
                 seed: int = 0, eval_episodes: int = 20, progress: bool = False) -> dict:
    """Train, save (zip + JSON model card) and evaluate an expert; returns the model card."""
    from .envs import _sb3, _spec, evaluate_return, make_env

    _spec(env_name)
    sb3 = _sb3()
    if not hasattr(sb3, algo):
        raise ValueError(f"unknown SB3 algorithm {algo!r}")
    zoo = ZOO.get(env_name)
    steps = steps if steps is not None else (zoo[1] if zoo else 100_000)
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{env_name}_{algo}_{steps}_seed{seed}"
    kwargs = zoo_kwargs(env_name, algo)
    if "learning_starts" in kwargs:
        kwargs["learning_starts"] = min(kwargs["learning_starts"], max(steps // 10, 1))
    t0 = time.perf_counter()
    model = getattr(sb3, algo)("MlpPolicy", make_env(env_name), seed=seed, device="cpu", verbose=0, **kwargs)
    model.learn(total_timesteps=steps, progress_bar=progress)
    train_s = time.perf_counter() - t0
    tmp = out / f"{stem}.tmp.zip"
    model.save(str(tmp))
    os.replace(tmp, out / f"{stem}.zip")

    def policy(obs):
        return np.asarray(model.predict(np.asarray(obs, dtype=np.float32), deterministic=True)[0], dtype=np.float64)

    ret = evaluate_return(policy, env_name, n_episodes=eval_episodes, seed=50_000 + seed)
    card = {"env": env_name, "algo": algo, "steps": steps, "seed": seed, "sb3_kwargs": kwargs,
            "recipe": "rl-baselines3-zoo hyperparams/sac.yml" if zoo_kwargs(env_name, algo) else "SB3 defaults",
            "zoo_reference_return": zoo[3] if zoo and zoo[0] == algo else None, "train_seconds": train_s,
            "eval_episodes": eval_episodes, "return_mean": ret["mean"], "return_std": ret["std"],
            "command": f"python -m c2l.experts --env {env_name} --algo {algo} --steps {steps} --seed {seed}",
            "use": f"make_expert('{env_name}', 'sb3:{stem}.zip') or sb3-train:{algo}:{steps} with cache_dir={out}"}
    (out / f"{stem}.json").write_text(json.dumps(card, indent=2), encoding="utf-8")
    return card


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m c2l.experts", description=__doc__.splitlines()[0])
    p.add_argument("--env", required=True, choices=sorted(ZOO))
    p.add_argument("--algo", default="SAC")
    p.add_argument("--steps", type=int, default=None, help="default: the zoo's budget for the env")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-episodes", type=int, default=20)
    p.add_argument("--out", type=Path, default=Path("runs/c2l/experts"))
    args = p.parse_args(argv)
    try:
        card = train_expert(args.env, args.out, algo=args.algo, steps=args.steps, seed=args.seed,
                            eval_episodes=args.eval_episodes)
    except (ValueError, ImportError) as err:
        print(f"c2l.experts: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(card, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
