#!/usr/bin/env python3
"""PrePrompt vs L2P, DualPrompt, CODA-Prompt and sequential fine-tuning on one frozen ViT, same seeds.

Benchmarks: Split Digits (scikit-learn digits at 32×32, 5 tasks × 2 classes) and, with ``--full``, Split Fractals
(commons.data.fractal_classes: 100 classes, 10 tasks × 10, 32×32) on the shipped ``vit-fractal-tiny32`` backbone
(pre-trained by this project on formula-driven fractal images — NOT ImageNet-21k, so absolute numbers are far below
the papers'; its pre-training classes are disjoint from Split Fractals' but of the same family). ``--cifar100-root``
runs Split CIFAR-100 (10 × 10) with any backbone (``--backbone vit_base_patch16_224.augreg_in21k --hub``).

Rows: sequential linear head (lower bound), L2P, DualPrompt, CODA-Prompt, PrePrompt without feature translation
(ablation), PrePrompt with the official head/route-net rates (ablation of the budget scaling), PrePrompt, and a joint
linear probe (non-incremental reference). Columns: final average accuracy (mean ± std over seeds), average
incremental accuracy, forgetting (mammoth), old vs new classes after the last task, task-id accuracy (PrePrompt's
route net, DualPrompt's key match), training time. Every method runs the same epochs per task at batch 24, so the
same number of steps (CODA-Prompt keeps its official lr 0.001 and cosine; at its official batch 128 Split Digits gives
it 2 steps per epoch and it stays at chance). Results: ``results/clfreq/prompt_<quick|full>.json``.

    python tools/bench/clfreq_prompt.py --quick                          # CPU, Split Digits, 5 epochs, 3 seeds
    python tools/bench/clfreq_prompt.py --full --device cuda --jobs 5 --threads 1 --max-seconds 470 --out $OUT

Interruptible: with ``--out``, every finished stream is appended at once to ``<out>/clfreq/prompt_<mode>.partial.jsonl``
(one JSON line: key, job, seconds, row). ``--resume-from FILE...`` skips the streams found there (same settings only)
and the final JSON combines them with the new ones; ``--max-seconds S`` submits no stream that would end after S
seconds (predicted from the last finished stream of the same kind), waits for the running ones, writes the results
of what is done and exits 0, naming how many streams remain. Streams are ordered seed-major (every method for seed 0,
then seed 1, ...), so a partial run has whole seeds; the JSON's settings say ``complete: true/false``.
"""

from __future__ import annotations

import argparse
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
    CODAPrompt,
    CODAPromptConfig,
    DualPrompt,
    DualPromptConfig,
    JointLinearProbe,
    L2PConfig,
    PrePrompt,
    PrePromptConfig,
    SequentialLinear,
    cifar100_tasks,
    load_pretrained_vit,
    run_stream,
    split_digits_tasks,
    split_fractals_tasks,
)
from commons.device import seed_everything  # noqa: E402
from commons.jobs import load_partial, run_jobs  # noqa: E402
from commons.reporting import markdown_table  # noqa: E402


def methods(epochs: int, num_tasks: int, num_classes: int, device: str):
    return {
        "Sequential FT (linear head)": lambda b, s: SequentialLinear(b, num_classes, epochs=epochs, seed=s,
                                                                     device=device),
        "L2P": lambda b, s: L2P(b, num_classes, L2PConfig(epochs=epochs, seed=s), device=device),
        "DualPrompt": lambda b, s: DualPrompt(b, num_classes, num_tasks, DualPromptConfig(epochs=epochs, seed=s),
                                              device=device),
        "CODA-Prompt": lambda b, s: CODAPrompt(b, num_classes, num_tasks,
                                               CODAPromptConfig(epochs=epochs, batch_size=24, seed=s), device=device),
        "PrePrompt w/o feature translation": lambda b, s: PrePrompt(
            b, num_classes, num_tasks, PrePromptConfig(epochs=epochs, seed=s, feature_translation=False),
            device=device),
        "PrePrompt, official head/route lr": lambda b, s: PrePrompt(
            b, num_classes, num_tasks, PrePromptConfig(epochs=epochs, seed=s, budget_lr_scaling=False),
            device=device),
        "PrePrompt": lambda b, s: PrePrompt(b, num_classes, num_tasks, PrePromptConfig(epochs=epochs, seed=s),
                                            device=device),
        "Joint linear probe (not incremental)": lambda b, s: JointLinearProbe(b, num_classes, epochs=epochs,
                                                                              seed=s, device=device),
    }


