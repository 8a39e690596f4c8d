"""Benchmark: can the weighting strategies be told apart? MTKD-RL vs AVER, CA-MKD, EBKD, AEKD, MMKD and the student
alone on heterogeneous teacher pools (a strong, a weak and a partly wrong teacher of different architectures, see
``kdrl.pools``), with paired per-seed deltas and confidence intervals, per-teacher mean weights of each strategy and
wall time per epoch.

    python tools/bench/kdrl.py --quick      # CPU: digits + small 100-class fractal pool, 5 seeds
    python tools/bench/kdrl.py --full --out $OUT   # GPU, the paper's CIFAR architectures on the 100-class set

``--quick`` writes ``results/kdrl/kdrl_quick.json`` and ``--full`` ``results/kdrl/kdrl_full.json`` through
``commons.results`` (``--results-root`` to write elsewhere, e.g. ``$OUT`` on a GPU box), plus ``weights_<pool>.png``
and ``raw.json`` in ``--out`` (copied beside the JSON with ``--results-root``).

Parallel: the teachers are trained (or loaded from ``--out/teachers``) once in the main process and saved there as
safetensors; the (seed, strategy) units then run ``--jobs`` at a time (``--full``: 8), each in its own spawned process
on the same device (``kdrl.pool_runs.run_unit`` through ``commons.jobs.run_jobs``; a worker loads the teachers from
the saved files and checks their fingerprint). A unit depends only on its seed and strategy, not on ``--jobs``
(on a CPU at equal ``--threads`` the results are bit-identical). Units that share the device slow each other down,
so with ``--jobs > 1`` a short solo timing pass runs first (each strategy alone, seed 0, ``--timing-epochs``
epochs, in the main process): its per-epoch times give the ``s_per_epoch`` / ``time_vs_aver_pct`` columns and the
time target (the settings' ``time_columns`` say which source a pool's numbers come from).

Interruptible: every finished unit (pool, strategy, seed) is appended at once to ``kdrl_<setting>_units.jsonl``
(in ``--results-root`` if given, else ``--out``), with the fingerprint of the teachers it was distilled from.
``--resume-from FILE`` reuses the units of an earlier file (copied into the new one) and runs only the missing ones:
a unit is reused when its teachers' fingerprint equals this run's, or when its whole seed (every strategy) was
finished with one set of teachers (a complete paired set); solo timings are reused with the same teachers.
``--max-seconds`` (``--full``: 480, counted from the start) starts no unit predicted to end after it (1.1 x the last
finished unit of that strategy, else the longest unit so far) and summarises what is done; the results JSON then
says ``complete: false`` and how many units are missing, and the console ``INCOMPLETE``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import sys
import time
from pathlib import Path

# this file is named like the package: drop its own folder from sys.path so `import kdrl` finds the library
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

STRATEGIES = ["student", "aver", "camkd", "ebkd", "aekd", "mmkd", "mtkd_rl"]
SETTINGS = {
    "quick": {"pools": ["digits", "fractal_small"], "seeds": [0, 1, 2, 3, 4], "epochs": 6, "teacher_epochs": 10,
              "batch_size": 64,  # ~5.5 CPU minutes at one thread: the fractal pool runs the four main methods
              "pool_strategies": {"fractal_small": ["student", "aver", "camkd", "mmkd", "mtkd_rl"]}},
    # one H100: 100-class fractal set at 32x32 (10k/2k images), resnet32x4 / wrn_16_2 (20 % data) / vgg13 (half the
    # classes permuted) -> resnet8x4; more than one 10-minute call: --max-seconds stops cleanly, --resume-from goes on
    "full": {"pools": ["fractal"], "seeds": [0, 1, 2, 3, 4], "epochs": 8, "teacher_epochs": 20,
             "batch_size": 128, "max_seconds": 480, "jobs": 8},
}


class UnitLog:
    """The JSON-lines file of finished units (one ``pool`` line per pool and run, ``timing`` lines of the solo
    timing pass)."""

    def __init__(self, path: Path, previous: list[dict] | None = None):
        self.path = path
        self.previous = previous or []
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("", encoding="utf-8")

    @staticmethod
    def read(path: Path) -> list[dict]:
        rows = []
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:  # a line cut by a killed process
                    logging.warning("%s: skipping an unreadable line", path)
        return rows

    def append(self, row: dict) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()

    def reusable(self, pool: str, fingerprint: str, strategies: list[str]) -> dict:
        """``{(strategy, seed): unit}`` from the earlier file that this run may reuse (see the module docstring)."""
        units = [r for r in self.previous if r.get("kind") == "unit" and r["pool"] == pool]
        keep = {}
        for r in units:
            if r["teacher_fingerprint"] == fingerprint:
                keep[(r["strategy"], r["seed"])] = r
        by_seed: dict = {}
        for r in units:
            by_seed.setdefault((r["seed"], r["teacher_fingerprint"]), {})[r["strategy"]] = r
        for (seed, fp), runs in by_seed.items():
            if fp != fingerprint and set(strategies) <= set(runs) and not any((s, seed) in keep for s in strategies):
                keep.update({(s, seed): runs[s] for s in strategies})
        return keep

    def timings(self, pool: str, fingerprint: str, epochs: int) -> dict:
        """``{strategy: timing line}`` of an earlier solo timing pass with these teachers and epochs."""
        return {r["strategy"]: r for r in self.previous
                if r.get("kind") == "timing" and r["pool"] == pool and r["teacher_fingerprint"] == fingerprint
                and r["epochs"] == epochs}


#: the units run seed by seed, within a seed the longest first (MMKD's meta steps): seeds finish as complete paired
#: sets and the long units do not start last
_ORDER = {"mmkd": 0, "student": 2}


def run_pool(pool_name, seeds, strategies, epochs, teacher_epochs, batch_size, cache, raw, log, progress,
             started, max_seconds, jobs, threads, timing_epochs):
    """Train (or load) the pool's teachers, then every (seed, strategy) unit not reusable from ``log`` in ``jobs``
    processes (``kdrl.pool_runs.run_unit``; ``commons.jobs.run_jobs``); each unit is appended to ``log`` when it
    ends. With ``timing_epochs``, first a solo timing pass (each strategy alone, seed 0, that many epochs, in this
    process), whose per-epoch times feed the time columns. Returns False when ``max_seconds`` left units unrun."""
    import torch

    from commons.device import TrainingBackend
    from commons.jobs import run_jobs
    from kdrl import TeacherPool
    from kdrl.pool_runs import make_job, prime, run_unit, teacher_fingerprint
    from kdrl.pools import POOLS, build_pool, pool_loaders
    from kdrl.training import evaluate_classifier

    spec = POOLS[pool_name]
    backend = TrainingBackend(cpu=not torch.cuda.is_available())
    train, test = pool_loaders(spec, batch_size)
    t0 = time.perf_counter()
    bench = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True  # same teachers next call
    try:
        teachers, names = build_pool(spec, train, teacher_epochs, cache, backend=backend, progress=progress)
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = bench, False
    fingerprint = teacher_fingerprint(list(teachers))
    info = {
        "spec": spec.to_dict(), "teachers": names, "teacher_seconds": time.perf_counter() - t0,
        "teacher_top1": [evaluate_classifier(m.to(backend.device), test, backend.device)["top1"] for m in teachers],
        "n_train": len(train.dataset), "n_test": len(test.dataset), "device": str(backend.device),
        "teacher_fingerprint": fingerprint, "runs": [], "timing": {},
    }
    raw["pools"][pool_name] = info
    log.append({"kind": "pool", "pool": pool_name, **{k: v for k, v in info.items() if k not in ("runs", "timing")}})
    logging.info("%s teachers (%s): %s", pool_name, fingerprint, dict(zip(names, info["teacher_top1"])))
    reuse = log.reusable(pool_name, fingerprint, strategies)
    for unit in reuse.values():
        log.append(unit)
        info["runs"].append({k: v for k, v in unit.items() if k not in ("kind", "pool")})
    if reuse:
        logging.info("%s: reusing %d finished units from %s", pool_name, len(reuse), "--resume-from")

    def job(name, seed, n_epochs, n_jobs):
        return make_job(pool_name, name, seed, epochs=n_epochs, teacher_epochs=teacher_epochs,
                        batch_size=batch_size, cache_dir=str(cache), data_kwargs=spec.data_kwargs,
                        fingerprint=fingerprint, device="cpu" if backend.device.type == "cpu" else "cuda",
                        threads=threads, jobs=n_jobs)

    prime(job(strategies[0], 0, epochs, 1), TeacherPool(teachers, names=names), train, test, backend)
    if timing_epochs:  # each strategy alone on the device: the time columns must not be measured under contention
        earlier = log.timings(pool_name, fingerprint, timing_epochs)
        if any(name not in earlier for name in strategies):  # one-time costs (first kernels, allocations) land here
            warm = run_unit(job("aver" if "aver" in strategies else strategies[0], 0, 1, 1))
            logging.info("%s: warm-up epoch (%s) %.1f s, not used", pool_name, warm["strategy"], warm["seconds"])
        for name in strategies:
            if name in earlier:
                info["timing"][name] = {k: v for k, v in earlier[name].items() if k not in ("kind", "pool")}
                log.append(earlier[name])
                continue
            guess = max((t["seconds"] for t in info["timing"].values()), default=0.0)  # as run_jobs predicts
            if max_seconds is not None and time.perf_counter() - started + guess > max_seconds:
                logging.info("--max-seconds: no time left for the solo timing pass")
                return False
            run = run_unit(job(name, 0, timing_epochs, 1))
            info["timing"][name] = {**run, "teacher_fingerprint": fingerprint}
            log.append({"kind": "timing", "pool": pool_name, "teacher_fingerprint": fingerprint, **run})
            logging.info("%s %s solo timing: %s s per epoch", pool_name, name,
                         " ".join(f"{t:.2f}" for t in run["epoch_seconds"]))
    todo = [job(name, seed, epochs, jobs) for seed in seeds
            for name in sorted(strategies, key=lambda s: _ORDER.get(s, 1)) if (name, seed) not in reuse]
    done = {f"{pool_name}/{s}/{seed}": {"job": {"kind": f"{pool_name}/{s}"}, "seconds": u["seconds"]}
            for (s, seed), u in reuse.items()}

    def report(rec, elapsed):
        run = rec["row"]
        info["runs"].append(run)
        log.append({"kind": "unit", "pool": pool_name, "teacher_fingerprint": fingerprint, **run})
        logging.info("%s %s seed %d: %.2f%% (%.1f s; %.0f s elapsed)", pool_name, run["strategy"], run["seed"],
                     run["final_top1"], run["seconds"], elapsed)

    if todo:
        logging.info("%s: %d units on %d process(es) x %d thread(s)", pool_name, len(todo), jobs, threads)
    left = run_jobs(todo, run_unit, jobs, None, done, max_seconds, started, report)
    if left:
        logging.info("%s: %d units not run (--max-seconds %s, or failed)", pool_name, len(left), max_seconds)
    return not left


def summarise(raw):
    """Rows for commons.results: tables teachers, accuracy, paired, weights, targets."""
    from kdrl.pools import paired_ci, weight_shares

    rows = []
    for pool_name, p in raw["pools"].items():
        roles = [n.split(":")[0] for n in p["teachers"]]
        for n, acc in zip(p["teachers"], p["teacher_top1"]):
            rows.append({"table": "teachers", "pool": pool_name, "teacher": n, "top1": round(acc, 2)})
        by = {}
        for r in p["runs"]:
            by.setdefault(r["strategy"], {})[r["seed"]] = r
        seeds = sorted(set.intersection(*(set(v) for v in by.values()))) if by else []
        if not seeds:
            continue

        def epoch_time(name, by=by, seeds=seeds):  # mean wall time of an epoch after the first (allocations)
            return statistics.fmean(t for s in seeds for t in (by[name][s]["epoch_seconds"][1:]
                                                                  or by[name][s]["epoch_seconds"]))

        on_cpu = p["device"] == "cpu"  # on a shared CPU, process time measures the work; on a GPU, wall time

        solo = p.get("timing") or {}
        solo = solo if set(by) <= set(solo) else {}  # one source for every method, or the ratios mix clocks

        def cost(name, by=by, seeds=seeds, on_cpu=on_cpu, solo=solo):
            if solo:  # the solo timing pass (units ran several at a time on the device)
                t = solo[name]
                if on_cpu:
                    return t["cpu_seconds"] / t["epochs"]
                return statistics.fmean(t["epoch_seconds"][1:] or t["epoch_seconds"])
            if on_cpu:
                return statistics.fmean(by[name][s]["cpu_seconds"] / by[name][s]["epochs"] for s in seeds)
            return epoch_time(name)

        aver_t = cost("aver") if "aver" in by else None
        base = statistics.fmean(by["student"][s]["final_top1"] for s in seeds) if "student" in by else None
        for name, runs in by.items():
            accs = [runs[s]["final_top1"] for s in seeds]
            t = cost(name)
            rows.append({"table": "accuracy", "pool": pool_name, "method": name,
                         "top1": round(statistics.fmean(accs), 2),
                         "std": round(statistics.stdev(accs), 2) if len(accs) > 1 else 0.0,
                         "delta_vs_student": round(statistics.fmean(accs) - base, 2) if base is not None else "",
                         "s_per_epoch": round(t, 3),
                         "clock": ("cpu" if on_cpu else "wall") + (", solo pass" if solo else ""),
                         "time_vs_aver_pct": round(100 * (t / aver_t - 1), 1) if aver_t and name != "student" else "",
                         "seeds": len(seeds)})
            if name != "student":
                per_seed = [weight_shares(runs[s]["logit_weights"]) for s in seeds]
                mean_share = [statistics.fmean(w[i] for w in per_seed) for i in range(len(roles))]
                rows.append({"table": "weights", "pool": pool_name, "method": name,
                             **{f"w_{role}": round(v, 3) for role, v in zip(roles, mean_share)}})
        if "mtkd_rl" in by:
            for other in [s for s in by if s != "mtkd_rl"]:
                diffs = [by["mtkd_rl"][s]["final_top1"] - by[other][s]["final_top1"] for s in seeds]
                ci = paired_ci(diffs)
                if len(diffs) < 2:  # no interval from one seed (strict JSON has no NaN)
                    ci["low"] = ci["high"] = ci["mean"]
                rows.append({"table": "paired", "pool": pool_name, "comparison": f"mtkd_rl - {other}",
                             "mean_delta": round(ci["mean"], 2), "ci95_low": round(ci["low"], 2),
                             "ci95_high": round(ci["high"], 2),
                             "wins_ties_losses": f"{sum(d > 0 for d in diffs)}/{sum(d == 0 for d in diffs)}/"
                                                 f"{sum(d < 0 for d in diffs)}",
                             "separated": ("n/a (1 seed)" if len(diffs) < 2 else "yes" if ci["low"] > 0
                                           else "worse" if ci["high"] < 0 else "no")})
    return rows


def _time_source(pool: dict, raw: dict) -> str:
    """Where a pool's ``s_per_epoch`` / ``time_vs_aver_pct`` (and the time target) come from."""
    clock = "process (CPU) time per epoch" if pool["device"] == "cpu" else "wall time per epoch after the first"
    timing = pool.get("timing") or {}
    if timing and {r["strategy"] for r in pool["runs"]} <= set(timing):
        n = next(iter(timing.values()))["epochs"]
        return (f"solo timing pass: each strategy alone on the device, seed 0, {n} epochs, {clock} (the units ran "
                f"{raw.get('jobs', 1)} at a time, so their own times are contended)")
    return f"the units themselves ({raw.get('jobs', 1)} at a time), {clock}, mean over seeds"


