"""Quick demo for ``make demo`` (< 2 min on 2 CPU cores): the embedded digits teacher pool, a tiny student trained
alone, with AVER and with MTKD-RL (one seed, 20 epochs), a table and a plot of MTKD-RL's teacher weights."""

from __future__ import annotations

import pathlib


def run(out_dir: pathlib.Path):
    from commons.reporting import DemoSection, markdown_table

    from .benchmark import plot_accuracy, plot_weights, run_comparison, summarise

    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = run_comparison(["student", "aver", "mtkd_rl"], seeds=[0], epochs=20, teacher_epochs=15,
                            cache_dir=out_dir / "teachers", progress=False)
    rows = summarise(result)
    table = markdown_table([{k: v for k, v in r.items() if not k.startswith("_") and "best" not in k}
                            for r in rows])
    images = [plot_weights(result, out_dir / "kdrl_weights.png", "mtkd_rl"),
              plot_accuracy(result, out_dir / "kdrl_accuracy.png")]
    teachers = ", ".join(f"`{n}` {a:.1f}%" for n, a in result["teacher_top1"].items())
    acc = {r["method"]: r["_mean"] for r in rows}
    md = (f"Teacher pool on scikit-learn digits: {teachers}. Student `{result['student']}` "
          f"({result['epochs']} epochs, one seed; the benchmark `tools/bench/kdrl.py` averages seeds).\n\n{table}\n")
    summary = (f"digits: student alone {acc['student']:.1f}%, AVER {acc['aver']:.1f}%, "
               f"MTKD-RL {acc['mtkd_rl']:.1f}% (1 seed)")
    return DemoSection(title="kdrl — multi-teacher KD with MTKD-RL", markdown=md, images=images, summary=summary)
