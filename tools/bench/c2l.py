#!/usr/bin/env python3
"""C2L benchmark with power: stage-1 identification rates per setting and stage-2 policies, mean ± 95 % CI over seeds.

Part ``identify`` (stage 1; ``--quick`` runs it on CPU in minutes). For every setting — confounding kind (additive
k-step / the official multiplicative window), k ∈ {1, 3, 5, 7}, noise σ, and the unconfounded control (σ = 0, k = 1)
— and every seed: generate ≥ 20 expert trajectories, run the official lag search (``identify_iv``) under each HSIC
null (``spectral`` = official, ``shift`` = calibrated on autocorrelated rows), and measure per seed

* false-rejection rate of valid lags (candidates j ≥ max(k−1, 1) with p < α = 10/n),
* rejection rate of invalid lags (j < k−1; none exist for k ≤ 2),
* exact-lag rate (per-trajectory lag == max(k−1, 1)),
* the paper's accuracy (per-trajectory lag ≥ k−1) beside its chance level: the share of the official random
  fallback ``randint(1, max_lag+1)`` that is ≥ k−1 (1 for k ≤ 2, where no invalid lag exists);

then reports mean ± 95 % t-interval over seeds, and the targets of issue 23 (calibrated null, k = 3: valid-lag false
rejection ≤ 10 %, invalid-lag rejection ≥ 80 %) with the measured values.

``--stage2`` runs the stage-2 benchmark of ``tools/c2l_stage2.py`` (all its arguments; one JSON line per finished
(env, seed, method) unit under ``--out``, ``--resume-from``, ``--max-seconds``, ``--jobs``, paired differences with
CIs; ``results/c2l/c2l_stage2.json``). It supersedes ``--part policy``, which stays for the committed linear run.

Part ``policy`` (stage 2; minutes to hours, needs box2d / mujoco and an expert): BC, DoubIL, ResiduIL (lag 1), GAIL
(``imitation``, skipped with a note if not installed), C2L (simulator) and C2L* (offline) at the identified lag and,
to separate the stages, at the true lag k−1, on each ``--envs`` task; ≥ 5 seeds, return in the clean env over
``--episodes`` (≥ 20) and action MSE vs the clean expert on confounded test states, mean ± 95 % CI. Learners use
their official optimiser settings unless ``--lr`` sets one step size for every IV learner (they then all start from
BC: ``init="bc"``), as short CPU runs need.

Results: ``results/c2l/<bench>.json`` through ``commons.results.write_results`` (bench ``c2l_identify`` or
``c2l_policy``; ``--results-name`` overrides) and, under ``--out``, a markdown copy and a per-lag rejection plot.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
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
    ConfoundingConfig,
    action_error,
    create_learner,
    evaluate_return,
    generate_dataset,
    identification_accuracy,
    identify_iv,
    make_expert,
)
from commons.reporting import markdown_table  # noqa: E402
from commons.results import write_results  # noqa: E402

POLICY_METHODS = ["bc", "doubil", "residuil", "gail", "c2l", "c2l_star", "c2l_oracle", "c2l_star_oracle"]
LABELS = {"bc": "BC", "doubil": "DoubIL (lag 1)", "residuil": "ResiduIL (lag 1)", "gail": "GAIL (imitation)",
          "c2l": "C2L (sim, identified lag)", "c2l_star": "C2L* (offline, identified lag)",
          "c2l_oracle": "C2L (sim, true lag k−1)", "c2l_star_oracle": "C2L* (offline, true lag k−1)"}


# ---------------------------------------------------------------------------------------------- statistics
def mean_ci(values) -> tuple[float, float]:
    """Mean and half-width of the 95 % t-interval over seeds (NaN-free values; half-width 0 for one value)."""
    from scipy import stats

    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if v.size == 0:
        return float("nan"), float("nan")
    if v.size == 1:
        return float(v[0]), 0.0
    return float(v.mean()), float(stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size))


def fmt(values, digits: int = 2) -> str:
    m, h = mean_ci(values)
    return "n/a" if not np.isfinite(m) else f"{m:.{digits}f} ± {h:.{digits}f}"


def chance_accuracy(k: int, max_lag: int) -> float:
    """P(lag ≥ k−1) for the official fallback lag ~ U{1, …, max_lag+1}."""
    if k <= 2:
        return 1.0
    return max(max_lag + 1 - (k - 1) + 1, 0) / (max_lag + 1)


# ---------------------------------------------------------------------------------------------- stage 1
def settings_grid(args) -> list[dict]:
    grid = [{"kind": "additive", "k": 1, "sigma": 0.0, "control": True}]
    for kind, sigma in (("additive", args.sigma_add), ("multiplicative", args.sigma_mult)):
        for k in args.ks:
            grid.append({"kind": kind, "k": k, "sigma": sigma, "control": False})
    return grid


def identify_cell(job: tuple) -> dict:
    env, setting, seed, args = job
    t0 = time.perf_counter()
    k, sigma = setting["k"], setting["sigma"]
    cc = None if sigma == 0 else ConfoundingConfig(k=k, sigma=sigma, kind=setting["kind"])
    data = generate_dataset(env, args.n_traj, cc, seed=seed, max_steps=args.max_steps, expert=args.expert)
    valid_from = max(k - 1, 1)
    out = {"env": env, **setting, "seed": seed, "mean_length": float(np.mean([len(t) for t in data]))}
    for null in args.nulls:
        res = identify_iv(data, max_lag=args.max_lag, num_nullsims=args.nullsims, seed=seed, null=null)
        rej = np.full((len(data), args.max_lag), np.nan)
        for t in res.tests:
            rej[t.trajectory, t.lag - 1] = 0.0 if t.valid else 1.0
        valid = rej[:, valid_from - 1:]
        invalid = rej[:, :valid_from - 1] if valid_from > 1 and k > 2 else np.empty((0, 0))
        lags = res.per_trajectory_lags
        out[null] = {
            "false_rejection": float(np.nanmean(valid)),
            "invalid_rejection": float(np.nanmean(invalid)) if invalid.size else None,
            "exact": float(np.mean([j == valid_from for j in lags])),
            "accuracy": identification_accuracy(lags, k),
            "lag": res.lag, "fallback": res.used_random_fallback, "switched": float(np.mean(res.switched)),
            "reject_per_lag": np.nanmean(rej, 0).tolist(),
        }
    out["seconds"] = time.perf_counter() - t0
    return out


def summarize_identify(cells: list[dict], args) -> tuple[list[dict], list[dict]]:
    rows, targets = [], []
    keys = list(dict.fromkeys((c["env"], c["kind"], c["k"], c["sigma"]) for c in cells))
    for env, kind, k, sigma in keys:
        cell = [c for c in cells if (c["env"], c["kind"], c["k"], c["sigma"]) == (env, kind, k, sigma)]
        for null in args.nulls:
            per = [c[null] for c in cell]
            inv = [p["invalid_rejection"] for p in per]
            rows.append({
                "table": "identify", "env": env, "confounding": "none (control)" if sigma == 0 else kind, "k": k,
                "sigma": sigma, "null": null, "seeds": len(cell),
                "valid_lag_false_rejection": fmt([p["false_rejection"] for p in per]),
                "invalid_lag_rejection": "—" if all(v is None for v in inv) else fmt(inv),
                "exact_lag": fmt([p["exact"] for p in per]),
                "accuracy_paper": fmt([p["accuracy"] for p in per]),
                "chance_accuracy": round(chance_accuracy(k, args.max_lag), 3),
                "identified_lags": " ".join(str(p["lag"]) for p in per),
            })
            if k == 3 and kind == "additive" and sigma > 0:
                fr = mean_ci([p["false_rejection"] for p in per])
                ir = mean_ci(inv)
                targets += [
                    {"table": "targets", "env": env, "null": null, "target": "valid-lag false rejection ≤ 0.10",
                     "measured": fmt([p["false_rejection"] for p in per]), "met": "yes" if fr[0] <= 0.10 else "no"},
                    {"table": "targets", "env": env, "null": null, "target": "invalid-lag rejection ≥ 0.80",
                     "measured": fmt(inv), "met": "yes" if ir[0] >= 0.80 else "no"},
                ]
    return rows, targets


def plot_rejections(cells: list[dict], args, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = ["additive", "multiplicative"]
    fig, axes = plt.subplots(len(args.nulls), len(kinds), figsize=(11, 3.6 * len(args.nulls)), squeeze=False)
    for r, null in enumerate(args.nulls):
        for c, kind in enumerate(kinds):
            ax = axes[r, c]
            for k in args.ks:
                cell = [x for x in cells if x["kind"] == kind and x["k"] == k and x["sigma"] > 0]
                if cell:
                    rr = np.nanmean([x[null]["reject_per_lag"] for x in cell], 0)
                    ax.plot(np.arange(1, len(rr) + 1), rr, marker="o", label=f"k = {k} (valid ≥ {max(k - 1, 1)})")
            ctrl = [x for x in cells if x["sigma"] == 0]
            if ctrl and kind == "additive":
                rr = np.nanmean([x[null]["reject_per_lag"] for x in ctrl], 0)
                ax.plot(np.arange(1, len(rr) + 1), rr, "k--", label="no confounding (all valid)")
            ax.axhline(0.0, color="grey", lw=0.5)
            ax.set_ylim(-0.02, 1.02)
            ax.set_xlabel("candidate lag j")
            ax.set_ylabel("rejection rate (α = 10/n)")
            ax.set_title(f"{kind}, {null} null")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "c2l_identification.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------- stage 2
def policy_cell(job: tuple) -> dict:
    env, seed, args = job
    t0 = time.perf_counter()
    cc = ConfoundingConfig(k=args.k, sigma=args.sigma, kind=args.kind)
    ms, ex = args.max_steps, args.expert
    train = generate_dataset(env, args.n_traj, cc, seed=seed, max_steps=ms, expert=ex)
    test = generate_dataset(env, args.n_test, cc, seed=10_000 + seed, max_steps=ms, expert=ex)
    ident = identify_iv(train, max_lag=args.max_lag, num_nullsims=args.nullsims, seed=seed, null=args.null)
    expert = make_expert(env, ex)
    row: dict = {"env": env, "seed": seed, "lag": ident.lag,
                 "expert/J": evaluate_return(expert, env, n_episodes=args.episodes, seed=30_000 + seed,
                                             max_steps=ms)["mean"]}
    common = {"seed": seed}
    if args.steps:
        common["steps"] = args.steps
    iv_kw = dict(common, **({"lr": args.lr, "init": "bc"} if args.lr else {}))
    bc = create_learner("bc", **common).fit(train)
    for name in args.methods:
        t1 = time.perf_counter()
        if name == "bc":
            learner = bc
        elif name == "gail":
            try:
                import imitation  # noqa: F401
            except ImportError:
                row["gail/skipped"] = "imitation not installed"
                continue
            learner = create_learner("gail", total_timesteps=args.gail_timesteps, seed=seed, max_steps=ms)
            learner.fit(train, env)
        else:
            kw = dict(iv_kw)
            base = name.replace("_oracle", "")
            if base in ("c2l", "c2l_star"):  # the oracle rows use the true lag: stage 2 apart from stage 1
                kw["hop"] = cc.valid_lag if name.endswith("_oracle") else ident.lag
            learner = create_learner(base, **kw)
            learner.fit(train, env, pi_bc=bc) if base in ("c2l", "doubil") else learner.fit(train, pi_bc=bc)
        act = learner.policy.act
        row[f"{name}/J"] = evaluate_return(act, env, n_episodes=args.episodes, seed=30_000 + seed, max_steps=ms)["mean"]
        row[f"{name}/mse"] = action_error(learner, test, "mse")
        row[f"{name}/seconds"] = time.perf_counter() - t1
    row["seconds"] = time.perf_counter() - t0
    return row


def summarize_policy(cells: list[dict], args) -> list[dict]:
    rows = []
    for env in args.envs:
        cell = [c for c in cells if c["env"] == env]
        for m in args.methods:
            if all(f"{m}/J" not in c for c in cell):
                continue
            rows.append({"table": "policy", "env": env, "method": LABELS[m], "seeds": len(cell),
                         "return_clean_env": fmt([c.get(f"{m}/J") for c in cell], 1),
                         "action_mse_confounded": fmt([c.get(f"{m}/mse") for c in cell], 3)})
        rows.append({"table": "policy", "env": env, "method": "expert (reference)", "seeds": len(cell),
                     "return_clean_env": fmt([c["expert/J"] for c in cell], 1),
                     "action_mse_confounded": "0"})
    return rows


# ---------------------------------------------------------------------------------------------- driver
def _run(fn, jobs: list, workers: int) -> list:
    from tqdm.auto import tqdm

    if workers <= 1:
        return [fn(j) for j in tqdm(jobs, desc="c2l bench")]
    with ProcessPoolExecutor(workers) as pool:
        return list(tqdm(pool.map(fn, jobs), total=len(jobs), desc="c2l bench"))


def main(argv=None) -> int:
    argv_list = list(sys.argv[1:] if argv is None else argv)
    if "--stage2" in argv_list:  # stage 2 with per-unit JSON lines, resume, time budget: tools/c2l_stage2.py
        argv_list.remove("--stage2")
        sys.path.insert(0, str(REPO / "tools"))
        from c2l_stage2 import main as stage2_main

        return stage2_main(argv_list)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=["identify", "policy"], default="identify")
    p.add_argument("--quick", action="store_true", help="CPU-minutes setting (stage 1 on LunarLander)")
    p.add_argument("--envs", nargs="*", default=None)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--n-traj", type=int, default=20)
    p.add_argument("--max-lag", type=int, default=None)
    p.add_argument("--nullsims", type=int, default=None)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--expert", default=None, help="expert spec for every env (default: each env's default)")
    p.add_argument("--jobs", type=int, default=1, help="worker processes")
    p.add_argument("--out", type=Path, default=REPO / "runs" / "bench" / "c2l")
    p.add_argument("--results-name", default=None, help="results/c2l/<name>.json (default c2l_<part>)")
    g1 = p.add_argument_group("identify")
    g1.add_argument("--ks", type=int, nargs="*", default=[1, 3, 5, 7])
    g1.add_argument("--sigma-add", type=float, default=1.0, help="additive noise σ")
    g1.add_argument("--sigma-mult", type=float, default=5.0, help="multiplicative noise σ (official 5)")
    g1.add_argument("--nulls", nargs="*", default=["spectral", "shift"], choices=["spectral", "shift"])
    g2 = p.add_argument_group("policy")
    g2.add_argument("--methods", nargs="*", default=POLICY_METHODS, choices=POLICY_METHODS)
    g2.add_argument("--k", type=int, default=3)
    g2.add_argument("--sigma", type=float, default=1.0)
    g2.add_argument("--kind", choices=["additive", "multiplicative"], default="additive")
    g2.add_argument("--null", choices=["spectral", "shift"], default="shift")
    g2.add_argument("--n-test", type=int, default=10)
    g2.add_argument("--steps", type=int, default=None, help="gradient steps per learner (default: official 5e4)")
    g2.add_argument("--lr", type=float, default=None, help="one lr for every IV learner, warm-started from BC")
    g2.add_argument("--episodes", type=int, default=20)
    g2.add_argument("--gail-timesteps", type=int, default=200_000)
    args = p.parse_args(argv)
    if args.seeds < 1 or args.n_traj < 1:
        p.error("--seeds and --n-traj must be >= 1")
    if args.quick and args.part != "identify":
        p.error("--quick is the stage-1 CPU setting; run --part policy with explicit budgets")
    args.envs = args.envs or ["lunarlander"]
    args.max_lag = args.max_lag or (8 if args.quick else 20)
    args.nullsims = args.nullsims or (200 if args.quick else 1000)
    args.max_steps = args.max_steps or (300 if args.quick else None)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    settings["command"] = "python tools/bench/c2l.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.part == "identify":
        jobs = [(env, s, seed, args) for env in args.envs for s in settings_grid(args) for seed in range(args.seeds)]
        cells = _run(identify_cell, jobs, args.jobs)
        rows, targets = summarize_identify(cells, args)
        images = [plot_rejections(cells, args, args.out)]
        all_rows = rows + targets
        md = ["## Stage 1: identification power (mean ± 95 % CI over seeds)", "",
              markdown_table([{k: v for k, v in r.items() if k != "table"} for r in rows]), "",
              "## Targets (k = 3, additive)", "", markdown_table([{k: v for k, v in r.items() if k != "table"}
                                                                   for r in targets]), ""]
    else:
        jobs = [(env, seed, args) for env in args.envs for seed in range(args.seeds)]
        cells = _run(policy_cell, jobs, args.jobs)
        all_rows = summarize_policy(cells, args)
        images = []
        md = ["## Stage 2: policies (mean ± 95 % CI over seeds)", "",
              markdown_table([{k: v for k, v in r.items() if k != "table"} for r in all_rows]), ""]
    settings["seconds"] = time.perf_counter() - t0
    name = args.results_name or f"c2l_{args.part}"
    path = write_results("c2l", name, all_rows, settings, extra={"cells": cells})
    md = [f"# C2L benchmark, part {args.part} ({'quick' if args.quick else 'custom'}): "
          f"{settings['seconds']:.0f} s, results {path.relative_to(REPO)}", ""] + md
    md += [f"![plot]({img.name})" for img in images] + [""]
    (args.out / f"results_{args.part}.md").write_text("\n".join(md), encoding="utf-8")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
