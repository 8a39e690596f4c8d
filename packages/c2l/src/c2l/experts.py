"""Expert recipe: stable-baselines3 with the RL Baselines3 Zoo hyper-parameters, a wall-clock budget, evaluation like
the zoo's, and export to a small pickle-free file (safetensors weights + JSON card).

``python -m c2l.experts --env halfcheetah --algo TD3 --max-minutes 60 --out runs/c2l/experts`` trains the expert,
evaluates it every ``--eval-every`` steps over a few deterministic episodes, keeps the best weights, evaluates those
over ``--eval-episodes`` episodes at the end and writes

* ``<env>_<ALGO>_<steps>_seed<s>.zip`` — the SB3 model (the cache name ``sb3-train:<ALGO>:<steps>`` looks up);
* ``<env>_<ALGO>.safetensors`` + ``<env>_<ALGO>.json`` — the deterministic actor only (a few hundred KB), loadable
  without SB3 and without unpickling: ``make_expert(env, "file:<path>.safetensors")`` (:class:`ExportedActor`).
  The JSON card holds the recipe, steps run, wall time, mean ± std return and the zoo's reference return.

Recipes (``RECIPES``; DLR-RM/rl-baselines3-zoo ``hyperparams/*.yml``, reference returns from its ``benchmark.md``):

* MuJoCo TD3 (zoo MuJoCo defaults: ``learning_starts`` 1e4, Gaussian action noise σ 0.1, lr 1e-3, batch 256, 1e6
  steps). **Deviation:** 256×256 networks instead of the zoo's 400×300, 1.6× cheaper per step on a CPU core; the
  zoo budget is 1e6 steps, ``--max-minutes`` stops earlier and the card records the steps actually run.
* MuJoCo SAC (zoo: ``learning_starts`` 1e4 on SB3 defaults, 1e6 steps) — the zoo's best HalfCheetah SAC return, but
  ≈ 1.5× slower per step than TD3 on CPU.
* LunarLander PPO: the official C2L/Swamy recipe (``MlpPolicy`` with ``net_arch=[256, 256]``, 5e5 steps) on
  gymnasium's ``LunarLander-v3(continuous=True)`` (Swamy used a custom 6-D Box2D copy).
* Pendulum SAC (zoo: lr 1e-3, 2e4 steps) — minutes; used by the tests.

A ``.zip`` goes through SB3, which unpickles parts of the file: load only experts you trained or trust. The exported
``.safetensors`` actor has no such risk.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["RECIPES", "Recipe", "ZOO", "train_expert", "export_actor", "ExportedActor", "shipped_expert_path", "main"]


@dataclass(frozen=True)
class Recipe:
    steps: int
    kwargs: dict = field(default_factory=dict)
    zoo_return: str | None = None  # the zoo's benchmark.md figure "mean ± std (env id)" for this algorithm
    source: str = "rl-baselines3-zoo"
    deviation: str = ""


RECIPES: dict[tuple[str, str], Recipe] = {
    ("halfcheetah", "TD3"): Recipe(1_000_000, {"learning_starts": 10_000, "learning_rate": 1e-3, "batch_size": 256,
                                               "action_noise_std": 0.1, "net_arch": [256, 256]},
                                   "9656 ± 970 (HalfCheetah-v3)", "rl-baselines3-zoo hyperparams/td3.yml (MuJoCo)",
                                   "net_arch [256, 256] instead of the zoo's [400, 300]"),
    ("ant", "TD3"): Recipe(1_000_000, {"learning_starts": 10_000, "learning_rate": 1e-3, "batch_size": 256,
                                       "action_noise_std": 0.1, "net_arch": [256, 256]},
                           "5813 ± 590 (Ant-v3)", "rl-baselines3-zoo hyperparams/td3.yml (MuJoCo)",
                           "net_arch [256, 256] instead of the zoo's [400, 300]"),
    ("halfcheetah", "SAC"): Recipe(1_000_000, {"learning_starts": 10_000}, "9535 ± 100 (HalfCheetah-v3)",
                                   "rl-baselines3-zoo hyperparams/sac.yml (MuJoCo)"),
    ("ant", "SAC"): Recipe(1_000_000, {"learning_starts": 10_000}, "4616 ± 1354 (Ant-v3)",
                           "rl-baselines3-zoo hyperparams/sac.yml (MuJoCo)"),
    ("pendulum", "SAC"): Recipe(20_000, {"learning_rate": 1e-3}, "-157 ± 89 (Pendulum-v1)",
                                "rl-baselines3-zoo hyperparams/sac.yml"),
    ("pendulum", "TD3"): Recipe(20_000, {"learning_starts": 1_000, "action_noise_std": 0.1}, None,
                                "rl-baselines3-zoo hyperparams/td3.yml"),
    ("lunarlander", "PPO"): Recipe(500_000, {"net_arch": [256, 256]},
                                   "271 ± 32 (LunarLanderContinuous-v2, zoo PPO: 1e6 steps, its own hyper-parameters)",
                                   "C2L / gkswamy98/causal_il expert (PPO MlpPolicy [256, 256], 5e5 steps)",
                                   "gymnasium LunarLander-v3 (8-D obs) instead of Swamy's custom 6-D Box2D copy"),
}
# backwards-compatible view: env -> (algorithm, steps, kwargs, zoo return) of the SAC recipe ``sb3-train:`` uses
ZOO: dict[str, tuple[str, int, dict, str]] = {
    env: (algo, r.steps, dict(r.kwargs), r.zoo_return or "") for (env, algo), r in RECIPES.items() if algo == "SAC"}

_PKG_EXPERTS = Path(__file__).resolve().parent / "experts_data"


def shipped_expert_path(env_name: str) -> Path | None:
    """The exported expert shipped with the package for ``env_name`` (``None`` if none is shipped)."""
    for p in sorted(_PKG_EXPERTS.glob(f"{env_name}_*.safetensors")):
        return p
    return None


def zoo_kwargs(env_name: str, algo: str) -> dict:
    """The recipe's keyword arguments for ``algo`` on ``env_name`` (empty when there is none for that pair)."""
    r = RECIPES.get((env_name, algo))
    return dict(r.kwargs) if r is not None else {}