def targets(rows):
    """The issue's targets, per pool, from the summary rows."""
    out = []
    for pool in sorted({r["pool"] for r in rows}):
        paired = {r["comparison"]: r for r in rows if r["pool"] == pool and r["table"] == "paired"}
        weights = {r["method"]: r for r in rows if r["pool"] == pool and r["table"] == "weights"}
        acc = {r["method"]: r for r in rows if r["pool"] == pool and r["table"] == "accuracy"}
        for other in ("aver", "camkd"):
            r = paired.get(f"mtkd_rl - {other}")
            if r:
                out.append({"table": "targets", "pool": pool, "target": f"MTKD-RL beats {other} beyond the 95% CI",
                            "value": f"{r['mean_delta']:+.2f} [{r['ci95_low']:+.2f}, {r['ci95_high']:+.2f}]",
                            "met": "n/a" if r["separated"].startswith("n/a") else
                            ("yes" if r["ci95_low"] > 0 else "no")})
        if "mtkd_rl" in weights and "aver" in weights:
            m, a = weights["mtkd_rl"]["w_partly_wrong"], weights["aver"]["w_partly_wrong"]
            out.append({"table": "targets", "pool": pool,
                        "target": "MTKD-RL's weight share on the wrong teacher < AVER's",
                        "value": f"{m:.3f} vs {a:.3f}", "met": "yes" if m < a else "no"})
        if "mtkd_rl" in acc and acc["mtkd_rl"]["time_vs_aver_pct"] != "":
            v = acc["mtkd_rl"]["time_vs_aver_pct"]
            out.append({"table": "targets", "pool": pool, "target": "MTKD-RL time per epoch over AVER <= 15%",
                        "value": f"{v:+.1f}%", "met": "yes" if v <= 15 else "no"})
    return out


