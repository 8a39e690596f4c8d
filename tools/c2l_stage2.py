#!/usr/bin/env python3
"""C2L stage 2 benchmark: BC, DoubIL, ResiduIL, GAIL, C2L, C2L* on LunarLander and HalfCheetah, mean ± 95 % CI.

Run through ``python tools/bench/c2l.py --stage2 ...`` (same arguments) or directly. One *unit* is one
``(env, seed, method)``: it regenerates that seed's data (deterministic), trains the method, evaluates it and appends
one JSON line to ``<out>/c2l_stage2.jsonl`` as soon as it finishes, so a run killed at any time keeps every finished
unit; ``--resume-from FILE`` (that file from an earlier run) skips the units it holds, ``--max-seconds`` stops
starting new units after that wall time, ``--hard-seconds`` abandons the running ones at that time and still writes
the summary, ``--jobs N`` runs units in N CPU processes. At the end the rows of every unit
(resumed and new) are summarised into ``<results-root>/c2l/c2l_stage2.json`` through ``commons.results``.

Per seed and environment: ``--n-traj`` (20) confounded expert trajectories for training, a confounded and a clean
test set (10 trajectories each, labelled with the clean expert action), the stage-1 lag from ``identify_iv``
(``--null``, ``--max-lag``, ``--nullsims``). Per unit: return over ``--episodes`` (≥ 20) episodes in the clean
environment (``J_clean``, the paper's J) and with the confounding noise on the policy's actions (``J_noisy``), and the
per-step action MSE against the clean expert on the confounded (``mse``) and clean (``mse_clean``) test states.

Methods (``--methods``): ``bc``; ``doubil`` / ``residuil`` (Swamy et al., fixed lag 1); ``gail`` (``imitation``;
skipped with a note when it is not installed); ``c2l`` (simulator) / ``c2l_star`` (offline) at the identified lag;
``c2l_oracle`` / ``c2l_star_oracle`` at the true lag k−1 (stage 2 apart from stage 1); ``expert`` (reference).
Learners use their official optimiser settings and 5e4 steps unless ``--steps`` / ``--lr`` say otherwise (``--lr``
gives every IV learner that step size and a warm start from the seed's BC, as short runs need). DoubIL and C2L
share the seed's BC, cached under ``--cache-dir`` (deterministic: a unit that finds no cache trains the same BC).

Confounding (``--confounding``): ``additive`` (default) is the k-step model ``a_t = π_E(s_t) + σ Σ_{i<k} u_{t−i}``
(``--k`` 3, ``--sigma`` 1): ``s_t`` carries ``u_{t−1}, u_{t−2}`` so BC is biased and ``s_{t−2}`` is a valid
instrument. ``official`` is the official code's multiplicative window model (LunarLander σ 5, scale 0.1, window 100;
HalfCheetah σ 2, scale 1, window 500): there the noise factor ``u_t`` is independent of everything and zero-mean, so
``E[a_t | s_t] = E[a_t | s_{t−j}] = 0`` inside the window for every method — the recorded actions are attenuated, not
confounded, and an instrument cannot recover the expert (see the package README).

Paired comparisons: for each pair (e.g. C2L* − BC) the per-seed difference of the metric, mean ± 95 % t-interval;
"beats by more than the CI" = the interval lies entirely on the better side.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
for _sub in ("packages/commons/src", "packages/c2l/src"):
    if str(REPO / _sub) not in sys.path:
        sys.path.insert(0, str(REPO / _sub))

METHODS = ["expert", "bc", "doubil", "residuil", "gail", "c2l", "c2l_star", "c2l_oracle", "c2l_star_oracle"]
LABELS = {"expert": "expert (reference)", "bc": "BC", "doubil": "DoubIL (lag 1)", "residuil": "ResiduIL (lag 1)",
          "gail": "GAIL (imitation)", "c2l": "C2L (sim, identified lag)", "c2l_star": "C2L* (offline, identified lag)",
          "c2l_oracle": "C2L (sim, true lag k−1)", "c2l_star_oracle": "C2L* (offline, true lag k−1)"}
# run order: BC first (others reuse its cache), then the long units, the BC users last
ORDER = ["bc", "gail", "c2l_star", "residuil", "c2l_star_oracle", "expert", "doubil", "c2l", "c2l_oracle"]
PAIRS = [("c2l_star", "bc"), ("c2l_star", "doubil"), ("c2l_star", "residuil"), ("c2l", "bc"), ("c2l", "doubil"),
         ("c2l", "residuil"), ("c2l_star_oracle", "bc"), ("c2l_oracle", "bc"), ("gail", "bc")]
TARGET_PAIRS = [("c2l_star", "bc"), ("c2l_star", "doubil"), ("c2l_star", "residuil")]
METRICS = {"J_clean": +1, "J_noisy": +1, "mse": -1, "mse_clean": -1}  # +1: larger is better


def confounding_for(env: str, kind: str, k: int, sigma: float):
    from c2l import ConfoundingConfig

    if kind == "additive":
        return ConfoundingConfig(k=k, sigma=sigma, kind="additive")
    if env == "halfcheetah":  # official HalfCheetah/Ant: σ 2, no 0.1 factor, 500-step window from [0, 500)
        return ConfoundingConfig(k=k, sigma=2.0, kind="multiplicative", scale=1.0, window=500, window_start_max=500)
    return ConfoundingConfig(k=k, sigma=5.0, kind="multiplicative")  # official LunarLander


def settings_key(args, env: str) -> str:
    keep = {k: getattr(args, k) for k in ("n_traj", "n_test", "confounding", "k", "sigma", "steps", "lr",
                                          "episodes", "max_lag", "nullsims", "null", "gail_timesteps", "max_steps")}
    keep["env"], keep["expert"] = env, expert_for(args, env)
    info = expert_info(args, env)
    if "sha256" in info:  # an expert from a file: resumed units must come from the same weights
        keep["expert_sha256"] = info["sha256"]
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]


def expert_for(args, env: str) -> str | None:
    return (args.expert or {}).get(env)


def expert_info(args, env: str) -> dict:
    """The expert spec and, for an exported actor (``shipped`` / ``file:``), its file hash and model-card summary."""
    from c2l import ENVIRONMENTS
    from c2l.experts import shipped_expert_path

    spec = expert_for(args, env) or ENVIRONMENTS[env].default_expert
    out: dict = {"spec": spec}
    path = shipped_expert_path(env) if spec == "shipped" else (Path(spec[5:]) if spec.startswith("file:") else None)
    if path is not None and path.is_file():
        out["file"] = path.name
        out["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        card = path.with_suffix(".json")
        if card.is_file():
            meta = json.loads(card.read_text(encoding="utf-8"))
            out.update({k: meta.get(k) for k in ("algo", "steps_run", "return_mean", "return_std", "device",
                                                 "train_seconds", "zoo_reference_return")})
    return out


# ---------------------------------------------------------------------------------------------- one unit
_MEMO: dict = {}


def _data(args, env: str, seed: int):
    from c2l import generate_dataset

    key = ("data", env, seed)
    if key not in _MEMO:
        cc = confounding_for(env, args.confounding, args.k, args.sigma)
        ex, ms = expert_for(args, env), args.max_steps
        train = generate_dataset(env, args.n_traj, cc, seed=seed, max_steps=ms, expert=ex)
        test = generate_dataset(env, args.n_test, cc, seed=10_000 + seed, max_steps=ms, expert=ex)
        clean = generate_dataset(env, args.n_test, None, seed=20_000 + seed, max_steps=ms, expert=ex)
        _MEMO.clear()
        _MEMO[key] = (cc, train, test, clean)
    return _MEMO[key]


def _cache(args, env: str, seed: int, what: str) -> Path:
    return Path(args.cache_dir) / f"{what}_{env}_s{seed}_{settings_key(args, env)}"


def _bc(args, env: str, seed: int, train, common: dict):
    from c2l import create_learner, load_policy

    path = _cache(args, env, seed, "bc")
    bc = create_learner("bc", **common)
    if (path / "config.json").is_file():
        bc.policy = load_policy(path)
        return bc
    bc.fit(train)
    tmp = Path(tempfile.mkdtemp(dir=args.cache_dir, prefix=".bc_tmp"))
    bc.policy.save(tmp / "p")
    with contextlib.suppress(OSError):  # another unit wrote the same (deterministic) BC first
        os.replace(tmp / "p", path)
    shutil.rmtree(tmp, ignore_errors=True)
    return bc


def _lag(args, env: str, seed: int, train) -> tuple[int, dict]:
    from c2l import identify_iv

    path = _cache(args, env, seed, "lag").with_suffix(".json")
    if path.is_file():
        d = json.loads(path.read_text())
        return int(d["lag"]), d
    t0 = time.perf_counter()
    res = identify_iv(train, max_lag=args.max_lag, num_nullsims=args.nullsims, seed=seed, null=args.null)
    d = {"lag": int(res.lag), "fallback": bool(res.used_random_fallback), "seconds": time.perf_counter() - t0,
         "per_trajectory": [int(x) for x in res.per_trajectory_lags]}
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(d))
    os.replace(tmp, path)
    return d["lag"], d


def run_unit(job: tuple) -> dict:
    """Train and evaluate one (env, seed, method); returns its row (``{"skipped": reason}`` when not run)."""
    import torch

    from c2l import action_error, create_learner, evaluate_return, make_expert

    env, seed, method, args, deadline = job
    if time.time() > deadline:
        return {"env": env, "seed": seed, "method": method, "skipped": "max-seconds reached"}
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    cc, train, test, clean = _data(args, env, seed)
    row: dict = {"env": env, "seed": seed, "method": method, "key": settings_key(args, env)}
    common = {"seed": seed, **({"steps": args.steps} if args.steps else {})}
    iv_kw = dict(common, **({"lr": args.lr, "init": "bc"} if args.lr else {}))
    if method == "expert":
        act = make_expert(env, expert_for(args, env))
        policy = act
    elif method == "gail":
        try:
            import imitation  # noqa: F401
        except ImportError:
            return {"env": env, "seed": seed, "method": method, "skipped": "imitation not installed"}
        learner = create_learner("gail", total_timesteps=args.gail_timesteps, seed=seed, max_steps=args.max_steps)
        learner.fit(train, env)
        act, policy = learner.policy.act, learner
    else:
        bc = _bc(args, env, seed, train, common) if method in ("bc", "doubil", "c2l", "c2l_oracle") or args.lr \
            else None
        if method == "bc":
            learner = bc
        else:
            base = method.replace("_oracle", "")
            kw = dict(iv_kw)
            if base in ("c2l", "c2l_star"):
                if method.endswith("_oracle"):
                    kw["hop"] = cc.valid_lag
                else:
                    kw["hop"], info = _lag(args, env, seed, train)
                    row["lag_fallback"] = info["fallback"]
                row["lag"] = kw["hop"]
            learner = create_learner(base, **kw)
            if base in ("c2l", "doubil"):
                learner.fit(train, env, pi_bc=bc)
                row["diverged_at"] = learner.diverged_at
            else:
                learner.fit(train, pi_bc=bc)
        act, policy = learner.policy.act, learner
    row["train_seconds"] = time.perf_counter() - t0
    ms = args.max_steps
    row["J_clean"] = evaluate_return(act, env, n_episodes=args.episodes, seed=30_000 + seed, max_steps=ms)["mean"]
    row["J_noisy"] = evaluate_return(act, env, n_episodes=args.episodes, seed=40_000 + seed, max_steps=ms,
                                     confounding=cc)["mean"]
    row["mse"] = action_error(policy, test, "mse")
    row["mse_clean"] = action_error(policy, clean, "mse")
    row["seconds"] = time.perf_counter() - t0
    return row


# ---------------------------------------------------------------------------------------------- statistics
def mean_ci(values) -> tuple[float, float]:
    from scipy import stats

    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if v.size == 0:
        return float("nan"), float("nan")
    if v.size == 1:
        return float(v[0]), float("nan")
    return float(v.mean()), float(stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size))


def fmt(m: float, h: float, digits: int) -> str:
    if not np.isfinite(m):
        return "n/a"
    return f"{m:.{digits}f} ± {h:.{digits}f}" if np.isfinite(h) else f"{m:.{digits}f}"


def summarize(units: list[dict], envs: list[str], methods: list[str]) -> tuple[list[dict], list[dict], list[dict]]:
    """Per-method table, paired-difference table and the issue's targets from the unit rows."""
    rows, pairs, targets = [], [], []
    by = {(u["env"], u["method"], u["seed"]): u for u in units}
    for env in envs:
        for m in methods:
            us = [u for (e, mm, _), u in sorted(by.items()) if e == env and mm == m]
            if not us:
                continue
            r = {"table": "stage2", "env": env, "method": LABELS[m], "seeds": len(us)}
            for metric, digits in (("J_clean", 1), ("J_noisy", 1), ("mse", 3), ("mse_clean", 3)):
                mu, h = mean_ci([u[metric] for u in us])
                r[metric] = fmt(mu, h, digits)
                r[f"{metric}_mean"], r[f"{metric}_ci"] = mu, h
            lags = [u.get("lag") for u in us if u.get("lag") is not None]
            r["lags"] = " ".join(str(x) for x in lags) if lags else "—"
            r["train_min"] = round(float(np.mean([u["train_seconds"] for u in us])) / 60, 2)
            rows.append(r)
        for a, b in PAIRS:
            seeds = sorted({s for (e, m, s) in by if e == env and m == a} & {s for (e, m, s) in by
                                                                              if e == env and m == b})
            if not seeds:
                continue
            r = {"table": "paired", "env": env, "comparison": f"{LABELS[a]} − {LABELS[b]}", "seeds": len(seeds)}
            for metric, sign in METRICS.items():
                d = [by[(env, a, s)][metric] - by[(env, b, s)][metric] for s in seeds]
                mu, h = mean_ci(d)
                r[f"d_{metric}"] = fmt(mu, h, 1 if metric.startswith("J") else 3)
                better = np.isfinite(h) and sign * mu > h
                worse = np.isfinite(h) and -sign * mu > h
                r[f"{metric}_verdict"] = "better" if better else ("worse" if worse else "not separated")
            pairs.append(r)
            if (a, b) in TARGET_PAIRS:
                d = [by[(env, a, s)]["J_clean"] - by[(env, b, s)]["J_clean"] for s in seeds]
                mu, h = mean_ci(d)
                targets.append({"table": "targets", "env": env,
                                "target": f"{LABELS[a]} beats {LABELS[b]} on return by more than the CI",
                                "measured": f"ΔJ = {fmt(mu, h, 1)} ({len(seeds)} seeds)",
                                "met": "yes" if np.isfinite(h) and mu > h else "no"})
    return rows, pairs, targets


