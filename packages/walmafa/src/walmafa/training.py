"""The training loop of :meth:`walmafa.engine.Enhancer.fit` in named phases (:class:`FitLoop`: ``resume``, ``step``,
``after_step`` = log / validate / checkpoint, ``finish``) and the data it reads: :class:`_Patches` (seeded random
crops + augmentation per item) and :class:`_StepBatches` (the global batch stream, resumable at any step)."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from commons.io import config_differences

from .losses import WalMaFaLoss

logger = logging.getLogger(__name__)


class _Patches(Dataset):
    """Training view of a pair dataset: item ``(index, epoch)`` → random crop + augmentation drawn from
    ``numpy.random.default_rng((seed, epoch, index))``."""

    def __init__(self, base: Dataset, patch: int, augment: bool, seed: int):
        from commons.data.lol import augment_pair, random_crop_pair

        self.base, self.patch, self.augment, self.seed = base, patch, augment, seed
        self._crop, self._aug = random_crop_pair, augment_pair

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, item):
        i, epoch = item if isinstance(item, tuple) else (item, 0)
        low, high = self.base[i]
        rng = np.random.default_rng((self.seed, epoch, i))
        low, high = self._crop(low, high, self.patch, rng)
        if self.augment:
            low, high = self._aug(low, high, int(rng.integers(0, 8)))
        return low.contiguous(), high.contiguous()


class _StepBatches(Sampler):
    """Batches of ``(index, epoch)`` for global steps ``start..steps-1`` of one endless stream: epoch ``e`` is the
    permutation ``default_rng((seed, e))`` of the dataset, so batch ``s`` depends only on ``(seed, s)`` and a
    resumed run sees exactly the batches the uninterrupted run would have seen.

    With ``world`` processes, one optimiser step consumes ``world`` consecutive global batches: process ``rank``
    takes batch ``s + rank`` of the step that starts at global batch ``s`` (every process makes the same number of
    steps; in a last, incomplete step the surplus processes read batches past ``steps`` of the same stream)."""

    def __init__(self, n: int, batch_size: int, seed: int, start: int, steps: int, rank: int = 0, world: int = 1):
        if not 0 <= rank < world:
            raise ValueError(f"need 0 <= rank < world, got rank={rank}, world={world}")
        self.n, self.bs, self.seed, self.start, self.steps = n, batch_size, seed, start, steps
        self.rank, self.world = rank, world

    def __len__(self) -> int:
        return max(0, math.ceil((self.steps - self.start) / self.world))

    def __iter__(self):
        perms: dict[int, np.ndarray] = {}
        for first in range(self.start, self.steps, self.world):
            step = first + self.rank
            batch = []
            for pos in range(step * self.bs, (step + 1) * self.bs):
                e, k = divmod(pos, self.n)
                if e not in perms:
                    perms.clear()
                    perms[e] = np.random.default_rng((self.seed, e)).permutation(self.n)
                batch.append((int(perms[e][k]), e))
            yield batch


# TrainConfig fields that only decide bookkeeping (when to log, validate or checkpoint; loader processes): a resumed
# run may change them. Every other field shapes the trajectory and must match the saved state.
RESUME_MAY_DIFFER = frozenset({"checkpoint_every", "log_every", "val_every", "num_workers"})
# model configuration fields that do not change the weights' meaning (the scan implementation and its chunk length)
RESUME_MODEL_MAY_DIFFER = frozenset({"scan", "chunk_size"})


class FitLoop:
    """One :meth:`~walmafa.engine.Enhancer.fit` call. ``step`` counts global batches (``world`` per optimiser step),
    so the schedule, logging, validation and checkpoints fall on the same batches whatever the number of processes.

    Phases, in order: :meth:`resume` (state of ``run_dir/state.pt``), :meth:`loader` (the remaining batches),
    :meth:`prepare` (backend wrapping), then per batch :meth:`step` (one optimiser step) and :meth:`after_step`
    (log, validate, checkpoint), and :meth:`finish` (final validation, state, ``run_dir/final``)."""

    def __init__(self, enhancer, config, backend, run, val_set=None):
        self.enhancer, self.config, self.backend, self.run, self.val_set = enhancer, config, backend, run, val_set
        self.world, self.rank = backend.num_processes, backend.process_index
        self.model = enhancer.model
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optim = torch.optim.Adam(self.params, lr=config.lr, betas=config.betas, eps=config.eps)
        self.criterion = WalMaFaLoss(config.w_main, config.w_tv)
        self.history = {"step": [], "loss": [], "lr": [], "val_psnr": [], "val_ssim": [], "val_step": [],
                        "best": None}
        self.step_count = 0

    # ---------------------------------------------------------------------------------------------- phases
    def resume(self) -> None:
        """Model, optimiser, step and history from ``run_dir/state.pt`` when it exists.

        A resumed run must continue the same trajectory: the state's model (registry name, configuration) and every
        :class:`~walmafa.engine.TrainConfig` field that changes the batches, the schedule or the update must equal
        this call's; otherwise one line names the differences (before any weight is loaded). Only the
        bookkeeping fields in :data:`RESUME_MAY_DIFFER` may change."""
        state = self.run.load_state() if self.run is not None else None
        if state is None:
            return
        self.check_resumable(state)
        try:
            self.model.load_state_dict(state["model"])
            self.optim.load_state_dict(state["optimizer"])
        except (RuntimeError, KeyError, ValueError) as exc:
            raise ValueError(f"{self.run.state_path} does not fit this model/optimiser: "
                             f"{str(exc).strip().splitlines()[0][:300]}") from exc
        self.step_count, self.history = int(state["step"]), state["history"]
        self.history.setdefault("val_ssim", [])
        self.history.setdefault("best", None)
        logger.info("resumed from %s at step %d", self.run.state_path, self.step_count)

    def loader(self, train_set: Dataset, stop_after: int | None) -> DataLoader:
        """This process's share of the global batch stream from the current step to ``steps`` (or ``stop_after``
        steps on); no loader sharding by accelerate, whose even-batches padding would break the step count."""
        c = self.config
        end = c.steps if stop_after is None else min(c.steps, self.step_count + int(stop_after))
        patches = _Patches(train_set, c.patch_size, c.augment, c.seed)
        sampler = _StepBatches(len(patches), c.batch_size, c.seed, self.step_count, end, self.rank, self.world)
        return DataLoader(patches, batch_sampler=sampler, num_workers=c.num_workers)

    def prepare(self) -> None:
        self.model, self.optim = self.backend.prepare(self.model, self.optim)
        self.model.train()

    def step(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        """One optimiser step on this process's batch (learning rate of the schedule, optional clipping)."""
        c, backend = self.config, self.backend
        for g in self.optim.param_groups:
            g["lr"] = c.lr_at(self.step_count)
        low, high = low.to(backend.device), high.to(backend.device)
        with backend.autocast():
            pred = self.model(low)
        loss = self.criterion(pred, high)
        self.optim.zero_grad(set_to_none=True)
        backend.backward(loss)
        if c.grad_clip:
            backend.clip_grad_norm_(self.params, c.grad_clip)  # unscales fp16 gradients first
        backend.step(self.optim)
        self.step_count += self.world
        return loss

    def after_step(self, loss: torch.Tensor, bar) -> None:
        """Log the loss, validate and checkpoint when the step crossed their intervals."""
        c, h = self.config, self.history
        if self.crossed(c.log_every) or self.step_count >= c.steps:
            h["step"].append(self.step_count)
            h["loss"].append(float(loss.detach()))  # this process's batch
            h["lr"].append(c.lr_at(self.step_count - self.world))
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
            self.log_metrics(loss=h["loss"][-1], lr=h["lr"][-1])
        if c.val_every and self.crossed(c.val_every):
            self.validate()
        if self.crossed(c.checkpoint_every):
            self.checkpoint()
        bar.update(min(self.world, c.steps - bar.n))

    def finish(self) -> dict:
        """Final validation (when the schedule is complete), state, ``run_dir/final`` weights; the history."""
        backend, run = self.backend, self.run
        self.enhancer.model = backend.unwrap(self.model)
        done = self.step_count >= self.config.steps
        if done:
            self.validate()
        self.checkpoint()
        backend.wait()
        if run is not None and backend.is_main_process and done:
            self.enhancer.save(run.path / "final", overwrite=True)
        return self.history

    # ---------------------------------------------------------------------------------------------- helpers
    def check_resumable(self, state: dict) -> None:
        """Refuse (ValueError, one line) a ``state.pt`` written with another model or training configuration."""
        diffs = []
        name = state.get("model_name")
        if name is not None and name != self.enhancer.model_name:
            diffs.append(f"model {name!r} != {self.enhancer.model_name!r}")
        cfg = getattr(self.enhancer.model, "config", None)
        saved_cfg, now_cfg = state.get("model_config"), cfg.to_dict() if hasattr(cfg, "to_dict") else None
        if saved_cfg is not None and now_cfg is not None and not diffs:  # same model: compare its configuration
            diffs += [f"model {k} {a!r} != {b!r}"
                      for k, a, b in config_differences(saved_cfg, now_cfg, ignore=RESUME_MODEL_MAY_DIFFER)]
        diffs += [f"{k} {a!r} != {b!r}" for k, a, b in config_differences(
            state.get("config") or {}, asdict(self.config), ignore=RESUME_MAY_DIFFER, common_only=True)]
        if diffs:
            raise ValueError(f"cannot resume {self.run.state_path}: it was written with a different setup ("
                             + "; ".join(diffs) + "); use the same settings or a new run folder")

    def crossed(self, every: int) -> bool:
        """Did the last step (``world`` global batches) pass a multiple of ``every``?"""
        return self.step_count // every > (self.step_count - self.world) // every

    def checkpoint(self) -> None:
        if self.run is not None and self.backend.is_main_process:
            self.run.save_state({"model": self.backend.unwrap(self.model).state_dict(),
                                 "optimizer": self.optim.state_dict(), "step": self.step_count,
                                 "history": self.history, "config": asdict(self.config),
                                 "model_name": self.enhancer.model_name, "model_config": self._model_config()})

    def _model_config(self) -> dict | None:
        cfg = getattr(self.enhancer.model, "config", None)
        return cfg.to_dict() if hasattr(cfg, "to_dict") else None

    def log_metrics(self, **row) -> None:
        """One JSON line per logged step / validation in ``run_dir/metrics.jsonl``."""
        if self.run is not None and self.backend.is_main_process:
            with open(self.run.file("metrics.jsonl"), "a", encoding="utf-8") as f:
                f.write(json.dumps({"step": self.step_count, **row}) + "\n")

    def validate(self) -> None:
        """Held-out PSNR/SSIM of the current weights; keeps the best (PSNR) weights in ``run_dir/best``."""
        from .engine import evaluate_pairs

        h, step = self.history, self.step_count
        if self.val_set is None or not self.backend.is_main_process or (h["val_step"] or [None])[-1] == step:
            return
        module = self.backend.unwrap(self.model)
        res = evaluate_pairs(module, self.val_set)
        h["val_step"].append(step)
        h["val_psnr"].append(res["psnr"])
        h["val_ssim"].append(res["ssim"])
        self.log_metrics(val_psnr=res["psnr"], val_ssim=res["ssim"])
        best = h["best"]
        if best is None or res["psnr"] > best["psnr"]:
            h["best"] = {"step": step, "psnr": res["psnr"], "ssim": res["ssim"]}
            if self.run is not None:
                self.enhancer._save_module(module, self.run.path / "best")
        logger.info("step %d: val PSNR %.3f dB, SSIM %.4f (best %.3f dB at step %d)", step, res["psnr"],
                    res["ssim"], h["best"]["psnr"], h["best"]["step"])
