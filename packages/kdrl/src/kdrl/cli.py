"""``kdrl`` command line.

``kdrl train``     train (or load) teachers, distil a student with a weighting strategy, evaluate.
``kdrl evaluate``  evaluate a saved student checkpoint.
``kdrl list``      list model presets and strategies.

Examples::

    kdrl train                                   # embedded digits default, MTKD-RL, a few CPU minutes at most
    kdrl train --strategy aver --epochs 10
    kdrl train --data cifar100 --data-root ~/data --download --teachers resnet32x4,resnet56 --student resnet8x4
    kdrl train --strategy aekd --aekd-cap 0.6 --beta 5 -T 4
    kdrl train --strategy mmkd --meta-lr 1e-3 --meta-freq 5
    kdrl train --resume                          # refuses a run saved with other settings unless --force
    accelerate launch -m kdrl.cli train --data cifar100 --data-root ~/data   # several GPUs
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

DIGITS_TEACHERS = "digits_resnet14,digits_convnet_wide,digits_mlp"
DIGITS_STUDENT = "digits_convnet_tiny"
CIFAR_TEACHERS = "resnet32x4,resnet56"
CIFAR_STUDENT = "resnet8x4"


def _parser() -> argparse.ArgumentParser:
    from .strategies import list_strategies

    p = argparse.ArgumentParser(prog="kdrl", description="Multi-teacher knowledge distillation (MTKD-RL and baselines)")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train/load teachers, distil a student, evaluate")
    t.add_argument("--data", choices=["digits", "cifar100"], default="digits")
    t.add_argument("--data-root", default=None, help="folder containing cifar-100-python (for --data cifar100)")
    t.add_argument("--teachers", default=None, help="comma-separated kdrl presets or timm:<name> "
                   f"(default digits: {DIGITS_TEACHERS}; cifar100: {CIFAR_TEACHERS})")
    t.add_argument("--teacher-ckpts", default=None,
                   help="comma-separated checkpoint dirs (model.safetensors) or official RepDistiller/MTKD-RL .pth "
                   "files (kdrl.load_official) to load instead of training teachers")
    t.add_argument("--student", default=None, help=f"student preset (default digits: {DIGITS_STUDENT}; "
                   f"cifar100: {CIFAR_STUDENT})")
    t.add_argument("--strategy", default="mtkd_rl", choices=list_strategies())
    t.add_argument("--epochs", type=int, default=None, help="student epochs (default: 30 digits, 240 cifar100)")
    t.add_argument("--teacher-epochs", type=int, default=None, help="teacher epochs (default: 15 digits, 240 cifar)")
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--lr", type=float, default=0.05)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", default="runs/kdrl", help="run folder (teachers cached in <out>/teachers)")
    t.add_argument("--download", action="store_true", help="download CIFAR-100 into --data-root if missing (internet)")
    t.add_argument("--temperature", "-T", type=float, default=4.0, help="KD temperature T (official: 4)")
    t.add_argument("--beta", type=float, default=5.0, help="feature-KD weight beta (MTKD-RL official: 5)")
    t.add_argument("--kd-weight", type=float, default=1.0, help="logit-KD weight (official: 1)")
    t.add_argument("--agent-step", type=int, default=None,
                   help="mtkd_rl*: replay the agent's buffer every this many batches and at epoch end (official: 1000)")
    t.add_argument("--agent-lr", type=float, default=None, help="mtkd_rl*: agent SGD learning rate (official: 0.1)")
    t.add_argument("--meta-lr", type=float, default=None, help="mmkd: Adam lr of the weight networks (official 1e-3)")
    t.add_argument("--meta-freq", type=int, default=None,
                   help="mmkd: a meta step every this many batches and at the last one (official 5)")
    t.add_argument("--aekd-cap", type=float, default=None,
                   help="aekd: the cap C on every teacher weight (official -C 0.6; nu = 1/(C M))")
    t.add_argument("--resume", action="store_true", help="continue from <out>/<strategy>_seed<seed>/state.pt "
                   "(refused if it was written with other settings, unless --force)")
    t.add_argument("--force", action="store_true", help="with --resume: continue even if the saved settings differ")
    t.add_argument("--device", default="auto", help="auto | cpu | cuda[:i] (single process)")
    t.add_argument("--mixed-precision", default="no", choices=["no", "bf16", "fp16"])
    t.add_argument("--num-workers", type=int, default=4, help="CIFAR loader workers")
    t.add_argument("--no-progress", action="store_true")
    e = sub.add_parser("evaluate", help="evaluate a saved student")
    e.add_argument("checkpoint", help="directory with model.safetensors (e.g. runs/kdrl/mtkd_rl_seed0/student)")
    e.add_argument("--student", default=DIGITS_STUDENT)
    e.add_argument("--data", choices=["digits", "cifar100"], default="digits")
    e.add_argument("--data-root", default=None)
    e.add_argument("--download", action="store_true", help="download CIFAR-100 if missing (internet)")
    e.add_argument("--seed", type=int, default=0, help="digits split seed used in training")
    sub.add_parser("list", help="list model presets and strategies")
    for sp in (t, e):
        sp.add_argument("-v", "--verbose", action="store_true", help="show tracebacks")
    return p


def _loaders(args, batch_size: int):
    from .data import cifar100_loaders, digits_loaders

    if args.data == "digits":
        return digits_loaders(batch_size, seed=args.seed)
    if not args.data_root:
        raise SystemExit("--data cifar100 needs --data-root <folder containing cifar-100-python>")
    return cifar100_loaders(args.data_root, batch_size, num_workers=getattr(args, "num_workers", 4),
                            download=args.download)


def _strategy_kwargs(args) -> dict:
    """Strategy options from the flags; a flag for another strategy is an error, not silently ignored."""
    kw: dict = {}
    mtkd = args.strategy.startswith("mtkd_rl")
    for flag, value, key, ok in (("--agent-step", args.agent_step, "agent_step", mtkd),
                                 ("--agent-lr", args.agent_lr, "lr", mtkd),
                                 ("--aekd-cap", args.aekd_cap, "C", args.strategy == "aekd"),
                                 ("--meta-lr", args.meta_lr, "meta_lr", args.strategy == "mmkd"),
                                 ("--meta-freq", args.meta_freq, "meta_freq", args.strategy == "mmkd")):
        if value is None:
            continue
        if not ok:
            raise SystemExit(f"{flag} does not apply to --strategy {args.strategy}")
        kw[key] = value
    return kw


def _train(args) -> int:
    from commons.device import TrainingBackend, seed_everything
    from commons.io import load_checkpoint

    from .config import DistillConfig, TeacherTrainConfig, scaled_milestones
    from .distiller import MultiTeacherDistiller
    from .strategies import create_strategy
    from .teachers import TeacherPool, load_official, resolve_model
    from .training import evaluate_classifier, load_or_train_teachers

    seed_everything(args.seed)
    strategy = create_strategy(args.strategy, **_strategy_kwargs(args))  # bad values fail before any training
    digits = args.data == "digits"
    teachers = (args.teachers or (DIGITS_TEACHERS if digits else CIFAR_TEACHERS)).split(",")
    student_name = args.student or (DIGITS_STUDENT if digits else CIFAR_STUDENT)
    epochs = args.epochs or (30 if digits else 240)
    t_epochs = args.teacher_epochs or (15 if digits else 240)
    kw = {} if digits else {"num_classes": 100}
    cfg = DistillConfig(epochs=epochs, milestones=scaled_milestones(epochs), batch_size=args.batch_size, lr=args.lr,
                        seed=args.seed, temperature=args.temperature, feat_weight=args.beta,
                        kd_weight=args.kd_weight)  # validated here, before teachers are trained
    import torch

    # accelerate only shards over CPU processes (torchrun / accelerate launch on a CPU-only host) with cpu=True
    cpu = args.device == "cpu" or (args.device == "auto" and not torch.cuda.is_available())
    backend = TrainingBackend(mixed_precision=args.mixed_precision, cpu=cpu,
                              device=None if args.device == "auto" else args.device)
    train_loader, test_loader = _loaders(args, args.batch_size)
    out = Path(args.out)
    if args.teacher_ckpts:
        paths = args.teacher_ckpts.split(",")
        if len(paths) != len(teachers):
            raise SystemExit(f"--teacher-ckpts has {len(paths)} entries for {len(teachers)} teachers")
        models = []
        for name, path in zip(teachers, paths):
            if Path(path).is_file():  # an official RepDistiller/MTKD-RL .pth (or .safetensors) checkpoint
                models.append(load_official(path, name))
                continue
            m = resolve_model(name, **kw)
            state, _ = load_checkpoint(path, expected_keys=set(m.state_dict()))
            m.load_state_dict(state)
            models.append(m.eval())
    else:
        tcfg = TeacherTrainConfig(epochs=t_epochs, milestones=scaled_milestones(t_epochs), batch_size=args.batch_size,
                                  seed=args.seed if digits else 0)
        models = load_or_train_teachers(teachers, train_loader, out / "teachers", tcfg, backend=backend,
                                        progress=not args.no_progress, model_kwargs=kw)
    report = {"teachers": {}}
    for name, m in zip(teachers, models):
        report["teachers"][name] = evaluate_classifier(m.to(backend.device), test_loader)["top1"]
    distiller = MultiTeacherDistiller(resolve_model(student_name, **kw), TeacherPool(models, names=teachers),
                                      strategy, cfg, backend=backend)
    run_dir = out / f"{args.strategy}_seed{args.seed}"
    history = distiller.fit(train_loader, test_loader, run_dir=run_dir, resume=args.resume,
                            progress=not args.no_progress, force=args.force)
    final = distiller.evaluate(test_loader)
    report.update({"student": student_name, "strategy": args.strategy, "student_top1": final["top1"],
                   "final_logit_weights": history["epochs"][-1]["logit_weights"], "run_dir": str(run_dir)})
    if backend.is_main_process:
        print(json.dumps(report, indent=2))
    backend.close()
    return 0


def _evaluate(args) -> int:
    from commons.io import load_checkpoint

    from .teachers import resolve_model
    from .training import evaluate_classifier

    kw = {} if args.data == "digits" else {"num_classes": 100}
    model = resolve_model(args.student, **kw)
    state, _ = load_checkpoint(args.checkpoint, expected_keys=set(model.state_dict()))
    model.load_state_dict(state)
    _, test_loader = _loaders(args, 256)
    print(json.dumps(evaluate_classifier(model, test_loader, "cpu"), indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "list":
        from .models import list_models
        from .strategies import list_strategies

        print("models:", ", ".join(list_models()), "(or timm:<name>)")
        print("strategies:", ", ".join(list_strategies()))
        return 0
    try:
        return _evaluate(args) if args.command == "evaluate" else _train(args)
    except (ValueError, TypeError, FileNotFoundError, ImportError, KeyError) as err:
        if args.verbose:
            raise
        print(f"kdrl: error: {err} (-v for the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
