"""clfreq's part of ``make demo``: PrePrompt vs L2P vs sequential fine-tuning on Split Digits (2 epochs per task)."""

from __future__ import annotations

from pathlib import Path

from commons.device import seed_everything
from commons.reporting import DemoSection, markdown_table, save_line_plot

from .prompt import L2P, L2PConfig, PrePrompt, PrePromptConfig, SequentialLinear, load_pretrained_vit, run_stream
from .prompt.protocol import split_digits_tasks


def run(out_dir: Path) -> DemoSection:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    train, test = split_digits_tasks()
    learners = {
        "Sequential FT (linear head)": lambda b: SequentialLinear(b, 10, epochs=2),
        "L2P": lambda b: L2P(b, 10, L2PConfig(epochs=2)),
        "PrePrompt": lambda b: PrePrompt(b, 10, len(train), PrePromptConfig(epochs=2)),
    }
    rows, series = [], {}
    for name, make in learners.items():
        seed_everything(0)
        res = run_stream(make(load_pretrained_vit()), train, test)
        rows.append({"method": name, "final acc %": 100 * res.final_accuracy, "forgetting %": 100 * res.forgetting,
                     "old / new acc %": f"{100 * res.old_accuracy:.1f} / {100 * res.new_accuracy:.1f}",
                     "task-id acc %": "—" if res.task_id_accuracy is None else f"{100 * res.task_id_accuracy:.1f}",
                     "train s": res.train_seconds})
        series[name] = (list(range(1, len(train) + 1)), [t["average_accuracy"] for t in res.per_task])
    plot = save_line_plot(out_dir / "clfreq_prompt_accuracy.png", series, "tasks seen", "average accuracy",
                          "Split Digits 5x2, 2 epochs/task")
    rehearsal_md, rehearsal_plot = _rehearsal(out_dir)
    by = {r["method"]: r for r in rows}
    seq_acc = by["Sequential FT (linear head)"]["final acc %"]
    body = ("Class-incremental Split Digits (5 tasks x 2 classes, 32x32) on the shipped `vit-fractal-tiny32` backbone "
            "(pre-trained on formula-driven fractals, not ImageNet), 2 epochs per task, seed 0.\n\n"
            + markdown_table(rows) + "\n\n" + rehearsal_md)
    return DemoSection("clfreq: PrePrompt vs L2P, DER++ vs CLFD/FDINet (Split Digits)", body, [plot, rehearsal_plot],
                       summary=f"final Class-IL accuracy PrePrompt {by['PrePrompt']['final acc %']:.1f}% vs L2P "
                               f"{by['L2P']['final acc %']:.1f}% (sequential FT {seq_acc:.1f}%; "
                               f"PrePrompt task-id {by['PrePrompt']['task-id acc %']}%)")


def _rehearsal(out_dir: Path) -> tuple[str, Path]:
    """DER++ alone / +CLFD / +FDINet on Split Digits 16x16, 3 epochs per task (CLFD's selection needs >= 3), nf 8,
    buffer 50, seed 0."""
    from .rehearsal import create_method, split_digits, train_continual

    bench = split_digits()
    rows, series = [], {}
    for plugin in (None, "clfd", "fdinet"):
        r = train_continual(create_method("der++", plugin=plugin, nf=8, buffer_size=50), bench, epochs=3, seed=0)
        rows.append({"method": r["method"], "Class-IL %": 100 * r["class_il"], "Task-IL %": 100 * r["task_il"],
                     "forgetting %": 100 * r["forgetting"], "train s": r["train_seconds"],
                     "backbone params": r["backbone_params"]})
        series[r["method"]] = (list(range(1, bench.num_tasks + 1)), r["per_task_class_il"])
    plot = save_line_plot(out_dir / "clfreq_rehearsal_accuracy.png", series, "tasks seen", "average Class-IL accuracy",
                          "Split Digits 5x2 (16x16), 3 epochs/task")
    md = ("Rehearsal: DER++ (lr 0.03, alpha 0.1, beta 0.5, buffer 50) alone, with CLFD and with the FDINet-style net, "
          "ResNet-18 nf 8, seed 0:\n\n" + markdown_table(rows))
    return md, plot
