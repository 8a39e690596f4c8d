"""The training loop of :meth:`kdrl.distiller.MultiTeacherDistiller.fit` in named phases (:class:`DistillLoop`):
``setup`` (seed, batch-size rule, model on the first batch, optimiser), ``resume`` (``run_dir/state.pt``),
``prepare`` (backend wrapping), per epoch ``begin_epoch`` / ``step`` per batch / ``end_epoch`` (epoch record,
evaluation) / ``checkpoint``, and ``finish`` (student weights and ``history.json``).

The student objective of one step is the one documented in :mod:`kdrl.distiller`.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from .losses import cosine_per_sample, feature_mse_per_sample, kd_kl_per_sample, teacher_cross_entropy
from .strategies import DistillContext, StudentStep
from .training import evaluate_classifier, make_sgd

if TYPE_CHECKING:
    from .distiller import MultiTeacherDistiller

__all__ = ["DistillLoop"]

logger = logging.getLogger(__name__)


@dataclass
class _EpochTotals:
    """Sample-weighted sums over one epoch's batches (and the time spent in the strategy)."""

    num_teachers: int
    t0: float = field(default_factory=time.perf_counter)
    strategy_seconds: float = 0.0
    sums: dict[str, float] = field(default_factory=lambda: dict.fromkeys(("loss", "ce", "kd", "feat", "correct",
                                                                           "n"), 0.0))
    w_l_sum: torch.Tensor = field(init=False)  # per-teacher logit weights summed over samples
    w_f_sum: torch.Tensor = field(init=False)  # per-teacher feature weights summed over samples

    def __post_init__(self) -> None:
        self.w_l_sum = torch.zeros(self.num_teachers)
        self.w_f_sum = torch.zeros(self.num_teachers)

    def add(self, loss, ce, kd_term, feat_term, logits, y) -> None:
        n = float(y.numel())
        s = self.sums
        s["loss"] += float(loss.detach()) * n
        s["ce"] += float(ce.detach().mean()) * n
        s["kd"] += float(kd_term.detach().mean()) * n
        s["feat"] += float(feat_term.detach().mean()) * n
        s["correct"] += float((logits.argmax(1) == y).sum())
        s["n"] += n

    def record(self, epoch: int, lr: float, extra: dict[str, Any]) -> dict[str, Any]:
        s = self.sums
        n = max(s["n"], 1.0)
        return {
            "epoch": epoch, "lr": lr, "seconds": time.perf_counter() - self.t0,
            "strategy_seconds": self.strategy_seconds, "train_loss": s["loss"] / n, "train_ce": s["ce"] / n,
            "train_kd": s["kd"] / n, "train_feat": s["feat"] / n, "train_top1": 100.0 * s["correct"] / n,
            "logit_weights": (self.w_l_sum / n).tolist(), "feat_weights": (self.w_f_sum / n).tolist(), **extra,
        }