def plot_weights(raw, pool_name, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = raw["pools"][pool_name]
    methods = [m for m in ("aver", "camkd", "ebkd", "aekd", "mmkd", "mtkd_rl")
               if any(r["strategy"] == m for r in p["runs"])]
    if not methods:
        raise ValueError("no finished unit of a weighting strategy")
    fig, axes = plt.subplots(1, len(methods), figsize=(3.3 * len(methods), 3.2), dpi=110, sharey=True)
    axes = [axes] if len(methods) == 1 else axes
    for ax, m in zip(axes, methods):
        runs = [r for r in p["runs"] if r["strategy"] == m]
        n_ep = min(len(r["logit_weights"]) for r in runs)
        for i, teacher in enumerate(p["teachers"]):
            ys = []
            for e in range(n_ep):
                vals = [r["logit_weights"][e][i] / max(sum(r["logit_weights"][e]), 1e-12) for r in runs]
                ys.append(statistics.fmean(vals))
            ax.plot(range(n_ep), ys, marker=".", label=teacher)
        ax.set_title(m, fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("share of logit-KD weight (mean over seeds)")
    axes[0].legend(fontsize=6)
    fig.suptitle(f"per-teacher weight share, pool {pool_name}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="CPU setting (default)")
    mode.add_argument("--full", action="store_true", help="GPU setting: CIFAR architectures on the 100-class set")
    p.add_argument("--pools", default=None, help="comma-separated pools (kdrl.pools.POOLS)")
    p.add_argument("--seeds", default=None)
    p.add_argument("--epochs", type=int, default=None, help="student epochs")
    p.add_argument("--teacher-epochs", type=int, default=None)
    p.add_argument("--strategies", default=None, help=f"comma-separated (default {','.join(STRATEGIES)})")
    p.add_argument("--out", default="runs/bench/kdrl", help="working folder (teacher cache, plots, raw.json)")
    p.add_argument("--results-root", default=None, help="folder for <package>/<bench>.json (default: repo results/)")
    p.add_argument("--no-results", action="store_true", help="do not write commons.results JSON")
    p.add_argument("--from-raw", default=None, help="summarise an earlier raw.json without training")
    p.add_argument("--resume-from", default=None,
                   help="an earlier kdrl_<setting>_units.jsonl: reuse its finished units, run the missing ones")
    p.add_argument("--max-seconds", type=float, default=None,
                   help="stop before a unit predicted to end after this many seconds from the start and summarise "
                   "what is done (default: --full 480, --quick none; 0: no limit)")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--per-class", type=int, default=None,
                   help="fractal pools: training images per class (a smaller copy of the setting, e.g. a CPU check)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per process, main and workers (default 1: the shared CI box on a CPU; on a GPU "
                   "they only launch kernels)")
    p.add_argument("--jobs", type=int, default=None,
                   help="units run at once, each in its own process on the same device (default: --full 8, "
                   "--quick 1); results do not depend on it (CPU: bit-identical at equal --threads)")
    p.add_argument("--timing-epochs", type=int, default=2,
                   help="with --jobs > 1: epochs of the solo timing pass (each strategy alone, seed 0) that gives "
                   "the time columns; the first epoch is not timed on a GPU (default 2; 0: time the units)")
    args = p.parse_args(argv)
    for flag in ("jobs", "threads"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            p.error(f"--{flag} must be >= 1, got {getattr(args, flag)}")
    if args.timing_epochs < 0:
        p.error(f"--timing-epochs must be >= 0, got {args.timing_epochs}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.perf_counter()
    import torch

    setting = "full" if args.full else "quick"
    cfg = dict(SETTINGS[setting])
    if args.pools:
        cfg["pools"] = args.pools.split(",")
    if args.seeds:
        cfg["seeds"] = [int(s) for s in args.seeds.split(",")]
    cfg["epochs"] = args.epochs or cfg["epochs"]
    cfg["teacher_epochs"] = args.teacher_epochs or cfg["teacher_epochs"]
    max_seconds = args.max_seconds if args.max_seconds is not None else cfg.pop("max_seconds", None)
    cfg.pop("max_seconds", None)
    jobs = args.jobs or cfg.pop("jobs", 1)
    cfg.pop("jobs", None)
    max_seconds = max_seconds or None
    args.strategies_given = args.strategies is not None
    strategies = [s for s in (args.strategies or ",".join(STRATEGIES)).split(",") if s]
    previous = []
    if args.resume_from:
        if not Path(args.resume_from).is_file():
            raise SystemExit(f"--resume-from: no such file {args.resume_from}")
        previous = UnitLog.read(Path(args.resume_from))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    threads = args.threads or 1  # on a GPU the host threads only launch kernels and collate batches
    if torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True
    torch.set_num_threads(threads)
    timing_epochs = args.timing_epochs if jobs > 1 else 0
    raw_path = out / "raw.json"
    units_path = Path(args.results_root or out) / f"kdrl_{setting}_units.jsonl"
    complete = True
    if args.from_raw:
        raw = json.loads(Path(args.from_raw).read_text(encoding="utf-8"))
    else:
        from kdrl.pools import POOLS

        unknown = [q for q in cfg["pools"] if q not in POOLS]
        if unknown:
            raise SystemExit(f"--pools: unknown {unknown}; choose from {sorted(POOLS)}")
        if args.per_class is not None:
            if args.per_class < 1:
                raise SystemExit(f"--per-class must be >= 1, got {args.per_class}")
            for q in cfg["pools"]:
                if POOLS[q].data == "fractal":
                    POOLS[q].data_kwargs.update(per_class=args.per_class,
                                                test_per_class=max(1, args.per_class // 5))
            cfg["per_class"] = args.per_class
        raw = {"setting": setting, "config": cfg, "strategies": strategies, "pools": {}, "jobs": jobs,
               "threads_per_job": threads, "timing_epochs": timing_epochs,
               "command": "python tools/bench/kdrl.py " + " ".join(argv if argv is not None else sys.argv[1:])}
        log = UnitLog(units_path, previous)
        only = cfg.get("pool_strategies", {})
        total = 0
        for pool in cfg["pools"]:
            chosen = strategies
            if pool in only and not args.strategies_given:
                chosen = [s for s in strategies if s in only[pool]]
            total += len(chosen) * len(cfg["seeds"])
            if complete:
                complete = run_pool(pool, cfg["seeds"], chosen, cfg["epochs"], cfg["teacher_epochs"],
                                    cfg["batch_size"], out / "teachers", raw, log, args.progress, started,
                                    max_seconds, jobs, threads, timing_epochs)
        raw["wall_seconds"] = time.perf_counter() - started
        raw["units_done"] = sum(len(v["runs"]) for v in raw["pools"].values())
        raw["units_total"] = total
        raw["complete"] = complete and raw["units_done"] >= total
        raw_path.write_text(json.dumps(raw), encoding="utf-8")
    rows = summarise(raw)
    rows += targets(rows)
    images = []
    for pool in raw["pools"]:
        try:
            images.append(str(plot_weights(raw, pool, out / f"weights_{pool}.png")))
        except ImportError:
            logging.info("matplotlib missing: no weight plots")
        except ValueError as e:  # no finished unit of a weighting strategy yet
            logging.info("no weight plot for %s: %s", pool, e)
    from commons.reporting import markdown_table

    for table in ("teachers", "accuracy", "paired", "weights", "targets"):
        sub = [{k: v for k, v in r.items() if k != "table"} for r in rows if r["table"] == table]
        if sub:
            print(f"\n## {table}\n\n" + markdown_table(sub))
    if not args.no_results:
        from commons.results import write_results

        fingerprints: dict = {}
        for v in raw["pools"].values():
            for r in v["runs"]:
                fp = r.get("teacher_fingerprint", v.get("teacher_fingerprint", ""))
                fingerprints[fp] = fingerprints.get(fp, 0) + 1
        settings = {**raw["config"], "setting": raw["setting"], "strategies": raw["strategies"],
                    "command": raw.get("command", "python tools/bench/kdrl.py " + " ".join(
                        argv if argv is not None else sys.argv[1:])),
                    "complete": raw.get("complete", True), "units_done": raw.get("units_done"),
                    "units_total": raw.get("units_total"), "max_seconds": max_seconds,
                    "units_per_teacher_fingerprint": fingerprints,
                    "cpu_seconds_of_runs": round(sum(r.get("cpu_seconds", 0.0) for v in raw["pools"].values()
                                                     for r in v["runs"]), 1),
                    "wall_seconds": round(raw.get("wall_seconds", 0.0), 1),
                    "jobs": raw.get("jobs", 1), "threads_per_job": raw.get("threads_per_job"),
                    "time_columns": {k: _time_source(v, raw) for k, v in raw["pools"].items()},
                    "pools": {k: {"teachers": v["teachers"], "n_train": v["n_train"], "n_test": v["n_test"],
                                  "device": v["device"], "spec": v["spec"],
                                  "teacher_fingerprint": v.get("teacher_fingerprint")}
                              for k, v in raw["pools"].items()}}
        path = write_results("kdrl", f"kdrl_{raw['setting']}", rows, settings, root=args.results_root)
        print("wrote", path)
        if args.results_root:  # keep the plots and the raw runs beside the JSON when writing elsewhere ($OUT)
            for f in [*images, raw_path]:
                if Path(f).resolve() != (Path(args.results_root) / Path(f).name).resolve():
                    shutil.copy(f, Path(args.results_root))
    if not raw.get("complete", True):
        print(f"INCOMPLETE: {raw['units_done']}/{raw['units_total']} units; continue with the same command plus "
              f"--resume-from {units_path}")
    print("wrote", raw_path, units_path, *images, f"({time.perf_counter() - started:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
