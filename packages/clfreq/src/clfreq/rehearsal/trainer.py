"""The resumable continual-learning trainer (mammoth ``utils/training.py``): task by task, epoch by epoch, calling
the method's hooks; fills :class:`commons.metrics.AccuracyMatrix` (Class-IL and Task-IL) after every task.

Usage::

    from clfreq import DERpp, CLFD, split_digits, train_continual
    bench = split_digits(seed=0)
    result = train_continual(CLFD(DERpp(lr=0.03, alpha=0.1, beta=0.5, buffer_size=50)), bench, epochs=5, seed=0)
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .augment import Augment
from .base import Rehearsal
from .benchmarks import Benchmark

if TYPE_CHECKING:
    from commons.metrics import AccuracyMatrix

logger = logging.getLogger(__name__)


@torch.no_grad()
def evaluate(method: Rehearsal, bench: Benchmark, upto: int, batch: int = 512,
             rank: int = 0, world: int = 1) -> tuple[list[float], list[float]]:
    """Class-IL and Task-IL accuracy of ``method.eval_net`` on tasks 0..upto, as mammoth ``utils/evaluate.py``:
    Class-IL takes the argmax over the classes seen so far (tasks 0..upto), Task-IL over the task's own classes.
    With ``world`` > 1 each process scores every ``world``-th test sample and the counts are summed."""
    net, cpt = method.eval_net, bench.classes_per_task
    seen = (upto + 1) * cpt  # mammoth utils/evaluate.py: Class-IL argmax over the classes seen so far only
    net.eval()
    counts = torch.zeros(upto + 1, 3, dtype=torch.float64)
    for t in range(upto + 1):
        x, y = bench.test[t]
        if world > 1:
            x, y = x[rank::world], y[rank::world]
        for i in range(0, len(x), batch):
            out = net(x[i:i + batch].to(method.device))[:, :seen]
            yy = y[i:i + batch].to(method.device)
            masked = torch.full_like(out, float("-inf"))
            masked[:, t * cpt:(t + 1) * cpt] = out[:, t * cpt:(t + 1) * cpt]
            counts[t, 0] += int((out.argmax(1) == yy).sum())
            counts[t, 1] += int((masked.argmax(1) == yy).sum())
        counts[t, 2] = len(x)
    if world > 1:
        from .distributed import allreduce_sum_

        counts = allreduce_sum_(counts.to(method.device)).cpu()
    n = counts[:, 2].clamp_min(1)
    return (counts[:, 0] / n).tolist(), (counts[:, 1] / n).tolist()



def _make_augment(bench: Benchmark, augment, seed: int, rank: int):
    if augment is None:
        spec = bench.augment
    elif augment is False:
        spec = None
    elif augment is True:
        spec = bench.augment or {"padding": 4, "flip": True}
    elif isinstance(augment, dict):
        spec = augment
    else:
        raise TypeError(f"augment must be None, a bool or a dict like {{'padding': 4, 'flip': True}}, got {augment!r}")
    if spec is None:
        return None
    unknown = set(spec) - {"padding", "flip"}
    if unknown:
        raise ValueError(f"augment accepts the keys 'padding' and 'flip', got {sorted(unknown)}")
    return Augment(int(spec.get("padding", 4)), bool(spec.get("flip", True)), seed=seed * 1000003 + rank)

@dataclass
class _Progress:
    """What a checkpoint restores besides the method: the next (task, epoch), the matrices and the data order."""

    cil: AccuracyMatrix
    til: AccuracyMatrix
    gen: torch.Generator
    task: int = 0
    epoch: int = 1
    train_seconds: float = 0.0


def _check_args(method, epochs, batch_size) -> None:
    if not isinstance(method, Rehearsal):
        raise TypeError(f"method must be a Rehearsal method (create_method(...)), got {type(method).__name__}")
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")


def _resume(method: Rehearsal, prog: _Progress, state_path: Path) -> None:
    """Load the state saved after the last finished epoch, if any, and tell the method where the run resumes."""
    from commons.io import load_training_state

    s = load_training_state(state_path)
    if s is None:
        return
    if s.get("label", method.label) != method.label:
        raise ValueError(f"{state_path} belongs to a {s['label']!r} run; resume it with the same method and plugin "
                         f"(got {method.label!r}) or use another out_dir")
    method.load_state_dict(s["method"])
    prog.task, prog.epoch, prog.train_seconds = s["task"], s["epoch"], s["train_seconds"]
    prog.cil.matrix, prog.til.matrix = np.array(s["cil"], dtype=float), np.array(s["til"], dtype=float)
    prog.gen.set_state(s["gen"])
    if "torch_rng" in s:
        torch.set_rng_state(s["torch_rng"])
    method.on_resume(prog.task, prog.epoch)
    logger.info("resuming at task %d epoch %d", prog.task, prog.epoch)


def _train_epoch(method: Rehearsal, x, y, prog: _Progress, label: str, batch_size: int, dev, backend, progress: bool,
                 rank: int, world: int) -> None:
    """One pass over this process's shard of the task's data in a seeded order (one :meth:`observe` per batch),
    then the per-process counters summed over the processes."""
    from tqdm.auto import tqdm

    from .distributed import allreduce_sum_delta, shard_permutation

    counted = method.epoch_counters()
    snap = [b.clone() for b in counted] if world > 1 else []
    perm = shard_permutation(torch.randperm(len(x), generator=prog.gen), rank, world)
    bar = tqdm(range(0, len(perm), batch_size), desc=label, disable=not progress or rank != 0, leave=False)
    for i in bar:
        idx = perm[i:i + batch_size]
        loss = method.observe(x[idx].to(dev), y[idx].to(dev), backend)
        bar.set_postfix(loss=f"{loss:.3f}")
    for b, s0 in zip(counted, snap):  # e.g. CLFD's activation counts: sum what every process counted
        allreduce_sum_delta(b, s0)


def _end_task(method: Rehearsal, bench: Benchmark, prog: _Progress, t: int, on_task_end, rank: int,
              world: int) -> None:
    """The method's end-of-task hook, then row ``t`` of both accuracy matrices."""
    method.end_task(t)
    cil, til = evaluate(method, bench, t, rank=rank, world=world)
    for j in range(t + 1):
        prog.cil.set(t, j, cil[j])
        prog.til.set(t, j, til[j])
    if on_task_end is not None:
        on_task_end(t, prog.cil, prog.til)


