"""``c2l`` command line: ``generate`` → ``identify`` → ``train`` → ``eval``.

    c2l generate --env lunarlander --n 20 --k 3 --sigma 0.5 --out runs/c2l/train.npz
    c2l generate --env lunarlander --n 10 --sigma 0 --out runs/c2l/test_clean.npz
    c2l identify runs/c2l/train.npz --max-lag 10 --out runs/c2l/iv.json
    c2l train runs/c2l/train.npz --learner c2l_star --iv runs/c2l/iv.json --steps 3000 --out runs/c2l/c2l_star
    c2l eval runs/c2l/c2l_star --test runs/c2l/test_clean.npz --env lunarlander --episodes 10
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np


def _confounding(args):
    from .confounding import ConfoundingConfig

    if args.sigma == 0:
        return None
    window = "auto" if args.window is None else (None if args.window == 0 else args.window)
    return ConfoundingConfig(k=args.k, sigma=args.sigma, kind=args.kind, distribution=args.distribution,
                             weights=tuple(args.weights) if args.weights else None, window=window)


def cmd_generate(args) -> int:
    from .envs import generate_dataset

    ds = generate_dataset(args.env, args.n, _confounding(args), expert=args.expert, seed=args.seed,
                          max_steps=args.max_steps, progress=not args.no_progress)
    path = ds.save(args.out)
    rets = [t.ret for t in ds]
    print(f"wrote {path}: {len(ds)} trajectories, {ds.num_steps} steps, "
          f"return {np.mean(rets):.1f} ± {np.std(rets):.1f}")
    return 0


def _dataset(args):
    """The positional c2l ``.npz`` or ``--data FILE`` (an official ``.pkl``/``.npz``, read by ``load_official``)."""
    from .data import load_official

    if (args.dataset is None) == (args.data is None):
        raise ValueError("give the dataset either as the positional DATASET (.npz from `c2l generate`) or as "
                         "--data FILE (official .pkl/.npz), exactly one of them")
    return load_official(args.data if args.data is not None else args.dataset)


def cmd_identify(args) -> int:
    from commons.io import save_json

    from .identify import identify_iv

    res = identify_iv(_dataset(args), max_lag=args.max_lag, alpha=args.alpha, relation=args.relation,
                      num_nullsims=args.nullsims, kernel_width=args.kernel_width if args.kernel_width == "median"
                      else float(args.kernel_width), seed=args.seed, null=args.null, center=args.center,
                      progress=not args.no_progress)
    print(f"identified lag: {res.lag} (votes {res.votes}; random fallback: {res.used_random_fallback})")
    pm = res.pvalue_matrix()
    print("median p-value per lag: " + ", ".join(f"{j + 1}:{v:.3f}" for j, v in enumerate(np.nanmedian(pm, 0))))
    if args.out:
        save_json(args.out, res.to_dict())
        print(f"wrote {args.out}")
    return 0


def cmd_train(args) -> int:
    from commons.io import load_json

    from .learners import create_learner

    data = _dataset(args)
    kw: dict = {"steps": args.steps, "seed": args.seed}
    if args.lr is not None:
        kw["lr"] = args.lr
    if args.learner != "bc":
        kw["bc"] = {"steps": args.bc_steps or args.steps, "seed": args.seed}
        kw["init"] = args.init
    if args.learner in ("c2l", "c2l_star"):
        if args.hop is None and args.iv is None:
            raise ValueError("c2l/c2l_star need --hop N or --iv <identify output json>")
        kw["hop"] = args.hop if args.hop is not None else int(load_json(args.iv)["lag"])
    if args.learner in ("c2l", "doubil") and args.pairing:
        kw["pairing"] = args.pairing
    if args.sigma is not None:
        if args.learner not in ("c2l", "doubil"):
            raise ValueError("--sigma (exploration noise of the simulated BC actions) applies to c2l/doubil only")
        kw["sigma"] = args.sigma
    learner = create_learner(args.learner, **kw)
    ck = {"checkpoint": args.checkpoint, "checkpoint_every": args.checkpoint_every, "progress": not args.no_progress}
    if args.learner in ("c2l", "doubil"):
        env = args.env or data.metadata.get("env")
        if env is None:
            raise ValueError("simulator-based learners need --env (the dataset metadata has none)")
        learner.fit(data, env, **ck)
    else:
        learner.fit(data, **ck)
    learner.save(args.out)
    print(f"wrote policy to {args.out} (final loss {np.mean(learner.history[-100:]):.4g})")
    return 0


def cmd_eval(args) -> int:
    from commons.io import save_json

    from .confounding import ConfoundingConfig
    from .data import load_official
    from .envs import evaluate_return
    from .evaluation import action_error
    from .learners import load_policy

    policy = load_policy(args.policy)
    out: dict = {"policy": str(args.policy)}
    for test in args.test or []:
        data = load_official(test, expert_labels=True)  # official test sets hold pi_E(s) as their actions
        out[f"action_error[{Path(test).name}]"] = action_error(policy, data)
        out[f"action_mse[{Path(test).name}]"] = action_error(policy, data, "mse")
    if args.env:
        out["return_clean"] = evaluate_return(policy.act, args.env, n_episodes=args.episodes, seed=args.seed,
                                              max_steps=args.max_steps)
        if args.sigma > 0:
            cc = ConfoundingConfig(k=args.k, sigma=args.sigma, kind=args.kind, distribution=args.distribution)
            out["return_noisy"] = evaluate_return(policy.act, args.env, n_episodes=args.episodes, confounding=cc,
                                                  seed=args.seed, max_steps=args.max_steps)
    for k, v in out.items():
        print(f"{k}: {v['mean']:.2f} ± {v['std']:.2f}" if isinstance(v, dict) else f"{k}: {v}")
    if args.out:
        save_json(args.out, out)
    return 0


def _add_noise_args(p) -> None:
    p.add_argument("--k", type=int, default=3, help="time steps one hidden noise draw affects (k-TCN)")
    p.add_argument("--sigma", type=float, default=1.0, help="confounding strength (0 = clean)")
    p.add_argument("--kind", choices=["additive", "multiplicative"], default="additive")
    p.add_argument("--distribution", default="normal")


def build_parser() -> argparse.ArgumentParser:
    from .envs import ENVIRONMENTS
    from .learners import list_learners

    parser = argparse.ArgumentParser(prog="c2l", description="Confounded causal imitation learning (C2L).")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="roll out an expert with the hidden confounding noise; save an .npz")
    g.add_argument("--env", choices=sorted(ENVIRONMENTS), default="lunarlander")
    g.add_argument("--n", type=int, default=20, help="number of trajectories")
    g.add_argument("--expert", default=None, help="heuristic | analytic | sb3:<zip> | sb3-train:<ALGO>:<steps>")
    _add_noise_args(g)
    g.add_argument("--weights", type=float, nargs="*", default=None, help="additive weights c_0..c_{k-1}")
    g.add_argument("--window", type=int, default=None,
                   help="noisy window length (default: official 100 for multiplicative, none for additive; 0 = every "
                        "step noisy)")
    g.add_argument("--max-steps", type=int, default=None)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--out", type=Path, required=True)
    g.set_defaults(func=cmd_generate)

    i = sub.add_parser("identify", help="stage 1: find the instrument lag with the pseudo-variable HSIC test")
    i.add_argument("dataset", type=Path, nargs="?", default=None, help=".npz written by `c2l generate`")
    i.add_argument("--data", type=Path, default=None,
                   help="official trajectory file (YanaZeng/C2L .pkl or gkswamy98/causal_il .npz), read safely")
    i.add_argument("--max-lag", type=int, default=20)
    i.add_argument("--alpha", type=float, default=None, help="default: the official 10/n")
    i.add_argument("--relation", choices=["linear", "poly2"], default="linear")
    i.add_argument("--nullsims", type=int, default=1000)
    i.add_argument("--kernel-width", default="1.0", help="Gaussian kernel width or 'median' (official: 1.0)")
    i.add_argument("--null", choices=["spectral", "shift"], default="spectral",
                   help="HSIC null: 'spectral' (official, i.i.d. rows) or 'shift' (circular time shifts, calibrated "
                        "on autocorrelated trajectories)")
    i.add_argument("--center", action="store_true", help="fit the IV with an intercept (not in the official code)")
    i.add_argument("--seed", type=int, default=0)
    i.add_argument("--out", type=Path, default=None)
    i.set_defaults(func=cmd_identify)

    t = sub.add_parser("train", help="stage 2: train a policy (BC, DoubIL, ResiduIL, C2L, C2L*)")
    t.add_argument("dataset", type=Path, nargs="?", default=None, help=".npz written by `c2l generate`")
    t.add_argument("--data", type=Path, default=None,
                   help="official trajectory file (YanaZeng/C2L .pkl or gkswamy98/causal_il .npz), read safely")
    t.add_argument("--learner", choices=[n for n in list_learners() if n != "gail"], default="c2l_star",
                   help="(GAIL, an SB3 policy, is available from Python and the bench: c2l.create_learner('gail'))")
    t.add_argument("--hop", type=int, default=None)
    t.add_argument("--iv", type=Path, default=None, help="JSON written by `c2l identify --out`")
    t.add_argument("--env", default=None, help="simulator env for c2l/doubil (default: dataset metadata)")
    t.add_argument("--steps", type=int, default=50_000)
    t.add_argument("--bc-steps", type=int, default=None)
    t.add_argument("--lr", type=float, default=None)
    t.add_argument("--init", choices=["scratch", "bc"], default="scratch")
    t.add_argument("--pairing", choices=["rollout", "official"], default=None)
    t.add_argument("--sigma", type=float, default=None,
                   help="c2l/doubil: std of the noise on simulated BC actions (default 'auto': std of the BC "
                        "residuals; official: 5 for C2L on LunarLander, 4.05 for DoubIL)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--checkpoint", type=Path, default=None, help="resumable training-state file (rerun to resume)")
    t.add_argument("--checkpoint-every", type=int, default=1000)
    t.add_argument("--out", type=Path, required=True)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="action error vs the clean expert and return in clean/noisy envs")
    e.add_argument("policy", type=Path)
    e.add_argument("--test", type=Path, nargs="*", default=None,
                   help="labelled test sets: c2l .npz or official denoised/noisy_test .pkl/.npz")
    e.add_argument("--env", default=None)
    e.add_argument("--episodes", type=int, default=10)
    e.add_argument("--max-steps", type=int, default=None)
    _add_noise_args(e)
    e.set_defaults(sigma=0.0)
    e.add_argument("--seed", type=int, default=10_000)
    e.add_argument("--out", type=Path, default=None)
    e.set_defaults(func=cmd_eval)
    for p in (g, i, t, e):
        p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError, ImportError) as err:
        if args.verbose:
            raise
        print(f"c2l {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