# ---------------------------------------------------------------------------------------------- driver
def read_jsonl(path: Path) -> list[dict]:
    out = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:  # a line cut by a kill
                    continue
    return out


def parse_experts(items: list[str] | None) -> dict:
    out = {}
    for it in items or []:
        env, sep, spec = it.partition("=")
        if not sep or not spec:
            raise SystemExit(f"--expert must look like ENV=SPEC (e.g. halfcheetah=shipped), got {it!r}")
        out[env] = spec
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--envs", nargs="*", default=["lunarlander", "halfcheetah"])
    p.add_argument("--methods", nargs="*", default=METHODS, choices=METHODS)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--n-traj", type=int, default=20)
    p.add_argument("--n-test", type=int, default=10)
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--confounding", choices=["additive", "official"], default="additive")
    p.add_argument("--k", type=int, default=3)
    p.add_argument("--sigma", type=float, default=1.0, help="additive noise σ")
    p.add_argument("--steps", type=int, default=None, help="gradient steps per learner (default: official 5e4)")
    p.add_argument("--lr", type=float, default=None, help="one lr for every IV learner, warm-started from BC")
    p.add_argument("--max-lag", type=int, default=20)
    p.add_argument("--nullsims", type=int, default=1000)
    p.add_argument("--null", choices=["spectral", "shift"], default="shift")
    p.add_argument("--gail-timesteps", type=int, default=200_000)
    p.add_argument("--max-steps", type=int, default=None, help="episode cap (default: the env's)")
    p.add_argument("--expert", nargs="*", default=None, help="ENV=SPEC, e.g. halfcheetah=shipped")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--max-seconds", type=float, default=None, help="start no unit after this wall time")
    p.add_argument("--hard-seconds", type=float, default=None,
                   help="with --jobs > 1: at this wall time abandon running units and write the summary")
    p.add_argument("--resume-from", type=Path, nargs="*", default=[], help="JSON-lines files of earlier runs")
    p.add_argument("--out", type=Path, default=REPO / "runs" / "bench" / "c2l_stage2")
    p.add_argument("--results-root", type=Path, default=None,
                   help="write <root>/c2l/<name>.json (default: the repository's results/; the GPU command "
                        "passes $OUT)")
    p.add_argument("--results-name", default="c2l_stage2")
    p.add_argument("--cache-dir", type=Path, default=None, help="BC/lag cache (default: a temp folder)")
    p.add_argument("--label", default="", help="free text stored in the settings (e.g. the machine)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.seeds < 1 or args.n_traj < 1 or args.episodes < 1 or args.jobs < 1:
        raise SystemExit("--seeds, --n-traj, --episodes and --jobs must be >= 1")
    from c2l import ENVIRONMENTS
    from commons.reporting import markdown_table
    from commons.results import write_results

    bad = [e for e in args.envs if e not in ENVIRONMENTS]
    if bad:
        raise SystemExit(f"--envs: unknown {bad}; available {sorted(ENVIRONMENTS)}")
    args.expert = parse_experts(args.expert)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.cache_dir is None:
        args.cache_dir = Path(tempfile.gettempdir()) / "c2l_stage2_cache"
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    jsonl = args.out / f"{args.results_name}.jsonl"
    keys = {env: settings_key(args, env) for env in args.envs}
    done: dict = {}
    for f in [*args.resume_from, jsonl]:
        for r in read_jsonl(Path(f)):
            if r.get("key") == keys.get(r.get("env")) and "skipped" not in r:
                done[(r["env"], r["seed"], r["method"])] = r
    if done:
        with jsonl.open("w", encoding="utf-8") as fh:  # the output file holds every finished unit
            for r in done.values():
                fh.write(json.dumps(r) + "\n")
    t0 = time.time()
    deadline = t0 + args.max_seconds if args.max_seconds else float("inf")
    order = {m: i for i, m in enumerate(ORDER)}
    jobs = [(env, seed, m, args, deadline) for m in sorted(args.methods, key=order.__getitem__)
            for env in args.envs for seed in range(args.seeds) if (env, seed, m) not in done]
    print(f"c2l stage 2: {len(done)} units resumed, {len(jobs)} to run on {args.jobs} process(es)", flush=True)
    skipped: dict = {}

    def record(row: dict) -> None:
        if "skipped" in row:
            skipped.setdefault(row["skipped"], []).append(f"{row['env']}/{row['method']}/{row['seed']}")
            return
        done[(row["env"], row["seed"], row["method"])] = row
        with jsonl.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        print(f"[{time.time() - t0:6.0f}s] {row['env']:12s} seed {row['seed']} {row['method']:16s} "
              f"J {row['J_clean']:8.1f}  mse {row['mse']:.3f}  ({row['seconds']:.0f}s)", flush=True)

    if args.jobs == 1:
        for j in jobs:
            try:
                record(run_unit(j))
            except Exception as err:  # noqa: BLE001 - one failed unit must not lose the others
                print(f"unit {j[:3]} failed: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
    else:
        hard = t0 + args.hard_seconds if args.hard_seconds else float("inf")
        pool = ProcessPoolExecutor(args.jobs)
        futs = {pool.submit(run_unit, j) for j in jobs}
        while futs:
            finished, futs = wait(futs, timeout=None if hard == float("inf") else max(hard - time.time(), 0.0),
                                  return_when=FIRST_COMPLETED)
            for fut in finished:
                try:
                    record(fut.result())
                except Exception as err:  # noqa: BLE001 - one failed unit must not lose the others
                    print(f"unit failed: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
            if futs and time.time() >= hard:  # summarise what finished rather than be killed with nothing
                print(f"--hard-seconds reached: {len(futs)} unfinished units abandoned", file=sys.stderr, flush=True)
                skipped["hard-seconds reached"] = [str(len(futs))] * len(futs)
                for proc in list(getattr(pool, "_processes", {}).values()):  # our own workers, by process object
                    proc.terminate()
                pool.shutdown(wait=False, cancel_futures=True)
                break
        else:
            pool.shutdown()
    units = list(done.values())
    if not units:
        print("no finished units; nothing to summarise", file=sys.stderr)
        return 1
    rows, pairs, targets = summarize(units, args.envs, [m for m in METHODS if m in args.methods])
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                if k not in ("resume_from", "out", "cache_dir", "results_root")}
    settings["command"] = "python tools/bench/c2l.py --stage2 " + " ".join(argv if argv is not None else sys.argv[1:])
    settings["units_finished"] = len(units)
    settings["units_expected"] = len(args.envs) * args.seeds * len(args.methods)
    settings["skipped"] = {k: len(v) for k, v in skipped.items()}
    settings["seconds_this_run"] = time.time() - t0
    settings["experts"] = {env: expert_info(args, env) for env in args.envs}
    settings["confounding_configs"] = {env: confounding_for(env, args.confounding, args.k, args.sigma).to_dict()
                                       for env in args.envs}
    path = write_results("c2l", args.results_name, rows + pairs + targets, settings,
                         root=args.results_root, extra={"units": units})
    md = [f"# C2L stage 2 ({len(units)}/{settings['units_expected']} units), results {path}", ""]
    for title, rs in (("Methods (mean ± 95 % CI over seeds)", rows), ("Paired differences", pairs),
                      ("Targets", targets)):
        if rs:
            md += [f"## {title}", "", markdown_table([{k: v for k, v in r.items() if k != "table"
                                                        and not k.endswith(("_mean", "_ci"))} for r in rs]), ""]
    if skipped:
        md += ["Skipped: " + "; ".join(f"{k}: {len(v)} units" for k, v in skipped.items()), ""]
    (args.out / f"{args.results_name}.md").write_text("\n".join(md), encoding="utf-8")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
