#!/usr/bin/env python3
"""PrePrompt vs L2P vs sequential fine-tuning on one frozen ViT, same seeds, one run.

Default benchmark: Split Digits (scikit-learn digits at 32×32, 5 tasks × 2 classes) on the shipped
``vit-fractal-tiny32`` backbone (pre-trained by this project on formula-driven fractal images — NOT ImageNet-21k, so
absolute numbers are far below the paper's). ``--cifar100-root`` runs Split CIFAR-100 (10 × 10) instead, with any
backbone (``--backbone vit_base_patch16_224.augreg_in21k --hub`` with hub access, or a weights file).

Rows: sequential linear head (lower bound), L2P, PrePrompt without feature translation (ablation), PrePrompt, and a
joint linear probe (non-incremental reference). Columns: final average accuracy (mean ± std over seeds), average
incremental accuracy, forgetting, accuracy on old vs new classes after the last task (the recency bias feature
translation targets), task-id accuracy of PrePrompt's prompt prediction, training time.

    python tools/bench/clfreq_prompt.py --quick          # a few CPU minutes
    python tools/bench/clfreq_prompt.py --epochs 20 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
for pkg in ("commons", "clfreq"):
    sys.path.insert(0, str(REPO / "packages" / pkg / "src"))

from clfreq.prompt import (  # noqa: E402
    L2P,
    SHIPPED_BACKBONES,
    JointLinearProbe,
    L2PConfig,
    PrePrompt,
    PrePromptConfig,
    SequentialLinear,
    cifar100_tasks,
    load_pretrained_vit,
    run_stream,
    split_digits_tasks,
)
from commons.device import seed_everything  # noqa: E402
from commons.reporting import markdown_table, save_line_plot  # noqa: E402


def methods(epochs: int, num_tasks: int, num_classes: int, device: str):
    return {
        "Sequential FT (linear head)": lambda b, s: SequentialLinear(b, num_classes, epochs=epochs, seed=s,
                                                                     device=device),
        "L2P": lambda b, s: L2P(b, num_classes, L2PConfig(epochs=epochs, seed=s), device=device),
        "PrePrompt w/o feature translation": lambda b, s: PrePrompt(
            b, num_classes, num_tasks, PrePromptConfig(epochs=epochs, seed=s, feature_translation=False),
            device=device),
        "PrePrompt": lambda b, s: PrePrompt(b, num_classes, num_tasks, PrePromptConfig(epochs=epochs, seed=s),
                                            device=device),
        "Joint linear probe (not incremental)": lambda b, s: JointLinearProbe(b, num_classes, epochs=epochs,
                                                                              seed=s, device=device),
    }


def fmt(values: list[float]) -> str:
    arr = np.asarray([v for v in values if v is not None], dtype=float)
    if arr.size == 0:
        return "—"
    return f"{100 * arr.mean():.1f} ± {100 * arr.std():.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 epochs, 3 seeds (a few CPU minutes)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--backbone", default="vit-fractal-tiny32")
    parser.add_argument("--hub", action="store_true", help="load --backbone from the timm hub")
    parser.add_argument("--cifar100-root", type=Path, default=None)
    parser.add_argument("--classes-per-task", type=int, default=2, help="Split Digits: 2 (5 tasks) or 5 (2 tasks)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench" / "clfreq_prompt")
    args = parser.parse_args()
    if args.quick:
        args.epochs = 5
    if len(args.seeds) < 1:
        parser.error("--seeds needs at least one seed")

    if args.cifar100_root is not None:
        backbone0 = load_pretrained_vit(args.backbone, pretrained=args.hub)
        train, test = cifar100_tasks(args.cifar100_root, image_size=backbone0.patch_embed.img_size[0])
        bench_name, num_classes = "Split CIFAR-100 (10x10)", 100
    else:
        if args.classes_per_task not in (1, 2, 5):
            parser.error("--classes-per-task must divide 10 into at least 2 tasks: 1, 2 or 5")
        train, test = split_digits_tasks(classes_per_task=args.classes_per_task)
        bench_name = f"Split Digits ({10 // args.classes_per_task}x{args.classes_per_task}, 32x32)"
        num_classes = 10
    num_tasks = len(train)
    table = methods(args.epochs, num_tasks, num_classes, args.device)
    results: dict[str, list[dict]] = {name: [] for name in table}
    for seed in args.seeds:
        for name, make in table.items():
            seed_everything(seed)
            backbone = load_pretrained_vit(args.backbone, pretrained=args.hub)
            start = time.perf_counter()
            res = run_stream(make(backbone, seed), train, test)
            print(f"seed {seed} {name:38s} final {res.final_accuracy:.3f} forgetting {res.forgetting:.3f} "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
            results[name].append(res.as_dict() | {"per_task": res.per_task})

    rows = []
    for name, runs in results.items():
        rows.append({
            "method": name,
            "final acc %": fmt([r["final_accuracy"] for r in runs]),
            "avg incremental acc %": fmt([r["average_incremental_accuracy"] for r in runs]),
            "forgetting %": fmt([r["forgetting"] for r in runs]),
            "old-class acc %": fmt([r["old_accuracy"] for r in runs]),
            "new-class acc %": fmt([r["new_accuracy"] for r in runs]),
            "task-id acc %": fmt([r["task_id_accuracy"] for r in runs]),
            "train s": f"{np.mean([r['train_seconds'] for r in runs]):.0f}",
        })
    machine = f"{platform.machine()} {platform.processor() or ''} {torch.get_num_threads()} threads, {args.device}"
    provenance = ("pre-trained by this project on FractalDB-style formula-driven images (no natural images, no "
                  "digits) by tools/clfreq_pretrain_vit.py; NOT an ImageNet-21k model, so absolute accuracies are far "
                  "below the paper's" if args.backbone in SHIPPED_BACKBONES else
                  "hub weights" if args.hub else "weights from a local file")
    header = (f"{bench_name}, backbone `{args.backbone}` ({provenance}), {args.epochs} epochs per task, "
              f"seeds {args.seeds}, {time.strftime('%Y-%m-%d')}, {machine}")
    md = f"{header}\n\n{markdown_table(rows)}\n"
    print("\n" + md)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text(md)
    (args.out / "results.json").write_text(json.dumps({"setting": header, "results": results}, indent=2) + "\n")
    series = {name: (list(range(1, num_tasks + 1)),
                     list(np.mean([[t["average_accuracy"] for t in r["per_task"]] for r in runs], axis=0)))
              for name, runs in results.items()}
    save_line_plot(args.out / "accuracy_over_tasks.png", series, "tasks seen", "average accuracy (class-IL)",
                   bench_name)
    print(f"wrote {args.out}/results.md, results.json, accuracy_over_tasks.png")


if __name__ == "__main__":
    main()