_TASKS: dict = {}


def _tasks(job: dict):
    """``(train, test, num_classes)`` of a benchmark name, built once per process."""
    key = job["bench"]
    if key not in _TASKS:
        if key.startswith("split-digits"):
            _TASKS[key] = (*split_digits_tasks(classes_per_task=job["cpt"]), 10)
        elif key.startswith("split-fractals"):
            _TASKS[key] = (*split_fractals_tasks(), 100)
        else:
            size = load_pretrained_vit(job["backbone"], pretrained=job["hub"]).patch_embed.img_size[0]
            _TASKS[key] = (*cifar100_tasks(job["cifar100_root"], image_size=size), 100)
    return _TASKS[key]


def run_job(job: dict) -> dict:
    """One (benchmark, method, seed) stream; module-level so worker processes can run it."""
    torch.set_num_threads(job["threads"])
    train, test, num_classes = _tasks(job)
    build = methods(job["epochs"], len(train), num_classes, job["device"])[job["method"]]
    seed_everything(job["seed"])
    backbone = load_pretrained_vit(job["backbone"], pretrained=job["hub"])
    t0 = time.perf_counter()
    res = run_stream(build(backbone, job["seed"]), train, test)
    print(f"{job['bench']} seed {job['seed']} {job['method']:38s} final {res.final_accuracy:.3f} task-id "
          f"{res.task_id_accuracy} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return res.as_dict() | {"per_task": res.per_task}


def fmt(values: list[float]) -> str:
    arr = np.asarray([v for v in values if v is not None], dtype=float)
    if arr.size == 0:
        return "—"
    return f"{100 * arr.mean():.1f} ± {100 * arr.std():.1f}"


def main() -> None:
    from commons.results import write_results

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--quick", action="store_true", help="CPU: Split Digits, 5 epochs, 3 seeds")
    parser.add_argument("--full", action="store_true", help="GPU: Split Digits and Split Fractals, 5 epochs, 3 seeds")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=None, help="row names to run (default: all)")
    parser.add_argument("--benchmarks", nargs="+", default=None, choices=("split-digits", "split-fractals"),
                        help="default: Split Digits (--quick), Split Digits and Split Fractals (--full)")
    parser.add_argument("--backbone", default="vit-fractal-tiny32")
    parser.add_argument("--hub", action="store_true", help="load --backbone from the timm hub")
    parser.add_argument("--cifar100-root", type=Path, default=None)
    parser.add_argument("--classes-per-task", type=int, default=2, help="Split Digits: 2 (5 tasks) or 5 (2 tasks)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (GPU: they share the card)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per worker (default: this machine's threads / --jobs; 1 on a GPU)")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for the JSON (under clfreq/), partial JSON lines, table")
    parser.add_argument("--resume-from", type=Path, nargs="+", default=[], metavar="FILE",
                        help="partial .jsonl file(s) of an earlier call: their streams (same settings) are not rerun")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="submit no stream predicted to end after this many seconds; write what is done, exit 0")
    args = parser.parse_args()
    if args.quick == args.full:
        parser.error("pass exactly one of --quick or --full")
    if len(args.seeds) < 1:
        parser.error("--seeds needs at least one seed")
    if args.epochs < 1:
        parser.error(f"--epochs must be at least 1, got {args.epochs}")
    if args.classes_per_task not in (1, 2, 5):
        parser.error("--classes-per-task must divide 10 into at least 2 tasks: 1, 2 or 5")
    if args.jobs < 1 or (args.threads is not None and args.threads < 1):
        parser.error("--jobs and --threads must be at least 1")
    if args.max_seconds is not None and args.max_seconds <= 0:
        parser.error(f"--max-seconds must be positive, got {args.max_seconds}")
    for f in args.resume_from:
        if not f.is_file():
            parser.error(f"--resume-from: no file {f}")
    names = list(methods(1, 1, 1, "cpu"))
    unknown = [m for m in args.methods or [] if m not in names]
    if unknown:
        parser.error(f"--methods: unknown {unknown}; choose from {names}")
    name = "prompt_quick" if args.quick else "prompt_full"
    chosen_benches = args.benchmarks or (["split-digits", "split-fractals"] if args.full else ["split-digits"])
    benches = []
    if "split-fractals" in chosen_benches:  # the long streams first within a seed
        benches.append("split-fractals-10x10")
    if "split-digits" in chosen_benches:
        benches.append(f"split-digits-{10 // args.classes_per_task}x{args.classes_per_task}")
    if args.cifar100_root is not None:
        benches.insert(0, "split-cifar100-10x10")
    chosen = [n for n in names if not args.methods or n in args.methods]
    threads = args.threads or (1 if args.device.startswith("cuda") else max(1, torch.get_num_threads() // args.jobs))
    jobs = [{"key": f"{b}/{m}/{seed}", "kind": f"{b}/{m}", "bench": b, "method": m, "seed": seed,
             "epochs": args.epochs, "device": args.device, "backbone": args.backbone, "hub": args.hub,
             "cpt": args.classes_per_task, "cifar100_root": args.cifar100_root, "threads": threads}
            for seed in args.seeds for b in benches for m in chosen]  # seed-major: a stopped run has whole seeds
    start = time.perf_counter()
    done = load_partial(args.resume_from, jobs)
    resumed = len(done)
    partial = args.out / "clfreq" / f"{name}.partial.jsonl" if args.out else None
    print(f"{len(jobs)} streams, {resumed} resumed, {len(jobs) - resumed} to run on {args.jobs} worker(s) x {threads} "
          f"thread(s)" + (f", partial results -> {partial}" if partial else ""), flush=True)

    def report(rec: dict, elapsed: float) -> None:
        print(f"[{elapsed:6.0f} s] {rec['key']}: final {rec['row']['final_accuracy']:.3f} ({rec['seconds']:.0f} s "
              f"wall, {len(done)}/{len(jobs)} done)", flush=True)

    left = run_jobs(jobs, run_job, args.jobs, partial, done, args.max_seconds, start, report)
    if left:
        print(f"{len(left)} of {len(jobs)} streams remain (not started within --max-seconds, or failed); resume "
              f"with --resume-from {partial or 'the partial file of a call with --out'}", flush=True)
    rows, extra = [], {}
    for bench_name in benches:
        for mname in chosen:
            runs = [done[j["key"]]["row"] for j in jobs
                    if j["bench"] == bench_name and j["method"] == mname and j["key"] in done]
            if not runs:
                continue
            rows.append({
                "table": bench_name, "method": mname, "seeds": len(runs),
                "final acc %": fmt([r["final_accuracy"] for r in runs]),
                "avg incremental acc %": fmt([r["average_incremental_accuracy"] for r in runs]),
                "forgetting %": fmt([r["forgetting"] for r in runs]),
                "old acc %": fmt([r["old_accuracy"] for r in runs]),
                "new acc %": fmt([r["new_accuracy"] for r in runs]),
                "task-id acc %": fmt([r["task_id_accuracy"] for r in runs]),
                "train s": round(float(np.mean([r["train_seconds"] for r in runs])), 1),
            })
            extra[f"{bench_name}/{mname}"] = [r["final_accuracy"] for r in runs]
    if not rows:
        print("no finished streams: nothing to write", flush=True)
        return
    provenance = ("shipped vit-fractal-tiny32, pre-trained by this project on FractalDB-style images (no natural "
                  "images, no digits); NOT an ImageNet-21k model" if args.backbone in SHIPPED_BACKBONES else
                  "hub weights" if args.hub else "weights from a local file")
    settings = {"mode": "quick (CPU)" if args.quick else "full", "complete": not left, "streams_done": len(done),
                "streams_total": len(jobs), "streams_resumed": resumed, "epochs_per_task": args.epochs,
                "seeds": args.seeds, "backbone": args.backbone, "backbone_provenance": provenance,
                "device": args.device, "jobs": args.jobs, "threads_per_job": threads, "benchmarks": list(benches),
                "batch": "24 for every method (CODA-Prompt official: 128)",
                "wall_seconds": round(time.perf_counter() - start, 1), "command": " ".join(sys.argv),
                "machine_threads": torch.get_num_threads(), "platform": platform.machine()}
    if left:
        settings["missing_streams"] = [j["key"] for j in left]
    path = write_results("clfreq", name, rows, settings,
                         extra={"final_accuracy_per_seed": extra,
                                "stream_seconds": {k: rec["seconds"] for k, rec in done.items()}},
                         root=(args.out if (args.out and args.full) else None))
    tables = [t for t in benches if any(r["table"] == t for r in rows)]
    md = "\n\n".join(f"### {t}\n\n" + markdown_table([{k: v for k, v in r.items() if k != "table"} for r in rows
                                                       if r["table"] == t]) for t in tables)
    print(md)
    if args.out:
        (args.out / f"{name}.md").write_text(md + "\n")
    print(f"wrote {path}" + ("" if not left else f" (incomplete: {len(left)} streams missing)"))


if __name__ == "__main__":
    main()
