#!/usr/bin/env python3
"""C2L benchmark in miniature: IV identification accuracy and policy quality across confounding strengths.

For each environment, confounding strength σ (k-step additive confounder, k = --k) and seed:
  1. generate confounded expert demonstrations (train), a clean and a noisy labelled test set;
  2. Stage 1: ``identify_iv`` → lag; accuracy = identified lag gives a valid IV (lag ≥ k−1, the paper's metric) and
     the stricter "exact" rate (lag == k−1);
  3. Stage 2: BC, DoubIL and ResiduIL (Swamy et al., fixed lag 1), C2L (simulator, identified lag) and C2L* (offline,
     identified lag); action MSE vs the clean expert on clean/noisy test states; return in the clean and noisy env.
Writes results.json, results.md and plots (stage 2 vs σ; stage-1 rejection rate per candidate lag) under --out.
``--quick`` is the CPU-minutes setting; ``--identify-only`` runs stage 1 alone; ``--kind multiplicative`` uses the
official code's windowed multiplicative confounder instead of the k-step additive one.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
# this file is named like the package: drop its own folder from sys.path so `import c2l` finds the library
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
for sub in ("packages/commons/src", "packages/c2l/src"):
    if str(REPO / sub) not in sys.path:
        sys.path.insert(0, str(REPO / sub))

from c2l import (  # noqa: E402
    BC,
    ConfoundingConfig,
    action_error,
    create_learner,
    evaluate_return,
    generate_dataset,
    identification_accuracy,
    identify_iv,
)
from commons.io import save_json  # noqa: E402
from commons.reporting import markdown_table  # noqa: E402

METHODS = ["bc", "doubil", "residuil", "c2l", "c2l_star", "c2l_oracle", "c2l_star_oracle"]
LABELS = {"bc": "BC", "doubil": "DoubIL (lag 1)", "residuil": "ResiduIL (lag 1)", "c2l": "C2L (sim, identified lag)",
          "c2l_star": "C2L* (offline, identified lag)", "c2l_oracle": "C2L (sim, true lag k−1)",
          "c2l_star_oracle": "C2L* (offline, true lag k−1)"}


def confounding(args, sigma: float) -> ConfoundingConfig:
    """k-step additive noise (default) or the official code's multiplicative windowed model (window of
    ``--window`` steps starting in [0, 100), scale 0.1)."""
    if args.kind == "multiplicative":
        return ConfoundingConfig(k=args.k, sigma=sigma, kind="multiplicative", window=args.window,
                                 window_start_max=100)
    return ConfoundingConfig(k=args.k, sigma=sigma)


def reject_rate_per_lag(ident, n_traj: int, max_lag: int) -> list[float]:
    """Fraction of tested trajectories whose lag-j candidate was rejected (p < α = 10/n of that very test)."""
    rej = np.full((n_traj, max_lag), np.nan)
    for t in ident.tests:
        rej[t.trajectory, t.lag - 1] = 0.0 if t.valid else 1.0
    return np.nanmean(rej, 0).tolist() if ident.tests else []


def run_cell(env: str, sigma: float, seed: int, args) -> dict:
    cc = confounding(args, sigma)
    ms = args.max_steps
    t0 = time.perf_counter()
    ex = args.expert
    train = generate_dataset(env, args.n_traj, cc, seed=seed, max_steps=ms, expert=ex)
    ident = identify_iv(train, max_lag=args.max_lag, num_nullsims=args.nullsims, seed=seed,
                        kernel_width=args.kernel_width, null=args.null)
    hop = ident.lag
    row: dict = {"env": env, "sigma": sigma, "seed": seed, "lag": hop,
                 "id_acc": identification_accuracy(ident.per_trajectory_lags, args.k),
                 "id_exact": float(np.mean([j == cc.valid_lag for j in ident.per_trajectory_lags])),
                 "fallback": ident.used_random_fallback,
                 "switched": float(np.mean(ident.switched)),
                 "reject_rate_per_lag": reject_rate_per_lag(ident, len(train), args.max_lag),
                 "train_return": float(np.mean([t.ret for t in train])), "steps": train.num_steps,
                 "mean_length": float(np.mean([len(t) for t in train]))}
    if args.identify_only:
        row["seconds"] = time.perf_counter() - t0
        return row
    test_clean = generate_dataset(env, args.n_test, None, seed=10_000 + seed, max_steps=ms, expert=ex)
    test_noisy = generate_dataset(env, args.n_test, cc, seed=20_000 + seed, max_steps=ms, expert=ex)
    common = {"steps": args.steps, "hidden": args.hidden, "seed": seed}
    bc = BC(lr=1e-3, **common).fit(train)
    learners = {"bc": bc}
    iv_kw = {**common, "lr": args.lr, "init": "bc"}
    for name in METHODS[1:]:
        kw = dict(iv_kw)
        base = name.replace("_oracle", "")
        if base in ("c2l", "c2l_star"):
            kw["hop"] = cc.valid_lag if name.endswith("_oracle") else hop
        learner = create_learner(base, **kw)
        if base in ("c2l", "doubil"):
            learner.fit(train, env, pi_bc=bc)
        else:
            learner.fit(train, pi_bc=bc)
        learners[name] = learner
    for name, learner in learners.items():
        fn = learner.policy.act
        row[f"{name}/mse_clean"] = action_error(learner, test_clean, "mse")
        row[f"{name}/mse_noisy"] = action_error(learner, test_noisy, "mse")
        row[f"{name}/J_clean"] = evaluate_return(fn, env, n_episodes=args.episodes, seed=30_000 + seed,
                                                 max_steps=ms)["mean"]
        row[f"{name}/J_noisy"] = evaluate_return(fn, env, n_episodes=args.episodes, confounding=cc,
                                                 seed=40_000 + seed, max_steps=ms)["mean"]
    row["expert/J_clean"] = float(np.mean([t.ret for t in test_clean]))
    row["expert/J_noisy"] = float(np.mean([t.ret for t in test_noisy]))
    row["seconds"] = time.perf_counter() - t0
    return row


def summarize(rows: list[dict], envs, sigmas, k: int) -> tuple[list[dict], list[dict]]:
    ident_rows, method_rows = [], []
    for env in envs:
        for sigma in sigmas:
            cell = [r for r in rows if r["env"] == env and r["sigma"] == sigma]
            if not cell:
                continue
            lags = [r["lag"] for r in cell]
            rr = np.array([r["reject_rate_per_lag"] for r in cell])
            ident_rows.append({"env": env, "σ": sigma, "seeds": len(cell), "identified lags": str(lags),
                               "accuracy (lag≥k−1)": _ms([r["id_acc"] for r in cell]),
                               "exact (lag=k−1)": _ms([r["id_exact"] for r in cell]),
                               "switched": _ms([r.get("switched", float("nan")) for r in cell], 2),
                               "reject rate lag 1": f"{rr[:, 0].mean():.2f}",
                               "reject rate lags ≥k−1": f"{rr[:, max(k - 2, 0):].mean():.2f}" if rr.size else ""})
            if "bc/mse_clean" not in cell[0]:  # --identify-only
                continue
            for m in METHODS:
                method_rows.append({"env": env, "σ": sigma, "method": LABELS[m],
                                    "action MSE (clean states)": _ms([r[f"{m}/mse_clean"] for r in cell]),
                                    "action MSE (noisy states)": _ms([r[f"{m}/mse_noisy"] for r in cell]),
                                    "J clean env": _ms([r[f"{m}/J_clean"] for r in cell], 1),
                                    "J noisy env": _ms([r[f"{m}/J_noisy"] for r in cell], 1)})
            method_rows.append({"env": env, "σ": sigma, "method": "expert (reference)",
                                "action MSE (clean states)": "0", "action MSE (noisy states)": "0",
                                "J clean env": _ms([r["expert/J_clean"] for r in cell], 1),
                                "J noisy env": _ms([r["expert/J_noisy"] for r in cell], 1)})
    return ident_rows, method_rows


def _ms(values, digits: int = 3) -> str:
    v = np.asarray(values, dtype=float)
    return f"{v.mean():.{digits}f} ± {v.std():.{digits}f}"


def plot_rejections(rows, envs, sigmas, k: int, out: Path) -> Path:
    """Stage 1: rejection rate of the pseudo-variable HSIC test per candidate lag, one line per σ."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(envs), figsize=(5.5 * len(envs), 3.8), squeeze=False)
    for col, env in enumerate(envs):
        ax = axes[0, col]
        for s in sigmas:
            rr = np.array([r["reject_rate_per_lag"] for r in rows if r["env"] == env and r["sigma"] == s])
            if rr.size:
                ax.plot(np.arange(1, rr.shape[1] + 1), rr.mean(0), marker="o", label=f"σ = {s:g}")
        ax.axvspan(0.5, max(k - 1, 1) - 0.5, color="red", alpha=0.12, label="invalid lags (< k−1)")
        ax.set_xlabel("candidate lag j (instrument s_{t−j})")
        ax.set_ylabel("rejection rate at α = 10/n")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(env)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    path = out / "c2l_identification.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot(rows, envs, sigmas, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, axes = plt.subplots(2, len(envs), figsize=(5.5 * len(envs), 7), squeeze=False)
    for col, env in enumerate(envs):
        for row_i, (key, ylabel) in enumerate((("mse_noisy", "action MSE vs expert (noisy test states)"),
                                              ("J_clean", "return, clean env"))):
            ax = axes[row_i, col]
            for m in METHODS:
                xs, ys, es = [], [], []
                for s in sigmas:
                    vals = [r[f"{m}/{key}"] for r in rows if r["env"] == env and r["sigma"] == s]
                    if vals:
                        xs.append(s)
                        ys.append(np.mean(vals))
                        es.append(np.std(vals))
                ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=LABELS[m])
            if key == "J_clean":
                ex = [np.mean([r["expert/J_clean"] for r in rows if r["env"] == env and r["sigma"] == s])
                      for s in sigmas if any(r["env"] == env and r["sigma"] == s for r in rows)]
                ax.plot(sigmas[:len(ex)], ex, "k--", label="expert")
            ax.set_xlabel("confounding strength σ")
            ax.set_ylabel(ylabel)
            ax.set_title(env)
            ax.grid(alpha=0.3)
            if key == "mse_noisy":
                ax.set_yscale("log")
            else:
                ax.set_yscale("symlog", linthresh=100.0)  # diverged closed loops reach -1e7 on the linear system
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    path = out / "c2l_bench.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)
    return paths


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="CPU-minutes setting")
    p.add_argument("--envs", nargs="*", default=None)
    p.add_argument("--sigmas", type=float, nargs="*", default=None)
    p.add_argument("--seeds", type=int, default=None)
    p.add_argument("--k", type=int, default=3)
    p.add_argument("--n-traj", type=int, default=None)
    p.add_argument("--n-test", type=int, default=10)
    p.add_argument("--steps", type=int, default=None, help="gradient steps per learner")
    p.add_argument("--hidden", type=int, default=None)
    p.add_argument("--lr", type=float, default=1e-3, help="IV learners (warm-started from BC)")
    p.add_argument("--max-lag", type=int, default=None)
    p.add_argument("--nullsims", type=int, default=None)
    p.add_argument("--kernel-width", default="1.0", help="HSIC kernel width (official 1.0) or 'median'")
    p.add_argument("--null", choices=["spectral", "shift"], default="spectral", help="HSIC null (official: spectral)")
    p.add_argument("--episodes", type=int, default=None)
    p.add_argument("--max-steps", type=int, default=400)
    p.add_argument("--expert", default=None, help="expert spec for every env (default: each env's default expert)")
    p.add_argument("--out", type=Path, default=REPO / "runs" / "bench" / "c2l")
    p.add_argument("--kind", choices=["additive", "multiplicative"], default="additive",
                   help="confounding model: k-step additive (default) or the official multiplicative window")
    p.add_argument("--window", type=int, default=100, help="multiplicative: noisy window length (official 100)")
    p.add_argument("--identify-only", action="store_true", help="stage 1 only (no policy learning)")
    p.add_argument("--replot", action="store_true", help="only redraw the plot from an existing results.json")
    args = p.parse_args(argv)
    if args.replot:
        saved = json.loads((args.out / "results.json").read_text(encoding="utf-8"))
        a = saved["meta"]["args"]
        plot_rejections(saved["rows"], a["envs"], a["sigmas"], a["k"], args.out)
        if not a.get("identify_only"):
            plot(saved["rows"], a["envs"], a["sigmas"], args.out)
        return 0
    q = args.quick
    args.envs = args.envs or ["linear", "lunarlander"]
    args.sigmas = args.sigmas or ([0.5, 1.0, 2.0] if q else [0.25, 0.5, 1.0, 2.0])
    args.seeds = args.seeds or (2 if q else 5)
    args.n_traj = args.n_traj or (20 if q else 50)
    args.steps = args.steps or (1000 if q else 10_000)
    args.hidden = args.hidden or (128 if q else 256)
    args.max_lag = args.max_lag or (10 if q else 20)
    args.nullsims = args.nullsims or (300 if q else 1000)
    args.episodes = args.episodes or (5 if q else 20)
    if args.kernel_width != "median":
        args.kernel_width = float(args.kernel_width)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    t0 = time.perf_counter()
    from tqdm.auto import tqdm

    cells = [(e, s, seed) for e in args.envs for s in args.sigmas for seed in range(args.seeds)]
    for env, sigma, seed in tqdm(cells, desc="c2l bench"):
        rows.append(run_cell(env, sigma, seed, args))
    ident_rows, method_rows = summarize(rows, args.envs, args.sigmas, args.k)
    images = [plot_rejections(rows, args.envs, args.sigmas, args.k, args.out)]
    if not args.identify_only:
        images = plot(rows, args.envs, args.sigmas, args.out) + images
    meta = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": platform.platform(),
            "processor": platform.processor() or platform.machine(), "python": platform.python_version(),
            "seconds": time.perf_counter() - t0, "args": {k: (str(v) if isinstance(v, Path) else v)
                                                           for k, v in vars(args).items()}}
    save_json(args.out / "results.json", {"meta": meta, "rows": rows, "identification": ident_rows,
                                          "methods": method_rows})
    md = [f"# C2L benchmark ({'quick' if q else 'full'})", "",
          f"{meta['date']} · {meta['machine']} · CPU · {meta['seconds']:.0f} s · k = {args.k} "
          f"(valid lags ≥ {max(args.k - 1, 1)}) · {args.n_traj} train trajectories · "
          + ("stage 1 only" if args.identify_only else f"{args.steps} steps/learner · hidden {args.hidden}")
          + f" · seeds {args.seeds} · HSIC width {args.kernel_width}, null {args.null} · "
          f"{args.kind} confounding · max lag {args.max_lag} · {args.nullsims} null simulations",
          "", "## Stage 1: IV identification", "", markdown_table(ident_rows), ""]
    if method_rows:
        md += ["## Stage 2: policies (mean ± std over seeds)", "", markdown_table(method_rows), ""]
    md += [f"![plot]({img.name})" for img in images] + [""]
    (args.out / "results.md").write_text("\n".join(md), encoding="utf-8")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
