"""Plain supervised training and evaluation of classifiers (teachers, and the student-alone baseline's metric).

Training goes through :class:`commons.device.TrainingBackend`, so it runs on CPU, one GPU, or ``accelerate launch``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from .config import TeacherTrainConfig
from .features import as_feature_classifier

__all__ = ["train_classifier", "evaluate_classifier", "load_or_train_teachers", "make_sgd"]

logger = logging.getLogger(__name__)


def make_sgd(params, lr: float, momentum: float, nesterov: bool, weight_decay: float) -> torch.optim.SGD:
    return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0,
                           weight_decay=weight_decay)


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    return out.logits if hasattr(out, "logits") else out


@torch.no_grad()
def evaluate_classifier(model: nn.Module, loader: DataLoader, device: torch.device | str | None = None) -> dict:
    """Top-1 accuracy (%) and mean cross-entropy of ``model`` on ``loader``."""
    was_training = model.training
    model.eval()
    if device is None:
        device = next(model.parameters()).device
    correct, total, loss = 0, 0, 0.0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        z = _logits(model, x)
        loss += float(F.cross_entropy(z.float(), y, reduction="sum"))
        correct += int((z.argmax(1) == y).sum())
        total += int(y.numel())
    model.train(was_training)
    if total == 0:
        raise ValueError("the evaluation loader is empty")
    return {"top1": 100.0 * correct / total, "loss": loss / total, "n": total}


def train_classifier(model: nn.Module, train_loader: DataLoader, config: TeacherTrainConfig | None = None,
                     backend=None, progress: bool = True, desc: str = "teacher") -> nn.Module:
    """Cross-entropy training with the CIFAR recipe's SGD + multistep schedule; returns the trained module."""
    from tqdm.auto import tqdm

    from commons.device import TrainingBackend, seed_everything

    config = config or TeacherTrainConfig()
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    seed_everything(config.seed)
    backend = backend or TrainingBackend(cpu=not torch.cuda.is_available())
    opt = make_sgd(model.parameters(), config.lr, config.momentum, config.nesterov, config.weight_decay)
    model, opt, loader = backend.prepare(model, opt, train_loader)
    model.train()
    bar = tqdm(range(config.epochs), desc=desc, disable=not progress or not backend.is_main_process, leave=False)
    for epoch in bar:
        for group in opt.param_groups:
            group["lr"] = config.lr_at(epoch)
        torch.manual_seed(config.seed * 1000 + epoch)
        for x, y in loader:
            loss = F.cross_entropy(_logits(model, x), y)
            opt.zero_grad(set_to_none=True)
            backend.backward(loss)
            backend.step(opt)  # through the fp16 loss scaler where one is used
        bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
    model = backend.unwrap(model)
    model.eval()
    return model


def load_or_train_teachers(names: Sequence[str], train_loader: DataLoader, cache_dir: str | os.PathLike | None,
                           config: TeacherTrainConfig | None = None, backend=None, progress: bool = True,
                           model_kwargs: dict | None = None) -> list[nn.Module]:
    """Build each named teacher (``kdrl.models`` preset or ``timm:<name>``); load it from ``cache_dir/<name>_seed<s>``
    when present, otherwise train it with :func:`train_classifier` and save it there (safetensors + config)."""
    from commons.io import load_checkpoint, save_checkpoint

    from .teachers import resolve_model

    config = config or TeacherTrainConfig()
    teachers = []
    from commons.device import seed_everything

    for name in names:
        seed_everything(config.seed)  # the initialisation must not depend on what ran before in the process
        model = resolve_model(name, **(model_kwargs or {}))
        ckpt = Path(cache_dir) / f"{name.replace(':', '_')}_seed{config.seed}" if cache_dir is not None else None
        if ckpt is not None and (ckpt / "model.safetensors").is_file():
            state, _ = load_checkpoint(ckpt, expected_keys=set(model.state_dict()))
            model.load_state_dict(state)
            logger.info("loaded teacher %s from %s", name, ckpt)
        else:
            model = train_classifier(model, train_loader, config, backend=backend, progress=progress, desc=name)
            if ckpt is not None and (backend is None or backend.is_main_process):  # one writer under DDP
                save_checkpoint(ckpt, model.state_dict(), {"name": name, "train": config.to_dict()}, overwrite=True)
            if backend is not None:
                backend.wait()
        model.eval()
        as_feature_classifier(model)  # fail early if features cannot be found
        teachers.append(model.cpu())
    return teachers
