"""Training of :class:`streamdsgn.engine.StreamDSGN` in named phases (:class:`FitLoop`: ``resume``, ``epoch``,
``step``, ``end_epoch`` = history + checkpoint, ``finish``), with its settings (:class:`TrainConfig`) and the
OpenPCDet one-cycle schedule (:func:`one_cycle`). The recipe is described in :mod:`streamdsgn.engine`."""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from commons.io import config_differences

from .data import SupervisedSamples, collate
from .losses import LossWeights

logger = logging.getLogger(__name__)

__all__ = ["FitLoop", "TrainConfig", "one_cycle", "train_step"]


def one_cycle(step: int, total: int, lr: float, div_factor: float = 10.0, pct_start: float = 0.4,
              moms: tuple = (0.95, 0.85)) -> tuple[float, float]:
    """OpenPCDet ``OneCycle``: ``(lr, beta1)`` at 0-based ``step`` of ``total``."""
    def cos_anneal(a: float, b: float, pct: float) -> float:
        return b + (a - b) / 2.0 * (math.cos(math.pi * pct) + 1)

    total = max(1, total)
    up = max(1, int(total * pct_start))
    low, final = lr / div_factor, lr / div_factor / 1e4
    if step < up:
        pct = step / up
        return cos_anneal(low, lr, pct), cos_anneal(moms[0], moms[1], pct)
    pct = min(1.0, (step - up) / max(1, total - up))
    return cos_anneal(lr, final, pct), cos_anneal(moms[1], moms[0], pct)


