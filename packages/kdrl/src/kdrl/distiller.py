"""The multi-teacher distiller: one student, a frozen :class:`~kdrl.teachers.TeacherPool`, per-teacher feature
adaptors and a :class:`~kdrl.strategies.WeightingStrategy`.

Student objective (MTKD-RL official code; the same for every strategy so that only the weighting differs):

``L = mean_b [ CE(z_s, y) + kd_weight * sum_m w^l_{b,m} KL_T(p_t^m || p_s) + feat_weight * sum_m w^f_{b,m} F_{b,m} ]``

with ``F_{b,m}`` the per-sample MSE between ``adaptor_m(student map)`` and teacher ``m``'s map. Adaptors are trained
with the student by the same SGD optimiser. Training runs through :class:`commons.device.TrainingBackend`
(CPU, one GPU or ``accelerate launch``), checkpoints every epoch atomically (``state.pt``) and resumes from it. The
loop itself, in named phases (setup, resume, step, end of epoch, checkpoint, finish), is
:class:`kdrl.distill_loop.DistillLoop`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from .adapters import build_adaptors
from .config import DistillConfig
from .distill_loop import DistillLoop
from .features import as_feature_classifier
from .strategies import WeightingStrategy, create_strategy
from .teachers import TeacherPool, resolve_model
from .training import evaluate_classifier

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
        if not isinstance(train_loader, DataLoader):
            raise TypeError(f"train_loader must be a torch DataLoader, got {type(train_loader).__name__}")
        loop = DistillLoop(self, train_loader, eval_loader, run_dir)
        loop.setup()
        loop.resume(resume, force)
        for epoch in loop.prepare(progress):
            loop.run_epoch(epoch)
        return loop.finish()

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
