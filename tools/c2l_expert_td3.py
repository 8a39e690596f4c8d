#!/usr/bin/env python3
"""Train a MuJoCo expert for c2l with TD3 in a wall-clock budget (GPU if present) and export it pickle-free.

Why this exists: the SB3 recipe (``python -m c2l.experts``) is Python-overhead bound — 40–60 TD3/SAC steps/s on one
CPU core here, about the same on a GPU — so the zoo's 1e6 steps are CPU hours. This is TD3 (Fujimoto et al. 2018)
written lean in PyTorch with the hyper-parameters of rl-baselines3-zoo ``hyperparams/td3.yml`` for HalfCheetah
(its v2 entry: ``train_freq`` = ``gradient_steps`` = 1000, batch 100, lr 1e-3, γ 0.99, τ 0.005, net 400×300,
Gaussian exploration noise σ 0.1, ``learning_starts`` 1e4, policy delay 2, target noise 0.2 clipped at 0.5,
buffer 1e6). With ``train_freq`` = 1000 the 1000 environment steps between updates are collected with a CPU copy of
the actor and the 1000 gradient steps run on the device with the replay buffer there, so the GPU never waits on the
simulator. Deviation: no ``TimeFeatureWrapper`` (the zoo appends the normalised time step to the observation; the
c2l experts act on the raw observation that the benchmarks record).

``--minutes`` stops training (the card records the steps run), evaluating every ``--eval-every`` steps over 5
deterministic episodes and keeping the best actor; the kept actor is evaluated over ``--eval-episodes`` episodes.
Writes ``<out>/<env>_TD3.safetensors`` + ``<out>/<env>_TD3.json`` (format of :func:`c2l.experts.export_actor`;
``make_expert(env, "file:<path>")``, or ship it as ``packages/c2l/src/c2l/experts_data/`` for ``"shipped"``).

GPU machine (no internet; cp312 wheels in ``.cache/c2l_whl``, listed in ``packages/c2l/docs/experts.md``)::

    PYTHONPATH=/tmp/c2l:packages/commons/src:packages/c2l/src python tools/c2l_expert_td3.py --env halfcheetah \\
        --minutes 6 --out $OUT
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
for _sub in ("packages/commons/src", "packages/c2l/src"):
    if str(REPO / _sub) not in sys.path:
        sys.path.insert(0, str(REPO / _sub))

import torch  # noqa: E402
from torch import nn  # noqa: E402

ZOO = {"halfcheetah": "9656 ± 970 (SB3 zoo TD3, HalfCheetah-v3, 1e6 steps)",
       "ant": "5813 ± 590 (SB3 zoo TD3, Ant-v3, 1e6 steps)"}


def mlp(sizes: list[int], out_act: nn.Module | None = None) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    if out_act is not None:
        layers.append(out_act)
    return nn.Sequential(*layers)


class NumpyActor:
    """CPU copy of the actor for data collection (tanh output scaled to the bounds, as SB3's TD3)."""

    def __init__(self, actor: nn.Sequential, low: np.ndarray, high: np.ndarray):
        self.layers = [(m.weight.detach().cpu().double().numpy(), m.bias.detach().cpu().double().numpy())
                       for m in actor if isinstance(m, nn.Linear)]
        self.low, self.high = low, high

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        x = np.asarray(obs, dtype=np.float64)
        for i, (w, b) in enumerate(self.layers):
            x = x @ w.T + b
            if i < len(self.layers) - 1:
                x = np.maximum(x, 0.0)
        return self.low + 0.5 * (np.tanh(x) + 1.0) * (self.high - self.low)


def evaluate(policy, env_name: str, episodes: int, seed: int) -> tuple[float, float]:
    from c2l import evaluate_return

    r = evaluate_return(policy, env_name, n_episodes=episodes, seed=seed)
    return r["mean"], r["std"]


def export(actor: nn.Sequential, low, high, path: Path, card: dict) -> Path:
    from safetensors.torch import save_file

    lin = [m for m in actor if isinstance(m, nn.Linear)]
    tensors = {}
    for i, m in enumerate(lin):
        tensors[f"l{i}.weight"] = m.weight.detach().cpu().float().contiguous()
        tensors[f"l{i}.bias"] = m.bias.detach().cpu().float().contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.safetensors")
    save_file(tensors, str(tmp))
    os.replace(tmp, path.with_suffix(".safetensors"))
    meta = {"format": "c2l-exported-actor/1", "algo": "TD3", "n_layers": len(lin), "activation": "relu",
            "output": "tanh_scale", "obs_dim": lin[0].in_features, "act_dim": lin[-1].out_features,
            "low": [float(x) for x in low], "high": [float(x) for x in high], **card}
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return path.with_suffix(".safetensors")


def train(args) -> dict:
    from c2l import make_env

    dev = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    env = make_env(args.env)
    ds, da = env.observation_space.shape[0], env.action_space.shape[0]
    low, high = env.action_space.low.astype(np.float64), env.action_space.high.astype(np.float64)
    actor = mlp([ds, *args.net, da], nn.Tanh()).to(dev)
    q1, q2 = mlp([ds + da, *args.net, 1]).to(dev), mlp([ds + da, *args.net, 1]).to(dev)
    actor_t, q1_t, q2_t = copy.deepcopy(actor), copy.deepcopy(q1), copy.deepcopy(q2)
    cuda = dev.type == "cuda"
    opt_kw = {"capturable": True, "foreach": True} if cuda else {}  # graph-safe Adam (step count on device)
    opt_a = torch.optim.Adam(actor.parameters(), lr=args.lr, **opt_kw)
    opt_q = torch.optim.Adam([*q1.parameters(), *q2.parameters()], lr=args.lr, **opt_kw)
    for prm in [*actor.parameters(), *q1.parameters(), *q2.parameters()]:
        prm.grad = torch.zeros_like(prm)  # static gradient buffers: zeroed in place, as a CUDA graph needs
    cap = min(args.buffer, args.max_steps)
    buf = {"o": torch.zeros(cap, ds, device=dev), "a": torch.zeros(cap, da, device=dev),
           "r": torch.zeros(cap, 1, device=dev), "o2": torch.zeros(cap, ds, device=dev),
           "d": torch.zeros(cap, 1, device=dev)}
    size_t = torch.zeros((), device=dev)  # filled rows, read on the device (a graph bakes in Python ints)
    src = [*actor.parameters(), *q1.parameters(), *q2.parameters()]
    tgt = [*actor_t.parameters(), *q1_t.parameters(), *q2_t.parameters()]

    def period() -> None:
        """``policy_delay`` critic updates, then one actor update and the Polyak step (TD3's delayed updates)."""
        for _ in range(args.policy_delay):
            idx = (torch.rand(args.batch, device=dev) * size_t).long()
            o, a, r, o2, d = (buf[k][idx] for k in ("o", "a", "r", "o2", "d"))
            with torch.no_grad():
                noise = (torch.randn_like(a) * args.target_noise).clamp(-args.noise_clip, args.noise_clip)
                a2 = (actor_t(o2) + noise).clamp(-1.0, 1.0)  # actions in the actor's [-1, 1] units
                x2 = torch.cat([o2, a2], 1)
                y = r + args.gamma * (1.0 - d) * torch.minimum(q1_t(x2), q2_t(x2))
            x = torch.cat([o, a], 1)
            loss_q = ((q1(x) - y) ** 2).mean() + ((q2(x) - y) ** 2).mean()
            opt_q.zero_grad(set_to_none=False)
            loss_q.backward()
            opt_q.step()
        loss_a = -q1(torch.cat([o, actor(o)], 1)).mean()  # same batch as the last critic update (as SB3)
        opt_a.zero_grad(set_to_none=False)
        loss_a.backward()
        opt_a.step()
        with torch.no_grad():
            torch._foreach_lerp_(tgt, src, args.tau)

    graph: list = []  # [CUDAGraph] once captured; [] = eager

    def capture() -> None:
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):  # warm-up (real updates) before capture, as torch.cuda.graphs requires
                    period()
            torch.cuda.current_stream().wait_stream(side)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                period()
            graph.append(g)
            print("CUDA graph captured for the update period", flush=True)
        except Exception as err:  # noqa: BLE001 - any capture failure falls back to eager updates
            print(f"CUDA graph capture failed ({type(err).__name__}: {err}); eager updates", flush=True)
            graph.append(None)

    def update(n_updates: int, size: int) -> None:
        size_t.fill_(float(size))
        if cuda and args.cuda_graph and not graph:
            capture()
        g = graph[0] if graph else None
        for _ in range(max(n_updates // args.policy_delay, 1)):
            g.replay() if g is not None else period()

    t0 = time.perf_counter()
    obs, _ = env.reset(seed=args.seed)
    n, size, ptr, best, best_state, curve, next_eval = 0, 0, 0, -np.inf, None, [], args.eval_every
    cpu_actor = None
    stop = False
    while n < args.max_steps and not stop:
        # collect train_freq steps with the current actor (uniform random before learning_starts)
        rows = []
        for _ in range(args.train_freq):
            if n < args.learning_starts or cpu_actor is None:
                a = rng.uniform(low, high)
            else:
                a = np.clip(cpu_actor(obs) + rng.normal(0.0, args.noise, da) * (high - low) / 2, low, high)
            obs2, r, term, trunc, _ = env.step(a.astype(np.float32))
            rows.append((obs, (a - (high + low) / 2) / ((high - low) / 2), r, obs2, float(term)))
            obs = obs2
            n += 1
            if term or trunc:
                obs, _ = env.reset()
        o, a, r, o2, d = (np.asarray(c, dtype=np.float32) for c in zip(*rows))
        k = len(rows)
        pos = (ptr + np.arange(k)) % cap
        pos_t = torch.as_tensor(pos, device=dev)
        for key, val in (("o", o), ("a", a), ("r", r[:, None]), ("o2", o2), ("d", d[:, None])):
            buf[key][pos_t] = torch.as_tensor(val, device=dev)
        ptr, size = (ptr + k) % cap, min(size + k, cap)
        if n >= args.learning_starts:
            update(args.gradient_steps, size)
            cpu_actor = NumpyActor(actor, low, high)
        if n >= next_eval and cpu_actor is not None:
            ret, _ = evaluate(cpu_actor, args.env, 5, 70_000 + args.seed)
            curve.append([n, ret, time.perf_counter() - t0])
            print(f"step {n:8d}  {time.perf_counter() - t0:7.1f}s  eval return {ret:9.1f}", flush=True)
            if ret > best:
                best, best_state = ret, copy.deepcopy(actor.state_dict())
            next_eval += args.eval_every
        stop = time.perf_counter() - t0 > args.minutes * 60
    train_s = time.perf_counter() - t0
    last, _ = evaluate(NumpyActor(actor, low, high), args.env, 5, 70_000 + args.seed)
    curve.append([n, last, train_s])
    kept = n
    if best_state is not None and best > last:
        actor.load_state_dict(best_state)
        kept = max(s for s, r, _ in curve[:-1] if r == best)
    mean, std = evaluate(NumpyActor(actor, low, high), args.env, args.eval_episodes, 50_000 + args.seed)
    card = {"env": args.env, "steps_run": n, "kept_weights_of_step": kept, "seed": args.seed,
            "train_seconds": train_s, "device": str(dev) + (f" ({torch.cuda.get_device_name(dev)})"
                                                            if dev.type == "cuda" else ""),
            "recipe": "TD3 (lean PyTorch, tools/c2l_expert_td3.py) with rl-baselines3-zoo hyperparams/td3.yml "
                      "HalfCheetah settings", "hyper_parameters": {k: v for k, v in vars(args).items()
                                                                   if k not in ("out", "env")},
            "deviation": "no TimeFeatureWrapper (raw observations)", "zoo_reference_return": ZOO.get(args.env),
            "eval_episodes": args.eval_episodes, "return_mean": mean, "return_std": std, "eval_curve": curve,
            "command": "python tools/c2l_expert_td3.py " + " ".join(sys.argv[1:])}
    path = export(actor, low, high, args.out / f"{args.env}_TD3", card)
    print(json.dumps({k: v for k, v in card.items() if k != "eval_curve"}, indent=2))
    print(f"wrote {path}")
    return card


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", default="halfcheetah", choices=["halfcheetah", "ant", "pendulum"])
    p.add_argument("--minutes", type=float, default=6.0)
    p.add_argument("--max-steps", type=int, default=1_000_000)
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--net", type=int, nargs="*", default=[400, 300])
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--gamma", type=float, default=0.99)
    p.add_argument("--tau", type=float, default=0.005)
    p.add_argument("--noise", type=float, default=0.1)
    p.add_argument("--target-noise", type=float, default=0.2)
    p.add_argument("--noise-clip", type=float, default=0.5)
    p.add_argument("--policy-delay", type=int, default=2)
    p.add_argument("--buffer", type=int, default=1_000_000)
    p.add_argument("--learning-starts", type=int, default=10_000)
    p.add_argument("--train-freq", type=int, default=1000)
    p.add_argument("--gradient-steps", type=int, default=1000)
    p.add_argument("--eval-every", type=int, default=50_000)
    p.add_argument("--eval-episodes", type=int, default=20)
    p.add_argument("--threads", type=int, default=4, help="torch CPU threads")
    p.add_argument("--no-cuda-graph", dest="cuda_graph", action="store_false",
                   help="eager updates on CUDA (default: one CUDA graph per delayed-update period)")
    p.add_argument("--out", type=Path, default=REPO / "runs" / "c2l" / "experts")
    args = p.parse_args(argv)
    if args.minutes <= 0 or args.max_steps < 1 or args.train_freq < 1:
        p.error("--minutes, --max-steps and --train-freq must be positive")
    torch.set_num_threads(args.threads)
    train(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
