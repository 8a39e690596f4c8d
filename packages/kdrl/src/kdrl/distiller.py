"""The multi-teacher distiller: one student, a frozen :class:`~kdrl.teachers.TeacherPool`, per-teacher feature
adaptors and a :class:`~kdrl.strategies.WeightingStrategy`.

Student objective (MTKD-RL official code; the same for every strategy so that only the weighting differs):

``L = mean_b [ CE(z_s, y) + kd_weight * sum_m w^l_{b,m} KL_T(p_t^m || p_s) + feat_weight * sum_m w^f_{b,m} F_{b,m} ]``

with ``F_{b,m}`` the per-sample MSE between ``adaptor_m(student map)`` and teacher ``m``'s map. Adaptors are trained
with the student by the same SGD optimiser. Training runs through :class:`commons.device.TrainingBackend`
(CPU, one GPU or ``accelerate launch``), checkpoints every epoch atomically (``state.pt``) and resumes from it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from .adapters import build_adaptors
from .config import DistillConfig
from .features import as_feature_classifier
from .losses import cosine_per_sample, feature_mse_per_sample, kd_kl_per_sample, teacher_cross_entropy
from .strategies import DistillContext, StudentStep, WeightingStrategy, create_strategy
from .teachers import TeacherPool, resolve_model
from .training import evaluate_classifier, make_sgd

__all__ = ["MultiTeacherDistiller", "StudentWithAdaptors"]

logger = logging.getLogger(__name__)


class StudentWithAdaptors(nn.Module):
    """The trainable part: the student (as a :class:`~kdrl.features.FeatureTap`) and one adaptor per teacher.
    ``forward(x)`` returns ``(logits, embedding, adapted_maps)`` so DDP sees a single module."""

    def __init__(self, student: nn.Module, adaptors: nn.ModuleList):
        super().__init__()
        self.student = student
        self.adaptors = adaptors

    def forward(self, x: torch.Tensor):
        out = self.student(x)
        return out.logits, out.feature_map, [a(out.feature_map) for a in self.adaptors]


class MultiTeacherDistiller:
    """Distil a pool of teachers into a student with a chosen weighting strategy.

    Args:
        student: an ``nn.Module`` classifier or a model name (see :mod:`kdrl.features` for how features are found).
        teachers: a :class:`TeacherPool` or a list of modules/names (wrapped into one).
        strategy: a :class:`WeightingStrategy` or its name (``"mtkd_rl"``, ``"mtkd_rl_dynamic"``, ``"aver"``,
            ``"camkd"``, ``"ebkd"``, ``"aekd"``, ``"student"``).
        config: :class:`DistillConfig` (default: the CIFAR-100 recipe).
        student_feature_layer: submodule name of the student's last-stage map when it cannot be found automatically.
        backend: a :class:`commons.device.TrainingBackend` (default: a new one; accelerate if installed).
    """

    def __init__(self, student: nn.Module | str, teachers: TeacherPool | Sequence[nn.Module | str],
                 strategy: WeightingStrategy | str = "mtkd_rl", config: DistillConfig | None = None,
                 student_feature_layer: str | None = None, backend=None):
        if config is not None and not isinstance(config, DistillConfig):
            raise TypeError(f"config must be a kdrl.DistillConfig, got {type(config).__name__}")
        self.config = config or DistillConfig()
        if isinstance(student, str):  # a model built here is initialised from config.seed, reproducibly
            from commons.device import seed_everything

            seed_everything(self.config.seed)
        self.student = as_feature_classifier(resolve_model(student), student_feature_layer)
        self.teachers = teachers if isinstance(teachers, TeacherPool) else TeacherPool(teachers)
        self.strategy = create_strategy(strategy) if isinstance(strategy, str) else strategy
        if not isinstance(self.strategy, WeightingStrategy):
            raise TypeError(f"strategy must be a WeightingStrategy or a name, got {type(strategy).__name__}")
        self._backend = backend
        self.model: StudentWithAdaptors | None = None
        self.history: dict[str, Any] = {"epochs": []}

    # ------------------------------------------------------------------ setup
    @property
    def backend(self):
        if self._backend is None:
            from commons.device import TrainingBackend

            # cpu=True on CPU-only hosts so that torchrun/accelerate launch shard over processes there too
            self._backend = TrainingBackend(cpu=not torch.cuda.is_available())
        return self._backend

    def setup(self, sample: torch.Tensor) -> None:
        """Infer shapes with one dry run on ``sample`` (a batch of inputs), build adaptors, set up the strategy."""
        if not isinstance(sample, torch.Tensor) or sample.dim() < 2:
            raise ValueError(f"sample must be a batch tensor [B, ...], got {type(sample).__name__}")
        sample = sample[:2] if sample.shape[0] >= 2 else sample.repeat(2, *[1] * (sample.dim() - 1))
        shapes = self.teachers.infer_shapes(sample)
        was = self.student.training
        self.student.eval()
        with torch.no_grad():
            s_out = self.student(sample)
        self.student.train(was)
        if s_out.feature_map.dim() != 4:
            raise ValueError(f"the student's feature map must be [B,C,H,W], got {tuple(s_out.feature_map.shape)}")
        if s_out.logits.shape[1] != shapes.num_classes:
            raise ValueError(f"the student predicts {s_out.logits.shape[1]} classes but the teachers predict "
                             f"{shapes.num_classes}")
        self.shapes = shapes
        if self.strategy.needs_teacher_heads:
            for m in range(len(self.teachers)):
                tap = self.teachers.teacher(m)
                if not hasattr(tap.module, "forward_head"):
                    raise ValueError(
                        f"strategy {self.strategy.name!r} applies each teacher's classifier head to the adapted "
                        f"student feature, but teacher {m} ({self.teachers.names[m]}, {type(tap.module).__name__}) "
                        "has no forward_head(feature_map) -> logits method")
        adaptors = (build_adaptors(s_out.feature_map.shape[1], shapes.map_shapes) if self.strategy.uses_teachers
                    else nn.ModuleList())
        self.model = StudentWithAdaptors(self.student, adaptors)
        self.strategy.setup(len(self.teachers), list(shapes.embed_dims), shapes.num_classes, self.backend.device)

    # ------------------------------------------------------------------ one step
    def _context(self, epoch: int, y: torch.Tensor, logits: torch.Tensor, adapted: list[torch.Tensor],
                 t_outs, fmap: torch.Tensor | None = None) -> tuple[DistillContext, torch.Tensor, torch.Tensor]:
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

    # ------------------------------------------------------------------ training
    def fit(self, train_loader: DataLoader, eval_loader: DataLoader | None = None,
            run_dir: str | os.PathLike | None = None, resume: bool = False, progress: bool = True,
            force: bool = False) -> dict[str, Any]:
        """Train for ``config.epochs`` epochs; returns the history (also written to ``run_dir/history.json``).

        With ``run_dir``, ``state.pt`` is written atomically after every epoch and ``resume=True`` continues from it
        (bit-identical to an uninterrupted run on the same machine: the RNG is reseeded every epoch and the model,
        optimiser and strategy states are restored). A saved run whose configuration (:class:`DistillConfig`,
        strategy, teachers) differs from this one is refused — e.g. another ``epochs`` would silently move the lr
        milestones — unless ``force=True``. The final student (without adaptors) is saved to ``run_dir/student``
        (safetensors + config.json).
        """
        from tqdm.auto import tqdm

        from commons.device import seed_everything
        from commons.io import load_training_state, save_checkpoint, save_json, save_training_state

        if not isinstance(train_loader, DataLoader):
            raise TypeError(f"train_loader must be a torch DataLoader, got {type(train_loader).__name__}")
        cfg = self.config
        seed_everything(cfg.seed)
        full_batch = int(train_loader.batch_size or 0)
        if self.strategy.fixed_batch_size:
            if full_batch < 2:
                raise ValueError(f"strategy {self.strategy.name!r} needs a train_loader with a fixed batch_size >= 2, "
                                 f"got batch_size={train_loader.batch_size!r}")
            self.strategy.batch_size = full_batch
        if self.model is None:
            first = next(iter(train_loader))
            if not isinstance(first, (tuple, list)) or len(first) < 2:
                raise ValueError("train_loader must yield (inputs, targets) batches")
            self.setup(first[0])
        backend = self.backend
        device = backend.device
        self.teachers.to(device)
        opt = make_sgd(self.model.parameters(), cfg.lr, cfg.momentum, cfg.nesterov, cfg.weight_decay)
        start_epoch = 0
        state_path = Path(run_dir) / "state.pt" if run_dir is not None else None
        if resume:
            if state_path is None:
                raise ValueError("resume=True needs run_dir")
            state = load_training_state(state_path)
            if state is not None:
                self._check_resumable(state, state_path, force)
                self.model.load_state_dict(state["model"])
                opt.load_state_dict(state["optimizer"])
                self.strategy.load_state_dict(state["strategy"])
                self.history = state["history"]
                start_epoch = int(state["epoch"]) + 1
                logger.info("resuming from %s at epoch %d", state_path, start_epoch)
        if start_epoch == 0:
            self.history = {"epochs": []}
        model, opt, loader = backend.prepare(self.model, opt, train_loader)
        main = backend.is_main_process
        bar = tqdm(range(start_epoch, cfg.epochs), desc=f"distil[{self.strategy.name}]",
                   disable=not progress or not main)
        M = len(self.teachers)
        for epoch in bar:
            lr = cfg.lr_at(epoch)
            for group in opt.param_groups:
                group["lr"] = lr
            torch.manual_seed(cfg.seed * 1000 + epoch)
            model.train()
            t0 = time.perf_counter()
            strat_s = 0.0
            sums = {"loss": 0.0, "ce": 0.0, "kd": 0.0, "feat": 0.0, "correct": 0.0, "n": 0.0}
            w_l_sum = torch.zeros(M)
            w_f_sum = torch.zeros(M)
            num_batches = len(loader)
            for batch_index, (x, y) in enumerate(loader):
                if self.strategy.fixed_batch_size and x.shape[0] < full_batch:
                    continue  # official MMKD: `if opt.batch_size > input.size(0): continue`
                x, y = x.to(device), y.to(device)
                logits, fmap, adapted = model(x)
                ce = F.cross_entropy(logits.float(), y, reduction="none")
                if self.strategy.uses_teachers:
                    t_outs = self.teachers(x)
                    ctx, kd, feat = self._context(epoch, y, logits, adapted, t_outs, fmap)
                    ts = time.perf_counter()
                    w_l, w_f = self.strategy.weights(ctx)
                    strat_s += time.perf_counter() - ts
                    w_l = w_l.detach().to(kd)
                    w_f = w_f.to(feat) if self.strategy.differentiable_feature_weights else w_f.detach().to(feat)
                    kd_term = (w_l * kd).sum(1)
                    feat_term = (w_f * feat).sum(1)
                    per_sample = ce + cfg.kd_weight * kd_term + cfg.feat_weight * feat_term
                else:
                    kd_term = feat_term = torch.zeros_like(ce)
                    per_sample = ce
                loss = per_sample.mean()
                opt.zero_grad(set_to_none=True)
                backend.backward(loss)
                backend.step(opt)  # through the fp16 loss scaler where one is used
                if self.strategy.uses_teachers:
                    ts = time.perf_counter()
                    w_f = w_f.detach()
                    self.strategy.observe(ctx, w_l, w_f, per_sample.detach())
                    self.strategy.after_step(StudentStep(
                        context=ctx, inputs=x, targets=y, model=backend.unwrap(model),
                        optimizer=getattr(opt, "optimizer", opt), teachers=self.teachers, config=cfg,
                        batch_index=batch_index, num_batches=num_batches))
                    strat_s += time.perf_counter() - ts
                    w_l_sum += w_l.sum(0).cpu()
                    w_f_sum += w_f.sum(0).cpu()
                n = float(y.numel())
                sums["loss"] += float(loss.detach()) * n
                sums["ce"] += float(ce.detach().mean()) * n
                sums["kd"] += float(kd_term.detach().mean()) * n
                sums["feat"] += float(feat_term.detach().mean()) * n
                sums["correct"] += float((logits.argmax(1) == y).sum())
                sums["n"] += n
            ts = time.perf_counter()
            extra = self.strategy.end_epoch(epoch) if self.strategy.uses_teachers else {}
            strat_s += time.perf_counter() - ts
            n = max(sums["n"], 1.0)
            record: dict[str, Any] = {
                "epoch": epoch, "lr": lr, "seconds": time.perf_counter() - t0, "strategy_seconds": strat_s,
                "train_loss": sums["loss"] / n, "train_ce": sums["ce"] / n, "train_kd": sums["kd"] / n,
                "train_feat": sums["feat"] / n, "train_top1": 100.0 * sums["correct"] / n,
                "logit_weights": (w_l_sum / n).tolist(), "feat_weights": (w_f_sum / n).tolist(), **extra,
            }
            if eval_loader is not None:
                record["test_top1"] = evaluate_classifier(backend.unwrap(model).student, eval_loader, device)["top1"]
            self.history["epochs"].append(record)
            self.history["teachers"] = list(self.teachers.names)
            self.history["strategy"] = self.strategy.name
            self.history.update({k: v for k, v in self.strategy.extra_history().items()})
            bar.set_postfix(loss=f"{record['train_loss']:.3f}",
                            **({"test": f"{record['test_top1']:.1f}"} if "test_top1" in record else {}))
            if state_path is not None and main:
                save_training_state(state_path, {
                    "model": backend.unwrap(model).state_dict(), "optimizer": opt.state_dict(),
                    "strategy": self.strategy.state_dict() if self.strategy.uses_teachers else {},
                    "history": self.history, "epoch": epoch, **self._run_identity(),
                })
        self.model = backend.unwrap(model)
        if run_dir is not None and main:
            save_checkpoint(Path(run_dir) / "student", self.model.student.module.state_dict(),
                            {"strategy": self.strategy.name, "distill": cfg.to_dict(), "teachers": self.teachers.names},
                            overwrite=True)
            save_json(Path(run_dir) / "history.json", self.history)
        return self.history

    def _run_identity(self) -> dict[str, Any]:
        """What must match for a saved run to be resumed (stored in ``state.pt``)."""
        return {"config": self.config.to_dict(), "strategy_spec": repr(self.strategy),
                "strategy_name": self.strategy.name, "teachers": list(self.teachers.names)}

    def _check_resumable(self, state: dict[str, Any], path: Path, force: bool) -> None:
        mine = self._run_identity()
        diffs = []
        saved_cfg = state.get("config", {})
        for key, value in mine["config"].items():
            if key in saved_cfg and saved_cfg[key] != value:
                diffs.append(f"{key}: saved {saved_cfg[key]!r}, now {value!r}")
        for key in ("strategy_name", "strategy_spec", "teachers"):
            if key in state and state[key] != mine[key]:
                diffs.append(f"{key}: saved {state[key]!r}, now {mine[key]!r}")
        if diffs and not force:
            raise ValueError(f"resume: {path} was written with another configuration ({'; '.join(diffs)}); "
                             "rerun with the saved settings, start a new run directory, or force it (force=True, "
                             "CLI --force)")
        if diffs:
            logger.warning("resuming %s despite a different configuration: %s", path, "; ".join(diffs))

    # ------------------------------------------------------------------ inference
    def evaluate(self, loader: DataLoader) -> dict[str, float]:
        """Top-1 accuracy (%) and cross-entropy of the student on ``loader``."""
        return evaluate_classifier(self.student, loader, self.backend.device if self.model is None
                                   else next(self.student.parameters()).device)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Student logits for a batch."""
        self.student.eval()
        return self.student(x.to(next(self.student.parameters()).device)).logits

    def save(self, directory: str | os.PathLike) -> Path:
        """Save the student's weights (adaptors are training-only) with the distillation config."""
        from commons.io import save_checkpoint

        return save_checkpoint(directory, self.student.module.state_dict(),
                               {"strategy": self.strategy.name, "distill": self.config.to_dict(),
                                "teachers": self.teachers.names}, overwrite=True)

    def load_student(self, directory: str | os.PathLike) -> None:
        """Load student weights written by :meth:`save` (or ``run_dir/student``)."""
        from commons.io import load_checkpoint

        state, _ = load_checkpoint(directory, expected_keys=set(self.student.module.state_dict()))
        self.student.module.load_state_dict(state)
