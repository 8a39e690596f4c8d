"""Benchmark: ER, DER++, ER-ACE and CLS-ER, each alone / +CLFD / +FDINet, same seeds, on Split Digits and Split
Fractals (100 classes, 10 tasks; commons.data.fractal_classes). Results go through commons.results
(``results/clfreq/rehearsal_<quick|full>.json``) and the README tables are generated from them.

Budgets exercise every method: CLFD's class-aware selection needs at least 3 epochs per task (its warm-up starts
after 40 % of the epochs, so at 2 epochs it overwrites the similarity-based initialisation right after epoch 1);
``--quick`` runs 3, ``--full`` 5. Hyper-parameters: mammoth's best args for Split CIFAR-10, buffer 50 (BEST_ARGS);
on Split Digits with ``--quick`` the QUICK_ARGS (ER-ACE lr 0.1, faster CLS-ER EMAs; see the README).

    python tools/bench/clfreq.py --quick                   # CPU: Split Digits, ER and ER-ACE, 3 seeds (~5 min)
    python tools/bench/clfreq.py --full --device cuda --jobs 10 --threads 1 --max-seconds 470 --out $OUT  # one H100

``--full`` writes ``$OUT/clfreq/rehearsal_full.json`` (copy it to ``results/clfreq/``), ``$OUT/rehearsal_full.md``
and ``$OUT/accuracy.png``.

Interruptible: with ``--out``, every finished run is appended at once to ``<out>/clfreq/rehearsal_<mode>.partial.jsonl``
(one JSON line: key, job, seconds, row). ``--resume-from FILE...`` skips the runs found there (same settings only) and
the final JSON combines them with the new ones; ``--max-seconds S`` submits no run that would end after S seconds
(predicted from the last finished run of the same kind), waits for the running ones, writes the results of what
is done and exits 0, naming how many runs remain. Runs are ordered seed-major (every method and plugin for seed 0,
then seed 1, ...), so a partial run has whole seeds; the JSON's settings say ``complete: true/false``.
With ``--jobs N`` the runs share the machine (and the GPU): ``train s`` and the CLFD time ratio are measured under
that sharing (host and variant of a seed run side by side); peak memory is per process and unaffected.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

# this file is named like the package: drop its folder from sys.path so `import clfreq` finds the package
sys.path = [p for p in sys.path if Path(p or '.').resolve() != Path(__file__).resolve().parent]

_SHORT = {"reg_weight": "λ", "stable_freq": "r_S", "plastic_freq": "r_P", "stable_alpha": "α_S",
          "plastic_alpha": "α_P", "alpha": "α", "beta": "β"}
_BENCH_CACHE: dict = {}


def _fmt(hp: dict) -> str:
    return " ".join(f"{_SHORT.get(k, k)} {v:g}" for k, v in hp.items())


def _bench(name: str):
    from clfreq.rehearsal import split_digits, split_fractals

    if name not in _BENCH_CACHE:
        _BENCH_CACHE[name] = split_digits(seed=None) if name == "split-digits" else split_fractals()
    return _BENCH_CACHE[name]


def _hparams(bench: str, method: str, buffer_size: int, quick: bool, short_ema: bool = False) -> dict:
    """mammoth's Split CIFAR-10 best arguments; with ``quick`` (Split Digits) or ``short_ema`` (CLS-ER on any
    benchmark) the Split Digits quick arguments, whose CLS-ER EMA rates fit runs of a few hundred steps."""
    from clfreq.rehearsal import BEST_ARGS, QUICK_ARGS

    key = 50 if buffer_size <= 50 else 125
    if quick and (bench, key) in QUICK_ARGS:
        return dict(QUICK_ARGS[(bench, key)][method])
    if short_ema and method == "cls-er":
        return dict(QUICK_ARGS[("split-digits", 50)][method])
    return dict(BEST_ARGS[("split-cifar10", key)][method])


def run_one(job: dict) -> dict:
    """One (benchmark, method, plugin, seed) run; module-level so worker processes can run it."""
    from clfreq.rehearsal import create_method, train_continual

    torch.set_num_threads(job["threads"])
    m = create_method(job["method"], plugin=job["plugin"], nf=job["nf"], buffer_size=job["buffer_size"],
                      **job["hp"])
    r = train_continual(m, _bench(job["bench"]), epochs=job["epochs"], seed=job["seed"], device=job["device"])
    keep = ("method", "seed", "class_il", "task_il", "forgetting", "train_seconds", "peak_memory_bytes", "params",
            "backbone_params", "buffer_capacity", "per_task_class_il")
    return {"bench": job["bench"], **{k: r[k] for k in keep}}


def _ms(runs: list[dict], key: str, scale: float = 100.0, digits: int = 1) -> str:
    v = np.array([r[key] for r in runs], dtype=float) * scale
    return f"{v.mean():.{digits}f} ± {v.std():.{digits}f}"


def _peak(runs: list[dict]) -> float:
    """Peak memory of a configuration: the minimum over its seeds. A configuration's allocations do not depend on the
    seed, but the first run in a worker process also counts the process's one-time CUDA allocations (cuBLAS/cuDNN
    workspaces, which later runs find already allocated): +68 MiB on every seed-0 run of the 2026-12-08 GPU run."""
    return float(min(r["peak_memory_bytes"] for r in runs))


def summarise(runs: list[dict], hps: dict) -> list[dict]:
    """Main rows per benchmark and one claims row per host (CLFD / FDINet against the same host, same seeds)."""
    rows = []
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in runs:
        groups.setdefault((r["bench"], r["method"]), []).append(r)
    for (bench, label), rs in groups.items():
        host = label.split("-", 1)[1] if label.startswith(("clfd-", "fdinet-")) else label
        rows.append({"table": bench, "method": label, "seeds": len(rs), "hparams": _fmt(hps[(bench, host)]),
                     "Class-IL %": _ms(rs, "class_il"), "Task-IL %": _ms(rs, "task_il"),
                     "forgetting %": _ms(rs, "forgetting"), "train s": _ms(rs, "train_seconds", 1.0),
                     "peak mem MiB": round(_peak(rs) / 2**20, 1),
                     "backbone params": rs[0]["backbone_params"], "buffer slots": rs[0]["buffer_capacity"]})
    for (bench, label), rs in list(groups.items()):
        if label.startswith(("clfd-", "fdinet-")):
            continue

        def vals(key, lab, seeds, bench=bench):
            return [r[key] for r in groups.get((bench, lab), []) if r["seed"] in seeds]

        def mean(key, lab, seeds):
            return float(np.mean(vals(key, lab, seeds) or [np.nan]))

        def peak(lab, seeds, bench=bench):
            return _peak([r for r in groups.get((bench, lab), []) if r["seed"] in seeds])

        row = {"table": f"{bench}-claims", "host": label}
        host_seeds = {r["seed"] for r in rs}
        c, f = f"clfd-{label}", f"fdinet-{label}"
        # a stopped run may hold a seed for the host and not for its variant: compare over the seeds both have
        if seeds := host_seeds & {r["seed"] for r in groups.get((bench, c), [])}:
            row |= {"CLFD ΔClass-IL pts": round(100 * (mean("class_il", c, seeds) - mean("class_il", label, seeds)), 1),
                    "CLFD time ×": round(mean("train_seconds", label, seeds) / mean("train_seconds", c, seeds), 2),
                    "CLFD memory ×": round(peak(label, seeds) / max(peak(c, seeds), 1), 2)}
        if seeds := host_seeds & {r["seed"] for r in groups.get((bench, f), [])}:
            row |= {"FDINet ΔClass-IL pts": round(100 * (mean("class_il", f, seeds)
                                                         - mean("class_il", label, seeds)), 1),
                    "host seed std pts": round(100 * float(np.std(vals("class_il", label, seeds))), 1),
                    "FDINet params −%": round(100 * (1 - mean("backbone_params", f, seeds)
                                                     / mean("backbone_params", label, seeds)), 1),
                    "FDINet memory −%": round(100 * (1 - peak(f, seeds) / max(peak(label, seeds), 1)), 1)}
        rows.append(row)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="CPU: Split Digits, nf 8, 3 epochs, ER and ER-ACE")
    p.add_argument("--full", action="store_true", help="GPU: Split Digits + Split Fractals, nf 20, 5 epochs, all")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--nf", type=int, default=None)
    p.add_argument("--buffer-size", type=int, default=50)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=None, choices=("er", "der++", "er-ace", "cls-er"))
    p.add_argument("--benchmarks", nargs="+", default=None, choices=("split-digits", "split-fractals"))
    p.add_argument("--plugins", nargs="+", default=["none", "clfd", "fdinet"], choices=("none", "clfd", "fdinet"))
    p.add_argument("--clser-short-ema", action="store_true",
                   help="CLS-ER with the Split Digits quick EMA rates (horizon ~20 steps instead of ~10,000); "
                        "results go to <name>_clser_short_ema.json")
    p.add_argument("--device", default="cpu")
    p.add_argument("--jobs", type=int, default=1, help="worker processes (each runs whole runs; GPU: share the card)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per worker (default: this machine's threads / --jobs; 1 on a GPU)")
    p.add_argument("--out", default=None, help="folder for the JSON (under clfreq/), partial JSON lines, table, plot")
    p.add_argument("--resume-from", type=Path, nargs="+", default=[], metavar="FILE",
                   help="partial .jsonl file(s) of an earlier call: their runs (same settings) are not run again")
    p.add_argument("--max-seconds", type=float, default=None,
                   help="submit no run predicted to end after this many seconds; write what is done and exit 0")
    a = p.parse_args()
    if a.quick == a.full:
        p.error("pass exactly one of --quick or --full")
    name = ("rehearsal_quick" if a.quick else "rehearsal_full") + ("_clser_short_ema" if a.clser_short_ema else "")
    a.epochs = a.epochs or (3 if a.quick else 5)
    a.nf = a.nf or (8 if a.quick else 20)
    a.methods = a.methods or (["er", "er-ace"] if a.quick else ["er", "der++", "er-ace", "cls-er"])
    a.benchmarks = a.benchmarks or (["split-digits"] if a.quick else ["split-digits", "split-fractals"])
    if a.epochs < 3:
        p.error("--epochs must be at least 3 so CLFD's similarity-based selection runs before its warm-up")
    if a.jobs < 1 or (a.threads is not None and a.threads < 1):
        p.error("--jobs and --threads must be at least 1")
    if a.max_seconds is not None and a.max_seconds <= 0:
        p.error(f"--max-seconds must be positive, got {a.max_seconds}")
    for f in a.resume_from:
        if not f.is_file():
            p.error(f"--resume-from: no file {f}")
    from commons.jobs import load_partial, run_jobs
    from commons.reporting import markdown_table, save_line_plot
    from commons.results import write_results

    threads = a.threads or (1 if a.device.startswith("cuda") else max(1, torch.get_num_threads() // a.jobs))
    # seed-major (a stopped run holds whole seeds), Split Fractals (the long runs) first within a seed
    benches = sorted(a.benchmarks, key=lambda b: b != "split-fractals")
    hps = {(b, m): _hparams(b, m, a.buffer_size, a.quick, a.clser_short_ema) for b in benches for m in a.methods}
    jobs = [{"key": f"{bench}/{method}/{plugin}/{seed}", "kind": f"{bench}/{method}/{plugin}", "bench": bench,
             "method": method, "plugin": None if plugin == "none" else plugin, "seed": seed,
             "hp": hps[(bench, method)], "epochs": a.epochs, "nf": a.nf, "buffer_size": a.buffer_size,
             "device": a.device, "threads": threads}
            for seed in a.seeds for bench in benches for method in a.methods for plugin in a.plugins]
    start = time.perf_counter()
    done = load_partial(a.resume_from, jobs)
    resumed = len(done)
    partial = Path(a.out) / "clfreq" / f"{name}.partial.jsonl" if a.out else None
    print(f"{len(jobs)} runs, {resumed} resumed, {len(jobs) - resumed} to run on {a.jobs} worker(s) x {threads} "
          f"thread(s)" + (f", partial results -> {partial}" if partial else ""), flush=True)

    def report(rec: dict, elapsed: float) -> None:
        r = rec["row"]
        print(f"[{elapsed:6.0f} s] {rec['key']}: CIL {r['class_il']:.3f} train {r['train_seconds']:.1f} s "
              f"({rec['seconds']:.0f} s wall, {len(done)}/{len(jobs)} done)", flush=True)

    left = run_jobs(jobs, run_one, a.jobs, partial, done, a.max_seconds, start, report)
    if left:
        print(f"{len(left)} of {len(jobs)} runs remain (not started within --max-seconds, or failed); resume with "
              f"--resume-from {partial or 'the partial file of a call with --out'}", flush=True)
    runs = [done[j["key"]]["row"] for j in jobs if j["key"] in done]
    if not runs:
        print("no finished runs: nothing to write", flush=True)
        return
    rows = summarise(runs, hps)
    settings = {"mode": "quick (CPU)" if a.quick else "full", "complete": not left, "runs_done": len(runs),
                "runs_total": len(jobs), "runs_resumed": resumed, "epochs_per_task": a.epochs, "nf": a.nf,
                "buffer_size": a.buffer_size, "batch_size": 32, "minibatch": 32, "seeds": a.seeds,
                "benchmarks": a.benchmarks, "methods": a.methods, "plugins": a.plugins, "device": a.device,
                "jobs": a.jobs, "threads_per_job": threads, "wall_seconds": round(time.perf_counter() - start, 1),
                "hparams": {f"{b}/{m}": hp for (b, m), hp in hps.items()},
                "command": " ".join(sys.argv)}
    if left:
        settings["missing_runs"] = [j["key"] for j in left]
    extra = {"per_seed_class_il": {f"{r['bench']}/{r['method']}/{r['seed']}": r["class_il"] for r in runs},
             "run_seconds": {k: rec["seconds"] for k, rec in done.items()}}
    root = Path(a.out) if (a.out and a.full) else None  # quick: the repo's results/
    path = write_results("clfreq", name, rows, settings, extra=extra, root=root)
    md = "\n\n".join(f"### {t}\n\n" + markdown_table([{k: v for k, v in r.items() if k != "table"} for r in rows
                                                       if r["table"] == t])
                     for t in dict.fromkeys(r["table"] for r in rows))
    print(md)
    if a.out:
        (Path(a.out) / f"{name}.md").write_text(md + "\n")
        series = {}
        for r in runs:
            series.setdefault(f"{r['bench']}:{r['method']}", []).append(r["per_task_class_il"])
        save_line_plot(Path(a.out) / "accuracy.png",
                       {k: (list(range(1, len(v[0]) + 1)), list(np.mean(v, 0))) for k, v in series.items()},
                       "tasks seen", "average Class-IL accuracy", "clfreq rehearsal bench")
    print(f"wrote {path}" + ("" if not left else f" (incomplete: {len(left)} runs missing)"))


if __name__ == "__main__":
    main()
