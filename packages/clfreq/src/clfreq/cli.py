"""``clfreq`` command line.

    clfreq train --method preprompt --benchmark split-digits --epochs 5 --out runs/clfreq/preprompt
    clfreq train --method l2p --benchmark split-cifar100 --data-root ~/data \
        --backbone vit_base_patch16_224.augreg_in21k --hub
    clfreq train --method der++ --plugin clfd --benchmark split-digits --epochs 5 --out runs/clfreq/clfd-derpp
    clfreq train --method er --plugin fdinet --benchmark split-cifar10 --data-root ~/data --best-args --out runs/x
    torchrun --nproc_per_node 2 -m clfreq.cli train --accelerate --method cls-er --benchmark split-cifar10 ...
    accelerate launch -m clfreq.cli train --method er --benchmark split-cifar10 --data-root ~/data --accelerate ...
    clfreq list

Runs checkpoint atomically after every task (``<out>/state.pt``) and ``--resume`` continues after the last finished
task; results go to ``<out>/results.json`` with the accuracy matrix, and ``<out>/accuracy.png``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

METHODS = ("preprompt", "l2p", "dualprompt", "coda-prompt", "finetune", "joint", "er", "der++", "er-ace", "cls-er")
REHEARSAL = ("er", "der++", "er-ace", "cls-er")
BENCHMARKS = ("split-digits", "split-fractals", "split-cifar10", "split-cifar100", "split-tinyimagenet", "imagefolder")
PROMPT_BENCHMARKS = ("split-digits", "split-fractals", "split-cifar100", "imagefolder")


def _learner(args, backbone, num_classes: int, num_tasks: int):
    from .prompt import L2P, JointLinearProbe, PrePrompt, PrePromptConfig, SequentialLinear

    lr = {} if args.lr is None else {"lr": args.lr}
    if args.method == "preprompt":
        opt = {k: getattr(args, k) for k in ("head_lr", "route_lr", "ca_lr", "crct_epochs", "lr_schedule",
                                              "ca_schedule") if getattr(args, k) is not None}
        cfg = PrePromptConfig(epochs=args.epochs, batch_size=args.batch_size or 24, seed=args.seed,
                              prompt_length=args.prompt_length, feature_translation=not args.no_feature_translation,
                              budget_lr_scaling=not args.no_budget_scaling, **lr, **opt)
        return PrePrompt(backbone, num_classes, num_tasks, cfg, device=args.device)
    if args.method in ("l2p", "dualprompt", "coda-prompt"):
        from .prompt import baselines

        names = {"l2p": ("L2P", "L2PConfig"), "dualprompt": ("DualPrompt", "DualPromptConfig"),
                 "coda-prompt": ("CODAPrompt", "CODAPromptConfig")}[args.method]
        cls, config = (getattr(baselines, n, None) for n in names)
        if cls is None:
            raise SystemExit(f"--method {args.method} is not available in this version")
        batch = {} if args.batch_size is None else {"batch_size": args.batch_size}  # else the official default
        cfg = config(epochs=args.epochs, seed=args.seed, **batch, **lr)
        if cls is L2P:
            return L2P(backbone, num_classes, cfg, device=args.device)
        return cls(backbone, num_classes, num_tasks, cfg, device=args.device)
    cls = SequentialLinear if args.method == "finetune" else JointLinearProbe
    return cls(backbone, num_classes, epochs=args.epochs, batch_size=args.batch_size or 24, seed=args.seed,
               device=args.device, **lr)


def _benchmark(args, image_size: int):
    from .prompt import cifar100_tasks, image_folder_tasks, split_digits_tasks, split_fractals_tasks

    if args.benchmark == "split-digits":
        if image_size != 32:
            raise SystemExit("split-digits is rendered at 32x32: use a 32x32 backbone (the default vit-fractal-tiny32)")
        train, test = split_digits_tasks(classes_per_task=args.classes_per_task or 2, seed=args.seed)
        return train, test, 10
    if args.benchmark == "split-fractals":
        if image_size != 32:
            raise SystemExit("split-fractals is rendered at 32x32: use a 32x32 backbone "
                             "(the default vit-fractal-tiny32)")
        train, test = split_fractals_tasks(classes_per_task=args.classes_per_task or 10)
        return train, test, 100
    if args.benchmark not in PROMPT_BENCHMARKS:
        raise SystemExit(f"--benchmark {args.benchmark} is not available for prompt methods; "
                         f"choose one of {', '.join(PROMPT_BENCHMARKS)}")
    _check_data_root(args)
    if args.benchmark == "split-cifar100":
        train, test = cifar100_tasks(args.data_root, image_size=image_size,
                                     classes_per_task=args.classes_per_task or 10)
        return train, test, 100
    root = Path(args.data_root)
    train, test = image_folder_tasks(root / "train", root / "test", args.classes_per_task or 20, image_size)
    return train, test, sum(len(t.classes) for t in train)


def _check_data_root(args) -> None:
    """One-line errors for a missing or absent ``--data-root`` (before any loading)."""
    if args.data_root is None:
        raise SystemExit(f"--data-root is required for --benchmark {args.benchmark}")
    if not Path(args.data_root).expanduser().is_dir():
        raise SystemExit(f"--data-root {args.data_root} is not a directory")


def _load_backbone(args):
    """The ViT for the prompt methods, with one-line errors for a missing file or a file without ``--timm-name``."""
    from .prompt import SHIPPED_BACKBONES, load_pretrained_vit

    name = args.backbone
    if name not in SHIPPED_BACKBONES and not args.hub:
        path = Path(name).expanduser()
        if path.suffix not in (".npz", ".safetensors", ".pth", ".pt", ".bin"):
            raise SystemExit(f"--backbone {name} is neither a shipped backbone ({', '.join(SHIPPED_BACKBONES)}) nor a "
                             "weights file (.npz/.safetensors/.pth/.pt/.bin); pass --hub to load a timm name")
        if not path.is_file():
            raise SystemExit(f"--backbone file {name} does not exist")
        meta = path.with_suffix(".json")
        if args.timm_name is None and meta.is_file():  # our model-card layout: {"timm_name": ..., "kwargs": {...}}
            card = json.loads(meta.read_text())
            if "timm_name" in card:
                return load_pretrained_vit(path, timm_name=card["timm_name"], **card.get("kwargs", {}))
        if args.timm_name is None:
            raise SystemExit("--backbone with a weights file needs --timm-name (e.g. vit_base_patch16_224) or a "
                             f"model card {meta.name} with timm_name and kwargs next to it")
        return load_pretrained_vit(path, timm_name=args.timm_name)
    return load_pretrained_vit(name, pretrained=args.hub)


def cmd_train_rehearsal(args) -> int:
    """Rehearsal methods (ER, DER++, ER-ACE, CLS-ER) with an optional CLFD/FDINet plugin; resumable per epoch.
    With ``--accelerate`` under torchrun / accelerate launch: data-parallel (see clfreq.rehearsal.distributed)."""
    from commons.device import resolve_device
    from commons.io import save_json

    from .rehearsal import (
        BEST_ARGS,
        QUICK_ARGS,
        best_epochs,
        create_method,
        split_cifar,
        split_digits,
        split_tinyimagenet,
        train_continual,
    )

    out = Path(args.out)
    backend = None
    if args.accelerate:
        from commons.device import TrainingBackend

        backend = TrainingBackend(use_accelerate=True)
    main_process = backend is None or backend.is_main_process
    if main_process and out.exists() and any(out.iterdir()) and not args.resume:
        raise SystemExit(f"--out {out} is not empty; pass --resume to continue that run or choose another folder")
    if backend is not None:
        backend.wait()  # rank 0 checked --out before any process writes into it
    if args.benchmark == "split-digits":
        bench = split_digits(classes_per_task=args.classes_per_task or 2)
    elif args.benchmark == "split-fractals":
        from .rehearsal.benchmarks import split_fractals

        bench = split_fractals(classes_per_task=args.classes_per_task or 10, seed=args.seed)
    elif args.benchmark == "imagefolder":
        raise SystemExit("--benchmark imagefolder is not available for rehearsal methods")
    elif args.benchmark in ("split-cifar10", "split-cifar100"):
        _check_data_root(args)
        bench = split_cifar(args.data_root, args.benchmark.split("-")[1], args.classes_per_task)
    else:  # split-tinyimagenet
        _check_data_root(args)
        bench = split_tinyimagenet(args.data_root, args.classes_per_task or 20)
    hp = {}
    if args.best_args:  # named configs: mammoth's best args per (benchmark, buffer size), notes §1.6
        key = (args.benchmark, args.buffer_size)
        if key in QUICK_ARGS:  # Split Digits: our quick CPU setting (README), epochs as given
            hp = dict(QUICK_ARGS[key][args.method])
        elif key in BEST_ARGS:
            hp = dict(BEST_ARGS[key][args.method])
            args.epochs = best_epochs(args.benchmark, args.method)
        else:
            known = ", ".join(f"{b} --buffer-size {n}" for b, n in sorted({**BEST_ARGS, **QUICK_ARGS}))
            raise SystemExit(f"no best args for {args.benchmark} with buffer {args.buffer_size} (known: {known}); "
                             "pass --lr etc. instead")
    if args.lr is not None:
        hp["lr"] = args.lr
    plugin = None if args.plugin == "none" else args.plugin
    method = create_method(args.method, plugin=plugin, nf=args.nf, buffer_size=args.buffer_size, **hp)
    out.mkdir(parents=True, exist_ok=True)
    augment = {"default": None, "on": True, "off": False}[args.augment]
    result = train_continual(method, bench, epochs=args.epochs, batch_size=args.batch_size or 32, seed=args.seed,
                             device=str(resolve_device(args.device)), out_dir=out, resume=args.resume,
                             progress=not args.no_progress, augment=augment,
                             backend=backend, on_task_end=lambda t, c, _til: main_process and print(
                                 f"task {t}: Class-IL {c.average_accuracy(t):.3f}", flush=True))
    if not main_process:  # every process holds the same model and metrics; rank 0 writes them
        backend.close()
        return 0
    result["hparams"] = {"lr": method.lr, "buffer_size": method.buffer_size, "nf": method.nf,
                         "batch_size": args.batch_size or 32, "epochs": args.epochs, **hp}
    save_json(out / "results.json", result)
    try:
        from commons.reporting import save_line_plot

        save_line_plot(out / "accuracy.png", {result["method"]: (list(range(1, bench.num_tasks + 1)),
                                                                  result["per_task_class_il"])},
                       "tasks seen", "average accuracy (class-IL)", args.benchmark)
    except ImportError:
        pass
    print(json.dumps({k: v for k, v in result.items() if not k.endswith("matrix")}, indent=2))
    if backend is not None:
        backend.close()
    return 0


def cmd_train(args) -> int:
    if args.method in REHEARSAL:
        return cmd_train_rehearsal(args)
    if args.plugin != "none":
        raise SystemExit("--plugin applies to the rehearsal methods (er, der++, er-ace, cls-er)")
    from commons.device import resolve_device, seed_everything
    from commons.io import load_training_state, save_json, save_training_state

    from .prompt import run_stream

    args.device = str(resolve_device(args.device))
    out = Path(args.out)
    state_path = out / "state.pt"
    if out.exists() and any(out.iterdir()) and not args.resume:
        raise SystemExit(f"--out {out} is not empty; pass --resume to continue that run or choose another folder")
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(args.seed)
    backbone = _load_backbone(args)
    train, test, num_classes = _benchmark(args, backbone.patch_embed.img_size[0])
    learner = _learner(args, backbone, num_classes, len(train))
    resume = load_training_state(state_path) if args.resume else None
    if resume is not None:
        print(f"resuming after task {resume['next_task'] - 1}")

    def checkpoint(i, _learner, progress_state):
        save_training_state(state_path, progress_state)
        print(f"task {i}: average accuracy {progress_state['per_task'][-1]['average_accuracy']:.3f}", flush=True)

    result = run_stream(learner, train, test, progress=not args.no_progress, on_task_end=checkpoint, resume=resume)
    summary = result.as_dict() | {"method": args.method, "benchmark": args.benchmark, "backbone": args.backbone,
                                  "epochs": args.epochs, "seed": args.seed, "per_task": result.per_task}
    save_json(out / "results.json", summary)
    try:
        from commons.reporting import save_line_plot

        save_line_plot(out / "accuracy.png", {args.method: (list(range(1, len(train) + 1)),
                                                            [t["average_accuracy"] for t in result.per_task])},
                       "tasks seen", "average accuracy (class-IL)", args.benchmark)
    except ImportError:
        pass
    print(json.dumps({k: v for k, v in summary.items() if k not in ("accuracy_matrix", "per_task")}, indent=2))
    return 0


def cmd_list(args) -> int:
    from .prompt import SHIPPED_BACKBONES

    print("methods:   " + ", ".join(METHODS))
    print("benchmarks: " + ", ".join(BENCHMARKS))
    print("shipped backbones: " + ", ".join(SHIPPED_BACKBONES))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="clfreq", description="Continual learning with PrePrompt and baselines.")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a learner over a class-incremental stream and evaluate after each task")
    t.add_argument("--method", choices=METHODS, default="preprompt")
    t.add_argument("--benchmark", choices=BENCHMARKS, default="split-digits")
    t.add_argument("--data-root", default=None, help="CIFAR-100 root, or a folder with train/ and test/ class folders")
    t.add_argument("--classes-per-task", type=int, default=None)
    t.add_argument("--backbone", default="vit-fractal-tiny32", help="shipped name, weights file or timm name (--hub)")
    t.add_argument("--timm-name", default=None,
                   help="timm architecture of a --backbone weights file, e.g. vit_base_patch16_224")
    t.add_argument("--hub", action="store_true", help="download --backbone weights from the timm hub")
    t.add_argument("--epochs", type=int, default=5)
    t.add_argument("--batch-size", type=int, default=None, help="default 24 (prompt methods) / 32 (rehearsal)")
    t.add_argument("--plugin", choices=("none", "clfd", "fdinet"), default="none", help="rehearsal methods only")
    t.add_argument("--nf", type=int, default=8, help="ResNet-18 width for rehearsal (papers: 20; default 8 for CPU)")
    t.add_argument("--buffer-size", type=int, default=50)
    t.add_argument("--lr", type=float, default=None,
                   help="base learning rate (rehearsal: SGD lr; prompt methods: the official lr before ·batch/256)")
    t.add_argument("--best-args", action="store_true",
                   help="mammoth best args and epochs (CIFAR/Tiny); on split-digits the quick CPU args (QUICK_ARGS)")
    t.add_argument("--accelerate", action="store_true",
                   help="data-parallel through accelerate (with torchrun / accelerate launch; rehearsal methods)")
    t.add_argument("--augment", choices=("default", "on", "off"), default="default",
                   help="rehearsal train transform: benchmark default (crop+flip for CIFAR/Tiny, none for digits)")
    t.add_argument("--prompt-length", type=int, default=5)
    t.add_argument("--no-feature-translation", action="store_true")
    p = t.add_argument_group("PrePrompt")
    p.add_argument("--head-lr", type=float, default=None, help="head Adam lr (default: official ·0.1, budget-scaled)")
    p.add_argument("--route-lr", type=float, default=None, help="route-net Adam lr (default as --head-lr)")
    p.add_argument("--no-budget-scaling", action="store_true",
                   help="official head/route-net rates even at short budgets (see PrePromptConfig)")
    p.add_argument("--ca-lr", type=float, default=None, help="alignment lr before ·batch/256 (official 0.1432)")
    p.add_argument("--crct-epochs", type=int, default=None, help="alignment epochs (official 30; 0 turns it off)")
    p.add_argument("--lr-schedule", choices=("step", "cosine", "constant"), default=None,
                   help="schedule of the per-task training (official CIFAR-100: step)")
    p.add_argument("--ca-schedule", choices=("cosine", "constant"), default=None,
                   help="schedule of the alignment stage (official: cosine)")
    t.add_argument("--device", default="auto")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", required=True)
    t.add_argument("--resume", action="store_true")
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(fn=cmd_train)
    sub.add_parser("list", help="list methods, benchmarks and shipped backbones").set_defaults(fn=cmd_list)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    if getattr(args, "epochs", 1) < 1:
        parser.error("--epochs must be at least 1")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    try:
        return args.fn(args)
    except (ValueError, TypeError, FileNotFoundError, ImportError, RuntimeError, OSError) as err:
        if args.verbose:
            raise
        lines = str(err).strip().splitlines() or [type(err).__name__]
        print(f"clfreq: error: {lines[0]}", file=sys.stderr)  # one line; -v shows the traceback
        return 2


if __name__ == "__main__":
    sys.exit(main())
