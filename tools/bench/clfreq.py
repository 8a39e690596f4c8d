"""Benchmark: ER, DER++, ER-ACE and CLS-ER, each alone / +CLFD / +FDINet, same seeds, on Split Digits and Split
Fractals (100 classes, 10 tasks; commons.data.fractal_classes). Results go through commons.results
(``results/clfreq/rehearsal_<quick|full>.json``) and the README tables are generated from them.

Budgets exercise every method: CLFD's class-aware selection needs at least 3 epochs per task (its warm-up starts
after 40 % of the epochs, so at 2 epochs it overwrites the similarity-based initialisation right after epoch 1);
``--quick`` runs 3, ``--full`` 5. Hyper-parameters: mammoth's best args for Split CIFAR-10, buffer 50 (BEST_ARGS);
on Split Digits with ``--quick`` the QUICK_ARGS (ER-ACE lr 0.1, faster CLS-ER EMAs; see the README).

    python tools/bench/clfreq.py --quick                   # CPU: Split Digits, ER and ER-ACE, 3 seeds (~5 min)
    python tools/bench/clfreq.py --full --device cuda --jobs 8 --out $OUT    # one H100: both benchmarks, all hosts

``--full`` writes ``$OUT/clfreq/rehearsal_full.json`` (copy it to ``results/clfreq/``), ``$OUT/rehearsal_full.md``
and ``$OUT/accuracy.png``.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
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


def _hparams(bench: str, method: str, buffer_size: int, quick: bool) -> dict:
    from clfreq.rehearsal import BEST_ARGS, QUICK_ARGS

    key = 50 if buffer_size <= 50 else 125
    if quick and (bench, key) in QUICK_ARGS:
        return dict(QUICK_ARGS[(bench, key)][method])
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


def summarise(runs: list[dict], hps: dict) -> list[dict]:
    """Main rows per benchmark and one claims row per host (CLFD / FDINet against the same host, same seeds)."""
    rows = []
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in runs:
        groups.setdefault((r["bench"], r["method"]), []).append(r)
    for (bench, label), rs in groups.items():
        host = label.split("-", 1)[1] if label.startswith(("clfd-", "fdinet-")) else label
        rows.append({"table": bench, "method": label, "hparams": _fmt(hps[(bench, host)]),
                     "Class-IL %": _ms(rs, "class_il"), "Task-IL %": _ms(rs, "task_il"),
                     "forgetting %": _ms(rs, "forgetting"), "train s": _ms(rs, "train_seconds", 1.0),
                     "peak mem MiB": _ms(rs, "peak_memory_bytes", 1 / 2**20),
                     "backbone params": rs[0]["backbone_params"], "buffer slots": rs[0]["buffer_capacity"]})
    for (bench, label), rs in list(groups.items()):
        if label.startswith(("clfd-", "fdinet-")):
            continue

        def mean(key, lab, bench=bench):
            return float(np.mean([r[key] for r in groups.get((bench, lab), [])] or [np.nan]))

        host_acc, host_std = mean("class_il", label), float(np.std([r["class_il"] for r in rs]))
        row = {"table": f"{bench}-claims", "host": label}
        if (bench, f"clfd-{label}") in groups:
            c = f"clfd-{label}"
            row |= {"CLFD ΔClass-IL pts": round(100 * (mean("class_il", c) - host_acc), 1),
                    "CLFD time ×": round(mean("train_seconds", label) / mean("train_seconds", c), 2),
                    "CLFD memory ×": round(mean("peak_memory_bytes", label) / max(mean("peak_memory_bytes", c), 1), 2)}
        if (bench, f"fdinet-{label}") in groups:
            f = f"fdinet-{label}"
            row |= {"FDINet ΔClass-IL pts": round(100 * (mean("class_il", f) - host_acc), 1),
                    "host seed std pts": round(100 * host_std, 1),
                    "FDINet params −%": round(100 * (1 - mean("backbone_params", f)
                                                     / mean("backbone_params", label)), 1),
                    "FDINet memory −%": round(100 * (1 - mean("peak_memory_bytes", f)
                                                     / max(mean("peak_memory_bytes", label), 1)), 1)}
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
    p.add_argument("--methods", nargs="+", default=None)
    p.add_argument("--benchmarks", nargs="+", default=None, choices=("split-digits", "split-fractals"))
    p.add_argument("--plugins", nargs="+", default=["none", "clfd", "fdinet"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--jobs", type=int, default=1, help="worker processes (each runs whole runs; GPU: share the card)")
    p.add_argument("--out", default=None, help="folder for the JSON (under clfreq/), table and plot")
    a = p.parse_args()
    if a.quick == a.full:
        p.error("pass exactly one of --quick or --full")
    name = "rehearsal_quick" if a.quick else "rehearsal_full"
    a.epochs = a.epochs or (3 if a.quick else 5)
    a.nf = a.nf or (8 if a.quick else 20)
    a.methods = a.methods or (["er", "er-ace"] if a.quick else ["er", "der++", "er-ace", "cls-er"])
    a.benchmarks = a.benchmarks or (["split-digits"] if a.quick else ["split-digits", "split-fractals"])
    if a.epochs < 3:
        p.error("--epochs must be at least 3 so CLFD's similarity-based selection runs before its warm-up")
    from commons.reporting import markdown_table, save_line_plot
    from commons.results import write_results

    jobs, hps = [], {}
    for bench in a.benchmarks:
        for method in a.methods:
            hps[(bench, method)] = _hparams(bench, method, a.buffer_size, a.quick)
            for plugin in a.plugins:
                for seed in a.seeds:
                    jobs.append({"bench": bench, "method": method, "plugin": None if plugin == "none" else plugin,
                                 "seed": seed, "hp": hps[(bench, method)], "epochs": a.epochs, "nf": a.nf,
                                 "buffer_size": a.buffer_size, "device": a.device,
                                 "threads": max(1, torch.get_num_threads() // max(a.jobs, 1))})
    start = time.perf_counter()
    runs = []
    if a.jobs > 1:
        with ProcessPoolExecutor(a.jobs, mp_context=get_context("spawn")) as pool:
            for r in pool.map(run_one, jobs):
                runs.append(r)
                print(f"{r['bench']} {r['method']} seed {r['seed']}: CIL {r['class_il']:.3f}", flush=True)
    else:
        for job in jobs:
            r = run_one(job)
            runs.append(r)
            print(f"{r['bench']} {r['method']} seed {r['seed']}: CIL {r['class_il']:.3f} "
                  f"{r['train_seconds']:.1f}s", flush=True)
    rows = summarise(runs, hps)
    settings = {"mode": "quick (CPU)" if a.quick else "full", "epochs_per_task": a.epochs, "nf": a.nf,
                "buffer_size": a.buffer_size, "batch_size": 32, "minibatch": 32, "seeds": a.seeds,
                "benchmarks": a.benchmarks, "methods": a.methods, "plugins": a.plugins, "device": a.device,
                "jobs": a.jobs, "wall_seconds": round(time.perf_counter() - start, 1),
                "hparams": {f"{b}/{m}": hp for (b, m), hp in hps.items()},
                "command": " ".join(sys.argv)}
    extra = {"per_seed_class_il": {f"{r['bench']}/{r['method']}/{r['seed']}": r["class_il"] for r in runs}}
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
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