@dataclass
class TrainConfig:
    """Training settings; defaults are the released recipe (B6) except ``epochs`` (20 there)."""

    epochs: int = 20
    batch_size: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.01
    moms: tuple = (0.95, 0.85)
    pct_start: float = 0.4
    div_factor: float = 10.0
    grad_clip: float = 10.0
    mixed_precision: str = "no"
    history_grad: bool = True
    samples_per_epoch: int | None = None
    seed: int = 0
    log_every: int = 10
    num_workers: int = 0  # DataLoader worker processes decoding, augmenting and collating samples
    losses: LossWeights = field(default_factory=LossWeights)

    def __post_init__(self) -> None:
        if not isinstance(self.num_workers, int) or self.num_workers < 0:
            raise ValueError(f"num_workers must be a non-negative int, got {self.num_workers!r}")
        for name in ("epochs", "batch_size", "log_every"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if self.samples_per_epoch is not None and (not isinstance(self.samples_per_epoch, int)
                                                   or self.samples_per_epoch < 1):
            raise ValueError(f"samples_per_epoch must be None or a positive int, got {self.samples_per_epoch!r}")
        if not self.lr > 0 or self.weight_decay < 0 or not 0 < self.pct_start < 1 or self.div_factor < 1:
            raise ValueError("need lr > 0, weight_decay >= 0, 0 < pct_start < 1, div_factor >= 1")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ValueError(f"mixed_precision must be 'no', 'bf16' or 'fp16', got {self.mixed_precision!r}")
        self.moms = tuple(self.moms)
        if isinstance(self.losses, dict):
            self.losses = LossWeights(**self.losses)


class FitLoop:
    """One :meth:`~streamdsgn.engine.StreamDSGN.fit` call: ``steps_per_epoch`` optimiser steps per epoch over this
    process's share of a seeded, wrap-padded sample order; a resumable state after every epoch.

    Phases, in order: :meth:`resume` (``run_dir/state.pt``), :meth:`prepare` (backend wrapping), then per epoch
    :meth:`epoch_batches` (the epoch's order and loader), per batch :meth:`step` (schedule + one optimiser step) and
    :meth:`log`, then :meth:`end_epoch` (history, checkpoint); :meth:`finish` (``run_dir/final``)."""

    def __init__(self, detector, config: TrainConfig, backend, run, n: int):
        self.det, self.config, self.backend, self.run, self.n = detector, config, backend, run, n
        self.per_epoch = min(n, config.samples_per_epoch or n)
        self.steps_per_epoch = math.ceil(self.per_epoch / (config.batch_size * backend.num_processes))
        self.total = self.steps_per_epoch * config.epochs
        self.model = detector.model
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optim = torch.optim.AdamW(params, lr=config.lr / config.div_factor, betas=(config.moms[0], 0.99),
                                       weight_decay=config.weight_decay)
        self.history: dict = {"step": [], "loss": [], "parts": [], "epoch_loss": [], "lr": [], "seconds": 0.0}
        self.epoch, self.step_count = 0, 0

    # ---------------------------------------------------------------------------------------------- phases
    def resume(self) -> None:
        """Model, optimiser, epoch, step and history of the last finished epoch, when ``run_dir/state.pt`` exists.
        A state written with another training or model configuration is refused (``ValueError`` naming the first
        differing setting) before anything is loaded: continuing it would follow neither run's schedule or model.
        Exempt: ``log_every``, ``num_workers`` (the sample order does not depend on it), the post-processing
        fields of the model config and its ``pretrained`` initialisation file (the state replaces the weights)."""
        state = self.run.load_state() if self.run is not None else None
        if state is None:
            return
        self._check_same_config(state)
        self.model.load_state_dict(state["model"])
        self.optim.load_state_dict(state["optimizer"])
        self.epoch, self.step_count, self.history = int(state["epoch"]), int(state["step"]), state["history"]
        logger.info("resumed from %s after epoch %d", self.run.state_path, self.epoch)

    def prepare(self) -> None:
        self.model, self.optim = self.backend.prepare(self.model, self.optim)

    def epoch_batches(self, dataset, transform):
        """Iterator over this process's batches of the current epoch: the order ``default_rng((seed, epoch))``,
        padded by wrapping around (as ``DistributedSampler``) so every process has a full batch at every step."""
        c, backend = self.config, self.backend
        self.model.train()
        order = np.random.default_rng((c.seed, self.epoch)).permutation(self.n)[:self.per_epoch]
        order = np.resize(order, self.steps_per_epoch * c.batch_size * backend.num_processes)
        order = order[backend.process_index::backend.num_processes]
        view = SupervisedSamples(dataset, "token" if self.det.config.baseline else "next", transform, c.seed)
        view.epoch = self.epoch
        loader = torch.utils.data.DataLoader(view, batch_size=c.batch_size, sampler=[int(j) for j in order],
                                             num_workers=c.num_workers, collate_fn=collate)
        return iter(loader)

    def step(self, batches, bar) -> tuple[dict, float]:
        """The one-cycle learning rate and β1 of this step, then one optimiser step on the next batch; returns the
        loss parts and the learning rate."""
        c = self.config
        lr, beta1 = one_cycle(self.step_count, self.total, c.lr, c.div_factor, c.pct_start, c.moms)
        for g in self.optim.param_groups:
            g["lr"], g["betas"] = lr, (beta1, g["betas"][1])
        self.step_count += 1
        bar.update(1)
        return self.train_step(next(batches)), lr

    def log(self, parts: dict, lr: float, last_of_epoch: bool, bar) -> None:
        if self.step_count % self.config.log_every == 0 or last_of_epoch:
            h = self.history
            h["step"].append(self.step_count)
            h["loss"].append(parts["total"])
            h["parts"].append(parts)
            h["lr"].append(lr)
            bar.set_postfix(loss=f"{parts['total']:.3f}")

    def end_epoch(self, losses: list[float], seconds: float) -> None:
        """Epoch mean loss and time in the history, then the resumable state (atomic write)."""
        h = self.history
        self.epoch += 1
        h["epoch_loss"].append(float(np.mean(losses)) if losses else float("nan"))
        h["seconds"] = float(h.get("seconds", 0.0)) + seconds
        self.checkpoint()
        self.backend.wait()

    def finish(self) -> dict:
        backend, run = self.backend, self.run
        self.det.model = backend.unwrap(self.model)
        if run is not None and backend.is_main_process and self.epoch >= self.config.epochs:
            self.det.save(run.path / "final", overwrite=True)
        return self.history

    # ---------------------------------------------------------------------------------------------- helpers
    #: settings a resume may change: logging, loader workers, post-processing, the initialisation file (overwritten)
    _RESUME_EXEMPT = ("log_every", "num_workers", "score_threshold", "nms_iou", "nms_pre", "nms_post", "nms_rotated",
                      "pretrained")

    def _check_same_config(self, state: dict) -> None:
        for name, ours in (("train_config", asdict(self.config)), ("model_config", self.det.config.to_dict())):
            theirs = state.get(name)
            if theirs is None:  # a state written before configurations were stored
                continue
            diffs = config_differences(theirs, ours, ignore=self._RESUME_EXEMPT)
            if diffs:
                key, a, b = diffs[0]
                raise ValueError(f"cannot resume {self.run.state_path}: it was written with {name} {key}={a!r}, "
                                 f"this run has {b!r}")

    def checkpoint(self) -> None:
        if self.run is not None and self.backend.is_main_process:
            self.run.save_state({"model": self.backend.unwrap(self.model).state_dict(),
                                 "optimizer": self.optim.state_dict(), "epoch": self.epoch, "step": self.step_count,
                                 "history": self.history, "train_config": asdict(self.config),
                                 "model_config": self.det.config.to_dict()})

    def train_step(self, batch: dict) -> dict:
        """One optimiser step of this loop's model and optimiser on ``batch`` (:func:`train_step`)."""
        return train_step(self.det, self.model, self.optim, self.backend, batch, self.config)


def train_step(detector, model, optim, backend, batch: dict, config: TrainConfig) -> dict:
    """Forward (token frame with its ``prev`` pair unless the baseline), losses (``config.losses``), backward, clip,
    optimiser step; returns the loss parts as floats. ``model`` is ``detector.model`` as wrapped by ``backend``.
    :class:`FitLoop` and the time-budgeted ``tools/streamdsgn_train.py`` / ``tools/bench/streamdsgn.py`` share it."""
    c, dev, weights = config, backend.device, config.losses
    tok = batch["frames"]["token"]
    prev = batch["frames"].get("prev")
    calib = {k: v.to(dev) for k, v in batch["calib"].items()}
    fu = batch["fu_baseline"].to(dev)
    kwargs = {}
    if not detector.config.baseline and prev is not None:
        kwargs = {"prev_left": prev["left"].to(dev), "prev_right": prev["right"].to(dev),
                  "prev_valid": prev["valid"].to(dev), "prev_grad": c.history_grad}
    with backend.autocast():
        preds = model(tok["left"].to(dev), tok["right"].to(dev), calib, fu,
                      with_depth=weights.depth > 0 and tok.get("depth") is not None, **kwargs)
    losses = detector.compute_losses(preds, batch, weights)
    optim.zero_grad(set_to_none=True)
    backend.backward(losses["total"])
    if c.grad_clip:
        backend.clip_grad_norm_(model.parameters(), c.grad_clip)  # unscales fp16 gradients first
    backend.step(optim)
    return {k: float(v.detach()) for k, v in losses.items()}