class DistillLoop:
    """One :meth:`~kdrl.distiller.MultiTeacherDistiller.fit` call. The history lives on the distiller
    (``distiller.history``), the final unwrapped model goes back to ``distiller.model``."""

    def __init__(self, distiller: MultiTeacherDistiller, train_loader: DataLoader,
                 eval_loader: DataLoader | None = None, run_dir: str | os.PathLike | None = None):
        self.distiller = distiller
        self.config, self.strategy, self.teachers = distiller.config, distiller.strategy, distiller.teachers
        self.train_loader, self.eval_loader = train_loader, eval_loader
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.state_path = self.run_dir / "state.pt" if self.run_dir is not None else None
        self.full_batch = int(train_loader.batch_size or 0)
        self.start_epoch = 0

    # ---------------------------------------------------------------------------------------------- phases
    def setup(self) -> None:
        """Seed, the fixed-batch rule of strategies that need it, the model (built on the first batch when the
        distiller has none), teachers on the device, the SGD optimiser."""
        from commons.device import seed_everything

        d, cfg = self.distiller, self.config
        seed_everything(cfg.seed)
        if self.strategy.fixed_batch_size:
            if self.full_batch < 2:
                raise ValueError(f"strategy {self.strategy.name!r} needs a train_loader with a fixed batch_size >= 2, "
                                 f"got batch_size={self.train_loader.batch_size!r}")
            self.strategy.batch_size = self.full_batch
        if d.model is None:
            first = next(iter(self.train_loader))
            if not isinstance(first, (tuple, list)) or len(first) < 2:
                raise ValueError("train_loader must yield (inputs, targets) batches")
            d.setup(first[0])
        self.backend = d.backend
        self.device = self.backend.device
        self.teachers.to(self.device)
        self.model = d.model
        self.opt = make_sgd(d.model.parameters(), cfg.lr, cfg.momentum, cfg.nesterov, cfg.weight_decay)

    def resume(self, resume: bool, force: bool) -> None:
        """With ``resume``: model, optimiser, strategy and history from ``state.pt`` (refused when it was written
        with another configuration, unless ``force``). A fresh run starts an empty history."""
        from commons.io import load_training_state

        d = self.distiller
        if resume:
            if self.state_path is None:
                raise ValueError("resume=True needs run_dir")
            state = load_training_state(self.state_path)
            if state is not None:
                d._check_resumable(state, self.state_path, force)
                d.model.load_state_dict(state["model"])
                self.opt.load_state_dict(state["optimizer"])
                self.strategy.load_state_dict(state["strategy"])
                d.history = state["history"]
                self.start_epoch = int(state["epoch"]) + 1
                logger.info("resuming from %s at epoch %d", self.state_path, self.start_epoch)
        if self.start_epoch == 0:
            d.history = {"epochs": []}

    def prepare(self, progress: bool):
        """Backend wrapping of model, optimiser and loader; returns the progress bar over the remaining epochs."""
        from tqdm.auto import tqdm

        self.model, self.opt, self.loader = self.backend.prepare(self.model, self.opt, self.train_loader)
        self.main = self.backend.is_main_process
        self.bar = tqdm(range(self.start_epoch, self.config.epochs), desc=f"distil[{self.strategy.name}]",
                        disable=not progress or not self.main)
        return self.bar

    def run_epoch(self, epoch: int) -> None:
        """``begin_epoch``, ``step`` on every batch (MMKD-style strategies skip a short last batch),
        ``end_epoch``, ``checkpoint``."""
        self.begin_epoch(epoch)
        num_batches = len(self.loader)
        for batch_index, (x, y) in enumerate(self.loader):
            if self.strategy.fixed_batch_size and x.shape[0] < self.full_batch:
                continue  # official MMKD: `if opt.batch_size > input.size(0): continue`
            self.step(epoch, x, y, batch_index, num_batches)
        self.end_epoch(epoch)
        self.checkpoint(epoch)

    def begin_epoch(self, epoch: int) -> None:
        """The epoch's learning rate, its RNG seed (so a resumed run continues bit-identically), train mode."""
        cfg = self.config
        self.lr = cfg.lr_at(epoch)
        for group in self.opt.param_groups:
            group["lr"] = self.lr
        torch.manual_seed(cfg.seed * 1000 + epoch)
        self.model.train()
        self.totals = _EpochTotals(len(self.teachers))

    def step(self, epoch: int, x: torch.Tensor, y: torch.Tensor, batch_index: int, num_batches: int) -> None:
        """One optimiser step on the student objective, then the strategy's own update."""
        cfg, strategy, backend, totals = self.config, self.strategy, self.backend, self.totals
        x, y = x.to(self.device), y.to(self.device)
        logits, fmap, adapted = self.model(x)
        ce = F.cross_entropy(logits.float(), y, reduction="none")
        if strategy.uses_teachers:
            t_outs = self.teachers(x)
            ctx, kd, feat = self.context(epoch, y, logits, adapted, t_outs, fmap)
            ts = time.perf_counter()
            w_l, w_f = strategy.weights(ctx)
            totals.strategy_seconds += time.perf_counter() - ts
            w_l = w_l.detach().to(kd)
            w_f = w_f.to(feat) if strategy.differentiable_feature_weights else w_f.detach().to(feat)
            kd_term = (w_l * kd).sum(1)
            feat_term = (w_f * feat).sum(1)
            per_sample = ce + cfg.kd_weight * kd_term + cfg.feat_weight * feat_term
        else:
            kd_term = feat_term = torch.zeros_like(ce)
            per_sample = ce
        loss = per_sample.mean()
        self.opt.zero_grad(set_to_none=True)
        backend.backward(loss)
        backend.step(self.opt)  # through the fp16 loss scaler where one is used
        if strategy.uses_teachers:
            ts = time.perf_counter()
            w_f = w_f.detach()
            strategy.observe(ctx, w_l, w_f, per_sample.detach())
            strategy.after_step(StudentStep(
                context=ctx, inputs=x, targets=y, model=backend.unwrap(self.model),
                optimizer=getattr(self.opt, "optimizer", self.opt), teachers=self.teachers, config=cfg,
                batch_index=batch_index, num_batches=num_batches))
            totals.strategy_seconds += time.perf_counter() - ts
            totals.w_l_sum += w_l.sum(0).cpu()
            totals.w_f_sum += w_f.sum(0).cpu()
        totals.add(loss, ce, kd_term, feat_term, logits, y)

    def end_epoch(self, epoch: int) -> dict[str, Any]:
        """The strategy's end of epoch, the epoch record (with ``test_top1`` when there is an eval loader) appended
        to the history."""
        totals, history = self.totals, self.distiller.history
        ts = time.perf_counter()
        extra = self.strategy.end_epoch(epoch) if self.strategy.uses_teachers else {}
        totals.strategy_seconds += time.perf_counter() - ts
        record = totals.record(epoch, self.lr, extra)
        if self.eval_loader is not None:
            record["test_top1"] = evaluate_classifier(self.backend.unwrap(self.model).student, self.eval_loader,
                                                      self.device)["top1"]
        history["epochs"].append(record)
        history["teachers"] = list(self.teachers.names)
        history["strategy"] = self.strategy.name
        history.update({k: v for k, v in self.strategy.extra_history().items()})
        self.bar.set_postfix(loss=f"{record['train_loss']:.3f}",
                             **({"test": f"{record['test_top1']:.1f}"} if "test_top1" in record else {}))
        return record

    def checkpoint(self, epoch: int) -> None:
        """``state.pt`` (atomically) after every epoch, on the main process."""
        from commons.io import save_training_state

        if self.state_path is not None and self.main:
            save_training_state(self.state_path, {
                "model": self.backend.unwrap(self.model).state_dict(), "optimizer": self.opt.state_dict(),
                "strategy": self.strategy.state_dict() if self.strategy.uses_teachers else {},
                "history": self.distiller.history, "epoch": epoch, **self.distiller._run_identity(),
            })

    def finish(self) -> dict[str, Any]:
        """The unwrapped model back on the distiller; ``run_dir/student`` and ``run_dir/history.json``."""
        from commons.io import save_checkpoint, save_json

        d = self.distiller
        d.model = self.backend.unwrap(self.model)
        if self.run_dir is not None and self.main:
            save_checkpoint(self.run_dir / "student", d.model.student.module.state_dict(),
                            {"strategy": self.strategy.name, "distill": self.config.to_dict(),
                             "teachers": self.teachers.names}, overwrite=True)
            save_json(self.run_dir / "history.json", d.history)
        return d.history

    # ---------------------------------------------------------------------------------------------- helpers
    def context(self, epoch: int, y: torch.Tensor, logits: torch.Tensor, adapted: list[torch.Tensor],
                t_outs, fmap: torch.Tensor | None = None) -> tuple[DistillContext, torch.Tensor, torch.Tensor]:
        """What the strategy sees of one batch, and the per-sample, per-teacher KD (``[B, M]``, with gradient) and
        feature terms."""
        T = self.config.temperature
        kd = torch.stack([kd_kl_per_sample(logits, t.logits, T) for t in t_outs], dim=1)  # with grad
        feat = torch.stack([feature_mse_per_sample(a, t.feature_map) for a, t in zip(adapted, t_outs)], dim=1)
        s_emb = [a.detach().float().mean(dim=(2, 3)) for a in adapted]
        t_emb = [t.embedding.float() for t in t_outs]
        ctx = DistillContext(
            epoch=epoch, targets=y, student_logits=logits.detach(), teacher_logits=[t.logits for t in t_outs],
            teacher_embeddings=t_emb, student_embeddings=s_emb, kd=kd.detach(), feat=feat.detach(),
            teacher_ce=torch.stack([teacher_cross_entropy(t.logits, y) for t in t_outs], dim=1),
            cosine=torch.stack([cosine_per_sample(s, t) for s, t in zip(s_emb, t_emb)], dim=1), temperature=T,
            teacher_maps=[t.feature_map for t in t_outs], student_map=None if fmap is None else fmap.detach(),
        )
        if self.strategy.needs_teacher_heads:  # CA-MKD: each teacher's head reads the adapted student map
            head_ce = torch.stack([teacher_cross_entropy(self.teachers.teacher(m).head(a), y)
                                   for m, a in enumerate(adapted)], dim=1)
            ctx.head_ce = head_ce if self.strategy.differentiable_feature_weights else head_ce.detach()
        return ctx, kd, feat