def _sb3_kwargs(recipe_kwargs: dict, action_dim: int, steps: int) -> dict:
    """Recipe keywords -> SB3 constructor keywords (action noise object, policy_kwargs, capped learning_starts)."""
    kw = dict(recipe_kwargs)
    if "action_noise_std" in kw:
        from stable_baselines3.common.noise import NormalActionNoise

        std = kw.pop("action_noise_std")
        kw["action_noise"] = NormalActionNoise(np.zeros(action_dim), std * np.ones(action_dim))
    if "net_arch" in kw:
        kw["policy_kwargs"] = {"net_arch": kw.pop("net_arch")}
    if "learning_starts" in kw:
        kw["learning_starts"] = min(kw["learning_starts"], max(steps // 10, 1))
    return kw


# ---------------------------------------------------------------------------------------------- exported actor
def _linears(seq) -> list:
    import torch

    return [m for m in seq if isinstance(m, torch.nn.Linear)]


def export_actor(model, path: str | os.PathLike, card: dict | None = None) -> Path:
    """Write the deterministic actor of an SB3 TD3/SAC/PPO/DDPG ``model`` as ``<path>.safetensors`` + ``<path>.json``.

    The policy is ``out = W_L act(… act(W_1 obs + b_1) …) + b_L`` with ``act`` = ReLU (TD3/SAC/DDPG) or the PPO
    policy's activation, then ``tanh`` and rescaling to the action bounds (TD3/SAC/DDPG, SB3's ``unscale_action``) or
    clipping to them (PPO's deterministic mean). Observation normalisation (VecNormalize) is not supported."""
    import torch
    from safetensors.torch import save_file

    algo = type(model).__name__
    pol = model.policy
    if algo in ("TD3", "DDPG"):
        layers, act, out = _linears(pol.actor.mu), "relu", "tanh_scale"
    elif algo == "SAC":
        layers, act, out = _linears(pol.actor.latent_pi) + [pol.actor.mu], "relu", "tanh_scale"
        if getattr(pol.actor, "use_sde", False):
            raise ValueError("export of gSDE SAC actors is not supported")
    elif algo == "PPO":
        net = pol.mlp_extractor.policy_net
        acts = {type(m).__name__ for m in net if not isinstance(m, torch.nn.Linear)}
        if acts - {"Tanh", "ReLU"} or len(acts) > 1:
            raise ValueError(f"unsupported PPO activation(s) {sorted(acts)}")
        layers, act, out = _linears(net) + [pol.action_net], (acts.pop().lower() if acts else "tanh"), "clip"
    else:
        raise ValueError(f"export supports TD3, DDPG, SAC and PPO models, not {algo}")
    space = model.action_space
    tensors = {}
    for i, lin in enumerate(layers):
        tensors[f"l{i}.weight"] = lin.weight.detach().cpu().float().contiguous()
        tensors[f"l{i}.bias"] = lin.bias.detach().cpu().float().contiguous()
    path = Path(path).with_suffix("")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.safetensors")
    save_file(tensors, str(tmp))
    os.replace(tmp, path.with_suffix(".safetensors"))
    meta = {"format": "c2l-exported-actor/1", "algo": algo, "n_layers": len(layers), "activation": act,
            "output": out, "obs_dim": int(layers[0].in_features), "act_dim": int(layers[-1].out_features),
            "low": np.asarray(space.low, dtype=float).tolist(), "high": np.asarray(space.high, dtype=float).tolist(),
            **(card or {})}
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return path.with_suffix(".safetensors")


class ExportedActor:
    """A deterministic expert ``obs -> action`` from :func:`export_actor`'s files (NumPy, float64; no SB3, no pickle).

    Accepts one observation ``[obs_dim]`` or a batch ``[n, obs_dim]``."""

    def __init__(self, path: str | os.PathLike):
        from safetensors.numpy import load_file

        path = Path(path)
        meta_path = path.with_suffix(".json")
        if not path.is_file() or not meta_path.is_file():
            raise FileNotFoundError(f"an exported expert needs {path.with_suffix('.safetensors')} and {meta_path}")
        self.meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if self.meta.get("format") != "c2l-exported-actor/1":
            raise ValueError(f"{meta_path} is not a c2l exported actor (format {self.meta.get('format')!r})")
        w = load_file(str(path))
        n = int(self.meta["n_layers"])
        self.layers = [(w[f"l{i}.weight"].astype(np.float64), w[f"l{i}.bias"].astype(np.float64)) for i in range(n)]
        self.low = np.asarray(self.meta["low"], dtype=np.float64)
        self.high = np.asarray(self.meta["high"], dtype=np.float64)
        self.obs_dim, self.act_dim = int(self.meta["obs_dim"]), int(self.meta["act_dim"])

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        x = np.asarray(obs, dtype=np.float64)
        single = x.ndim == 1
        x = np.atleast_2d(x)
        if x.shape[-1] != self.obs_dim:
            raise ValueError(f"expert expects observations of {self.obs_dim} dims, got shape {np.shape(obs)}")
        for i, (w, b) in enumerate(self.layers):
            x = x @ w.T + b
            if i < len(self.layers) - 1:
                x = np.maximum(x, 0.0) if self.meta["activation"] == "relu" else np.tanh(x)
        if self.meta["output"] == "tanh_scale":
            x = self.low + 0.5 * (np.tanh(x) + 1.0) * (self.high - self.low)
        else:
            x = np.clip(x, self.low, self.high)
        return x[0] if single else x


# ---------------------------------------------------------------------------------------------- training
def _budget_callback(max_seconds: float | None, eval_fn, eval_every: int, state: dict):
    from stable_baselines3.common.callbacks import BaseCallback

    class _Cb(BaseCallback):
        def _on_step(self) -> bool:
            n = self.model.num_timesteps
            if eval_every and n % eval_every == 0:
                ret = eval_fn(self.model)
                state["curve"].append([n, ret, time.perf_counter() - state["t0"]])
                if ret > state["best"]:
                    state["best"], state["best_step"] = ret, n
                    state["best_params"] = self.model.policy.state_dict()
                    state["best_params"] = {k: v.clone() for k, v in state["best_params"].items()}
            if max_seconds is not None and time.perf_counter() - state["t0"] > max_seconds:
                state["stopped_at"] = n
                return False
            return True

    return _Cb()


def train_expert(env_name: str, out_dir: str | os.PathLike, *, algo: str = "SAC", steps: int | None = None,
                 seed: int = 0, eval_episodes: int = 20, progress: bool = False, max_minutes: float | None = None,
                 eval_every: int = 0, eval_every_episodes: int = 5, export: bool = True) -> dict:
    """Train, save (zip, exported actor, JSON model card) and evaluate an expert; returns the model card.

    ``max_minutes`` stops training after that wall time; with ``eval_every`` > 0 the policy is evaluated every that
    many steps over ``eval_every_episodes`` deterministic episodes (seeds apart from the final evaluation's) and the
    best weights are kept (the zoo's ``EvalCallback`` practice)."""
    import torch

    from .envs import _sb3, _spec, evaluate_return, make_env

    _spec(env_name)
    sb3 = _sb3()
    if not hasattr(sb3, algo):
        raise ValueError(f"unknown SB3 algorithm {algo!r}")
    recipe = RECIPES.get((env_name, algo), Recipe(100_000, {}, None, "SB3 defaults"))
    steps = steps if steps is not None else recipe.steps
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if max_minutes is not None and not max_minutes > 0:
        raise ValueError(f"max_minutes must be > 0, got {max_minutes!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    env = make_env(env_name)
    kwargs = _sb3_kwargs(recipe.kwargs, env.action_space.shape[0], steps)
    model = getattr(sb3, algo)("MlpPolicy", env, seed=seed, device="cpu", verbose=0, **kwargs)

    def policy_of(m):
        return lambda obs: np.asarray(m.predict(np.asarray(obs, dtype=np.float32), deterministic=True)[0],
                                      dtype=np.float64)

    def quick_eval(m) -> float:
        return evaluate_return(policy_of(m), env_name, n_episodes=eval_every_episodes, seed=70_000 + seed)["mean"]

    state = {"t0": time.perf_counter(), "best": -np.inf, "best_step": None, "best_params": None, "curve": [],
             "stopped_at": None}
    cb = _budget_callback(max_minutes * 60 if max_minutes else None, quick_eval, eval_every, state)
    model.learn(total_timesteps=steps, progress_bar=progress, callback=cb)
    train_s = time.perf_counter() - state["t0"]
    steps_run = int(model.num_timesteps)
    if eval_every:  # compare the final weights with the best evaluated ones; keep the better
        last = quick_eval(model)
        state["curve"].append([steps_run, last, train_s])
        if state["best_params"] is not None and state["best"] > last:
            model.policy.load_state_dict(state["best_params"])
        else:
            state["best_step"] = steps_run
    stem = f"{env_name}_{algo}_{steps}_seed{seed}"
    tmp = out / f"{stem}.tmp.zip"
    model.save(str(tmp))
    os.replace(tmp, out / f"{stem}.zip")
    ret = evaluate_return(policy_of(model), env_name, n_episodes=eval_episodes, seed=50_000 + seed)
    card = {"env": env_name, "algo": algo, "steps_budget": steps, "steps_run": steps_run,
            "kept_weights_of_step": state["best_step"] if eval_every else steps_run, "seed": seed,
            "recipe": recipe.source, "recipe_kwargs": recipe.kwargs, "deviation": recipe.deviation,
            "max_minutes": max_minutes, "zoo_reference_return": recipe.zoo_return, "train_seconds": train_s,
            "eval_episodes": eval_episodes, "return_mean": ret["mean"], "return_std": ret["std"],
            "eval_curve": state["curve"], "torch_threads": torch.get_num_threads(),
            "command": (f"python -m c2l.experts --env {env_name} --algo {algo} --steps {steps} --seed {seed}"
                        + (f" --max-minutes {max_minutes:g}" if max_minutes else "")
                        + (f" --eval-every {eval_every}" if eval_every else "")),
            "use": f"make_expert('{env_name}', 'file:{out / (env_name + '_' + algo)}.safetensors')"}
    # steps/sb3_kwargs: older card keys, kept for the sb3-train cache users
    card["steps"], card["sb3_kwargs"] = steps, zoo_kwargs(env_name, algo)
    if export:
        export_actor(model, out / f"{env_name}_{algo}", card)
    (out / f"{stem}.json").write_text(json.dumps(card, indent=2), encoding="utf-8")
    return card


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m c2l.experts", description=__doc__.splitlines()[0])
    p.add_argument("--env", required=True, choices=sorted({e for e, _ in RECIPES}))
    p.add_argument("--algo", default="SAC")
    p.add_argument("--steps", type=int, default=None, help="default: the recipe's budget for the env")
    p.add_argument("--max-minutes", type=float, default=None, help="stop training after this wall time")
    p.add_argument("--eval-every", type=int, default=0, help="evaluate every N steps and keep the best weights")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-episodes", type=int, default=20)
    p.add_argument("--out", type=Path, default=Path("runs/c2l/experts"))
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    try:
        card = train_expert(args.env, args.out, algo=args.algo, steps=args.steps, seed=args.seed,
                            eval_episodes=args.eval_episodes, max_minutes=args.max_minutes,
                            eval_every=args.eval_every)
    except (ValueError, ImportError) as err:
        if args.verbose:
            raise
        print(f"c2l.experts: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in card.items() if k != "eval_curve"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
