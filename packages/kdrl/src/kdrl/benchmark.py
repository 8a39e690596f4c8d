"""The miniature of the paper's main comparison on the embedded digits default, shared by ``tools/bench/kdrl.py`` and
the demo: one frozen, deliberately diverse teacher pool; the same student architecture trained alone and with every
weighting strategy; the same seeds for every strategy; mean ± std over seeds; wall time per run and the time spent
inside the weighting strategy (for MTKD-RL: state building, agent forward and agent updates).
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["DIGITS_POOL", "DIGITS_STUDENT", "run_comparison", "summarise"]

logger = logging.getLogger(__name__)

DIGITS_POOL = ("digits_resnet14", "digits_convnet_wide", "digits_mlp")
DIGITS_STUDENT = "digits_convnet_tiny"


def run_comparison(strategies: Sequence[str], seeds: Sequence[int], epochs: int, teacher_epochs: int,
                   cache_dir: str | os.PathLike | None, teachers: Sequence[str] = DIGITS_POOL,
                   student: str = DIGITS_STUDENT, train_fraction: float = 1.0, progress: bool = True,
                   batch_size: int = 64) -> dict[str, Any]:
    """Train (or load from ``cache_dir``) the teachers once with seed 0, then distil ``student`` with every strategy
    for every seed. The data split is fixed (seed 0) so that seeds vary only the student's initialisation and data
    order. Returns a JSON-serialisable dict with per-run records and teacher accuracies."""
    import torch

    from commons.device import TrainingBackend

    from .config import TeacherTrainConfig, digits_recipe, scaled_milestones
    from .data import digits_loaders
    from .distiller import MultiTeacherDistiller
    from .strategies import create_strategy
    from .teachers import TeacherPool
    from .training import evaluate_classifier, load_or_train_teachers

    if not seeds:
        raise ValueError("seeds must not be empty")
    backend = TrainingBackend(cpu=not torch.cuda.is_available())
    train, test = digits_loaders(batch_size, seed=0, train_fraction=train_fraction)
    tcfg = TeacherTrainConfig(epochs=teacher_epochs, milestones=scaled_milestones(teacher_epochs), seed=0)
    t0 = time.perf_counter()
    models = load_or_train_teachers(list(teachers), train, cache_dir, tcfg, backend=backend, progress=progress)
    teacher_seconds = time.perf_counter() - t0
    teacher_acc = {n: evaluate_classifier(m.to(backend.device), test)["top1"] for n, m in zip(teachers, models)}
    pool = TeacherPool(models, names=list(teachers))
    runs = []
    for seed in seeds:
        for name in strategies:
            torch.manual_seed(seed)
            cfg = digits_recipe(epochs, seed=seed, batch_size=batch_size)
            d = MultiTeacherDistiller(student, pool, create_strategy(name), cfg, backend=backend)
            start = time.perf_counter()
            hist = d.fit(train, test, progress=progress)
            seconds = time.perf_counter() - start
            final = d.evaluate(test)["top1"]
            eps = hist["epochs"]
            runs.append({
                "strategy": name, "seed": seed, "final_top1": final, "best_top1": max(e["test_top1"] for e in eps),
                "seconds": seconds, "strategy_seconds": sum(e["strategy_seconds"] for e in eps),
                "logit_weights": [e["logit_weights"] for e in eps], "feat_weights": [e["feat_weights"] for e in eps],
                "test_curve": [e["test_top1"] for e in eps],
                "agent_head_logit": hist.get("agent_head_logit"),
                "mix": [[e.get("mix_agent"), e.get("mix_conf"), e.get("mix_gap")] for e in eps]
                if name == "mtkd_rl_dynamic" else None,
            })
            logger.info("%s seed %d: %.2f%% in %.1fs", name, seed, final, seconds)
    return {"teachers": list(teachers), "teacher_top1": teacher_acc, "teacher_seconds": teacher_seconds,
            "student": student, "epochs": epochs, "teacher_epochs": teacher_epochs, "seeds": list(seeds),
            "train_fraction": train_fraction, "n_train": len(train.dataset), "n_test": len(test.dataset),
            "device": str(backend.device), "runs": runs}


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per strategy: accuracy mean ± std over seeds, gain over the student alone, time and overhead."""
    by: dict[str, list[dict]] = {}
    for r in result["runs"]:
        by.setdefault(r["strategy"], []).append(r)
    base = _mean_std([r["final_top1"] for r in by["student"]])[0] if "student" in by else None
    aver_time = statistics.fmean(r["seconds"] for r in by["aver"]) if "aver" in by else None
    rows = []
    for name, rs in by.items():
        m, s = _mean_std([r["final_top1"] for r in rs])
        bm, bs = _mean_std([r["best_top1"] for r in rs])
        t = statistics.fmean(r["seconds"] for r in rs)
        rows.append({
            "method": name, "top1 (final)": f"{m:.2f} ± {s:.2f}", "top1 (best epoch)": f"{bm:.2f} ± {bs:.2f}",
            "Δ vs student": f"{m - base:+.2f}" if base is not None else "",
            "s / run": f"{t:.1f}", "strategy s / run": f"{statistics.fmean(r['strategy_seconds'] for r in rs):.2f}",
            "time vs AVER": f"{100 * (t / aver_time - 1):+.0f}%" if aver_time and name != "student" else "",
            "_mean": m, "_std": s,
        })
    return rows


