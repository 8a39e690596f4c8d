"""Benchmark: ER, DER++, ER-ACE and CLS-ER, each alone / +CLFD / +FDINet, same seeds, on Split Digits (and Split
CIFAR-10 with --cifar-root). Writes results.json, results.md and accuracy.png to --out.

Hyper-parameters: mammoth's best args for Split CIFAR-10 (BEST_ARGS); with --quick on Split Digits the per-benchmark
QUICK_ARGS (ER-ACE lr 0.1 and faster CLS-ER EMA models, because the quick run has ~18 steps per task; see README).

    python tools/bench/clfreq.py --quick                       # several CPU minutes
    python tools/bench/clfreq.py --cifar-root ~/data --epochs 50 --nf 20 --device cuda
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
from pathlib import Path

import numpy as np
import torch

# this file is named like the package: drop its folder from sys.path so `import clfreq` finds the package
sys.path = [p for p in sys.path if Path(p or '.').resolve() != Path(__file__).resolve().parent]


_SHORT = {"reg_weight": "λ", "stable_freq": "r_S", "plastic_freq": "r_P", "stable_alpha": "α_S",
          "plastic_alpha": "α_P", "alpha": "α", "beta": "β"}


def _fmt(hp: dict) -> str:
    return " ".join(f"{_SHORT.get(k, k)} {v:g}" for k, v in hp.items())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="nf 8, 2 epochs, 3 seeds on Split Digits 16x16")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--nf", type=int, default=20, help="host ResNet-18 width (FDINet branches get ~22 %% of its params)")
    p.add_argument("--buffer-size", type=int, default=50)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=["er", "der++", "er-ace", "cls-er"])
    p.add_argument("--cifar-root", default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="runs/bench/clfreq")
    a = p.parse_args()
    from clfreq.rehearsal import BEST_ARGS, QUICK_ARGS, create_method, split_cifar, split_digits, train_continual
    from commons.io import save_json
    from commons.reporting import markdown_table, save_line_plot

    if a.quick:
        a.nf, a.epochs = 8, 2
    torch.set_num_threads(max(1, torch.get_num_threads()))
    benches = {"split-digits": lambda s: split_digits(seed=None)}
    if a.cifar_root:
        benches["split-cifar10"] = lambda s: split_cifar(a.cifar_root, "cifar10")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    runs, rows, series = [], [], {}
    for bname, make in benches.items():
        bench = make(0)
        for mname in a.methods:
            key = 50 if a.buffer_size <= 50 else 125
            hp = dict(BEST_ARGS[("split-cifar10", key)][mname])
            if a.quick and (bname, key) in QUICK_ARGS:
                hp = dict(QUICK_ARGS[(bname, key)][mname])
            for plugin in (None, "clfd", "fdinet"):
                rs = []
                for seed in a.seeds:
                    m = create_method(mname, plugin=plugin, nf=a.nf, buffer_size=a.buffer_size, **hp)
                    r = train_continual(m, bench, epochs=a.epochs, seed=seed, device=a.device)
                    r["benchmark"], r["hparams"] = bname, hp
                    rs.append(r)
                    runs.append(r)
                    print(f"{bname} {r['method']} seed {seed}: CIL {r['class_il']:.3f} TIL {r['task_il']:.3f} "
                          f"{r['train_seconds']:.1f}s", flush=True)

                def ms(k, scale=100.0, rs=rs):
                    v = np.array([r[k] for r in rs]) * scale
                    return f"{v.mean():.1f} ± {v.std():.1f}"

                rows.append({"benchmark": bname, "method": rs[0]["method"], "hparams": _fmt(hp),
                             "Class-IL %": ms("class_il"),
                             "Task-IL %": ms("task_il"), "forgetting %": ms("forgetting"),
                             "train s": ms("train_seconds", 1.0),
                             "peak mem MiB": ms("peak_memory_bytes", 1 / 2**20),
                             "backbone params": rs[0]["backbone_params"], "buffer slots": rs[0]["buffer_capacity"]})
                series[f"{bname}:{rs[0]['method']}"] = (list(range(1, len(rs[0]["per_task_class_il"]) + 1)),
                                                       list(np.mean([r["per_task_class_il"] for r in rs], 0)))
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{platform.machine()} {platform.processor() or ''} torch {torch.__version__} "
                       f"threads {torch.get_num_threads()} device {a.device}",
            "args": vars(a)}
    save_json(out / "results.json", {"meta": meta, "rows": rows, "runs": runs})
    md = (f"Machine: {meta['machine']}; date {meta['date']}; epochs {a.epochs}, nf {a.nf}, buffer {a.buffer_size}, "
          f"seeds {a.seeds}. Peak memory on CPU = sampled process RSS growth (commons.profiling).\n\n"
          + markdown_table(rows))
    (out / "results.md").write_text(md + "\n")
    save_line_plot(out / "accuracy.png", series, "tasks seen", "average Class-IL accuracy", "clfreq rehearsal bench")
    print(md)
    print(json.dumps({"out": str(out)}))


if __name__ == "__main__":
    main()