def _checkpoint(method: Rehearsal, prog: _Progress, state_path: Path, t: int, e: int, epochs: int) -> None:
    """Save everything needed to continue after epoch ``e`` of task ``t`` (atomic write)."""
    from commons.io import save_training_state

    nt, ne = (t + 1, 1) if e == epochs else (t, e + 1)
    s = {"method": method.state_dict(), "task": nt, "epoch": ne, "train_seconds": prog.train_seconds,
         "cil": prog.cil.matrix.tolist(), "til": prog.til.matrix.tolist(), "gen": prog.gen.get_state(),
         "torch_rng": torch.get_rng_state(), "label": method.label}
    save_training_state(state_path, s)


def _summary(method: Rehearsal, bench: Benchmark, prog: _Progress, seed: int, epochs: int, peak_bytes, world: int,
             transform) -> dict:
    from commons.profiling import count_parameters

    net, T = method.net, bench.num_tasks
    bb = net.features if hasattr(net, "features") else None
    backbone_params = (count_parameters(bb) if bb is not None
                       else count_parameters(net.low) + count_parameters(net.high))
    cil_m, til_m = prog.cil, prog.til
    return {
        "method": method.label, "benchmark": bench.name, "seed": seed, "epochs": epochs,
        "class_il": cil_m.average_accuracy(), "task_il": til_m.average_accuracy(),
        "forgetting": cil_m.forgetting(), "bwt": cil_m.backward_transfer(),
        "task_il_forgetting": til_m.forgetting(),
        "per_task_class_il": [cil_m.average_accuracy(i) for i in range(T)],
        "cil_matrix": cil_m.to_list(), "til_matrix": til_m.to_list(),
        "train_seconds": prog.train_seconds, "peak_memory_bytes": peak_bytes,
        "params": count_parameters(net), "backbone_params": backbone_params,
        "buffer_capacity": method.buffer_size * method.buffer_factor, "world_size": world,
        "augment": repr(transform) if transform is not None else None,
    }


def train_continual(method: Rehearsal, bench: Benchmark, epochs: int = 5, batch_size: int = 32, seed: int = 0,
                    device: str = "cpu", out_dir: str | Path | None = None, resume: bool = False,
                    progress: bool = False, backend=None, on_task_end=None, augment=None) -> dict:
    """Train ``method`` over ``bench`` task by task; returns the Class-IL/Task-IL accuracy matrices and metrics.

    ``augment``: ``None`` uses the benchmark's train transform (mammoth crop + flip for CIFAR / Tiny-ImageNet, none
    for Split Digits), ``False`` turns it off, ``True`` forces crop(4) + flip, a dict sets ``padding``/``flip``.
    With ``out_dir``, the full state (net, optimiser, buffer, RNGs, matrices) is saved atomically after every epoch
    (``commons.io.save_training_state``) and ``resume=True`` continues from it. ``backend`` is an optional
    ``commons.device.TrainingBackend``: under ``torchrun``/``accelerate launch`` with several processes the data
    are sharded, gradients and BatchNorm statistics are all-reduced after every backward and each process keeps a
    shard of the reservoir (policy in :mod:`clfreq.rehearsal.distributed`); each process writes its own state file.
    """
    from commons.device import seed_everything
    from commons.metrics import AccuracyMatrix
    from commons.profiling import PeakMemory

    from .distributed import dist_world

    _check_args(method, epochs, batch_size)
    rank, world = dist_world(backend)
    transform = _make_augment(bench, augment, seed, rank)
    seed_everything(seed)
    dev = torch.device(backend.device if backend is not None else device)
    method.setup(bench.num_classes, bench.in_channels, bench.classes_per_task, epochs, dev, seed,
                 transform=transform, rank=rank, world=world, black=bench.black[: bench.in_channels])
    T = bench.num_tasks
    # the data order: same permutation on every process, each takes its shard
    prog = _Progress(AccuracyMatrix(T), AccuracyMatrix(T), torch.Generator().manual_seed(seed))
    state_path = None
    if out_dir is not None:
        state_path = Path(out_dir) / ("state.pt" if rank == 0 else f"state.rank{rank}.pt")
    if resume and state_path is not None:
        _resume(method, prog, state_path)
    start_task, start_epoch = prog.task, prog.epoch
    with PeakMemory(dev) as pm:
        for t in range(start_task, T):
            x, y = bench.train[t]
            method.begin_task(t, x, y)
            for e in range(start_epoch if t == start_task else 1, epochs + 1):
                t0 = time.perf_counter()
                method.begin_epoch(e)
                _train_epoch(method, x, y, prog, f"{method.label} task {t + 1}/{T} ep {e}", batch_size, dev, backend,
                             progress, rank, world)
                method.end_epoch(e)
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                prog.train_seconds += time.perf_counter() - t0
                if e == epochs:
                    _end_task(method, bench, prog, t, on_task_end, rank, world)
                if state_path is not None:
                    _checkpoint(method, prog, state_path, t, e, epochs)
    return _summary(method, bench, prog, seed, epochs, pm.peak_bytes, world, transform)