def plot_weights(result: dict[str, Any], path: str | os.PathLike, strategy: str = "mtkd_rl", seed: int | None = None
                 ) -> Path:
    """Per-teacher logit-KD weights (mean over samples) per epoch for one run: the fused weights and, for MTKD-RL,
    the agent head's own output; CA-MKD and AVER of the same seed for reference when present."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plots need matplotlib: pip install matplotlib") from None
    seed = result["seeds"][0] if seed is None else seed
    run = next((r for r in result["runs"] if r["strategy"] == strategy and r["seed"] == seed), None)
    if run is None:
        raise ValueError(f"no {strategy!r} run with seed {seed} in the result")
    names = result["teachers"]
    panels = [("fused logit-KD weight", run["logit_weights"]), ("fused feature-KD weight", run["feat_weights"])]
    if run.get("agent_head_logit"):
        panels.append(("agent head a^l (before fusion)", run["agent_head_logit"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), dpi=120)
    for ax, (title, rows) in zip(axes, panels):
        start = 1 if title.startswith("fused") else 0  # epoch 0 is the all-ones warm-up for MTKD-RL
        xs = list(range(start, len(rows)))
        for m, name in enumerate(names):
            ax.plot(xs, [rows[e][m] for e in xs], marker=".", label=name)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mean weight over training samples")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{strategy} teacher weights over training (digits, seed {seed})", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_accuracy(result: dict[str, Any], path: str | os.PathLike) -> Path:
    """Test accuracy per epoch, mean over seeds, one line per strategy."""
    from commons.reporting import save_line_plot

    by: dict[str, list[list[float]]] = {}
    for r in result["runs"]:
        by.setdefault(r["strategy"], []).append(r["test_curve"])
    series = {}
    for name, curves in by.items():
        n = min(len(c) for c in curves)
        series[name] = (list(range(n)), [statistics.fmean(c[e] for c in curves) for e in range(n)])
    return save_line_plot(path, series, xlabel="epoch", ylabel="test top-1 (%)",
                          title="student accuracy on digits (mean over seeds)")


def paired_comparison(result: dict[str, Any], method: str = "mtkd_rl") -> list[dict[str, Any]]:
    """Per-seed differences ``method − other`` in final accuracy: mean, std, and wins/ties/losses over seeds."""
    acc = {(r["strategy"], r["seed"]): r["final_top1"] for r in result["runs"]}
    others = sorted({r["strategy"] for r in result["runs"]} - {method}, key=lambda s: s != "student")
    rows = []
    for other in others:
        diffs = [acc[(method, s)] - acc[(other, s)] for s in result["seeds"]
                 if (method, s) in acc and (other, s) in acc]
        if not diffs:
            continue
        m, sd = _mean_std(diffs)
        rows.append({"comparison": f"{method} − {other}", "mean Δ": f"{m:+.2f}", "std Δ": f"{sd:.2f}",
                     "wins/ties/losses": f"{sum(d > 0 for d in diffs)}/{sum(d == 0 for d in diffs)}/"
                                         f"{sum(d < 0 for d in diffs)}", "_mean": m, "_std": sd})
    return rows


def verdict(rows: list[dict[str, Any]], method: str = "mtkd_rl") -> str:
    """One honest sentence on whether ``method`` beats every baseline here."""
    # baselines only: not the student alone, not MTKD-RL's own variants (e.g. the dynamic mix)
    base = [r for r in rows if not r["comparison"].endswith(" student")
            and not r["comparison"].split(" − ")[1].startswith(method)]
    if not base:
        return "no baselines to compare with"
    beats_mean = all(r["_mean"] > 0 for r in base)
    clear = [r for r in base if r["_mean"] > 0 and r["_mean"] > r["_std"]]
    worse = [r["comparison"].split(" − ")[1] for r in base if r["_mean"] <= 0]
    if beats_mean and len(clear) == len(base):
        return f"{method} beats every baseline in mean accuracy by more than the per-seed spread."
    if beats_mean:
        return (f"{method} beats every baseline in mean accuracy, but only against {len(clear)}/{len(base)} by more "
                "than the per-seed spread of the difference: the ranking is within seed noise here.")
    return (f"{method} does NOT beat every baseline here (not better than: {', '.join(worse)}); differences are of "
            "the order of the seed noise.")


def agent_overhead(result: dict[str, Any], method: str = "mtkd_rl") -> dict[str, float] | None:
    """Time spent in ``method``'s strategy minus AVER's, per run, absolute and as % of AVER's mean wall time."""
    runs = result["runs"]
    m = [r["strategy_seconds"] for r in runs if r["strategy"] == method]
    a = [r["strategy_seconds"] for r in runs if r["strategy"] == "aver"]
    wall = [r["seconds"] for r in runs if r["strategy"] == "aver"]
    if not m or not a or not wall:
        return None
    extra = statistics.fmean(m) - statistics.fmean(a)
    return {"extra_seconds": extra, "aver_seconds": statistics.fmean(wall),
            "percent_of_aver": 100.0 * extra / statistics.fmean(wall)}
